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
use super::shared::{channel_body, flag, AgentState};
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
                "LogConfig"
                    if v["Type"]
                        .as_str()
                        .is_none_or(|t| t.is_empty() || t == "json-file") => {}
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
            "Tty" => req.tty = v.as_bool().unwrap_or(false),
            // Which streams the client means to attach: its business, not the container's.
            "AttachStdin" | "AttachStdout" | "AttachStderr" | "StdinOnce" => {}
            // `-v /path`: a new anonymous volume.
            "Volumes" => req
                .volumes
                .extend(v.as_object().into_iter().flatten().map(|(p, _)| p.clone())),
            // The ports `-p` publishes are listed here too; others would be `--expose`.
            "ExposedPorts" => {
                let extra: Vec<&String> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(p, _)| p)
                    .filter(|p| !published.contains(p))
                    .collect();
                if !extra.is_empty() {
                    return Err(unsupported("Config", k, v));
                }
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
    let c = create::create(&st.containers, &st.store, &st.default_registry, req).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "Id": c.id, "Warnings": [] })),
    )
        .into_response())
}

/// `POST /containers/{id}/start`: 204, or 304 when it already runs.
pub async fn start(
    State(st): State<Arc<AgentState>>,
    UrlPath((_, id)): UrlPath<(String, String)>,
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
    UrlPath((_, id)): UrlPath<(String, String)>,
    Query(q): Query<StopQuery>,
) -> Result<Response, ApiError> {
    if q.signal.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(
            "stop with a signal is not supported by reg yet (kill -s, then stop)",
        ));
    }
    let t = q.t.map(|t| Duration::from_secs(t.max(0) as u64));
    Ok(answer(control::stop(&st.containers, &id, t).await?))
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
    UrlPath((_, id)): UrlPath<(String, String)>,
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
    UrlPath((_, id)): UrlPath<(String, String)>,
    Query(q): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    match q.condition.as_deref().unwrap_or("not-running") {
        "not-running" | "next-exit" | "removed" | "" => {}
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid condition {other:?}: not-running, next-exit or removed"
            )))
        }
    }
    // As dockerd: the status line and headers go out at once (a client waits for them before
    // it starts the container), the body when the container has exited.
    st.containers.resolve(&id)?;
    let cs = st.containers.clone();
    let body = async_stream_frames(move |tx| async move {
        let line = match control::wait(&cs, &id).await {
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
    UrlPath((_, id)): UrlPath<(String, String)>,
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
fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    Bytes::from(out)
}

/// `GET /containers/{id}/logs`: the log as docker's multiplexed stream (raw with a terminal).
pub async fn logs(
    State(st): State<Arc<AgentState>>,
    UrlPath((_, id)): UrlPath<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    for (name, v) in [("since", &q.since), ("until", &q.until)] {
        if v.as_deref().is_some_and(|s| !s.is_empty() && s != "0") {
            return Err(ApiError::bad_request(format!(
                "logs --{name} is not supported by reg yet"
            )));
        }
    }
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
    let stream = async_stream_frames(move |tx| async move {
        while let Some(line) = lines.recv().await {
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
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
            "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}},
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
                serde_json::json!({"Image": "b", "HostConfig": {"CpuShares": 512}}),
                "CpuShares",
            ),
            (
                serde_json::json!({"Image": "b", "Labels": {"a": "b"}}),
                "Labels",
            ),
            (
                serde_json::json!({"Image": "b", "ExposedPorts": {"9/tcp": {}}}),
                "ExposedPorts",
            ),
            (
                serde_json::json!({"Image": "b", "Healthcheck": {"Test": ["CMD", "true"]}}),
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
