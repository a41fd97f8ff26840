//! What the handlers of every resource share: the response builder, the blocking-pool hop, the
//! caller's context, digest parsing at the edge, and the pagination of listings.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use crate::digest::Digest;
use crate::error::ErrorCode;
use crate::server::auth::policy::Actions;
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::state::AppState;

pub(super) type ApiResult = Result<Response, ApiError>;

/// Runs a blocking closure (SQLite, file system) off the async workers.
pub(super) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("blocking task failed: {e}")))
}

pub(super) fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    Digest::parse(s).map_err(|e| ApiError::new(ErrorCode::DigestInvalid, e.to_string()))
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub(super) fn response(
    status: StatusCode,
    headers: &[(&'static str, String)],
    body: Body,
) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    for (k, v) in headers {
        r.headers_mut().insert(*k, hv(v));
    }
    r
}

/// Who is asking, for permission checks inside handlers and for the audit log.
pub(super) struct Ctx {
    pub(super) caller: Caller,
    pub(super) client: String,
}

/// Whether the caller may pull from `repo` (for listings and mount sources).
pub(super) async fn may_pull(st: &AppState, cx: &Ctx, repo: &str) -> Result<bool, ApiError> {
    st.auth.may(&cx.caller, repo, Actions::PULL).await
}

/// `?n=&last=` of a paginated listing.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PageQuery {
    pub(super) n: Option<String>,
    pub(super) last: Option<String>,
}

/// `n` and `last` of a paginated listing; `n` defaults to (and is capped at) the page size.
pub(super) fn page(st: &AppState, q: PageQuery) -> Result<(u32, String), ApiError> {
    let max = st.cfg.default_page_size;
    let n = match q.n {
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| ApiError::new(ErrorCode::Unsupported, format!("n={v:?} is not a number")))?
            .min(max),
        None => max,
    };
    Ok((n, q.last.unwrap_or_default()))
}

/// What a `last` value keeps as it is in a `Link` URL: unreserved characters, `/` and `:`.
const LINK_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/')
    .remove(b':');

pub(super) fn link_next(
    path: &str,
    n: u32,
    items: &[String],
    asked: u32,
) -> Vec<(&'static str, String)> {
    match items.last() {
        Some(last) if items.len() as u32 == asked && asked > 0 => vec![(
            "link",
            format!(
                "<{path}?n={n}&last={}>; rel=\"next\"",
                percent_encoding::utf8_percent_encode(last, LINK_VALUE)
            ),
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_escape_what_a_url_cannot_carry() {
        let links = link_next("/v2/_catalog", 2, &["a".into(), "b c/d:e%".into()], 2);
        assert_eq!(
            links,
            vec![(
                "link",
                "</v2/_catalog?n=2&last=b%20c/d:e%25>; rel=\"next\"".to_string()
            )]
        );
        assert!(link_next("/v2/_catalog", 3, &["a".into()], 3).is_empty());
    }
}
