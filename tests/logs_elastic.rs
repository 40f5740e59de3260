//! The Elasticsearch log source (src/logs/elastic.rs) through the real
//! `elasticsearch` client over HTTP to the wire-level fake in
//! tests/support/fake_elastic.rs, and the per-service template counts.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use aiopsd::config::{HumanDuration, Secret};
use aiopsd::logs::elastic::{
    Checkpoint, ElasticAuth, ElasticConfig, ElasticError, ElasticSource, LogDoc, TemplateCounter,
};
use base64::Engine;
use serde_json::json;

use support::fake_elastic::{Doc, Failure, FakeElastic};
use support::within;

const WAIT: Duration = Duration::from_secs(30);
/// 2026-11-25T00:00:00Z.
const T0: i64 = 1_795_564_800_000;

fn config(url: &str, page_size: usize) -> ElasticConfig {
    let mut c = ElasticConfig::new(url, "logs-*");
    c.page_size = page_size;
    c.timeout = HumanDuration(Duration::from_secs(5));
    c.retry_backoff = HumanDuration(Duration::from_millis(5));
    c.max_retries = 4;
    c
}

const SERVICES: [&str; 3] = ["cart", "checkout", "search"];

/// `n` documents, several sharing each millisecond (so the tiebreak
/// matters), services cycling over three names, nested `service.name`.
fn docs(prefix: &str, start_ms: i64, n: usize) -> Vec<Doc> {
    (0..n)
        .map(|i| Doc {
            id: format!("{prefix}{i}"),
            timestamp_ms: start_ms + (i / 3) as i64,
            source: json!({
                "message": format!("request {i} served in {} ms", i % 97),
                "service": { "name": SERVICES[i % 3] },
            }),
        })
        .collect()
}

async fn read_all(
    source: &ElasticSource,
    checkpoint: &mut Checkpoint,
    until_ms: i64,
) -> (
    Result<aiopsd::logs::elastic::ReadStats, ElasticError>,
    Vec<LogDoc>,
) {
    let mut got = Vec::new();
    let result = within(
        WAIT,
        "read",
        source.read(checkpoint, until_ms, |d| got.push(d)),
    )
    .await;
    (result, got)
}

fn ids(docs: &[LogDoc]) -> Vec<String> {
    docs.iter().map(|d| d.id.clone()).collect()
}

#[tokio::test]
async fn paging_over_many_pages_loses_and_duplicates_nothing() {
    let fake = FakeElastic::start().await;
    let all = docs("a", T0, 2_503);
    fake.add_docs(all.clone());
    let source = ElasticSource::new(&config(&fake.url(), 100)).expect("valid config");
    let mut cp = Checkpoint::starting_at(T0);
    let (stats, got) = read_all(&source, &mut cp, T0 + 1_000_000).await;
    let stats = stats.expect("read succeeds");

    let expected: Vec<String> = all.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids(&got), expected, "every document once, in time order");
    assert_eq!(stats.documents, 2_503);
    assert_eq!(stats.pages, 26, "25 full pages and one short one");
    let last = all.last().expect("docs");
    assert_eq!(cp.timestamp_ms, last.timestamp_ms);
    assert_eq!(cp.ids_at_timestamp, ["a2502"]);
    // Pages after the first continue with search_after from the last hit.
    let searches = fake.searches();
    assert!(searches[0].get("search_after").is_none());
    assert_eq!(searches[1]["search_after"], json!([T0 + 33, 99]));
    assert_eq!(fake.open_pits(), 0, "the PIT is closed after the read");
}

