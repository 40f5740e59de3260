//! The UI's state-changing forms: approve, deny, revert, verdict.
//!
//! Each one is a POST that must come from an operator, carry the session's
//! CSRF token, and say who and why (checked like the API checks them). A
//! decision goes through the very store call the API uses
//! (`Store::decide_action`), so it is recorded and announced (the
//! `action.*` event) in one transaction, and counted in the same metrics.
//! On success the browser is sent back to the incident page with a fixed
//! notice code (never text from the request).

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::auth::Viewer;
use super::page;
use super::{incident_path, Feedback, UiState};
use crate::incident::{IncidentId, StoreError};
use crate::publish::approvals::{
    check_text, ActionId, ActionState, ApprovalRefused, Channel, Decision, DecisionOutcome,
    DecisionRefused, Verdict,
};
use crate::signal::now_ms;

/// Body of every form: who, why, the CSRF token, and for verdicts which.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WhoWhy {
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    verdict: String,
}

/// Checks role, CSRF token and the who/why fields; the error is the page
/// to answer with.
fn check(
    viewer: &Viewer,
    form: Result<Form<WhoWhy>, FormRejection>,
) -> Result<WhoWhy, Box<Response>> {
    if !viewer.is_operator() {
        return Err(Box::new(page::error_page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "You are signed in as a viewer: only an operator can change anything.",
            Some(viewer),
        )));
    }
    let Ok(Form(form)) = form else {
        return Err(Box::new(bad(viewer, "The form was incomplete.")));
    };
    if !viewer.csrf_ok(&form.csrf) {
        return Err(Box::new(page::error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "The form was stale or did not come from this page; reload the page and try again.",
            Some(viewer),
        )));
    }
    for (name, value) in [("by", &form.by), ("reason", &form.reason)] {
        if let Err(reason) = check_text(name, value, true) {
            return Err(Box::new(bad(viewer, &reason)));
        }
    }
    Ok(WhoWhy {
        by: form.by.trim().to_string(),
        reason: form.reason.trim().to_string(),
        ..form
    })
}

fn bad(viewer: &Viewer, message: &str) -> Response {
    page::error_page(StatusCode::BAD_REQUEST, "Not done", message, Some(viewer))
}

fn back(incident: IncidentId, notice: &str, anchor: Option<ActionId>) -> Response {
    let anchor = anchor.map(|a| format!("#action-{a}")).unwrap_or_default();
    Redirect::to(&format!(
        "{}?notice={notice}{anchor}",
        incident_path(incident)
    ))
    .into_response()
}

fn parse_action(raw: &str, viewer: &Viewer) -> Result<ActionId, Box<Response>> {
    raw.parse().map_err(|_| {
        Box::new(page::error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "That is not an action number.",
            Some(viewer),
        ))
    })
}

/// `POST /ui/actions/{id}/approve`
pub(crate) async fn approve(
    state: State<UiState>,
    viewer: Extension<Viewer>,
    id: Path<String>,
    form: Result<Form<WhoWhy>, FormRejection>,
) -> Response {
    decide(state, viewer, id, form, Verdict::Approve).await
}

/// `POST /ui/actions/{id}/deny`
pub(crate) async fn deny(
    state: State<UiState>,
    viewer: Extension<Viewer>,
    id: Path<String>,
    form: Result<Form<WhoWhy>, FormRejection>,
) -> Response {
    decide(state, viewer, id, form, Verdict::Deny).await
}

