//! What the web interface shows of the local node (`reg serve` as root runs one beside the
//! registry): its containers, its images and a container's last log lines, read-only.
//!
//! The registry never links node code. The binary that runs both hands the registry a
//! [`NodeView`] (the cli implements it with the agent's own client over its socket); a
//! registry served alone has none and says so.

use std::future::Future;
use std::pin::Pin;

/// A future the view returns (the trait is used as `dyn`).
pub type ViewFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, NodeViewError>> + Send + 'a>>;

/// One container, as the node lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContainer {
    pub id: String,
    pub name: String,
    pub image: String,
    /// `created`, `running`, `paused`, `exited`, ….
    pub state: String,
    /// docker's human status: `Up 3 minutes (healthy)`, `Exited (0) 2 seconds ago`.
    pub status: String,
    /// Published ports, `0.0.0.0:8080->80/tcp` each.
    pub ports: Vec<String>,
    /// Unix seconds.
    pub created: i64,
}

/// One image in the node's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeImage {
    pub id: String,
    pub tags: Vec<String>,
    pub size: u64,
    /// Unix seconds.
    pub created: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeViewError {
    #[error("the local node did not answer: {0}")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{0}")]
    NotFound(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the local node refused: {0}")]
    Refused(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The read-only view of a node the web interface renders.
pub trait NodeView: Send + Sync {
    /// Every container, running or not.
    fn containers(&self) -> ViewFuture<'_, Vec<NodeContainer>>;
    /// Every image.
    fn images(&self) -> ViewFuture<'_, Vec<NodeImage>>;
    /// The last `lines` lines of a container's log (stdout and stderr interleaved), at most
    /// [`MAX_LOG_BYTES`] of them.
    fn logs<'a>(&'a self, container: &'a str, lines: usize) -> ViewFuture<'a, String>;
}

/// The most of a log a page shows (the tail's end is kept).
pub const MAX_LOG_BYTES: usize = 256 * 1024;
