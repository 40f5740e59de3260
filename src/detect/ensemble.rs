//! Ensemble: robust median/MAD, seasonal profile and (optionally) CUSUM change-point,
//! each calibrated to a likelihood, combined, with repeated alarms
//! suppressed.
//!
//! Why: each member sees a different kind of fault (a spike, an
//! off-hours value, a small lasting shift); calibration makes their
//! outputs comparable so the strongest evidence wins. One incident should
//! raise one alarm, not one per sample: after an alarm, the output is
//! damped for `suppress` samples, so a long fault costs one
//! notification, not hundreds.

use serde::{Deserialize, Serialize};

use super::context::{ContextNovelty, ContextParams};
use super::cusum::{Cusum, CusumParams};
use super::kmeans::{KMeansDetector, KMeansParams};
use super::median_mad::{check_alarm, MedianMad, MedianMadParams};
use super::seasonal::{Seasonal, SeasonalParams};
use super::{Detector, Score};
use crate::signal::TimestampMs;

/// Tunables of [`Ensemble`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleParams {
    /// The robust baseline member; `null` leaves it out (to measure the
    /// others alone).
    #[serde(default = "d_median_mad")]
    pub median_mad: Option<MedianMadParams>,
    /// The seasonal member; `null` leaves it out.
    #[serde(default = "d_seasonal")]
    pub seasonal: Option<SeasonalParams>,
    /// The change-point member; default off (`null`): on NAB it is a wash
    /// (standard +0.4, reward_low_FP -1.6) for the extra state and time,
    /// see docs/DETECTION.md.
    #[serde(default = "d_cusum")]
    pub cusum: Option<CusumParams>,
    /// The ML member (k-means on windowed shape features); `null` leaves
    /// it out. See docs/DETECTION.md for what it adds on NAB.
    #[serde(default = "d_kmeans")]
    pub kmeans: Option<KMeansParams>,
    /// The contextual-novelty member (recent pattern against a memory of
    /// past patterns); with `combine: gated` (the default) it scales the
    /// level members instead of voting. `null` leaves it out.
    #[serde(default = "d_context")]
    pub context: Option<ContextParams>,
    /// Likelihood at or past which the ensemble alarms. Default: `0.6`.
    #[serde(default = "super::median_mad::d_alarm")]
    pub alarm: f64,
    /// Samples after an alarm during which the output is damped. Default: `150`.
    #[serde(default = "d_suppress")]
    pub suppress: u32,
    /// Factor applied to the output while suppressed, in [0, 1]. Default: `0.5`.
    #[serde(default = "d_damp")]
    pub damp: f64,
    /// After the `suppress` period, the ensemble re-arms only once the
    /// combined likelihood has stayed below `alarm` for this many
    /// consecutive samples: one alarm per *episode*, however long it lasts,
    /// instead of one every `suppress` samples while a fault (or a noisy
    /// stretch) persists. `0` re-arms as soon as `suppress` ends. Default: `0`.
    #[serde(default)]
    pub rearm: u32,
    /// How member likelihoods are combined. Default: `gated`.
    #[serde(default)]
    pub combine: Combine,
    /// With `combine: gated`: the distance from the current context to
    /// its nearest remembered one (mean absolute difference in 1/255 of
    /// the series' range) at or past which a level deviation counts in
    /// full; closer contexts scale it down linearly. Default: `8` (NAB
    /// standard score: 3 → 63.9, 6 → 68.6, 8 → 68.0, 12 → 61.9 with a
    /// 512-context memory).
    #[serde(default = "d_gate")]
    pub gate: f64,
    /// With `combine: gated`, the least a level deviation keeps of its
    /// likelihood however familiar its context, in [0, 1], so a very
    /// strong deviation in a familiar shape can still alarm. Default: `0`.
    #[serde(default)]
    pub gate_floor: f64,
    /// What starts a suppression period. Default: `alarm`.
    #[serde(default)]
    pub suppression: Suppression,
}

