//! The node: local image store, layer snapshots, the container runtime (namespaces, cgroups,
//! overlayfs), networking and the node agent with its REST API.
//!
//! Layers, from the edge down (a module imports only those below it):
//! - [`api`]: the agent's HTTP edge (router, handlers, one `ApiError`) and its client;
//! - [`containers`]: the container service (records, lifecycle, logs, exec, volumes);
//! - [`network`]: bridge networks (ipam, nftables, published ports, netlink, DNS);
//! - [`image`] and [`unpack`]: the image store and layer snapshots;
//! - [`bundle`], [`monitor`], [`runtime`], [`rootfs`], [`seccomp`], [`exe`]: the runtime;
//! - [`db`]: helpers of the node database.
//!
//! It may use the registry's types and client, never the registry server, and never the
//! `builder` crate.

#![allow(clippy::disallowed_methods)] // denied per module: rootfs, unpack (see node/clippy.toml)

pub mod api;
pub mod bundle;
pub mod containers;
pub(crate) mod db;
pub mod exe;
pub mod image;
pub mod monitor;
pub mod network;
pub mod rootfs;
pub mod runtime;
pub mod seccomp;
pub mod unpack;
