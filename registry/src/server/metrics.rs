//! The registry's Prometheus metrics, served in Prometheus's text format on a listen address of
//! their own (`registry.metrics_addr`: the access control is who can reach that address).
//!
//! Names follow distribution's (`registry_http_*`, with its `handler` names) so that existing
//! dashboards find them. Labels are bounded: the handler is the API endpoint, never the path.

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

type Histograms = Family<Handler, Histogram, fn() -> Histogram>;

/// The registry's metrics (cheap to clone: the families are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<Request, Counter>,
    duration: Histograms,
    in_flight: Family<Handler, Gauge>,
    response_bytes: Family<Handler, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("registry_http");
        let requests = Family::<Request, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by API endpoint, method and status code",
            requests.clone(),
        );
        // 0.5 ms … ~16 s.
        let duration: Histograms =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        registry.register(
            "request_duration_seconds",
            "Time until the answer's headers, by API endpoint",
            duration.clone(),
        );
        let in_flight = Family::<Handler, Gauge>::default();
        registry.register(
            "in_flight_requests",
            "Requests being answered, by API endpoint",
            in_flight.clone(),
        );
        let response_bytes = Family::<Handler, Counter>::default();
        registry.register(
            "response_size_bytes",
            "Bytes of answers with a known length, by API endpoint",
            response_bytes.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            requests,
            duration,
            in_flight,
            response_bytes,
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
