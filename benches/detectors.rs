//! Detector speed, state and backtest time: the figures in
//! docs/DETECTION.md and docs/PERFORMANCE.md ("Detectors").
//!
//! Run with `cargo bench --bench detectors` (about a minute on 2 cores).
//! Criterion reports samples per second for each detector on one core;
//! after the runs, the state bytes per series of each detector are printed
//! to stderr — the detector's own estimate (`Detector::state_bytes`) and the
//! heap measured by a counting allocator over 1000 warm series — and the
//! backtest of the NAB corpus beside the repository
//! (`../shared/data/nab`) is timed end to end, if present.
//!
//! Targets (issue 4): the default ensemble at least 1M samples/s/core, at
//! most 4 KiB of state per series, the given corpus scored in under 30 s.
//!
//! Data are generated from a fixed seed (SplitMix64 of the sample index),
//! so every run scores exactly the same samples.

mod common;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use aiopsd::backtest;
use aiopsd::detect::{
    Combine, ContextParams, CusumParams, Detector, DetectorSpec, Engine, EnsembleParams,
    KMeansParams, MedianMadParams, RobustEwmaParams, SeasonalParams, SignalDetection,
};
use aiopsd::signal::{Direction, Sample, SeriesBatch, SeriesKey, SeriesSamples};
use common::live_heap;
use criterion::{Criterion, Throughput};

/// Samples in the workload: two weeks at a 5-minute step (NAB's typical
/// file length is 4000 rows; this is long enough that the seasonal profile
/// and the k-means refits are in their steady state for most of it).
const N: usize = 4032;
/// 5 minutes, NAB's most common step.
const STEP_MS: i64 = 300_000;
/// Data time of the first sample (2026-01-01T00:00:00Z).
const T0: i64 = 1_767_225_600_000;

/// Deterministic noise in [-1, 1): SplitMix64 of `i`.
fn noise(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// A service-like signal: daily shape, noise, a spike every ~500 samples
/// and a level shift at two thirds. Why this shape: the spikes and the
/// shift exercise the alarm and suppression paths and make the k-means
/// member refit on changing data, so no detector is measured only on its
/// cheapest path.
fn workload() -> Vec<(i64, f64)> {
    (0..N)
        .map(|i| {
            let t = T0 + i as i64 * STEP_MS;
            let day = (i % 288) as f64 / 288.0 * std::f64::consts::TAU;
            let mut x = 100.0 + 30.0 * day.sin() + 5.0 * noise(i as u64);
            if i % 500 == 499 {
                x += 80.0;
            }
            if i > 2 * N / 3 {
                x += 25.0;
            }
            (t, x)
        })
        .collect()
}

/// Every detector a signal can use, with its default tunables, and the
/// default ensemble (what `aiopsd backtest` runs).
fn specs() -> Vec<(&'static str, DetectorSpec)> {
    vec![
        (
            "robust_ewma",
            DetectorSpec::RobustEwma(RobustEwmaParams::default()),
        ),
        (
            "median_mad",
            DetectorSpec::MedianMad(MedianMadParams::default()),
        ),
        (
            "seasonal",
            DetectorSpec::Seasonal(SeasonalParams::default()),
        ),
        ("cusum", DetectorSpec::Cusum(CusumParams::default())),
        ("kmeans", DetectorSpec::Kmeans(KMeansParams::default())),
        ("context", DetectorSpec::Context(ContextParams::default())),
        (
            "ensemble_default",
            DetectorSpec::Ensemble(EnsembleParams::default()),
        ),
        (
            // The previous default: level members only, no context gate.
            "ensemble_level_only",
            DetectorSpec::Ensemble(EnsembleParams {
                context: None,
                combine: Combine::Max,
                ..EnsembleParams::default()
            }),
        ),
    ]
}

/// Samples/s per detector: one warm detector fed the workload again and
/// again (time keeps moving forward), through `Box<dyn Detector>` and
/// `update_likelihood`, exactly as the backtest drives it.
fn per_detector(c: &mut Criterion, data: &[(i64, f64)]) {
    let mut group = c.benchmark_group("detector");
    group
        .throughput(Throughput::Elements(data.len() as u64))
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    for (name, spec) in specs() {
        let mut det = spec.build(Direction::Both);
        let mut offset = 0;
        for &(t, x) in data {
            det.update_likelihood(t, x);
        }
        let span = N as i64 * STEP_MS;
        group.bench_function(name, |b| {
            b.iter(|| {
                offset += span;
                for &(t, x) in data {
                    black_box(det.update_likelihood(t + offset, black_box(x)));
                }
            });
        });
    }
    group.finish();
}

/// Prints, per detector, its own state estimate and the heap measured for
/// 1000 warm series (boxed, as the engine holds them), divided by 1000.
fn report_state(data: &[(i64, f64)]) {
    const SERIES: usize = 1000;
    // Warm the thread-local scratch and any lazy statics first, so they
    // are not charged to the first detector.
    for (_, spec) in specs() {
        let mut d = spec.build(Direction::Both);
        for &(t, x) in data {
            d.update_likelihood(t, x);
        }
    }
    for (name, spec) in specs() {
        let before = live_heap();
        let mut dets: Vec<Box<dyn Detector>> = Vec::with_capacity(SERIES);
        let vec_bytes = SERIES * std::mem::size_of::<Box<dyn Detector>>();
        for _ in 0..SERIES {
            dets.push(spec.build(Direction::Both));
        }
        // Every series warm: 600 samples is past every warm-up and the
        // first k-means fit, so all buffers have their final size.
        for d in dets.iter_mut() {
            for &(t, x) in &data[..600] {
                d.update_likelihood(t, x);
            }
        }
        let measured = live_heap().saturating_sub(before).saturating_sub(vec_bytes) / SERIES;
        let estimate = dets.first().map_or(0, |d| d.state_bytes());
        eprintln!(
            "state per series, {name:<16}: Detector::state_bytes = {estimate:>5} B; measured heap = {measured:>5} B"
        );
    }
}

/// Times `aiopsd backtest` on the given NAB corpus with the default
/// detector, end to end (read, score every series, NAB-score 3 profiles).
fn report_backtest() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/nab"));
    if !dir.join("labels.json").is_file() {
        eprintln!("backtest: no corpus at {}, skipped", dir.display());
        return;
    }
    let spec = DetectorSpec::Ensemble(EnsembleParams::default());
    let profiles = backtest::nab::standard_profiles();
    let mut best = Duration::MAX;
    let mut standard = f64::NAN;
    for _ in 0..5 {
        let start = Instant::now();
        match backtest::run(
            &dir.join("data"),
            &dir.join("labels.json"),
            &profiles,
            &spec,
            None,
        ) {
            Ok(report) => standard = report.normalized("standard").unwrap_or(f64::NAN),
            Err(e) => {
                eprintln!("backtest: {e}");
                return;
            }
        }
        best = best.min(start.elapsed());
    }
    eprintln!(
        "backtest of {} with the default ensemble: best of 5 = {:.3} s (standard score {standard:.2})",
        dir.display(),
        best.as_secs_f64()
    );
}

