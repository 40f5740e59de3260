//! `/api/v1/incidents`: list, detail and Markdown report.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{parse_id, with_store, AppState};
use crate::incident::report::render_markdown_with_actions;
use crate::incident::{Incident, IncidentFilter, IncidentId, IncidentState, Severity};
use crate::signal::{format_ts, now_ms, TimestampMs};

/// Prefix of every incident URL; the summaries' links are built from it.
pub(super) const INCIDENTS_PATH: &str = "/api/v1/incidents";

/// Query parameters of the list endpoint, as sent.
///
/// Everything arrives as text and is parsed here, so a bad value gets a
/// JSON 400 naming the parameter rather than axum's generic rejection.
/// Unknown parameters are refused: a typo such as `servce=cart` would
/// otherwise silently return every incident.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    state: Option<String>,
    service: Option<String>,
    namespace: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    before_id: Option<String>,
}

impl ListParams {
    /// Checks every parameter and builds the store filter.
    fn to_filter(&self) -> Result<IncidentFilter, ApiError> {
        let state = match given(&self.state) {
            None => None,
            Some("open") => Some(IncidentState::Open),
            Some("resolved") => Some(IncidentState::Resolved),
            Some(other) => {
                return Err(ApiError::InvalidParam {
                    name: "state",
                    reason: format!("{other:?} is not `open` or `resolved`"),
                })
            }
        };
        let since = given(&self.since)
            .map(|v| parse_time("since", v))
            .transpose()?;
        let until = given(&self.until)
            .map(|v| parse_time("until", v))
            .transpose()?;
        if let (Some(s), Some(u)) = (since, until) {
            if s > u {
                return Err(ApiError::InvalidParam {
                    name: "since",
                    reason: "must not be later than `until`".into(),
                });
            }
        }
        let limit = match given(&self.limit) {
            None => 0,
            Some(v) => v.parse::<usize>().map_err(|_| ApiError::InvalidParam {
                name: "limit",
                reason: format!("{v:?} is not a whole number (1 to 500; 0 means 50)"),
            })?,
        };
        let before_id = given(&self.before_id)
            .map(|v| {
                v.parse::<IncidentId>().map_err(|_| ApiError::InvalidParam {
                    name: "before_id",
                    reason: format!("{v:?} is not an incident id"),
                })
            })
            .transpose()?;
        Ok(IncidentFilter {
            state,
            service: given(&self.service).map(str::to_string),
            namespace: given(&self.namespace).map(str::to_string),
            since,
            until,
            limit,
            before_id,
        })
    }
}

/// A parameter's value, treating `?service=` like an absent parameter, as
/// forms and scripts that build URLs from empty fields expect.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// Parses an RFC 3339 UTC time (`2024-05-01T12:00:00Z`; the `T`, the `Z`
/// and fractions are optional) into data-time milliseconds.
fn parse_time(name: &'static str, raw: &str) -> Result<TimestampMs, ApiError> {
    let invalid = |reason: String| ApiError::InvalidParam { name, reason };
    let t = humantime::parse_rfc3339_weak(raw).map_err(|e| {
        invalid(format!(
            "{raw:?} is not an RFC 3339 UTC time ({e}); write e.g. 2024-05-01T12:00:00Z"
        ))
    })?;
    let since_epoch = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| invalid(format!("{raw:?} is before 1970")))?;
    i64::try_from(since_epoch.as_millis()).map_err(|_| invalid(format!("{raw:?} is too far ahead")))
}

/// One page of the list endpoint.
#[derive(Debug, Serialize)]
struct ListResponse {
    items: Vec<IncidentSummary>,
    /// Pass as `before_id` to get the next page; `null` on the last page.
    next_before_id: Option<IncidentId>,
}

/// What a list shows of an incident; the full evidence is one link away.
#[derive(Debug, Serialize)]
struct IncidentSummary {
    id: IncidentId,
    subject: String,
    cluster: String,
    group: BTreeMap<String, String>,
    state: IncidentState,
    severity: Severity,
    opened_at: String,
    last_anomaly_at: String,
    resolved_at: Option<String>,
    anomaly_count: u64,
    /// Names of the signals involved, in the order they joined, each once.
    signals: Vec<String>,
    headline: Option<Headline>,
    links: Links,
}

/// The most deviant signal of an incident.
#[derive(Debug, Serialize)]
struct Headline {
    signal: String,
    series: String,
    direction: &'static str,
    value: f64,
    expected: f64,
    score: f64,
    at: String,
}

#[derive(Debug, Serialize)]
struct Links {
    #[serde(rename = "self")]
    this: String,
    report: String,
}

