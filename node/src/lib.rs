//! The node: local image store, layer snapshots, the container runtime (namespaces, cgroups,
//! overlayfs), networking and the node agent with its REST API.
//!
//! Not implemented yet (issue "Node"). It may use the registry's types and client, never the
//! registry server, and never the `builder` crate.
