//! The registry server: distribution-spec v1.1 over HTTP, blobs in an object store, metadata in
//! SQLite. [`router`] builds the whole HTTP surface without a socket (testable in-process);
//! [`serve`] binds it, sweeps abandoned uploads and shuts down gracefully.
//! It never links node or builder code, and it never trusts a digest it did not compute.

mod api;
pub mod auth;
pub mod db;
pub mod error;
pub mod gc;
mod listen;
pub mod meta;
mod metrics;
pub mod mirror;
pub mod nodes;
pub mod notify;
pub mod parts;
pub mod pulls;
pub mod quota;
pub mod retention;
mod routes;
mod state;
pub mod store;
pub mod ui;
pub mod uploads;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::Router;
use reg_config::{Config, RegistryConfig};

pub use listen::ListenError;
pub use state::{AppState, OpenError};

/// Errors that stop the registry from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
    #[error("refusing to serve {0} without authentication: create a user first (reg admin --data DIR user add NAME --admin --password-stdin), listen on 127.0.0.1, or pass --insecure-no-auth")]
    OpenOnNetwork(String),
    #[error("cannot listen on {addr}: {source}; is another registry running there? choose another with --addr")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Gc(#[from] gc::GcError),
}

/// The registry's HTTP surface.
/// The largest body of a web interface form or a token request.
const FORM_LIMIT: usize = 64 * 1024;

pub fn router(state: Arc<AppState>) -> Router {
    let pace = (
        Duration::from_secs(state.cfg.limits.body_window_secs),
        state.cfg.limits.min_body_bytes_per_sec,
    );
    let v2 = Router::new()
        .route("/v2", any(api::dispatch))
        .route("/v2/", any(api::dispatch))
        .route("/v2/{*rest}", any(api::dispatch))
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .merge(v2)
        .route("/auth/token", any(api::token))
        .route("/", get(ui::root))
        .route("/ui", get(ui::root))
        .route("/ui/", get(ui::repos))
        .route("/ui/login", get(ui::login_page).post(ui::login))
        .route("/ui/logout", post(ui::logout))
        .route("/ui/repo", get(ui::repo))
        .route("/ui/manifest", get(ui::manifest))
        .route("/ui/tokens", get(ui::tokens).post(ui::create_token))
        .route("/ui/tokens/revoke", post(ui::revoke_token))
        .route("/ui/visibility", post(ui::set_visibility))
        .route("/ui/admin/users", get(ui::admin_users).post(ui::add_user))
        .route("/ui/admin/users/remove", post(ui::remove_user))
        .route("/ui/admin/users/admin", post(ui::set_admin))
        .route("/ui/admin/users/password", post(ui::set_password))
        .route("/ui/account", get(ui::account))
        .route("/ui/account/password", post(ui::change_password))
        .route("/ui/admin/orgs", get(ui::admin_orgs).post(ui::add_org))
        .route("/ui/admin/orgs/member", post(ui::set_member))
        .route("/ui/admin/audit", get(ui::admin_audit))
        .route("/ui/admin/storage", get(ui::admin_storage).post(ui::run_gc))
        .route("/ui/tag/delete", post(ui::delete_tag))
        .route("/ui/manifest/delete", post(ui::delete_manifest))
        .route(
            "/ui/admin/retention",
            get(ui::admin_retention).post(ui::add_retention),
        )
        .route("/ui/admin/retention/remove", post(ui::remove_retention))
        .route("/ui/admin/node", get(ui::admin_node))
        .route("/ui/admin/node/logs", get(ui::admin_node_logs))
        // Forms and the token endpoint are small: their bodies are read whole, so they are
        // capped (blob and manifest bodies stream, under limits of their own).
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .layer(middleware::from_fn_with_state(pace, pace_body))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            access_log,
        ))
        .with_state(state)
}

