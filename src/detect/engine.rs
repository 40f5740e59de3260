//! The detection engine: one detector per series, fed batch by batch.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

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

/// The model file format this build writes and reads.
pub const MODEL_FORMAT_VERSION: u32 = 1;

/// The `format` field every model file carries, so a stray JSON file is
/// not mistaken for one.
const MODEL_FORMAT: &str = "aiopsd-detector-models";

/// Why a model file could not be saved or loaded. Every message names the
/// file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read.
    #[error("{}: cannot read model file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file (or its temporary sibling) could not be written.
    #[error("{}: cannot write model file: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a model file or is damaged; `message` names the field.
    #[error("{}: invalid model file: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (field path, line and column when known).
        message: String,
    },
    /// The file was written in a format version this build does not read.
    #[error(
        "{}: model file format version {found}, this aiopsd reads version {expected}; \
         delete the file to start a fresh warm-up",
        path.display()
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// [`MODEL_FORMAT_VERSION`].
        expected: u32,
    },
}

/// What [`Engine::load_models`] restored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelLoad {
    /// Series whose detector state was restored: they need no warm-up.
    pub restored: usize,
    /// Series of signals that are no longer configured (ignored).
    pub unknown_signal: usize,
    /// Series whose signal's detector spec changed since the save: their
    /// state does not fit, so they warm up anew.
    pub spec_changed: usize,
    /// Series already tracked by this engine (live state wins).
    pub already_tracked: usize,
    /// Series not restored because `max_series` was reached.
    pub refused: usize,
}

/// On-disk layout of a model file (JSON).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    format: String,
    version: u32,
    /// Per signal: the spec its states were built from, and the states.
    signals: BTreeMap<String, SavedSignal>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedSignal {
    spec: DetectorSpec,
    direction: Direction,
    series: Vec<SavedSeries>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedSeries {
    key: SeriesKey,
    last_t: TimestampMs,
    context: Vec<Sample>,
    detector: serde_json::Value,
}

impl Engine {
    /// Saves every tracked series' detector state to `path` (JSON, format
    /// [`MODEL_FORMAT_VERSION`]), so a restart resumes without a new
    /// warm-up. Written to a temporary sibling and renamed, so a crash
    /// mid-write leaves the previous file intact. Returns the series saved.
    pub fn save_models(&self, path: &Path) -> Result<usize, ModelError> {
        let invalid = |message: String| ModelError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut signals: BTreeMap<String, SavedSignal> = BTreeMap::new();
        let mut keys: Vec<&Arc<SeriesKey>> = self.series.keys().collect();
        keys.sort();
        for key in keys {
            let (Some(state), Some(signal)) = (self.series.get(key), self.signals.get(&key.signal))
            else {
                continue;
            };
            let detector = state
                .detector
                .save_state()
                .map_err(|e| invalid(format!("series {key}: {e}")))?;
            signals
                .entry(key.signal.clone())
                .or_insert_with(|| SavedSignal {
                    spec: signal.spec.clone(),
                    direction: signal.direction,
                    series: Vec::new(),
                })
                .series
                .push(SavedSeries {
                    key: SeriesKey::clone(key),
                    last_t: state.last_t,
                    context: state.context.iter().copied().collect(),
                    detector,
                });
        }
        let saved = signals.values().map(|s| s.series.len()).sum();
        let file = ModelFile {
            format: MODEL_FORMAT.to_string(),
            version: MODEL_FORMAT_VERSION,
            signals,
        };
        let text = serde_json::to_vec(&file).map_err(|e| invalid(e.to_string()))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write_err = |p: &Path, source| ModelError::Write {
            path: p.to_path_buf(),
            source,
        };
        std::fs::write(&tmp, text).map_err(|e| write_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| write_err(path, e))?;
        Ok(saved)
    }

    /// Restores detector states saved by [`Engine::save_models`] for the
    /// signals this engine is configured with. A series is restored only
    /// when its signal's detector spec and direction are unchanged since
    /// the save (otherwise the state would not fit: it warms up anew) and
    /// it is not already tracked. The whole file is checked before
    /// anything is restored: a damaged file changes nothing.
    pub fn load_models(&mut self, path: &Path) -> Result<ModelLoad, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file = parse_model_file(&text, path)?;
        let invalid = |message: String| ModelError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut load = ModelLoad::default();
        let mut restored: Vec<(Arc<SeriesKey>, SeriesState)> = Vec::new();
        for (name, saved) in file.signals {
            let Some(signal) = self.signals.get(&name) else {
                load.unknown_signal += saved.series.len();
                continue;
            };
            if signal.spec != saved.spec || signal.direction != saved.direction {
                load.spec_changed += saved.series.len();
                continue;
            }
            for (i, s) in saved.series.into_iter().enumerate() {
                if s.key.signal != name {
                    return Err(invalid(format!(
                        "signals.{name}.series[{i}].key.signal: is {:?}, expected {name:?}",
                        s.key.signal
                    )));
                }
                let mut detector = signal.spec.build(signal.direction);
                detector.load_state(s.detector).map_err(|e| {
                    invalid(format!(
                        "signals.{name}.series[{i}] ({}): detector: {e}",
                        s.key
                    ))
                })?;
                let mut context: VecDeque<Sample> = s.context.into_iter().collect();
                while context.len() > self.context_len {
                    context.pop_front();
                }
                context.reserve_exact(self.context_len - context.len());
                restored.push((
                    Arc::new(s.key),
                    SeriesState {
                        detector,
                        last_t: s.last_t,
                        context,
                    },
                ));
            }
        }
        for (key, state) in restored {
            if self.series.contains_key(&key) {
                load.already_tracked += 1;
            } else if self.series.len() >= self.max_series {
                load.refused += 1;
            } else {
                self.series.insert(key, state);
                load.restored += 1;
            }
        }
        self.stats.series = self.series.len();
        Ok(load)
    }
}

