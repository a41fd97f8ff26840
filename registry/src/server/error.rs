//! The one HTTP error boundary: every handler error becomes the spec's JSON error body here.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ErrorCode;

/// An error answered to a client. Internal causes are logged, never sent.
#[derive(Debug)]
pub enum ApiError {
    /// A spec error: code, a message for the client, optional detail.
    Spec {
        code: ErrorCode,
        message: String,
        detail: Option<serde_json::Value>,
        headers: Vec<(&'static str, String)>,
    },
    /// Something broke on our side; the cause is logged with an id that the client sees.
    Internal(String),
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::Spec {
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }
    pub fn with_detail(mut self, value: serde_json::Value) -> ApiError {
        if let ApiError::Spec { detail, .. } = &mut self {
            *detail = Some(value);
        }
        self
    }
    pub fn with_header(mut self, name: &'static str, value: String) -> ApiError {
        if let ApiError::Spec { headers, .. } = &mut self {
            headers.push((name, value));
        }
        self
    }
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(cause.to_string())
    }
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Spec { code, .. } => *code,
            ApiError::Internal(_) => ErrorCode::Unknown,
        }
    }
}

impl From<super::meta::MetaError> for ApiError {
    fn from(e: super::meta::MetaError) -> Self {
        ApiError::internal(e)
    }
}

impl From<super::uploads::UploadError> for ApiError {
    fn from(e: super::uploads::UploadError) -> Self {
        use super::uploads::UploadError as E;
        let code = match &e {
            E::Unknown(_) => ErrorCode::BlobUploadUnknown,
            E::TooMany { .. } => ErrorCode::TooManyRequests,
            E::Range { .. } => ErrorCode::RangeInvalid,
            E::BodyEnded { .. } => ErrorCode::BlobUploadInvalid,
            E::SizeMismatch { .. } => ErrorCode::SizeInvalid,
            E::DigestMismatch { .. } => ErrorCode::DigestInvalid,
            E::Quota(_) => ErrorCode::Denied,
            E::Storage(cause) => return ApiError::internal(cause),
            E::Meta(cause) => return ApiError::internal(cause),
            E::Write { .. } | E::WriterLost | E::Task(_) | E::Poisoned => {
                return ApiError::internal(e)
            }
        };
        let err = ApiError::new(code, e.to_string());
        match e {
            E::TooMany { .. } => err.with_header("retry-after", "10".to_string()),
            E::Range { repo, id, size, .. } => err
                .with_header("range", format!("0-{}", size.saturating_sub(1)))
                .with_header("location", format!("/v2/{repo}/blobs/uploads/{id}"))
                .with_header("docker-upload-uuid", id),
            E::DigestMismatch { expected, .. } => {
                err.with_detail(serde_json::json!({ "digest": expected.to_string() }))
            }
            _ => err,
        }
    }
}

impl From<super::quota::LinkError> for ApiError {
    fn from(e: super::quota::LinkError) -> Self {
        match e {
            super::quota::LinkError::Meta(cause) => ApiError::internal(cause),
            super::quota::LinkError::Quota(q) => ApiError::new(ErrorCode::Denied, q.to_string()),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, message, detail, headers) = match self {
            ApiError::Spec {
                code,
                message,
                detail,
                headers,
            } => (code, message, detail, headers),
            ApiError::Internal(cause) => {
                let id = uuid::Uuid::new_v4();
                tracing::error!(error_id = %id, %cause, "internal error");
                (
                    ErrorCode::Unknown,
                    format!("internal server error (id {id}); the registry log has the cause"),
                    None,
                    Vec::new(),
                )
            }
        };
        let mut entry = serde_json::json!({ "code": code.as_str(), "message": message });
        if let Some(d) = detail {
            entry["detail"] = d;
        }
        let body = serde_json::json!({ "errors": [entry] }).to_string();
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        for (name, value) in headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        resp
    }
}
