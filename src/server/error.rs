//! The one error type every handler returns, and how it becomes a response.

use crate::telemetry::error_chain;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::incident::StoreError;

/// Why an API request failed.
///
/// Client mistakes (400, 401, 404, 409, 413) get their status and a JSON body
/// `{"error": "..."}` saying what to fix, and are not logged: they are the
/// caller's problem, and logging them would let any client fill our logs.
/// Internal failures get a 500 with a generic body (no store paths or SQL
/// in responses) and are logged once, with the full cause chain.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query or path parameter has a value the API cannot use.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParam {
        /// The parameter's name as it appears in the URL.
        name: &'static str,
        /// What is wrong with the value, and what is expected.
        reason: String,
    },
    /// The request is malformed in a way not tied to one parameter (an
    /// unknown or repeated query parameter).
    #[error("{0}")]
    BadRequest(String),
    /// `/api/*` needs a bearer token and none was sent.
    #[error("this API requires an `Authorization: Bearer <token>` header")]
    MissingToken,
    /// A bearer token was sent but is not the configured one.
    #[error("the bearer token is not valid")]
    InvalidToken,
    /// Basic auth credentials were sent but are not the configured ones
    /// (or basic auth is not configured).
    #[error("the basic auth credentials are not valid")]
    InvalidCredentials,
    /// The request body is larger than the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the resource's state (an action that is
    /// already decided or has expired).
    #[error("{0}")]
    Conflict(String),
    /// The data cannot support an answer (too little history, a constant
    /// series): said plainly rather than answered with a made-up number.
    #[error("{0}")]
    Unprocessable(String),
    /// An upstream (Prometheus) failed; the message names the query.
    #[error("{0}")]
    BadGateway(String),
    /// The feature is not set up on this instance.
    #[error("{0}")]
    Unavailable(String),
    /// The store failed while answering.
    #[error("the incident store failed")]
    Store(#[source] StoreError),
    /// The blocking task that ran a store call panicked or was cancelled.
    #[error("a store task did not complete")]
    Task(#[source] tokio::task::JoinError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidParam { .. } | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MissingToken | ApiError::InvalidToken | ApiError::InvalidCredentials => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) | ApiError::Task(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            // This runs inside the request's trace span (TraceLayer wraps
            // the handler), so the log line carries method and URI; it is
            // the only place an internal error is logged.
            tracing::error!(
                error = %error_chain(&self),
                "An API request failed inside aiopsd; answered 500."
            );
            "internal error; the aiopsd log has the details".to_string()
        } else {
            self.to_string()
        };
        let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
        // RFC 6750 §3: a 401 names the scheme, and says when the token was wrong.
        let challenge = match self {
            ApiError::MissingToken => Some(r#"Bearer realm="aiopsd""#),
            ApiError::InvalidToken => Some(r#"Bearer realm="aiopsd", error="invalid_token""#),
            ApiError::InvalidCredentials => Some(r#"Basic realm="aiopsd""#),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}
