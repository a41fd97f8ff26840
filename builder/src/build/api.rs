//! What the builder asks of its host and hands back: the [`Store`] and [`StepRunner`] traits
//! (implemented by the cli on the node), the data they pass, the build's [`Options`] and its
//! progress [`Event`]s. Nothing here touches a file.

#![deny(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reg_registry::digest::{chain_ids, Digest};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::layer::Compression;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A layer of an image: its blob and what it unpacks to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}

/// A base image as the store has it.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// The config's digest (the image id).
    pub id: Digest,
    pub config: Value,
    pub layers: Vec<LayerRef>,
}

impl BaseImage {
    pub(super) fn chain(&self) -> Vec<Digest> {
        let diff_ids: Vec<Digest> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        chain_ids(&diff_ids)
    }
}

/// The built image as stored.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    /// The config's digest.
    pub id: Digest,
    /// The manifest's digest.
    pub digest: Digest,
    pub chain: Vec<Digest>,
    pub layers: Vec<LayerRef>,
}

/// What a build reports as it goes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// A step starts: `[stage n/total] TEXT`.
    Step {
        stage: String,
        n: usize,
        total: usize,
        text: String,
    },
    Cached,
    Done {
        ms: u64,
    },
    /// Output of a RUN.
    Output {
        line: String,
    },
    Note {
        message: String,
    },
}

pub type Log = Arc<dyn Fn(Event) + Send + Sync>;

/// A bind mount into a RUN step (`RUN --mount`).
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub readonly: bool,
    /// When not empty: not a bind of `source` but a merged view of these directories (bottom
    /// first, overlay whiteouts honoured); writes to a view that is not read-only are
    /// discarded after the step.
    pub layers: Vec<PathBuf>,
}

impl Mount {
    /// A bind of `source` at `target`.
    pub(super) fn bind(source: PathBuf, target: String, readonly: bool) -> Mount {
        Mount {
            source,
            target,
            readonly,
            layers: Vec::new(),
        }
    }
}

/// One RUN: the runner mounts an overlay of `layers` (bottom first) with its upper dir at
/// `dir/upper`, runs `args` and leaves the changes there.
#[derive(Debug, Clone)]
pub struct RunStep {
    pub layers: Vec<PathBuf>,
    pub dir: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: Option<String>,
    /// `none` or `host`.
    pub network: String,
    pub mounts: Vec<Mount>,
}

/// Runs RUN steps (the node's container runtime). Its errors are its own type; the build keeps
/// them, boxed, as the source of its own error, so that a build's error is one type whatever
/// the host.
pub trait StepRunner: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Runs the step to its end and returns its exit code; output lines go to `log`. Afterwards
    /// `dir/upper` holds only the step's own changes (no mount points of the runner's making).
    fn run(&self, step: RunStep, log: Log)
        -> impl Future<Output = Result<i32, Self::Error>> + Send;
}

/// The node's image store, as the build sees it. Its errors are its own type, kept as
/// [`StepRunner`]'s are.
pub trait Store: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;
    /// The image `reference` (pulled when missing).
    fn base(
        &self,
        reference: &str,
        log: Log,
    ) -> impl Future<Output = Result<BaseImage, Self::Error>> + Send;
    /// The snapshot directory of a layer chain.
    fn snapshot(&self, chain_id: &Digest) -> PathBuf;
    /// Whether the blob of `layer` and the snapshot of `chain_id` are both present.
    fn has_layer(&self, layer: &LayerRef, chain_id: &Digest) -> bool;
    /// A fresh path on the store's filesystem (so results can be renamed into place).
    fn tmp(&self, what: &str) -> PathBuf;
    /// Takes a built layer in: the blob file and the snapshot directory are moved into place.
    fn add_layer(
        &self,
        blob: &Path,
        layer: &LayerRef,
        snapshot: &Path,
        chain_id: &Digest,
    ) -> Result<(), Self::Error>;
    /// Stores the image under each of `tags` (none: stored by id only).
    fn save(&self, tags: &[String], image: &Image) -> Result<(), Self::Error>;
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The Dockerfile's name in messages.
    pub file: String,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: timestamps in the image, and the clamp of file times.
    pub epoch: u64,
    pub tags: Vec<String>,
    /// Where cache records (and `RUN --mount=type=cache` dirs) live.
    pub cache_dir: PathBuf,
}
