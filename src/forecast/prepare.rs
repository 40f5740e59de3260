//! Resampling a raw series to a regular step.
//!
//! Why: Prometheus series are irregular (scrape jitter, restarts, missed
//! scrapes) and carry NaNs (e.g. `0/0` ratios); the model wants one value
//! per step and a phase it can trust. Samples are averaged per step bucket
//! aligned to the epoch (so a bucket's time of day does not depend on when
//! the series started); short gaps are bridged by linear interpolation but
//! *marked*, so they never count as evidence; history before a gap longer
//! than `max_gap` is dropped, and refused if too little is left.

use serde::Serialize;

use super::{ForecastConfig, ForecastError};
use crate::signal::{Sample, TimestampMs};

/// A series on a regular grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prepared {
    /// Time of the first grid point (a multiple of `step_ms` since the
    /// epoch).
    pub start: TimestampMs,
    /// Grid step.
    pub step_ms: i64,
    /// One value per step (bucket mean, or interpolated).
    pub values: Vec<f64>,
    /// False where the value was interpolated across a gap.
    pub observed: Vec<bool>,
    /// Non-finite samples ignored (NaN, ±Inf).
    pub non_finite: usize,
    /// Grid points interpolated across short gaps.
    pub interpolated: usize,
    /// Set when history before a long gap was dropped: the first time kept.
    pub dropped_before: Option<TimestampMs>,
}

impl Prepared {
    /// Number of grid points.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are no points.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Time of grid point `i`.
    pub fn time(&self, i: usize) -> TimestampMs {
        self.start + i as i64 * self.step_ms
    }

    /// Time of the last grid point.
    pub fn end(&self) -> TimestampMs {
        self.time(self.len().saturating_sub(1))
    }

    /// The points in `[from, to)` as a new series (for holdouts and
    /// refits at an earlier origin).
    pub fn slice(&self, from: usize, to: usize) -> Prepared {
        let to = to.min(self.len());
        let from = from.min(to);
        Prepared {
            start: self.time(from),
            step_ms: self.step_ms,
            values: self.values[from..to].to_vec(),
            observed: self.observed[from..to].to_vec(),
            non_finite: 0,
            interpolated: self.observed[from..to].iter().filter(|o| !**o).count(),
            dropped_before: None,
        }
    }
}

/// Resamples `samples` (any order; NaN/Inf ignored) to a regular step.
///
/// Errors: fewer than `min_points` usable points ([`ForecastError::NotEnoughData`]),
/// or too few after the last gap longer than `max_gap`
/// ([`ForecastError::LongGap`]). A constant series is *not* refused here;
/// [`super::Forecaster::fit`] does that.
pub fn prepare(samples: &[Sample], cfg: &ForecastConfig) -> Result<Prepared, ForecastError> {
    cfg.validate()?;
    let mut pts: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.v.is_finite())
        .collect();
    let non_finite = samples.len() - pts.len();
    let need = cfg.min_points;
    if pts.len() < need {
        return Err(ForecastError::NotEnoughData {
            have: pts.len(),
            need,
            step_ms: 0,
        });
    }
    pts.sort_by_key(|s| s.t);
    // Timestamps are data time in ms; a span beyond a century is a unit
    // mistake (ns or s), and would overflow the grid arithmetic.
    const CENTURY_MS: i64 = 100 * 366 * 86_400_000;
    let span = pts[pts.len() - 1].t.checked_sub(pts[0].t);
    if span.is_none_or(|s| s > CENTURY_MS) {
        return Err(ForecastError::Invalid {
            field: "samples",
            message: format!(
                "timestamps span {} ms to {} ms; expected milliseconds since the epoch",
                pts[0].t,
                pts[pts.len() - 1].t
            ),
        });
    }
    let step_ms = choose_step(&pts, cfg);
    let first = pts[0].t;
    let start = first - first.rem_euclid(step_ms);
    let last = pts[pts.len() - 1].t;
    let n = usize::try_from((last - start) / step_ms + 1).unwrap_or(0);
    let mut sum = vec![0.0; n];
    let mut cnt = vec![0u32; n];
    for s in &pts {
        let i = usize::try_from((s.t - start) / step_ms)
            .unwrap_or(0)
            .min(n - 1);
        sum[i] += s.v;
        cnt[i] += 1;
    }
    let observed: Vec<bool> = cnt.iter().map(|&c| c > 0).collect();
    let mut values: Vec<f64> = sum
        .iter()
        .zip(&cnt)
        .map(|(&s, &c)| if c > 0 { s / f64::from(c) } else { f64::NAN })
        .collect();

    // Find gaps (runs of empty buckets); drop history before the last long one.
    let max_gap_ms = cfg.max_gap.as_millis_i64();
    let mut keep_from = 0usize;
    let mut long_gap: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < n {
        if observed[i] {
            i += 1;
            continue;
        }
        let a = i;
        while i < n && !observed[i] {
            i += 1;
        }
        // Empty buckets a..i; the gap between samples is (i - a + 1) steps.
        let gap_ms = (i - a + 1) as i64 * step_ms;
        if gap_ms > max_gap_ms {
            keep_from = i;
            long_gap = Some((a, i));
        }
    }
    let kept = observed[keep_from..].iter().filter(|o| **o).count();
    if kept < need {
        return Err(match long_gap {
            Some((a, b)) => ForecastError::LongGap {
                from: start + (a as i64 - 1) * step_ms,
                to: start + b as i64 * step_ms,
                gap_ms: (b - a + 1) as i64 * step_ms,
                max_gap_ms,
                remaining: kept,
            },
            None => ForecastError::NotEnoughData {
                have: kept,
                need,
                step_ms,
            },
        });
    }
    let mut observed = observed;
    if keep_from > 0 {
        values.drain(..keep_from);
        observed.drain(..keep_from);
    }
    // Bridge the short gaps that remain.
    let mut interpolated = 0;
    let mut prev: Option<usize> = None;
    for j in 0..values.len() {
        if !observed[j] {
            continue;
        }
        if let Some(p) = prev {
            if j > p + 1 {
                let (a, b) = (values[p], values[j]);
                for (k, v) in values[p + 1..j].iter_mut().enumerate() {
                    let w = (k + 1) as f64 / (j - p) as f64;
                    *v = a + (b - a) * w;
                    interpolated += 1;
                }
            }
        }
        prev = Some(j);
    }
    let start = start + keep_from as i64 * step_ms;
    Ok(Prepared {
        start,
        step_ms,
        values,
        observed,
        non_finite,
        interpolated,
        dropped_before: (keep_from > 0).then_some(start),
    })
}

