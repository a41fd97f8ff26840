//! HTTP handlers of the distribution spec: parse the request, call the metadata and blob store,
//! answer with the spec's status codes and headers. Errors leave through [`ApiError`] only.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;

use super::auth::policy::{Actions, Scope};
use super::auth::{self, Caller, Need, Principal};
use super::error::ApiError;
use super::meta::PutManifestError;
use super::routes::{self, Route};
use super::state::AppState;
use super::store;
use crate::digest::{Algorithm, Digest};
use crate::error::ErrorCode;
use crate::manifest;
use crate::media;
use crate::name::{RepoName, TagName};

type ApiResult = Result<Response, ApiError>;

/// An upload session held in memory between requests (see [`store::Upload`]).
pub type Session = store::Upload;

/// Runs a blocking closure (SQLite, file system) off the async workers.
async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("blocking task failed: {e}")))
}

fn query_map(q: Option<&str>) -> HashMap<String, String> {
    q.map(|q| {
        url_pairs(q)
            .into_iter()
            .collect::<HashMap<String, String>>()
    })
    .unwrap_or_default()
}

/// Minimal `application/x-www-form-urlencoded` decoding for query strings.
fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|v| v as u8)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    Digest::parse(s).map_err(|e| ApiError::new(ErrorCode::DigestInvalid, e.to_string()))
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn response(status: StatusCode, headers: &[(&'static str, String)], body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    for (k, v) in headers {
        r.headers_mut().insert(*k, hv(v));
    }
    r
}

/// The single entry point for everything under `/v2`.
pub async fn dispatch(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let result = handle(st, req).await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn handle(st: Arc<AppState>, req: Request) -> ApiResult {
    let (parts, body) = req.into_parts();
    let route = match routes::parse(parts.uri.path()) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Ok(response(
                StatusCode::NOT_FOUND,
                &[("content-type", "text/plain".into())],
                Body::from(format!("no such endpoint: {}\n", parts.uri.path())),
            ))
        }
        Err(e) => return Err(ApiError::new(ErrorCode::NameInvalid, e.to_string())),
    };
    let q = query_map(parts.uri.query());
    let m = &parts.method;
    let h = &parts.headers;
    let client = st.auth.client(&parts.extensions, &parts.headers);
    let caller = st.auth.identify(h, &client).await?;
    if let Some(need) = need_of(&route, m) {
        st.auth.authorize(&caller, &need, h).await?;
    }
    let cx = Ctx { caller, client };
    let cx = &cx;
    match (route, m.clone()) {
        (Route::Base, Method::GET | Method::HEAD) => Ok(response(
            StatusCode::OK,
            &[("content-type", "application/json".into())],
            Body::from("{}"),
        )),
        (Route::Catalog, Method::GET) => catalog(&st, &q, cx).await,
        (Route::Tags(repo), Method::GET) => tags(&st, &repo, &q).await,
        (Route::Manifest(repo, r), Method::GET | Method::HEAD) => {
            get_manifest(&st, &repo, &r, m == Method::HEAD).await
        }
        (Route::Manifest(repo, r), Method::PUT) => put_manifest(&st, &repo, &r, h, body, cx).await,
        (Route::Manifest(repo, r), Method::DELETE) => delete_manifest(&st, &repo, &r, cx).await,
        (Route::Blob(repo, d), Method::GET | Method::HEAD) => {
            get_blob(&st, &repo, &d, h, m == Method::HEAD).await
        }
        (Route::Blob(repo, d), Method::DELETE) => delete_blob(&st, &repo, &d, cx).await,
        (Route::UploadStart(repo), Method::POST) => start_upload(&st, &repo, &q, h, body, cx).await,
        (Route::Upload(repo, id), Method::GET) => upload_status(&st, &repo, &id).await,
        (Route::Upload(repo, id), Method::PATCH) => patch_upload(&st, &repo, &id, h, body).await,
        (Route::Upload(repo, id), Method::PUT) => put_upload(&st, &repo, &id, &q, h, body).await,
        (Route::Upload(repo, id), Method::DELETE) => cancel_upload(&st, &repo, &id).await,
        (Route::Referrers(repo, d), Method::GET) => referrers(&st, &repo, &d, &q).await,
        (_, method) => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!("method {method} is not supported on this endpoint"),
        )),
    }
}

