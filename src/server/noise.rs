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
//!
//! API silences must end (`ends_at`): a forgotten permanent silence hides
//! real trouble. Permanent ones belong in `noise.silences` in the config,
//! where they are reviewed like any other change.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{with_store, AppState};
use crate::incident::noise::{check_matchers, parse_rfc3339, Matcher, Silence, Suppression};
use crate::incident::{Alert, AlertFilter, AlertId, AlertStatus, NewSilence};
use crate::publish::approvals::check_text;
use crate::signal::{now_ms, TimestampMs};

/// The silences collection.
pub(super) const SILENCES_PATH: &str = "/api/v1/silences";
/// Stored alerts.
pub(super) const ALERTS_PATH: &str = "/api/v1/alerts";
/// Suppressions.
pub(super) const SUPPRESSIONS_PATH: &str = "/api/v1/suppressions";

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
            store: Store::open_in_memory().expect("store"),
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
}
