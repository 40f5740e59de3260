//! `GET /api/v1/trends/{service}?namespace=`: week-over-week and
//! month-over-month change, growth per day and change points of a
//! service's CPU, memory and request rate, as JSON with the queries that
//! produced the data. The series come from the same fetch as the capacity
//! plan (src/forecast/service.rs), and the same trends are the plan's
//! "Trends" Markdown section.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use super::capacity::service_error;
use super::error::ApiError;
use super::AppState;
use crate::forecast::service::{trend_service, ServiceTrendReport};

/// The route.
pub(super) const TRENDS_PATH: &str = "/api/v1/trends/{service}";

/// Where the service's series are (they come from Prometheus).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrendParams {
    namespace: Option<String>,
}

/// `GET /api/v1/trends/{service}`
pub(super) async fn get_trends(
    State(state): State<AppState>,
    Path(service): Path<String>,
    params: Result<Query<TrendParams>, QueryRejection>,
) -> Result<Json<ServiceTrendReport>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let config = state.config.clone().ok_or_else(|| {
        ApiError::Unavailable("trend analysis is not configured on this instance".into())
    })?;
    trend_service(&config, p.namespace.as_deref(), &service)
        .await
        .map(Json)
        .map_err(service_error)
}
