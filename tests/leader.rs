//! Lease leader election driven through the real kube client against the
//! wire-level fake API server (tests/support/fake_kube.rs), and the
//! `aiopsd run` binary with election on. (The RBAC test that covers these
//! calls with every other one lives in tests/deploy.rs.)

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use aiopsd::config::HumanDuration;
use aiopsd::leader::{Attempt, HoldOutcome, LeaderElectionConfig, LeaderElector};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use support::fake_kube::FakeKube;
use support::fake_prometheus::{FakePrometheus, Point};
use support::{free_port, within};

/// Namespace and Lease name the deploy/ manifests use.
const NS: &str = "aiopsd";
const LEASE: &str = "aiopsd";

fn ms(n: u64) -> HumanDuration {
    HumanDuration(Duration::from_millis(n))
}

/// Fast timings: lease 2 s, renew deadline 1 s, retry every 100 ms.
fn election(url: &str, identity: &str) -> LeaderElectionConfig {
    LeaderElectionConfig {
        enabled: true,
        namespace: Some(NS.into()),
        lease_name: LEASE.into(),
        identity: Some(identity.into()),
        lease_duration: ms(2000),
        renew_deadline: ms(1000),
        retry_period: ms(100),
        api_url: Some(url.into()),
        pod_name: None,
    }
}

async fn elector(kube: &FakeKube, identity: &str) -> LeaderElector {
    aiopsd::install_crypto_provider();
    LeaderElector::connect(&election(&kube.url(), identity))
        .await
        .expect("elector connects")
}

fn spec_i64(lease: &Value, field: &str) -> Option<i64> {
    lease.pointer(&format!("/spec/{field}"))?.as_i64()
}

fn spec_str(lease: &Value, field: &str) -> Option<String> {
    Some(
        lease
            .pointer(&format!("/spec/{field}"))?
            .as_str()?
            .to_string(),
    )
}

#[tokio::test]
async fn racing_electors_elect_exactly_one_leader() {
    for round in 0..5 {
        let kube = FakeKube::start().await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..4 {
            let mut e = elector(&kube, &format!("replica-{i}")).await;
            tasks.spawn(async move { (format!("replica-{i}"), e.try_acquire_or_renew().await) });
        }
        let mut leaders = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (who, attempt) = joined.expect("task");
            match attempt.expect("attempt succeeds") {
                Attempt::Leader => leaders.push(who),
                Attempt::Follower { .. } | Attempt::LostRace => {}
            }
        }
        assert_eq!(leaders.len(), 1, "round {round}: leaders {leaders:?}");
        assert_eq!(kube.holder(NS, LEASE).as_deref(), Some(leaders[0].as_str()));
    }
}

#[tokio::test]
async fn a_fresh_lease_is_created_with_every_field() {
    let kube = FakeKube::start().await;
    let mut a = elector(&kube, "replica-a").await;
    assert_eq!(a.try_acquire_or_renew().await.expect("ok"), Attempt::Leader);
    let lease = kube.lease(NS, LEASE).expect("lease created");
    assert_eq!(
        spec_str(&lease, "holderIdentity").as_deref(),
        Some("replica-a")
    );
    assert_eq!(spec_i64(&lease, "leaseDurationSeconds"), Some(2));
    assert_eq!(spec_i64(&lease, "leaseTransitions"), Some(0));
    assert!(spec_str(&lease, "acquireTime").is_some());
    let renewed = spec_str(&lease, "renewTime").expect("renewTime");
    // Renewing moves renewTime and the version, not acquireTime.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(a.try_acquire_or_renew().await.expect("ok"), Attempt::Leader);
    let after = kube.lease(NS, LEASE).expect("lease");
    assert_ne!(spec_str(&after, "renewTime"), Some(renewed));
    assert_eq!(
        spec_str(&after, "acquireTime"),
        spec_str(&lease, "acquireTime")
    );
    assert_eq!(spec_i64(&after, "leaseTransitions"), Some(0));
}

