//! The start order, kept by the node: a container that records what it depends on — compose's
//! `com.docker.compose.depends_on` label (`SERVICE:CONDITION:RESTART,…`) within its
//! `com.docker.compose.project` — is restarted by its restart policy only once those services'
//! containers meet the conditions (running; healthy, by the checks the node runs; or exited
//! 0). So after an agent restart or a reboot, dependents start after their dependencies, as
//! `compose up` started them, without a client.

use std::sync::Arc;

use super::health::HealthStatus;
use super::service::{Containers, Record, Status};

/// Compose's labels (docker's names), written by `reg compose` and read here.
pub const PROJECT: &str = "com.docker.compose.project";
pub const SERVICE: &str = "com.docker.compose.service";
pub const ONEOFF: &str = "com.docker.compose.oneoff";
/// `SERVICE:CONDITION:RESTART,…`.
pub const DEPENDS_ON: &str = "com.docker.compose.depends_on";

/// What a dependent waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Started,
    Healthy,
    CompletedSuccessfully,
}

/// `rec`'s dependencies: (project, service, condition). Unknown conditions read as started.
fn dependencies(rec: &Record) -> Vec<(String, String, Condition)> {
    let labels = &rec.request.labels;
    let (Some(project), Some(deps)) = (labels.get(PROJECT), labels.get(DEPENDS_ON)) else {
        return Vec::new();
    };
    deps.split(',')
        .filter(|d| !d.is_empty())
        .filter_map(|d| {
            let mut parts = d.split(':');
            let service = parts.next()?.to_string();
            let condition = match parts.next() {
                Some("service_healthy") => Condition::Healthy,
                Some("service_completed_successfully") => Condition::CompletedSuccessfully,
                _ => Condition::Started,
            };
            Some((project.clone(), service, condition))
        })
        .collect()
}

/// Whether `service` of `project` meets `condition` among `all` (a service with no container
/// does not hold anything up: it may have been removed on purpose).
fn met(all: &[Record], project: &str, service: &str, condition: Condition) -> bool {
    let mine: Vec<&Record> = all
        .iter()
        .filter(|r| {
            r.request.labels.get(PROJECT).map(String::as_str) == Some(project)
                && r.request.labels.get(SERVICE).map(String::as_str) == Some(service)
                && r.request.labels.get(ONEOFF).map(String::as_str) != Some("True")
        })
        .collect();
    mine.iter().all(|r| match condition {
        Condition::Started => r.state.status == Status::Running,
        Condition::Healthy => {
            r.state.status == Status::Running
                && r.state.health.as_ref().map(|h| h.status) == Some(HealthStatus::Healthy)
        }
        Condition::CompletedSuccessfully => {
            r.state.status == Status::Exited && r.state.exit_code == 0
        }
    })
}

/// Waits (on the node's change notifications, no polling) until container `id`'s dependencies
/// meet their conditions, or it is no longer due to start (removed, or stopped by hand).
pub(super) async fn wait_for_dependencies(cs: &Arc<Containers>, id: &str) {
    let mut changed = cs.changed.subscribe();
    loop {
        let Ok(Some(rec)) = cs.get(id) else { return };
        if rec.state.manually_stopped || rec.state.status == Status::Running {
            return;
        }
        let deps = dependencies(&rec);
        if deps.is_empty() {
            return;
        }
        let Ok(all) = cs.list() else { return };
        if deps.iter().all(|(p, s, c)| met(&all, p, s, *c)) {
            return;
        }
        tracing::info!(container = %id, "waiting for its dependencies before a restart");
        if changed.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_names_services_and_conditions() {
        let mut rec = Record::default();
        rec.request.labels.insert(PROJECT.into(), "shop".into());
        rec.request.labels.insert(
            DEPENDS_ON.into(),
            "db:service_healthy:false,init:service_completed_successfully:false,cache:service_started:true".into(),
        );
        assert_eq!(
            dependencies(&rec),
            [
                ("shop".to_string(), "db".to_string(), Condition::Healthy),
                (
                    "shop".to_string(),
                    "init".to_string(),
                    Condition::CompletedSuccessfully
                ),
                ("shop".to_string(), "cache".to_string(), Condition::Started),
            ]
        );
        let mut db = Record::default();
        db.request.labels.insert(PROJECT.into(), "shop".into());
        db.request.labels.insert(SERVICE.into(), "db".into());
        db.state.status = Status::Running;
        assert!(!met(
            std::slice::from_ref(&db),
            "shop",
            "db",
            Condition::Healthy
        ));
        db.state.health = Some(super::super::health::Health {
            status: HealthStatus::Healthy,
            ..Default::default()
        });
        assert!(met(&[db], "shop", "db", Condition::Healthy));
    }
}
