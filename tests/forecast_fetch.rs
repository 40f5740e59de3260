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

/// What the API tests serve: CPU with a daily cycle and a level step of
/// +0.5 cores ten days before `now`; memory growing 10 MiB a day from
/// 1 GiB; a constant request rate — all for `container="cart"` only.
async fn service_prometheus(now: i64) -> FakePrometheus {
    const MIB: f64 = 1024.0 * 1024.0;
    let step_at = now - 10 * DAY;
    FakePrometheus::start(move |query, t| {
        if !query.contains(r#"container="cart""#) {
            return Vec::new();
        }
        let day = (t - (now - 30 * DAY)) as f64 / DAY as f64;
        let wiggle = (t.rem_euclid(DAY) as f64 / DAY as f64 * std::f64::consts::TAU).sin();
        if query.contains("container_cpu_usage_seconds_total") {
            let step = if t >= step_at { 0.5 } else { 0.0 };
            vec![Point::new(&[], 1.0 + 0.3 * wiggle + step)]
        } else if query.contains("container_memory_working_set_bytes") {
            vec![Point::new(
                &[],
                1024.0 * MIB + 10.0 * MIB * day + 2.0 * MIB * wiggle,
            )]
        } else if query.contains("http_requests_total") {
            vec![Point::new(&[], 42.0)]
        } else {
            Vec::new()
        }
    })
    .await
}

/// The real router (no token: loopback only) with a config pointing at
/// `prometheus`, served on a free port until the sender is dropped.
async fn serve_api(prometheus: &FakePrometheus) -> (String, tokio::sync::oneshot::Sender<()>) {
    let yaml = format!(
        "cluster: test\nprometheus:\n  url: \"{}\"\n  timeout: 30s\n",
        prometheus.url()
    );
    let config =
        aiopsd::config::Config::from_yaml(&yaml, std::path::Path::new("test.yaml"), Vec::new())
            .expect("valid test config");
    let state = aiopsd::server::AppState {
        store: aiopsd::incident::Store::open_in_memory().expect("store"),
        metrics: std::sync::Arc::new(aiopsd::telemetry::Metrics::new()),
        health: aiopsd::telemetry::Health::new(),
        api_token: None,
        cluster: "test".into(),
        alertmanager: Default::default(),
        alert_tx: None,
        config_silences: Default::default(),
        remediation: Default::default(),
        config: Some(std::sync::Arc::new(config)),
    };
    let router = aiopsd::server::router(state, Duration::from_secs(60));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(aiopsd::server::serve(listener, router, async move {
        let _ = stopped.await;
    }));
    (base, stop)
}

