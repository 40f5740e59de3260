//! Sample incidents for the event-sink tests (MQTT and webhook), so both
//! publish exactly the same thing.

use std::collections::BTreeMap;

use aiopsd::incident::{Incident, IncidentState, Peak, Severity, SignalEvidence, TimelineEntry};
use aiopsd::signal::{Sample, SeriesKey, TimestampMs};

/// An open warning incident on `shop/<service>`: one `error_ratio`
/// signal, 19 spreads above normal at `t0`, with its `opened` entry.
pub fn sample_incident(service: &str, t0: TimestampMs) -> Incident {
    let group: BTreeMap<String, String> = [("namespace", "shop"), ("service", service)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Incident {
        id: None,
        cluster: "test".into(),
        group: group.clone(),
        state: IncidentState::Open,
        severity: Severity::Warning,
        opened_at: t0,
        last_anomaly_at: t0,
        resolved_at: None,
        anomaly_count: 1,
        signals: vec![SignalEvidence {
            series: SeriesKey::new("error_ratio", group),
            first_at: t0,
            last_at: t0,
            anomaly_count: 1,
            peak: Peak {
                t: t0,
                value: 0.2,
                expected: 0.01,
                spread: 0.01,
                score: 19.0,
            },
            samples: vec![Sample { t: t0, v: 0.2 }],
            anomalous_at: vec![t0],
        }],
        alerts: Vec::new(),
        diagnosis: None,
        decisions: Vec::new(),
        logs: Vec::new(),
        prediction: None,
        timeline: vec![TimelineEntry {
            at: t0,
            kind: "opened".into(),
            message: format!("Opened: {service} error_ratio is 19.0 spreads above normal."),
        }],
    }
}
