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

use serde::Deserialize;

use super::cusum::{Cusum, CusumParams};
use super::kmeans::{KMeansDetector, KMeansParams};
use super::median_mad::{check_alarm, MedianMad, MedianMadParams};
use super::seasonal::{Seasonal, SeasonalParams};
use super::{Detector, Score};
use crate::signal::TimestampMs;

/// Tunables of [`Ensemble`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// How member likelihoods are combined. Default: `max`.
    #[serde(default)]
    pub combine: Combine,
}

/// How the ensemble combines its members' likelihoods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The strongest member wins: any one member can raise an alarm.
    #[default]
    Max,
    /// The mean of the members: an alarm needs agreement, which trades
    /// single-member detections for fewer false alarms.
    Mean,
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
            alarm: super::median_mad::d_alarm(),
            suppress: d_suppress(),
            damp: d_damp(),
            rearm: 0,
            combine: Combine::default(),
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
        check_alarm(self.alarm)?;
        if self.suppress > 100_000 {
            return Err(format!(
                "suppress must be at most 100000, got {}",
                self.suppress
            ));
        }
        if !(0.0..=1.0).contains(&self.damp) {
            return Err(format!("damp must be in [0, 1], got {}", self.damp));
        }
        Ok(())
    }
}

/// The ensemble for one series.
#[derive(Debug, Clone)]
pub struct Ensemble {
    median: Option<MedianMad>,
    seasonal: Option<Seasonal>,
    cusum: Option<Cusum>,
    kmeans: Option<KMeansDetector>,
    alarm: f64,
    suppress: u32,
    damp: f64,
    rearm: u32,
    combine: Combine,
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
            kmeans: p.kmeans.as_ref().map(KMeansDetector::new),
            alarm: p.alarm,
            suppress: p.suppress,
            damp: p.damp,
            rearm: p.rearm,
            combine: p.combine,
            quiet: 0,
            calm_needed: 0,
        }
    }
}

impl Detector for Ensemble {
    fn update(&mut self, t: TimestampMs, x: f64) -> Score {
        self.update_likelihood(t, x).0
    }

    fn update_likelihood(&mut self, t: TimestampMs, x: f64) -> (Score, f64) {
        let mut score: Option<Score> = None;
        let (mut max, mut sum, mut n) = (0.0f64, 0.0f64, 0u32);
        let mut add = |(s, p): (Score, f64)| {
            score.get_or_insert(s);
            max = max.max(p);
            sum += p;
            n += 1;
        };
        if let Some(m) = self.median.as_mut() {
            add(m.update_likelihood(t, x));
        }
        if let Some(s) = self.seasonal.as_mut() {
            add(s.update_likelihood(t, x));
        }
        if let Some(c) = self.cusum.as_mut() {
            add(c.update_likelihood(t, x));
        }
        if let Some(k) = self.kmeans.as_mut() {
            add(k.update_likelihood(t, x));
        }
        let p = match self.combine {
            Combine::Max => max,
            Combine::Mean => sum / f64::from(n.max(1)),
        };
        let score = score.unwrap_or(Score {
            z: 0.0,
            expected: x,
            spread: 1e-9,
            anomalous: false,
        });
        let out = if self.quiet > 0 || self.calm_needed > 0 {
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
            + self.kmeans.as_ref().map_or(0, |k| {
                k.state_bytes() - std::mem::size_of::<KMeansDetector>()
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
