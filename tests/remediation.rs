//! The remediation stage end to end below the daemon: incidents in a real
//! store, the real policy gate, the production kube client over HTTP to
//! the wire-level fake API server (tests/support/fake_kube.rs), and the
//! stage's reconcile passes — decision → write-ahead → action →
//! verification → (revert, escalation), plus the refusals, the kill
//! switch, crash recovery and limits that must survive a restart.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aiopsd::config::HumanDuration;
use aiopsd::diagnose::bundle::SignalKinds;
use aiopsd::diagnose::catalogue::Catalogue;
use aiopsd::diagnose::diagnoser::Diagnoser;
use aiopsd::incident::{
    ActionPlanRecord, Incident, IncidentState, Peak, Severity, SignalEvidence, Store,
    TimelineEntry, UpdateKind,
};
use aiopsd::policy::{PolicyReloader, PolicySet};
use aiopsd::publish::approvals::{Channel, Decision, Verdict};
use aiopsd::remediate::config::RemediationConfig;
use aiopsd::remediate::kube::{client, KubeCluster};
use aiopsd::remediate::plan::{PlannedAction, PreState, WorkloadKind, WorkloadRef};
use aiopsd::remediate::record::{DecisionOutcome, DecisionRecord, ExecState};
use aiopsd::remediate::stage::{Clock, Cluster, Remediator, KILL_SWITCH_SETTING};
use aiopsd::signal::{now_ms, SeriesKey, TimestampMs};
use aiopsd::telemetry::Metrics;

use support::fake_kube::FakeKube;

const NS: &str = "shop";
const SIGNAL: &str = "error_ratio";
const MIN: i64 = 60_000;

/// One rule: scale `web` up by one, automatically, once per 30 minutes.
const POLICY: &str = r#"
apiVersion: aiopsd.io/v1
kind: Policy
rules:
  - name: scale-web
    match:
      namespaces: { allow: [shop] }
      workloads: { kinds: [Deployment], names: [web] }
    action:
      scale: { by: 1, min_replicas: 1, max_replicas: 5, max_step: 1 }
    limits:
      mode: MODE
      cooldown: 30m
      max_data_age: 10m
"#;

struct Harness {
    kube: FakeKube,
    store: Store,
    mode: &'static str,
    config: RemediationConfig,
}

impl Harness {
    async fn start(mode: &'static str) -> Self {
        aiopsd::install_crypto_provider();
        let kube = FakeKube::start().await;
        kube.seed_deployment(NS, "web", 2, 2);
        kube.seed_pods(NS, "web", 2);
        let config = RemediationConfig {
            enabled: true,
            decide_after: HumanDuration(Duration::from_secs(60)),
            settle: HumanDuration(Duration::from_secs(60)),
            verify_window: HumanDuration(Duration::from_secs(120)),
            verify_timeout: HumanDuration(Duration::from_secs(600)),
            kill_switch_configmap: None,
            ..RemediationConfig::default()
        };
        Self {
            kube,
            store: Store::open_in_memory().expect("store"),
            mode,
            config,
        }
    }

    /// A fresh stage on the same store and API server, as after a restart.
    async fn remediator(&self) -> Remediator {
        let c = client(Some(&self.kube.url())).await.expect("client");
        let set = PolicySet::from_yaml("test.yaml", &POLICY.replace("MODE", self.mode))
            .expect("test policy loads");
        let diagnoser =
            Diagnoser::new(SignalKinds::new(), Catalogue::builtin().expect("catalogue"));
        Remediator::new(
            self.store.clone(),
            Arc::new(Metrics::new()),
            Cluster::Kube(KubeCluster::new(c)),
            diagnoser,
            PolicyReloader::fixed(set),
            self.config.clone(),
            Clock::Wall,
        )
    }

    /// Stores an open incident on `web`, opened five minutes ago, its
    /// signal read up to `data_until`.
    fn open_incident(&self, last_anomaly: TimestampMs, data_until: TimestampMs) -> i64 {
        let inc = incident(now_ms() - 5 * MIN, last_anomaly);
        let id = self
            .store
            .save_incident_with_events(&inc, UpdateKind::Opened, now_ms())
            .expect("save")
            .id;
        self.store.set_cursor(SIGNAL, data_until).expect("cursor");
        id
    }

    fn replicas(&self) -> i64 {
        self.kube
            .object("deployments", NS, "web")
            .and_then(|d| d["spec"]["replicas"].as_i64())
            .expect("web has replicas")
    }

