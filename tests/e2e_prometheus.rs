//! End to end: the `aiopsd run` binary against a real Prometheus (Debian
//! package) and against a wire-level Prometheus that fails on demand.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use aiopsd::signal::{format_ts, now_ms};
use support::daemon::{incidents, Daemon};
use support::fake_prometheus::{FakePrometheus, Mode, Point};
use support::openmetrics::{Family, Series};
use support::real_prometheus::RealPrometheus;

const STEP: i64 = 30_000;
const MIN: i64 = 60_000;

fn listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], support::free_port()))
}

/// Small deterministic wiggle so the series has realistic noise.
fn wiggle(t: i64) -> f64 {
    ((t / STEP) % 7) as f64 / 7.0 - 0.5
}

/// A daemon config; `step` bounds how quickly an outage is noticed (the
/// source queries once per completed step).
fn config(
    prometheus_url: &str,
    dir: &std::path::Path,
    listen: SocketAddr,
    backfill: &str,
    step: &str,
) -> String {
    format!(
        r#"
cluster: e2e
server:
  listen: {listen}
store:
  path: {store}
prometheus:
  url: {prometheus_url}
  step: {step}
  backfill: {backfill}
  poll_interval: 1s
  lag: 0s
  timeout: 2s
  retry: {{ attempts: 2, initial_backoff: 50ms, max_backoff: 200ms }}
detection:
  models_path: {models}
signals:
  - name: error_ratio
    query: 'http_errors_ratio{{$selector}}'
    selectors: {{ namespace: shop }}
    direction: up
"#,
        store = dir.join("aiopsd.db").display(),
        models = dir.join("detector-state.json").display()
    )
}

/// The story of the foundation issue: a known anomaly in real Prometheus
/// data becomes one incident with the right service and time, the daemon
/// stops cleanly on SIGTERM, and a restart neither loses the incident nor
/// opens a duplicate (although its backfill re-reads the anomaly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_anomaly_becomes_one_incident_that_survives_restart() {
    aiopsd::install_crypto_provider();
    let now = now_ms();
    let end = now - now.rem_euclid(STEP) - 2 * MIN;
    let start = end - 3 * 60 * MIN;
    // The fault lasts until the end of the data, so the incident is still
    // open when the daemon restarts.
    let fault_from = end - 20 * MIN;
    let family = Family::gauge(
        "http_errors_ratio",
        "Share of requests answered with 5xx.",
        vec![
            Series::new(&[("namespace", "shop"), ("service", "cart")]).sampled(
                start,
                end,
                STEP,
                |t| {
                    if t >= fault_from {
                        0.2 + 0.01 * wiggle(t)
                    } else {
                        0.01 + 0.002 * wiggle(t)
                    }
                },
            ),
            Series::new(&[("namespace", "shop"), ("service", "catalog")]).sampled(
                start,
                end,
                STEP,
                |t| 0.02 + 0.004 * wiggle(t),
            ),
            // Outside the selector: must not be read at all.
            Series::new(&[("namespace", "other"), ("service", "cart")]).sampled(
                start,
                end,
                STEP,
                |t| if t >= fault_from { 0.9 } else { 0.01 },
            ),
        ],
    );
    let prometheus = tokio::task::spawn_blocking(move || RealPrometheus::start_with(&[family]))
        .await
        .expect("start Prometheus");
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = listen();
    let yaml = config(&prometheus.url(), dir.path(), addr, "4h", "30s");

    let mut daemon = Daemon::start(dir.path(), &yaml, addr);
    daemon
        .wait_for(
            "readiness after backfill",
            "/readyz",
            Duration::from_secs(60),
            |s, _| s == 200,
        )
        .await;
    let list = daemon.get_json("/api/v1/incidents").await;
    let items = incidents(&list);
    assert_eq!(
        items.len(),
        1,
        "exactly one incident: {list:#}\n{}",
        daemon.log()
    );
    let incident = &items[0];
    assert_eq!(incident["group"]["service"], "cart", "{incident:#}");
    assert_eq!(incident["group"]["namespace"], "shop", "{incident:#}");
    assert_eq!(incident["state"], "open", "{incident:#}");
    // Confirmation needs two anomalous samples: opened one step after the fault began.
    assert_eq!(
        incident["opened_at"],
        format_ts(fault_from + STEP),
        "{incident:#}"
    );
    let id = incident["id"].as_i64().expect("numeric id");

    let report = daemon
        .wait_for(
            "the report",
            &format!("/api/v1/incidents/{id}/report.md"),
            Duration::from_secs(5),
            |s, _| s == 200,
        )
        .await;
    assert!(
        report.contains("cart") && report.contains("error_ratio"),
        "{report}"
    );

    let status = daemon.terminate();
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status:?}\n{}",
        daemon.log()
    );
    assert!(daemon.log().contains("aiopsd stopped."), "{}", daemon.log());
    // Fitted detector state was saved at shutdown, so the restart below
    // needs no new warm-up.
    assert!(dir.path().join("detector-state.json").exists());

    // Restart on the same store: the backfill re-reads the anomaly, but it
    // is not reported again and the open incident is taken over.
    let daemon = Daemon::start(dir.path(), &yaml, addr);
    daemon
        .wait_for(
            "readiness after restart",
            "/readyz",
            Duration::from_secs(60),
            |s, _| s == 200,
        )
        .await;
    // A few live polls after the backfill.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let list = daemon.get_json("/api/v1/incidents").await;
    let items = incidents(&list);
    assert_eq!(
        items.len(),
        1,
        "no duplicate after restart: {list:#}\n{}",
        daemon.log()
    );
    assert_eq!(items[0]["id"].as_i64(), Some(id));
    assert_eq!(items[0]["opened_at"], format_ts(fault_from + STEP));
    let metrics = daemon.get("/metrics").await.expect("metrics").1;
    assert_eq!(
        support::metric_value(&metrics, "aiopsd_incidents_opened_total"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        support::metric_value(&metrics, "aiopsd_incidents_open"),
        Some(1.0),
        "{metrics}"
    );
    assert!(daemon
        .log()
        .contains("Resuming open incidents from the store."));
    let log = daemon.log();
    assert!(
        log.contains("Restored saved detector state.") && !log.contains("restored=0"),
        "{log}"
    );
    drop(prometheus);
}

