//! Noise-reduction routes: silences (create, list, delete), and the alerts
//! and suppressions they cause, so that nothing aiopsd suppresses is
//! invisible.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /api/v1/silences` | config and API silences not ended, with `active` |
//! | `POST /api/v1/silences` | body `{"created_by", "comment", "matchers", "ends_at", "starts_at"?}`; 201 with the silence |
//! | `DELETE /api/v1/silences/{id}` | ends an API silence (`api-3` or `3`); 404 unknown or already deleted |
//! | `GET /api/v1/alerts?status=&suppressed=&limit=&before_id=` | stored alerts, newest first, each with its suppression |
//! | `GET /api/v1/suppressions?limit=&before_id=` | every suppression with its reason, newest first |
//! | `POST /api/v1/incidents/{id}/verdicts` | body `{"verdict": "noise"\|"expected"\|"real", "by", "reason", "alert_id"?, "series"?, "expires_at"?}`; 201 with the verdict |
//! | `GET /api/v1/incidents/{id}/verdicts` | the incident's verdicts (revoked too) and the suppressions they caused |
//! | `GET /api/v1/verdicts?limit=&before_id=` | every verdict, newest first |
//! | `GET /api/v1/verdicts/{id}` | one verdict |
//! | `POST /api/v1/verdicts/{id}/revoke` | body `{"by", "reason"}`; 200 with the revoked verdict; 404 unknown, 409 revoked already |
//!
//! A `noise` verdict suppresses matching alerts and anomalies until it is
//! revoked; `expected` only with `expires_at` (a planned load test), until
//! then (see `incident::noise::verdicts` for the similarity used).
//!
//! API silences must end (`ends_at`): a forgotten permanent silence hides
//! real trouble. Permanent ones belong in `noise.silences` in the config,
//! where they are reviewed like any other change.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{with_store, AppState};
use crate::incident::noise::verdicts::{NewVerdict, Verdict, VerdictKind};
use crate::incident::noise::{check_matchers, parse_rfc3339, Matcher, Silence, Suppression};
use crate::incident::{Alert, AlertFilter, AlertId, AlertStatus, IncidentId, NewSilence};
use crate::publish::approvals::check_text;
use crate::signal::{now_ms, TimestampMs};

/// The silences collection.
pub(super) const SILENCES_PATH: &str = "/api/v1/silences";
/// Stored alerts.
pub(super) const ALERTS_PATH: &str = "/api/v1/alerts";
/// Suppressions.
pub(super) const SUPPRESSIONS_PATH: &str = "/api/v1/suppressions";
/// Verdicts.
pub(super) const VERDICTS_PATH: &str = "/api/v1/verdicts";

/// The verdict routes, to merge into the token-protected API router (before
/// its `route_layer`, so the token check covers them).
pub(super) fn verdict_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/incidents/{id}/verdicts",
            get(incident_verdicts).post(create_verdict),
        )
        .route(VERDICTS_PATH, get(list_verdicts))
        .route(&format!("{VERDICTS_PATH}/{{id}}"), get(get_verdict))
        .route(
            &format!("{VERDICTS_PATH}/{{id}}/revoke"),
            post(revoke_verdict),
        )
}

/// Most matchers in one silence: a silence is a few labels, and the
/// pipeline checks every matcher of every silence for each alert.
const MAX_MATCHERS: usize = 32;

/// Body of `POST /api/v1/silences`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilenceBody {
    created_by: String,
    comment: String,
    matchers: Vec<String>,
    #[serde(default)]
    starts_at: Option<String>,
    ends_at: String,
}

/// A silence as listed: the silence and whether it is in force now.
#[derive(Debug, Serialize)]
pub(super) struct SilenceView {
    #[serde(flatten)]
    silence: Silence,
    active: bool,
}

/// `GET /api/v1/silences` answer.
#[derive(Debug, Serialize)]
pub(super) struct SilenceList {
    items: Vec<SilenceView>,
}

