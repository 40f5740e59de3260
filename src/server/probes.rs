//! `/metrics`, `/healthz` and `/readyz`: what Prometheus and the kubelet
//! scrape. None of them needs the API token.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use super::AppState;
use crate::publish::telemetry::PublisherStatus;
use crate::telemetry::error_chain;
use crate::telemetry::SourceStatus;

/// The content type the OpenMetrics text encoder produces.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        state.metrics.encode(),
    )
}

/// `GET /healthz`: the process is alive and serving HTTP. Deliberately
/// checks nothing else, so a slow Prometheus never gets aiopsd restarted.
pub(super) async fn healthz() -> &'static str {
    "ok"
}

#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    /// `leader` (runs the pipeline) or `standby: ...` (waits for the
    /// lease; ready, but the Service routes to the leader's pod only).
    role: String,
    reasons: Vec<String>,
    sources: Vec<SourceStatus>,
    /// Event publishers (broker state, outbox depth). Informational: a
    /// broker outage does not make aiopsd unready, because detection goes
    /// on and events wait in the outbox.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    publishers: Vec<PublisherStatus>,
}

/// `GET /readyz`: 200 when the pipeline runs, the store answers and every
/// source has answered and finished backfilling; 503 with every reason
/// otherwise.
pub(super) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (mut ready, mut reasons, sources) = state.health.readiness();
    let store = state.store.clone();
    // Probes come every few seconds: failures go in the answer, not the log.
    let ping = match tokio::task::spawn_blocking(move || store.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("store does not answer: {}", error_chain(&e))),
        Err(e) => Some(format!("store ping did not complete: {e}")),
    };
    if let Some(reason) = ping {
        ready = false;
        reasons.push(reason);
    }
    let mut publishers = state.health.publishers();
    if !publishers.is_empty() {
        // The depth from the store, so it is current even while the broker
        // is down and nothing is being delivered.
        let store = state.store.clone();
        let names: Vec<String> = publishers.iter().map(|p| p.sink.clone()).collect();
        let depths = tokio::task::spawn_blocking(move || {
            names
                .iter()
                .map(|n| store.outbox_depth(n).ok().flatten())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (p, depth) in publishers.iter_mut().zip(depths) {
            if let Some((depth, max)) = depth {
                p.outbox_depth = depth;
                p.outbox_max_events = max;
            }
        }
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            role: state.health.standby().unwrap_or_else(|| "leader".into()),
            reasons,
            sources,
            publishers,
        }),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::super::{router, AppState};
    use crate::incident::Store;
    use crate::publish::outbox::{SinkSpec, MQTT_SINK};
    use crate::telemetry::{Health, Metrics};

    #[tokio::test]
    async fn readyz_shows_the_broker_but_a_broker_outage_is_not_unready() {
        let store = Store::open_in_memory().expect("store");
        store
            .configure_outbox(&[SinkSpec {
                name: MQTT_SINK.into(),
                max_events: 1000,
            }])
            .expect("sink");
        let health = Health::new();
        health.set_pipeline_running(true);
        health.set_store_ok(true);
        health.publisher_registered(MQTT_SINK, "mqtt://broker:1883");
        health.publisher_connected(MQTT_SINK, false, Some("connection refused".into()));
        let state = AppState {
            store,
            metrics: Arc::new(Metrics::new()),
            health,
            api_token: None,
            cluster: "test".into(),
            alertmanager: crate::config::AlertmanagerConfig::default(),
            alert_tx: None,
            config_silences: Default::default(),
            remediation: Default::default(),
            config: None,
        };
        let response = router(state, Duration::from_secs(5))
            .oneshot(
                Request::get("/readyz")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let p = &body["publishers"][0];
        assert_eq!(p["sink"], "mqtt");
        assert_eq!(p["connected"], false);
        assert_eq!(p["last_error"], "connection refused");
        assert_eq!(p["outbox_depth"], 0);
        assert_eq!(p["outbox_max_events"], 1000);
    }
}
