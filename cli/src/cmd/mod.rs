//! One module per command.

pub mod admin;
pub mod build;
pub mod config;
pub mod container;
pub mod image;
pub mod login;
pub mod serve;
pub mod system;
