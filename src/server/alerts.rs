//! `POST /api/v1/alerts/alertmanager`: aiopsd as an Alertmanager webhook
//! receiver.
//!
//! Order of work, each step refusing before the next can store anything:
//! credentials (middleware, before the body is read: bearer token or basic
//! auth, see [`super::auth`]), size limit (413), JSON shape and types (400
//! naming the field, e.g. `alerts[2].startsAt: ...`), meaning (version 4,
//! RFC 3339 times, label names, a resolved alert's end), then one store
//! transaction for the whole delivery. Only after it committed is the
//! answer 200, so an accepted alert is never lost; the stored changes are
//! then handed to the incident stage on a bounded channel. When that channel
//! is full (or the pipeline is not running) nothing waits: the alerts stay
//! marked unprocessed in the store and the incident stage picks them up
//! from there.
//!
//! Fields Alertmanager may add to version 4 in the future are ignored
//! rather than refused: a 4xx is final for Alertmanager (it does not
//! retry), so refusing an unknown field would silently drop real alerts.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::error::TrySendError;

use super::error::ApiError;
use super::AppState;
use crate::incident::{AlertBatch, AlertReceipt, AlertStatus, NewAlert};
use crate::signal::{now_ms, TimestampMs};

/// The webhook's path.
pub(super) const ALERTMANAGER_PATH: &str = "/api/v1/alerts/alertmanager";

/// The webhook payload Alertmanager sends (version 4).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookPayload {
    version: String,
    #[serde(default)]
    group_key: String,
    #[serde(default)]
    truncated_alerts: u64,
    #[allow(dead_code)] // Checked for type only: each alert has its own status.
    status: AlertStatus,
    receiver: String,
    // Typed so a wrong type is a 400 naming it; the alerts carry all labels
    // and annotations themselves, so these summaries are not used further.
    #[serde(default)]
    #[allow(dead_code)] // Checked for type only (see above).
    group_labels: BTreeMap<String, String>,
    #[serde(default)]
    #[allow(dead_code)] // Checked for type only (see above).
    common_labels: BTreeMap<String, String>,
    #[serde(default)]
    #[allow(dead_code)] // Checked for type only (see above).
    common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    #[allow(dead_code)] // Checked for type only (see above).
    external_url: String,
    alerts: Vec<WebhookAlert>,
}

/// One alert of the payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert {
    status: AlertStatus,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: String,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

/// The answer to an accepted delivery.
#[derive(Debug, Serialize)]
pub(super) struct WebhookResponse {
    /// Alerts in the delivery.
    alerts: usize,
    /// Of those, new episodes stored.
    new: usize,
    /// Of those, known episodes now resolved.
    resolved: usize,
    /// Of those, alerts that changed nothing (retries).
    duplicates: usize,
}

/// `POST /api/v1/alerts/alertmanager`
pub(super) async fn receive(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<WebhookResponse>), ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "the body is larger than alertmanager.max_body_bytes ({} bytes); \
                 lower max_alerts in the Alertmanager receiver",
                state.alertmanager.max_body_bytes
            ))
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let payload = parse(&body)?;
    let alerts = validate(&payload).map_err(ApiError::BadRequest)?;
    if payload.truncated_alerts > 0 {
        tracing::warn!(
            receiver = %payload.receiver,
            truncated = payload.truncated_alerts,
            "Alertmanager left alerts out of a notification (its max_alerts); they are not seen here."
        );
    }
    let receiver = payload.receiver.clone();
    let group_key = payload.group_key.clone();
    let store = state.store.clone();
    let stored = tokio::task::spawn_blocking(move || {
        store.record_alerts(&receiver, &group_key, &alerts, now_ms())
    })
    .await
    .map_err(ApiError::Task)?
    .map_err(ApiError::Store)?;

    let count = |r: AlertReceipt| stored.iter().filter(|(_, x)| *x == r).count();
    let response = WebhookResponse {
        alerts: stored.len(),
        new: count(AlertReceipt::New),
        resolved: count(AlertReceipt::Resolved),
        duplicates: count(AlertReceipt::Duplicate),
    };
    let sent = |s: AlertStatus| payload.alerts.iter().filter(|a| a.status == s).count() as u64;
    state.metrics.alerts_received(
        &payload.receiver,
        sent(AlertStatus::Firing),
        sent(AlertStatus::Resolved),
        response.duplicates as u64,
    );
    let changed: Vec<_> = stored
        .into_iter()
        .filter(|(_, r)| *r != AlertReceipt::Duplicate)
        .map(|(alert, _)| alert)
        .collect();
    if !changed.is_empty() {
        if let Some(tx) = &state.alert_tx {
            match tx.try_send(AlertBatch { alerts: changed }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => tracing::debug!(
                    "The incident stage is busy; the stored alerts wait in the store for its next sweep."
                ),
                Err(TrySendError::Closed(_)) => tracing::debug!(
                    "The pipeline is not running; the stored alerts are applied when it starts."
                ),
            }
        }
    }
    Ok((StatusCode::OK, Json(response)))
}