/// Parses a model file: format and version first (so an old or foreign
/// file gets that message, not a field error), then the typed layout with
/// the failing field's path.
fn parse_model_file(text: &str, path: &Path) -> Result<ModelFile, ModelError> {
    let invalid = |message: String| ModelError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let tree: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("not JSON: {e}")))?;
    match tree.get("format").and_then(|f| f.as_str()) {
        Some(MODEL_FORMAT) => {}
        Some(other) => {
            return Err(invalid(format!(
                "format: is {other:?}, expected {MODEL_FORMAT:?}"
            )))
        }
        None => {
            return Err(invalid(format!(
                "format: missing (expected {MODEL_FORMAT:?})"
            )))
        }
    }
    match tree.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(MODEL_FORMAT_VERSION) => {}
        Some(found) => {
            return Err(ModelError::Version {
                path: path.to_path_buf(),
                found,
                expected: MODEL_FORMAT_VERSION,
            })
        }
        None => return Err(invalid("version: missing or not a whole number".into())),
    }
    serde_path_to_error::deserialize(tree).map_err(|e| {
        let field = e.path().to_string();
        invalid(format!("{field}: {}", e.into_inner()))
    })
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

    fn ensemble_engine(spec: DetectorSpec) -> Engine {
        Engine::new(
            [(
                "lat".to_string(),
                SignalDetection {
                    spec,
                    direction: Direction::Both,
                },
            )],
            i64::MAX,
            8,
            10,
        )
    }

    /// A daily wave with noise; a spike at `spike` (if in range).
    fn wave(spike: i64) -> impl Fn(i64) -> f64 {
        move |i| {
            let base = 10.0
                + 3.0 * ((i % 288) as f64 / 288.0 * std::f64::consts::TAU).sin()
                + 0.3 * crate::detect::test_noise(i as u64);
            if i == spike {
                base + 20.0
            } else {
                base
            }
        }
    }

    /// Like `batch`, at a 5-minute step (the daily profile needs days).
    fn batch5(
        key: &Arc<SeriesKey>,
        range: std::ops::Range<i64>,
        f: impl Fn(i64) -> f64,
    ) -> SeriesBatch {
        let mut b = batch(key, range, f);
        for s in &mut b.series[0].samples {
            s.t *= 10;
        }
        b.until *= 10;
        b
    }

    #[test]
    fn a_restored_engine_scores_exactly_like_one_that_never_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("models.json");
        let spec = DetectorSpec::Ensemble(Default::default());
        let k = key("cart");
        let mut live = ensemble_engine(spec.clone());
        live.observe(&batch5(&k, 0..3000, wave(-1)));
        assert_eq!(live.save_models(&path).expect("save"), 1);

        let mut restarted = ensemble_engine(spec.clone());
        let load = restarted.load_models(&path).expect("load");
        assert_eq!(load.restored, 1, "{load:?}");
        // A spike right after the restart: the restored engine sees it as
        // the uninterrupted one does; a cold engine is still warming up.
        let after = batch5(&k, 3000..3200, wave(3010));
        let want = live.observe(&after);
        assert_eq!(restarted.observe(&after), want);
        let spike = 3010 * 300_000;
        assert_eq!(want.first().map(|a| a.t), Some(spike), "{want:?}");
        let mut cold = ensemble_engine(spec);
        assert!(!cold.observe(&after).iter().any(|a| a.t == spike));
        // Samples already scored before the save are skipped after it.
        restarted.observe(&batch5(&k, 2990..3000, wave(-1)));
        assert_eq!(restarted.stats().samples_skipped, 10);
    }

    #[test]
    fn a_changed_spec_or_unknown_signal_warms_up_anew() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("models.json");
        let mut e = ensemble_engine(DetectorSpec::Ensemble(Default::default()));
        e.observe(&batch(&key("a"), 0..500, wave(-1)));
        e.observe(&batch(&key("b"), 0..500, wave(-1)));
        e.save_models(&path).expect("save");
        let mut other = ensemble_engine(DetectorSpec::MedianMad(Default::default()));
        let load = other.load_models(&path).expect("load");
        assert_eq!((load.restored, load.spec_changed), (0, 2), "{load:?}");
        let mut unrelated = Engine::new(
            [(
                "errors".to_string(),
                SignalDetection {
                    spec: DetectorSpec::Ensemble(Default::default()),
                    direction: Direction::Both,
                },
            )],
            600_000,
            8,
            10,
        );
        let load = unrelated.load_models(&path).expect("load");
        assert_eq!((load.restored, load.unknown_signal), (0, 2), "{load:?}");
    }

    #[test]
    fn a_malformed_model_file_is_refused_naming_the_file_and_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("models.json");
        let mut e = ensemble_engine(DetectorSpec::Ensemble(Default::default()));
        e.observe(&batch(&key("a"), 0..500, wave(-1)));
        e.save_models(&good).expect("save");
        let text = std::fs::read_to_string(&good).expect("read");
        let tree: serde_json::Value = serde_json::from_str(&text).expect("json");

        let check = |name: &str, content: String, wants: &[&str]| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).expect("write");
            let mut fresh = ensemble_engine(DetectorSpec::Ensemble(Default::default()));
            let err = fresh.load_models(&path).expect_err(name).to_string();
            assert!(err.contains(name), "{err}");
            for w in wants {
                assert!(err.contains(w), "{name}: {err}");
            }
            assert_eq!(fresh.stats().series, 0, "{name}: nothing restored");
        };
        check(
            "truncated.json",
            text[..text.len() / 2].to_string(),
            &["not JSON"],
        );
        let mut v = tree.clone();
        v["version"] = 99.into();
        check(
            "future.json",
            v.to_string(),
            &["version 99", "reads version 1"],
        );
        let mut v = tree.clone();
        v["format"] = "something-else".into();
        check("foreign.json", v.to_string(), &["format", "something-else"]);
        let mut v = tree.clone();
        v["signals"]["lat"]["series"][0]["last_t"] = "yesterday".into();
        check(
            "field.json",
            v.to_string(),
            &["signals.lat.series[0].last_t"],
        );
        // A damaged detector state (ring index past its buffer) is refused
        // at load rather than panicking on the next sample.
        let mut v = tree.clone();
        v["signals"]["lat"]["series"][0]["detector"]["median"]["next"] = 100_000.into();
        check(
            "state.json",
            v.to_string(),
            &["series[0]", "median_mad.next"],
        );
        check("missing.json", String::new(), &["not JSON"]);
        let err = e
            .load_models(&dir.path().join("absent.json"))
            .expect_err("absent")
            .to_string();
        assert!(
            err.contains("absent.json") && err.contains("cannot read"),
            "{err}"
        );
    }
}
