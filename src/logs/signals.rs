//! Log template rates as signals the detection engine scores like any
//! metric.
//!
//! Per stream (service and namespace) and completed bucket:
//!
//! - [`LOG_ERROR_RATE`]: lines whose level is an error/warn level
//!   (`elasticsearch.error_levels`). Direction `up`: a surge alarms.
//! - [`LOG_NEW_TEMPLATES`]: templates seen for the first time in the bucket.
//!   Direction `up`: a burst of never-seen messages alarms; a single new
//!   template does not (the default log detector's `min_spread` is one).
//! - [`LOG_TEMPLATE_RATE`] with a `template="T12"` label: lines of one
//!   template, for a bounded set per stream (`max_template_series`, the
//!   first templates to reach [`MIN_TEMPLATE_LINES`] lines in a bucket).
//!   A tracked template gets a sample in *every* bucket, 0 when it had no
//!   line, so a template that vanishes is seen: its series drops to 0 and
//!   the detector (direction `both`) reports the drop once it is confirmed,
//!   exactly as for a metric that falls. A template is untracked after
//!   [`UNTRACK_AFTER_BUCKETS`] buckets without a line, leaving room for
//!   others.
//!
//! Series carry `service`, `namespace` (when known) and the configured
//! static labels, so with the default `incidents.group_by` (`namespace`,
//! `service`) a log anomaly groups with the metric anomalies of the same
//! service — Prometheus series of an instrumented service carry the same
//! two labels.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::elastic::ElasticConfig;
use super::window::{BucketCount, StreamKey};
use super::TemplateId;
use crate::detect::SignalDetection;
use crate::signal::{Direction, Sample, SeriesBatch, SeriesKey, SeriesSamples, TimestampMs};

/// Error/warn-level lines per bucket.
pub const LOG_ERROR_RATE: &str = "log_error_rate";
/// Never-seen templates per bucket.
pub const LOG_NEW_TEMPLATES: &str = "log_new_templates";
/// Lines of one tracked template per bucket.
pub const LOG_TEMPLATE_RATE: &str = "log_template_rate";

/// The log signals, in the order their batches are sent.
pub const LOG_SIGNALS: [&str; 3] = [LOG_ERROR_RATE, LOG_NEW_TEMPLATES, LOG_TEMPLATE_RATE];

/// Lines in one bucket that make a template worth its own series.
pub const MIN_TEMPLATE_LINES: u64 = 5;

/// Buckets without a line after which a tracked template is dropped.
pub const UNTRACK_AFTER_BUCKETS: u32 = 60;

/// How the engine scores each log signal (for the daemon's detect stage).
pub fn log_signal_detections(config: &ElasticConfig) -> Vec<(String, SignalDetection)> {
    let spec = config.detector_spec();
    [
        (LOG_ERROR_RATE, Direction::Up),
        (LOG_NEW_TEMPLATES, Direction::Up),
        (LOG_TEMPLATE_RATE, Direction::Both),
    ]
    .into_iter()
    .map(|(name, direction)| {
        (
            name.to_owned(),
            SignalDetection {
                spec: spec.clone(),
                direction,
            },
        )
    })
    .collect()
}

/// Turns stored bucket counts into [`SeriesBatch`]es, remembering which
/// templates are tracked (see the module docs).
#[derive(Debug)]
pub struct SignalBuilder {
    bucket_ms: i64,
    labels: BTreeMap<String, String>,
    max_template_series: usize,
    /// Per stream: tracked template → buckets in a row without a line.
    tracked: HashMap<StreamKey, BTreeMap<TemplateId, u32>>,
    /// Streams that have had a line: samples start at a stream's first
    /// bucket with lines, so a replay does not feed a detector hours of
    /// zeros from before the service logged anything.
    started: HashSet<StreamKey>,
}

impl SignalBuilder {
    /// A builder for buckets of `bucket_ms`, adding `labels` to every series.
    pub fn new(
        bucket_ms: i64,
        labels: BTreeMap<String, String>,
        max_template_series: usize,
    ) -> Self {
        Self {
            bucket_ms: bucket_ms.max(1),
            labels,
            max_template_series,
            tracked: HashMap::new(),
            started: HashSet::new(),
        }
    }

