//! `/v2/<name>/blobs/<digest>`: pull (GET/HEAD, with ranges, or a redirect to the bucket)
//! and delete (the repository's link only; bytes go with garbage collection).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;

use super::shared::{blocking, parse_digest, response, ApiResult, Ctx};
use crate::digest::Digest;
use crate::error::ErrorCode;
use crate::name::RepoName;
use crate::server::error::ApiError;
use crate::server::state::AppState;

/// Parses `Range: bytes=a-b` (also `a-` and `-n`) against `size`: `Ok(None)` = whole blob.
fn parse_range(h: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(v) = h.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            ErrorCode::RangeInvalid,
            format!("range {v:?} is not satisfiable for a blob of {size} bytes"),
        )
        .with_header("content-range", format!("bytes */{size}"))
    };
    crate::range::blob_range(v, size).map(Some).ok_or_else(bad)
}

pub(super) async fn get(
    st: &Arc<AppState>,
    repo: &RepoName,
    d: &str,
    h: &HeaderMap,
    head: bool,
) -> ApiResult {
    let digest = parse_digest(d)?;
    let (meta, name, d2) = (st.meta.clone(), repo.to_string(), digest.clone());
    let size = blocking(move || meta.blob_in_repo(&name, &d2)).await??;
    let Some(size) = size else {
        // A manifest is content too: serve it from the blob endpoint as distribution does.
        let (meta, name, key) = (st.meta.clone(), repo.to_string(), digest.to_string());
        if let Some(row) = blocking(move || meta.get_manifest(&name, &key, true)).await?? {
            let headers = [
                ("content-type", row.media_type.clone()),
                ("docker-content-digest", row.digest.clone()),
                ("content-length", row.content.len().to_string()),
            ];
            let body = if head {
                Body::empty()
            } else {
                Body::from(Bytes::from_owner(row.content))
            };
            return Ok(response(StatusCode::OK, &headers, body));
        }
        return Err(blob_unknown(repo, &digest));
    };
    let range = parse_range(h, size)?;
    let (status, start, len) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        None => (StatusCode::OK, 0, size),
    };
    let mut headers = vec![
        ("content-type", "application/octet-stream".to_string()),
        ("docker-content-digest", digest.to_string()),
        ("accept-ranges", "bytes".into()),
        ("content-length", len.to_string()),
        ("etag", format!("\"{digest}\"")),
    ];
    if let Some((a, b)) = range {
        headers.push(("content-range", format!("bytes {a}-{b}/{size}")));
    }
    if head {
        return Ok(response(status, &headers, Body::empty()));
    }
    // The client sends its Range header again to the bucket, which answers it itself.
    if let Some(url) = st.store.redirect_url(&digest).await? {
        let headers = [
            ("location", url),
            ("docker-content-digest", digest.to_string()),
            ("content-length", "0".into()),
        ];
        return Ok(response(
            StatusCode::TEMPORARY_REDIRECT,
            &headers,
            Body::empty(),
        ));
    }
    let stream = match st.store.read(&digest, start, len).await? {
        Some(s) => s,
        None => {
            tracing::error!(digest = %digest, "blob recorded in metadata but missing from storage");
            return Err(blob_unknown(repo, &digest));
        }
    };
    Ok(response(status, &headers, Body::from_stream(stream)))
}

fn blob_unknown(repo: &RepoName, d: &Digest) -> ApiError {
    ApiError::new(
        ErrorCode::BlobUnknown,
        format!("blob {d} is not in repository {repo}"),
    )
    .with_detail(serde_json::json!({ "digest": d.to_string() }))
}

pub(super) async fn delete(st: &Arc<AppState>, repo: &RepoName, d: &str, cx: &Ctx) -> ApiResult {
    let digest = parse_digest(d)?;
    let (meta, name, d2) = (st.meta.clone(), repo.to_string(), digest.clone());
    if !blocking(move || meta.unlink_blob(&name, &d2)).await?? {
        return Err(blob_unknown(repo, &digest));
    }
    tracing::info!(repo = %repo, digest = %digest, "blob deleted from repository");
    st.auth
        .audit(
            &cx.caller.name(),
            "delete.blob",
            &format!("{repo}@{digest}"),
            "",
            &cx.client,
        )
        .await;
    Ok(response(StatusCode::ACCEPTED, &[], Body::empty()))
}
