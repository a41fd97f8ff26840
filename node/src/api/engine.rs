//! Docker's Engine API, the first part: what `docker version`, `info`, `ps`, `images` and
//! `inspect` ask for, and a container's life without attaching (`run -d`, `logs`, `stop`,
//! `kill`, `wait`, `rm`: [`super::engine_containers`]), served under `/v1.NN/…` (the version a client negotiated from `/_ping`)
//! beside the agent's own API. Shapes follow the Engine API's reference; a field reg has no
//! value for is left at docker's zero value.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, RawPathParams, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::engine_archive as archive;
use super::engine_attach as attach;
use super::engine_containers as run;
use super::engine_control as ctl;
use super::engine_filters::{self as filters, Filters};
use super::engine_images as images;
use super::engine_networks as nets;
use super::error::ApiError;
use super::shared::{flag, AgentState, Param};
use crate::containers::{Record, Status};
use crate::image::ImageRecord;

/// The newest Engine API version served (docker 25's; the 28.x and 29.x CLIs and Compose
/// negotiate down to it).
pub const ENGINE_API_VERSION: &str = "1.44";
/// The oldest version a client may ask for (docker's own minimum).
pub const ENGINE_MIN_API_VERSION: &str = "1.24";
/// The same two versions as numbers, to compare with.
const NEWEST: (u32, u32) = (1, 44);
const OLDEST: (u32, u32) = (1, 24);

/// The Engine API's routes: `versioned`, nested under `/{version}` by [`super::router`] (the
/// version checked), else at the root.
/// `extra` are routes added by the cli (docker's `/build`, on the builder).
pub fn router(versioned: bool, extra: Router<Arc<AgentState>>) -> Router<Arc<AgentState>> {
    let r = routes().merge(extra);
    if versioned {
        r.route_layer(axum::middleware::from_fn(self::versioned))
    } else {
        r
    }
}

fn routes() -> Router<Arc<AgentState>> {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(super::system::info))
        .route("/containers/json", get(list_containers))
        .route("/containers/{id}/json", get(inspect_container))
        .route("/containers/create", post(run::create))
        .route("/containers/{id}/start", post(run::start))
        .route("/containers/{id}/stop", post(run::stop))
        .route("/containers/{id}/kill", post(run::kill))
        .route("/containers/{id}/wait", post(run::wait))
        .route("/containers/{id}/logs", get(run::logs))
        .route("/containers/{id}", delete(run::remove))
        .route(
            "/containers/{id}/archive",
            get(archive::get).head(archive::head).put(archive::put),
        )
        .route("/containers/{id}/attach", post(attach::attach))
        .route("/containers/{id}/restart", post(ctl::restart))
        .route("/containers/{id}/pause", post(ctl::pause))
        .route("/containers/{id}/unpause", post(ctl::unpause))
        .route("/containers/{id}/rename", post(ctl::rename))
        .route("/containers/{id}/update", post(ctl::update))
        .route("/containers/{id}/changes", get(ctl::changes))
        .route("/containers/{id}/export", get(archive::export))
        .route("/containers/{id}/top", get(ctl::top))
        .route("/containers/{id}/stats", get(ctl::stats))
        .route("/containers/prune", post(ctl::prune))
        .route("/system/df", get(ctl::df))
        .route("/auth", post(ctl::auth))
        .route("/events", get(super::engine_events::events))
        .route("/containers/{id}/resize", post(attach::resize))
        .route("/containers/{id}/exec", post(attach::exec_create))
        .route("/exec/{id}/start", post(attach::exec_start))
        .route("/exec/{id}/resize", post(attach::exec_resize))
        .route("/exec/{id}/json", get(attach::exec_inspect))
        .route("/images/json", get(list_images))
        .route("/images/create", post(images::create))
        .route("/images/get", get(images::save_many))
        .route("/images/load", post(images::load))
        .route("/images/prune", post(images::prune))
        .route("/build/prune", post(images::build_prune))
        .route("/networks", get(nets::list))
        .route("/networks/create", post(nets::create))
        .route("/networks/prune", post(nets::prune))
        .route("/networks/{id}", get(nets::inspect).delete(nets::remove))
        .route("/networks/{id}/connect", post(nets::connect))
        .route("/networks/{id}/disconnect", post(nets::disconnect))
        .route("/volumes", get(nets::volume_list))
        .route("/volumes/create", post(nets::volume_create))
        .route("/volumes/prune", post(nets::volume_prune))
        .route(
            "/volumes/{name}",
            get(nets::volume_inspect).delete(nets::volume_remove),
        )
        .route(
            "/images/{*rest}",
            get(images::get).post(images::post).delete(images::delete),
        )
}

