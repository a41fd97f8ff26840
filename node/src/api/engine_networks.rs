//! Docker's Engine API for networks and volumes: list (with filters), inspect, create,
//! connect/disconnect, remove, prune, with labels (Compose and testcontainers find what they
//! made by label). Shapes are the Engine API's `NetworkResource` and `Volume`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::engine_filters::Filters;
use super::error::ApiError;
use super::shared::{flag, AgentState, Param};
use crate::containers::{control, volumes};
use crate::events::{Event, Kind};
use crate::network::{mac_string, Endpoint, Network, Subnet, DEFAULT};

fn network_event(st: &AgentState, action: &str, net: &Network, container: Option<&str>) {
    let mut e = Event::new(Kind::Network, action, &net.id)
        .with("name", &net.name)
        .with("type", "bridge")
        .with_all(&net.labels);
    if let Some(c) = container {
        e = e.with("container", c);
    }
    st.containers.events.emit(e);
}

fn volume_event(st: &AgentState, action: &str, name: &str) {
    st.containers
        .events
        .emit(Event::new(Kind::Volume, action, name).with("driver", "local"));
}

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

/// docker's shape of a network, from reg's.
fn network_json(st: &AgentState, net: &Network) -> Result<Value, ApiError> {
    let eps = st.containers.networks.endpoints_of_network(&net.id)?;
    let mut v = inspect_json(net, &eps);
    v["Labels"] = json!(net.labels);
    v["EnableIPv6"] = json!(false);
    v["Attachable"] = json!(false);
    v["Ingress"] = json!(false);
    v["ConfigOnly"] = json!(false);
    v["ConfigFrom"] = json!({ "Network": "" });
    Ok(v)
}

/// The two networks that are modes, not bridges. They exist as long as the agent does: their
/// creation time is its start (docker's CLI parses every network's `Created`).
fn builtin(name: &str) -> Value {
    static SINCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let created = SINCE
        .get_or_init(|| humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string());
    let driver = if name == "host" { "host" } else { "null" };
    json!({
        "Name": name, "Id": name, "Driver": driver, "Scope": "local", "Created": created,
        "EnableIPv6": false, "Internal": false, "Attachable": false, "Ingress": false,
        "IPAM": { "Driver": "default", "Config": [] }, "Containers": {}, "Options": {},
        "Labels": {}, "ConfigOnly": false, "ConfigFrom": { "Network": "" },
    })
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    filters: Option<String>,
}

/// `GET /networks[?filters=…]` (name, id, label, driver, type).
pub async fn list(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let f = Filters::parse(
        q.filters.as_deref(),
        &["name", "id", "label", "driver", "type", "scope"],
    )?;
    let n = &st.containers.networks;
    n.ensure_default()?;
    let mut all = vec![builtin("host"), builtin("none")];
    for net in n.list()? {
        all.push(network_json(&st, &net)?);
    }
    let out: Vec<Value> = all
        .into_iter()
        .filter(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
            let builtin = matches!(s("Name").as_str(), "host" | "none" | DEFAULT);
            f.any("name", |w| s("Name").contains(w))
                && f.any("id", |w| s("Id").starts_with(w))
                && f.labels_match("label", |k| v["Labels"][k].as_str())
                && f.any("driver", |w| s("Driver") == w)
                && f.any("scope", |w| w == "local")
                && f.any("type", |w| (w == "builtin") == builtin)
        })
        .collect();
    Ok(Json(out).into_response())
}

/// `GET /networks/{id}`.
pub async fn inspect(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id: key }): UrlPath<Param>,
) -> Result<Response, ApiError> {
    if matches!(key.as_str(), "host" | "none") {
        return Ok(Json(builtin(&key)).into_response());
    }
    let n = &st.containers.networks;
    if key == DEFAULT {
        n.ensure_default()?;
    }
    let net = n.get(&key)?;
    Ok(Json(network_json(&st, &net)?).into_response())
}

