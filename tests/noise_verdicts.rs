//! End to end through the `aiopsd run` binary: people's verdicts and
//! learned suppression (issue 8), over the real webhook and REST API.
//!
//! - A "noise" verdict on an incident suppresses the next matching alert
//!   (same alertname and identity, another pod), which is listed with the
//!   verdict as its reason; revoking the verdict stops the suppression.
//! - An alert that history shows always resolves on its own is suppressed
//!   with the figures; when it keeps firing past `noise.learned.within`,
//!   the suppression is lifted and it opens an incident that says why.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use support::daemon::Daemon;
use support::fake_prometheus::{FakePrometheus, Point};

const TOKEN: &str = "noise-verdicts-token-0123456789";

/// A flat series: no anomalies, so only alerts make incidents here.
async fn prometheus() -> FakePrometheus {
    FakePrometheus::start(|_query, _t| {
        vec![Point::new(
            &[("service", "cart"), ("namespace", "shop")],
            1.0,
        )]
    })
    .await
}

fn config(listen: SocketAddr, store: &std::path::Path, prometheus: &str, noise: &str) -> String {
    format!(
        r#"
cluster: noise
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
    query: 'errors{{$selector}}'
noise:
{noise}
"#,
        store = store.display(),
    )
}

/// An Alertmanager (webhook version 4) delivery of one firing alert.
fn delivery(fingerprint: &str, pod: &str, starts_at: i64) -> String {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"CartSlow\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "aiopsd", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "CartSlow", "namespace": "shop", "service": "cart",
                       "pod": pod, "severity": "warning"},
            "annotations": {"summary": "p99 above 1s"},
            "startsAt": aiopsd::signal::format_ts(starts_at),
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fingerprint
        }]
    })
    .to_string()
}

