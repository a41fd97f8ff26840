//! What can go wrong with a container, by kind: the API maps each kind to its status, and the
//! domain decides by kind (never by a status code or a message).

use crate::network::NetworkError;

/// A container operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No such container (or image to create one from).
    #[error("{0}")]
    NotFound(String),
    /// The container is not in a state that allows it (running, not running, a name taken).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (a flag, a name, a signal).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The container database.
    #[error("container database: {0}")]
    Db(#[from] rusqlite::Error),
    /// Security options, limits or devices the runtime cannot honour.
    #[error(transparent)]
    Spec(#[from] crate::runtime::SpecError),
    #[error(transparent)]
    Volume(#[from] super::volumes::VolumeError),
    #[error(transparent)]
    Image(#[from] crate::image::PullError),
    /// The machinery failed (a file, a process, a task), with what was being done.
    #[error("{0}")]
    Failed(String),
}

impl ContainerError {
    /// The same failure, its message prefixed with what was being done.
    pub fn context(self, what: impl std::fmt::Display) -> ContainerError {
        use ContainerError::*;
        match self {
            NotFound(m) => NotFound(format!("{what}: {m}")),
            Conflict(m) => Conflict(format!("{what}: {m}")),
            Invalid(m) => Invalid(format!("{what}: {m}")),
            Network(e) => Network(e.context(what)),
            Db(e) => Failed(format!("{what}: container database: {e}")),
            Volume(e) => Invalid(format!("{what}: {e}")),
            Spec(e) => Invalid(format!("{what}: {e}")),
            Image(e) => Failed(format!("{what}: {e}")),
            Failed(m) => Failed(format!("{what}: {m}")),
        }
    }
}

/// A failure of the machinery (file, process, task), with its message.
pub(crate) fn failed(e: impl std::fmt::Display) -> ContainerError {
    ContainerError::Failed(e.to_string())
}
