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

#![deny(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use reg_registry::digest::{chain_id, chain_ids, Digest};
use reg_untrusted::{is_symlink_refusal, set_mode, set_mtime, set_owner, Node, Tree};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::dockerfile::{Command, Dockerfile, HereDoc, Inst, Source, Stage, Step};
use crate::fsview::View;
use crate::layer::Compression;
use crate::lex::{Lexer, Vars};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

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
    fn chain(&self) -> Vec<Digest> {
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
    fn bind(source: PathBuf, target: String, readonly: bool) -> Mount {
        Mount {
            source,
            target,
            readonly,
            layers: Vec::new(),
        }
    }
}

/// The `key=value` pairs of a `--mount` spec (a bare key means `true`).
fn mount_options(spec: &str) -> BTreeMap<&str, &str> {
    spec.split(',')
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, "true"));
            (k.trim(), v.trim())
        })
        .collect()
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

pub trait StepRunner: Send + Sync {
    /// Runs the step to its end and returns its exit code; output lines go to `log`. Afterwards
    /// `dir/upper` holds only the step's own changes (no mount points of the runner's making).
    fn run(&self, step: RunStep, log: Log) -> impl Future<Output = Result<i32, String>> + Send;
}

pub trait Store: Send + Sync {
    /// The image `reference` (pulled when missing).
    fn base(
        &self,
        reference: &str,
        log: Log,
    ) -> impl Future<Output = Result<BaseImage, String>> + Send;
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
    ) -> Result<(), String>;
    /// Stores the image under each of `tags` (none: stored by id only).
    fn save(&self, tags: &[String], image: &Image) -> Result<(), String>;
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

/// A stage as it is being built.
#[derive(Debug, Clone, Default)]
struct State {
    key: String,
    layers: Vec<LayerRef>,
    chain: Vec<Digest>,
    config: Map<String, Value>,
    history: Vec<Value>,
    args: Vars,
    /// Whether CMD was set in this stage (ENTRYPOINT resets an inherited CMD only).
    cmd_here: bool,
    arch: String,
}

impl State {
    fn env(&self) -> Vec<(String, String)> {
        self.config
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (kv.to_string(), String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_env(&mut self, k: &str, v: &str) {
        let mut env = self.env();
        match env.iter_mut().find(|(name, _)| name == k) {
            Some(e) => e.1 = v.to_string(),
            None => env.push((k.to_string(), v.to_string())),
        }
        self.config.insert(
            "Env".into(),
            env.into_iter()
                .map(|(k, v)| json!(format!("{k}={v}")))
                .collect(),
        );
    }

    /// What `$v` sees: ARGs in scope, overridden by ENV.
    fn vars(&self) -> Vars {
        let mut v = self.args.clone();
        v.extend(self.env());
        v
    }

    fn workdir(&self) -> String {
        self.config
            .get("WorkingDir")
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
            .to_string()
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .get("Shell")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn view(&self, store: &impl Store) -> Result<View, String> {
        View::new(self.chain.iter().map(|c| store.snapshot(c)).collect())
            .map_err(|e| format!("the stage's snapshots: {e}"))
    }

    fn history(&mut self, epoch: u64, created_by: String, empty: bool) {
        let mut h = json!({
            "created": rfc3339(epoch),
            "created_by": created_by,
            "comment": "reg build",
        });
        if empty {
            h["empty_layer"] = json!(true);
        }
        self.history.push(h);
    }

    fn fold(&mut self, what: &str) {
        self.key = key_of(&[&self.key, what]);
    }
}

fn key_of(parts: &[&str]) -> String {
    Digest::sha256_of(parts.join("\n").as_bytes()).to_string()
}

fn rfc3339(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch))
        .to_string()
}

/// Names an earlier stage: by `AS` name or by index.
fn stage_ref(df: &Dockerfile, before: usize, name: &str) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    df.stages[..before]
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
        .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
}

fn flag<'a>(flags: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    flags
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_deref().unwrap_or(""))
}

