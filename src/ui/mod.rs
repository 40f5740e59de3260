//! The web UI for on-call engineers, served by the daemon itself.
//!
//! Server-rendered HTML ([maud] templates, which escape every interpolated
//! value by construction), one CSS file and a small script for
//! auto-refresh and confirmations, all embedded in the binary: the UI works
//! offline and needs no frontend build. Charts are SVG written by
//! [`chart`] in Rust. docs/UI.md has the pages, the auth model and the
//! design choices.
//!
//! | Route | Who | What |
//! |---|---|---|
//! | `GET /ui/` | viewer | incident list: open first, filters, auto-refresh |
//! | `GET /ui/incidents/{id}` | viewer | one incident: summary, timeline, charts, alerts, diagnosis, decisions, actions |
//! | `GET /ui/incidents/{id}/report.md` | viewer | the Markdown report, as a download |
//! | `POST /ui/actions/{id}/approve`, `/deny` | operator | decide a pending action (who and why asked) |
//! | `POST /ui/actions/{id}/revert` | operator | ask remediation to undo an executed action |
//! | `POST /ui/incidents/{id}/verdict` | operator | mark noise / expected / real |
//! | `GET /ui/policy`, `GET /ui/health` | viewer | policy gate and daemon health |
//! | `GET`, `POST /ui/login`; `POST /ui/logout` | anyone | sign in with a token |
//! | `GET /ui/assets/*` | anyone | CSS and JavaScript |
//!
//! Authentication reuses the API's tokens (see [`auth`]): `server.api_token`
//! is the operator, `server.viewer_token` a read-only viewer.

mod auth;
pub mod chart;
mod forms;
mod incident;
mod list;
mod page;
mod session;
mod status;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{middleware, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Secret;
use crate::incident::{IncidentId, Store, StoreError};
use crate::server::AppState;
use crate::signal::TimestampMs;

/// Prefix of every UI page; incident pages are `/ui/incidents/{id}`, a
/// stable URL for notifications and reports.
pub const UI_PATH: &str = "/ui";

/// The stable URL path of an incident's page.
pub fn incident_path(id: IncidentId) -> String {
    format!("{UI_PATH}/incidents/{id}")
}

/// What the UI needs beyond [`AppState`]; everything optional, so the UI
/// works before the stages that fill it exist.
#[derive(Clone, Default)]
pub struct UiSettings {
    /// Read-only token (`server.viewer_token`); ignored while the API token
    /// is unset.
    pub viewer_token: Option<Secret>,
    /// The policy gate's loaded rules and kill switch, published by the
    /// gate whenever they change; `None` until the gate exposes them.
    pub policy: Option<watch::Receiver<PolicyView>>,
    /// Stores an operator's verdict on an incident (`Store::record_verdict`
    /// once it exists); `None` disables the verdict form with a visible
    /// note.
    pub record_verdict: Option<RecordVerdict>,
}

/// The policy gate as the `/ui/policy` page shows it: plain data the gate
/// fills, so the UI depends on no policy type.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PolicyView {
    /// Where the rules were loaded from (file or ConfigMap), for people.
    pub source: Option<String>,
    /// Wall time the rules were loaded.
    pub loaded_at: Option<TimestampMs>,
    /// The loaded rules, in evaluation order.
    pub rules: Vec<RuleSummary>,
    /// The kill switch, e.g. `off`, or `engaged by alice at …: reason`;
    /// `None` when the gate has none.
    pub kill_switch: Option<KillSwitchView>,
}

/// One policy rule, summarised for people.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RuleSummary {
    /// `file:rule-name`, as decision records cite it.
    pub name: String,
    /// `auto`, `dry_run` or `approve`.
    pub mode: String,
    /// Verbs it allows (`scale`, `restart`, `rollback`).
    pub verbs: Vec<String>,
    /// What it matches, in one line (namespaces, labels, causes).
    pub matches: String,
    /// Its limits, one line each (max step, rate, blast radius...).
    pub limits: Vec<String>,
}

/// The kill switch's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KillSwitchView {
    /// True when engaged: no action runs.
    pub engaged: bool,
    /// Who engaged it, when and why; or where it is configured.
    pub detail: String,
}

/// An operator's judgement of an incident, fed back to noise reduction
/// (issue 8) and the detectors' evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feedback {
    /// Not a real problem: the detector or alert was wrong.
    Noise,
    /// Real, but expected (a deploy, a load test, a maintenance).
    Expected,
    /// A real problem.
    Real,
}

