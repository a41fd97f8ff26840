//! Docker's Engine API for a container's life without attaching: create (docker's `Config`,
//! `HostConfig` and `NetworkingConfig` mapped onto reg's run request — a field reg does not
//! support is refused with 400 when it is set, never ignored), start, stop, kill, wait, remove,
//! and logs in docker's multiplexed framing.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::shared::{channel_body, flag, AgentState, Param};
use crate::containers::{control, create, streams, RunRequest};

/// Whether `v` is a zero value as docker's client sends for a field left alone (`null`, `0`,
/// `""`, `false`, and arrays or maps of nothing else).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_zero),
        Value::Object(o) => o.values().all(is_zero),
    }
}

fn unsupported(section: &str, key: &str, v: &Value) -> ApiError {
    ApiError::bad_request(format!(
        "{section}.{key} = {v} is not supported by reg yet (leave it unset)"
    ))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn opt_string(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// `HostConfig.Mounts` (`docker run --mount`, compose's long syntax): binds and volumes as
/// `-v` has them, tmpfs mounts as `--tmpfs`. What reg cannot honour is refused, naming it.
fn mounts(v: &Value, req: &mut RunRequest) -> Result<(), ApiError> {
    for m in v.as_array().into_iter().flatten() {
        let kind = m["Type"].as_str().unwrap_or("volume");
        let target = m["Target"].as_str().unwrap_or("");
        if target.is_empty() {
            return Err(ApiError::bad_request(
                "a mount needs a target (--mount target=/path)",
            ));
        }
        let source = m["Source"].as_str().unwrap_or("");
        let ro = if m["ReadOnly"].as_bool().unwrap_or(false) {
            ":ro"
        } else {
            ""
        };
        for (k, val) in m.as_object().into_iter().flatten() {
            let known = matches!(k.as_str(), "Type" | "Target" | "Source" | "ReadOnly")
                || (k == "BindOptions" && kind == "bind")
                || (k == "VolumeOptions" && kind == "volume")
                || (k == "TmpfsOptions" && kind == "tmpfs")
                || (k == "Consistency"
                    && matches!(val.as_str(), Some("" | "default" | "consistent")));
            if !known && !is_zero(val) {
                return Err(unsupported("HostConfig.Mounts", k, val));
            }
        }
        match kind {
            "bind" => {
                if source.is_empty() {
                    return Err(ApiError::bad_request(format!(
                        "the bind mount at {target} needs a source (--mount type=bind,source=/host/path)"
                    )));
                }
                for (k, val) in m["BindOptions"].as_object().into_iter().flatten() {
                    let fine = match k.as_str() {
                        "Propagation" => matches!(val.as_str(), Some("" | "rprivate" | "private")),
                        _ => is_zero(val),
                    };
                    if !fine {
                        return Err(unsupported("HostConfig.Mounts.BindOptions", k, val));
                    }
                }
                req.volumes.push(format!("{source}:{target}{ro}"));
            }
            "volume" => {
                for (k, val) in m["VolumeOptions"].as_object().into_iter().flatten() {
                    if k == "Labels" || is_zero(val) {
                        continue;
                    }
                    return Err(unsupported("HostConfig.Mounts.VolumeOptions", k, val));
                }
                req.volumes.push(if source.is_empty() {
                    target.to_string()
                } else {
                    format!("{source}:{target}{ro}")
                });
            }
            "tmpfs" => {
                let mut opts = Vec::new();
                if m["ReadOnly"].as_bool().unwrap_or(false) {
                    opts.push("ro".to_string());
                }
                let t = &m["TmpfsOptions"];
                if let Some(size) = t["SizeBytes"].as_i64().filter(|n| *n > 0) {
                    opts.push(format!("size={size}"));
                }
                if let Some(mode) = t["Mode"].as_u64().filter(|n| *n > 0) {
                    opts.push(format!("mode={mode:o}"));
                }
                for (k, val) in t.as_object().into_iter().flatten() {
                    if !matches!(k.as_str(), "SizeBytes" | "Mode") && !is_zero(val) {
                        return Err(unsupported("HostConfig.Mounts.TmpfsOptions", k, val));
                    }
                }
                req.tmpfs.insert(target.to_string(), opts.join(","));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "mount type {other:?} is not supported by reg (bind, volume or tmpfs)"
                )))
            }
        }
    }
    Ok(())
}

