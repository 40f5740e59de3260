//! Outbox drain through a real Mosquitto after a broker outage: the
//! "events/s to a local broker" and "drain time for 100,000 queued events"
//! figures in docs/PERFORMANCE.md.
//!
//! ```sh
//! cargo run --release --example outbox_drain -- [EVENTS] [INFLIGHT]
//! ```
//!
//! (defaults: 100000 events, `mqtt.inflight` 64). Needs the `mosquitto`
//! package; the broker is started by scripts/mosquitto-start.sh on a free
//! loopback port in a temp dir and stopped at the end.
//!
//! The sequence is an outage as it happens in production: broker up,
//! publisher and a subscriber connected; the broker stops; EVENTS events
//! are queued (incident updates, as the incident stage writes them); the
//! broker restarts on the same port; the clock runs from the restart until
//! the subscriber has every event id and the outbox is empty. The
//! reconnect backoff is capped at 1 s, so up to 1 s of the figure is the
//! publisher noticing the broker is back.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiopsd::config::Config;
use aiopsd::incident::{
    Incident, IncidentState, Peak, Severity, SignalEvidence, Store, TimelineEntry, UpdateKind,
};
use aiopsd::publish::outbox::MQTT_SINK;
use aiopsd::signal::{now_ms, Sample, SeriesKey};
use aiopsd::telemetry::{Health, Metrics};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

fn run(script_name: &str, args: &[&str]) {
    let status = Command::new(script(script_name))
        .args(args)
        .status()
        .expect("run script");
    assert!(status.success(), "{script_name} failed");
}

fn incident(i: usize) -> Incident {
    let service = format!("svc{i}");
    let group: BTreeMap<String, String> = [("namespace", "shop"), ("service", service.as_str())]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Incident {
        id: None,
        cluster: "bench".into(),
        group: group.clone(),
        state: IncidentState::Open,
        severity: Severity::Warning,
        opened_at: 1_767_225_600_000,
        last_anomaly_at: 1_767_225_600_000,
        resolved_at: None,
        anomaly_count: 1,
        signals: vec![SignalEvidence {
            series: SeriesKey::new("error_ratio", group),
            first_at: 1_767_225_600_000,
            last_at: 1_767_225_600_000,
            anomaly_count: 1,
            peak: Peak {
                t: 1_767_225_600_000,
                value: 0.2,
                expected: 0.01,
                spread: 0.01,
                score: 19.0,
            },
            samples: vec![Sample {
                t: 1_767_225_600_000,
                v: 0.2,
            }],
            anomalous_at: vec![1_767_225_600_000],
        }],
        alerts: Vec::new(),
        diagnosis: None,
        decisions: Vec::new(),
        logs: Vec::new(),
        prediction: None,
        timeline: vec![TimelineEntry {
            at: 1_767_225_600_000,
            kind: "opened".into(),
            message: "Opened.".into(),
        }],
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    aiopsd::install_crypto_provider();
    let args: Vec<String> = std::env::args().collect();
    let events: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let inflight: u16 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(64);

    let broker_dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
        .to_string();
    let dir_arg = broker_dir.path().to_string_lossy().to_string();
    let pid = std::process::id().to_string();
    run(
        "mosquitto-start.sh",
        &["--dir", &dir_arg, "--port", &port, "--owner-pid", &pid],
    );

    let data = tempfile::tempdir().expect("tempdir");
    let db = data.path().join("aiopsd.db");
    let yaml = format!(
        "cluster: bench\nstore: {{ path: \"{}\" }}\nmqtt:\n  url: \"mqtt://127.0.0.1:{port}\"\n  \
         inflight: {inflight}\n  outbox: {{ max_events: 10000000 }}\n  \
         reconnect: {{ initial_backoff: 100ms, max_backoff: 1s }}\n",
        db.display()
    );
    let config = Config::from_yaml(&yaml, Path::new("bench.yaml"), Vec::new()).expect("config");
    let store = Store::open(&db).expect("store");

    // Subscriber with a persistent session, counting distinct event ids.
    let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    let mut options =
        MqttOptions::new("bench-subscriber", "127.0.0.1", port.parse().expect("port"));
    options.set_clean_session(false);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_inflight(1000);
    let (sub, mut sub_loop) = AsyncClient::new(options, 1000);
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            match sub_loop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                        if let Some(id) = v.get("id").and_then(|i| i.as_str()) {
                            counter.lock().expect("lock").insert(id.to_string());
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    sub.subscribe("aiopsd/bench/incidents/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");

    let metrics = Arc::new(Metrics::new());
    let health = Health::new();
    let cancel = CancellationToken::new();
    let task = aiopsd::publish::start(&config, &store, &metrics, &health, cancel.clone())
        .expect("publisher");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Outage: the broker goes; events are queued meanwhile.
    run("mosquitto-stop.sh", &["--dir", &dir_arg]);
    let incidents = 1000.min(events.max(1));
    let per_incident = events / incidents;
    let started = Instant::now();
    let mut queued = 0;
    for i in 0..incidents {
        let mut inc = incident(i);
        let id = store
            .save_incident_with_events(&inc, UpdateKind::Opened, now_ms())
            .expect("open")
            .id;
        inc.id = Some(id);
        queued += 1;
        for _ in 1..per_incident {
            inc.anomaly_count += 1;
            store
                .save_incident_with_events(&inc, UpdateKind::Updated, now_ms())
                .expect("update");
            queued += 1;
        }
    }
    let enqueue = started.elapsed();
    let (depth, _) = store.outbox_depth(MQTT_SINK).expect("depth").expect("sink");
    println!(
        "queued {queued} events in {:.2}s while the broker was down: {:.0} events/s (one transaction each); outbox depth {depth}",
        enqueue.as_secs_f64(),
        queued as f64 / enqueue.as_secs_f64()
    );

    // The broker returns: time the drain.
    run(
        "mosquitto-start.sh",
        &["--dir", &dir_arg, "--port", &port, "--owner-pid", &pid],
    );
    let restarted = Instant::now();
    let mut delivered_at = None;
    loop {
        let got = seen.lock().expect("lock").len();
        let depth = store
            .outbox_depth(MQTT_SINK)
            .ok()
            .flatten()
            .map_or(u64::MAX, |(d, _)| d);
        if got >= queued && delivered_at.is_none() {
            delivered_at = Some(restarted.elapsed());
        }
        if got >= queued && depth == 0 {
            break;
        }
        if restarted.elapsed() > Duration::from_secs(600) {
            panic!("drain did not finish in 10 min: {got} of {queued} received, depth {depth}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = restarted.elapsed();
    let delivered = delivered_at.unwrap_or(drained);
    println!(
        "after the broker restart: all {queued} events received by the subscriber in {:.2}s \
         ({:.0} events/s end to end); outbox empty after {:.2}s (inflight {inflight})",
        delivered.as_secs_f64(),
        queued as f64 / delivered.as_secs_f64(),
        drained.as_secs_f64()
    );
    cancel.cancel();
    let _ = task.await;
    run("mosquitto-stop.sh", &["--dir", &dir_arg]);
}
