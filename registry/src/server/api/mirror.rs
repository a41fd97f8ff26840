//! Pull-through mirrors at the HTTP edge: before a manifest or blob of a mirrored name is
//! served the usual way, make it present (fetched from the upstream on a miss, a tag asked
//! about again after its TTL, served stale when the upstream cannot be reached). A blob that
//! is missing streams to the first client while it is stored; it becomes visible only once
//! its digest is verified, and the client's last bytes are held back until then.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;

use super::shared::{blocking, response};
use crate::client::{ClientError, Fetched};
use crate::digest::Digest;
use crate::error::ErrorCode;
use crate::manifest;
use crate::name::RepoName;
use crate::server::error::ApiError;
use crate::server::mirror::{self, Fill, FillGuard, Mirrored};
use crate::server::state::AppState;

/// How long an upstream may send nothing in the middle of a blob before the fetch fails.
const STALL: Duration = Duration::from_secs(60);

/// A push into a mirrored name.
pub(super) fn refuse_push(m: &Mirrored, repo: &RepoName) -> ApiError {
    ApiError::new(
        ErrorCode::Denied,
        format!(
            "{repo} is a pull-through mirror of {} ({}): it is filled from there and takes no \
             pushes; push to the upstream, or to a name outside the mirror",
            m.mirror.upstream, m.upstream_name
        ),
    )
}

fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Status { status: 404, .. })
}

/// Makes manifest `r` of mirrored `repo` present, and fresh if `r` is a tag.
pub(super) async fn manifest(
    st: &Arc<AppState>,
    m: &Mirrored,
    repo: &RepoName,
    r: &str,
) -> Result<(), ApiError> {
    let by_digest = r.contains(':');
    let (meta, name, key) = (st.meta.clone(), repo.to_string(), r.to_string());
    let local = blocking(move || meta.get_manifest(&name, &key, by_digest)).await??;
    let fresh = match &local {
        Some(_) if by_digest => true,
        Some(_) => m.mirror.is_fresh(repo.as_str(), r),
        None => false,
    };
    if fresh {
        st.metrics.mirrored("manifest", true, 0);
        return Ok(());
    }
    let known = local
        .as_ref()
        .filter(|_| !by_digest)
        .and_then(|l| Digest::parse(&l.digest).ok());
    let max = usize::try_from(st.cfg.max_manifest_bytes).unwrap_or(usize::MAX);
    let fetched = m
        .mirror
        .client
        .manifest_unless(&m.upstream_name, r, known.as_ref(), max)
        .await;
    match fetched {
        Ok(Fetched::NotModified) => {
            m.mirror.checked_now(repo.as_str(), r);
            st.metrics.mirrored("manifest", true, 0);
            Ok(())
        }
        Ok(Fetched::Manifest {
            body,
            media_type,
            digest,
        }) => {
            let unreadable = |e: String| {
                ApiError::new(
                    ErrorCode::ManifestInvalid,
                    format!(
                        "manifest {r} from the upstream {} cannot be served: {e}",
                        m.mirror.upstream
                    ),
                )
            };
            manifest::check_limits(&body).map_err(|e| unreadable(e.to_string()))?;
            let parsed =
                manifest::parse(&body, Some(&media_type)).map_err(|e| unreadable(e.to_string()))?;
            let len = body.len() as u64;
            let (meta, name) = (st.meta.clone(), repo.to_string());
            let tag = (!by_digest).then(|| r.to_string());
            let upstream = format!("mirror of {}", m.mirror.upstream);
            blocking(move || {
                meta.put_mirrored_manifest(
                    &name,
                    &digest,
                    &body,
                    &parsed,
                    tag.as_deref(),
                    &upstream,
                )
            })
            .await?
            .map_err(|e| ApiError::internal(format!("storing a mirrored manifest: {e:?}")))?;
            if !by_digest {
                m.mirror.checked_now(repo.as_str(), r);
            }
            st.metrics.mirrored("manifest", false, len);
            tracing::info!(repo = %repo, reference = r, upstream = %m.mirror.upstream, "manifest fetched by the mirror");
            Ok(())
        }
        Err(e) if is_not_found(&e) => Err(ApiError::new(
            ErrorCode::ManifestUnknown,
            format!(
                "manifest {r} is not in {} at its upstream {}",
                m.upstream_name, m.mirror.upstream
            ),
        )),
        Err(e) if local.is_some() => {
            tracing::warn!(repo = %repo, reference = r, error = %e, "upstream failed: serving the cached tag");
            st.metrics.mirrored("manifest", true, 0);
            Ok(())
        }
        Err(e) => Err(ApiError::new(
            ErrorCode::ManifestUnknown,
            format!(
                "manifest {r} of {repo} is not cached here, and the mirror's upstream failed: {e}"
            ),
        )),
    }
}

