//! `/api/v1/actions`: list pending actions, and approve or deny one.
//!
//! A decision records who (`by`) and why (`reason`) as the caller states
//! them: the bearer token proves the caller may decide, not who they are,
//! so put the person's name in `by`. The decision and its
//! `action.approved` / `action.denied` event are written in one store
//! transaction.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::{parse_id, with_store, AppState};
use crate::publish::approvals::{
    check_text, ActionId, ActionState, ApprovalRefused, Channel, Decision, DecisionOutcome,
    DecisionRefused, Verdict,
};
use crate::publish::event::ActionSnapshot;
use crate::signal::now_ms;

/// Prefix of every action URL.
pub(super) const ACTIONS_PATH: &str = "/api/v1/actions";

/// Query parameters of the list endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    state: Option<String>,
    limit: Option<String>,
}

/// Body of approve and deny.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DecisionBody {
    /// Who decides.
    by: String,
    /// Why.
    reason: String,
}

/// One page of actions.
#[derive(Debug, serde::Serialize)]
pub(super) struct ListResponse {
    items: Vec<ActionSnapshot>,
}

/// `GET /api/v1/actions?state=pending&limit=50`
pub(super) async fn list_actions(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let filter = match params.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(ActionState::parse(s).ok_or_else(|| ApiError::InvalidParam {
            name: "state",
            reason: format!("{s:?} is not pending, approved, denied or expired"),
        })?),
    };
    let limit = match params.limit.as_deref().filter(|s| !s.is_empty()) {
        None => 50,
        Some(v) => v.parse::<usize>().map_err(|_| ApiError::InvalidParam {
            name: "limit",
            reason: format!("{v:?} is not a whole number (1 to 500)"),
        })?,
    };
    let actions = with_store(&state.store, move |s| s.list_actions(filter, limit)).await?;
    Ok(Json(ListResponse {
        items: actions.iter().map(|a| a.snapshot()).collect(),
    }))
}

