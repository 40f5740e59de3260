//! The log pipeline (src/logs/pipeline.rs): Elasticsearch (the wire-level
//! fake in tests/support/fake_elastic.rs, read by the real client) → template
//! counts and checkpoint in the SQLite store → template-rate signals → the
//! daemon's detection and incidents, with log evidence in the report.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use aiopsd::config::HumanDuration;
use aiopsd::incident::Store;
use aiopsd::logs::elastic::ElasticConfig;
use aiopsd::logs::metrics::LogMetrics;
use aiopsd::logs::pipeline::{LogPipeline, SOURCE_NAME};
use aiopsd::logs::signals::{LOG_ERROR_RATE, LOG_SIGNALS};
use aiopsd::signal::now_ms;
use serde_json::json;

use support::daemon::{incidents, Daemon};
use support::fake_elastic::{Doc, FakeElastic};
use support::fake_prometheus::{FakePrometheus, Point};
use support::within;

const MIN: i64 = 60_000;
const WAIT: Duration = Duration::from_secs(30);
/// 2026-11-25T00:00:00Z.
const T0: i64 = 1_795_564_800_000;

fn doc(id: String, t: i64, service: &str, level: &str, message: String) -> Doc {
    Doc {
        id,
        timestamp_ms: t,
        source: json!({
            "@timestamp": t,
            "message": message,
            "log": { "level": level },
            "service": { "name": service },
            "kubernetes": { "namespace": "shop" },
        }),
    }
}

/// `per_min` info lines a minute for `service` in `[from, until)`, a few
/// of them sharing a millisecond (the checkpoint's tiebreak matters).
fn steady(service: &str, from: i64, until: i64, per_min: i64) -> Vec<Doc> {
    let mut out = Vec::new();
    let mut t = from;
    while t < until {
        for i in 0..per_min {
            out.push(doc(
                format!("{service}-{t}-{i}"),
                t + (i / 2) * 1_000,
                service,
                "INFO",
                format!(
                    "GET /api/{service}/items/{} served in {} ms",
                    t % 977 + i,
                    3 + i % 7
                ),
            ));
        }
        t += MIN;
    }
    out
}

/// Failed logins (ERROR, with a password in clear) and rejected bearer
/// tokens (WARN) for `service` in `[from, until)`.
fn surge(service: &str, from: i64, until: i64, per_min: i64) -> Vec<Doc> {
    let mut out = Vec::new();
    let mut t = from;
    while t < until {
        for i in 0..per_min {
            out.push(doc(
                format!("{service}-err-{t}-{i}"),
                t + i * 1_500,
                service,
                "ERROR",
                format!("login failed for user u{i} password=hunter2 from 10.0.0.{i}"),
            ));
        }
        out.push(doc(
            format!("{service}-warn-{t}"),
            t + 30_000,
            service,
            "WARN",
            "upstream rejected Authorization: Bearer abcdef1234567890 for payments".into(),
        ));
        t += MIN;
    }
    out
}

/// Documents no template can come from: no message, a message that is
/// not a string.
fn malformed(t: i64) -> Vec<Doc> {
    vec![
        Doc {
            id: "bad-1".into(),
            timestamp_ms: t,
            source: json!({ "service": { "name": "cart" } }),
        },
        Doc {
            id: "bad-2".into(),
            timestamp_ms: t + 1,
            source: json!({ "message": { "text": "nested" }, "service": { "name": "cart" } }),
        },
    ]
}

fn es_config(url: &str) -> ElasticConfig {
    let mut c = ElasticConfig::new(url, "logs-*");
    c.page_size = 97;
    c.lag = HumanDuration(Duration::ZERO);
    c.backfill = HumanDuration(Duration::from_secs(2 * 3600));
    c.retention = HumanDuration(Duration::from_secs(3 * 3600));
    c.evidence_window = HumanDuration(Duration::from_secs(300));
    c.namespace_field = Some("kubernetes.namespace".into());
    c.retry_backoff = HumanDuration(Duration::from_millis(5));
    c
}

