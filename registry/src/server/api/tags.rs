//! `GET /v2/<name>/tags/list`: a repository's tags, a page at a time.

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;

use super::shared::{blocking, link_next, page, response, ApiResult, PageQuery};
use crate::error::ErrorCode;
use crate::name::RepoName;
use crate::server::error::ApiError;
use crate::server::state::AppState;

pub(super) async fn list(st: &Arc<AppState>, repo: &RepoName, q: PageQuery) -> ApiResult {
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
