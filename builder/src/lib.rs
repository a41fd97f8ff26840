//! The builder: Dockerfile parsing, build planning, layer creation and the build cache.
//!
//! Not implemented yet (issue "Builder"). It will run RUN steps through a `StepRunner` trait
//! implemented by the cli with the node, and must never depend on the `node` crate itself nor on
//! the server half of `registry`.