/// Who is asking, for permission checks inside handlers and for the audit log.
struct Ctx {
    caller: Caller,
    client: String,
}

/// What each endpoint requires of the caller.
fn need_of(route: &Route, m: &Method) -> Option<Need> {
    let repo = |r: &RepoName, a: Actions| Some(Need::Repo(r.to_string(), a));
    match (route, m) {
        (Route::Base, _) => Some(Need::Authenticated),
        (Route::Catalog, _) => Some(Need::Catalog),
        (Route::Tags(r) | Route::Referrers(r, _), _) => repo(r, Actions::PULL),
        (Route::Manifest(r, _) | Route::Blob(r, _), &Method::GET | &Method::HEAD) => {
            repo(r, Actions::PULL)
        }
        (Route::Manifest(r, _), &Method::PUT) => repo(r, Actions::PUSH),
        (Route::Manifest(r, _) | Route::Blob(r, _), &Method::DELETE) => repo(r, Actions::DELETE),
        (Route::UploadStart(r) | Route::Upload(r, _), _) => repo(r, Actions::PUSH),
        _ => None,
    }
}

/// Whether the caller may pull from `repo` (for listings and mount sources).
async fn may_pull(st: &AppState, cx: &Ctx, repo: &str) -> Result<bool, ApiError> {
    st.auth.may(&cx.caller, repo, Actions::PULL).await
}

// ---------------------------------------------------------------------------------------------
// Listings

/// `n` and `last` of a paginated listing; `n` defaults to (and is capped at) the page size.
fn page(st: &AppState, q: &HashMap<String, String>) -> Result<(u32, String), ApiError> {
    let max = st.cfg.default_page_size;
    let n = match q.get("n") {
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| ApiError::new(ErrorCode::Unsupported, format!("n={v:?} is not a number")))?
            .min(max),
        None => max,
    };
    Ok((n, q.get("last").cloned().unwrap_or_default()))
}

fn link_next(path: &str, n: u32, items: &[String], asked: u32) -> Vec<(&'static str, String)> {
    match items.last() {
        Some(last) if items.len() as u32 == asked && asked > 0 => vec![(
            "link",
            format!("<{path}?n={n}&last={}>; rel=\"next\"", percent_encode(last)),
        )],
        _ => Vec::new(),
    }
}

async fn catalog(st: &Arc<AppState>, q: &HashMap<String, String>, cx: &Ctx) -> ApiResult {
    let (n, mut last) = page(st, q)?;
    // Only what the caller may pull is listed; keep reading pages until this one is full.
    let mut repos = Vec::new();
    loop {
        let (meta, after) = (st.meta.clone(), last.clone());
        let batch = blocking(move || meta.catalog(&after, n)).await??;
        let exhausted = (batch.len() as u32) < n;
        for r in batch {
            last = r.clone();
            if repos.len() < n as usize && may_pull(st, cx, &r).await? {
                repos.push(r);
            }
        }
        if exhausted || repos.len() >= n as usize {
            break;
        }
    }
    let mut headers = link_next("/v2/_catalog", n, &repos, n);
    headers.push(("content-type", "application/json".into()));
    let body = serde_json::json!({ "repositories": repos }).to_string();
    Ok(response(StatusCode::OK, &headers, Body::from(body)))
}

