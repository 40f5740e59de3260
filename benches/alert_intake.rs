//! Alertmanager webhook intake: throughput (alerts/s) and latency (p50,
//! p99) of `POST /api/v1/alerts/alertmanager` on loopback — the real axum
//! router with its auth and body-limit layers, a real SQLite store (WAL) on
//! disk in a temp dir, the alerts committed before the 200 — and the
//! channel to the incident stage drained as the daemon does.
//!
//! Run with `cargo bench --bench alert_intake` (about a minute on 2 cores).
//! Issue 8 targets: ≥ 20,000 alerts/s sustained and p99 < 10 ms for
//! single-alert posts.
//!
//! Workloads, each a fixed, seeded sequence so runs compare:
//!
//! - `batch=1, 1 in flight`: one new alert per POST, one request at a time
//!   over a kept-alive connection — the latency a single Alertmanager
//!   group sees.
//! - `batch=1, 32 in flight`: the same from 32 concurrent connections —
//!   many alert groups flushing at once during a storm; what the store's
//!   one writer sustains.
//! - `batch=100, 1 / 8 in flight`: notifications of 100 new alerts (a big
//!   group), the shape where per-transaction costs are amortised.
//! - `batch=1 repeats, 32 in flight`: re-deliveries of known alerts (a
//!   retrying Alertmanager): the deduplication path.
//!
//! Payloads are serialized before timing; the client is reqwest over
//! plain HTTP/1.1 keep-alive (the server's TLS is off, as the targets are
//! about the intake, not the cipher).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiopsd::config::{AlertmanagerConfig, Secret};
use aiopsd::incident::{AlertStatus, Store};
use aiopsd::server::AppState;
use aiopsd::sources::alert_storm::{fingerprint, Notification, WireAlert};
use aiopsd::telemetry::{Health, Metrics};

const TOKEN: &str = "bench-token-0123456789abcdef";
const T0: i64 = 1_767_225_600_000;

/// One Alertmanager v4 notification with `n` alerts, numbered from
/// `first`, each a distinct pod of a distinct service (so a distinct
/// fingerprint) with realistic labels and annotations.
fn payload(first: usize, n: usize) -> Vec<u8> {
    let alerts = (first..first + n)
        .map(|i| {
            let labels: BTreeMap<String, String> = [
                ("alertname", "KubePodCrashLooping".to_string()),
                ("namespace", format!("team-{}", i % 17)),
                ("service", format!("svc-{}", i % 997)),
                ("pod", format!("svc-{}-7d9f8-{i:05}", i % 997)),
                ("container", "app".to_string()),
                ("severity", "warning".to_string()),
                ("prometheus", "monitoring/k8s".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            WireAlert {
                status: AlertStatus::Firing,
                annotations: [
                    ("summary", "Pod is crash looping."),
                    (
                        "description",
                        "Pod is restarting 3.2 times / 10 minutes (container app).",
                    ),
                    (
                        "runbook_url",
                        "https://runbooks.example.org/kubernetes/kubepodcrashlooping",
                    ),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                starts_at: aiopsd::signal::format_ts(T0 + i as i64 * 1000),
                ends_at: "0001-01-01T00:00:00Z".into(),
                generator_url: "http://prometheus.monitoring:9090/graph?g0.expr=increase%28kube_pod_container_status_restarts_total%5B10m%5D%29+%3E+3".into(),
                fingerprint: fingerprint(&labels),
                labels,
            }
        })
        .collect();
    let notification = Notification {
        version: "4".into(),
        group_key: "{}:{alertname=\"KubePodCrashLooping\"}".into(),
        truncated_alerts: 0,
        status: AlertStatus::Firing,
        receiver: "aiopsd".into(),
        group_labels: [("alertname".to_string(), "KubePodCrashLooping".to_string())]
            .into_iter()
            .collect(),
        common_labels: BTreeMap::new(),
        common_annotations: BTreeMap::new(),
        external_url: "http://alertmanager.monitoring:9093".into(),
        alerts,
    };
    serde_json::to_vec(&notification).expect("serialize")
}

/// The server: router + on-disk store, the alerts channel drained.
async fn start(dir: &std::path::Path) -> (String, Store) {
    let store = Store::open(&dir.join("aiopsd.db")).expect("store");
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let state = AppState {
        store: store.clone(),
        metrics: Arc::new(Metrics::new()),
        health: Health::new(),
        api_token: Some(Secret::from(TOKEN)),
        cluster: "bench".into(),
        alertmanager: AlertmanagerConfig::default(),
        alert_tx: Some(tx),
        config_silences: Default::default(),
        remediation: Default::default(),
        config: None,
    };
    let router = aiopsd::server::router(state, Duration::from_secs(10));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/api/v1/alerts/alertmanager",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(aiopsd::server::serve(
        listener,
        router,
        std::future::pending(),
    ));
    (url, store)
}

struct Figures {
    alerts_per_s: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// POSTs every body, `in_flight` at a time, each on its own kept-alive
/// connection; returns throughput and per-request latency.
async fn run(url: &str, bodies: Vec<Vec<u8>>, alerts_per_body: usize, in_flight: usize) -> Figures {
    let total = bodies.len();
    let queue = Arc::new(std::sync::Mutex::new(bodies.into_iter()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..in_flight {
        let queue = Arc::clone(&queue);
        let url = url.to_string();
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut times = Vec::new();
            loop {
                let next = queue.lock().expect("queue").next();
                let Some(body) = next else { break };
                let t = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("answer");
                let status = response.status();
                let _ = response.bytes().await.expect("body");
                assert_eq!(status, 200, "the webhook refused a delivery");
                times.push(t.elapsed());
            }
            times
        }));
    }
    let mut times = Vec::with_capacity(total);
    for w in workers {
        times.extend(w.await.expect("worker"));
    }
    let wall = started.elapsed();
    times.sort();
    let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    Figures {
        alerts_per_s: (total * alerts_per_body) as f64 / wall.as_secs_f64(),
        p50: pct(50),
        p99: pct(99),
        max: times[times.len() - 1],
    }
}

fn print(name: &str, f: &Figures) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "alert_intake/{name:<28} {:>9.0} alerts/s   p50 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms",
        f.alerts_per_s,
        ms(f.p50),
        ms(f.p99),
        ms(f.max)
    );
}

fn main() {
    // The machine the targets are for: a small node (2 cores).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, store) = start(dir.path()).await;
        let mut next = 0;
        let mut bodies = |count: usize, per: usize| {
            let out: Vec<_> = (0..count).map(|i| payload(next + i * per, per)).collect();
            next += count * per;
            out
        };
        // Warm-up: connections, statement cache, the file's first pages.
        run(&url, bodies(500, 1), 1, 4).await;

        let f = run(&url, bodies(5_000, 1), 1, 1).await;
        print("batch=1, 1 in flight", &f);
        let f = run(&url, bodies(20_000, 1), 1, 32).await;
        print("batch=1, 32 in flight", &f);
        let f = run(&url, bodies(200, 100), 100, 1).await;
        print("batch=100, 1 in flight", &f);
        let f = run(&url, bodies(400, 100), 100, 8).await;
        print("batch=100, 8 in flight", &f);
        let repeats: Vec<_> = (0..20_000).map(|i| payload(600 + i % 5_000, 1)).collect();
        let f = run(&url, repeats, 1, 32).await;
        print("batch=1 repeats, 32 in flight", &f);

        let stored = store.alert_count().expect("count");
        println!(
            "alert_intake: {stored} alerts stored on disk in {}",
            dir.path().display()
        );
    });
}