#[tokio::test]
async fn resuming_from_a_checkpoint_reads_only_newer_documents() {
    let fake = FakeElastic::start().await;
    // 10 docs: timestamps T0..T0+3, three per millisecond.
    fake.add_docs(docs("a", T0, 10));
    let source = ElasticSource::new(&config(&fake.url(), 4)).expect("valid config");
    let mut cp = Checkpoint::starting_at(T0);
    let (stats, first) = read_all(&source, &mut cp, T0 + 100).await;
    stats.expect("first read");
    assert_eq!(first.len(), 10);

    // The checkpoint goes through the store as JSON.
    let stored = serde_json::to_string(&cp).expect("serialize");
    let mut restored: Checkpoint = serde_json::from_str(&stored).expect("deserialize");

    // Later: one more document at the checkpoint's millisecond (indexed
    // late) and five newer ones.
    let late = Doc {
        id: "late".into(),
        timestamp_ms: cp.timestamp_ms,
        source: json!({"message": "late line", "service": {"name": "cart"}}),
    };
    fake.add_docs([late]);
    fake.add_docs(docs("b", T0 + 50, 5));
    let (stats, second) = read_all(&source, &mut restored, T0 + 100).await;
    let stats = stats.expect("second read");
    assert_eq!(ids(&second), ["late", "b0", "b1", "b2", "b3", "b4"]);
    assert_eq!(
        stats.skipped_seen, 1,
        "a9 was at the checkpoint's millisecond"
    );
    // The new PIT starts at the checkpoint's time, not after it.
    let first_of_second = &fake.searches()[3];
    assert_eq!(
        first_of_second["query"]["bool"]["filter"][0]["range"]["@timestamp"]["gte"],
        json!(T0 + 3)
    );
    assert!(first_of_second.get("search_after").is_none());
}

/// Regression: the seen-ids filter applied only to the first page of a
/// new PIT, so more than a page of documents in the checkpoint's
/// millisecond were counted again on resume.
#[tokio::test]
async fn resuming_inside_a_crowded_millisecond_counts_nothing_twice() {
    let fake = FakeElastic::start().await;
    let crowded: Vec<Doc> = (0..25)
        .map(|i| Doc {
            id: format!("c{i}"),
            timestamp_ms: T0,
            source: json!({"message": format!("tick {i}")}),
        })
        .collect();
    fake.add_docs(crowded);
    let source = ElasticSource::new(&config(&fake.url(), 10)).expect("valid config");
    let mut cp = Checkpoint::starting_at(T0);
    let (stats, first) = read_all(&source, &mut cp, T0 + 1).await;
    stats.expect("first read");
    assert_eq!(first.len(), 25);
    assert_eq!(cp.ids_at_timestamp.len(), 25);
    fake.add_docs(docs("n", T0 + 1, 2));
    let (stats, second) = read_all(&source, &mut cp, T0 + 100).await;
    let stats = stats.expect("second read");
    assert_eq!(ids(&second), ["n0", "n1"]);
    assert_eq!(stats.skipped_seen, 25);
}

#[tokio::test]
async fn partial_shard_failures_fail_the_read_without_moving_the_checkpoint() {
    let fake = FakeElastic::start().await;
    fake.add_docs(docs("a", T0, 30));
    let source = ElasticSource::new(&config(&fake.url(), 10)).expect("valid config");
    let mut cp = Checkpoint::starting_at(T0);
    // The first page arrives whole; the second has a failed shard.
    let mut got = Vec::new();
    let result = within(
        WAIT,
        "read",
        source.read(&mut cp, T0 + 1_000, |d| {
            got.push(d);
            if got.len() == 10 {
                fake.fail_next(1, Failure::PartialShards);
            }
        }),
    )
    .await;
    let text = result
        .expect_err("partial results are not used")
        .to_string();
    assert!(
        text.contains("1 of 2 shards failed")
            && text.contains("Node not connected")
            && text.contains("logs-*"),
        "{text}"
    );
    assert_eq!(got.len(), 10);
    assert_eq!(
        cp.timestamp_ms, got[9].timestamp_ms,
        "the checkpoint matches what was consumed"
    );
    // The next poll continues where the first stopped.
    let (stats, rest) = read_all(&source, &mut cp, T0 + 1_000).await;
    stats.expect("second read");
    got.extend(rest);
    let expected: Vec<String> = (0..30).map(|i| format!("a{i}")).collect();
    assert_eq!(ids(&got), expected);
}

#[tokio::test]
async fn a_429_storm_is_survived_with_backoff() {
    let fake = FakeElastic::start().await;
    fake.add_docs(docs("a", T0, 50));
    fake.fail_next(3, Failure::TooManyRequests);
    let source = ElasticSource::new(&config(&fake.url(), 20)).expect("valid config");
    let mut cp = Checkpoint::starting_at(T0);
    let (stats, got) = read_all(&source, &mut cp, T0 + 1_000).await;
    let stats = stats.expect("read succeeds after the 429s");
    assert_eq!(got.len(), 50);
    assert_eq!(stats.retries, 3);
}