#[tokio::test]
async fn a_held_lease_is_respected_while_it_is_renewed() {
    let kube = FakeKube::start().await;
    let mut a = elector(&kube, "replica-a").await;
    let mut b = elector(&kube, "replica-b").await;
    assert_eq!(a.try_acquire_or_renew().await.expect("ok"), Attempt::Leader);
    let cancel = CancellationToken::new();
    let holding = {
        let cancel = cancel.clone();
        tokio::spawn(async move { a.hold(&cancel).await })
    };
    // Three lease durations: B must stay a follower all along.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert_eq!(
            b.try_acquire_or_renew().await.expect("ok"),
            Attempt::Follower {
                holder: "replica-a".into()
            }
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cancel.cancel();
    assert_eq!(holding.await.expect("task"), HoldOutcome::Cancelled);
}

#[tokio::test]
async fn the_standby_takes_over_once_the_leader_stops_renewing() {
    let kube = FakeKube::start().await;
    let mut a = elector(&kube, "replica-a").await;
    assert_eq!(a.try_acquire_or_renew().await.expect("ok"), Attempt::Leader);
    let stopped_renewing = Instant::now();
    drop(a); // crashed: no renewal, no release
    let mut b = elector(&kube, "replica-b").await;
    let cancel = CancellationToken::new();
    assert!(within(Duration::from_secs(10), "take-over", b.acquire(&cancel)).await);
    let waited = stopped_renewing.elapsed();
    assert!(
        waited >= Duration::from_millis(2000),
        "took over after {waited:?}, before the 2 s lease expired"
    );
    let lease = kube.lease(NS, LEASE).expect("lease");
    assert_eq!(
        spec_str(&lease, "holderIdentity").as_deref(),
        Some("replica-b")
    );
    assert_eq!(spec_i64(&lease, "leaseTransitions"), Some(1));
}

#[tokio::test]
async fn a_released_lease_is_taken_over_at_once() {
    let kube = FakeKube::start().await;
    let mut a = elector(&kube, "replica-a").await;
    assert_eq!(a.try_acquire_or_renew().await.expect("ok"), Attempt::Leader);
    let mut b = elector(&kube, "replica-b").await;
    assert!(matches!(
        b.try_acquire_or_renew().await.expect("ok"),
        Attempt::Follower { .. }
    ));
    a.release().await.expect("release");
    assert_eq!(kube.holder(NS, LEASE), None);
    let started = Instant::now();
    assert!(b.acquire(&CancellationToken::new()).await);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "a released lease must not wait for expiry: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn losing_a_create_race_is_a_follower_not_an_error() {
    let kube = FakeKube::start().await;
    let mut a = elector(&kube, "replica-a").await;
    kube.interpose_before_next_write("replica-z");
    assert_eq!(
        a.try_acquire_or_renew()
            .await
            .expect("409 AlreadyExists is not an error"),
        Attempt::LostRace
    );
    assert_eq!(kube.holder(NS, LEASE).as_deref(), Some("replica-z"));
    // Next attempt reads the winner's name.
    assert_eq!(
        a.try_acquire_or_renew().await.expect("ok"),
        Attempt::Follower {
            holder: "replica-z".into()
        }
    );
}

#[tokio::test]
async fn losing_a_takeover_race_to_a_conflict_is_a_follower() {
    let kube = FakeKube::start().await;
    kube.put_lease(NS, LEASE, "replica-old", 1);
    let mut a = elector(&kube, "replica-a").await;
    assert!(matches!(
        a.try_acquire_or_renew().await.expect("ok"),
        Attempt::Follower { .. }
    ));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Expired now; but another replica writes between our read and our PUT.
    kube.interpose_before_next_write("replica-z");
    assert_eq!(
        a.try_acquire_or_renew()
            .await
            .expect("409 Conflict is not an error"),
        Attempt::LostRace
    );
    assert_eq!(kube.holder(NS, LEASE).as_deref(), Some("replica-z"));
    // The winner's fresh lease is respected.
    assert_eq!(
        a.try_acquire_or_renew().await.expect("ok"),
        Attempt::Follower {
            holder: "replica-z".into()
        }
    );
    assert!(
        kube.calls().iter().any(|c| c.verb == "update"),
        "the take-over was attempted with a PUT"
    );
}