/// What starts (and what breaks through) a suppression period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Suppression {
    /// A likelihood at or past `alarm` starts `suppress` damped samples.
    #[default]
    Alarm,
    /// Threshold-free: a likelihood passes undamped only if it is higher
    /// than every likelihood since the last one that passed, within the
    /// last `suppress` samples; everything else is damped. Why: whatever
    /// threshold a user (or NAB's optimiser) picks, an episode raises one
    /// alarm at its first crossing plus one per *stronger* crossing, not
    /// one per sample, and an internal `alarm` level below or above that
    /// threshold cannot swallow the first crossing.
    Peak,
}

/// How the ensemble combines its members' likelihoods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The strongest member wins: any one member can raise an alarm.
    Max,
    /// The mean of the members: an alarm needs agreement, which trades
    /// single-member detections for fewer false alarms.
    Mean,
    /// The strongest level member (median/MAD, daily profile, CUSUM,
    /// k-means), scaled by the contextual-novelty member's likelihood
    /// relative to `gate`: a deviation whose recent pattern has been seen
    /// before (a daily burst, a recurring spike) is discounted. Without a
    /// context member it is `max`.
    #[default]
    Gated,
}

fn d_median_mad() -> Option<MedianMadParams> {
    Some(MedianMadParams::default())
}
fn d_seasonal() -> Option<SeasonalParams> {
    Some(SeasonalParams::default())
}
fn d_cusum() -> Option<CusumParams> {
    None
}
fn d_kmeans() -> Option<KMeansParams> {
    None
}
fn d_gate() -> f64 {
    8.0
}
fn d_context() -> Option<ContextParams> {
    Some(ContextParams::default())
}
fn d_suppress() -> u32 {
    150
}
fn d_damp() -> f64 {
    0.5
}

impl Default for EnsembleParams {
    fn default() -> Self {
        Self {
            median_mad: d_median_mad(),
            seasonal: d_seasonal(),
            cusum: d_cusum(),
            kmeans: d_kmeans(),
            context: d_context(),
            alarm: super::median_mad::d_alarm(),
            suppress: d_suppress(),
            damp: d_damp(),
            rearm: 0,
            combine: Combine::default(),
            suppression: Suppression::default(),
            gate: d_gate(),
            gate_floor: 0.0,
        }
    }
}

impl EnsembleParams {
    /// Checks the tunables; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(m) = &self.median_mad {
            m.validate().map_err(|e| format!("median_mad.{e}"))?;
        }
        if self.median_mad.is_none()
            && self.seasonal.is_none()
            && self.cusum.is_none()
            && self.kmeans.is_none()
            && self.context.is_none()
        {
            return Err("median_mad: an ensemble needs at least one member".into());
        }
        if self.rearm > 100_000 {
            return Err(format!("rearm must be at most 100000, got {}", self.rearm));
        }
        if let Some(s) = &self.seasonal {
            s.validate().map_err(|e| format!("seasonal.{e}"))?;
        }
        if let Some(c) = &self.cusum {
            c.validate().map_err(|e| format!("cusum.{e}"))?;
        }
        if let Some(k) = &self.kmeans {
            k.validate().map_err(|e| format!("kmeans.{e}"))?;
        }
        if let Some(c) = &self.context {
            c.validate().map_err(|e| format!("context.{e}"))?;
        }
        check_alarm(self.alarm)?;
        if self.suppress > 100_000 {
            return Err(format!(
                "suppress must be at most 100000, got {}",
                self.suppress
            ));
        }
        if !(self.gate > 0.0 && self.gate <= 255.0) {
            return Err(format!("gate must be in (0, 255], got {}", self.gate));
        }
        if !(0.0..=1.0).contains(&self.gate_floor) {
            return Err(format!(
                "gate_floor must be in [0, 1], got {}",
                self.gate_floor
            ));
        }
        if !(0.0..=1.0).contains(&self.damp) {
            return Err(format!("damp must be in [0, 1], got {}", self.damp));
        }
        Ok(())
    }
}