/// JSON → payload, with the path of the first field that does not fit.
fn parse(body: &[u8]) -> Result<WebhookPayload, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::BadRequest(format!(
                "the body is not an Alertmanager webhook payload: {inner}"
            ))
        } else {
            ApiError::BadRequest(format!("{path}: {inner}"))
        }
    })
}

/// Checks what types alone cannot; the message names the field.
fn validate(payload: &WebhookPayload) -> Result<Vec<NewAlert>, String> {
    if payload.version != "4" {
        return Err(format!(
            "version: {:?} is not supported; Alertmanager webhook payload version 4 is",
            payload.version
        ));
    }
    if payload.receiver.trim().is_empty() {
        return Err("receiver: must not be empty".into());
    }
    if payload.alerts.is_empty() {
        return Err("alerts: must not be empty".into());
    }
    payload
        .alerts
        .iter()
        .enumerate()
        .map(|(i, alert)| validate_alert(alert).map_err(|e| format!("alerts[{i}].{e}")))
        .collect()
}

fn validate_alert(alert: &WebhookAlert) -> Result<NewAlert, String> {
    let fp = &alert.fingerprint;
    if fp.is_empty() || fp.len() > 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "fingerprint: {fp:?} is not a fingerprint (1 to 64 hex digits)"
        ));
    }
    if alert.labels.is_empty() {
        return Err("labels: must not be empty".into());
    }
    for name in alert.labels.keys() {
        crate::sources::promql::validate_label_name(name)
            .map_err(|reason| format!("labels.{name}: {reason}"))?;
    }
    let starts_at = parse_time(&alert.starts_at)
        .map_err(|reason| format!("startsAt: {reason}"))?
        .ok_or_else(|| {
            format!(
                "startsAt: {:?} is the zero time; it must be set",
                alert.starts_at
            )
        })?;
    let ends_at = match &alert.ends_at {
        None => None,
        Some(raw) => parse_time(raw).map_err(|reason| format!("endsAt: {reason}"))?,
    };
    let ends_at = match alert.status {
        // A firing alert's endsAt is only Alertmanager's expected expiry.
        AlertStatus::Firing => None,
        AlertStatus::Resolved => {
            let end = ends_at.ok_or("endsAt: a resolved alert needs its end time")?;
            if end < starts_at {
                return Err(format!(
                    "endsAt: {:?} is before startsAt {:?}",
                    alert.ends_at.as_deref().unwrap_or_default(),
                    alert.starts_at
                ));
            }
            Some(end)
        }
    };
    Ok(NewAlert {
        fingerprint: fp.to_ascii_lowercase(),
        status: alert.status,
        labels: alert.labels.clone(),
        annotations: alert.annotations.clone(),
        starts_at,
        ends_at,
        generator_url: alert.generator_url.clone(),
    })
}