/// Request bodies must keep `registry.limits.min_body_bytes_per_sec` (see [`listen::Paced`]).
async fn pace_body(
    axum::extract::State((window, min)): axum::extract::State<(Duration, u64)>,
    req: Request,
    next: Next,
) -> Response {
    use axum::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::DELETE) {
        return next.run(req).await;
    }
    let req = req.map(|b| {
        axum::body::Body::from_stream(listen::Paced::new(b.into_data_stream(), window, min))
    });
    next.run(req).await
}

/// Adds the API version header to every answer, logs one line per request and counts it in the
/// metrics.
async fn access_log(
    axum::extract::State(metrics): axum::extract::State<metrics::Metrics>,
    mut req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let in_flight = metrics.begin(req.uri().path());
    // HTTP/2 carries the host as :authority; token realms are built from a Host header.
    if !req.headers().contains_key("host") {
        if let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert("host", v);
        }
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    let bytes = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let took = start.elapsed();
    in_flight.done(
        method.as_str(),
        resp.status().as_u16(),
        took,
        bytes.parse().ok(),
    );
    tracing::info!(
        target: "reg::access",
        %method,
        path,
        status = resp.status().as_u16(),
        bytes,
        micros = took.as_micros() as u64,
    );
    resp
}

/// Binds `cfg.registry.addr` and serves until `shutdown` resolves; in-flight requests then get
/// `shutdown_grace_secs` to finish. `on_bound` learns the actual address (port 0 picks one).
/// `node` is the local node the web interface shows, when one runs beside the registry.
pub async fn serve(
    cfg: &Config,
    node: Option<Arc<dyn nodes::NodeView>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let state = tokio::task::block_in_place(|| AppState::open(cfg, node))?;
    let listener = tokio::net::TcpListener::bind(&cfg.registry.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.registry.addr.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    let (users, had_users) = {
        let m = state.meta.clone();
        tokio::task::spawn_blocking(move || m.auth_state())
            .await
            .map_err(|e| ServeError::Serve(std::io::Error::other(e)))??
    };
    let r = &cfg.registry;
    if users == 0 && (r.require_auth || (had_users && !r.insecure_no_auth)) {
        tracing::warn!(
            "authentication is required but no user exists: every request is refused until \
             `reg admin --data {} user add admin --admin --password-stdin`",
            cfg.data_dir.display()
        );
    } else if users == 0 {
        if !addr.ip().is_loopback() && !r.insecure_no_auth {
            return Err(ServeError::OpenOnNetwork(addr.to_string()));
        }
        if r.insecure_no_auth {
            tracing::warn!(
                "--insecure-no-auth: serving WITHOUT authentication on {addr}; anyone who \
                 reaches it can push, pull and delete"
            );
        } else {
            tracing::warn!(
                "authentication is off (loopback only): no user exists yet. Create the first \
                 admin with `reg admin --data {} user add admin --admin --password-stdin`; auth \
                 turns on at once and stays on for good",
                cfg.data_dir.display()
            );
        }
    }
    // Bound before the registry says it listens: whoever waits for that finds the metrics too.
    let exporter = serve_metrics(
        &cfg.registry.metrics_addr,
        state.metrics.clone(),
        state.meta.clone(),
    )
    .await?;
    on_bound(addr);
    state.notify.spawn(state.meta.clone(), addr.to_string());

    let sweeper = {
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            tick.tick().await;
            loop {
                tick.tick().await;
                let s = st.clone();
                match tokio::task::spawn_blocking(move || s.uploads.sweep(false)).await {
                    Ok(Ok(n)) if n > 0 => {
                        tracing::info!(removed = n, "expired upload sessions removed")
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "upload sweep failed"),
                    _ => {}
                }
            }
        })
    };

    let collector = gc_schedule(&state, &cfg.registry.gc)?;

    let grace = Duration::from_secs(cfg.registry.shutdown_grace_secs);
    let tls = match cfg.registry.tls() {
        Some((cert, key)) => Some(listen::tls_acceptor(&cert, &key)?),
        None => None,
    };
    let bounds = listen::Bounds {
        max_connections: cfg.registry.limits.max_connections,
        header_timeout: Duration::from_secs(cfg.registry.limits.header_timeout_secs),
    };
    let notify = state.notify.clone();
    let (pulls, meta) = (state.pulls.clone(), state.meta.clone());
    let pull_writer = tokio::spawn(pulls.clone().run(meta.clone()));
    let result = listen::serve(listener, tls, router(state), bounds, shutdown, grace).await;
    // The answered requests' events are written to the queue before the process ends, and
    // the pulls noted since the last write are written.
    notify.close().await;
    pull_writer.abort();
    pulls.flush(&meta).await;
    sweeper.abort();
    if let Some(c) = collector {
        c.abort();
    }
    if let Some(e) = exporter {
        e.abort();
    }
    Ok(result?)
}

