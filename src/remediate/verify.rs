//! Did the action help? Judged from the same detectors and the same data
//! that opened the incident, in data time.
//!
//! After an action executed at data time `t`, the settle time passes; from
//! `verify_from = t + settle`, every signal of the incident must deliver
//! `verify_window` of data with no anomaly, and every member alert must
//! have resolved. Anything else is not a pass:
//!
//! - an anomaly after `verify_from` → not recovered (and the action is
//!   reverted when that is safe);
//! - no data (a source down, a signal gone) until the wall-clock timeout →
//!   **not recovered**: a verification that cannot see is a failed one.
//!   (Peers have shipped the opposite, reporting success while every
//!   measurement errored.)

use std::collections::BTreeMap;

use crate::incident::{AlertStatus, Incident, IncidentState, PredictionRecord};
use crate::signal::{format_ts, TimestampMs};

/// The verdict at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not enough data yet, and still within the timeout.
    Pending,
    /// Every signal normal for the window and no member alert firing.
    Recovered(String),
    /// Still anomalous, still alerting, or no data in time.
    NotRecovered(String),
}

/// Judges an executed action.
///
/// `cursors` holds, per signal name, how far that signal's data has been
/// read (the store's poll cursors); `timed_out` says the wall-clock
/// verification timeout has passed.
pub fn judge(
    incident: &Incident,
    verify_from: TimestampMs,
    window_ms: i64,
    cursors: &BTreeMap<String, Option<TimestampMs>>,
    timed_out: bool,
) -> Verdict {
    if let Some(prediction) = &incident.prediction {
        return judge_prediction(incident, prediction, verify_from, timed_out);
    }
    let still: Vec<String> = incident
        .signals
        .iter()
        .filter(|s| s.last_at > verify_from)
        .map(|s| {
            format!(
                "{} still anomalous at {}",
                s.series.signal,
                format_ts(s.last_at)
            )
        })
        .collect();
    if !still.is_empty() {
        return Verdict::NotRecovered(still.join("; "));
    }
    let needed = verify_from.saturating_add(window_ms);
    let mut short: Vec<String> = Vec::new();
    let mut signals: Vec<&str> = incident
        .signals
        .iter()
        .map(|s| s.series.signal.as_str())
        .collect();
    signals.sort_unstable();
    signals.dedup();
    for signal in &signals {
        match cursors.get(*signal).copied().flatten() {
            Some(until) if until >= needed => {}
            Some(until) => short.push(format!(
                "{signal} has data only up to {} (needs {})",
                format_ts(until),
                format_ts(needed)
            )),
            None => short.push(format!("{signal} has delivered no data")),
        }
    }
    let firing: Vec<&str> = incident
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .map(|a| a.name.as_str())
        .collect();
    if short.is_empty() && firing.is_empty() {
        let what = if signals.is_empty() {
            "every member alert resolved".to_string()
        } else {
            format!(
                "{} normal from {} to {}",
                signals.join(", "),
                format_ts(verify_from),
                format_ts(needed)
            )
        };
        return Verdict::Recovered(what);
    }
    if !timed_out {
        return Verdict::Pending;
    }
    let mut reasons = short;
    if !firing.is_empty() {
        reasons.push(format!("alerts still firing: {}", firing.join(", ")));
    }
    Verdict::NotRecovered(format!(
        "verification timed out without evidence of recovery: {}",
        reasons.join("; ")
    ))
}

