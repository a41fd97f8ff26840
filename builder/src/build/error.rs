//! What can go wrong with a build, by kind: [`BuildError`] for the build as a whole, with
//! [`StepError`] for what one instruction met (named by its file, line and keyword when
//! shown). The trees' own errors ([`TreeError`], [`ArchiveError`]) and the lexer's, the
//! Dockerfile parser's and the view's fold in with `#[from]`. What the host's [`Store`] or
//! [`StepRunner`] returned is kept as it is, boxed (see [`HostError`]).
//!
//! [`Store`]: super::api::Store
//! [`StepRunner`]: super::api::StepRunner

#![deny(clippy::disallowed_methods)]

use std::io;
use std::path::PathBuf;

use super::archive::ArchiveError;
use super::tree::TreeError;
use crate::dockerfile::ParseError;
use crate::fsview::ResolveError;
use crate::lex::LexError;

/// An error of the host's [`Store`](super::api::Store) or
/// [`StepRunner`](super::api::StepRunner), whose type is theirs (their associated `Error`).
/// Boxed so that `BuildError` stays one type for every host.
pub type HostError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A build's failure.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An ONBUILD trigger of a base image does not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// An instruction failed: `Dockerfile:7: RUN: …`.
    #[error("{file}:{line}: {keyword}: {source}")]
    Step {
        file: String,
        line: usize,
        keyword: &'static str,
        source: StepError,
    },
    /// A global ARG's default does not expand.
    #[error("ARG {name}: {source}")]
    GlobalArg { name: String, source: LexError },
    #[error("target stage {target:?} could not be found (stages: {stages})")]
    NoTarget { target: String, stages: String },
    #[error("stages depend on each other in a cycle")]
    Cycle,
    #[error("stage {0} was not built")]
    StageNotBuilt(String),
    #[error("the target stage was not built")]
    TargetNotBuilt,
    /// The store could not give the base image of a FROM.
    #[error("{file}:{line}: FROM {base}: {source}")]
    Base {
        file: String,
        line: usize,
        base: String,
        source: HostError,
    },
    /// The image config or manifest could not be encoded.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// The store could not save the image.
    #[error(transparent)]
    Save(HostError),
    /// A failure, and the failure to clean up after it (youki's `CreateContainerError(run,
    /// cleanup)`): both are kept, the first one first.
    #[error("{error}; cleaning up failed too: {}", leftovers(.cleanup))]
    Cleanup {
        #[source]
        error: Box<BuildError>,
        cleanup: Vec<Leftover>,
    },
}

/// What one instruction met.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The instruction asks for something wrong, or something reg does not do: the message
    /// names the flag or value and what would be right.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Lex(#[from] LexError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("stage {0} was not built")]
    StageNotBuilt(String),
    /// The view of the build context or of a stage's snapshots could not be opened.
    #[error("{what}: {source}")]
    View {
        what: &'static str,
        source: io::Error,
    },
    /// The store could not give the image of a `--from` (`flag` is the flag as written).
    #[error("{flag}: {source}")]
    Base { flag: String, source: HostError },
    /// The runner could not run the step.
    #[error(transparent)]
    Runner(HostError),
    #[error("{command}: the command returned a non-zero code: {code}")]
    NonZero { command: String, code: i32 },
    /// The private copy of a file a writable `--mount=type=bind` gets.
    #[error("--mount={spec}: {source}")]
    MountCopy { spec: String, source: io::Error },
    #[error("writing the layer: {0}")]
    WriteLayer(io::Error),
    /// The store could not take the layer in.
    #[error(transparent)]
    AddLayer(HostError),
    /// The layer being assembled.
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("{0}: vanished during the build")]
    Vanished(String),
    /// ADD's archive `path`.
    #[error("{path}: {source}")]
    Archive { path: String, source: ArchiveError },
    /// A path of ours (a scratch or cache dir) or a view of an image's snapshots.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Blocking work that did not finish.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// A scratch dir of ours that could not be removed.
#[derive(Debug)]
pub struct Leftover {
    pub path: PathBuf,
    pub error: io::Error,
}

fn leftovers(l: &[Leftover]) -> String {
    l.iter()
        .map(|l| format!("removing {}: {}", l.path.display(), l.error))
        .collect::<Vec<_>>()
        .join(", ")
}