/// docker's `NetworkCreateRequest`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreate {
    name: String,
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    internal: bool,
    #[serde(default, rename = "IPAM")]
    ipam: Option<Value>,
    #[serde(default, rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
    #[serde(default)]
    attachable: bool,
    #[serde(default)]
    ingress: bool,
    #[serde(default)]
    options: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Always true since API 1.44; reg always checks.
    #[serde(default)]
    #[allow(dead_code)]
    check_duplicate: Option<bool>,
    #[serde(default)]
    config_only: bool,
    #[serde(default)]
    config_from: Option<Value>,
    #[serde(default)]
    scope: Option<String>,
}

/// `POST /networks/create`: 201 `{"Id", "Warning"}`.
pub async fn create(
    State(st): State<Arc<AgentState>>,
    Json(req): Json<NetworkCreate>,
) -> Result<Response, ApiError> {
    let refuse = |what: &str| {
        Err(ApiError::bad_request(format!(
            "network create: {what} is not supported by reg (bridge networks, IPv4)"
        )))
    };
    if req
        .driver
        .as_deref()
        .is_some_and(|d| !d.is_empty() && d != "bridge")
    {
        return refuse(&format!("driver {:?}", req.driver.unwrap_or_default()));
    }
    if req.enable_ipv6 == Some(true) {
        return refuse("IPv6");
    }
    // `Attachable` lets swarm-less containers join a swarm network: on a node without swarm,
    // every network is one containers attach to, so it asks nothing more (Compose sets it).
    let _ = req.attachable;
    for (set, what) in [
        (req.ingress, "Ingress"),
        (req.config_only, "ConfigOnly"),
        (
            req.config_from
                .as_ref()
                .is_some_and(|v| v["Network"].as_str().is_some_and(|n| !n.is_empty())),
            "ConfigFrom",
        ),
    ] {
        if set {
            return refuse(&format!("{what} (swarm)"));
        }
    }
    if req
        .scope
        .as_deref()
        .is_some_and(|s| !s.is_empty() && s != "local")
    {
        return refuse("a scope other than local");
    }
    if !req.options.is_empty() {
        return refuse(&format!(
            "driver options ({})",
            req.options.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let mut subnet = None;
    if let Some(ipam) = req.ipam.as_ref().filter(|v| !v.is_null()) {
        if ipam["Driver"]
            .as_str()
            .is_some_and(|d| !d.is_empty() && d != "default")
        {
            return refuse("an IPAM driver other than default");
        }
        if ipam["Options"].as_object().is_some_and(|o| !o.is_empty()) {
            return refuse("IPAM options");
        }
        let configs = ipam["Config"].as_array().cloned().unwrap_or_default();
        match configs.as_slice() {
            [] => {}
            [c] => {
                for k in ["IPRange", "Gateway", "AuxiliaryAddresses"] {
                    if !c[k].is_null() && c[k] != json!("") && c[k] != json!({}) {
                        return refuse(&format!("IPAM {k}"));
                    }
                }
                subnet = c["Subnet"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
            }
            _ => return refuse("more than one subnet"),
        }
    }
    let n = st.containers.networks.clone();
    let net = tokio::task::spawn_blocking(move || {
        n.create(&req.name, subnet.as_deref(), req.internal, req.labels)
    })
    .await??;
    network_event(&st, "create", &net, None);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Id": net.id, "Warning": "" })),
    )
        .into_response())
}

/// `DELETE /networks/{id}`: 204.
pub async fn remove(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id: key }): UrlPath<Param>,
) -> Result<Response, ApiError> {
    if matches!(key.as_str(), "host" | "none" | DEFAULT) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{key} is a pre-defined network and cannot be removed"),
        ));
    }
    let n = st.containers.networks.clone();
    let net = n.remove(&key)?;
    n.take_down(&net).await?;
    network_event(&st, "destroy", &net, None);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Connect {
    container: String,
    #[serde(default)]
    endpoint_config: Option<Value>,
}

