//! The gate's behaviour, one test per limit: each asserts the outcome
//! *and* that the decision names the rule and the limit, since "refused"
//! without a reason is what an operator cannot act on.

use std::collections::BTreeMap;

use indoc::indoc;

use super::*;
use crate::diagnose::{Diagnosis, Hypothesis, ProposedBy};
use crate::incident::{Incident, IncidentState, Peak, Severity, SignalEvidence};
use crate::remediate::plan::{
    ActionVerb, HpaState, PlannedAction, WorkloadKind, WorkloadRef, WorkloadState,
};
use crate::remediate::record::DecisionOutcome;
use crate::signal::SeriesKey;

/// Monday 2026-11-23 10:00 UTC.
const NOW: i64 = 1_795_428_000_000;
const MIN: i64 = 60_000;

fn set(yaml: &str) -> PolicySet {
    PolicySet::from_yaml("policies/test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn incident(severity: Severity) -> Incident {
    let group: BTreeMap<String, String> = [("namespace", "shop"), ("service", "cart")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Incident {
        id: Some(7),
        cluster: "test".into(),
        group: group.clone(),
        state: IncidentState::Open,
        severity,
        opened_at: NOW - 10 * MIN,
        last_anomaly_at: NOW - MIN,
        resolved_at: None,
        anomaly_count: 9,
        signals: vec![SignalEvidence {
            series: SeriesKey::new("cpu_saturation", group),
            first_at: NOW - 10 * MIN,
            last_at: NOW - MIN,
            anomaly_count: 9,
            peak: Peak {
                t: NOW - 2 * MIN,
                value: 0.97,
                expected: 0.5,
                spread: 0.05,
                score: 9.4,
            },
            samples: Vec::new(),
            anomalous_at: Vec::new(),
        }],
        alerts: Vec::new(),
        diagnosis: None,
        decisions: Vec::new(),
        logs: Vec::new(),
        prediction: None,
        timeline: Vec::new(),
    }
}

fn cart() -> WorkloadRef {
    WorkloadRef {
        namespace: "shop".into(),
        kind: WorkloadKind::Deployment,
        name: "cart".into(),
    }
}

fn workload(replicas: i32) -> WorkloadState {
    WorkloadState {
        target: cart(),
        labels: BTreeMap::from([("tier".to_string(), "frontend".to_string())]),
        replicas,
        ready_replicas: replicas,
        hpa: None,
        revision: Some(5),
        namespace_pods: 40,
        resource_version: None,
    }
}

struct Case {
    incident: Incident,
    workload: WorkloadState,
    history: Vec<PastAction>,
    now: i64,
    data_time: Option<i64>,
    kill: Option<&'static str>,
    proposal: Option<Proposal>,
    diagnosis: Option<Diagnosis>,
    pod: Option<&'static str>,
    rollback: Option<RollbackCandidate>,
}

impl Case {
    fn new() -> Case {
        Case {
            incident: incident(Severity::Critical),
            workload: workload(2),
            history: Vec::new(),
            now: NOW,
            data_time: Some(NOW - 30_000),
            kill: None,
            proposal: None,
            diagnosis: None,
            pod: None,
            rollback: None,
        }
    }

    fn decide(&self, set: &PolicySet) -> Decision {
        decide(
            set,
            &GateInput {
                incident: &self.incident,
                kind: IncidentKind::of(&self.incident),
                workload: &self.workload,
                proposal: self.proposal,
                diagnosis: self.diagnosis.as_ref(),
                history: &self.history,
                now: self.now,
                data_time: self.data_time,
                kill_switch: self.kill,
                pod: self.pod,
                rollback: self.rollback,
            },
        )
    }
}

fn past(target: WorkloadRef, ago_ms: i64) -> PastAction {
    PastAction {
        target,
        verb: ActionVerb::Scale,
        at: NOW - ago_ms,
        pods_touched: 1,
        executed: true,
    }
}

fn other(ns: &str, name: &str) -> WorkloadRef {
    WorkloadRef {
        namespace: ns.into(),
        kind: WorkloadKind::Deployment,
        name: name.into(),
    }
}

/// Asserts that some reason names `rule` and contains every needle.
#[track_caller]
fn assert_reason(d: &Decision, rule: &str, needles: &[&str]) {
    assert!(
        d.reasons
            .iter()
            .any(|r| r.starts_with(rule) && needles.iter().all(|n| r.contains(n))),
        "no reason from {rule} with {needles:?} in {:#?}",
        d.reasons
    );
}

const SCALE: &str = indoc! {r#"
    apiVersion: aiopsd.io/v1
    kind: Policy
    rules:
      - name: scale-cart
        match:
          namespaces: { allow: [shop] }
          workloads: { kinds: [Deployment], names: ["cart*"] }
          incident: { min_severity: critical, signals: [cpu_*] }
        action:
          scale: { by: 3, min_replicas: 2, max_replicas: 4, max_step: 5 }
        limits:
          mode: auto
"#};

const ID: &str = "test.yaml:scale-cart";

#[test]
fn a_matching_rule_executes_with_bounds_applied() {
    let d = Case::new().decide(&set(SCALE));
    assert_eq!(d.outcome, DecisionOutcome::Execute, "{:#?}", d.reasons);
    assert_eq!(d.rule, ID);
    assert_eq!(
        d.action,
        Some(PlannedAction::Scale {
            target: cart(),
            from: 2,
            to: 4,
            via_hpa: false
        })
    );
    assert_eq!(d.pods_touched, 2);
    assert_reason(&d, ID, &["target 5 bounded to 4", "max_replicas"]);
    assert_reason(&d, ID, &["mode auto"]);
    let rec = d.to_record(Some(ProposedBy::Llm));
    assert_eq!((rec.rule.as_str(), rec.proposed_by.as_str()), (ID, "llm"));
    assert_eq!(d.to_record(None).proposed_by, "policy");
}

#[test]
fn max_step_bounds_the_change_and_scaling_to_the_current_value_is_no_action() {
    let s = set(&SCALE.replace(
        "by: 3, min_replicas: 2, max_replicas: 4, max_step: 5",
        "to: 9, max_replicas: 10, max_step: 2",
    ));
    let d = Case::new().decide(&s);
    assert_eq!(d.outcome, DecisionOutcome::Execute);
    assert!(
        matches!(d.action, Some(PlannedAction::Scale { from: 2, to: 4, .. })),
        "{:?}",
        d.action
    );
    assert_reason(&d, ID, &["max_step"]);

    let mut at_max = Case::new();
    at_max.workload = workload(4);
    let d = at_max.decide(&set(SCALE));
    assert_eq!(d.outcome, DecisionOutcome::Refused);
    assert_eq!(d.rule, ID);
    assert_eq!(d.action, None);
    assert_reason(&d, ID, &["no change", "max_replicas (4)"]);
}

#[test]
fn a_scale_up_rule_never_scales_down_a_workload_above_its_max() {
    let mut c = Case::new();
    c.workload = workload(9);
    let d = c.decide(&set(SCALE));
    assert_eq!(d.outcome, DecisionOutcome::Refused);
    assert_eq!(d.action, None);
    assert_reason(&d, ID, &["already at or above"]);
}

#[test]
fn hpa_raise_min_scales_through_the_hpa_and_refuse_refuses() {
    let mut c = Case::new();
    c.workload.hpa = Some(HpaState {
        name: "cart".into(),
        min_replicas: 2,
        max_replicas: 3,
    });
    let d = c.decide(&set(SCALE));
    assert_eq!(d.outcome, DecisionOutcome::Refused);
    assert_reason(&d, ID, &["action.scale.hpa", "refuse"]);

    let d = c.decide(&set(
        &SCALE.replace("max_step: 5", "max_step: 5, hpa: raise_min")
    ));
    assert_eq!(d.outcome, DecisionOutcome::Execute, "{:#?}", d.reasons);
    assert_eq!(
        d.action,
        Some(PlannedAction::Scale {
            target: cart(),
            from: 2,
            to: 3,
            via_hpa: true
        })
    );
    assert_reason(&d, ID, &["maxReplicas 3"]);
}

#[test]
fn cooldown_refuses_and_names_the_limit_then_expires() {
    let mut c = Case::new();
    c.history = vec![past(cart(), 3 * MIN)];
    let d = c.decide(&set(SCALE));
    assert_eq!((d.outcome, d.rule.as_str()), (DecisionOutcome::Refused, ID));
    assert_reason(&d, ID, &["limits.cooldown", "3m ago", "10m"]);

    c.history = vec![past(cart(), 11 * MIN)];
    assert_eq!(c.decide(&set(SCALE)).outcome, DecisionOutcome::Execute);

    // A decision that was never carried out does not count.
    let mut not_run = past(cart(), MIN);
    not_run.executed = false;
    c.history = vec![not_run];
    assert_eq!(c.decide(&set(SCALE)).outcome, DecisionOutcome::Execute);
}

#[test]
fn rate_limits_count_the_last_hour_at_each_level() {
    let s = set(&SCALE.replace(
        "mode: auto",
        "mode: auto\n      cooldown: 1m\n      max_actions_per_hour: { workload: 2, namespace: 3, cluster: 4 }",
    ));
    let cases = [
        (
            vec![past(cart(), 20 * MIN), past(cart(), 30 * MIN)],
            "max_actions_per_hour.workload",
            "2 actions on this workload",
        ),
        (
            vec![
                past(cart(), 20 * MIN),
                past(other("shop", "a"), 5 * MIN),
                past(other("shop", "b"), 5 * MIN),
            ],
            "max_actions_per_hour.namespace",
            "3 actions in this namespace",
        ),
        (
            vec![
                past(other("x", "a"), 5 * MIN),
                past(other("y", "a"), 5 * MIN),
                past(other("z", "a"), 5 * MIN),
                past(other("shop", "b"), 5 * MIN),
            ],
            "max_actions_per_hour.cluster",
            "4 actions in the cluster",
        ),
    ];
    for (history, limit, text) in cases {
        let mut c = Case::new();
        c.history = history;
        let d = c.decide(&s);
        assert_eq!(
            (d.outcome, d.rule.as_str()),
            (DecisionOutcome::Refused, ID),
            "{limit}"
        );
        assert_reason(&d, ID, &[limit, text]);
    }
    // Older than an hour: forgotten.
    let mut c = Case::new();
    c.history = vec![
        past(cart(), 61 * MIN),
        past(cart(), 70 * MIN),
        past(cart(), 80 * MIN),
    ];
    assert_eq!(c.decide(&s).outcome, DecisionOutcome::Execute);
}

#[test]
fn blast_radius_refuses_actions_touching_too_much_of_a_namespace() {
    let restart = indoc! {"
        apiVersion: aiopsd.io/v1
        kind: Policy
        rules:
          - name: restart
            action: { restart: { max_unavailable: 1 } }
            limits: { mode: auto, blast_radius_percent: 25 }
    "};
    let mut c = Case::new();
    c.workload = workload(6);
    c.workload.namespace_pods = 12;
    let d = c.decide(&set(restart));
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (DecisionOutcome::Refused, "test.yaml:restart")
    );
    assert_reason(
        &d,
        "test.yaml:restart",
        &["limits.blast_radius_percent", "6 of 12", "50%", "25%"],
    );

    c.workload.namespace_pods = 40;
    let d = c.decide(&set(restart));
    assert_eq!(d.outcome, DecisionOutcome::Execute);
    assert_eq!(
        d.action,
        Some(PlannedAction::Restart {
            target: cart(),
            max_unavailable: 1
        })
    );

    // An unknown pod count is no licence.
    c.workload.namespace_pods = 0;
    let d = c.decide(&set(restart));
    assert_eq!(d.outcome, DecisionOutcome::Refused);
    assert_reason(
        &d,
        "test.yaml:restart",
        &["blast_radius_percent", "unknown"],
    );
}

#[test]
fn freeze_windows_refuse_per_rule_and_globally() {
    let weekly = SCALE.replace(
        "mode: auto",
        "mode: auto\n      freeze: [{ days: [mon], hours: \"09:00-12:00\" }]",
    );
    let d = Case::new().decide(&set(&weekly));
    assert_eq!((d.outcome, d.rule.as_str()), (DecisionOutcome::Refused, ID));
    assert_reason(&d, ID, &["limits.freeze", "mon 09:00-12:00 UTC"]);

    let mut later = Case::new();
    later.now = NOW + 3 * 60 * MIN;
    later.data_time = Some(later.now);
    assert_eq!(
        later.decide(&set(&weekly)).outcome,
        DecisionOutcome::Execute
    );

    let global = SCALE.replace(
        "rules:",
        "freeze:\n  - { from: 2026-11-20, until: 2026-11-30 }\nrules:",
    );
    let d = Case::new().decide(&set(&global));
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (DecisionOutcome::Refused, "test.yaml:freeze")
    );
    assert_reason(
        &d,
        "test.yaml:freeze",
        &["2026-11-20T00:00Z to 2026-11-30T00:00Z", "line 4"],
    );
}

#[test]
fn allowed_windows_refuse_outside_them() {
    let office = SCALE.replace(
        "mode: auto",
        "mode: auto\n      windows: [{ days: [weekdays], hours: \"13:00-17:00\" }]",
    );
    let d = Case::new().decide(&set(&office));
    assert_eq!((d.outcome, d.rule.as_str()), (DecisionOutcome::Refused, ID));
    assert_reason(&d, ID, &["limits.windows", "outside", "13:00-17:00"]);
    let mut c = Case::new();
    c.now = NOW + 4 * 60 * MIN;
    c.data_time = Some(c.now);
    assert_eq!(c.decide(&set(&office)).outcome, DecisionOutcome::Execute);
}

#[test]
fn deny_lists_refuse_globally_and_per_rule() {
    let global = SCALE.replace(
        "rules:",
        "deny:\n  namespaces: [kube-*]\n  labels: { aiopsd.io/ignore: \"true\" }\nrules:",
    );
    let mut c = Case::new();
    c.workload
        .labels
        .insert("aiopsd.io/ignore".into(), "true".into());
    let d = c.decide(&set(&global));
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (DecisionOutcome::Refused, "test.yaml:deny")
    );
    assert_reason(&d, "test.yaml:deny", &["aiopsd.io/ignore=true"]);

    let per_rule = SCALE.replace("allow: [shop]", "allow: [\"*\"], deny: [shop]");
    let d = Case::new().decide(&set(&per_rule));
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (DecisionOutcome::Refused, "default-deny")
    );
    assert!(
        d.trace.iter().any(|r| r.contains("match.namespaces.deny")),
        "{:#?}",
        d.trace
    );
}

