//! `/api/v1/remediation/kill-switch` and `/api/v1/actions/{id}/revert`.
//!
//! The kill switch stops every action at once; the API one is stored (it
//! survives restarts and reaches whichever replica leads) and shown with
//! who pulled it and why, next to the config and ConfigMap switches, any
//! one of which stops actions. A revert is a *request* recorded in the
//! store: the remediation stage, which holds the cluster client and runs
//! only on the leader, carries it out within a second and announces
//! `action.reverted`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{parse_id, with_store, AppState};
use crate::publish::approvals::{check_text, ActionId};
use crate::publish::event::ActionSnapshot;
use crate::remediate::stage::KILL_SWITCH_SETTING;
use crate::signal::{format_ts, now_ms};

/// Path of the kill switch.
pub(super) const KILL_SWITCH_PATH: &str = "/api/v1/remediation/kill-switch";

/// Body of `PUT /api/v1/remediation/kill-switch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KillSwitchBody {
    /// `true` stops every action.
    on: bool,
    /// Who flips it.
    by: String,
    /// Why.
    reason: String,
}

/// The kill switch as the API shows it.
#[derive(Debug, Serialize)]
pub(super) struct KillSwitchState {
    /// True when any source stops actions.
    on: bool,
    /// `remediation.kill_switch` in the config.
    config: bool,
    /// The API switch, with who and why, if it was ever set.
    api: Option<ApiSwitch>,
    /// The ConfigMap that can also stop actions (read by the leader).
    configmap: Option<String>,
}

/// Who set the API switch, and why.
#[derive(Debug, Serialize)]
pub(super) struct ApiSwitch {
    on: bool,
    by: String,
    reason: String,
    at: String,
}

/// Body of `POST /api/v1/actions/{id}/revert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevertBody {
    by: String,
    reason: String,
}

async fn current(state: &AppState) -> Result<KillSwitchState, ApiError> {
    let setting = with_store(&state.store, |s| s.setting(KILL_SWITCH_SETTING)).await?;
    let api = setting.map(|s| ApiSwitch {
        on: s.value == "on",
        by: s.changed_by,
        reason: s.reason,
        at: format_ts(s.changed_at),
    });
    let config = state.remediation.kill_switch;
    Ok(KillSwitchState {
        on: config || api.as_ref().is_some_and(|a| a.on),
        config,
        api,
        configmap: state.remediation.kill_switch_configmap.clone(),
    })
}

/// `GET /api/v1/remediation/kill-switch`
pub(super) async fn get_kill_switch(
    State(state): State<AppState>,
) -> Result<Json<KillSwitchState>, ApiError> {
    current(&state).await.map(Json)
}

/// `PUT /api/v1/remediation/kill-switch` with `{"on": true, "by": "...", "reason": "..."}`
pub(super) async fn put_kill_switch(
    State(state): State<AppState>,
    body: Result<Json<KillSwitchBody>, JsonRejection>,
) -> Result<Json<KillSwitchState>, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be JSON {{\"on\": true|false, \"by\": \"...\", \"reason\": \"...\"}}: {}",
            e.body_text()
        ))
    })?;
    let (by, reason) = who_and_why(&body.by, &body.reason)?;
    let value = if body.on { "on" } else { "off" };
    tracing::warn!(on = body.on, by = %by, reason = %reason, "Kill switch flipped through the API.");
    with_store(&state.store, move |s| {
        s.set_setting(KILL_SWITCH_SETTING, value, &by, &reason, now_ms())
    })
    .await?;
    current(&state).await.map(Json)
}

/// `POST /api/v1/actions/{id}/revert` with `{"by": "...", "reason": "..."}`
pub(super) async fn revert(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    body: Result<Json<RevertBody>, JsonRejection>,
) -> Result<Json<ActionSnapshot>, ApiError> {
    let id: ActionId = parse_id(&raw, "an action id")?;
    let Json(body) = body.map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be JSON {{\"by\": \"...\", \"reason\": \"...\"}}: {}",
            e.body_text()
        ))
    })?;
    let (by, reason) = who_and_why(&body.by, &body.reason)?;
    let result = with_store(&state.store, move |s| s.request_revert(id, &by, &reason)).await?;
    match result {
        Ok(action) => Ok(Json(action.snapshot())),
        Err(why) if why.starts_with("there is no action") => Err(ApiError::NotFound(why)),
        Err(why) => Err(ApiError::Conflict(why)),
    }
}

fn who_and_why(by: &str, reason: &str) -> Result<(String, String), ApiError> {
    check_text("by", by, true).map_err(|reason| ApiError::InvalidParam { name: "by", reason })?;
    check_text("reason", reason, true).map_err(|r| ApiError::InvalidParam {
        name: "reason",
        reason: r,
    })?;
    Ok((by.trim().to_string(), reason.trim().to_string()))
}
