//! The node agent's HTTP edge: a REST + JSON API on a unix socket (mode 0660), the way
//! `dockerd` serves the docker client, and the client the cli uses to talk to it. This folder is
//! the only place in the node that knows HTTP: handlers parse a request, call one domain
//! service ([`crate::containers`], [`crate::network`], [`crate::image`]) and map its result;
//! [`ApiError`] turns every domain error into a status and docker's `{"message": …}` body.
//! Nothing outside `api/` imports it, except the cli through [`client`].
//!
//! Registry credentials travel with each request in `X-Registry-Auth` (base64 JSON
//! `{"username","password"}`), as with docker: the agent never reads a user's credential files.

use std::path::Path;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::containers::Containers;
use crate::image::ImageStore;

pub mod client;
mod containers;
mod engine;
mod engine_containers;
mod error;
mod images;
mod networks;
mod shared;
mod system;
mod volumes;
pub mod wire;

pub use client::{stdin_body, writer_body, AgentClient};
pub use error::ApiError;
pub use shared::{
    decode_auth, encode_auth, stream_response, AgentError, AgentState, RegistryAuth, API_VERSION,
};

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
        // Docker's Engine API: `/_ping`, then everything under the negotiated `/v1.NN`.
        .route("/_ping", get(engine::ping).head(engine::ping))
        .nest("/{version}", engine::router())
        .fallback(|uri: axum::http::Uri| async move { ApiError::no_such_api(uri) })
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