    /// Templates tracked for `stream`.
    pub fn tracked(&self, stream: &StreamKey) -> Vec<TemplateId> {
        self.tracked
            .get(stream)
            .map(|t| t.keys().copied().collect())
            .unwrap_or_default()
    }

    fn key(&self, signal: &str, stream: &StreamKey, template: Option<TemplateId>) -> SeriesKey {
        let mut labels = self.labels.clone();
        if let Some(ns) = stream.namespace() {
            labels.insert("namespace".into(), ns.into());
        }
        labels.insert("service".into(), stream.service.clone());
        if let Some(t) = template {
            labels.insert("template".into(), t.to_string());
        }
        SeriesKey::new(signal, labels)
    }

    /// One batch per log signal for the buckets starting in
    /// `[from_ms, until_ms)` (both multiples of the bucket width; the
    /// batches' watermark is `until_ms`).
    ///
    /// `counts` are the stored counts of those buckets, `first_seen` the
    /// streams and first-seen times of templates created in them, and
    /// `streams` every stream known (a stream without a line in a bucket
    /// still gets 0 errors and 0 new templates for it).
    pub fn build(
        &mut self,
        from_ms: TimestampMs,
        until_ms: TimestampMs,
        counts: &[BucketCount],
        first_seen: &[(StreamKey, TimestampMs)],
        streams: &BTreeSet<StreamKey>,
        backfill: bool,
    ) -> Vec<SeriesBatch> {
        let mut per_bucket: BTreeMap<(&StreamKey, i64), Vec<&BucketCount>> = BTreeMap::new();
        for c in counts {
            per_bucket
                .entry((&c.stream, c.bucket_ms))
                .or_default()
                .push(c);
        }
        let mut new_per_bucket: HashMap<(&StreamKey, i64), f64> = HashMap::new();
        for (stream, t) in first_seen {
            let b = t.div_euclid(self.bucket_ms) * self.bucket_ms;
            *new_per_bucket.entry((stream, b)).or_default() += 1.0;
        }
        let mut errors: BTreeMap<&StreamKey, Vec<Sample>> = BTreeMap::new();
        let mut fresh: BTreeMap<&StreamKey, Vec<Sample>> = BTreeMap::new();
        let mut rates: BTreeMap<(&StreamKey, TemplateId), Vec<Sample>> = BTreeMap::new();
        let mut b = from_ms;
        while b < until_ms {
            for stream in streams {
                let rows = per_bucket
                    .get(&(stream, b))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                if !self.started.contains(stream) {
                    if rows.is_empty() {
                        continue;
                    }
                    self.started.insert(stream.clone());
                }
                let err: u64 = rows.iter().map(|c| c.errors).sum();
                errors.entry(stream).or_default().push(Sample {
                    t: b,
                    v: err as f64,
                });
                fresh.entry(stream).or_default().push(Sample {
                    t: b,
                    v: new_per_bucket.get(&(stream, b)).copied().unwrap_or(0.0),
                });
                let tracked = self.tracked.entry(stream.clone()).or_default();
                for c in rows {
                    if c.lines >= MIN_TEMPLATE_LINES
                        && !tracked.contains_key(&c.template)
                        && tracked.len() < self.max_template_series
                    {
                        tracked.insert(c.template, 0);
                    }
                }
                tracked.retain(|id, idle| {
                    let lines = rows
                        .iter()
                        .find(|c| c.template == *id)
                        .map_or(0, |c| c.lines);
                    rates.entry((stream, *id)).or_default().push(Sample {
                        t: b,
                        v: lines as f64,
                    });
                    *idle = if lines == 0 { *idle + 1 } else { 0 };
                    *idle <= UNTRACK_AFTER_BUCKETS
                });
            }
            b = b.saturating_add(self.bucket_ms);
        }
        let series = |signal: &str, m: Vec<(SeriesKey, Vec<Sample>)>| SeriesBatch {
            signal: signal.to_owned(),
            series: m
                .into_iter()
                .map(|(key, samples)| SeriesSamples {
                    key: Arc::new(key),
                    samples,
                })
                .collect(),
            until: until_ms,
            backfill,
        };
        let errors = errors
            .into_iter()
            .map(|(s, v)| (self.key(LOG_ERROR_RATE, s, None), v))
            .collect();
        let fresh = fresh
            .into_iter()
            .map(|(s, v)| (self.key(LOG_NEW_TEMPLATES, s, None), v))
            .collect();
        let rates = rates
            .into_iter()
            .map(|((s, id), v)| (self.key(LOG_TEMPLATE_RATE, s, Some(id)), v))
            .collect();
        vec![
            series(LOG_ERROR_RATE, errors),
            series(LOG_NEW_TEMPLATES, fresh),
            series(LOG_TEMPLATE_RATE, rates),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(stream: &StreamKey, b: i64, t: u64, lines: u64, errors: u64) -> BucketCount {
        BucketCount {
            stream: stream.clone(),
            bucket_ms: b,
            template: TemplateId(t),
            lines,
            errors,
        }
    }

    fn values(batch: &SeriesBatch, template: Option<&str>) -> Vec<f64> {
        batch
            .series
            .iter()
            .find(|s| s.key.label("template") == template)
            .map(|s| s.samples.iter().map(|x| x.v).collect())
            .unwrap_or_default()
    }

    #[test]
    fn buckets_become_samples_with_metric_like_labels() {
        let cart = StreamKey::new(Some("shop"), "cart");
        let streams = BTreeSet::from([cart.clone()]);
        let labels = BTreeMap::from([("cluster".to_string(), "eu".to_string())]);
        let mut b = SignalBuilder::new(60_000, labels, 20);
        let counts = [
            count(&cart, 0, 1, 10, 0),
            count(&cart, 60_000, 1, 10, 0),
            count(&cart, 60_000, 2, 4, 4),
            // Bucket 120_000 has no line at all.
        ];
        let first_seen = [(cart.clone(), 0), (cart.clone(), 61_000)];
        let batches = b.build(0, 180_000, &counts, &first_seen, &streams, false);
        let names: Vec<&str> = batches.iter().map(|b| b.signal.as_str()).collect();
        assert_eq!(names, LOG_SIGNALS);
        assert!(batches.iter().all(|b| b.until == 180_000));
        let key = &batches[0].series[0].key;
        assert_eq!(
            key.to_string(),
            r#"log_error_rate{cluster="eu",namespace="shop",service="cart"}"#
        );
        assert_eq!(values(&batches[0], None), [0.0, 4.0, 0.0]);
        assert_eq!(values(&batches[1], None), [1.0, 1.0, 0.0]);
        // Template 1 (10 lines) is tracked and gets a 0 when it vanishes;
        // template 2 (4 lines) stays below MIN_TEMPLATE_LINES.
        assert_eq!(values(&batches[2], Some("T1")), [10.0, 10.0, 0.0]);
        assert!(values(&batches[2], Some("T2")).is_empty());
    }

    #[test]
    fn tracked_templates_are_bounded_and_released_when_idle() {
        let cart = StreamKey::new(None, "cart");
        let streams = BTreeSet::from([cart.clone()]);
        let mut b = SignalBuilder::new(1, BTreeMap::new(), 2);
        let counts: Vec<BucketCount> = (1..=5).map(|t| count(&cart, 0, t, 9, 0)).collect();
        b.build(0, 1, &counts, &[], &streams, false);
        assert_eq!(b.tracked(&cart), [TemplateId(1), TemplateId(2)]);
        let end = 2 + i64::from(UNTRACK_AFTER_BUCKETS);
        b.build(1, end, &[], &[], &streams, false);
        assert!(b.tracked(&cart).is_empty(), "idle templates are released");
        let batches = b.build(
            end,
            end + 1,
            &[count(&cart, end, 5, 9, 0)],
            &[],
            &streams,
            false,
        );
        assert_eq!(b.tracked(&cart), [TemplateId(5)]);
        assert_eq!(values(&batches[2], Some("T5")), [9.0]);
    }
}