impl IncidentSummary {
    /// `None` for an incident without an id, which the store never returns.
    fn of(incident: &Incident) -> Option<Self> {
        let id = incident.id?;
        let mut signals: Vec<String> = Vec::new();
        for s in &incident.signals {
            if !signals.contains(&s.series.signal) {
                signals.push(s.series.signal.clone());
            }
        }
        let headline = incident.headline().map(|h| Headline {
            signal: h.series.signal.clone(),
            series: h.series.to_string(),
            direction: if h.peak.score < 0.0 { "down" } else { "up" },
            value: h.peak.value,
            expected: h.peak.expected,
            score: h.peak.score,
            at: format_ts(h.peak.t),
        });
        Some(IncidentSummary {
            id,
            subject: incident.subject(),
            cluster: incident.cluster.clone(),
            group: incident.group.clone(),
            state: incident.state,
            severity: incident.severity,
            opened_at: format_ts(incident.opened_at),
            last_anomaly_at: format_ts(incident.last_anomaly_at),
            resolved_at: incident.resolved_at.map(format_ts),
            anomaly_count: incident.anomaly_count,
            signals,
            headline,
            links: Links {
                this: format!("{INCIDENTS_PATH}/{id}"),
                report: format!("{INCIDENTS_PATH}/{id}/report.md"),
            },
        })
    }
}

/// `GET /api/v1/incidents`
pub(super) async fn list_incidents(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(params) = params.map_err(|r| ApiError::BadRequest(r.body_text()))?;
    let filter = params.to_filter()?;
    let page = with_store(&state.store, move |s| s.list_incidents(&filter)).await?;
    Ok(Json(ListResponse {
        items: page.items.iter().filter_map(IncidentSummary::of).collect(),
        next_before_id: page.next_before_id,
    }))
}

/// Loads one incident or answers 404.
async fn find(state: &AppState, raw_id: &str) -> Result<Incident, ApiError> {
    let id: IncidentId = parse_id(raw_id, "an incident id")?;
    with_store(&state.store, move |s| s.get_incident(id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("incident {id} does not exist")))
}

/// `GET /api/v1/incidents/{id}`: the incident with all its evidence.
pub(super) async fn get_incident(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Incident>, ApiError> {
    Ok(Json(find(&state, &id).await?))
}

/// `GET /api/v1/incidents/{id}/report.md`
pub(super) async fn get_report(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let incident = find(&state, &id).await?;
    let actions = match incident.id {
        Some(id) => with_store(&state.store, move |s| s.actions_for_incident(id)).await?,
        None => Vec::new(),
    };
    Ok((
        [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
        render_markdown_with_actions(&incident, &actions, now_ms()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut ListParams)) -> Result<IncidentFilter, ApiError> {
        let mut p = ListParams::default();
        f(&mut p);
        p.to_filter()
    }

    fn bad_param(r: Result<IncidentFilter, ApiError>) -> &'static str {
        match r {
            Err(ApiError::InvalidParam { name, .. }) => name,
            other => panic!("expected InvalidParam, got {other:?}"),
        }
    }

    #[test]
    fn parameters_parse_into_a_filter() {
        let f = params(|p| {
            p.state = Some("resolved".into());
            p.service = Some("cart".into());
            p.namespace = Some(String::new());
            p.since = Some("2023-11-14T22:13:20Z".into());
            p.until = Some("2023-11-14 22:13:21".into());
            p.limit = Some("7".into());
            p.before_id = Some("99".into());
        })
        .expect("valid");
        assert_eq!(f.state, Some(IncidentState::Resolved));
        assert_eq!(f.service.as_deref(), Some("cart"));
        assert_eq!(f.namespace, None);
        assert_eq!(f.since, Some(1_700_000_000_000));
        assert_eq!(f.until, Some(1_700_000_001_000));
        assert_eq!((f.limit, f.before_id), (7, Some(99)));
    }

    #[test]
    fn each_bad_parameter_is_named() {
        assert_eq!(
            bad_param(params(|p| p.state = Some("closed".into()))),
            "state"
        );
        assert_eq!(
            bad_param(params(|p| p.since = Some("yesterday".into()))),
            "since"
        );
        assert_eq!(
            bad_param(params(|p| p.until = Some("2023-13-01T00:00:00Z".into()))),
            "until"
        );
        assert_eq!(bad_param(params(|p| p.limit = Some("-1".into()))), "limit");
        assert_eq!(
            bad_param(params(|p| p.before_id = Some("x".into()))),
            "before_id"
        );
        assert_eq!(
            bad_param(params(|p| {
                p.since = Some("2024-01-02T00:00:00Z".into());
                p.until = Some("2024-01-01T00:00:00Z".into());
            })),
            "since"
        );
    }
}
