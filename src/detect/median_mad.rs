//! Robust baseline: rolling median and MAD over the last `window` samples.
//!
//! Why: the median and the median absolute deviation ignore up to half of
//! the window being outliers, so bursts and spikes do not bend the
//! baseline the way a mean does; the cost is a small ring buffer and a
//! selection per sample.

use serde::{Deserialize, Serialize};

use super::calibrate::{CalibrationParams, Calibrator};
use super::{Detector, Score};
use crate::signal::TimestampMs;

/// Tunables of [`MedianMad`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MedianMadParams {
    /// Samples in the rolling window, 8..=256. Default: `128` (best of 64/128/256 on NAB).
    #[serde(default = "d_window")]
    pub window: u32,
    /// Likelihood at or past which a sample is anomalous. Default: `0.6`.
    #[serde(default = "d_alarm")]
    pub alarm: f64,
    /// Calibration of the raw `|x - median| / MAD` score.
    #[serde(default)]
    pub calibration: CalibrationParams,
}

fn d_window() -> u32 {
    128
}
pub(crate) fn d_alarm() -> f64 {
    0.6
}

impl Default for MedianMadParams {
    fn default() -> Self {
        Self {
            window: d_window(),
            alarm: d_alarm(),
            calibration: CalibrationParams::default(),
        }
    }
}

impl MedianMadParams {
    /// Checks the tunables; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(8..=256).contains(&self.window) {
            return Err(format!("window must be 8..=256, got {}", self.window));
        }
        check_alarm(self.alarm)?;
        self.calibration
            .validate()
            .map_err(|e| format!("calibration.{e}"))
    }
}

pub(crate) fn check_alarm(alarm: f64) -> Result<(), String> {
    if alarm > 0.0 && alarm < 1.0 {
        Ok(())
    } else {
        Err(format!("alarm must be in (0, 1), got {alarm}"))
    }
}

thread_local! {
    /// Work space for the median selections. Why per thread and not per
    /// series: it holds nothing between samples, and keeping a copy in each
    /// detector would double its state (1 KiB per series at window 128).
    static SCRATCH: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rolling median/MAD detector for one series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MedianMad {
    /// Capacity of `ring` (explicit so a loaded state keeps it).
    window: usize,
    ring: Vec<f64>,
    next: usize,
    alarm: f64,
    cal: Calibrator,
}

impl MedianMad {
    /// A cold detector.
    pub fn new(p: &MedianMadParams) -> Self {
        let w = p.window as usize;
        Self {
            window: w,
            ring: Vec::with_capacity(w),
            next: 0,
            alarm: p.alarm,
            cal: Calibrator::new(&p.calibration),
        }
    }

    /// Checks a loaded state against `fresh` (same spec).
    pub(super) fn check_state(&self, fresh: &Self) -> Result<(), String> {
        if self.window != fresh.window || self.ring.len() > self.window {
            return Err(format!(
                "median_mad: saved with window {} ({} values), configured {}",
                self.window,
                self.ring.len(),
                fresh.window
            ));
        }
        super::check_index("median_mad.next", self.next, self.window)
    }

    fn median(buf: &mut [f64]) -> f64 {
        let mid = buf.len() / 2;
        let (_, m, _) = buf.select_nth_unstable_by(mid, f64::total_cmp);
        *m
    }

    /// The raw score: signed deviation in robust spreads, with the median
    /// and spread it was measured against.
    fn raw(&mut self, x: f64) -> (f64, f64, f64) {
        if self.ring.len() < 4 {
            return (0.0, x, 1e-9);
        }
        let (med, mad) = SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            scratch.extend_from_slice(&self.ring);
            let med = Self::median(scratch);
            for v in scratch.iter_mut() {
                *v = (*v - med).abs();
            }
            (med, Self::median(scratch))
        });
        // Floor the spread so a flat stretch does not turn a tiny wiggle into
        // an infinite score.
        let spread = (1.4826 * mad).max(1e-3 * med.abs()).max(1e-9);
        ((x - med) / spread, med, spread)
    }

    fn learn(&mut self, x: f64) {
        let cap = self.window;
        if self.ring.len() < cap {
            self.ring.push(x);
        } else {
            self.ring[self.next] = x;
            self.next = (self.next + 1) % cap;
        }
    }
}

impl Detector for MedianMad {
    fn update(&mut self, t: TimestampMs, x: f64) -> Score {
        self.update_likelihood(t, x).0
    }

    fn update_likelihood(&mut self, _t: TimestampMs, x: f64) -> (Score, f64) {
        let (z, expected, spread) = self.raw(x);
        self.learn(x);
        let p = self.cal.update(z.abs());
        (
            Score {
                z,
                expected,
                spread,
                anomalous: p >= self.alarm,
            },
            p,
        )
    }

    super::serde_state!();

    fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + 8 * self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::test_noise as noise;

    #[test]
    fn spike_scores_far_above_noise_and_does_not_move_the_median() {
        let mut d = MedianMad::new(&MedianMadParams::default());
        let mut quiet: f64 = 0.0;
        for i in 0..1000 {
            quiet = quiet.max(d.update_likelihood(i, 10.0 + noise(i as u64)).1);
        }
        let (s, p) = d.update_likelihood(1000, 50.0);
        assert!(s.anomalous && p > quiet, "{p} vs {quiet}");
        let (s, _) = d.update_likelihood(1001, 10.0);
        assert!((s.expected - 10.0).abs() < 0.5);
    }

    #[test]
    fn state_is_bounded() {
        let mut d = MedianMad::new(&MedianMadParams::default());
        for i in 0..10_000 {
            d.update(i, noise(i as u64));
        }
        assert!(d.state_bytes() <= 1200, "{}", d.state_bytes());
    }
}
