//! `/ui/incidents/{id}`: one incident, read top to bottom in a minute —
//! what is wrong and since when (summary), what needs a decision, what
//! happened (timeline), the evidence (charts, alerts, diagnosis), what
//! aiopsd decided and did (decisions, actions), and the verdict form.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;

use super::auth::Viewer;
use super::chart::{self, ChartSpec, PeakMark};
use super::page::{self, Nav};
use super::{Feedback, UiState, UI_PATH};
use crate::diagnose::Diagnosis;
use crate::incident::report::render_markdown_with_actions;
use crate::incident::{AlertStatus, Incident, IncidentId, IncidentState, SignalEvidence};
use crate::publish::approvals::{ActionState, PendingAction};
use crate::remediate::plan::PreState;
use crate::remediate::record::{DecisionRecord, ExecState};
use crate::signal::{now_ms, TimestampMs};

/// Most characters of `by` and `reason` (the store's own limit).
const MAX_TEXT: usize = 1000;

/// `?notice=` after a form.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageQuery {
    notice: Option<String>,
}

/// Loads an incident and its actions; `Ok(None)` when it does not exist.
async fn load(
    ui: &UiState,
    id: IncidentId,
) -> Result<Option<(Incident, Vec<PendingAction>)>, super::UiError> {
    super::blocking(&ui.app.store, move |s| {
        let Some(incident) = s.get_incident(id)? else {
            return Ok(None);
        };
        let mut actions: Vec<PendingAction> = s
            .list_actions(None, 500)?
            .into_iter()
            .filter(|a| a.incident_id == id)
            .collect();
        actions.sort_by_key(|a| a.id);
        Ok(Some((incident, actions)))
    })
    .await
}

fn not_found(raw: &str, viewer: &Viewer) -> Response {
    let message = match raw.parse::<IncidentId>() {
        Ok(id) => format!("There is no incident #{id}."),
        Err(_) => "That is not an incident number.".to_string(),
    };
    page::error_page(StatusCode::NOT_FOUND, "Not found", &message, Some(viewer))
}

/// `GET /ui/incidents/{id}`
pub(crate) async fn page(
    State(ui): State<UiState>,
    Extension(viewer): Extension<Viewer>,
    Path(raw): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(id) = raw.parse::<IncidentId>() else {
        return not_found(&raw, &viewer);
    };
    let (incident, actions) = match load(&ui, id).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(&raw, &viewer),
        Err(e) => return super::internal_error(&e, &viewer),
    };
    let notice = query.ok().and_then(|q| q.0.notice);
    let ctx = Ctx {
        viewer: &viewer,
        now: now_ms(),
        can_verdict: ui.settings.record_verdict.is_some(),
    };
    let title = format!("#{id} {}", incident.subject());
    let body = render(&incident, &actions, notice.as_deref(), &ctx);
    page::html_response(
        StatusCode::OK,
        page::layout(&title, Some(&viewer), Nav::Incidents, body),
    )
}

/// `GET /ui/incidents/{id}/report.md`: the same Markdown as the API's
/// report, as a download for a browser session.
pub(crate) async fn report(
    State(ui): State<UiState>,
    Extension(viewer): Extension<Viewer>,
    Path(raw): Path<String>,
) -> Response {
    let Ok(id) = raw.parse::<IncidentId>() else {
        return not_found(&raw, &viewer);
    };
    let found = super::blocking(&ui.app.store, move |s| {
        let incident = s.get_incident(id)?;
        let actions = s.actions_for_incident(id)?;
        Ok(incident.map(|i| (i, actions)))
    })
    .await;
    match found {
        Ok(Some((incident, actions))) => (
            [
                (
                    header::CONTENT_TYPE,
                    "text/markdown; charset=utf-8".to_string(),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"incident-{id}.md\""),
                ),
            ],
            render_markdown_with_actions(&incident, &actions, now_ms()),
        )
            .into_response(),
        Ok(None) => not_found(&raw, &viewer),
        Err(e) => super::internal_error(&e, &viewer),
    }
}

/// What the renderers need besides the incident.
struct Ctx<'a> {
    viewer: &'a Viewer,
    now: TimestampMs,
    can_verdict: bool,
}

