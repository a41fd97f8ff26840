//! The node agent's HTTP edge: a REST + JSON API on unix sockets (mode 0660) and TCP (mutual
//! TLS unless loopback; [`listen`]), the way `dockerd -H` serves the docker client, and the client the cli uses to talk to it. This folder is
//! the only place in the node that knows HTTP: handlers parse a request, call one domain
//! service ([`crate::containers`], [`crate::network`], [`crate::image`]) and map its result;
//! [`ApiError`] turns every domain error into a status and docker's `{"message": …}` body.
//! Nothing outside `api/` imports it, except the cli through [`client`].
//!
//! Registry credentials travel with each request in `X-Registry-Auth` (base64 JSON
//! `{"username","password"}`), as with docker: the agent never reads a user's credential files.

use std::path::Path;
use std::sync::Arc;

use axum::Router;

use crate::containers::Containers;
use crate::image::ImageStore;

pub mod client;
mod containers;
pub mod detach;
mod engine;
mod engine_archive;
mod engine_attach;
mod engine_containers;
mod engine_control;
mod engine_events;
mod engine_filters;
mod engine_images;
mod engine_networks;
mod error;
mod listen;
mod shared;
mod system;
pub mod wire;

pub use client::{stdin_body, writer_body, AgentClient, Demux, Pending};
pub use engine::ENGINE_API_VERSION;
pub use engine_images::changes_of;
pub use error::ApiError;
pub use listen::{Host, Listen, ListenError, TlsFiles};
pub use shared::{decode_auth, encode_auth, stream_response, AgentError, AgentState, RegistryAuth};

/// Where reg's extensions of the Engine API are served (reg-only operations, such as the
/// build-context sync the cli adds): everything else is docker's.
pub const OWN_API_PREFIX: &str = "/reg/v1";

/// Routes served beside the Engine API's, by a crate this one does not depend on (the cli adds
/// the builder's this way).
#[derive(Default)]
pub struct Extensions {
    /// Under [`OWN_API_PREFIX`].
    pub own: Router<Arc<AgentState>>,
    /// Beside docker's Engine API (at the root and under `/v1.NN`).
    pub engine: Router<Arc<AgentState>>,
}

/// The agent's routes: docker's Engine API at the root (unversioned, as clients that have not
/// negotiated yet ask) and under `/v1.NN`, with `ext`'s, and reg's extensions under
/// [`OWN_API_PREFIX`].
pub fn router(state: Arc<AgentState>, ext: Extensions) -> Router {
    Router::new()
        .nest(OWN_API_PREFIX, ext.own)
        .merge(engine::router(false, ext.engine.clone()))
        .nest("/{version}", engine::router(true, ext.engine))
        .fallback(|uri: axum::http::Uri| async move { ApiError::no_such_api(uri) })
        .with_state(state)
}

/// The node's defaults (its `[node]` configuration) the agent applies.
#[derive(Debug, Clone)]
pub struct Settings {
    /// For references without a registry host.
    pub default_registry: String,
    /// A container's log rotation unless its create asks otherwise.
    pub log: LogDefaults,
    /// The build cache's size limit in bytes (none: unlimited).
    pub build_cache_max: Option<u64>,
    /// The subordinate id range for user namespaces (none: containers use the host's ids).
    pub userns_pool: Option<crate::runtime::IdMap>,
    /// Where `/metrics` is served (a listener of its own); empty: nowhere.
    pub metrics_addr: String,
}

/// The node's default log rotation: at `max_size` bytes (none: never), keeping `max_file`.
#[derive(Debug, Clone, Copy)]
pub struct LogDefaults {
    pub max_size: Option<u64>,
    pub max_file: u32,
}

/// Serves the agent on every host of `listen` (sockets mode 0660, TCP with mutual TLS unless
/// loopback) until `shutdown` resolves.
/// `extend` gives the routes served beside the agent's own ([`Extensions`]: the cli wires the
/// builder this way, as it is not a dependency of this crate).
pub async fn serve(
    listen: Listen,
    data: &Path,
    settings: Settings,
    extend: fn() -> Extensions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let store = Arc::new(tokio::task::block_in_place(|| ImageStore::open(data))?);
    let bound = listen.bind().await?;
    tracing::info!(data = %data.display(), "node agent serving");
    if !crate::runtime::device_filter_available() {
        tracing::warn!(
            "cgroup v2 host: this build loads no eBPF device filter, so containers get a nodev \
             rootfs and no CAP_MKNOD (--cap-add MKNOD gives it back, with every device it can make)"
        );
    }
    let containers = Containers::open(data).map_err(|source| AgentError::Containers {
        path: data.to_path_buf(),
        source,
    })?;
    containers.reattach();
    let networks = containers.networks.clone();
    let state = Arc::new(AgentState {
        store,
        default_registry: settings.default_registry,
        log_defaults: settings.log,
        build_cache_max: settings.build_cache_max,
        userns_pool: settings.userns_pool,
        containers,
    });
    let exporter = serve_metrics(&settings.metrics_addr, state.containers.clone()).await?;
    let app = router(state, extend());
    let result = listen::serve_all(bound, app, shutdown).await;
    if let Some(e) = exporter {
        e.abort();
    }
    // Bridges of networks nothing runs on go with the agent (the next one makes them again).
    networks.shutdown().await;
    result.map_err(AgentError::Serve)
}

/// `GET /metrics` on `addr` (nothing when it is empty), on a listener of its own: whoever can
/// reach that address may read the metrics, and nothing else is served there.
async fn serve_metrics(
    addr: &str,
    containers: Arc<Containers>,
) -> Result<Option<tokio::task::JoinHandle<()>>, AgentError> {
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(AgentError::Serve)?;
    let bound = listener.local_addr().map_err(AgentError::Serve)?;
    tracing::info!("node metrics on http://{bound}/metrics");
    let app = Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let cs = containers.clone();
            async move {
                let text = tokio::task::spawn_blocking(move || {
                    let (mut running, mut paused, mut stopped) = (0, 0, 0);
                    for r in cs.list().unwrap_or_default() {
                        match (r.state.status.is_running(), r.state.paused) {
                            (true, true) => paused += 1,
                            (true, false) => running += 1,
                            _ => stopped += 1,
                        }
                    }
                    cs.metrics.encode(running, paused, stopped)
                })
                .await
                .unwrap_or_default();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    })))
}