/// The ensemble for one series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ensemble {
    median: Option<MedianMad>,
    seasonal: Option<Seasonal>,
    cusum: Option<Cusum>,
    /// Boxed: off by default, and inline it would cost its full size in
    /// every series' state.
    kmeans: Option<Box<KMeansDetector>>,
    context: Option<ContextNovelty>,
    alarm: f64,
    suppress: u32,
    damp: f64,
    rearm: u32,
    combine: Combine,
    suppression: Suppression,
    gate: f64,
    gate_floor: f64,
    /// Highest likelihood passed since the quiet period started (peak mode).
    peak: f64,
    /// Samples left in the current suppression period.
    quiet: u32,
    /// Consecutive calm samples still needed before the ensemble re-arms.
    calm_needed: u32,
}

impl Ensemble {
    /// A cold ensemble.
    pub fn new(p: &EnsembleParams) -> Self {
        Self {
            median: p.median_mad.as_ref().map(MedianMad::new),
            seasonal: p.seasonal.as_ref().map(Seasonal::new),
            cusum: p.cusum.as_ref().map(Cusum::new),
            kmeans: p.kmeans.as_ref().map(|k| Box::new(KMeansDetector::new(k))),
            context: p.context.as_ref().map(ContextNovelty::new),
            alarm: p.alarm,
            suppress: p.suppress,
            damp: p.damp,
            rearm: p.rearm,
            combine: p.combine,
            suppression: p.suppression,
            gate: p.gate,
            gate_floor: p.gate_floor,
            peak: 0.0,
            quiet: 0,
            calm_needed: 0,
        }
    }
}

impl Ensemble {
    /// Checks a loaded state against `fresh` (same spec): same members,
    /// each consistent.
    pub(super) fn check_state(&self, fresh: &Self) -> Result<(), String> {
        fn member<T>(
            name: &str,
            a: &Option<T>,
            b: &Option<T>,
            check: impl Fn(&T, &T) -> Result<(), String>,
        ) -> Result<(), String> {
            match (a, b) {
                (Some(a), Some(b)) => check(a, b),
                (None, None) => Ok(()),
                _ => Err(format!(
                    "ensemble: member {name} saved but not configured, or the reverse"
                )),
            }
        }
        member(
            "median_mad",
            &self.median,
            &fresh.median,
            MedianMad::check_state,
        )?;
        member(
            "seasonal",
            &self.seasonal,
            &fresh.seasonal,
            Seasonal::check_state,
        )?;
        member("cusum", &self.cusum, &fresh.cusum, |_, _| Ok(()))?;
        member("kmeans", &self.kmeans, &fresh.kmeans, |a, b| {
            a.check_state(b)
        })?;
        member(
            "context",
            &self.context,
            &fresh.context,
            ContextNovelty::check_state,
        )
    }
}

impl Detector for Ensemble {
    fn update(&mut self, t: TimestampMs, x: f64) -> Score {
        self.update_likelihood(t, x).0
    }

    fn update_likelihood(&mut self, t: TimestampMs, x: f64) -> (Score, f64) {
        // Level members first, then the context member (the gate).
        let mut level: [Option<(Score, f64)>; 4] = [None; 4];
        level[0] = self.median.as_mut().map(|m| m.update_likelihood(t, x));
        level[1] = self.seasonal.as_mut().map(|s| s.update_likelihood(t, x));
        level[2] = self.cusum.as_mut().map(|c| c.update_likelihood(t, x));
        level[3] = self.kmeans.as_mut().map(|k| k.update_likelihood(t, x));
        let context = self.context.as_mut().map(|c| c.update_likelihood(t, x));
        let all = || level.iter().flatten().chain(context.iter());
        let score: Option<Score> = all().next().map(|r| r.0);
        let max = all().map(|r| r.1).fold(0.0, f64::max);
        let n = all().count().max(1) as f64;
        let p = match (self.combine, context) {
            (Combine::Max, _) => max,
            (Combine::Mean, _) => all().map(|r| r.1).sum::<f64>() / n,
            (Combine::Gated, Some((c, _))) => {
                let level_max = level.iter().flatten().map(|r| r.1).fold(0.0, f64::max);
                level_max * (c.z / self.gate).clamp(self.gate_floor, 1.0)
            }
            (Combine::Gated, None) => max,
        };
        let score = score.unwrap_or(Score {
            z: 0.0,
            expected: x,
            spread: 1e-9,
            anomalous: false,
        });
        let out = if self.suppression == Suppression::Peak {
            if self.quiet > 0 && p <= self.peak {
                self.quiet -= 1;
                p * self.damp
            } else {
                if p > 0.0 {
                    self.quiet = self.suppress;
                    self.peak = p;
                }
                p
            }
        } else if self.quiet > 0 || self.calm_needed > 0 {
            if self.quiet > 0 {
                self.quiet -= 1;
            } else if p >= self.alarm {
                // Still in the episode: start counting calm samples again.
                self.calm_needed = self.rearm;
            } else {
                self.calm_needed -= 1;
            }
            p * self.damp
        } else {
            if p >= self.alarm {
                self.quiet = self.suppress;
                self.calm_needed = self.rearm;
            }
            p
        };
        (
            Score {
                anomalous: out >= self.alarm,
                ..score
            },
            out,
        )
    }