fn render(
    incident: &Incident,
    actions: &[PendingAction],
    notice: Option<&str>,
    ctx: &Ctx<'_>,
) -> Markup {
    let id = incident.id.unwrap_or_default();
    let pending: Vec<&PendingAction> = actions
        .iter()
        .filter(|a| a.state == ActionState::Pending && a.expires_at >= ctx.now)
        .collect();
    html! {
        header.incident-head {
            h1 { "Incident #" (id) " — " (incident.subject()) }
            p.badges {
                (page::severity_badge(incident.severity)) " "
                (page::phase_badge(page::phase(incident, &actions.iter().collect::<Vec<_>>())))
                @if !pending.is_empty() {
                    " " (page::word_badge(&format!("{} awaiting approval", pending.len()), "awaiting"))
                }
            }
            dl.meta {
                dt { "Cluster" } dd { (incident.cluster) }
                dt { "Opened" } dd { (page::time(incident.opened_at)) " (" (page::age(incident.opened_at, ctx.now)) " ago)" }
                @if let Some(r) = incident.resolved_at {
                    dt { "Resolved" } dd { (page::time(r)) " (lasted " (page::duration(incident.opened_at, r)) ")" }
                }
                dt { "Group" } dd { (crate::incident::group_key(&incident.group)) }
            }
            p.links {
                a href={ (UI_PATH) "/incidents/" (id) "/report.md" } download={ "incident-" (id) ".md" } { "Download report.md" }
                " · "
                a href={ "/api/v1/incidents/" (id) "/report.md" } { "API report" }
                " · "
                a href={ "/api/v1/incidents/" (id) } { "API JSON" }
            }
        }
        (page::notice(notice))
        p.summary { (summary(incident, ctx.now)) }
        @if !pending.is_empty() {
            section.needs-decision aria-labelledby="decide-heading" {
                h2 #decide-heading { "Needs a decision" }
                @for a in &pending {
                    (action_card(a, incident, ctx))
                }
            }
        }
        (timeline(incident, actions))
        @if !incident.signals.is_empty() {
            section aria-labelledby="signals-heading" {
                h2 #signals-heading { "Signals" }
                @for (n, s) in incident.signals.iter().enumerate() {
                    (signal_chart(n, s))
                }
            }
        }
        @if !incident.alerts.is_empty() {
            (alerts(incident, ctx.now))
        }
        (diagnosis(incident.diagnosis.as_ref()))
        @if !incident.decisions.is_empty() {
            (decisions(&incident.decisions))
        }
        @let others: Vec<&PendingAction> = actions.iter().filter(|a| !pending.iter().any(|p| p.id == a.id)).collect();
        @if !others.is_empty() {
            section aria-labelledby="actions-heading" {
                h2 #actions-heading { "Actions" }
                @for a in others {
                    (action_card(a, incident, ctx))
                }
            }
        }
        (verdict_form(id, ctx))
    }
}

/// One sentence: what is affected, what moved how far, since when.
pub(crate) fn summary(incident: &Incident, now: TimestampMs) -> String {
    let subject = incident.subject();
    let since = match (incident.state, incident.resolved_at) {
        (IncidentState::Resolved, Some(r)) => format!(
            "from {} for {}; resolved",
            clock(incident.opened_at),
            page::duration(incident.opened_at, r)
        ),
        _ => format!(
            "since {} ({} ago); still open",
            clock(incident.opened_at),
            page::age(incident.opened_at, now)
        ),
    };
    let firing = incident
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .count();
    let more = incident.signals.len().saturating_sub(1);
    let mut s = match incident.headline() {
        Some(h) => format!(
            "{subject}: {} {} to {} where about {} was expected ({}) {since}",
            h.series.signal,
            if h.peak.score < 0.0 { "fell" } else { "rose" },
            page::num(h.peak.value),
            page::num(h.peak.expected),
            page::score(h.peak.score),
        ),
        None if !incident.alerts.is_empty() => {
            let names: Vec<&str> = incident.alerts.iter().map(|a| a.name.as_str()).collect();
            format!("{subject}: alert {} {since}", names.join(", "))
        }
        None => format!("{subject}: no signal evidence recorded, {since}"),
    };
    if more > 0 {
        s.push_str(&format!(
            "; {more} more signal{} moved with it",
            if more == 1 { "" } else { "s" }
        ));
    }
    if firing > 0 {
        s.push_str(&format!(
            "; {firing} alert{} firing",
            if firing == 1 { "" } else { "s" }
        ));
    }
    if let Some(top) = incident.diagnosis.as_ref().and_then(Diagnosis::top) {
        s.push_str(&format!(
            ". Most likely: {} ({:.0}%)",
            top.title,
            top.confidence * 100.0
        ));
    }
    s.push('.');
    s
}