async fn decide(
    State(ui): State<UiState>,
    Extension(viewer): Extension<Viewer>,
    Path(raw): Path<String>,
    form: Result<Form<WhoWhy>, FormRejection>,
    verdict: Verdict,
) -> Response {
    let form = match check(&viewer, form) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let id = match parse_action(&raw, &viewer) {
        Ok(id) => id,
        Err(page) => return *page,
    };
    let decision = Decision {
        verdict,
        by: form.by,
        reason: form.reason,
        // The UI is a client of the same approval API; the lead may add a
        // `Channel::Ui` to tell them apart in events and metrics.
        channel: Channel::Api,
        nonce: None,
    };
    let outcome = super::blocking(&ui.app.store, move |s| {
        let incident = s.get_action(id)?.map(|a| a.incident_id);
        Ok((incident, s.decide_action(id, &decision, now_ms())?))
    })
    .await;
    let (incident, DecisionOutcome { result, report }) = match outcome {
        Ok(v) => v,
        Err(e) => return super::internal_error(&e, &viewer),
    };
    report.emit(&ui.app.metrics);
    match (result, incident) {
        (Ok(action), _) => {
            ui.app.metrics.approval_decided(&action);
            let notice = match action.state {
                ActionState::Denied => "denied",
                _ => "approved",
            };
            back(action.incident_id, notice, Some(action.id))
        }
        (Err(DecisionRefused::NotFound(_)), _) | (Err(_), None) => page::error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such action.",
            Some(&viewer),
        ),
        (Err(refused), Some(incident)) => {
            ui.app.metrics.approval_refused(
                Channel::Api,
                Some(id),
                &ApprovalRefused::Decision(refused.clone()),
            );
            let notice = match refused {
                DecisionRefused::Expired(_) => "expired",
                _ => "already_decided",
            };
            back(incident, notice, Some(id))
        }
    }
}

/// `POST /ui/actions/{id}/revert`: records the request with
/// `Store::request_revert`; the remediation stage (leader only, it holds
/// the cluster client) carries it out and records `action.reverted`.
pub(crate) async fn revert(
    State(ui): State<UiState>,
    Extension(viewer): Extension<Viewer>,
    Path(raw): Path<String>,
    form: Result<Form<WhoWhy>, FormRejection>,
) -> Response {
    let form = match check(&viewer, form) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let id = match parse_action(&raw, &viewer) {
        Ok(id) => id,
        Err(page) => return *page,
    };
    let (by, reason) = (form.by, form.reason);
    let requested =
        super::blocking(&ui.app.store, move |s| s.request_revert(id, &by, &reason)).await;
    match requested {
        Ok(Ok(action)) => {
            tracing::info!(
                action = id,
                incident = action.incident_id,
                "A revert was requested in the web UI."
            );
            back(action.incident_id, "revert_requested", Some(id))
        }
        // Unknown, never executed, already reverted, irreversible: the
        // store's sentence says which, and names only the action.
        Ok(Err(why)) => {
            page::error_page(StatusCode::CONFLICT, "Cannot revert", &why, Some(&viewer))
        }
        Err(e) => super::internal_error(&e, &viewer),
    }
}

/// `POST /ui/incidents/{id}/verdict`
pub(crate) async fn verdict(
    State(ui): State<UiState>,
    Extension(viewer): Extension<Viewer>,
    Path(raw): Path<String>,
    form: Result<Form<WhoWhy>, FormRejection>,
) -> Response {
    let form = match check(&viewer, form) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let Ok(id) = raw.parse::<IncidentId>() else {
        return page::error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "That is not an incident number.",
            Some(&viewer),
        );
    };
    let Some(feedback) = Feedback::parse(&form.verdict) else {
        return bad(&viewer, "Choose real, expected or noise.");
    };
    let Some(record) = ui.settings.record_verdict else {
        return back(id, "unavailable", None);
    };
    let (by, reason) = (form.by, form.reason);
    let stored = super::blocking(&ui.app.store, move |s| {
        match record(s, id, feedback, &by, &reason, now_ms()) {
            Ok(()) => Ok(true),
            Err(StoreError::UnknownIncident { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    })
    .await;
    match stored {
        Ok(true) => back(id, "verdict_recorded", None),
        Ok(false) => page::error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such incident.",
            Some(&viewer),
        ),
        Err(e) => super::internal_error(&e, &viewer),
    }
}