#[tokio::test]
async fn a_leader_that_meets_another_holder_steps_down_at_once() {
    let kube = FakeKube::start().await;
    let mut a = elector(&kube, "replica-a").await;
    assert_eq!(a.try_acquire_or_renew().await.expect("ok"), Attempt::Leader);
    kube.interpose_before_next_write("replica-z");
    let outcome = within(
        Duration::from_secs(5),
        "step-down",
        a.hold(&CancellationToken::new()),
    )
    .await;
    // The renewal's PUT meets 409 Conflict; the next read shows who won.
    assert_eq!(
        outcome,
        HoldOutcome::Lost {
            reason: "replica replica-z holds the lease now".into()
        }
    );
}

#[tokio::test]
async fn a_spurious_conflict_on_renew_does_not_cost_the_lease() {
    let kube = FakeKube::start().await;
    let mut a = elector(&kube, "replica-a").await;
    assert_eq!(a.try_acquire_or_renew().await.expect("ok"), Attempt::Leader);
    // Another write that leaves us the holder (e.g. a label added by hand).
    kube.interpose_before_next_write("replica-a");
    let cancel = CancellationToken::new();
    let holding = {
        let cancel = cancel.clone();
        tokio::spawn(async move { a.hold(&cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !holding.is_finished(),
        "a conflict alone must not end leadership"
    );
    cancel.cancel();
    assert_eq!(holding.await.expect("task"), HoldOutcome::Cancelled);
    assert_eq!(kube.holder(NS, LEASE).as_deref(), Some("replica-a"));
}

#[tokio::test]
async fn an_unreachable_api_server_makes_the_leader_step_down_before_the_lease_expires() {
    let kube = FakeKube::start().await;
    let mut a = elector(&kube, "replica-a").await;
    assert_eq!(a.try_acquire_or_renew().await.expect("ok"), Attempt::Leader);
    let cancel = CancellationToken::new();
    let holding = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let outcome = a.hold(&cancel).await;
            (outcome, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let last_renew_wall = kube
        .lease(NS, LEASE)
        .and_then(|l| spec_str(&l, "renewTime"))
        .expect("renewed");
    kube.set_down(true);
    let went_down = Instant::now();
    let (outcome, lost_at) = within(Duration::from_secs(5), "step-down", holding)
        .await
        .expect("task");
    let HoldOutcome::Lost { reason } = outcome else {
        panic!("expected Lost, got {outcome:?}");
    };
    assert!(
        reason.contains("could not renew the lease for 1s"),
        "{reason}"
    );
    assert!(
        reason.contains("ServiceUnavailable")
            || reason.contains("503")
            || reason.contains("unable"),
        "{reason}"
    );
    let after_down = lost_at.duration_since(went_down);
    // Stepped down after the renew deadline (1 s from the last success,
    // which is at most one retry period before the outage) ...
    assert!(
        after_down >= Duration::from_millis(1000 - 100 - 50),
        "stepped down too early: {after_down:?}"
    );
    // ... and before the 2 s lease could have expired for anyone else.
    let last_renew: k8s_openapi::jiff::Timestamp =
        last_renew_wall.parse().expect("renewTime parses");
    let lost_wall = k8s_openapi::jiff::Timestamp::now() - lost_at.elapsed();
    let held_for = lost_wall.duration_since(last_renew);
    assert!(
        held_for < k8s_openapi::jiff::SignedDuration::from_millis(2000),
        "a leader must stop before its lease expires; it stopped {held_for:?} after its last renewal"
    );
}

// ---------------------------------------------------------------------------
// The daemon with election on.

/// `aiopsd run` as a child process with `POD_NAME` set, as the Deployment
/// sets it from the downward API.
struct Replica {
    child: Option<Child>,
    base: String,
    log: PathBuf,
}

impl Replica {
    fn start(dir: &Path, name: &str, kube: &FakeKube, prometheus: &str) -> Self {
        Self::start_with(dir, name, kube, prometheus, "")
    }

    /// As `start`, with more YAML appended to the config.
    fn start_with(dir: &Path, name: &str, kube: &FakeKube, prometheus: &str, extra: &str) -> Self {
        let port = free_port();
        let yaml = format!(
            r#"
cluster: test
server:
  listen: "127.0.0.1:{port}"
store:
  path: "{store}"
prometheus:
  url: "{prometheus}"
  poll_interval: 200ms
  step: 1s
  backfill: 10s
  lag: 0s
  timeout: 2s
leader_election:
  enabled: true
  namespace: {NS}
  lease_name: {LEASE}
  lease_duration: 2s
  renew_deadline: 1s
  retry_period: 100ms
  api_url: "{kube}"
signals:
  - name: requests
    query: 'rate(requests_total{{$selector}}[1m])'
    selectors: {{ service: cart }}
"#,
            store = dir.join(format!("{name}.db")).display(),
            kube = kube.url(),
        ) + extra;
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, yaml).expect("write config");
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_aiopsd"))
            .args(["run", "--config"])
            .arg(&config)
            .env("POD_NAME", name)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start aiopsd");
        Self {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    async fn wait_for(&self, what: &str, path: &str, accept: impl Fn(u16, &str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((status, body)) = self.get(path).await {
                if accept(status, &body) {
                    return body;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to 30 s) for the process to exit by itself.
    async fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "aiopsd did not exit; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        self.exit_status().await
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    support::metric_value(text, name)
}

async fn fake_prometheus() -> FakePrometheus {
    FakePrometheus::start(|_query, t| {
        vec![Point::new(
            &[("service", "cart"), ("namespace", "shop")],
            10.0 + ((t / 1000) % 3) as f64,
        )]
    })
    .await
}

#[tokio::test]
async fn a_standby_daemon_is_ready_but_polls_nothing_until_it_holds_the_lease() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kube = FakeKube::start().await;
    let prometheus = fake_prometheus().await;
    // Another replica holds the lease (and keeps holding it: 1 h).
    kube.put_lease(NS, LEASE, "aiopsd-other", 3600);
    let mut replica = Replica::start(dir.path(), "aiopsd-b", &kube, &prometheus.url());

    // A standby is Ready (so PodDisruptionBudgets and rolling updates work
    // as usual) and says it is a standby; the Service routes to the leader's
    // labelled pod only.
    let body = replica
        .wait_for("standby readiness", "/readyz", |status, body| {
            status == 200 && body.contains("standby")
        })
        .await;
    let readiness: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(readiness["ready"], true);
    assert_eq!(
        readiness["role"],
        aiopsd::daemon::STANDBY_REASON,
        "{readiness}"
    );
    assert_eq!(replica.get("/healthz").await.map(|r| r.0), Some(200));
    // The standby keeps trying but starts nothing.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(prometheus.query_count(), 0, "a standby must not poll");
    let (_, metrics) = replica.get("/metrics").await.expect("metrics");
    assert_eq!(metric(&metrics, "aiopsd_leader"), Some(0.0), "{metrics}");
    assert_eq!(kube.holder(NS, LEASE).as_deref(), Some("aiopsd-other"));

    // The other replica goes away cleanly (releases): this one takes over,
    // starts the pipeline and becomes ready.
    kube.put_lease(NS, LEASE, "", 1);
    replica
        .wait_for("readiness as leader", "/readyz", |status, body| {
            status == 200 && body.contains("\"role\":\"leader\"")
        })
        .await;
    assert_eq!(kube.holder(NS, LEASE).as_deref(), Some("aiopsd-b"));
    assert!(prometheus.query_count() > 0);
    let (_, metrics) = replica.get("/metrics").await.expect("metrics");
    assert_eq!(metric(&metrics, "aiopsd_leader"), Some(1.0));

    // SIGTERM: exits 0 and hands the lease over.
    let status = replica.terminate().await;
    assert!(status.success(), "exit {status:?}; log:\n{}", replica.log());
    assert_eq!(
        kube.holder(NS, LEASE),
        None,
        "the lease is released on shutdown"
    );
}

#[tokio::test]
async fn a_daemon_that_loses_the_lease_stops_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kube = FakeKube::start().await;
    let prometheus = fake_prometheus().await;
    let mut replica = Replica::start(dir.path(), "aiopsd-a", &kube, &prometheus.url());
    replica
        .wait_for("readiness as leader", "/readyz", |status, body| {
            status == 200 && body.contains("\"role\":\"leader\"")
        })
        .await;
    assert_eq!(kube.holder(NS, LEASE).as_deref(), Some("aiopsd-a"));

    // Someone else writes the lease (e.g. an operator, or a replica that
    // wrongly believes it expired): the leader must not keep running.
    kube.put_lease(NS, LEASE, "aiopsd-usurper", 3600);
    let status = replica.exit_status().await;
    assert_eq!(status.code(), Some(1), "log:\n{}", replica.log());
    let log = replica.log();
    assert!(
        log.contains("lost the leader lease") && log.contains("aiopsd-usurper"),
        "{log}"
    );
    // It did not release someone else's lease on the way out.
    assert_eq!(kube.holder(NS, LEASE).as_deref(), Some("aiopsd-usurper"));
}

/// A pod for each replica, so the leader can label its own.
fn seed_replica_pod(kube: &FakeKube, name: &str) {
    kube.put(json!({
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "aiopsd"}},
        "spec": {"containers": [{"name": "aiopsd", "image": "aiopsd"}]},
    }));
}

fn leader_label(kube: &FakeKube, pod: &str) -> Option<String> {
    kube.object("pods", NS, pod)?["metadata"]["labels"][aiopsd::leader::LEADER_LABEL]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn with_two_replicas_only_the_lease_holder_labels_its_pod_and_acts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kube = FakeKube::start().await;
    let prometheus = fake_prometheus().await;
    kube.seed_deployment("shop", "cart", 2, 2);
    kube.seed_pods("shop", "cart", 2);
    seed_replica_pod(&kube, "aiopsd-a");
    seed_replica_pod(&kube, "aiopsd-b");
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).expect("policies dir");
    std::fs::write(
        policies.join("scale.yaml"),
        r#"apiVersion: aiopsd.io/v1
kind: Policy
rules:
  - name: scale-cart
    match: { namespaces: { allow: [shop] }, workloads: { names: [cart] } }
    action: { scale: { by: 1, min_replicas: 1, max_replicas: 4, max_step: 1 } }
    limits: { mode: auto, cooldown: 1h }
"#,
    )
    .expect("policy");
    let extra = format!(
        r#"
remediation:
  enabled: true
  policies: "{}"
  decide_after: 0s
  kill_switch_configmap: null
  api_url: "{}"
"#,
        policies.display(),
        kube.url()
    );
    let a = Replica::start_with(dir.path(), "aiopsd-a", &kube, &prometheus.url(), &extra);
    a.wait_for("a leads", "/readyz", |status, body| {
        status == 200 && body.contains("\"role\":\"leader\"")
    })
    .await;
    let b = Replica::start_with(dir.path(), "aiopsd-b", &kube, &prometheus.url(), &extra);
    b.wait_for("b stands by", "/readyz", |status, body| {
        status == 200 && body.contains("standby")
    })
    .await;
    within(
        Duration::from_secs(10),
        "the leader label on aiopsd-a",
        async {
            while leader_label(&kube, "aiopsd-a").as_deref() != Some("true") {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    assert_eq!(
        leader_label(&kube, "aiopsd-b"),
        None,
        "a standby carries no label"
    );

    // The same alert reaches both replicas (as if the Service had routed
    // it to either): only the leader's pipeline opens an incident and acts.
    let alert = json!({
        "version": "4", "groupKey": "{}:{alertname=\"CartDown\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "aiopsd", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "CartDown", "namespace": "shop", "service": "cart", "severity": "critical"},
            "annotations": {}, "startsAt": aiopsd::signal::format_ts(aiopsd::signal::now_ms()),
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "f1"
        }]
    });
    for replica in [&a, &b] {
        let status = reqwest::Client::new()
            .post(format!("{}/api/v1/alerts/alertmanager", replica.base))
            .header("content-type", "application/json")
            .body(alert.to_string())
            .send()
            .await
            .expect("webhook")
            .status();
        assert_eq!(status.as_u16(), 200);
    }
    within(Duration::from_secs(15), "the scale to 3 replicas", async {
        loop {
            let replicas = kube
                .object("deployments", "shop", "cart")
                .and_then(|d| d["spec"]["replicas"].as_i64());
            if replicas == Some(3) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // Give the standby every chance to (wrongly) act too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let scales = kube
        .calls()
        .iter()
        .filter(|c| c.verb == "patch" && c.resource == "deployments/scale")
        .count();
    assert_eq!(scales, 1, "exactly one replica acted");
    let (_, body) = a.get("/api/v1/actions").await.expect("actions");
    assert!(
        body.contains("scale-cart"),
        "the leader recorded it: {body}"
    );
    let (_, body) = b.get("/api/v1/actions").await.expect("actions");
    assert!(!body.contains("scale-cart"), "the standby did not: {body}");
}
