//! `/v2/<name>/manifests/<reference>`: pull (GET/HEAD) by tag or digest, push (PUT, checked
//! against the repository's blobs and the immutable-tag rules), delete.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;

use super::shared::{blocking, parse_digest, response, ApiResult, Ctx};
use crate::digest::{Algorithm, Digest};
use crate::error::ErrorCode;
use crate::manifest;
use crate::name::{RepoName, TagName};
use crate::server::error::ApiError;
use crate::server::gc;
use crate::server::meta::{Deletion, PutManifestError};
use crate::server::state::AppState;

enum Reference {
    Tag(TagName),
    Digest(Digest),
}

fn parse_reference(r: &str) -> Result<Reference, ApiError> {
    if r.contains(':') {
        return parse_digest(r).map(Reference::Digest);
    }
    TagName::parse(r)
        .map(Reference::Tag)
        .map_err(|e| ApiError::new(ErrorCode::TagInvalid, e.to_string()))
}

pub(super) async fn get(st: &Arc<AppState>, repo: &RepoName, r: &str, head: bool) -> ApiResult {
    let reference = parse_reference(r)?;
    let (key, by_digest) = match &reference {
        Reference::Tag(t) => (t.to_string(), false),
        Reference::Digest(d) => (d.to_string(), true),
    };
    let (meta, name) = (st.meta.clone(), repo.to_string());
    let row = blocking(move || meta.get_manifest(&name, &key, by_digest))
        .await??
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::ManifestUnknown,
                format!("manifest {r} is not in repository {repo}"),
            )
        })?;
    let mut headers = vec![
        ("content-type", row.media_type.clone()),
        ("docker-content-digest", row.digest.clone()),
        ("etag", format!("\"{}\"", row.digest)),
        ("content-length", row.content.len().to_string()),
    ];
    if let Some(s) = &row.subject {
        headers.push(("oci-subject", s.clone()));
    }
    let body = if head {
        Body::empty()
    } else {
        st.pulls.note(repo.as_str(), &row.digest);
        Body::from(Bytes::from_owner(row.content.clone()))
    };
    Ok(response(StatusCode::OK, &headers, body))
}

