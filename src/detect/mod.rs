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

mod engine;
mod robust_ewma;

pub use engine::{Engine, EngineStats, SignalDetection};
pub use robust_ewma::{RobustEwma, RobustEwmaParams};

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
}

/// Which detector a signal uses and its tunables, as written in config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DetectorSpec {
    /// Exponentially weighted level and spread with clipped (robust) updates.
    RobustEwma(RobustEwmaParams),
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
        }
    }

    /// A fresh detector for one series.
    pub fn build(&self, direction: crate::signal::Direction) -> Box<dyn Detector> {
        match self {
            DetectorSpec::RobustEwma(p) => Box::new(RobustEwma::new(p.clone(), direction)),
        }
    }
}