/// `GET /api/v1/actions/{id}`
pub(super) async fn get_action(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<ActionSnapshot>, ApiError> {
    let id: ActionId = parse_id(&raw, "an action id")?;
    match with_store(&state.store, move |s| s.get_action(id)).await? {
        Some(action) => Ok(Json(action.snapshot())),
        None => Err(ApiError::NotFound(format!("no action with id {id}"))),
    }
}

/// `POST /api/v1/actions/{id}/approve`
pub(super) async fn approve(
    state: State<AppState>,
    id: Path<String>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<ActionSnapshot>, ApiError> {
    decide(state, id, body, Verdict::Approve).await
}

/// `POST /api/v1/actions/{id}/deny`
pub(super) async fn deny(
    state: State<AppState>,
    id: Path<String>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<ActionSnapshot>, ApiError> {
    decide(state, id, body, Verdict::Deny).await
}

async fn decide(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    body: Result<Json<DecisionBody>, JsonRejection>,
    verdict: Verdict,
) -> Result<Json<ActionSnapshot>, ApiError> {
    let id: ActionId = parse_id(&raw, "an action id")?;
    let Json(body) = body.map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be JSON {{\"by\": \"...\", \"reason\": \"...\"}}: {}",
            e.body_text()
        ))
    })?;
    check_text("by", &body.by, true)
        .map_err(|reason| ApiError::InvalidParam { name: "by", reason })?;
    check_text("reason", &body.reason, true).map_err(|reason| ApiError::InvalidParam {
        name: "reason",
        reason,
    })?;
    let decision = Decision {
        verdict,
        by: body.by.trim().to_string(),
        reason: body.reason.trim().to_string(),
        channel: Channel::Api,
        nonce: None,
    };
    let DecisionOutcome { result, report } = with_store(&state.store, move |s| {
        s.decide_action(id, &decision, now_ms())
    })
    .await?;
    report.emit(&state.metrics);
    match result {
        Ok(action) => {
            state.metrics.approval_decided(&action);
            Ok(Json(action.snapshot()))
        }
        Err(DecisionRefused::NotFound(id)) => {
            Err(ApiError::NotFound(format!("no action with id {id}")))
        }
        Err(refused) => {
            // Rare and worth a line: someone tried to decide an action that
            // was already decided or had expired.
            state.metrics.approval_refused(
                Channel::Api,
                Some(id),
                &ApprovalRefused::Decision(refused.clone()),
            );
            Err(ApiError::Conflict(refused.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::StatusCode;
    use serde_json::Value;

    use super::super::tests::send;
    use super::super::AppState;
    use crate::config::Secret;
    use crate::incident::{Incident, IncidentState, Severity, Store, TimelineEntry, UpdateKind};
    use crate::publish::approvals::ActionRequest;
    use crate::signal::now_ms;
    use crate::telemetry::{Health, Metrics};

    const TOKEN: &str = "test-token-0123456789";

    fn state_with_actions() -> (AppState, Vec<i64>) {
        let store = Store::open_in_memory().expect("store");
        let incident = Incident {
            id: None,
            cluster: "test".into(),
            group: [("service".to_string(), "cart".to_string())].into(),
            state: IncidentState::Open,
            severity: Severity::Warning,
            opened_at: 1_000,
            last_anomaly_at: 1_000,
            resolved_at: None,
            anomaly_count: 1,
            signals: Vec::new(),
            alerts: Vec::new(),
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: None,
            timeline: vec![TimelineEntry {
                at: 1_000,
                kind: "opened".into(),
                message: "Opened.".into(),
            }],
        };
        let incident_id = store
            .save_incident_with_events(&incident, UpdateKind::Opened, now_ms())
            .expect("incident")
            .id;
        let mut ids = Vec::new();
        for ttl_ms in [600_000, 600_000, -1] {
            let (action, _) = store
                .request_action(
                    &ActionRequest {
                        incident_id,
                        description: "Restart shop/cart".into(),
                        detail: serde_json::json!({"kind": "rollout_restart"}),
                        ttl_ms,
                    },
                    now_ms() - 10,
                )
                .expect("request");
            ids.push(action.id);
        }
        let state = AppState {
            store,
            metrics: Arc::new(Metrics::new()),
            health: Health::new(),
            api_token: Some(Secret::from(TOKEN)),
            cluster: "test".into(),
            alertmanager: crate::config::AlertmanagerConfig::default(),
            alert_tx: None,
            config_silences: Default::default(),
            remediation: Default::default(),
            config: None,
        };
        (state, ids)
    }

    /// The answer's status and JSON body (`null` when it is not JSON).
    async fn call(
        state: &AppState,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let (status, _, body) = send(state, method, uri, token, body).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    const BODY: &str = r#"{"by": "alice", "reason": "error rate is back to normal after restart"}"#;

    #[tokio::test]
    async fn deciding_requires_the_token() {
        let (state, ids) = state_with_actions();
        let uri = format!("/api/v1/actions/{}/approve", ids[0]);
        for token in [None, Some("wrong-token")] {
            let (status, _) = call(&state, "POST", &uri, token, Some(BODY)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        }
        let (status, _) = call(&state, "GET", "/api/v1/actions", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // Nothing was decided by the refused calls.
        let pending = state
            .store
            .get_action(ids[0])
            .expect("read")
            .expect("action");
        assert_eq!(pending.state.as_str(), "pending");
    }

    #[tokio::test]
    async fn approve_deny_and_their_refusals() {
        let (state, ids) = state_with_actions();
        let (status, list) = call(
            &state,
            "GET",
            "/api/v1/actions?state=pending",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        // The third expired at request time but is not swept yet: listed
        // as pending until the sweeper or a decision marks it.
        assert_eq!(list["items"].as_array().map(Vec::len), Some(3));

        let approve = |id: i64| format!("/api/v1/actions/{id}/approve");
        let (status, action) =
            call(&state, "POST", &approve(ids[0]), Some(TOKEN), Some(BODY)).await;
        assert_eq!(status, StatusCode::OK, "{action}");
        assert_eq!(action["state"], "approved");
        assert_eq!(action["decided_by"], "alice");
        assert_eq!(action["channel"], "api");
        assert_eq!(
            action["reason"],
            "error rate is back to normal after restart"
        );

        // Already decided, expired, unknown.
        let (status, body) = call(&state, "POST", &approve(ids[0]), Some(TOKEN), Some(BODY)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body["error"]
            .as_str()
            .is_some_and(|e| e.contains("already approved")));
        let (status, body) = call(&state, "POST", &approve(ids[2]), Some(TOKEN), Some(BODY)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body["error"]
            .as_str()
            .is_some_and(|e| e.contains("expired")));
        let (status, _) = call(&state, "POST", &approve(999), Some(TOKEN), Some(BODY)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Bad bodies name the field.
        for (body, needle) in [
            (r#"{"by": "", "reason": "x"}"#, "`by`"),
            (r#"{"by": "bob"}"#, "reason"),
            (r#"{"by": "bob", "reason": "a\nb"}"#, "`reason`"),
            ("not json", "JSON"),
        ] {
            let (status, err) = call(
                &state,
                "POST",
                &format!("/api/v1/actions/{}/deny", ids[1]),
                Some(TOKEN),
                Some(body),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            let message = err["error"].as_str().unwrap_or_default();
            assert!(message.contains(needle), "{body}: {message}");
        }
        let (status, action) = call(
            &state,
            "POST",
            &format!("/api/v1/actions/{}/deny", ids[1]),
            Some(TOKEN),
            Some(r#"{"by": "bob", "reason": "not during the sale"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(action["state"], "denied");

        let (_, list) = call(
            &state,
            "GET",
            "/api/v1/actions?state=pending",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(list["items"].as_array().map(Vec::len), Some(0));
        let (status, _) = call(
            &state,
            "GET",
            "/api/v1/actions?state=maybe",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, one) = call(
            &state,
            "GET",
            &format!("/api/v1/actions/{}", ids[1]),
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["decided_by"], "bob");
        let metrics = state.metrics.encode();
        assert!(
            metrics.contains(r#"aiopsd_approvals_total{channel="api",outcome="approved"} 1"#),
            "{metrics}"
        );
    }
}
