//! Outbox throughput in SQLite: the figures in docs/PERFORMANCE.md
//! ("Event outbox").
//!
//! Run with `cargo bench --bench outbox` (about a minute on 2 cores).
//!
//! - `outbox/enqueue`: one incident save *with* its event per transaction
//!   (`Store::save_incident_with_events`, an `incident.updated`), on a WAL
//!   file in a temp dir — exactly what the incident stage does per update.
//!   This is the cost the outbox adds to detection's write path.
//! - `outbox/drain`: what the MQTT sender does per window: read 256 rows
//!   in queue order and delete them once acknowledged (two transactions).
//!   The broker is not in the loop here, so this is the store's ceiling
//!   on delivery; `cargo run --release --example outbox_drain` measures
//!   the real thing through Mosquitto.
//!
//! Data: one incident with one signal of 30 evidence samples (the daemon's
//! default context), the shape of a real update; fixed, so runs compare.

use std::collections::BTreeMap;
use std::time::Duration;

use aiopsd::incident::{
    Incident, IncidentState, Peak, Severity, SignalEvidence, Store, TimelineEntry, UpdateKind,
};
use aiopsd::publish::outbox::{SinkSpec, MQTT_SINK};
use aiopsd::signal::{Sample, SeriesKey};
use criterion::{BatchSize, Criterion, Throughput};

const T0: i64 = 1_767_225_600_000;

/// An open incident like the daemon's: one signal, 30 samples of evidence.
fn incident(service: &str) -> Incident {
    let group: BTreeMap<String, String> = [("namespace", "shop"), ("service", service)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Incident {
        id: None,
        cluster: "bench".into(),
        group: group.clone(),
        state: IncidentState::Open,
        severity: Severity::Warning,
        opened_at: T0,
        last_anomaly_at: T0,
        resolved_at: None,
        anomaly_count: 1,
        signals: vec![SignalEvidence {
            series: SeriesKey::new("error_ratio", group),
            first_at: T0,
            last_at: T0,
            anomaly_count: 1,
            peak: Peak {
                t: T0,
                value: 0.2,
                expected: 0.01,
                spread: 0.01,
                score: 19.0,
            },
            samples: (0..30)
                .map(|i| Sample {
                    t: T0 - (30 - i) * 30_000,
                    v: 0.01 + f64::from(i as i32) * 0.001,
                })
                .collect(),
            anomalous_at: vec![T0],
        }],
        alerts: Vec::new(),
        diagnosis: None,
        decisions: Vec::new(),
        logs: Vec::new(),
        prediction: None,
        timeline: vec![TimelineEntry {
            at: T0,
            kind: "opened".into(),
            message: "Opened.".into(),
        }],
    }
}

fn store(dir: &tempfile::TempDir) -> Store {
    let store = Store::open(&dir.path().join("bench.db")).expect("store");
    store
        .configure_outbox(&[SinkSpec {
            name: MQTT_SINK.into(),
            max_events: 10_000_000,
        }])
        .expect("sink");
    store
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox");
    group
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2))
        .sample_size(20);

    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir);
    let mut inc = incident("cart");
    inc.id = Some(
        s.save_incident_with_events(&inc, UpdateKind::Opened, T0)
            .expect("open")
            .id,
    );
    group.throughput(Throughput::Elements(1));
    group.bench_function("enqueue", |b| {
        b.iter(|| {
            inc.anomaly_count += 1;
            s.save_incident_with_events(&inc, UpdateKind::Updated, T0)
                .expect("save")
        })
    });
    drop(s);

    const WINDOW: usize = 256;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir);
    let mut inc = incident("cart");
    inc.id = Some(
        s.save_incident_with_events(&inc, UpdateKind::Opened, T0)
            .expect("open")
            .id,
    );
    group.throughput(Throughput::Elements(WINDOW as u64));
    group.bench_function("drain", |b| {
        b.iter_batched(
            || {
                // Refill the window outside the measurement.
                for _ in 0..WINDOW {
                    inc.anomaly_count += 1;
                    s.save_incident_with_events(&inc, UpdateKind::Updated, T0)
                        .expect("save");
                }
            },
            |()| {
                let rows = s.outbox_batch(MQTT_SINK, 0, WINDOW).expect("batch");
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                s.outbox_ack(MQTT_SINK, &ids).expect("ack")
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
