//! `/ui/`: the incident list — open incidents first, most severe first,
//! with filters, a text search and auto-refresh.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::Viewer;
use super::page::{self, Nav};
use super::{incident_path, UiState, UI_PATH};
use crate::incident::{Incident, IncidentFilter, IncidentId, IncidentState, Severity};
use crate::publish::approvals::{ActionState, PendingAction};
use crate::signal::{now_ms, TimestampMs};

/// Most open incidents listed (all of them in practice).
const MAX_OPEN: usize = 500;
/// Most resolved incidents listed, newest first.
const MAX_RESOLVED: usize = 200;

/// The list's filters, as the form sends them. Unknown values mean "any":
/// a stale bookmark still shows a list.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    state: Option<String>,
    severity: Option<String>,
    q: Option<String>,
}

/// Phases an open incident can be in (see [`page::phase`]), then resolved.
const PHASES: [&str; 5] = ["open", "remediating", "remediated", "escalated", "resolved"];

/// Parsed filters.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Filters {
    state: Option<IncidentState>,
    /// A phase finer than the stored state (`remediating`...).
    phase: Option<&'static str>,
    severity: Option<Severity>,
    q: String,
}

impl Filters {
    fn from_query(q: &ListQuery) -> Filters {
        Filters {
            state: match q.state.as_deref() {
                Some("resolved") => Some(IncidentState::Resolved),
                Some(p) if PHASES.contains(&p) => Some(IncidentState::Open),
                _ => None,
            },
            phase: PHASES
                .iter()
                .copied()
                .find(|p| q.state.as_deref() == Some(*p)),
            severity: match q.severity.as_deref() {
                Some("warning") => Some(Severity::Warning),
                Some("critical") => Some(Severity::Critical),
                _ => None,
            },
            q: q.q
                .as_deref()
                .unwrap_or_default()
                .trim()
                .chars()
                .take(200)
                .collect(),
        }
    }

    /// True when `incident` passes the severity and text filters (the
    /// state filter is applied by the store query).
    fn matches(&self, incident: &Incident) -> bool {
        if self.severity.is_some_and(|s| s != incident.severity) {
            return false;
        }
        if self.q.is_empty() {
            return true;
        }
        let needle = self.q.to_lowercase();
        let id = incident.id.map(|i| format!("#{i}")).unwrap_or_default();
        std::iter::once(id.as_str())
            .chain(std::iter::once(incident.cluster.as_str()))
            .chain(incident.group.values().map(String::as_str))
            .chain(incident.signals.iter().map(|s| s.series.signal.as_str()))
            .chain(incident.alerts.iter().map(|a| a.name.as_str()))
            .any(|hay| hay.to_lowercase().contains(&needle))
    }
}