fn clock(t: TimestampMs) -> String {
    crate::signal::format_ts(t)
        .replace('T', " ")
        .replace('Z', " UTC")
}

fn signal_chart(n: usize, s: &SignalEvidence) -> Markup {
    let name = s.series.to_string();
    let chart_id = format!("chart-{n}");
    let svg = chart::render(&ChartSpec {
        id: &chart_id,
        title: &name,
        samples: &s.samples,
        anomalous_at: &s.anomalous_at,
        window: Some((s.first_at, s.last_at)),
        peak: Some(PeakMark {
            t: s.peak.t,
            value: s.peak.value,
            score: s.peak.score,
            expected: s.peak.expected,
        }),
        // Forecast bands arrive with issue 7's evidence; the chart draws
        // them as soon as the incident carries one.
        band: None,
    });
    html! {
        figure.signal {
            figcaption {
                code { (name) }
                " — peak " (page::num(s.peak.value)) " (expected " (page::num(s.peak.expected))
                " ± " (page::num(s.peak.spread)) ", score " (page::score(s.peak.score)) "), "
                (s.anomaly_count) " anomalous sample" @if s.anomaly_count != 1 { "s" }
                ", " (clock(s.first_at)) " – " (clock(s.last_at))
            }
            // chart::render escapes every piece of text it writes.
            (PreEscaped(svg))
        }
    }
}