/// A predictive incident has nothing anomalous to go quiet: the action
/// helped when a forecast made after it no longer predicts the breach (or
/// the scanner has resolved the incident), and did not when the breach is
/// still predicted at the timeout.
fn judge_prediction(
    incident: &Incident,
    prediction: &PredictionRecord,
    verify_from: TimestampMs,
    timed_out: bool,
) -> Verdict {
    let fresh = prediction.at >= verify_from;
    if incident.state == IncidentState::Resolved
        && incident.resolved_at.is_some_and(|t| t >= verify_from)
    {
        return Verdict::Recovered(format!(
            "the breach of {} is no longer predicted (incident resolved at {})",
            prediction.limit_text,
            format_ts(incident.resolved_at.unwrap_or(verify_from))
        ));
    }
    if fresh && prediction.cleared() {
        return Verdict::Recovered(format!(
            "a forecast made at {} gives {:.0} % for reaching {} (below {:.0} %)",
            format_ts(prediction.at),
            prediction.probability * 100.0,
            prediction.limit_text,
            prediction.clear_probability * 100.0
        ));
    }
    if !timed_out {
        return Verdict::Pending;
    }
    let latest = if fresh {
        format!(
            "the forecast made at {} still gives {:.0} %",
            format_ts(prediction.at),
            prediction.probability * 100.0
        )
    } else {
        "no forecast was made after the action".to_string()
    };
    Verdict::NotRecovered(format!(
        "verification timed out with the breach of {} still predicted: {latest}",
        prediction.limit_text
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{Peak, Severity, SignalEvidence};
    use crate::signal::SeriesKey;

    const T0: TimestampMs = 1_700_000_000_000;
    const MIN: i64 = 60_000;

    fn incident(last_anomaly: TimestampMs) -> Incident {
        Incident {
            id: Some(1),
            cluster: "c".into(),
            group: BTreeMap::new(),
            state: IncidentState::Open,
            severity: Severity::Warning,
            opened_at: T0,
            last_anomaly_at: last_anomaly,
            resolved_at: None,
            anomaly_count: 3,
            signals: vec![SignalEvidence {
                series: SeriesKey::new("error_ratio", Vec::new()),
                first_at: T0,
                last_at: last_anomaly,
                anomaly_count: 3,
                peak: Peak {
                    t: T0,
                    value: 0.15,
                    expected: 0.005,
                    spread: 0.002,
                    score: 70.0,
                },
                samples: Vec::new(),
                anomalous_at: Vec::new(),
            }],
            alerts: Vec::new(),
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: None,
            timeline: Vec::new(),
        }
    }

    fn cursors(until: Option<TimestampMs>) -> BTreeMap<String, Option<TimestampMs>> {
        BTreeMap::from([("error_ratio".to_string(), until)])
    }

    #[test]
    fn quiet_data_for_the_window_is_a_recovery() {
        let from = T0 + 10 * MIN;
        let v = judge(
            &incident(T0 + 5 * MIN),
            from,
            3 * MIN,
            &cursors(Some(from + 3 * MIN)),
            false,
        );
        assert!(matches!(v, Verdict::Recovered(_)), "{v:?}");
    }

    #[test]
    fn an_anomaly_after_the_settle_time_is_not() {
        let from = T0 + 10 * MIN;
        let v = judge(
            &incident(from + MIN),
            from,
            3 * MIN,
            &cursors(Some(from + 9 * MIN)),
            false,
        );
        assert!(
            matches!(&v, Verdict::NotRecovered(r) if r.contains("error_ratio still anomalous")),
            "{v:?}"
        );
    }

    #[test]
    fn missing_data_waits_then_fails_never_passes() {
        let from = T0 + 10 * MIN;
        let inc = incident(T0 + 5 * MIN);
        assert_eq!(
            judge(&inc, from, 3 * MIN, &cursors(Some(from + MIN)), false),
            Verdict::Pending
        );
        let v = judge(&inc, from, 3 * MIN, &cursors(Some(from + MIN)), true);
        assert!(
            matches!(&v, Verdict::NotRecovered(r) if r.contains("timed out") && r.contains("data only up to")),
            "{v:?}"
        );
        let v = judge(&inc, from, 3 * MIN, &cursors(None), true);
        assert!(
            matches!(&v, Verdict::NotRecovered(r) if r.contains("no data")),
            "{v:?}"
        );
    }

    fn predicted(at: TimestampMs, probability: f64) -> Incident {
        let mut inc = incident(at);
        inc.prediction = Some(Box::new(PredictionRecord {
            signal: "memory".into(),
            limit: 1024.0,
            upper: true,
            limit_text: "1 KiB".into(),
            probability,
            horizon_ms: 86_400_000,
            at,
            expected_breach_at: None,
            earliest_breach_at: None,
            latest_breach_at: None,
            model: String::new(),
            reasoning: String::new(),
            history: Vec::new(),
            forecast: Vec::new(),
            evaluations: 2,
            clear_probability: 0.5,
        }));
        inc
    }

    #[test]
    fn predictive_incident_recovers_when_a_later_forecast_clears_it() {
        let from = T0 + 10 * MIN;
        // The last forecast predates the action: wait, then fail at the timeout.
        let before = predicted(T0, 0.95);
        assert_eq!(
            judge(&before, from, MIN, &cursors(None), false),
            Verdict::Pending
        );
        match judge(&before, from, MIN, &cursors(None), true) {
            Verdict::NotRecovered(why) => {
                assert!(why.contains("no forecast was made after"), "{why}")
            }
            v => panic!("{v:?}"),
        }
        // A later forecast still predicting the breach is not a recovery.
        let still = predicted(from + 30 * MIN, 0.9);
        assert_eq!(
            judge(&still, from, MIN, &cursors(None), false),
            Verdict::Pending
        );
        assert!(matches!(
            judge(&still, from, MIN, &cursors(None), true),
            Verdict::NotRecovered(_)
        ));
        // A later forecast below the clear probability is.
        let cleared = predicted(from + 30 * MIN, 0.1);
        assert!(matches!(
            judge(&cleared, from, MIN, &cursors(None), false),
            Verdict::Recovered(_)
        ));
        // So is the scanner resolving the incident.
        let mut resolved = predicted(from + 30 * MIN, 0.6);
        resolved.state = IncidentState::Resolved;
        resolved.resolved_at = Some(from + 60 * MIN);
        assert!(matches!(
            judge(&resolved, from, MIN, &cursors(None), false),
            Verdict::Recovered(_)
        ));
    }
}
