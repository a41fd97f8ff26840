//! The build: stages as a DAG (only what the target needs, independent stages concurrently),
//! each instruction applied to a stage state (image config, layers, ARG/ENV scope), layers made
//! by RUN (the step container's overlay upper dir) and COPY/ADD (straight from the context or an
//! earlier stage), a content-keyed cache, and the final OCI config + manifest handed to the
//! [`Store`]. RUN goes through [`StepRunner`]; neither trait is implemented here.
//!
//! What COPY, ADD and RUN mounts read and write is someone else's content (the context, a
//! stage's snapshots, an image, an archive, what a step left in its upper dir): every host-side
//! file operation on it goes through [`reg_untrusted::Tree`], never a `std::fs` path function.
//! A layer being assembled is a strict tree: a symlink an earlier source put there is never
//! written through (BuildKit's "cannot copy to non-directory"); the destination path itself is
//! resolved in the stage's view, inside its root, as BuildKit resolves it in the rootfs.
//! Sources are read only as regular files; symlinks are copied as symlinks, device nodes and
//! FIFOs re-made as nodes, never opened.
//!
//! The modules, bottom up; each uses only modules before it, never this one: `api` (the traits
//! and data the host sees), `error`, `state` (a stage being built), `tree` and `archive` (the
//! layer being assembled), `builder` (what every instruction reads), `cache` (key lookup, layer
//! commit, scratch dirs), `run` (RUN), `copy` (COPY/ADD), `stage` (FROM, ONBUILD, the config
//! instructions), `image` (config + manifest). Here: the stage DAG, built in waves.

#![deny(clippy::disallowed_methods)]

mod api;
mod archive;
mod builder;
mod cache;
mod copy;
mod error;
mod image;
mod run;
mod stage;
mod state;
#[cfg(test)]
mod tests;
mod tree;

pub use api::{
    BaseImage, Event, Image, LayerRef, Log, Mount, Options, RunStep, StepRunner, Store,
    DEFAULT_PATH,
};
pub use error::BuildError;

use std::collections::{BTreeSet, HashMap};

use builder::{stage_ref, Builder};
use state::State;

use crate::dockerfile::Dockerfile;
use crate::lex::{Lexer, Vars};

/// Builds `df` with `context`; stores and returns the image of the target stage.
pub async fn build<S: Store, R: StepRunner>(
    store: &S,
    runner: &R,
    df: &Dockerfile,
    context: &crate::context::Context,
    opts: &Options,
    log: Log,
) -> Result<Image, BuildError> {
    let lexer = Lexer { escape: df.escape };
    // Global ARGs: --build-arg wins over the default; each default sees the ones before it.
    let mut globals = Vars::new();
    for a in &df.global_args {
        let value =
            match opts.build_args.get(&a.name) {
                Some(v) => Some(v.clone()),
                None => {
                    match &a.default {
                        Some(d) => Some(lexer.word(d, &globals).map_err(|source| {
                            BuildError::GlobalArg {
                                name: a.name.clone(),
                                source,
                            }
                        })?),
                        None => None,
                    }
                }
            };
        if let Some(v) = value {
            globals.insert(a.name.clone(), v);
        }
    }
    let b = Builder {
        store,
        runner,
        df,
        context,
        opts,
        log,
        lexer,
        globals,
    };
    let target = match &opts.target {
        Some(t) => stage_ref(df, df.stages.len(), t).ok_or_else(|| BuildError::NoTarget {
            target: t.clone(),
            stages: df
                .stages
                .iter()
                .enumerate()
                .map(|(i, s)| s.name.clone().unwrap_or_else(|| i.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        })?,
        None => df.stages.len() - 1,
    };
    // Only the stages the target needs, in waves of stages whose dependencies are built.
    let deps: Vec<BTreeSet<usize>> = (0..df.stages.len()).map(|i| b.deps(i)).collect();
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if needed.insert(i) {
            todo.extend(deps[i].iter().copied());
        }
    }
    let mut done: HashMap<usize, State> = HashMap::new();
    while !needed.is_empty() {
        let ready: Vec<usize> = needed
            .iter()
            .copied()
            .filter(|i| deps[*i].iter().all(|d| done.contains_key(d)))
            .collect();
        if ready.is_empty() {
            return Err(BuildError::Cycle);
        }
        let results = futures::future::join_all(ready.iter().map(|i| b.stage(*i, &done))).await;
        for (i, r) in ready.into_iter().zip(results) {
            needed.remove(&i);
            done.insert(i, r?);
        }
    }
    let st = done.remove(&target).ok_or(BuildError::TargetNotBuilt)?;
    b.finish(st)
}
