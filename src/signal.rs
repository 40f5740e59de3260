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

/// A sorted set of label pairs, stored compactly.
///
/// One of these lives in every tracked series key, 100k of them in a large
/// installation: a boxed slice costs one allocation sized to fit, where a
/// `BTreeMap` reserves a node for eleven entries (~540 bytes) even for
/// three labels. Serialized as a JSON/YAML map, like a `BTreeMap`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Box<[(Box<str>, Box<str>)]>);

impl Labels {
    /// The value of a label, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    /// Pairs in label-name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Heap bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.0.len() * std::mem::size_of::<(Box<str>, Box<str>)>()
            + self.0.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }
}

impl FromIterator<(String, String)> for Labels {
    /// Sorts by name; when a name repeats, the last value wins.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let map: BTreeMap<String, String> = pairs.into_iter().collect();
        map.into()
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        Labels(
            map.into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                .collect(),
        )
    }
}

impl PartialEq<BTreeMap<String, String>> for Labels {
    fn eq(&self, other: &BTreeMap<String, String>) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .zip(other.iter())
                .all(|((k, v), (ok, ov))| k == ok && v == ov)
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(d).map(Labels::from)
    }
}

/// Identity of one watched time series: the signal it belongs to plus the
/// labels Prometheus returned for it.
///
/// Labels are kept sorted so the same series always produces the same key
/// and the same display string, whatever order a source used.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Name of the configured signal (e.g. `error_ratio`).
    pub signal: String,
    /// Labels of the series as returned by the source.
    pub labels: Labels,
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
        self.labels.get(name)
    }

    /// Heap and inline bytes of this key, for memory accounting.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.signal.capacity() + self.labels.heap_bytes()
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
    fn labels_sort_look_up_and_serialize_as_a_map() {
        let labels: Labels = [
            ("service".to_string(), "cart".to_string()),
            ("namespace".to_string(), "shop".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(labels.get("service"), Some("cart"));
        assert_eq!(labels.get("pod"), None);
        let json = serde_json::to_string(&labels).expect("serialize");
        assert_eq!(json, r#"{"namespace":"shop","service":"cart"}"#);
        let back: Labels = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, labels);
        assert!(labels.heap_bytes() < 128, "{}", labels.heap_bytes());
    }

    #[test]
    fn format_ts_is_rfc3339() {
        assert_eq!(format_ts(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }
}
