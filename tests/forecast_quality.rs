//! Forecast quality and behaviour (issue 11; figures in docs/FORECAST.md).
//!
//! Synthetic series with known answers (pure seasonality, linear trend,
//! step change, gaps, NaNs), refusals of bad input, a leak predicted before
//! it breaches, no alarm for a flat series near its limit, capacity
//! arithmetic against hand-computed cases, and the holdout backtests on the
//! NAB corpus beside the repository (`../shared/data/nab`) and on seeded
//! synthetic corpora.
//!
//! The NAB data must be there: like tests/logs_loghub.rs, a missing corpus
//! fails the test with the path and the reason rather than skipping it, so
//! a lost data set cannot turn into a green run.
//!
//! `cargo test --release --test forecast_quality -- --nocapture` prints the
//! tables.

use std::path::Path;
use std::time::Duration;

use aiopsd::forecast::{
    backtest_corpus, leak_backtest, plan_capacity, predict_breach, quality, CapacityInput,
    CapacitySeries, ForecastConfig, ForecastError, Forecaster, Hpa, Limit, PodResources,
    Seasonality, TrendKind, DAY_MS,
};
use aiopsd::signal::Sample;

const NAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/nab/data");
const STEP: i64 = 300_000;
const T0: i64 = 1_767_571_200_000; // 2026-01-05T00:00:00Z
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// Deterministic noise in [-1, 1): SplitMix64 of `i`.
fn noise(i: i64) -> f64 {
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

fn daily(i: i64) -> f64 {
    ((i.rem_euclid(288)) as f64 / 288.0 * std::f64::consts::TAU).sin()
}

/// `days` of 5-minute samples of `f(i)`.
fn series(days: i64, f: impl Fn(i64) -> f64) -> Vec<Sample> {
    (0..days * 288)
        .map(|i| Sample {
            t: T0 + i * STEP,
            v: f(i),
        })
        .collect()
}

fn forecaster(horizon_days: u64) -> Forecaster {
    Forecaster::new(ForecastConfig::with_horizon(Duration::from_secs(
        horizon_days * 86_400,
    )))
    .expect("valid config")
}

/// MAE of the forecast against `truth(i)` for the steps after `n` points.
fn forecast_mae(f: &Forecaster, s: &[Sample], truth: impl Fn(i64) -> f64, steps: usize) -> f64 {
    let m = f.fit(s).expect("fit");
    let fc = m.forecast_steps(steps);
    let n = s.len() as i64;
    fc.points
        .iter()
        .enumerate()
        .map(|(k, p)| (p.mean - truth(n + k as i64)).abs())
        .sum::<f64>()
        / steps as f64
}

#[test]
fn pure_daily_seasonality_is_learned_and_repeated() {
    let truth = |i: i64| 100.0 + 30.0 * daily(i);
    let s = series(10, |i| truth(i) + noise(i));
    let f = forecaster(2);
    let m = f.fit(&s).expect("fit");
    assert_eq!(
        m.summary().seasonality,
        Seasonality::Daily,
        "{:?}",
        m.summary()
    );
    let mae = forecast_mae(&f, &s, truth, 2 * 288);
    // Noise is ±1 (MAE 0.5 against the noisy data); against the truth the
    // forecast must be far better than the 30-unit swing.
    assert!(mae < 1.0, "MAE {mae}");
    let fc = m.forecast_steps(288);
    let inside = fc
        .points
        .iter()
        .enumerate()
        .filter(|(k, p)| {
            let t = truth(s.len() as i64 + *k as i64);
            p.lo95 <= t && t <= p.hi95
        })
        .count();
    assert!(
        inside > 270,
        "95 % band holds the truth at {inside}/288 steps"
    );
}

#[test]
fn linear_trend_is_extrapolated() {
    // +5 per day, no season.
    let truth = |i: i64| 50.0 + 5.0 * i as f64 / 288.0;
    let s = series(8, |i| truth(i) + 2.0 * noise(i));
    let f = forecaster(3);
    let m = f.fit(&s).expect("fit");
    assert_eq!(m.summary().trend, TrendKind::Linear);
    assert!(
        (m.summary().slope_per_day - 5.0).abs() < 0.3,
        "{:?}",
        m.summary()
    );
    let mae = forecast_mae(&f, &s, truth, 3 * 288);
    assert!(mae < 1.5, "MAE {mae} after 3 days of a +5/day trend");
}

#[test]
fn step_change_moves_the_level() {
    let truth = |i: i64| if i >= 6 * 288 { 150.0 } else { 100.0 } + 10.0 * daily(i);
    let s = series(9, |i| truth(i) + noise(i));
    let f = forecaster(1);
    let mae = forecast_mae(&f, &s, truth, 288);
    assert!(
        mae < 3.0,
        "MAE {mae}: the forecast must sit at the new level"
    );
}

#[test]
fn gaps_are_bridged_without_shifting_the_season() {
    let truth = |i: i64| 200.0 + 50.0 * daily(i);
    // A 2-hour hole every day and one 5-hour hole.
    let s: Vec<Sample> = series(10, |i| truth(i) + noise(i))
        .into_iter()
        .enumerate()
        .filter(|(i, _)| {
            let i = *i as i64;
            !((100..124).contains(&(i % 288)) || (1500..1560).contains(&i))
        })
        .map(|(_, s)| s)
        .collect();
    let f = forecaster(1);
    let m = f.fit(&s).expect("fit");
    assert!(
        m.summary().interpolated_points >= 9 * 24,
        "{:?}",
        m.summary()
    );
    let fc = m.forecast_steps(288);
    let n = 10 * 288;
    let mae = fc
        .points
        .iter()
        .enumerate()
        .map(|(k, p)| (p.mean - truth(n + k as i64)).abs())
        .sum::<f64>()
        / 288.0;
    assert!(mae < 2.0, "MAE {mae}");
    // Too long a gap with too little after it is refused, naming the gap.
    let mut short_tail = series(3, |i| truth(i) + noise(i));
    short_tail.extend(series(1, truth).into_iter().take(20).map(|s| Sample {
        t: s.t + 5 * DAY_MS,
        v: s.v,
    }));
    match f.fit(&short_tail) {
        Err(ForecastError::LongGap { remaining, .. }) => assert_eq!(remaining, 20),
        other => panic!("expected LongGap, got {other:?}"),
    }
}

#[test]
fn nans_and_infinities_are_ignored() {
    let truth = |i: i64| 80.0 + 20.0 * daily(i);
    let s = series(8, |i| {
        if i % 20 == 7 {
            f64::NAN
        } else if i % 97 == 3 {
            f64::INFINITY
        } else {
            truth(i) + noise(i)
        }
    });
    let f = forecaster(1);
    let m = f.fit(&s).expect("fit");
    assert!(m.summary().non_finite_samples > 100, "{:?}", m.summary());
    let fc = m.forecast_steps(288);
    assert!(fc
        .points
        .iter()
        .all(|p| p.mean.is_finite() && p.hi95.is_finite()));
    let mae = forecast_mae(&f, &s, truth, 288);
    assert!(mae < 1.0, "MAE {mae}");
}

#[test]
fn too_little_history_and_constant_series_are_refused_not_guessed() {
    let f = forecaster(1);
    let short = series(1, |i| i as f64)
        .into_iter()
        .take(20)
        .collect::<Vec<_>>();
    match f.fit(&short) {
        Err(e @ ForecastError::NotEnoughData { have: 20, .. }) => {
            assert!(e.to_string().contains("not enough data"), "{e}")
        }
        other => panic!("expected NotEnoughData, got {other:?}"),
    }
    let all_nan = series(2, |_| f64::NAN);
    assert!(matches!(
        f.fit(&all_nan),
        Err(ForecastError::NotEnoughData { have: 0, .. })
    ));
    let flat = series(3, |_| 42.0);
    assert_eq!(
        f.fit(&flat).err(),
        Some(ForecastError::Constant { value: 42.0 })
    );
    let p = predict_breach(&f, &flat, Limit::upper(50.0), Duration::from_secs(86_400));
    assert!(matches!(p, Err(ForecastError::Constant { .. })));
}

/// A memory leak: 500 MiB base, 5 % daily swing, 1 % noise, +60 MiB/day
/// from day 1; limit 1 GiB. Noise-free daily peak reaches the limit on
/// day ≈ 8.6.
fn leak(i: i64) -> f64 {
    let day = i as f64 / 288.0;
    500.0 * MIB + 51.2 * MIB * daily(i) + 60.0 * MIB * (day - 1.0).max(0.0)
}

#[test]
fn a_leak_is_predicted_before_it_breaches() {
    let limit = 1024.0 * MIB;
    let breach_i = (0..20 * 288).find(|&i| leak(i) >= limit).expect("breaches");
    let breach_at = T0 + breach_i * STEP;
    // Observe 6 days: the breach is ~2.6 days ahead.
    let s = series(6, |i| leak(i) + 10.0 * MIB * noise(i));
    let p = predict_breach(
        &forecaster(7),
        &s,
        Limit::upper(limit),
        Duration::from_secs(7 * 86_400),
    )
    .expect("prediction");
    assert!(p.is_alarm(0.8), "{}", p.reasoning);
    let b = p.breach.expect("a breach time");
    let expected = b.expected.expect("the point forecast crosses");
    assert!(
        (expected - breach_at).abs() < 12 * 3_600_000,
        "expected {expected}, true {breach_at}: {}",
        p.reasoning
    );
    assert!(b.earliest <= expected && b.latest.is_none_or(|l| l >= expected));
    assert!(
        b.earliest > s.last().expect("non-empty").t,
        "a prediction, not the past"
    );
    // The chart carries what a predictive incident shows.
    assert!(!p.chart.history.is_empty() && !p.chart.forecast.is_empty());
    assert_eq!(p.chart.limit, limit);
    assert!(
        p.reasoning.contains("forecast to reach its limit"),
        "{}",
        p.reasoning
    );
}

#[test]
fn a_flat_series_near_its_limit_does_not_alarm() {
    // 90 % of the limit at its daily peak, 1 % noise, no growth.
    let limit = 1024.0 * MIB;
    let s = series(7, |i| {
        870.0 * MIB + 51.2 * MIB * daily(i) + 10.0 * MIB * noise(i)
    });
    let p = predict_breach(
        &forecaster(7),
        &s,
        Limit::upper(limit),
        Duration::from_secs(7 * 86_400),
    )
    .expect("prediction");
    assert!(!p.is_alarm(0.5), "false alarm: {}", p.reasoning);
    assert!(p.probability < 0.2, "{}", p.reasoning);
    // The same series does alarm for a limit it really reaches every day.
    let p = predict_breach(
        &forecaster(7),
        &s,
        Limit::upper(900.0 * MIB),
        Duration::from_secs(86_400),
    )
    .expect("prediction");
    assert!(p.probability > 0.8 && p.breach.is_some(), "{}", p.reasoning);
}

#[test]
fn leak_corpus_lead_time_and_no_false_alarms() {
    let score = leak_backtest(11, 4, 0.8).expect("backtest");
    println!(
        "leaks: detected {}/{}, median |error| {:.1} h (at first alarm {:.1} h), median lead {:.1} h; controls: {} false alarms in {} evaluations",
        score.detected,
        score.leaks.len(),
        score.median_abs_error_h,
        score.median_abs_error_at_alarm_h,
        score.median_lead_h,
        score.false_alarms,
        score.control_evaluations
    );
    assert_eq!(score.detected, score.leaks.len(), "{score:?}");
    assert!(score.median_lead_h >= 48.0, "{score:?}");
    assert!(score.median_abs_error_at_alarm_h < 24.0, "{score:?}");
    assert_eq!(score.false_alarms, 0, "{score:?}");
}

fn input(replicas: u32, hpa: Option<Hpa>, target: f64) -> CapacityInput {
    CapacityInput {
        service: "cart".into(),
        days: 7,
        replicas,
        pod: PodResources {
            cpu_request_cores: 0.5,
            cpu_limit_cores: Some(1.0),
            memory_request_bytes: 512.0 * MIB,
            memory_limit_bytes: Some(1.0 * GIB),
        },
        hpa,
        target_utilisation: target,
    }
}

#[test]
fn capacity_arithmetic_matches_hand_computed_cases() {
    // CPU: 2 ± 1 cores daily, tiny noise → P90 peak ≈ 3.0 cores.
    // 3.0 / (0.5 × 0.7) = 8.57 → 9 replicas.
    // Memory: constant 4 GiB → 4096 / (512 × 0.7) = 11.43 → 12 replicas.
    // Needed: max(9, 12) = 12 > HPA max 10 → raise it to 12.
    // Today's CPU capacity: 10 (HPA max) × 0.5 × 0.7 = 3.5 cores.
    let cpu = series(14, |i| 2.0 + daily(i) + 0.005 * noise(i));
    let mem = series(14, |_| 4.0 * GIB);
    let plan = plan_capacity(
        &CapacitySeries {
            cpu_cores: &cpu,
            memory_bytes: &mem,
            requests_per_second: None,
        },
        &input(
            5,
            Some(Hpa {
                min_replicas: 2,
                max_replicas: 10,
            }),
            0.7,
        ),
        &ForecastConfig::default(),
    )
    .expect("plan");
    let p90 = plan.cpu.forecast_p90.expect("cpu p90");
    assert!((p90 - 3.0).abs() < 0.05, "cpu P90 {p90}");
    assert_eq!(plan.cpu.replicas_needed, Some(9));
    assert_eq!(plan.memory.replicas_needed, Some(12));
    assert_eq!(plan.recommendation.replicas, 12);
    assert_eq!(plan.recommendation.raise_hpa_max_to, Some(12));
    assert!((plan.cpu.capacity_at_target - 3.5).abs() < 1e-12);
    // Request per pod at the 5 current replicas: P90 / (5 × 0.7).
    let req = plan.recommendation.cpu_request_cores.expect("cpu request");
    assert!((req - p90 / 3.5).abs() < 1e-9, "{req}");
    assert_eq!(plan.daily.len(), 7);
    assert!(plan.daily.iter().all(|d| d.replicas_needed == 12));
    // Memory 4 GiB ≥ capacity 10 × 512 MiB × 0.7 = 3.5 GiB: out already.
    let out = plan.runs_out.as_ref().expect("memory is over capacity");
    assert_eq!(out.resource, "memory");
    let text = plan.arithmetic.join("\n");
    assert!(
        text.contains("= 8.57 → 9 replicas") || text.contains("→ 9 replicas"),
        "{text}"
    );
    assert!(text.contains("= 11.43 → 12 replicas"), "{text}");
    let md = plan.to_markdown();
    assert!(
        md.contains("## Capacity plan: `cart`")
            && md.contains("| replicas needed |")
            && md.contains("### Trends")
            && md.contains("| memory | n/a |"),
        "{md}"
    );
    assert!(plan.to_table().contains("raise"), "{}", plan.to_table());
    let json = serde_json::to_value(&plan).expect("json");
    assert_eq!(json["recommendation"]["replicas"], 12);
}

#[test]
fn capacity_runs_out_when_a_growing_service_reaches_it() {
    // CPU grows 0.1 core/day from 1.0: 2.4 cores after 14 days. Today's
    // capacity: 7 replicas × 0.5 × 0.8 = 2.8 cores → reached 4 days after
    // the end of the history.
    let cpu = series(14, |i| 1.0 + 0.1 * i as f64 / 288.0 + 0.01 * noise(i));
    let mem = series(14, |i| 1.0 * GIB + 10.0 * MIB * noise(i + 7));
    let rps = series(14, |i| 100.0 + 10.0 * i as f64 / 288.0 + noise(i + 3));
    let plan = plan_capacity(
        &CapacitySeries {
            cpu_cores: &cpu,
            memory_bytes: &mem,
            requests_per_second: Some(&rps),
        },
        &input(7, None, 0.8),
        &ForecastConfig::default(),
    )
    .expect("plan");
    let out = plan.runs_out.as_ref().expect("runs out within 7 days");
    assert_eq!(out.resource, "cpu");
    let end = cpu.last().expect("non-empty").t;
    let expected = out.expected.expect("point forecast crosses");
    let days = (expected - end) as f64 / DAY_MS as f64;
    assert!(
        (days - 4.0).abs() < 0.5,
        "runs out after {days} days, want 4"
    );
    // Peak of the last planned day: 2.4 + 0.1 × 7 = 3.1 cores → P90 a bit
    // above → 3.1 / (0.5 × 0.8) = 7.75 → 8 replicas at least.
    let last = plan.daily.last().expect("7 days");
    let peak = last.cpu_peak.expect("cpu peak");
    assert!((peak - 3.1).abs() < 0.1, "{peak}");
    assert!(last.replicas_needed >= 8);
    assert!(plan.rps_peak.expect("rps") > 170.0);
}

#[test]
fn synthetic_seasonal_corpus_beats_seasonal_naive_with_honest_intervals() {
    let set = quality::synthetic_seasonal_corpus(7, 24);
    let score = quality::backtest_series(&set);
    println!("{}", score.to_table());
    assert!(score.refused.is_empty(), "{:?}", score.refused);
    // Measured: MASE 0.643, relative MAE 0.630; coverage 0.813 / 0.955.
    assert!(score.mean_relative_mae < 1.0, "{}", score.to_table());
    assert!(score.mean_mase < 1.0, "{}", score.to_table());
    assert!(
        (score.coverage80 - 0.80).abs() <= 0.05,
        "{}",
        score.to_table()
    );
    assert!(
        (score.coverage95 - 0.95).abs() <= 0.05,
        "{}",
        score.to_table()
    );
}

#[test]
fn nab_corpus_holdout_scores() {
    let dir = Path::new(NAB);
    assert!(
        dir.is_dir(),
        "the NAB corpus is required for this test: {} is missing (../shared/data/nab beside the repository)",
        dir.display()
    );
    let score = backtest_corpus(dir).expect("corpus reads");
    println!("{}", score.to_table());
    assert!(score.refused.is_empty(), "{:?}", score.refused);
    // Issue 11's targets: MASE < 1 on average (better than seasonal
    // naive) and coverage within ±5 points of nominal. Measured (docs/FORECAST.md):
    // MASE mean 0.894, median 0.807; coverage 0.819 / 0.934.
    assert!(score.mean_mase < 1.0, "{}", score.to_table());
    assert!(score.mean_relative_mae < 1.0, "{}", score.to_table());
    assert!(score.geomean_relative_mae < 1.0, "{}", score.to_table());
    assert!(
        (score.coverage80 - 0.80).abs() <= 0.05,
        "{}",
        score.to_table()
    );
    assert!(
        (score.coverage95 - 0.95).abs() <= 0.05,
        "{}",
        score.to_table()
    );
}
