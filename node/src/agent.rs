//! The node agent: a REST + JSON API on a unix socket (mode 0660), the way `dockerd` serves the
//! docker client, and the client the cli uses to talk to it. So far it serves images: pull
//! (progress streamed as JSON lines), list, inspect, version; and containers (see
//! [`crate::containers`]).
//!
//! Registry credentials travel with each request in `X-Registry-Auth` (base64 JSON
//! `{"username","password"}`), as with docker: the agent never reads a user's credential files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use crate::image::{ImageStore, Progress};
use reg_registry::client::RegistryClient;
use reg_registry::Reference;

/// The API version this agent speaks (checked by the client).
pub const API_VERSION: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("node agent socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::image::PullError),
    #[error("cannot reach the node agent at {path}: {source}; is `reg node serve` (or `reg serve`) running, and may you open its socket?")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node agent: {0}")]
    Protocol(String),
    #[error("{0}")]
    Api(String),
}

pub struct AgentState {
    pub store: Arc<ImageStore>,
    pub default_registry: String,
    pub containers: Arc<crate::containers::Containers>,
}

/// Credentials sent by the client for the registry of this request.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

pub fn encode_auth(a: &RegistryAuth) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(a).unwrap_or_default())
}

pub fn decode_auth(h: &HeaderMap) -> Option<(String, String)> {
    let v = h.get("x-registry-auth")?.to_str().ok()?;
    let raw = base64::engine::general_purpose::URL_SAFE.decode(v).ok()?;
    let a: RegistryAuth = serde_json::from_slice(&raw).ok()?;
    (!a.username.is_empty()).then_some((a.username, a.password))
}

pub fn api_error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "message": message }))).into_response()
}

pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/images", get(list_images))
        .route("/images/pull", post(pull))
        .route("/images/inspect", get(inspect_image))
        .route("/images/push", post(push))
        .route("/images/tag", post(tag))
        .route("/images", axum::routing::delete(remove_image))
        .route("/containers", get(crate::containers::list))
        .route("/containers/create", post(crate::containers::create))
        .route("/containers/{id}/json", get(crate::containers::inspect))
        .route(
            "/containers/{id}/start",
            post(crate::containers::start_handler),
        )
        .route("/containers/{id}/logs", get(crate::containers::logs))
        .route("/containers/{id}/stop", post(crate::containers::stop))
        .route("/containers/{id}/kill", post(crate::containers::kill))
        .route("/containers/{id}/resize", post(crate::containers::resize))
        .route("/containers/{id}/wait", post(crate::containers::wait))
        .route("/containers/{id}/exec", post(crate::containers::exec))
        .route(
            "/containers/{id}",
            axum::routing::delete(crate::containers::delete),
        )
        .route("/volumes", get(crate::volumes::list))
        .route("/volumes/create", post(crate::volumes::create))
        .route(
            "/volumes/{name}",
            get(crate::volumes::inspect).delete(crate::volumes::delete),
        )
        .route("/networks", get(crate::network::list))
        .route("/networks/create", post(crate::network::create))
        .route(
            "/networks/{id}",
            get(crate::network::inspect).delete(crate::network::delete),
        )
        .route("/networks/{id}/connect", post(crate::network::connect))
        .route(
            "/networks/{id}/disconnect",
            post(crate::network::disconnect),
        )
        .fallback(|uri: axum::http::Uri| async move {
            api_error(
                StatusCode::NOT_FOUND,
                format!("the node agent has no API {uri}: is it older than this reg client?"),
            )
        })
        .with_state(state)
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": API_VERSION,
        "Os": "linux",
        "Arch": crate::image::node_platform().1,
        "KernelVersion": kernel_version(),
    }))
}

/// What `docker info` reports.
async fn info(State(st): State<Arc<AgentState>>) -> Response {
    let containers = st.containers.list().unwrap_or_default();
    let running = containers
        .iter()
        .filter(|c| c.state.status == "running")
        .count();
    let store = st.store.clone();
    let images = tokio::task::spawn_blocking(move || store.list())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|l| l.len())
        .unwrap_or(0);
    let cgroup_version = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "1 (hybrid: v2 at /sys/fs/cgroup/unified)"
    } else {
        "1"
    };
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    let mem_total: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    Json(serde_json::json!({
        "Containers": containers.len(),
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": containers.len() - running,
        "Images": images,
        "Driver": "overlay",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version,
        "SecurityOptions": ["seccomp (profile=default)", "no-new-privileges"],
        "KernelVersion": kernel_version(),
        "OperatingSystem": os,
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "MemTotal": mem_total,
        "DockerRootDir": st.containers.dir().parent().map(|p| p.display().to_string()).unwrap_or_default(),
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "DefaultRegistry": st.default_registry,
    }))
    .into_response()
}

