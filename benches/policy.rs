//! Policy gate decision latency: the figures in docs/POLICY.md
//! ("Performance").
//!
//! Run with `cargo bench --bench policy` (about 30 s on 2 cores).
//! Target (issue 9): a decision with 100 rules in under 50 µs.
//!
//! Workloads, each a policy set of 100 rules and an action history of 200
//! executed actions in the last hour (a busy cluster — the rate limits
//! scan it):
//! - `scoped`: one rule per team namespace, the incident's namespace is
//!   the last one: 99 rules are rejected by their namespace match, the
//!   last passes its condition, plan and limits. The common shape of a
//!   real policy set.
//! - `conditions`: all 100 rules cover the incident's namespace and
//!   workload; each condition (four comparisons, a list membership) is
//!   evaluated and only the last is true. The worst case: every rule gets
//!   as far as its condition.
//! - `none`: like `conditions` with no true condition: 100 conditions,
//!   then default-deny.
//!
//! After the timing runs, the mean per decision of each workload is
//! printed to stderr (also measured with a plain loop, for the docs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use aiopsd::incident::{Incident, IncidentState, Peak, Severity, SignalEvidence};
use aiopsd::policy::{decide, GateInput, IncidentKind, PastAction, PolicySet};
use aiopsd::remediate::plan::{ActionVerb, WorkloadKind, WorkloadRef, WorkloadState};
use aiopsd::remediate::record::DecisionOutcome;
use aiopsd::signal::SeriesKey;
use criterion::Criterion;

const NOW: i64 = 1_795_428_000_000;
const RULES: usize = 100;

const HEADER: &str = "apiVersion: aiopsd.io/v1\nkind: Policy\nrules:\n";

/// One rule per namespace `team-0` … `team-99`.
fn scoped_rules() -> String {
    let mut y = String::from(HEADER);
    for i in 0..RULES {
        let _ = write!(
            y,
            "  - name: scale-team-{i}\n    match:\n      namespaces: {{ allow: [team-{i}] }}\n      workloads: {{ kinds: [Deployment], names: [\"api*\"] }}\n      incident: {{ min_severity: warning, signals: [cpu_*] }}\n    condition: \"incident.max_score >= 4 && workload.ready_replicas == workload.replicas\"\n    action: {{ scale: {{ by: 1, max_replicas: 10, max_step: 2 }} }}\n    limits: {{ mode: auto, cooldown: 5m, max_actions_per_hour: {{ workload: 3, namespace: 10, cluster: 1000 }}, blast_radius_percent: 50 }}\n"
        );
    }
    y
}

/// 100 rules for the same workload; each condition needs a score of at
/// least 51 (the incident's is 9.5), except the last one's (5) when
/// `any_true`.
fn condition_rules(any_true: bool) -> String {
    let mut y = String::from(HEADER);
    for i in 0..RULES {
        let threshold = if any_true && i == RULES - 1 {
            5
        } else {
            100 - i / 2
        };
        let _ = write!(
            y,
            "  - name: rule-{i}\n    match:\n      namespaces: {{ allow: [\"team-*\"], deny: [kube-system] }}\n    condition: \"incident.severity == 'critical' && 'cpu_usage' in incident.signals && incident.max_score >= {threshold} && workload.ready_replicas == workload.replicas && workload.labels['tier'] == 'api'\"\n    action: {{ restart: {{ max_unavailable: 1 }} }}\n    limits: {{ mode: approve, max_actions_per_hour: {{ cluster: 1000 }} }}\n"
        );
    }
    y
}

