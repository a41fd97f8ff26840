//! Docker's Engine API for `docker cp`: `HEAD`/`GET /containers/{id}/archive?path=` (a path's
//! stat in `X-Docker-Container-Path-Stat`, and its tar) and `PUT …?path=DIR` (a tar extracted
//! into DIR). The files are handled by [`crate::containers::archive`]; both bodies stream
//! through bounded buffers on a blocking thread, never whole in memory.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::Deserialize;

use super::error::ApiError;
use super::shared::{flag, AgentState};
use crate::containers::archive::{self, ExtractOptions, PathStat};

/// The container's id or name from the path (at the root or under `/v1.NN`).
fn container(params: &HashMap<String, String>) -> Result<String, ApiError> {
    params
        .get("id")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("no container in the path"))
}

#[derive(Deserialize)]
pub struct PathQuery {
    #[serde(default)]
    path: String,
}

/// docker's `X-Docker-Container-Path-Stat`: base64 of the stat as JSON.
fn stat_header(s: &PathStat) -> Result<HeaderValue, ApiError> {
    let json = serde_json::json!({
        "name": s.name,
        "size": s.size,
        "mode": s.mode,
        "mtime": humantime::format_rfc3339_nanos(s.mtime).to_string(),
        "linkTarget": s.link_target,
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(json.to_string());
    HeaderValue::from_str(&encoded).map_err(ApiError::internal)
}

const STAT_HEADER: &str = "x-docker-container-path-stat";

/// `HEAD /containers/{id}/archive?path=P`: the stat header only.
pub async fn head(
    State(st): State<Arc<AgentState>>,
    UrlPath(params): UrlPath<HashMap<String, String>>,
    Query(q): Query<PathQuery>,
) -> Result<Response, ApiError> {
    let id = container(&params)?;
    let cs = st.containers.clone();
    let stat = tokio::task::spawn_blocking(move || archive::stat(&cs, &id, &q.path)).await??;
    let mut r = StatusCode::OK.into_response();
    r.headers_mut().insert(STAT_HEADER, stat_header(&stat)?);
    Ok(r)
}

/// A `Write` whose bytes become the chunks of a response body, through a bounded channel (a
/// slow client slows the writer, never grows a buffer).
struct Chunks(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);

impl Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /containers/{id}/archive?path=P`: the stat header and a tar of P. The writer runs on
/// a blocking thread owned by the body's channel: it ends with the archive, or as soon as the
/// client is gone (its next send fails).
pub async fn get(
    State(st): State<Arc<AgentState>>,
    UrlPath(params): UrlPath<HashMap<String, String>>,
    Query(q): Query<PathQuery>,
) -> Result<Response, ApiError> {
    let id = container(&params)?;
    let cs = st.containers.clone();
    let source =
        tokio::task::spawn_blocking(move || archive::open_source(&cs, &id, &q.path)).await??;
    let stat = stat_header(source.stat())?;
    let mut r = tar_response("docker cp from a container", move |out| {
        source.write_tar(out)
    });
    r.headers_mut().insert(STAT_HEADER, stat);
    Ok(r)
}

/// A streamed `application/x-tar` answer: `write` runs on a blocking thread into the body; a
/// failure midway (`what` names the operation in the log) ends the body with an error, as the
/// status is sent by then.
fn tar_response<E: std::fmt::Display>(
    what: &'static str,
    write: impl FnOnce(std::io::BufWriter<Chunks>) -> Result<(), E> + Send + 'static,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let out = std::io::BufWriter::with_capacity(64 * 1024, Chunks(tx.clone()));
        if let Err(e) = write(out) {
            tracing::warn!(error = %e, "{what} failed midway");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    r
}

/// How much of an upload is still read after its archive ended or was refused, so that its
/// client sees the answer.
const DRAIN_AFTER_ARCHIVE: u64 = 64 * 1024 * 1024;

/// Reads what is left of an uploaded archive (bounded): a client still sending reads no answer
/// from a closed connection, only a broken pipe ("error writing a body to connection") — after
/// a refusal, and after the archive's end too (tar writers pad past the end marker, where
/// reading a tar stops).
pub(super) fn drain_rest(reader: &mut impl std::io::Read) {
    let _ = std::io::copy(&mut reader.take(DRAIN_AFTER_ARCHIVE), &mut std::io::sink());
}

#[derive(Deserialize)]
pub struct PutQuery {
    #[serde(default)]
    path: String,
    #[serde(default, rename = "noOverwriteDirNonDir", deserialize_with = "flag")]
    no_overwrite_dir_non_dir: bool,
    #[serde(default, rename = "copyUIDGID", deserialize_with = "flag")]
    copy_uid_gid: bool,
}

/// `PUT /containers/{id}/archive?path=DIR`: the body, a tar, extracted into DIR as it arrives.
pub async fn put(
    State(st): State<Arc<AgentState>>,
    UrlPath(params): UrlPath<HashMap<String, String>>,
    Query(q): Query<PutQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = container(&params)?;
    let cs = st.containers.clone();
    let opts = ExtractOptions {
        no_overwrite_dir_non_dir: q.no_overwrite_dir_non_dir,
        copy_uid_gid: q.copy_uid_gid,
    };
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    tokio::task::spawn_blocking(move || {
        let r = archive::extract(&cs, &id, &q.path, &mut reader, opts);
        drain_rest(&mut reader);
        r
    })
    .await??;
    Ok(StatusCode::OK.into_response())
}

/// `GET /containers/{id}/export`: the running container's root filesystem as a tar.
pub async fn export(
    State(st): State<Arc<AgentState>>,
    UrlPath(params): UrlPath<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = container(&params)?;
    let cs = st.containers.clone();
    let source = tokio::task::spawn_blocking(move || archive::open_export(&cs, &id)).await??;
    Ok(tar_response("docker export", move |out| {
        source.write_tar(out)
    }))
}