async fn tags(st: &Arc<AppState>, repo: &RepoName, q: &HashMap<String, String>) -> ApiResult {
    let (n, last) = page(st, q)?;
    let (meta, r) = (st.meta.clone(), repo.to_string());
    let tags = blocking(move || meta.tags(&r, &last, n))
        .await??
        .ok_or_else(|| name_unknown(repo))?;
    let mut headers = link_next(&format!("/v2/{repo}/tags/list"), n, &tags, n);
    headers.push(("content-type", "application/json".into()));
    let body = serde_json::json!({ "name": repo.as_str(), "tags": tags }).to_string();
    Ok(response(StatusCode::OK, &headers, Body::from(body)))
}

fn name_unknown(repo: &RepoName) -> ApiError {
    ApiError::new(
        ErrorCode::NameUnknown,
        format!("repository {repo} is not known"),
    )
}

async fn referrers(
    st: &Arc<AppState>,
    repo: &RepoName,
    subject: &str,
    q: &HashMap<String, String>,
) -> ApiResult {
    let subject = parse_digest(subject)?;
    let filter = q.get("artifactType").cloned();
    let (meta, r, f) = (st.meta.clone(), repo.to_string(), filter.clone());
    let list = blocking(move || meta.referrers(&r, &subject, f.as_deref())).await??;
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": list,
    })
    .to_string();
    let mut headers = vec![("content-type", media::OCI_INDEX.to_string())];
    if filter.is_some() {
        headers.push(("oci-filters-applied", "artifactType".into()));
    }
    Ok(response(StatusCode::OK, &headers, Body::from(body)))
}

// ---------------------------------------------------------------------------------------------
// Manifests

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

async fn get_manifest(st: &Arc<AppState>, repo: &RepoName, r: &str, head: bool) -> ApiResult {
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
        Body::from(Bytes::from_owner(row.content.clone()))
    };
    Ok(response(StatusCode::OK, &headers, body))
}

