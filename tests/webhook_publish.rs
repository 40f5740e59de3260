//! The webhook sink against a real HTTP receiver (tests/support/
//! webhook_receiver.rs, axum on loopback), driven through
//! `aiopsd::publish::start` as the daemon does: events arrive in queue
//! order, signed and authenticated; a receiver outage and 5xx/429 answers
//! are retried and lose nothing; a 400 poisons only that event (ERROR
//! line), and the queue goes on; secrets never reach the log.

mod support;

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiopsd::config::Config;
use aiopsd::incident::{Incident, IncidentState, Severity, Store, TimelineEntry, UpdateKind};
use aiopsd::publish::event::Event;
use aiopsd::publish::outbox::{SinkSpec, MQTT_SINK};
use aiopsd::publish::webhook::{WebhookPublisher, WEBHOOK_SINK};
use aiopsd::signal::{now_ms, TimestampMs};
use aiopsd::telemetry::{Health, Metrics};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use support::webhook_receiver::{Received, WebhookReceiver};
use support::{eventually, free_port, metric_value};

const WAIT: Duration = Duration::from_secs(20);
const SIGNING_SECRET: &str = "signing-secret-0123456789-0123456789-xyz";
const TOKEN: &str = "bearer-token-abcdef-0123456789";
const T0: TimestampMs = 1_700_000_000_000;

/// A config with only a webhook sink (no `mqtt`), fast retries, the token
/// given through the environment as an operator would.
fn config(url: &str, store: &Path, extra: &str) -> Config {
    let yaml = format!(
        r#"
cluster: test
store: {{ path: "{}" }}
webhook:
  url: "{url}"
  timeout: 2s
  signing_secret: "{SIGNING_SECRET}"
  retry: {{ initial_backoff: 50ms, max_backoff: 300ms }}
{extra}
"#,
        store.display(),
    );
    let env = [(
        "AIOPSD_WEBHOOK__BEARER_TOKEN".to_string(),
        TOKEN.to_string(),
    )];
    Config::from_yaml(&yaml, Path::new("test.yaml"), env).expect("valid test config")
}

fn incident(service: &str) -> Incident {
    support::incidents::sample_incident(service, T0)
}

/// Drives one incident through opened → `updates` × updated → escalated
/// → resolved, as the incident stage would.
fn lifecycle(store: &Store, service: &str, updates: u64) {
    let mut inc = incident(service);
    let id = store
        .save_incident_with_events(&inc, UpdateKind::Opened, now_ms())
        .expect("open")
        .id;
    inc.id = Some(id);
    for i in 0..updates {
        inc.anomaly_count += 1;
        inc.last_anomaly_at = T0 + 1000 * (i as i64 + 1);
        store
            .save_incident_with_events(&inc, UpdateKind::Updated, now_ms())
            .expect("update");
    }
    inc.severity = Severity::Critical;
    inc.timeline.push(TimelineEntry {
        at: inc.last_anomaly_at,
        kind: "severity_raised".into(),
        message: "Severity raised to critical.".into(),
    });
    store
        .save_incident_with_events(&inc, UpdateKind::Updated, now_ms())
        .expect("escalate");
    inc.state = IncidentState::Resolved;
    inc.resolved_at = Some(inc.last_anomaly_at + 600_000);
    inc.timeline.push(TimelineEntry {
        at: inc.last_anomaly_at + 600_000,
        kind: "resolved".into(),
        message: "Resolved.".into(),
    });
    store
        .save_incident_with_events(&inc, UpdateKind::Resolved, now_ms())
        .expect("resolve");
}