async fn get_json(url: &str) -> (u16, serde_json::Value) {
    aiopsd::install_crypto_provider();
    let resp = within(WAIT, url, reqwest::get(url))
        .await
        .expect("the API answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, body)
}

fn num(v: &serde_json::Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

#[tokio::test]
async fn trends_endpoint_reports_growth_week_over_week_and_the_level_step() {
    const MIB: f64 = 1024.0 * 1024.0;
    let now = aiopsd::signal::now_ms();
    let prometheus = service_prometheus(now).await;
    let (base, _stop) = serve_api(&prometheus).await;

    let (status, body) = get_json(&format!("{base}/api/v1/trends/cart?namespace=shop")).await;
    assert_eq!(status, 200, "{body}");
    let trends = &body["trends"];
    assert_eq!(trends["service"], "cart");
    assert_eq!(
        body["queries"]["cpu"],
        r#"sum(rate(container_cpu_usage_seconds_total{container="cart",namespace="shop",container!="",container!="POD"}[5m]))"#
    );

    // Memory: +10 MiB a day → +70 MiB week over week, growth 10 MiB/day;
    // 30 days of history cannot give a month-over-month figure, and say so.
    let mem = &trends["memory"]["report"];
    let wow = num(&mem["week_over_week"]["absolute"], "memory WoW");
    assert!((wow - 70.0 * MIB).abs() < 2.0 * MIB, "{mem}");
    let growth = num(&mem["growth"]["per_day"], "memory growth");
    assert!((growth - 10.0 * MIB).abs() < 0.5 * MIB, "{mem}");
    assert!(mem["month_over_month"].is_null(), "{mem}");
    assert!(
        mem["notes"]
            .to_string()
            .contains("30-day comparison needs 60 days"),
        "{mem}"
    );

    // CPU: one level change of +0.5 cores, ten days ago.
    let changes = trends["cpu"]["report"]["change_points"]
        .as_array()
        .expect("change points");
    assert_eq!(changes.len(), 1, "{changes:?}");
    let c = &changes[0];
    assert!(
        matches!(c["kind"].as_str(), Some("level" | "level_and_trend")),
        "{c}"
    );
    let at = num(&c["t"], "change time") as i64;
    assert!((at - (now - 10 * DAY)).abs() <= 6 * 3_600_000, "{c}");
    let jump = num(&c["level_after"], "after") - num(&c["level_before"], "before");
    assert!((jump - 0.5).abs() < 0.1, "{c}");

    // A constant request rate is an answer, not a failure.
    let rps = &trends["requests_per_second"];
    assert!(rps["report"].is_null(), "{rps}");
    assert!(
        rps["error"]
            .as_str()
            .is_some_and(|e| e.contains("constant at 42.0 req/s")),
        "{rps}"
    );
}

#[tokio::test]
async fn capacity_endpoint_plans_from_prometheus_and_carries_the_same_trends() {
    let now = aiopsd::signal::now_ms();
    let prometheus = service_prometheus(now).await;
    let (base, _stop) = serve_api(&prometheus).await;

    let (status, body) = get_json(&format!(
        "{base}/api/v1/capacity/cart?namespace=shop&replicas=3&cpu_request=0.5&memory_request_bytes=2147483648&days=7"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let plan = &body["plan"];
    assert_eq!(plan["service"], "cart");
    assert_eq!(plan["daily"].as_array().map(Vec::len), Some(7), "{plan}");
    // CPU peaks at 1.8 cores (1.0 + 0.5 step + 0.3 cycle): ÷ (0.5 × 70 %)
    // = 5.14 → 6 replicas by CPU at least.
    let cpu_replicas = num(&plan["cpu"]["replicas_needed"], "cpu replicas");
    assert!(cpu_replicas >= 6.0, "{plan}");
    // The plan's trends are the trends endpoint's, from the same fetch.
    let changes = plan["trends"]["cpu"]["report"]["change_points"]
        .as_array()
        .expect("change points in the plan");
    assert_eq!(changes.len(), 1, "{changes:?}");

    // Client mistakes get their status; Prometheus having nothing is 404.
    let (status, body) = get_json(&format!("{base}/api/v1/trends/checkout?namespace=shop")).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = get_json(&format!("{base}/api/v1/trends/cart?color=red")).await;
    assert_eq!(status, 400);
    let (status, body) =
        get_json(&format!("{base}/api/v1/trends/cart%22%7D%20or%20vector(1)")).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn trends_markdown_from_fetched_series_names_the_change() {
    let now = aiopsd::signal::now_ms();
    let server = service_prometheus(now).await;
    let q = CapacityQueries::default();
    let selector = q.service_selector("cart", Some("shop")).expect("valid");
    let fetched = within(
        WAIT,
        "fetch",
        fetch_capacity_series_until(&client(&server), &q, &selector, now),
    )
    .await
    .expect("fetch succeeds");
    let trends = aiopsd::forecast::service_trends(
        "cart",
        &fetched.series(),
        &aiopsd::forecast::ForecastConfig::default(),
    );
    let md = trends.to_markdown();
    println!("{md}");
    assert!(md.starts_with("### Trends\n"), "{md}");
    assert!(md.contains("| memory | 1.19 GiB → 1.26 GiB"), "{md}");
    assert!(md.contains("+10.0 MiB ("), "{md}");
    assert!(md.contains("- cpu at "), "{md}");
    assert!(md.contains(": level"), "{md}");
    assert!(md.contains("- rps: constant at 42.0 req/s"), "{md}");
}