async fn put_manifest(
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
    let immutable = tag
        .as_deref()
        .is_some_and(|t| super::gc::is_immutable(&st.rules, repo.as_str(), t));
    let (meta, name, d2) = (st.meta.clone(), repo.to_string(), digest.clone());
    let stored =
        blocking(move || meta.put_manifest(&name, &d2, &bytes, &parsed, tag.as_deref(), immutable))
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

async fn delete_manifest(st: &Arc<AppState>, repo: &RepoName, r: &str, cx: &Ctx) -> ApiResult {
    let (meta, name) = (st.meta.clone(), repo.to_string());
    let reference = parse_reference(r)?;
    // An immutable tag can be deleted neither itself nor through the manifest it names.
    let protected: Vec<String> = match &reference {
        _ if !super::gc::has_immutable(&st.rules, repo.as_str()) => Vec::new(),
        Reference::Tag(t) => vec![t.to_string()],
        Reference::Digest(d) => {
            let (m, n, d) = (st.meta.clone(), name.clone(), d.clone());
            blocking(move || m.tags_of(&n, &d)).await??
        }
    };
    if let Some(t) = protected
        .iter()
        .find(|t| super::gc::is_immutable(&st.rules, repo.as_str(), t))
    {
        return Err(ApiError::new(
            ErrorCode::Denied,
            format!("tag {t} of {repo} is immutable (registry.retention); it cannot be deleted"),
        ));
    }
    let deleted = match reference {
        Reference::Digest(d) => blocking(move || meta.delete_manifest(&name, &d)).await??,
        Reference::Tag(t) => blocking(move || meta.delete_tag(&name, t.as_str())).await??,
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

// ---------------------------------------------------------------------------------------------
// Blobs

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

async fn get_blob(
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

async fn delete_blob(st: &Arc<AppState>, repo: &RepoName, d: &str, cx: &Ctx) -> ApiResult {
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

// ---------------------------------------------------------------------------------------------
// Uploads

fn upload_headers(repo: &RepoName, s: &Session) -> Vec<(&'static str, String)> {
    vec![
        ("location", format!("/v2/{repo}/blobs/uploads/{}", s.id)),
        ("range", format!("0-{}", s.size.saturating_sub(1))),
        ("docker-upload-uuid", s.id.clone()),
        ("content-length", "0".into()),
    ]
}

fn upload_unknown(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::BlobUploadUnknown,
        format!("upload {id} is not known (finished, cancelled or expired); start a new one"),
    )
}

async fn start_upload(
    st: &Arc<AppState>,
    repo: &RepoName,
    q: &HashMap<String, String>,
    h: &HeaderMap,
    body: Body,
    cx: &Ctx,
) -> ApiResult {
    if let (Some(m), Some(from)) = (q.get("mount"), q.get("from")) {
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
    let id = uuid::Uuid::new_v4().to_string();
    if let Some(d) = q.get("digest") {
        // Monolithic single-request upload: never recorded as a session.
        let digest = parse_digest(d)?;
        let (store, i) = (st.store.clone(), id.clone());
        blocking(move || store.create_upload(&i)).await??;
        let mut s = Session::new(id.clone(), repo.to_string(), digest.algorithm());
        let result = async {
            append_body(st, &mut s, h, body).await?;
            finish(st, repo, &mut s, &digest).await
        }
        .await;
        if result.is_err() {
            let (store, parts) = (st.store.clone(), s.parts.clone());
            let _ = blocking(move || store.discard_upload(&id, &parts)).await;
        }
        return result;
    }
    let (store, meta, i, r) = (
        st.store.clone(),
        st.meta.clone(),
        id.clone(),
        repo.to_string(),
    );
    // Sessions are capped per user (anonymous callers: per address): each holds a row and a file.
    // Open and anonymous callers are named "anonymous": they count by address.
    let owner = Some(cx.caller.name())
        .filter(|n| n != "anonymous")
        .unwrap_or_default();
    let (client, cap) = (cx.client.clone(), st.cfg.limits.upload_sessions_per_client);
    let created = blocking(move || -> Result<bool, ApiError> {
        if !meta.create_upload(&i, &r, &owner, &client, cap)? {
            return Ok(false);
        }
        if let Err(e) = store.create_upload(&i) {
            let _ = meta.delete_upload(&i);
            return Err(e.into());
        }
        Ok(true)
    })
    .await??;
    if !created {
        return Err(ApiError::new(
            ErrorCode::TooManyRequests,
            format!(
                "{cap} upload sessions are open for this client already; finish or cancel one \
                 (DELETE its upload URL) or let them expire"
            ),
        )
        .with_header("retry-after", "10".to_string()));
    }
    let s = Session::new(id.clone(), repo.to_string(), Algorithm::Sha256);
    let headers = upload_headers(repo, &s);
    st.sessions
        .lock()
        .map_err(|_| ApiError::internal("session map poisoned"))?
        .insert(id, Arc::new(tokio::sync::Mutex::new(s)));
    Ok(response(StatusCode::ACCEPTED, &headers, Body::empty()))
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

/// Finds a session in memory, or (after a restart) re-opens it from its record and file.
async fn session(
    st: &Arc<AppState>,
    repo: &RepoName,
    id: &str,
) -> Result<Arc<tokio::sync::Mutex<Session>>, ApiError> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(upload_unknown(id));
    }
    let existing = st
        .sessions
        .lock()
        .map_err(|_| ApiError::internal("session map poisoned"))?
        .get(id)
        .cloned();
    if let Some(s) = existing {
        let mut guard = s.lock().await;
        if guard.repo != repo.as_str() {
            return Err(upload_unknown(id));
        }
        if st.store.is_shared() {
            // Another replica may have moved the session on (or ended it) since: the row is
            // the truth, and this replica's running hash only counts while it still matches.
            let (meta, i) = (st.meta.clone(), id.to_string());
            let Some(row) = blocking(move || meta.get_upload(&i)).await?? else {
                drop(guard);
                forget_session(st, id);
                return Err(upload_unknown(id));
            };
            if row.size != guard.size || row.parts != guard.parts {
                guard.size = row.size;
                guard.parts = row.parts;
                guard.hasher = None;
                guard.tail = None;
            }
        }
        drop(guard);
        return Ok(s);
    }
    let (meta, i) = (st.meta.clone(), id.to_string());
    let row = blocking(move || meta.get_upload(&i)).await??;
    let Some(row) = row.filter(|r| r.repo == repo.as_str()) else {
        return Err(upload_unknown(id));
    };
    let Some(size) = st.store.upload_size(id, row.size) else {
        return Err(upload_unknown(id));
    };
    // Continued here after a restart, or after it began on another replica: no running hash.
    let s = Arc::new(tokio::sync::Mutex::new(Session {
        id: row.id,
        repo: row.repo,
        size,
        hasher: None,
        parts: row.parts,
        tail: None,
    }));
    let mut map = st
        .sessions
        .lock()
        .map_err(|_| ApiError::internal("session map poisoned"))?;
    Ok(map.entry(id.to_string()).or_insert(s).clone())
}

fn forget_session(st: &AppState, id: &str) {
    if let Ok(mut m) = st.sessions.lock() {
        m.remove(id);
    }
}

async fn upload_status(st: &Arc<AppState>, repo: &RepoName, id: &str) -> ApiResult {
    let s = session(st, repo, id).await?;
    let s = s.lock().await;
    Ok(response(
        StatusCode::NO_CONTENT,
        &upload_headers(repo, &s),
        Body::empty(),
    ))
}

/// Checks `Content-Range: a-b` (if sent) against the session: the chunk must start where the
/// upload ends. Returns the chunk's announced length.
fn check_content_range(h: &HeaderMap, s: &Session) -> Result<Option<u64>, ApiError> {
    let Some(v) = h.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let invalid = |why: String| {
        ApiError::new(ErrorCode::RangeInvalid, why)
            .with_header("range", format!("0-{}", s.size.saturating_sub(1)))
            .with_header("location", format!("/v2/{}/blobs/uploads/{}", s.repo, s.id))
            .with_header("docker-upload-uuid", s.id.clone())
    };
    let (a, b) = crate::range::chunk_range(v).ok_or_else(|| {
        invalid(format!(
            "Content-Range {v:?} is not of the form <start>-<end> with <end> >= <start>"
        ))
    })?;
    if a != s.size || b < a {
        return Err(invalid(format!(
            "chunk {a}-{b} does not continue the upload, which holds {} bytes; resume at offset {}",
            s.size, s.size
        )));
    }
    Ok(Some(b - a + 1))
}

/// Streams the request body onto the end of the session's file, hashing on the way.
async fn append_body(
    st: &Arc<AppState>,
    s: &mut Session,
    h: &HeaderMap,
    body: Body,
) -> Result<u64, ApiError> {
    let announced = check_content_range(h, s)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    // The worker owns the session's state while it writes, and hands it back.
    let id = s.id.clone();
    let mut up = s.take();
    let store = st.store.clone();
    let writer = store::stream_worker("reg-blob-write", move || {
        let r = store.append(&mut up, rx);
        (up, r)
    });
    let mut stream = body.into_data_stream();
    let mut client_error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) if chunk.is_empty() => {}
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                client_error = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let Ok((up, (written, write_error))) = writer.await else {
        // The state is lost with the thread: the next request reloads it from the record.
        forget_session(st, &id);
        return Err(ApiError::internal(
            "upload writer thread did not start or panicked",
        ));
    };
    *s = up;
    if let Some(e) = write_error {
        return Err(ApiError::internal(format!("writing upload {}: {e}", s.id)));
    }
    if let Some(e) = client_error {
        return Err(ApiError::new(
            ErrorCode::BlobUploadInvalid,
            format!(
                "upload body ended early ({e}); {} bytes are kept, resume from there",
                s.size
            ),
        ));
    }
    if let Some(n) = announced {
        if n != written {
            return Err(ApiError::new(
                ErrorCode::SizeInvalid,
                format!("Content-Range announced {n} bytes but the body had {written}"),
            ));
        }
    }
    Ok(written)
}

async fn patch_upload(
    st: &Arc<AppState>,
    repo: &RepoName,
    id: &str,
    h: &HeaderMap,
    body: Body,
) -> ApiResult {
    let s = session(st, repo, id).await?;
    let mut s = s.lock().await;
    let result = append_body(st, &mut s, h, body).await;
    let (meta, i, size, parts) = (st.meta.clone(), id.to_string(), s.size, s.parts.clone());
    blocking(move || meta.record_upload(&i, size, &parts)).await??;
    result?;
    Ok(response(
        StatusCode::ACCEPTED,
        &upload_headers(repo, &s),
        Body::empty(),
    ))
}

async fn put_upload(
    st: &Arc<AppState>,
    repo: &RepoName,
    id: &str,
    q: &HashMap<String, String>,
    h: &HeaderMap,
    body: Body,
) -> ApiResult {
    let digest = parse_digest(q.get("digest").map(String::as_str).unwrap_or(""))?;
    let s = session(st, repo, id).await?;
    let mut s = s.lock().await;
    append_body(st, &mut s, h, body).await?;
    finish(st, repo, &mut s, &digest).await
}

/// Verifies the digest of a complete upload and commits it as a blob of `repo`. On a mismatch
/// nothing is stored and the session ends.
async fn finish(
    st: &Arc<AppState>,
    repo: &RepoName,
    s: &mut Session,
    digest: &Digest,
) -> ApiResult {
    let (store, touch, d, size) = (st.store.clone(), st.meta.clone(), digest.clone(), s.size);
    let mut up = s.take();
    // Verified, then the row, then the bytes: a collection that runs meanwhile spares the
    // blob (see gc).
    let (up, verdict) = blocking(move || {
        let r = store.finish(&mut up, &d, || {
            touch.touch_blob(&d, size).map_err(std::io::Error::other)
        });
        (up, r)
    })
    .await?;
    *s = up;
    let (meta, id) = (st.meta.clone(), s.id.clone());
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => {
            forget_session(st, &s.id);
            return Err(e.into());
        }
    };
    if let Some(computed) = verdict {
        blocking(move || meta.delete_upload(&id)).await??;
        forget_session(st, &s.id);
        return Err(ApiError::new(
            ErrorCode::DigestInvalid,
            format!("uploaded content has digest {computed}, not {digest}; nothing was stored"),
        )
        .with_detail(serde_json::json!({ "digest": digest.to_string() })));
    }
    let (name, d) = (repo.to_string(), digest.clone());
    blocking(move || -> Result<(), super::meta::MetaError> {
        meta.link_blob(&name, &d, size)?;
        meta.delete_upload(&id)
    })
    .await??;
    forget_session(st, &s.id);
    tracing::debug!(repo = %repo, digest = %digest, size, "blob pushed");
    Ok(blob_created(repo, digest))
}

async fn cancel_upload(st: &Arc<AppState>, repo: &RepoName, id: &str) -> ApiResult {
    let s = session(st, repo, id).await?;
    let s = s.lock().await;
    let (store, meta, i, parts) = (
        st.store.clone(),
        st.meta.clone(),
        s.id.clone(),
        s.parts.clone(),
    );
    blocking(move || -> Result<(), ApiError> {
        store.discard_upload(&i, &parts)?;
        meta.delete_upload(&i)?;
        Ok(())
    })
    .await??;
    forget_session(st, &s.id);
    Ok(response(StatusCode::NO_CONTENT, &[], Body::empty()))
}

// ---------------------------------------------------------------------------------------------
// Token endpoint (Docker token auth: GET with Basic credentials, OAuth2 POST form)

fn token_response(token: &str, refresh: Option<String>, scopes: &[Scope], oauth: bool) -> Response {
    let mut v = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": auth::TOKEN_TTL_SECS,
    });
    if let Some(r) = refresh {
        v["refresh_token"] = serde_json::Value::String(r);
    }
    if oauth {
        let s: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        v["scope"] = serde_json::Value::String(s.join(" "));
    }
    response(
        StatusCode::OK,
        &[
            ("content-type", "application/json".into()),
            ("cache-control", "no-store".into()),
        ],
        Body::from(v.to_string()),
    )
}

