//! The demo's alert storm through the real path: the `aiopsd run` binary
//! (router, store on disk, incident stage) with a wire-level fake
//! Prometheus as its source, the storm POSTed to its Alertmanager webhook
//! over HTTP with the bearer token, and the outcome read back through the
//! API: how many alerts became how many incidents, and what was suppressed
//! and why.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use aiopsd::signal::now_ms;
use aiopsd::sources::alert_storm::{alert_storm, feed};
use aiopsd::sources::sim::Fault;
use support::daemon::Daemon;
use support::fake_prometheus::FakePrometheus;

const TOKEN: &str = "storm-test-token-0123456789";

/// GET with the API token; panics (with the daemon's log) unless 200.
async fn api_get(daemon: &Daemon, path: &str) -> serde_json::Value {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", daemon.base))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", daemon.log()));
    assert_eq!(response.status(), 200, "GET {path}");
    let body = response.text().await.expect("body");
    serde_json::from_str(&body).expect("JSON")
}

#[tokio::test]
async fn an_alert_storm_becomes_a_few_incidents_with_suppressions_explained() {
    aiopsd::install_crypto_provider();
    // A source with no data: the incidents come from the alerts alone.
    let prometheus = FakePrometheus::start(|_query, _t| Vec::new()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    // resolve_after is long so that no incident resolves between two
    // deliveries of the storm (its alerts lie up to 70 minutes in the
    // past); what resolution does is tested elsewhere.
    let config = format!(
        r#"
cluster: storm
server:
  listen: {listen}
  api_token: {TOKEN}
store:
  path: {store}
prometheus:
  url: {url}
  step: 1s
  backfill: 0s
  poll_interval: 1s
  lag: 0s
incidents:
  resolve_after: 24h
signals:
  - name: errors
    query: 'errors_total{{$selector}}'
"#,
        store = dir.path().join("aiopsd.db").display(),
        url = prometheus.url(),
    );
    let daemon = Daemon::start(dir.path(), &config, listen);
    daemon
        .wait_for(
            "the daemon's API",
            "/healthz",
            Duration::from_secs(30),
            |s, _| s == 200,
        )
        .await;

    let now = now_ms();
    let fault = Fault {
        service: "checkout".into(),
        namespace: "demo".into(),
        start: now - 2 * 3_600_000,
        end: now - 3_600_000,
        description: "checkout errors".into(),
    };
    let storm = alert_storm(&fault);
    let counts = feed(&daemon.base, Some(TOKEN), &storm, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("feeding the storm failed: {e}\n{}", daemon.log()));

    // What was delivered (the storm's shape, see src/sources/alert_storm.rs):
    // 58 notifications carrying 75 alerts, 12 distinct episodes; the
    // webhook answered 56 of them as repeats (75 − 12 new − 7 resolutions).
    assert_eq!(counts.notifications, storm.notifications.len());
    assert_eq!(counts.notifications, 58);
    assert_eq!(counts.alerts_received, 75);
    assert_eq!(counts.episodes, 12);
    assert_eq!(counts.deduplicated, 56);

    // What aiopsd made of it: the five alerts on checkout (errors,
    // latency, three crash-looping pods) are one incident; the four
    // episodes of the flapping catalog alert are one incident with flap
    // count 4; the info-level job alert and the node alert stand alone;
    // the replication lag during the drill is suppressed by the silence.
    assert_eq!(
        counts.suppressed.get("silence"),
        Some(&1),
        "{counts:?}\n{}",
        counts.summary()
    );
    assert_eq!(counts.suppressed.values().sum::<usize>(), 1, "{counts:?}");
    assert_eq!(counts.incidents, 4, "{counts:?}");
    assert_eq!(counts.max_flap_count, 4, "{counts:?}");
    assert_eq!(counts.merged_with_anomalies, 0, "no anomalies in this test");

    // The same, as the API shows it to a person.
    let list = api_get(&daemon, "/api/v1/incidents?limit=100").await;
    let incidents = list["items"].as_array().expect("items").clone();
    let checkout = incidents
        .iter()
        .find(|i| i["group"]["service"] == "checkout")
        .expect("a checkout incident");
    let id = checkout["id"].as_i64().expect("id");
    let full = api_get(&daemon, &format!("/api/v1/incidents/{id}")).await;
    let members = full["alerts"].as_array().expect("alerts");
    assert_eq!(members.len(), 5, "{full}");
    assert_eq!(full["severity"], "critical", "the critical alert raised it");
    assert!(
        !incidents
            .iter()
            .any(|i| i["group"]["service"] == "orders-db"),
        "the silenced alert opened no incident"
    );
    let summary = counts.summary();
    assert!(
        summary.starts_with("75 alerts in 58 notifications → 12 episodes"),
        "{summary}"
    );
}
