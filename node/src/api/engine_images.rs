//! Docker's Engine API for images beyond listing: pull (`POST /images/create`), inspect,
//! history, tag, push and remove, with progress in docker's JSON-message format (what
//! `docker pull`/`push` render as progress bars). Names may hold slashes and a registry's
//! port, so every `/images/{name}/…` route is one wildcard, told apart by its last part.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::shared::{decode_auth, flag, stream_response, AgentState, Param};
use crate::image::{ImageRecord, Progress};
use reg_registry::client::RegistryClient;
use reg_registry::Reference;

fn image_event(st: &AgentState, action: &str, reference: &str) {
    st.containers.events.emit(
        crate::events::Event::new(crate::events::Kind::Image, action, reference)
            .with("name", reference),
    );
}

/// docker's short id of a layer: the first 12 hex digits of its digest.
fn short(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

fn message(v: Value) -> Bytes {
    Bytes::from(format!("{v}\n"))
}

/// A failure in docker's JSON-message form (the client prints it and exits 1).
fn error_message(m: &str) -> Bytes {
    message(json!({ "errorDetail": { "message": m }, "error": m }))
}

/// One progress event of a pull or push, as docker's JSON message.
fn progress_message(p: Progress, pull: bool) -> Option<Bytes> {
    let v = match p {
        Progress::Resolved { .. } => return None,
        Progress::LayerCached { digest } => json!({
            "status": if pull { "Already exists" } else { "Layer already exists" },
            "progressDetail": {}, "id": short(&digest),
        }),
        Progress::LayerBytes {
            digest,
            done,
            total,
        } => json!({
            "status": if pull { "Downloading" } else { "Pushing" },
            "progressDetail": { "current": done, "total": total },
            "id": short(&digest),
        }),
        Progress::LayerDone { digest } => json!({
            "status": if pull { "Pull complete" } else { "Pushed" },
            "progressDetail": {}, "id": short(&digest),
        }),
        Progress::LayerMounted { digest, from } => json!({
            "status": format!("Mounted from {from}"),
            "progressDetail": {}, "id": short(&digest),
        }),
    };
    Some(message(v))
}

/// `name` with `tag`, which may be a digest (`docker pull name@sha256:…` sends it so).
fn with_tag(name: &str, tag: &str) -> String {
    if tag.contains(':') {
        format!("{name}@{tag}")
    } else {
        format!("{name}:{tag}")
    }
}

fn parse(st: &AgentState, name: &str) -> Result<Reference, ApiError> {
    Reference::parse(name, &st.default_registry).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[derive(Deserialize)]
pub struct CreateQuery {
    #[serde(default, rename = "fromImage")]
    from_image: Option<String>,
    #[serde(default, rename = "fromSrc")]
    from_src: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    platform: Option<String>,
    /// `docker import`: the name for the new image, and its history's comment.
    #[serde(default)]
    repo: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// `POST /images/create?fromImage=NAME&tag=TAG`: a pull, its progress as docker's JSON
/// messages. Names without a registry are the node's default registry's, as with `reg pull`.
pub async fn create(
    State(st): State<Arc<AgentState>>,
    headers: HeaderMap,
    Query(q): Query<CreateQuery>,
    raw: axum::extract::RawQuery,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    if let Some(src) = q.from_src.as_deref().filter(|s| !s.is_empty()) {
        if src != "-" {
            return Err(ApiError::bad_request(format!(
                "importing from {src:?}: reg imports a tarball sent with the request only \
                 (docker import FILE or -); download it first"
            )));
        }
        return import(&st, &q, raw.0.as_deref(), body).await;
    }
    if let Some(p) = q.platform.as_deref().filter(|p| !p.is_empty()) {
        let (os, arch) = crate::image::node_platform();
        if p != format!("{os}/{arch}") {
            return Err(ApiError::bad_request(format!(
                "platform {p} is not this node's ({os}/{arch})"
            )));
        }
    }
    let name = q
        .from_image
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("fromImage is required"))?;
    let tag = q.tag.unwrap_or_default();
    let full = if tag.is_empty() {
        if !name.contains('@') && !has_tag(&name) {
            return Err(ApiError::bad_request(
                "pulling every tag of a repository (pull -a) is not supported by reg: name a tag",
            ));
        }
        name.clone()
    } else {
        with_tag(&name, &tag)
    };
    let r = parse(&st, &full)?;
    let client = RegistryClient::with_credentials(&r.registry, decode_auth(&headers));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let store = st.store.clone();
    let key = r.to_string();
    let before = {
        let (store, key) = (store.clone(), key.clone());
        tokio::task::spawn_blocking(move || store.get(&key))
            .await?
            .ok()
            .flatten()
    };
    let st2 = st.clone();
    let _ = tx.send(message(json!({
        "status": format!("Pulling from {}", r.repo),
        "id": r.tag.as_ref().map_or_else(|| "latest".to_string(), |t| t.to_string()),
    })));
    tokio::spawn(async move {
        let ptx = tx.clone();
        let began = std::time::Instant::now();
        // Each layer's last byte count: what the pull downloaded.
        let layers = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let seen = layers.clone();
        let result = store
            .pull(&client, &r, move |p: Progress| {
                if let Progress::LayerBytes { digest, done, .. } = &p {
                    if let Ok(mut l) = seen.lock() {
                        l.insert(digest.clone(), *done);
                    }
                }
                if let Some(m) = progress_message(p, true) {
                    let _ = ptx.send(m);
                }
            })
            .await;
        let bytes = layers.lock().map(|l| l.values().sum()).unwrap_or(0);
        st2.containers
            .metrics
            .pulled(result.is_ok(), began.elapsed(), bytes);
        match result {
            Ok(rec) => {
                image_event(&st2, "pull", &key);
                let _ = tx.send(message(
                    json!({ "status": format!("Digest: {}", rec.digest) }),
                ));
                let fresh = before.is_none_or(|b| b.digest != rec.digest);
                let status = if fresh {
                    format!("Status: Downloaded newer image for {key}")
                } else {
                    format!("Status: Image is up to date for {key}")
                };
                let _ = tx.send(message(json!({ "status": status })));
            }
            Err(e) => {
                let _ = tx.send(error_message(&e.to_string()));
            }
        }
    });
    Ok(stream_response(rx))
}

/// Whether a name ends in a tag (a `:` after its last `/`).
fn has_tag(name: &str) -> bool {
    name.rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'))
}

/// The stored image `name` means: a reference (completed with the default registry) or an
/// image id (full, or a prefix of 12 digits or more); with every reference of the same id.
async fn find(
    st: &AgentState,
    name: &str,
) -> Result<(ImageRecord, Vec<ImageRecord>, bool), ApiError> {
    let store = st.store.clone();
    let records = tokio::task::spawn_blocking(move || store.list()).await??;
    let full = Reference::parse(name, &st.default_registry)
        .map(|r| r.to_string())
        .unwrap_or_default();
    let bare = name.trim_start_matches("sha256:");
    let by_name = records
        .iter()
        .find(|r| r.reference == name || r.reference == full);
    let (rec, by_id) = match by_name {
        Some(r) => (r, false),
        None => {
            let found = records.iter().find(|r| {
                bare.len() >= 12
                    && bare.bytes().all(|b| b.is_ascii_hexdigit())
                    && r.id.trim_start_matches("sha256:").starts_with(bare)
            });
            match found {
                Some(r) => (r, true),
                None => return Err(ApiError::not_found(format!("No such image: {name}"))),
            }
        }
    };
    let same: Vec<ImageRecord> = records.iter().filter(|r| r.id == rec.id).cloned().collect();
    Ok((rec.clone(), same, by_id))
}

/// `GET /images/{name}/json` and `GET /images/{name}/history`.
pub async fn get(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id: rest }): UrlPath<Param>,
) -> Result<Response, ApiError> {
    if let Some(name) = rest.strip_suffix("/json") {
        let (rec, same, _) = find(&st, name).await?;
        return Ok(Json(inspect(&rec, &same)).into_response());
    }
    if let Some(name) = rest.strip_suffix("/get") {
        let (rec, _, _) = find(&st, name).await?;
        return Ok(save_response(&st, vec![rec]));
    }
    if let Some(name) = rest.strip_suffix("/history") {
        let (rec, _, _) = find(&st, name).await?;
        return Ok(Json(history(&rec)).into_response());
    }
    Err(ApiError::not_found(format!(
        "no such image API: /images/{rest}"
    )))
}