fn incident() -> Incident {
    let group: BTreeMap<String, String> = [("namespace", "team-99"), ("service", "api")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Incident {
        id: Some(1),
        cluster: "bench".into(),
        group: group.clone(),
        state: IncidentState::Open,
        severity: Severity::Critical,
        opened_at: NOW - 600_000,
        last_anomaly_at: NOW - 30_000,
        resolved_at: None,
        anomaly_count: 20,
        signals: ["cpu_usage", "latency_p99", "error_ratio"]
            .iter()
            .map(|s| SignalEvidence {
                series: SeriesKey::new(*s, group.clone()),
                first_at: NOW - 600_000,
                last_at: NOW - 30_000,
                anomaly_count: 7,
                peak: Peak {
                    t: NOW - 60_000,
                    value: 0.95,
                    expected: 0.4,
                    spread: 0.06,
                    score: 9.5,
                },
                samples: Vec::new(),
                anomalous_at: Vec::new(),
            })
            .collect(),
        alerts: Vec::new(),
        diagnosis: None,
        decisions: Vec::new(),
        logs: Vec::new(),
        prediction: None,
        timeline: Vec::new(),
    }
}

fn workload() -> WorkloadState {
    WorkloadState {
        target: WorkloadRef {
            namespace: "team-99".into(),
            kind: WorkloadKind::Deployment,
            name: "api".into(),
        },
        labels: BTreeMap::from([("tier".to_string(), "api".to_string())]),
        replicas: 4,
        ready_replicas: 4,
        hpa: None,
        revision: Some(12),
        namespace_pods: 60,
        resource_version: None,
    }
}

/// 200 executed actions spread over the last hour, none on the target.
fn history() -> Vec<PastAction> {
    (0..200)
        .map(|i| PastAction {
            target: WorkloadRef {
                namespace: format!("team-{}", i % 50),
                kind: WorkloadKind::Deployment,
                name: format!("svc-{i}"),
            },
            verb: ActionVerb::Scale,
            at: NOW - (i as i64) * 17_000,
            pods_touched: 1,
            executed: true,
        })
        .collect()
}

struct Workload {
    name: &'static str,
    set: PolicySet,
    want: DecisionOutcome,
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let incident = incident();
    let workload = workload();
    let history = history();
    let input = GateInput {
        incident: &incident,
        kind: IncidentKind::Anomaly,
        workload: &workload,
        proposal: None,
        diagnosis: None,
        history: &history,
        now: NOW,
        data_time: Some(NOW - 30_000),
        kill_switch: None,
        pod: None,
        rollback: None,
    };
    let load =
        |name, yaml: String| PolicySet::from_yaml(name, &yaml).unwrap_or_else(|e| panic!("{e}"));
    let workloads = [
        Workload {
            name: "scoped",
            set: load("scoped.yaml", scoped_rules()),
            want: DecisionOutcome::Execute,
        },
        Workload {
            name: "conditions",
            set: load("conditions.yaml", condition_rules(true)),
            want: DecisionOutcome::NeedsApproval,
        },
        Workload {
            name: "none",
            set: load("none.yaml", condition_rules(false)),
            want: DecisionOutcome::Refused,
        },
    ];
    for w in &workloads {
        assert_eq!(w.set.rules().len(), RULES);
        let d = decide(&w.set, &input);
        assert_eq!(d.outcome, w.want, "{}: {:#?}", w.name, d.reasons);
        criterion.bench_function(&format!("policy/decide_100_rules/{}", w.name), |b| {
            b.iter(|| decide(black_box(&w.set), black_box(&input)))
        });
    }
    criterion.final_summary();

    // `cargo bench` passes --bench; `cargo test --benches` runs each
    // benchmark once as a smoke test and needs no report.
    if std::env::args().any(|a| a == "--bench") {
        for w in &workloads {
            let n = 20_000;
            let start = Instant::now();
            for _ in 0..n {
                black_box(decide(black_box(&w.set), black_box(&input)));
            }
            let per = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
            eprintln!(
                "policy gate, 100 rules, 200 past actions, {}: {per:.1} µs per decision ({})",
                w.name,
                w.want.as_str()
            );
        }
        let start = Instant::now();
        let set = load("scoped.yaml", scoped_rules());
        eprintln!(
            "policy load: 100 rules parsed and checked in {:.1} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
        black_box(set);
    }
}
