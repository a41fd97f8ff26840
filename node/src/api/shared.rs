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

/// The API version this agent speaks (checked by the client).
pub const API_VERSION: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("node agent socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::image::PullError),
    #[error("cannot reach the node agent at {path}: {source}; is `reg node serve` (or `reg serve`) running, and may you open its socket?")]
    Connect {
        path: PathBuf,
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

/// A query flag: `1`, `true` or `yes` (as docker's API takes them).
pub(crate) fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = String::deserialize(d)?;
    Ok(matches!(v.as_str(), "1" | "true" | "yes"))
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

/// Copies a request body into `sink` (a container's or an exec'd process's stdin); closing it
/// gives end-of-file.
pub(crate) async fn pump_stdin(body: Body, sink: impl tokio::io::AsyncWrite + Unpin) {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut sink = sink;
    let mut stream = body.into_data_stream();
    let mut open = true;
    while let Some(Ok(chunk)) = stream.next().await {
        // Once the container stops reading, the rest is drained (a connection closed with
        // unread input would be reset, and the client could lose the end of the output).
        if open && sink.write_all(&chunk).await.is_err() {
            open = false;
        }
    }
    let _ = sink.flush().await;
}
