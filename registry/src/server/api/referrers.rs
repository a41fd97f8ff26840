//! `GET /v2/<name>/referrers/<digest>`: the manifests whose subject is a digest, as an index.

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use serde::Deserialize;

use super::shared::{blocking, parse_digest, response, ApiResult};
use crate::media;
use crate::name::RepoName;
use crate::server::state::AppState;

/// `?artifactType=`: only referrers of that type.
#[derive(Debug, Deserialize)]
pub(super) struct ReferrersQuery {
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
}

pub(super) async fn list(
    st: &Arc<AppState>,
    repo: &RepoName,
    subject: &str,
    q: ReferrersQuery,
) -> ApiResult {
    let subject = parse_digest(subject)?;
    let filter = q.artifact_type;
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
