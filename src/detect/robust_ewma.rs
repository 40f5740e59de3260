//! The default detector: exponentially weighted level and spread, updated
//! with clipped residuals.
//!
//! Why this one first: it costs a handful of floating-point operations and
//! 64 bytes per series, adapts to slow level drift (daily shape) and to the
//! noise of each series, and a single outlier cannot drag its baseline
//! because each update is clipped at `clip` spreads (a Huber-style robust
//! update). Samples past the threshold do not update the baseline at all,
//! so a sustained fault keeps alarming instead of slowly becoming "normal";
//! only a shift that lasts `adapt_after` samples is accepted as the new
//! level (a deploy that legitimately changed the baseline, a traffic shift).
//! That trade-off is explicit and tunable per signal.
//!
//! Warm-up uses plain running averages (weight `1/n`) until `warmup`
//! samples were seen, so the first estimates are not biased towards the
//! first sample as a cold EWMA would be.

use serde::{Deserialize, Serialize};

use super::{Detector, Score};
use crate::signal::{Direction, TimestampMs};

/// Tunables of [`RobustEwma`]; each has a default that suits most
/// service-level signals sampled every 30 s.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RobustEwmaParams {
    /// Smoothing of the level, in (0, 1): about `1/alpha` samples of memory.
    /// Default: `0.02` (~25 min at 30 s).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Smoothing of the spread, in (0, 1). Default: `0.02`.
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Deviation, in spreads, past which a sample is anomalous. Default: `6.0`.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Residuals are clipped at this many spreads before they update the
    /// level and spread, so outliers do not pollute the baseline. Default: `3.0`.
    #[serde(default = "default_clip")]
    pub clip: f64,
    /// Samples seen before any score counts. Default: `30`.
    #[serde(default = "default_warmup")]
    pub warmup: u32,
    /// Consecutive anomalous samples (same direction) needed before the
    /// detector reports; filters single-sample spikes. Default: `2`.
    #[serde(default = "default_confirm")]
    pub confirm: u32,
    /// Consecutive past-threshold samples after which a shift is accepted
    /// as the new normal: the baseline jumps to the new level and alarms
    /// stop. Default: `60` (30 min at a 30 s step).
    #[serde(default = "default_adapt_after")]
    pub adapt_after: u32,
    /// Smallest spread as a fraction of the level, so a very flat series
    /// does not alarm on a tiny wiggle. Default: `0.01`.
    #[serde(default = "default_min_relative_spread")]
    pub min_relative_spread: f64,
    /// Smallest spread in the signal's own unit. Default: `1e-9`.
    #[serde(default = "default_min_spread")]
    pub min_spread: f64,
}

fn default_alpha() -> f64 {
    0.02
}
fn default_beta() -> f64 {
    0.02
}
fn default_threshold() -> f64 {
    6.0
}
fn default_clip() -> f64 {
    3.0
}
fn default_warmup() -> u32 {
    30
}
fn default_confirm() -> u32 {
    2
}
fn default_adapt_after() -> u32 {
    60
}
fn default_min_relative_spread() -> f64 {
    0.01
}
fn default_min_spread() -> f64 {
    1e-9
}

impl Default for RobustEwmaParams {
    fn default() -> Self {
        Self {
            alpha: default_alpha(),
            beta: default_beta(),
            threshold: default_threshold(),
            clip: default_clip(),
            warmup: default_warmup(),
            confirm: default_confirm(),
            adapt_after: default_adapt_after(),
            min_relative_spread: default_min_relative_spread(),
            min_spread: default_min_spread(),
        }
    }
}

impl RobustEwmaParams {
    /// Checks every tunable is in range; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        let unit = |name: &str, v: f64| {
            if v > 0.0 && v < 1.0 {
                Ok(())
            } else {
                Err(format!("{name} must be in (0, 1), got {v}"))
            }
        };
        unit("alpha", self.alpha)?;
        unit("beta", self.beta)?;
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(format!("threshold must be > 0, got {}", self.threshold));
        }
        if !(self.clip.is_finite() && self.clip >= 1.0) {
            return Err(format!("clip must be >= 1, got {}", self.clip));
        }
        if self.warmup < 2 {
            return Err(format!("warmup must be >= 2, got {}", self.warmup));
        }
        if !(1..=100).contains(&self.confirm) {
            return Err(format!("confirm must be 1..=100, got {}", self.confirm));
        }
        if self.adapt_after < self.confirm {
            return Err(format!(
                "adapt_after must be >= confirm ({}), got {}",
                self.confirm, self.adapt_after
            ));
        }
        if !(self.min_relative_spread >= 0.0 && self.min_relative_spread.is_finite()) {
            return Err(format!(
                "min_relative_spread must be >= 0, got {}",
                self.min_relative_spread
            ));
        }
        // Tunables are held as f32 in the per-series state: reject values
        // that f32 cannot hold, rather than silently rounding them to 0 or inf.
        if !(self.min_spread >= 1e-30 && self.min_spread <= 1e30) {
            return Err(format!(
                "min_spread must be in [1e-30, 1e30], got {}",
                self.min_spread
            ));
        }
        if self.min_relative_spread > 1e30 || self.threshold > 1e30 || self.clip > 1e30 {
            return Err("min_relative_spread, threshold and clip must be at most 1e30".into());
        }
        Ok(())
    }
}

