//! Forecast speed, memory and quality: the figures in docs/FORECAST.md.
//!
//! Run with `cargo bench --bench forecast` (a few minutes on 2 cores).
//! Criterion times fit + forecast of one series holding 30 days of
//! 1-minute data (43,200 samples), once with the default config (the
//! history is resampled to 5 minutes to stay within `max_points`) and once
//! forced to keep the 1-minute step. After the timing runs, stderr gets:
//!
//! - the time for 10,000 such distinct series, fitted and forecast on
//!   every core (a few minutes; `FORECAST_FLEET=N` runs N instead), as
//!   wall time and as CPU time per series;
//! - memory per fitted model, measured with the counting allocator over a
//!   set of live models, and the model's own estimate;
//! - the holdout scores on the NAB corpus beside the repository
//!   (`../shared/data/nab`, if present), on 24 synthetic seasonal series
//!   and the time-to-breach backtest on 20 synthetic leaks.
//!
//! Data are generated from fixed seeds (SplitMix64 of the sample index and
//! the series number), so every run fits exactly the same samples.

mod common;

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aiopsd::config::HumanDuration;
use aiopsd::forecast::{backtest_corpus, leak_backtest, quality, ForecastConfig, Forecaster};
use aiopsd::signal::Sample;
use common::live_heap;
use criterion::Criterion;

/// 30 days at 1 minute: what `aiopsd capacity` reads per series.
const N: i64 = 30 * 1440;
/// 1 minute.
const STEP_MS: i64 = 60_000;
/// 2026-01-05T00:00:00Z.
const T0: i64 = 1_767_571_200_000;
/// Series in the fleet run (issue 11: "for 10,000 series").
const FLEET: usize = 10_000;
/// Live models for the memory figure.
const MEMORY_MODELS: usize = 200;

