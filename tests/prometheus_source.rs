//! The Prometheus source driven through the real prometheus-http-query
//! client: against the real Prometheus (Debian package) preloaded with a
//! known anomaly, and against the wire-level fake for failure modes.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aiopsd::config::{HumanDuration, PrometheusConfig, RetryConfig, SignalConfig};
use aiopsd::signal::{now_ms, Direction, SeriesBatch, TimestampMs};
use aiopsd::sources::prometheus::{PrometheusSource, SOURCE_NAME};
use aiopsd::sources::promql::{QueryTemplate, Selector};
use aiopsd::telemetry::{Health, Metrics};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use support::fake_prometheus::{FakePrometheus, Mode, Point};
use support::openmetrics::{step_anomaly, Family, Series};
use support::real_prometheus::RealPrometheus;
use support::{eventually, metric_value, within};

const WAIT: Duration = Duration::from_secs(20);

fn secs(s: u64) -> HumanDuration {
    HumanDuration(Duration::from_secs(s))
}

fn millis(ms: u64) -> HumanDuration {
    HumanDuration(Duration::from_millis(ms))
}

/// Fast settings for the fake server: 1s steps, no lag, polls every 100ms.
fn fast_config(url: &str) -> PrometheusConfig {
    PrometheusConfig {
        url: url.into(),
        // Generous: the machine may be busy compiling; Slow mode sleeps longer.
        timeout: secs(1),
        poll_interval: millis(100),
        step: secs(1),
        backfill: secs(20),
        lag: secs(0),
        retry: RetryConfig {
            attempts: 2,
            initial_backoff: millis(20),
            max_backoff: millis(50),
        },
    }
}

fn signal(
    name: &str,
    query: &str,
    selectors: &[(&str, &str)],
    labels: &[(&str, &str)],
) -> SignalConfig {
    SignalConfig {
        name: name.into(),
        query: QueryTemplate::new(query),
        selectors: Selector::new(
            selectors
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .expect("valid selector"),
        direction: Direction::Up,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        detector: None,
        preset: None,
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A source task under test, with its channel, metrics and health.
struct Running {
    rx: mpsc::Receiver<SeriesBatch>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    /// Everything received so far.
    batches: Vec<SeriesBatch>,
}

fn start(config: &PrometheusConfig, signals: &[SignalConfig]) -> Running {
    let source = PrometheusSource::new(config, signals).expect("valid source config");
    let (tx, rx) = mpsc::channel(64);
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();
    // Only the source decides readiness in these tests.
    health.set_pipeline_running(true);
    health.set_store_ok(true);
    // `run` registers the source itself, but only once the task is first
    // polled; until then Health knows no source and reports ready. Register
    // up front (idempotent) so "ready" below always means the source's verdict.
    health.register_source(SOURCE_NAME);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(source.run(tx, metrics.clone(), health.clone(), cancel.clone()));
    Running {
        rx,
        metrics,
        health,
        cancel,
        task,
        batches: Vec::new(),
    }
}

impl Running {
    /// Moves what the channel holds into `batches` (keeps the source from blocking).
    fn drain(&mut self) {
        while let Ok(batch) = self.rx.try_recv() {
            self.batches.push(batch);
        }
    }

    fn readiness(&self) -> (bool, Vec<String>) {
        let (ready, reasons, _) = self.health.readiness();
        (ready, reasons)
    }

    /// Waits (draining) until `condition` holds; panics with the health state otherwise.
    async fn wait_for(&mut self, what: &str, mut condition: impl FnMut(&Running) -> bool) {
        let ok = eventually(WAIT, || {
            self.drain();
            condition(self)
        })
        .await;
        assert!(
            ok,
            "timed out waiting for {what}; health: {:?}",
            self.readiness()
        );
    }

    fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics.encode(), series).unwrap_or(0.0)
    }

    /// Cancels and waits for the task to end.
    async fn stop(mut self) -> Vec<SeriesBatch> {
        self.cancel.cancel();
        within(
            Duration::from_secs(5),
            "the source to stop on cancel",
            &mut self.task,
        )
        .await
        .expect("source task did not panic");
        self.drain();
        self.batches
    }
}

/// Every sample timestamp of `signal`'s series with `key_labels`, across batches.
fn timestamps(batches: &[SeriesBatch], key_labels: &BTreeMap<String, String>) -> Vec<TimestampMs> {
    batches
        .iter()
        .flat_map(|b| &b.series)
        .filter(|s| &s.key.labels == key_labels)
        .flat_map(|s| s.samples.iter().map(|x| x.t))
        .collect()
}

/// Asserts the batches of one signal read consecutive, non-overlapping
/// ranges: each batch's samples lie in (previous until, until].
fn assert_contiguous(batches: &[SeriesBatch], step: i64) {
    for pair in batches.windows(2) {
        assert!(
            pair[1].until > pair[0].until,
            "watermark went back: {} then {}",
            pair[0].until,
            pair[1].until
        );
        for series in &pair[1].series {
            for s in &series.samples {
                assert!(
                    s.t > pair[0].until && s.t <= pair[1].until,
                    "sample at {} outside ({}, {}]",
                    s.t,
                    pair[0].until,
                    pair[1].until
                );
            }
        }
    }
    for b in batches {
        assert_eq!(b.until % step, 0, "unaligned watermark {}", b.until);
    }
}

/// Asserts `ts` is exactly every step from its first to its last element.
fn assert_no_gaps(ts: &[TimestampMs], step: i64) {
    assert!(!ts.is_empty(), "no samples");
    for pair in ts.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            step,
            "gap or duplicate between {} and {}",
            pair[0],
            pair[1]
        );
    }
}