/// `(major, minor)` of `v1.44`.
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.strip_prefix('v')?.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Only `/v1.NN/…` reaches the Engine API, and only a version this agent serves.
async fn versioned(params: RawPathParams, req: Request, next: Next) -> Response {
    let first = params
        .iter()
        .find(|(k, _)| *k == "version")
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    let Some(asked) = parse_version(&first) else {
        return ApiError::no_such_api(format!("/{first}{}", req.uri())).into_response();
    };
    if asked > NEWEST {
        return ApiError::bad_request(format!(
            "client version {}.{} is too new. Maximum supported API version is {ENGINE_API_VERSION}",
            asked.0, asked.1
        ))
        .into_response();
    }
    if asked < OLDEST {
        return ApiError::bad_request(format!(
            "client version {}.{} is too old. Minimum supported API version is {ENGINE_MIN_API_VERSION}, please upgrade your client to a newer version",
            asked.0, asked.1
        ))
        .into_response();
    }
    next.run(req).await
}

/// `GET|HEAD /_ping`: `OK` and the headers a client negotiates with.
pub async fn ping(method: Method) -> Response {
    let body = if method == Method::HEAD { "" } else { "OK" };
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert("api-version", HeaderValue::from_static(ENGINE_API_VERSION));
    h.insert("ostype", HeaderValue::from_static("linux"));
    h.insert("docker-experimental", HeaderValue::from_static("false"));
    h.insert("builder-version", HeaderValue::from_static("1"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn version(State(st): State<Arc<AgentState>>) -> Json<serde_json::Value> {
    let arch = crate::image::node_platform().1;
    let kernel = super::system::kernel_version();
    let v = env!("CARGO_PKG_VERSION");
    Json(serde_json::json!({
        "Platform": { "Name": "reg" },
        "Components": [{
            "Name": "Engine",
            "Version": v,
            "Details": {
                "ApiVersion": ENGINE_API_VERSION,
                "MinAPIVersion": ENGINE_MIN_API_VERSION,
                "Os": "linux",
                "Arch": arch,
                "KernelVersion": kernel,
                // reg's: the registry a short name (`busybox`) means on this node.
                "DefaultRegistry": st.default_registry,
            },
        }],
        "Version": v,
        "ApiVersion": ENGINE_API_VERSION,
        "MinAPIVersion": ENGINE_MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": arch,
        "KernelVersion": kernel,
        "BuildTime": "",
    }))
}

/// Seconds since the epoch of an RFC 3339 time (0 when empty or unreadable).
pub(super) fn unix_seconds(t: &str) -> i64 {
    humantime::parse_rfc3339_weak(t)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// docker's `units.HumanDuration`: how `docker ps` words an age.
fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (m, h) = (s / 60, s / 3600);
    match () {
        _ if s < 1 => "Less than a second".into(),
        _ if s == 1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".into(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if h < 24 * 7 * 2 => format!("{} days", h / 24),
        _ if h < 24 * 30 * 2 => format!("{} weeks", h / 24 / 7),
        _ if h < 24 * 365 * 2 => format!("{} months", h / 24 / 30),
        _ => format!("{} years", h / 24 / 365),
    }
}

fn since(t: &str) -> std::time::Duration {
    humantime::parse_rfc3339_weak(t)
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default()
}

/// `docker ps`'s STATUS column.
fn status_text(r: &Record) -> String {
    let s = &r.state;
    match s.status {
        Status::Created => "Created".into(),
        Status::Running if s.paused => {
            format!("Up {} (Paused)", human_duration(since(&s.started_at)))
        }
        Status::Running => {
            let up = format!("Up {}", human_duration(since(&s.started_at)));
            match s.health.as_ref().map(|h| h.status) {
                Some(crate::containers::health::HealthStatus::Starting) => {
                    format!("{up} (health: starting)")
                }
                Some(h) => format!("{up} ({})", h.as_str()),
                None => up,
            }
        }
        Status::Exited => format!(
            "Exited ({}) {} ago",
            s.exit_code,
            human_duration(since(&s.finished_at))
        ),
    }
}

/// One entry of `GET /containers/json`.
fn container_summary(r: &Record) -> serde_json::Value {
    let ports: Vec<serde_json::Value> = r
        .state
        .ports
        .iter()
        .map(|p| {
            serde_json::json!({
                "IP": p.host_ip,
                "PrivatePort": p.container_port,
                "PublicPort": p.host_port,
                "Type": p.proto,
            })
        })
        .collect();
    let networks: serde_json::Map<String, serde_json::Value> = r
        .networks
        .iter()
        .map(|n| (n.network.clone(), super::containers::endpoint_json(n)))
        .collect();
    let mounts: Vec<serde_json::Value> = r
        .spec
        .mounts
        .iter()
        .map(|m| {
            serde_json::json!({
                "Source": m.source,
                "Destination": m.target,
                "RW": !m.readonly,
            })
        })
        .collect();
    serde_json::json!({
        "Id": r.id,
        "Names": [format!("/{}", r.name)],
        "Image": r.image,
        "ImageID": r.image_id,
        "Command": r.spec.args.join(" "),
        "Created": unix_seconds(&r.created),
        "Ports": ports,
        "Labels": r.request.labels,
        "State": r.state.docker_status(),
        "Status": status_text(r),
        "HostConfig": { "NetworkMode": r.spec.network },
        "NetworkSettings": { "Networks": networks },
        "Mounts": mounts,
    })
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default, deserialize_with = "flag")]
    all: bool,
    #[serde(default)]
    limit: Option<i64>,
    /// docker's JSON map of filters; none is supported yet, so any is refused (never ignored).
    #[serde(default)]
    filters: Option<String>,
}

/// `GET /containers/json[?all=1&limit=N&filters=…]`: newest first, running ones unless `all`
/// (or a `status`/`exited` filter, which looks at all, as docker does).
async fn list_containers(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let f = Filters::parse(
        q.filters.as_deref(),
        &[
            "id", "name", "label", "status", "ancestor", "exited", "network", "volume", "health",
        ],
    )?;
    let all = st.containers.list()?;
    let limit = q.limit.filter(|l| *l > 0).map(|l| l as usize);
    let every = q.all
        || limit.is_some()
        || !f.values("status").is_empty()
        || !f.values("exited").is_empty();
    let ancestors: Vec<(String, String)> = {
        let wanted = f.values("ancestor").to_vec();
        if wanted.is_empty() {
            Vec::new()
        } else {
            let store = st.store.clone();
            let images = tokio::task::spawn_blocking(move || store.list()).await??;
            let default = st.default_registry.clone();
            wanted
                .iter()
                .filter_map(|w| {
                    let full = reg_registry::Reference::parse(w, &default).map(|r| r.to_string());
                    let bare = w.trim_start_matches("sha256:");
                    images
                        .iter()
                        .find(|i| {
                            Ok(&i.reference) == full.as_ref()
                                || (bare.len() >= 12
                                    && i.id.trim_start_matches("sha256:").starts_with(bare))
                        })
                        .map(|i| (i.reference.clone(), i.id.clone()))
                })
                .collect()
        }
    };
    let list: Vec<serde_json::Value> = all
        .iter()
        .filter(|r| every || r.state.status.is_running())
        .filter(|r| {
            f.any("id", |v| r.id.starts_with(v))
                && f.any("name", |v| filters::name_matches(v, &r.name))
                && f.labels_match("label", |k| r.request.labels.get(k).map(String::as_str))
                && f.any("status", |v| v == r.state.docker_status())
                && f.any("health", |v| {
                    let h = r
                        .state
                        .health
                        .as_ref()
                        .filter(|_| r.state.status.is_running());
                    match h {
                        Some(h) => v == h.status.as_str(),
                        None => v == "none",
                    }
                })
                && f.any("exited", |v| {
                    r.state.status == Status::Exited && v.parse() == Ok(r.state.exit_code)
                })
                && f.any("network", |v| {
                    r.spec.network == v
                        || r.networks
                            .iter()
                            .any(|n| n.network == v || n.network_id.starts_with(v))
                })
                && f.any("volume", |v| {
                    r.spec.mounts.iter().any(|m| {
                        m.target == v
                            || m.source.parent().and_then(|p| p.file_name())
                                == Some(std::ffi::OsStr::new(v))
                    })
                })
                && (f.values("ancestor").is_empty()
                    || ancestors
                        .iter()
                        .any(|(reference, id)| r.image == *reference || r.image_id == *id))
        })
        .take(limit.unwrap_or(usize::MAX))
        .map(container_summary)
        .collect();
    Ok(Json(list).into_response())
}

async fn inspect_container(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id }): UrlPath<Param>,
) -> Result<Response, ApiError> {
    let rec = st.containers.resolve(&id)?;
    Ok(Json(super::containers::inspect_json(&rec)).into_response())
}