fn inspect(rec: &ImageRecord, same: &[ImageRecord]) -> Value {
    let c = &rec.config;
    json!({
        "Id": rec.id,
        "RepoTags": same.iter().map(|r| r.reference.clone()).collect::<Vec<_>>(),
        "RepoDigests": super::engine::repo_digests(same),
        "Parent": "",
        "Comment": c["comment"].as_str().unwrap_or(""),
        "Created": c["created"].as_str().unwrap_or("0001-01-01T00:00:00Z"),
        "Author": c["author"].as_str().unwrap_or(""),
        "Config": c["config"],
        "Architecture": c["architecture"],
        "Os": c["os"],
        "Size": rec.size,
        "RootFS": c["rootfs"],
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
    })
}

/// The config's history, newest first, as `docker history` reads it (layer sizes are not
/// kept per step: 0).
fn history(rec: &ImageRecord) -> Value {
    let steps = rec.config["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let n = steps.len();
    let list: Vec<Value> = steps
        .iter()
        .enumerate()
        .rev()
        .map(|(i, h)| {
            json!({
                "Id": if i + 1 == n { rec.id.clone() } else { "<missing>".to_string() },
                "Created": super::engine::unix_seconds(h["created"].as_str().unwrap_or("")),
                "CreatedBy": h["created_by"].as_str().unwrap_or(""),
                "Tags": if i + 1 == n { json!([rec.reference]) } else { Value::Null },
                "Size": 0,
                "Comment": h["comment"].as_str().unwrap_or(""),
            })
        })
        .collect();
    Value::Array(list)
}

#[derive(Deserialize)]
pub struct PostQuery {
    #[serde(default)]
    repo: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

/// `POST /images/{name}/tag?repo=&tag=` and `POST /images/{name}/push?tag=`.
pub async fn post(
    State(st): State<Arc<AgentState>>,
    headers: HeaderMap,
    UrlPath(Param { id: rest }): UrlPath<Param>,
    Query(q): Query<PostQuery>,
) -> Result<Response, ApiError> {
    if let Some(name) = rest.strip_suffix("/tag") {
        let (rec, _, _) = find(&st, name).await?;
        let repo = q
            .repo
            .filter(|r| !r.is_empty())
            .ok_or_else(|| ApiError::bad_request("tag needs repo"))?;
        let tag = q.tag.filter(|t| !t.is_empty()).unwrap_or("latest".into());
        let target = parse(&st, &with_tag(&repo, &tag))?;
        if target.digest.is_some() {
            return Err(ApiError::bad_request(
                "refusing to create a tag with a digest",
            ));
        }
        let (store, target) = (st.store.clone(), target.to_string());
        let tagged = tokio::task::spawn_blocking(move || store.tag(&rec, &target)).await??;
        image_event(&st, "tag", &tagged.reference);
        return Ok(StatusCode::CREATED.into_response());
    }
    if let Some(name) = rest.strip_suffix("/push") {
        return push(st.clone(), &headers, name, q.tag.unwrap_or_default()).await;
    }
    Err(ApiError::not_found(format!(
        "no such image API: /images/{rest}"
    )))
}

/// A push of `name:tag`, or of every local tag of `name` when `tag` is empty.
async fn push(
    st: Arc<AgentState>,
    headers: &HeaderMap,
    name: &str,
    tag: String,
) -> Result<Response, ApiError> {
    let store = st.store.clone();
    let records = tokio::task::spawn_blocking(move || store.list()).await??;
    let repo = parse(&st, &with_tag(name, "latest"))?;
    let base = format!("{}/{}", repo.registry, repo.repo);
    let mut recs: Vec<(Reference, ImageRecord)> = records
        .into_iter()
        .filter_map(|r| {
            let parsed = Reference::parse(&r.reference, "").ok()?;
            let same_repo = format!("{}/{}", parsed.registry, parsed.repo) == base;
            let wanted =
                tag.is_empty() || parsed.tag.as_ref().is_some_and(|t| t.to_string() == tag);
            (same_repo && wanted && parsed.tag.is_some()).then_some((parsed, r))
        })
        .collect();
    recs.sort_by_key(|a| a.0.to_string());
    if recs.is_empty() {
        let what = if tag.is_empty() {
            base
        } else {
            format!("{base}:{tag}")
        };
        return Err(ApiError::not_found(format!("No such image: {what}")));
    }
    let client = RegistryClient::with_credentials(&repo.registry, decode_auth(headers));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let _ = tx.send(message(json!({
        "status": format!("The push refers to repository [{base}]"),
    })));
    let store = st.store.clone();
    tokio::spawn(async move {
        let st = st;
        for (target, rec) in recs {
            let ptx = tx.clone();
            let result = store
                .push(&client, &rec, &target, move |p: Progress| {
                    if let Some(m) = progress_message(p, false) {
                        let _ = ptx.send(m);
                    }
                })
                .await;
            let tag = target
                .tag
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default();
            match result {
                Ok(digest) => {
                    image_event(&st, "push", &target.to_string());
                    let size = rec.manifest.len();
                    let _ = tx.send(message(json!({
                        "status": format!("{tag}: digest: {digest} size: {size}"),
                    })));
                    let _ = tx.send(message(json!({
                        "progressDetail": {},
                        "aux": { "Tag": tag, "Digest": digest, "Size": size },
                    })));
                }
                Err(e) => {
                    let _ = tx.send(error_message(&e.to_string()));
                    return;
                }
            }
        }
    });
    Ok(stream_response(rx))
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    #[serde(default, deserialize_with = "flag")]
    force: bool,
    #[serde(default, deserialize_with = "flag")]
    #[allow(dead_code)]
    noprune: bool,
}

/// `DELETE /images/{name}[?force=1]`: `[{"Untagged": …}, {"Deleted": …}]`. By id, an image
/// with several names needs `force` (and loses them all), as with docker.
pub async fn delete(
    State(st): State<Arc<AgentState>>,
    UrlPath(Param { id: name }): UrlPath<Param>,
    Query(q): Query<DeleteQuery>,
) -> Result<Response, ApiError> {
    let (rec, same, by_id) = find(&st, &name).await?;
    let targets = if by_id {
        if same.len() > 1 && !q.force {
            return Err(ApiError::conflict(format!(
                "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                short(&rec.id)
            )));
        }
        same
    } else {
        vec![rec]
    };
    let mut out = Vec::new();
    for t in targets {
        for line in remove_record(&st, t, q.force).await? {
            if let Some((k, v)) = line.split_once(": ") {
                image_event(&st, if k == "Untagged" { "untag" } else { "delete" }, v);
                out.push(json!({ k: v }));
            }
        }
    }
    Ok(Json(out).into_response())
}

/// A `std::io::Write` whose bytes become a response body (written on a blocking thread; a
/// client that stops reading stops the writer with an error).
struct BodyWriter(tokio::sync::mpsc::Sender<Bytes>);

impl std::io::Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The archive of `recs` as the body (`application/x-tar`), written as it is read.
fn save_response(st: &AgentState, recs: Vec<ImageRecord>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || {
        let w = std::io::BufWriter::with_capacity(256 * 1024, BodyWriter(tx));
        if let Err(e) = crate::image_archive::save(&store, &recs, w) {
            // The status line is gone: the tar ends short, which the client reports.
            tracing::warn!(error = %e, "docker save");
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Response::builder()
        .header("content-type", "application/x-tar")
        .body(axum::body::Body::from_stream(stream))
        .unwrap_or_else(|e| ApiError::internal(e).into_response())
}

/// `GET /images/get?names=A&names=B`: one archive of several images.
pub async fn save_many(
    State(st): State<Arc<AgentState>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("the query: {e}")))?;
    let mut recs = Vec::new();
    for (k, v) in pairs {
        if k == "names" {
            let (_, same, by_id) = find(&st, &v).await?;
            // By name: that name; by id: every name of it.
            if by_id {
                recs.extend(same);
            } else {
                let (rec, _, _) = find(&st, &v).await?;
                recs.push(rec);
            }
        }
    }
    if recs.is_empty() {
        return Err(ApiError::bad_request("name at least one image (names=…)"));
    }
    Ok(save_response(&st, recs))
}

#[derive(Deserialize)]
pub struct LoadQuery {
    #[serde(default, deserialize_with = "flag")]
    quiet: bool,
}

/// `POST /images/load`: the body is a `docker save` archive; answers docker's JSON messages.
pub async fn load(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<LoadQuery>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    use futures::TryStreamExt;
    let stream = body
        .into_data_stream()
        .map_err(|e| std::io::Error::other(e.to_string()));
    let mut reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let (store, default) = (st.store.clone(), st.default_registry.clone());
    let result = tokio::task::spawn_blocking(move || {
        let r = crate::image_archive::load(&store, &mut reader, &default);
        super::engine_archive::drain_rest(&mut reader);
        r
    })
    .await?;
    // The whole archive is in before the answer: a refusal is a status, not a message.
    let refs = result.map_err(|e| match e {
        crate::image_archive::ArchiveError::Invalid(_) => ApiError::bad_request(e.to_string()),
        other => ApiError::internal(other),
    })?;
    // `quiet` only silences progress (reg sends none); what was loaded is always said.
    let _ = q.quiet;
    let mut body = String::new();
    for r in &refs {
        image_event(&st, "load", r);
        body.push_str(&format!(
            "{}\n",
            json!({ "stream": format!("Loaded image: {r}\n") })
        ));
    }
    Response::builder()
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .map_err(ApiError::internal)
}

/// Removes image reference `rec` (one a container uses only with `force`) and what no other
/// image needs: `Untagged: …` and `Deleted: …` lines.
async fn remove_record(
    st: &AgentState,
    rec: ImageRecord,
    force: bool,
) -> Result<Vec<String>, ApiError> {
    let containers = st.containers.list()?;
    let users: Vec<&str> = containers
        .iter()
        .filter(|c| c.image == rec.reference)
        .map(|c| c.name.as_str())
        .collect();
    if !users.is_empty() && !force {
        return Err(ApiError::conflict(format!(
            "unable to remove {}: container {} uses it (remove the container, or rmi -f)",
            rec.reference,
            users.join(", ")
        )));
    }
    let in_use: std::collections::HashSet<std::path::PathBuf> = containers
        .iter()
        .flat_map(|c| c.spec.layers.iter().cloned())
        .collect();
    let store = st.store.clone();
    Ok(tokio::task::spawn_blocking(move || store.remove(&rec.reference, &in_use)).await??)
}

#[derive(Deserialize)]
pub struct ImagePruneQuery {
    filters: Option<String>,
}

/// `POST /images/prune`: images no container uses — only dangling ones (untagged: kept under
/// their id) unless `dangling=false` (`docker image prune -a`) — with what that frees.
pub async fn prune(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<ImagePruneQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = super::engine_filters::Filters::parse(q.filters.as_deref(), &["dangling", "label"])?;
    let all = f
        .values("dangling")
        .iter()
        .any(|v| v == "false" || v == "0");
    let containers = st.containers.list()?;
    let used: std::collections::HashSet<String> = containers
        .iter()
        .flat_map(|c| [c.image.clone(), c.image_id.clone()])
        .collect();
    let in_use: std::collections::HashSet<std::path::PathBuf> = containers
        .iter()
        .flat_map(|c| c.spec.layers.iter().cloned())
        .collect();
    let store = st.store.clone();
    let (deleted, reclaimed) = tokio::task::spawn_blocking(move || {
        let mut deleted: Vec<Value> = Vec::new();
        for rec in store.list()? {
            let dangling = rec.reference.starts_with("sha256:");
            let labels_match =
                f.labels_match("label", |k| rec.config["config"]["Labels"][k].as_str());
            if (!all && !dangling)
                || !labels_match
                || used.contains(&rec.reference)
                || used.contains(&rec.id)
            {
                continue;
            }
            store.untag(&rec.reference)?;
            deleted.push(json!({ "Untagged": rec.reference }));
        }
        // One collection for all of them: the layers no image, cache entry or container keeps.
        let (gone, freed) = store.collect_garbage(&in_use)?;
        deleted.extend(
            gone.iter()
                .filter_map(|l| l.strip_prefix("Deleted: "))
                .map(|d| json!({ "Deleted": d })),
        );
        Ok::<_, crate::image::PullError>((deleted, freed))
    })
    .await??;
    Ok(Json(
        json!({ "ImagesDeleted": deleted, "SpaceReclaimed": reclaimed }),
    ))
}

#[derive(Deserialize)]
pub struct BuildPruneQuery {
    #[serde(rename = "keep-storage", default)]
    keep_storage: Option<u64>,
    #[serde(default)]
    all: Option<String>,
    #[serde(rename = "reserved-space", default)]
    reserved_space: Option<u64>,
}

/// `POST /build/prune`: the build cache's entries, oldest first, until what is kept fits in
/// `keep-storage` bytes (all of them without it), and the layers only they kept.
pub async fn build_prune(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<BuildPruneQuery>,
) -> Result<Json<Value>, ApiError> {
    let _ = q.all;
    let keep = q.keep_storage.or(q.reserved_space).filter(|k| *k > 0);
    let in_use: std::collections::HashSet<std::path::PathBuf> = st
        .containers
        .list()?
        .iter()
        .flat_map(|c| c.spec.layers.iter().cloned())
        .collect();
    let store = st.store.clone();
    let (deleted, reclaimed) =
        tokio::task::spawn_blocking(move || store.prune_build_cache(keep, &in_use)).await??;
    Ok(Json(
        json!({ "CachesDeleted": deleted, "SpaceReclaimed": reclaimed }),
    ))
}

/// The values of every `changes` parameter of a query (docker sends one per `--change`).
pub fn changes_of(raw: Option<&str>) -> Vec<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(raw.unwrap_or(""))
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == "changes")
        .map(|(_, v)| v)
        .collect()
}