/// `HostConfig.LogConfig`: `json-file` (or unset) with `max-size`/`max-file`, or `none`.
fn log_config(v: &Value) -> Result<crate::containers::LogConfig, ApiError> {
    use crate::containers::{LogConfig, LogDriver};
    let driver = match v["Type"].as_str().unwrap_or("") {
        "" | "json-file" | "local" => LogDriver::JsonFile,
        "none" => LogDriver::None,
        other => {
            return Err(ApiError::bad_request(format!(
                "log driver {other:?} is not supported by reg: use json-file (the default) or none"
            )))
        }
    };
    let mut c = LogConfig {
        driver,
        ..LogConfig::default()
    };
    for (k, o) in v["Config"].as_object().into_iter().flatten() {
        let o = o.as_str().unwrap_or("");
        match k.as_str() {
            "max-size" if driver == LogDriver::JsonFile => {
                let n = crate::containers::parse_size(o).ok_or_else(|| {
                    ApiError::bad_request(format!("--log-opt max-size={o}: use e.g. 10m or 1g"))
                })?;
                c.max_size = Some(n).filter(|n| *n > 0);
            }
            "max-file" if driver == LogDriver::JsonFile => {
                c.max_file = o.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ApiError::bad_request(format!("--log-opt max-file={o}: a number, at least 1"))
                })?;
            }
            // Options docker's json-file knows that change nothing here.
            "compress" | "mode" | "labels" | "env" | "tag" if o.is_empty() => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "--log-opt {k}={o} is not supported by reg's {} driver (max-size, max-file)",
                    if driver == LogDriver::None {
                        "none"
                    } else {
                        "json-file"
                    }
                )))
            }
        }
    }
    Ok(c)
}