async fn send(daemon: &Daemon, method: &str, path: &str, body: Option<String>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", daemon.base);
    let request = match method {
        "POST" => client.post(url),
        _ => client.get(url),
    }
    .bearer_auth(TOKEN)
    .timeout(Duration::from_secs(5));
    let request = match body {
        Some(b) => request.header("content-type", "application/json").body(b),
        None => request,
    };
    let response = request.send().await.expect("daemon answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `GET path` with the token; `None` while the daemon does not answer 200.
async fn try_get(daemon: &Daemon, path: &str) -> Option<Value> {
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

/// Polls `GET path` until `pick` finds something; panics with the daemon
/// log after `timeout`.
async fn wait_for<T>(
    daemon: &Daemon,
    what: &str,
    path: &str,
    timeout: Duration,
    pick: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = try_get(daemon, path).await.as_ref().and_then(&pick) {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; daemon log:\n{}",
                daemon.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn items(v: &Value) -> &[Value] {
    v["items"].as_array().map_or(&[], Vec::as_slice)
}

/// Issue 8: a "noise" verdict suppresses the next matching alert and is
/// shown as the reason; revoking it stops the suppression.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noise_verdict_suppresses_the_next_matching_alert_until_revoked() {
    aiopsd::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let prometheus = prometheus().await;
    let listen = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let yaml = config(
        listen,
        &dir.path().join("aiopsd.db"),
        &prometheus.url(),
        "  learned: { enabled: false }",
    );
    let daemon = Daemon::start(dir.path(), &yaml, listen);
    let now = aiopsd::signal::now_ms();

    let webhook = "/api/v1/alerts/alertmanager";
    let wait = Duration::from_secs(30);
    wait_for(&daemon, "the daemon", "/api/v1/incidents", wait, |_| {
        Some(())
    })
    .await;
    let (status, _) = send(
        &daemon,
        "POST",
        webhook,
        Some(delivery("f1", "cart-1", now)),
    )
    .await;
    assert_eq!(status, 200);
    let incident = wait_for(
        &daemon,
        "the first alert's incident",
        "/api/v1/incidents?state=open",
        wait,
        |v| items(v).first()?["id"].as_i64(),
    )
    .await;

    let verdict = json!({"verdict": "noise", "by": "alice", "reason": "cart is slow during the nightly reindex"});
    let (status, body) = send(
        &daemon,
        "POST",
        &format!("/api/v1/incidents/{incident}/verdicts"),
        Some(verdict.to_string()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let verdict_id = body["id"].as_i64().expect("verdict id");

    // The same alert on another pod: suppressed, with the verdict as reason.
    let (status, _) = send(
        &daemon,
        "POST",
        webhook,
        Some(delivery("f2", "cart-2", now + 1_000)),
    )
    .await;
    assert_eq!(status, 200);
    let suppression = wait_for(
        &daemon,
        "the verdict's suppression",
        "/api/v1/suppressions",
        wait,
        |v| items(v).first().cloned(),
    )
    .await;
    assert_eq!(suppression["reason"], "verdict", "{suppression}");
    assert_eq!(suppression["reference"], format!("verdict-{verdict_id}"));
    assert_eq!(suppression["verdict_id"], verdict_id);
    assert_eq!(suppression["fingerprint"], "f2");
    assert_eq!(suppression["created_by"], "alice");
    assert!(
        suppression["detail"]
            .as_str()
            .is_some_and(|d| d.contains("nightly reindex") && d.contains("CartSlow")),
        "{suppression}"
    );
    let (_, by_incident) = send(
        &daemon,
        "GET",
        &format!("/api/v1/incidents/{incident}/verdicts"),
        None,
    )
    .await;
    assert_eq!(
        by_incident["suppressions"][0]["fingerprint"], "f2",
        "{by_incident}"
    );
    let (_, suppressed) = send(&daemon, "GET", "/api/v1/alerts?suppressed=true", None).await;
    assert_eq!(items(&suppressed).len(), 1, "{suppressed}");

    // Revoked: the next matching alert is not suppressed; it joins the
    // incident.
    let revoke = json!({"by": "bob", "reason": "the reindex moved; this is real now"});
    let (status, body) = send(
        &daemon,
        "POST",
        &format!("/api/v1/verdicts/{verdict_id}/revoke"),
        Some(revoke.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(
        &daemon,
        "POST",
        webhook,
        Some(delivery("f3", "cart-3", now + 2_000)),
    )
    .await;
    assert_eq!(status, 200);
    wait_for(
        &daemon,
        "the third alert in the incident",
        &format!("/api/v1/incidents/{incident}"),
        wait,
        |v| {
            v["alerts"]
                .as_array()?
                .iter()
                .any(|a| a["fingerprint"] == "f3")
                .then_some(())
        },
    )
    .await;
    let (_, all) = send(&daemon, "GET", "/api/v1/suppressions", None).await;
    assert_eq!(items(&all).len(), 1, "nothing more suppressed: {all}");
    let (_, inc) = send(
        &daemon,
        "GET",
        &format!("/api/v1/incidents/{incident}"),
        None,
    )
    .await;
    let timeline = inc["timeline"].to_string();
    assert!(timeline.contains("revoked by bob"), "{timeline}");
}

/// An alert that always resolved on its own within minutes is suppressed
/// with the figures; when this episode keeps firing past
/// `noise.learned.within` it is un-suppressed and opens an incident that
/// says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learned_suppression_is_lifted_when_the_alert_keeps_firing() {
    use aiopsd::incident::{AlertStatus, NewAlert, Store};

    aiopsd::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let store_path = dir.path().join("aiopsd.db");
    let now = aiopsd::signal::now_ms();
    {
        // Five earlier episodes, each resolved within 20–40 seconds.
        let store = Store::open(&store_path).expect("store");
        for i in 0..5_i64 {
            let starts_at = now - (i + 1) * 3_600_000;
            let alert = NewAlert {
                fingerprint: format!("p{i}"),
                status: AlertStatus::Resolved,
                labels: [
                    ("alertname", "CartSlow"),
                    ("namespace", "shop"),
                    ("service", "cart"),
                    ("pod", "cart-1"),
                    ("severity", "warning"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                annotations: Default::default(),
                starts_at,
                ends_at: Some(starts_at + (20 + i * 5) * 1_000),
                generator_url: String::new(),
            };
            let stored = store
                .record_alerts("aiopsd", "{}", &[alert], starts_at)
                .expect("record");
            store
                .mark_alerts_processed(&[(stored[0].0.id, AlertStatus::Resolved)])
                .expect("processed");
        }
        store.checkpoint().expect("checkpoint");
    }
    let prometheus = prometheus().await;
    let listen = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let yaml = config(
        listen,
        &store_path,
        &prometheus.url(),
        "  learned: { within: 1m }",
    );
    let daemon = Daemon::start(dir.path(), &yaml, listen);
    let wait = Duration::from_secs(30);
    wait_for(&daemon, "the daemon", "/api/v1/incidents", wait, |_| {
        Some(())
    })
    .await;

    // Fired 45 s ago: within the minute the history allows.
    let started = aiopsd::signal::now_ms() - 45_000;
    let (status, _) = send(
        &daemon,
        "POST",
        "/api/v1/alerts/alertmanager",
        Some(delivery("c1", "cart-2", started)),
    )
    .await;
    assert_eq!(status, 200);
    let suppression = wait_for(
        &daemon,
        "the learned suppression",
        "/api/v1/suppressions",
        wait,
        |v| items(v).first().cloned(),
    )
    .await;
    assert_eq!(suppression["reason"], "learned", "{suppression}");
    assert!(
        suppression["detail"]
            .as_str()
            .is_some_and(|d| d.contains("resolved on its own 5/5 times within 1m")),
        "{suppression}"
    );
    let (_, open) = send(&daemon, "GET", "/api/v1/incidents?state=open", None).await;
    assert!(
        items(&open).is_empty(),
        "suppressed, no incident yet: {open}"
    );

    // Still firing a minute after it started: lifted, and an incident.
    let incident = wait_for(
        &daemon,
        "the un-suppressed alert's incident",
        "/api/v1/incidents?state=open",
        Duration::from_secs(45),
        |v| items(v).first()?["id"].as_i64(),
    )
    .await;
    let (_, inc) = send(
        &daemon,
        "GET",
        &format!("/api/v1/incidents/{incident}"),
        None,
    )
    .await;
    assert_eq!(inc["alerts"][0]["fingerprint"], "c1", "{inc}");
    let note = inc["timeline"]
        .as_array()
        .and_then(|t| t.iter().find(|e| e["kind"] == "unsuppressed"))
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        note.contains("still firing 1m after it started") && note.contains("5/5"),
        "{inc}"
    );
    let (_, all) = send(&daemon, "GET", "/api/v1/suppressions", None).await;
    assert!(
        items(&all)[0]["lifted_at"].is_i64(),
        "kept, marked lifted: {all}"
    );
}