#[tokio::test]
async fn unavailable_beyond_the_retry_budget_is_a_clear_bounded_error() {
    let fake = FakeElastic::start().await;
    fake.add_docs(docs("a", T0, 5));
    fake.fail_next(100, Failure::Unavailable);
    let mut c = config(&fake.url(), 20);
    c.max_retries = 2;
    let source = ElasticSource::new(&c).expect("valid config");
    let mut cp = Checkpoint::starting_at(T0);
    let (result, got) = read_all(&source, &mut cp, T0 + 1_000).await;
    let err = result.expect_err("503 throughout");
    assert!(got.is_empty());
    let text = err.to_string();
    assert!(
        text.contains("503") && text.contains("logs-*") && text.contains("cluster_block_exception"),
        "{text}"
    );
    // Open PIT: 1 + 2 retries; then close is not attempted (no PIT).
    assert_eq!(fake.requests().len(), 3);
    assert_eq!(
        cp,
        Checkpoint::starting_at(T0),
        "nothing consumed, nothing moved"
    );
}

#[tokio::test]
async fn unauthorized_is_a_clear_error_and_not_retried() {
    let fake = FakeElastic::start().await;
    fake.require_auth("Basic ZWxhc3RpYzpyaWdodA==");
    let mut c = config(&fake.url(), 20);
    c.auth = Some(ElasticAuth::Basic {
        username: "elastic".into(),
        password: Secret::from("wrong"),
    });
    let source = ElasticSource::new(&c).expect("valid config");
    let mut cp = Checkpoint::starting_at(T0);
    let (result, _) = read_all(&source, &mut cp, T0 + 1_000).await;
    match result {
        Err(ElasticError::Status {
            status,
            kind,
            index,
            op,
            ..
        }) => {
            assert_eq!(
                (status, kind.as_str(), index.as_str(), op),
                (401, "security_exception", "logs-*", "open PIT")
            );
        }
        other => panic!("expected a 401 status error, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn auth_headers_are_sent_on_every_request() {
    let b64 = base64::engine::general_purpose::STANDARD;
    for (auth, header) in [
        (
            ElasticAuth::Basic {
                username: "elastic".into(),
                password: Secret::from("s3cret"),
            },
            format!("Basic {}", b64.encode("elastic:s3cret")),
        ),
        (
            ElasticAuth::ApiKey {
                key: Secret::from("aWQ6a2V5"),
            },
            "ApiKey aWQ6a2V5".to_owned(),
        ),
    ] {
        let fake = FakeElastic::start().await;
        fake.require_auth(&header);
        fake.add_docs(docs("a", T0, 7));
        let mut c = config(&fake.url(), 3);
        c.auth = Some(auth);
        let source = ElasticSource::new(&c).expect("valid config");
        let mut cp = Checkpoint::starting_at(T0);
        let (result, got) = read_all(&source, &mut cp, T0 + 1_000).await;
        result.expect("authorised read");
        assert_eq!(got.len(), 7);
        let requests = fake.requests();
        assert!(requests.len() >= 5, "open, 3 searches, close");
        assert!(requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some(header.as_str())));
    }
}

#[tokio::test]
async fn an_expired_pit_is_reopened_and_the_read_resumes_from_the_checkpoint() {
    let fake = FakeElastic::start().await;
    let all = docs("a", T0, 100);
    fake.add_docs(all.clone());
    let source = ElasticSource::new(&config(&fake.url(), 10)).expect("valid config");
    let mut cp = Checkpoint::starting_at(T0);
    let mut got = Vec::new();
    let stats = within(
        WAIT,
        "read",
        source.read(&mut cp, T0 + 1_000, |d| {
            got.push(d);
            if got.len() == 35 {
                // Mid-page: the PIT expires while the source is busy.
                fake.expire_pits();
            }
        }),
    )
    .await
    .expect("read survives the expired PIT");
    let expected: Vec<String> = all.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids(&got), expected, "nothing lost, nothing twice");
    assert_eq!(stats.pit_reopens, 1);
    let pit_opens = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/logs-*/_pit")
        .count();
    assert_eq!(pit_opens, 2);
    // The first search on the new PIT restarts at the checkpoint's time.
    let searches = fake.searches();
    let resumed = searches
        .iter()
        .find(|s| s["pit"]["id"] == "pit-2")
        .expect("a search on the new PIT");
    assert!(resumed.get("search_after").is_none());
    assert_eq!(
        resumed["query"]["bool"]["filter"][0]["range"]["@timestamp"]["gte"],
        json!(all[39].timestamp_ms)
    );
}

