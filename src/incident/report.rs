//! Markdown report of one incident, for the person on call.
//!
//! The report is written to be read in a minute, top to bottom: what is
//! affected and how badly (title and status line), the one sentence that
//! explains it, the evidence per signal with a sparkline, what happened
//! when, what aiopsd did about it, and where to look next.
//!
//! Everything comes from the [`Incident`] as the store holds it; the report
//! never queries a source, so it renders the same evidence the detector saw
//! even after Prometheus has dropped the data.

use std::fmt::Write as _;
use std::time::Duration;

use super::{AlertStatus, Incident, IncidentState, SignalEvidence};
use crate::publish::approvals::PendingAction;
use crate::remediate::record::DecisionOutcome;
use crate::signal::{format_ts, TimestampMs};

/// Widest sparkline, in characters; longer evidence is bucketed.
const SPARK_WIDTH: usize = 60;

/// Sparkline levels, lowest to highest.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Renders `incident` as a Markdown report; `now` (wall clock) says how
/// long an open incident has lasted so far.
pub fn render_markdown(incident: &Incident, now: TimestampMs) -> String {
    render_markdown_with_actions(incident, &[], now)
}

/// The report including what remediation did with each action of the
/// incident (`Store::actions_for_incident`): state, pre-state, outcome.
pub fn render_markdown_with_actions(
    incident: &Incident,
    actions: &[PendingAction],
    now: TimestampMs,
) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the Results below are infallible.
    let _ = write_report(&mut out, incident, actions, now);
    out
}