fn stored_lines(store: &Store) -> u64 {
    store
        .log_counts(i64::MIN, i64::MAX)
        .expect("counts")
        .iter()
        .map(|c| c.lines)
        .sum()
}

/// Counts and checkpoint are committed together: a pipeline started again
/// on the same store continues at the checkpoint (a document read before
/// the restart is not counted again, one indexed after it is counted
/// once), template ids survive the restart, and malformed documents are
/// skipped and counted.
#[tokio::test]
async fn restart_resumes_from_the_stored_checkpoint_without_double_counting() {
    aiopsd::install_crypto_provider();
    let fake = FakeElastic::start().await;
    let mut docs = steady("cart", T0, T0 + 30 * MIN, 12);
    docs.extend(surge("cart", T0 + 20 * MIN, T0 + 30 * MIN, 5));
    docs.extend(malformed(T0 + 5 * MIN));
    let good = docs.len() as u64 - 2;
    fake.add_docs(docs);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("aiopsd.db");
    let config = es_config(&fake.url());

    let store = Store::open(&path).expect("store");
    let metrics = LogMetrics::default();
    let mut first = LogPipeline::new(&config, store.clone(), metrics.clone()).expect("pipeline");
    let now = T0 + 30 * MIN;
    let out = within(WAIT, "first step", first.step(now))
        .await
        .expect("step");
    assert_eq!(out.read_error, None);
    assert_eq!(out.stats.documents, good);
    assert_eq!(stored_lines(&store), good);
    assert_eq!(metrics.lines(), good);
    assert_eq!(
        metrics.skipped("malformed"),
        2,
        "malformed documents are counted"
    );
    let names: Vec<&str> = out.batches.iter().map(|b| b.signal.as_str()).collect();
    assert_eq!(names, LOG_SIGNALS);
    let errors = &out.batches[0];
    assert_eq!(errors.signal, LOG_ERROR_RATE);
    assert_eq!(errors.until, now);
    let series = &errors.series[0];
    assert_eq!(
        series.key.to_string(),
        r#"log_error_rate{namespace="shop",service="cart"}"#,
        "the labels metric signals group by"
    );
    let per_bucket: Vec<f64> = series.samples.iter().map(|s| s.v).collect();
    assert_eq!(per_bucket.len(), 30);
    assert!(per_bucket[..20].iter().all(|&v| v == 0.0), "{per_bucket:?}");
    // 5 ERROR and 1 WARN line a minute.
    assert!(per_bucket[20..].iter().all(|&v| v == 6.0), "{per_bucket:?}");
    let templates_before = store.log_templates().expect("templates");
    assert!(
        templates_before
            .iter()
            .all(|t| !t.text.contains("hunter2")
                && !t.examples.iter().any(|e| e.contains("hunter2"))),
        "secrets are redacted before they are stored: {templates_before:?}"
    );
    drop(first);

    // Written while the daemon was down: counted by the next run, once.
    let more = steady("cart", T0 + 30 * MIN, T0 + 35 * MIN, 12);
    let added = more.len() as u64;
    fake.add_docs(more);
    let metrics = LogMetrics::default();
    let store = Store::open(&path).expect("reopen store");
    let mut second = LogPipeline::new(&config, store.clone(), metrics.clone()).expect("pipeline");
    let out = within(WAIT, "step after restart", second.step(T0 + 35 * MIN))
        .await
        .expect("step");
    assert_eq!(out.stats.documents, added, "only what was not read before");
    assert_eq!(stored_lines(&store), good + added);
    assert_eq!(metrics.skipped("malformed"), 0, "not read again");
    let searches = fake.searches();
    let last_from = searches
        .iter()
        .rev()
        .find(|s| s.get("search_after").is_none())
        .and_then(|s| s.pointer("/query/bool/filter/0/range/@timestamp/gte"))
        .and_then(serde_json::Value::as_i64);
    assert_eq!(last_from, Some(now), "resumed at the stored checkpoint");
    let templates_after = store.log_templates().expect("templates");
    for t in &templates_before {
        assert!(
            templates_after
                .iter()
                .any(|a| a.id == t.id && a.stream == t.stream),
            "template {} kept its id",
            t.id
        );
    }
    assert_eq!(
        templates_after.len(),
        templates_before.len(),
        "the same lines joined the restored templates: {templates_after:?}"
    );
    // The replay after a restart warms the detectors from the store.
    assert!(out.batches.iter().all(|b| b.backfill));
    assert_eq!(out.batches[0].series[0].samples.len(), 35);
}