/// `GET /api/v1/silences`
pub(super) async fn list_silences(
    State(state): State<AppState>,
) -> Result<Json<SilenceList>, ApiError> {
    let now = now_ms();
    let api = with_store(&state.store, move |s| s.silences(now)).await?;
    let items = state
        .config_silences
        .iter()
        .filter(|s| s.ends_at.is_none_or(|e| e > now))
        .cloned()
        .chain(api)
        .map(|silence| SilenceView {
            active: silence.is_active(now),
            silence,
        })
        .collect();
    Ok(Json(SilenceList { items }))
}

/// `POST /api/v1/silences`
pub(super) async fn create_silence(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SilenceView>), ApiError> {
    let body = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let body: NewSilenceBody = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::BadRequest(format!(
            "{}: {}; the body is {{\"created_by\", \"comment\", \"matchers\": [\"name=value\", \
             ...], \"ends_at\": RFC 3339, \"starts_at\"?}}",
            if path == "." { "(body)".into() } else { path },
            e.into_inner()
        ))
    })?;
    let now = now_ms();
    let silence = validate(body, now)?;
    let created = with_store(&state.store, move |s| s.create_silence(&silence, now)).await?;
    tracing::info!(
        silence = %created.id,
        created_by = %created.created_by,
        comment = %created.comment,
        "Created a silence through the API."
    );
    Ok((
        StatusCode::CREATED,
        Json(SilenceView {
            active: created.is_active(now),
            silence: created,
        }),
    ))
}

/// Checks a new silence; each error names its field.
fn validate(body: NewSilenceBody, now: TimestampMs) -> Result<NewSilence, ApiError> {
    let field = |name: &'static str| move |reason: String| ApiError::InvalidParam { name, reason };
    check_text("created_by", &body.created_by, true).map_err(field("created_by"))?;
    check_text("comment", &body.comment, true).map_err(field("comment"))?;
    if body.matchers.len() > MAX_MATCHERS {
        return Err(ApiError::InvalidParam {
            name: "matchers",
            reason: format!("at most {MAX_MATCHERS} matchers"),
        });
    }
    let matchers = body
        .matchers
        .iter()
        .enumerate()
        .map(|(i, m)| {
            Matcher::parse(m).map_err(|e| ApiError::BadRequest(format!("matchers[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_matchers("matchers", &matchers)
        .map_err(|(path, reason)| ApiError::BadRequest(format!("{path}: {reason}")))?;
    let starts_at = body
        .starts_at
        .as_deref()
        .map(parse_rfc3339)
        .transpose()
        .map_err(field("starts_at"))?;
    let ends_at = parse_rfc3339(&body.ends_at).map_err(field("ends_at"))?;
    if ends_at <= starts_at.unwrap_or(now).max(now) {
        return Err(ApiError::InvalidParam {
            name: "ends_at",
            reason: "must be in the future and later than starts_at".into(),
        });
    }
    Ok(NewSilence {
        matchers,
        starts_at,
        ends_at: Some(ends_at),
        created_by: body.created_by.trim().to_string(),
        comment: body.comment.trim().to_string(),
    })
}

/// `DELETE /api/v1/silences/{id}`: `api-3` or `3`. Config silences cannot
/// be deleted here (edit the config).
pub(super) async fn delete_silence(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    if raw.starts_with("config-") {
        return Err(ApiError::Conflict(format!(
            "{raw} is defined in the config (noise.silences); remove it there"
        )));
    }
    let id: i64 = raw
        .strip_prefix("api-")
        .unwrap_or(&raw)
        .parse()
        .map_err(|_| ApiError::InvalidParam {
            name: "id",
            reason: format!("{raw:?} is not a silence id (`api-3` or `3`)"),
        })?;
    if with_store(&state.store, move |s| s.delete_silence(id, now_ms())).await? {
        tracing::info!(silence = %format!("api-{id}"), "Deleted a silence through the API.");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no silence api-{id} (or it was deleted already)"
        )))
    }
}

/// Query parameters of `GET /api/v1/alerts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertParams {
    status: Option<String>,
    suppressed: Option<String>,
    limit: Option<String>,
    before_id: Option<String>,
}

/// One stored alert, with its suppression when it has one.
#[derive(Debug, Serialize)]
pub(super) struct AlertView {
    id: AlertId,
    fingerprint: String,
    alertname: String,
    status: AlertStatus,
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
    starts_at: TimestampMs,
    ends_at: Option<TimestampMs>,
    generator_url: String,
    receiver: String,
    received_at: TimestampMs,
    suppression: Option<Suppression>,
}

impl AlertView {
    fn new((alert, suppression): (Alert, Option<Suppression>)) -> Self {
        Self {
            alertname: alert.name().to_string(),
            id: alert.id,
            fingerprint: alert.fingerprint,
            status: alert.status,
            labels: alert.labels,
            annotations: alert.annotations,
            starts_at: alert.starts_at,
            ends_at: alert.ends_at,
            generator_url: alert.generator_url,
            receiver: alert.receiver,
            received_at: alert.received_at,
            suppression,
        }
    }
}

/// A page of a list; `next_before_id` is set when there may be more.
#[derive(Debug, Serialize)]
pub(super) struct Page<T> {
    items: Vec<T>,
    next_before_id: Option<i64>,
}

/// `limit` (0 or absent = 50, at most 500) and `before_id`, parsed.
fn paging(
    limit: &Option<String>,
    before_id: &Option<String>,
) -> Result<(usize, Option<i64>), ApiError> {
    let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let limit = match given(limit) {
        None => 50,
        Some(v) => match v.parse::<usize>() {
            Ok(0) => 50,
            Ok(n) => n.min(500),
            Err(_) => {
                return Err(ApiError::InvalidParam {
                    name: "limit",
                    reason: format!("{v:?} is not a whole number (1 to 500; 0 means 50)"),
                })
            }
        },
    };
    let before_id = given(before_id)
        .map(|v| {
            v.parse::<i64>().map_err(|_| ApiError::InvalidParam {
                name: "before_id",
                reason: format!("{v:?} is not an id"),
            })
        })
        .transpose()?;
    Ok((limit, before_id))
}

/// `GET /api/v1/alerts?status=firing&suppressed=true&limit=50&before_id=`
pub(super) async fn list_alerts(
    State(state): State<AppState>,
    params: Result<Query<AlertParams>, QueryRejection>,
) -> Result<Json<Page<AlertView>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let status = match params.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(AlertStatus::parse(s).ok_or_else(|| ApiError::InvalidParam {
            name: "status",
            reason: format!("{s:?} is not `firing` or `resolved`"),
        })?),
    };
    let suppressed = match params.suppressed.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(s) => {
            return Err(ApiError::InvalidParam {
                name: "suppressed",
                reason: format!("{s:?} is not `true` or `false`"),
            })
        }
    };
    let (limit, before_id) = paging(&params.limit, &params.before_id)?;
    let filter = AlertFilter {
        status,
        suppressed,
        limit,
        before_id,
    };
    let rows = with_store(&state.store, move |s| s.list_alerts(&filter)).await?;
    let next_before_id = (rows.len() == limit)
        .then(|| rows.last().map(|(a, _)| a.id))
        .flatten();
    Ok(Json(Page {
        items: rows.into_iter().map(AlertView::new).collect(),
        next_before_id,
    }))
}