fn login_failed(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message).with_header(
        "www-authenticate",
        format!("Basic realm=\"{}\"", auth::SERVICE),
    )
}

/// `GET|POST /auth/token`.
pub async fn token(State(st): State<Arc<AppState>>, req: Request) -> Response {
    token_inner(st, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn token_inner(st: Arc<AppState>, req: Request) -> ApiResult {
    let (parts, body) = req.into_parts();
    let client = st.auth.client(&parts.extensions, &parts.headers);
    let (pairs, oauth) = match parts.method {
        Method::GET => (url_pairs(parts.uri.query().unwrap_or("")), false),
        Method::POST => {
            let bytes = http_body_util::Limited::new(body, 64 * 1024)
                .collect()
                .await
                .map_err(|e| ApiError::new(ErrorCode::Unsupported, format!("reading form: {e}")))?
                .to_bytes();
            (url_pairs(&String::from_utf8_lossy(&bytes)), true)
        }
        ref m => {
            return Err(ApiError::new(
                ErrorCode::Unsupported,
                format!("method {m} is not supported on the token endpoint"),
            ))
        }
    };
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let scopes: Vec<Scope> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| Scope::parse_list(v))
        .collect();
    let basic = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(auth::basic_credentials);
    let (principal, offline) = if oauth {
        match get("grant_type").as_deref() {
            Some("password") => {
                let (u, p) = (
                    get("username").unwrap_or_default(),
                    get("password").unwrap_or_default(),
                );
                let p = st
                    .auth
                    .check_password(&u, &p, &client)
                    .await?
                    .ok_or_else(|| login_failed("invalid username or password"))?;
                (p, get("access_type").as_deref() == Some("offline"))
            }
            Some("refresh_token") => {
                let r = get("refresh_token").unwrap_or_default();
                let user = st.auth.refresh_token_user(&r).await?.ok_or_else(|| {
                    login_failed("refresh token is invalid or expired; log in again")
                })?;
                (Principal::User(user), false)
            }
            other => {
                return Err(ApiError::new(
                    ErrorCode::Unsupported,
                    format!("grant_type {other:?} is not supported (password or refresh_token)"),
                ))
            }
        }
    } else if let Some((u, p)) = basic {
        let p = st
            .auth
            .check_password(&u, &p, &client)
            .await?
            .ok_or_else(|| login_failed("invalid username or password"))?;
        (p, get("offline_token").as_deref() == Some("true"))
    } else {
        (Principal::Anonymous, false)
    };
    let (token, _granted) = st.auth.issue(&principal, &scopes).await?;
    let refresh = match (&principal, offline) {
        (Principal::User(u), true) => Some(st.auth.new_refresh_token(u).await?),
        _ => None,
    };
    if !matches!(principal, Principal::Anonymous) {
        let what: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        st.auth
            .audit(
                principal.name(),
                "login",
                "registry",
                &what.join(" "),
                &client,
            )
            .await;
    }
    Ok(token_response(&token, refresh, &scopes, oauth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = query_map(Some("mount=sha256%3Aab&from=a%2Fb&n=2"));
        assert_eq!(q.get("mount").map(String::as_str), Some("sha256:ab"));
        assert_eq!(q.get("from").map(String::as_str), Some("a/b"));
    }
}