fn write_report(
    out: &mut String,
    incident: &Incident,
    actions: &[PendingAction],
    now: TimestampMs,
) -> std::fmt::Result {
    let subject = one_line(&incident.subject());
    let headline = incident.headline();

    // Title.
    let number = match incident.id {
        Some(id) => format!("#{id}"),
        None => "(not yet saved)".to_string(),
    };
    match headline {
        Some(h) if h.peak.score.is_finite() => writeln!(
            out,
            "# Incident {number} — {subject}: {} {} {}σ",
            one_line(&h.series.signal),
            direction_word(h.peak.score),
            fmt_score(h.peak.score.abs()),
        )?,
        Some(h) => writeln!(
            out,
            "# Incident {number} — {subject}: {}",
            one_line(&h.series.signal)
        )?,
        None => writeln!(out, "# Incident {number} — {subject}")?,
    }
    writeln!(out)?;

    // Status line.
    let mut status = vec![
        format!("**{}**", capitalize(incident.state.as_str())),
        format!("**{}**", incident.severity.as_str()),
    ];
    match (incident.state, incident.resolved_at) {
        (IncidentState::Resolved, Some(resolved)) => {
            status.push(format!("opened {}", format_ts(incident.opened_at)));
            status.push(format!("resolved {}", format_ts(resolved)));
            if let Some(d) = duration_between(incident.opened_at, resolved) {
                status.push(format!("lasted {d}"));
            }
        }
        _ => {
            let mut since = format!("since {}", format_ts(incident.opened_at));
            if let Some(d) = duration_between(incident.opened_at, now) {
                let _ = write!(since, " ({d} ago)");
            }
            status.push(since);
        }
    }
    status.push(format!("cluster {}", code(&incident.cluster)));
    writeln!(out, "{}", status.join(" · "))?;
    writeln!(out)?;

    // What is wrong.
    writeln!(out, "## What is wrong")?;
    writeln!(out)?;
    match headline {
        Some(h) => write_diagnosis(out, incident, h)?,
        None if !incident.alerts.is_empty() => write_alert_diagnosis(out, incident)?,
        None => writeln!(
            out,
            "No signal evidence is recorded for this incident; only its timeline is available."
        )?,
    }
    writeln!(out)?;

    // Diagnosis: ranked hypotheses with the evidence they cite.
    if let Some(diagnosis) = &incident.diagnosis {
        let section = crate::diagnose::render::render_markdown(diagnosis, &diagnosis.evidence);
        out.push_str(&section);
        if !section.ends_with("\n\n") {
            writeln!(out)?;
        }
    }

    // Signals.
    if !incident.signals.is_empty() {
        writeln!(out, "## Signals")?;
        writeln!(out)?;
        writeln!(
            out,
            "| Series | First anomalous | Last anomalous | Peak value | Expected | Score | Anomalous samples |"
        )?;
        writeln!(out, "|---|---|---|---:|---:|---:|---:|")?;
        for s in &incident.signals {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} ± {} | {} | {} |",
                table_cell(&code(&s.series.to_string())),
                format_ts(s.first_at),
                format_ts(s.last_at),
                fmt_num(s.peak.value),
                fmt_num(s.peak.expected),
                fmt_num(s.peak.spread),
                fmt_signed_score(s.peak.score),
                s.anomaly_count,
            )?;
        }
        writeln!(out)?;

        writeln!(out, "## Evidence")?;
        writeln!(out)?;
        for s in &incident.signals {
            write_sparkline(out, s)?;
        }
    }

    // Alerts from Alertmanager.
    if !incident.alerts.is_empty() {
        write_alerts(out, incident)?;
    }

    // Log templates that changed around the start (issue 10).
    if !incident.logs.is_empty() {
        write_logs(out, incident)?;
    }

    // Timeline.
    writeln!(out, "## Timeline")?;
    writeln!(out)?;
    if incident.timeline.is_empty() {
        writeln!(out, "No events recorded.")?;
    }
    for e in &incident.timeline {
        writeln!(
            out,
            "- {} — {} — {}",
            format_ts(e.at),
            code(&e.kind),
            one_line(&e.message)
        )?;
    }
    writeln!(out)?;

    // What aiopsd did. Later stages (diagnose, policy, remediate) add their
    // actions as more bullets here; the "nothing changed" line is the
    // honest default until they exist.
    writeln!(out, "## What aiopsd did")?;
    writeln!(out)?;
    if incident.alerts.is_empty() {
        writeln!(
            out,
            "- Detected the anomalies above and grouped them into this incident."
        )?;
    } else {
        writeln!(
            out,
            "- Received the alerts above from Alertmanager and grouped them, with any \
             anomalies detected for the same group, into this incident."
        )?;
    }
    write_remediation(out, incident, actions)?;
    writeln!(out)?;

    // Next steps.
    writeln!(out, "## Next steps")?;
    writeln!(out)?;
    write_next_steps(out, incident)?;
    Ok(())
}

/// The policy gate's decisions and what became of their actions, or the
/// honest "nothing was changed" when there were none.
fn write_remediation(
    out: &mut String,
    incident: &Incident,
    actions: &[PendingAction],
) -> std::fmt::Result {
    if incident.decisions.is_empty() {
        return writeln!(
            out,
            "- No policy decision was made (remediation is off, or the incident ended \
             first); nothing was changed in the cluster."
        );
    }
    for d in &incident.decisions {
        let what = match (&d.action, d.outcome) {
            (Some(a), DecisionOutcome::Execute) => format!("allowed: {}", a.describe()),
            (Some(a), DecisionOutcome::DryRun) => {
                format!("dry run — would {} (nothing changed)", a.describe())
            }
            (Some(a), DecisionOutcome::NeedsApproval) => {
                format!("needs a person's approval: {}", a.describe())
            }
            _ => "refused — no action".to_string(),
        };
        writeln!(
            out,
            "- Policy decision at {} by rule {} (proposed by {}): {what}.",
            format_ts(d.at),
            code(&d.rule),
            d.proposed_by
        )?;
        for reason in &d.reasons {
            writeln!(out, "  - {}", one_line(reason))?;
        }
        let Some(action) = d
            .action_id
            .and_then(|id| actions.iter().find(|a| a.id == id))
        else {
            continue;
        };
        let Some(exec) = &action.execution else {
            continue;
        };
        writeln!(
            out,
            "  - Action {} ({}): **{}**{}",
            action.id,
            action.state.as_str(),
            exec.state.as_str(),
            exec.message
                .as_deref()
                .map(|m| format!(" — {}", one_line(m)))
                .unwrap_or_default()
        )?;
        if let Some(pre) = &exec.pre_state {
            let pre = serde_json::to_string(pre).unwrap_or_default();
            writeln!(out, "  - Pre-state (restored by a revert): {}", code(&pre))?;
        }
    }
    Ok(())
}

