//! Fetching a service's capacity series (CPU, memory, request rate) from
//! Prometheus for [`super::plan_capacity`].
//!
//! The queries are operator-written templates from config with a
//! `$selector` placeholder, filled with a validated, escaped
//! [`Selector`] (src/sources/promql.rs) — the service name the CLI or API
//! receives is never pasted into PromQL. Each series is read with range
//! queries over `lookback` at `step`, split so no request asks Prometheus
//! for more than its 11,000 points per series, and stitched back in time
//! order. Several returned series (a template that does not aggregate, one
//! series per pod) are summed per timestamp, which is what `sum(...)` would
//! do: the capacity planner works on service totals.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_http_query::response::Data;
use prometheus_http_query::Client;
use serde::{Deserialize, Serialize};

use super::CapacitySeries;
use crate::config::{FieldError, HumanDuration};
use crate::signal::{now_ms, Sample, TimestampMs};
use crate::sources::promql::{QueryTemplate, Selector, SelectorError};

/// Prometheus refuses range queries returning more than this many points
/// per series (`exceeded maximum resolution of 11,000 points`).
pub const MAX_POINTS_PER_QUERY: i64 = 11_000;

/// Most range queries one fetch may need per series; bounds the load a
/// single `aiopsd capacity` puts on Prometheus (`lookback / step`).
const MAX_CHUNKS: i64 = 20;

/// Where the capacity planner's series come from: PromQL templates and the
/// range to read. A section of the daemon's config (`capacity:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityQueries {
    /// CPU used by the service, in cores, summed over its pods.
    ///
    /// Default: `sum(rate(container_cpu_usage_seconds_total{$selector,container!="",container!="POD"}[5m]))`
    /// (cAdvisor).
    #[serde(default = "d_cpu")]
    pub cpu: QueryTemplate,
    /// Memory used by the service, in bytes (working set), summed over its
    /// pods.
    ///
    /// Default: `sum(container_memory_working_set_bytes{$selector,container!="",container!="POD"})`
    /// (cAdvisor).
    #[serde(default = "d_memory")]
    pub memory: QueryTemplate,
    /// Requests per second served by the service. Unset (`null`): plan
    /// without request rate.
    ///
    /// Default: `sum(rate(http_requests_total{$selector}[5m]))`. An empty
    /// answer is not an error: the plan just has no request rate.
    #[serde(default = "d_rps")]
    pub rps: Option<QueryTemplate>,
    /// The label that names the service in these series, used by
    /// [`CapacityQueries::service_selector`] for `--service S`.
    ///
    /// Default `container` (cAdvisor labels containers, not services; set
    /// `service` when recording rules add one).
    #[serde(default = "d_service_label")]
    pub service_label: String,
    /// Resolution of the range queries; a whole number of seconds.
    ///
    /// Default `5m` (the forecaster resamples to 5 minutes for 30 days
    /// anyway). At most `1h`.
    #[serde(default = "d_step")]
    pub step: HumanDuration,
    /// How much history to read.
    ///
    /// Default `30d`. At least `1d`, at most `90d`, and at most 20 queries
    /// of 11,000 points (`lookback / step <= 220,000`).
    #[serde(default = "d_lookback")]
    pub lookback: HumanDuration,
}

fn d_cpu() -> QueryTemplate {
    QueryTemplate::new(
        r#"sum(rate(container_cpu_usage_seconds_total{$selector,container!="",container!="POD"}[5m]))"#,
    )
}
fn d_memory() -> QueryTemplate {
    QueryTemplate::new(
        r#"sum(container_memory_working_set_bytes{$selector,container!="",container!="POD"})"#,
    )
}
fn d_rps() -> Option<QueryTemplate> {
    Some(QueryTemplate::new(
        "sum(rate(http_requests_total{$selector}[5m]))",
    ))
}
fn d_service_label() -> String {
    "container".into()
}
fn d_step() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn d_lookback() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 86_400))
}

impl Default for CapacityQueries {
    fn default() -> Self {
        Self {
            cpu: d_cpu(),
            memory: d_memory(),
            rps: d_rps(),
            service_label: d_service_label(),
            step: d_step(),
            lookback: d_lookback(),
        }
    }
}