#[test]
fn modes_dry_run_and_approve_and_dry_run_is_the_default() {
    let d = Case::new().decide(&set(&SCALE.replace("mode: auto", "mode: approve")));
    assert_eq!(d.outcome, DecisionOutcome::NeedsApproval);
    assert!(d.action.is_some());
    assert_reason(&d, ID, &["mode approve", "waits"]);

    let d = Case::new().decide(&set(&SCALE.replace("mode: auto", "cooldown: 5m")));
    assert_eq!(d.outcome, DecisionOutcome::DryRun);
    assert!(d.action.is_some());
    assert_reason(&d, ID, &["mode dry_run", "not run"]);
    assert!(!d.allows_execution());
}

#[test]
fn the_kill_switch_refuses_everything() {
    let mut c = Case::new();
    c.kill = Some("set by ConfigMap aiopsd-kill-switch");
    let d = c.decide(&set(SCALE));
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (DecisionOutcome::Refused, "kill-switch")
    );
    assert_eq!(d.action, None);
    assert_reason(&d, "kill-switch", &["ConfigMap aiopsd-kill-switch"]);
}

#[test]
fn stale_missing_or_future_data_is_refused() {
    let mut c = Case::new();
    c.data_time = Some(NOW - 7 * MIN);
    let d = c.decide(&set(SCALE));
    assert_eq!((d.outcome, d.rule.as_str()), (DecisionOutcome::Refused, ID));
    assert_reason(&d, ID, &["limits.max_data_age", "stale data", "7m", "5m"]);

    c.data_time = None;
    let d = c.decide(&set(SCALE));
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (DecisionOutcome::Refused, "stale-data")
    );

    c.data_time = Some(NOW + 60 * MIN);
    let d = c.decide(&set(SCALE));
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (DecisionOutcome::Refused, "stale-data")
    );
    assert_reason(&d, "stale-data", &["future"]);
}