/// Declares the sinks of `config` and queues two incidents' lifecycles
/// (5 + 4 events) *before* any sender runs, so the expected order is
/// known exactly; returns the queued event ids in queue order.
fn queue_events(config: &Config, store: &Store) -> Vec<String> {
    let mut sinks = vec![SinkSpec {
        name: WEBHOOK_SINK.into(),
        max_events: 1000,
    }];
    if config.mqtt.is_some() {
        sinks.push(SinkSpec {
            name: MQTT_SINK.into(),
            max_events: 1000,
        });
    }
    store.configure_outbox(&sinks).expect("configure outbox");
    lifecycle(store, "cart", 2);
    lifecycle(store, "auth", 1);
    queued(store, WEBHOOK_SINK)
}

fn queued(store: &Store, sink: &str) -> Vec<String> {
    store
        .outbox_batch(sink, 0, 1_000_000)
        .expect("outbox")
        .into_iter()
        .map(|r| r.event_id)
        .collect()
}

fn parse(r: &Received) -> Event {
    serde_json::from_slice(&r.body).expect("the body is an aiopsd.event/v1")
}

/// Ids of the accepted events, first occurrence only (what a
/// deduplicating receiver keeps).
fn delivered_ids(receiver: &WebhookReceiver) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in receiver.accepted() {
        let id = parse(&r).id;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

struct Running {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the publishing stage the way the daemon does.
fn start_publishing(config: &Config, store: &Store) -> Running {
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();
    let cancel = CancellationToken::new();
    let task = aiopsd::publish::start(config, store, &metrics, &health, cancel.clone())
        .expect("publisher starts");
    Running {
        metrics,
        health,
        cancel,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }

    fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics.encode(), series).unwrap_or(0.0)
    }

    fn webhook_connected(&self) -> bool {
        self.health
            .publishers()
            .iter()
            .any(|p| p.sink == WEBHOOK_SINK && p.connected)
    }
}

