//! aiopsd's own telemetry: metrics exported on /metrics and the health
//! state behind /readyz.
//!
//! Following Vector's internal events, each important event is a method
//! here that writes the log line *and* updates the metric, so the wording
//! and the metric names live in one place.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::signal::{format_ts, now_ms, TimestampMs};

/// An error and all its sources, `outer: inner: innermost`.
///
/// Log lines use this rather than `Display`, which shows only the outer
/// message and would hide the cause (the SQLite or HTTP error underneath).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // Some errors (reqwest's) repeat their cause in their own message.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Label set naming a signal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabel {
    /// The configured signal name.
    pub signal: String,
}

/// Label set naming a source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// The source name (e.g. `prometheus`).
    pub source: String,
}

/// Label set naming an alert status (`firing`, `resolved`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertStatusLabel {
    /// The status Alertmanager sent.
    pub status: String,
}

/// Label set naming why an alert was suppressed (`silence`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The kind of reason.
    pub reason: String,
}

/// Label set of a remediation action metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// `scale`, `restart` or `rollback`.
    pub verb: String,
    /// `executed`, `failed`, `verified`, `not_verified`, `reverted`,
    /// `revert_failed`.
    pub result: String,
}

/// Label set of a policy decision metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `execute`, `dry_run`, `needs_approval` or `refused`.
    pub outcome: String,
}

/// Every metric aiopsd exports about itself.
pub struct Metrics {
    /// The optional LLM's calls, tokens, failures and latency.
    pub llm: crate::diagnose::llm::LlmMetrics,
    decisions: Family<OutcomeLabel, Counter>,
    actions: Family<ActionLabel, Counter>,
    registry: Registry,
    polls: Family<SignalLabel, Counter>,
    poll_errors: Family<SignalLabel, Counter>,
    poll_duration: Family<SignalLabel, Histogram>,
    samples_scored: Counter,
    samples_dropped: Family<SignalLabel, Counter>,
    anomalies: Family<SignalLabel, Counter>,
    series_tracked: Gauge,
    incidents_open: Gauge,
    incidents_opened: Counter,
    incidents_resolved: Counter,
    source_up: Family<SourceLabel, Gauge>,
    /// Broker, outbox and approval metrics; methods in src/publish/telemetry.rs.
    pub(crate) publish: crate::publish::telemetry::PublishMetrics,
    store_errors: Counter,
    leader: Gauge,
    alerts_received: Family<AlertStatusLabel, Counter>,
    alerts_deduplicated: Counter,
    alerts_suppressed: Family<ReasonLabel, Counter>,
    anomalies_suppressed: Family<ReasonLabel, Counter>,
    alert_suppressions_lifted: Counter,
    /// The log pipeline's metrics (src/logs/metrics.rs).
    pub logs: crate::logs::metrics::LogMetrics,
}

