//! Who is asking: the UI's authentication, roles and CSRF checks.
//!
//! The UI accepts the API's credentials and nothing else:
//!
//! - `Authorization: Bearer <token>` (scripts, curl): `server.api_token` is
//!   an operator, `server.viewer_token` a viewer. The comparison is the
//!   API's own ([`crate::server::auth`]). No CSRF token is needed: a
//!   browser never attaches that header on its own.
//! - A session cookie set by the login form (browsers): HttpOnly,
//!   SameSite=Strict, signed with a key derived from the token (see
//!   [`super::session`]). Every POST must carry the session's CSRF token
//!   and, when the browser sends an `Origin`, come from this host.
//! - No token configured: the API is open (loopback only, as config
//!   validation enforces), so the UI is too and everyone is an operator;
//!   a session cookie is still issued so forms carry a CSRF token.
//!
//! Without credentials a page request is redirected to the login form; any
//! other request gets the API's 401.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;
use serde::Deserialize;

use super::page::{self, Nav};
use super::session::{self, cookie_value, Role, Session, SessionKey, COOKIE_NAME};
use super::{UiState, UI_PATH};
use crate::config::Secret;
use crate::server::auth::{bearer_token, constant_time_eq};
use crate::server::ApiError;
use crate::signal::now_ms;

/// The configured credentials, with their session keys.
pub(crate) struct AuthConfig {
    operator: Option<(Secret, SessionKey)>,
    viewer: Option<(Secret, SessionKey)>,
    /// Set when no API token is configured (open mode).
    open_key: Option<SessionKey>,
}

impl AuthConfig {
    /// From the API token (operator) and the viewer token.
    pub(crate) fn new(api_token: Option<&Secret>, viewer_token: Option<&Secret>) -> AuthConfig {
        match api_token {
            Some(op) => AuthConfig {
                operator: Some((op.clone(), SessionKey::from_token(op.expose()))),
                viewer: viewer_token.map(|v| (v.clone(), SessionKey::from_token(v.expose()))),
                open_key: None,
            },
            None => AuthConfig {
                operator: None,
                viewer: None,
                open_key: Some(SessionKey::from_bytes(random_key())),
            },
        }
    }

    fn is_open(&self) -> bool {
        self.open_key.is_some()
    }

    fn key_for(&self, role: Role) -> Option<SessionKey> {
        if let Some(k) = &self.open_key {
            return (role == Role::Operator).then(|| k.clone());
        }
        let entry = match role {
            Role::Operator => &self.operator,
            Role::Viewer => &self.viewer,
        };
        entry.as_ref().map(|(_, k)| k.clone())
    }

    /// The role a presented token grants, compared in constant time.
    fn role_of_token(&self, presented: &str) -> Option<Role> {
        let matches = |entry: &Option<(Secret, SessionKey)>| {
            entry.as_ref().is_some_and(|(secret, _)| {
                constant_time_eq(presented.as_bytes(), secret.expose().as_bytes())
            })
        };
        // Both compared, so timing does not tell which role a guess hit.
        let (op, view) = (matches(&self.operator), matches(&self.viewer));
        if op {
            Some(Role::Operator)
        } else if view {
            Some(Role::Viewer)
        } else {
            None
        }
    }
}

/// 32 bytes from the OS; if it refuses (it does not on Linux), a key from
/// std's randomly seeded hasher, so the daemon still serves.
fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    if getrandom::fill(&mut key).is_err() {
        use std::hash::{BuildHasher, Hasher};
        for chunk in key.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(now_ms().unsigned_abs());
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    key
}

/// The person (or script) behind a request, as the pages and forms see it.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    /// What they may do.
    pub(crate) role: Role,
    /// Their session, when they came with a cookie (not with a bearer).
    session: Option<(Session, SessionKey)>,
    /// True when they can log out (a token login, not open mode).
    pub(crate) can_log_out: bool,
}

