//! `/networks`: docker's network endpoints over [`crate::network`] and, for connecting
//! containers, [`crate::containers`].

use std::sync::Arc;

use super::error::ApiError;
use super::shared::AgentState;
use super::wire::{NetworkConnect, NetworkCreate, NetworkDisconnect};
use crate::network::{mac_string, Endpoint, Network, Subnet, DEFAULT};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// `docker network inspect`'s shape (containers: id → name and address).
fn inspect_json(net: &Network, eps: &[Endpoint]) -> serde_json::Value {
    let prefix = Subnet::parse(&net.subnet).map(|s| s.prefix).unwrap_or(16);
    let containers: serde_json::Map<String, serde_json::Value> = eps
        .iter()
        .map(|e| {
            (
                e.container.clone(),
                serde_json::json!({
                    "Name": e.name,
                    "IPv4Address": format!("{}/{prefix}", e.ip),
                    "MacAddress": mac_string(e.ip),
                }),
            )
        })
        .collect();
    serde_json::json!({
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": "local",
        "Driver": "bridge",
        "Internal": net.internal,
        "IPAM": { "Driver": "default", "Config": [{ "Subnet": net.subnet, "Gateway": net.gateway }] },
        "Containers": containers,
        "Options": { "com.docker.network.bridge.name": net.bridge },
    })
}

pub async fn list(State(st): State<Arc<AgentState>>) -> Result<Response, ApiError> {
    let n = &st.containers.networks;
    n.ensure_default()?;
    let mut out = vec![
        serde_json::json!({"Name": "host", "Id": "host", "Driver": "host", "Scope": "local"}),
        serde_json::json!({"Name": "none", "Id": "none", "Driver": "null", "Scope": "local"}),
    ];
    for net in n.list()? {
        let eps = n.endpoints_of_network(&net.id)?;
        out.push(inspect_json(&net, &eps));
    }
    Ok(Json(out).into_response())
}

pub async fn create(
    State(st): State<Arc<AgentState>>,
    Json(req): Json<NetworkCreate>,
) -> Result<Response, ApiError> {
    let n = st.containers.networks.clone();
    let net = tokio::task::spawn_blocking(move || {
        n.create(&req.name, req.subnet.as_deref(), req.internal)
    })
    .await??;
    Ok(Json(serde_json::json!({ "Id": net.id, "Warning": "" })).into_response())
}

pub async fn inspect(
    State(st): State<Arc<AgentState>>,
    UrlPath(key): UrlPath<String>,
) -> Result<Response, ApiError> {
    let n = &st.containers.networks;
    if key == DEFAULT {
        n.ensure_default()?;
    }
    let net = n.get(&key)?;
    let eps = n.endpoints_of_network(&net.id)?;
    Ok(Json(inspect_json(&net, &eps)).into_response())
}

pub async fn delete(
    State(st): State<Arc<AgentState>>,
    UrlPath(key): UrlPath<String>,
) -> Result<Response, ApiError> {
    let n = st.containers.networks.clone();
    let net = n.remove(&key)?;
    n.take_down(&net).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn connect(
    State(st): State<Arc<AgentState>>,
    UrlPath(key): UrlPath<String>,
    Json(req): Json<NetworkConnect>,
) -> Result<Response, ApiError> {
    let ip = match &req.ip {
        Some(ip) => Some(
            ip.parse()
                .map_err(|_| ApiError::bad_request(format!("--ip {ip}: not an IPv4 address")))?,
        ),
        None => None,
    };
    crate::containers::network_connect(&st.containers, &key, &req.container, ip, req.aliases)
        .await?;
    Ok(Json(serde_json::json!({})).into_response())
}

pub async fn disconnect(
    State(st): State<Arc<AgentState>>,
    UrlPath(key): UrlPath<String>,
    Json(req): Json<NetworkDisconnect>,
) -> Result<Response, ApiError> {
    crate::containers::network_disconnect(&st.containers, &key, &req.container).await?;
    Ok(Json(serde_json::json!({})).into_response())
}
