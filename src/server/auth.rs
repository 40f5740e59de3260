//! Bearer-token check for `/api/*`, and the Alertmanager webhook's check
//! (bearer token or, when configured, basic auth).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use crate::config::Secret;

/// Lets the request through when it carries the configured bearer token,
/// or when no token is configured (config validation allows that only on a
/// loopback listener).
///
/// The token is never logged: TraceLayer's default span does not record
/// headers, and the errors below do not echo what was sent.
pub(super) async fn require_token(
    State(expected): State<Option<Secret>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = expected else {
        return Ok(next.run(request).await);
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match presented {
        None => Err(ApiError::MissingToken),
        Some(token) if constant_time_eq(token.as_bytes(), expected.expose().as_bytes()) => {
            Ok(next.run(request).await)
        }
        Some(_) => Err(ApiError::InvalidToken),
    }
}

/// What the Alertmanager webhook accepts: the API bearer token and, if
/// configured, basic auth (`alertmanager.basic_auth`), because
/// Alertmanager's `http_config` can send either.
#[derive(Clone, Default)]
pub(super) struct WebhookCredentials {
    /// The API bearer token (`server.api_token`).
    pub(super) token: Option<Secret>,
    /// User name and password for basic auth.
    pub(super) basic: Option<(String, Secret)>,
}

/// Lets a webhook request through when it carries the API bearer token or
/// the configured basic auth credentials; open only when neither is
/// configured (config validation allows that only on a loopback listener).
/// Runs before the body is read, so a refused request stores nothing.
pub(super) async fn require_webhook_credentials(
    State(expected): State<Arc<WebhookCredentials>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if expected.token.is_none() && expected.basic.is_none() {
        return Ok(next.run(request).await);
    }
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(header) = header else {
        return Err(ApiError::MissingToken);
    };
    if let Some(token) = bearer_token(header) {
        return match &expected.token {
            Some(t) if constant_time_eq(token.as_bytes(), t.expose().as_bytes()) => {
                Ok(next.run(request).await)
            }
            _ => Err(ApiError::InvalidToken),
        };
    }
    if let Some((user, password)) = basic_credentials(header) {
        return match &expected.basic {
            // Both compared in full before deciding, so timing does not
            // tell which of the two was wrong.
            Some((u, p)) => {
                let user_ok = constant_time_eq(user.as_bytes(), u.as_bytes());
                let password_ok = constant_time_eq(password.as_bytes(), p.expose().as_bytes());
                if user_ok & password_ok {
                    Ok(next.run(request).await)
                } else {
                    Err(ApiError::InvalidCredentials)
                }
            }
            None => Err(ApiError::InvalidCredentials),
        };
    }
    Err(ApiError::MissingToken)
}

/// User and password of an `Authorization: Basic <base64(user:password)>`
/// value; `None` for another scheme or an undecodable value.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 7235 §2.1).
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim_start();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares a presented token with the expected one in time that depends
/// only on the expected token's length, so response timing does not tell
/// an attacker how many leading bytes they got right.
pub(crate) fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= p ^ e;
    }
    // Keep the optimiser from turning the loop into an early-exit compare.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn basic_credentials_are_decoded() {
        // base64("alertmanager:pa:ss") — the password may contain `:`.
        assert_eq!(
            basic_credentials("Basic YWxlcnRtYW5hZ2VyOnBhOnNz"),
            Some(("alertmanager".to_string(), "pa:ss".to_string()))
        );
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(basic_credentials("Bearer YWxlcnRtYW5hZ2VyOnBhOnNz"), None);
    }

    #[test]
    fn constant_time_eq_compares_whole_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret-and-more", b"secret"));
        assert!(!constant_time_eq(b"sec", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
