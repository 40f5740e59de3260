//! Detection speed and memory: the figures in docs/PERFORMANCE.md.
//!
//! Run with `cargo bench --bench engine` (about two minutes on 2 cores).
//! Criterion reports time per batch and throughput in samples per second;
//! after the runs, the state bytes per series are printed to stderr for the
//! 1k and 100k workloads: the engine's own estimate
//! (`Engine::state_bytes_per_series`) and the heap measured by a counting
//! allocator.
//!
//! Targets: at least 5M samples/s on one core through the engine, at most
//! 1 KiB of state per series (so 100k series fit in ~100 MB).
//!
//! All data is generated from a fixed seed (a SplitMix64 hash of the series
//! and step index), so every run scores exactly the same samples.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiopsd::config::DetectionConfig;
use aiopsd::detect::{
    Detector, DetectorSpec, Engine, RobustEwma, RobustEwmaParams, SignalDetection,
};
use aiopsd::signal::{Direction, Sample, SeriesBatch, SeriesKey, SeriesSamples};
use common::live_heap;
use criterion::{Criterion, SamplingMode, Throughput};

/// The signal every generated series belongs to.
const SIGNAL: &str = "cpu_usage";
/// Prometheus `step` of the default config: one sample per 30 s.
const STEP_MS: i64 = 30_000;
/// Samples per series in one batch: a 5-minute poll window at a 30 s step.
const SAMPLES_PER_BATCH: usize = 10;
/// Pods per service in the generated labels.
const PODS_PER_SERVICE: usize = 10;
/// Data time of the first sample (2026-01-01T00:00:00Z).
const T0: i64 = 1_767_225_600_000;
/// Batches fed before measuring: 40 samples per series, past the default
/// warm-up of 30, so the steady state is measured and not the warm-up path.
const WARMUP_BATCHES: usize = 4;

/// Deterministic noise in [-1, 1): SplitMix64 of `i`, so the bench needs no
/// RNG crate and every run sees the same values.
fn noise(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// A lowercase alphanumeric suffix like the ones Kubernetes puts in pod
/// names (`-7d9f8c6b5d-x2kqp`), derived from `seed`.
fn k8s_suffix(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut z = seed;
    (0..len)
        .map(|_| {
            z = z
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ALPHABET[((z >> 33) % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// Labels of series `i` as a cAdvisor query aggregated `by (namespace, pod)`
/// plus the `service` label a signal adds: realistic lengths matter because
/// the engine hashes and stores every key.
fn series_key(i: usize) -> Arc<SeriesKey> {
    const SERVICES: [&str; 8] = [
        "user-service",
        "checkout",
        "payment-gateway",
        "cart",
        "search-api",
        "catalog",
        "shipping",
        "notification-worker",
    ];
    let service_index = i / PODS_PER_SERVICE;
    let service = format!(
        "{}-{}",
        SERVICES[service_index % SERVICES.len()],
        service_index
    );
    let namespace = format!("team-{:02}", service_index % 40);
    let pod = format!(
        "{service}-{}-{}",
        k8s_suffix(service_index as u64, 10),
        k8s_suffix(i as u64 ^ 0xABCD_EF01, 5)
    );
    Arc::new(SeriesKey::new(
        SIGNAL,
        [
            ("namespace".to_string(), namespace),
            ("pod".to_string(), pod),
            ("service".to_string(), service),
        ],
    ))
}

/// An engine with `series` series of one signal and a reusable batch that
/// holds the next poll's samples for all of them.
struct Workload {
    engine: Engine,
    batch: SeriesBatch,
    /// Typical level of each series (CPU cores, 0.05..4).
    levels: Vec<f64>,
    /// Index of the next step to generate; grows so timestamps always
    /// advance (the engine skips samples it has already seen).
    next_step: i64,
}

impl Workload {
    /// Builds the engine with the default detector and the default
    /// detection settings, and warms every series past its warm-up.
    fn new(series: usize) -> Self {
        let defaults = DetectionConfig::default();
        let engine = Engine::new(
            [(
                SIGNAL.to_string(),
                SignalDetection {
                    spec: DetectorSpec::default(),
                    direction: Direction::Both,
                },
            )],
            defaults.series_ttl.as_millis_i64(),
            defaults.context_samples,
            // Never let the cap refuse bench series: that would measure a
            // cheaper path than the one we mean to.
            defaults.max_series.max(series),
        );
        let batch = SeriesBatch {
            signal: SIGNAL.to_string(),
            series: (0..series)
                .map(|i| SeriesSamples {
                    key: series_key(i),
                    samples: vec![Sample { t: 0, v: 0.0 }; SAMPLES_PER_BATCH],
                })
                .collect(),
            until: T0,
            backfill: false,
        };
        let levels = (0..series)
            .map(|i| 2.025 + 1.975 * noise(i as u64 ^ 0x5EED))
            .collect();
        let mut workload = Self {
            engine,
            batch,
            levels,
            next_step: 0,
        };
        for _ in 0..WARMUP_BATCHES {
            workload.refill();
            black_box(workload.engine.observe(&workload.batch));
        }
        assert_eq!(
            workload.engine.stats().series,
            series,
            "every series tracked"
        );
        workload
    }

    /// Writes the next poll's samples into the batch, in place: each series
    /// gets `SAMPLES_PER_BATCH` new steps of its level with ±5% noise.
    fn refill(&mut self) {
        let first = self.next_step;
        for (i, series) in self.batch.series.iter_mut().enumerate() {
            let level = self.levels[i];
            for (j, sample) in series.samples.iter_mut().enumerate() {
                let step = first + j as i64;
                let seed = (i as u64) << 32 ^ step as u64;
                *sample = Sample {
                    t: T0 + step * STEP_MS,
                    v: level * (1.0 + 0.05 * noise(seed)),
                };
            }
        }
        self.next_step += SAMPLES_PER_BATCH as i64;
        self.batch.until = T0 + self.next_step * STEP_MS;
    }

    /// Samples in one batch.
    fn samples(&self) -> u64 {
        (self.batch.series.len() * SAMPLES_PER_BATCH) as u64
    }
}

/// Times `observe` on fresh batches; generating the batch is not timed.
fn bench_observe(c: &mut Criterion, group_name: &str, workload: &mut Workload, flat: bool) {
    let mut group = c.benchmark_group(group_name);
    group
        .throughput(Throughput::Elements(workload.samples()))
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(2));
    if flat {
        // One batch takes tens of milliseconds or more: linear sampling
        // would need hundreds of iterations; flat sampling keeps the run
        // short with the same number of iterations per sample.
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
    } else {
        group.sample_size(20);
    }
    group.bench_function("observe", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                workload.refill();
                let start = Instant::now();
                black_box(workload.engine.observe(black_box(&workload.batch)));
                elapsed += start.elapsed();
            }
            elapsed
        });
    });
    group.finish();
}

/// **engine_1k/observe** — the default detector through [`Engine`] for
/// 1k series (100 services × 10 pods), 10 samples per series per batch.
///
/// Why this shape: a typical single-cluster deployment. All state fits in
/// L2 cache, so this shows the per-sample cost of the engine itself —
/// one hash lookup per series per batch, the context ring and the detector
/// update — without memory stalls.
fn engine_1k(c: &mut Criterion, workload: &mut Workload) {
    bench_observe(c, "engine_1k", workload, false);
}

/// **engine_100k/observe** — the same for 100k series (10k services ×
/// 10 pods), the default `detection.max_series`.
///
/// Why this shape: the cap the daemon is sized for. ~70 MB of state does
/// not fit in cache, so every series costs cache misses for its map entry,
/// key and detector; the 10 samples per batch amortise those the way a real
/// poll does. This is the figure to hold against the 5M samples/s target.
fn engine_100k(c: &mut Criterion, workload: &mut Workload) {
    bench_observe(c, "engine_100k", workload, true);
}

/// **robust_ewma/update** — one warm [`RobustEwma`] scoring 10k samples in a
/// loop, called directly (no engine, no dynamic dispatch).
///
/// Why this shape: the floor under the engine figures. The difference
/// between this and engine_1k is what the engine's bookkeeping (map lookup,
/// timestamps, context ring, `Box<dyn Detector>`) costs per sample.
fn robust_ewma_update(c: &mut Criterion) {
    const N: u64 = 10_000;
    let values: Vec<f64> = (0..N).map(|i| 100.0 * (1.0 + 0.05 * noise(i))).collect();
    let mut detector = RobustEwma::new(RobustEwmaParams::default(), Direction::Both);
    let mut t = T0;
    for &x in &values {
        t += STEP_MS;
        detector.update(t, x);
    }
    let mut group = c.benchmark_group("robust_ewma");
    group
        .throughput(Throughput::Elements(N))
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(2))
        .sample_size(20);
    group.bench_function("update", |b| {
        b.iter(|| {
            for &x in &values {
                t += STEP_MS;
                black_box(detector.update(t, black_box(x)));
            }
        });
    });
    group.finish();
}

