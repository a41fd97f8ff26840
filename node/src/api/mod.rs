//! The node agent's HTTP edge: a REST + JSON API on a unix socket (mode 0660), the way
//! `dockerd` serves the docker client, and the client the cli uses to talk to it. This folder is
//! the only place in the node that knows HTTP: handlers parse a request, call one domain
//! service ([`crate::containers`], [`crate::network`], [`crate::image`]) and map its result;
//! [`ApiError`] turns every domain error into a status and docker's `{"message": …}` body.
//! Nothing outside `api/` imports it, except the cli through [`client`].
//!
//! Registry credentials travel with each request in `X-Registry-Auth` (base64 JSON
//! `{"username","password"}`), as with docker: the agent never reads a user's credential files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::containers::Containers;
use crate::image::ImageStore;

pub mod client;
mod containers;
mod error;
mod images;
mod networks;
mod system;
mod volumes;
pub mod wire;

pub use client::{stdin_body, writer_body, AgentClient};
pub use error::ApiError;

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
    /// The agent answered `status` (not 2xx) with `message`.
    #[error("{message}")]
    Api { status: u16, message: String },
}

pub struct AgentState {
    pub store: Arc<ImageStore>,
    pub default_registry: String,
    pub containers: Arc<Containers>,
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

pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/images", get(images::list))
        .route("/images/pull", post(images::pull))
        .route("/images/inspect", get(images::inspect))
        .route("/images/push", post(images::push))
        .route("/images/tag", post(images::tag))
        .route("/images", axum::routing::delete(images::remove))
        .route("/containers", get(containers::list))
        .route("/containers/create", post(containers::create))
        .route("/containers/{id}/json", get(containers::inspect))
        .route("/containers/{id}/start", post(containers::start))
        .route("/containers/{id}/logs", get(containers::logs))
        .route("/containers/{id}/stop", post(containers::stop))
        .route("/containers/{id}/kill", post(containers::kill))
        .route("/containers/{id}/resize", post(containers::resize))
        .route("/containers/{id}/wait", post(containers::wait))
        .route("/containers/{id}/exec", post(containers::exec))
        .route(
            "/containers/{id}",
            axum::routing::delete(containers::delete),
        )
        .route("/volumes", get(volumes::list))
        .route("/volumes/create", post(volumes::create))
        .route(
            "/volumes/{name}",
            get(volumes::inspect).delete(volumes::delete),
        )
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route(
            "/networks/{id}",
            get(networks::inspect).delete(networks::delete),
        )
        .route("/networks/{id}/connect", post(networks::connect))
        .route("/networks/{id}/disconnect", post(networks::disconnect))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::not_found(format!(
                "the node agent has no API {uri}: is it older than this reg client?"
            ))
        })
        .with_state(state)
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
    let containers = Containers::open(data)
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

/// A query flag: `1`, `true` or `yes` (as docker's API takes them).
pub(crate) fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = String::deserialize(d)?;
    Ok(matches!(v.as_str(), "1" | "true" | "yes"))
}

/// A stream of JSON lines from a channel, as an `application/x-ndjson` answer.
pub fn stream_response(rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| ApiError::internal(e).into_response())
}

/// Copies a request body into `sink` (a container's or an exec'd process's stdin); closing it
/// gives end-of-file.
pub(crate) async fn pump_stdin(body: Body, sink: impl tokio::io::AsyncWrite + Unpin) {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut sink = sink;
    let mut stream = body.into_data_stream();
    let mut open = true;
    while let Some(Ok(chunk)) = stream.next().await {
        // Once the container stops reading, the rest is drained (a connection closed with
        // unread input would be reset, and the client could lose the end of the output).
        if open && sink.write_all(&chunk).await.is_err() {
            open = false;
        }
    }
    let _ = sink.flush().await;
}