    fn incident(&self, id: i64) -> Incident {
        self.store.get_incident(id).expect("read").expect("found")
    }

    fn scale_writes(&self) -> usize {
        self.kube
            .calls()
            .iter()
            .filter(|c| c.verb == "patch" && c.resource == "deployments/scale")
            .count()
    }
}

fn incident(opened_at: TimestampMs, last_anomaly: TimestampMs) -> Incident {
    let group: BTreeMap<String, String> = [("namespace", NS), ("deployment", "web")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Incident {
        id: None,
        cluster: "test".into(),
        group: group.clone(),
        state: IncidentState::Open,
        severity: Severity::Critical,
        opened_at,
        last_anomaly_at: last_anomaly,
        resolved_at: None,
        anomaly_count: 5,
        signals: vec![SignalEvidence {
            series: SeriesKey::new(SIGNAL, group),
            first_at: opened_at,
            last_at: last_anomaly,
            anomaly_count: 5,
            peak: Peak {
                t: opened_at,
                value: 0.15,
                expected: 0.005,
                spread: 0.002,
                score: 70.0,
            },
            samples: Vec::new(),
            anomalous_at: Vec::new(),
        }],
        alerts: Vec::new(),
        diagnosis: None,
        decisions: Vec::new(),
        logs: Vec::new(),
        prediction: None,
        timeline: vec![TimelineEntry {
            at: opened_at,
            kind: "opened".into(),
            message: "Opened.".into(),
        }],
    }
}

fn only_action(h: &Harness, id: i64) -> aiopsd::publish::approvals::PendingAction {
    let actions = h.store.actions_for_incident(id).expect("actions");
    assert_eq!(actions.len(), 1, "{actions:?}");
    actions.into_iter().next().expect("one")
}

fn exec_state(h: &Harness, id: i64) -> ExecState {
    only_action(h, id).execution.expect("execution").state
}

#[tokio::test]
async fn incident_to_decision_to_action_to_verified() {
    let h = Harness::start("auto").await;
    let now = now_ms();
    let id = h.open_incident(now - MIN, now - 10_000);
    let mut stage = h.remediator().await;

    stage.reconcile().await.expect("pass");
    let inc = h.incident(id);
    assert_eq!(inc.decisions.len(), 1, "one decision per incident");
    let d = &inc.decisions[0];
    assert_eq!(d.outcome, DecisionOutcome::Execute, "{d:?}");
    assert_eq!(d.rule, "test.yaml:scale-web", "the decision names the rule");
    assert!(inc.diagnosis.is_some(), "diagnosed before deciding");
    assert_eq!(h.replicas(), 3, "scaled by one, within bounds");
    assert_eq!(exec_state(&h, id), ExecState::Executed);
    let action = only_action(&h, id);
    assert_eq!(
        action.execution.as_ref().and_then(|e| e.pre_state.clone()),
        Some(PreState::Replicas {
            target: web(),
            replicas: 2
        }),
        "the pre-state was recorded before the change"
    );

    // Data arrives past the settle time and the window, with no anomaly.
    h.store
        .set_cursor(SIGNAL, now + 10 * MIN)
        .expect("cursor moves");
    stage.reconcile().await.expect("pass");
    assert_eq!(exec_state(&h, id), ExecState::Verified);
    assert_eq!(h.replicas(), 3, "a verified action stays");
    let reasons: Vec<String> = h
        .kube
        .events(NS)
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect();
    assert!(
        reasons.iter().any(|r| r == "Remediated") && reasons.iter().any(|r| r == "Verified"),
        "Kubernetes Events on the target: {reasons:?}"
    );

    // Deciding is once per incident: more passes change nothing.
    stage.reconcile().await.expect("pass");
    assert_eq!(h.incident(id).decisions.len(), 1);
    assert_eq!(h.scale_writes(), 1);
}

#[tokio::test]
async fn an_action_that_did_not_help_is_reverted_and_the_incident_escalated() {
    let h = Harness::start("auto").await;
    let now = now_ms();
    let id = h.open_incident(now - MIN, now - 10_000);
    let mut stage = h.remediator().await;
    stage.reconcile().await.expect("pass");
    assert_eq!(h.replicas(), 3);

    // The signal is still anomalous well after the settle time.
    let mut inc = h.incident(id);
    inc.last_anomaly_at = now + 5 * MIN;
    inc.signals[0].last_at = now + 5 * MIN;
    h.store
        .save_incident_with_events(&inc, UpdateKind::Updated, now)
        .expect("update");
    h.store.set_cursor(SIGNAL, now + 10 * MIN).expect("cursor");
    stage.reconcile().await.expect("pass");

    let action = only_action(&h, id);
    let exec = action.execution.expect("execution");
    assert_eq!(exec.state, ExecState::Reverted, "{exec:?}");
    assert_eq!(h.replicas(), 2, "back to the pre-state");
    let inc = h.incident(id);
    let escalation = inc
        .timeline
        .iter()
        .find(|e| e.kind == "escalated")
        .expect("escalated");
    assert!(
        escalation.message.contains("did not help") && escalation.message.contains("reverted"),
        "{}",
        escalation.message
    );
}

#[tokio::test]
async fn a_verification_without_data_fails_and_reverts_never_passes() {
    let mut h = Harness::start("auto").await;
    h.config.verify_timeout = HumanDuration(Duration::from_millis(1));
    let now = now_ms();
    let id = h.open_incident(now - MIN, now - 10_000);
    let mut stage = h.remediator().await;
    stage.reconcile().await.expect("pass");
    assert!(h.scale_writes() >= 1, "the action ran");

    // The source is down: the cursor never moves past the action. (With a
    // 1 ms timeout the verdict may already come in the first pass.)
    tokio::time::sleep(Duration::from_millis(20)).await;
    stage.reconcile().await.expect("pass");
    let exec = only_action(&h, id).execution.expect("execution");
    assert_eq!(exec.state, ExecState::Reverted, "{exec:?}");
    assert_eq!(h.replicas(), 2);
    let inc = h.incident(id);
    assert!(
        inc.timeline
            .iter()
            .any(|e| e.kind == "escalated" && e.message.contains("data only up to")),
        "{:?}",
        inc.timeline
    );
}

#[tokio::test]
async fn the_kill_switch_refuses_and_the_decision_says_so() {
    let h = Harness::start("auto").await;
    h.store
        .set_setting(
            KILL_SWITCH_SETTING,
            "on",
            "alice",
            "incident review",
            now_ms(),
        )
        .expect("switch");
    let now = now_ms();
    let id = h.open_incident(now - MIN, now - 10_000);
    h.remediator().await.reconcile().await.expect("pass");
    let d = &h.incident(id).decisions[0];
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (DecisionOutcome::Refused, "kill-switch")
    );
    assert!(d.reasons.iter().any(|r| r.contains("alice")), "{d:?}");
    assert_eq!(h.replicas(), 2, "nothing changed");
    assert_eq!(h.scale_writes(), 0);
}

