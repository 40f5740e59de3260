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
mod cusum;
mod engine;
mod ensemble;
mod kmeans;
mod median_mad;
pub mod preset;
mod robust_ewma;
mod seasonal;

pub use calibrate::{ln_normal_tail, CalibrationParams, Calibrator};
pub use cusum::{Cusum, CusumParams};
pub use engine::{Engine, EngineStats, SignalDetection};
pub use ensemble::{Combine, Ensemble, EnsembleParams};
pub use kmeans::{KMeansDetector, KMeansParams};
pub use median_mad::{MedianMad, MedianMadParams};
pub use robust_ewma::{RobustEwma, RobustEwmaParams};
pub use seasonal::{Seasonal, SeasonalParams};

use serde::Deserialize;

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
}

/// Which detector a signal uses and its tunables, as written in config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
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
