//! Fetching capacity series (src/forecast/fetch.rs) through the real
//! prometheus-http-query client against the wire-level fake Prometheus.

mod support;

use std::time::Duration;

use aiopsd::config::HumanDuration;
use aiopsd::forecast::fetch::{
    fetch_capacity_series_until, CapacityQueries, FetchError, MAX_POINTS_PER_QUERY,
};
use aiopsd::sources::promql::QueryTemplate;
use prometheus_http_query::Client;

use support::fake_prometheus::{FakePrometheus, Mode, Point};
use support::within;

const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;
/// A fixed end (a multiple of a minute), so the test does not depend on the clock.
const END: i64 = 1_700_006_400_000;
const WAIT: Duration = Duration::from_secs(60);

const CPU: &str = r#"sum(rate(container_cpu_usage_seconds_total{container="cart",namespace="shop",container!="",container!="POD"}[5m]))"#;
const MEMORY: &str = r#"container_memory_working_set_bytes{container="cart",namespace="shop"}"#;
const RPS: &str = r#"sum(rate(http_requests_total{container="cart",namespace="shop"}[5m]))"#;

/// One-minute steps; memory without `sum` so the fetch has to add the pods.
fn queries() -> CapacityQueries {
    CapacityQueries {
        memory: QueryTemplate::new("container_memory_working_set_bytes{$selector}"),
        step: HumanDuration(Duration::from_secs(60)),
        ..CapacityQueries::default()
    }
}

/// CPU = minutes since the epoch (so order and gaps are visible), memory =
/// two pods of 100 and 200 bytes, request rate only when `with_rps`.
async fn fake(with_rps: bool) -> FakePrometheus {
    FakePrometheus::start(move |query, t| {
        if query.contains("container_cpu_usage_seconds_total") {
            vec![Point::new(&[], (t / MIN) as f64)]
        } else if query.contains("container_memory_working_set_bytes") {
            vec![
                Point::new(&[("pod", "cart-a")], 100.0),
                Point::new(&[("pod", "cart-b")], 200.0),
            ]
        } else if with_rps && query.contains("http_requests_total") {
            vec![Point::new(&[], 42.0)]
        } else {
            Vec::new()
        }
    })
    .await
}

fn client(server: &FakePrometheus) -> Client {
    aiopsd::install_crypto_provider();
    Client::try_from(server.url().as_str()).expect("client for the fake Prometheus")
}

#[tokio::test]
async fn queries_sent_carry_the_escaped_selector_and_nothing_else() {
    let server = fake(true).await;
    let q = queries();
    let selector = q.service_selector("cart", Some("shop")).expect("valid");
    let fetched = within(
        WAIT,
        "fetch",
        fetch_capacity_series_until(&client(&server), &q, &selector, END),
    )
    .await
    .expect("fetch succeeds");
    let mut sent: Vec<String> = server.requests().into_iter().map(|r| r.query).collect();
    sent.dedup();
    assert_eq!(sent, vec![CPU, MEMORY, RPS]);
    assert_eq!(fetched.queries["memory"], MEMORY);

    // A hostile name is refused before any query exists.
    let before = server.query_count();
    assert!(q
        .service_selector(r#"cart"} or vector(1) or up{a=""#, None)
        .is_err());
    assert_eq!(server.query_count(), before);
}

#[tokio::test]
async fn thirty_days_are_fetched_in_chunks_and_stitched_in_order() {
    let server = fake(false).await;
    let q = queries();
    let selector = q.service_selector("cart", Some("shop")).expect("valid");
    let fetched = within(
        WAIT,
        "fetch",
        fetch_capacity_series_until(&client(&server), &q, &selector, END + 17_000),
    )
    .await
    .expect("fetch succeeds");

    // 30 days at 1 minute = 43,201 points: four range queries per series,
    // none above Prometheus's limit, contiguous.
    let cpu_requests: Vec<(f64, f64, f64)> = server
        .requests()
        .iter()
        .filter(|r| r.query == CPU)
        .map(|r| {
            (
                r.number("start").expect("start"),
                r.number("end").expect("end"),
                r.number("step").expect("step"),
            )
        })
        .collect();
    assert_eq!(cpu_requests.len(), 4, "{cpu_requests:?}");
    for (start, end, step) in &cpu_requests {
        assert_eq!(*step, 60.0);
        assert!((((end - start) / step) as i64) < MAX_POINTS_PER_QUERY);
    }
    for pair in cpu_requests.windows(2) {
        assert_eq!(pair[1].0, pair[0].1 + 60.0, "gap or overlap between chunks");
    }
    assert_eq!(cpu_requests[0].0 * 1000.0, (END - 30 * DAY) as f64);
    assert_eq!(
        cpu_requests[3].1 * 1000.0,
        END as f64,
        "end aligned down to the step"
    );

    let cpu = &fetched.cpu_cores;
    assert_eq!(cpu.len(), 43_201);
    assert_eq!(cpu[0].t, END - 30 * DAY);
    for (i, s) in cpu.iter().enumerate() {
        let t = END - 30 * DAY + i as i64 * MIN;
        assert_eq!((s.t, s.v), (t, (t / MIN) as f64), "sample {i}");
    }
    // Memory: the two pods summed per timestamp.
    assert_eq!(fetched.memory_bytes.len(), 43_201);
    assert!(fetched.memory_bytes.iter().all(|s| s.v == 300.0));
    // No request-rate data: planned without it, not an error.
    assert_eq!(fetched.requests_per_second, None);
    assert!(fetched.series().requests_per_second.is_none());
}

#[tokio::test]
async fn errors_name_the_query_and_the_status() {
    let server = fake(true).await;
    let q = queries();
    let selector = q.service_selector("cart", Some("shop")).expect("valid");
    let client = client(&server);

    server.set_mode(Mode::Error);
    let err = within(
        WAIT,
        "fetch",
        fetch_capacity_series_until(&client, &q, &selector, END),
    )
    .await
    .expect_err("Prometheus fails");
    let text = err.to_string();
    assert!(
        matches!(
            err,
            FetchError::Query {
                resource: "cpu",
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains(CPU), "{text}");
    assert!(text.contains("HTTP 422 (execution)"), "{text}");

    server.set_mode(Mode::BadData);
    let err = fetch_capacity_series_until(&client, &q, &selector, END)
        .await
        .expect_err("bad query");
    assert!(err.to_string().contains("HTTP 400 (bad_data)"), "{err}");

    // A selector that matches nothing: the required series names its query.
    server.set_mode(Mode::Healthy);
    let empty = CapacityQueries {
        cpu: QueryTemplate::new("sum(rate(nothing_here{$selector}[5m]))"),
        ..queries()
    };
    let err = fetch_capacity_series_until(&client, &empty, &selector, END)
        .await
        .expect_err("no data");
    assert!(
        err.to_string().starts_with(
            r#"cpu query `sum(rate(nothing_here{container="cart",namespace="shop"}[5m]))` returned no samples"#
        ),
        "{err}"
    );
}