// ---------------------------------------------------------------- real Prometheus

/// The real server, backfilled with a step anomaly on `cart` and a second
/// service that the cart signal's selector must exclude.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_backfill_delivers_the_anomaly_with_labels_and_selector_applies() {
    aiopsd::install_crypto_provider();
    const STEP: i64 = 30_000;
    let now = now_ms();
    let data_start = now - 3 * 3600 * 1000 - (now % STEP);
    let data_end = now - 60_000 - (now % STEP);
    let anomaly_from = data_end - 40 * 60_000;
    let anomaly_to = anomaly_from + 20 * 60_000; // 40 steps
    let cart_value = step_anomaly(0.01, 0.25, anomaly_from, anomaly_to);
    let prometheus = RealPrometheus::start_with(&[Family::gauge(
        "http_errors_ratio",
        "Share of requests answered with 5xx.",
        vec![
            Series::new(&[("namespace", "shop"), ("service", "cart")]).sampled(
                data_start,
                data_end,
                STEP,
                &cart_value,
            ),
            Series::new(&[("namespace", "shop"), ("service", "checkout")]).sampled(
                data_start,
                data_end,
                STEP,
                |_| 0.5,
            ),
        ],
    )]);

    let config = PrometheusConfig {
        url: prometheus.url(),
        timeout: secs(10),
        // Only the backfill is under test; the first poll is an hour away.
        poll_interval: secs(3600),
        step: secs(30),
        backfill: secs(2 * 3600),
        lag: secs(30),
        retry: RetryConfig::default(),
    };
    let signals = [
        signal(
            "cart_errors",
            "http_errors_ratio{$selector}",
            &[("namespace", "shop"), ("service", "cart")],
            &[("team", "payments")],
        ),
        signal(
            "checkout_errors",
            "http_errors_ratio{$selector}",
            &[("service", "checkout")],
            &[],
        ),
    ];
    // The read ends at "now - lag" as the source sees it: bound it by the
    // clock around the run, not by `now` above (starting Prometheus can
    // take a while on a loaded machine).
    let started = now_ms();
    let mut run = start(&config, &signals);
    run.wait_for("backfill of both signals", |r| r.readiness().0)
        .await;
    let batches = run.stop().await;
    let stopped = now_ms();

    let cart: Vec<&SeriesBatch> = batches
        .iter()
        .filter(|b| b.signal == "cart_errors")
        .collect();
    assert_eq!(cart.len(), 1, "2h at 30s is one query; got {batches:?}");
    let batch = cart[0];
    assert!(batch.backfill, "start-up reads are marked backfill");
    assert_eq!(batch.until % STEP, 0);
    assert!(
        batch.until <= stopped - 30_000 && batch.until > started - 30_000 - STEP,
        "until {}",
        batch.until
    );
    assert_eq!(
        batch.series.len(),
        1,
        "the selector admits only service=cart: {:?}",
        batch
            .series
            .iter()
            .map(|s| s.key.to_string())
            .collect::<Vec<_>>()
    );
    let series = &batch.series[0];
    assert_eq!(series.key.signal, "cart_errors");
    assert_eq!(
        series.key.labels,
        labels(&[
            ("namespace", "shop"),
            ("service", "cart"),
            ("team", "payments")
        ])
    );
    let ts: Vec<TimestampMs> = series.samples.iter().map(|s| s.t).collect();
    assert_no_gaps(&ts, STEP);
    assert_eq!(
        ts[0],
        batch.until - 2 * 3600 * 1000,
        "backfill reaches back exactly 2h"
    );
    assert_eq!(*ts.last().expect("samples"), batch.until);
    for s in &series.samples {
        // Past the last sample Prometheus repeats it (5m lookback).
        let expected = cart_value(s.t.min(data_end));
        assert_eq!(
            s.v,
            expected,
            "value at {} ({} min before data end)",
            s.t,
            (data_end - s.t) / 60_000
        );
    }
    let anomalous: Vec<TimestampMs> = series
        .samples
        .iter()
        .filter(|s| s.v == 0.25)
        .map(|s| s.t)
        .collect();
    assert_eq!(anomalous.len(), 40);
    assert_eq!(anomalous[0], anomaly_from);
    assert_eq!(*anomalous.last().expect("anomaly"), anomaly_to - STEP);

    // The other signal gets the other service, so the exclusion above is the selector's doing.
    let checkout: Vec<&SeriesBatch> = batches
        .iter()
        .filter(|b| b.signal == "checkout_errors")
        .collect();
    assert_eq!(checkout.len(), 1);
    let keys: Vec<String> = checkout[0]
        .series
        .iter()
        .map(|s| s.key.to_string())
        .collect();
    assert_eq!(
        keys,
        vec![r#"checkout_errors{namespace="shop",service="checkout"}"#.to_string()]
    );
    assert!(checkout[0].series[0].samples.iter().all(|s| s.v == 0.5));
    drop(prometheus);
}