/// `GET /metrics` on `addr` (nothing when it is empty), on a listener of its own: whoever can
/// reach that address may read the metrics, and nothing else is served there.
async fn serve_metrics(
    addr: &str,
    metrics: metrics::Metrics,
    meta: Arc<meta::Meta>,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServeError> {
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let bound = listener.local_addr().map_err(ServeError::Serve)?;
    tracing::info!("metrics on http://{bound}/metrics");
    let app = Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (m, meta) = (metrics.clone(), meta.clone());
            async move {
                m.refresh_storage(&meta).await;
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
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

/// One collection over the data dir of `cfg` from a separate process (`reg registry gc`),
/// while a registry may be serving it: opens the database and blob store, nothing else.
pub fn gc_once(cfg: &Config, opts: &gc::Options) -> Result<gc::Report, ServeError> {
    let (meta, store) = state::open_storage(cfg)?;
    Ok(gc::collect(&meta, &store, opts)?)
}

/// Options of a collection as the configuration describes them.
pub fn gc_options(cfg: &RegistryConfig) -> Result<gc::Options, ServeError> {
    let bad = |m: String| ServeError::Gc(gc::GcError::Rule(m));
    Ok(gc::Options {
        grace: reg_config::parse_duration(&cfg.gc.grace).map_err(bad)?,
        untagged: if cfg.gc.untagged.is_empty() {
            None
        } else {
            Some(reg_config::parse_duration(&cfg.gc.untagged).map_err(bad)?)
        },
        dry_run: false,
        rules: gc::Rule::from_configs(&cfg.retention)?,
        now: None,
    })
}

/// Starts the scheduled collection (`registry.gc.interval`; none when it is zero).
fn gc_schedule(
    state: &Arc<AppState>,
    cfg: &reg_config::GcConfig,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServeError> {
    let every = reg_config::parse_duration(&cfg.interval)
        .map_err(|m| ServeError::Gc(gc::GcError::Rule(m)))?;
    if every.is_zero() {
        return Ok(None);
    }
    let opts = gc_options(&state.cfg)?;
    let st = state.clone();
    Ok(Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let every_secs = i64::try_from(every.as_secs()).unwrap_or(i64::MAX / 2);
        let mut next = db::now().saturating_add(every_secs);
        loop {
            st.next_gc.store(next, std::sync::atomic::Ordering::Relaxed);
            tick.tick().await;
            next = next.saturating_add(every_secs);
            let (s, o) = (st.clone(), opts.clone());
            match tokio::task::spawn_blocking(move || gc::collect(&s.meta, &s.store, &o)).await {
                Ok(Ok(r)) => {
                    st.metrics.collected(Some(&r));
                    st.record_gc(&r);
                    tracing::info!(
                        tags = r.tags.len(),
                        manifests = r.manifests.len(),
                        links = r.links,
                        blobs = r.blobs.len(),
                        bytes = r.bytes,
                        seconds = r.seconds,
                        "garbage collected"
                    )
                }
                Ok(Err(e)) => {
                    st.metrics.collected(None);
                    tracing::warn!(error = %e, "garbage collection failed")
                }
                Err(e) => {
                    st.metrics.collected(None);
                    tracing::warn!(error = %e, "garbage collection task failed")
                }
            }
        }
    })))
}