/// The diagnosis of an incident made of alerts only: which alerts, in the
/// words their rules give (`summary`).
fn write_alert_diagnosis(out: &mut String, incident: &Incident) -> std::fmt::Result {
    let firing = incident
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .count();
    writeln!(
        out,
        "{} {} from Alertmanager, {} firing; no anomaly was detected on the watched signals.",
        incident.alerts.len(),
        plural(incident.alerts.len() as u64, "alert", "alerts"),
        firing
    )?;
    for a in incident.alerts.iter().take(3) {
        match a.annotations.get("summary").filter(|s| !s.is_empty()) {
            Some(summary) => writeln!(out, "- {}: {}", code(&a.name), one_line(summary))?,
            None => writeln!(out, "- {}", code(&a.name))?,
        }
    }
    Ok(())
}

/// The `## Logs` section: the log templates whose counts changed around
/// the incident's start, with a few example lines (redacted before they
/// were stored).
fn write_logs(out: &mut String, incident: &Incident) -> std::fmt::Result {
    writeln!(out, "## Logs")?;
    writeln!(out)?;
    let minutes = incident
        .logs
        .first()
        .map_or(0.0, |c| c.window_ms as f64 / 60_000.0);
    writeln!(
        out,
        "Log templates whose line counts changed between the {} min before the \
         incident's start and the {} min from it:",
        fmt_num(minutes),
        fmt_num(minutes),
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| Service | Template | Change | Before | After | Level |"
    )?;
    writeln!(out, "|---|---|---|---:|---:|---|")?;
    for c in &incident.logs {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            table_cell(&one_line(&c.service)),
            table_cell(&code(&c.template)),
            c.change.as_str(),
            c.before,
            c.after,
            table_cell(&one_line(c.level.as_deref().unwrap_or("—"))),
        )?;
    }
    writeln!(out)?;
    if incident.logs.iter().any(|c| !c.examples.is_empty()) {
        writeln!(out, "Example lines (secrets redacted):")?;
        writeln!(out)?;
        for c in incident.logs.iter().filter(|c| !c.examples.is_empty()) {
            writeln!(
                out,
                "- {} (template T{}):",
                code(&c.template),
                c.template_id
            )?;
            for e in &c.examples {
                writeln!(out, "  - {}", code(e))?;
            }
        }
        writeln!(out)?;
    }
    Ok(())
}

/// The `## Alerts` section: every member alert with its state and times,
/// labels and the rule's description.
fn write_alerts(out: &mut String, incident: &Incident) -> std::fmt::Result {
    writeln!(out, "## Alerts")?;
    writeln!(out)?;
    writeln!(out, "| Alert | State | Since | Until | Summary |")?;
    writeln!(out, "|---|---|---|---|---|")?;
    for a in &incident.alerts {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            table_cell(&code(&a.name)),
            a.status.as_str(),
            format_ts(a.starts_at),
            a.ends_at.map_or_else(|| "—".to_string(), format_ts),
            table_cell(&one_line(
                a.annotations.get("summary").map_or("", String::as_str)
            )),
        )?;
    }
    writeln!(out)?;
    // Flapping: one line per re-firing alert with its count, so the reader
    // sees at once why one incident holds several episodes of one alert.
    let mut flaps: Vec<(&str, &str, u32)> = Vec::new();
    for a in incident.alerts.iter().filter(|a| a.flap_count >= 2) {
        match flaps.iter_mut().find(|(f, _, _)| *f == a.fingerprint) {
            Some(entry) => entry.2 = entry.2.max(a.flap_count),
            None => flaps.push((&a.fingerprint, &a.name, a.flap_count)),
        }
    }
    for (_, name, count) in &flaps {
        writeln!(
            out,
            "**Flapping:** {} fired {count} times in a row; its episodes are grouped here \
             (flap count {count}).",
            code(name)
        )?;
        writeln!(out)?;
    }
    for a in &incident.alerts {
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        writeln!(out, "- {}: {}", code(&a.name), code(&labels.join(", ")))?;
        if let Some(d) = a.annotations.get("description").filter(|d| !d.is_empty()) {
            writeln!(out, "  {}", one_line(d))?;
        }
        if !a.generator_url.is_empty() {
            writeln!(
                out,
                "  [rule expression]({})",
                a.generator_url.replace([')', ' '], "")
            )?;
        }
    }
    writeln!(out)?;
    Ok(())
}

