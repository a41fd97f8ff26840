//! `/v2/<name>/blobs/uploads/`: push a blob — cross-repository mount, single-request upload
//! (`POST ?digest=`), or a session (`POST`, then `PATCH` chunks, `PUT ?digest=` the last one;
//! `GET` where it stands, `DELETE` cancels). The protocol itself is the upload service's
//! ([`crate::server::uploads`]); this module only speaks HTTP.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::shared::{blocking, may_pull, parse_digest, response, ApiResult, Ctx};
use crate::digest::Digest;
use crate::name::RepoName;
use crate::server::state::AppState;
use crate::server::uploads::Progress;

/// `POST` parameters: `mount` + `from` (cross-repository mount), `digest` (single request).
#[derive(Debug, Default, Deserialize)]
pub(super) struct StartQuery {
    pub(super) mount: Option<String>,
    pub(super) from: Option<String>,
    digest: Option<String>,
}

/// `PUT ?digest=`: the digest the finished upload must have.
#[derive(Debug, Deserialize)]
pub(super) struct FinishQuery {
    digest: Option<String>,
}

fn upload_headers(repo: &RepoName, p: &Progress) -> Vec<(&'static str, String)> {
    vec![
        ("location", format!("/v2/{repo}/blobs/uploads/{}", p.id)),
        ("range", format!("0-{}", p.size.saturating_sub(1))),
        ("docker-upload-uuid", p.id.clone()),
        ("content-length", "0".into()),
    ]
}

fn blob_created(repo: &RepoName, d: &Digest) -> Response {
    response(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{repo}/blobs/{d}")),
            ("docker-content-digest", d.to_string()),
            ("content-length", "0".into()),
        ],
        Body::empty(),
    )
}

fn content_range(h: &HeaderMap) -> Option<&str> {
    h.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok())
}

pub(super) async fn start(
    st: &Arc<AppState>,
    repo: &RepoName,
    q: StartQuery,
    h: &HeaderMap,
    body: Body,
    cx: &Ctx,
) -> ApiResult {
    if let (Some(m), Some(from)) = (&q.mount, &q.from) {
        let digest = parse_digest(m)?;
        // Mounting from a repository the caller cannot read must not reveal what it holds:
        // it silently becomes an ordinary upload.
        let readable = match RepoName::parse(from) {
            Ok(f) => may_pull(st, cx, f.as_str()).await?.then_some(f),
            Err(_) => None,
        };
        if let Some(from) = readable {
            let (meta, f, t, d2) = (
                st.meta.clone(),
                from.to_string(),
                repo.to_string(),
                digest.clone(),
            );
            if blocking(move || meta.mount_blob(&f, &t, &d2))
                .await??
                .is_some()
            {
                tracing::info!(repo = %repo, from = %from, digest = %digest, "blob mounted");
                return Ok(blob_created(repo, &digest));
            }
        }
        // Not mountable: fall through to an ordinary upload session, as the spec asks.
    }
    if let Some(d) = &q.digest {
        let digest = parse_digest(d)?;
        st.uploads
            .monolithic(
                repo.as_str(),
                &digest,
                content_range(h),
                body.into_data_stream(),
            )
            .await?;
        return Ok(blob_created(repo, &digest));
    }
    // Open and anonymous callers are named "anonymous": they count by address.
    let owner = Some(cx.caller.name())
        .filter(|n| n != "anonymous")
        .unwrap_or_default();
    let p = match st.uploads.start(repo.as_str(), &owner, &cx.client).await {
        Ok(p) => p,
        Err(e) => {
            if matches!(e, crate::server::uploads::UploadError::TooMany { .. }) {
                st.metrics.throttle_counter("upload_sessions").inc();
            }
            return Err(e.into());
        }
    };
    Ok(response(
        StatusCode::ACCEPTED,
        &upload_headers(repo, &p),
        Body::empty(),
    ))
}

pub(super) async fn status(st: &Arc<AppState>, repo: &RepoName, id: &str) -> ApiResult {
    let p = st.uploads.status(repo.as_str(), id).await?;
    Ok(response(
        StatusCode::NO_CONTENT,
        &upload_headers(repo, &p),
        Body::empty(),
    ))
}

pub(super) async fn patch(
    st: &Arc<AppState>,
    repo: &RepoName,
    id: &str,
    h: &HeaderMap,
    body: Body,
) -> ApiResult {
    let p = st
        .uploads
        .patch(repo.as_str(), id, content_range(h), body.into_data_stream())
        .await?;
    Ok(response(
        StatusCode::ACCEPTED,
        &upload_headers(repo, &p),
        Body::empty(),
    ))
}

pub(super) async fn put(
    st: &Arc<AppState>,
    repo: &RepoName,
    id: &str,
    q: FinishQuery,
    h: &HeaderMap,
    body: Body,
) -> ApiResult {
    let digest = parse_digest(q.digest.as_deref().unwrap_or(""))?;
    st.uploads
        .put(
            repo.as_str(),
            id,
            &digest,
            content_range(h),
            body.into_data_stream(),
        )
        .await?;
    Ok(blob_created(repo, &digest))
}

pub(super) async fn cancel(st: &Arc<AppState>, repo: &RepoName, id: &str) -> ApiResult {
    st.uploads.cancel(repo.as_str(), id).await?;
    Ok(response(StatusCode::NO_CONTENT, &[], Body::empty()))
}
