//! Incidents: grouping anomalies, their lifecycle, storage and reports.
//!
//! The [`Correlator`] is pure: it takes anomalies and data-time ticks and
//! returns [`IncidentUpdate`]s. The daemon's incident stage writes each
//! update to the [`Store`] *before* anything else sees it, so a crash never
//! loses an incident that was announced. [`report`] renders what the store
//! holds as Markdown.

pub mod alert;
mod correlate;
pub mod log_change;
pub mod noise;
pub mod prediction;
pub mod report;
mod store;

pub use alert::{Alert, AlertBatch, AlertId, AlertReceipt, AlertStatus, AppliedAlert, NewAlert};
pub use correlate::{CorrelationConfig, Correlator, IncidentUpdate, UpdateKind};
pub use log_change::{LogChangeKind, LogTemplateChange};
pub use prediction::{ForecastBand, PredictionRecord};
pub use store::{
    ActionPlanRecord, AlertFilter, IncidentFilter, IncidentPage, NewSilence, Setting, Store,
    StoreError,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::signal::{Sample, SeriesKey, TimestampMs};

/// Database id of an incident; stable, used in URLs and notifications.
pub type IncidentId = i64;

/// Where an incident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// Anomalies are ongoing or recent.
    Open,
    /// Every signal has been normal for `incidents.resolve_after`.
    Resolved,
}

impl IncidentState {
    /// The lowercase name used in the API, the store and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Resolved => "resolved",
        }
    }
}

/// How urgently a person should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// One signal, moderately off.
    Warning,
    /// A very large deviation, or several signals off at once.
    Critical,
}

impl Severity {
    /// The lowercase name used in the API, the store and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// The most extreme sample of a signal within an incident.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// When it was observed.
    pub t: TimestampMs,
    /// The observed value.
    pub value: f64,
    /// What the detector expected.
    pub expected: f64,
    /// The detector's normal spread at the time.
    pub spread: f64,
    /// Signed deviation in spreads.
    pub score: f64,
}

/// Evidence one anomalous series contributes to an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalEvidence {
    /// The series.
    pub series: SeriesKey,
    /// First anomalous sample.
    pub first_at: TimestampMs,
    /// Latest anomalous sample.
    pub last_at: TimestampMs,
    /// Anomalous samples seen.
    pub anomaly_count: u64,
    /// The sample with the largest |score|.
    pub peak: Peak,
    /// Samples around the anomaly (lead-up plus anomalous ones), in time
    /// order, capped at `incidents.evidence_samples`.
    pub samples: Vec<Sample>,
    /// Times of the anomalous samples among `samples`, for highlighting.
    pub anomalous_at: Vec<TimestampMs>,
}

/// An Alertmanager alert that is a member of an incident.
///
/// One entry per firing episode (`fingerprint`, `starts_at`); an alert that
/// resolves and fires again adds a second entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvidence {
    /// Store id of the alert (`alerts` table).
    pub alert_id: AlertId,
    /// Alertmanager's fingerprint of the label set.
    pub fingerprint: String,
    /// The `alertname` label, for people.
    pub name: String,
    /// Firing or resolved (as last received).
    pub status: AlertStatus,
    /// When it started firing.
    pub starts_at: TimestampMs,
    /// When it resolved; `None` while firing.
    pub ends_at: Option<TimestampMs>,
    /// All its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations (`summary`, `description`, ...).
    pub annotations: BTreeMap<String, String>,
    /// Link to the rule in the sender.
    pub generator_url: String,
    /// Firing episodes of this fingerprint in a row, this one included,
    /// each starting within `noise.flapping.window` of the previous one:
    /// 1 for a first firing; at `noise.flapping.min_episodes` or more the
    /// alert is flapping (see [`Incident::flap_count`]). `serde(default)`:
    /// incidents stored before flap counting load as 0.
    #[serde(default)]
    pub flap_count: u32,
}

/// One line of an incident's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Data time of the event.
    pub at: TimestampMs,
    /// Machine-readable kind: `opened`, `signal_added`, `severity_raised`, `resolved`.
    pub kind: String,
    /// A sentence for people.
    pub message: String,
}

/// A group of related anomalies, with everything needed to explain it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Database id; `None` until the store has saved it.
    pub id: Option<IncidentId>,
    /// Cluster name from config.
    pub cluster: String,
    /// Values of the `incidents.group_by` labels that define the group.
    pub group: BTreeMap<String, String>,
    /// Lifecycle state.
    pub state: IncidentState,
    /// Current severity (only ever rises while open).
    pub severity: Severity,
    /// Data time of the first anomaly.
    pub opened_at: TimestampMs,
    /// Data time of the latest anomaly (for an incident opened by an
    /// alert, the alert's start until an anomaly joins).
    pub last_anomaly_at: TimestampMs,
    /// Data time at which it was resolved.
    pub resolved_at: Option<TimestampMs>,
    /// Anomalous samples across all signals.
    pub anomaly_count: u64,
    /// Per-series evidence, in the order the series joined.
    pub signals: Vec<SignalEvidence>,
    /// Member alerts from Alertmanager, in the order they joined.
    /// `serde(default)`: incidents stored before alert intake existed have
    /// none and must still load.
    #[serde(default)]
    pub alerts: Vec<AlertEvidence>,
    /// Ranked root-cause hypotheses (issue 5); `None` until diagnosed.
    #[serde(default)]
    pub diagnosis: Option<crate::diagnose::Diagnosis>,
    /// The policy gate's decisions about this incident, oldest first.
    #[serde(default)]
    pub decisions: Vec<crate::remediate::record::DecisionRecord>,
    /// Log templates whose rate changed around the start (issue 10);
    /// empty without a log source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogTemplateChange>,
    /// Set on a *predictive* incident (issue 11): the forecast that opened
    /// it. Its presence is what makes the incident predictive
    /// ([`Incident::kind`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Box<PredictionRecord>>,
    /// History, oldest first.
    pub timeline: Vec<TimelineEntry>,
}

