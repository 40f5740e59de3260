//! Log-template mining speed and memory: the figures in docs/LOGS.md.
//!
//! Run with `cargo bench --bench logs`. The workload is the eight Loghub
//! samples beside the repository (`../shared/data/loghub/<System>/<System>_2k.log`,
//! raw lines with their headers, 16 000 lines), interleaved line by line and
//! repeated to 1 008 000 lines — the "1 million lines of mixed logs" of
//! issue 10. Raw lines rather than the extracted messages because they are
//! the harder case: longer, and eight formats at once in one miner, as a
//! shared log stream would be. Each iteration mines the whole workload with
//! a fresh miner on one thread, so the figure is lines/s/core including
//! template creation. After the timing runs, the template count, the
//! miner's own memory estimate and the heap measured by a counting
//! allocator are printed to stderr.
//!
//! Target (issue 10): at least 1 000 000 lines/s/core.

mod common;

use std::hint::black_box;
use std::path::Path;

use aiopsd::logs::TemplateMiner;
use common::live_heap;
use criterion::{Criterion, Throughput};

const LOGHUB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/loghub");
const SYSTEMS: [&str; 8] = [
    "HDFS",
    "Hadoop",
    "Spark",
    "Zookeeper",
    "BGL",
    "Linux",
    "Apache",
    "OpenSSH",
];
/// 63 × 16 000 = 1 008 000 lines.
const REPEAT: usize = 63;

/// The eight samples interleaved (line i of each system in turn), so the
/// miner sees every format all the time, then repeated.
fn workload() -> Vec<String> {
    let files: Vec<Vec<String>> = SYSTEMS
        .iter()
        .map(|s| {
            let path = Path::new(LOGHUB).join(s).join(format!("{s}_2k.log"));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "the Loghub samples are required for this bench: cannot read {}: {e}",
                    path.display()
                )
            });
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .collect();
    let longest = files.iter().map(Vec::len).max().unwrap_or(0);
    let mut once = Vec::new();
    for i in 0..longest {
        once.extend(files.iter().filter_map(|f| f.get(i).cloned()));
    }
    let mut all = Vec::with_capacity(once.len() * REPEAT);
    for _ in 0..REPEAT {
        all.extend(once.iter().cloned());
    }
    all
}

fn mine(lines: &[String]) -> TemplateMiner {
    let mut miner = TemplateMiner::default();
    for l in lines {
        black_box(miner.add(l));
    }
    miner
}

fn report_memory(lines: &[String]) {
    let before = live_heap();
    let miner = mine(lines);
    let heap = live_heap().saturating_sub(before);
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    eprintln!(
        "{} lines ({:.1} MB): {} templates, miner estimate {} KiB, heap measured {} KiB",
        lines.len(),
        bytes as f64 / 1e6,
        miner.len(),
        miner.approx_bytes() / 1024,
        heap / 1024
    );
}

// A hand-written main instead of `criterion_main!`: the memory report after
// the timing runs needs the same workload and is not a criterion measurement.
fn main() {
    let lines = workload();
    let mut criterion = Criterion::default().configure_from_args();
    {
        let mut group = criterion.benchmark_group("logs");
        group.sample_size(10);
        group.throughput(Throughput::Elements(lines.len() as u64));
        group.bench_function("mine_loghub_mixed_1M", |b| b.iter(|| mine(&lines)));
        group.finish();
    }
    criterion.final_summary();
    // `cargo test --benches` runs each benchmark once as a smoke test.
    if std::env::args().any(|a| a == "--bench") {
        report_memory(&lines);
    }
}