/// Model persistence for 1000 warm series of the default ensemble: file
/// bytes per series and save/load wall time (what a restart costs).
fn report_models(data: &[(i64, f64)]) {
    const SERIES: usize = 1000;
    let spec = DetectorSpec::Ensemble(EnsembleParams::default());
    let signal = || {
        [(
            "lat".to_string(),
            SignalDetection {
                spec: spec.clone(),
                direction: Direction::Both,
            },
        )]
    };
    let mut engine = Engine::new(signal(), i64::MAX, 8, SERIES);
    let series = (0..SERIES)
        .map(|i| SeriesSamples {
            key: std::sync::Arc::new(SeriesKey::new(
                "lat",
                [("pod".to_string(), format!("pod-{i}"))],
            )),
            samples: data[..600].iter().map(|&(t, v)| Sample { t, v }).collect(),
        })
        .collect();
    engine.observe(&SeriesBatch {
        signal: "lat".into(),
        series,
        until: data[600].0,
        backfill: false,
    });
    let dir = std::env::temp_dir().join(format!("aiopsd-bench-models-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("models: {e}");
        return;
    }
    let path = dir.join("models.json");
    let start = Instant::now();
    let saved = engine.save_models(&path);
    let save_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut restarted = Engine::new(signal(), i64::MAX, 8, SERIES);
    let loaded = restarted.load_models(&path);
    let load_s = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    match (saved, loaded) {
        (Ok(n), Ok(l)) => eprintln!(
            "models: {n} series saved in {save_s:.3} s, {} restored in {load_s:.3} s, {} B per series on disk",
            l.restored,
            bytes / n.max(1) as u64
        ),
        (Err(e), _) | (_, Err(e)) => eprintln!("models: {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// A hand-written main instead of `criterion_main!`: the reports after the
// timing runs need the same workload and are not criterion measurements.
fn main() {
    let data = workload();
    let mut criterion = Criterion::default().configure_from_args();
    per_detector(&mut criterion, &data);
    criterion.final_summary();
    // `cargo bench` passes --bench; `cargo test --benches` runs each
    // benchmark once as a smoke test and needs no report.
    if std::env::args().any(|a| a == "--bench") {
        report_state(&data);
        report_models(&data);
        report_backtest();
    }
}
