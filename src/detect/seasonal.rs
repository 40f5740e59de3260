//! Seasonal baseline: a daily profile of level and spread per time-of-day
//! bucket, learned with exponential weights.
//!
//! Why: most service signals follow the day (traffic, CPU, latency under
//! load). A flat baseline either alarms every morning or is too wide to
//! catch a fault at night; comparing each sample with the same hour on
//! previous days removes the daily shape. Buckets are keyed by data time
//! (not sample count), so gaps and irregular steps do not shift the phase.
//! State is two floats per bucket.

use serde::{Deserialize, Serialize};

use super::calibrate::{CalibrationParams, Calibrator};
use super::median_mad::check_alarm;
use super::{Detector, Score};
use crate::signal::TimestampMs;

const DAY_MS: i64 = 86_400_000;

/// Tunables of [`Seasonal`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonalParams {
    /// Buckets per day, 1..=288. Default: `24` (hourly).
    #[serde(default = "d_buckets")]
    pub buckets: u32,
    /// Weight of a new sample in its bucket, in (0, 1). Default: `0.1`.
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// Likelihood at or past which a sample is anomalous. Default: `0.6`.
    #[serde(default = "super::median_mad::d_alarm")]
    pub alarm: f64,
    /// Calibration of the raw per-bucket z-score.
    #[serde(default)]
    pub calibration: CalibrationParams,
}

fn d_buckets() -> u32 {
    24
}
fn d_alpha() -> f64 {
    0.1
}

impl Default for SeasonalParams {
    fn default() -> Self {
        Self {
            buckets: d_buckets(),
            alpha: d_alpha(),
            alarm: super::median_mad::d_alarm(),
            calibration: CalibrationParams::default(),
        }
    }
}

impl SeasonalParams {
    /// Checks the tunables; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=288).contains(&self.buckets) {
            return Err(format!("buckets must be 1..=288, got {}", self.buckets));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!("alpha must be in (0, 1), got {}", self.alpha));
        }
        check_alarm(self.alarm)?;
        self.calibration
            .validate()
            .map_err(|e| format!("calibration.{e}"))
    }
}

/// Daily-profile detector for one series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seasonal {
    /// (mean, variance, samples) per bucket.
    profile: Vec<(f32, f32, u16)>,
    alpha: f64,
    alarm: f64,
    cal: Calibrator,
}

impl Seasonal {
    /// Checks a loaded state against `fresh` (same spec).
    pub(super) fn check_state(&self, fresh: &Self) -> Result<(), String> {
        if self.profile.len() != fresh.profile.len() {
            return Err(format!(
                "seasonal: saved with {} buckets, configured {}",
                self.profile.len(),
                fresh.profile.len()
            ));
        }
        Ok(())
    }

    /// A cold detector.
    pub fn new(p: &SeasonalParams) -> Self {
        Self {
            profile: vec![(0.0, 0.0, 0); p.buckets as usize],
            alpha: p.alpha,
            alarm: p.alarm,
            cal: Calibrator::new(&p.calibration),
        }
    }
}

impl Detector for Seasonal {
    fn update(&mut self, t: TimestampMs, x: f64) -> Score {
        self.update_likelihood(t, x).0
    }

    fn update_likelihood(&mut self, t: TimestampMs, x: f64) -> (Score, f64) {
        let n = self.profile.len() as i64;
        let idx = (t.rem_euclid(DAY_MS) * n / DAY_MS).clamp(0, n - 1) as usize;
        let Some(b) = self.profile.get_mut(idx) else {
            return (
                Score {
                    z: 0.0,
                    expected: x,
                    spread: 1e-9,
                    anomalous: false,
                },
                0.0,
            );
        };
        let (mean, var, seen) = (f64::from(b.0), f64::from(b.1), b.2);
        let spread = var.sqrt().max(1e-3 * mean.abs()).max(1e-9);
        let warm = seen >= 3;
        let z = if warm { (x - mean) / spread } else { 0.0 };
        let w = if seen == 0 {
            1.0
        } else {
            (1.0 / f64::from(seen + 1)).max(self.alpha)
        };
        let r = if warm {
            (x - mean).clamp(-4.0 * spread, 4.0 * spread)
        } else {
            x - mean
        };
        b.0 = (mean + w * r) as f32;
        b.1 = ((1.0 - w) * (var + w * r * r)) as f32;
        b.2 = seen.saturating_add(1);
        let p = self.cal.update(z.abs());
        (
            Score {
                z,
                expected: mean,
                spread,
                anomalous: p >= self.alarm,
            },
            p,
        )
    }

    super::serde_state!();

    fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.profile.capacity() * std::mem::size_of::<(f32, f32, u16)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::test_noise as noise;

    #[test]
    fn daily_shape_is_learned_and_an_off_hour_peak_flagged() {
        let mut d = Seasonal::new(&SeasonalParams::default());
        let step = 300_000; // 5 min
        let shape = |t: i64| {
            100.0 + 50.0 * ((t % DAY_MS) as f64 / DAY_MS as f64 * std::f64::consts::TAU).sin()
        };
        let mut quiet: f64 = 0.0;
        for i in 0..(14 * 288) {
            let t = i * step;
            let (_, p) = d.update_likelihood(t, shape(t) + noise(i as u64));
            if i > 7 * 288 {
                quiet = quiet.max(p);
            }
        }
        let t = 14 * 288 * step + DAY_MS * 3 / 4; // the daily trough
        let (s, p) = d.update_likelihood(t, 150.0);
        assert!(p > quiet && s.z > 5.0, "{p} vs {quiet}, {s:?}");
    }
}
