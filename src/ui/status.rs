//! `/ui/policy` and `/ui/health`: what the gate may do, and whether the
//! daemon itself is well.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};
use regex::Regex;

use super::auth::Viewer;
use super::page::{self, Nav};
use super::{incident_path, KillSwitchView, PolicyView, UiState};
use crate::incident::{IncidentFilter, IncidentId, Setting};
use crate::remediate::record::DecisionRecord;
use crate::signal::now_ms;

/// The store setting that holds the kill switch.
const KILL_SWITCH: &str = "kill_switch";

/// The kill switch as the store keeps it (`on`/`off`, who, why, when).
fn kill_switch_of(s: &Setting) -> KillSwitchView {
    let engaged = matches!(s.value.as_str(), "on" | "true" | "engaged");
    KillSwitchView {
        engaged,
        detail: format!(
            "Turned {} by {} at {}: {}",
            if engaged { "on" } else { "off" },
            s.changed_by,
            crate::signal::format_ts(s.changed_at),
            s.reason
        ),
    }
}

/// Most recent decisions listed on the policy page.
const RECENT_DECISIONS: usize = 50;

/// `GET /ui/policy`
pub(crate) async fn policy(
    State(ui): State<UiState>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let view: Option<PolicyView> = ui.settings.policy.as_ref().map(|rx| rx.borrow().clone());
    let loaded = super::blocking(&ui.app.store, |s| {
        let page = s.list_incidents(&IncidentFilter {
            limit: 200,
            ..IncidentFilter::default()
        })?;
        Ok((page.items, s.setting(KILL_SWITCH)?))
    })
    .await;
    let (incidents, stored_switch) = match loaded {
        Ok(v) => v,
        Err(e) => return super::internal_error(&e, &viewer),
    };
    // What the gate publishes wins; else the switch as the store keeps it.
    let kill_switch = view
        .as_ref()
        .and_then(|v| v.kill_switch.clone())
        .or_else(|| stored_switch.map(|s| kill_switch_of(&s)));
    let mut recent: Vec<(IncidentId, String, &DecisionRecord)> = incidents
        .iter()
        .flat_map(|i| {
            let id = i.id.unwrap_or_default();
            let subject = i.subject();
            i.decisions.iter().map(move |d| (id, subject.clone(), d))
        })
        .collect();
    recent.sort_by_key(|r| std::cmp::Reverse(r.2.at));
    recent.truncate(RECENT_DECISIONS);
    let body = html! {
        h1 { "Policy" }
        section aria-labelledby="kill-heading" {
            h2 #kill-heading { "Kill switch" }
            @match &kill_switch {
                Some(k) => p {
                    @if k.engaged { (page::word_badge("engaged", "kill-engaged")) " No action runs. " }
                    @else { (page::word_badge("off", "kill-off")) " Actions run as the rules allow. " }
                    (k.detail)
                },
                None => p { (page::word_badge("off", "kill-off")) " Never engaged." },
            }
        }
        section aria-labelledby="rules-heading" {
            h2 #rules-heading { "Loaded rules" }
            @match &view {
                None => p.empty { "The policy gate does not publish its rules in this build." },
                Some(v) => {
                    @if let Some(src) = &v.source {
                        p { "From " code { (src) }
                            @if let Some(at) = v.loaded_at { ", loaded " (page::time(at)) } "." }
                    }
                    @if v.rules.is_empty() {
                        p.empty { "No rules: every action is refused (default deny)." }
                    } @else {
                        table.rules {
                            thead { tr {
                                th scope="col" { "Rule" } th scope="col" { "Mode" }
                                th scope="col" { "Verbs" } th scope="col" { "Matches" } th scope="col" { "Limits" }
                            } }
                            tbody {
                                @for r in &v.rules {
                                    tr {
                                        td data-label="Rule" { code { (r.name) } }
                                        td data-label="Mode" { (page::word_badge(&r.mode, "mode")) }
                                        td data-label="Verbs" { (r.verbs.join(", ")) }
                                        td data-label="Matches" { (r.matches) }
                                        td data-label="Limits" { @for l in &r.limits { (l) br; } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="recent-heading" {
            h2 #recent-heading { "Recent decisions" }
            @if recent.is_empty() {
                p.empty { "No decisions recorded on incidents yet." }
            } @else {
                ol.decisions {
                    @for (id, subject, d) in &recent {
                        li {
                            (page::word_badge(d.outcome.as_str(), &format!("outcome-{}", d.outcome.as_str()))) " "
                            (page::time(d.at)) " — "
                            a href=(incident_path(*id)) { "#" (id) " " (subject) }
                            " — rule " code { (d.rule) }
                            @if let Some(a) = &d.action { ": " (a.describe()) }
                            @if let Some(r) = d.reasons.first() { " — " (r) }
                        }
                    }
                }
            }
        }
    };
    page::html_response(
        StatusCode::OK,
        page::layout("Policy", Some(&viewer), Nav::Policy, body),
    )
}

/// Hides credentials in URLs (`scheme://user:pass@host` → `scheme://***@host`)
/// and known secret shapes, so error texts from sources and brokers can be
/// shown.
pub(crate) fn redact(s: &str) -> String {
    static USERINFO: OnceLock<Option<Regex>> = OnceLock::new();
    let text = crate::logs::redact_secrets(s).into_owned();
    match USERINFO.get_or_init(|| Regex::new(r"://[^/@\s]+@").ok()) {
        Some(re) => re.replace_all(&text, "://***@").into_owned(),
        None => text,
    }
}

/// `GET /ui/health`
pub(crate) async fn health(
    State(ui): State<UiState>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let (mut ready, mut reasons, sources) = ui.app.health.readiness();
    let mut publishers = ui.app.health.publishers();
    let names: Vec<String> = publishers.iter().map(|p| p.sink.clone()).collect();
    let probed = super::blocking(&ui.app.store, move |s| {
        s.ping()?;
        Ok(names
            .iter()
            .map(|n| s.outbox_depth(n).ok().flatten())
            .collect::<Vec<_>>())
    })
    .await;
    match probed {
        Ok(depths) => {
            for (p, d) in publishers.iter_mut().zip(depths) {
                if let Some((depth, max)) = d {
                    p.outbox_depth = depth;
                    p.outbox_max_events = max;
                }
            }
        }
        Err(_) => {
            ready = false;
            reasons.push("store does not answer".into());
        }
    }
    let standby = reasons.iter().find(|r| r.starts_with("standby"));
    let leader: Markup = match standby {
        Some(r) => html! { (page::word_badge("standby", "standby")) " " (r) },
        None => {
            html! { (page::word_badge("active", "up")) " This replica runs the pipeline (leader, or the only instance)." }
        }
    };
    let now = now_ms();
    let body = html! {
        h1 { "Health" }
        p {
            @if ready { (page::word_badge("ready", "up")) " aiopsd is ready." }
            @else { (page::word_badge("not ready", "down")) " aiopsd is not ready:" }
        }
        @if !reasons.is_empty() {
            ul.reasons { @for r in &reasons { li { (redact(r)) } } }
        }
        p { strong { "Leader: " } (leader) }
        section aria-labelledby="sources-heading" {
            h2 #sources-heading { "Sources" }
            @if sources.is_empty() {
                p.empty { "No sources registered." }
            } @else {
                table.sources {
                    thead { tr {
                        th scope="col" { "Source" } th scope="col" { "State" } th scope="col" { "Last poll" }
                        th scope="col" { "Failures in a row" } th scope="col" { "Last error" }
                    } }
                    tbody {
                        @for s in &sources {
                            tr {
                                td data-label="Source" { (s.name) }
                                td data-label="State" {
                                    @if s.up { (page::word_badge("up", "up")) } @else { (page::word_badge("down", "down")) }
                                    @if !s.backfilled { " " (page::word_badge("backfilling", "awaiting")) }
                                }
                                td data-label="Last poll" { (s.last_success.as_deref().unwrap_or("never")) }
                                td data-label="Failures in a row" { (s.consecutive_failures) }
                                td data-label="Last error" { (redact(s.last_error.as_deref().unwrap_or("—"))) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="publishers-heading" {
            h2 #publishers-heading { "Event publishers and outbox" }
            @if publishers.is_empty() {
                p.empty { "No event sink is configured; nothing queues in the outbox." }
            } @else {
                table.publishers {
                    thead { tr {
                        th scope="col" { "Sink" } th scope="col" { "Broker" } th scope="col" { "State" }
                        th scope="col" { "Outbox depth" } th scope="col" { "Last error" }
                    } }
                    tbody {
                        @for p in &publishers {
                            tr {
                                td data-label="Sink" { (p.sink) }
                                td data-label="Broker" { (redact(&p.broker)) }
                                td data-label="State" {
                                    @if p.connected { (page::word_badge("connected", "up")) } @else { (page::word_badge("disconnected", "down")) }
                                    @if let Some(since) = &p.since { " since " (since) }
                                }
                                td data-label="Outbox depth" { (p.outbox_depth) " of " (p.outbox_max_events) }
                                td data-label="Last error" { (redact(p.last_error.as_deref().unwrap_or("—"))) }
                            }
                        }
                    }
                }
            }
        }
        p.small { "Checked " (page::time(now)) ". Machine-readable: " a href="/readyz" { "/readyz" } ", " a href="/metrics" { "/metrics" } "." }
    };
    page::html_response(
        StatusCode::OK,
        page::layout("Health", Some(&viewer), Nav::Health, body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(
            redact("cannot connect to mqtts://aiopsd:hunter2@broker:8883"),
            "cannot connect to mqtts://***@broker:8883"
        );
        assert_eq!(
            redact("http://prometheus:9090 refused"),
            "http://prometheus:9090 refused"
        );
    }
}