impl Viewer {
    /// True for operators: they see and may submit the action forms.
    pub(crate) fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// The CSRF token forms must carry (empty for bearer clients).
    pub(crate) fn csrf_token(&self) -> String {
        self.session
            .as_ref()
            .map(|(s, k)| s.csrf_token(k))
            .unwrap_or_default()
    }

    /// True when `presented` is acceptable as this request's CSRF token.
    pub(crate) fn csrf_ok(&self, presented: &str) -> bool {
        match &self.session {
            Some((s, k)) => s.csrf_ok(k, presented),
            // A bearer header is never sent by a browser on its own.
            None => true,
        }
    }
}

/// Middleware on every UI page and form: finds the [`Viewer`] or refuses.
pub(crate) async fn require_session(
    State(ui): State<UiState>,
    mut request: Request,
    next: axum::middleware::Next,
) -> Response {
    let auth = &ui.auth;
    let now = now_ms();
    if request.method() != Method::GET && !same_origin(request.headers()) {
        return page::error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form was submitted from another site.",
            None,
        );
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| bearer_token(v).map(str::to_string));
    let mut new_cookie = None;
    let viewer = match bearer {
        Some(None) => return ApiError::MissingToken.into_response(),
        Some(Some(token)) => {
            let role = if auth.is_open() {
                Some(Role::Operator)
            } else {
                auth.role_of_token(&token)
            };
            match role {
                Some(role) => Viewer {
                    role,
                    session: None,
                    can_log_out: false,
                },
                None => return ApiError::InvalidToken.into_response(),
            }
        }
        None => {
            let cookie = request
                .headers()
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|h| cookie_value(h, COOKIE_NAME))
                .and_then(|v| Session::from_cookie(v, now, |r| auth.key_for(r)));
            match (cookie, &auth.open_key) {
                (Some(session), _) => {
                    let key = auth.key_for(session.role);
                    Viewer {
                        role: session.role,
                        session: key.map(|k| (session, k)),
                        can_log_out: !auth.is_open(),
                    }
                }
                (None, Some(key)) => {
                    let session = Session::new(Role::Operator, nonce(), now);
                    new_cookie = Some(set_cookie(
                        &session.to_cookie(key),
                        request.headers(),
                        false,
                    ));
                    Viewer {
                        role: Role::Operator,
                        session: Some((session, key.clone())),
                        can_log_out: false,
                    }
                }
                (None, None) => return unauthenticated(&request),
            }
        }
    };
    request.extensions_mut().insert(viewer);
    let mut response = next.run(request).await;
    if let Some(cookie) = new_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

fn nonce() -> String {
    session::random_hex(16).unwrap_or_else(|| {
        let key = random_key();
        key.iter().take(16).map(|b| format!("{b:02x}")).collect()
    })
}

/// A page request goes to the login form (and comes back after); anything
/// else gets the API's 401.
fn unauthenticated(request: &Request) -> Response {
    let wants_html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if request.method() == Method::GET && wants_html {
        let target = request
            .uri()
            .path_and_query()
            .map_or(UI_PATH, |p| p.as_str());
        let next: String = form_urlencoded_component(target);
        return Redirect::to(&format!("{UI_PATH}/login?next={next}")).into_response();
    }
    ApiError::MissingToken.into_response()
}

/// Percent-encodes a string for a query parameter value.
fn form_urlencoded_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// True unless the browser says the request comes from another origin.
/// Browsers send `Origin` on every cross-site POST; a request without it
/// (curl) is judged by its credentials alone.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let Some(origin_host) = origin_host else {
        return false;
    };
    ["x-forwarded-host", "host"]
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .any(|host| host.eq_ignore_ascii_case(origin_host))
}