/// Deterministic noise in [-1, 1): SplitMix64 of `i`.
fn noise(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// A service-like series `k`: daily shape, weekend dip, slow growth,
/// noise and a spike every ~1000 minutes. Why this shape: it makes the
/// model selection try every candidate (daily, weekly, trend) and the
/// level filter meet outliers, so no path is measured at its cheapest.
fn workload(k: u64) -> Vec<Sample> {
    let phase = noise(k) * 3.0;
    (0..N)
        .map(|i| {
            let t = T0 + i * STEP_MS;
            let day = (i % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
            let weekend = if (i / 1440) % 7 >= 5 { 15.0 } else { 0.0 };
            let mut v = 100.0 + 30.0 * (day + phase).sin() - weekend
                + 0.5 * i as f64 / 1440.0
                + 4.0 * noise(k * 1_000_003 + i as u64);
            if i % 997 == 500 {
                v += 60.0;
            }
            Sample { t, v }
        })
        .collect()
}

fn default_forecaster() -> Forecaster {
    Forecaster::new(ForecastConfig::default()).expect("default config is valid")
}

fn one_minute_forecaster() -> Forecaster {
    Forecaster::new(ForecastConfig {
        step: Some(HumanDuration(Duration::from_secs(60))),
        max_points: 50_000,
        ..ForecastConfig::default()
    })
    .expect("valid config")
}

fn timings(c: &mut Criterion, data: &[Sample]) {
    let mut g = c.benchmark_group("forecast");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    let f = default_forecaster();
    g.bench_function("fit+forecast 7d, 30d of 1m data (5m step)", |b| {
        b.iter(|| {
            let m = f.fit(black_box(data)).expect("fit");
            black_box(
                m.forecast(Duration::from_secs(7 * 86_400))
                    .expect("forecast"),
            )
        })
    });
    let f1 = one_minute_forecaster();
    g.bench_function("fit+forecast 7d, 30d of 1m data (1m step)", |b| {
        b.iter(|| {
            let m = f1.fit(black_box(data)).expect("fit");
            black_box(
                m.forecast(Duration::from_secs(7 * 86_400))
                    .expect("forecast"),
            )
        })
    });
    g.finish();
}

/// Fits and forecasts `FLEET` distinct series (default 10,000; the
/// `FORECAST_FLEET` environment variable overrides it for a quick run) on
/// every core, generating each series in the worker so only one per core
/// is alive at a time. Reports the wall time, the CPU time per series and
/// the slowest series: what a daemon refitting every series of a cluster
/// pays.
fn report_fleet() {
    let fleet: usize = std::env::var("FORECAST_FLEET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FLEET);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let per_thread: Vec<(f64, f64, usize)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let f = default_forecaster();
                    let (mut busy, mut slowest, mut done) = (0.0f64, 0.0f64, 0usize);
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= fleet {
                            break;
                        }
                        let data = workload(1_000 + k as u64);
                        let t = Instant::now();
                        let m = f.fit(&data).expect("fit");
                        black_box(
                            m.forecast(Duration::from_secs(7 * 86_400))
                                .expect("forecast"),
                        );
                        let dt = t.elapsed().as_secs_f64();
                        busy += dt;
                        slowest = slowest.max(dt);
                        done += 1;
                    }
                    (busy, slowest, done)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let busy: f64 = per_thread.iter().map(|x| x.0).sum();
    let done: usize = per_thread.iter().map(|x| x.2).sum();
    let slowest = per_thread.iter().map(|x| x.1).fold(0.0, f64::max);
    eprintln!(
        "fleet: {done} distinct series of 30 d at 1 m, fit + 7 d forecast on {threads} threads: \
         {wall:.1} s wall, {:.1} ms of fit + forecast per series (slowest {:.1} ms), \
         {:.0} s of one core in all (series generation not counted)",
        busy / done.max(1) as f64 * 1e3,
        slowest * 1e3,
        busy
    );
}

fn report_memory() {
    let f = default_forecaster();
    let data: Vec<Vec<Sample>> = (0..8u64).map(|k| workload(100 + k)).collect();
    let before = live_heap();
    let mut models = Vec::with_capacity(MEMORY_MODELS);
    let mut own = 0usize;
    for k in 0..MEMORY_MODELS {
        let m = f.fit(&data[k % data.len()]).expect("fit");
        own += m.heap_bytes();
        models.push(m);
    }
    let after = live_heap();
    // The Vec's buffer was allocated after `before`: the delta holds each
    // model's inline size and its heap.
    eprintln!(
        "memory: {:.0} bytes per fitted model, measured over {MEMORY_MODELS} live models \
         (the model's own estimate, FittedModel::heap_bytes: {:.0})",
        after.saturating_sub(before) as f64 / MEMORY_MODELS as f64,
        own as f64 / MEMORY_MODELS as f64
    );
    black_box(models);
}

fn report_quality() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/nab/data"
    ));
    if dir.is_dir() {
        let start = Instant::now();
        match backtest_corpus(dir) {
            Ok(score) => eprintln!(
                "NAB holdout ({} files, {:.1} s):\n{}",
                score.series.len(),
                start.elapsed().as_secs_f64(),
                score.to_table()
            ),
            Err(e) => eprintln!("NAB holdout: {e}"),
        }
    } else {
        eprintln!("NAB holdout: no corpus at {}, skipped", dir.display());
    }
    let start = Instant::now();
    let score = quality::backtest_series(&quality::synthetic_seasonal_corpus(7, 24));
    eprintln!(
        "synthetic holdout (24 series, {:.1} s):\n{}",
        start.elapsed().as_secs_f64(),
        score.to_table()
    );
    let start = Instant::now();
    match leak_backtest(11, 20, 0.8) {
        Ok(s) => eprintln!(
            "leaks ({:.1} s): detected {}/{} before the breach at p >= {}; median |predicted - true| \
             breach time {:.1} h over all evaluations, {:.1} h at the first alarm; median lead time \
             {:.1} h; flat controls near the limit: {} false alarms in {} evaluations",
            start.elapsed().as_secs_f64(),
            s.detected,
            s.leaks.len(),
            s.alarm_probability,
            s.median_abs_error_h,
            s.median_abs_error_at_alarm_h,
            s.median_lead_h,
            s.false_alarms,
            s.control_evaluations
        ),
        Err(e) => eprintln!("leaks: {e}"),
    }
}

// A hand-written main instead of `criterion_main!`: the reports after the
// timing runs are not criterion measurements.
fn main() {
    let data = workload(0);
    let mut criterion = Criterion::default().configure_from_args();
    timings(&mut criterion, &data);
    criterion.final_summary();
    // `cargo bench` passes --bench; `cargo test --benches` runs each
    // benchmark once as a smoke test and needs no report.
    if std::env::args().any(|a| a == "--bench") {
        report_fleet();
        report_memory();
        report_quality();
    }
}