/// `GET /images/json`: one entry per image id, with every name it has.
async fn list_images(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let f = Filters::parse(q.filters.as_deref(), &["label", "reference", "dangling"])?;
    let store = st.store.clone();
    let records: Vec<ImageRecord> = tokio::task::spawn_blocking(move || store.list())
        .await??
        .into_iter()
        .filter(|r| {
            let labels = &r.config["config"]["Labels"];
            f.labels_match("label", |k| labels[k].as_str())
                && f.any("reference", |v| reference_matches(v, &r.reference))
                // Every stored image has a name: none is dangling.
                && f.any("dangling", |v| v != "true" && v != "1")
        })
        .collect();
    let mut by_id: BTreeMap<String, Vec<ImageRecord>> = BTreeMap::new();
    for r in records {
        by_id.entry(r.id.clone()).or_default().push(r);
    }
    let mut list: Vec<serde_json::Value> = by_id
        .into_values()
        .filter_map(|recs| {
            let first = recs.first()?.clone();
            Some(serde_json::json!({
                "Id": first.id,
                "ParentId": "",
                "RepoTags": recs.iter().map(|r| r.reference.clone()).collect::<Vec<_>>(),
                "RepoDigests": repo_digests(&recs),
                "Created": unix_seconds(first.config["created"].as_str().unwrap_or("")),
                "Size": first.size,
                "SharedSize": -1,
                "Labels": first.config["config"]["Labels"].as_object().cloned().unwrap_or_default(),
                "Containers": -1,
            }))
        })
        .collect();
    list.sort_by_key(|v| std::cmp::Reverse(v["Created"].as_i64().unwrap_or(0)));
    Ok(Json(list).into_response())
}

