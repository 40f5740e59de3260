//! The evidence bundle: everything aiopsd knows about an incident, as
//! items a person (or the LLM) can check, each with its source, its time
//! and a stable id that hypotheses cite.
//!
//! Each source plugs in by adding items: metrics and alerts come from the
//! incident itself, changes and pod/node state from the Kubernetes API,
//! log templates from the log miner. The rule engine and the LLM read the
//! same bundle, so what the report cites is exactly what was weighed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::remediate::plan::WorkloadRef;
use crate::signal::TimestampMs;

/// Stable reference of one evidence item within its bundle, e.g. `m1`,
/// `a2`, `c1`: a letter for the source and a counter. Hypotheses and LLM
/// answers cite these; an id not in the bundle is a hallucination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EvidenceId(pub String);

impl fmt::Display for EvidenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceSource {
    /// A detector flagged this series (Prometheus).
    Metric,
    /// A series that moved with the incident (Prometheus, ranked by lagged
    /// correlation).
    Correlated,
    /// An Alertmanager alert that is a member of the incident.
    Alert,
    /// A change in the cluster: rollout, ConfigMap/Secret, HPA scaling.
    Change,
    /// Pod state: restarts, OOMKilled, CrashLoopBackOff, Pending, readiness.
    Pod,
    /// Node conditions (memory/disk/PID pressure, NotReady).
    Node,
    /// A log template whose rate changed (or that is new).
    Log,
    /// A forecast (trend towards a limit).
    Forecast,
}

impl EvidenceSource {
    /// The one-letter prefix of ids from this source.
    pub fn prefix(self) -> char {
        match self {
            EvidenceSource::Metric => 'm',
            EvidenceSource::Correlated => 'r',
            EvidenceSource::Alert => 'a',
            EvidenceSource::Change => 'c',
            EvidenceSource::Pod => 'p',
            EvidenceSource::Node => 'n',
            EvidenceSource::Log => 'l',
            EvidenceSource::Forecast => 'f',
        }
    }
}

/// What kind of quantity a metric measures; rules reason in these terms
/// (from the signal's `kind` label, else guessed from its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Request latency.
    Latency,
    /// Share of failed requests.
    ErrorRatio,
    /// Requests per second.
    Throughput,
    /// CPU usage or throttling.
    Cpu,
    /// Memory working set.
    Memory,
    /// Queue depth, connection pool use and other saturation signals.
    Saturation,
    /// Container restarts.
    Restarts,
    /// Anything else.
    Other,
}

/// Which way a metric moved relative to its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Movement {
    /// Above the baseline.
    Up,
    /// Below the baseline.
    Down,
}

/// A pod condition worth reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodProblem {
    /// Last termination reason `OOMKilled`.
    OomKilled,
    /// Waiting with reason `CrashLoopBackOff`.
    CrashLoopBackOff,
    /// Pending and unschedulable.
    Unschedulable,
    /// Running but not ready.
    NotReady,
    /// Restart count rose.
    Restarted,
    /// Image could not be pulled.
    ImagePullBackOff,
}

/// What kind of cluster change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A Deployment rolled out a new revision.
    Rollout,
    /// A ConfigMap the workload uses changed.
    ConfigMap,
    /// A Secret the workload uses changed (content never included).
    Secret,
    /// An HPA changed the replica count.
    HpaScaled,
    /// aiopsd's own earlier action.
    Remediation,
}

