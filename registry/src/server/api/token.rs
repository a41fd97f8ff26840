//! `GET|POST /auth/token`: Docker's token flow (GET with Basic credentials) and the OAuth2
//! form (POST, `grant_type=password|refresh_token`). Grants the intersection of what was asked
//! and what the identity may do.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::shared::{response, ApiResult};
use crate::error::ErrorCode;
use crate::server::auth::policy::Scope;
use crate::server::auth::{self, Principal};
use crate::server::error::ApiError;
use crate::server::state::AppState;

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
        Method::GET => (
            form_pairs(parts.uri.query().unwrap_or("").as_bytes())?,
            false,
        ),
        Method::POST => {
            let bytes = http_body_util::Limited::new(body, 64 * 1024)
                .collect()
                .await
                .map_err(|e| ApiError::new(ErrorCode::Unsupported, format!("reading form: {e}")))?
                .to_bytes();
            (form_pairs(&bytes)?, true)
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

/// `application/x-www-form-urlencoded` pairs in order, repeated keys kept (`scope` may come
/// several times).
fn form_pairs(form: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_bytes(form)
        .map_err(|e| ApiError::new(ErrorCode::Unsupported, format!("reading form: {e}")))
}
