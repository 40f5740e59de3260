//! The MQTT publisher and approvals against the real Mosquitto broker
//! (Debian package, started by scripts/mosquitto-start.sh): events arrive in
//! order with the documented JSON; a broker outage and a publisher crash
//! lose nothing and keep per-incident order; signed approvals are accepted
//! and bad, expired, replayed and unsigned ones refused.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiopsd::config::Config;
use aiopsd::incident::{Incident, IncidentState, Severity, Store, TimelineEntry, UpdateKind};
use aiopsd::publish::approvals::{self, ActionRequest, ActionState, ApprovalMessage, Verdict};
use aiopsd::publish::event::{Event, EventKind};
use aiopsd::publish::mqtt::MqttPublisher;
use aiopsd::publish::outbox::MQTT_SINK;
use aiopsd::signal::{now_ms, TimestampMs};
use aiopsd::telemetry::{Health, Metrics};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use support::real_mosquitto::RealMosquitto;
use support::{eventually, metric_value};

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "test-secret-0123456789-0123456789-abcdef";
const T0: TimestampMs = 1_700_000_000_000;

/// A config with MQTT pointed at `broker`, fast reconnects, approvals on.
fn config(broker: &RealMosquitto, store: &Path) -> Config {
    let yaml = format!(
        r#"
cluster: test
store: {{ path: "{}" }}
mqtt:
  url: "{}"
  client_id: "aiopsd-test-{}"
  retain_state: true
  inflight: 32
  reconnect: {{ initial_backoff: 100ms, max_backoff: 400ms }}
approvals:
  secret: "{SECRET}"
  max_age: 1m
"#,
        store.display(),
        broker.url(),
        broker.port(),
    );
    Config::from_yaml(&yaml, Path::new("test.yaml"), Vec::new()).expect("valid test config")
}

/// What every test here starts with: a fresh broker, and a [`config`]
/// pointed at it with its store (`aiopsd.db`) in a new temporary directory,
/// which the caller keeps alive.
async fn broker_and_config() -> (RealMosquitto, tempfile::TempDir, Config) {
    aiopsd::install_crypto_provider();
    let broker = tokio::task::spawn_blocking(RealMosquitto::start)
        .await
        .expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&broker, &dir.path().join("aiopsd.db"));
    (broker, dir, config)
}

fn incident(service: &str) -> Incident {
    support::incidents::sample_incident(service, T0)
}

/// Drives one incident through opened → `updates` × updated → escalated →
/// resolved, as the incident stage would; returns its id.
fn lifecycle(store: &Store, service: &str, updates: u64) -> i64 {
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
    id
}

/// One received message: topic, payload, retain flag.
type Received = Arc<Mutex<Vec<(String, Vec<u8>, bool)>>>;

