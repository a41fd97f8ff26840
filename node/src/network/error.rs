//! What can go wrong with a network, by kind: the API maps each kind to its status, and the
//! domain decides by kind (never by a status code or a message).

/// A network operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No such network, endpoint or connection.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with what exists (a name, an address, a container still attached).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (a subnet, an address, an ambiguous prefix).
    #[error("{0}")]
    Invalid(String),
    /// Not allowed at all (removing the default network).
    #[error("{0}")]
    Forbidden(String),
    /// The network database.
    #[error("network database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The kernel or a tool refused (netlink, nftables, a socket).
    #[error("{0}")]
    Failed(String),
}

impl NetworkError {
    /// The same failure, its message prefixed with what was being done.
    pub fn context(self, what: impl std::fmt::Display) -> NetworkError {
        use NetworkError::*;
        match self {
            NotFound(m) => NotFound(format!("{what}: {m}")),
            Conflict(m) => Conflict(format!("{what}: {m}")),
            Invalid(m) => Invalid(format!("{what}: {m}")),
            Forbidden(m) => Forbidden(format!("{what}: {m}")),
            Db(e) => Failed(format!("{what}: network database: {e}")),
            Failed(m) => Failed(format!("{what}: {m}")),
        }
    }
}

/// A failure of the machinery (kernel, tool, task), with its message.
pub(crate) fn failed(e: impl std::fmt::Display) -> NetworkError {
    NetworkError::Failed(e.to_string())
}