pub(super) async fn put(
    st: &Arc<AppState>,
    repo: &RepoName,
    r: &str,
    h: &HeaderMap,
    body: Body,
    cx: &Ctx,
) -> ApiResult {
    let reference = parse_reference(r)?;
    let max = st.cfg.max_manifest_bytes;
    let too_large = || {
        ApiError::new(
            ErrorCode::ManifestTooLarge,
            format!("manifest is larger than the limit of {max} bytes"),
        )
    };
    if let Some(len) = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max {
            // Read what the client is sending (within twice the limit, kept nowhere), so that it
            // reads the answer instead of failing on a connection closed under its write; a
            // larger body gets the answer at once.
            if len <= max.saturating_mul(2) {
                let mut body = body;
                while let Some(Ok(_)) = body.frame().await {}
            }
            return Err(too_large());
        }
    }
    let bytes = http_body_util::Limited::new(body, max as usize)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                ApiError::new(
                    ErrorCode::ManifestInvalid,
                    format!("reading manifest body: {e}"),
                )
            }
        })?
        .to_bytes();
    // UTF-8, a JSON object, bounded nesting (the lenient parse below skips what it does not
    // know unchecked); the size was bounded above by registry.max_manifest_bytes.
    match manifest::check_limits(&bytes) {
        Ok(()) | Err(manifest::ManifestLimitError::TooLarge { .. }) => {}
        Err(e) => return Err(ApiError::new(ErrorCode::ManifestInvalid, e.to_string())),
    }
    let content_type = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let parsed = manifest::parse(&bytes, content_type)
        .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
    let (digest, tag) = match reference {
        Reference::Digest(d) => {
            let actual = Digest::of(d.algorithm(), &bytes);
            if actual != d {
                return Err(ApiError::new(
                    ErrorCode::DigestInvalid,
                    format!("manifest digest is {actual}, not {d} as the URL says"),
                ));
            }
            (d, None)
        }
        Reference::Tag(t) => (Digest::of(Algorithm::Sha256, &bytes), Some(t.to_string())),
    };
    let subject = parsed.subject.clone();
    let rules = st.retention.rules().await;
    let immutable = tag
        .as_deref()
        .is_some_and(|t| gc::is_immutable(&rules, repo.as_str(), t));
    let (meta, name, d2) = (st.meta.clone(), repo.to_string(), digest.clone());
    let by = cx.caller.name();
    let stored = blocking(move || {
        let tag = tag.as_deref().map(|t| (t, by.as_str()));
        meta.put_manifest(&name, &d2, &bytes, &parsed, tag, immutable)
    })
    .await?;
    match stored {
        Ok(()) => {}
        Err(PutManifestError::MissingBlob(b)) => {
            return Err(ApiError::new(
                ErrorCode::ManifestBlobUnknown,
                format!(
                    "blob {b} named by the manifest is not in repository {repo}; push it first"
                ),
            )
            .with_detail(serde_json::json!({ "digest": b.to_string() })))
        }
        Err(PutManifestError::MissingManifest(m)) => {
            return Err(ApiError::new(
                ErrorCode::ManifestBlobUnknown,
                format!(
                    "manifest {m} named by the index is not in repository {repo}; push it first"
                ),
            )
            .with_detail(serde_json::json!({ "digest": m.to_string() })))
        }
        Err(PutManifestError::Immutable(current)) => {
            return Err(ApiError::new(
                ErrorCode::Denied,
                format!(
                    "tag {r} of {repo} is immutable (registry.retention) and points at {current}; \
                     push under a new tag"
                ),
            ))
        }
        Err(PutManifestError::Meta(e)) => return Err(e.into()),
    }
    tracing::info!(repo = %repo, digest = %digest, reference = r, "manifest pushed");
    st.auth
        .audit(
            &cx.caller.name(),
            "push",
            &format!("{repo}:{r}"),
            &digest.to_string(),
            &cx.client,
        )
        .await;
    let mut headers = vec![
        ("location", format!("/v2/{repo}/manifests/{digest}")),
        ("docker-content-digest", digest.to_string()),
    ];
    if let Some(s) = subject {
        headers.push(("oci-subject", s.to_string()));
    }
    Ok(response(StatusCode::CREATED, &headers, Body::empty()))
}

pub(super) async fn delete(st: &Arc<AppState>, repo: &RepoName, r: &str, cx: &Ctx) -> ApiResult {
    let (meta, name) = (st.meta.clone(), repo.to_string());
    let reference = parse_reference(r)?;
    // An immutable tag can be deleted neither itself nor through the manifest it names.
    let rules = st.retention.rules().await;
    let immutable = |t: &str| {
        ApiError::new(
            ErrorCode::Denied,
            format!("tag {t} of {repo} is immutable (registry.retention); it cannot be deleted"),
        )
    };
    let deleted = match reference {
        Reference::Tag(t) if gc::is_immutable(&rules, repo.as_str(), t.as_str()) => {
            return Err(immutable(t.as_str()))
        }
        Reference::Tag(t) => blocking(move || meta.delete_tag(&name, t.as_str())).await??,
        Reference::Digest(d) => {
            let repo_name = name.clone();
            let outcome = blocking(move || {
                meta.delete_manifest(&name, &d, |t| gc::is_immutable(&rules, &repo_name, t))
            })
            .await??;
            match outcome {
                Deletion::Protected(t) => return Err(immutable(&t)),
                Deletion::Deleted => true,
                Deletion::NotFound => false,
            }
        }
    };
    if !deleted {
        return Err(ApiError::new(
            ErrorCode::ManifestUnknown,
            format!("manifest {r} is not in repository {repo}"),
        ));
    }
    tracing::info!(repo = %repo, reference = r, "manifest deleted");
    st.auth
        .audit(
            &cx.caller.name(),
            "delete.manifest",
            &format!("{repo}:{r}"),
            "",
            &cx.client,
        )
        .await;
    Ok(response(StatusCode::ACCEPTED, &[], Body::empty()))
}
