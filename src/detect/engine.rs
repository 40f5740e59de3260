//! The detection engine: one detector per series, fed batch by batch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::{Detector, DetectorSpec};
use crate::signal::{Anomaly, Direction, Sample, SeriesBatch, SeriesKey, TimestampMs};

/// State the engine keeps for one series.
struct SeriesState {
    detector: Box<dyn Detector>,
    /// Time of the newest sample scored; older or equal samples are skipped,
    /// which makes overlapping polls idempotent.
    last_t: TimestampMs,
    /// The last few samples, copied into an anomaly as its lead-up.
    context: VecDeque<Sample>,
}

/// How a signal's series are scored.
#[derive(Debug, Clone)]
pub struct SignalDetection {
    /// The detector every series of the signal gets.
    pub spec: DetectorSpec,
    /// Which deviations count.
    pub direction: Direction,
}

/// Counters the daemon exports as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Series currently tracked.
    pub series: usize,
    /// Samples scored since start.
    pub samples_scored: u64,
    /// Samples skipped because they were not newer than the last one seen.
    pub samples_skipped: u64,
    /// New series refused because `max_series` was reached.
    pub series_refused: u64,
    /// Series forgotten because they stopped delivering samples.
    pub series_evicted: u64,
}

/// Keeps per-series detector state and turns batches into anomalies.
///
/// Synchronous and owned by one task: no locks on the hot path.
pub struct Engine {
    signals: HashMap<String, SignalDetection>,
    series: HashMap<Arc<SeriesKey>, SeriesState>,
    ttl_ms: i64,
    context_len: usize,
    max_series: usize,
    stats: EngineStats,
}

impl Engine {
    /// An engine for the given signals.
    ///
    /// `ttl_ms`: a series with no sample for this long (data time) is
    /// evicted; `context_len`: samples kept for anomaly context;
    /// `max_series`: cap on tracked series.
    pub fn new(
        signals: impl IntoIterator<Item = (String, SignalDetection)>,
        ttl_ms: i64,
        context_len: usize,
        max_series: usize,
    ) -> Self {
        Self {
            signals: signals.into_iter().collect(),
            series: HashMap::new(),
            ttl_ms,
            context_len: context_len.max(1),
            max_series,
            stats: EngineStats::default(),
        }
    }

    /// Scores every sample in `batch` and returns the anomalies found, in
    /// series order then time order. Series of unknown signals are ignored.
    pub fn observe(&mut self, batch: &SeriesBatch) -> Vec<Anomaly> {
        let mut anomalies = Vec::new();
        let Some(signal) = self.signals.get(&batch.signal) else {
            return anomalies;
        };
        for series in &batch.series {
            let state = match self.series.get_mut(&series.key) {
                Some(state) => state,
                None => {
                    if self.series.len() >= self.max_series {
                        self.stats.series_refused += 1;
                        continue;
                    }
                    self.series
                        .entry(Arc::clone(&series.key))
                        .or_insert_with(|| SeriesState {
                            detector: signal.spec.build(signal.direction),
                            last_t: TimestampMs::MIN,
                            context: VecDeque::with_capacity(self.context_len),
                        })
                }
            };
            for &sample in &series.samples {
                if sample.t <= state.last_t || !sample.v.is_finite() {
                    self.stats.samples_skipped += 1;
                    continue;
                }
                state.last_t = sample.t;
                let score = state.detector.update(sample.t, sample.v);
                self.stats.samples_scored += 1;
                if state.context.len() == self.context_len {
                    state.context.pop_front();
                }
                state.context.push_back(sample);
                if score.anomalous {
                    anomalies.push(Anomaly {
                        key: Arc::clone(&series.key),
                        t: sample.t,
                        value: sample.v,
                        expected: score.expected,
                        spread: score.spread,
                        score: score.z,
                        context: state.context.iter().copied().collect(),
                    });
                }
            }
        }
        self.stats.series = self.series.len();
        anomalies
    }

    /// Forgets series of `signal` whose newest sample is older than the TTL
    /// at data time `now`; returns how many were evicted.
    pub fn evict_idle(&mut self, signal: &str, now: TimestampMs) -> usize {
        let before = self.series.len();
        let cutoff = now.saturating_sub(self.ttl_ms);
        self.series
            .retain(|key, state| key.signal != signal || state.last_t >= cutoff);
        let evicted = before - self.series.len();
        self.stats.series_evicted += evicted as u64;
        self.stats.series = self.series.len();
        evicted
    }

