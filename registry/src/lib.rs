//! OCI types shared by every part of `reg`, and the registry itself.
//!
//! Always compiled: [`digest`], [`name`], [`media`], [`manifest`], [`range`] and [`error`] — pure types that
//! parse once at the edge and touch no file or network. Behind the `server` feature: the
//! distribution-spec HTTP server with its storage and metadata. The server half must never be
//! linked into `node` or `builder` (they use only the pure types and, later, the client).

#[cfg(feature = "client")]
pub mod client;
pub mod digest;
pub mod error;
pub mod manifest;
pub mod media;
pub mod name;
pub mod range;

#[cfg(feature = "server")]
pub mod server;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::ErrorCode;
pub use name::{NameError, Reference, ReferenceError, RepoName, TagName};

/// The platform this machine runs, in OCI's words: `("linux", "amd64" | "arm64" | …)`.
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    ("linux", arch)
}