impl CapacityQueries {
    /// Checks templates and ranges; each error's path starts with
    /// `capacity.` so it can join the config's own field errors.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut err = |path: &str, reason: String| {
            errors.push(FieldError {
                path: format!("capacity.{path}"),
                reason,
            })
        };
        // Templates are checked against a representative selector: they
        // must have the placeholder inside a selector's braces.
        let probe = Selector::new([(self.service_label.clone(), "probe".to_string())]);
        match &probe {
            Ok(probe) => {
                let templates = [("cpu", Some(&self.cpu)), ("memory", Some(&self.memory))];
                for (name, template) in templates.into_iter().chain([("rps", self.rps.as_ref())]) {
                    if let Some(Err(reason)) = template.map(|t| t.check_against(probe)) {
                        err(name, reason);
                    }
                }
            }
            Err(e) => err("service_label", e.reason.clone()),
        }
        let step = self.step.0;
        if step.is_zero() || step.subsec_nanos() != 0 || step > Duration::from_secs(3600) {
            err(
                "step",
                format!(
                    "must be a whole number of seconds in [1s, 1h], got {}",
                    self.step
                ),
            );
        } else {
            let lookback = self.lookback.0;
            if lookback < Duration::from_secs(86_400) || lookback > Duration::from_secs(90 * 86_400)
            {
                err(
                    "lookback",
                    format!("must be in [1d, 90d], got {}", self.lookback),
                );
            } else if self.lookback.as_millis_i64() / self.step.as_millis_i64()
                > MAX_CHUNKS * MAX_POINTS_PER_QUERY
            {
                err(
                    "lookback",
                    format!(
                        "{} at a {} step is more than {} points ({MAX_CHUNKS} queries); use a coarser step",
                        self.lookback,
                        self.step,
                        MAX_CHUNKS * MAX_POINTS_PER_QUERY
                    ),
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The selector for `--service S [--namespace N]`: `service_label = S`
    /// (and `namespace = N`), each value validated. A name that could end a
    /// string or start another expression is refused here, before any
    /// query exists.
    pub fn service_selector(
        &self,
        service: &str,
        namespace: Option<&str>,
    ) -> Result<Selector, SelectorError> {
        let mut pairs = vec![(self.service_label.clone(), service.to_string())];
        if let Some(ns) = namespace {
            pairs.push(("namespace".to_string(), ns.to_string()));
        }
        Selector::new(pairs)
    }
}

/// Why the capacity series could not be fetched. Each variant names the
/// query (as sent, with the selector filled in).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The config is unusable (see [`CapacityQueries::validate`]).
    #[error("invalid capacity config: {}", render(.0))]
    Config(Vec<FieldError>),
    /// The template cannot take this selector (e.g. no placeholder).
    #[error("capacity.{field}: {reason}")]
    Template {
        /// `cpu`, `memory` or `rps`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A range query failed; `status` is Prometheus's HTTP status and
    /// error type when it answered, or why there was no answer.
    #[error("{resource} query `{query}` (range {start}..{end}) failed: {status}")]
    Query {
        /// `cpu`, `memory` or `rps`.
        resource: &'static str,
        /// The PromQL sent.
        query: String,
        /// Start of the failing chunk, Unix seconds.
        start: i64,
        /// End of the failing chunk, Unix seconds.
        end: i64,
        /// E.g. `HTTP 422 (execution): query processing would load too many samples`.
        status: String,
        /// The client's error.
        #[source]
        source: prometheus_http_query::Error,
    },
    /// Prometheus answered a range query with something other than a range
    /// vector.
    #[error("{resource} query `{query}` returned a {kind}, expected a range vector (matrix)")]
    NotAMatrix {
        /// `cpu`, `memory` or `rps`.
        resource: &'static str,
        /// The PromQL sent.
        query: String,
        /// What came back.
        kind: &'static str,
    },
    /// A required query (CPU or memory) returned no samples over the whole
    /// lookback: wrong labels or metric names, most likely.
    #[error(
        "{resource} query `{query}` returned no samples over the last {lookback}; \
         check the metric names and that the selector matches"
    )]
    NoData {
        /// `cpu` or `memory`.
        resource: &'static str,
        /// The PromQL sent.
        query: String,
        /// The range read.
        lookback: HumanDuration,
    },
}

fn render(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The fetched series of one service (owned; borrow them as
/// [`CapacitySeries`] with [`FetchedCapacity::series`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedCapacity {
    /// CPU used, cores, in time order, one sample per step at most.
    pub cpu_cores: Vec<Sample>,
    /// Memory used, bytes.
    pub memory_bytes: Vec<Sample>,
    /// Request rate; `None` when not configured or Prometheus has none.
    pub requests_per_second: Option<Vec<Sample>>,
    /// The queries sent, as rendered (`cpu`, `memory`, `rps`), for the
    /// report's "how was this measured".
    pub queries: BTreeMap<&'static str, String>,
    /// Range read: first and last step (ms).
    pub range: (TimestampMs, TimestampMs),
}

impl FetchedCapacity {
    /// The view [`super::plan_capacity`] takes.
    pub fn series(&self) -> CapacitySeries<'_> {
        CapacitySeries {
            cpu_cores: &self.cpu_cores,
            memory_bytes: &self.memory_bytes,
            requests_per_second: self.requests_per_second.as_deref(),
        }
    }
}