struct Builder<'a, S, R> {
    store: &'a S,
    runner: &'a R,
    df: &'a Dockerfile,
    context: &'a crate::context::Context,
    opts: &'a Options,
    log: Log,
    lexer: Lexer,
    globals: Vars,
}

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
        let value = match opts.build_args.get(&a.name) {
            Some(v) => Some(v.clone()),
            None => match &a.default {
                Some(d) => Some(
                    lexer
                        .word(d, &globals)
                        .map_err(|e| BuildError::Other(format!("ARG {}: {e}", a.name)))?,
                ),
                None => None,
            },
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
        Some(t) => stage_ref(df, df.stages.len(), t).ok_or_else(|| {
            BuildError::Other(format!(
                "target stage {t:?} could not be found (stages: {})",
                df.stages
                    .iter()
                    .enumerate()
                    .map(|(i, s)| s.name.clone().unwrap_or_else(|| i.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
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
            return Err(BuildError::Other(
                "stages depend on each other in a cycle".into(),
            ));
        }
        let results = futures::future::join_all(ready.iter().map(|i| b.stage(*i, &done))).await;
        for (i, r) in ready.into_iter().zip(results) {
            needed.remove(&i);
            done.insert(i, r?);
        }
    }
    let st = done
        .remove(&target)
        .ok_or_else(|| BuildError::Other("the target stage was not built".into()))?;
    b.finish(st)
}

impl<S: Store, R: StepRunner> Builder<'_, S, R> {
    fn deps(&self, i: usize) -> BTreeSet<usize> {
        let s = &self.df.stages[i];
        let mut out = BTreeSet::new();
        let expand = |v: &str| self.lexer.word(v, &self.globals).unwrap_or_default();
        if let Some(d) = stage_ref(self.df, i, &expand(&s.base)) {
            out.insert(d);
        }
        for step in &s.steps {
            match &step.inst {
                Inst::Copy { flags, .. } => {
                    if let Some(d) =
                        flag(flags, "from").and_then(|f| stage_ref(self.df, i, &expand(f)))
                    {
                        out.insert(d);
                    }
                }
                Inst::Run { flags, .. } => {
                    for (_, spec) in flags.iter().filter(|(n, _)| n == "mount") {
                        let spec = expand(spec.as_deref().unwrap_or(""));
                        if let Some(d) = mount_options(&spec)
                            .get("from")
                            .and_then(|f| stage_ref(self.df, i, f))
                        {
                            out.insert(d);
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The build context as a view (one layer).
    fn context_view(&self, step: &Step) -> Result<View, BuildError> {
        View::new(vec![self.context.dir.clone()])
            .map_err(|e| self.err(step, format!("the build context: {e}")))
    }

    fn err(&self, step: &Step, message: impl std::fmt::Display) -> BuildError {
        BuildError::Step {
            file: self.opts.file.clone(),
            line: step.pos.line,
            keyword: step.inst.keyword(),
            message: message.to_string(),
        }
    }

    async fn stage(&self, i: usize, done: &HashMap<usize, State>) -> Result<State, BuildError> {
        let s: &Stage = &self.df.stages[i];
        let label = s.name.clone().unwrap_or_else(|| format!("stage-{i}"));
        let total = s.steps.len() + 1;
        let base = self.lexer.word(&s.base, &self.globals).map_err(|e| {
            BuildError::Other(format!("{}:{}: FROM: {e}", self.opts.file, s.pos.line))
        })?;
        (self.log)(Event::Step {
            stage: label.clone(),
            n: 1,
            total,
            text: format!("FROM {base}"),
        });
        let started = Instant::now();
        let mut st = if base == "scratch" {
            State {
                key: key_of(&["scratch"]),
                arch: reg_registry::host_platform().1.into(),
                ..State::default()
            }
        } else if let Some(d) = stage_ref(self.df, i, &base) {
            let mut from = done
                .get(&d)
                .cloned()
                .ok_or_else(|| BuildError::Other(format!("stage {base} was not built")))?;
            from.args.clear();
            from.cmd_here = false;
            from
        } else {
            let img = self
                .store
                .base(&base, self.log.clone())
                .await
                .map_err(|e| {
                    BuildError::Other(format!(
                        "{}:{}: FROM {base}: {e}",
                        self.opts.file, s.pos.line
                    ))
                })?;
            State {
                key: key_of(&["image", &img.id.to_string()]),
                chain: img.chain(),
                layers: img.layers.clone(),
                config: img.config["config"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                history: img.config["history"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                args: Vars::new(),
                cmd_here: false,
                arch: img.config["architecture"]
                    .as_str()
                    .unwrap_or(reg_registry::host_platform().1)
                    .to_string(),
            }
        };
        if !st.env().iter().any(|(k, _)| k == "PATH") {
            st.set_env("PATH", DEFAULT_PATH);
        }
        (self.log)(Event::Done {
            ms: started.elapsed().as_millis() as u64,
        });
        // A base image's ONBUILD triggers run first, once.
        let triggers: Vec<String> = st
            .config
            .remove("OnBuild")
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        for t in triggers {
            let df = crate::dockerfile::parse(
                &format!("ONBUILD trigger of {base}"),
                &format!("FROM scratch\n{t}\n"),
            )?;
            for step in df.stages.into_iter().flat_map(|s| s.steps) {
                (self.log)(Event::Note {
                    message: format!("running ONBUILD trigger: {t}"),
                });
                self.step(&mut st, &step, i, done).await?;
            }
        }
        for (n, step) in s.steps.iter().enumerate() {
            (self.log)(Event::Step {
                stage: label.clone(),
                n: n + 2,
                total,
                text: describe(step),
            });
            let started = Instant::now();
            let cached = self.step(&mut st, step, i, done).await?;
            if cached {
                (self.log)(Event::Cached);
            }
            (self.log)(Event::Done {
                ms: started.elapsed().as_millis() as u64,
            });
        }
        Ok(st)
    }

    /// Applies one instruction; returns whether its layer came from the cache.
    async fn step(
        &self,
        st: &mut State,
        step: &Step,
        stage: usize,
        done: &HashMap<usize, State>,
    ) -> Result<bool, BuildError> {
        let vars = st.vars();
        let word = |s: &str| self.lexer.word(s, &vars).map_err(|e| self.err(step, e));
        match &step.inst {
            Inst::Env(pairs) => {
                // One value per instruction: every pair sees the variables from before it.
                let mut set = Vec::new();
                for (k, v) in pairs {
                    set.push((word(k)?, word(v)?));
                }
                let text = set
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                for (k, v) in set {
                    st.set_env(&k, &v);
                }
                self.meta(st, format!("ENV {text}"));
            }
            Inst::Arg(args) => {
                for a in args {
                    let value = match self.opts.build_args.get(&a.name) {
                        Some(v) => Some(v.clone()),
                        None => match &a.default {
                            Some(d) => Some(word(d)?),
                            None => self.globals.get(&a.name).cloned(),
                        },
                    };
                    if let Some(v) = value {
                        st.args.insert(a.name.clone(), v);
                    }
                }
                // An ARG changes what later steps see, not the image: no history, and no cache
                // key of its own (a RUN's key has the args in its environment, as docker's).
            }
            Inst::Label(pairs) => {
                let mut labels = st
                    .config
                    .get("Labels")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let mut text = Vec::new();
                for (k, v) in pairs {
                    let (k, v) = (word(k)?, word(v)?);
                    text.push(format!("{k}={v}"));
                    labels.insert(k, json!(v));
                }
                st.config.insert("Labels".into(), Value::Object(labels));
                self.meta(st, format!("LABEL {}", text.join(" ")));
            }
            Inst::Workdir(w) => {
                let w = word(w)?;
                let path = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", st.workdir())
                };
                let path = format!("/{}", crate::ignore::clean(&path));
                st.config.insert("WorkingDir".into(), json!(path));
                self.meta(st, format!("WORKDIR {path}"));
            }
            Inst::User(u) => {
                let u = word(u)?;
                st.config.insert("User".into(), json!(u));
                self.meta(st, format!("USER {u}"));
            }
            Inst::Expose(ports) => {
                let mut exposed = st
                    .config
                    .get("ExposedPorts")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let mut text = Vec::new();
                for p in ports {
                    for p in self.lexer.words(p, &vars).map_err(|e| self.err(step, e))? {
                        let p = if p.contains('/') {
                            p
                        } else {
                            format!("{p}/tcp")
                        };
                        let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                        if num.split('-').any(|n| n.parse::<u16>().is_err())
                            || !matches!(proto, "tcp" | "udp" | "sctp")
                        {
                            return Err(self.err(
                                step,
                                format!("invalid port {p:?}: expected PORT[/tcp|udp|sctp]"),
                            ));
                        }
                        exposed.insert(p.clone(), json!({}));
                        text.push(p);
                    }
                }
                st.config
                    .insert("ExposedPorts".into(), Value::Object(exposed));
                self.meta(st, format!("EXPOSE {}", text.join(" ")));
            }
            Inst::Volume(vols) => {
                let mut v = st
                    .config
                    .get("Volumes")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let mut text = Vec::new();
                for p in vols {
                    let p = word(p)?;
                    if p.is_empty() {
                        return Err(self.err(step, "VOLUME needs a path"));
                    }
                    v.insert(p.clone(), json!({}));
                    text.push(p);
                }
                st.config.insert("Volumes".into(), Value::Object(v));
                self.meta(st, format!("VOLUME [{}]", text.join(" ")));
            }
            Inst::Stopsignal(s) => {
                let s = word(s)?;
                st.config.insert("StopSignal".into(), json!(s));
                self.meta(st, format!("STOPSIGNAL {s}"));
            }
            Inst::Shell(sh) => {
                st.config.insert("Shell".into(), json!(sh));
                self.meta(st, format!("SHELL {}", json!(sh)));
            }
            Inst::Maintainer(m) => self.meta(st, format!("MAINTAINER {m}")),
            Inst::Onbuild(t) => {
                let mut list: Vec<Value> = st
                    .config
                    .get("OnBuild")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                list.push(json!(t));
                st.config.insert("OnBuild".into(), Value::Array(list));
                self.meta(st, format!("ONBUILD {t}"));
            }
            Inst::Cmd(c) => {
                let argv = self.argv(st, c);
                st.config.insert("Cmd".into(), json!(argv));
                st.cmd_here = true;
                self.meta(st, format!("CMD {}", json!(argv)));
            }
            Inst::Entrypoint(c) => {
                let argv = self.argv(st, c);
                st.config.insert("Entrypoint".into(), json!(argv));
                if !st.cmd_here {
                    // docker: an ENTRYPOINT drops the CMD inherited from the base image.
                    st.config.insert("Cmd".into(), Value::Null);
                }
                self.meta(st, format!("ENTRYPOINT {}", json!(argv)));
            }
            Inst::Healthcheck { flags, command } => {
                let hc = match command {
                    None => json!({ "Test": ["NONE"] }),
                    Some(c) => {
                        let test: Vec<String> = match c {
                            Command::Exec(v) => std::iter::once("CMD".to_string())
                                .chain(v.iter().cloned())
                                .collect(),
                            Command::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
                        };
                        let mut hc = json!({ "Test": test });
                        for (name, key) in [
                            ("interval", "Interval"),
                            ("timeout", "Timeout"),
                            ("start-period", "StartPeriod"),
                            ("start-interval", "StartInterval"),
                        ] {
                            if let Some(v) = flag(flags, name) {
                                let d = humantime::parse_duration(v).map_err(|e| {
                                    self.err(step, format!("--{name}={v}: {e} (write e.g. 30s)"))
                                })?;
                                hc[key] = json!(d.as_nanos() as u64);
                            }
                        }
                        if let Some(r) = flag(flags, "retries") {
                            let n: u64 = r.parse().map_err(|_| {
                                self.err(step, format!("--retries={r}: not a number"))
                            })?;
                            hc["Retries"] = json!(n);
                        }
                        hc
                    }
                };
                st.config.insert("Healthcheck".into(), hc.clone());
                self.meta(st, format!("HEALTHCHECK {hc}"));
            }
            Inst::Run {
                flags,
                command,
                heredocs,
            } => {
                return self
                    .run(st, step, flags, command, heredocs, stage, done)
                    .await
            }
            Inst::Copy {
                add,
                flags,
                sources,
                dest,
            } => {
                return self
                    .copy(st, step, *add, flags, sources, dest, stage, done)
                    .await
            }
        }
        Ok(false)
    }

    fn meta(&self, st: &mut State, text: String) {
        st.fold(&text);
        st.history(self.opts.epoch, text, true);
    }

    fn argv(&self, st: &State, c: &Command) -> Vec<String> {
        match c {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut a = st.shell();
                a.push(s.clone());
                a
            }
        }
    }

    /// Looks the cache up, or makes the layer with `make` (which fills the directory it is
    /// given) and records it. Returns whether it was cached.
    async fn layer<F, Fut>(
        &self,
        st: &mut State,
        step: &Step,
        key: String,
        created_by: String,
        make: F,
    ) -> Result<bool, BuildError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<PathBuf, BuildError>>,
    {
        let record = self.opts.cache_dir.join(key.replace(':', "-"));
        if !self.opts.no_cache {
            if let Some(layer) =
                own::read(&record).and_then(|b| serde_json::from_slice::<Option<LayerRef>>(&b).ok())
            {
                let usable = match &layer {
                    None => true,
                    Some(l) => self
                        .store
                        .has_layer(l, &chain_id(st.chain.last(), &l.diff_id)),
                };
                if usable {
                    self.push_layer(st, key, created_by, layer);
                    return Ok(true);
                }
            }
        }
        let work = self.store.tmp("step");
        own::mkdir(&work).map_err(|e| self.err(step, e))?;
        let result = make(work.clone()).await;
        let made = match result {
            Ok(dir) => self.commit(st, step, &dir).await,
            Err(e) => Err(e),
        };
        let _ = tokio::task::spawn_blocking(move || remove_scratch(&work)).await;
        let layer = made?;
        let json = serde_json::to_vec(&layer).unwrap_or_default();
        if own::write(&self.opts.cache_dir, &record, &json).is_err() {
            (self.log)(Event::Note {
                message: format!("could not record the cache entry {}", record.display()),
            });
        }
        self.push_layer(st, key, created_by, layer);
        Ok(false)
    }

    /// The layer of directory `dir` (none when it is empty), taken into the store.
    async fn commit(
        &self,
        st: &State,
        step: &Step,
        dir: &Path,
    ) -> Result<Option<LayerRef>, BuildError> {
        let empty = Tree::open_strict(dir)
            .and_then(|t| t.read_dir(""))
            .map(|names| names.is_empty())
            .unwrap_or(true);
        if empty {
            return Ok(None);
        }
        let blob = self.store.tmp("blob");
        let (d, b, c, epoch) = (
            dir.to_path_buf(),
            blob.clone(),
            self.opts.compression,
            self.opts.epoch,
        );
        let written = tokio::task::spawn_blocking(move || crate::layer::write(&d, &b, c, epoch))
            .await
            .map_err(|e| self.err(step, e))?
            .map_err(|e| self.err(step, format!("writing the layer: {e}")))?;
        let layer = LayerRef {
            digest: written.digest,
            diff_id: written.diff_id,
            size: written.size,
            media_type: self.opts.compression.media_type().into(),
        };
        let chain = chain_id(st.chain.last(), &layer.diff_id);
        let res = self.store.add_layer(&blob, &layer, dir, &chain);
        own::remove_file(&blob);
        res.map_err(|e| self.err(step, e))?;
        Ok(Some(layer))
    }

    fn push_layer(&self, st: &mut State, key: String, created_by: String, layer: Option<LayerRef>) {
        st.key = key;
        let empty = layer.is_none();
        if let Some(l) = layer {
            let next = chain_id(st.chain.last(), &l.diff_id);
            st.chain.push(next);
            st.layers.push(l);
        }
        st.history(self.opts.epoch, created_by, empty);
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        st: &mut State,
        step: &Step,
        flags: &[(String, Option<String>)],
        command: &Command,
        heredocs: &[HereDoc],
        stage: usize,
        done: &HashMap<usize, State>,
    ) -> Result<bool, BuildError> {
        let args = match command {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut a = st.shell();
                a.push(script(s, heredocs));
                a
            }
        };
        if args.is_empty() || args[0].is_empty() {
            return Err(self.err(step, "RUN needs a command"));
        }
        let network = match flag(flags, "network") {
            // docker build's default: the default bridge (its own network namespace, NAT
            // out, nothing of the host's loopback); `host` only when asked for.
            None | Some("default") => "bridge",
            Some("host") => "host",
            Some("none") => "none",
            Some(o) => {
                return Err(self.err(step, format!("--network={o}: use default, none or host")))
            }
        };
        if let Some(s) = flag(flags, "security") {
            if s != "sandbox" {
                return Err(self.err(step, format!("--security={s}: only sandbox is supported")));
            }
        }
        let vars = st.vars();
        let workdir = st.workdir();
        let mut mounts = Vec::new();
        let mut mount_keys = Vec::new();
        let mut scratch = Vec::new();
        for (name, value) in flags {
            if name != "mount" {
                continue;
            }
            let spec = self
                .lexer
                .word(value.as_deref().unwrap_or(""), &vars)
                .map_err(|e| self.err(step, e))?;
            let (m, key, tmp) = self.mount(step, &spec, &workdir, stage, done).await?;
            mount_keys.push(format!("{spec} {key}"));
            mounts.push(m);
            scratch.extend(tmp);
        }
        // Build args reach RUN as environment variables (ENV wins), as with docker.
        let mut env: BTreeMap<String, String> = st.args.clone();
        env.extend(st.env());
        let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let user = st
            .config
            .get("User")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_string);
        let shown = match command {
            Command::Exec(_) => json!(args).to_string(),
            Command::Shell(_) => args.join(" "),
        };
        let key = key_of(&[
            &st.key,
            "RUN",
            &json!(args).to_string(),
            &json!(env).to_string(),
            &workdir,
            user.as_deref().unwrap_or(""),
            network,
            &json!(mount_keys).to_string(),
            &json!(self.opts.compression).to_string(),
        ]);
        let layers: Vec<PathBuf> = st.chain.iter().map(|c| self.store.snapshot(c)).collect();
        let res = self
            .layer(st, step, key, format!("RUN {shown}"), |work| async move {
                let upper = work.join("upper");
                let run = RunStep {
                    layers,
                    dir: work.clone(),
                    args,
                    env,
                    cwd: workdir,
                    user,
                    network: network.into(),
                    mounts,
                };
                let code = self
                    .runner
                    .run(run, self.log.clone())
                    .await
                    .map_err(|e| self.err(step, e))?;
                if code != 0 {
                    return Err(self.err(
                        step,
                        format!("{shown}: the command returned a non-zero code: {code}"),
                    ));
                }
                Ok(upper)
            })
            .await;
        for d in scratch {
            let _ = remove_scratch(&d);
        }
        res
    }

    /// `--mount=type=cache|bind|tmpfs,target=…`: what the step gets there, the part of the
    /// cache key it adds (the content of a bind's source), and a scratch dir to remove after.
    async fn mount(
        &self,
        step: &Step,
        spec: &str,
        workdir: &str,
        stage: usize,
        done: &HashMap<usize, State>,
    ) -> Result<(Mount, String, Option<PathBuf>), BuildError> {
        let kv = mount_options(spec);
        let ty = kv.get("type").copied().unwrap_or("bind");
        if !matches!(ty, "cache" | "tmpfs" | "bind") {
            return Err(self.err(
                step,
                format!("--mount type={ty} is not supported (reg knows cache, bind, tmpfs)"),
            ));
        }
        let target = kv
            .get("target")
            .or_else(|| kv.get("dst"))
            .or_else(|| kv.get("destination"))
            .ok_or_else(|| self.err(step, format!("--mount={spec}: target= is missing")))?;
        let target = if target.starts_with('/') {
            target.to_string()
        } else {
            format!("{workdir}/{target}")
        };
        let target = format!("/{}", crate::ignore::clean(&target));
        match ty {
            "cache" => {
                let id = kv.get("id").copied().unwrap_or(target.as_str());
                let path = self
                    .opts
                    .cache_dir
                    .join("mounts")
                    .join(Digest::sha256_of(id.as_bytes()).hex());
                own::mkdir(&path).map_err(|e| self.err(step, e))?;
                Ok((Mount::bind(path, target, false), String::new(), None))
            }
            "tmpfs" => {
                let path = self.store.tmp("tmpfs");
                own::mkdir(&path).map_err(|e| self.err(step, e))?;
                Ok((
                    Mount::bind(path.clone(), target, false),
                    String::new(),
                    Some(path),
                ))
            }
            "bind" => self.bind_mount(step, spec, &kv, target, stage, done).await,
            o => Err(self.err(
                step,
                format!("--mount type={o} is not supported (reg knows cache, bind, tmpfs)"),
            )),
        }
    }

    /// `--mount=type=bind[,from=STAGE|IMAGE][,source=…][,rw]`: read-only unless `rw`, and even
    /// then nothing written reaches the context or the stage (BuildKit's rule).
    async fn bind_mount(
        &self,
        step: &Step,
        spec: &str,
        kv: &BTreeMap<&str, &str>,
        target: String,
        stage: usize,
        done: &HashMap<usize, State>,
    ) -> Result<(Mount, String, Option<PathBuf>), BuildError> {
        let (view, from_key) = match kv.get("from") {
            None => (self.context_view(step)?, None),
            Some(f) => match stage_ref(self.df, stage, f) {
                Some(d) => {
                    let s = done
                        .get(&d)
                        .ok_or_else(|| self.err(step, format!("stage {f} was not built")))?;
                    let view = s.view(self.store).map_err(|e| self.err(step, e))?;
                    (view, Some(s.key.clone()))
                }
                None => {
                    let img = self
                        .store
                        .base(f, self.log.clone())
                        .await
                        .map_err(|e| self.err(step, format!("--mount={spec}: {e}")))?;
                    let layers = img.chain().iter().map(|c| self.store.snapshot(c)).collect();
                    let view = View::new(layers).map_err(|e| self.err(step, e))?;
                    (view, Some(img.id.to_string()))
                }
            },
        };
        let src = view
            .resolve(
                kv.get("source").or_else(|| kv.get("src")).unwrap_or(&""),
                true,
            )
            .map_err(|e| self.err(step, e))?;
        let e = view.find(&src).ok_or_else(|| {
            let place = match kv.get("from") {
                Some(f) => format!("in {f}"),
                None => "in the build context".into(),
            };
            self.err(step, format!("--mount={spec}: /{src} is not {place}"))
        })?;
        let rw = matches!(kv.get("rw").or_else(|| kv.get("readwrite")), Some(&"true"));
        // The key: a stage or image is named by its own key; the context by the content of
        // what is mounted.
        let key = match from_key {
            Some(k) => format!("{k} /{src}"),
            None => {
                let fp = tokio::task::block_in_place(|| {
                    self.fingerprint(&view, true, std::slice::from_ref(&src))
                });
                Digest::sha256_of(json!(fp).to_string().as_bytes()).to_string()
            }
        };
        let from_context = kv.get("from").is_none();
        if e.meta.is_dir() && (rw || !from_context) {
            // Snapshots hold whiteouts, and a writable bind must not write through: a view.
            let mut m = Mount::bind("overlay".into(), target, !rw);
            m.layers = view.merged_dirs(&src);
            return Ok((m, key, None));
        }
        if rw {
            // A private copy of the one file (a regular file: a device or FIFO is not read).
            let tmp = self.store.tmp("bind");
            let fail = |err: std::io::Error| self.err(step, format!("--mount={spec}: {err}"));
            own::mkdir(&tmp).map_err(fail)?;
            let mut from = e.open().map_err(fail)?;
            let mut to = Tree::open_strict(&tmp)
                .and_then(|t| t.create_file("file", e.meta.mode() & 0o7777))
                .map_err(fail)?;
            std::io::copy(&mut from, &mut to).map_err(fail)?;
            return Ok((Mount::bind(tmp.join("file"), target, false), key, Some(tmp)));
        }
        Ok((Mount::bind(e.host, target, true), key, None))
    }

    /// One line per path under `srcs` in `view` (mode, owner, size, content digest for the
    /// context, symlink target): what a cache key must see of copied or mounted files.
    fn fingerprint(&self, view: &View, from_context: bool, srcs: &[String]) -> Vec<String> {
        let mut fp = Vec::new();
        for src in srcs {
            walk(view, src, &mut |rel, e| {
                let content = if from_context {
                    self.context
                        .digests
                        .get(rel)
                        .map(|d| d.to_string())
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                let link = if e.meta.file_type().is_symlink() {
                    e.read_link()
                        .map(|l| l.to_string_lossy().into_owned())
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                fp.push(format!(
                    "{rel} {:o} {} {} {} {content} {link}",
                    e.meta.mode(),
                    e.meta.uid(),
                    e.meta.gid(),
                    e.meta.len()
                ));
            });
        }
        fp
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy(
        &self,
        st: &mut State,
        step: &Step,
        add: bool,
        flags: &[(String, Option<String>)],
        sources: &[Source],
        dest: &str,
        stage: usize,
        done: &HashMap<usize, State>,
    ) -> Result<bool, BuildError> {
        let vars = st.vars();
        let word = |s: &str| self.lexer.word(s, &vars).map_err(|e| self.err(step, e));
        let keyword = step.inst.keyword();
        // Accepted by the parser, not implemented: refuse rather than build something else.
        for f in ["parents", "exclude", "checksum", "keep-git-dir"] {
            if flag(flags, f).is_some() {
                return Err(self.err(step, format!("--{f} is not supported by reg yet")));
            }
        }
        // Where the files come from: the context, an earlier stage, or an image.
        let (from_view, from_key, from_context) = match flag(flags, "from") {
            None => (self.context_view(step)?, String::new(), true),
            Some(f) => {
                let f = word(f)?;
                if add {
                    return Err(self.err(step, "ADD has no --from: use COPY --from"));
                }
                match stage_ref(self.df, stage, &f) {
                    Some(d) => {
                        let s = done
                            .get(&d)
                            .ok_or_else(|| self.err(step, format!("stage {f} was not built")))?;
                        let view = s.view(self.store).map_err(|e| self.err(step, e))?;
                        (view, s.key.clone(), false)
                    }
                    None => {
                        let img = self
                            .store
                            .base(&f, self.log.clone())
                            .await
                            .map_err(|e| self.err(step, format!("--from={f}: {e}")))?;
                        let layers = img.chain().iter().map(|c| self.store.snapshot(c)).collect();
                        let view = View::new(layers).map_err(|e| self.err(step, e))?;
                        (view, img.id.to_string(), false)
                    }
                }
            }
        };
        let chown = match flag(flags, "chown") {
            Some(c) => Some(self.owner(st, step, &word(c)?)?),
            None => None,
        };
        let chmod = match flag(flags, "chmod") {
            Some(m) => Some(u32::from_str_radix(&word(m)?, 8).map_err(|_| {
                self.err(
                    step,
                    format!("--chmod={m}: expected an octal mode such as 0644"),
                )
            })?),
            None => None,
        };
        let dest_raw = word(dest)?;
        let dest_abs = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{dest_raw}", st.workdir())
        };
        let view = st.view(self.store).map_err(|e| self.err(step, e))?;
        let dest_rel = view
            .resolve(&dest_abs, true)
            .map_err(|e| self.err(step, e))?;
        // Expand every source to the entries it names.
        let mut plan: Vec<(String, bool)> = Vec::new(); // (path in the source view, named by a pattern)
        let mut heredocs = Vec::new();
        for s in sources {
            match s {
                Source::HereDoc(h) => heredocs.push(h),
                Source::Path(p) => {
                    let p = word(p)?;
                    if p.starts_with("http://")
                        || p.starts_with("https://")
                        || p.starts_with("git@")
                    {
                        return Err(self.err(
                            step,
                            format!("{p}: remote sources are not supported; download in a RUN step or COPY a local file"),
                        ));
                    }
                    if p.contains(['*', '?', '[']) {
                        let found = glob(&from_view, &p);
                        if found.is_empty() {
                            return Err(self.err(step, format!("no source files match {p:?}")));
                        }
                        plan.extend(found.into_iter().map(|f| (f, true)));
                    } else {
                        let r = from_view.resolve(&p, true).map_err(|e| self.err(step, e))?;
                        if from_view.find(&r).is_none() {
                            let place = if from_context {
                                "the build context"
                            } else {
                                "the source stage"
                            };
                            return Err(self.err(step, format!("{p:?}: not found in {place}")));
                        }
                        plan.push((r, false));
                    }
                }
            }
        }
        let many = plan.len() + heredocs.len() > 1 || plan.iter().any(|(_, g)| *g);
        let dest_is_dir = dest_raw.ends_with('/')
            || dest_raw == "."
            || dest_raw.ends_with("/.")
            || many
            || view.find(&dest_rel).is_some_and(|e| e.meta.is_dir());
        if many && !dest_raw.ends_with('/') {
            return Err(self.err(
                step,
                format!(
                    "when copying several sources, the destination must end with /: {dest_raw}"
                ),
            ));
        }
        // The cache key: content digests of what is copied (mode, owner, bytes — no mtimes).
        // A stat per copied path (2,000 for a big COPY): off the async workers.
        let srcs: Vec<String> = plan.iter().map(|(src, _)| src.clone()).collect();
        let mut fp =
            tokio::task::block_in_place(|| self.fingerprint(&from_view, from_context, &srcs));
        for h in &heredocs {
            fp.push(format!("heredoc {} {}", h.expand, h.body));
        }
        let text = {
            let mut t = vec![keyword.to_string()];
            for (n, v) in flags {
                t.push(match v {
                    Some(v) => format!("--{n}={v}"),
                    None => format!("--{n}"),
                });
            }
            for s in sources {
                t.push(match s {
                    Source::Path(p) => p.clone(),
                    Source::HereDoc(_) => "<<heredoc".into(),
                });
            }
            t.push(dest_raw.clone());
            t.join(" ")
        };
        let key = key_of(&[
            &st.key,
            &text,
            &dest_rel,
            &from_key,
            &json!(fp).to_string(),
            &json!(self.opts.compression).to_string(),
        ]);
        let heredoc_files: Vec<(String, String)> = heredocs
            .iter()
            .map(|h| {
                let body = if h.expand {
                    self.lexer
                        .word(&h.body, &vars)
                        .unwrap_or_else(|_| h.body.clone())
                } else {
                    h.body.clone()
                };
                (dest_rel.clone(), body)
            })
            .collect();
        let opts = CopyOpts {
            chown,
            chmod,
            keep_owner: !from_context,
        };
        self.layer(st, step, key, text, |work| async move {
            let layer = work.join("layer");
            let view2 = view.clone();
            let res = tokio::task::spawn_blocking(move || -> Result<PathBuf, String> {
                own::mkdir(&layer).map_err(|e| e.to_string())?;
                // Filled by us from untrusted sources: no symlink in it is ever followed.
                let tree = Tree::open_strict(&layer).map_err(|e| e.to_string())?;
                let parent_of_dest = if dest_is_dir {
                    dest_rel.clone()
                } else {
                    parent(&dest_rel).to_string()
                };
                mirror_dirs(&view2, &tree, &parent_of_dest)?;
                for (path, body) in heredoc_files {
                    let mode = opts.chmod.unwrap_or(0o644);
                    let mut f = make_new(&tree, &path, || tree.create_file(&path, mode))?;
                    f.write_all(body.as_bytes()).map_err(at(&path))?;
                }
                for (src, _) in plan {
                    let e = from_view
                        .find(&src)
                        .ok_or_else(|| format!("{src}: vanished during the build"))?;
                    let name = src.rsplit('/').next().unwrap_or(&src).to_string();
                    if add && e.meta.is_file() {
                        let mut f = e.open().map_err(|err| format!("/{src}: {err}"))?;
                        if let Some(kind) = archive_kind(&mut f) {
                            let into = if dest_is_dir {
                                parent_of_dest.clone()
                            } else {
                                dest_rel.clone()
                            };
                            tree.mkdir_all(&into, 0o755).map_err(at(&into))?;
                            extract(f, kind, &tree, &into)
                                .map_err(|err| format!("{src}: {err}"))?;
                            continue;
                        }
                    }
                    let target = if e.meta.is_dir() {
                        dest_rel.clone()
                    } else if dest_is_dir {
                        format!("{dest_rel}/{name}")
                    } else {
                        dest_rel.clone()
                    };
                    copy_tree(&from_view, &src, &tree, &target, &opts)?;
                }
                Ok(layer)
            })
            .await;
            match res {
                Ok(Ok(l)) => Ok(l),
                Ok(Err(e)) => Err(self.err(step, e)),
                Err(e) => Err(self.err(step, e)),
            }
        })
        .await
    }

    /// `--chown=USER[:GROUP]`: names looked up in the stage's /etc/passwd and /etc/group.
    fn owner(&self, st: &State, step: &Step, spec: &str) -> Result<(u32, u32), BuildError> {
        let view = st.view(self.store).map_err(|e| self.err(step, e))?;
        let (u, g) = spec.split_once(':').unwrap_or((spec, ""));
        let uid = match u.parse::<u32>() {
            Ok(n) => n,
            Err(_) => view.lookup_id("etc/passwd", u).ok_or_else(|| {
                self.err(
                    step,
                    format!("--chown: no user {u:?} in the image's /etc/passwd"),
                )
            })?,
        };
        let gid = if g.is_empty() {
            uid
        } else {
            match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => view.lookup_id("etc/group", g).ok_or_else(|| {
                    self.err(
                        step,
                        format!("--chown: no group {g:?} in the image's /etc/group"),
                    )
                })?,
            }
        };
        Ok((uid, gid))
    }

    fn finish(&self, st: State) -> Result<Image, BuildError> {
        let mut cfg = st.config.clone();
        cfg.retain(|_, v| !v.is_null());
        let config = json!({
            "architecture": st.arch,
            "os": "linux",
            "created": rfc3339(self.opts.epoch),
            "config": cfg,
            "rootfs": {
                "type": "layers",
                "diff_ids": st.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
            "history": st.history,
        });
        let config = serde_json::to_vec(&config).map_err(|e| BuildError::Other(e.to_string()))?;
        let id = Digest::sha256_of(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": id, "size": config.len() },
            "layers": st.layers.iter().map(|l| json!({
                "mediaType": l.media_type,
                "digest": l.digest,
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let manifest =
            serde_json::to_vec(&manifest).map_err(|e| BuildError::Other(e.to_string()))?;
        let image = Image {
            digest: Digest::sha256_of(&manifest),
            manifest,
            config,
            id,
            chain: st.chain.clone(),
            layers: st.layers.clone(),
        };
        self.store
            .save(&self.opts.tags, &image)
            .map_err(BuildError::Other)?;
        Ok(image)
    }
}

/// The progress line of a step.
fn describe(step: &Step) -> String {
    match &step.inst {
        Inst::Run { command, .. } => match command {
            Command::Exec(v) => format!("RUN {}", json!(v)),
            Command::Shell(s) => format!("RUN {s}"),
        },
        Inst::Copy {
            sources, dest, add, ..
        } => format!(
            "{} {} {dest}",
            if *add { "ADD" } else { "COPY" },
            sources
                .iter()
                .map(|s| match s {
                    Source::Path(p) => p.as_str(),
                    Source::HereDoc(_) => "<<heredoc",
                })
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Inst::Env(p) | Inst::Label(p) => format!(
            "{} {}",
            step.inst.keyword(),
            p.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Inst::Arg(a) => format!(
            "ARG {}",
            a.iter()
                .map(|a| match &a.default {
                    Some(d) => format!("{}={d}", a.name),
                    None => a.name.clone(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Inst::Workdir(s) | Inst::User(s) | Inst::Stopsignal(s) | Inst::Onbuild(s) => {
            format!("{} {s}", step.inst.keyword())
        }
        Inst::Expose(v) | Inst::Volume(v) | Inst::Shell(v) => {
            format!("{} {}", step.inst.keyword(), v.join(" "))
        }
        Inst::Cmd(c) | Inst::Entrypoint(c) => format!(
            "{} {}",
            step.inst.keyword(),
            match c {
                Command::Exec(v) => json!(v).to_string(),
                Command::Shell(s) => s.clone(),
            }
        ),
        other => other.keyword().to_string(),
    }
}

/// The script a shell-form RUN hands to the shell. A RUN that is only a heredoc runs the
/// heredoc; otherwise the heredocs become the command's standard input, as the shell would
/// read them.
fn script(cmd: &str, heredocs: &[HereDoc]) -> String {
    if heredocs.is_empty() {
        return cmd.to_string();
    }
    if cmd.trim().is_empty() && heredocs.len() == 1 {
        return heredocs[0].body.clone();
    }
    let mut s = cmd.trim().to_string();
    let mut bodies = String::new();
    for (i, h) in heredocs.iter().enumerate() {
        let delim = format!("REG_HEREDOC_{i}");
        if h.expand {
            s.push_str(&format!(" <<{delim}"));
        } else {
            s.push_str(&format!(" <<'{delim}'"));
        }
        bodies.push('\n');
        bodies.push_str(&h.body);
        if !h.body.ends_with('\n') {
            bodies.push('\n');
        }
        bodies.push_str(&delim);
    }
    s + &bodies
}

fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(p, _)| p)
}

/// Sources named by a pattern (`*`, `?`, `[…]` within path elements), sorted.
fn glob(view: &View, pattern: &str) -> Vec<String> {
    let comps: Vec<&str> = pattern
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let mut found = vec![String::new()];
    for c in comps {
        let mut next = Vec::new();
        for base in &found {
            if c.contains(['*', '?', '[']) {
                let Ok(g) = globset::GlobBuilder::new(c)
                    .literal_separator(true)
                    .build()
                    .map(|g| g.compile_matcher())
                else {
                    continue;
                };
                for name in view.list(base) {
                    if g.is_match(&name) {
                        next.push(join(base, &name));
                    }
                }
            } else if c == ".." {
                next.push(parent(base).to_string());
            } else {
                let p = join(base, c);
                if view.find(&p).is_some() {
                    next.push(p);
                }
            }
        }
        found = next;
    }
    found.sort();
    found.dedup();
    found.retain(|f| !f.is_empty());
    found
}

fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

/// Visits `rel` and everything below it (symlinks not followed), in name order.
fn walk(view: &View, rel: &str, f: &mut dyn FnMut(&str, &crate::fsview::Entry)) {
    if let Some(e) = view.find(rel) {
        walk_entry(view, rel, &e, f);
    }
}

fn walk_entry(
    view: &View,
    rel: &str,
    e: &crate::fsview::Entry,
    f: &mut dyn FnMut(&str, &crate::fsview::Entry),
) {
    f(rel, e);
    if e.meta.is_dir() {
        for (name, child) in view.entries(rel) {
            walk_entry(view, &join(rel, &name), &child, f);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct CopyOpts {
    chown: Option<(u32, u32)>,
    chmod: Option<u32>,
    /// From a stage or an image, owners are kept; from the context they become root's.
    keep_owner: bool,
}

/// Our own paths: the cache dir and the store's tmp paths, named by us under our data dir.
/// Nothing a build controls is *at* these paths (what a step or a copy put *inside* a scratch
/// dir goes with [`remove_scratch`]), so `std::fs` is fine for them and only for them.
mod own {
    use std::path::Path;

    #[allow(clippy::disallowed_methods)] // trusted: a path of ours (see the module)
    pub fn mkdir(p: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(p)
    }

    #[allow(clippy::disallowed_methods)] // trusted: a cache record of ours
    pub fn read(p: &Path) -> Option<Vec<u8>> {
        std::fs::read(p).ok()
    }

    /// Writes `bytes` to `p` in `dir` (made when missing) by a rename: never half a record.
    #[allow(clippy::disallowed_methods)] // trusted: a cache record of ours
    pub fn write(dir: &Path, p: &Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, p)
    }

    #[allow(clippy::disallowed_methods)] // trusted: a blob file of ours in the store's tmp dir
    pub fn remove_file(p: &Path) {
        let _ = std::fs::remove_file(p);
    }
}

/// Removes a scratch dir of ours and everything in it. The dir is ours, its content is not (a
/// step's upper dir, a layer being assembled): removed fd-relative inside the dir's parent.
fn remove_scratch(dir: &Path) -> std::io::Result<()> {
    match (dir.parent(), dir.file_name()) {
        (Some(p), Some(name)) => Tree::open_strict(p)?.remove_all(name),
        _ => Ok(()),
    }
}

/// The error for `rel` in the layer being assembled: a strict tree's refusal of a symlink on
/// the way says what happened.
fn at(rel: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| {
        if is_symlink_refusal(&e) {
            format!(
                "/{rel}: a symlink put there by an earlier source is in the way \
                 (reg never writes through one)"
            )
        } else {
            format!("/{rel}: {e}")
        }
    }
}

/// Makes `rel` in the layer free for a new entry: whatever an earlier source left there goes,
/// unless it is a directory (`dir`: one is wanted and may stay; otherwise an error). Parents
/// are made as needed. Returns whether a directory is already there.
fn make_room(layer: &Tree, rel: &str, dir: bool) -> Result<bool, String> {
    let io = at(rel);
    match layer.symlink_metadata(rel).map_err(&io)? {
        Some(m) if m.is_dir() && dir => Ok(true),
        Some(m) if m.is_dir() => Err(format!("/{rel}: cannot replace a directory with a file")),
        Some(m) if dir => Err(format!(
            "cannot copy to non-directory: /{rel} ({} put there by an earlier source; reg never \
             copies through one)",
            if m.file_type().is_symlink() {
                "a symlink"
            } else {
                "a file"
            }
        )),
        Some(_) => {
            layer.remove(rel).map_err(&io)?;
            Ok(false)
        }
        None => {
            let p = parent(rel);
            if !p.is_empty() {
                layer.mkdir_all(p, 0o755).map_err(at(p))?;
            }
            Ok(false)
        }
    }
}

/// Makes a new entry at `rel` with `make` (a create that fails if anything is there); when
/// something an earlier source left is in the way, [`make_room`] and once more. The common
/// case costs no lookup.
fn make_new<T>(
    layer: &Tree,
    rel: &str,
    make: impl Fn() -> std::io::Result<T>,
) -> Result<T, String> {
    match make() {
        Ok(v) => Ok(v),
        Err(e) if is_symlink_refusal(&e) => Err(at(rel)(e)),
        Err(_) => {
            make_room(layer, rel, false)?;
            make().map_err(at(rel))
        }
    }
}

/// Makes the directory `rel` unless one is there; returns whether it was.
fn make_dir(layer: &Tree, rel: &str) -> Result<bool, String> {
    match layer.mkdir(rel, 0o700) {
        Ok(()) => Ok(false),
        Err(e) if is_symlink_refusal(&e) => Err(at(rel)(e)),
        Err(_) if make_room(layer, rel, true)? => Ok(true),
        Err(_) => layer.mkdir(rel, 0o700).map(|()| false).map_err(at(rel)),
    }
}

/// Creates `rel` and its parents in `layer` with the metadata they have in `view` (or
/// root-owned 0755 where the image has nothing), so the layer changes no existing directory.
fn mirror_dirs(view: &View, layer: &Tree, rel: &str) -> Result<(), String> {
    let mut cur = String::new();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        cur = join(&cur, c);
        if make_dir(layer, &cur)? {
            continue;
        }
        let io = at(&cur);
        let h = layer.resolve_nofollow(&cur).map_err(&io)?;
        match view.find(&cur).filter(|e| e.meta.is_dir()) {
            Some(e) => {
                set_owner(&h, e.meta.uid(), e.meta.gid()).map_err(&io)?;
                set_mode(&h, e.meta.mode() & 0o7777).map_err(&io)?;
                let _ = set_mtime(&h, e.meta.mtime(), e.meta.mtime_nsec());
            }
            None => set_mode(&h, 0o755).map_err(&io)?,
        }
    }
    Ok(())
}

/// Copies `src` of `view` (a directory: its contents) to `target` in `layer`. Only regular
/// files are read; symlinks are copied as they are, device nodes and FIFOs made anew.
fn copy_tree(
    view: &View,
    src: &str,
    layer: &Tree,
    target: &str,
    o: &CopyOpts,
) -> Result<(), String> {
    match view.find(src) {
        Some(e) => copy_entry(view, src, &e, layer, target, o),
        None => Ok(()),
    }
}

/// [`copy_tree`] of the entry `e` found at `src`.
fn copy_entry(
    view: &View,
    src: &str,
    e: &crate::fsview::Entry,
    layer: &Tree,
    target: &str,
    o: &CopyOpts,
) -> Result<(), String> {
    let io = at(target);
    let (uid, gid) = match o.chown {
        Some(ids) => ids,
        None if o.keep_owner => (e.meta.uid(), e.meta.gid()),
        None => (0, 0),
    };
    let mode = o.chmod.unwrap_or(e.meta.mode() & 0o7777);
    let (secs, nanos) = (e.meta.mtime(), e.meta.mtime_nsec());
    let ft = e.meta.file_type();
    if ft.is_dir() {
        make_dir(layer, target)?;
        let h = layer.resolve_nofollow(target).map_err(&io)?;
        // The owner first: a chown clears set-id bits.
        set_owner(&h, uid, gid).map_err(&io)?;
        set_mode(&h, mode).map_err(&io)?;
        for (name, child) in view.entries(src) {
            let (src, target) = (join(src, &name), join(target, &name));
            copy_entry(view, &src, &child, layer, &target, o)?;
        }
        let _ = set_mtime(&h, secs, nanos);
        return Ok(());
    }
    if !(ft.is_symlink() || ft.is_file() || special(&e.meta).is_some()) {
        // Sockets are not part of an image.
        return Ok(());
    }
    if ft.is_symlink() {
        let link = e.read_link().map_err(|err| format!("/{src}: {err}"))?;
        make_new(layer, target, || layer.symlink(target, &link))?;
        let h = layer.resolve_nofollow(target).map_err(&io)?;
        set_owner(&h, uid, gid).map_err(&io)?;
    } else if ft.is_file() {
        let mut from = e.open().map_err(|err| format!("/{src}: {err}"))?;
        let mut to = make_new(layer, target, || layer.create_file(target, mode))?;
        std::io::copy(&mut from, &mut to).map_err(&io)?;
        // The metadata through the open file (a chown clears set-id bits: the mode again).
        set_owner(&to, uid, gid).map_err(&io)?;
        if mode & 0o6000 != 0 {
            to.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(&io)?;
        }
        if let Ok(t) = e.meta.modified() {
            let _ = to.set_modified(t);
        }
    } else if let Some(node) = special(&e.meta) {
        // Never opened: a snapshot's device node is a real device of this host.
        make_new(layer, target, || layer.mknod(target, node, mode))?;
        let h = layer.resolve_nofollow(target).map_err(&io)?;
        set_owner(&h, uid, gid).map_err(&io)?;
        set_mode(&h, mode).map_err(&io)?;
        let _ = set_mtime(&h, secs, nanos);
    }
    Ok(())
}

/// The device node or FIFO `m` describes, to be made anew.
fn special(m: &std::fs::Metadata) -> Option<Node> {
    let ft = m.file_type();
    let (major, minor) = crate::layer::dev_parts(m.rdev());
    if ft.is_char_device() {
        Some(Node::Char { major, minor })
    } else if ft.is_block_device() {
        Some(Node::Block { major, minor })
    } else if ft.is_fifo() {
        Some(Node::Fifo)
    } else {
        None
    }
}

#[derive(Debug, Clone, Copy)]
enum Archive {
    Tar,
    Gzip,
    Zstd,
}

/// ADD unpacks local archives, recognised by their content, not their name. `f` is left at
/// its start.
fn archive_kind(f: &mut std::fs::File) -> Option<Archive> {
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    f.rewind().ok()?;
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Archive::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Archive::Zstd)
    } else if n >= 262 && &head[257..262] == b"ustar" {
        Some(Archive::Tar)
    } else {
        None
    }
}

/// An archive entry's name as a path inside the extraction dir: `/` and `.` dropped, `..`
/// refused. `None` for the dir itself.
fn entry_path(name: &Path) -> Result<Option<PathBuf>, String> {
    let mut p = PathBuf::new();
    for c in name.components() {
        match c {
            std::path::Component::Normal(n) => p.push(n),
            std::path::Component::ParentDir => {
                return Err(format!(
                    "{}: an entry with .. in its path is refused",
                    name.display()
                ))
            }
            _ => {}
        }
    }
    Ok((!p.as_os_str().is_empty()).then_some(p))
}

/// A directory's metadata from an archive, applied once all entries are in (its mtime would
/// change with every entry made in it).
struct DirMeta {
    rel: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// Unpacks the archive `f` into `into` of the layer being assembled, with the owners, modes
/// and times of its entries, as docker does. Whatever an earlier entry or source left at an
/// entry's path is replaced (a directory by a directory is kept); a symlink on the way to an
/// entry is an error, never followed.
fn extract(f: std::fs::File, kind: Archive, layer: &Tree, into: &str) -> Result<(), String> {
    let f = std::io::BufReader::new(f);
    let r: Box<dyn Read> = match kind {
        Archive::Tar => Box::new(f),
        Archive::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Archive::Zstd => Box::new(zstd::Decoder::with_buffer(f).map_err(|e| e.to_string())?),
    };
    let mut ar = tar::Archive::new(r);
    let mut dirs: Vec<DirMeta> = Vec::new();
    for entry in ar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let name = entry.path().map_err(|e| e.to_string())?.into_owned();
        let Some(rel) = entry_path(&name)? else {
            continue;
        };
        let rel = Path::new(into).join(rel);
        let shown = rel.to_string_lossy().into_owned();
        let io = at(&shown);
        let h = entry.header();
        let kind = h.entry_type();
        let num = |v: std::io::Result<u64>| -> Result<u32, String> {
            v.ok()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("{}: a bad number in its header", name.display()))
        };
        let mode = num(h.mode().map(u64::from))? & 0o7777;
        let (uid, gid) = (num(h.uid())?, num(h.gid())?);
        let mtime = i64::try_from(h.mtime().unwrap_or(0)).unwrap_or(0);
        // Old tars mark directories by a trailing slash only.
        let is_dir = kind.is_dir()
            || (kind == tar::EntryType::Regular
                && name.as_os_str().as_encoded_bytes().ends_with(b"/"));
        let special = match kind {
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = u64::from(h.device_major().ok().flatten().unwrap_or(0));
                let minor = u64::from(h.device_minor().ok().flatten().unwrap_or(0));
                Some(if kind == tar::EntryType::Char {
                    Node::Char { major, minor }
                } else {
                    Node::Block { major, minor }
                })
            }
            tar::EntryType::Fifo => Some(Node::Fifo),
            _ => None,
        };
        let file = matches!(
            kind,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse
        );
        if !(is_dir || file || special.is_some() || kind.is_symlink() || kind.is_hard_link()) {
            // Global pax headers and the like: nothing to make.
            continue;
        }
        // Parents as needed; whatever is at the path goes, unless a directory meets one.
        if let Some(p) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            layer.mkdir_all(p, 0o755).map_err(&io)?;
        }
        let there = layer.symlink_metadata(&rel).map_err(&io)?;
        let keep = is_dir && there.as_ref().is_some_and(|m| m.is_dir());
        if there.is_some() && !keep {
            layer.remove_all(&rel).map_err(&io)?;
        }
        if is_dir {
            if !keep {
                layer.mkdir(&rel, 0o700).map_err(&io)?;
            }
            dirs.push(DirMeta {
                rel,
                mode,
                uid,
                gid,
                mtime,
            });
        } else if file {
            let mut to = layer.create_file(&rel, 0o600).map_err(&io)?;
            std::io::copy(&mut entry, &mut to).map_err(&io)?;
            set_owner(&to, uid, gid).map_err(&io)?;
            set_mode(&to, mode).map_err(&io)?;
            set_mtime(&to, mtime, 0).map_err(&io)?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{shown}: a symlink without a target"))?;
            layer.symlink(&rel, target).map_err(&io)?;
            let h = layer.resolve_nofollow(&rel).map_err(&io)?;
            set_owner(&h, uid, gid).map_err(&io)?;
        } else if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{shown}: a hard link without a target"))?;
            let target = entry_path(&target)?
                .ok_or_else(|| format!("{shown}: a hard link to the archive's root"))?;
            layer
                .hard_link(&rel, Path::new(into).join(target))
                .map_err(&io)?;
        } else if let Some(node) = special {
            layer.mknod(&rel, node, mode).map_err(&io)?;
            let h = layer.resolve_nofollow(&rel).map_err(&io)?;
            set_owner(&h, uid, gid).map_err(&io)?;
            set_mode(&h, mode).map_err(&io)?;
            set_mtime(&h, mtime, 0).map_err(&io)?;
        }
    }
    for d in dirs.iter().rev() {
        let shown = d.rel.to_string_lossy();
        let io = at(&shown);
        // A later entry may have replaced the directory: then its metadata is not this one's.
        let h = layer.resolve_nofollow(&d.rel).map_err(&io)?;
        if !reg_untrusted::metadata(&h).map_err(&io)?.is_dir() {
            continue;
        }
        set_owner(&h, d.uid, d.gid).map_err(&io)?;
        set_mode(&h, d.mode).map_err(&io)?;
        set_mtime(&h, d.mtime, 0).map_err(&io)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests make their trees in temp dirs of their own
mod tests {
    use super::*;

    /// A host dir a hostile source points at, with what it held.
    struct Victim(tempfile::TempDir);

    impl Victim {
        fn new() -> Victim {
            let d = tempfile::tempdir().expect("tempdir");
            std::fs::write(d.path().join("keep.txt"), "host").expect("victim file");
            Victim(d)
        }
        #[track_caller]
        fn assert_untouched(&self) {
            let names: Vec<_> = std::fs::read_dir(self.0.path())
                .expect("list")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(names, ["keep.txt"]);
            let text = std::fs::read_to_string(self.0.path().join("keep.txt")).expect("read");
            assert_eq!(text, "host");
        }
    }

    /// Copy options that need no root: the files become ours.
    fn mine() -> CopyOpts {
        let me = tempfile::tempfile()
            .expect("file")
            .metadata()
            .expect("stat");
        CopyOpts {
            chown: Some((me.uid(), me.gid())),
            chmod: None,
            keep_owner: false,
        }
    }

    #[test]
    fn copy_never_writes_through_a_symlink_from_an_earlier_source() {
        let victim = Victim::new();
        let src = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(src.path().join("a")).expect("a");
        std::fs::create_dir_all(src.path().join("b/sub")).expect("b");
        std::os::unix::fs::symlink(victim.0.path(), src.path().join("a/sub")).expect("plant");
        std::fs::write(src.path().join("b/sub/keep.txt"), "PWNED").expect("b file");
        let view = View::new(vec![src.path().into()]).expect("view");
        let out = tempfile::tempdir().expect("tempdir");
        let layer = Tree::open_strict(out.path()).expect("layer");
        mirror_dirs(&view, &layer, "out").expect("dest");
        copy_tree(&view, "a", &layer, "out", &mine()).expect("the link is copied as a link");
        let err = copy_tree(&view, "b", &layer, "out", &mine()).expect_err("refused");
        assert!(
            err.starts_with("cannot copy to non-directory: /out/sub"),
            "{err}"
        );
        victim.assert_untouched();
        let link = std::fs::read_link(out.path().join("out/sub")).expect("still a link");
        assert_eq!(link, victim.0.path());
    }

    #[test]
    fn special_sources_are_made_anew_never_opened() {
        let src = tempfile::tempdir().expect("tempdir");
        let t = Tree::open(src.path()).expect("tree");
        // Opening the FIFO for reading would block the copy forever.
        t.mknod("fifo", Node::Fifo, 0o640).expect("fifo");
        let view = View::new(vec![src.path().into()]).expect("view");
        let out = tempfile::tempdir().expect("tempdir");
        let layer = Tree::open_strict(out.path()).expect("layer");
        copy_tree(&view, "fifo", &layer, "copy", &mine()).expect("copied");
        let m = std::fs::symlink_metadata(out.path().join("copy")).expect("there");
        assert!(m.file_type().is_fifo());
        assert_eq!(m.mode() & 0o7777, 0o640);
    }

    /// A tar of `entries` (path, symlink target or file content).
    fn archive(entries: &[(&str, Result<&str, &str>)]) -> std::fs::File {
        let mut b = tar::Builder::new(tempfile::tempfile().expect("file"));
        for (path, what) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            // set_path refuses `..`: the name's bytes as a hostile archive would have them.
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            let content = match what {
                Ok(link) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_link_name(link).expect("link");
                    ""
                }
                Err(content) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    content
                }
            };
            h.set_size(content.len() as u64);
            h.set_cksum();
            b.append(&h, content.as_bytes()).expect("append");
        }
        let mut f = b.into_inner().expect("tar");
        f.rewind().expect("rewind");
        f
    }

    #[test]
    fn archives_never_write_through_a_symlink_they_planted() {
        let victim = Victim::new();
        let v = victim.0.path().to_str().expect("utf-8");
        let out = tempfile::tempdir().expect("tempdir");
        let layer = Tree::open_strict(out.path()).expect("layer");
        let mut f = archive(&[("link", Ok(v)), ("link/keep.txt", Err("PWNED"))]);
        assert!(matches!(archive_kind(&mut f), Some(Archive::Tar)));
        let err = extract(f, Archive::Tar, &layer, "opt").expect_err("refused");
        assert!(err.contains("/opt/link/keep.txt: a symlink"), "{err}");
        victim.assert_untouched();
        // `..` is refused too; a file replaces a link an earlier entry made.
        let f = archive(&[("../../escape", Err("x"))]);
        let err = extract(f, Archive::Tar, &layer, "opt").expect_err("refused");
        assert!(err.contains(".. in its path"), "{err}");
        let f = archive(&[("l", Ok(v)), ("l", Err("mine"))]);
        extract(f, Archive::Tar, &layer, "").expect("extracts");
        assert_eq!(
            std::fs::read_to_string(out.path().join("l")).expect("a file now"),
            "mine"
        );
        victim.assert_untouched();
    }

    #[test]
    fn heredoc_scripts() {
        let h = |body: &str, expand| HereDoc {
            expand,
            body: body.into(),
        };
        assert_eq!(script("", &[h("echo hi\n", true)]), "echo hi\n");
        assert_eq!(
            script(" sh", &[h("echo $X\n", false)]),
            "sh <<'REG_HEREDOC_0'\necho $X\nREG_HEREDOC_0"
        );
        assert_eq!(script("echo a", &[]), "echo a");
    }
}
