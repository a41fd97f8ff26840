//! `/containers`: docker's container endpoints over the domain's [`crate::containers`]
//! services. Streams are JSON lines (`{"stdout": …}`, `{"stderr": …}`, ending with
//! `{"exit": code}` when following a container to its end).
//!
//! `POST /containers/create`, `GET /containers?all=1`, `GET /containers/{id}/json`,
//! `POST /containers/{id}/start[?attach=1&stdin=1]`, `GET /containers/{id}/logs?follow=1&tail=N`,
//! `POST /containers/{id}/stop?t=S`, `POST /containers/{id}/kill?signal=S`,
//! `POST /containers/{id}/resize?h=ROWS&w=COLS`, `POST /containers/{id}/wait`,
//! `DELETE /containers/{id}?force=1`, `POST /containers/{id}/exec` (streams).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::shared::{flag, pump_stdin, stream_response, AgentState};
use crate::containers::streams::ExecRequest;
use crate::containers::{control, create, streams, Record, RestartPolicy, RunRequest, Status};
use crate::runtime::monitor::LOG;

pub async fn create(
    State(st): State<Arc<AgentState>>,
    Json(req): Json<RunRequest>,
) -> Result<Response, ApiError> {
    let c = create::create(&st.containers, &st.store, &st.default_registry, req).await?;
    Ok(Json(serde_json::json!({ "Id": c.id, "Name": c.name, "Warnings": [] })).into_response())
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default, deserialize_with = "flag")]
    all: bool,
}

pub async fn list(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    // (The container database runs its queries as blocking work itself.)
    let all = st.containers.list()?;
    let list: Vec<serde_json::Value> = all
        .iter()
        .filter(|r| q.all || r.state.status == Status::Running)
        .map(inspect_json)
        .collect();
    Ok(Json(list).into_response())
}

pub async fn inspect(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(inspect_json(&st.containers.resolve(&id)?)).into_response())
}

#[derive(Deserialize)]
pub struct StartQuery {
    #[serde(default, deserialize_with = "flag")]
    attach: bool,
    /// `-i`: the request body is the container's stdin.
    #[serde(default, deserialize_with = "flag")]
    stdin: bool,
}

/// `POST /containers/{id}/start[?attach=1]`: with attach, streams the output of this run and
/// its exit code (what `docker run` without `-d` and `docker start -a` show).
pub async fn start(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<StartQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    if !q.attach {
        control::start_detached(&st.containers, &id)
            .await?
            .started_or_conflict()?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let a = control::start_attached(&st.containers, &id, q.stdin).await?;
    if let Some(fifo) = a.stdin {
        tokio::spawn(pump_stdin(body, fifo));
    }
    Ok(stream_response(a.output))
}

#[derive(Deserialize)]
pub struct LogsQuery {
    #[serde(default, deserialize_with = "flag")]
    follow: bool,
    #[serde(default)]
    tail: Option<String>,
}

pub async fn logs(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let tail = match q.tail.as_deref() {
        None | Some("all") => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!("--tail {n:?}: give a number or \"all\""))
        })?),
    };
    Ok(stream_response(streams::logs(
        &st.containers,
        &id,
        q.follow,
        tail,
    )?))
}

#[derive(Deserialize)]
pub struct StopQuery {
    #[serde(default)]
    t: Option<u64>,
}