/// Log lines written while the guard lives. The tests run on tokio's
/// current-thread runtime, so the sender's task logs on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }

    /// Asserts that neither secret appears anywhere in the log.
    fn assert_no_secrets(&self) {
        let text = self.text();
        assert!(!text.is_empty(), "the log capture works");
        assert!(!text.contains(SIGNING_SECRET), "signing secret logged");
        assert!(!text.contains(TOKEN), "bearer token logged");
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// HMAC-SHA256 of `body`, computed here independently of the crate.
fn expected_signature(body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(SIGNING_SECRET.as_bytes()).expect("hmac key");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[tokio::test]
async fn events_arrive_in_order_signed_and_authenticated_without_mqtt() {
    aiopsd::install_crypto_provider();
    let logs = Logs::default();
    let _guard = logs.capture();
    let receiver = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&receiver.url(), &dir.path().join("aiopsd.db"), "");
    assert!(config.mqtt.is_none(), "the webhook sink works alone");
    let store = Store::open(&config.store.path).expect("store");
    let expected = queue_events(&config, &store);
    assert_eq!(expected.len(), 9);
    let running = start_publishing(&config, &store);

    assert!(
        eventually(WAIT, || delivered_ids(&receiver).len() >= expected.len()).await,
        "delivered {:?}",
        delivered_ids(&receiver)
    );
    assert_eq!(
        delivered_ids(&receiver),
        expected,
        "all events, in queue order"
    );
    for r in receiver.received() {
        let event = parse(&r);
        assert_eq!(
            r.header("x-aiopsd-signature"),
            Some(expected_signature(&r.body)),
            "signature of {}",
            event.id
        );
        assert_eq!(r.header("authorization"), Some(format!("Bearer {TOKEN}")));
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(r.header("x-aiopsd-event-id"), Some(event.id.clone()));
        assert_eq!(
            r.header("x-aiopsd-event").as_deref(),
            Some(event.kind.as_str())
        );
    }
    assert!(
        eventually(WAIT, || queued(&store, WEBHOOK_SINK).is_empty()).await,
        "delivered events leave the outbox"
    );
    assert!(
        eventually(WAIT, || {
            running.metric(r#"aiopsd_events_sent_total{sink="webhook"}"#) == 9.0
        })
        .await
    );
    assert!(running.webhook_connected(), "/readyz shows the sink up");
    let sinks: Vec<String> = running
        .health
        .publishers()
        .into_iter()
        .map(|p| p.sink)
        .collect();
    assert_eq!(sinks, [WEBHOOK_SINK], "only the webhook publisher runs");
    running.stop().await;
    logs.assert_no_secrets();
}

#[tokio::test]
async fn receiver_down_then_up_loses_nothing_and_keeps_order() {
    aiopsd::install_crypto_provider();
    let logs = Logs::default();
    let _guard = logs.capture();
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://127.0.0.1:{port}{}", support::webhook_receiver::PATH);
    let config = config(&url, &dir.path().join("aiopsd.db"), "");
    let store = Store::open(&config.store.path).expect("store");
    let expected = queue_events(&config, &store);
    let running = start_publishing(&config, &store);

    // Nothing listens: attempts fail, are counted, and the events wait.
    assert!(
        eventually(WAIT, || {
            running.metric(r#"aiopsd_events_failed_total{sink="webhook"}"#) >= 3.0
        })
        .await,
        "retries while the receiver is down"
    );
    assert_eq!(queued(&store, WEBHOOK_SINK), expected, "nothing lost");
    let status = running.health.publishers();
    let webhook = status
        .iter()
        .find(|p| p.sink == WEBHOOK_SINK)
        .expect("listed");
    assert!(!webhook.connected);
    assert!(
        webhook
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("connect"),
        "{:?}",
        webhook.last_error
    );
    assert!(logs.text().contains("WARN"), "the outage is logged");

    let receiver = WebhookReceiver::start_on(port).await;
    assert!(
        eventually(WAIT, || delivered_ids(&receiver).len() >= expected.len()).await,
        "delivered after the outage: {:?}",
        delivered_ids(&receiver)
    );
    assert_eq!(delivered_ids(&receiver), expected, "in queue order");
    assert!(eventually(WAIT, || queued(&store, WEBHOOK_SINK).is_empty()).await);
    assert!(running.webhook_connected());
    running.stop().await;
    logs.assert_no_secrets();
}

#[tokio::test]
async fn server_errors_and_throttling_are_retried_until_accepted() {
    aiopsd::install_crypto_provider();
    let logs = Logs::default();
    let _guard = logs.capture();
    let receiver = WebhookReceiver::start().await;
    // The first event meets a 500, a 503 asking for 1 s (capped by
    // max_backoff 300ms) and a 429 before it is taken.
    receiver.script(&[(500, None), (503, Some("1")), (429, Some("0"))]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&receiver.url(), &dir.path().join("aiopsd.db"), "");
    let store = Store::open(&config.store.path).expect("store");
    let expected = queue_events(&config, &store);
    let running = start_publishing(&config, &store);

    assert!(eventually(WAIT, || delivered_ids(&receiver).len() >= expected.len()).await);
    assert_eq!(delivered_ids(&receiver), expected, "in order, none skipped");
    let first: Vec<(String, u16)> = receiver
        .received()
        .iter()
        .take(4)
        .map(|r| (parse(r).id, r.status))
        .collect();
    let statuses: Vec<u16> = first.iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses, [500, 503, 429, 200]);
    assert!(
        first.iter().all(|(id, _)| *id == expected[0]),
        "the same event is retried: {first:?}"
    );
    assert_eq!(
        running.metric(r#"aiopsd_events_failed_total{sink="webhook"}"#),
        3.0
    );
    assert!(eventually(WAIT, || queued(&store, WEBHOOK_SINK).is_empty()).await);
    assert!(
        !logs.text().contains("ERROR"),
        "retried failures are not errors:\n{}",
        logs.text()
    );
    running.stop().await;
    logs.assert_no_secrets();
}

#[tokio::test]
async fn a_refused_event_is_logged_skipped_and_the_queue_goes_on() {
    aiopsd::install_crypto_provider();
    let logs = Logs::default();
    let _guard = logs.capture();
    let receiver = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&receiver.url(), &dir.path().join("aiopsd.db"), "");
    let store = Store::open(&config.store.path).expect("store");
    let expected = queue_events(&config, &store);
    let poisoned = expected[1].clone();
    // The body echoes the token: the log must still not show it.
    receiver.refuse(
        &poisoned,
        400,
        &format!("field incident.group: unsupported (auth was Bearer {TOKEN})"),
    );
    let running = start_publishing(&config, &store);

    let mut rest = expected.clone();
    rest.remove(1);
    assert!(eventually(WAIT, || delivered_ids(&receiver).len() >= rest.len()).await);
    assert_eq!(
        delivered_ids(&receiver),
        rest,
        "every other event, in order"
    );
    let attempts = receiver
        .received()
        .iter()
        .filter(|r| parse(r).id == poisoned)
        .count();
    assert_eq!(attempts, 1, "a refused event is not retried");
    assert!(eventually(WAIT, || queued(&store, WEBHOOK_SINK).is_empty()).await);

    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("ERROR") && l.contains(&poisoned))
        .unwrap_or_else(|| panic!("an ERROR line names the event:\n{text}"));
    assert!(line.contains("status=400"), "{line}");
    assert!(line.contains("field incident.group: unsupported"), "{line}");
    assert_eq!(
        running.metric(r#"aiopsd_events_sent_total{sink="webhook"}"#),
        8.0,
        "the poisoned event is not counted as sent"
    );
    running.stop().await;
    logs.assert_no_secrets();
}

#[tokio::test]
async fn only_the_configured_event_kinds_are_sent() {
    aiopsd::install_crypto_provider();
    let receiver = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(
        &receiver.url(),
        &dir.path().join("aiopsd.db"),
        "  events: [incident.opened, incident.resolved]",
    );
    let store = Store::open(&config.store.path).expect("store");
    queue_events(&config, &store);
    let publisher = WebhookPublisher::new(
        config.webhook.as_ref().expect("webhook section"),
        store.clone(),
        Arc::new(Metrics::new()),
        Health::new(),
    )
    .expect("publisher");
    let stats = publisher.stats();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(publisher.run(cancel.clone()));

    assert!(eventually(WAIT, || queued(&store, WEBHOOK_SINK).is_empty()).await);
    let kinds: Vec<&str> = receiver
        .accepted()
        .iter()
        .map(|r| parse(r).kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "incident.opened",
            "incident.resolved",
            "incident.opened",
            "incident.resolved"
        ]
    );
    assert_eq!(stats.filtered.load(Ordering::Relaxed), 5);
    cancel.cancel();
    let _ = tokio::time::timeout(WAIT, task).await;
}

#[tokio::test]
async fn a_dead_mqtt_broker_does_not_hold_up_the_webhook() {
    aiopsd::install_crypto_provider();
    let receiver = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on the broker port: MQTT keeps reconnecting.
    let mqtt = format!(
        "mqtt:\n  url: \"mqtt://127.0.0.1:{}\"\n  reconnect: {{ initial_backoff: 100ms, max_backoff: 200ms }}",
        free_port()
    );
    let config = config(&receiver.url(), &dir.path().join("aiopsd.db"), &mqtt);
    let store = Store::open(&config.store.path).expect("store");
    let expected = queue_events(&config, &store);
    let running = start_publishing(&config, &store);

    assert!(eventually(WAIT, || delivered_ids(&receiver).len() >= expected.len()).await);
    assert_eq!(delivered_ids(&receiver), expected);
    assert!(eventually(WAIT, || queued(&store, WEBHOOK_SINK).is_empty()).await);
    assert_eq!(
        queued(&store, MQTT_SINK),
        expected,
        "MQTT's copies wait in their own queue"
    );
    let status = running.health.publishers();
    assert!(status.iter().any(|p| p.sink == WEBHOOK_SINK && p.connected));
    assert!(status.iter().any(|p| p.sink == MQTT_SINK && !p.connected));
    running.stop().await;
}
