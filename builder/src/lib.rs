//! The builder: Dockerfile parsing, build planning, layer creation and the build cache.
//!
//! `reg build` runs in the node agent: the cli sends the context (filtered by `.dockerignore`)
//! and the Dockerfile, the agent builds with [`build::build`] and stores the image. RUN steps go
//! through the [`build::StepRunner`] trait and the image store through [`build::Store`], both
//! implemented by the cli with the node: this crate never depends on `node` nor on the server
//! half of `registry`.
//!
//! The `std::fs` path functions are denied (clippy `disallowed-methods`, `builder/clippy.toml`)
//! in every module that touches a tree whose content came from a build's inputs; the allow
//! here is for the pure modules (Dockerfile, lexer, `.dockerignore`) and their golden files.

#![allow(clippy::disallowed_methods)]

pub mod build;
pub mod context;
pub mod dockerfile;
pub mod fsview;
pub mod ignore;
pub mod layer;
pub mod lex;