/// A test subscriber: persistent session (clean_session = false), so the
/// broker keeps its subscription and queues messages across a broker
/// restart; reconnects by itself.
struct Subscriber {
    received: Received,
    /// Kept so the event loop keeps running (dropping it ends the session).
    _client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    async fn start(broker: &RealMosquitto, id: &str, filter: &str) -> Subscriber {
        let mut options = MqttOptions::new(id, "127.0.0.1", broker.port());
        options.set_clean_session(false);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let received: Received = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(tokio::sync::Notify::new());
        let task = {
            let received = Arc::clone(&received);
            let subscribed = Arc::clone(&subscribed);
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                            received.lock().expect("lock").push((
                                p.topic.clone(),
                                p.payload.to_vec(),
                                p.retain,
                            ));
                        }
                        Ok(MqttEvent::Incoming(Packet::SubAck(_))) => subscribed.notify_one(),
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
        };
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe request");
        tokio::time::timeout(WAIT, subscribed.notified())
            .await
            .expect("SUBACK from the broker");
        Subscriber {
            received,
            _client: client,
            task,
        }
    }

    /// Event messages received so far (the retained state messages
    /// filtered out), parsed.
    fn events(&self) -> Vec<(String, Event)> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter(|(topic, _, _)| !topic.ends_with("/state"))
            .map(|(topic, payload, _)| {
                let event: Event = serde_json::from_slice(payload)
                    .unwrap_or_else(|e| panic!("not an event on {topic}: {e}"));
                (topic.clone(), event)
            })
            .collect()
    }

    /// First occurrence of each event id, in arrival order (what a
    /// deduplicating consumer keeps), and the number of duplicates seen.
    fn deduplicated(&self) -> (Vec<Event>, usize) {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut dups = 0;
        for (_, e) in self.events() {
            if seen.insert(e.id.clone()) {
                out.push(e);
            } else {
                dups += 1;
            }
        }
        (out, dups)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The ids of every event queued for MQTT, in queue order.
fn queued_ids(store: &Store) -> Vec<String> {
    store
        .outbox_batch(MQTT_SINK, 0, 1_000_000)
        .expect("outbox")
        .into_iter()
        .map(|r| r.event_id)
        .collect()
}

/// Asserts that within each incident, events arrived in strictly
/// increasing `seq`.
fn assert_ordered_per_incident(events: &[Event]) {
    let mut last: HashMap<i64, u64> = HashMap::new();
    for e in events {
        let prev = last.insert(e.incident_id, e.seq).unwrap_or(0);
        assert!(
            e.seq > prev,
            "incident {}: seq {} arrived after {prev}",
            e.incident_id,
            e.seq
        );
    }
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

    fn connected(&self) -> bool {
        self.health
            .publishers()
            .iter()
            .any(|p| p.sink == MQTT_SINK && p.connected)
    }

    fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics.encode(), series).unwrap_or(0.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_with_the_documented_json() {
    let (broker, _dir, config) = broker_and_config().await;
    let store = Store::open(&config.store.path).expect("store");
    let sub = Subscriber::start(&broker, "test-sub-order", "aiopsd/test/#").await;
    let running = start_publishing(&config, &store);

    let cart = lifecycle(&store, "cart", 2);
    let auth = lifecycle(&store, "auth", 1);
    let expected = queued_ids(&store);
    assert_eq!(expected.len(), 5 + 4);

    assert!(
        eventually(WAIT, || sub.deduplicated().0.len() >= expected.len()).await,
        "received {:?}\nbroker log:\n{}",
        sub.events().iter().map(|e| &e.1.id).collect::<Vec<_>>(),
        broker.log()
    );
    let (events, _) = sub.deduplicated();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, expected, "all events, in queue order");
    assert_ordered_per_incident(&events);

    // Topics and JSON as docs/EVENTS.md describes them.
    let by_id: HashMap<String, String> = sub
        .events()
        .into_iter()
        .map(|(topic, e)| (e.id, topic))
        .collect();
    let kinds: Vec<(i64, EventKind)> = events.iter().map(|e| (e.incident_id, e.kind)).collect();
    assert_eq!(
        kinds,
        [
            (cart, EventKind::IncidentOpened),
            (cart, EventKind::IncidentUpdated),
            (cart, EventKind::IncidentUpdated),
            (cart, EventKind::IncidentEscalated),
            (cart, EventKind::IncidentResolved),
            (auth, EventKind::IncidentOpened),
            (auth, EventKind::IncidentUpdated),
            (auth, EventKind::IncidentEscalated),
            (auth, EventKind::IncidentResolved),
        ]
    );
    let first = &events[0];
    assert_eq!(first.schema, "aiopsd.event/v1");
    assert_eq!(first.id, format!("test:{cart}:1"));
    assert_eq!(first.seq, 1);
    assert_eq!(first.cluster, "test");
    assert_eq!(
        by_id[&first.id],
        format!("aiopsd/test/incidents/{cart}/opened")
    );
    let snapshot = first.incident.as_ref().expect("incident part");
    assert_eq!(snapshot.subject, "cart (shop)");
    assert_eq!(snapshot.state, "open");
    assert_eq!(snapshot.signals, ["error_ratio"]);
    assert_eq!(snapshot.url, format!("/api/v1/incidents/{cart}"));
    let resolved = &events[4];
    assert_eq!(
        by_id[&resolved.id],
        format!("aiopsd/test/incidents/{cart}/resolved")
    );
    assert_eq!(
        resolved.incident.as_ref().map(|i| i.state.as_str()),
        Some("resolved")
    );
    // The raw JSON has exactly the documented top-level fields.
    let raw: serde_json::Value =
        serde_json::to_value(first).expect("event serializes back to JSON");
    let keys: Vec<&str> = raw
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys.iter().copied().collect::<HashSet<_>>(),
        HashSet::from([
            "schema",
            "id",
            "kind",
            "cluster",
            "incident_id",
            "seq",
            "at",
            "message",
            "incident"
        ])
    );

    // Every event was acknowledged and deleted; the retained state of each
    // incident is its final one, for late subscribers.
    assert!(
        eventually(WAIT, || store
            .outbox_depth(MQTT_SINK)
            .ok()
            .flatten()
            .is_some_and(|(d, _)| d == 0))
        .await,
        "outbox drained"
    );
    let late = Subscriber::start(&broker, "test-sub-late", "aiopsd/test/incidents/+/state").await;
    assert!(eventually(WAIT, || late.received.lock().expect("lock").len() >= 2).await);
    for (topic, payload, retain) in late.received.lock().expect("lock").iter() {
        assert!(retain, "{topic} is retained");
        let state: serde_json::Value = serde_json::from_slice(payload).expect("state JSON");
        assert_eq!(state["state"], "resolved", "{topic}");
    }
    assert!(running.connected());
    assert_eq!(
        running.metric(r#"aiopsd_events_sent_total{sink="mqtt"}"#),
        9.0
    );
    assert_eq!(
        running.metric(r#"aiopsd_broker_connected{sink="mqtt"}"#),
        1.0
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing_and_keeps_per_incident_order() {
    let (broker, _dir, config) = broker_and_config().await;
    let store = Store::open(&config.store.path).expect("store");
    let sub = Subscriber::start(&broker, "test-sub-outage", "aiopsd/test/incidents/#").await;
    let running = start_publishing(&config, &store);

    let mut all_ids = Vec::new();
    lifecycle(&store, "before", 3);
    all_ids.extend(queued_ids(&store));
    assert!(eventually(WAIT, || sub.deduplicated().0.len() >= all_ids.len()).await);

    // The broker goes away; events keep being generated (detection does
    // not wait for MQTT) and wait in the outbox.
    tokio::task::block_in_place(|| broker.stop());
    assert!(
        eventually(WAIT, || !running.connected()).await,
        "the publisher noticed the outage"
    );
    let before_outage: HashSet<String> = all_ids.iter().cloned().collect();
    for i in 0..20 {
        lifecycle(&store, &format!("svc{i}"), 5);
    }
    let during: Vec<String> = queued_ids(&store)
        .into_iter()
        .filter(|id| !before_outage.contains(id))
        .collect();
    assert_eq!(during.len(), 20 * 8);
    all_ids.extend(during);
    // A broker outage does not stop anything else: the store took every
    // event, the outbox depth shows them, the publisher keeps retrying.
    let (depth, _) = store
        .outbox_depth(MQTT_SINK)
        .expect("depth")
        .expect("sink configured");
    assert_eq!(depth, 160);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(running.metric(r#"aiopsd_broker_connection_failures_total{sink="mqtt"}"#) >= 2.0);

    // The broker comes back on the same port: everything arrives.
    tokio::task::block_in_place(|| broker.restart());
    assert!(
        eventually(WAIT, || sub.deduplicated().0.len() >= all_ids.len()).await,
        "received {} of {} after the outage\nbroker log:\n{}",
        sub.deduplicated().0.len(),
        all_ids.len(),
        broker.log()
    );
    let (events, duplicates) = sub.deduplicated();
    let received: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let expected_set: HashSet<&String> = all_ids.iter().collect();
    let received_set: HashSet<&String> = received.iter().collect();
    assert_eq!(
        received_set, expected_set,
        "every event exactly once per id"
    );
    assert_eq!(received.len(), all_ids.len());
    assert_ordered_per_incident(&events);
    eprintln!(
        "outage test: {} events, {duplicates} duplicate deliveries (deduplicated by id)",
        all_ids.len()
    );
    assert!(
        eventually(WAIT, || store
            .outbox_depth(MQTT_SINK)
            .ok()
            .flatten()
            .is_some_and(|(d, _)| d == 0))
        .await
    );
    assert!(running.connected());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_killed_mid_send_loses_nothing_after_restart() {
    let (broker, dir, config) = broker_and_config().await;
    let db = dir.path().join("aiopsd.db");
    let sub = Subscriber::start(&broker, "test-sub-crash", "aiopsd/test/incidents/#").await;

    // 300 incidents × 8 events queued while no publisher runs.
    let expected = {
        let store = Store::open(&db).expect("store");
        aiopsd::publish::start(
            &config,
            &store,
            &Arc::new(Metrics::new()),
            &Health::new(),
            {
                let c = CancellationToken::new();
                c.cancel();
                c
            },
        )
        .expect("declares the sink")
        .await
        .expect("stopped at once");
        for i in 0..300 {
            lifecycle(&store, &format!("svc{i}"), 5);
        }
        queued_ids(&store)
    };
    assert_eq!(expected.len(), 2400);

    // First run: killed (its task aborted mid-flight, nothing flushed) as
    // soon as some events went out.
    {
        let store = Store::open(&db).expect("store");
        let metrics = Arc::new(Metrics::new());
        let publisher = MqttPublisher::new(
            config.mqtt.as_ref().expect("mqtt"),
            &config.approvals,
            &config.cluster,
            store.clone(),
            metrics,
            Health::new(),
        )
        .expect("publisher");
        let task = tokio::spawn(publisher.run(CancellationToken::new()));
        assert!(eventually(WAIT, || sub.deduplicated().0.len() >= 100).await);
        task.abort();
        let _ = task.await;
    }
    let after_kill = sub.deduplicated().0.len();
    assert!(
        after_kill < expected.len(),
        "killed mid-send ({after_kill} of {} delivered)",
        expected.len()
    );

    // Restart on the same file: everything arrives, in order per incident.
    let store = Store::open(&db).expect("reopen");
    let running = start_publishing(&config, &store);
    assert!(
        eventually(WAIT, || sub.deduplicated().0.len() >= expected.len()).await,
        "received {} of {}",
        sub.deduplicated().0.len(),
        expected.len()
    );
    let (events, duplicates) = sub.deduplicated();
    let received: HashSet<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(received, expected.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(events.len(), expected.len());
    assert_ordered_per_incident(&events);
    eprintln!(
        "crash test: {after_kill} delivered before the kill, {duplicates} duplicates after restart"
    );
    running.stop().await;
}

/// Signs an approval as an operator's tool would.
fn approval(action_id: i64, verdict: Verdict, nonce: &str, issued_at: i64) -> ApprovalMessage {
    let mut m = ApprovalMessage {
        action_id,
        decision: verdict,
        by: "alice".into(),
        reason: "checked the dashboard".into(),
        issued_at,
        nonce: nonce.into(),
        signature: None,
    };
    m.signature = Some(approvals::sign(SECRET.as_bytes(), "test", &m));
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_approvals_need_a_fresh_valid_signature() {
    let (broker, _dir, config) = broker_and_config().await;
    let store = Store::open(&config.store.path).expect("store");
    let sub = Subscriber::start(&broker, "test-sub-approvals", "aiopsd/test/incidents/#").await;
    let running = start_publishing(&config, &store);

    let incident_id = store
        .save_incident_with_events(&incident("cart"), UpdateKind::Opened, now_ms())
        .expect("incident")
        .id;
    let request = |what: &str| ActionRequest {
        incident_id,
        description: format!("Restart shop/cart ({what})"),
        detail: serde_json::json!({"kind": "rollout_restart", "target": "shop/cart"}),
        ttl_ms: 600_000,
    };
    let (a, _) = store.request_action(&request("a"), now_ms()).expect("a");
    let (b, _) = store.request_action(&request("b"), now_ms()).expect("b");
    // Once the proposals arrived, the publisher is connected and its
    // approvals subscription (made at connect, before any publish) is in place.
    assert!(eventually(WAIT, || sub.deduplicated().0.len() >= 3).await);

    let mut options = MqttOptions::new("test-approver", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (approver, mut eventloop) = AsyncClient::new(options, 16);
    let pump = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let send = |payload: Vec<u8>| {
        let approver = approver.clone();
        async move {
            approver
                .publish("aiopsd/test/approvals", QoS::AtLeastOnce, false, payload)
                .await
                .expect("publish approval");
        }
    };
    let count = |outcome: &str| {
        running.metric(&format!(
            r#"aiopsd_approvals_total{{channel="mqtt",outcome="{outcome}"}}"#
        ))
    };

    // Unsigned, badly signed (altered after signing, or another secret),
    // and too old: all refused, the action stays pending.
    let mut unsigned = approval(a.id, Verdict::Approve, "nonce-unsigned", now_ms());
    unsigned.signature = None;
    send(serde_json::to_vec(&unsigned).expect("json")).await;
    let mut altered = approval(a.id, Verdict::Deny, "nonce-altered", now_ms());
    altered.decision = Verdict::Approve;
    send(serde_json::to_vec(&altered).expect("json")).await;
    let mut other_secret = approval(a.id, Verdict::Approve, "nonce-other", now_ms());
    other_secret.signature = Some(approvals::sign(
        b"not-the-secret-not-the-secret-xyz",
        "test",
        &other_secret,
    ));
    send(serde_json::to_vec(&other_secret).expect("json")).await;
    let old = approval(a.id, Verdict::Approve, "nonce-old", now_ms() - 120_000);
    send(serde_json::to_vec(&old).expect("json")).await;
    send(b"{not json".to_vec()).await;
    assert!(
        eventually(WAIT, || count("unsigned") == 1.0
            && count("bad_signature") == 2.0
            && count("expired_message") == 1.0
            && count("malformed") == 1.0)
        .await,
        "{}",
        running.metrics.encode()
    );
    assert_eq!(
        store.get_action(a.id).expect("read").map(|x| x.state),
        Some(ActionState::Pending)
    );

    // A good one approves; the decision is recorded with who and why and
    // announced as action.approved on the incident's topic tree.
    let good = approval(a.id, Verdict::Approve, "nonce-good-1", now_ms());
    let good_bytes = serde_json::to_vec(&good).expect("json");
    send(good_bytes.clone()).await;
    assert!(
        eventually(WAIT, || store
            .get_action(a.id)
            .ok()
            .flatten()
            .is_some_and(|x| x.state == ActionState::Approved))
        .await
    );
    let decided = store.get_action(a.id).expect("read").expect("action");
    assert_eq!(decided.decided_by.as_deref(), Some("alice"));
    assert_eq!(decided.reason.as_deref(), Some("checked the dashboard"));
    assert!(
        eventually(WAIT, || sub
            .deduplicated()
            .0
            .iter()
            .any(|e| e.kind == EventKind::ActionApproved))
        .await
    );
    let approved_topic = sub
        .events()
        .into_iter()
        .find(|(_, e)| e.kind == EventKind::ActionApproved)
        .map(|(t, _)| t)
        .expect("approved event");
    assert_eq!(
        approved_topic,
        format!(
            "aiopsd/test/incidents/{incident_id}/actions/{}/approved",
            a.id
        )
    );

    // The same message again is a replay; a fresh one for a decided
    // action is a conflict; b is denied by a good deny.
    send(good_bytes).await;
    send(serde_json::to_vec(&approval(a.id, Verdict::Deny, "nonce-late", now_ms())).expect("json"))
        .await;
    send(
        serde_json::to_vec(&approval(b.id, Verdict::Deny, "nonce-deny-b", now_ms())).expect("json"),
    )
    .await;
    assert!(
        eventually(WAIT, || count("replayed") == 1.0
            && count("already_decided") == 1.0
            && count("denied") == 1.0)
        .await,
        "{}",
        running.metrics.encode()
    );
    assert_eq!(
        store.get_action(a.id).expect("read").map(|x| x.state),
        Some(ActionState::Approved),
        "a replay or a late deny changes nothing"
    );
    assert_eq!(
        store.get_action(b.id).expect("read").map(|x| x.state),
        Some(ActionState::Denied)
    );
    pump.abort();
    running.stop().await;
}
