//! `/images`: list, inspect, pull and push (progress as JSON lines), tag, remove, over the
//! node's [`crate::image::ImageStore`].

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;

use super::error::ApiError;
use super::shared::{decode_auth, flag, stream_response, AgentState};
use crate::image::{ImageRecord, Progress};
use reg_registry::client::RegistryClient;
use reg_registry::Reference;

pub async fn list(State(st): State<Arc<AgentState>>) -> Result<Response, ApiError> {
    let store = st.store.clone();
    let list = tokio::task::spawn_blocking(move || store.list()).await??;
    Ok(Json(list).into_response())
}

#[derive(Deserialize)]
pub struct RefQuery {
    reference: String,
}

pub async fn inspect(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<RefQuery>,
) -> Result<Response, ApiError> {
    if Reference::parse(&q.reference, &st.default_registry).is_err() {
        return Err(ApiError::bad_request(format!(
            "invalid reference {:?}",
            q.reference
        )));
    }
    Ok(Json(stored(&st, &q.reference).await?).into_response())
}

/// One progress line of a transfer; `moving`/`moved` name its direction (`downloading`/`done`
/// for a pull, `uploading`/`pushed` for a push).
fn progress_line(p: Progress, moving: &str, moved: &str) -> Bytes {
    let line = match p {
        Progress::Resolved { digest, layers } => {
            serde_json::json!({"status": "resolved", "digest": digest, "layers": layers})
        }
        Progress::LayerCached { digest } => {
            serde_json::json!({"status": "exists", "layer": digest})
        }
        Progress::LayerBytes {
            digest,
            done,
            total,
        } => serde_json::json!({"status": moving, "layer": digest, "done": done, "total": total}),
        Progress::LayerDone { digest } => serde_json::json!({"status": moved, "layer": digest}),
        Progress::LayerMounted { digest, from } => {
            serde_json::json!({"status": "mounted", "layer": digest, "from": from})
        }
    };
    Bytes::from(format!("{line}\n"))
}

/// `POST /images/pull?reference=…`: progress as JSON lines, ending with `{"done": record}` or
/// `{"error": message}`.
pub async fn pull(
    State(st): State<Arc<AgentState>>,
    headers: HeaderMap,
    Query(q): Query<RefQuery>,
) -> Result<Response, ApiError> {
    let r = Reference::parse(&q.reference, &st.default_registry)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let client = RegistryClient::with_credentials(&r.registry, decode_auth(&headers));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let store = st.store.clone();
    // The pull belongs to this request: it ends when the pull ends (a client that goes away
    // only stops reading; verified layers are still worth finishing).
    tokio::spawn(async move {
        let ptx = tx.clone();
        let result = store
            .pull(&client, &r, move |p: Progress| {
                let _ = ptx.send(progress_line(p, "downloading", "done"));
            })
            .await;
        let last = match result {
            Ok(rec) => serde_json::json!({"image": rec}),
            Err(e) => serde_json::json!({"error": e.to_string()}),
        };
        let _ = tx.send(Bytes::from(format!("{last}\n")));
    });
    Ok(stream_response(rx))
}

/// The stored image `reference` names.
async fn stored(st: &AgentState, reference: &str) -> Result<ImageRecord, ApiError> {
    let r = Reference::parse(reference, &st.default_registry)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (store, key) = (st.store.clone(), r.to_string());
    tokio::task::spawn_blocking(move || store.get(&key))
        .await??
        .ok_or_else(|| ApiError::not_found(format!("no such image: {reference}")))
}

/// `POST /images/push?reference=…`: progress as JSON lines, ending with `{"pushed": digest}`
/// or `{"error": message}`.
pub async fn push(
    State(st): State<Arc<AgentState>>,
    headers: HeaderMap,
    Query(q): Query<RefQuery>,
) -> Result<Response, ApiError> {
    let rec = stored(&st, &q.reference).await?;
    let target = Reference::parse(&q.reference, &st.default_registry)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let client = RegistryClient::with_credentials(&target.registry, decode_auth(&headers));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let store = st.store.clone();
    tokio::spawn(async move {
        let ptx = tx.clone();
        let result = store
            .push(&client, &rec, &target, move |p: Progress| {
                let _ = ptx.send(progress_line(p, "uploading", "pushed"));
            })
            .await;
        let last = match result {
            Ok(d) => serde_json::json!({"pushed": d, "size": rec.size}),
            Err(e) => serde_json::json!({"error": e.to_string()}),
        };
        let _ = tx.send(Bytes::from(format!("{last}\n")));
    });
    Ok(stream_response(rx))
}

#[derive(Deserialize)]
pub struct TagQuery {
    source: String,
    target: String,
}

pub async fn tag(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<TagQuery>,
) -> Result<Response, ApiError> {
    let rec = stored(&st, &q.source).await?;
    let target = Reference::parse(&q.target, &st.default_registry)
        .map_err(|e| ApiError::bad_request(e.to_string()))?
        .to_string();
    let store = st.store.clone();
    let rec = tokio::task::spawn_blocking(move || store.tag(&rec, &target)).await??;
    Ok(Json(rec).into_response())
}

#[derive(Deserialize)]
pub struct RemoveQuery {
    reference: String,
    #[serde(default, deserialize_with = "flag")]
    force: bool,
}

/// `DELETE /images?reference=…[&force=1]`: refuses an image a container uses (unless forced;
/// its layers stay as long as the container does).
pub async fn remove(
    State(st): State<Arc<AgentState>>,
    Query(q): Query<RemoveQuery>,
) -> Result<Response, ApiError> {
    let rec = stored(&st, &q.reference).await?;
    let containers = st.containers.list()?;
    let users: Vec<&str> = containers
        .iter()
        .filter(|c| c.image == rec.reference)
        .map(|c| c.name.as_str())
        .collect();
    if !users.is_empty() && !q.force {
        return Err(ApiError::conflict(format!(
            "unable to remove {}: container {} uses it (remove the container, or rmi -f)",
            rec.reference,
            users.join(", ")
        )));
    }
    let in_use: std::collections::HashSet<PathBuf> = containers
        .iter()
        .flat_map(|c| c.spec.layers.iter().cloned())
        .collect();
    let store = st.store.clone();
    let deleted =
        tokio::task::spawn_blocking(move || store.remove(&rec.reference, &in_use)).await??;
    Ok(Json(deleted).into_response())
}
