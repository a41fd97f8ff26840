//! `/metrics` on `registry.metrics_addr` (issue #23): the series count what this test did, and a
//! real Prometheus (Debian's `prometheus`) scrapes them.

use std::time::{Duration, Instant};

use reg_tests::{admin, client, location, metric_value, sha256, Registry};

/// A registry with its metrics listener on a free loopback port; returns it with the metrics
/// address (from its log).
fn registry_with_metrics(data: &std::path::Path) -> (Registry, String) {
    registry_with_metrics_and(data, &[])
}

/// [`registry_with_metrics`] with more environment.
fn registry_with_metrics_and(data: &std::path::Path, env: &[(&str, &str)]) -> (Registry, String) {
    let mut env = env.to_vec();
    env.push(("REG_REGISTRY_METRICS_ADDR", "127.0.0.1:0"));
    let reg = Registry::start_on(data, &env);
    let addr = reg
        .log()
        .lines()
        .find_map(|l| l.split("metrics on http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{}", reg.log()));
    (reg, addr)
}

fn scrape(addr: &str) -> String {
    client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .expect("GET /metrics")
}

#[test]
fn metrics_count_requests_by_endpoint_method_and_code() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (reg, addr) = registry_with_metrics(tmp.path());
    let c = client();
    let data = b"metrics test blob".to_vec();
    let digest = sha256(&data);
    for _ in 0..2 {
        let r = c
            .post(reg.url("/v2/metrics/app/blobs/uploads/"))
            .send()
            .expect("POST");
        assert_eq!(r.status(), 202);
        let loc = location(&r);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = c
            .put(reg.url(&format!("{loc}{sep}digest={digest}")))
            .body(data.clone())
            .send()
            .expect("PUT");
        assert_eq!(r.status(), 201);
    }
    let r = c
        .get(reg.url("/v2/metrics/app/manifests/missing"))
        .send()
        .expect("GET manifest");
    assert_eq!(r.status(), 404);

    let text = scrape(&addr);
    let want = [
        (
            "registry_http_requests_total{handler=\"blob_upload\",method=\"POST\",code=\"202\"}",
            2.0,
        ),
        (
            "registry_http_requests_total{handler=\"blob_upload_chunk\",method=\"PUT\",code=\"201\"}",
            2.0,
        ),
        (
            "registry_http_requests_total{handler=\"manifest\",method=\"GET\",code=\"404\"}",
            1.0,
        ),
        (
            "registry_http_request_duration_seconds_count{handler=\"blob_upload_chunk\"}",
            2.0,
        ),
        (
            "registry_http_in_flight_requests{handler=\"blob_upload_chunk\"}",
            0.0,
        ),
    ];
    for (series, n) in want {
        assert_eq!(metric_value(&text, series), Some(n), "{series} in\n{text}");
    }
    // Names of repositories become labels of the (bounded) storage series only.
    assert!(
        text.lines()
            .filter(|l| l.contains("metrics/app"))
            .all(|l| l.starts_with("registry_repo_storage_bytes{")),
        "{text}"
    );
    // The registry's own port does not serve them.
    let r = c.get(reg.url("/metrics")).send().expect("GET");
    assert_eq!(r.status(), 404);
}

#[test]
fn failed_logins_are_counted() {
    let tmp = tempfile::tempdir().expect("tmp");
    admin(
        tmp.path(),
        &["user", "add", "alice", "--password-stdin"],
        "right-password-1234\n",
    );
    let (reg, addr) = registry_with_metrics(tmp.path());
    let c = client();
    for (pw, want) in [("wrong", 401), ("right-password-1234", 200)] {
        let r = c
            .get(reg.url("/auth/token?service=reg"))
            .basic_auth("alice", Some(pw))
            .send()
            .expect("GET token");
        assert_eq!(r.status(), want, "{pw}");
    }
    let text = scrape(&addr);
    assert_eq!(
        metric_value(&text, "registry_auth_failures_total "),
        Some(1.0),
        "{text}"
    );
    // No scheduled collection ran in this test.
    assert!(!text.contains("registry_gc_runs_total{"), "{text}");
}

#[test]
fn throttled_logins_are_counted() {
    let tmp = tempfile::tempdir().expect("tmp");
    admin(
        tmp.path(),
        &["user", "add", "alice", "--password-stdin"],
        "right-password-1234\n",
    );
    let (reg, addr) =
        registry_with_metrics_and(tmp.path(), &[("REG_REGISTRY_LOGIN_FAILURE_DELAY_MS", "5")]);
    let c = client();
    let text = scrape(&addr);
    assert_eq!(
        metric_value(
            &text,
            "registry_throttled_requests_total{reason=\"login_delay\"} "
        ),
        Some(0.0),
        "{text}"
    );
    // From the fourth failure on, a login of that user is held back first.
    for _ in 0..5 {
        let r = c
            .get(reg.url("/auth/token?service=reg"))
            .basic_auth("alice", Some("wrong"))
            .send()
            .expect("GET token");
        assert_eq!(r.status(), 401);
    }
    let text = scrape(&addr);
    let delayed = metric_value(
        &text,
        "registry_throttled_requests_total{reason=\"login_delay\"} ",
    );
    assert!(delayed.unwrap_or(0.0) >= 1.0, "{text}");
    assert_eq!(
        metric_value(
            &text,
            "registry_throttled_requests_total{reason=\"upload_sessions\"} "
        ),
        Some(0.0),
        "{text}"
    );
}

#[test]
fn scheduled_collections_are_counted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_reg, addr) = registry_with_metrics_and(tmp.path(), &[("REG_REGISTRY_GC_INTERVAL", "1s")]);
    // The collector runs every second: wait for its first run to be counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(&addr);
        if metric_value(&text, "registry_gc_runs_total{result=\"ok\"}").is_some_and(|n| n >= 1.0) {
            assert!(
                metric_value(&text, "registry_gc_duration_seconds_count ")
                    .is_some_and(|n| n >= 1.0),
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no collection counted in 30 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn prometheus_scrapes_the_registry() {
    let Some(prometheus) = reg_tests::peer("prometheus") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let (reg, addr) = registry_with_metrics(&tmp.path().join("reg"));
    let r = client().get(reg.url("/v2/")).send().expect("GET /v2/");
    assert_eq!(r.status(), 200);

    let prom = reg_tests::Prometheus::start(prometheus, &tmp.path().join("prom"), &[&addr]);
    let found = prom.first_series(r#"registry_http_requests_total{handler="base"}"#);
    assert_eq!(found["metric"]["job"], "reg", "{found}");
    assert_eq!(found["metric"]["method"], "GET", "{found}");
    let n: f64 = found["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(n >= 1.0, "{found}");
}

/// Stored bytes per repository (each blob once per repository) and in all, read from the
/// database at a scrape.
#[test]
fn storage_bytes_are_reported_per_repository() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (reg, addr) = registry_with_metrics(tmp.path());
    let c = client();
    let shared = vec![7u8; 3000];
    reg_tests::push_blob(&c, &reg, "store/a", &shared);
    reg_tests::push_blob(&c, &reg, "store/a", &[1u8; 100]);
    reg_tests::push_blob(&c, &reg, "store/b", &shared);
    let text = scrape(&addr);
    assert_eq!(
        metric_value(&text, "registry_repo_storage_bytes{repo=\"store/a\"}"),
        Some(3100.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "registry_repo_storage_bytes{repo=\"store/b\"}"),
        Some(3000.0)
    );
    assert_eq!(metric_value(&text, "registry_storage_bytes"), Some(3100.0));
}
