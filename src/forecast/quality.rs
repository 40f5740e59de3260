//! Measured forecast quality: holdout backtests on the NAB corpus and on
//! seeded synthetic corpora, and a time-to-breach backtest on synthetic
//! leaks with known breach times (issue 11; figures in docs/FORECAST.md).
//!
//! Scoring, per series: fit on the first 80 % of the rows, forecast the
//! rest (at most 30 days: the longest horizon we offer), and compare with
//! what happened.
//!
//! - **MASE** (Hyndman & Koehler): MAE on the holdout ÷ the in-sample MAE
//!   of the one-season-back forecast on the training part. Below 1 means
//!   the multi-step forecast errs less than a one-season-ahead naive guess
//!   did in sample — a hard bar for horizons of days.
//! - **Relative MAE**: MAE ÷ the MAE of the seasonal-naive *forecast* over
//!   the same holdout (last week repeated if two weeks are known, else the
//!   last day, else the last value). Below 1 means "better than seasonal
//!   naive" in the plain sense; the geometric mean over series is the
//!   usual summary of such ratios.
//! - **sMAPE** in percent, for the model and the baseline.
//! - **Coverage**: share of holdout points inside the 80 % and 95 %
//!   intervals.

use std::path::Path;
use std::time::Duration;

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use super::breach::{predict_breach_with_model, Limit};
use super::model::{seasonal_naive, Forecaster};
use super::prepare::{prepare, Prepared};
use super::{ForecastConfig, ForecastError, DAY_MS, MAX_HORIZON_MS};
use crate::backtest::corpus::read_two_columns;
use crate::backtest::BacktestError;
use crate::config::HumanDuration;
use crate::signal::Sample;

/// Share of each series held out.
pub const HOLDOUT: f64 = 0.2;

/// Scores of one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesScore {
    /// Series name (file or synthetic id).
    pub name: String,
    /// Holdout points scored.
    pub points: usize,
    /// Chosen model, e.g. `daily/linear`.
    pub model: String,
    /// MASE (see the module docs).
    pub mase: f64,
    /// MAE ÷ seasonal-naive MAE on the holdout.
    pub relative_mae: f64,
    /// sMAPE of the model, percent.
    pub smape: f64,
    /// sMAPE of the seasonal-naive forecast, percent.
    pub baseline_smape: f64,
    /// Share of holdout points inside the 80 % interval.
    pub coverage80: f64,
    /// Share inside the 95 % interval.
    pub coverage95: f64,
}

/// Scores of a corpus: per series and averaged (each series weighs the
/// same).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastScore {
    /// Per-series scores.
    pub series: Vec<SeriesScore>,
    /// Series the forecaster refused, with the reason.
    pub refused: Vec<(String, String)>,
    /// Mean MASE.
    pub mean_mase: f64,
    /// Median MASE (a few hard series dominate the mean).
    pub median_mase: f64,
    /// Mean relative MAE.
    pub mean_relative_mae: f64,
    /// Geometric mean relative MAE.
    pub geomean_relative_mae: f64,
    /// Mean sMAPE of the model.
    pub mean_smape: f64,
    /// Mean sMAPE of the seasonal-naive baseline.
    pub mean_baseline_smape: f64,
    /// Mean 80 % coverage.
    pub coverage80: f64,
    /// Mean 95 % coverage.
    pub coverage95: f64,
}

