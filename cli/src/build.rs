//! Wiring of the builder into the node agent: `POST /build` (served beside the agent's own
//! API), the builder's [`Store`] on the node's image store and its [`StepRunner`] on the node's
//! container runtime. The builder and the node never see each other; this module is where they
//! meet, as DESIGN.md §2 says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures::TryStreamExt;
use reg_builder::build::{BaseImage, Event, Image, LayerRef, Log, RunStep, StepRunner, Store};
use reg_node::api::{decode_auth, AgentState, ApiError};
use reg_node::containers::ContainerError;
use reg_node::image::PullError;
use reg_registry::client::RegistryClient;
use reg_registry::{Digest, Reference};

/// The builder's routes: reg's own build (with the incremental context sync) and docker's
/// classic `POST /build` beside the Engine API.
pub fn routes() -> reg_node::api::Extensions {
    reg_node::api::Extensions {
        own: Router::new()
            .route("/build", post(build))
            .route("/build/sync", post(sync)),
        engine: Router::new()
            .route("/build", post(crate::engine_build::build))
            .route("/commit", post(crate::engine_commit::commit)),
    }
}

/// The agent's copy of a client's context: `<node>/build-contexts/<id>`. The id is the
/// client's choice (a digest of host, user and path); only hex is accepted.
fn context_root(st: &AgentState, id: &str) -> Result<PathBuf, Box<Response>> {
    if id.len() < 16 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Box::new(
            ApiError::bad_request(format!("context id {id:?}: expected 16 to 64 hex digits"))
                .into_response(),
        ));
    }
    Ok(st.store.root().join("build-contexts").join(id))
}

/// One build at a time per context copy (a second one waits for the first).
fn context_lock(id: &str) -> Arc<tokio::sync::Mutex<()>> {
    type Locks = std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: std::sync::OnceLock<Locks> = std::sync::OnceLock::new();
    let map = LOCKS.get_or_init(Default::default);
    let mut m = match map.lock() {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    };
    m.entry(id.to_string()).or_default().clone()
}

#[derive(serde::Deserialize)]
struct SyncQuery {
    context: String,
}

/// `POST /build/sync?context=ID`: the body is the client's manifest (JSON array of
/// [`reg_builder::context::Entry`]); the answer `{"need": [paths]}` names the files whose bytes
/// the next `POST /build` must carry.
async fn sync(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<SyncQuery>,
    axum::Json(manifest): axum::Json<Vec<reg_builder::context::Entry>>,
) -> Response {
    let root = match context_root(&st, &q.context) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let need = tokio::task::spawn_blocking(move || reg_builder::context::needed(&root, &manifest))
        .await
        .unwrap_or_default();
    axum::Json(serde_json::json!({ "need": need })).into_response()
}

#[derive(serde::Deserialize)]
struct BuildQuery {
    /// Tags, comma-separated.
    #[serde(default)]
    t: String,
    #[serde(default)]
    dockerfile: String,
    /// JSON object of `--build-arg`s.
    #[serde(default)]
    buildargs: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    nocache: String,
    #[serde(default)]
    compression: String,
    #[serde(default)]
    epoch: Option<u64>,
    /// The context copy to update (see `/build/sync`).
    #[serde(default)]
    context: String,
    /// The client's default registry (for `FROM name:tag` without one), as `reg run` resolves
    /// its image on the client's side.
    #[serde(default)]
    registry: String,
}