/// docker's `reference` filter: a pattern over `name[:tag]` where `*` matches within one path
/// component; a pattern without a tag matches every tag.
fn reference_matches(pattern: &str, reference: &str) -> bool {
    fn glob(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len())
                .take_while(|i| *i == 0 || s[*i - 1] != b'/')
                .any(|i| glob(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
        }
    }
    let name = match reference.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => n,
        _ => reference,
    };
    let has_tag = pattern.rsplit('/').next().is_some_and(|l| l.contains(':'));
    let p = pattern.as_bytes();
    if has_tag {
        glob(p, reference.as_bytes())
            || reference
                .split_once('/')
                .is_some_and(|(_, rest)| glob(p, rest.as_bytes()))
    } else {
        // The pattern may also leave out the registry (`docker images 'node/*'`).
        glob(p, name.as_bytes())
            || name
                .split_once('/')
                .is_some_and(|(_, rest)| glob(p, rest.as_bytes()))
    }
}

/// `registry/repository@digest` of each name.
pub(super) fn repo_digests(recs: &[ImageRecord]) -> Vec<String> {
    let mut out: Vec<String> = recs
        .iter()
        .filter_map(|r| {
            let name = reg_registry::Reference::parse(&r.reference, "").ok()?;
            Some(format!("{}/{}@{}", name.registry, name.repo, r.digest))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filters_match_as_dockers_do() {
        let r = "127.0.0.1:5000/node/run:v1";
        for (p, want) in [
            ("node/run", true),
            ("node/*", true),
            ("node/run:v1", true),
            ("node/run:v2", false),
            ("*/run", true),
            ("run", false),
            ("127.0.0.1:5000/node/run", true),
            ("127.0.0.1:5000/node/*:v*", true),
            ("*", false),
        ] {
            assert_eq!(reference_matches(p, r), want, "{p}");
        }
    }

    #[test]
    fn ages_are_worded_as_docker_ps_words_them() {
        let s = std::time::Duration::from_secs;
        for (secs, words) in [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (3600, "About an hour"),
            (7200, "2 hours"),
            (3 * 86400, "3 days"),
            (20 * 86400, "2 weeks"),
            (90 * 86400, "3 months"),
            (800 * 86400, "2 years"),
        ] {
            assert_eq!(human_duration(s(secs)), words, "{secs} s");
        }
    }

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse_version("v1.44"), Some((1, 44)));
        assert!(parse_version("v1.9") < parse_version("v1.44"));
        assert_eq!(parse_version("containers"), None);
        assert_eq!(parse_version("v1"), None);
    }
}