/// `POST /networks/{id}/connect`.
pub async fn connect(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id: key }): UrlPath<Param>,
    Json(req): Json<Connect>,
) -> Result<Response, ApiError> {
    let ep = req.endpoint_config.unwrap_or(Value::Null);
    let ip = match ep["IPAMConfig"]["IPv4Address"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        Some(ip) => Some(
            ip.parse()
                .map_err(|_| ApiError::bad_request(format!("--ip {ip}: not an IPv4 address")))?,
        ),
        None => None,
    };
    let aliases: Vec<String> = ep["Aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    crate::containers::network_connect(&st.containers, &key, &req.container, ip, aliases).await?;
    connection_event(&st, "connect", &key, &req.container);
    Ok(StatusCode::OK.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Disconnect {
    container: String,
    #[serde(default)]
    #[allow(dead_code)]
    force: bool,
}

fn connection_event(st: &AgentState, action: &str, net: &str, container: &str) {
    if let (Ok(net), Ok(c)) = (
        st.containers.networks.get(net),
        st.containers.resolve(container),
    ) {
        network_event(st, action, &net, Some(&c.id));
    }
}

/// `POST /networks/{id}/disconnect`.
pub async fn disconnect(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id: key }): UrlPath<Param>,
    Json(req): Json<Disconnect>,
) -> Result<Response, ApiError> {
    crate::containers::network_disconnect(&st.containers, &key, &req.container).await?;
    connection_event(&st, "disconnect", &key, &req.container);
    Ok(StatusCode::OK.into_response())
}

/// `POST /networks/prune[?filters=label=…]`: the user networks no container is on.
pub async fn prune(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let f = Filters::parse(q.filters.as_deref(), &["label"])?;
    let n = st.containers.networks.clone();
    let mut deleted = Vec::new();
    for net in n.list()? {
        if net.name == DEFAULT
            || !f.labels_match("label", |k| net.labels.get(k).map(String::as_str))
            || !n.endpoints_of_network(&net.id)?.is_empty()
        {
            continue;
        }
        if let Ok(net) = n.remove(&net.id) {
            n.take_down(&net).await?;
            network_event(&st, "destroy", &net, None);
            deleted.push(net.name);
        }
    }
    Ok(Json(json!({ "NetworksDeleted": deleted })).into_response())
}

/// docker's shape of a volume.
fn volume_json(st: &AgentState, name: &str) -> Value {
    let root = &st.containers.volumes;
    json!({
        "Name": name,
        "Driver": "local",
        "Mountpoint": volumes::data_dir(root, name),
        "Scope": "local",
        "Labels": volumes::labels(root, name),
        "Options": {},
        "CreatedAt": std::fs::metadata(root.join(name)).ok().and_then(|m| m.created().ok())
            .map(|t| humantime::format_rfc3339_seconds(t).to_string()).unwrap_or_default(),
    })
}

/// The volumes filters pick (name, label, dangling: used by no container).
async fn volumes_matching(st: &AgentState, f: &Filters) -> Result<Vec<Value>, ApiError> {
    let root = st.containers.volumes.clone();
    let names = tokio::task::spawn_blocking(move || volumes::list(&root)).await?;
    let used: Vec<std::path::PathBuf> = if f.values("dangling").is_empty() {
        Vec::new()
    } else {
        st.containers
            .list()?
            .into_iter()
            .flat_map(|r| r.spec.mounts.into_iter().map(|m| m.source))
            .collect()
    };
    Ok(names
        .iter()
        .map(|n| volume_json(st, n))
        .filter(|v| {
            let name = v["Name"].as_str().unwrap_or("");
            let dangling = !used.contains(&volumes::data_dir(&st.containers.volumes, name));
            f.any("name", |w| name.contains(w))
                && f.labels_match("label", |k| v["Labels"][k].as_str())
                && f.any("dangling", |w| matches!(w, "true" | "1") == dangling)
        })
        .collect())
}

/// `GET /volumes[?filters=…]`: `{"Volumes": […], "Warnings": []}`.
pub async fn volume_list(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let f = Filters::parse(
        q.filters.as_deref(),
        &["name", "label", "dangling", "driver"],
    )?;
    if !f.any("driver", |d| d == "local") {
        return Ok(Json(json!({ "Volumes": [], "Warnings": [] })).into_response());
    }
    let list = volumes_matching(&st, &f).await?;
    Ok(Json(json!({ "Volumes": list, "Warnings": [] })).into_response())
}

/// docker's `VolumeCreateBody`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeCreate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    driver_opts: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    cluster_volume_spec: Option<Value>,
}

