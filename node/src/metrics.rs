//! The node agent's Prometheus metrics, served on `node.metrics_addr` (a listener of its own).
//! Names are dockerd's (`engine_daemon_*`), so that dashboards made for dockerd's metrics
//! address work unchanged.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
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

type Histograms = Family<Action, Histogram, fn() -> Histogram>;

/// The agent's metrics (cheap to clone: shared).
#[derive(Clone)]
pub struct NodeMetrics {
    registry: Arc<Registry>,
    states: Family<State, Gauge>,
    actions: Histograms,
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
        NodeMetrics {
            registry: Arc::new(registry),
            states,
            actions,
        }
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
    }
}
