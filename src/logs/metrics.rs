//! Telemetry of the log pipeline. As in `crate::telemetry`, each method
//! writes the log line *and* the metric, so wording and names live in one
//! place.
//!
//! [`LogMetrics::register`] adds them to a registry (aiopsd's `Metrics`
//! under the `aiopsd_` prefix); [`LogMetrics::default`] makes unregistered
//! ones, which still count (tests read them with the getters).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::elastic::ReadStats;

/// Why a document was not counted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    /// `malformed` (no usable message or timestamp) or `already_read`
    /// (at the checkpoint's timestamp, consumed before).
    reason: String,
}

/// The log pipeline's metrics. Cheap to clone (the metrics are shared).
#[derive(Debug, Clone, Default)]
pub struct LogMetrics {
    lines: Counter,
    skipped: Family<ReasonLabel, Counter>,
    reads: Counter,
    read_errors: Counter,
    retries: Counter,
    pit_reopens: Counter,
    templates: Gauge,
    commit_errors: Counter,
}

impl LogMetrics {
    /// Creates the metrics and registers them (under the registry's prefix,
    /// `aiopsd_` in the daemon).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "log_lines",
            "Log documents read from Elasticsearch, mined and counted",
            m.lines.clone(),
        );
        registry.register(
            "log_documents_skipped",
            "Log documents not counted, by reason (malformed: no usable message or timestamp; already_read)",
            m.skipped.clone(),
        );
        registry.register(
            "log_reads",
            "Read windows of the log source, successful or not",
            m.reads.clone(),
        );
        registry.register(
            "log_read_errors",
            "Read windows of the log source that failed after all retries",
            m.read_errors.clone(),
        );
        registry.register(
            "log_retries",
            "Elasticsearch requests retried after 429, 5xx or a transport error",
            m.retries.clone(),
        );
        registry.register(
            "log_pit_reopens",
            "Elasticsearch points in time opened again after one expired",
            m.pit_reopens.clone(),
        );
        registry.register(
            "log_templates",
            "Log templates held by the miners, all services together",
            m.templates.clone(),
        );
        registry.register(
            "log_commit_errors",
            "Failed store commits of a log window (the window is read again)",
            m.commit_errors.clone(),
        );
        m
    }

    /// One read window ended (`error` set when it failed part way).
    pub fn read(&self, stats: &ReadStats, took: Duration, error: Option<&str>) {
        self.reads.inc();
        self.lines.inc_by(stats.documents);
        self.retries.inc_by(stats.retries);
        self.pit_reopens.inc_by(stats.pit_reopens);
        for (reason, n) in [
            ("malformed", stats.skipped_malformed),
            ("already_read", stats.skipped_seen),
        ] {
            if n > 0 {
                self.skipped
                    .get_or_create(&ReasonLabel {
                        reason: reason.into(),
                    })
                    .inc_by(n);
            }
        }
        if stats.skipped_malformed > 0 {
            tracing::warn!(
                count = stats.skipped_malformed,
                "Skipped log documents without a usable message or timestamp; check elasticsearch.message_field and timestamp_field."
            );
        }
        match error {
            None => tracing::debug!(
                documents = stats.documents,
                pages = stats.pages,
                took_ms = took.as_millis() as u64,
                "Read a window of logs."
            ),
            Some(error) => {
                self.read_errors.inc();
                tracing::warn!(
                    documents = stats.documents,
                    error,
                    "Reading logs from Elasticsearch failed; what was read is kept and the next read continues from there."
                );
            }
        }
    }

    /// Templates now held by the miners.
    pub fn set_templates(&self, n: usize) {
        self.templates.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Committing a window to the store failed.
    pub fn commit_failed(&self, error: &str) {
        self.commit_errors.inc();
        tracing::warn!(
            error,
            "Could not store a window of log counts; it is read again from the last stored checkpoint."
        );
    }

    /// Documents read and counted so far.
    pub fn lines(&self) -> u64 {
        self.lines.get()
    }

    /// Documents skipped for `reason` (`malformed`, `already_read`) so far.
    pub fn skipped(&self, reason: &str) -> u64 {
        self.skipped
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .get()
    }
}