/// `POST /volumes/create`: 201 and the volume (an existing name answers the existing one).
pub async fn volume_create(
    State(st): State<Arc<AgentState>>,
    Json(req): Json<VolumeCreate>,
) -> Result<Response, ApiError> {
    if req
        .driver
        .as_deref()
        .is_some_and(|d| !d.is_empty() && d != "local")
    {
        return Err(ApiError::bad_request(format!(
            "volume driver {:?} is not supported by reg (local only)",
            req.driver.unwrap_or_default()
        )));
    }
    if !req.driver_opts.is_empty() {
        return Err(ApiError::bad_request(
            "volume driver options (type, device, o) are not supported by reg yet",
        ));
    }
    if req
        .cluster_volume_spec
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::bad_request(
            "cluster volumes are not supported by reg",
        ));
    }
    let root = st.containers.volumes.clone();
    let name = req.name.filter(|n| !n.is_empty());
    let labels = req.labels;
    let existed = name.as_deref().is_some_and(|n| volumes::exists(&root, n));
    let name = tokio::task::spawn_blocking(move || volumes::create_labelled(&root, name, &labels))
        .await??;
    if !existed {
        volume_event(&st, "create", &name);
    }
    Ok((StatusCode::CREATED, Json(volume_json(&st, &name))).into_response())
}

/// `GET /volumes/{name}`.
pub async fn volume_inspect(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id: name }): UrlPath<Param>,
) -> Result<Response, ApiError> {
    if !volumes::exists(&st.containers.volumes, &name) {
        return Err(volumes::VolumeError::NotFound(name).into());
    }
    Ok(Json(volume_json(&st, &name)).into_response())
}

#[derive(Deserialize)]
pub struct VolumeRemoveQuery {
    #[serde(default, deserialize_with = "flag")]
    force: bool,
}

/// `DELETE /volumes/{name}[?force=1]`: 204.
pub async fn volume_remove(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id: name }): UrlPath<Param>,
    Query(q): Query<VolumeRemoveQuery>,
) -> Result<Response, ApiError> {
    let existed = volumes::exists(&st.containers.volumes, &name);
    control::remove_volume(&st.containers, &name, q.force).await?;
    if existed {
        volume_event(&st, "destroy", &name);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /volumes/prune[?filters=…]`: volumes no container uses. As docker since API 1.42,
/// only anonymous ones unless the filter says `all=true`.
pub async fn volume_prune(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let f = Filters::parse(q.filters.as_deref(), &["label", "all"])?;
    let all = f
        .values("all")
        .iter()
        .any(|v| matches!(v.as_str(), "true" | "1"));
    let mut deleted = Vec::new();
    for v in volumes_matching(&st, &f).await? {
        let name = v["Name"].as_str().unwrap_or("").to_string();
        let anonymous = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if !all && !anonymous {
            continue;
        }
        // In use (by any container, running or not): refused, and skipped.
        if control::remove_volume(&st.containers, &name, false)
            .await
            .is_ok()
        {
            volume_event(&st, "destroy", &name);
            deleted.push(name);
        }
    }
    Ok(Json(json!({ "VolumesDeleted": deleted, "SpaceReclaimed": 0 })).into_response())
}
