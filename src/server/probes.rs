//! `/metrics`, `/healthz` and `/readyz`: what Prometheus and the kubelet
//! scrape. None of them needs the API token.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use super::AppState;
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
    reasons: Vec<String>,
    sources: Vec<SourceStatus>,
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
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            reasons,
            sources,
        }),
    )
}
