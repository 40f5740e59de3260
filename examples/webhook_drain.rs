//! Webhook drain to a local HTTP receiver: the "events/s to a local
//! receiver" figure for the webhook sink (docs/EVENTS.md "Webhook").
//!
//! ```sh
//! cargo run --release --example webhook_drain -- [EVENTS]
//! ```
//!
//! (default: 20000 events). The sequence is a receiver outage as it
//! happens in production: EVENTS events are queued while no sender runs
//! (incident updates of one incident with 30 evidence samples, the
//! daemon's default context, on a WAL store in a temp dir), then the
//! sender starts against an in-process axum receiver on loopback that
//! answers 204; the clock runs until the receiver has every event id and
//! the outbox is empty. Each POST is signed (HMAC-SHA256) and carries a
//! bearer token, as a production config would. One request at a time, so
//! the figure is the round trip plus a store read and a batched delete.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiopsd::config::Config;
use aiopsd::incident::{
    Incident, IncidentState, Peak, Severity, SignalEvidence, Store, TimelineEntry, UpdateKind,
};
use aiopsd::publish::outbox::SinkSpec;
use aiopsd::publish::webhook::{WebhookPublisher, EVENT_ID_HEADER, WEBHOOK_SINK};
use aiopsd::signal::{now_ms, Sample, SeriesKey};
use aiopsd::telemetry::{Health, Metrics};
use axum::http::{HeaderMap, StatusCode};
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_767_225_600_000;

/// An open incident like the daemon's: one signal, 30 samples of evidence.
fn incident() -> Incident {
    let group: BTreeMap<String, String> = [("namespace", "shop"), ("service", "cart")]
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    aiopsd::install_crypto_provider();
    let events: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);

    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let seen = Arc::clone(&seen);
            move |headers: HeaderMap, _body: axum::body::Bytes| async move {
                if let Some(id) = headers.get(EVENT_ID_HEADER).and_then(|v| v.to_str().ok()) {
                    if let Ok(mut s) = seen.lock() {
                        s.insert(id.to_owned());
                    }
                }
                StatusCode::NO_CONTENT
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir()?;
    let yaml = format!(
        "store: {{ path: \"{}\" }}\nwebhook:\n  url: \"http://{addr}/hook\"\n  bearer_token: \"bench-token\"\n  signing_secret: \"bench-signing-secret-0123456789-abcdef\"\n  outbox: {{ max_events: 10000000 }}\n",
        dir.path().join("aiopsd.db").display()
    );
    let config = Config::from_yaml(&yaml, Path::new("bench.yaml"), Vec::new())?;
    let webhook = config
        .webhook
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no webhook section"))?;
    let store = Store::open(&config.store.path)?;
    store.configure_outbox(&[SinkSpec {
        name: WEBHOOK_SINK.into(),
        max_events: webhook.outbox.max_events,
    }])?;
    let mut inc = incident();
    inc.id = Some(
        store
            .save_incident_with_events(&inc, UpdateKind::Opened, now_ms())?
            .id,
    );
    for _ in 1..events {
        inc.anomaly_count += 1;
        store.save_incident_with_events(&inc, UpdateKind::Updated, now_ms())?;
    }
    let queued = store.outbox_depth(WEBHOOK_SINK)?.map_or(0, |(d, _)| d);
    eprintln!("queued {queued} events; starting the sender against http://{addr}/hook");

    let publisher = WebhookPublisher::new(
        &webhook,
        store.clone(),
        Arc::new(Metrics::new()),
        Health::new(),
    )?;
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(publisher.run(cancel.clone()));
    loop {
        let received = seen.lock().map(|s| s.len()).unwrap_or(0) as u64;
        let depth = store.outbox_depth(WEBHOOK_SINK)?.map_or(0, |(d, _)| d);
        if received >= queued && depth == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("not drained after 10 minutes: {received} received, {depth} queued");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    cancel.cancel();
    let _ = task.await;
    server.abort();
    println!(
        "webhook drain: {queued} events in {:.2} s = {:.0} events/s ({:.0} µs per event, one POST at a time)",
        took.as_secs_f64(),
        queued as f64 / took.as_secs_f64(),
        took.as_micros() as f64 / queued as f64
    );
    Ok(())
}
