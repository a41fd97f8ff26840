//! The build: stages as a DAG (only what the target needs, independent stages concurrently),
//! each instruction applied to a stage state (image config, layers, ARG/ENV scope), layers made
//! by RUN (the step container's overlay upper dir) and COPY/ADD (straight from the context or an
//! earlier stage), a content-keyed cache, and the final OCI config + manifest handed to the
//! [`Store`]. RUN goes through [`StepRunner`]; neither trait is implemented here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use reg_registry::digest::{chain_id, chain_ids, Digest};
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

    fn view(&self, store: &impl Store) -> View {
        View::new(self.chain.iter().map(|c| store.snapshot(c)).collect())
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
            if let Some(layer) = std::fs::read(&record)
                .ok()
                .and_then(|b| serde_json::from_slice::<Option<LayerRef>>(&b).ok())
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
        std::fs::create_dir_all(&work).map_err(|e| self.err(step, e))?;
        let result = make(work.clone()).await;
        let made = match result {
            Ok(dir) => self.commit(st, step, &dir).await,
            Err(e) => Err(e),
        };
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&work)).await;
        let layer = made?;
        let _ = std::fs::create_dir_all(&self.opts.cache_dir);
        let tmp = record.with_extension("tmp");
        let json = serde_json::to_vec(&layer).unwrap_or_default();
        if std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &record))
            .is_err()
        {
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
        let empty = std::fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
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
        let _ = std::fs::remove_file(&blob);
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
            None | Some("default") | Some("host") => "host",
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
            let _ = std::fs::remove_dir_all(d);
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
                std::fs::create_dir_all(&path).map_err(|e| self.err(step, e))?;
                Ok((Mount::bind(path, target, false), String::new(), None))
            }
            "tmpfs" => {
                let path = self.store.tmp("tmpfs");
                std::fs::create_dir_all(&path).map_err(|e| self.err(step, e))?;
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
            None => (View::new(vec![self.context.dir.clone()]), None),
            Some(f) => match stage_ref(self.df, stage, f) {
                Some(d) => {
                    let s = done
                        .get(&d)
                        .ok_or_else(|| self.err(step, format!("stage {f} was not built")))?;
                    (s.view(self.store), Some(s.key.clone()))
                }
                None => {
                    let img = self
                        .store
                        .base(f, self.log.clone())
                        .await
                        .map_err(|e| self.err(step, format!("--mount={spec}: {e}")))?;
                    let layers = img.chain().iter().map(|c| self.store.snapshot(c)).collect();
                    (View::new(layers), Some(img.id.to_string()))
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
            // A private copy of the one file.
            let tmp = self.store.tmp("bind");
            std::fs::create_dir_all(&tmp).map_err(|err| self.err(step, err))?;
            let copy = tmp.join("file");
            std::fs::copy(&e.host, &copy).map_err(|err| self.err(step, err))?;
            return Ok((Mount::bind(copy, target, false), key, Some(tmp)));
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
                    std::fs::read_link(&e.host)
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
            None => (
                View::new(vec![self.context.dir.clone()]),
                String::new(),
                true,
            ),
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
                        (s.view(self.store), s.key.clone(), false)
                    }
                    None => {
                        let img = self
                            .store
                            .base(&f, self.log.clone())
                            .await
                            .map_err(|e| self.err(step, format!("--from={f}: {e}")))?;
                        (
                            View::new(img.chain().iter().map(|c| self.store.snapshot(c)).collect()),
                            img.id.to_string(),
                            false,
                        )
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
        let view = st.view(self.store);
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
                std::fs::create_dir_all(&layer).map_err(|e| e.to_string())?;
                let parent_of_dest = if dest_is_dir {
                    dest_rel.clone()
                } else {
                    parent(&dest_rel).to_string()
                };
                mirror_dirs(&view2, &layer, &parent_of_dest)?;
                for (path, body) in heredoc_files {
                    let target = layer.join(&path);
                    std::fs::write(&target, body).map_err(|e| format!("{path}: {e}"))?;
                    if let Some(m) = opts.chmod {
                        let _ =
                            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(m));
                    }
                }
                for (src, _) in plan {
                    let e = from_view
                        .find(&src)
                        .ok_or_else(|| format!("{src}: vanished during the build"))?;
                    let name = src.rsplit('/').next().unwrap_or(&src).to_string();
                    if add && e.meta.is_file() {
                        if let Some(kind) = archive_kind(&e.host) {
                            let into = layer.join(&parent_of_dest);
                            let into = if dest_is_dir {
                                into
                            } else {
                                layer.join(&dest_rel)
                            };
                            std::fs::create_dir_all(&into).map_err(|e| e.to_string())?;
                            extract(&e.host, kind, &into).map_err(|err| format!("{src}: {err}"))?;
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
                    copy_tree(&from_view, &src, &layer, &target, &opts)?;
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
        let view = st.view(self.store);
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
    let Some(e) = view.find(rel) else { return };
    f(rel, &e);
    if e.meta.is_dir() {
        for name in view.list(rel) {
            walk(view, &join(rel, &name), f);
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

/// Creates `rel` and its parents in `layer` with the metadata they have in `view` (or
/// root-owned 0755 where the image has nothing), so the layer changes no existing directory.
fn mirror_dirs(view: &View, layer: &Path, rel: &str) -> Result<(), String> {
    let mut cur = String::new();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        cur = join(&cur, c);
        let host = layer.join(&cur);
        if host.exists() {
            continue;
        }
        std::fs::create_dir(&host).map_err(|e| format!("{cur}: {e}"))?;
        if let Some(e) = view.find(&cur).filter(|e| e.meta.is_dir()) {
            let _ = std::fs::set_permissions(
                &host,
                std::fs::Permissions::from_mode(e.meta.mode() & 0o7777),
            );
            let _ = std::os::unix::fs::chown(&host, Some(e.meta.uid()), Some(e.meta.gid()));
            if let Ok(t) = e.meta.modified() {
                let _ = std::fs::File::open(&host).and_then(|f| f.set_modified(t));
            }
        } else {
            let _ = std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755));
        }
    }
    Ok(())
}

/// Copies `src` of `view` (a directory: its contents) to `target` in `layer`.
fn copy_tree(
    view: &View,
    src: &str,
    layer: &Path,
    target: &str,
    o: &CopyOpts,
) -> Result<(), String> {
    let Some(e) = view.find(src) else {
        return Ok(());
    };
    let dst = layer.join(target);
    let io = |err: std::io::Error| format!("{target}: {err}");
    let (uid, gid) = match o.chown {
        Some(ids) => ids,
        None if o.keep_owner => (e.meta.uid(), e.meta.gid()),
        None => (0, 0),
    };
    let ft = e.meta.file_type();
    if ft.is_dir() {
        if !dst.is_dir() {
            if let Some(p) = dst.parent() {
                std::fs::create_dir_all(p).map_err(io)?;
            }
            std::fs::create_dir(&dst).map_err(io)?;
        }
        let mode = o.chmod.unwrap_or(e.meta.mode() & 0o7777);
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        std::os::unix::fs::chown(&dst, Some(uid), Some(gid)).map_err(io)?;
        for name in view.list(src) {
            copy_tree(view, &join(src, &name), layer, &join(target, &name), o)?;
        }
        if let Ok(t) = e.meta.modified() {
            let _ = std::fs::File::open(&dst).and_then(|f| f.set_modified(t));
        }
        return Ok(());
    }
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p).map_err(io)?;
    }
    if std::fs::symlink_metadata(&dst).is_ok() {
        let _ = std::fs::remove_file(&dst);
    }
    if ft.is_symlink() {
        let t = std::fs::read_link(&e.host).map_err(io)?;
        std::os::unix::fs::symlink(t, &dst).map_err(io)?;
        std::os::unix::fs::lchown(&dst, Some(uid), Some(gid)).map_err(io)?;
    } else if ft.is_file() {
        std::fs::copy(&e.host, &dst).map_err(io)?;
        let mode = o.chmod.unwrap_or(e.meta.mode() & 0o7777);
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        std::os::unix::fs::chown(&dst, Some(uid), Some(gid)).map_err(io)?;
        if let Ok(t) = e.meta.modified() {
            let _ = std::fs::File::options()
                .write(true)
                .open(&dst)
                .and_then(|f| f.set_modified(t));
        }
    }
    // Devices, fifos and sockets are not copied.
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Archive {
    Tar,
    Gzip,
    Zstd,
}

/// ADD unpacks local archives, recognised by their content, not their name.
fn archive_kind(path: &Path) -> Option<Archive> {
    use std::io::Read;
    let mut head = [0u8; 512];
    let mut f = std::fs::File::open(path).ok()?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
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

fn extract(path: &Path, kind: Archive, into: &Path) -> std::io::Result<()> {
    let f = std::io::BufReader::new(std::fs::File::open(path)?);
    let r: Box<dyn std::io::Read> = match kind {
        Archive::Tar => Box::new(f),
        Archive::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Archive::Zstd => Box::new(zstd::Decoder::with_buffer(f)?),
    };
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(false);
    ar.set_overwrite(true);
    // `unpack` refuses entries that would land outside `into` (`..`, through symlinks).
    ar.unpack(into)
}

#[cfg(test)]
mod tests {
    use super::*;

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