/// docker's create body → reg's run request.
fn run_request(body: &Value, name: Option<String>) -> Result<RunRequest, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the create body must be a JSON object"))?;
    let mut req = RunRequest {
        name,
        ..RunRequest::default()
    };
    let host = obj.get("HostConfig").cloned().unwrap_or(Value::Null);
    let mut published: Vec<String> = Vec::new();
    // HostConfig first: `-p` decides which ExposedPorts are already accounted for.
    if let Some(h) = host.as_object() {
        for (k, v) in h {
            match k.as_str() {
                "Binds" => req.volumes.extend(strings(v)),
                "NetworkMode" => {
                    req.network = opt_string(v).filter(|m| m != "default");
                }
                "PortBindings" => {
                    for (port, bindings) in v.as_object().into_iter().flatten() {
                        let (ctr, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                        let suffix = if proto == "udp" { "/udp" } else { "" };
                        for b in bindings.as_array().into_iter().flatten() {
                            let ip = b["HostIp"].as_str().unwrap_or("");
                            let hp = b["HostPort"].as_str().unwrap_or("");
                            let spec = match (ip, hp) {
                                ("", "") => format!("{ctr}{suffix}"),
                                ("", hp) => format!("{hp}:{ctr}{suffix}"),
                                (ip, hp) => format!("{ip}:{hp}:{ctr}{suffix}"),
                            };
                            req.publish.push(spec);
                        }
                        published.push(port.clone());
                    }
                }
                "PublishAllPorts" => req.publish_all = v.as_bool().unwrap_or(false),
                "AutoRemove" => req.rm = v.as_bool().unwrap_or(false),
                "RestartPolicy" => {
                    let n = v["Name"].as_str().unwrap_or("");
                    let max = v["MaximumRetryCount"].as_u64().unwrap_or(0);
                    req.restart = match n {
                        "" | "no" => None,
                        "on-failure" if max > 0 => Some(format!("on-failure:{max}")),
                        other => Some(other.to_string()),
                    };
                }
                "Memory" => req.limits.memory = v.as_i64().filter(|m| *m > 0),
                "NanoCpus" => {
                    req.limits.cpus = v.as_i64().filter(|n| *n > 0).map(|n| n as f64 / 1e9)
                }
                "PidsLimit" => req.limits.pids = v.as_i64().filter(|p| *p > 0),
                "CpuShares" => req.limits.cpu_shares = v.as_u64().filter(|n| *n > 0),
                "CpuPeriod" => req.limits.cpu_period = v.as_u64().filter(|n| *n > 0),
                "CpuQuota" => req.limits.cpu_quota = v.as_i64().filter(|n| *n != 0),
                "CpusetCpus" => req.limits.cpuset_cpus = opt_string(v),
                "CpusetMems" => req.limits.cpuset_mems = opt_string(v),
                "MemorySwap" => req.limits.memory_swap = v.as_i64().filter(|n| *n != 0),
                "MemoryReservation" => {
                    req.limits.memory_reservation = v.as_i64().filter(|n| *n > 0)
                }
                "OomKillDisable" => req.limits.oom_kill_disable = v.as_bool().unwrap_or(false),
                "BlkioWeight" => {
                    req.limits.blkio_weight = v
                        .as_u64()
                        .filter(|n| *n > 0)
                        .map(|n| u16::try_from(n).unwrap_or(u16::MAX))
                }
                "BlkioDeviceReadBps" | "BlkioDeviceWriteBps" => {
                    let rates: Vec<crate::runtime::DeviceRate> = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|d| crate::runtime::DeviceRate {
                            path: d["Path"].as_str().unwrap_or("").to_string(),
                            rate: d["Rate"].as_u64().unwrap_or(0),
                            ..Default::default()
                        })
                        .collect();
                    if k == "BlkioDeviceReadBps" {
                        req.limits.device_read_bps = rates;
                    } else {
                        req.limits.device_write_bps = rates;
                    }
                }
                "ReadonlyRootfs" => req.read_only = v.as_bool().unwrap_or(false),
                "Tmpfs" => {
                    for (t, o) in v.as_object().into_iter().flatten() {
                        req.tmpfs
                            .insert(t.clone(), o.as_str().unwrap_or("").to_string());
                    }
                }
                "ShmSize" => req.shm_size = v.as_i64().filter(|n| *n > 0),
                "Sysctls" => {
                    for (key, val) in v.as_object().into_iter().flatten() {
                        let val = val.as_str().ok_or_else(|| {
                            ApiError::bad_request(format!("sysctl {key}: not a string"))
                        })?;
                        req.sysctls.insert(key.clone(), val.to_string());
                    }
                }
                "Init" => req.init = v.as_bool().unwrap_or(false),
                "Mounts" => mounts(v, &mut req)?,
                "PidMode" => req.pid_mode = opt_string(v),
                "IpcMode" => {
                    req.ipc_mode = opt_string(v).filter(|m| m != "private" && m != "shareable")
                }
                "UTSMode" => req.uts_mode = opt_string(v),
                "UsernsMode" => req.userns_mode = opt_string(v),
                "VolumesFrom" => req.volumes_from = strings(v),
                "GroupAdd" => req.security.group_add = strings(v),
                "LogConfig" => req.log = log_config(v)?,
                "CapAdd" => req.security.cap_add = strings(v),
                "CapDrop" => req.security.cap_drop = strings(v),
                "Privileged" => req.security.privileged = v.as_bool().unwrap_or(false),
                "SecurityOpt" => {
                    for o in strings(v) {
                        match o.split_once(['=', ':']) {
                            Some(("seccomp", p)) => req.security.seccomp = Some(p.to_string()),
                            _ if o == "no-new-privileges" || o == "no-new-privileges:true" => {}
                            _ => return Err(unsupported("HostConfig", "SecurityOpt", v)),
                        }
                    }
                }
                "Ulimits" => {
                    for u in v.as_array().into_iter().flatten() {
                        req.security.ulimits.push(format!(
                            "{}={}:{}",
                            u["Name"].as_str().unwrap_or(""),
                            u["Soft"],
                            u["Hard"]
                        ));
                    }
                }
                "Devices" => {
                    for d in v.as_array().into_iter().flatten() {
                        let host = d["PathOnHost"].as_str().unwrap_or("");
                        let ctr = d["PathInContainer"].as_str().unwrap_or(host);
                        let perms = d["CgroupPermissions"].as_str().unwrap_or("rwm");
                        req.security.devices.push(format!("{host}:{ctr}:{perms}"));
                    }
                }
                "Dns" => req.dns = strings(v),
                "ExtraHosts" => req.add_hosts = strings(v),
                "Links" => req.links = strings(v),
                "ConsoleSize" => {
                    let s = strings_u16(v);
                    if let [rows, cols] = s[..] {
                        if rows > 0 && cols > 0 {
                            req.tty_size = Some((rows, cols));
                        }
                    }
                }
                // What a client sends for the defaults it does not change.
                "MemorySwappiness" if v.as_i64().is_none_or(|n| n == -1) => {}
                _ if is_zero(v) => {}
                _ => return Err(unsupported("HostConfig", k, v)),
            }
        }
    }
    for (k, v) in obj {
        match k.as_str() {
            "HostConfig" => {}
            "Image" => req.image = v.as_str().unwrap_or("").to_string(),
            "Cmd" => req.cmd = strings(v),
            "Entrypoint" => {
                req.entrypoint = match v {
                    Value::Null => None,
                    Value::String(s) => Some(vec![s.clone()]),
                    v => Some(strings(v)),
                }
            }
            "Env" => req.env = strings(v),
            "WorkingDir" => req.workdir = opt_string(v),
            "User" => req.user = opt_string(v),
            "Hostname" => req.hostname = opt_string(v),
            "StopSignal" => req.stop_signal = opt_string(v),
            "StopTimeout" => req.stop_timeout = v.as_u64(),
            "Tty" => req.tty = v.as_bool().unwrap_or(false),
            "OpenStdin" => req.open_stdin = v.as_bool().unwrap_or(false),
            "Healthcheck" if !v.is_null() => {
                req.healthcheck = Some(
                    crate::containers::health::HealthCheck::from_docker(v).ok_or_else(|| {
                        ApiError::bad_request(format!("Config.Healthcheck = {v}: no Test"))
                    })?,
                );
            }
            "Labels" => {
                for (k, l) in v.as_object().into_iter().flatten() {
                    let l = l
                        .as_str()
                        .ok_or_else(|| ApiError::bad_request(format!("label {k}: not a string")))?;
                    req.labels.insert(k.clone(), l.to_string());
                }
            }
            // Which streams the client means to attach: its business, not the container's.
            "AttachStdin" | "AttachStdout" | "AttachStderr" | "StdinOnce" => {}
            // `-v /path`: a new anonymous volume.
            // A mount point with nothing bound at it (Binds come first) gets a new anonymous volume.
            "Volumes" => {
                let bound: Vec<String> = req
                    .volumes
                    .iter()
                    .map(|b| bind_target(b).to_string())
                    .collect();
                for (p, _) in v.as_object().into_iter().flatten() {
                    if !bound
                        .iter()
                        .any(|b| b.trim_end_matches('/') == p.trim_end_matches('/'))
                    {
                        req.volumes.push(p.clone());
                    }
                }
            }
            // The ports `-p` publishes are listed here too; others would be `--expose`.
            "ExposedPorts" => {
                let extra: Vec<&String> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(p, _)| p)
                    .filter(|p| !published.contains(p))
                    .collect();
                req.expose = extra.into_iter().cloned().collect();
            }
            "NetworkingConfig" => {
                for (net, ep) in v["EndpointsConfig"].as_object().into_iter().flatten() {
                    if req.network.is_none() && net != "default" {
                        req.network = Some(net.clone());
                    }
                    req.aliases.extend(strings(&ep["Aliases"]));
                    if let Some(ip) = opt_string(&ep["IPAMConfig"]["IPv4Address"]) {
                        req.ip = Some(ip);
                    }
                }
            }
            _ if is_zero(v) => {}
            _ => return Err(unsupported("Config", k, v)),
        }
    }
    if req.image.is_empty() {
        return Err(ApiError::bad_request("no image given (Config.Image)"));
    }
    Ok(req)
}

