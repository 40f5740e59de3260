//! The versioned event schema `aiopsd.event/v1` (docs/EVENTS.md is the
//! reference for consumers; keep the two in step).
//!
//! Every event carries a stable `id` (`<cluster>:<incident id>:<seq>`) and
//! the per-incident sequence number `seq`, assigned in the same store
//! transaction as the change that caused it. A consumer deduplicates by
//! `id` (delivery is at-least-once) and orders one incident's events by
//! `seq`. Fields are only ever *added* within v1; a breaking change gets a
//! new schema name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::incident::{Incident, IncidentId};
use crate::signal::{format_ts, TimestampMs};

/// The schema name every event carries in `schema`.
pub const SCHEMA: &str = "aiopsd.event/v1";

/// What happened. The wire name (`incident.opened`) is the `kind` field;
/// the part after the dot is the last topic level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A new incident was opened.
    #[serde(rename = "incident.opened")]
    IncidentOpened,
    /// An open incident got more evidence (anomalies, a new signal).
    #[serde(rename = "incident.updated")]
    IncidentUpdated,
    /// An open incident's severity rose.
    #[serde(rename = "incident.escalated")]
    IncidentEscalated,
    /// An incident was resolved.
    #[serde(rename = "incident.resolved")]
    IncidentResolved,
    /// An action waits for a person's approval.
    #[serde(rename = "action.proposed")]
    ActionProposed,
    /// A pending action was approved.
    #[serde(rename = "action.approved")]
    ActionApproved,
    /// A pending action was denied.
    #[serde(rename = "action.denied")]
    ActionDenied,
    /// A pending action expired without a decision.
    #[serde(rename = "action.expired")]
    ActionExpired,
    /// An action was carried out (remediation, issue 9).
    #[serde(rename = "action.executed")]
    ActionExecuted,
    /// An executed action was verified to have helped.
    #[serde(rename = "action.verified")]
    ActionVerified,
    /// An executed action was rolled back.
    #[serde(rename = "action.reverted")]
    ActionReverted,
}

/// Every kind, for docs and tests.
pub const ALL_KINDS: [EventKind; 11] = [
    EventKind::IncidentOpened,
    EventKind::IncidentUpdated,
    EventKind::IncidentEscalated,
    EventKind::IncidentResolved,
    EventKind::ActionProposed,
    EventKind::ActionApproved,
    EventKind::ActionDenied,
    EventKind::ActionExpired,
    EventKind::ActionExecuted,
    EventKind::ActionVerified,
    EventKind::ActionReverted,
];

impl EventKind {
    /// The wire name, e.g. `incident.opened`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::IncidentOpened => "incident.opened",
            EventKind::IncidentUpdated => "incident.updated",
            EventKind::IncidentEscalated => "incident.escalated",
            EventKind::IncidentResolved => "incident.resolved",
            EventKind::ActionProposed => "action.proposed",
            EventKind::ActionApproved => "action.approved",
            EventKind::ActionDenied => "action.denied",
            EventKind::ActionExpired => "action.expired",
            EventKind::ActionExecuted => "action.executed",
            EventKind::ActionVerified => "action.verified",
            EventKind::ActionReverted => "action.reverted",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<EventKind> {
        ALL_KINDS.into_iter().find(|k| k.as_str() == s)
    }

    /// The last topic level: `opened`, `approved`, ...
    pub fn topic_suffix(self) -> &'static str {
        let s = self.as_str();
        s.split_once('.').map_or(s, |(_, event)| event)
    }

    /// True for action events (topic under `actions/<action id>`).
    pub fn is_action(self) -> bool {
        self.as_str().starts_with("action.")
    }

    /// Low-priority events may be refused when the outbox is full; all
    /// others are always queued. Only `incident.updated` is low priority:
    /// it is the frequent one, and the next update or the resolution
    /// carries the same information again.
    pub fn priority(self) -> Priority {
        match self {
            EventKind::IncidentUpdated => Priority::Low,
            _ => Priority::High,
        }
    }
}

/// Whether an event may be refused when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// May be refused (with an ERROR line and a metric) when full.
    Low,
    /// Always queued.
    High,
}

/// One event as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Stable id, `<cluster>:<incident_id>:<seq>`; deduplicate by it.
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// Cluster name from config.
    pub cluster: String,
    /// The incident this event belongs to.
    pub incident_id: IncidentId,
    /// Position in the incident's event sequence, from 1; gaps are possible
    /// (a low-priority event refused by a full outbox), reordering is not.
    pub seq: u64,
    /// When it happened: data time for incident events, wall time for
    /// action events (RFC 3339 UTC).
    pub at: String,
    /// A sentence for people.
    pub message: String,
    /// The incident after the change (incident events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<IncidentSnapshot>,
    /// The action after the change (action events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionSnapshot>,
}

impl Event {
    /// The stable id of event `seq` of an incident.
    pub fn make_id(cluster: &str, incident_id: IncidentId, seq: u64) -> String {
        format!("{cluster}:{incident_id}:{seq}")
    }

    /// An incident event.
    pub fn for_incident(
        kind: EventKind,
        incident: &Incident,
        incident_id: IncidentId,
        seq: u64,
        at: TimestampMs,
        message: String,
    ) -> Event {
        Event {
            schema: SCHEMA.into(),
            id: Event::make_id(&incident.cluster, incident_id, seq),
            kind,
            cluster: incident.cluster.clone(),
            incident_id,
            seq,
            at: format_ts(at),
            message,
            incident: Some(IncidentSnapshot::of(incident, incident_id)),
            action: None,
        }
    }