/// One or two sentences from the headline evidence.
fn write_diagnosis(out: &mut String, incident: &Incident, h: &SignalEvidence) -> std::fmt::Result {
    let p = &h.peak;
    let deviation = if p.score.is_finite() {
        let relation = if p.score >= 0.0 { "above" } else { "below" };
        format!(" ({}σ {relation} normal)", fmt_score(p.score.abs()))
    } else {
        String::new()
    };
    write!(
        out,
        "{} of {} reached **{}** at {}, against an expected {} ± {}{deviation}. ",
        code(&h.series.signal),
        one_line(&incident.subject()),
        fmt_num(p.value),
        format_ts(p.t),
        fmt_num(p.expected),
        fmt_num(p.spread),
    )?;
    if h.first_at == h.last_at {
        write!(out, "It was anomalous once, at {}", format_ts(h.first_at))?;
    } else {
        write!(
            out,
            "It was first anomalous at {} and last at {} ({} anomalous {})",
            format_ts(h.first_at),
            format_ts(h.last_at),
            h.anomaly_count,
            plural(h.anomaly_count, "sample", "samples"),
        )?;
    }
    let others: Vec<String> = incident
        .signals
        .iter()
        .filter(|s| !std::ptr::eq(*s, h))
        .map(|s| code(&s.series.signal))
        .collect();
    if others.is_empty() {
        writeln!(out, ".")
    } else {
        writeln!(
            out,
            "; {} other {} went off with it: {}.",
            others.len(),
            plural(others.len() as u64, "signal", "signals"),
            others.join(", ")
        )
    }
}

/// A sparkline of one signal's evidence with its anomalous span marked.
fn write_sparkline(out: &mut String, s: &SignalEvidence) -> std::fmt::Result {
    writeln!(out, "{}", code(&s.series.to_string()))?;
    writeln!(out)?;
    let points: Vec<(f64, bool)> = bucket(s);
    if points.is_empty() {
        writeln!(out, "No samples were kept for this series.")?;
        writeln!(out)?;
        return Ok(());
    }
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (v, _)| {
            (lo.min(*v), hi.max(*v))
        });
    let range = hi - lo;
    let line: String = points
        .iter()
        .map(|(v, _)| {
            if !(range.is_finite() && range > 0.0) {
                // A flat series: the middle level reads as "steady".
                return BARS[BARS.len() / 2 - 1];
            }
            let level = ((v - lo) / range * (BARS.len() - 1) as f64).round();
            BARS[(level.max(0.0) as usize).min(BARS.len() - 1)]
        })
        .collect();
    let marks: String = points
        .iter()
        .map(|(_, anomalous)| if *anomalous { '^' } else { ' ' })
        .collect();
    writeln!(out, "```text")?;
    writeln!(out, "{line}")?;
    if marks.contains('^') {
        writeln!(out, "{}", marks.trim_end())?;
    }
    writeln!(out, "```")?;
    let first = s.samples.iter().map(|x| x.t).min();
    let last = s.samples.iter().map(|x| x.t).max();
    if let (Some(first), Some(last)) = (first, last) {
        writeln!(
            out,
            "{} → {} · min {} · max {} · `^` anomalous",
            format_ts(first),
            format_ts(last),
            fmt_num(lo),
            fmt_num(hi)
        )?;
    }
    writeln!(out)
}