/// Open first (critical first, then newest), then resolved (newest first).
pub(crate) fn sort_for_list(incidents: &mut [Incident]) {
    incidents.sort_by(|a, b| {
        let open = |i: &Incident| i.state == IncidentState::Open;
        open(b)
            .cmp(&open(a))
            .then_with(|| {
                if open(a) {
                    b.severity.cmp(&a.severity)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then_with(|| b.opened_at.cmp(&a.opened_at))
            .then_with(|| b.id.cmp(&a.id))
    });
}

/// `GET /ui/`
pub(crate) async fn page(
    State(ui): State<UiState>,
    Extension(viewer): Extension<Viewer>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = query.map(|q| q.0).unwrap_or_default();
    let filters = Filters::from_query(&query);
    let state = filters.state;
    let loaded = super::blocking(&ui.app.store, move |s| {
        let mut items = Vec::new();
        for (st, limit) in [
            (IncidentState::Open, MAX_OPEN),
            (IncidentState::Resolved, MAX_RESOLVED),
        ] {
            if state.is_none_or(|want| want == st) {
                let filter = IncidentFilter {
                    state: Some(st),
                    limit,
                    ..IncidentFilter::default()
                };
                items.extend(s.list_incidents(&filter)?.items);
            }
        }
        let actions = s.list_actions(None, 500)?;
        Ok((items, actions))
    })
    .await;
    let (mut incidents, actions) = match loaded {
        Ok(v) => v,
        Err(e) => return super::internal_error(&e, &viewer),
    };
    let now = now_ms();
    let mut by_incident: HashMap<IncidentId, Vec<&PendingAction>> = HashMap::new();
    for a in &actions {
        by_incident.entry(a.incident_id).or_default().push(a);
    }
    let total = incidents.len();
    incidents.retain(|i| {
        let mine = by_incident
            .get(&i.id.unwrap_or_default())
            .map_or(&[][..], Vec::as_slice);
        filters.matches(i) && filters.phase.is_none_or(|p| p == page::phase(i, mine))
    });
    sort_for_list(&mut incidents);
    let body = render(&filters, &incidents, total, &by_incident, now);
    page::html_response(
        StatusCode::OK,
        page::layout("Incidents", Some(&viewer), Nav::Incidents, body),
    )
}

fn render(
    filters: &Filters,
    incidents: &[Incident],
    total: usize,
    actions: &HashMap<IncidentId, Vec<&PendingAction>>,
    now: TimestampMs,
) -> Markup {
    let open = incidents
        .iter()
        .filter(|i| i.state == IncidentState::Open)
        .count();
    let option = |value: &str, text: &str, selected: bool| {
        html! { option value=(value) selected[selected] { (text) } }
    };
    html! {
        h1 { "Incidents" }
        form.filters method="get" action={ (UI_PATH) "/" } role="search" aria-label="Filter incidents" {
            div {
                label for="f-state" { "State" }
                select #f-state name="state" {
                    (option("", "any", filters.phase.is_none()))
                    @for p in PHASES {
                        (option(p, p, filters.phase == Some(p)))
                    }
                }
            }
            div {
                label for="f-severity" { "Severity" }
                select #f-severity name="severity" {
                    (option("", "any", filters.severity.is_none()))
                    (option("critical", "critical", filters.severity == Some(Severity::Critical)))
                    (option("warning", "warning", filters.severity == Some(Severity::Warning)))
                }
            }
            div.grow {
                label for="f-q" { "Search" }
                input #f-q type="search" name="q" value=(filters.q)
                    placeholder="service, namespace, signal, alert, #id";
            }
            button type="submit" { "Filter" }
        }
        div.refresh {
            label {
                input #auto-refresh type="checkbox" checked;
                " Refresh every 15 s"
            }
            span #refresh-status role="status" aria-live="polite" {}
        }
        section #incident-list aria-labelledby="list-heading" data-refresh="15" {
            h2 #list-heading .count {
                (open) " open · " (incidents.len()) " shown of " (total)
            }
            @if incidents.is_empty() {
                p.empty { "No incidents match." }
            } @else {
                table.incidents {
                    thead {
                        tr {
                            th scope="col" { "Incident" }
                            th scope="col" { "Severity" }
                            th scope="col" { "State" }
                            th scope="col" { "Service / namespace" }
                            th scope="col" { "What" }
                            th scope="col" { "Age" }
                            th scope="col" { "Members" }
                        }
                    }
                    tbody {
                        @for i in incidents {
                            (row(i, actions, now))
                        }
                    }
                }
            }
        }
    }
}