/// Fetches `lookback` (default 30 days) of CPU, memory and request rate for
/// the service matched by `service`, ending at the last whole step before
/// now.
pub async fn fetch_capacity_series(
    client: &Client,
    queries: &CapacityQueries,
    service: &Selector,
) -> Result<FetchedCapacity, FetchError> {
    fetch_capacity_series_until(client, queries, service, now_ms()).await
}

/// Like [`fetch_capacity_series`], ending at `end` (aligned down to the
/// step): for replaying a past window and for tests.
pub async fn fetch_capacity_series_until(
    client: &Client,
    queries: &CapacityQueries,
    service: &Selector,
    end: TimestampMs,
) -> Result<FetchedCapacity, FetchError> {
    queries.validate().map_err(FetchError::Config)?;
    let step = queries.step.as_millis_i64();
    let end = end - end.rem_euclid(step);
    let start = end - queries.lookback.as_millis_i64();
    let span = Span { start, end };

    let mut rendered = BTreeMap::new();
    let mut render = |field: &'static str, t: &QueryTemplate| {
        t.check_against(service)
            .map_err(|reason| FetchError::Template { field, reason })?;
        let q = t.render(service);
        rendered.insert(field, q.clone());
        Ok::<_, FetchError>(q)
    };
    let cpu_q = render("cpu", &queries.cpu)?;
    let mem_q = render("memory", &queries.memory)?;
    let rps_q = queries.rps.as_ref().map(|t| render("rps", t)).transpose()?;

    let required = |resource, query: &String, samples: Vec<Sample>| {
        if samples.is_empty() {
            Err(FetchError::NoData {
                resource,
                query: query.clone(),
                lookback: queries.lookback,
            })
        } else {
            Ok(samples)
        }
    };
    let cpu = fetch_range(client, "cpu", &cpu_q, span, step).await?;
    let cpu = required("cpu", &cpu_q, cpu)?;
    let mem = fetch_range(client, "memory", &mem_q, span, step).await?;
    let mem = required("memory", &mem_q, mem)?;
    let rps = match &rps_q {
        Some(q) => {
            let s = fetch_range(client, "rps", q, span, step).await?;
            if s.is_empty() {
                tracing::info!(query = %q, "The request-rate query returned no samples; planning without request rate.");
                None
            } else {
                Some(s)
            }
        }
        None => None,
    };
    Ok(FetchedCapacity {
        cpu_cores: cpu,
        memory_bytes: mem,
        requests_per_second: rps,
        queries: rendered,
        range: (start, end),
    })
}

/// An inclusive range of step-aligned times (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: TimestampMs,
    end: TimestampMs,
}

/// Splits `span` into consecutive, non-overlapping ranges of at most
/// `max_points` steps each (both ends inclusive, as Prometheus counts).
fn chunks(span: Span, step: i64, max_points: i64) -> Vec<Span> {
    let width = step.saturating_mul(max_points.max(1) - 1);
    let mut out = Vec::new();
    let mut start = span.start;
    while start <= span.end {
        let end = start.saturating_add(width).min(span.end);
        out.push(Span { start, end });
        start = end.saturating_add(step);
    }
    out
}

