//! Docker's Engine API for the rest of a container's controls and readings: restart, pause,
//! unpause, rename, top, stats (one reading, or a stream of one a second), prune; and the
//! system's `df` and `auth`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::engine_filters::Filters;
use super::error::ApiError;
use super::shared::{channel_body, flag, AgentState, Param};
use crate::containers::usage::{self, Sample};
use crate::containers::{control, Record};

#[derive(Deserialize)]
pub struct RestartQuery {
    #[serde(default)]
    t: Option<i64>,
    #[serde(default)]
    signal: Option<String>,
}

/// `POST /containers/{id}/restart[?t=S]`: 204.
pub async fn restart(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    Query(q): Query<RestartQuery>,
) -> Result<Response, ApiError> {
    let t = q.t.map(|t| Duration::from_secs(t.max(0) as u64));
    let signal = q.signal.as_deref().filter(|s| !s.is_empty());
    control::restart(&st.containers, &id, t, signal).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /containers/{id}/pause`: 204.
pub async fn pause(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
) -> Result<Response, ApiError> {
    control::pause(&st.containers, &id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /containers/{id}/unpause`: 204.
pub async fn unpause(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
) -> Result<Response, ApiError> {
    control::unpause(&st.containers, &id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /containers/{id}/update`: memory, cpus, pids and the restart policy; any other
/// resource set to a value is refused.
pub async fn update(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the update body must be a JSON object"))?;
    let mut u = control::Update::default();
    for (k, v) in obj {
        let zero = match v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
        };
        match k.as_str() {
            "Memory" => u.memory = v.as_i64().filter(|m| *m > 0),
            "NanoCpus" => u.cpus = v.as_i64().filter(|n| *n > 0).map(|n| n as f64 / 1e9),
            "PidsLimit" => u.pids = v.as_i64().filter(|p| *p != 0),
            "CpuShares" => u.cpu_shares = v.as_u64().filter(|n| *n > 0),
            "CpuPeriod" => u.cpu_period = v.as_u64().filter(|n| *n > 0),
            "CpuQuota" => u.cpu_quota = v.as_i64().filter(|n| *n != 0),
            "CpusetCpus" => {
                u.cpuset_cpus = v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
            }
            "CpusetMems" => {
                u.cpuset_mems = v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
            }
            "MemoryReservation" => u.memory_reservation = v.as_i64().filter(|n| *n > 0),
            "MemorySwap" => u.memory_swap = v.as_i64().filter(|n| *n != 0),
            "BlkioWeight" => {
                u.blkio_weight = v
                    .as_u64()
                    .filter(|n| *n > 0)
                    .map(|n| u16::try_from(n).unwrap_or(u16::MAX))
            }
            "RestartPolicy" => {
                let name = v["Name"].as_str().unwrap_or("");
                let max = v["MaximumRetryCount"].as_u64().unwrap_or(0);
                u.restart = match name {
                    "" => None,
                    "on-failure" if max > 0 => Some(format!("on-failure:{max}")),
                    other => Some(other.to_string()),
                };
            }
            _ if zero => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "update of {other} = {v} is not supported by reg yet (memory, memory \
                     reservation and swap, cpus, cpu shares, period and quota, cpusets, blkio \
                     weight, pids-limit and restart are)"
                )))
            }
        }
    }
    control::update(&st.containers, &id, u)?;
    Ok(Json(json!({ "Warnings": [] })))
}

#[derive(Deserialize)]
pub struct RenameQuery {
    name: String,
}

/// `POST /containers/{id}/rename?name=NEW`: 204.
pub async fn rename(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    Query(q): Query<RenameQuery>,
) -> Result<Response, ApiError> {
    control::rename(&st.containers, &id, &q.name)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct TopQuery {
    #[serde(default)]
    ps_args: Option<String>,
}

/// `GET /containers/{id}/top`: `{"Titles", "Processes"}` (ps's default columns reg has).
pub async fn top(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    Query(q): Query<TopQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.ps_args
        .as_deref()
        .is_some_and(|a| !a.is_empty() && a != "-ef")
    {
        return Err(ApiError::bad_request(
            "top with ps options is not supported by reg: it lists UID, PID, PPID and CMD",
        ));
    }
    let cs = st.containers.clone();
    let list = tokio::task::spawn_blocking(move || usage::top(&cs, &id)).await??;
    let processes: Vec<Value> = list
        .into_iter()
        .map(|p| {
            json!([
                p.uid.to_string(),
                p.pid.to_string(),
                p.ppid.to_string(),
                p.cmd
            ])
        })
        .collect();
    Ok(Json(
        json!({ "Titles": ["UID", "PID", "PPID", "CMD"], "Processes": processes }),
    ))
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

fn cpu_json(s: &Sample) -> Value {
    let c = &s.cgroup.cpu;
    json!({
        "cpu_usage": {
            "total_usage": s.cpu_ns.0,
            "usage_in_usermode": s.cpu_ns.1,
            "usage_in_kernelmode": s.cpu_ns.2,
            "percpu_usage": c.usage.per_core_usage_total,
        },
        "system_cpu_usage": s.system_cpu,
        "online_cpus": s.online_cpus,
        "throttling_data": {
            "periods": c.throttling.periods,
            "throttled_periods": c.throttling.throttled_periods,
            "throttled_time": c.throttling.throttled_time,
        },
    })
}

/// One reading in docker's `StatsJSON` shape; `pre` is the previous one (for the cpu %).
fn stats_json(rec: &Record, s: &Sample, pre: Option<&Sample>) -> Value {
    let m = &s.cgroup.memory;
    let networks: serde_json::Map<String, Value> = s
        .networks
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                json!({
                    "rx_bytes": n.rx_bytes, "rx_packets": n.rx_packets,
                    "rx_errors": n.rx_errors, "rx_dropped": n.rx_dropped,
                    "tx_bytes": n.tx_bytes, "tx_packets": n.tx_packets,
                    "tx_errors": n.tx_errors, "tx_dropped": n.tx_dropped,
                }),
            )
        })
        .collect();
    let blkio = |list: &[libcgroups::stats::BlkioDeviceStat]| -> Vec<Value> {
        list.iter()
            .map(|d| {
                json!({
                    "major": d.major, "minor": d.minor,
                    "op": d.op_type.clone().unwrap_or_default(), "value": d.value,
                })
            })
            .collect()
    };
    json!({
        "id": rec.id,
        "name": format!("/{}", rec.name),
        "read": rfc3339(s.read),
        "preread": pre.map(|p| rfc3339(p.read)).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "pids_stats": { "current": s.cgroup.pids.current, "limit": s.cgroup.pids.limit },
        "num_procs": 0,
        "storage_stats": {},
        "blkio_stats": {
            "io_service_bytes_recursive": blkio(&s.cgroup.blkio.service_bytes),
            "io_serviced_recursive": blkio(&s.cgroup.blkio.serviced),
        },
        "cpu_stats": cpu_json(s),
        "precpu_stats": pre.map(cpu_json).unwrap_or_else(|| json!({ "cpu_usage": { "total_usage": 0 }, "throttling_data": {} })),
        "memory_stats": {
            "usage": m.memory.usage,
            "max_usage": m.memory.max_usage,
            "failcnt": m.memory.fail_count,
            "limit": s.memory_limit,
            "stats": m.stats,
        },
        "networks": networks,
    })
}

#[derive(Deserialize)]
pub struct StatsQuery {
    #[serde(default = "yes", deserialize_with = "flag")]
    stream: bool,
    #[serde(default, rename = "one-shot", deserialize_with = "flag")]
    one_shot: bool,
}

fn yes() -> bool {
    true
}

/// How far apart two readings are (docker's cpu percentage compares two a second apart).
const INTERVAL: Duration = Duration::from_secs(1);

/// `GET /containers/{id}/stats[?stream=0][&one-shot=1]`: a reading per second while the
/// container runs; with `stream=0` one (with the previous second's for the cpu %, unless
/// `one-shot`).
pub async fn stats(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    Query(q): Query<StatsQuery>,
) -> Result<Response, ApiError> {
    let cs = st.containers.clone();
    let read = move |cs: Arc<crate::containers::Containers>, id: String| async move {
        tokio::task::spawn_blocking(move || usage::sample(&cs, &id)).await
    };
    let (rec, first) = read(cs.clone(), id.clone()).await??;
    if !q.stream {
        let (pre, now) = if q.one_shot {
            (None, first)
        } else {
            tokio::time::sleep(INTERVAL).await;
            let (_, now) = read(cs.clone(), id.clone()).await??;
            (Some(first), now)
        };
        return Ok(Json(stats_json(&rec, &now, pre.as_ref())).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let mut pre: Option<Sample> = None;
        let mut now = first;
        loop {
            let line = format!("{}\n", stats_json(&rec, &now, pre.as_ref()));
            if tx.send(Bytes::from(line)).is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = tx.closed() => return,
            }
            match read(cs.clone(), id.clone()).await {
                Ok(Ok((_, next))) => {
                    pre = Some(std::mem::replace(&mut now, next));
                }
                // Stopped (or gone): the stream ends.
                _ => return,
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(channel_body(rx))
        .map_err(ApiError::internal)
}

#[derive(Deserialize)]
pub struct PruneQuery {
    #[serde(default)]
    filters: Option<String>,
}

/// `POST /containers/prune[?filters=label=…]`: removes every stopped container.
pub async fn prune(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<PruneQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = Filters::parse(q.filters.as_deref(), &["label"])?;
    let mut deleted = Vec::new();
    for r in st.containers.list()? {
        if r.state.status.is_running()
            || !f.labels_match("label", |k| r.request.labels.get(k).map(String::as_str))
        {
            continue;
        }
        if control::delete(&st.containers, &r.id, false).await.is_ok() {
            deleted.push(r.id);
        }
    }
    Ok(Json(
        json!({ "ContainersDeleted": deleted, "SpaceReclaimed": 0 }),
    ))
}

/// `POST /auth`: reg's node keeps no credentials (each pull or push carries its own in
/// `X-Registry-Auth`), so a login is checked by the client against the registry itself.
pub async fn auth() -> Json<Value> {
    Json(json!({ "Status": "Login Succeeded", "IdentityToken": "" }))
}

/// `GET /system/df`: images, containers and volumes with their sizes where reg knows them.
pub async fn df(State(st): State<Arc<AgentState>>) -> Result<Json<Value>, ApiError> {
    let store = st.store.clone();
    let images = tokio::task::spawn_blocking(move || store.list()).await??;
    let containers = st.containers.list()?;
    let layers: u64 = {
        let mut seen = std::collections::HashSet::new();
        images
            .iter()
            .filter(|i| seen.insert(i.id.clone()))
            .map(|i| i.size)
            .sum()
    };
    let image_list: Vec<Value> = images
        .iter()
        .map(|i| {
            let used = containers.iter().filter(|c| c.image_id == i.id).count();
            json!({
                "Id": i.id, "RepoTags": [i.reference], "Size": i.size, "SharedSize": -1,
                "Containers": used, "Created": super::engine::unix_seconds(i.config["created"].as_str().unwrap_or("")),
                "ParentId": "", "RepoDigests": [], "Labels": {},
            })
        })
        .collect();
    let container_list: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({
                "Id": c.id, "Names": [format!("/{}", c.name)], "Image": c.image,
                "ImageID": c.image_id, "State": c.state.status.as_str(), "SizeRw": -1,
                "SizeRootFs": -1, "Created": super::engine::unix_seconds(&c.created),
                "Labels": c.request.labels, "Mounts": [], "Command": c.spec.args.join(" "),
                "Status": "",
            })
        })
        .collect();
    let root = st.containers.volumes.clone();
    let names =
        tokio::task::spawn_blocking(move || crate::containers::volumes::list(&root)).await?;
    let volumes: Vec<Value> = names
        .iter()
        .map(|n| {
            let data = crate::containers::volumes::data_dir(&st.containers.volumes, n);
            let refs = containers
                .iter()
                .filter(|c| c.spec.mounts.iter().any(|m| m.source == data))
                .count();
            json!({
                "Name": n, "Driver": "local", "Mountpoint": data, "Scope": "local",
                "Labels": crate::containers::volumes::labels(&st.containers.volumes, n),
                "UsageData": { "Size": -1, "RefCount": refs },
            })
        })
        .collect();
    Ok(Json(json!({
        "LayersSize": layers,
        "Images": image_list,
        "Containers": container_list,
        "Volumes": volumes,
        "BuildCache": [],
    })))
}

/// `GET /containers/{id}/changes`: `[{"Path", "Kind"}]` (0 modified, 1 added, 2 deleted).
pub async fn changes(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
) -> Result<Json<Value>, ApiError> {
    let cs = st.containers.clone();
    let list = tokio::task::spawn_blocking(move || crate::containers::changes::changes(&cs, &id))
        .await??;
    Ok(Json(Value::Array(
        list.into_iter()
            .map(|(path, kind)| json!({ "Path": path, "Kind": kind as u8 }))
            .collect(),
    )))
}