/// Per-series state of the robust EWMA detector.
///
/// Parameters are copied into the few fields the hot path needs rather than
/// held as a shared pointer: 64 bytes inline beats a pointer chase per
/// sample, and keeps each series self-contained.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RobustEwma {
    level: f64,
    var: f64,
    alpha: f32,
    beta: f32,
    threshold: f32,
    clip: f32,
    min_relative_spread: f32,
    min_spread: f32,
    seen: u32,
    warmup: u32,
    /// Consecutive past-threshold samples; sign gives their direction.
    streak: i32,
    confirm: u16,
    adapt_after: u16,
    direction: Direction,
}

impl RobustEwma {
    /// A loaded state has no buffers to check: any values are usable.
    pub(super) fn check_state(&self, _fresh: &Self) -> Result<(), String> {
        Ok(())
    }

    /// A cold detector with the given tunables.
    pub fn new(p: RobustEwmaParams, direction: Direction) -> Self {
        Self {
            level: 0.0,
            var: 0.0,
            alpha: p.alpha as f32,
            beta: p.beta as f32,
            threshold: p.threshold as f32,
            clip: p.clip as f32,
            min_relative_spread: p.min_relative_spread as f32,
            min_spread: p.min_spread as f32,
            seen: 0,
            warmup: p.warmup,
            streak: 0,
            confirm: u16::try_from(p.confirm).unwrap_or(u16::MAX),
            adapt_after: u16::try_from(p.adapt_after).unwrap_or(u16::MAX),
            direction,
        }
    }

    fn spread(&self) -> f64 {
        let floor =
            f64::from(self.min_spread).max(f64::from(self.min_relative_spread) * self.level.abs());
        self.var.sqrt().max(floor)
    }
}

impl Detector for RobustEwma {
    #[inline]
    fn update(&mut self, _t: TimestampMs, x: f64) -> Score {
        if self.seen == 0 {
            self.level = x;
            self.var = 0.0;
            self.seen = 1;
            return Score {
                z: 0.0,
                expected: x,
                spread: self.spread(),
                anomalous: false,
            };
        }
        let expected = self.level;
        let spread = self.spread();
        let residual = x - expected;
        let z = residual / spread;
        let warm = self.seen >= self.warmup;

        let past = match self.direction {
            Direction::Up => z > f64::from(self.threshold),
            Direction::Down => z < -f64::from(self.threshold),
            Direction::Both => z.abs() > f64::from(self.threshold),
        };
        self.streak = if !past {
            0
        } else if z > 0.0 {
            self.streak.max(0).saturating_add(1)
        } else {
            self.streak.min(0).saturating_sub(1)
        };
        let anomalous = warm && self.streak.unsigned_abs() >= u32::from(self.confirm);

        // Learn: plain averages while warming up, then exponential weights
        // with residuals clipped so outliers cannot drag the baseline. Once
        // warm, samples past the threshold teach nothing — unless the shift
        // has lasted `adapt_after` samples, when it becomes the new normal.
        self.seen = self.seen.saturating_add(1);
        if !warm {
            let w = (1.0 / f64::from(self.seen)).max(f64::from(self.alpha));
            self.level += w * residual;
            self.var = (1.0 - w) * self.var + w * residual * residual;
        } else if self.streak.unsigned_abs() >= u32::from(self.adapt_after) {
            self.level = x;
            self.streak = 0;
        } else if !past {
            let limit = f64::from(self.clip) * spread;
            let r = residual.clamp(-limit, limit);
            self.level += f64::from(self.alpha) * r;
            self.var = (1.0 - f64::from(self.beta)) * self.var + f64::from(self.beta) * r * r;
        }

        Score {
            z: if warm { z } else { 0.0 },
            expected,
            spread,
            anomalous,
        }
    }

