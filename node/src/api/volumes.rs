//! `/volumes`: docker's volume endpoints over [`crate::containers::volumes`].

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::shared::{flag, AgentState};
use super::wire::VolumeCreate;
use crate::containers::{control, volumes};

fn describe(root: &Path, name: &str) -> serde_json::Value {
    serde_json::json!({
        "Name": name,
        "Driver": "local",
        "Mountpoint": volumes::data_dir(root, name),
        "Scope": "local",
    })
}

pub async fn list(State(st): State<Arc<AgentState>>) -> Result<Response, ApiError> {
    let root = st.containers.volumes.clone();
    let names = tokio::task::spawn_blocking(move || volumes::list(&root)).await?;
    let root = &st.containers.volumes;
    Ok(Json(names.iter().map(|n| describe(root, n)).collect::<Vec<_>>()).into_response())
}

pub async fn create(
    State(st): State<Arc<AgentState>>,
    Json(req): Json<VolumeCreate>,
) -> Result<Response, ApiError> {
    let name = volumes::create(&st.containers.volumes, req.name)?;
    Ok(Json(describe(&st.containers.volumes, &name)).into_response())
}

pub async fn inspect(
    State(st): State<Arc<AgentState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    if !volumes::exists(&st.containers.volumes, &name) {
        return Err(volumes::VolumeError::NotFound(name).into());
    }
    Ok(Json(describe(&st.containers.volumes, &name)).into_response())
}

#[derive(Deserialize)]
pub struct RemoveQuery {
    #[serde(default, deserialize_with = "flag")]
    force: bool,
}

/// Removes a volume no container uses (running or not, as docker).
pub async fn delete(
    State(st): State<Arc<AgentState>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<Response, ApiError> {
    control::remove_volume(&st.containers, &name, q.force).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