/// The configured step, or the median spacing coarsened to fit
/// `max_points` (an integer multiple, so phases stay aligned).
fn choose_step(pts: &[Sample], cfg: &ForecastConfig) -> i64 {
    let base = match cfg.step {
        Some(s) => s.as_millis_i64(),
        None => {
            let mut d: Vec<i64> = pts
                .windows(2)
                .map(|w| w[1].t - w[0].t)
                .filter(|d| *d > 0)
                .collect();
            if d.is_empty() {
                1000
            } else {
                let mid = d.len() / 2;
                *d.select_nth_unstable(mid).1
            }
        }
    }
    .max(1);
    let span = pts[pts.len() - 1].t - pts[0].t;
    let max_points = cfg.max_points.max(2) as i64;
    let k = (span / base + 1 + max_points - 1) / max_points;
    base * k.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: i64, v: f64) -> Sample {
        Sample { t, v }
    }

    #[test]
    fn irregular_samples_are_averaged_per_step_and_nans_dropped() {
        let mut xs: Vec<Sample> = (0..100).map(|i| s(i * 60_000, i as f64)).collect();
        xs.push(s(30_000, 1.0)); // second sample in bucket 0
        xs.push(s(50 * 60_000 + 1, f64::NAN));
        let p = prepare(&xs, &ForecastConfig::default()).expect("prepared");
        assert_eq!(p.step_ms, 60_000);
        assert_eq!(p.len(), 100);
        assert_eq!(p.values[0], 0.5);
        assert_eq!(p.non_finite, 1);
        assert_eq!(p.interpolated, 0);
    }

    #[test]
    fn short_gaps_are_bridged_and_marked_long_gaps_drop_history() {
        let mut xs: Vec<Sample> = (0..100).map(|i| s(i * 60_000, 10.0)).collect();
        // 10-minute hole: bridged.
        xs.retain(|x| !(20 * 60_000..30 * 60_000).contains(&x.t));
        let p = prepare(&xs, &ForecastConfig::default()).expect("prepared");
        assert_eq!(p.interpolated, 10);
        assert!(!p.observed[25] && p.values[25] == 10.0);
        // A 3-day hole (longer than the 2-day default) with enough data
        // after it: history before it is dropped.
        let mut ys: Vec<Sample> = (0..100).map(|i| s(i * 60_000, 1.0)).collect();
        ys.extend((0..100).map(|i| s(3 * 86_400_000 + i * 60_000, 2.0)));
        let p = prepare(&ys, &ForecastConfig::default()).expect("prepared");
        assert_eq!(p.len(), 100);
        assert_eq!(p.dropped_before, Some(3 * 86_400_000));
        assert!(p.values.iter().all(|v| *v == 2.0));
    }

    #[test]
    fn long_gap_with_little_after_it_is_refused_with_the_gap_named() {
        let mut ys: Vec<Sample> = (0..100).map(|i| s(i * 60_000, 1.0)).collect();
        ys.extend((0..10).map(|i| s(3 * 86_400_000 + i * 60_000, 2.0)));
        match prepare(&ys, &ForecastConfig::default()) {
            Err(ForecastError::LongGap { remaining, .. }) => assert_eq!(remaining, 10),
            other => panic!("expected LongGap, got {other:?}"),
        }
    }

    /// Regression: NAB's TravelTime_387 reports only by day; with a 6-hour
    /// `max_gap` every night dropped the history before it, and the model
    /// was fitted on the last afternoon (MASE 8.7). Nightly holes are kept,
    /// unobserved, and the whole history is used.
    #[test]
    fn nightly_holes_keep_the_history() {
        let day = 86_400_000;
        let xs: Vec<Sample> = (0..20 * 24 * 6)
            .map(|i| s(i * 600_000, 1.0 + (i % 144) as f64))
            .filter(|x| x.t % day < 10 * 3_600_000)
            .collect();
        let p = prepare(&xs, &ForecastConfig::default()).expect("prepared");
        assert_eq!(p.dropped_before, None);
        assert_eq!(p.start, 0);
        assert_eq!(p.observed.iter().filter(|o| **o).count(), xs.len());
    }

    #[test]
    fn long_history_is_coarsened_to_max_points() {
        let xs: Vec<Sample> = (0..43_200).map(|i| s(i * 60_000, i as f64)).collect();
        let p = prepare(&xs, &ForecastConfig::default()).expect("prepared");
        assert_eq!(p.step_ms, 5 * 60_000);
        assert_eq!(p.len(), 8640);
        assert_eq!(p.values[0], 2.0); // mean of 0..5
    }
}