    super::serde_state!();

    fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise in [-1, 1) so tests need no RNG crate.
    fn noise(i: u64) -> f64 {
        let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    fn run(det: &mut RobustEwma, values: impl IntoIterator<Item = f64>) -> Vec<Score> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, x)| det.update(i as i64 * 30_000, x))
            .collect()
    }

    #[test]
    fn quiet_noisy_series_never_alarms() {
        let mut d = RobustEwma::new(RobustEwmaParams::default(), Direction::Both);
        let scores = run(&mut d, (0..5000).map(|i| 100.0 + 5.0 * noise(i)));
        assert!(scores.iter().all(|s| !s.anomalous));
    }

    #[test]
    fn step_up_is_detected_after_confirmation_and_not_before_warmup() {
        let mut d = RobustEwma::new(RobustEwmaParams::default(), Direction::Both);
        let mut values: Vec<f64> = (0..500).map(|i| 10.0 + noise(i)).collect();
        values.extend((500..560).map(|i| 30.0 + noise(i)));
        let scores = run(&mut d, values);
        let first = scores.iter().position(|s| s.anomalous).expect("detected");
        assert_eq!(first, 501, "confirm=2 means the second high sample reports");
        assert!(scores[first].z > 6.0);
        assert!((scores[first].expected - 10.0).abs() < 1.0);
    }

    #[test]
    fn direction_up_ignores_drops() {
        let mut d = RobustEwma::new(RobustEwmaParams::default(), Direction::Up);
        let mut values: Vec<f64> = (0..300).map(|i| 10.0 + noise(i)).collect();
        values.extend((300..400).map(|_| 0.0));
        assert!(run(&mut d, values).iter().all(|s| !s.anomalous));
    }

    #[test]
    fn single_spike_neither_alarms_nor_moves_the_baseline() {
        let mut d = RobustEwma::new(RobustEwmaParams::default(), Direction::Both);
        let mut values: Vec<f64> = (0..300).map(|i| 10.0 + noise(i)).collect();
        values.push(1e6);
        values.extend((301..320).map(|i| 10.0 + noise(i)));
        let scores = run(&mut d, values);
        assert!(scores.iter().all(|s| !s.anomalous));
        assert!(
            (scores[319].expected - 10.0).abs() < 0.5,
            "{:?}",
            scores[319]
        );
    }

    #[test]
    fn flat_series_gets_a_relative_spread_floor() {
        let mut d = RobustEwma::new(RobustEwmaParams::default(), Direction::Both);
        let mut values: Vec<f64> = vec![50.0; 200];
        values.extend([50.5, 50.5, 50.5]); // +1%: within 6 floor spreads
        assert!(run(&mut d, values).iter().all(|s| !s.anomalous));
    }

    #[test]
    fn sustained_shift_alarms_until_adapt_after_then_becomes_normal() {
        let p = RobustEwmaParams {
            adapt_after: 40,
            ..Default::default()
        };
        let mut d = RobustEwma::new(p, Direction::Both);
        let mut values: Vec<f64> = (0..300).map(|i| 10.0 + noise(i)).collect();
        values.extend((300..400).map(|i| 30.0 + noise(i)));
        let scores = run(&mut d, values);
        // Alarms for the whole first 40 samples of the shift (after confirmation)...
        assert!(
            scores[301..339].iter().all(|s| s.anomalous),
            "fault keeps alarming"
        );
        // ...then the new level is accepted.
        assert!(scores[345..400].iter().all(|s| !s.anomalous));
        assert!(
            (scores[399].expected - 30.0).abs() < 1.0,
            "{:?}",
            scores[399]
        );
    }

    #[test]
    fn state_is_small() {
        let d = RobustEwma::new(RobustEwmaParams::default(), Direction::Both);
        assert!(d.state_bytes() <= 64, "{}", d.state_bytes());
    }

    #[test]
    fn bad_params_name_the_field() {
        let p = RobustEwmaParams {
            alpha: 1.5,
            ..Default::default()
        };
        assert!(p.validate().expect_err("invalid").starts_with("alpha"));
        let p = RobustEwmaParams {
            confirm: 0,
            ..Default::default()
        };
        assert!(p.validate().expect_err("invalid").starts_with("confirm"));
        // Would round to 0 in the detector's f32 state.
        let p = RobustEwmaParams {
            min_spread: 1e-46,
            ..Default::default()
        };
        assert!(p.validate().expect_err("invalid").starts_with("min_spread"));
    }
}