#[tokio::test]
async fn stale_evidence_is_refused() {
    let h = Harness::start("auto").await;
    let now = now_ms();
    // The signal has not been read for an hour (max_data_age is 10m).
    let id = h.open_incident(now - 61 * MIN, now - 60 * MIN);
    h.remediator().await.reconcile().await.expect("pass");
    let d = &h.incident(id).decisions[0];
    assert_eq!(d.outcome, DecisionOutcome::Refused, "{d:?}");
    assert!(
        d.reasons
            .iter()
            .any(|r| r.contains("max_data_age") || r.contains("old")),
        "{d:?}"
    );
    assert_eq!(h.replicas(), 2);
}

#[tokio::test]
async fn a_cooldown_survives_a_restart() {
    let h = Harness::start("auto").await;
    let now = now_ms();
    let first = h.open_incident(now - MIN, now - 10_000);
    h.remediator().await.reconcile().await.expect("pass");
    assert_eq!(h.replicas(), 3);

    // The first incident resolves; a second one on the same workload is
    // decided by a new stage (a restart), which reads the history.
    let mut inc = h.incident(first);
    inc.state = IncidentState::Resolved;
    inc.resolved_at = Some(now);
    h.store
        .save_incident_with_events(&inc, UpdateKind::Resolved, now)
        .expect("resolve");
    let second = h
        .store
        .save_incident_with_events(&incident(now - 4 * MIN, now - MIN), UpdateKind::Opened, now)
        .expect("second")
        .id;
    h.remediator().await.reconcile().await.expect("pass");
    let d = &h.incident(second).decisions[0];
    assert_eq!(d.outcome, DecisionOutcome::Refused, "{d:?}");
    assert!(
        d.reasons
            .iter()
            .any(|r| r.contains("scale-web") && r.contains("cooldown")),
        "{d:?}"
    );
    assert_eq!(h.replicas(), 3, "no second scale");
}