/// A blob of mirrored `repo`: `None` when it is present here (now), to be served the usual
/// way; otherwise the mirror's own answer (the upstream's HEAD, or a fetch streamed).
pub(super) async fn blob(
    st: &Arc<AppState>,
    m: &Mirrored,
    repo: &RepoName,
    digest: &Digest,
    h: &HeaderMap,
    head: bool,
) -> Result<Option<Response>, ApiError> {
    if present(st, repo, digest).await? {
        st.metrics.mirrored("blob", true, 0);
        return Ok(None);
    }
    if head {
        return match m.mirror.client.blob_size(&m.upstream_name, digest).await {
            Ok(Some(size)) => {
                let headers = [
                    ("content-type", "application/octet-stream".to_string()),
                    ("docker-content-digest", digest.to_string()),
                    ("content-length", size.to_string()),
                ];
                Ok(Some(response(StatusCode::OK, &headers, Body::empty())))
            }
            Ok(None) => Err(not_upstream(m, digest)),
            Err(e) => Err(unreachable(m, repo, digest, &e)),
        };
    }
    match st.mirrors.fill(digest) {
        Fill::Follower(rx) => {
            if mirror::wait_for(rx).await && present(st, repo, digest).await? {
                st.metrics.mirrored("blob", true, 0);
                return Ok(None);
            }
            Err(ApiError::new(
                ErrorCode::BlobUnknown,
                format!(
                    "blob {digest} is not cached here, and the mirror's fetch of it from {} failed; try again",
                    m.mirror.upstream
                ),
            ))
        }
        Fill::Leader(guard) => {
            let ranged = h.contains_key(header::RANGE);
            let done = guard.subscribe();
            let streamed = fetch(st.clone(), m, repo, digest, guard, !ranged).await?;
            if let Some(resp) = streamed {
                return Ok(Some(resp));
            }
            // A ranged request waits for the whole blob, then gets its range as usual.
            if mirror::wait_for(done).await && present(st, repo, digest).await? {
                return Ok(None);
            }
            Err(ApiError::new(
                ErrorCode::BlobUnknown,
                format!(
                    "blob {digest}: the mirror's fetch from {} failed; try again",
                    m.mirror.upstream
                ),
            ))
        }
    }
}

/// Whether `repo` has the blob, linking it first when another repository has it already.
async fn present(st: &Arc<AppState>, repo: &RepoName, digest: &Digest) -> Result<bool, ApiError> {
    let (meta, name, d) = (st.meta.clone(), repo.to_string(), digest.clone());
    blocking(move || -> Result<bool, ApiError> {
        if meta.blob_in_repo(&name, &d)?.is_some() {
            return Ok(true);
        }
        match meta.blob_size(&d)? {
            Some(size) => {
                meta.link_blob(&name, &d, size)?;
                Ok(true)
            }
            None => Ok(false),
        }
    })
    .await?
}

fn not_upstream(m: &Mirrored, digest: &Digest) -> ApiError {
    ApiError::new(
        ErrorCode::BlobUnknown,
        format!(
            "blob {digest} is not in {} at the upstream {}",
            m.upstream_name, m.mirror.upstream
        ),
    )
}