#[tokio::test]
async fn the_query_uses_the_configured_fields_and_time_range() {
    let fake = FakeElastic::start().await;
    fake.add_docs([Doc {
        id: "x".into(),
        timestamp_ms: T0 + 5,
        source: json!({"msg": "hello", "kubernetes.app": "cart",
                       "kubernetes": {"ns": "shop"}, "severity": 50}),
    }]);
    let mut c = config(&fake.url(), 250);
    c.timestamp_field = "event.created".into();
    c.message_field = "msg".into();
    c.service_field = "kubernetes.app".into();
    c.namespace_field = Some("kubernetes.ns".into());
    // A numeric level (bunyan, syslog) is kept as its text.
    c.level_field = Some("severity".into());
    let source = ElasticSource::new(&c).expect("valid config");
    let mut cp = Checkpoint::starting_at(T0);
    let (result, got) = read_all(&source, &mut cp, T0 + 60_000).await;
    result.expect("read");
    assert_eq!(
        got,
        [LogDoc {
            id: "x".into(),
            timestamp_ms: T0 + 5,
            service: Some("cart".into()),
            namespace: Some("shop".into()),
            level: Some("50".into()),
            message: "hello".into()
        }]
    );

    let requests = fake.requests();
    assert_eq!(requests[0].path, "/logs-*/_pit");
    assert!(
        requests[0].query.contains("keep_alive=1m"),
        "{}",
        requests[0].query
    );
    let body = &fake.searches()[0];
    assert_eq!(body["size"], json!(250));
    assert_eq!(body["pit"]["id"], json!("pit-1"));
    assert_eq!(
        body["query"],
        json!({"bool": {"filter": [{"range": {"event.created": {"gte": T0, "lt": T0 + 60_000, "format": "epoch_millis"}}}]}})
    );
    assert_eq!(
        body["sort"],
        json!([{"event.created": {"order": "asc", "numeric_type": "date"}}, {"_shard_doc": "asc"}])
    );
    assert_eq!(
        body["_source"],
        json!(["msg", "kubernetes.app", "kubernetes.ns", "severity"]),
        "only the configured fields are fetched"
    );
    let close = requests.last().expect("requests");
    assert_eq!(
        (close.method.as_str(), close.path.as_str()),
        ("DELETE", "/_pit")
    );
    assert_eq!(close.body, json!({"id": "pit-1"}));
}

#[tokio::test]
async fn malformed_documents_are_skipped_and_counted() {
    let fake = FakeElastic::start().await;
    fake.add_docs([
        Doc {
            id: "ok".into(),
            timestamp_ms: T0,
            source: json!({"message": "fine"}),
        },
        Doc {
            id: "no-message".into(),
            timestamp_ms: T0 + 1,
            source: json!({"msg": "x"}),
        },
        Doc {
            id: "number".into(),
            timestamp_ms: T0 + 2,
            source: json!({"message": 42}),
        },
        Doc {
            id: "ok2".into(),
            timestamp_ms: T0 + 3,
            source: json!({"message": "fine too"}),
        },
    ]);
    let source = ElasticSource::new(&config(&fake.url(), 2)).expect("valid config");
    let mut cp = Checkpoint::starting_at(T0);
    let (stats, got) = read_all(&source, &mut cp, T0 + 1_000).await;
    let stats = stats.expect("read");
    assert_eq!(ids(&got), ["ok", "ok2"]);
    assert_eq!(stats.skipped_malformed, 2);
    assert_eq!(got[0].service, None, "no service field is not an error");
}

#[test]
fn examples_are_redacted() {
    let mut counter = TemplateCounter::new(Duration::from_secs(60), 3);
    let doc = |i: i64, m: &str| LogDoc {
        id: i.to_string(),
        timestamp_ms: T0 + i,
        service: Some("auth".into()),
        namespace: None,
        level: None,
        message: m.into(),
    };
    let (svc, id) = counter.add(&doc(1, "login failed password=hunter2 from 10.0.0.1"));
    counter.add(&doc(2, "login failed password=letmein from 10.0.0.2"));
    let examples = counter.examples(&svc, id);
    assert_eq!(examples.len(), 2);
    for e in examples {
        assert!(!e.contains("hunter2") && !e.contains("letmein"), "{e}");
        assert!(e.contains("password="), "the key stays: {e}");
    }
    // A secret that stays literal in a template's text (a one-off line) is
    // redacted in the counts too, since their text ends up in reports.
    counter.add(&doc(
        3,
        "using token=ghp_abcdefghijklmnopqrstuvwxyz0123456789 now",
    ));
    let texts: Vec<String> = counter.counts().into_iter().map(|c| c.text).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts
            .iter()
            .all(|t| !t.contains("hunter2") && !t.contains("ghp_")),
        "{texts:?}"
    );
}