impl Feedback {
    /// The lowercase name used in forms, the store and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Feedback::Noise => "noise",
            Feedback::Expected => "expected",
            Feedback::Real => "real",
        }
    }

    /// Parses a form value.
    pub fn parse(s: &str) -> Option<Feedback> {
        match s {
            "noise" => Some(Feedback::Noise),
            "expected" => Some(Feedback::Expected),
            "real" => Some(Feedback::Real),
            _ => None,
        }
    }
}

/// How the UI records a verdict: the signature of
/// `Store::record_verdict(&self, incident, verdict, by, reason, now)`.
/// Must fail with [`StoreError::UnknownIncident`] for an unknown incident.
pub type RecordVerdict =
    fn(&Store, IncidentId, Feedback, &str, &str, TimestampMs) -> Result<(), StoreError>;

/// Everything a UI handler may use.
#[derive(Clone)]
pub(crate) struct UiState {
    pub(crate) app: AppState,
    pub(crate) settings: UiSettings,
    pub(crate) auth: Arc<auth::AuthConfig>,
}

/// The UI's routes, to be merged into the server's router. `S` is the
/// outer router's state type; the UI brings its own.
pub fn router<S>(app: AppState, settings: UiSettings) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let auth = Arc::new(auth::AuthConfig::new(
        app.api_token.as_ref(),
        settings.viewer_token.as_ref(),
    ));
    let state = UiState {
        app,
        settings,
        auth,
    };
    let pages = Router::new()
        .route(&format!("{UI_PATH}/"), get(list::page))
        .route(&format!("{UI_PATH}/incidents/{{id}}"), get(incident::page))
        .route(
            &format!("{UI_PATH}/incidents/{{id}}/report.md"),
            get(incident::report),
        )
        .route(
            &format!("{UI_PATH}/incidents/{{id}}/verdict"),
            post(forms::verdict),
        )
        .route(
            &format!("{UI_PATH}/actions/{{id}}/approve"),
            post(forms::approve),
        )
        .route(&format!("{UI_PATH}/actions/{{id}}/deny"), post(forms::deny))
        .route(
            &format!("{UI_PATH}/actions/{{id}}/revert"),
            post(forms::revert),
        )
        .route(&format!("{UI_PATH}/policy"), get(status::policy))
        .route(&format!("{UI_PATH}/health"), get(status::health))
        .route(&format!("{UI_PATH}/logout"), post(auth::logout))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_session,
        ));
    let open = Router::new()
        .route(
            &format!("{UI_PATH}/login"),
            get(auth::login_form).post(auth::login),
        )
        .route(&format!("{UI_PATH}/assets/ui.css"), get(css))
        .route(&format!("{UI_PATH}/assets/ui.js"), get(js))
        .route("/", get(to_list))
        .route(UI_PATH, get(to_list));
    pages
        .merge(open)
        .layer(middleware::map_response(page::security_headers))
        .with_state(state)
}

async fn to_list() -> Redirect {
    Redirect::to(&format!("{UI_PATH}/"))
}

/// The stylesheet, embedded.
const CSS: &str = include_str!("assets/ui.css");
/// The script, embedded.
const JS: &str = include_str!("assets/ui.js");

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CSS,
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        JS,
    )
}

/// Why a page could not be built: the store failed, or its blocking task
/// did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UiError {
    /// The store failed.
    #[error("the incident store failed")]
    Store(#[source] StoreError),
    /// The blocking task that ran a store call panicked or was cancelled.
    #[error("a store task did not complete")]
    Task(#[source] tokio::task::JoinError),
}

/// Runs store calls on the blocking pool, as the API does: SQLite calls
/// block, and a slow disk must not stall the runtime's worker threads.
pub(crate) async fn blocking<T, F>(store: &Store, f: F) -> Result<T, UiError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(UiError::Task)?
        .map_err(UiError::Store)
}

/// A generic 500 page; the cause is logged once, here, never shown.
pub(crate) fn internal_error(e: &UiError, viewer: &auth::Viewer) -> axum::response::Response {
    tracing::error!(
        error = %crate::telemetry::error_chain(e),
        "A UI page failed inside aiopsd; answered 500."
    );
    page::error_page(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "aiopsd could not read its store; the aiopsd log has the details.",
        Some(viewer),
    )
}
