//! `GET /v2/_catalog`: the repositories the caller may pull from, a page at a time.

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;

use super::shared::{blocking, link_next, may_pull, page, response, ApiResult, Ctx, PageQuery};
use crate::server::state::AppState;

pub(super) async fn list(st: &Arc<AppState>, q: PageQuery, cx: &Ctx) -> ApiResult {
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