/// Query parameters of `GET /api/v1/suppressions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SuppressionParams {
    limit: Option<String>,
    before_id: Option<String>,
}

/// `GET /api/v1/suppressions?limit=50&before_id=`
pub(super) async fn list_suppressions(
    State(state): State<AppState>,
    params: Result<Query<SuppressionParams>, QueryRejection>,
) -> Result<Json<Page<Suppression>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (limit, before_id) = paging(&params.limit, &params.before_id)?;
    let items = with_store(&state.store, move |s| s.list_suppressions(limit, before_id)).await?;
    let next_before_id = (items.len() == limit)
        .then(|| items.last().map(|s| s.id))
        .flatten();
    Ok(Json(Page {
        items,
        next_before_id,
    }))
}

/// Body of `POST /api/v1/incidents/{id}/verdicts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewVerdictBody {
    verdict: String,
    by: String,
    reason: String,
    #[serde(default)]
    alert_id: Option<AlertId>,
    #[serde(default)]
    series: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// Body of `POST /api/v1/verdicts/{id}/revoke`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    by: String,
    reason: String,
}

/// Parses a JSON body; a bad one is a 400 naming the field and the shape.
fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::BadRequest(format!(
            "{}: {}; the body is {shape}",
            if path == "." { "(body)".into() } else { path },
            e.into_inner()
        ))
    })
}