/// The source-specific content of an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EvidenceDetail {
    /// A flagged series with its anomaly window.
    Anomaly {
        /// Signal (config name).
        signal: String,
        /// Series labels.
        labels: BTreeMap<String, String>,
        /// What it measures.
        kind: MetricKind,
        /// Which way it moved.
        movement: Movement,
        /// Anomaly window start.
        from: TimestampMs,
        /// Anomaly window end (latest anomalous sample).
        to: TimestampMs,
        /// Peak value.
        peak: f64,
        /// What the detector expected at the peak.
        expected: f64,
        /// Peak deviation in spreads.
        score: f64,
    },
    /// A series that moved with the incident.
    Correlated {
        /// Signal (config name).
        signal: String,
        /// Series labels.
        labels: BTreeMap<String, String>,
        /// What it measures.
        kind: MetricKind,
        /// Pearson correlation with the headline series, in [-1, 1].
        correlation: f64,
        /// How much earlier (positive) or later it moved, in ms.
        lead_ms: i64,
    },
    /// A member alert.
    Alert {
        /// `alertname`.
        name: String,
        /// `severity` label, if any.
        severity: Option<String>,
        /// Firing or resolved.
        firing: bool,
        /// All labels.
        labels: BTreeMap<String, String>,
    },
    /// A cluster change.
    Change {
        /// What changed.
        change: ChangeKind,
        /// The object that changed (for a ConfigMap/Secret: its name and
        /// the workload using it).
        object: String,
        /// The workload concerned, when known.
        workload: Option<WorkloadRef>,
        /// Revision before (rollouts).
        from_revision: Option<i64>,
        /// Revision after (rollouts).
        to_revision: Option<i64>,
    },
    /// Pod state.
    Pod {
        /// Pod name.
        pod: String,
        /// Its workload, when known.
        workload: Option<WorkloadRef>,
        /// The problem.
        problem: PodProblem,
        /// How many times (restarts, OOM kills) or 1.
        count: u32,
    },
    /// A node condition.
    Node {
        /// Node name.
        node: String,
        /// Condition type, e.g. `MemoryPressure`, `DiskPressure`, `NotReady`.
        condition: String,
    },
    /// A log template whose rate changed.
    Log {
        /// Service/workload whose logs these are.
        service: String,
        /// The template text (variables masked).
        template: String,
        /// Occurrences per minute before the incident.
        rate_before: f64,
        /// Occurrences per minute during it.
        rate_during: f64,
        /// A few example lines, secrets already redacted.
        examples: Vec<String>,
        /// Downstream service names the lines mention, if any.
        mentions: Vec<String>,
    },
    /// A forecast towards a limit.
    Forecast {
        /// Signal (config name).
        signal: String,
        /// What it measures.
        kind: MetricKind,
        /// The limit.
        limit: f64,
        /// Probability of crossing within the horizon.
        probability: f64,
        /// Expected time of the crossing.
        breach_at: Option<TimestampMs>,
    },
    /// A flagged series that moved *steadily* over its evidence window (a
    /// straight line fits it better than a single step): how a leak looks,
    /// as opposed to a jump that came with traffic. Source `Metric`.
    Trend {
        /// Signal (config name).
        signal: String,
        /// Series labels.
        labels: BTreeMap<String, String>,
        /// What it measures.
        kind: MetricKind,
        /// Which way it moved.
        movement: Movement,
        /// First sample of the fitted window.
        from: TimestampMs,
        /// Last sample of the fitted window.
        to: TimestampMs,
        /// Fitted change per hour, in the series' unit.
        slope_per_hour: f64,
        /// Goodness of the straight-line fit (R²), in [0, 1].
        r2: f64,
    },
}

/// One checkable fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceItem {
    /// Stable id within the bundle.
    pub id: EvidenceId,
    /// Where it came from.
    pub source: EvidenceSource,
    /// When it happened (data time).
    pub at: TimestampMs,
    /// One sentence for people.
    pub summary: String,
    /// The structured content rules and the LLM read.
    pub detail: EvidenceDetail,
}

/// Everything known about one incident, in the order gathered.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EvidenceBundle {
    /// Incident id (`None` for a fixture not yet stored).
    pub incident_id: Option<i64>,
    /// `cart (shop)`-style subject.
    pub subject: String,
    /// When the incident opened.
    pub opened_at: TimestampMs,
    /// Workloads the incident concerns: the only targets an action may name.
    pub targets: Vec<WorkloadRef>,
    /// The items.
    pub items: Vec<EvidenceItem>,
    /// Sources that were asked but failed (e.g. "kubernetes: 403 on pods"),
    /// so a missing item is visibly "unknown", never "absent".
    pub gaps: Vec<String>,
}

impl EvidenceBundle {
    /// Adds an item from `source`, giving it the next id for that source.
    pub fn push(
        &mut self,
        source: EvidenceSource,
        at: TimestampMs,
        summary: String,
        detail: EvidenceDetail,
    ) -> EvidenceId {
        let n = self.items.iter().filter(|i| i.source == source).count() + 1;
        let id = EvidenceId(format!("{}{n}", source.prefix()));
        self.items.push(EvidenceItem {
            id: id.clone(),
            source,
            at,
            summary,
            detail,
        });
        id
    }

    /// The item with this id, if any.
    pub fn get(&self, id: &str) -> Option<&EvidenceItem> {
        self.items.iter().find(|i| i.id.0 == id)
    }
}
