//! The node agent's Prometheus metrics, served on `node.metrics_addr` (a listener of its own).
//! Names are dockerd's (`engine_daemon_*`), so that dashboards made for dockerd's metrics
//! address work unchanged.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Action {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cached {
    cached: &'static str,
}

type Histograms = Family<Action, Histogram, fn() -> Histogram>;

/// The agent's metrics (cheap to clone: shared).
#[derive(Clone)]
pub struct NodeMetrics {
    registry: Arc<Registry>,
    states: Family<State, Gauge>,
    actions: Histograms,
    image_actions: Histograms,
    pulls: Family<Outcome, Counter>,
    pulled_bytes: Counter,
    builds: Counter,
    builds_failed: Family<Reason, Counter>,
    build_steps: Family<Cached, Counter>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics::new()
    }
}

impl NodeMetrics {
    pub fn new() -> NodeMetrics {
        let mut registry = Registry::default();
        let states = Family::<State, Gauge>::default();
        registry.register(
            "engine_daemon_container_states_containers",
            "Containers by state (as of the scrape)",
            states.clone(),
        );
        // 1 ms … ~33 s.
        let actions: Histograms =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));
        registry.register(
            "engine_daemon_container_actions_seconds",
            "Time of container actions (create, start, delete) in the agent",
            actions.clone(),
        );
        // dockerd's image action times (it times pull, push, delete, tag, history).
        let image_actions: Histograms =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 18)));
        registry.register(
            "engine_daemon_image_actions_seconds",
            "Time of image actions (pull) in the agent",
            image_actions.clone(),
        );
        let pulls = Family::<Outcome, Counter>::default();
        registry.register(
            "reg_node_image_pulls",
            "Image pulls by the agent, by result",
            pulls.clone(),
        );
        let pulled_bytes = Counter::default();
        registry.register(
            "reg_node_image_pulled_bytes",
            "Layer bytes downloaded by pulls",
            pulled_bytes.clone(),
        );
        // dockerd's builder series.
        let builds = Counter::default();
        registry.register("builder_builds_triggered", "Builds started", builds.clone());
        let builds_failed = Family::<Reason, Counter>::default();
        registry.register(
            "builder_builds_failed",
            "Builds that failed, by reason",
            builds_failed.clone(),
        );
        let build_steps = Family::<Cached, Counter>::default();
        registry.register(
            "reg_builder_steps",
            "Build steps run, by whether their layer came from the cache",
            build_steps.clone(),
        );
        NodeMetrics {
            registry: Arc::new(registry),
            states,
            actions,
            image_actions,
            pulls,
            pulled_bytes,
            builds,
            builds_failed,
            build_steps,
        }
    }

    /// A pull ended (`ok` or not) after `took`, having downloaded `bytes` of layers.
    pub fn pulled(&self, ok: bool, took: Duration, bytes: u64) {
        let result = if ok { "ok" } else { "failed" };
        self.pulls.get_or_create(&Outcome { result }).inc();
        self.pulled_bytes.inc_by(bytes);
        self.image_actions
            .get_or_create(&Action { action: "pull" })
            .observe(took.as_secs_f64());
    }

    /// A build started.
    pub fn build_started(&self) {
        self.builds.inc();
    }

    /// A build failed.
    pub fn build_failed(&self) {
        self.builds_failed
            .get_or_create(&Reason {
                reason: "build_failed",
            })
            .inc();
    }

    /// A build step ran, its layer from the cache or not.
    pub fn build_step(&self, cached: bool) {
        let cached = if cached { "true" } else { "false" };
        self.build_steps.get_or_create(&Cached { cached }).inc();
    }

    /// A container `action` (`create`, `start`, `delete`) took `took`.
    pub fn observe(&self, action: &'static str, took: Duration) {
        self.actions
            .get_or_create(&Action { action })
            .observe(took.as_secs_f64());
    }

    /// Everything, with the containers counted as `running`, `paused` and `stopped` (dockerd's
    /// states; created and exited containers are `stopped`).
    pub fn encode(&self, running: i64, paused: i64, stopped: i64) -> String {
        for (state, n) in [
            ("running", running),
            ("paused", paused),
            ("stopped", stopped),
        ] {
            self.states.get_or_create(&State { state }).set(n);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_actions_use_dockerds_names() {
        let m = NodeMetrics::new();
        m.observe("start", Duration::from_millis(14));
        let text = m.encode(2, 0, 1);
        for want in [
            "engine_daemon_container_states_containers{state=\"running\"} 2",
            "engine_daemon_container_states_containers{state=\"stopped\"} 1",
            "engine_daemon_container_actions_seconds_count{action=\"start\"} 1",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        m.pulled(true, Duration::from_millis(150), 1000);
        m.build_started();
        m.build_step(true);
        m.build_step(false);
        m.build_failed();
        let text = m.encode(0, 0, 0);
        for want in [
            "engine_daemon_image_actions_seconds_count{action=\"pull\"} 1",
            "reg_node_image_pulls_total{result=\"ok\"} 1",
            "reg_node_image_pulled_bytes_total 1000",
            "builder_builds_triggered_total 1",
            "builder_builds_failed_total{reason=\"build_failed\"} 1",
            "reg_builder_steps_total{cached=\"true\"} 1",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }
}