    /// An action event.
    pub fn for_action(
        kind: EventKind,
        cluster: &str,
        action: ActionSnapshot,
        seq: u64,
        at: TimestampMs,
        message: String,
    ) -> Event {
        Event {
            schema: SCHEMA.into(),
            id: Event::make_id(cluster, action.incident_id, seq),
            kind,
            cluster: cluster.to_string(),
            incident_id: action.incident_id,
            seq,
            at: format_ts(at),
            message,
            incident: None,
            action: Some(action),
        }
    }

    /// Topic of this event below the topic prefix:
    /// `<cluster>/incidents/<id>/<event>`, or
    /// `<cluster>/incidents/<id>/actions/<action id>/<event>` for action
    /// events — under the incident, so one subscription
    /// (`<prefix>/<cluster>/incidents/<id>/#`) gets all of an incident's
    /// events in order. The outbox stores this; each sink adds its prefix.
    pub fn route(&self) -> String {
        match &self.action {
            Some(a) if self.kind.is_action() => format!(
                "{}/incidents/{}/actions/{}/{}",
                self.cluster,
                self.incident_id,
                a.id,
                self.kind.topic_suffix()
            ),
            _ => format!(
                "{}/incidents/{}/{}",
                self.cluster,
                self.incident_id,
                self.kind.topic_suffix()
            ),
        }
    }
}

/// The retained "current state" topic of an incident.
pub fn state_topic(prefix: &str, cluster: &str, incident_id: IncidentId) -> String {
    format!("{prefix}/{cluster}/incidents/{incident_id}/state")
}

/// What an event says about an incident: the summary a dashboard shows,
/// not the full evidence (that is one API call away).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentSnapshot {
    /// Incident id.
    pub id: IncidentId,
    /// `open` or `resolved`.
    pub state: String,
    /// `warning` or `critical`.
    pub severity: String,
    /// Short name of what is affected, e.g. `cart (shop)`.
    pub subject: String,
    /// The group labels.
    pub group: BTreeMap<String, String>,
    /// Data time of the first anomaly (RFC 3339).
    pub opened_at: String,
    /// Data time of the latest anomaly.
    pub last_anomaly_at: String,
    /// Data time of resolution, if resolved.
    pub resolved_at: Option<String>,
    /// Anomalous samples so far.
    pub anomaly_count: u64,
    /// Names of the anomalous signals, in the order they joined.
    pub signals: Vec<String>,
    /// API path of the full incident.
    pub url: String,
}

impl IncidentSnapshot {
    /// The summary of `incident` saved under `id`.
    pub fn of(incident: &Incident, id: IncidentId) -> IncidentSnapshot {
        let mut signals: Vec<String> = Vec::new();
        for s in &incident.signals {
            if !signals.contains(&s.series.signal) {
                signals.push(s.series.signal.clone());
            }
        }
        IncidentSnapshot {
            id,
            state: incident.state.as_str().into(),
            severity: incident.severity.as_str().into(),
            subject: incident.subject(),
            group: incident.group.clone(),
            opened_at: format_ts(incident.opened_at),
            last_anomaly_at: format_ts(incident.last_anomaly_at),
            resolved_at: incident.resolved_at.map(format_ts),
            anomaly_count: incident.anomaly_count,
            signals,
            url: format!("/api/v1/incidents/{id}"),
        }
    }
}

/// What an event says about an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionSnapshot {
    /// Action id.
    pub id: i64,
    /// The incident it would remedy.
    pub incident_id: IncidentId,
    /// What it would do, for people.
    pub description: String,
    /// `pending`, `approved`, `denied` or `expired` (remediation adds more).
    pub state: String,
    /// When it was requested (RFC 3339).
    pub requested_at: String,
    /// When it expires if undecided.
    pub expires_at: String,
    /// Who decided, as they said.
    pub decided_by: Option<String>,
    /// Why, as they said.
    pub reason: Option<String>,
    /// When the decision (or expiry) was recorded.
    pub decided_at: Option<String>,
    /// `api`, `mqtt` or `policy`.
    pub channel: Option<String>,
    /// Remediation's progress (`planned`, `dry_run`, `executing`,
    /// `executed`, `verified`, `failed`, `reverted`, ...); absent for an
    /// action that remediation does not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution: Option<String>,
    /// The machine-readable plan the policy gate attached.
    pub detail: serde_json::Value,
    /// API path of the action.
    pub url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_roundtrip_their_wire_names() {
        for kind in ALL_KINDS {
            let json = serde_json::to_string(&kind).expect("serialize");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            assert!(!kind.topic_suffix().contains('.'));
        }
        assert_eq!(EventKind::IncidentEscalated.topic_suffix(), "escalated");
        assert_eq!(EventKind::IncidentUpdated.priority(), Priority::Low);
        assert_eq!(EventKind::IncidentResolved.priority(), Priority::High);
    }

    #[test]
    fn topics() {
        let action = ActionSnapshot {
            id: 7,
            incident_id: 42,
            description: "restart".into(),
            state: "approved".into(),
            requested_at: format_ts(0),
            expires_at: format_ts(0),
            decided_by: Some("alice".into()),
            reason: Some("ok".into()),
            decided_at: None,
            channel: Some("api".into()),
            execution: None,
            detail: serde_json::Value::Null,
            url: "/api/v1/actions/7".into(),
        };
        let e = Event::for_action(EventKind::ActionApproved, "prod", action, 3, 0, "x".into());
        assert_eq!(e.id, "prod:42:3");
        assert_eq!(e.route(), "prod/incidents/42/actions/7/approved");
        assert_eq!(
            state_topic("aiopsd", "prod", 42),
            "aiopsd/prod/incidents/42/state"
        );
    }
}
