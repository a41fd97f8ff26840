//! `/metrics` on `registry.metrics_addr` (issue #23): the series count what this test did, and a
//! real Prometheus (Debian's `prometheus`) scrapes them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reg_tests::{client, location, sha256, Registry};

/// A registry with its metrics listener on a free loopback port; returns it with the metrics
/// address (from its log).
fn registry_with_metrics(data: &std::path::Path) -> (Registry, String) {
    let reg = Registry::start_on(data, &[("REG_REGISTRY_METRICS_ADDR", "127.0.0.1:0")]);
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

/// The value of the series `line_start` (name and labels) in `text`.
fn value(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
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
        assert_eq!(value(&text, series), Some(n), "{series} in\n{text}");
    }
    // Names of repositories never become labels.
    assert!(!text.contains("metrics/app"), "{text}");
    // The registry's own port does not serve them.
    let r = c.get(reg.url("/metrics")).send().expect("GET");
    assert_eq!(r.status(), 404);
}

/// Stops the Prometheus it holds, whatever the test's outcome.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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

    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n  - job_name: reg\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .expect("prometheus.yml");
    let port = free_port();
    let prom = Prometheus(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    // Prometheus's own query API returns the series it scraped: wait for that condition.
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=registry_http_requests_total%7Bhandler%3D%22base%22%7D"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let answer: Option<serde_json::Value> =
            client().get(&query).send().ok().and_then(|r| r.json().ok());
        let series = answer
            .as_ref()
            .and_then(|a| a["data"]["result"].as_array())
            .cloned()
            .unwrap_or_default();
        if let Some(s) = series.first() {
            break s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape the registry within 60 s: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(found["metric"]["job"], "reg", "{found}");
    assert_eq!(found["metric"]["method"], "GET", "{found}");
    let n: f64 = found["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(n >= 1.0, "{found}");
    drop(prom);
}