impl ForecastScore {
    fn from_series(series: Vec<SeriesScore>, refused: Vec<(String, String)>) -> Self {
        // A metric can be undefined for a series (a noise-free series makes
        // the seasonal-naive error 0, and MASE x ÷ 0): such series are left
        // out of that metric's mean, and the table shows inf/NaN for them.
        let mean = |f: &dyn Fn(&SeriesScore) -> f64| {
            let v: Vec<f64> = series.iter().map(f).filter(|x| x.is_finite()).collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        let logs: Vec<f64> = series
            .iter()
            .map(|s| s.relative_mae)
            .filter(|x| x.is_finite() && *x > 0.0)
            .map(f64::ln)
            .collect();
        let geo = (logs.iter().sum::<f64>() / logs.len().max(1) as f64).exp();
        let mut mases: Vec<f64> = series
            .iter()
            .map(|s| s.mase)
            .filter(|x| x.is_finite())
            .collect();
        Self {
            mean_mase: mean(&|s| s.mase),
            median_mase: super::model::median(&mut mases),
            mean_relative_mae: mean(&|s| s.relative_mae),
            geomean_relative_mae: geo,
            mean_smape: mean(&|s| s.smape),
            mean_baseline_smape: mean(&|s| s.baseline_smape),
            coverage80: mean(&|s| s.coverage80),
            coverage95: mean(&|s| s.coverage95),
            series,
            refused,
        }
    }

    /// A plain-text table of the per-series and mean scores.
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<52} {:>6} {:>16} {:>6} {:>6} {:>7} {:>7} {:>5} {:>5}",
            "series", "points", "model", "MASE", "relMAE", "sMAPE", "base", "c80", "c95"
        );
        for r in &self.series {
            let _ = writeln!(
                s,
                "{:<52} {:>6} {:>16} {:>6.3} {:>6.3} {:>7.2} {:>7.2} {:>5.2} {:>5.2}",
                r.name,
                r.points,
                r.model,
                r.mase,
                r.relative_mae,
                r.smape,
                r.baseline_smape,
                r.coverage80,
                r.coverage95
            );
        }
        for (name, why) in &self.refused {
            let _ = writeln!(s, "{name:<52} refused: {why}");
        }
        let _ = writeln!(
            s,
            "MASE mean {:.3}, median {:.3}; relative MAE mean {:.3}, geometric mean {:.3}; sMAPE {:.2} % (seasonal naive {:.2} %); coverage 80 %: {:.3}, 95 %: {:.3}",
            self.mean_mase,
            self.median_mase,
            self.mean_relative_mae,
            self.geomean_relative_mae,
            self.mean_smape,
            self.mean_baseline_smape,
            self.coverage80,
            self.coverage95
        );
        s
    }
}

