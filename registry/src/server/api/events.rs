//! The notification events of an answered request (`registry.notify`), made from its route, its
//! headers and the answer's headers — the one place that knows which requests are pushes,
//! pulls and deletes. Only successful answers make events.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode, Uri};

use super::shared::{blocking, Ctx};
use crate::digest::Digest;
use crate::server::notify::{self, Actor, Event, RequestInfo, Target};
use crate::server::routes::Route;
use crate::server::state::AppState;

const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

fn text(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn number(h: &HeaderMap, name: &str) -> u64 {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Emits the event of an answered request, if it is one.
pub(super) async fn emit(
    st: &Arc<AppState>,
    route: &Route,
    method: &Method,
    uri: &Uri,
    req: &HeaderMap,
    (status, answer): (StatusCode, &HeaderMap),
    cx: &Ctx,
) {
    let answered_digest = text(answer, "docker-content-digest");
    let (action, mut target) = match (route, method, status) {
        (Route::Manifest(repo, r), &Method::GET, StatusCode::OK) => (
            "pull",
            Target {
                media_type: text(answer, "content-type"),
                size: number(answer, "content-length"),
                digest: answered_digest,
                repository: repo.to_string(),
                tag: tag_of(r),
                ..Target::default()
            },
        ),
        (Route::Manifest(repo, r), &Method::PUT, StatusCode::CREATED) => (
            "push",
            Target {
                media_type: text(req, "content-type"),
                size: number(req, "content-length"),
                digest: answered_digest,
                repository: repo.to_string(),
                tag: tag_of(r),
                ..Target::default()
            },
        ),
        (Route::Manifest(repo, r), &Method::DELETE, StatusCode::ACCEPTED) => {
            ("delete", deleted_target(repo.as_str(), r))
        }
        (Route::Blob(repo, d), &Method::GET, StatusCode::OK) => (
            "pull",
            Target {
                media_type: BLOB_MEDIA_TYPE.into(),
                size: number(answer, "content-length"),
                digest: d.clone(),
                repository: repo.to_string(),
                ..Target::default()
            },
        ),
        (Route::Blob(repo, d), &Method::DELETE, StatusCode::ACCEPTED) => (
            "delete",
            Target {
                digest: d.clone(),
                repository: repo.to_string(),
                ..Target::default()
            },
        ),
        (
            Route::UploadStart(repo) | Route::Upload(repo, _),
            &Method::POST | &Method::PUT,
            StatusCode::CREATED,
        ) => {
            // The query the upload handler read (`mount` + `from`), decoded the same way.
            let q: super::uploads::StartQuery = super::query(uri).unwrap_or_default();
            let mounted = q.mount.is_some();
            let from = q.from;
            (
                if mounted { "mount" } else { "push" },
                Target {
                    media_type: BLOB_MEDIA_TYPE.into(),
                    digest: answered_digest,
                    repository: repo.to_string(),
                    from_repository: if mounted {
                        from.unwrap_or_default()
                    } else {
                        String::new()
                    },
                    ..Target::default()
                },
            )
        }
        _ => return,
    };
    if action == "push" || action == "mount" {
        if let (Route::UploadStart(_) | Route::Upload(..), Ok(d)) =
            (route, Digest::parse(&target.digest))
        {
            let (meta, name) = (st.meta.clone(), target.repository.clone());
            if let Ok(Ok(Some(size))) = blocking(move || meta.blob_in_repo(&name, &d)).await {
                target.size = size;
            }
        }
    }
    target.length = target.size;
    if !target.digest.is_empty() {
        let kind = if target.media_type == BLOB_MEDIA_TYPE {
            "blobs"
        } else {
            "manifests"
        };
        let scheme = if st.cfg.tls().is_some() {
            "https"
        } else {
            "http"
        };
        target.url = format!(
            "{scheme}://{}/v2/{}/{kind}/{}",
            text(req, "host"),
            target.repository,
            target.digest
        );
    }
    send(
        st,
        action,
        target,
        method,
        req,
        &cx.client,
        &cx.caller.name(),
    );
}

/// The `delete` event of a tag or manifest deleted from the web interface (`reference` is
/// the tag, or the digest), as the API's DELETE would have made it.
pub(crate) fn deleted_in_ui(
    st: &AppState,
    repo: &str,
    reference: &str,
    req: &HeaderMap,
    client: &str,
    user: &str,
) {
    let target = deleted_target(repo, reference);
    send(st, "delete", target, &Method::DELETE, req, client, user);
}

/// The target of a manifest's `delete` event: its tag, or its digest.
fn deleted_target(repo: &str, reference: &str) -> Target {
    let tag = tag_of(reference);
    Target {
        digest: if tag.is_empty() {
            reference.to_string()
        } else {
            String::new()
        },
        repository: repo.to_string(),
        tag,
        ..Target::default()
    }
}

fn send(
    st: &AppState,
    action: &str,
    target: Target,
    method: &Method,
    req: &HeaderMap,
    client: &str,
    actor: &str,
) {
    st.notify.emit(Event {
        id: uuid::Uuid::new_v4().to_string(),
        timestamp: notify::timestamp(),
        action: action.into(),
        target,
        request: RequestInfo {
            id: uuid::Uuid::new_v4().to_string(),
            addr: client.to_string(),
            host: text(req, "host"),
            method: method.to_string(),
            useragent: text(req, "user-agent"),
        },
        actor: Actor {
            name: Some(actor.to_string())
                .filter(|n| n != "anonymous")
                .unwrap_or_default(),
        },
        source: st.notify.source(),
    });
}

/// The tag a reference names (empty for a digest).
fn tag_of(reference: &str) -> String {
    if reference.contains(':') {
        String::new()
    } else {
        reference.to_string()
    }
}