/// Prometheus down, slow or erroring: the daemon stays up, /readyz says why,
/// poll errors are counted, and everything recovers when Prometheus does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_survives_prometheus_outages_and_recovers() {
    aiopsd::install_crypto_provider();
    let fake = FakePrometheus::start(|_query, t| {
        vec![Point::new(
            &[("namespace", "shop"), ("service", "cart")],
            0.01 + 0.002 * wiggle(t),
        )]
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = listen();
    let mut daemon = Daemon::start(
        dir.path(),
        &config(&fake.url(), dir.path(), addr, "10m", "1s"),
        addr,
    );
    daemon
        .wait_for(
            "initial readiness",
            "/readyz",
            Duration::from_secs(30),
            |s, _| s == 200,
        )
        .await;

    for (mode, cause) in [
        (Mode::Down, "unavailable"),
        (Mode::Slow(Duration::from_secs(5)), "timed out"),
        (Mode::Error, "execution"),
    ] {
        fake.set_mode(mode);
        let body = daemon
            .wait_for(
                &format!("unready in {mode:?}"),
                "/readyz",
                Duration::from_secs(30),
                |s, _| s == 503,
            )
            .await;
        assert!(
            body.contains("source prometheus is down"),
            "{mode:?}: {body}"
        );
        assert!(
            body.to_lowercase().contains(cause),
            "{mode:?} should say {cause:?}: {body}"
        );
        assert!(daemon.is_running(), "daemon must stay up in {mode:?}");
        // The API keeps serving what is stored.
        assert_eq!(
            daemon.get("/api/v1/incidents").await.map(|r| r.0),
            Some(200)
        );

        fake.set_mode(Mode::Healthy);
        daemon
            .wait_for(
                &format!("recovery after {mode:?}"),
                "/readyz",
                Duration::from_secs(30),
                |s, _| s == 200,
            )
            .await;
    }
    let metrics = daemon.get("/metrics").await.expect("metrics").1;
    let errors = support::metric_value(
        &metrics,
        r#"aiopsd_poll_errors_total{signal="error_ratio"}"#,
    )
    .expect("poll error counter");
    assert!(errors >= 3.0, "{metrics}");
    assert_eq!(
        support::metric_value(&metrics, r#"aiopsd_source_up{source="prometheus"}"#),
        Some(1.0)
    );
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}");
}