/// The container path of a `-v` value (`SRC:DST[:OPTS]`, or a bare `DST`).
fn bind_target(b: &str) -> &str {
    let mut parts = b.split(':');
    match (parts.next(), parts.next()) {
        (Some(_), Some(dst)) => dst,
        (Some(dst), None) => dst,
        _ => b,
    }
}

fn strings_u16(v: &Value) -> Vec<u16> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_u64().and_then(|n| u16::try_from(n).ok()))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Deserialize)]
pub struct CreateQuery {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    platform: Option<String>,
}

/// `POST /containers/create[?name=]`: 201 `{"Id", "Warnings"}`.
pub async fn create(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<CreateQuery>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    if let Some(p) = q.platform.as_deref().filter(|p| !p.is_empty()) {
        let (os, arch) = crate::image::node_platform();
        if p != format!("{os}/{arch}") {
            return Err(ApiError::bad_request(format!(
                "platform {p} is not this node's ({os}/{arch})"
            )));
        }
    }
    let req = run_request(&body, q.name.filter(|n| !n.is_empty()))?;
    let c = create::create(
        &st.containers,
        &st.store,
        &st.default_registry,
        st.userns_pool,
        req,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "Id": c.id, "Warnings": [] })),
    )
        .into_response())
}

/// `POST /containers/{id}/start`: 204, or 304 when it already runs.
pub async fn start(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
) -> Result<Response, ApiError> {
    Ok(answer(control::start_detached(&st.containers, &id).await?))
}

