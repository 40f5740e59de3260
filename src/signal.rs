//! Core types that flow between the pipeline stages.
//!
//! Sources produce [`SeriesBatch`]es, the detection engine turns them into
//! [`Anomaly`]s, and the incident stage groups those. Keeping the types here,
//! apart from any stage, is what lets each stage be tested on its own.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, in *data time*.
///
/// All pipeline logic (warm-up, grouping windows, resolution) runs on the
/// timestamps of the samples, not on the wall clock, so a replay, a backfill
/// and the fast simulated demo behave exactly like live polling.
pub type TimestampMs = i64;

/// Identity of one watched time series: the signal it belongs to plus the
/// labels Prometheus returned for it.
///
/// Labels are kept sorted (BTreeMap) so the same series always produces the
/// same key and the same display string, whatever order a source used.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Name of the configured signal (e.g. `error_ratio`).
    pub signal: String,
    /// Labels of the series as returned by the source.
    pub labels: BTreeMap<String, String>,
}

impl SeriesKey {
    /// Builds a key; labels are sorted on insertion.
    pub fn new(
        signal: impl Into<String>,
        labels: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        Self {
            signal: signal.into(),
            labels: labels.into_iter().collect(),
        }
    }

    /// The value of a label, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

impl fmt::Display for SeriesKey {
    /// PromQL-like rendering, e.g. `error_ratio{namespace="shop",service="cart"}`,
    /// used in logs, reports and as the stable key in the store.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.signal)?;
        f.write_str("{")?;
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

/// One observation of a series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Data time of the observation.
    pub t: TimestampMs,
    /// The observed value; always finite (sources drop NaN/Inf and count them).
    pub v: f64,
}

/// Samples of one series in time order, as delivered by one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// Which series these samples belong to.
    pub key: Arc<SeriesKey>,
    /// Samples in increasing time order.
    pub samples: Vec<Sample>,
}

/// Everything one poll of one signal produced.
///
/// `until` is the data-time watermark: the source has delivered every sample
/// up to it, so downstream stages may advance their clocks (resolve quiet
/// incidents, evict vanished series) even when a series produced nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesBatch {
    /// The configured signal that was polled.
    pub signal: String,
    /// Series returned by the poll (possibly none).
    pub series: Vec<SeriesSamples>,
    /// Data time up to which this signal has been fully read.
    pub until: TimestampMs,
    /// True while replaying history to warm detectors (backfill).
    pub backfill: bool,
}

/// Which deviations count as anomalous for a signal.
///
/// An error rate dropping to zero is good news; only `up` should alarm for
/// it. Throughput usually alarms both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Only values above the expected level are anomalous.
    Up,
    /// Only values below the expected level are anomalous.
    Down,
    /// Deviations either way are anomalous.
    #[default]
    Both,
}

/// A sample a detector judged anomalous, with what it expected instead.
///
/// Carries enough to explain itself in a report without going back to the
/// detector: the value, the expected level and spread, and the score.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// The series the sample belongs to.
    pub key: Arc<SeriesKey>,
    /// Data time of the anomalous sample.
    pub t: TimestampMs,
    /// Observed value.
    pub value: f64,
    /// The detector's expected value at `t` (its baseline).
    pub expected: f64,
    /// The detector's estimate of normal spread around `expected`.
    pub spread: f64,
    /// Signed deviation in units of `spread` (positive: above expected).
    pub score: f64,
    /// Recent samples of the series ending at `t`, for charts and reports.
    pub context: Vec<Sample>,
}

/// Formats a data timestamp as RFC 3339 (UTC, seconds), for logs and reports.
pub fn format_ts(t: TimestampMs) -> String {
    let secs = u64::try_from(t.div_euclid(1000)).unwrap_or(0);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

/// Current wall-clock time in milliseconds since the epoch.
pub fn now_ms() -> TimestampMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_key_display_is_sorted_and_quoted() {
        let key = SeriesKey::new(
            "error_ratio",
            [
                ("service".to_string(), "cart".to_string()),
                ("namespace".to_string(), "shop\"x".to_string()),
            ],
        );
        assert_eq!(
            key.to_string(),
            r#"error_ratio{namespace="shop\"x",service="cart"}"#
        );
    }

    #[test]
    fn format_ts_is_rfc3339() {
        assert_eq!(format_ts(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }
}
