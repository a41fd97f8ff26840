//! The registry's Prometheus metrics, served in Prometheus's text format on a listen address of
//! their own (`registry.metrics_addr`: the access control is who can reach that address).
//!
//! Names follow distribution's (`registry_http_*`, with its `handler` names) so that existing
//! dashboards find them; the collector's and the logins' have none there (`registry_gc_*`,
//! `registry_auth_failures_total`). Labels are bounded: the handler is the API endpoint, never
//! the path.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::routes::{self, Route};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    handler: &'static str,
    method: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Handler {
    handler: &'static str,
}

/// What a pull-through mirror served: `blob` or `manifest` (distribution's label).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// A repository, for the storage series (bounded: see [`MAX_REPO_SERIES`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Repo {
    repo: String,
}

/// Repositories with a storage series of their own (the largest); the rest are summed under
/// `repo="_other"`.
pub const MAX_REPO_SERIES: usize = 1000;

/// How old the storage series may be when scraped: they are read from the database at a
/// scrape at most this often.
pub const STORAGE_REFRESH: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
}

type Histograms = Family<Handler, Histogram, fn() -> Histogram>;

/// The registry's metrics (cheap to clone: the families are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<Request, Counter>,
    duration: Histograms,
    in_flight: Family<Handler, Gauge>,
    response_bytes: Family<Handler, Counter>,
    gc_runs: Family<Outcome, Counter>,
    gc_duration: Histogram,
    gc_tags: Counter,
    gc_manifests: Counter,
    gc_blobs: Counter,
    gc_bytes: Counter,
    /// Failed logins (a wrong password or token), counted by the auth layer.
    pub(crate) auth_failures: Counter,
    proxy_requests: Family<Kind, Counter>,
    proxy_hits: Family<Kind, Counter>,
    proxy_misses: Family<Kind, Counter>,
    proxy_pulled_bytes: Family<Kind, Counter>,
    throttled: Family<Reason, Counter>,
    repo_bytes: Family<Repo, Gauge>,
    storage_bytes: Gauge,
    /// When the storage series were last read.
    storage_at: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// The repositories with a storage series now.
    storage_shown: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<Request, Counter>::default();
        registry.register(
            "registry_http_requests",
            "Requests answered, by API endpoint, method and status code",
            requests.clone(),
        );
        // 0.5 ms … ~16 s.
        let duration: Histograms =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        registry.register(
            "registry_http_request_duration_seconds",
            "Time until the answer's headers, by API endpoint",
            duration.clone(),
        );
        let in_flight = Family::<Handler, Gauge>::default();
        registry.register(
            "registry_http_in_flight_requests",
            "Requests being answered, by API endpoint",
            in_flight.clone(),
        );
        let response_bytes = Family::<Handler, Counter>::default();
        registry.register(
            "registry_http_response_size_bytes",
            "Bytes of answers with a known length, by API endpoint",
            response_bytes.clone(),
        );
        let gc_runs = Family::<Outcome, Counter>::default();
        registry.register(
            "registry_gc_runs",
            "Collections this registry ran on its schedule, by result",
            gc_runs.clone(),
        );
        // 10 ms … ~5.5 min.
        let gc_duration = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "registry_gc_duration_seconds",
            "Time of a scheduled collection",
            gc_duration.clone(),
        );
        let count = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let gc_tags = count(
            &mut registry,
            "registry_gc_deleted_tags",
            "Tags removed by retention rules",
        );
        let gc_manifests = count(
            &mut registry,
            "registry_gc_deleted_manifests",
            "Manifests removed",
        );
        let gc_blobs = count(
            &mut registry,
            "registry_gc_deleted_blobs",
            "Blobs whose bytes were removed",
        );
        let gc_bytes = count(
            &mut registry,
            "registry_gc_freed_bytes",
            "Bytes of the blobs removed",
        );
        let auth_failures = count(
            &mut registry,
            "registry_auth_failures",
            "Logins refused for a wrong password or token",
        );
        // Distribution's proxy names (registry/proxy/proxymetrics.go).
        let mut kinds = |name: &str, help: &str| {
            let f = Family::<Kind, Counter>::default();
            registry.register(name, help, f.clone());
            for r#type in ["blob", "manifest"] {
                f.get_or_create(&Kind { r#type }).inc_by(0);
            }
            f
        };
        let proxy_requests = kinds(
            "registry_proxy_requests",
            "Requests a pull-through mirror answered, by type",
        );
        let proxy_hits = kinds(
            "registry_proxy_hits",
            "Mirror requests answered from what was stored, by type",
        );
        let proxy_misses = kinds(
            "registry_proxy_misses",
            "Mirror requests that fetched from the upstream, by type",
        );
        let proxy_pulled_bytes = kinds(
            "registry_proxy_pulled_bytes",
            "Bytes fetched from upstreams, by type",
        );
        let throttled = Family::<Reason, Counter>::default();
        registry.register(
            "registry_throttled_requests",
            "Requests slowed down or refused (429) to protect the registry, by reason",
            throttled.clone(),
        );
        for reason in ["login_delay", "login_queue_full", "upload_sessions"] {
            throttled.get_or_create(&Reason { reason }).inc_by(0);
        }
        // zot's `zot_repo_storage_bytes{repo}`, under this registry's prefix.
        let repo_bytes = Family::<Repo, Gauge>::default();
        registry.register(
            "registry_repo_storage_bytes",
            "Bytes of the distinct blobs linked into a repository (the largest 1000; the rest as repo=\"_other\"), read at most once a minute",
            repo_bytes.clone(),
        );
        let storage_bytes = Gauge::default();
        registry.register(
            "registry_storage_bytes",
            "Bytes of every stored blob, read at most once a minute",
            storage_bytes.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            repo_bytes,
            storage_bytes,
            storage_at: Default::default(),
            storage_shown: Default::default(),
            throttled,
            proxy_requests,
            proxy_hits,
            proxy_misses,
            proxy_pulled_bytes,
            requests,
            duration,
            in_flight,
            response_bytes,
            gc_runs,
            gc_duration,
            gc_tags,
            gc_manifests,
            gc_blobs,
            gc_bytes,
            auth_failures,
        }
    }

    /// A mirror answered a `blob` or `manifest` request: from what it had (`hit`), or after
    /// fetching `pulled` bytes from its upstream.
    pub fn mirrored(&self, r#type: &'static str, hit: bool, pulled: u64) {
        let k = Kind { r#type };
        self.proxy_requests.get_or_create(&k).inc();
        if hit {
            self.proxy_hits.get_or_create(&k).inc();
        } else {
            self.proxy_misses.get_or_create(&k).inc();
        }
        self.proxy_pulled_bytes.get_or_create(&k).inc_by(pulled);
    }

    /// The counter of requests throttled for `reason` (`login_delay`: a login held back after
    /// failures; `login_queue_full`: refused, too many password checks waiting;
    /// `upload_sessions`: refused, too many open uploads of one client).
    pub fn throttle_counter(&self, reason: &'static str) -> Counter {
        self.throttled.get_or_create(&Reason { reason }).clone()
    }

    /// A scheduled collection ended: its report, or None when it failed.
    pub fn collected(&self, report: Option<&super::gc::Report>) {
        let result = if report.is_some() { "ok" } else { "failed" };
        self.gc_runs.get_or_create(&Outcome { result }).inc();
        if let Some(r) = report {
            self.gc_duration.observe(r.seconds);
            self.gc_tags.inc_by(r.tags.len() as u64);
            self.gc_manifests.inc_by(r.manifests.len() as u64);
            self.gc_blobs.inc_by(r.blobs.len() as u64);
            self.gc_bytes.inc_by(r.bytes);
        }
    }

    /// A request to `path` began: the returned guard counts it in flight until it is
    /// [`InFlight::done`] (or dropped, for a request that never answered).
    pub fn begin(&self, path: &str) -> InFlight {
        let handler = Handler {
            handler: handler_of(path),
        };
        self.in_flight.get_or_create(&handler).inc();
        InFlight {
            metrics: self.clone(),
            handler,
        }
    }

    /// Reads the storage series again when they are older than [`STORAGE_REFRESH`] (a failed
    /// read keeps the last values and is logged).
    pub async fn refresh_storage(&self, meta: &Arc<super::meta::Meta>) {
        {
            let Ok(mut at) = self.storage_at.lock() else {
                return;
            };
            if at.is_some_and(|t| t.elapsed() < STORAGE_REFRESH) {
                return;
            }
            *at = Some(std::time::Instant::now());
        }
        let meta = meta.clone();
        match tokio::task::spawn_blocking(move || meta.storage_sizes()).await {
            Ok(Ok((repos, total))) => self.set_storage(repos, total),
            Ok(Err(e)) => tracing::warn!(error = %e, "storage series not read"),
            Err(e) => tracing::warn!(error = %e, "storage series not read"),
        }
    }

    fn set_storage(&self, mut repos: Vec<(String, u64)>, total: u64) {
        repos.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let other: u64 = repos.iter().skip(MAX_REPO_SERIES).map(|r| r.1).sum();
        repos.truncate(MAX_REPO_SERIES);
        if other > 0 {
            repos.push(("_other".into(), other));
        }
        // New values first, then the series no longer there go: a scrape in between sees a
        // whole set, never a half-filled one.
        let gauge = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
        let now: std::collections::HashSet<String> = repos.iter().map(|r| r.0.clone()).collect();
        for (repo, bytes) in repos {
            self.repo_bytes
                .get_or_create(&Repo { repo })
                .set(gauge(bytes));
        }
        if let Ok(mut shown) = self.storage_shown.lock() {
            for gone in shown.difference(&now) {
                self.repo_bytes.remove(&Repo { repo: gone.clone() });
            }
            *shown = now;
        }
        self.storage_bytes.set(gauge(total));
    }

    /// Everything, in Prometheus's text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One request in flight (see [`Metrics::begin`]).
pub struct InFlight {
    metrics: Metrics,
    handler: Handler,
}

impl InFlight {
    /// The request was answered with `code` after `took`; `bytes` when its length is known.
    pub fn done(self, method: &str, code: u16, took: Duration, bytes: Option<u64>) {
        let m = &self.metrics;
        m.requests
            .get_or_create(&Request {
                handler: self.handler.handler,
                method: method.to_string(),
                code,
            })
            .inc();
        m.duration
            .get_or_create(&self.handler)
            .observe(took.as_secs_f64());
        if let Some(b) = bytes {
            m.response_bytes.get_or_create(&self.handler).inc_by(b);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.in_flight.get_or_create(&self.handler).dec();
    }
}

/// Distribution's handler name for the endpoint `path` reaches.
fn handler_of(path: &str) -> &'static str {
    if path == "/auth/token" {
        return "token";
    }
    match routes::parse(path) {
        Ok(Some(Route::Base)) => "base",
        Ok(Some(Route::Catalog)) => "catalog",
        Ok(Some(Route::Tags(_))) => "tags",
        Ok(Some(Route::Manifest(..))) => "manifest",
        Ok(Some(Route::Blob(..))) => "blob",
        Ok(Some(Route::UploadStart(_))) => "blob_upload",
        Ok(Some(Route::Upload(..))) => "blob_upload_chunk",
        Ok(Some(Route::Referrers(..))) => "referrers",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_series_are_bounded_with_the_rest_summed() {
        let m = Metrics::new();
        let repos: Vec<(String, u64)> = (0..MAX_REPO_SERIES as u64 + 5)
            .map(|i| (format!("r/{i}"), i + 1))
            .collect();
        m.set_storage(repos, 1);
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("registry_repo_storage_bytes{"))
            .count();
        assert_eq!(series, MAX_REPO_SERIES + 1);
        // The five smallest (1..=5 bytes) are summed.
        assert!(
            text.contains("registry_repo_storage_bytes{repo=\"_other\"} 15"),
            "{text}"
        );
        m.set_storage(vec![("only/one".into(), 9)], 9);
        let text = m.encode();
        assert!(!text.contains("r/1\""), "old series go: {text}");
        assert!(text.contains("registry_repo_storage_bytes{repo=\"only/one\"} 9"));
    }

    #[test]
    fn a_request_is_counted_by_endpoint_method_and_code_and_leaves_no_gauge_up() {
        let m = Metrics::new();
        let r = m.begin("/v2/team/app/blobs/uploads/0b7a");
        assert!(m
            .encode()
            .contains("registry_http_in_flight_requests{handler=\"blob_upload_chunk\"} 1"));
        r.done("PUT", 201, Duration::from_millis(3), Some(0));
        m.begin("/v2/team/app/manifests/v1")
            .done("GET", 404, Duration::from_millis(1), None);
        let text = m.encode();
        for want in [
            "registry_http_requests_total{handler=\"blob_upload_chunk\",method=\"PUT\",code=\"201\"} 1",
            "registry_http_requests_total{handler=\"manifest\",method=\"GET\",code=\"404\"} 1",
            "registry_http_in_flight_requests{handler=\"blob_upload_chunk\"} 0",
            "registry_http_request_duration_seconds_count{handler=\"manifest\"} 1",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }

    #[test]
    fn a_collection_adds_its_report() {
        let m = Metrics::new();
        m.collected(Some(&crate::server::gc::Report {
            dry_run: false,
            tags: vec!["a:1".into()],
            manifests: vec!["a@sha256:00".into(), "a@sha256:01".into()],
            links: 0,
            blobs: vec![("sha256:02".into(), 10), ("sha256:03".into(), 5)],
            bytes: 15,
            seconds: 0.02,
        }));
        m.collected(None);
        let text = m.encode();
        for want in [
            "registry_gc_runs_total{result=\"ok\"} 1",
            "registry_gc_runs_total{result=\"failed\"} 1",
            "registry_gc_deleted_tags_total 1",
            "registry_gc_deleted_manifests_total 2",
            "registry_gc_deleted_blobs_total 2",
            "registry_gc_freed_bytes_total 15",
            "registry_gc_duration_seconds_count 1",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }

    #[test]
    fn mirror_answers_are_counted_under_distributions_proxy_names() {
        let m = Metrics::new();
        let text = m.encode();
        assert!(
            text.contains("registry_proxy_misses_total{type=\"blob\"} 0"),
            "{text}"
        );
        m.mirrored("blob", false, 1000);
        m.mirrored("blob", true, 0);
        m.mirrored("manifest", true, 0);
        let text = m.encode();
        for want in [
            "registry_proxy_requests_total{type=\"blob\"} 2",
            "registry_proxy_hits_total{type=\"blob\"} 1",
            "registry_proxy_misses_total{type=\"blob\"} 1",
            "registry_proxy_pulled_bytes_total{type=\"blob\"} 1000",
            "registry_proxy_hits_total{type=\"manifest\"} 1",
            "registry_throttled_requests_total{reason=\"login_delay\"} 0",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }

    #[test]
    fn handlers_are_the_endpoints_never_the_names() {
        assert_eq!(handler_of("/v2/"), "base");
        assert_eq!(handler_of("/v2/_catalog"), "catalog");
        assert_eq!(handler_of("/v2/a/b/c/tags/list"), "tags");
        assert_eq!(handler_of("/v2/a/blobs/uploads/"), "blob_upload");
        assert_eq!(handler_of("/v2/a/blobs/sha256:00"), "blob");
        assert_eq!(handler_of("/auth/token"), "token");
        assert_eq!(handler_of("/nothing/here"), "other");
        assert_eq!(handler_of("/v2/UPPER/manifests/x"), "other");
    }
}