    super::serde_state!();

    fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .median
                .as_ref()
                .map_or(0, |m| m.state_bytes() - std::mem::size_of::<MedianMad>())
            + self
                .seasonal
                .as_ref()
                .map_or(0, |s| s.state_bytes() - std::mem::size_of::<Seasonal>())
            + self.kmeans.as_ref().map_or(0, |k| k.state_bytes())
            + self.context.as_ref().map_or(0, |c| {
                c.state_bytes() - std::mem::size_of::<ContextNovelty>()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::test_noise as noise;

    fn series(n: usize, change_at: usize, future: f64) -> Vec<(i64, f64)> {
        (0..n)
            .map(|i| {
                let base = 10.0
                    + 3.0 * ((i % 288) as f64 / 288.0 * std::f64::consts::TAU).sin()
                    + noise(i as u64);
                (
                    i as i64 * 300_000,
                    if i >= change_at { base + future } else { base },
                )
            })
            .collect()
    }

    /// Causality: the score at t uses samples <= t only, so changing the
    /// future cannot change any score before the change.
    #[test]
    fn scores_are_causal() {
        let spec = crate::detect::DetectorSpec::Ensemble(EnsembleParams::default());
        let run = |data: &[(i64, f64)]| -> Vec<(f64, f64)> {
            let mut d = spec.build(crate::signal::Direction::Both);
            data.iter()
                .map(|&(t, x)| {
                    let (s, p) = d.update_likelihood(t, x);
                    (s.z, p)
                })
                .collect()
        };
        let a = run(&series(3000, 2000, 0.0));
        let b = run(&series(3000, 2000, 40.0));
        assert_eq!(a[..2000], b[..2000]);
        assert_ne!(a[2000..], b[2000..]);
    }

    #[test]
    fn a_fault_alarms_once_then_is_suppressed() {
        let mut d = Ensemble::new(&EnsembleParams::default());
        let data = series(3000, 2500, 30.0);
        let alarms: Vec<usize> = data
            .iter()
            .enumerate()
            .filter_map(|(i, &(t, x))| d.update(t, x).anomalous.then_some(i))
            // The first day is warm-up (the seasonal buckets are still
            // learning); what matters is quiet before the fault, one alarm
            // at its start and none during the suppression period.
            .filter(|&i| i >= 288)
            .collect();
        assert_eq!(
            alarms.first().map(|&i| (2500..2505).contains(&i)),
            Some(true),
            "{alarms:?}"
        );
        assert!(
            alarms
                .iter()
                .all(|&i| i == alarms[0] || i > alarms[0] + 150),
            "{alarms:?}"
        );
        assert!(
            alarms.iter().filter(|&&i| i < 2500).count() == 0,
            "{alarms:?}"
        );
    }

    #[test]
    fn state_fits_the_budget() {
        let mut d = Ensemble::new(&EnsembleParams::default());
        for (t, x) in series(5000, 5000, 0.0) {
            d.update(t, x);
        }
        assert!(d.state_bytes() <= 4096, "{}", d.state_bytes());
    }
}