fn parse_numeric_id(raw: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::InvalidParam {
        name: "id",
        reason: format!("{raw:?} is not {what}"),
    })
}

/// `POST /api/v1/incidents/{id}/verdicts`
async fn create_verdict(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Verdict>), ApiError> {
    let incident_id: IncidentId = parse_numeric_id(&raw, "an incident id")?;
    let body: NewVerdictBody = parse_body(
        body,
        "{\"verdict\": \"noise\"|\"expected\"|\"real\", \"by\", \"reason\", \"alert_id\"?, \
         \"series\"?, \"expires_at\"?: RFC 3339}",
    )?;
    let field = |name: &'static str| move |reason: String| ApiError::InvalidParam { name, reason };
    let kind = VerdictKind::parse(body.verdict.trim()).ok_or_else(|| ApiError::InvalidParam {
        name: "verdict",
        reason: format!("{:?} is not `noise`, `expected` or `real`", body.verdict),
    })?;
    check_text("by", &body.by, true).map_err(field("by"))?;
    check_text("reason", &body.reason, true).map_err(field("reason"))?;
    if let Some(series) = &body.series {
        check_text("series", series, true).map_err(field("series"))?;
    }
    if body.alert_id.is_some() && body.series.is_some() {
        return Err(ApiError::InvalidParam {
            name: "series",
            reason: "give `alert_id` or `series`, not both: a verdict covers the whole \
                     incident or one member"
                .into(),
        });
    }
    let now = now_ms();
    let expires_at = body
        .expires_at
        .as_deref()
        .map(parse_rfc3339)
        .transpose()
        .map_err(field("expires_at"))?;
    if expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::InvalidParam {
            name: "expires_at",
            reason: "must be in the future".into(),
        });
    }
    let incident = with_store(&state.store, move |s| s.get_incident(incident_id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("incident {incident_id} does not exist")))?;
    if let Some(alert_id) = body.alert_id {
        if !incident.alerts.iter().any(|a| a.alert_id == alert_id) {
            return Err(ApiError::InvalidParam {
                name: "alert_id",
                reason: format!("alert {alert_id} is not a member of incident {incident_id}"),
            });
        }
    }
    if let Some(series) = &body.series {
        if !incident
            .signals
            .iter()
            .any(|s| s.series.to_string() == *series)
        {
            return Err(ApiError::InvalidParam {
                name: "series",
                reason: format!(
                    "{series:?} is not a member signal of incident {incident_id} (write it as \
                     the incident's `signals[].series` shows it)"
                ),
            });
        }
    }
    let new = NewVerdict {
        incident_id,
        kind,
        by: body.by.trim().to_string(),
        reason: body.reason.trim().to_string(),
        alert_id: body.alert_id,
        series: body.series,
        expires_at,
    };
    let verdict = with_store(&state.store, move |s| s.add_verdict(&new, now)).await?;
    tracing::info!(
        verdict = verdict.id,
        incident = incident_id,
        kind = verdict.verdict.as_str(),
        by = %verdict.by,
        reason = %verdict.reason,
        "Recorded a verdict through the API."
    );
    Ok((StatusCode::CREATED, Json(verdict)))
}

/// `GET /api/v1/incidents/{id}/verdicts` answer.
#[derive(Debug, Serialize)]
struct IncidentVerdicts {
    items: Vec<Verdict>,
    /// What the incident's verdicts have suppressed, newest first (at most
    /// 500).
    suppressions: Vec<Suppression>,
}

/// `GET /api/v1/incidents/{id}/verdicts`
async fn incident_verdicts(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<IncidentVerdicts>, ApiError> {
    let id: IncidentId = parse_numeric_id(&raw, "an incident id")?;
    let (items, suppressions) = with_store(&state.store, move |s| {
        Ok((
            s.list_verdicts(Some(id), 500, None)?,
            s.suppressions_by_incident_verdicts(id, 500)?,
        ))
    })
    .await?;
    Ok(Json(IncidentVerdicts {
        items,
        suppressions,
    }))
}

/// `GET /api/v1/verdicts?limit=50&before_id=`
async fn list_verdicts(
    State(state): State<AppState>,
    params: Result<Query<SuppressionParams>, QueryRejection>,
) -> Result<Json<Page<Verdict>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (limit, before_id) = paging(&params.limit, &params.before_id)?;
    let items = with_store(&state.store, move |s| {
        s.list_verdicts(None, limit, before_id)
    })
    .await?;
    let next_before_id = (items.len() == limit)
        .then(|| items.last().map(|v| v.id))
        .flatten();
    Ok(Json(Page {
        items,
        next_before_id,
    }))
}