/// What opened an incident; policies match on it (`match.incident.kinds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// Detected by the anomaly detectors.
    Anomaly,
    /// Opened by Alertmanager alerts only.
    Alert,
    /// A forecast predicts a breach.
    Predictive,
}

impl IncidentKind {
    /// The lowercase name used in policies, the API and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Anomaly => "anomaly",
            IncidentKind::Alert => "alert",
            IncidentKind::Predictive => "predictive",
        }
    }

    /// The kind of `incident`; see [`Incident::kind`].
    pub fn of(incident: &Incident) -> IncidentKind {
        incident.kind()
    }
}

impl Incident {
    /// Stable text form of the group, e.g. `namespace=shop,service=cart`;
    /// the store keys open incidents by it.
    pub fn group_key(&self) -> String {
        group_key(&self.group)
    }

    /// `predictive` when a forecast opened it, `alert` when it has alerts
    /// and no detected signals, else `anomaly`.
    pub fn kind(&self) -> IncidentKind {
        if self.prediction.is_some() {
            IncidentKind::Predictive
        } else if self.signals.is_empty() && !self.alerts.is_empty() {
            IncidentKind::Alert
        } else {
            IncidentKind::Anomaly
        }
    }

    /// A label of the group, if present (e.g. `service`).
    pub fn group_label(&self, name: &str) -> Option<&str> {
        self.group.get(name).map(String::as_str)
    }

    /// Short human name of what is affected: `cart (shop)` or the group key.
    pub fn subject(&self) -> String {
        match (self.group_label("service"), self.group_label("namespace")) {
            (Some(s), Some(ns)) => format!("{s} ({ns})"),
            (Some(s), None) => s.to_string(),
            _ => self.group_key(),
        }
    }

    /// True while any member alert is firing: such an incident is not
    /// resolved, however quiet its signals are.
    pub fn has_firing_alerts(&self) -> bool {
        self.alerts.iter().any(|a| a.status == AlertStatus::Firing)
    }

    /// The highest flap count of a member alert (0 without alerts): how
    /// many times in a row the most flapping alert fired.
    pub fn flap_count(&self) -> u32 {
        self.alerts.iter().map(|a| a.flap_count).max().unwrap_or(0)
    }

    /// Folds `other` — the same incident identity seen again, e.g. replayed
    /// after a crash, or a new episode starting at the very same instant —
    /// into `self` without losing anything either side holds: signals and
    /// alerts are united (per series / per alert episode, the more advanced
    /// copy wins), counts and times take the furthest value, severity the
    /// higher one, and the state is `other`'s (the newer observation).
    /// Merging a copy of itself changes nothing.
    pub fn merge_from(&mut self, other: &Incident) {
        for theirs in &other.signals {
            match self.signals.iter_mut().find(|s| s.series == theirs.series) {
                Some(ours)
                    if theirs.last_at > ours.last_at
                        || (theirs.last_at == ours.last_at
                            && theirs.anomaly_count > ours.anomaly_count) =>
                {
                    *ours = theirs.clone();
                }
                Some(_) => {}
                None => self.signals.push(theirs.clone()),
            }
        }
        for theirs in &other.alerts {
            let same = |a: &&mut AlertEvidence| {
                a.alert_id == theirs.alert_id && a.starts_at == theirs.starts_at
            };
            match self.alerts.iter_mut().find(same) {
                // A resolved copy is final for its episode.
                Some(ours) if ours.ends_at.is_none() => *ours = theirs.clone(),
                Some(_) => {}
                None => self.alerts.push(theirs.clone()),
            }
        }
        for entry in &other.timeline {
            if !self.timeline.contains(entry) {
                self.timeline.push(entry.clone());
            }
        }
        self.timeline.sort_by_key(|e| e.at);
        self.severity = self.severity.max(other.severity);
        self.last_anomaly_at = self.last_anomaly_at.max(other.last_anomaly_at);
        self.anomaly_count = self.anomaly_count.max(other.anomaly_count);
        self.state = other.state;
        self.resolved_at = other.resolved_at;
        if self.diagnosis.is_none() {
            self.diagnosis = other.diagnosis.clone();
        }
        for change in &other.logs {
            if !self.logs.contains(change) {
                self.logs.push(change.clone());
            }
        }
        if other.prediction.is_some() {
            self.prediction = other.prediction.clone();
        }
        for decision in &other.decisions {
            if !self.decisions.contains(decision) {
                self.decisions.push(decision.clone());
            }
        }
    }

    /// Evidence with the largest |peak score|: the headline signal.
    pub fn headline(&self) -> Option<&SignalEvidence> {
        self.signals.iter().max_by(|a, b| {
            a.peak
                .score
                .abs()
                .partial_cmp(&b.peak.score.abs())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    }
}

/// Text form of a group: `k=v` pairs joined by commas, in label order.
pub fn group_key(group: &BTreeMap<String, String>) -> String {
    group
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
