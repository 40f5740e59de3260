//! `GET /api/v1/capacity/{service}?namespace=&days=&replicas=&cpu_request=&memory_request_bytes=&hpa_min=&hpa_max=&target=`:
//! the same capacity plan as `aiopsd capacity` (src/forecast/service.rs),
//! as JSON with the queries that produced its data.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
use crate::forecast::service::{plan_service, CapacityError, ServicePlan};
use crate::forecast::{CapacityInput, Hpa, PodResources};

/// The route.
pub(super) const CAPACITY_PATH: &str = "/api/v1/capacity/{service}";

/// What the plan is for (the series come from Prometheus).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CapacityParams {
    namespace: Option<String>,
    #[serde(default = "default_days")]
    days: u32,
    replicas: u32,
    cpu_request: f64,
    memory_request_bytes: f64,
    hpa_min: Option<u32>,
    hpa_max: Option<u32>,
    #[serde(default = "default_target")]
    target: f64,
}

fn default_days() -> u32 {
    7
}
fn default_target() -> f64 {
    0.7
}

/// `GET /api/v1/capacity/{service}`
pub(super) async fn get_capacity(
    State(state): State<AppState>,
    Path(service): Path<String>,
    params: Result<Query<CapacityParams>, QueryRejection>,
) -> Result<Json<ServicePlan>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let config = state.config.clone().ok_or_else(|| {
        ApiError::Unavailable("capacity planning is not configured on this instance".into())
    })?;
    let hpa = match (p.hpa_min, p.hpa_max) {
        (Some(min_replicas), Some(max_replicas)) => Some(Hpa {
            min_replicas,
            max_replicas,
        }),
        (None, None) => None,
        _ => {
            return Err(ApiError::InvalidParam {
                name: "hpa_min",
                reason: "hpa_min and hpa_max go together".into(),
            })
        }
    };
    let input = CapacityInput {
        service,
        days: p.days,
        replicas: p.replicas,
        pod: PodResources {
            cpu_request_cores: p.cpu_request,
            cpu_limit_cores: None,
            memory_request_bytes: p.memory_request_bytes,
            memory_limit_bytes: None,
        },
        hpa,
        target_utilisation: p.target,
    };
    plan_service(&config, p.namespace.as_deref(), &input)
        .await
        .map(Json)
        .map_err(service_error)
}

/// How a failed capacity plan or trend report (they share the fetch,
/// src/forecast/service.rs) answers: the caller's mistakes and data that
/// cannot support an answer with their status, Prometheus failures as 502
/// (logged once here).
pub(super) fn service_error(e: CapacityError) -> ApiError {
    match e {
        CapacityError::Selector(reason) => ApiError::InvalidParam {
            name: "service",
            reason,
        },
        CapacityError::Forecast(e) => ApiError::Unprocessable(e.to_string()),
        CapacityError::Fetch(crate::forecast::fetch::FetchError::NoData { .. }) => {
            ApiError::NotFound("Prometheus has no data for this service".into())
        }
        CapacityError::NoPrometheus => ApiError::Unavailable(e.to_string()),
        e => {
            tracing::warn!(error = %e, "Reading a service's series from Prometheus failed.");
            ApiError::BadGateway(e.to_string())
        }
    }
}