/// Reads `query` over `span` chunk by chunk and returns the per-timestamp
/// sum of the returned series, in time order without duplicates.
async fn fetch_range(
    client: &Client,
    resource: &'static str,
    query: &str,
    span: Span,
    step: i64,
) -> Result<Vec<Sample>, FetchError> {
    // BTreeMap: time order and one value per timestamp, whatever order or
    // overlap the chunks come back in.
    let mut sums: BTreeMap<TimestampMs, f64> = BTreeMap::new();
    let mut dropped = 0u64;
    for chunk in chunks(span, step, MAX_POINTS_PER_QUERY) {
        let (start, end) = (chunk.start / 1000, chunk.end / 1000);
        let answer = client
            .query_range(query, start, end, (step / 1000) as f64)
            // POST: long queries do not hit URL length limits of proxies.
            .post()
            .await
            .map_err(|source| FetchError::Query {
                resource,
                query: query.to_string(),
                start,
                end,
                status: status_of(&source),
                source,
            })?;
        let matrix = match answer.into_inner().0 {
            Data::Matrix(m) => m,
            Data::Vector(_) => return Err(not_matrix(resource, query, "instant vector")),
            Data::Scalar(_) => return Err(not_matrix(resource, query, "scalar")),
        };
        for range_vector in matrix {
            let (_, raw) = range_vector.into_inner();
            for s in raw {
                let t = (s.timestamp() * 1000.0).round();
                let v = s.value();
                // Stale markers and divisions by zero are NaN/Inf; a time
                // outside the chunk would be a server bug. Neither is a sample.
                if !(v.is_finite() && t.is_finite())
                    || t < chunk.start as f64
                    || t > chunk.end as f64
                {
                    dropped += 1;
                    continue;
                }
                *sums.entry(t as i64).or_insert(0.0) += v;
            }
        }
    }
    if dropped > 0 {
        tracing::debug!(
            query,
            dropped,
            "Dropped non-finite or out-of-range samples."
        );
    }
    Ok(sums.into_iter().map(|(t, v)| Sample { t, v }).collect())
}

fn not_matrix(resource: &'static str, query: &str, kind: &'static str) -> FetchError {
    FetchError::NotAMatrix {
        resource,
        query: query.to_string(),
        kind,
    }
}

/// What went wrong in words: Prometheus's HTTP status and error type when
/// it answered (the status follows from the type, per the HTTP API docs),
/// the HTTP status or transport error otherwise.
fn status_of(error: &prometheus_http_query::Error) -> String {
    use prometheus_http_query::error::PrometheusErrorType as T;
    match error {
        prometheus_http_query::Error::Prometheus(e) => {
            let code = match e.error_type() {
                T::BadData => "HTTP 400",
                T::Execution => "HTTP 422",
                T::Timeout | T::Canceled | T::Unavailable => "HTTP 503",
                T::Internal => "HTTP 500",
                T::NotFound => "HTTP 404",
                _ => "HTTP error",
            };
            format!("{code} ({}): {}", e.error_type(), e.message())
        }
        prometheus_http_query::Error::Client(e) => match e.inner() {
            Some(r) if r.is_timeout() => format!("timed out: {r}"),
            Some(r) => match r.status() {
                Some(s) => format!("HTTP {}: {}", s.as_u16(), crate::telemetry::error_chain(r)),
                None => format!("no answer: {}", crate::telemetry::error_chain(r)),
            },
            None => format!("unreadable answer: {e}"),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    #[test]
    fn thirty_days_at_a_minute_is_split_within_the_point_limit() {
        let step = 60 * S;
        let span = Span {
            start: 0,
            end: 30 * 86_400 * S,
        };
        let parts = chunks(span, step, MAX_POINTS_PER_QUERY);
        assert_eq!(parts.len(), 4, "43,201 points need 4 queries");
        assert_eq!(parts[0].start, span.start);
        assert_eq!(parts[3].end, span.end);
        for w in parts.windows(2) {
            assert_eq!(w[1].start, w[0].end + step, "gap or overlap");
        }
        for p in &parts {
            assert!((p.end - p.start) / step < MAX_POINTS_PER_QUERY);
        }
    }

    #[test]
    fn defaults_validate_and_bad_settings_name_their_field() {
        CapacityQueries::default()
            .validate()
            .expect("defaults are valid");
        let mut q = CapacityQueries {
            cpu: QueryTemplate::new("sum(rate(x[5m]))"),
            step: HumanDuration(Duration::from_millis(1500)),
            ..CapacityQueries::default()
        };
        let paths: Vec<String> = q
            .validate()
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, vec!["capacity.cpu", "capacity.step"]);
        q = CapacityQueries {
            step: HumanDuration(Duration::from_secs(1)),
            ..CapacityQueries::default()
        };
        let errs = q.validate().expect_err("30d at 1s is too many points");
        assert_eq!(errs[0].path, "capacity.lookback");
        q = CapacityQueries {
            service_label: "__name__".into(),
            ..CapacityQueries::default()
        };
        assert_eq!(
            q.validate().expect_err("reserved")[0].path,
            "capacity.service_label"
        );
    }

    #[test]
    fn service_selector_refuses_injection() {
        let q = CapacityQueries::default();
        let sel = q.service_selector("cart", Some("shop")).expect("valid");
        assert_eq!(
            q.memory.render(&sel),
            r#"sum(container_memory_working_set_bytes{container="cart",namespace="shop",container!="",container!="POD"})"#
        );
        assert!(q
            .service_selector(r#"cart"} or vector(1) or up{a=""#, None)
            .is_err());
    }
}
