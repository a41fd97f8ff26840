//! HTTP handlers of the distribution spec, one module per resource: parse the request, call
//! the metadata, the blob store or the upload service, answer with the spec's status codes and
//! headers. Errors leave through [`ApiError`] only.
//!
//! [`dispatch`] is the single entry point under `/v2`: it parses the route, asks `auth` whether
//! the caller may, and hands over to the resource's handler. The token endpoint is [`token`](mod@token).

mod blobs;
mod catalog;
pub(super) mod events;
mod manifests;
mod mirror;
mod referrers;
mod shared;
mod tags;
mod token;
mod uploads;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::auth::policy::Actions;
use super::auth::Need;
use super::error::ApiError;
use super::routes::{self, Route};
use super::state::AppState;
use crate::error::ErrorCode;
use crate::name::RepoName;

use shared::{response, ApiResult, Ctx};
pub use token::token;

/// The query string of `uri` as `T` (absent keys are `None`; unknown ones are ignored).
fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::new(ErrorCode::Unsupported, e.body_text()))
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
    let m = &parts.method;
    let h = &parts.headers;
    let u = &parts.uri;
    let client = st.auth.client(&parts.extensions, &parts.headers);
    let caller = st.auth.identify(h, &client).await?;
    if let Some(need) = need_of(&route, m) {
        st.auth.authorize(&caller, &need, h).await?;
    }
    let cx = Ctx { caller, client };
    let cx = &cx;
    if let Some(early) = mirrored(&st, &route, m, h).await? {
        return Ok(early);
    }
    let noted = st.notify.is_on().then(|| route.clone());
    let result = match (route, m.clone()) {
        (Route::Base, Method::GET | Method::HEAD) => Ok(response(
            StatusCode::OK,
            &[("content-type", "application/json".into())],
            Body::from("{}"),
        )),
        (Route::Catalog, Method::GET) => catalog::list(&st, query(u)?, cx).await,
        (Route::Tags(repo), Method::GET) => tags::list(&st, &repo, query(u)?).await,
        (Route::Manifest(repo, r), Method::GET | Method::HEAD) => {
            manifests::get(&st, &repo, &r, m == Method::HEAD).await
        }
        (Route::Manifest(repo, r), Method::PUT) => {
            manifests::put(&st, &repo, &r, h, body, cx).await
        }
        (Route::Manifest(repo, r), Method::DELETE) => manifests::delete(&st, &repo, &r, cx).await,
        (Route::Blob(repo, d), Method::GET | Method::HEAD) => {
            blobs::get(&st, &repo, &d, h, m == Method::HEAD).await
        }
        (Route::Blob(repo, d), Method::DELETE) => blobs::delete(&st, &repo, &d, cx).await,
        (Route::UploadStart(repo), Method::POST) => {
            uploads::start(&st, &repo, query(u)?, h, body, cx).await
        }
        (Route::Upload(repo, id), Method::GET) => uploads::status(&st, &repo, &id).await,
        (Route::Upload(repo, id), Method::PATCH) => uploads::patch(&st, &repo, &id, h, body).await,
        (Route::Upload(repo, id), Method::PUT) => {
            uploads::put(&st, &repo, &id, query(u)?, h, body).await
        }
        (Route::Upload(repo, id), Method::DELETE) => uploads::cancel(&st, &repo, &id).await,
        (Route::Referrers(repo, d), Method::GET) => {
            referrers::list(&st, &repo, &d, query(u)?).await
        }
        (_, method) => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!("method {method} is not supported on this endpoint"),
        )),
    };
    if let Some(route) = noted {
        let answered = match &result {
            Ok(r) => Some((r.status(), r.headers().clone())),
            Err(_) => None,
        };
        if let Some((status, answer)) = answered {
            events::emit(&st, &route, m, u, h, (status, &answer), cx).await;
        }
    }
    result
}

/// A pull-through mirror's part in a request for one of its names: pushes are refused, and
/// manifests and blobs made present first. `Some`: the mirror answered itself.
async fn mirrored(
    st: &Arc<AppState>,
    route: &Route,
    m: &Method,
    h: &axum::http::HeaderMap,
) -> Result<Option<Response>, ApiError> {
    if st.mirrors.is_empty() {
        return Ok(None);
    }
    let repo = match route {
        Route::Manifest(r, _) | Route::Blob(r, _) | Route::UploadStart(r) | Route::Upload(r, _) => {
            r
        }
        _ => return Ok(None),
    };
    let Some(mirror) = st.mirrors.serving(repo) else {
        return Ok(None);
    };
    match (route, m) {
        (Route::Manifest(_, r), &Method::GET | &Method::HEAD) => {
            mirror::manifest(st, &mirror, repo, r).await?;
            Ok(None)
        }
        (Route::Blob(_, d), &Method::GET | &Method::HEAD) => {
            let digest = shared::parse_digest(d)?;
            mirror::blob(st, &mirror, repo, &digest, h, m == Method::HEAD).await
        }
        (Route::Manifest(..), &Method::PUT) | (Route::UploadStart(_) | Route::Upload(..), _) => {
            Err(mirror::refuse_push(&mirror, repo))
        }
        _ => Ok(None),
    }
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

#[cfg(test)]
mod tests {
    use super::shared::PageQuery;
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Mount {
        mount: Option<String>,
        from: Option<String>,
    }

    #[test]
    fn query_decoding() {
        let uri: Uri = "/v2/a/blobs/uploads/?mount=sha256%3Aab&from=a%2Fb&n=2"
            .parse()
            .expect("uri");
        let q: Mount = query(&uri).expect("query");
        assert_eq!(q.mount.as_deref(), Some("sha256:ab"));
        assert_eq!(q.from.as_deref(), Some("a/b"));
        let q: PageQuery = query(&"/v2/_catalog".parse().expect("uri")).expect("no query");
        assert_eq!((q.n, q.last), (None, None));
    }
}
