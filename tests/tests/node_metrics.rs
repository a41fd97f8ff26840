//! The node agent's `/metrics` on `node.metrics_addr` (issue #23): dockerd's series, counting
//! this test's own containers.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

use std::time::{Duration, Instant};

use reg_tests::{client, metric_value};

#[test]
fn node_metrics_count_containers_by_state_and_time_their_starts() {
    let Some(n) = node_configured(&[], &[("REG_NODE_METRICS_ADDR", "127.0.0.1:0")]) else {
        return;
    };
    // The agent logs its metrics address once it listens there.
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let found = n
            .server
            .log()
            .lines()
            .find_map(|l| l.split("node metrics on http://").nth(1))
            .and_then(|rest| rest.split('/').next())
            .map(str::to_string);
        if let Some(a) = found {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no node metrics address in the log"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let scrape = || {
        client()
            .get(format!("http://{addr}/metrics"))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .expect("GET /metrics")
    };
    let text = scrape();
    assert_eq!(
        metric_value(
            &text,
            "engine_daemon_container_states_containers{state=\"running\"}"
        ),
        Some(0.0),
        "{text}"
    );

    n.run_d(&["--name", "metered", IMG, B, "sleep", "600"]);
    let (code, _, err) = n.reg(&["create", "--name", "idle", IMG, B, "true"]);
    assert_eq!(code, 0, "{err}");
    let text = scrape();
    for (series, want) in [
        (
            "engine_daemon_container_states_containers{state=\"running\"}",
            1.0,
        ),
        (
            "engine_daemon_container_states_containers{state=\"stopped\"}",
            1.0,
        ),
        (
            "engine_daemon_container_actions_seconds_count{action=\"start\"}",
            1.0,
        ),
    ] {
        assert_eq!(
            metric_value(&text, series),
            Some(want),
            "{series} in\n{text}"
        );
    }
    // A real Prometheus reads the node's series too (the registry's: tests/metrics.rs).
    if let Some(prometheus) = reg_tests::peer("prometheus") {
        let prom = reg_tests::Prometheus::start(prometheus, &n.tmp.path().join("prom"), &[&addr]);
        let found =
            prom.first_series(r#"engine_daemon_container_states_containers{state="running"}"#);
        assert_eq!(found["metric"]["job"], "reg", "{found}");
        assert_eq!(found["value"][1], "1", "{found}");
    }
    // The image the run pulled: one pull, its layers' bytes, its time.
    assert!(
        metric_value(&text, "reg_node_image_pulls_total{result=\"ok\"}").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        metric_value(&text, "reg_node_image_pulled_bytes_total").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert!(
        metric_value(
            &text,
            "engine_daemon_image_actions_seconds_count{action=\"pull\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    // Two builds of one Dockerfile: the second one's step comes from the cache.
    let ctx = tempfile::tempdir().expect("context");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {IMG}\nCOPY f /f\n"),
    )
    .expect("Dockerfile");
    std::fs::write(ctx.path().join("f"), "metered\n").expect("f");
    let dir = ctx.path().display().to_string();
    for _ in 0..2 {
        let (code, out, err) = n.reg(&["build", "-t", "metered:v1", &dir]);
        assert_eq!(code, 0, "reg build:\n{out}\n{err}");
    }
    let text = scrape();
    for (series, want) in [
        ("builder_builds_triggered_total", 2.0),
        ("reg_builder_steps_total{cached=\"false\"}", 1.0),
        ("reg_builder_steps_total{cached=\"true\"}", 1.0),
    ] {
        assert_eq!(
            metric_value(&text, series),
            Some(want),
            "{series} in\n{text}"
        );
    }
    let (code, _, err) = n.reg(&["rm", "-f", "metered", "idle"]);
    assert_eq!(code, 0, "{err}");
    let text = scrape();
    assert_eq!(
        metric_value(
            &text,
            "engine_daemon_container_actions_seconds_count{action=\"delete\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "engine_daemon_container_states_containers{state=\"running\"}"
        ),
        Some(0.0),
        "{text}"
    );
}