// ---------------------------------------------------------------- failure modes

fn cart_point(t: i64) -> Vec<Point> {
    vec![Point::new(
        &[("namespace", "shop"), ("service", "cart")],
        (t / 1000 % 60) as f64,
    )]
}

fn cart_signal() -> SignalConfig {
    signal(
        "errors",
        "http_errors_ratio{$selector}",
        &[("namespace", "shop"), ("service", "cart")],
        &[],
    )
}

/// Healthy → `mode` → healthy again: not ready with a reason naming the
/// source and `expect_reason` while failing, errors counted, the task keeps
/// running, and after recovery batches flow with the outage's gap filled.
async fn survives_outage(mode: Mode, expect_reason: &str) {
    aiopsd::install_crypto_provider();
    let fake = FakePrometheus::start(|_, t| cart_point(t)).await;
    let mut run = start(&fast_config(&fake.url()), &[cart_signal()]);
    run.wait_for("ready and a first batch", |r| {
        r.readiness().0 && !r.batches.is_empty()
    })
    .await;

    fake.set_mode(mode);
    let source_down = format!("source {SOURCE_NAME} is down");
    run.wait_for("the outage to show in health", |r| {
        let (ready, reasons) = r.readiness();
        !ready
            && reasons
                .iter()
                .any(|x| x.contains(&source_down) && x.contains(expect_reason))
    })
    .await;
    assert!(run.metric(r#"aiopsd_poll_errors_total{signal="errors"}"#) >= 1.0);
    assert_eq!(run.metric(r#"aiopsd_source_up{source="prometheus"}"#), 0.0);
    let until_at_outage = run.batches.last().map(|b| b.until).unwrap_or(0);
    // Stay down across a few polls; the task must keep running.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    run.drain();
    assert!(
        !run.task.is_finished(),
        "the source task ended during the outage"
    );
    assert!(!run.readiness().0);

    fake.set_mode(Mode::Healthy);
    run.wait_for("recovery", |r| {
        r.readiness().0
            && r.batches
                .last()
                .is_some_and(|b| b.until > until_at_outage + 1500)
    })
    .await;
    assert_eq!(run.metric(r#"aiopsd_source_up{source="prometheus"}"#), 1.0);
    let batches = run.stop().await;
    assert_contiguous(&batches, 1000);
    let ts = timestamps(
        &batches,
        &labels(&[("namespace", "shop"), ("service", "cart")]),
    );
    assert_no_gaps(&ts, 1000);
    assert!(
        batches.iter().any(|b| !b.backfill),
        "live polls are not marked backfill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_503_then_back() {
    survives_outage(Mode::Down, "unavailable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_refusing_connections_then_back() {
    survives_outage(Mode::Refuse, "refused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_slower_than_timeout_then_back() {
    survives_outage(Mode::Slow(Duration::from_secs(3)), "timed out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_execution_error_then_back() {
    survives_outage(Mode::Error, "after 2 attempt(s): execution").await;
}

/// A query Prometheus calls malformed is not retried (retrying cannot fix it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_bad_data_is_not_retried_then_back() {
    survives_outage(Mode::BadData, "after 1 attempt(s): bad_data").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_and_inf_are_dropped_and_counted_and_series_come_and_go() {
    aiopsd::install_crypto_provider();
    let fake = FakePrometheus::start(|_, t| {
        let s = t / 1000;
        let value = if s % 3 == 0 {
            f64::NAN
        } else if s % 7 == 0 {
            f64::INFINITY
        } else {
            1.0
        };
        let mut points = vec![Point::new(&[("service", "cart")], value)];
        if s % 4 < 2 {
            points.push(Point::new(&[("service", "canary")], 2.0));
        }
        points
    })
    .await;
    let mut run = start(&fast_config(&fake.url()), &[cart_signal()]);
    run.wait_for("6s of polls after the backfill", |r| {
        r.batches.len() >= 3
            && r.batches.last().map(|b| b.until) >= r.batches.first().map(|b| b.until + 6000)
    })
    .await;
    let dropped_metric = run.metric(r#"aiopsd_samples_dropped_total{signal="errors"}"#);
    let batches = run.stop().await;

    let cart = timestamps(&batches, &labels(&[("service", "cart")]));
    let canary = timestamps(&batches, &labels(&[("service", "canary")]));
    assert!(batches
        .iter()
        .flat_map(|b| &b.series)
        .flat_map(|s| &s.samples)
        .all(|s| s.v.is_finite()));
    assert!(cart
        .iter()
        .all(|t| (t / 1000) % 3 != 0 && (t / 1000) % 7 != 0));
    assert!(canary.iter().all(|t| (t / 1000) % 4 < 2));
    // Every finite step in the range read is there.
    let first = batches
        .iter()
        .flat_map(|b| &b.series)
        .flat_map(|s| &s.samples)
        .map(|s| s.t)
        .min();
    let first = first.expect("samples");
    let last = batches.last().expect("batches").until;
    let finite = (first / 1000..=last / 1000)
        .filter(|s| s % 3 != 0 && s % 7 != 0)
        .count();
    assert_eq!(cart.len(), finite);
    let non_finite = (first / 1000..=last / 1000)
        .filter(|s| s % 3 == 0 || s % 7 == 0)
        .count();
    assert!(
        dropped_metric >= non_finite as f64 - 2.0 && dropped_metric > 0.0,
        "dropped {dropped_metric}, expected about {non_finite}"
    );
    // A series that comes and goes is simply present in some batches and absent in others.
    let has_canary = |b: &SeriesBatch| {
        b.series
            .iter()
            .any(|s| s.key.label("service") == Some("canary"))
    };
    assert!(batches.iter().any(has_canary));
    assert!(batches
        .iter()
        .any(|b| !b.series.is_empty() && !has_canary(b)));
}

// ---------------------------------------------------------------- queries

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_selector_cannot_be_configured_and_rendered_query_is_escaped() {
    aiopsd::install_crypto_provider();
    for hostile in [
        r#"cart"} or vector(1) or up{a=""#,
        "cart\"",
        "cart\\",
        ".*",
        "cart,namespace=\"kube-system\"",
    ] {
        let err = Selector::new([("service".to_string(), hostile.to_string())])
            .expect_err("hostile selector value must be refused");
        assert_eq!(err.label, "service", "{hostile:?}");
    }

    let fake = FakePrometheus::start(|_, t| cart_point(t)).await;
    let mut config = fast_config(&fake.url());
    config.step = secs(15);
    config.backfill = secs(120);
    let signals = [signal(
        "errors",
        r#"sum by (pod) (rate(http_requests_total{$selector,code=~"5.."}[5m]))"#,
        &[("service", "cart-v2.1"), ("namespace", "shop")],
        &[],
    )];
    let mut run = start(&config, &signals);
    run.wait_for("a batch", |r| !r.batches.is_empty()).await;
    run.stop().await;

    let expected = r#"sum by (pod) (rate(http_requests_total{namespace="shop",service="cart-v2.1",code=~"5.."}[5m]))"#;
    assert_eq!(fake.last_query().as_deref(), Some(expected));
    let requests = fake.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.path, "/api/v1/query_range");
        assert_eq!(r.query, expected);
        assert_eq!(r.number("step"), Some(15.0));
        let (start, end) = (
            r.number("start").expect("start"),
            r.number("end").expect("end"),
        );
        assert_eq!(start % 15.0, 0.0, "start {start} not aligned to the step");
        assert_eq!(end % 15.0, 0.0, "end {end} not aligned to the step");
    }
    // Backfill reaches back exactly `backfill` from its end.
    let first = &requests[0];
    assert_eq!(
        first.number("end").expect("end") - first.number("start").expect("start"),
        120.0
    );
}

/// 4h at 1s is 14,401 points; the fake refuses more than 11,000 per query
/// like Prometheus, so the backfill only succeeds if it is chunked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_backfill_is_chunked_under_the_point_limit() {
    aiopsd::install_crypto_provider();
    let fake = FakePrometheus::start(|_, t| cart_point(t)).await;
    let mut config = fast_config(&fake.url());
    config.backfill = secs(4 * 3600);
    config.timeout = secs(10);
    let mut run = start(&config, &[cart_signal()]);
    run.wait_for("backfill", |r| r.readiness().0 && r.batches.len() >= 2)
        .await;
    let batches = run.stop().await;

    let requests = fake.requests();
    let (a, b) = (&requests[0], &requests[1]);
    let points = |r: &support::fake_prometheus::Request| {
        (r.number("end").expect("end") - r.number("start").expect("start")) as i64 + 1
    };
    assert!(points(a) <= 11_000 && points(b) <= 11_000);
    assert_eq!(points(a) + points(b), 4 * 3600 + 1);
    assert_eq!(b.number("start"), a.number("end").map(|e| e + 1.0));
    assert!(batches[0].backfill && batches[1].backfill);
    assert_contiguous(&batches, 1000);
    assert_no_gaps(
        &timestamps(
            &batches,
            &labels(&[("namespace", "shop"), ("service", "cart")]),
        ),
        1000,
    );
}

// ---------------------------------------------------------------- stopping

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_source_during_backoff() {
    aiopsd::install_crypto_provider();
    let fake = FakePrometheus::start(|_, t| cart_point(t)).await;
    fake.set_mode(Mode::Down);
    let mut config = fast_config(&fake.url());
    config.retry = RetryConfig {
        attempts: 5,
        initial_backoff: secs(60),
        max_backoff: secs(60),
    };
    let run = start(&config, &[cart_signal()]);
    assert!(
        eventually(WAIT, || fake.query_count() >= 1).await,
        "no query arrived"
    );
    tokio::time::sleep(Duration::from_millis(200)).await; // now in the 60s backoff
    let started = std::time::Instant::now();
    run.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(fake.query_count(), 1, "no retry after cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_stops_when_the_pipeline_drops_its_receiver() {
    aiopsd::install_crypto_provider();
    let fake = FakePrometheus::start(|_, t| cart_point(t)).await;
    let mut run = start(&fast_config(&fake.url()), &[cart_signal()]);
    run.wait_for("a batch", |r| !r.batches.is_empty()).await;
    let Running {
        rx, task, cancel, ..
    } = run;
    drop(rx);
    within(
        Duration::from_secs(10),
        "the source to notice the closed channel",
        task,
    )
    .await
    .expect("source task did not panic");
    assert!(!cancel.is_cancelled());
}
