//! Change-point detection: two-sided CUSUM on standardised residuals.
//!
//! Why: a small but lasting shift in level (a slow leak, a degraded
//! dependency) never crosses a per-sample threshold, but its residuals
//! accumulate; CUSUM sums the excess over a slack `k` and flags when the
//! sum grows, which is the optimal test for a mean shift of about `2k`
//! spreads. After an alarm the baseline re-centres on the new level.

use serde::{Deserialize, Serialize};

use super::calibrate::{CalibrationParams, Calibrator};
use super::median_mad::check_alarm;
use super::{Detector, Score};
use crate::signal::TimestampMs;

/// Tunables of [`Cusum`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CusumParams {
    /// Smoothing of the baseline level and spread, in (0, 1). Default: `0.01`.
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// Slack in spreads subtracted from each residual. Default: `0.5`.
    #[serde(default = "d_k")]
    pub k: f64,
    /// Sum (in spreads) at which the shift is accepted and the sums reset. Default: `12`.
    #[serde(default = "d_h")]
    pub h: f64,
    /// Likelihood at or past which a sample is anomalous. Default: `0.6`.
    #[serde(default = "super::median_mad::d_alarm")]
    pub alarm: f64,
    /// Calibration of the raw CUSUM statistic.
    #[serde(default)]
    pub calibration: CalibrationParams,
}

fn d_alpha() -> f64 {
    0.01
}
fn d_k() -> f64 {
    0.5
}
fn d_h() -> f64 {
    12.0
}

impl Default for CusumParams {
    fn default() -> Self {
        Self {
            alpha: d_alpha(),
            k: d_k(),
            h: d_h(),
            alarm: super::median_mad::d_alarm(),
            calibration: CalibrationParams::default(),
        }
    }
}

impl CusumParams {
    /// Checks the tunables; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!("alpha must be in (0, 1), got {}", self.alpha));
        }
        if !(self.k >= 0.0 && self.k <= 100.0) {
            return Err(format!("k must be in [0, 100], got {}", self.k));
        }
        if !(self.h > 0.0 && self.h <= 1e6) {
            return Err(format!("h must be in (0, 1e6], got {}", self.h));
        }
        check_alarm(self.alarm)?;
        self.calibration
            .validate()
            .map_err(|e| format!("calibration.{e}"))
    }
}

/// CUSUM detector for one series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cusum {
    level: f64,
    var: f64,
    up: f64,
    down: f64,
    seen: u32,
    p: CusumParams,
    cal: Calibrator,
}

impl Cusum {
    /// A loaded state has no buffers to check: any values are usable.
    pub(super) fn check_state(&self, _fresh: &Self) -> Result<(), String> {
        Ok(())
    }

    /// A cold detector.
    pub fn new(p: &CusumParams) -> Self {
        Self {
            level: 0.0,
            var: 0.0,
            up: 0.0,
            down: 0.0,
            seen: 0,
            cal: Calibrator::new(&p.calibration),
            p: p.clone(),
        }
    }
}

impl Detector for Cusum {
    fn update(&mut self, t: TimestampMs, x: f64) -> Score {
        self.update_likelihood(t, x).0
    }

    fn update_likelihood(&mut self, _t: TimestampMs, x: f64) -> (Score, f64) {
        if self.seen == 0 {
            self.level = x;
        }
        let expected = self.level;
        let spread = self.var.sqrt().max(1e-3 * self.level.abs()).max(1e-9);
        let z = (x - expected) / spread;
        let warm = self.seen >= 20;
        let zc = z.clamp(-20.0, 20.0);
        if warm {
            self.up = (self.up + zc - self.p.k).max(0.0);
            self.down = (self.down - zc - self.p.k).max(0.0);
        }
        let stat = self.up.max(self.down);
        self.seen = self.seen.saturating_add(1);
        let w = (1.0 / f64::from(self.seen)).max(self.p.alpha);
        if stat > self.p.h {
            // Accept the shift: re-centre on the new level.
            self.level = x;
            self.up = 0.0;
            self.down = 0.0;
        } else {
            let r = (x - self.level).clamp(-3.0 * spread, 3.0 * spread);
            let r = if warm { r } else { x - self.level };
            self.level += w * r;
            self.var = (1.0 - w) * (self.var + w * r * r);
        }
        let p = self.cal.update(stat);
        (
            Score {
                z: if warm { z } else { 0.0 },
                expected,
                spread,
                anomalous: p >= self.p.alarm,
            },
            p,
        )
    }

    super::serde_state!();

    fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::test_noise as noise;

    #[test]
    fn small_lasting_shift_is_flagged() {
        let mut d = Cusum::new(&CusumParams::default());
        let mut quiet: f64 = 0.0;
        for i in 0..2000 {
            quiet = quiet.max(d.update_likelihood(i, 10.0 + noise(i as u64)).1);
        }
        let mut peak: f64 = 0.0;
        for i in 2000..2030 {
            peak = peak.max(d.update_likelihood(i, 11.5 + noise(i as u64)).1);
        }
        assert!(peak > quiet, "{peak} vs {quiet}");
    }
}
