//! [`AppState`]: what every handler shares — the metadata, the blob store, the upload service,
//! the auth service and the compiled retention rules — and how it is opened from the
//! configuration. It knows nothing of HTTP.

use std::sync::Arc;

use reg_config::{Config, RegistryConfig};

use super::auth::{self, AuthError};
use super::gc::{self, GcError};
use super::meta::{Meta, MetaError};
use super::mirror::{MirrorError, Mirrors};
use super::notify::{Notifier, NotifyError};
use super::store::BlobStore;
use super::uploads::Uploads;

/// Errors that stop the registry's storage from opening.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("blob storage {what}: {source}")]
    Storage {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Gc(#[from] GcError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
}

/// Shared state of all handlers.
pub struct AppState {
    pub(crate) meta: Arc<Meta>,
    pub(crate) store: Arc<BlobStore>,
    pub(crate) uploads: Uploads,
    pub(crate) cfg: RegistryConfig,
    pub(crate) auth: auth::Auth,
    /// `registry.retention`, compiled, and the rules stored in the database (immutable tags
    /// are checked on every push and delete).
    pub(crate) retention: super::retention::Retention,
    /// What `/metrics` on `registry.metrics_addr` reports.
    pub(crate) metrics: super::metrics::Metrics,
    /// `registry.mirror`: names fetched from upstream registries on a miss.
    pub(crate) mirrors: Mirrors,
    /// `registry.notify`: webhooks told of pushes, pulls and deletes.
    pub(crate) notify: Arc<Notifier>,
    /// This process's last collection (scheduled or from the web interface): when, and its
    /// report.
    pub(crate) last_gc: std::sync::Mutex<Option<(i64, gc::Report)>>,
    /// Manifest pulls noted for the tags page, written in batches.
    pub(crate) pulls: Arc<super::pulls::Pulls>,
    /// When the scheduled collection runs next (unix seconds; 0: not scheduled).
    pub(crate) next_gc: std::sync::atomic::AtomicI64,
    /// The local node's read-only view for the web interface (`reg serve` as root).
    pub(crate) node: Option<Arc<dyn super::nodes::NodeView>>,
}

impl AppState {
    /// Opens (creating if needed) the registry's storage under the configured data dir.
    pub fn open(
        cfg: &Config,
        node: Option<Arc<dyn super::nodes::NodeView>>,
    ) -> Result<Arc<AppState>, OpenError> {
        let layout = cfg.layout();
        let (meta, store) = open_storage(cfg)?;
        let meta = Arc::new(meta);
        let key = auth::load_or_create_key(&meta, &layout.registry_auth())?;
        let metrics = super::metrics::Metrics::new();
        let auth = auth::Auth::new(meta.clone(), key, &cfg.registry)
            .count_failures_in(metrics.auth_failures.clone())
            .count_throttling_in(
                metrics.throttle_counter("login_delay"),
                metrics.throttle_counter("login_queue_full"),
            );
        let store = Arc::new(store);
        let limits = &cfg.registry.limits;
        let uploads = Uploads::new(
            meta.clone(),
            store.clone(),
            limits.upload_sessions_per_client,
            cfg.registry.upload_expiry_secs,
        );
        let retention_meta = meta.clone();
        let st = Arc::new(AppState {
            auth,
            meta,
            store,
            uploads,
            cfg: cfg.registry.clone(),
            retention: super::retention::Retention::new(
                retention_meta,
                gc::Rule::from_configs(&cfg.registry.retention)?,
            ),
            metrics,
            mirrors: Mirrors::from_config(&cfg.registry.mirror)?,
            notify: Arc::new(Notifier::from_config(&cfg.registry.notify)?),
            last_gc: std::sync::Mutex::new(None),
            node,
            pulls: Default::default(),
            next_gc: Default::default(),
        });
        st.uploads.sweep(true)?;
        let recovered = gc::recover_at_start(&st.meta, &st.store)?;
        if recovered > 0 {
            tracing::warn!(
                recovered,
                "objects left in the trash by an interrupted garbage collection were sorted out"
            );
        }
        Ok(st)
    }
}

impl AppState {
    /// Keeps `r` as the last collection (not a dry run's).
    pub(crate) fn record_gc(&self, r: &gc::Report) {
        if r.dry_run {
            return;
        }
        if let Ok(mut g) = self.last_gc.lock() {
            *g = Some((super::db::now(), r.clone()));
        }
    }
}

/// The metadata database and the blob store under the data dir of `cfg`.
pub(super) fn open_storage(cfg: &Config) -> Result<(Meta, BlobStore), OpenError> {
    let layout = cfg.layout();
    let meta = Meta::open(&cfg.registry.metadata.url, &layout.registry_db())?;
    let st = &cfg.registry.storage;
    let store = if st.kind == "s3" {
        BlobStore::open_s3(st)
    } else {
        BlobStore::open_local(&layout.registry_blobs(), &layout.registry_uploads())
    }
    .map_err(|source| OpenError::Storage {
        what: store_name(cfg),
        source,
    })?;
    Ok((meta, store))
}

fn store_name(cfg: &Config) -> String {
    cfg.registry
        .storage
        .describe()
        .unwrap_or_else(|| cfg.layout().registry_blobs().display().to_string())
}
