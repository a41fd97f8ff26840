//! Volumes: named directories under `<node>/volumes/NAME/_data` that outlive containers
//! (`reg volume create|ls|inspect|rm`, `-v NAME:/path`), and `-v` parsing for host paths.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::agent::AgentState;
use crate::containers::ApiError;
use crate::runtime::BindMount;

/// The volumes directory for a container directory `<node>/containers/ID`.
pub fn root_of(container_dir: &Path) -> PathBuf {
    container_dir
        .parent()
        .and_then(Path::parent)
        .map(|n| n.join("volumes"))
        .unwrap_or_default()
}

fn valid_name(n: &str) -> bool {
    n.len() >= 2
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Creates (if needed) the named volume and returns its data directory.
pub fn ensure(root: &Path, name: &str) -> Result<PathBuf, String> {
    if !valid_name(name) {
        return Err(format!(
            "invalid volume name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]+, or an absolute host path"
        ));
    }
    let data = root.join(name).join("_data");
    std::fs::create_dir_all(&data).map_err(|e| format!("creating volume {name}: {e}"))?;
    Ok(data)
}

/// `-v` as docker reads it: `/host:/ctr[:ro|rw]`, `NAME:/ctr[:ro|rw]`, or `/ctr` alone (a new
/// anonymous volume).
pub fn resolve(root: &Path, spec: &str) -> Result<BindMount, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [t] => (None, *t, ""),
        [s, t] => (Some(*s), *t, ""),
        [s, t, o] => (Some(*s), *t, *o),
        _ => return Err(format!("-v {spec:?}: use SOURCE:TARGET[:ro]")),
    };
    if !target.starts_with('/') {
        return Err(format!(
            "-v {spec:?}: the container path {target:?} must be absolute"
        ));
    }
    let mut readonly = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => readonly = true,
            "rw" | "z" | "Z" => {}
            other => return Err(format!("-v {spec:?}: unknown option {other:?} (ro or rw)")),
        }
    }
    let copy_up = !source.is_some_and(|s| s.starts_with('/'));
    let source = match source {
        Some(s) if s.starts_with('/') => {
            let p = PathBuf::from(s);
            // docker creates a missing host directory.
            if !p.exists() {
                std::fs::create_dir_all(&p).map_err(|e| format!("-v {spec:?}: {s}: {e}"))?;
            }
            p
        }
        Some(name) => ensure(root, name)?,
        None => ensure(
            root,
            &crate::containers::random_hex().map_err(|e| format!("-v {spec:?}: {e}"))?,
        )?,
    };
    Ok(BindMount {
        source,
        target: target.to_string(),
        readonly,
        layers: Vec::new(),
        copy_up,
    })
}

fn describe(root: &Path, name: &str) -> serde_json::Value {
    serde_json::json!({
        "Name": name,
        "Driver": "local",
        "Mountpoint": root.join(name).join("_data"),
        "Scope": "local",
    })
}

pub async fn list(State(st): State<Arc<AgentState>>) -> Response {
    let root = &st.containers.volumes;
    let mut names: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("_data").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Json(names.iter().map(|n| describe(root, n)).collect::<Vec<_>>()).into_response()
}

#[derive(Deserialize)]
pub struct CreateRequest {
    #[serde(default, rename = "Name")]
    name: Option<String>,
}

pub async fn create(
    State(st): State<Arc<AgentState>>,
    Json(req): Json<CreateRequest>,
) -> Result<Response, ApiError> {
    let name = match req.name {
        Some(n) => n,
        None => crate::containers::random_hex()
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    };
    ensure(&st.containers.volumes, &name).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    Ok(Json(describe(&st.containers.volumes, &name)).into_response())
}

pub async fn inspect(
    State(st): State<Arc<AgentState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    if !valid_name(&name) || !st.containers.volumes.join(&name).join("_data").is_dir() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no such volume: {name}"),
        ));
    }
    Ok(Json(describe(&st.containers.volumes, &name)).into_response())
}

#[derive(Deserialize)]
pub struct RemoveQuery {
    #[serde(default, deserialize_with = "crate::containers::flag")]
    force: bool,
}

/// Removes a volume no container uses (running or not, as docker).
pub async fn delete(
    State(st): State<Arc<AgentState>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<Response, ApiError> {
    let dir = st.containers.volumes.join(&name);
    if !valid_name(&name) || !dir.join("_data").is_dir() {
        if q.force {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no such volume: {name}"),
        ));
    }
    let data = dir.join("_data");
    let users: Vec<String> = st
        .containers
        .list()?
        .into_iter()
        .filter(|r| r.spec.mounts.iter().any(|m| m.source == data))
        .map(|r| r.name)
        .collect();
    if !users.is_empty() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "volume {name} is in use by container {}: remove the container first",
                users.join(", ")
            ),
        ));
    }
    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