fn alerts(incident: &Incident, now: TimestampMs) -> Markup {
    html! {
        section aria-labelledby="alerts-heading" {
            h2 #alerts-heading { "Member alerts" }
            table.alerts {
                thead { tr {
                    th scope="col" { "Alert" } th scope="col" { "Status" }
                    th scope="col" { "Started" } th scope="col" { "Summary" }
                } }
                tbody {
                    @for a in &incident.alerts {
                        tr {
                            td data-label="Alert" {
                                (a.name)
                                @if a.flap_count > 1 { " " (page::word_badge(&format!("flapping ×{}", a.flap_count), "flapping")) }
                            }
                            td data-label="Status" { (page::word_badge(a.status.as_str(), &format!("alert-{}", a.status.as_str()))) }
                            td data-label="Started" { (page::time(a.starts_at)) " (" (page::age(a.starts_at, now)) " ago)" }
                            td data-label="Summary" {
                                (a.annotations.get("summary").or_else(|| a.annotations.get("description")).map_or("", String::as_str))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn diagnosis(d: Option<&Diagnosis>) -> Markup {
    html! {
        section aria-labelledby="diagnosis-heading" {
            h2 #diagnosis-heading { "Diagnosis" }
            @match d {
                None => p.empty { "Not diagnosed yet." },
                Some(d) => {
                    @if d.hypotheses.is_empty() {
                        p.empty { "No hypothesis fits the evidence." }
                    }
                    ol.hypotheses {
                        @for h in &d.hypotheses {
                            li.hypothesis {
                                h3 {
                                    (h.title) " "
                                    span.confidence { (format!("{:.0}%", h.confidence * 100.0)) " confidence" }
                                }
                                p { (h.explanation) }
                                dl.meta {
                                    dt { "Cause" } dd { code { (h.cause) } }
                                    dt { "Proposed by" } dd { (h.proposed_by.as_str()) }
                                    @if !h.supporting.is_empty() {
                                        dt { "Evidence for" }
                                        dd { @for (i, e) in h.supporting.iter().enumerate() { @if i > 0 { ", " } code { (e) } } }
                                    }
                                    @if !h.contradicting.is_empty() {
                                        dt { "Evidence against" }
                                        dd { @for (i, e) in h.contradicting.iter().enumerate() { @if i > 0 { ", " } code { (e) } } }
                                    }
                                    @if let Some(s) = &h.suggestion {
                                        dt { "Suggests" }
                                        dd {
                                            @match (&s.verb, &s.target) {
                                                (Some(v), Some(t)) => { code { (v.as_str()) " " (t) } ": " }
                                                _ => { "no workload action: " }
                                            }
                                            (s.note)
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if !d.gaps.is_empty() {
                        p.gaps { strong { "Not checked: " } (d.gaps.join("; ")) }
                    }
                    @if let Some(llm) = &d.llm_status {
                        p.small { "LLM second opinion: " (llm) }
                    }
                }
            }
        }
    }
}

fn decisions(records: &[DecisionRecord]) -> Markup {
    html! {
        section aria-labelledby="decisions-heading" {
            h2 #decisions-heading { "Policy decisions" }
            ol.decisions {
                @for d in records {
                    li.decision {
                        p {
                            (page::word_badge(d.outcome.as_str(), &format!("outcome-{}", d.outcome.as_str()))) " "
                            (page::time(d.at)) " — rule " code.rule { (d.rule) }
                            " (proposed by " (d.proposed_by) ")"
                        }
                        @if let Some(a) = &d.action {
                            p { "Action: " (a.describe()) }
                        }
                        @if !d.reasons.is_empty() {
                            ul.reasons { @for r in &d.reasons { li { (r) } } }
                        }
                        @if let Some(aid) = d.action_id {
                            p { a href={ "#action-" (aid) } { "Action " (aid) } }
                        }
                    }
                }
            }
        }
    }
}

fn timeline(incident: &Incident, actions: &[PendingAction]) -> Markup {
    let mut entries: Vec<(TimestampMs, String, String)> = incident
        .timeline
        .iter()
        .map(|e| (e.at, e.kind.clone(), e.message.clone()))
        .collect();
    if let Some(d) = &incident.diagnosis {
        let top = d
            .top()
            .map_or("no hypothesis".to_string(), |h| h.title.clone());
        entries.push((d.at, "diagnosed".into(), format!("Diagnosed: {top}.")));
    }
    for d in &incident.decisions {
        entries.push((
            d.at,
            "decision".into(),
            format!("Policy decided {} by rule {}.", d.outcome.as_str(), d.rule),
        ));
    }
    for a in actions {
        entries.push((
            a.requested_at,
            "action".into(),
            format!("Action {} requested: {}.", a.id, a.description),
        ));
        if let (Some(at), Some(by)) = (a.decided_at, &a.decided_by) {
            entries.push((
                at,
                "action".into(),
                format!("Action {} {} by {by}.", a.id, a.state.as_str()),
            ));
        }
    }
    entries.sort_by_key(|e| e.0);
    html! {
        section aria-labelledby="timeline-heading" {
            h2 #timeline-heading { "Timeline" }
            ol.timeline {
                @for (at, kind, message) in &entries {
                    li {
                        (page::time(*at)) " "
                        span.kind { (kind.replace('_', " ")) } " "
                        (message)
                    }
                }
            }
        }
    }
}

fn action_card(a: &PendingAction, incident: &Incident, ctx: &Ctx<'_>) -> Markup {
    let decision = incident
        .decisions
        .iter()
        .rev()
        .find(|d| d.action_id == Some(a.id));
    let live = a.state == ActionState::Pending && a.expires_at >= ctx.now;
    let state_word = if a.state == ActionState::Pending && !live {
        "expired"
    } else {
        a.state.as_str()
    };
    let exec = a.execution.as_ref();
    html! {
        article.action id={ "action-" (a.id) } {
            h3 { "Action " (a.id) ": " (a.description) }
            p {
                (page::word_badge(state_word, &format!("action-{state_word}")))
                @if let Some(e) = exec {
                    " " (page::word_badge(e.state.as_str(), &format!("exec-{}", e.state.as_str())))
                }
            }
            dl.meta {
                dt { "Requested" } dd { (page::time(a.requested_at)) }
                @if live {
                    dt { "Expires" } dd { (page::time(a.expires_at)) " (in " (page::age(ctx.now, a.expires_at)) ")" }
                }
                @if let Some(by) = &a.decided_by {
                    dt { "Decided by" } dd {
                        (by)
                        @if let Some(c) = a.channel { " via " (c.as_str()) }
                        @if let Some(at) = a.decided_at { " at " (page::time(at)) }
                    }
                }
                @if let Some(r) = &a.reason { dt { "Reason" } dd { (r) } }
                @match (exec, decision) {
                    (Some(e), _) => {
                        dt { "Rule" } dd { code { (e.rule) } " (" (e.mode) ", proposed by " (e.proposed_by) ")" }
                        @if let Some(plan) = &e.plan { dt { "Plan" } dd { (plan.describe()) } }
                        @if let Some(pre) = &e.pre_state { dt { "Before" } dd { (pre_state(pre)) } }
                        @if let Some(at) = e.executed_at { dt { "Executed" } dd { (page::time(at)) } }
                        @if let Some(m) = &e.message { dt { "Outcome" } dd { (m) } }
                        @if let Some(at) = e.finished_at { dt { "Finished" } dd { (page::time(at)) } }
                        @if let Some(by) = &e.revert_requested_by {
                            dt { "Revert asked by" } dd { (by) @if let Some(r) = &e.revert_reason { ": " (r) } }
                        }
                    }
                    (None, Some(d)) => { dt { "Rule" } dd { code { (d.rule) } } }
                    (None, None) => {
                        @if let Some(obj) = a.detail.as_object() {
                            @for (k, v) in obj {
                                dt { (k.replace('_', " ")) }
                                dd { @match v.as_str() { Some(s) => (s), None => code { (clip(&v.to_string())) } } }
                            }
                        }
                    }
                }
            }
            @if ctx.viewer.is_operator() {
                @if live {
                    (decide_form(a, ctx.viewer))
                } @else {
                    @match revertable(a) {
                        Ok(()) => (revert_form(a, ctx.viewer)),
                        Err(Some(why)) => p.help { (why) },
                        Err(None) => {},
                    }
                }
            } @else if live {
                p.help { "Only an operator can approve or deny this action." }
            }
        }
    }
}

/// Whether a revert can be asked for, and if not, why (`None`: the
/// question does not arise, e.g. an action that never ran).
fn revertable(a: &PendingAction) -> Result<(), Option<String>> {
    let Some(e) = &a.execution else {
        return Err(None);
    };
    if !matches!(
        e.state,
        ExecState::Executed | ExecState::Verified | ExecState::Failed
    ) {
        return Err(None);
    }
    match &e.pre_state {
        None => Err(Some(
            "Cannot be reverted: no pre-state was recorded.".into(),
        )),
        Some(PreState::Irreversible { why, .. }) => Err(Some(format!("Cannot be reverted: {why}"))),
        Some(_) if e.revert_requested_by.is_some() => Err(Some(
            "A revert was requested; remediation carries it out.".into(),
        )),
        Some(_) => Ok(()),
    }
}

/// What an action changed, in one sentence.
fn pre_state(p: &PreState) -> String {
    match p {
        PreState::Replicas { target, replicas } => format!("{target} had {replicas} replicas"),
        PreState::HpaMin {
            target,
            hpa,
            min_replicas,
        } => format!("HPA {hpa} of {target} had minReplicas {min_replicas}"),
        PreState::RestartAnnotation {
            target,
            restarted_at,
        } => match restarted_at {
            Some(at) => format!("{target} was last restarted at {at}"),
            None => format!("{target} had never been restarted with kubectl"),
        },
        PreState::Template {
            target, revision, ..
        } => format!("{target} ran revision {revision}"),
        PreState::Irreversible { target, why } => format!("{target}: irreversible ({why})"),
    }
}

/// Long JSON (a pod template before a rollback) cut for the page; the API
/// has the whole value.
fn clip(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The who/why fields every form asks.
fn who_why(prefix: &str) -> Markup {
    html! {
        div.field {
            label for={ (prefix) "-by" } { "Your name" }
            input id={ (prefix) "-by" } name="by" required maxlength=(MAX_TEXT)
                autocomplete="name" data-remember="by";
        }
        div.field.grow {
            label for={ (prefix) "-reason" } { "Why" }
            input id={ (prefix) "-reason" } name="reason" required maxlength=(MAX_TEXT);
        }
    }
}

fn decide_form(a: &PendingAction, viewer: &Viewer) -> Markup {
    let prefix = format!("decide-{}", a.id);
    html! {
        form.decide method="post" action={ (UI_PATH) "/actions/" (a.id) "/approve" } {
            input type="hidden" name="csrf" value=(viewer.csrf_token());
            fieldset {
                legend { "Decide action " (a.id) }
                (who_why(&prefix))
                div.buttons {
                    button.approve type="submit"
                        data-confirm={ "Approve action " (a.id) ": " (a.description) "?" } { "Approve" }
                    button.deny type="submit" formaction={ (UI_PATH) "/actions/" (a.id) "/deny" }
                        data-confirm={ "Deny action " (a.id) "?" } { "Deny" }
                }
            }
        }
    }
}

fn revert_form(a: &PendingAction, viewer: &Viewer) -> Markup {
    let prefix = format!("revert-{}", a.id);
    html! {
        form.revert method="post" action={ (UI_PATH) "/actions/" (a.id) "/revert" } {
            input type="hidden" name="csrf" value=(viewer.csrf_token());
            fieldset {
                legend { "Revert action " (a.id) }
                (who_why(&prefix))
                div.buttons {
                    button.deny type="submit" data-confirm={ "Revert action " (a.id) "?" } { "Revert" }
                }
            }
        }
    }
}

fn verdict_form(id: IncidentId, ctx: &Ctx<'_>) -> Markup {
    if !ctx.viewer.is_operator() {
        return html! {};
    }
    html! {
        section aria-labelledby="verdict-heading" {
            h2 #verdict-heading { "Your verdict" }
            form.verdict method="post" action={ (UI_PATH) "/incidents/" (id) "/verdict" } {
                input type="hidden" name="csrf" value=(ctx.viewer.csrf_token());
                fieldset disabled[!ctx.can_verdict] {
                    legend { "Was this incident real?" }
                    @if !ctx.can_verdict {
                        p.help #verdict-unavailable { "Not yet recorded: this build cannot store verdicts yet." }
                    }
                    div.choices {
                        @for (f, text) in [(Feedback::Real, "Real problem"), (Feedback::Expected, "Expected (deploy, test, maintenance)"), (Feedback::Noise, "Noise (false alarm)")] {
                            label {
                                input type="radio" name="verdict" value=(f.as_str()) required;
                                " " (text)
                            }
                        }
                    }
                    (who_why(&format!("verdict-{id}")))
                    div.buttons { button type="submit" { "Record verdict" } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{Peak, Severity, TimelineEntry};
    use crate::signal::{Sample, SeriesKey};

    fn incident() -> Incident {
        let group = [
            ("namespace".to_string(), "shop".to_string()),
            ("service".to_string(), "cart".to_string()),
        ];
        Incident {
            id: Some(4),
            cluster: "prod".into(),
            group: group.clone().into(),
            state: IncidentState::Open,
            severity: Severity::Critical,
            opened_at: 1_700_000_000_000,
            last_anomaly_at: 1_700_000_060_000,
            resolved_at: None,
            anomaly_count: 2,
            signals: vec![SignalEvidence {
                series: SeriesKey::new("error_ratio", group),
                first_at: 1_700_000_000_000,
                last_at: 1_700_000_060_000,
                anomaly_count: 2,
                peak: Peak {
                    t: 1_700_000_060_000,
                    value: 0.25,
                    expected: 0.01,
                    spread: 0.02,
                    score: 12.0,
                },
                samples: vec![
                    Sample {
                        t: 1_699_999_940_000,
                        v: 0.01,
                    },
                    Sample {
                        t: 1_700_000_000_000,
                        v: 0.2,
                    },
                    Sample {
                        t: 1_700_000_060_000,
                        v: 0.25,
                    },
                ],
                anomalous_at: vec![1_700_000_000_000, 1_700_000_060_000],
            }],
            alerts: Vec::new(),
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: None,
            timeline: vec![TimelineEntry {
                at: 1_700_000_000_000,
                kind: "opened".into(),
                message: "cart error_ratio is anomalous.".into(),
            }],
        }
    }

    #[test]
    fn the_summary_says_what_moved_how_far_and_since_when() {
        let s = summary(&incident(), 1_700_000_600_000);
        assert_eq!(
            s,
            "cart (shop): error_ratio rose to 0.25 where about 0.01 was expected (+12.0σ) \
             since 2023-11-14 22:13:20 UTC (10m ago); still open."
        );
        let mut resolved = incident();
        resolved.state = IncidentState::Resolved;
        resolved.resolved_at = Some(1_700_000_300_000);
        assert!(summary(&resolved, 0).contains("for 5m; resolved"));
    }
}