/// Parses an RFC 3339 time as Go writes it (`2026-11-24T10:15:00.123456789Z`
/// or with an offset such as `+01:00`) into milliseconds; `Ok(None)` for
/// Go's zero time (`0001-01-01T00:00:00Z`), which Alertmanager sends for
/// "not set".
fn parse_time(raw: &str) -> Result<Option<TimestampMs>, String> {
    let invalid = || format!("{raw:?} is not an RFC 3339 time such as 2026-11-24T10:15:00Z");
    if !raw.is_ascii() || raw.len() < 20 {
        return Err(invalid());
    }
    if raw.starts_with("0001-01-01T00:00:00") {
        return Ok(None);
    }
    let (base, offset_ms) = if let Some(base) = raw.strip_suffix(['Z', 'z']) {
        (base, 0)
    } else {
        // `±HH:MM` at the end (ASCII checked above, so byte slicing is safe).
        let (base, offset) = raw.split_at(raw.len() - 6);
        let sign = match offset.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(invalid()),
        };
        let hours: i64 = offset
            .get(1..3)
            .and_then(|h| h.parse().ok())
            .ok_or_else(invalid)?;
        let minutes: i64 = offset
            .get(4..6)
            .and_then(|m| m.parse().ok())
            .ok_or_else(invalid)?;
        if offset.as_bytes().get(3) != Some(&b':') || hours > 23 || minutes > 59 {
            return Err(invalid());
        }
        (base, sign * (hours * 3_600_000 + minutes * 60_000))
    };
    if base.as_bytes().get(10) != Some(&b'T') && base.as_bytes().get(10) != Some(&b't') {
        return Err(invalid());
    }
    let t = humantime::parse_rfc3339_weak(base).map_err(|_| invalid())?;
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{raw:?} is before 1970"))?
        .as_millis();
    let ms = i64::try_from(ms).map_err(|_| format!("{raw:?} is too far ahead"))?;
    Ok(Some(ms - offset_ms))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{header, Request};
    use http_body_util::BodyExt;
    use serde_json::{json, Value};
    use tokio::sync::mpsc;
    use tower::ServiceExt;

    use super::super::{router, AppState};
    use super::*;
    use crate::config::{AlertmanagerConfig, BasicAuthConfig, Secret};
    use crate::incident::Store;
    use crate::telemetry::{Health, Metrics};

    const TOKEN: &str = "test-token-0123456789";
    const PASSWORD: &str = "basic-password-0123456789";
    const T0: &str = "2026-11-24T10:15:00.123456789Z";
    const T0_MS: TimestampMs = 1_795_515_300_123;

    fn state(basic: bool) -> (AppState, mpsc::Receiver<AlertBatch>) {
        let (tx, rx) = mpsc::channel(4);
        let state = AppState {
            store: Store::open_in_memory().expect("store"),
            metrics: Arc::new(Metrics::new()),
            health: Health::new(),
            api_token: Some(Secret::from(TOKEN)),
            cluster: "test".into(),
            alertmanager: AlertmanagerConfig {
                basic_auth: basic.then(|| BasicAuthConfig {
                    username: "alertmanager".into(),
                    password: Secret::from(PASSWORD),
                }),
                max_body_bytes: 4096,
            },
            alert_tx: Some(tx),
            config_silences: Default::default(),
            remediation: Default::default(),
            config: None,
        };
        (state, rx)
    }

    fn alert(status: &str, fingerprint: &str) -> Value {
        json!({
            "status": status,
            "labels": {"alertname": "HighErrorRate", "namespace": "shop", "service": "cart", "severity": "critical"},
            "annotations": {"summary": "5xx above 5%"},
            "startsAt": T0,
            "endsAt": if status == "resolved" { "2026-11-24T10:20:00Z" } else { "0001-01-01T00:00:00Z" },
            "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
            "fingerprint": fingerprint
        })
    }

    fn payload(alerts: Vec<Value>) -> Value {
        json!({
            "version": "4",
            "groupKey": "{}:{alertname=\"HighErrorRate\"}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "aiopsd",
            "groupLabels": {"alertname": "HighErrorRate"},
            "commonLabels": {"alertname": "HighErrorRate"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": alerts
        })
    }

    async fn post(state: &AppState, auth: Option<String>, body: String) -> (StatusCode, Value) {
        let mut request =
            Request::post(ALERTMANAGER_PATH).header(header::CONTENT_TYPE, "application/json");
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let response = router(state.clone(), Duration::from_secs(5))
            .oneshot(request.body(Body::from(body)).expect("request"))
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

    fn bearer() -> Option<String> {
        Some(format!("Bearer {TOKEN}"))
    }

    fn basic(user: &str, password: &str) -> Option<String> {
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(format!("Basic {encoded}"))
    }

    #[tokio::test]
    async fn stores_before_answering_and_repeats_are_idempotent() {
        let (state, mut rx) = state(false);
        let body = payload(vec![alert("firing", "a1b2c3d4e5f60718")]).to_string();
        let (status, answer) = post(&state, bearer(), body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["new"], 1);
        let (stored, processed) = state
            .store
            .alert("a1b2c3d4e5f60718", T0_MS)
            .expect("read")
            .expect("stored before the 200");
        assert_eq!(stored.status, AlertStatus::Firing);
        assert_eq!(stored.labels["service"], "cart");
        assert!(!processed);
        let batch = rx.try_recv().expect("handed to the incident stage");
        assert_eq!(batch.alerts, [stored]);

        // Alertmanager retries: stored once, nothing new for the stage.
        let (status, answer) = post(&state, bearer(), body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["duplicates"], 1);
        assert!(rx.try_recv().is_err());
        assert_eq!(state.store.alert_count().expect("count"), 1);
        let metrics = state.metrics.encode();
        assert!(
            metrics.contains(r#"aiopsd_alerts_received_total{status="firing"} 2"#),
            "{metrics}"
        );
        assert!(
            metrics.contains("aiopsd_alerts_deduplicated_total 1"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn a_full_channel_does_not_hold_up_or_lose_an_alert() {
        let (mut state, _) = state(false);
        let (tx, mut rx) = mpsc::channel(1);
        tx.try_send(AlertBatch { alerts: Vec::new() })
            .expect("fill the channel");
        state.alert_tx = Some(tx);
        let body = payload(vec![alert("firing", "00000000000000ee")]).to_string();
        let (status, answer) = post(&state, bearer(), body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        // Not in the channel, but stored and unprocessed: the incident
        // stage's sweep applies it.
        assert!(rx.try_recv().expect("the filler").alerts.is_empty());
        assert!(rx.try_recv().is_err());
        let pending = state.store.unprocessed_alerts(10).expect("list");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].fingerprint, "00000000000000ee");
    }

    #[tokio::test]
    async fn a_resolved_notification_resolves_the_stored_alert() {
        let (state, mut rx) = state(false);
        let firing = payload(vec![alert("firing", "00000000000000ff")]).to_string();
        assert_eq!(post(&state, bearer(), firing).await.0, StatusCode::OK);
        let _ = rx.try_recv();
        let mut resolved = payload(vec![alert("resolved", "00000000000000ff")]);
        resolved["status"] = json!("resolved");
        let (status, answer) = post(&state, bearer(), resolved.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["resolved"], 1);
        let (stored, _) = state
            .store
            .alert("00000000000000ff", T0_MS)
            .expect("read")
            .expect("stored");
        assert_eq!(stored.status, AlertStatus::Resolved);
        assert_eq!(stored.ends_at, Some(1_795_515_600_000));
        let batch = rx.try_recv().expect("resolution handed on");
        assert_eq!(batch.alerts[0].status, AlertStatus::Resolved);
    }

    #[tokio::test]
    async fn unauthenticated_requests_are_refused_and_nothing_is_stored() {
        let (state, _rx) = state(true);
        let body = payload(vec![alert("firing", "0a")]).to_string();
        for (auth, why) in [
            (None, "no credentials"),
            (Some("Bearer wrong-token".to_string()), "wrong token"),
            (
                basic("alertmanager", "wrong-password-000000"),
                "wrong password",
            ),
            (basic("someone", PASSWORD), "wrong user"),
            (Some("Digest abc".to_string()), "unknown scheme"),
        ] {
            let (status, answer) = post(&state, auth, body.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {answer}");
            assert!(!answer.to_string().contains(PASSWORD), "{answer}");
        }
        assert_eq!(state.store.alert_count().expect("count"), 0);
        // Basic auth works when configured, and so does the token.
        let (status, _) = post(&state, basic("alertmanager", PASSWORD), body.clone()).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = post(&state, bearer(), body).await;
        assert_eq!(status, StatusCode::OK);

        // Without basic auth configured, basic credentials are refused.
        let (state, _rx) = self::state(false);
        let body = payload(vec![alert("firing", "0b")]).to_string();
        let (status, _) = post(&state, basic("alertmanager", PASSWORD), body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(state.store.alert_count().expect("count"), 0);
    }

    #[tokio::test]
    async fn malformed_payloads_are_400_naming_the_field_and_nothing_is_stored() {
        let (state, _rx) = state(false);
        let good = || alert("firing", "0c");
        let mut bad_start = good();
        bad_start["startsAt"] = json!("yesterday");
        let mut zero_start = good();
        zero_start["startsAt"] = json!("0001-01-01T00:00:00Z");
        let mut bad_status = good();
        bad_status["status"] = json!("burning");
        let mut no_end = alert("resolved", "0c");
        no_end["endsAt"] = json!("0001-01-01T00:00:00Z");
        let mut end_before_start = alert("resolved", "0c");
        end_before_start["endsAt"] = json!("2026-11-24T09:00:00Z");
        let mut bad_fingerprint = good();
        bad_fingerprint["fingerprint"] = json!("not-hex");
        let mut bad_label = good();
        bad_label["labels"]["bad-name"] = json!("x");
        let mut labels_not_strings = good();
        labels_not_strings["labels"]["service"] = json!(42);
        let mut version_3 = payload(vec![good()]);
        version_3["version"] = json!("3");
        let cases: Vec<(String, &str)> = vec![
            (
                payload(vec![good(), good(), bad_start]).to_string(),
                "alerts[2].startsAt: ",
            ),
            (
                payload(vec![zero_start]).to_string(),
                "alerts[0].startsAt: ",
            ),
            (payload(vec![bad_status]).to_string(), "alerts[0].status: "),
            (payload(vec![no_end]).to_string(), "alerts[0].endsAt: "),
            (
                payload(vec![end_before_start]).to_string(),
                "alerts[0].endsAt: ",
            ),
            (
                payload(vec![bad_fingerprint]).to_string(),
                "alerts[0].fingerprint: ",
            ),
            (
                payload(vec![bad_label]).to_string(),
                "alerts[0].labels.bad-name: ",
            ),
            (
                payload(vec![labels_not_strings]).to_string(),
                "alerts[0].labels.service: ",
            ),
            (payload(vec![]).to_string(), "alerts: "),
            (version_3.to_string(), "version: "),
            (r#"{"version": "4"}"#.to_string(), "missing field"),
            (
                "not json".to_string(),
                "not an Alertmanager webhook payload",
            ),
        ];
        for (body, needle) in cases {
            let (status, answer) = post(&state, bearer(), body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
            let message = answer["error"].as_str().unwrap_or_default();
            assert!(
                message.starts_with(needle) || message.contains(needle),
                "{needle:?} in {message:?}"
            );
        }
        assert_eq!(state.store.alert_count().expect("count"), 0);

        // Over the size limit: 413.
        let mut huge = good();
        huge["annotations"]["description"] = json!("x".repeat(8192));
        let (status, answer) = post(&state, bearer(), payload(vec![huge]).to_string()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
        assert_eq!(state.store.alert_count().expect("count"), 0);
    }

    #[test]
    fn times_are_parsed_as_go_writes_them() {
        assert_eq!(parse_time(T0), Ok(Some(T0_MS)));
        assert_eq!(parse_time("2026-11-24T11:15:00.123+01:00"), Ok(Some(T0_MS)));
        assert_eq!(parse_time("2026-11-24T05:45:00.123-04:30"), Ok(Some(T0_MS)));
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), Ok(None));
        for bad in [
            "2026-11-24",
            "2026-11-24 10:15:00Z",
            "2026-11-24T10:15:00",
            "2026-11-24T10:15:00+0100",
            "1969-12-31T23:59:59Z",
            "2026-11-24T10:15:00é",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