/// `POST /build?t=…`: the body is the context as a tar stream (with the Dockerfile at
/// [`reg_builder::context::DOCKERFILE_ENTRY`]); the answer is progress as JSON lines ending in
/// `{"image": {...}}` or `{"error": "..."}`.
async fn build(
    State(st): State<Arc<AgentState>>,
    headers: HeaderMap,
    Query(q): Query<BuildQuery>,
    body: Body,
) -> Response {
    let bad = |m: String| ApiError::bad_request(m).into_response();
    let compression = match reg_builder::layer::Compression::parse(&q.compression) {
        Ok(c) => c,
        Err(e) => return bad(e.to_string()),
    };
    let build_args: BTreeMap<String, String> = if q.buildargs.is_empty() {
        BTreeMap::new()
    } else {
        match serde_json::from_str(&q.buildargs) {
            Ok(a) => a,
            Err(e) => return bad(format!("buildargs: {e}")),
        }
    };
    let default_registry = if q.registry.is_empty() {
        st.default_registry.clone()
    } else {
        q.registry.clone()
    };
    let mut tags = Vec::new();
    for t in q.t.split(',').filter(|t| !t.is_empty()) {
        match Reference::parse(t, &default_registry) {
            Ok(r) => tags.push(r.to_string()),
            Err(e) => return bad(e.to_string()),
        }
    }
    let opts = reg_builder::build::Options {
        file: if q.dockerfile.is_empty() {
            "Dockerfile".into()
        } else {
            q.dockerfile.clone()
        },
        build_args,
        target: (!q.target.is_empty()).then(|| q.target.clone()),
        no_cache: matches!(q.nocache.as_str(), "1" | "true"),
        compression,
        epoch: q.epoch.unwrap_or(0),
        tags,
        cache_dir: st.store.build_cache_dir(),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let auth = decode_auth(&headers);
    let ctx_root = match context_root(&st, &q.context) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let lock = context_lock(&q.context);
    let store = NodeStore {
        st: st.clone(),
        auth,
        default_registry,
        sources: Default::default(),
    };
    let runner = NodeRunner { st: st.clone() };
    let send = tx.clone();
    let log: Log = Arc::new(move |ev: Event| {
        if let Ok(line) = serde_json::to_string(&ev) {
            let _ = send.send(Bytes::from(line + "\n"));
        }
    });
    let log = metered(&st, log);
    // The build belongs to this request's task; a client that goes away only stops reading.
    let cache_st = st.clone();
    tokio::spawn(async move {
        let held = lock.lock().await;
        let result = run(&store, &runner, body, &ctx_root, &opts, log).await;
        drop(held);
        if result.is_err() {
            cache_st.containers.metrics.build_failed();
        }
        limit_build_cache(&cache_st).await;
        let last = match result {
            Ok(img) => serde_json::json!({"image": {
                "id": img.id, "digest": img.digest, "tags": opts.tags,
            }}),
            Err(e) => serde_json::json!({"error": e}),
        };
        let _ = tx.send(Bytes::from(format!("{last}\n")));
    });
    reg_node::api::stream_response(rx)
}

/// `log`, also counting the build and its steps (cached or not) in the node's metrics.
pub(crate) fn metered(st: &Arc<AgentState>, log: Log) -> Log {
    let metrics = st.containers.metrics.clone();
    metrics.build_started();
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    // A `FROM` is no step with a layer of its own: not counted.
    let (cached, counted) = (AtomicBool::new(false), AtomicBool::new(false));
    Arc::new(move |ev: Event| {
        match &ev {
            Event::Step { text, .. } => {
                cached.store(false, Relaxed);
                counted.store(!text.trim_start().starts_with("FROM"), Relaxed);
            }
            Event::Cached => cached.store(true, Relaxed),
            Event::Done { .. } if counted.load(Relaxed) => metrics.build_step(cached.load(Relaxed)),
            _ => {}
        }
        log(ev)
    })
}

/// Keeps the build cache within the node's `build_cache_max_bytes` after a build: its oldest
/// entries go first, and the layers only they kept (never an image's or a container's).
pub(crate) async fn limit_build_cache(st: &Arc<AgentState>) {
    let Some(max) = st.build_cache_max else {
        return;
    };
    let in_use: std::collections::HashSet<std::path::PathBuf> = match st.containers.list() {
        Ok(list) => list
            .iter()
            .flat_map(|c| c.spec.layers.iter().cloned())
            .collect(),
        Err(_) => return,
    };
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.prune_build_cache(Some(max), &in_use)).await {
        Ok(Ok((dropped, freed))) if !dropped.is_empty() => tracing::info!(
            entries = dropped.len(),
            freed,
            max,
            "build cache over its limit: oldest entries dropped"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not keep the build cache within its limit"),
        _ => {}
    }
}

async fn run(
    store: &NodeStore,
    runner: &NodeRunner,
    body: Body,
    ctx_root: &Path,
    opts: &reg_builder::build::Options,
    log: Log,
) -> Result<Image, String> {
    let stream = body
        .into_data_stream()
        .map_err(|e| std::io::Error::other(e.to_string()));
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let dir = ctx_root.to_path_buf();
    let context = tokio::task::spawn_blocking(move || reg_builder::context::apply(reader, &dir))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let text = context
        .dockerfile
        .clone()
        .ok_or("the build context carries no Dockerfile: is the client older than the agent?")?;
    let df = reg_builder::dockerfile::parse(&opts.file, &text).map_err(|e| e.to_string())?;
    reg_builder::build::build(store, runner, &df, &context, opts, log)
        .await
        .map_err(|e| e.to_string())
}

pub(crate) struct NodeStore {
    st: Arc<AgentState>,
    auth: Option<(String, String)>,
    default_registry: String,
    /// Where the base images' layers came from (layer digest → `registry/repository`), kept
    /// in the built image so `--push` can mount them rather than upload them.
    sources: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

/// What the node's image store met for a build. The builder keeps it as the source of its own
/// error; the messages are those of the node's errors, as they were.
#[derive(Debug)]
pub(crate) enum StoreError {
    Reference(reg_registry::ReferenceError),
    Pull(PullError),
    Task(tokio::task::JoinError),
    /// A stored image's record that does not read back (it was verified when pulled or built).
    Record {
        reference: String,
        what: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl NodeStore {
    pub(crate) fn new(
        st: Arc<AgentState>,
        auth: Option<(String, String)>,
        default_registry: String,
    ) -> NodeStore {
        NodeStore {
            st,
            auth,
            default_registry,
            sources: Default::default(),
        }
    }
}

impl StoreError {
    fn record(
        reference: &str,
        what: &'static str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::Record {
            reference: reference.to_string(),
            what,
            source: Box::new(e),
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Reference(e) => e.fmt(f),
            StoreError::Pull(e) => e.fmt(f),
            StoreError::Task(e) => e.fmt(f),
            StoreError::Record {
                reference,
                what,
                source,
            } => write!(f, "stored image {reference}: {what}: {source}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The first three show their inner error's message as their own: its source is theirs.
        match self {
            StoreError::Reference(e) => e.source(),
            StoreError::Pull(e) => e.source(),
            StoreError::Task(e) => e.source(),
            StoreError::Record { source, .. } => Some(source.as_ref()),
        }
    }
}

impl From<PullError> for StoreError {
    fn from(e: PullError) -> StoreError {
        StoreError::Pull(e)
    }
}

impl Store for NodeStore {
    type Error = StoreError;

    async fn base(&self, reference: &str, log: Log) -> Result<BaseImage, StoreError> {
        let r =
            Reference::parse(reference, &self.default_registry).map_err(StoreError::Reference)?;
        let (store, key) = (self.st.store.clone(), r.to_string());
        let found = tokio::task::spawn_blocking(move || store.get(&key))
            .await
            .map_err(StoreError::Task)??;
        let rec = match found {
            Some(rec) => rec,
            None => {
                log(Event::Note {
                    message: format!("pulling {r}"),
                });
                let client = RegistryClient::with_credentials(&r.registry, self.auth.clone());
                self.st.store.pull(&client, &r, |_| {}).await?
            }
        };
        // The record was verified when pulled (or built); a bad one is reported, not guessed.
        #[derive(serde::Deserialize)]
        struct Layers {
            #[serde(default)]
            layers: Vec<reg_registry::manifest::Descriptor>,
        }
        let manifest: Layers = serde_json::from_str(&rec.manifest)
            .map_err(|e| StoreError::record(reference, "manifest", e))?;
        let diff_ids: Vec<Digest> =
            serde_json::from_value(rec.config["rootfs"]["diff_ids"].clone())
                .map_err(|e| StoreError::record(reference, "diff ids", e))?;
        let layers = manifest
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(l, diff_id)| {
                Ok(LayerRef {
                    digest: Digest::parse(&l.digest)
                        .map_err(|e| StoreError::record(reference, "layer", e))?,
                    diff_id,
                    size: u64::try_from(l.size).unwrap_or(0),
                    media_type: l.media_type.clone(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if let Ok(mut sources) = self.sources.lock() {
            sources.extend(rec.sources.clone());
        }
        let id = Digest::parse(&rec.id).map_err(|e| StoreError::record(reference, "id", e))?;
        Ok(BaseImage {
            id,
            config: rec.config,
            layers,
        })
    }

    fn snapshot(&self, chain_id: &Digest) -> PathBuf {
        self.st.store.snapshot_dir(&chain_id.to_string())
    }

    fn has_layer(&self, layer: &LayerRef, chain_id: &Digest) -> bool {
        self.st
            .store
            .has_layer(&layer.digest, &chain_id.to_string())
    }

    fn tmp(&self, what: &str) -> PathBuf {
        self.st.store.tmp_path(what)
    }

    fn add_layer(
        &self,
        blob: &Path,
        layer: &LayerRef,
        snapshot: &Path,
        chain_id: &Digest,
    ) -> Result<(), StoreError> {
        self.st
            .store
            .adopt_layer(blob, &layer.digest, snapshot, &chain_id.to_string())?;
        Ok(())
    }

    fn save(&self, tags: &[String], image: &Image) -> Result<(), StoreError> {
        let refs: Vec<String> = if tags.is_empty() {
            vec![image.id.to_string()]
        } else {
            tags.to_vec()
        };
        let chain: Vec<String> = image.chain.iter().map(ToString::to_string).collect();
        let sources: std::collections::BTreeMap<String, String> = match self.sources.lock() {
            Ok(known) => image
                .layers
                .iter()
                .filter_map(|l| {
                    let d = l.digest.to_string();
                    known.get(&d).map(|from| (d, from.clone()))
                })
                .collect(),
            Err(_) => Default::default(),
        };
        for r in refs {
            self.st.store.put_built(
                &r,
                &image.manifest,
                &image.config,
                chain.clone(),
                sources.clone(),
            )?;
        }
        Ok(())
    }
}

pub(crate) struct NodeRunner {
    pub(crate) st: Arc<AgentState>,
}

impl StepRunner for NodeRunner {
    type Error = ContainerError;

    async fn run(&self, step: RunStep, log: Log) -> Result<i32, ContainerError> {
        let id = step
            .dir
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "")
            })
            .unwrap_or_default();
        let spec = reg_node::runtime::Spec {
            id: format!("build{id}"),
            layers: step.layers,
            dir: step.dir,
            args: step.args,
            env: step.env,
            cwd: step.cwd,
            hostname: "buildsandbox".into(),
            user: step.user,
            limits: Default::default(),
            security: Default::default(),
            mounts: step
                .mounts
                .into_iter()
                .map(|m| reg_node::runtime::BindMount {
                    source: m.source,
                    target: m.target,
                    readonly: m.readonly,
                    layers: m.layers,
                    copy_up: false,
                })
                .collect(),
            network: step.network,
            netns: None,
            ip: None,
            extra_hosts: Vec::new(),
            dns: Vec::new(),
            tty: false,
            tty_size: None,
            ..Default::default()
        };
        self.st
            .containers
            .run_step(spec, move |line| log(Event::Output { line }))
            .await
    }
}