fn listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], support::free_port()))
}

fn daemon_config(
    prometheus: &str,
    elastic: &str,
    dir: &std::path::Path,
    listen: SocketAddr,
) -> String {
    format!(
        r#"
cluster: e2e
server:
  listen: {listen}
store:
  path: {store}
prometheus:
  url: {prometheus}
  step: 30s
  backfill: 2h
  poll_interval: 1s
  lag: 0s
  timeout: 2s
signals:
  - name: error_ratio
    query: 'http_errors_ratio{{$selector}}'
    selectors: {{ namespace: shop }}
    direction: up
elasticsearch:
  url: {elastic}
  index: "logs-*"
  namespace_field: kubernetes.namespace
  page_size: 500
  poll_interval: 1s
  lag: 0s
  backfill: 2h
  retention: 3h
  evidence_window: 5m
  retry_backoff: 10ms
"#,
        store = dir.join("aiopsd.db").display()
    )
}

/// The end-to-end story of issue 10: a surge of failed logins in cart's
/// logs together with cart's error ratio rising is ONE incident, whose
/// report shows the log templates that changed (before/after counts) and
/// example lines with the password and the bearer token redacted. A
/// restart resumes the logs from the stored checkpoint and opens nothing
/// new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_surge_and_metric_anomaly_form_one_incident_with_log_evidence() {
    aiopsd::install_crypto_provider();
    let now = now_ms();
    let fault_from = now - now.rem_euclid(MIN) - 10 * MIN;
    let prometheus = FakePrometheus::start(move |_query, t| {
        let wiggle = ((t / 30_000) % 7) as f64 / 700.0;
        vec![
            Point::new(
                &[("namespace", "shop"), ("service", "cart")],
                if t >= fault_from {
                    0.2 + wiggle
                } else {
                    0.01 + wiggle / 5.0
                },
            ),
            Point::new(
                &[("namespace", "shop"), ("service", "catalog")],
                0.02 + wiggle / 5.0,
            ),
        ]
    })
    .await;
    let elastic = FakeElastic::start().await;
    let start = fault_from - 80 * MIN;
    // Logs keep coming while the test runs: the source reads up to "now",
    // and a service whose logs stopped would be an anomaly of its own.
    let end = now + 15 * MIN;
    let mut docs = steady("cart", start, end, 20);
    docs.extend(steady("catalog", start, end, 5));
    docs.extend(surge("cart", fault_from, end, 30));
    docs.extend(malformed(start + MIN));
    docs.sort_by_key(|d| d.timestamp_ms);
    elastic.add_docs(docs);

    let dir = tempfile::tempdir().expect("temp dir");
    let addr = listen();
    let yaml = daemon_config(&prometheus.url(), &elastic.url(), dir.path(), addr);
    let mut daemon = Daemon::start(dir.path(), &yaml, addr);
    daemon
        .wait_for("readiness", "/readyz", Duration::from_secs(60), |s, _| {
            s == 200
        })
        .await;
    let ready = daemon.get_json("/readyz").await;
    assert!(
        ready.to_string().contains(SOURCE_NAME),
        "the log source is part of readiness: {ready:#}"
    );

    let list = daemon
        .wait_for(
            "an incident",
            "/api/v1/incidents",
            Duration::from_secs(60),
            |s, body| s == 200 && body.contains("\"cart\""),
        )
        .await;
    let list: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    let id = incidents(&list)[0]["id"].as_i64().expect("id");

    let report = daemon
        .wait_for(
            "the report's Logs section",
            &format!("/api/v1/incidents/{id}/report.md"),
            Duration::from_secs(60),
            |s, body| s == 200 && body.contains("## Logs"),
        )
        .await;
    // Both signals, one incident.
    let list = daemon.get_json("/api/v1/incidents").await;
    let items = incidents(&list);
    assert_eq!(
        items.len(),
        1,
        "exactly one incident: {list:#}\n{}",
        daemon.log()
    );
    assert_eq!(items[0]["group"]["service"], "cart", "{list:#}");
    assert!(
        report.contains("error_ratio") && report.contains("log_error_rate"),
        "the metric and the log anomaly are in the same incident:\n{report}"
    );
    let logs = report
        .split("## Logs")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Logs section");
    let login = logs
        .lines()
        .find(|l| l.starts_with('|') && l.contains("login failed"))
        .unwrap_or_else(|| panic!("the failed-login template is listed:\n{report}"));
    // 30 a minute in the part of the 5-minute after-window (from one
    // bucket before the bucket of the start) that follows the fault; none
    // before.
    let opened_at = items[0]["opened_at"].as_str().expect("opened_at");
    let opened_at = humantime::parse_rfc3339(opened_at)
        .expect("RFC 3339")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let split = opened_at - opened_at.rem_euclid(MIN) - MIN;
    let surge_minutes = (split..split + 5 * MIN)
        .step_by(MIN as usize)
        .filter(|b| *b >= fault_from)
        .count();
    let expected = format!("| new | 0 | {} |", 30 * surge_minutes);
    assert!(
        login.contains(&expected),
        "{login} should contain {expected}\n{report}"
    );
    assert!(
        logs.contains("<redacted>"),
        "examples are shown redacted:\n{report}"
    );
    for secret in ["hunter2", "abcdef1234567890"] {
        assert!(
            !report.contains(secret),
            "{secret} leaked into the report:\n{report}"
        );
    }
    assert!(
        !logs.contains("GET /api/cart"),
        "steady templates are not evidence:\n{logs}"
    );
    let incident = daemon.get_json(&format!("/api/v1/incidents/{id}")).await;
    assert!(
        !incident.to_string().contains("hunter2"),
        "the API shows no secret either: {incident:#}"
    );

    let status = daemon.terminate();
    assert!(
        status.success(),
        "SIGTERM exits 0: {status:?}\n{}",
        daemon.log()
    );
    let searches_before = elastic.searches().len();
    let stopped_at = now_ms();

    let daemon = Daemon::start(dir.path(), &yaml, addr);
    daemon
        .wait_for(
            "readiness after restart",
            "/readyz",
            Duration::from_secs(60),
            |s, _| s == 200,
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first_after_restart = elastic.searches()[searches_before..]
        .iter()
        .find_map(|s| {
            s.pointer("/query/bool/filter/0/range/@timestamp/gte")
                .and_then(|v| v.as_i64())
        })
        .expect("a search after the restart");
    assert!(
        first_after_restart >= now - MIN && first_after_restart <= stopped_at,
        "the restart reads from its checkpoint, not from the backfill start \
         ({first_after_restart} vs stopped at {stopped_at})"
    );
    let list = daemon.get_json("/api/v1/incidents").await;
    assert_eq!(
        incidents(&list).len(),
        1,
        "no new incident after restart: {list:#}"
    );
    let metrics = daemon.get("/metrics").await.expect("metrics").1;
    assert_eq!(
        support::metric_value(&metrics, "aiopsd_incidents_opened_total"),
        Some(0.0),
        "the replayed history is not reported again: {metrics}\n{}",
        daemon.log()
    );
    let report = daemon
        .get(&format!("/api/v1/incidents/{id}/report.md"))
        .await
        .expect("report")
        .1;
    assert!(
        report.contains(&expected),
        "evidence survives the restart:\n{report}"
    );
}