#[test]
fn a_resolved_incident_gets_no_action() {
    let mut c = Case::new();
    c.incident.state = IncidentState::Resolved;
    let d = c.decide(&set(SCALE));
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (DecisionOutcome::Refused, "incident-resolved")
    );
}

const TWO_RULES: &str = indoc! {r#"
    apiVersion: aiopsd.io/v1
    kind: Policy
    rules:
      - name: restart-cart
        action: { restart: {} }
        limits: { mode: auto }
      - name: scale-cart
        action: { scale: { by: 1, max_replicas: 5 } }
        limits: { mode: auto }
"#};

#[test]
fn a_proposal_only_narrows_the_candidates() {
    let s = set(TWO_RULES);
    let d = Case::new().decide(&s);
    assert_eq!(d.rule, "test.yaml:restart-cart", "no proposal: first rule");

    let mut c = Case::new();
    c.proposal = Some(Proposal {
        verb: ActionVerb::Scale,
        by: ProposedBy::Llm,
    });
    let d = c.decide(&s);
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (DecisionOutcome::Execute, "test.yaml:scale-cart")
    );
    assert!(d
        .trace
        .iter()
        .any(|r| r.starts_with("test.yaml:restart-cart: not a candidate")));

    // A verb no rule allows is refused, not widened.
    c.proposal = Some(Proposal {
        verb: ActionVerb::Rollback,
        by: ProposedBy::Llm,
    });
    let d = c.decide(&s);
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (DecisionOutcome::Refused, "default-deny")
    );
    assert_eq!(d.action, None);
}

