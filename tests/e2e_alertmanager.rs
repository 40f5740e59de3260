//! End to end: a real Prometheus alerting rule fires, a real Alertmanager
//! routes the alert with bearer auth to the `aiopsd run` binary's webhook,
//! and the alert opens an incident; when the series recovers, the resolved
//! notification resolves the alert and then the incident.
//!
//! Prometheus scrapes a test exporter served here (so the series can
//! recover on demand), evaluates the rule every second and sends alerts to
//! Alertmanager, which groups them without waiting (`group_wait: 0s`).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::daemon::Daemon;
use support::real_alertmanager::RealAlertmanager;
use support::real_prometheus::RealPrometheus;

const TOKEN: &str = "e2e-webhook-token-0123456789";

/// Serves `/metrics` with one gauge whose value the test sets.
async fn start_exporter(value: Arc<AtomicU64>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let value = value.load(Ordering::SeqCst);
            async move {
                format!(
                    "# TYPE aiopsd_e2e_errors gauge\n\
                     aiopsd_e2e_errors{{namespace=\"shop\",service=\"cart\"}} {value}\n"
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the exporter");
    let addr = listener.local_addr().expect("exporter address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// GET with the API token; `None` while the daemon does not answer.
async fn api(daemon: &Daemon, path: &str) -> Option<Value> {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", daemon.base))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    serde_json::from_str(&response.text().await.ok()?).ok()
}

/// Polls `probe` until it returns `Some`; panics with every log after `timeout`.
async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    logs: impl Fn() -> String,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\n{}", logs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_alert_routed_by_alertmanager_opens_and_resolves_an_incident() {
    aiopsd::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let errors = Arc::new(AtomicU64::new(3));
    let exporter = start_exporter(Arc::clone(&errors)).await;
    let listen = SocketAddr::from(([127, 0, 0, 1], support::free_port()));

    let alertmanager_yaml = format!(
        r#"
route:
  receiver: aiopsd
  group_by: [alertname, namespace, service]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: aiopsd
    webhook_configs:
      - url: http://{listen}/api/v1/alerts/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {TOKEN}
"#
    );
    let alertmanager =
        tokio::task::spawn_blocking(move || RealAlertmanager::start(&alertmanager_yaml))
            .await
            .expect("start alertmanager");

    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        r#"
groups:
  - name: e2e
    interval: 1s
    rules:
      - alert: CartErrors
        expr: aiopsd_e2e_errors > 0
        for: 0s
        labels:
          severity: critical
        annotations:
          summary: cart answers with errors
      # Always firing; silenced in aiopsd's config (noise.silences).
      - alert: BatchSlow
        expr: vector(1)
        for: 0s
        labels:
          namespace: batch
          service: jobs
"#,
    )
    .expect("write rules");
    let prometheus_yaml = dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus_yaml,
        format!(
            r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{rules}"]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:{am_port}"]
scrape_configs:
  - job_name: exporter
    static_configs:
      - targets: ["{exporter}"]
"#,
            rules = rules.display(),
            am_port = alertmanager.port(),
        ),
    )
    .expect("write prometheus.yml");
    let prometheus =
        tokio::task::spawn_blocking(move || RealPrometheus::start_with_config(&prometheus_yaml))
            .await
            .expect("start prometheus");

    // aiopsd also watches the series through Prometheus (its signals' data
    // is the clock that resolves an incident once its alerts are resolved).
    let config = format!(
        r#"
cluster: e2e
server:
  listen: {listen}
  api_token: {TOKEN}
store:
  path: {store}
prometheus:
  url: {prometheus}
  step: 1s
  backfill: 0s
  poll_interval: 1s
  lag: 0s
  timeout: 2s
incidents:
  resolve_after: 2s
noise:
  silences:
    - matchers: ['namespace=batch', 'alertname=~Batch.*']
      created_by: e2e
      comment: batch jobs are slow by design
signals:
  - name: errors
    query: 'sum by (namespace, service) (aiopsd_e2e_errors{{$selector}})'
    selectors: {{ namespace: shop }}
"#,
        store = dir.path().join("aiopsd.db").display(),
        prometheus = prometheus.url(),
    );
    let daemon = Daemon::start(dir.path(), &config, listen);
    let logs = || {
        format!(
            "--- aiopsd ---\n{}\n--- alertmanager ---\n{}\n--- prometheus ---\n{}",
            daemon.log(),
            alertmanager.log(),
            prometheus.log()
        )
    };

    // The rule fires; Alertmanager delivers; an incident opens with the
    // alert as its member.
    let id = wait_for(
        "an open incident for cart",
        Duration::from_secs(90),
        logs,
        async || {
            let list = api(&daemon, "/api/v1/incidents?state=open&service=cart").await?;
            list["items"].as_array()?.first()?["id"].as_i64()
        },
    )
    .await;
    let incident = api(&daemon, &format!("/api/v1/incidents/{id}"))
        .await
        .expect("the incident");
    let alerts = incident["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{incident}");
    assert_eq!(alerts[0]["name"], "CartErrors");
    assert_eq!(alerts[0]["status"], "firing");
    assert_eq!(alerts[0]["labels"]["namespace"], "shop");
    assert_eq!(
        alerts[0]["annotations"]["summary"],
        "cart answers with errors"
    );
    assert_eq!(
        incident["severity"], "critical",
        "the rule's severity label"
    );
    assert_eq!(incident["group"]["service"], "cart");

    // The series recovers: the rule resolves, Alertmanager sends the
    // resolved notification, the alert is resolved, and after
    // `resolve_after` so is the incident.
    errors.store(0, Ordering::SeqCst);
    let resolved = wait_for(
        "the incident resolved",
        Duration::from_secs(90),
        logs,
        async || {
            let incident = api(&daemon, &format!("/api/v1/incidents/{id}")).await?;
            (incident["state"] == "resolved").then_some(incident)
        },
    )
    .await;
    assert_eq!(resolved["alerts"][0]["status"], "resolved", "{resolved}");
    assert!(resolved["alerts"][0]["ends_at"].is_i64(), "{resolved}");
    let report = reqwest::Client::new()
        .get(format!("{}/api/v1/incidents/{id}/report.md", daemon.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("report")
        .text()
        .await
        .expect("report text");
    assert!(report.contains("## Alerts"), "{report}");
    assert!(report.contains("`CartErrors` | resolved"), "{report}");

    let (status, metrics) = daemon.get("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    let firing =
        support::metric_value(&metrics, r#"aiopsd_alerts_received_total{status="firing"}"#);
    let resolved = support::metric_value(
        &metrics,
        r#"aiopsd_alerts_received_total{status="resolved"}"#,
    );
    assert!(firing.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(resolved.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(!daemon.log().contains(TOKEN), "the token was logged");
    // The silenced alert was delivered too: stored as suppressed, with the
    // silence as its reason, and it opened no incident.
    let suppression = wait_for(
        "the silenced alert listed as suppressed",
        Duration::from_secs(60),
        logs,
        async || {
            let list = api(&daemon, "/api/v1/alerts?suppressed=true").await?;
            let first = list["items"].as_array()?.first()?.clone();
            Some(first)
        },
    )
    .await;
    assert_eq!(suppression["alertname"], "BatchSlow", "{suppression}");
    assert_eq!(
        suppression["suppression"]["reference"], "config-0",
        "{suppression}"
    );
    let (_, metrics) = daemon.get("/metrics").await.expect("metrics");
    assert!(
        support::metric_value(
            &metrics,
            r#"aiopsd_alerts_suppressed_total{reason="silence"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    // Nothing else opened an incident (one alert, one group; the silenced
    // one opened none).
    let all = api(&daemon, "/api/v1/incidents").await.expect("list");
    assert_eq!(all["items"].as_array().map(Vec::len), Some(1), "{all}");
}

/// Crash safety: an alert the webhook stored (and answered 200 for) but the
/// incident stage never applied — the daemon was killed in between — is
/// applied when the daemon starts again, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_but_unapplied_alerts_are_replayed_on_start() {
    use aiopsd::incident::{AlertStatus, NewAlert, Store};

    aiopsd::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let store_path = dir.path().join("aiopsd.db");
    let starts_at = aiopsd::signal::now_ms() - 60_000;
    {
        // What the webhook leaves behind when the process dies right after
        // its 200: the alert row, not yet processed.
        let store = Store::open(&store_path).expect("store");
        let alert = NewAlert {
            fingerprint: "0123456789abcdef".into(),
            status: AlertStatus::Firing,
            labels: [
                ("alertname", "CartDown"),
                ("namespace", "shop"),
                ("service", "cart"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            annotations: Default::default(),
            starts_at,
            ends_at: None,
            generator_url: String::new(),
        };
        store
            .record_alerts("aiopsd", "{}", &[alert], starts_at)
            .expect("record");
        store.checkpoint().expect("checkpoint");
    }
    let prometheus = tokio::task::spawn_blocking(RealPrometheus::start)
        .await
        .expect("start prometheus");
    let listen = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let config = format!(
        r#"
cluster: e2e
server:
  listen: {listen}
  api_token: {TOKEN}
store:
  path: {store}
prometheus:
  url: {prometheus}
  step: 1s
  backfill: 0s
  poll_interval: 1s
  lag: 0s
signals:
  - name: errors
    query: 'aiopsd_e2e_errors{{$selector}}'
"#,
        store = store_path.display(),
        prometheus = prometheus.url(),
    );
    let mut daemon = Daemon::start(dir.path(), &config, listen);
    let logs = || daemon.log();
    let id = wait_for(
        "the replayed alert's incident",
        Duration::from_secs(30),
        logs,
        async || {
            let list = api(&daemon, "/api/v1/incidents?state=open&service=cart").await?;
            list["items"].as_array()?.first()?["id"].as_i64()
        },
    )
    .await;
    let incident = api(&daemon, &format!("/api/v1/incidents/{id}"))
        .await
        .expect("the incident");
    assert_eq!(incident["alerts"][0]["name"], "CartDown", "{incident}");
    assert_eq!(
        incident["opened_at"].as_i64(),
        Some(starts_at),
        "since the alert started"
    );
    assert!(daemon.terminate().success(), "{}", daemon.log());

    // Applied and marked in one transaction: a second start adds nothing.
    let store = Store::open(&store_path).expect("reopen");
    let (_, processed) = store
        .alert("0123456789abcdef", starts_at)
        .expect("read")
        .expect("stored");
    assert!(processed);
    assert!(store.unprocessed_alerts(10).expect("list").is_empty());
    let open = store.open_incidents().expect("open incidents");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].alerts.len(), 1);
}