/// Reduces the evidence to at most [`SPARK_WIDTH`] points of (value,
/// anomalous?). Each bucket keeps its sample farthest from the expected
/// level, so a short spike survives the downsampling.
fn bucket(s: &SignalEvidence) -> Vec<(f64, bool)> {
    let samples: Vec<_> = s.samples.iter().filter(|x| x.v.is_finite()).collect();
    if samples.is_empty() {
        return Vec::new();
    }
    let per = samples.len().div_ceil(SPARK_WIDTH);
    let expected = if s.peak.expected.is_finite() {
        s.peak.expected
    } else {
        0.0
    };
    samples
        .chunks(per)
        .map(|chunk| {
            let value = chunk
                .iter()
                .map(|x| x.v)
                .max_by(|a, b| {
                    (a - expected)
                        .abs()
                        .partial_cmp(&(b - expected).abs())
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
                .unwrap_or(expected);
            let anomalous = chunk.iter().any(|x| s.anomalous_at.contains(&x.t));
            (value, anomalous)
        })
        .collect()
}

fn write_next_steps(out: &mut String, incident: &Incident) -> std::fmt::Result {
    let start = format_ts(incident.opened_at.saturating_sub(15 * 60_000));
    let end = match incident.resolved_at {
        Some(r) => format_ts(r),
        None => "now".to_string(),
    };
    writeln!(
        out,
        "- Look at the signals above in your dashboards from {start} to {end}: \
         did a deploy, a config change or a dependency's incident start just before {}?",
        format_ts(incident.opened_at)
    )?;
    if let Some(ns) = incident.group_label("namespace") {
        writeln!(
            out,
            "- Recent events in the namespace: {}",
            code(&format!(
                "kubectl -n {} get events --sort-by=.lastTimestamp",
                shell_word(ns)
            ))
        )?;
        if let Some(service) = incident.group_label("service") {
            writeln!(
                out,
                "- If a deployment is named after the service, its rollouts: {}",
                code(&format!(
                    "kubectl -n {} rollout history deployment/{}",
                    shell_word(ns),
                    shell_word(service)
                ))
            )?;
        }
    }
    match incident.state {
        IncidentState::Open => writeln!(
            out,
            "- If this is expected (a load test, a planned migration), no action is needed: \
             the incident resolves itself once every signal has been normal for \
             `incidents.resolve_after`."
        ),
        IncidentState::Resolved => writeln!(
            out,
            "- The signals are back to normal; if the cause is understood, record it in \
             your incident log."
        ),
    }
}

/// `up` or `down`, from the sign of a score.
fn direction_word(score: f64) -> &'static str {
    if score < 0.0 {
        "down"
    } else {
        "up"
    }
}

/// Whole seconds from `from` to `to`, humanised (`12m 3s`); `None` when
/// `to` is before `from` (a wall clock behind data time, e.g. in a replay).
fn duration_between(from: TimestampMs, to: TimestampMs) -> Option<String> {
    let ms = to.checked_sub(from)?;
    let secs = u64::try_from(ms / 1000).ok()?;
    // Past an hour, seconds are noise.
    let secs = if secs >= 3600 { secs - secs % 60 } else { secs };
    Some(humantime::format_duration(Duration::from_secs(secs)).to_string())
}

/// A number with four significant digits, without trailing zeros or
/// exponent noise; `n/a` for a non-finite value.
fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_string();
    }
    if x == 0.0 {
        return "0".to_string();
    }
    let magnitude = x.abs().log10().floor();
    if !(-4.0..9.0).contains(&magnitude) {
        // Very large or tiny: scientific notation reads better.
        let s = format!("{x:.3e}");
        return match s.split_once('e') {
            Some((mantissa, exp)) => format!("{}e{exp}", trim_zeros(mantissa)),
            None => s,
        };
    }
    let decimals = (3.0 - magnitude).max(0.0) as usize;
    trim_zeros(&format!("{x:.decimals$}"))
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// A score magnitude with one decimal (`8.3`); `n/a` when not finite.
fn fmt_score(score: f64) -> String {
    if !score.is_finite() {
        return "n/a".to_string();
    }
    if score.abs() >= 1000.0 {
        return fmt_num(score);
    }
    format!("{score:.1}")
}

