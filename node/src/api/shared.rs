//! What the agent's handlers, its server and its client share: the state, the error of the
//! agent as a whole, registry credentials in `X-Registry-Auth`, query flags, JSON-lines
//! streams and request bodies piped into a process.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::containers::Containers;
use crate::image::ImageStore;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Listen(#[from] super::listen::ListenError),
    #[error("containers under {path}: {source}")]
    Containers {
        path: PathBuf,
        source: crate::containers::ContainerError,
    },
    #[error("node agent: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::image::PullError),
    #[error("cannot reach the node agent at {agent}: {source}; is `reg node serve` (or `reg serve`) running, and may you open its socket (or, over TCP, does it trust your certificate)?")]
    Connect {
        agent: String,
        source: std::io::Error,
    },
    #[error("node agent: {0}")]
    Protocol(String),
    /// The agent answered `status` (not 2xx) with `message`.
    #[error("{message}")]
    Api { status: u16, message: String },
}

pub struct AgentState {
    pub store: Arc<ImageStore>,
    pub default_registry: String,
    pub log_defaults: super::LogDefaults,
    /// The build cache's size limit in bytes (`node.build_cache_max_bytes`; none: unlimited).
    pub build_cache_max: Option<u64>,
    /// The node's subordinate id range (`node.userns_remap`): remapped containers use its
    /// first 65536 ids, `--userns=auto` ones the next free 65536 each.
    pub userns_pool: Option<crate::runtime::IdMap>,
    pub containers: Arc<Containers>,
}

/// Credentials sent by the client for the registry of this request.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

pub fn encode_auth(a: &RegistryAuth) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(a).unwrap_or_default())
}

pub fn decode_auth(h: &HeaderMap) -> Option<(String, String)> {
    let v = h.get("x-registry-auth")?.to_str().ok()?;
    let raw = base64::engine::general_purpose::URL_SAFE.decode(v).ok()?;
    let a: RegistryAuth = serde_json::from_slice(&raw).ok()?;
    (!a.username.is_empty()).then_some((a.username, a.password))
}

/// A query flag, true as Go's `strconv.ParseBool` reads it (docker's API does): `1`, `t`,
/// `true` in any case (docker-py sends `True`), and `yes`.
pub(crate) fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = String::deserialize(d)?;
    Ok(matches!(
        v.to_ascii_lowercase().as_str(),
        "1" | "t" | "true" | "yes"
    ))
}

/// A stream of JSON lines from a channel, as an `application/x-ndjson` answer.
pub fn stream_response(rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>) -> Response {
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(channel_body(rx))
        .unwrap_or_else(|e| ApiError::internal(e).into_response())
}

/// A body of the chunks sent on a channel, as they come; it ends when the senders are gone.
pub(crate) fn channel_body(rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>) -> Body {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Body::from_stream(stream)
}

/// The object a path names (`{id}`, `{name}` or `{*rest}`), read by name so that a route
/// answers the same at the root and under `/{version}`.
#[derive(Deserialize)]
pub(crate) struct Param {
    #[serde(alias = "name", alias = "rest")]
    pub id: String,
}