#[test]
fn a_condition_that_errors_at_run_time_is_not_met_and_says_why() {
    let s = set(indoc! {r#"
        apiVersion: aiopsd.io/v1
        kind: Policy
        rules:
          - name: leak
            condition: "!(diagnosis.cause == 'bad_rollout')"
            action: { restart: {} }
            limits: { mode: auto }
    "#});
    let d = Case::new().decide(&s);
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (DecisionOutcome::Refused, "default-deny")
    );
    assert_reason(
        &d,
        "test.yaml:leak",
        &["could not be evaluated", "diagnosis.cause", "no diagnosis"],
    );
}

#[test]
fn conditions_and_diagnosis_matching_read_the_diagnosis() {
    let s = set(indoc! {r#"
        apiVersion: aiopsd.io/v1
        kind: Policy
        rules:
          - name: leak
            match: { diagnosis: { causes: [memory_leak], min_confidence: 0.6 } }
            condition: "workload.ready_replicas >= 1 && incident.max_score > 5"
            action: { restart: {} }
            limits: { mode: approve }
    "#});
    let mut c = Case::new();
    let d = c.decide(&s);
    assert_reason(&d, "test.yaml:leak", &["needs a diagnosis"]);
    c.diagnosis = Some(Diagnosis {
        hypotheses: vec![Hypothesis {
            cause: "memory_leak".into(),
            title: "Memory leak".into(),
            confidence: 0.5,
            supporting: Vec::new(),
            contradicting: Vec::new(),
            explanation: String::new(),
            suggestion: None,
            proposed_by: ProposedBy::Rules,
        }],
        ..Diagnosis::default()
    });
    let d = c.decide(&s);
    assert_reason(&d, "test.yaml:leak", &["0.50", "min_confidence"]);
    if let Some(d) = c.diagnosis.as_mut() {
        d.hypotheses[0].confidence = 0.8;
    }
    assert_eq!(c.decide(&s).outcome, DecisionOutcome::NeedsApproval);
    c.workload.ready_replicas = 0;
    let d = c.decide(&s);
    assert_reason(&d, "test.yaml:leak", &["condition is false"]);
}

#[test]
fn a_refused_rule_lets_the_next_one_decide_and_is_reported_if_none_does() {
    let s = set(&TWO_RULES.replacen(
        "limits: { mode: auto }",
        "limits: { mode: auto, cooldown: 1h }",
        1,
    ));
    let mut c = Case::new();
    c.history = vec![past(cart(), 20 * MIN)];
    // Restart is in cooldown (1h), scale's default cooldown (10m) passed.
    let d = c.decide(&s);
    assert_eq!(d.rule, "test.yaml:scale-cart");
    assert_reason(&d, "test.yaml:restart-cart", &["limits.cooldown"]);
    // Both refused: the first refusal is the decision.
    c.history = vec![past(cart(), 2 * MIN)];
    let d = c.decide(&s);
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (DecisionOutcome::Refused, "test.yaml:restart-cart")
    );
    assert_reason(&d, "test.yaml:scale-cart", &["limits.cooldown"]);
}

#[test]
fn evictions_need_a_pod_name_and_rollbacks_a_healthy_recent_revision() {
    let s = set(indoc! {"
        apiVersion: aiopsd.io/v1
        kind: Policy
        rules:
          - name: evict
            action: { restart: { pod: evict } }
            limits: { mode: auto }
    "});
    let mut c = Case::new();
    let d = c.decide(&s);
    assert_reason(
        &d,
        "test.yaml:evict",
        &["action.restart.pod", "needs the name"],
    );
    c.pod = Some("cart-7d9f-abcde");
    let d = c.decide(&s);
    assert_eq!(
        d.action,
        Some(PlannedAction::EvictPod {
            target: cart(),
            pod: "cart-7d9f-abcde".into()
        })
    );
    assert_eq!(d.pods_touched, 1);

    let s = set(indoc! {"
        apiVersion: aiopsd.io/v1
        kind: Policy
        rules:
          - name: rollback
            action: { rollback: { max_revision_age: 7d } }
            limits: { mode: auto }
    "});
    let mut c = Case::new();
    assert_reason(
        &c.decide(&s),
        "test.yaml:rollback",
        &["no previous revision"],
    );
    c.rollback = Some(RollbackCandidate {
        revision: 4,
        created_at: NOW - 2 * 24 * 60 * MIN,
        was_healthy: None,
    });
    assert_reason(&c.decide(&s), "test.yaml:rollback", &["unknown"]);
    c.rollback = c.rollback.map(|r| RollbackCandidate {
        was_healthy: Some(true),
        ..r
    });
    let d = c.decide(&s);
    assert_eq!(
        d.action,
        Some(PlannedAction::Rollback {
            target: cart(),
            from_revision: 5,
            to_revision: 4
        })
    );
    c.rollback = c.rollback.map(|r| RollbackCandidate {
        created_at: NOW - 9 * 24 * 60 * MIN,
        ..r
    });
    let d = c.decide(&s);
    assert_eq!(d.outcome, DecisionOutcome::Refused);
    assert_reason(&d, "test.yaml:rollback", &["max_revision_age", "9days"]);
}

#[test]
fn no_rules_means_default_deny() {
    let d = Case::new().decide(&PolicySet::empty());
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (DecisionOutcome::Refused, "default-deny")
    );
    assert_reason(&d, "default-deny", &["no rule allows"]);
}

#[test]
fn reasons_skip_rules_for_other_workloads_but_the_trace_keeps_them() {
    let s = set(&TWO_RULES.replace(
        "- name: restart-cart\n    action",
        "- name: restart-cart\n    match: { workloads: { names: [orders] } }\n    action",
    ));
    let d = Case::new().decide(&s);
    assert_eq!(d.rule, "test.yaml:scale-cart");
    assert!(
        !d.reasons.iter().any(|r| r.contains("restart-cart")),
        "{:#?}",
        d.reasons
    );
    assert!(d
        .trace
        .iter()
        .any(|r| r.contains("restart-cart") && r.contains("match.workloads.names")));
}
