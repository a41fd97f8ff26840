//! What can go wrong with a build.

#![deny(clippy::disallowed_methods)]

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Parse(#[from] crate::dockerfile::ParseError),
    #[error("{file}:{line}: {keyword}: {message}")]
    Step {
        file: String,
        line: usize,
        keyword: &'static str,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}