/// `docker import`: the request's tar (plain or compressed) as the one layer of a new image,
/// named by `repo`/`tag` (kept under its id without one), `--change`s applied.
async fn import(
    st: &Arc<AgentState>,
    q: &CreateQuery,
    raw: Option<&str>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    use futures::TryStreamExt;
    use tokio::io::AsyncWriteExt;
    let reference = match q.repo.as_deref().filter(|r| !r.is_empty()) {
        Some(repo) => {
            let tag = q.tag.as_deref().filter(|t| !t.is_empty());
            let name = match tag {
                Some(t) => format!("{repo}:{t}"),
                None => repo.to_string(),
            };
            Some(
                Reference::parse(&name, &st.default_registry)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?
                    .to_string(),
            )
        }
        None => None,
    };
    let (os, arch) = crate::image::node_platform();
    let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let mut config = json!({ "architecture": arch, "os": os, "created": now, "config": {} });
    crate::image_archive::apply_changes(&mut config, &changes_of(raw))
        .map_err(ApiError::bad_request)?;
    let history = json!({
        "created": now,
        "created_by": "",
        "comment": q.message.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| "Imported from -".into()),
    });
    // The tar is spooled to a file of the store's (it becomes the blob).
    let blob = st.store.tmp_path("import");
    let mut file = tokio::fs::File::create(&blob)
        .await
        .map_err(ApiError::internal)?;
    let mut stream = body.into_data_stream();
    let spooled = async {
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
        {
            file.write_all(&chunk).await?;
        }
        file.flush().await
    }
    .await;
    if let Err(e) = spooled {
        let _ = tokio::fs::remove_file(&blob).await;
        return Err(ApiError::bad_request(format!(
            "reading the imported tarball: {e}"
        )));
    }
    let store = st.store.clone();
    let b = blob.clone();
    let made = tokio::task::spawn_blocking(move || {
        crate::image_archive::add_layer_image(
            &store,
            None,
            &b,
            config,
            history,
            reference.as_deref(),
        )
    })
    .await?;
    let _ = tokio::fs::remove_file(&blob).await;
    let rec = made.map_err(|e| match e {
        crate::image_archive::ArchiveError::Invalid(_) => ApiError::bad_request(e.to_string()),
        other => ApiError::internal(other),
    })?;
    image_event(st, "import", &rec.reference);
    Response::builder()
        .header("content-type", "application/json")
        .body(axum::body::Body::from(format!(
            "{}\n",
            json!({ "status": rec.id })
        )))
        .map_err(ApiError::internal)
}
