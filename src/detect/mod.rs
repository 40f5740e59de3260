//! Detection: per-series online scoring.
//!
//! A [`Detector`] is pure and synchronous: it takes one sample at a time and
//! returns a [`Score`] using only that sample and what it saw before
//! (causal), with small fixed-size state. The [`Engine`] keeps one detector
//! per series, feeds it batches from the sources and turns confirmed
//! deviations into [`crate::signal::Anomaly`] values.
//!
//! New detectors (the detection-quality work) implement [`Detector`], get a
//! variant in [`DetectorSpec`] and a file of their own here.

mod calibrate;
mod context;
mod cusum;
mod engine;
mod ensemble;
mod kmeans;
mod median_mad;
pub mod preset;
mod robust_ewma;
mod seasonal;

pub use calibrate::{ln_normal_tail, CalibrationParams, Calibrator};
pub use context::{ContextNovelty, ContextParams};
pub use cusum::{Cusum, CusumParams};
pub use engine::{
    Engine, EngineStats, ModelError, ModelLoad, SignalDetection, MODEL_FORMAT_VERSION,
};
pub use ensemble::{Combine, Ensemble, EnsembleParams, Suppression};
pub use kmeans::{KMeansDetector, KMeansParams};
pub use median_mad::{MedianMad, MedianMadParams};
pub use robust_ewma::{RobustEwma, RobustEwmaParams};
pub use seasonal::{Seasonal, SeasonalParams};

use serde::{Deserialize, Serialize};

use crate::signal::TimestampMs;

/// What a detector says about one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Signed deviation from the expected level in units of `spread`
    /// (positive: above). 0 during warm-up.
    pub z: f64,
    /// The level the detector expected before seeing the sample.
    pub expected: f64,
    /// Its estimate of normal spread around `expected` (always > 0).
    pub spread: f64,
    /// True when the deviation is past the detector's threshold in the
    /// configured direction, confirmed as the detector requires, and the
    /// detector is warm.
    pub anomalous: bool,
}

/// An online, causal anomaly scorer for one series.
///
/// Implementations keep bounded state (no growth with the number of samples
/// seen) so the engine can hold 100k of them.
pub trait Detector: Send {
    /// Scores `x` observed at `t`, then learns from it.
    fn update(&mut self, t: TimestampMs, x: f64) -> Score;

    /// Heap and inline bytes this detector holds, for the state budget.
    fn state_bytes(&self) -> usize;

    /// Like [`Detector::update`], and also an anomaly likelihood in
    /// [0, 1] that is comparable across series, so one threshold works for
    /// every metric (the backtest and NAB need exactly that).
    ///
    /// The default maps `|z|` monotonically to [0, 1) without saturating
    /// (ties at 1.0 would hide the ranking a threshold needs); detectors
    /// with a calibrated output (e.g. the ensemble) override it.
    fn update_likelihood(&mut self, t: TimestampMs, x: f64) -> (Score, f64) {
        let s = self.update(t, x);
        let z = s.z.abs();
        let p = if z.is_finite() { z / (z + 3.0) } else { 1.0 };
        (s, p)
    }

    /// The learned state as JSON, so a restart resumes without a new
    /// warm-up (see [`Engine::save_models`]).
    fn save_state(&self) -> Result<serde_json::Value, String>;

    /// Replaces the state with one saved by [`Detector::save_state`] of a
    /// detector built from the same spec. The state is checked (buffer
    /// sizes, indices) so a damaged file is refused here rather than
    /// causing a panic later; on error the detector is unchanged.
    fn load_state(&mut self, state: serde_json::Value) -> Result<(), String>;
}

/// Implements [`Detector::save_state`]/[`Detector::load_state`] through
/// serde for a detector type with a `check_state(&self, fresh: &Self) ->
/// Result<(), String>` that compares a loaded state with the detector it
/// replaces (built from the current spec).
macro_rules! serde_state {
    () => {
        fn save_state(&self) -> Result<serde_json::Value, String> {
            serde_json::to_value(self).map_err(|e| e.to_string())
        }

        fn load_state(&mut self, state: serde_json::Value) -> Result<(), String> {
            let loaded: Self = serde_json::from_value(state).map_err(|e| e.to_string())?;
            loaded.check_state(self)?;
            *self = loaded;
            Ok(())
        }
    };
}
pub(crate) use serde_state;

/// Checks that a loaded index is inside its buffer; the message names it.
pub(crate) fn check_index(name: &str, index: usize, len: usize) -> Result<(), String> {
    if index < len {
        Ok(())
    } else {
        Err(format!("{name} {index} is outside its buffer of {len}"))
    }
}

/// Which detector a signal uses and its tunables, as written in config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
// The ensemble variant is the big one; a spec exists once per signal and
// is cloned only when a series starts, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum DetectorSpec {
    /// Exponentially weighted level and spread with clipped (robust) updates.
    RobustEwma(RobustEwmaParams),
    /// Rolling median and MAD: a baseline outliers cannot bend.
    MedianMad(MedianMadParams),
    /// Daily profile per time-of-day bucket: removes the daily shape.
    Seasonal(SeasonalParams),
    /// Two-sided CUSUM: small lasting level shifts (change points).
    Cusum(CusumParams),
    /// k-means (linfa) on windowed shape features, refitted on the recent
    /// past: shape changes that stay within the usual range.
    Kmeans(KMeansParams),
    /// Novelty of the recent pattern against a memory of past patterns:
    /// shape changes and never-seen contexts, calibrated per series.
    Context(ContextParams),
    /// Calibrated combination of the above with alarm suppression.
    Ensemble(EnsembleParams),
}

