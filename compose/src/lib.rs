//! The Compose Specification as reg reads it (`reg compose`): files found, interpolated,
//! merged and read into a typed model, every short syntax in its long form. An unknown or
//! unsupported key is an error naming its file, line and key; nothing is silently ignored.
//!
//! `load` → `interpolate` (strings) → `model` (read through `de`'s permissive readers). Pure:
//! no node, no HTTP; `reg compose` in the cli drives the node with what this gives it.

mod de;
pub mod interpolate;
pub mod load;
pub mod model;

pub use load::{load, ComposeError, LoadOptions, Project};
pub use model::*;