/// `GET /api/v1/verdicts/{id}`
async fn get_verdict(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Verdict>, ApiError> {
    let id = parse_numeric_id(&raw, "a verdict id")?;
    with_store(&state.store, move |s| s.verdict(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("verdict {id} does not exist")))
}

/// `POST /api/v1/verdicts/{id}/revoke`
async fn revoke_verdict(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Verdict>, ApiError> {
    let id = parse_numeric_id(&raw, "a verdict id")?;
    let body: RevokeBody = parse_body(body, "{\"by\", \"reason\"}")?;
    let field = |name: &'static str| move |reason: String| ApiError::InvalidParam { name, reason };
    check_text("by", &body.by, true).map_err(field("by"))?;
    check_text("reason", &body.reason, true).map_err(field("reason"))?;
    let (by, reason) = (body.by.trim().to_string(), body.reason.trim().to_string());
    let now = now_ms();
    let revoked = with_store(&state.store, move |s| {
        match s.revoke_verdict(id, &by, &reason, now)? {
            Some(v) => Ok(Ok(v)),
            None => Ok(Err(s.verdict(id)?.is_some())),
        }
    })
    .await?;
    match revoked {
        Ok(verdict) => {
            tracing::info!(
                verdict = id,
                by = ?verdict.revoked_by,
                reason = ?verdict.revoke_reason,
                "Revoked a verdict through the API; it suppresses nothing from now on."
            );
            Ok(Json(verdict))
        }
        Err(true) => Err(ApiError::Conflict(format!(
            "verdict {id} was revoked already"
        ))),
        Err(false) => Err(ApiError::NotFound(format!("verdict {id} does not exist"))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde_json::Value;

    use super::super::tests::send;
    use super::*;
    use crate::config::{AlertmanagerConfig, Secret};
    use crate::incident::noise::NoiseConfig;
    use crate::incident::{NewAlert, Store};
    use crate::telemetry::{Health, Metrics};

    const TOKEN: &str = "test-token-0123456789";

    fn state() -> AppState {
        let noise: NoiseConfig = serde_saphyr::from_str(
            "silences:\n  - matchers: ['namespace=batch']\n    created_by: ops\n    comment: nightly jobs\n",
        )
        .expect("noise config");
        AppState {
            store: Store::open_in_memory().expect("store").with_noise_schema(),
            metrics: Arc::new(Metrics::new()),
            health: Health::new(),
            api_token: Some(Secret::from(TOKEN)),
            cluster: "test".into(),
            alertmanager: AlertmanagerConfig::default(),
            alert_tx: None,
            config_silences: noise.silences().into(),
            remediation: Default::default(),
            config: None,
        }
    }

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

    const GOOD: &str = r#"{"created_by": "alice", "comment": "db maintenance",
        "matchers": ["namespace=shop", "alertname=~Disk.*"], "ends_at": "2999-01-01T00:00:00Z"}"#;

    #[tokio::test]
    async fn silences_are_created_listed_and_deleted_with_the_token() {
        let state = state();
        let (status, _) = call(&state, "POST", SILENCES_PATH, None, Some(GOOD)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = call(&state, "GET", SILENCES_PATH, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = call(&state, "DELETE", "/api/v1/silences/1", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let (status, body) = call(&state, "POST", SILENCES_PATH, Some(TOKEN), Some(GOOD)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["id"], "api-1");
        assert_eq!(body["active"], true);
        assert_eq!(body["matchers"][1], "alertname=~\"Disk.*\"");

        let (status, body) = call(&state, "GET", SILENCES_PATH, Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::OK);
        let ids: Vec<&str> = body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|s| s["id"].as_str())
            .collect();
        assert_eq!(ids, ["config-0", "api-1"]);

        let (status, _) = call(
            &state,
            "DELETE",
            "/api/v1/silences/config-0",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) = call(
            &state,
            "DELETE",
            "/api/v1/silences/api-1",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = call(&state, "DELETE", "/api/v1/silences/1", Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, body) = call(&state, "GET", SILENCES_PATH, Some(TOKEN), None).await;
        assert_eq!(body["items"].as_array().map(Vec::len), Some(1));
    }

    #[tokio::test]
    async fn bad_silences_are_400_naming_the_field() {
        let state = state();
        for (body, field) in [
            (GOOD.replace("Disk.*", "Disk("), "matchers[1]"),
            (
                GOOD.replace("namespace=shop", "namespace~shop"),
                "matchers[0]",
            ),
            (
                GOOD.replace(r#""namespace=shop", "alertname=~Disk.*""#, r#""env!=dev""#),
                "matchers:",
            ),
            (GOOD.replace("2999-01-01T00:00:00Z", "tomorrow"), "ends_at"),
            (
                GOOD.replace("2999-01-01T00:00:00Z", "2001-01-01T00:00:00Z"),
                "ends_at",
            ),
            (GOOD.replace("\"alice\"", "\"\""), "created_by"),
            (GOOD.replace("\"comment\"", "\"why\""), "why"),
        ] {
            let (status, answer) =
                call(&state, "POST", SILENCES_PATH, Some(TOKEN), Some(&body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            let error = answer["error"].as_str().unwrap_or_default();
            assert!(error.contains(field), "{field}: {error}");
        }
        assert!(
            state.store.silences(0).expect("list").is_empty(),
            "nothing stored"
        );
    }

    #[tokio::test]
    async fn alerts_and_suppressions_are_listed_with_their_reason() {
        let state = state();
        let alert = |fp: &str, ns: &str| NewAlert {
            fingerprint: fp.into(),
            status: AlertStatus::Firing,
            labels: BTreeMap::from([
                ("alertname".to_string(), "JobSlow".to_string()),
                ("namespace".to_string(), ns.to_string()),
            ]),
            annotations: BTreeMap::new(),
            starts_at: 1_000,
            ends_at: None,
            generator_url: String::new(),
        };
        let stored = state
            .store
            .record_alerts(
                "aiopsd",
                "{}",
                &[alert("00aa", "batch"), alert("00bb", "shop")],
                1_000,
            )
            .expect("record");
        let silence = &state.config_silences[0];
        state
            .store
            .suppress_alert(&stored[0].0, silence, 2_000)
            .expect("suppress");

        let (status, body) = call(
            &state,
            "GET",
            "/api/v1/alerts?suppressed=true",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(body["items"][0]["fingerprint"], "00aa");
        assert_eq!(body["items"][0]["suppression"]["reference"], "config-0");
        let (_, body) = call(
            &state,
            "GET",
            "/api/v1/alerts?suppressed=false&status=firing",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(body["items"][0]["fingerprint"], "00bb");
        assert_eq!(body["items"][0]["suppression"], Value::Null);
        let (_, body) = call(&state, "GET", "/api/v1/alerts?limit=1", Some(TOKEN), None).await;
        assert_eq!(body["items"][0]["fingerprint"], "00bb");
        let next = body["next_before_id"].as_i64().expect("more");
        let (_, body) = call(
            &state,
            "GET",
            &format!("/api/v1/alerts?limit=1&before_id={next}"),
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(body["items"][0]["fingerprint"], "00aa");

        let (status, body) = call(&state, "GET", SUPPRESSIONS_PATH, Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::OK);
        let detail = body["items"][0]["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("config-0")
                && detail.contains("ops")
                && detail.contains("nightly jobs"),
            "{detail}"
        );
        assert_eq!(body["items"][0]["reason"], "silence");

        for uri in [
            "/api/v1/alerts?suppressed=yes",
            "/api/v1/alerts?status=open",
            "/api/v1/suppressions?limit=x",
        ] {
            let (status, _) = call(&state, "GET", uri, Some(TOKEN), None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        }
        let (status, _) = call(&state, "GET", SUPPRESSIONS_PATH, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    /// Sends a request to the verdict routes alone (the full router gains
    /// them when `server::router` merges [`verdict_routes`]).
    async fn verdicts_call(
        state: &AppState,
        method: &str,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        use axum::body::Body;
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .expect("request");
        let response = verdict_routes()
            .with_state(state.clone())
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn verdicts_are_recorded_listed_and_revoked_with_who_and_why() {
        use crate::config::IncidentConfig;
        use crate::incident::Correlator;

        let state = state();
        let stored = state
            .store
            .record_alerts(
                "aiopsd",
                "{}",
                &[NewAlert {
                    fingerprint: "00cc".into(),
                    status: AlertStatus::Firing,
                    labels: BTreeMap::from([
                        ("alertname".to_string(), "CartSlow".to_string()),
                        ("namespace".to_string(), "shop".to_string()),
                        ("service".to_string(), "cart".to_string()),
                    ]),
                    annotations: BTreeMap::new(),
                    starts_at: 1_000,
                    ends_at: None,
                    generator_url: String::new(),
                }],
                1_000,
            )
            .expect("record");
        let alert = &stored[0].0;
        let mut correlator = Correlator::new(IncidentConfig::default(), "test");
        let update = correlator.on_alert(alert).remove(0);
        let id = state
            .store
            .save_incident_with_events(&update.incident, update.kind, 1_000)
            .expect("save")
            .id;
        let uri = format!("/api/v1/incidents/{id}/verdicts");

        let good = format!(
            r#"{{"verdict": "noise", "by": "alice", "reason": "nightly reindex", "alert_id": {}}}"#,
            alert.id
        );
        let (status, body) = verdicts_call(&state, "POST", &uri, Some(&good)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["verdict"], "noise");
        assert_eq!(body["alert_id"], alert.id);
        let vid = body["id"].as_i64().expect("id");

        for (bad, field) in [
            (r#"{"verdict": "meh", "by": "a", "reason": "b"}"#.to_string(), "verdict"),
            (r#"{"verdict": "noise", "by": "", "reason": "b"}"#.to_string(), "by"),
            (r#"{"verdict": "noise", "by": "a"}"#.to_string(), "reason"),
            (
                r#"{"verdict": "noise", "by": "a", "reason": "b", "alert_id": 999}"#.to_string(),
                "alert_id",
            ),
            (
                r#"{"verdict": "noise", "by": "a", "reason": "b", "series": "x{}"}"#.to_string(),
                "series",
            ),
            (
                r#"{"verdict": "expected", "by": "a", "reason": "b", "expires_at": "2001-01-01T00:00:00Z"}"#
                    .to_string(),
                "expires_at",
            ),
        ] {
            let (status, answer) = verdicts_call(&state, "POST", &uri, Some(&bad)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
            let error = answer["error"].as_str().unwrap_or_default();
            assert!(error.contains(field), "{field}: {error}");
        }
        let (status, _) = verdicts_call(
            &state,
            "POST",
            "/api/v1/incidents/999/verdicts",
            Some(r#"{"verdict": "noise", "by": "a", "reason": "b"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, body) = verdicts_call(&state, "GET", &uri, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "{body}");
        assert_eq!(body["suppressions"].as_array().map(Vec::len), Some(0));

        let revoke = format!("{VERDICTS_PATH}/{vid}/revoke");
        let (status, _) = verdicts_call(&state, "POST", &revoke, Some(r#"{"by": "bob"}"#)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let body = r#"{"by": "bob", "reason": "it was real after all"}"#;
        let (status, answer) = verdicts_call(&state, "POST", &revoke, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["revoked_by"], "bob");
        let (status, _) = verdicts_call(&state, "POST", &revoke, Some(body)).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) =
            verdicts_call(&state, "POST", "/api/v1/verdicts/77/revoke", Some(body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, answer) =
            verdicts_call(&state, "GET", &format!("{VERDICTS_PATH}/{vid}"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["revoke_reason"], "it was real after all");
        let (_, answer) = verdicts_call(&state, "GET", VERDICTS_PATH, None).await;
        assert_eq!(answer["items"].as_array().map(Vec::len), Some(1));
        assert!(state
            .store
            .verdicts_in_force(2_000)
            .expect("in force")
            .is_empty());
    }
}