impl Default for DetectorSpec {
    fn default() -> Self {
        DetectorSpec::RobustEwma(RobustEwmaParams::default())
    }
}

impl DetectorSpec {
    /// Checks the tunables; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            DetectorSpec::RobustEwma(p) => p.validate(),
            DetectorSpec::MedianMad(p) => p.validate(),
            DetectorSpec::Seasonal(p) => p.validate(),
            DetectorSpec::Cusum(p) => p.validate(),
            DetectorSpec::Kmeans(p) => p.validate(),
            DetectorSpec::Context(p) => p.validate(),
            DetectorSpec::Ensemble(p) => p.validate(),
        }
    }

    /// A fresh detector for one series.
    pub fn build(&self, direction: crate::signal::Direction) -> Box<dyn Detector> {
        match self {
            DetectorSpec::RobustEwma(p) => Box::new(RobustEwma::new(p.clone(), direction)),
            // The new detectors score both directions; their likelihood is
            // what the backtest and the ensemble use.
            DetectorSpec::MedianMad(p) => Box::new(MedianMad::new(p)),
            DetectorSpec::Seasonal(p) => Box::new(Seasonal::new(p)),
            DetectorSpec::Cusum(p) => Box::new(Cusum::new(p)),
            DetectorSpec::Kmeans(p) => Box::new(KMeansDetector::new(p)),
            DetectorSpec::Context(p) => Box::new(ContextNovelty::new(p)),
            DetectorSpec::Ensemble(p) => Box::new(Ensemble::new(p)),
        }
    }
}

/// Deterministic noise in [-1, 1) for detector tests (SplitMix64), so
/// tests need no RNG crate.
#[cfg(test)]
pub(crate) fn test_noise(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Direction;

    /// Every kind of detector with its defaults, and an ensemble with every
    /// member on.
    fn every_spec() -> Vec<DetectorSpec> {
        vec![
            DetectorSpec::RobustEwma(RobustEwmaParams::default()),
            DetectorSpec::MedianMad(MedianMadParams::default()),
            DetectorSpec::Seasonal(SeasonalParams::default()),
            DetectorSpec::Cusum(CusumParams::default()),
            DetectorSpec::Kmeans(KMeansParams::default()),
            DetectorSpec::Context(ContextParams::default()),
            DetectorSpec::Ensemble(EnsembleParams::default()),
            DetectorSpec::Ensemble(EnsembleParams {
                cusum: Some(CusumParams::default()),
                kmeans: Some(KMeansParams::default()),
                ..EnsembleParams::default()
            }),
        ]
    }

    /// A daily wave with noise; from `change` on, `future` is added and
    /// the noise differs, so anything that peeked ahead would differ before.
    fn series(change: usize, future: f64) -> Vec<(i64, f64)> {
        (0..3000)
            .map(|i| {
                let wave = 10.0 + 3.0 * ((i % 288) as f64 / 288.0 * std::f64::consts::TAU).sin();
                let x = if i >= change {
                    wave + future + test_noise(i as u64 + 7)
                } else {
                    wave + test_noise(i as u64)
                };
                (i as i64 * 300_000, x)
            })
            .collect()
    }

    /// Causality: the score at `t` uses samples ≤ `t` only, so changing the
    /// future cannot change any earlier score (z, likelihood or alarm).
    #[test]
    fn every_detector_is_causal() {
        for spec in every_spec() {
            let run = |data: &[(i64, f64)]| -> Vec<(f64, f64, bool)> {
                let mut d = spec.build(Direction::Both);
                data.iter()
                    .map(|&(t, x)| {
                        let (s, p) = d.update_likelihood(t, x);
                        (s.z, p, s.anomalous)
                    })
                    .collect()
            };
            let a = run(&series(2000, 0.0));
            let b = run(&series(2000, 25.0));
            assert_eq!(a[..2000], b[..2000], "{spec:?}");
            assert_ne!(a[2000..], b[2000..], "{spec:?}: the change must show");
        }
    }

    /// A saved state restored into a fresh detector continues exactly as
    /// the original, for every kind.
    #[test]
    fn every_detector_resumes_from_its_saved_state() {
        let data = series(3000, 0.0);
        for spec in every_spec() {
            let mut original = spec.build(Direction::Both);
            for &(t, x) in &data[..1500] {
                original.update_likelihood(t, x);
            }
            let saved = original.save_state().expect("save");
            let mut restored = spec.build(Direction::Both);
            restored.load_state(saved).expect("load");
            for &(t, x) in &data[1500..] {
                assert_eq!(
                    original.update_likelihood(t, x),
                    restored.update_likelihood(t, x),
                    "{spec:?}"
                );
            }
        }
    }
}
