//! `/info`: what the node is (docker's fields), served by the Engine API.

use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::shared::AgentState;

pub(super) fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What `docker info` reports.
pub async fn info(State(st): State<Arc<AgentState>>) -> Response {
    let containers = st.containers.list().unwrap_or_default();
    let running = containers
        .iter()
        .filter(|c| c.state.status.is_running())
        .count();
    let store = st.store.clone();
    let images = tokio::task::spawn_blocking(move || store.list())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|l| l.len())
        .unwrap_or(0);
    let cgroup_version = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "1 (hybrid: v2 at /sys/fs/cgroup/unified)"
    } else {
        "1"
    };
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    let mem_total: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    Json(serde_json::json!({
        "Containers": containers.len(),
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": containers.len() - running,
        "Images": images,
        "Driver": "overlay",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version,
        "SecurityOptions": ["seccomp (profile=default)", "no-new-privileges"],
        "KernelVersion": kernel_version(),
        "OperatingSystem": os,
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "MemTotal": mem_total,
        "DockerRootDir": st.containers.dir().parent().map(|p| p.display().to_string()).unwrap_or_default(),
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "DefaultRegistry": st.default_registry,
    }))
    .into_response()
}