impl Metrics {
    /// Registers every metric under the `aiopsd_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("aiopsd");
        let polls = Family::<SignalLabel, Counter>::default();
        let poll_errors = Family::<SignalLabel, Counter>::default();
        let poll_duration = Family::<SignalLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        let samples_scored = Counter::default();
        let samples_dropped = Family::<SignalLabel, Counter>::default();
        let anomalies = Family::<SignalLabel, Counter>::default();
        let series_tracked = Gauge::default();
        let incidents_open = Gauge::default();
        let incidents_opened = Counter::default();
        let incidents_resolved = Counter::default();
        let source_up = Family::<SourceLabel, Gauge>::default();
        let publish = crate::publish::telemetry::PublishMetrics::register(&mut registry);
        let store_errors = Counter::default();
        let leader = Gauge::default();
        let alerts_received = Family::<AlertStatusLabel, Counter>::default();
        let alerts_deduplicated = Counter::default();
        let alerts_suppressed = Family::<ReasonLabel, Counter>::default();
        let anomalies_suppressed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "anomalies_suppressed",
            "Anomalous samples that joined no incident because they match a person's verdict, by reason (listed by GET /api/v1/suppressions)",
            anomalies_suppressed.clone(),
        );
        let alert_suppressions_lifted = Counter::default();
        registry.register(
            "alert_suppressions_lifted",
            "Learned suppressions lifted because the alert kept firing past noise.learned.within",
            alert_suppressions_lifted.clone(),
        );
        let logs = crate::logs::metrics::LogMetrics::register(&mut registry);
        let llm = crate::diagnose::llm::LlmMetrics::register(&mut registry);
        let decisions = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "remediation_decisions",
            "Decisions of the policy gate about incidents, by outcome",
            decisions.clone(),
        );
        let actions = Family::<ActionLabel, Counter>::default();
        registry.register(
            "actions",
            "Remediation actions by verb and result (executed, failed, verified, not_verified, reverted, revert_failed)",
            actions.clone(),
        );
        registry.register(
            "alerts_suppressed",
            "Alert episodes that opened or joined no incident, by reason (listed by GET /api/v1/suppressions)",
            alerts_suppressed.clone(),
        );
        registry.register(
            "alerts_received",
            "Alerts received from Alertmanager and stored, by the status sent (retries included)",
            alerts_received.clone(),
        );
        registry.register(
            "alerts_deduplicated",
            "Received alerts that changed nothing (a retry or a repeated notification)",
            alerts_deduplicated.clone(),
        );
        registry.register(
            "polls",
            "Polls of a signal, successful or not",
            polls.clone(),
        );
        registry.register(
            "poll_errors",
            "Polls that failed after all retries",
            poll_errors.clone(),
        );
        registry.register(
            "poll_duration_seconds",
            "Time one poll took, retries included",
            poll_duration.clone(),
        );
        registry.register(
            "samples_scored",
            "Samples scored by a detector",
            samples_scored.clone(),
        );
        registry.register(
            "samples_dropped",
            "Samples dropped before scoring (NaN, Inf, stale markers)",
            samples_dropped.clone(),
        );
        registry.register("anomalies", "Anomalous samples found", anomalies.clone());
        registry.register(
            "series_tracked",
            "Series with detector state",
            series_tracked.clone(),
        );
        registry.register(
            "incidents_open",
            "Incidents now open",
            incidents_open.clone(),
        );
        registry.register(
            "incidents_opened",
            "Incidents opened since start",
            incidents_opened.clone(),
        );
        registry.register(
            "incidents_resolved",
            "Incidents resolved since start",
            incidents_resolved.clone(),
        );
        registry.register(
            "source_up",
            "1 when the source's last poll succeeded",
            source_up.clone(),
        );
        registry.register(
            "store_errors",
            "Store operations that failed (each retry counts)",
            store_errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica runs the pipeline (holds the leader lease, or election is off)",
            leader.clone(),
        );
        Self {
            registry,
            polls,
            poll_errors,
            poll_duration,
            samples_scored,
            samples_dropped,
            anomalies,
            series_tracked,
            incidents_open,
            incidents_opened,
            incidents_resolved,
            source_up,
            publish,
            store_errors,
            leader,
            alerts_received,
            alerts_deduplicated,
            alerts_suppressed,
            anomalies_suppressed,
            alert_suppressions_lifted,
            logs,
            llm,
            decisions,
            actions,
        }
    }

    /// The policy gate decided about an incident.
    pub fn decision(&self, outcome: &str) {
        self.decisions
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// A remediation action reached `result`.
    pub fn action(&self, verb: &str, result: &str) {
        self.actions
            .get_or_create(&ActionLabel {
                verb: verb.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// The registry in OpenMetrics text, for /metrics.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("Encoding metrics failed; /metrics is incomplete.");
        }
        out
    }

    fn signal(signal: &str) -> SignalLabel {
        SignalLabel {
            signal: signal.to_string(),
        }
    }

    /// A poll returned data.
    pub fn poll_succeeded(&self, signal: &str, series: usize, samples: usize, took: Duration) {
        self.polls.get_or_create(&Self::signal(signal)).inc();
        self.poll_duration
            .get_or_create(&Self::signal(signal))
            .observe(took.as_secs_f64());
        tracing::debug!(
            signal,
            series,
            samples,
            took_ms = took.as_millis() as u64,
            "Poll succeeded."
        );
    }

    /// A poll failed after all retries.
    pub fn poll_failed(&self, signal: &str, error: &dyn std::fmt::Display, took: Duration) {
        self.polls.get_or_create(&Self::signal(signal)).inc();
        self.poll_errors.get_or_create(&Self::signal(signal)).inc();
        self.poll_duration
            .get_or_create(&Self::signal(signal))
            .observe(took.as_secs_f64());
        tracing::warn!(signal, error = %error, "Poll failed after all retries; will try again next interval.");
    }

    /// Samples were dropped before scoring (non-finite values).
    pub fn samples_dropped(&self, signal: &str, count: u64) {
        if count > 0 {
            self.samples_dropped
                .get_or_create(&Self::signal(signal))
                .inc_by(count);
            tracing::trace!(signal, count, "Dropped non-finite samples.");
        }
    }

    /// The engine scored more samples and now tracks `series` series.
    pub fn scored(&self, samples: u64, series: usize) {
        self.samples_scored.inc_by(samples);
        self.series_tracked
            .set(i64::try_from(series).unwrap_or(i64::MAX));
    }

    /// Anomalous samples were found for a signal.
    pub fn anomalies_found(&self, signal: &str, count: u64) {
        self.anomalies
            .get_or_create(&Self::signal(signal))
            .inc_by(count);
    }

    /// An incident was opened (and stored).
    pub fn incident_opened(&self, id: i64, subject: &str, severity: &str, at: TimestampMs) {
        self.incidents_opened.inc();
        self.incidents_open.inc();
        tracing::info!(incident = id, subject, severity, since = %format_ts(at), "Incident opened.");
    }

    /// An incident was resolved (and stored).
    pub fn incident_resolved(&self, id: i64, subject: &str, at: TimestampMs) {
        self.incidents_resolved.inc();
        self.incidents_open.dec();
        tracing::info!(incident = id, subject, at = %format_ts(at), "Incident resolved.");
    }

    /// Sets the open-incident gauge (at start, from the store).
    pub fn set_open_incidents(&self, n: usize) {
        self.incidents_open
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records whether a source is reachable.
    pub fn set_source_up(&self, source: &str, up: bool) {
        self.source_up
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .set(i64::from(up));
    }
}

impl Metrics {
    /// A store operation failed (the caller logs it with its cause and
    /// decides whether to retry). Counted so an alert can fire on a store
    /// that keeps failing while the pipeline waits.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// A webhook delivery from Alertmanager was stored: `firing` and
    /// `resolved` alerts as sent, of which `duplicates` changed nothing.
    /// One DEBUG line per delivery (Alertmanager re-sends every group
    /// interval, so INFO would flood the log).
    pub fn alerts_received(&self, receiver: &str, firing: u64, resolved: u64, duplicates: u64) {
        for (status, n) in [("firing", firing), ("resolved", resolved)] {
            if n > 0 {
                self.alerts_received
                    .get_or_create(&AlertStatusLabel {
                        status: status.to_string(),
                    })
                    .inc_by(n);
            }
        }
        self.alerts_deduplicated.inc_by(duplicates);
        tracing::debug!(
            receiver,
            firing,
            resolved,
            duplicates,
            "Stored alerts from Alertmanager."
        );
    }

    /// An alert episode was suppressed (stored with its suppression record
    /// first): logs it with its reason and counts it.
    pub fn alert_suppressed(&self, reason: &str, alertname: &str, detail: &str) {
        self.alerts_suppressed
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
        tracing::info!(
            reason,
            alertname,
            detail,
            "Suppressed an alert: it opens or joins no incident."
        );
    }

    /// Anomalous samples of `signal` matched a person's verdict (stored as
    /// suppressions first): logs and counts them.
    pub fn anomalies_suppressed(&self, reason: &str, signal: &str, count: u64) {
        self.anomalies_suppressed
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc_by(count);
        tracing::info!(
            reason,
            signal,
            count,
            "Suppressed anomalies: they open or join no incident."
        );
    }

    /// Learned suppressions of alerts still firing past
    /// `noise.learned.within` were lifted; those alerts go to incidents.
    pub fn alert_suppressions_lifted(&self, count: u64) {
        self.alert_suppressions_lifted.inc_by(count);
        tracing::info!(
            count,
            "Lifted learned suppressions of alerts still firing past noise.learned.within; they go to incidents."
        );
    }

    /// This replica started or stopped running the pipeline as the leader.
    /// Summed over replicas it must be 1; an alert fires when it is 0.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Status of one source, shown by /readyz.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceStatus {
    /// Source name.
    pub name: String,
    /// True when the last poll succeeded.
    pub up: bool,
    /// True once the start-up backfill is done.
    pub backfilled: bool,
    /// Wall time of the last successful poll (RFC 3339).
    pub last_success: Option<String>,
    /// The last error, if the last poll failed.
    pub last_error: Option<String>,
    /// Failed polls in a row.
    pub consecutive_failures: u64,
}

/// Shared readiness state: sources report here, /readyz reads it.
#[derive(Debug, Default)]
pub struct Health {
    sources: Mutex<Vec<SourceStatus>>,
    pipeline_running: AtomicBool,
    store_ok: AtomicBool,
    polls_total: AtomicU64,
    /// Status of the event publishers, for /readyz (src/publish/telemetry.rs).
    pub(crate) publishers: Mutex<Vec<crate::publish::telemetry::PublisherStatus>>,
    standby: Mutex<Option<String>>,
}

impl Health {
    /// A fresh health state (not ready).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn with_source(&self, name: &str, f: impl FnOnce(&mut SourceStatus)) {
        let mut sources = match self.sources.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(s) = sources.iter_mut().find(|s| s.name == name) {
            f(s);
        } else {
            let mut s = SourceStatus {
                name: name.to_string(),
                up: false,
                backfilled: false,
                last_success: None,
                last_error: None,
                consecutive_failures: 0,
            };
            f(&mut s);
            sources.push(s);
        }
    }

    /// Declares a source that must succeed before the daemon is ready.
    pub fn register_source(&self, name: &str) {
        self.with_source(name, |_| {});
    }

    /// A poll of `name` succeeded.
    pub fn source_ok(&self, name: &str) {
        self.polls_total.fetch_add(1, Ordering::Relaxed);
        self.with_source(name, |s| {
            s.up = true;
            s.last_error = None;
            s.consecutive_failures = 0;
            s.last_success = Some(format_ts(now_ms()));
        });
    }

    /// A poll of `name` failed; `error` says why.
    pub fn source_failed(&self, name: &str, error: &str) {
        self.polls_total.fetch_add(1, Ordering::Relaxed);
        self.with_source(name, |s| {
            s.up = false;
            s.last_error = Some(error.to_string());
            s.consecutive_failures += 1;
        });
    }

    /// The start-up backfill of `name` is done.
    pub fn source_backfilled(&self, name: &str) {
        self.with_source(name, |s| s.backfilled = true);
    }

    /// Marks the pipeline as running (or stopped).
    pub fn set_pipeline_running(&self, running: bool) {
        self.pipeline_running.store(running, Ordering::Relaxed);
    }

    /// Marks the store as usable (or not).
    pub fn set_store_ok(&self, ok: bool) {
        self.store_ok.store(ok, Ordering::Relaxed);
    }

    /// Marks this replica as a standby (`Some(reason)`, shown as its
    /// `role` by /readyz) or as the one that runs the pipeline (`None`).
    ///
    /// A standby is ready when its store is: it serves probes and
    /// /metrics, and the Service (which selects the leader's pod label,
    /// see `leader`) sends API calls and alerts to the leader only — so
    /// PodDisruptionBudgets and rolling updates work as for any other
    /// Deployment.
    pub fn set_standby(&self, reason: Option<String>) {
        let mut standby = match self.standby.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *standby = reason;
    }

    /// `Some(reason)` while this replica stands by for the leader lease.
    pub fn standby(&self) -> Option<String> {
        match self.standby.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether the daemon is ready, and if not, every reason why.
    pub fn readiness(&self) -> (bool, Vec<String>, Vec<SourceStatus>) {
        let sources = match self.sources.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let mut reasons = Vec::new();
        if self.standby().is_some() {
            // A standby runs no pipeline and polls nothing by design.
            if !self.store_ok.load(Ordering::Relaxed) {
                reasons.push("store is not available".to_string());
            }
            return (reasons.is_empty(), reasons, sources);
        }
        if !self.pipeline_running.load(Ordering::Relaxed) {
            reasons.push("pipeline is not running".to_string());
        }
        if !self.store_ok.load(Ordering::Relaxed) {
            reasons.push("store is not available".to_string());
        }
        for s in &sources {
            if !s.up {
                reasons.push(match &s.last_error {
                    Some(e) => format!("source {} is down: {e}", s.name),
                    None => format!("source {} has not answered yet", s.name),
                });
            } else if !s.backfilled {
                reasons.push(format!("source {} is still backfilling", s.name));
            }
        }
        (reasons.is_empty(), reasons, sources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write incident")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_shows_the_cause_once() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&e), "cannot write incident: disk full");
    }

    #[test]
    fn readiness_lists_every_reason_until_all_is_well() {
        let health = Health::new();
        health.register_source("prometheus");
        let (ready, reasons, _) = health.readiness();
        assert!(!ready);
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        health.set_pipeline_running(true);
        health.set_store_ok(true);
        health.source_failed("prometheus", "connection refused");
        let (_, reasons, _) = health.readiness();
        assert_eq!(
            reasons,
            vec!["source prometheus is down: connection refused"]
        );
        health.source_ok("prometheus");
        health.source_backfilled("prometheus");
        assert!(health.readiness().0);
    }

    #[test]
    fn a_standby_is_ready_when_its_store_is_and_says_it_stands_by() {
        let health = Health::new();
        health.set_store_ok(true);
        health.register_source("prometheus");
        health.set_standby(Some("standby: another replica holds the lease".into()));
        // No pipeline, no source answers: expected on a standby.
        let (ready, reasons, _) = health.readiness();
        assert!(ready, "{reasons:?}");
        assert_eq!(
            health.standby().as_deref(),
            Some("standby: another replica holds the lease")
        );
        health.set_store_ok(false);
        let (ready, reasons, _) = health.readiness();
        assert!(!ready);
        assert_eq!(reasons, ["store is not available"]);
        // Leading: the pipeline and the sources count again.
        health.set_store_ok(true);
        health.set_standby(None);
        assert!(!health.readiness().0);
    }
}
