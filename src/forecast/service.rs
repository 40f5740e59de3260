//! A service's capacity plan and trends, end to end: 30 days of CPU,
//! memory and request rate from Prometheus ([`super::fetch`]), then
//! [`super::plan_capacity`] or [`super::service_trends`]. One fetch
//! ([`fetch_service`]) for every caller — `aiopsd capacity`,
//! `GET /api/v1/capacity/{service}` and `GET /api/v1/trends/{service}` — so
//! they read the same data the same way and cannot drift.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::capacity::{CapacityInput, CapacityPlan};
use super::fetch::{fetch_capacity_series, FetchError, FetchedCapacity};
use super::trend::{service_trends, ServiceTrends};
use super::{plan_capacity, ForecastError};
use crate::config::Config;

/// A capacity plan with the queries that produced its data.
#[derive(Debug, Clone, Serialize)]
pub struct ServicePlan {
    /// The plan.
    pub plan: CapacityPlan,
    /// The PromQL sent, by resource, so a person can check the data.
    pub queries: BTreeMap<&'static str, String>,
}

/// A service's trends with the queries that produced their data.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceTrendReport {
    /// The trends of CPU, memory and request rate.
    pub trends: ServiceTrends,
    /// The PromQL sent, by resource, so a person can check the data.
    pub queries: BTreeMap<&'static str, String>,
}

/// Why no plan (or trend report) could be made.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    /// No `prometheus` section in the config.
    #[error("the config has no `prometheus` section: capacity plans and trends read Prometheus")]
    NoPrometheus,
    /// The service or namespace is not a valid label value.
    #[error("{0}")]
    Selector(String),
    /// The Prometheus client could not be built.
    #[error("cannot set up the Prometheus client for {url}: {reason}")]
    Client {
        /// `prometheus.url`.
        url: String,
        /// Why.
        reason: String,
    },
    /// Reading the series failed (names the query and the status).
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The data does not support a plan (too little, constant, bad input):
    /// said plainly, never a made-up number.
    #[error(transparent)]
    Forecast(#[from] ForecastError),
}

/// Fetches the CPU, memory and request-rate series of `service` (in
/// `namespace`, if given) over `capacity.lookback`, with the queries from
/// the config's `capacity` section.
pub async fn fetch_service(
    config: &Config,
    namespace: Option<&str>,
    service: &str,
) -> Result<FetchedCapacity, CapacityError> {
    let prometheus = config
        .prometheus
        .as_ref()
        .ok_or(CapacityError::NoPrometheus)?;
    let selector = config
        .capacity
        .service_selector(service, namespace)
        .map_err(|e| CapacityError::Selector(e.to_string()))?;
    let http = reqwest::Client::builder()
        .timeout(prometheus.timeout.0)
        .build()
        .map_err(|e| CapacityError::Client {
            url: prometheus.url.clone(),
            reason: e.to_string(),
        })?;
    let client = prometheus_http_query::Client::from(http, &prometheus.url).map_err(|e| {
        CapacityError::Client {
            url: prometheus.url.clone(),
            reason: e.to_string(),
        }
    })?;
    Ok(fetch_capacity_series(&client, &config.capacity, &selector).await?)
}

/// Fetches the series of `input.service` (in `namespace`, if given) and
/// plans its capacity for `input.days` days.
pub async fn plan_service(
    config: &Config,
    namespace: Option<&str>,
    input: &CapacityInput,
) -> Result<ServicePlan, CapacityError> {
    input.validate()?;
    let fetched = fetch_service(config, namespace, &input.service).await?;
    let mut forecast = config.forecast.clone();
    forecast.horizon =
        crate::config::HumanDuration(Duration::from_secs(u64::from(input.days) * 24 * 3600));
    let plan = plan_capacity(&fetched.series(), input, &forecast)?;
    Ok(ServicePlan {
        plan,
        queries: fetched.queries.clone(),
    })
}

/// Fetches the series of `service` (in `namespace`, if given) and analyses
/// their trends: week over week, month over month, growth and change
/// points. A series that cannot be analysed carries its reason; the call
/// fails only when the data cannot be read.
pub async fn trend_service(
    config: &Config,
    namespace: Option<&str>,
    service: &str,
) -> Result<ServiceTrendReport, CapacityError> {
    let fetched = fetch_service(config, namespace, service).await?;
    let trends = service_trends(service, &fetched.series(), &config.forecast);
    Ok(ServiceTrendReport {
        trends,
        queries: fetched.queries,
    })
}