/// Fits the first 80 % of `samples` (time order) and scores the forecast
/// of the rest. `Err` carries the forecaster's refusal.
pub fn score_series(name: &str, samples: &[Sample]) -> Result<SeriesScore, String> {
    let cut = ((samples.len() as f64) * (1.0 - HOLDOUT)).round() as usize;
    let (train, test) = samples.split_at(cut.min(samples.len()));
    let last_train = train
        .iter()
        .map(|s| s.t)
        .max()
        .ok_or("empty training part")?;
    let test_end = test.iter().map(|s| s.t).max().ok_or("empty holdout")?;
    let horizon_ms = (test_end - last_train).clamp(1, MAX_HORIZON_MS);
    let cfg = ForecastConfig::with_horizon(Duration::from_millis(horizon_ms as u64));
    let p = prepare(train, &cfg).map_err(|e| e.to_string())?;
    let f = Forecaster::new(cfg).map_err(|e| e.to_string())?;
    let model = f.fit_prepared(&p).map_err(|e| e.to_string())?;
    let step = p.step_ms;
    let n = p.len();
    // Holdout points within the horizon, at their grid step h >= 1.
    let scored: Vec<(usize, f64)> = test
        .iter()
        .filter(|s| s.v.is_finite() && s.t > p.end() && s.t - p.end() <= horizon_ms)
        .map(|s| (((s.t - p.start) / step) as usize + 1 - n, s.v))
        .filter(|(h, _)| *h >= 1)
        .collect();
    if scored.is_empty() {
        return Err("no holdout points after the training part".into());
    }
    let max_h = scored.iter().map(|x| x.0).max().unwrap_or(1);
    // The baseline and the MASE scale come from the whole training part on
    // the model's grid, not from what the model kept of it: a model that
    // drops history before a long gap must not also shrink the yardstick
    // it is measured with.
    let whole = whole_training(train, &p)?;
    let (naive, m) = seasonal_naive(&whole, whole.len(), max_h);
    let (mut ae, mut ae_naive, mut sm, mut sm_naive, mut in80, mut in95) =
        (0.0, 0.0, 0.0, 0.0, 0usize, 0usize);
    for &(h, y) in &scored {
        let pt = model.point(h);
        let b = naive[h - 1];
        ae += (y - pt.mean).abs();
        ae_naive += (y - b).abs();
        sm += smape_term(y, pt.mean);
        sm_naive += smape_term(y, b);
        in80 += usize::from(pt.lo80 <= y && y <= pt.hi80);
        in95 += usize::from(pt.lo95 <= y && y <= pt.hi95);
    }
    let k = scored.len() as f64;
    // In-sample one-season-back MAE on the training grid (observed pairs).
    let (mut sc, mut cnt) = (0.0, 0usize);
    for i in m..whole.len() {
        if whole.observed[i] && whole.observed[i - m] {
            sc += (whole.values[i] - whole.values[i - m]).abs();
            cnt += 1;
        }
    }
    let scale = if cnt > 0 { sc / cnt as f64 } else { f64::NAN };
    let summary = model.summary();
    Ok(SeriesScore {
        name: name.to_string(),
        points: scored.len(),
        model: format!(
            "{}/{}",
            serde_json::to_value(summary.seasonality)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            serde_json::to_value(summary.trend)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
        mase: ae / k / scale,
        relative_mae: if ae_naive > 0.0 {
            ae / ae_naive
        } else {
            f64::NAN
        },
        smape: sm / k * 100.0,
        baseline_smape: sm_naive / k * 100.0,
        coverage80: in80 as f64 / k,
        coverage95: in95 as f64 / k,
    })
}

/// The training part on the model's grid with no history dropped (every
/// gap bridged, unobserved): what the seasonal-naive baseline and the MASE
/// scale are computed on.
fn whole_training(train: &[Sample], model_grid: &Prepared) -> Result<Prepared, String> {
    let span =
        train.iter().map(|s| s.t).max().unwrap_or(0) - train.iter().map(|s| s.t).min().unwrap_or(0);
    let cfg = ForecastConfig {
        step: Some(HumanDuration(Duration::from_millis(
            model_grid.step_ms.max(1) as u64,
        ))),
        // Large enough that the step given is kept (never coarsened).
        max_points: 100_000_000,
        max_gap: HumanDuration(Duration::from_millis(
            span.max(0) as u64 + model_grid.step_ms.max(1) as u64,
        )),
        ..ForecastConfig::default()
    };
    let whole = prepare(train, &cfg).map_err(|e| e.to_string())?;
    if whole.end() != model_grid.end() || whole.step_ms != model_grid.step_ms {
        return Err(format!(
            "the training grid ends at {} (step {} ms), the model's at {} (step {} ms)",
            whole.end(),
            whole.step_ms,
            model_grid.end(),
            model_grid.step_ms
        ));
    }
    Ok(whole)
}

fn smape_term(y: f64, f: f64) -> f64 {
    let d = y.abs() + f.abs();
    if d == 0.0 {
        0.0
    } else {
        2.0 * (y - f).abs() / d
    }
}

/// Scores every `(name, samples)` series.
pub fn backtest_series(set: &[(String, Vec<Sample>)]) -> ForecastScore {
    let mut scores = Vec::new();
    let mut refused = Vec::new();
    for (name, s) in set {
        match score_series(name, s) {
            Ok(sc) => scores.push(sc),
            Err(e) => refused.push((name.clone(), e)),
        }
    }
    ForecastScore::from_series(scores, refused)
}

/// Backtests every `DIR/<category>/<file>.csv` (NAB's layout, columns
/// `timestamp,value`, read with the detection backtest's reader), holding
/// out the last 20 % of each.
pub fn backtest_corpus(dir: &Path) -> Result<ForecastScore, BacktestError> {
    let read_dir = |p: &Path| {
        std::fs::read_dir(p).map_err(|source| BacktestError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let mut files = Vec::new();
    for cat in read_dir(dir)?.flatten() {
        let cat_path = cat.path();
        if !cat_path.is_dir() {
            continue;
        }
        for f in read_dir(&cat_path)?.flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "csv") {
                let name = format!(
                    "{}/{}",
                    cat.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                );
                files.push((name, p));
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(BacktestError::EmptyCorpus(dir.to_path_buf()));
    }
    let mut set = Vec::with_capacity(files.len());
    for (name, path) in files {
        let (_, ts, vs) = read_two_columns(&path, "value")?;
        let samples = ts
            .into_iter()
            .zip(vs)
            .map(|(t, v)| Sample { t, v })
            .collect();
        set.push((name, samples));
    }
    Ok(backtest_series(&set))
}

/// Seeded uniform and normal draws.
struct Draw(Xoshiro256PlusPlus);

impl Draw {
    fn new(seed: u64) -> Self {
        Self(Xoshiro256PlusPlus::seed_from_u64(seed))
    }
    fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.uniform()
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// First data time of the synthetic corpora (2026-01-05T00:00:00Z, a
/// Monday).
pub const SYNTHETIC_T0: i64 = 1_767_571_200_000;

/// Seeded service-like series with known structure: a level, a daily
/// shape (two harmonics), a linear trend, Gaussian noise and a few spikes;
/// 5-minute steps; even ones 28 days with a weekend dip, odd ones 14 days
/// without.
pub fn synthetic_seasonal_corpus(seed: u64, count: usize) -> Vec<(String, Vec<Sample>)> {
    let mut d = Draw::new(seed);
    (0..count)
        .map(|k| {
            let days = if k % 2 == 0 { 28 } else { 14 };
            let n = days * 288;
            let level = d.range(50.0, 500.0);
            let amp = d.range(0.1, 0.5) * level;
            let amp2 = d.range(0.0, 0.3) * amp;
            // A weekly pattern only where two weeks of training can show
            // it: with 11 days of training no method can learn a weekend
            // (docs/FORECAST.md measures that case apart).
            let weekend = d.range(0.0, 0.3) * level * if days >= 28 { 1.0 } else { 0.0 };
            let trend = d.range(-0.005, 0.02) * level;
            let sigma = d.range(0.02, 0.08) * level;
            let phase = d.range(0.0, std::f64::consts::TAU);
            let samples = (0..n)
                .map(|i| {
                    let t = SYNTHETIC_T0 + i as i64 * 300_000;
                    let x = (i % 288) as f64 / 288.0 * std::f64::consts::TAU;
                    let dow = (i / 288) % 7;
                    let mut v = level
                        + amp * (x + phase).sin()
                        + amp2 * (2.0 * x).sin()
                        + trend * i as f64 / 288.0
                        - if dow >= 5 { weekend } else { 0.0 }
                        + sigma * d.normal();
                    if d.uniform() < 0.002 {
                        v += 6.0 * sigma * if d.uniform() < 0.5 { -1.0 } else { 1.0 };
                    }
                    Sample { t, v }
                })
                .collect();
            (format!("synthetic/seasonal_{k:02}"), samples)
        })
        .collect()
}

/// One synthetic leak and what the predictor made of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeakResult {
    /// Leak id.
    pub name: String,
    /// True breach time (noise-free signal reaches the limit).
    pub breach_at: i64,
    /// First evaluation time whose probability reached the alarm level.
    pub first_alarm: Option<i64>,
    /// Expected breach time predicted at the first alarm.
    pub predicted_at_alarm: Option<i64>,
    /// |predicted − true| over all evaluations that gave an expected
    /// time, hours.
    pub abs_errors_h: Vec<f64>,
}

/// Time-to-breach backtest results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeakScore {
    /// Per leak.
    pub leaks: Vec<LeakResult>,
    /// Probability at or above which an evaluation alarms.
    pub alarm_probability: f64,
    /// Leaks alarmed before their breach.
    pub detected: usize,
    /// Median |predicted − true| breach time over all evaluations, hours.
    pub median_abs_error_h: f64,
    /// Median of the same at the first alarm, hours.
    pub median_abs_error_at_alarm_h: f64,
    /// Median lead time (true breach − first alarm), hours.
    pub median_lead_h: f64,
    /// Evaluations of the flat near-limit controls.
    pub control_evaluations: usize,
    /// Of which alarmed (false alarms).
    pub false_alarms: usize,
}

/// Memory leaks with known breach times, and flat controls near the limit.
///
/// Each leak: 5-minute steps, a base of 40–60 % of the limit, a 5 % daily
/// swing, 1 % noise, and from day 2–4 a linear leak sized so the
/// noise-free signal reaches the limit on day 9–14. Every 12 hours from
/// day 5 until the breach, the last 7 days are fitted and the breach is
/// predicted over 7 days; an evaluation alarms at `alarm_probability`.
/// Controls sit at 85–90 % of the limit with the same swing and noise.
pub fn leak_backtest(
    seed: u64,
    leaks: usize,
    alarm_probability: f64,
) -> Result<LeakScore, ForecastError> {
    const STEP: i64 = 300_000;
    const LIMIT: f64 = 1024.0;
    let mut d = Draw::new(seed);
    let cfg = ForecastConfig::with_horizon(Duration::from_secs(7 * 86_400));
    let f = Forecaster::new(cfg)?;
    let evaluate = |samples: &[Sample], t_obs: i64| {
        let from = t_obs - 7 * DAY_MS;
        let hist: Vec<Sample> = samples
            .iter()
            .copied()
            .filter(|s| s.t > from && s.t <= t_obs)
            .collect();
        let model = f.fit(&hist).ok()?;
        predict_breach_with_model(
            &model,
            &hist,
            Limit::upper(LIMIT),
            Duration::from_secs(7 * 86_400),
        )
        .ok()
    };
    let mut results = Vec::new();
    for k in 0..leaks {
        let base = d.range(0.4, 0.6) * LIMIT;
        let start_day = d.range(2.0, 4.0);
        let breach_day = d.range(9.0, 14.0);
        let swing = 0.05 * LIMIT;
        // Rate so the daily peak reaches the limit near breach_day.
        let rate = (LIMIT - base - swing) / (breach_day - start_day);
        let clean = |i: i64| {
            let day = i as f64 / 288.0;
            let x = (i % 288) as f64 / 288.0 * std::f64::consts::TAU;
            base + swing * x.sin() + rate * (day - start_day).max(0.0)
        };
        let n = (16 * 288) as i64;
        let breach_i = (0..n).find(|&i| clean(i) >= LIMIT).unwrap_or(n);
        let breach_at = SYNTHETIC_T0 + breach_i * STEP;
        let samples: Vec<Sample> = (0..breach_i)
            .map(|i| Sample {
                t: SYNTHETIC_T0 + i * STEP,
                v: clean(i) + 0.01 * LIMIT * d.normal(),
            })
            .collect();
        let mut r = LeakResult {
            name: format!("leak_{k:02}"),
            breach_at,
            first_alarm: None,
            predicted_at_alarm: None,
            abs_errors_h: Vec::new(),
        };
        let mut t_obs = SYNTHETIC_T0 + 5 * DAY_MS;
        while t_obs < breach_at {
            if let Some(p) = evaluate(&samples, t_obs) {
                let expected = p.breach.and_then(|b| b.expected);
                if let Some(e) = expected {
                    r.abs_errors_h
                        .push((e - breach_at).abs() as f64 / 3_600_000.0);
                }
                if r.first_alarm.is_none() && p.is_alarm(alarm_probability) {
                    r.first_alarm = Some(t_obs);
                    r.predicted_at_alarm = expected;
                }
            }
            t_obs += DAY_MS / 2;
        }
        results.push(r);
    }
    // Flat controls near the limit.
    let (mut control_evaluations, mut false_alarms) = (0, 0);
    for _ in 0..leaks.max(1) {
        let base = d.range(0.85, 0.9) * LIMIT - 0.05 * LIMIT;
        let samples: Vec<Sample> = (0..(12 * 288) as i64)
            .map(|i| {
                let x = (i % 288) as f64 / 288.0 * std::f64::consts::TAU;
                Sample {
                    t: SYNTHETIC_T0 + i * STEP,
                    v: base + 0.05 * LIMIT * x.sin() + 0.01 * LIMIT * d.normal(),
                }
            })
            .collect();
        let mut t_obs = SYNTHETIC_T0 + 5 * DAY_MS;
        while t_obs < SYNTHETIC_T0 + 12 * DAY_MS {
            if let Some(p) = evaluate(&samples, t_obs) {
                control_evaluations += 1;
                false_alarms += usize::from(p.is_alarm(alarm_probability));
            }
            t_obs += DAY_MS / 2;
        }
    }
    let mut all: Vec<f64> = results
        .iter()
        .flat_map(|r| r.abs_errors_h.clone())
        .collect();
    let mut at_alarm: Vec<f64> = results
        .iter()
        .filter_map(|r| Some((r.predicted_at_alarm? - r.breach_at).abs() as f64 / 3_600_000.0))
        .collect();
    let mut leads: Vec<f64> = results
        .iter()
        .filter_map(|r| Some((r.breach_at - r.first_alarm?) as f64 / 3_600_000.0))
        .collect();
    Ok(LeakScore {
        detected: leads.len(),
        median_abs_error_h: super::model::median(&mut all),
        median_abs_error_at_alarm_h: super::model::median(&mut at_alarm),
        median_lead_h: super::model::median(&mut leads),
        leaks: results,
        alarm_probability,
        control_evaluations,
        false_alarms,
    })
}