fn unreachable(m: &Mirrored, repo: &RepoName, digest: &Digest, e: &ClientError) -> ApiError {
    if is_not_found(e) {
        return not_upstream(m, digest);
    }
    ApiError::new(
        ErrorCode::BlobUnknown,
        format!(
            "blob {digest} of {repo} is not cached here, and the mirror's upstream failed: {e}"
        ),
    )
}

/// Starts the upstream GET and the task that stores it (and streams it to this client when
/// `stream`); the task lives on if the client goes away, so the blob is cached all the same.
async fn fetch(
    st: Arc<AppState>,
    m: &Mirrored,
    repo: &RepoName,
    digest: &Digest,
    guard: FillGuard,
    stream: bool,
) -> Result<Option<Response>, ApiError> {
    let upstream = match m.mirror.client.blob(&m.upstream_name, digest, 0).await {
        Ok(r) => r,
        Err(e) => return Err(unreachable(m, repo, digest, &e)),
    };
    let size = upstream.content_length();
    let (client_tx, mut client_rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let client_tx = stream.then_some(client_tx);
    let (name, d, from) = (repo.to_string(), digest.clone(), m.mirror.upstream.clone());
    tokio::spawn(async move {
        let (store_tx, mut store_rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
        let body = futures::stream::poll_fn(move |cx| store_rx.poll_recv(cx));
        let store = st.uploads.monolithic(&name, &d, None, body);
        let pump = async move {
            let mut up = upstream.bytes_stream();
            let mut client = client_tx;
            // The last chunk reaches the client only after the digest is verified.
            let mut held: Option<Bytes> = None;
            let mut total = 0u64;
            let end = loop {
                let chunk = match tokio::time::timeout(STALL, up.next()).await {
                    Err(_) => Err(format!(
                        "the upstream sent nothing for {} s",
                        STALL.as_secs()
                    )),
                    Ok(None) => break Ok(()),
                    Ok(Some(Err(e))) => Err(e.to_string()),
                    Ok(Some(Ok(c))) => Ok(c),
                };
                let c = match chunk {
                    Ok(c) => c,
                    Err(msg) => {
                        let _ = store_tx.send(Err(std::io::Error::other(msg.clone()))).await;
                        break Err(msg);
                    }
                };
                total += c.len() as u64;
                if store_tx.send(Ok(c.clone())).await.is_err() {
                    break Err("storing it stopped".to_string());
                }
                if let (Some(prev), Some(tx)) = (held.replace(c), &client) {
                    if tx.send(Ok(prev)).await.is_err() {
                        client = None;
                    }
                }
            };
            drop(store_tx);
            (client, held, end, total)
        };
        let (stored, (client, held, pumped, total)) = tokio::join!(store, pump);
        let failure = match (&stored, &pumped) {
            (Ok(()), Ok(())) => None,
            (Err(e), _) => Some(e.to_string()),
            (_, Err(e)) => Some(e.clone()),
        };
        if let Some(tx) = client {
            let last = match &failure {
                None => held.map(Ok),
                Some(why) => Some(Err(std::io::Error::other(format!(
                    "the mirror's fetch of {d} failed: {why}"
                )))),
            };
            if let Some(last) = last {
                let _ = tx.send(last).await;
            }
        }
        st.metrics.mirrored("blob", false, total);
        match &failure {
            None => {
                tracing::info!(repo = %name, digest = %d, upstream = %from, bytes = total, "blob fetched by the mirror")
            }
            Some(why) => {
                tracing::warn!(repo = %name, digest = %d, upstream = %from, error = %why, "mirror fetch failed")
            }
        }
        guard.finish(failure.is_none());
    });
    if !stream {
        return Ok(None);
    }
    let mut headers = vec![
        ("content-type", "application/octet-stream".to_string()),
        ("docker-content-digest", digest.to_string()),
    ];
    if let Some(n) = size {
        headers.push(("content-length", n.to_string()));
    }
    let body = futures::stream::poll_fn(move |cx| client_rx.poll_recv(cx));
    Ok(Some(response(
        StatusCode::OK,
        &headers,
        Body::from_stream(body),
    )))
}
