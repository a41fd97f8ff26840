//! The node: local image store, layer snapshots, the container runtime (namespaces, cgroups,
//! overlayfs), networking and the node agent with its REST API.
//!
//! Layers, from the edge down (a module imports only those below it):
//! - [`api`]: the agent's HTTP edge (router, handlers, one `ApiError`) and its client;
//! - [`containers`]: the container service (records, lifecycle, logs, exec, volumes);
//! - [`network`]: bridge networks (ipam, nftables, published ports, netlink, DNS);
//! - [`image`], [`image_archive`] and [`unpack`]: the image store, `save`/`load` archives and
//!   layer snapshots;
//! - [`runtime`]: the runtime (spec, bundle, monitor, process, rootfs, cgroup, seccomp, tty);
//! - [`events`]: the node's event bus (docker's events; emitted by the domain, and by the API
//!   for what it changes directly: networks, volumes, images);
//! - [`metrics`]: the agent's Prometheus metrics (dockerd's names), kept by the container
//!   service and served by the API;
//! - [`db`]: helpers of the node database.
//!
//! It may use the registry's types and client, never the registry server, and never the
//! `builder` crate.

#![allow(clippy::disallowed_methods)] // denied per module: runtime::rootfs, unpack (see node/clippy.toml)

pub mod api;
pub mod containers;
pub(crate) mod db;
pub mod events;
pub mod image;
pub mod image_archive;
pub mod metrics;
pub mod network;
pub mod runtime;
pub mod unpack;