#[derive(Deserialize)]
pub struct StopQuery {
    #[serde(default)]
    t: Option<i64>,
    #[serde(default)]
    signal: Option<String>,
}

/// `POST /containers/{id}/stop[?t=S]`: 204, or 304 when it is not running.
pub async fn stop(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    Query(q): Query<StopQuery>,
) -> Result<Response, ApiError> {
    let t = q.t.map(|t| Duration::from_secs(t.max(0) as u64));
    let signal = q.signal.as_deref().filter(|s| !s.is_empty());
    Ok(answer(control::stop(&st.containers, &id, t, signal).await?))
}

/// 204, or 304 when nothing changed.
fn answer(o: control::Outcome) -> Response {
    match o {
        control::Outcome::Done => StatusCode::NO_CONTENT,
        control::Outcome::Unchanged { .. } => StatusCode::NOT_MODIFIED,
    }
    .into_response()
}

#[derive(Deserialize)]
pub struct KillQuery {
    #[serde(default)]
    signal: Option<String>,
}

pub async fn kill(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    Query(q): Query<KillQuery>,
) -> Result<Response, ApiError> {
    let signal = q.signal.filter(|s| !s.is_empty());
    control::kill(&st.containers, &id, signal.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct WaitQuery {
    #[serde(default)]
    condition: Option<String>,
}

/// `POST /containers/{id}/wait[?condition=not-running|next-exit|removed]`.
pub async fn wait(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    Query(q): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let condition = match q.condition.as_deref().unwrap_or("") {
        "not-running" | "" => control::WaitCondition::NotRunning,
        "next-exit" => control::WaitCondition::NextExit,
        "removed" => control::WaitCondition::Removed,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid condition {other:?}: not-running, next-exit or removed"
            )))
        }
    };
    // As dockerd: the status line and headers go out at once (a client waits for them before
    // it starts the container), the body when the container has exited.
    st.containers.resolve(&id)?;
    let cs = st.containers.clone();
    let body = async_stream_frames(move |tx| async move {
        let line = match control::wait(&cs, &id, condition).await {
            Ok(code) => serde_json::json!({ "StatusCode": code, "Error": null }),
            Err(e) => {
                serde_json::json!({ "StatusCode": -1, "Error": { "Message": e.to_string() } })
            }
        };
        let _ = tx.send(Bytes::from(format!("{line}\n")));
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .map_err(ApiError::internal)
}

#[derive(Deserialize)]
pub struct RemoveQuery {
    #[serde(default, deserialize_with = "flag")]
    force: bool,
    #[serde(default, deserialize_with = "flag")]
    link: bool,
}

pub async fn remove(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    Query(q): Query<RemoveQuery>,
) -> Result<Response, ApiError> {
    if q.link {
        return Err(ApiError::bad_request(
            "removing a link (rm --link) is not supported by reg",
        ));
    }
    control::delete(&st.containers, &id, q.force).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct LogsQuery {
    #[serde(default, deserialize_with = "flag")]
    follow: bool,
    #[serde(default, deserialize_with = "flag")]
    stdout: bool,
    #[serde(default, deserialize_with = "flag")]
    stderr: bool,
    #[serde(default, deserialize_with = "flag")]
    timestamps: bool,
    #[serde(default)]
    tail: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
}

/// One frame of docker's multiplexed stream: `[stream, 0, 0, 0, size (big endian)]` then the
/// bytes (1 = stdout, 2 = stderr).
pub(super) fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    Bytes::from(out)
}

/// `GET /containers/{id}/logs`: the log as docker's multiplexed stream (raw with a terminal).
pub async fn logs(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    // Unix times (docker's client turns `10m` or a date into one); `0` is none.
    let time = |v: &Option<String>| {
        v.as_deref()
            .filter(|s| !s.is_empty() && *s != "0")
            .map(super::engine_events::parse_time)
            .transpose()
    };
    let (since, until) = (time(&q.since)?, time(&q.until)?);
    if !q.stdout && !q.stderr {
        return Err(ApiError::bad_request(
            "you must choose at least one stream (stdout, stderr)",
        ));
    }
    let tail = match q.tail.as_deref() {
        None | Some("all") | Some("") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid tail {n:?}")))?,
        ),
    };
    let rec = st.containers.resolve(&id)?;
    let tty = rec.spec.tty;
    let mut lines = streams::logs(&st.containers, &id, q.follow, tail)?;
    let (want_out, want_err, stamps) = (q.stdout, q.stderr, q.timestamps);
    // Following with `until`: the stream ends then, as docker's does.
    let deadline = until.map(|u| {
        let left = u.saturating_sub(super::engine_events::now_nanos()).max(0) as u64;
        tokio::time::Instant::now() + Duration::from_nanos(left)
    });
    let stream = async_stream_frames(move |tx| async move {
        loop {
            let line = match deadline {
                Some(d) => match tokio::time::timeout_at(d, lines.recv()).await {
                    Ok(l) => l,
                    Err(_) => return,
                },
                None => lines.recv().await,
            };
            let Some(line) = line else { return };
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if since.is_some() || until.is_some() {
                let at = v["time"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                if since.is_some_and(|s| at < s) {
                    continue;
                }
                if until.is_some_and(|u| at > u) {
                    return;
                }
            }
            let (n, text) = if let Some(t) = v["stdout"].as_str() {
                (1u8, t)
            } else if let Some(t) = v["stderr"].as_str() {
                (2u8, t)
            } else {
                continue;
            };
            if (n == 1 && !want_out) || (n == 2 && !want_err) {
                continue;
            }
            let text = if stamps {
                format!("{} {text}", v["time"].as_str().unwrap_or(""))
            } else {
                text.to_string()
            };
            let chunk = if tty {
                Bytes::from(text.into_bytes())
            } else {
                frame(n, text.as_bytes())
            };
            if tx.send(chunk).is_err() {
                return;
            }
        }
    });
    let kind = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Response::builder()
        .header("content-type", kind)
        .body(stream)
        .map_err(ApiError::internal)
}

/// A body whose chunks `produce` sends, run as a task of its own (it ends with the body).
fn async_stream_frames<F, Fut>(produce: F) -> Body
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(produce(tx));
    channel_body(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_run_body_maps_and_zero_fields_pass() {
        let body = serde_json::json!({
            "Image": "busybox", "Cmd": ["sh", "-c", "echo hi"], "Env": ["A=1"],
            "Tty": false, "OpenStdin": false, "Labels": {}, "Domainname": "",
            "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}, "/srv/": {}},
            "HostConfig": {
                "Binds": ["/srv:/srv:ro"], "NetworkMode": "default", "AutoRemove": true,
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
                "Memory": 67108864, "NanoCpus": 500000000, "CpuShares": 0,
                "LogConfig": {"Type": "", "Config": {}}, "ConsoleSize": [0, 0],
            },
            "NetworkingConfig": {"EndpointsConfig": {}},
        });
        let r = run_request(&body, Some("web".into())).expect("maps");
        assert_eq!(r.image, "busybox");
        assert_eq!(r.cmd, ["sh", "-c", "echo hi"]);
        assert_eq!(r.publish, ["8080:80"]);
        assert_eq!(r.volumes, ["/srv:/srv:ro", "/data"]);
        assert!(r.rm);
        assert_eq!(r.limits.memory, Some(64 << 20));
        assert_eq!(r.limits.cpus, Some(0.5));
        assert_eq!(r.network, None);
        assert_eq!(r.name.as_deref(), Some("web"));
    }

    #[test]
    fn a_field_reg_does_not_support_is_refused_when_set() {
        for (body, key) in [
            (
                serde_json::json!({"Image": "b", "HostConfig": {"CpuRealtimeRuntime": 1000}}),
                "CpuRealtimeRuntime",
            ),
            (
                serde_json::json!({"Image": "b", "MacAddress": "02:42:ac:11:00:02"}),
                "MacAddress",
            ),
            (
                serde_json::json!({"Image": "b", "HostConfig": {"LogConfig": {"Type": "syslog"}}}),
                "syslog",
            ),
            (
                serde_json::json!({"Image": "b", "Healthcheck": {"Interval": 5}}),
                "Healthcheck",
            ),
        ] {
            let e = run_request(&body, None).expect_err("refused");
            assert!(e.message.contains(key), "{key}: {}", e.message);
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn frames_carry_the_stream_and_the_big_endian_size() {
        assert_eq!(&frame(2, b"hi")[..], &[2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
    }
}