/// Prints the memory figures for a workload after the timing runs: the
/// engine's own estimate, and the heap actually measured for its state and
/// for the series keys it keeps alive (allocator overhead not included).
fn report_state(workload: Workload) {
    let stats = workload.engine.stats();
    let estimate = workload.engine.state_bytes_per_series();
    let n = stats.series.max(1);

    // The batch still holds every key, so dropping the engine frees exactly
    // its own state: map table, detectors, context rings.
    let Workload { engine, batch, .. } = workload;
    let before = live_heap();
    drop(engine);
    let engine_heap = before.saturating_sub(live_heap());

    // Keys are shared with the source (Arc); measure a fresh set of the
    // same shape, less the Vec that holds them.
    let before = live_heap();
    let keys: Vec<Arc<SeriesKey>> = (0..batch.series.len()).map(series_key).collect();
    let key_heap = live_heap()
        .saturating_sub(before)
        .saturating_sub(keys.capacity() * std::mem::size_of::<Arc<SeriesKey>>());
    drop(keys);

    eprintln!(
        "engine state, {} series: Engine::state_bytes_per_series = {estimate} B; \
         measured heap per series = {} B engine state + {} B series key = {} B; \
         {} samples scored",
        stats.series,
        engine_heap / n,
        key_heap / n,
        (engine_heap + key_heap) / n,
        stats.samples_scored,
    );
}

// A hand-written main instead of `criterion_main!`: the workloads are built
// once, shared by their benchmark and the state report that follows it.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();

    let mut small = Workload::new(1_000);
    engine_1k(&mut criterion, &mut small);
    let mut large = Workload::new(100_000);
    engine_100k(&mut criterion, &mut large);
    robust_ewma_update(&mut criterion);

    criterion.final_summary();
    // `cargo bench` passes --bench; `cargo test --benches` runs each
    // benchmark once as a smoke test and needs no report.
    if std::env::args().any(|a| a == "--bench") {
        report_state(small);
        report_state(large);
    }
}
