//! The [`Builder`]: what every instruction reads (store, runner, Dockerfile, context, options,
//! log, lexer, global ARGs), how a step's error names its place, and the lookups of stages and
//! flags the instructions share.

#![deny(clippy::disallowed_methods)]

use crate::dockerfile::{Dockerfile, Step};
use crate::fsview::View;
use crate::lex::{Lexer, Vars};

use super::api::{Log, Options, StepRunner, Store};
use super::error::{BuildError, StepError};

/// Names an earlier stage: by `AS` name or by index.
pub(super) fn stage_ref(df: &Dockerfile, before: usize, name: &str) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    df.stages[..before]
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
        .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
}

pub(super) fn flag<'a>(flags: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    flags
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_deref().unwrap_or(""))
}

pub(super) struct Builder<'a, S, R> {
    pub(super) store: &'a S,
    pub(super) runner: &'a R,
    pub(super) df: &'a Dockerfile,
    pub(super) context: &'a crate::context::Context,
    pub(super) opts: &'a Options,
    pub(super) log: Log,
    pub(super) lexer: Lexer,
    pub(super) globals: Vars,
}

impl<S: Store, R: StepRunner> Builder<'_, S, R> {
    /// The build context as a view (one layer).
    pub(super) fn context_view(&self, step: &Step) -> Result<View, BuildError> {
        View::new(vec![self.context.dir.clone()]).map_err(|source| {
            self.err(
                step,
                StepError::View {
                    what: "the build context",
                    source,
                },
            )
        })
    }

    /// `e` at `step`: shown as `Dockerfile:LINE: KEYWORD: e`.
    pub(super) fn err(&self, step: &Step, e: impl Into<StepError>) -> BuildError {
        BuildError::Step {
            file: self.opts.file.clone(),
            line: step.pos.line,
            keyword: step.inst.keyword(),
            source: e.into(),
        }
    }

    /// `step` asks for something wrong or unsupported: `message` says what.
    pub(super) fn invalid(&self, step: &Step, message: impl Into<String>) -> BuildError {
        self.err(step, StepError::Invalid(message.into()))
    }
}
