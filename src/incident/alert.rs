//! Alerts received from Alertmanager, as the store and the incident stage
//! see them.
//!
//! The webhook (src/server/alerts.rs) validates a payload into
//! [`NewAlert`]s; the store keeps each alert once under its identity
//! `(fingerprint, starts_at)` ([`Store::record_alerts`](super::Store::record_alerts))
//! and hands back stored [`Alert`]s; the incident stage receives those in an
//! [`AlertBatch`] and folds them into incidents with
//! [`Correlator::on_alert`](super::Correlator::on_alert).
//!
//! An identity is *one firing episode* of one alert: Prometheus gives an
//! alert that fires again after resolving a new `startsAt`. So `resolved` is
//! final for an identity; a `firing` notification arriving after the
//! `resolved` one is a late retry and changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::signal::TimestampMs;

/// Store id of a received alert.
pub type AlertId = i64;

/// Whether an alert is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The alert's condition holds.
    Firing,
    /// The alert's condition no longer holds (`ends_at` says since when).
    Resolved,
}

impl AlertStatus {
    /// The lowercase name used by Alertmanager, the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }

    /// The status named `s`, if any (for rows read from the store).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "firing" => Some(AlertStatus::Firing),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }
}

/// One validated alert of a webhook payload, not stored yet.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    /// Alertmanager's fingerprint of the label set (hex).
    pub fingerprint: String,
    /// Firing or resolved, as Alertmanager says.
    pub status: AlertStatus,
    /// The alert's labels (`alertname`, `namespace`, `service`, ...).
    pub labels: BTreeMap<String, String>,
    /// The alert's annotations (`summary`, `description`, runbook links).
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing (wall time, ms).
    pub starts_at: TimestampMs,
    /// When it stopped; only kept for resolved alerts (for a firing alert
    /// Alertmanager sends an expected expiry, which means nothing yet).
    pub ends_at: Option<TimestampMs>,
    /// Link to the rule's expression in the sender (Prometheus graph URL).
    pub generator_url: String,
}

/// An alert as stored: the latest state of one identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Store id (stable across deliveries of the same identity).
    pub id: AlertId,
    /// Alertmanager's fingerprint of the label set (hex).
    pub fingerprint: String,
    /// Latest status.
    pub status: AlertStatus,
    /// The alert's labels.
    pub labels: BTreeMap<String, String>,
    /// The alert's annotations, as first received.
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing (wall time, ms).
    pub starts_at: TimestampMs,
    /// When it resolved; `None` while firing.
    pub ends_at: Option<TimestampMs>,
    /// Link to the rule's expression in the sender.
    pub generator_url: String,
    /// The Alertmanager receiver that delivered it.
    pub receiver: String,
    /// Wall time of the first delivery.
    pub received_at: TimestampMs,
}

impl Alert {
    /// The `alertname` label, or `(unnamed alert)`: what people call it.
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map_or("(unnamed alert)", String::as_str)
    }
}

/// An alert change the incident stage applied: the row and the status it
/// applied. Marking it processed is conditional on that status, so a
/// `resolved` stored after the stage read `firing` stays unprocessed until
/// it is applied too.
pub type AppliedAlert = (AlertId, AlertStatus);

/// What storing one delivered alert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertReceipt {
    /// A new identity: stored, to be applied to incidents.
    New,
    /// A known firing identity is now resolved: to be applied.
    Resolved,
    /// Nothing new (a retry, or a late `firing` after `resolved`); counted
    /// as deduplicated and not applied again.
    Duplicate,
}

/// Stored alerts the incident stage has to apply, in store order; the
/// message the webhook sends down the bounded alerts channel.
#[derive(Debug, Clone)]
pub struct AlertBatch {
    /// The alerts, each in the state just stored.
    pub alerts: Vec<Alert>,
}