    /// Counters since start.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Approximate bytes held per tracked series (detector, context ring,
    /// key and map entry), for the memory budget and the bench.
    pub fn state_bytes_per_series(&self) -> usize {
        if self.series.is_empty() {
            return 0;
        }
        let total: usize = self
            .series
            .iter()
            .map(|(key, state)| {
                // Arc allocation: two counters plus the key itself.
                let key_bytes = 2 * std::mem::size_of::<usize>() + key.bytes();
                std::mem::size_of::<(Arc<SeriesKey>, SeriesState)>()
                    + state.detector.state_bytes()
                    + state.context.capacity() * std::mem::size_of::<Sample>()
                    + key_bytes
            })
            .sum();
        total / self.series.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::SeriesSamples;

    fn engine() -> Engine {
        Engine::new(
            [(
                "lat".to_string(),
                SignalDetection {
                    spec: DetectorSpec::default(),
                    direction: Direction::Up,
                },
            )],
            600_000,
            8,
            2,
        )
    }

    fn key(service: &str) -> Arc<SeriesKey> {
        Arc::new(SeriesKey::new(
            "lat",
            [("service".to_string(), service.to_string())],
        ))
    }

    fn batch(
        key: &Arc<SeriesKey>,
        range: std::ops::Range<i64>,
        f: impl Fn(i64) -> f64,
    ) -> SeriesBatch {
        SeriesBatch {
            signal: "lat".into(),
            series: vec![SeriesSamples {
                key: Arc::clone(key),
                samples: range
                    .clone()
                    .map(|i| Sample {
                        t: i * 30_000,
                        v: f(i),
                    })
                    .collect(),
            }],
            until: range.end * 30_000,
            backfill: false,
        }
    }

    #[test]
    fn anomaly_carries_context_and_expected_level() {
        let mut e = engine();
        let k = key("cart");
        let wobble = |i: i64| if i % 2 == 0 { 1.0 } else { 1.2 };
        assert!(e.observe(&batch(&k, 0..100, wobble)).is_empty());
        let found = e.observe(&batch(&k, 100..105, |_| 5.0));
        assert!(!found.is_empty());
        let a = &found[0];
        assert_eq!(a.t, 101 * 30_000);
        assert!((a.expected - 1.1).abs() < 0.1, "{a:?}");
        assert_eq!(a.context.len(), 8);
        assert_eq!(a.context.last().map(|s| s.t), Some(a.t));
    }

    #[test]
    fn overlapping_polls_do_not_score_samples_twice() {
        let mut e = engine();
        let k = key("cart");
        e.observe(&batch(&k, 0..50, |_| 1.0));
        e.observe(&batch(&k, 40..60, |_| 1.0));
        let stats = e.stats();
        assert_eq!(stats.samples_scored, 60);
        assert_eq!(stats.samples_skipped, 10);
    }

    #[test]
    fn vanished_series_are_evicted_and_cap_refuses_new_ones() {
        let mut e = engine();
        e.observe(&batch(&key("a"), 0..10, |_| 1.0));
        e.observe(&batch(&key("b"), 0..40, |_| 1.0));
        e.observe(&batch(&key("c"), 0..10, |_| 1.0));
        assert_eq!(e.stats().series, 2);
        assert_eq!(e.stats().series_refused, 1);
        // 40 * 30s = 1200 s; TTL 600 s: "a" (last at 270 s) goes, "b" stays.
        assert_eq!(e.evict_idle("lat", 40 * 30_000), 1);
        assert_eq!(e.stats().series, 1);
    }

    #[test]
    fn state_per_series_stays_under_a_kibibyte() {
        let mut e = Engine::new(
            [(
                "lat".to_string(),
                SignalDetection {
                    spec: DetectorSpec::default(),
                    direction: Direction::Both,
                },
            )],
            600_000,
            30,
            10,
        );
        e.observe(&batch(&key("checkout-service"), 0..100, |i| i as f64));
        let bytes = e.state_bytes_per_series();
        assert!(bytes > 500 && bytes <= 1024, "{bytes}");
    }
}