#[tokio::test]
async fn template_counts_per_service_per_minute_are_right() {
    // Known shape: per minute m (0..3) and service, k lines of each of two
    // message kinds, with varying variables.
    let plan: [(&str, [usize; 3], [usize; 3]); 2] = [
        ("cart", [5, 0, 7], [1, 2, 3]),
        ("checkout", [2, 9, 0], [4, 0, 1]),
    ];
    let mut all = Vec::new();
    for (service, timeouts, declines) in plan {
        for minute in 0..3 {
            let base = T0 + minute as i64 * 60_000;
            for i in 0..timeouts[minute] {
                all.push((
                    base + 1_000 * i as i64,
                    service,
                    format!("connection to db-{i} timed out after {} ms", 30 + i),
                ));
            }
            for i in 0..declines[minute] {
                all.push((
                    base + 500 + 1_000 * i as i64,
                    service,
                    format!("payment declined for order {} code E{}", 1000 + i, i),
                ));
            }
        }
    }
    all.sort_by_key(|(t, _, _)| *t);
    let fake = FakeElastic::start().await;
    fake.add_docs(all.iter().enumerate().map(|(n, (t, s, m))| Doc {
        id: format!("d{n}"),
        timestamp_ms: *t,
        source: json!({"message": m, "service": {"name": s}}),
    }));
    let source = ElasticSource::new(&config(&fake.url(), 7)).expect("valid config");
    let mut counter = TemplateCounter::new(Duration::from_secs(60), 2);
    let mut cp = Checkpoint::starting_at(T0);
    within(
        WAIT,
        "read",
        source.read(&mut cp, T0 + 180_000, |d| {
            counter.add(&d);
        }),
    )
    .await
    .expect("read");

    // Keyed by (service, minute, kind) where kind comes from the text.
    let mut got: BTreeMap<(String, i64, &str), u64> = BTreeMap::new();
    let mut templates: HashSet<(String, String)> = HashSet::new();
    for c in counter.drain_complete(T0 + 180_000) {
        let kind = if c.text.contains("timed out") {
            "timeout"
        } else {
            "decline"
        };
        templates.insert((c.service.clone(), c.text.clone()));
        *got.entry((c.service, (c.bucket_start_ms - T0) / 60_000, kind))
            .or_default() += c.count;
    }
    let mut expected = BTreeMap::new();
    for (service, timeouts, declines) in plan {
        for minute in 0..3 {
            for (kind, n) in [("timeout", timeouts[minute]), ("decline", declines[minute])] {
                if n > 0 {
                    expected.insert((service.to_owned(), minute as i64, kind), n as u64);
                }
            }
        }
    }
    assert_eq!(got, expected);
    // One template per kind per service: the variables were masked.
    assert_eq!(templates.len(), 4, "{templates:?}");
    assert!(
        counter.drain_complete(T0 + 180_000).is_empty(),
        "drained once"
    );
}

/// Not a test of behaviour: prints documents/s through the fake (debug
/// or release, whatever was built). Run with
/// `cargo test --test logs_elastic -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn throughput_through_the_fake() {
    let fake = FakeElastic::start().await;
    let n = 100_000;
    fake.add_docs(docs("a", T0, n));
    for page in [1_000, 10_000] {
        let source = ElasticSource::new(&config(&fake.url(), page)).expect("valid config");
        let mut counter = TemplateCounter::new(Duration::from_secs(60), 3);
        let mut cp = Checkpoint::starting_at(T0);
        let start = Instant::now();
        let stats = source
            .read(&mut cp, T0 + 1_000_000, |d| {
                counter.add(&d);
            })
            .await
            .expect("read");
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(stats.documents, n as u64);
        println!(
            "page_size {page}: {n} documents in {secs:.2} s = {:.0} documents/s (read + mine + count, {} pages)",
            n as f64 / secs,
            stats.pages
        );
    }
}
