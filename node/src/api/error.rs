//! The agent's one HTTP error boundary: every domain error becomes a status and docker's body
//! (`{"message": …}`) here, and nowhere else.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::containers::volumes::VolumeError;
use crate::containers::ContainerError;
use crate::image::PullError;
use crate::network::NetworkError;

/// An answer other than success: its status and the message the client shows.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// A path this agent does not serve (an older agent than its client, most likely).
    pub fn no_such_api(path: impl std::fmt::Display) -> ApiError {
        ApiError::not_found(format!(
            "the node agent has no API {path}: is it older than this reg client?"
        ))
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// The agent's own failure. The node is the user's own daemon: the message (a missing
    /// tool, a kernel refusal) is what tells them what to fix, so it is sent, and logged.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        let message = e.to_string();
        tracing::warn!(error = %message, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "message": self.message })),
        )
            .into_response()
    }
}

impl From<NetworkError> for ApiError {
    fn from(e: NetworkError) -> ApiError {
        let status = match &e {
            NetworkError::NotFound(_) => StatusCode::NOT_FOUND,
            NetworkError::Conflict(_) => StatusCode::CONFLICT,
            NetworkError::Invalid(_) => StatusCode::BAD_REQUEST,
            NetworkError::Forbidden(_) => StatusCode::FORBIDDEN,
            NetworkError::Db(_) | NetworkError::Failed(_) => return ApiError::internal(e),
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<ContainerError> for ApiError {
    fn from(e: ContainerError) -> ApiError {
        match e {
            ContainerError::NotFound(m) => ApiError::not_found(m),
            ContainerError::Conflict(m) => ApiError::conflict(m),
            ContainerError::Invalid(m) => ApiError::bad_request(m),
            ContainerError::Spec(e) => ApiError::bad_request(e.to_string()),
            ContainerError::Network(n) => n.into(),
            ContainerError::Volume(v) => v.into(),
            e @ (ContainerError::Db(_) | ContainerError::Image(_) | ContainerError::Failed(_)) => {
                ApiError::internal(e)
            }
        }
    }
}

impl From<VolumeError> for ApiError {
    fn from(e: VolumeError) -> ApiError {
        let status = match &e {
            VolumeError::NotFound(_) => StatusCode::NOT_FOUND,
            VolumeError::InUse(_) => StatusCode::CONFLICT,
            VolumeError::Invalid(_) => StatusCode::BAD_REQUEST,
            VolumeError::Failed(_) => return ApiError::internal(e),
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<PullError> for ApiError {
    fn from(e: PullError) -> ApiError {
        ApiError::internal(e)
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> ApiError {
        ApiError::internal(e)
    }
}
