//! The node: local image store, layer snapshots, the container runtime (namespaces, cgroups,
//! overlayfs), networking and the node agent with its REST API.
//!
//! So far: [`unpack`], which turns one layer tarball into a snapshot directory that overlayfs can
//! use as a lower dir, refusing anything that would escape it; and [`image`], the image store
//! that pulls images (layers downloaded, verified and unpacked in parallel, in one pass); and
//! [`agent`], the node agent's REST API on a unix socket with its client (images so far). It may use the registry's types
//! and client, never the registry server, and never the `builder` crate.

#![allow(clippy::disallowed_methods)] // denied per module: rootfs, unpack (see node/clippy.toml)

pub mod agent;
pub mod bundle;
pub mod containers;
pub mod dns;
pub mod exe;
pub mod image;
pub mod monitor;
pub mod netlink;
pub mod network;
pub mod ports;
pub mod rootfs;
pub mod runtime;
pub mod seccomp;
pub mod unpack;
pub mod volumes;