/// The `Set-Cookie` value for a session (or its removal).
fn set_cookie(value: &str, headers: &HeaderMap, remove: bool) -> HeaderValue {
    // Secure when the client reached us over TLS (an ingress says so);
    // plain http on loopback must still work for the demo.
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let max_age = if remove {
        0
    } else {
        session::SESSION_TTL_MS / 1000
    };
    let cookie = format!(
        "{COOKIE_NAME}={value}; Path={UI_PATH}; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    // The value is hex, digits and dots: always a valid header.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Query of the login form.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// `GET /ui/login`
pub(crate) async fn login_form(
    State(ui): State<UiState>,
    query: Result<axum::extract::Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if ui.auth.is_open() {
        return Redirect::to(&format!("{UI_PATH}/")).into_response();
    }
    let next = query.ok().and_then(|q| q.0.next).unwrap_or_default();
    login_page(StatusCode::OK, &safe_next(&next), None)
}

fn login_page(status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(e) = error {
            p.notice.notice-error role="alert" { (e) }
        }
        form.login method="post" action={ (UI_PATH) "/login" } {
            input type="hidden" name="next" value=(next);
            label for="token" { "Token" }
            input #token type="password" name="token" required autocomplete="current-password"
                autofocus aria-describedby="token-help";
            p #token-help .help {
                "The operator token (" code { "server.api_token" } ") may approve and deny actions; the viewer token ("
                code { "server.viewer_token" } ") reads only. The browser keeps a session cookie, not the token."
            }
            button type="submit" { "Sign in" }
        }
    };
    page::html_response(status, page::layout("Sign in", None, Nav::None, body))
}

/// Where to go after login: a UI path on this host, else the list.
fn safe_next(next: &str) -> String {
    let ok = next.starts_with(&format!("{UI_PATH}/"))
        && !next.contains("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    if ok {
        next.to_string()
    } else {
        format!("{UI_PATH}/")
    }
}

/// Body of the login form.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /ui/login`
pub(crate) async fn login(
    State(ui): State<UiState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !same_origin(&headers) {
        return page::error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form was submitted from another site.",
            None,
        );
    }
    let Ok(Form(form)) = form else {
        return login_page(
            StatusCode::BAD_REQUEST,
            &format!("{UI_PATH}/"),
            Some("The form was incomplete; enter the token."),
        );
    };
    let next = safe_next(&form.next);
    let Some(role) = ui.auth.role_of_token(form.token.trim()) else {
        return login_page(
            StatusCode::UNAUTHORIZED,
            &next,
            Some("That token is not valid."),
        );
    };
    let Some(key) = ui.auth.key_for(role) else {
        return login_page(
            StatusCode::UNAUTHORIZED,
            &next,
            Some("That token is not valid."),
        );
    };
    let session = Session::new(role, nonce(), now_ms());
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&session.to_cookie(&key), &headers, false),
    );
    response
}

/// Body of the logout form.
#[derive(Debug, Deserialize)]
pub(crate) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/logout`: forgets the cookie (the session itself simply
/// expires; nothing is kept on the server).
pub(crate) async fn logout(
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if !viewer.csrf_ok(&form.csrf) {
        return page::error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "The form was stale; reload the page and try again.",
            Some(&viewer),
        );
    }
    let mut response = Redirect::to(&format!("{UI_PATH}/login")).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie("", &headers, true));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_ui_paths_are_followed_after_login() {
        assert_eq!(safe_next("/ui/incidents/3"), "/ui/incidents/3");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/api/v1",
            "",
            "/ui/\\x",
        ] {
            assert_eq!(safe_next(bad), "/ui/", "{bad}");
        }
    }

    #[test]
    fn cross_origin_posts_are_recognised() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "no Origin: judged by credentials");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9464"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9464"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn tokens_map_to_roles() {
        let op = Secret::from("operator-token-0123456789");
        let view = Secret::from("viewer-token-0123456789");
        let auth = AuthConfig::new(Some(&op), Some(&view));
        assert_eq!(
            auth.role_of_token("operator-token-0123456789"),
            Some(Role::Operator)
        );
        assert_eq!(
            auth.role_of_token("viewer-token-0123456789"),
            Some(Role::Viewer)
        );
        assert_eq!(auth.role_of_token("viewer-token-012345678"), None);
        let open = AuthConfig::new(None, Some(&view));
        assert!(open.is_open());
        assert!(open.key_for(Role::Viewer).is_none());
    }
}