async fn list_images(State(st): State<Arc<AgentState>>) -> Response {
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.list()).await {
        Ok(Ok(list)) => Json(list).into_response(),
        Ok(Err(e)) => api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct RefQuery {
    reference: String,
}

async fn inspect_image(State(st): State<Arc<AgentState>>, Query(q): Query<RefQuery>) -> Response {
    let Ok(r) = Reference::parse(&q.reference, &st.default_registry) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            format!("invalid reference {:?}", q.reference),
        );
    };
    let (store, key) = (st.store.clone(), r.to_string());
    match tokio::task::spawn_blocking(move || store.get(&key)).await {
        Ok(Ok(Some(rec))) => Json(rec).into_response(),
        Ok(Ok(None)) => api_error(
            StatusCode::NOT_FOUND,
            format!("no such image: {}", q.reference),
        ),
        Ok(Err(e)) => api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// One progress line of a transfer; `moving`/`moved` name its direction (`downloading`/`done`
/// for a pull, `uploading`/`pushed` for a push).
fn progress_line(p: Progress, moving: &str, moved: &str) -> Bytes {
    let line = match p {
        Progress::Resolved { digest, layers } => {
            serde_json::json!({"status": "resolved", "digest": digest, "layers": layers})
        }
        Progress::LayerCached { digest } => {
            serde_json::json!({"status": "exists", "layer": digest})
        }
        Progress::LayerBytes {
            digest,
            done,
            total,
        } => serde_json::json!({"status": moving, "layer": digest, "done": done, "total": total}),
        Progress::LayerDone { digest } => serde_json::json!({"status": moved, "layer": digest}),
        Progress::LayerMounted { digest, from } => {
            serde_json::json!({"status": "mounted", "layer": digest, "from": from})
        }
    };
    Bytes::from(format!("{line}\n"))
}

/// `POST /images/pull?reference=…`: progress as JSON lines, ending with `{"done": record}` or
/// `{"error": message}`.
async fn pull(
    State(st): State<Arc<AgentState>>,
    headers: HeaderMap,
    Query(q): Query<RefQuery>,
) -> Response {
    let r = match Reference::parse(&q.reference, &st.default_registry) {
        Ok(r) => r,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let client = RegistryClient::with_credentials(&r.registry, decode_auth(&headers));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let store = st.store.clone();
    // The pull belongs to this request: it ends when the pull ends (a client that goes away
    // only stops reading; verified layers are still worth finishing).
    tokio::spawn(async move {
        let ptx = tx.clone();
        let result = store
            .pull(&client, &r, move |p: Progress| {
                let _ = ptx.send(progress_line(p, "downloading", "done"));
            })
            .await;
        let last = match result {
            Ok(rec) => serde_json::json!({"image": rec}),
            Err(e) => serde_json::json!({"error": e.to_string()}),
        };
        let _ = tx.send(Bytes::from(format!("{last}\n")));
    });
    crate::containers::stream_response(rx)
}

async fn stored(st: &AgentState, reference: &str) -> Result<crate::image::ImageRecord, Response> {
    let r = Reference::parse(reference, &st.default_registry)
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (store, key) = (st.store.clone(), r.to_string());
    match tokio::task::spawn_blocking(move || store.get(&key)).await {
        Ok(Ok(Some(rec))) => Ok(rec),
        Ok(Ok(None)) => Err(api_error(
            StatusCode::NOT_FOUND,
            format!("no such image: {reference}"),
        )),
        Ok(Err(e)) => Err(api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e) => Err(api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// `POST /images/push?reference=…`: progress as JSON lines, ending with `{"pushed": digest}`
/// or `{"error": message}`.
async fn push(
    State(st): State<Arc<AgentState>>,
    headers: HeaderMap,
    Query(q): Query<RefQuery>,
) -> Response {
    let rec = match stored(&st, &q.reference).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let target = match Reference::parse(&q.reference, &st.default_registry) {
        Ok(r) => r,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let client = RegistryClient::with_credentials(&target.registry, decode_auth(&headers));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let store = st.store.clone();
    tokio::spawn(async move {
        let ptx = tx.clone();
        let result = store
            .push(&client, &rec, &target, move |p: Progress| {
                let _ = ptx.send(progress_line(p, "uploading", "pushed"));
            })
            .await;
        let last = match result {
            Ok(d) => serde_json::json!({"pushed": d, "size": rec.size}),
            Err(e) => serde_json::json!({"error": e.to_string()}),
        };
        let _ = tx.send(Bytes::from(format!("{last}\n")));
    });
    crate::containers::stream_response(rx)
}

#[derive(Deserialize)]
struct TagQuery {
    source: String,
    target: String,
}

async fn tag(State(st): State<Arc<AgentState>>, Query(q): Query<TagQuery>) -> Response {
    let rec = match stored(&st, &q.source).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let target = match Reference::parse(&q.target, &st.default_registry) {
        Ok(r) => r.to_string(),
        Err(e) => return api_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.tag(&rec, &target)).await {
        Ok(Ok(rec)) => Json(rec).into_response(),
        Ok(Err(e)) => api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct RemoveQuery {
    reference: String,
    #[serde(default)]
    force: Option<String>,
}

/// `DELETE /images?reference=…[&force=1]`: refuses an image a container uses (unless forced;
/// its layers stay as long as the container does).
async fn remove_image(State(st): State<Arc<AgentState>>, Query(q): Query<RemoveQuery>) -> Response {
    let rec = match stored(&st, &q.reference).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let containers = st.containers.list().unwrap_or_default();
    let users: Vec<&str> = containers
        .iter()
        .filter(|c| c.image == rec.reference)
        .map(|c| c.name.as_str())
        .collect();
    let force = matches!(q.force.as_deref(), Some("1" | "true"));
    if !users.is_empty() && !force {
        return api_error(
            StatusCode::CONFLICT,
            format!(
                "unable to remove {}: container {} uses it (remove the container, or rmi -f)",
                rec.reference,
                users.join(", ")
            ),
        );
    }
    let in_use: std::collections::HashSet<PathBuf> = containers
        .iter()
        .flat_map(|c| c.spec.layers.iter().cloned())
        .collect();
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.remove(&rec.reference, &in_use)).await {
        Ok(Ok(deleted)) => Json(deleted).into_response(),
        Ok(Err(e)) => api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Serves the agent on `socket` (mode 0660) until `shutdown` resolves.
/// `extend` adds routes served beside the agent's own (the cli wires `POST /build` this way:
/// the builder is not a dependency of this crate).
pub async fn serve(
    socket: &Path,
    data: &Path,
    default_registry: String,
    extend: fn(Arc<AgentState>) -> Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let sock_err = |source| AgentError::Socket {
        path: socket.to_path_buf(),
        source,
    };
    let store = Arc::new(tokio::task::block_in_place(|| ImageStore::open(data))?);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(sock_err)?;
    }
    // A socket file left by a killed agent is stale only if nobody answers on it.
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(sock_err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another agent is serving it",
            )));
        }
        std::fs::remove_file(socket).map_err(sock_err)?;
    }
    let listener = tokio::net::UnixListener::bind(socket).map_err(sock_err)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
            .map_err(sock_err)?;
    }
    tracing::info!(socket = %socket.display(), data = %data.display(), "node agent listening");
    if !crate::runtime::device_filter_available() {
        tracing::warn!(
            "cgroup v2 host: this build loads no eBPF device filter, so containers get a nodev \
             rootfs and no CAP_MKNOD (--cap-add MKNOD gives it back, with every device it can make)"
        );
    }
    let containers = crate::containers::Containers::open(data)
        .map_err(|e| sock_err(std::io::Error::other(format!("containers.db: {e}"))))?;
    containers.reattach();
    let networks = containers.networks.clone();
    let state = Arc::new(AgentState {
        store,
        default_registry,
        containers,
    });
    let app = extend(state.clone()).merge(router(state));
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    // Bridges of networks nothing runs on go with the agent (the next one makes them again).
    networks.shutdown().await;
    let _ = std::fs::remove_file(socket);
    result.map_err(sock_err)
}

/// This process's stdin as a request body (read on a thread of its own; ends at end-of-file).
pub fn stdin_body() -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    writer_body(|w| {
        let mut stdin = std::io::stdin().lock();
        std::io::copy(&mut stdin, w).map(|_| ())
    })
}

/// A request body written by `produce` on a thread of its own (`reg build` streams the context
/// tar this way); an error it returns ends the body with that error.
pub fn writer_body(
    produce: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send + 'static,
) -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    struct Chunks(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);
    impl std::io::Write for Chunks {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .blocking_send(Ok(Bytes::copy_from_slice(buf)))
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    std::thread::spawn(move || {
        // Unbuffered: each write is a frame (stdin must reach the container as typed).
        if let Err(e) = produce(&mut Chunks(tx.clone())) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|r| (r.map(hyper::body::Frame::data), rx))
    });
    http_body_util::StreamBody::new(frames).boxed()
}

/// The cli's side: HTTP/1 over the agent's unix socket.
#[derive(Clone)]
pub struct AgentClient {
    socket: PathBuf,
}

impl AgentClient {
    /// `host` is `unix:///path/to/node.sock` (or a bare path).
    pub fn new(host: &str) -> Result<AgentClient, AgentError> {
        let path = host.strip_prefix("unix://").unwrap_or(host);
        if host.contains("://") && !host.starts_with("unix://") {
            return Err(AgentError::Protocol(format!(
                "unsupported host {host:?}: use unix:///path/to/node.sock"
            )));
        }
        Ok(AgentClient {
            socket: PathBuf::from(path),
        })
    }

    /// Sends one request; returns the status and the response body as a stream of lines
    /// handed to `on_line` as they arrive.
    pub async fn request(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        on_line: impl FnMut(&str),
    ) -> Result<u16, AgentError> {
        self.request_with_body(method, path_and_query, headers, Bytes::new(), on_line)
            .await
    }

    /// Like [`AgentClient::request`] with a JSON body.
    pub async fn request_with_body(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Bytes,
        on_line: impl FnMut(&str),
    ) -> Result<u16, AgentError> {
        let json = !body.is_empty();
        let body = http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed();
        self.request_streaming(method, path_and_query, headers, json, body, on_line)
            .await
    }

    /// Like [`AgentClient::request`], sending `body` as it comes (the request and the
    /// answer stream at the same time: `reg run -i` sends stdin this way).
    pub async fn request_streaming(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        json: bool,
        body: http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
        mut on_line: impl FnMut(&str),
    ) -> Result<u16, AgentError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| AgentError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| AgentError::Protocol(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", "node");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if json {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(body)
            .map_err(|e| AgentError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| AgentError::Protocol(e.to_string()))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            // A connection cut after the answer's last line (the agent stops reading a `-i`
            // body once the container ends) loses nothing: callers check their final line.
            let Ok(frame) = frame else { break };
            if let Some(data) = frame.data_ref() {
                pending.extend_from_slice(data);
                while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=pos).collect();
                    on_line(String::from_utf8_lossy(&line[..line.len() - 1]).as_ref());
                }
            }
        }
        if !pending.is_empty() {
            on_line(String::from_utf8_lossy(&pending).as_ref());
        }
        driver.abort();
        Ok(status)
    }

    /// A JSON request; non-2xx answers become errors with the agent's message.
    pub async fn json(
        &self,
        method: &str,
        path_and_query: &str,
    ) -> Result<serde_json::Value, AgentError> {
        self.json_body(method, path_and_query, &serde_json::Value::Null)
            .await
    }

    /// Like [`AgentClient::json`] with a JSON body (none for `null`); an empty answer
    /// (204) is `null`.
    pub async fn json_body(
        &self,
        method: &str,
        path_and_query: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, AgentError> {
        let bytes = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(serde_json::to_vec(body).map_err(|e| AgentError::Protocol(e.to_string()))?)
        };
        let mut text = String::new();
        let status = self
            .request_with_body(method, path_and_query, &[], bytes, |l| {
                text.push_str(l);
                text.push('\n');
            })
            .await?;
        let v: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| AgentError::Protocol(format!("{e}: {text}")))?
        };
        if !(200..300).contains(&status) {
            return Err(AgentError::Api(
                v["message"]
                    .as_str()
                    .unwrap_or("request failed")
                    .to_string(),
            ));
        }
        Ok(v)
    }
}
