//! The page frame and the small pieces every page uses: badges, times,
//! numbers, notices and error pages.
//!
//! Badges always carry their meaning as text ("CRITICAL", "OPEN"); colour
//! only repeats it, so the UI reads the same in grey scale and to a screen
//! reader.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::auth::Viewer;
use super::UI_PATH;
use crate::incident::{Incident, IncidentState, Severity};
use crate::publish::approvals::PendingAction;
use crate::signal::{format_ts, TimestampMs};

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    /// The incident list (and incident pages).
    Incidents,
    /// The policy page.
    Policy,
    /// The health page.
    Health,
    /// No entry (login, errors).
    None,
}

/// The whole document around `body`.
pub(crate) fn layout(title: &str, viewer: Option<&Viewer>, nav: Nav, body: Markup) -> Markup {
    let link = |target: Nav, href: String, text: &str| {
        html! {
            @if nav == target {
                a href=(href) aria-current="page" { (text) }
            } @else {
                a href=(href) { (text) }
            }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — aiopsd" }
                link rel="stylesheet" href={ (UI_PATH) "/assets/ui.css" };
                script src={ (UI_PATH) "/assets/ui.js" } defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href={ (UI_PATH) "/" } { "aiopsd" }
                    @if let Some(v) = viewer {
                        nav aria-label="Main" {
                            (link(Nav::Incidents, format!("{UI_PATH}/"), "Incidents"))
                            (link(Nav::Policy, format!("{UI_PATH}/policy"), "Policy"))
                            (link(Nav::Health, format!("{UI_PATH}/health"), "Health"))
                        }
                        span.who {
                            @if v.is_operator() { "Operator" } @else { "Viewer (read-only)" }
                        }
                        @if v.can_log_out {
                            form.logout method="post" action={ (UI_PATH) "/logout" } {
                                input type="hidden" name="csrf" value=(v.csrf_token());
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
            }
        }
    }
}

/// An HTML response with `status`.
pub(crate) fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// A short error page with a way back.
pub(crate) fn error_page(
    status: StatusCode,
    title: &str,
    message: &str,
    viewer: Option<&Viewer>,
) -> Response {
    let nav = if viewer.is_some() {
        Nav::Incidents
    } else {
        Nav::None
    };
    let body = html! {
        h1 { (title) }
        p.notice.notice-error role="alert" { (message) }
        p { a href={ (UI_PATH) "/" } { "Back to the incident list" } }
    };
    html_response(status, layout(title, viewer, nav, body))
}

/// Headers on every UI answer: a strict content security policy (only our
/// own script and stylesheet, no inline script, no framing), no caching of
/// pages that hold incident data, no MIME sniffing.
pub(crate) async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Severity as a text badge.
pub(crate) fn severity_badge(s: Severity) -> Markup {
    html! { span class={ "badge sev-" (s.as_str()) } { (s.as_str().to_uppercase()) } }
}

/// Where an incident is, as on-call people say it: `open`, `remediating`
/// (an action is running or awaiting verification), `remediated` (an
/// action was verified), `escalated` (remediation handed it to a person),
/// or `resolved`. Derived from the stored state, timeline and actions.
pub(crate) fn phase(incident: &Incident, actions: &[&PendingAction]) -> &'static str {
    use crate::remediate::record::ExecState;
    if incident.state == IncidentState::Resolved {
        return "resolved";
    }
    if incident.timeline.iter().any(|e| e.kind == "escalated") {
        return "escalated";
    }
    let exec = |states: &[ExecState]| {
        actions
            .iter()
            .filter_map(|a| a.execution.as_ref())
            .any(|e| states.contains(&e.state))
    };
    if exec(&[ExecState::Executing, ExecState::Executed]) {
        "remediating"
    } else if exec(&[ExecState::Verified]) {
        "remediated"
    } else {
        "open"
    }
}

/// The phase as a text badge.
pub(crate) fn phase_badge(phase: &str) -> Markup {
    word_badge(phase, &format!("state-{phase}"))
}

/// Any other state word as a badge; `kind` picks the colour class.
pub(crate) fn word_badge(word: &str, kind: &str) -> Markup {
    html! { span class={ "badge " (kind) } { (word.replace('_', " ").to_uppercase()) } }
}

/// A time as `<time>`: readable UTC text, machine-readable attribute.
pub(crate) fn time(t: TimestampMs) -> Markup {
    let iso = format_ts(t);
    html! { time datetime=(iso) { (iso.replace('T', " ").replace('Z', " UTC")) } }
}

/// How long ago `t` was, e.g. `3h 12m`; `just now` in the future or under
/// a second.
pub(crate) fn age(t: TimestampMs, now: TimestampMs) -> String {
    let secs = (now - t) / 1000;
    if secs < 1 {
        return "just now".into();
    }
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

/// A duration between two times, e.g. `12m`.
pub(crate) fn duration(from: TimestampMs, to: TimestampMs) -> String {
    match age(from, to).as_str() {
        "just now" => "under a second".into(),
        other => other.to_string(),
    }
}

/// A measurement for people: at most 4 significant digits, no trailing
/// zeros, `1.2e6` style outside a readable range.
pub(crate) fn num(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{x:.2e}");
    }
    let decimals = if a >= 1000.0 {
        0
    } else if a >= 100.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        // Enough decimals for 3 significant digits of a small value.
        let mut d = 3;
        let mut v = a;
        while v != 0.0 && v < 0.1 && d < 7 {
            v *= 10.0;
            d += 1;
        }
        d
    };
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A signed detector score, e.g. `+12.3σ`.
pub(crate) fn score(s: f64) -> String {
    if s.is_finite() {
        format!("{s:+.1}σ")
    } else {
        "n/a".into()
    }
}

/// A notice shown after a form was handled (`?notice=` code); fixed
/// sentences only, so nothing from the URL is ever shown back.
pub(crate) fn notice(code: Option<&str>) -> Markup {
    let (text, error) = match code {
        Some("approved") => ("The action was approved.", false),
        Some("denied") => ("The action was denied.", false),
        Some("revert_requested") => ("The revert was requested.", false),
        Some("verdict_recorded") => ("Your verdict was recorded.", false),
        Some("already_decided") => ("That action was already decided by someone else.", true),
        Some("expired") => ("That action expired before the decision.", true),
        Some("unavailable") => ("That is not available in this build yet.", true),
        _ => return html! {},
    };
    html! {
        p class={ "notice" @if error { " notice-error" } } role="status" { (text) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(0.25), "0.25");
        assert_eq!(num(0.0123), "0.0123");
        assert_eq!(num(12.0), "12");
        assert_eq!(num(123.456), "123.5");
        assert_eq!(num(4321.9), "4322");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(-0.5), "-0.5");
        assert_eq!(num(2.5e7), "2.50e7");
        assert_eq!(score(12.04), "+12.0σ");
        assert_eq!(score(-3.0), "-3.0σ");
    }

    #[test]
    fn ages_are_short() {
        let now = 10_000_000;
        assert_eq!(age(now, now), "just now");
        assert_eq!(age(now - 45_000, now), "45s");
        assert_eq!(age(now - 125_000, now), "2m");
        assert_eq!(age(now - 3_725_000, now), "1h 2m");
        assert_eq!(age(now - 90_000_000, now), "1d 1h");
        assert_eq!(age(now + 5_000, now), "just now");
    }

    #[test]
    fn badges_say_their_meaning_in_text() {
        let b = severity_badge(Severity::Critical).into_string();
        assert!(b.contains(">CRITICAL<"), "{b}");
        let b = word_badge("needs_approval", "outcome").into_string();
        assert!(b.contains(">NEEDS APPROVAL<"), "{b}");
    }

    #[test]
    fn unknown_notice_codes_show_nothing() {
        assert_eq!(notice(Some("<script>")).into_string(), "");
        assert!(notice(Some("approved")).into_string().contains("approved"));
    }
}