/// A signed score for the table (`+8.3σ`, `-4.1σ`, `n/a`).
fn fmt_signed_score(score: f64) -> String {
    if !score.is_finite() {
        "n/a".to_string()
    } else if score >= 0.0 {
        format!("+{}σ", fmt_score(score))
    } else {
        format!("{}σ", fmt_score(score))
    }
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Collapses line breaks: label values and messages come from outside and
/// must not break the Markdown structure.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// Inline code that survives backticks in its content (CommonMark: a
/// longer fence, padded with spaces when the content touches a backtick).
fn code(s: &str) -> String {
    let s = one_line(s);
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat(longest + 1);
    if longest > 0 || s.is_empty() {
        format!("{fence} {s} {fence}")
    } else {
        format!("{fence}{s}{fence}")
    }
}

/// Escapes `|` so a value cannot split a table cell (GFM honours `\|`
/// even inside code spans in tables).
fn table_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Quotes a word for a shell command line when it is not plainly safe.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::incident::{Peak, Severity, TimelineEntry};
    use crate::signal::{Sample, SeriesKey};

    const T0: TimestampMs = 1_700_000_000_000; // 2023-11-14T22:13:20Z

    fn group() -> BTreeMap<String, String> {
        [("namespace", "shop"), ("service", "cart")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn evidence(signal: &str, score: f64) -> SignalEvidence {
        let samples: Vec<Sample> = (0..20)
            .map(|i| Sample {
                t: T0 - 300_000 + i * 30_000,
                v: if i >= 10 { 0.153_123_456 } else { 0.012 },
            })
            .collect();
        let anomalous_at = samples.iter().skip(10).map(|s| s.t).collect();
        SignalEvidence {
            series: SeriesKey::new(signal, group()),
            first_at: T0,
            last_at: T0 + 270_000,
            anomaly_count: 10,
            peak: Peak {
                t: T0 + 60_000,
                value: 0.153_123_456,
                expected: 0.012_345_678_9,
                spread: 0.004_2,
                score,
            },
            samples,
            anomalous_at,
        }
    }

    fn incident() -> Incident {
        Incident {
            id: Some(42),
            cluster: "prod-eu".into(),
            group: group(),
            state: IncidentState::Open,
            severity: Severity::Critical,
            opened_at: T0,
            last_anomaly_at: T0 + 270_000,
            resolved_at: None,
            anomaly_count: 13,
            signals: vec![
                evidence("latency_p99", -3.24),
                evidence("error_ratio", 8.345),
            ],
            alerts: Vec::new(),
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: None,
            timeline: vec![
                TimelineEntry {
                    at: T0,
                    kind: "opened".into(),
                    message: "latency_p99 of cart (shop) is anomalous.".into(),
                },
                TimelineEntry {
                    at: T0 + 60_000,
                    kind: "signal_added".into(),
                    message: "error_ratio joined.".into(),
                },
            ],
        }
    }

    fn assert_clean(report: &str) {
        for bad in ["NaN", "inf", "e+", "0.15312345"] {
            assert!(!report.contains(bad), "report contains {bad:?}:\n{report}");
        }
    }

    #[test]
    fn open_report_names_service_signal_values_and_times() {
        let report = render_markdown(&incident(), T0 + 725_000);
        assert!(
            report.starts_with("# Incident #42 — cart (shop): error_ratio up 8.3σ\n"),
            "{report}"
        );
        assert!(
            report.contains("**Open** · **critical** · since 2023-11-14T22:13:20Z (12m 5s ago)"),
            "{report}"
        );
        assert!(report.contains("cluster `prod-eu`"), "{report}");
        // Headline sentence: value vs expected ± spread, and when.
        assert!(
            report.contains("reached **0.1531** at 2023-11-14T22:14:20Z"),
            "{report}"
        );
        assert!(
            report.contains("expected 0.01235 ± 0.0042 (8.3σ above normal)"),
            "{report}"
        );
        assert!(
            report.contains(
                "first anomalous at 2023-11-14T22:13:20Z and last at 2023-11-14T22:17:50Z"
            ),
            "{report}"
        );
        assert!(
            report.contains("1 other signal went off with it: `latency_p99`"),
            "{report}"
        );
        // Table rows for both signals, signed scores.
        assert!(
            report.contains(r#"| `error_ratio{namespace="shop",service="cart"}` |"#),
            "{report}"
        );
        assert!(report.contains("| +8.3σ | 10 |"), "{report}");
        assert!(report.contains("| -3.2σ | 10 |"), "{report}");
        // Sparkline with the anomalous half marked.
        assert!(
            report.contains("▁▁▁▁▁▁▁▁▁▁██████████\n          ^^^^^^^^^^\n"),
            "{report}"
        );
        // Timeline, actions, next steps.
        assert!(
            report.contains("- 2023-11-14T22:14:20Z — `signal_added` — error_ratio joined."),
            "{report}"
        );
        assert!(
            report.contains("nothing was changed in the cluster"),
            "{report}"
        );
        assert!(
            report.contains("kubectl -n shop rollout history deployment/cart"),
            "{report}"
        );
        assert_clean(&report);
    }

    #[test]
    fn resolved_report_says_when_and_how_long() {
        let mut inc = incident();
        inc.state = IncidentState::Resolved;
        inc.resolved_at = Some(T0 + 3_725_000);
        inc.signals.truncate(1);
        let report = render_markdown(&inc, T0 + 99_000_000);
        assert!(
            report.starts_with("# Incident #42 — cart (shop): latency_p99 down 3.2σ"),
            "{report}"
        );
        assert!(report.contains("**Resolved**"), "{report}");
        assert!(
            report.contains(
                "opened 2023-11-14T22:13:20Z · resolved 2023-11-14T23:15:25Z · lasted 1h 2m"
            ),
            "{report}"
        );
        assert!(report.contains("below normal"), "{report}");
        assert!(report.contains("back to normal"), "{report}");
        assert!(!report.contains("ago"), "{report}");
        assert_clean(&report);
    }

    #[test]
    fn degenerate_data_renders_without_nan_or_inf() {
        let mut inc = incident();
        inc.id = None;
        inc.group = [("pod".to_string(), "x|`y`".to_string())]
            .into_iter()
            .collect();
        for s in &mut inc.signals {
            s.series.labels = inc.group.clone().into();
        }
        inc.signals[0].samples.clear();
        inc.signals[0].anomalous_at.clear();
        inc.signals[0].first_at = inc.signals[0].last_at;
        let flat = &mut inc.signals[1];
        for s in &mut flat.samples {
            s.v = 5.0;
        }
        flat.peak = Peak {
            t: T0,
            value: 5.0,
            expected: 5.0,
            spread: 0.0,
            score: f64::NAN,
        };
        inc.timeline.clear();
        // Wall clock behind data time (a replay): no negative duration.
        let report = render_markdown(&inc, T0 - 1_000);
        assert!(
            report.starts_with("# Incident (not yet saved) — pod=x|`y`"),
            "{report}"
        );
        assert!(
            report.contains("No samples were kept for this series."),
            "{report}"
        );
        assert!(report.contains("No events recorded."), "{report}");
        assert!(report.contains("▄▄▄▄"), "{report}");
        assert!(report.contains("n/a"), "{report}");
        assert!(
            report.contains(r"\|"),
            "pipes are escaped in the table: {report}"
        );
        assert!(
            !report.contains("NaN") && !report.contains("inf"),
            "{report}"
        );

        inc.signals.clear();
        let report = render_markdown(&inc, T0);
        assert!(
            report.contains("No signal evidence is recorded"),
            "{report}"
        );
        assert!(
            !report.contains("NaN") && !report.contains("inf"),
            "{report}"
        );
    }

    #[test]
    fn long_evidence_is_bucketed_and_keeps_spikes() {
        let mut ev = evidence("cpu", 9.0);
        ev.samples = (0..1000)
            .map(|i| Sample {
                t: T0 + i * 1000,
                v: if i == 500 { 100.0 } else { 1.0 },
            })
            .collect();
        ev.anomalous_at = vec![T0 + 500_000];
        ev.peak.expected = 1.0;
        let points = bucket(&ev);
        assert!(points.len() <= SPARK_WIDTH);
        assert_eq!(points.iter().filter(|(v, _)| *v == 100.0).count(), 1);
        assert_eq!(points.iter().filter(|(_, a)| *a).count(), 1);
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(fmt_num(0.153_123_456), "0.1531");
        assert_eq!(fmt_num(1234.5678), "1235");
        assert_eq!(fmt_num(12.5), "12.5");
        assert_eq!(fmt_num(-0.5), "-0.5");
        assert_eq!(fmt_num(100.0), "100");
        assert_eq!(fmt_num(0.000_012_34), "1.234e-5");
        assert_eq!(fmt_num(3.0e12), "3e12");
        assert_eq!(fmt_num(f64::NAN), "n/a");
        assert_eq!(fmt_num(f64::MAX), "1.798e308");
        assert_eq!(fmt_score(8.345), "8.3");
        assert_eq!(fmt_signed_score(-3.0), "-3.0σ");
        assert_eq!(fmt_signed_score(f64::INFINITY), "n/a");
    }

    #[test]
    fn code_spans_survive_backticks() {
        assert_eq!(code("a"), "`a`");
        assert_eq!(code("a`b"), "`` a`b ``");
        assert_eq!(code("x\ny"), "`x y`");
    }

    #[test]
    fn alert_members_get_their_own_section_and_explain_an_alert_only_incident() {
        let mut inc = incident();
        inc.signals.clear();
        inc.alerts.push(crate::incident::AlertEvidence {
            alert_id: 1,
            fingerprint: "a1b2c3d4e5f60718".into(),
            name: "HighErrorRate".into(),
            status: AlertStatus::Firing,
            starts_at: inc.opened_at,
            ends_at: None,
            labels: [("service".to_string(), "checkout".to_string())].into(),
            annotations: [
                ("summary".to_string(), "5xx | above 5%\nnow".to_string()),
                (
                    "description".to_string(),
                    "Check the payment backend.".to_string(),
                ),
            ]
            .into(),
            generator_url: "http://prometheus:9090/graph?g0.expr=x".into(),
            flap_count: 1,
        });
        let report = render_markdown(&inc, inc.opened_at + 60_000);
        assert!(
            report.contains("1 alert from Alertmanager, 1 firing"),
            "{report}"
        );
        assert!(report.contains("## Alerts"), "{report}");
        assert!(report.contains("| `HighErrorRate` | firing |"), "{report}");
        assert!(report.contains("5xx \\| above 5% now"), "{report}");
        assert!(report.contains("Check the payment backend."), "{report}");
        assert!(report.contains(r#"`service="checkout"`"#), "{report}");
        assert!(!report.contains("Flapping"), "{report}");
        // A second episode of the same alert, third in a row: flagged.
        let mut again = inc.alerts[0].clone();
        again.flap_count = 3;
        inc.alerts.push(again);
        let report = render_markdown(&inc, inc.opened_at + 60_000);
        assert!(
            report.contains("**Flapping:** `HighErrorRate` fired 3 times in a row"),
            "{report}"
        );
    }
}