/// `stop`: the image's STOPSIGNAL (default SIGTERM), then SIGKILL after `t` seconds (10).
pub async fn stop(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<StopQuery>,
) -> Result<Response, ApiError> {
    control::stop(&st.containers, &id, q.t.map(Duration::from_secs)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct KillQuery {
    #[serde(default)]
    signal: Option<String>,
}

pub async fn kill(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<KillQuery>,
) -> Result<Response, ApiError> {
    control::kill(&st.containers, &id, q.signal.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct ResizeQuery {
    h: u16,
    w: u16,
}

/// `POST /containers/{id}/resize?h=ROWS&w=COLS` (docker's): the size of a `-t` container's
/// terminal, passed to its monitor.
pub async fn resize(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<ResizeQuery>,
) -> Result<Response, ApiError> {
    control::resize(&st.containers, &id, q.h, q.w)?;
    Ok(StatusCode::OK.into_response())
}

pub async fn wait(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let code = control::wait(&st.containers, &id).await?;
    Ok(Json(serde_json::json!({ "StatusCode": code })).into_response())
}

#[derive(Deserialize)]
pub struct RemoveQuery {
    #[serde(default, deserialize_with = "flag")]
    force: bool,
}

pub async fn delete(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<Response, ApiError> {
    control::delete(&st.containers, &id, q.force).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct ExecQuery {
    #[serde(default, deserialize_with = "flag")]
    stdin: bool,
}

/// `POST /containers/{id}/exec`: runs a process inside the running container and streams its
/// output and exit code. The request is the JSON body; with `?stdin=1` (`exec -i`) it travels
/// in the `X-Reg-Exec` header (base64 JSON) and the body is the process's stdin.
pub async fn exec(
    State(st): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<ExecQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    use base64::Engine as _;
    let (req, stdin): (ExecRequest, Option<Body>) = if q.stdin {
        let raw = headers
            .get("x-reg-exec")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| base64::engine::general_purpose::URL_SAFE.decode(v).ok())
            .ok_or_else(|| ApiError::bad_request("exec with stdin needs the X-Reg-Exec header"))?;
        (
            serde_json::from_slice(&raw)
                .map_err(|e| ApiError::bad_request(format!("X-Reg-Exec: {e}")))?,
            Some(body),
        )
    } else {
        let raw = axum::body::to_bytes(body, 1 << 20)
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        (
            serde_json::from_slice(&raw)
                .map_err(|e| ApiError::bad_request(format!("exec request: {e}")))?,
            None,
        )
    };
    let (output, input) = streams::exec(&st.containers, &id, req, q.stdin).await?;
    if let (Some(body), Some(input)) = (stdin, input) {
        tokio::spawn(pump_stdin(body, input));
    }
    Ok(stream_response(output))
}

/// `docker inspect`'s shape of a container.
pub fn inspect_json(rec: &Record) -> serde_json::Value {
    let s = &rec.state;
    let running = s.status.is_running();
    let policy = RestartPolicy::parse(rec.request.restart.as_deref()).unwrap_or_default();
    let lower: Vec<String> = rec
        .spec
        .layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    serde_json::json!({
        "Id": rec.id,
        "Created": rec.created,
        "Path": rec.spec.args.first(),
        "Args": rec.spec.args.get(1..).unwrap_or_default(),
        "State": {
            "Status": s.status.as_str(),
            "Running": running,
            "Paused": false,
            "Restarting": false,
            "OOMKilled": s.oom_killed,
            "Dead": false,
            "Pid": if running { s.pid } else { 0 },
            "ExitCode": s.exit_code,
            "Error": s.error,
            "StartedAt": if s.started_at.is_empty() { "0001-01-01T00:00:00Z" } else { &s.started_at },
            "FinishedAt": if s.finished_at.is_empty() { "0001-01-01T00:00:00Z" } else { &s.finished_at },
        },
        "Image": rec.image_id,
        "Name": format!("/{}", rec.name),
        "RestartCount": s.restart_count,
        "LogPath": rec.spec.dir.join(LOG),
        "Mounts": rec.spec.mounts.iter().map(|m| serde_json::json!({
            "Source": m.source,
            "Destination": m.target,
            "RW": !m.readonly,
            "Type": if m.source.starts_with(crate::containers::volumes::root_of(&rec.spec.dir)) { "volume" } else { "bind" },
        })).collect::<Vec<_>>(),
        "Driver": "overlay",
        "HostConfig": {
            "AutoRemove": rec.request.rm,
            "NetworkMode": rec.spec.network,
            "Binds": rec.request.volumes,
            "Memory": rec.request.limits.memory.unwrap_or(0),
            "NanoCpus": rec.request.limits.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
            "PidsLimit": rec.request.limits.pids,
            "RestartPolicy": { "Name": policy.name(), "MaximumRetryCount": policy.max_retries() },
            "Privileged": rec.spec.security.privileged,
            "CapAdd": rec.request.security.cap_add,
            "CapDrop": rec.request.security.cap_drop,
            "SecurityOpt": rec.request.security.seccomp.as_ref().map(|p| vec![format!("seccomp={p}")]),
        },
        "Config": {
            "Hostname": rec.spec.hostname,
            "Tty": rec.spec.tty,
            "User": rec.request.user.clone().unwrap_or_default(),
            "Env": rec.spec.env,
            "Cmd": rec.request.cmd,
            "Image": rec.image,
            "WorkingDir": rec.spec.cwd,
            "Entrypoint": rec.request.entrypoint,
            "StopSignal": rec.stop_signal,
        },
        "NetworkSettings": network_settings(rec),
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "LowerDir": lower.join(":"),
                "UpperDir": rec.spec.dir.join("upper"),
                "WorkDir": rec.spec.dir.join("work"),
                "MergedDir": rec.spec.dir.join("rootfs"),
            },
        },
    })
}

/// docker's `NetworkSettings`: the first network's address at the top, every network by
/// name, and the published ports (`"80/tcp": [{"HostIp", "HostPort"}]`).
fn network_settings(rec: &Record) -> serde_json::Value {
    let first = rec.networks.first();
    let mut networks = serde_json::Map::new();
    for n in &rec.networks {
        networks.insert(n.network.clone(), endpoint_json(n));
    }
    let mut ports = serde_json::Map::new();
    for p in &rec.state.ports {
        let key = format!("{}/{}", p.container_port, p.proto);
        let entry = ports.entry(key).or_insert_with(|| serde_json::json!([]));
        if let Some(a) = entry.as_array_mut() {
            a.push(serde_json::json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}));
        }
    }
    serde_json::json!({
        "IPAddress": first.map(|n| n.ip.as_str()).unwrap_or(""),
        "IPPrefixLen": first.map(|n| n.prefix).unwrap_or(0),
        "Gateway": first.map(|n| n.gateway.as_str()).unwrap_or(""),
        "MacAddress": first.and_then(|n| n.ip.parse().ok()).map(crate::network::mac_string).unwrap_or_default(),
        "SandboxKey": if rec.networks.is_empty() { String::new() } else { rec.spec.dir.join("netns").display().to_string() },
        "Networks": networks,
        "Ports": ports,
    })
}

/// docker's `EndpointSettings` of a container on one network (inspect and `ps`).
pub(super) fn endpoint_json(n: &crate::containers::NetInfo) -> serde_json::Value {
    let ip: std::net::Ipv4Addr = n.ip.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    serde_json::json!({
        "NetworkID": n.network_id,
        "IPAddress": n.ip,
        "IPPrefixLen": n.prefix,
        "Gateway": n.gateway,
        "MacAddress": crate::network::mac_string(ip),
        "Aliases": n.aliases,
    })
}