fn row(
    i: &Incident,
    actions: &HashMap<IncidentId, Vec<&PendingAction>>,
    now: TimestampMs,
) -> Markup {
    let id = i.id.unwrap_or_default();
    let service = i.group_label("service");
    let namespace = i.group_label("namespace");
    let what = match i.headline() {
        Some(h) => format!(
            "{} {} {}",
            h.series.signal,
            if h.peak.score < 0.0 { "down" } else { "up" },
            page::score(h.peak.score)
        ),
        None => match i.alerts.first() {
            Some(a) => format!("alert {}", a.name),
            None => String::new(),
        },
    };
    let alerts = i.alerts.len();
    let signals = i.signals.len();
    let mine = actions.get(&id).map_or(&[][..], Vec::as_slice);
    let pending = mine
        .iter()
        .filter(|a| a.state == ActionState::Pending && a.expires_at >= now)
        .count();
    html! {
        tr class={ "incident state-" (i.state.as_str()) } data-id=(id) {
            td data-label="Incident" {
                a href=(incident_path(id)) { "#" (id) " " (i.subject()) }
                @if pending > 0 {
                    " " (page::word_badge(&format!("{pending} awaiting approval"), "awaiting"))
                }
            }
            td data-label="Severity" { (page::severity_badge(i.severity)) }
            td data-label="State" { (page::phase_badge(page::phase(i, mine))) }
            td data-label="Service / namespace" {
                (service.unwrap_or("—")) " / " (namespace.unwrap_or("—"))
            }
            td data-label="What" { (what) }
            td data-label="Age" {
                span title={ "opened " (crate::signal::format_ts(i.opened_at)) } {
                    (page::age(i.opened_at, now))
                }
                @if let Some(r) = i.resolved_at {
                    br; small { "resolved " (page::age(r, now)) " ago" }
                }
            }
            td data-label="Members" {
                (signals + alerts)
                small {
                    " (" (signals) " signal" @if signals != 1 { "s" }
                    ", " (alerts) " alert" @if alerts != 1 { "s" } ")"
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn incident(id: i64, state: IncidentState, severity: Severity, service: &str) -> Incident {
        let group: BTreeMap<String, String> = [
            ("namespace".to_string(), "shop".to_string()),
            ("service".to_string(), service.to_string()),
        ]
        .into();
        Incident {
            id: Some(id),
            cluster: "prod".into(),
            group,
            state,
            severity,
            opened_at: 1_000 * id,
            last_anomaly_at: 1_000 * id,
            resolved_at: (state == IncidentState::Resolved).then_some(1_000 * id + 500),
            anomaly_count: 1,
            signals: Vec::new(),
            alerts: Vec::new(),
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: None,
            timeline: Vec::new(),
        }
    }

    #[test]
    fn open_incidents_come_first_most_severe_first() {
        use IncidentState::*;
        use Severity::*;
        let mut list = vec![
            incident(1, Resolved, Critical, "a"),
            incident(2, Open, Warning, "b"),
            incident(3, Open, Critical, "c"),
            incident(4, Resolved, Warning, "d"),
            incident(5, Open, Warning, "e"),
        ];
        sort_for_list(&mut list);
        let ids: Vec<i64> = list.iter().filter_map(|i| i.id).collect();
        assert_eq!(ids, [3, 5, 2, 4, 1]);
    }

    #[test]
    fn filters_match_severity_and_text() {
        let q = |severity: Option<&str>, text: &str| {
            Filters::from_query(&ListQuery {
                state: Some("open".into()),
                severity: severity.map(str::to_string),
                q: Some(text.to_string()),
            })
        };
        let cart = incident(7, IncidentState::Open, Severity::Warning, "Cart");
        assert!(q(None, "").matches(&cart));
        assert!(q(None, "cart").matches(&cart), "case-insensitive");
        assert!(q(None, "#7").matches(&cart));
        assert!(q(None, "shop").matches(&cart));
        assert!(!q(None, "auth").matches(&cart));
        assert!(!q(Some("critical"), "").matches(&cart));
        assert!(q(Some("bogus"), "").matches(&cart), "unknown value = any");
    }

    #[test]
    fn rows_escape_what_sources_wrote() {
        let evil = incident(
            9,
            IncidentState::Open,
            Severity::Warning,
            "<img src=x onerror=alert(1)>",
        );
        let html = row(&evil, &HashMap::new(), 20_000).into_string();
        assert!(html.contains(">OPEN<"), "phase as text: {html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img"), "{html}");
    }
}