#[tokio::test]
async fn approve_mode_waits_for_a_person_then_acts() {
    let h = Harness::start("approve").await;
    let now = now_ms();
    let id = h.open_incident(now - MIN, now - 10_000);
    let mut stage = h.remediator().await;
    stage.reconcile().await.expect("pass");
    assert_eq!(
        h.incident(id).decisions[0].outcome,
        DecisionOutcome::NeedsApproval
    );
    assert_eq!(h.replicas(), 2, "nothing before approval");
    stage.reconcile().await.expect("pass");
    assert_eq!(h.replicas(), 2, "still nothing");

    let action = only_action(&h, id);
    let decided = h
        .store
        .decide_action(
            action.id,
            &Decision {
                verdict: Verdict::Approve,
                by: "alice".into(),
                reason: "looks right".into(),
                channel: Channel::Api,
                nonce: None,
            },
            now_ms(),
        )
        .expect("decide");
    assert!(decided.result.is_ok());
    stage.reconcile().await.expect("pass");
    assert_eq!(h.replicas(), 3, "approved: it runs");
    assert_eq!(exec_state(&h, id), ExecState::Executed);
}

#[tokio::test]
async fn a_crash_between_intent_and_outcome_never_runs_the_action_twice() {
    let h = Harness::start("auto").await;
    let now = now_ms();
    let id = h.open_incident(now - MIN, now - 10_000);
    // What the stage writes before the API call, then "crashes".
    let plan = scale_web_to_3();
    let action = write_ahead(&h, id, &plan, now);
    // The API call went through just before the crash.
    let c = client(Some(&h.kube.url())).await.expect("client");
    KubeCluster::new(c)
        .execute(&format!("action-{}", action.id), &plan)
        .await
        .expect("applied before the crash");
    assert_eq!(h.replicas(), 3);
    let writes = h.scale_writes();

    // Restart: two new stages in turn reconcile; neither scales again.
    for _ in 0..2 {
        h.remediator().await.reconcile().await.expect("pass");
    }
    assert_eq!(h.replicas(), 3, "not 4: the action ran once");
    assert_eq!(h.scale_writes(), writes, "no second scale call");
    let exec = only_action(&h, id).execution.expect("execution");
    assert_eq!(exec.state, ExecState::Executed, "{exec:?}");
    assert!(
        exec.message
            .as_deref()
            .unwrap_or("")
            .contains("before a restart"),
        "{exec:?}"
    );
}

#[tokio::test]
async fn an_intent_that_never_reached_the_api_is_completed_once_after_a_restart() {
    let h = Harness::start("auto").await;
    let now = now_ms();
    let id = h.open_incident(now - MIN, now - 10_000);
    write_ahead(&h, id, &scale_web_to_3(), now);

    for _ in 0..2 {
        h.remediator().await.reconcile().await.expect("pass");
    }
    assert_eq!(h.replicas(), 3, "completed exactly once");
    assert_eq!(h.scale_writes(), 1);
}

fn scale_web_to_3() -> PlannedAction {
    PlannedAction::Scale {
        target: web(),
        from: 2,
        to: 3,
        via_hpa: false,
    }
}

/// What the stage writes before the API call (decision, action, intent
/// with pre-state) — and then a "crash": nothing after it.
fn write_ahead(
    h: &Harness,
    incident: i64,
    plan: &PlannedAction,
    now: TimestampMs,
) -> aiopsd::publish::approvals::PendingAction {
    let record = DecisionRecord {
        at: now,
        outcome: DecisionOutcome::Execute,
        rule: "test.yaml:scale-web".into(),
        reasons: Vec::new(),
        action: Some(plan.clone()),
        proposed_by: "policy".into(),
        action_id: None,
    };
    let (action, _) = h
        .store
        .record_decision(
            incident,
            &record,
            Some(&ActionPlanRecord {
                mode: "auto".into(),
                pods_touched: 1,
                approval_ttl_ms: 60_000,
            }),
            now,
        )
        .expect("decision");
    let action = action.expect("action");
    let pre = PreState::Replicas {
        target: web(),
        replicas: 2,
    };
    assert!(h
        .store
        .begin_execution(action.id, &pre, now)
        .expect("intent"));
    action
}

fn web() -> WorkloadRef {
    WorkloadRef {
        namespace: NS.into(),
        kind: WorkloadKind::Deployment,
        name: "web".into(),
    }
}
