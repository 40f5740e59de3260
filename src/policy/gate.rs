//! The decision: a pure function from a [`PolicySet`] and a [`GateInput`]
//! to a [`Decision`]. Deny by default; no I/O, no clock, no randomness, so
//! the same input always gets the same decision (tests, `policy explain`
//! and the daemon agree).
//!
//! Evaluation order (docs/POLICY.md, "Evaluation order"):
//! 1. kill switch → refused (`kill-switch`);
//! 2. a resolved incident → refused (`incident-resolved`);
//! 3. no data time, or data from the future → refused (`stale-data`);
//! 4. global deny lists, then global freeze windows (`file:deny`, `file:freeze`);
//! 5. rules in order: proposal narrowing, `match`, `condition`, the bounded
//!    plan, then every limit. The first rule passing all of them decides,
//!    with its mode; a rule refused by its plan or a limit is remembered
//!    and the next rule is tried;
//! 6. no rule passed: the first refused rule's refusal, else `default-deny`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diagnose::{Diagnosis, ProposedBy};
use crate::incident::{AlertStatus, Incident, IncidentState};
use crate::remediate::plan::{ActionVerb, PlannedAction, WorkloadKind, WorkloadRef, WorkloadState};
use crate::remediate::record::{DecisionOutcome, DecisionRecord};
use crate::signal::TimestampMs;

use super::condition::{DiagnosisFacts, Facts};
use super::load::PolicySet;
use super::rule::{any_match, list, ActionRule, DenyList, Matcher, Rule, ScaleTarget};
use super::spec::HpaMode;
use super::Mode;

/// Data newer than `now` by more than this means the clocks disagree:
/// the age of the evidence cannot be judged, so the gate refuses.
const MAX_FUTURE_SKEW_MS: i64 = 5 * 60_000;

const HOUR_MS: i64 = 3_600_000;

pub use crate::incident::IncidentKind;

/// An action someone suggested (diagnosis rules or the LLM). It can only
/// narrow: rules whose verb differs are not candidates. It never widens
/// what a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    /// The suggested verb.
    pub verb: ActionVerb,
    /// Who suggested it.
    pub by: ProposedBy,
}

/// An earlier action or decision on the cluster, from the store, so that
/// cooldowns and rate limits survive restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastAction {
    /// The workload acted on.
    pub target: WorkloadRef,
    /// What was done.
    pub verb: ActionVerb,
    /// When it was decided or run (wall ms).
    pub at: TimestampMs,
    /// Pods it touched.
    pub pods_touched: u32,
    /// True when it was carried out (or approved and in flight). Only
    /// these count against cooldowns and rate limits, so a `dry_run`
    /// decision previews exactly what `auto` would do.
    pub executed: bool,
}

/// The revision a rollback would return to, as the executor found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackCandidate {
    /// Its `deployment.kubernetes.io/revision`.
    pub revision: i64,
    /// When that revision was created (its ReplicaSet), wall ms.
    pub created_at: TimestampMs,
    /// Whether it was healthy while it ran; `None` (unknown) refuses.
    pub was_healthy: Option<bool>,
}

/// Everything the gate decides on. Built by the remediation stage just
/// before deciding (workload state fresh from the API, history from the
/// store).
#[derive(Debug, Clone, Copy)]
pub struct GateInput<'a> {
    /// The incident.
    pub incident: &'a Incident,
    /// What opened it.
    pub kind: IncidentKind,
    /// The target as it is now.
    pub workload: &'a WorkloadState,
    /// A suggested verb, if any (narrows the candidate rules).
    pub proposal: Option<Proposal>,
    /// The diagnosis, if any.
    pub diagnosis: Option<&'a Diagnosis>,
    /// Recent actions (at least the last hour and the longest cooldown).
    pub history: &'a [PastAction],
    /// Wall time of the decision, ms.
    pub now: TimestampMs,
    /// Data time of the incident's newest evidence ([`super::newest_data_time`]);
    /// `None` refuses.
    pub data_time: Option<TimestampMs>,
    /// Set: every action is refused, with this reason.
    pub kill_switch: Option<&'a str>,
    /// The pod to evict, for `restart: { pod: evict }` rules.
    pub pod: Option<&'a str>,
    /// The previous revision, for `rollback` rules.
    pub rollback: Option<RollbackCandidate>,
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Execute, dry run, needs approval or refused.
    pub outcome: DecisionOutcome,
    /// The rule that decided (`file:rule-name`) or a built-in:
    /// `kill-switch`, `incident-resolved`, `stale-data`, `file:deny`,
    /// `file:freeze`, `default-deny`.
    pub rule: String,
    /// One sentence per check that mattered, each naming its rule and
    /// limit: why rules that concern this workload did not apply, and
    /// the deciding rule's plan and limits.
    pub reasons: Vec<String>,
    /// Every step, including rules for other workloads (`policy explain`).
    pub trace: Vec<String>,
    /// The bounded action (also for a dry run or a pending approval;
    /// `None` when refused).
    pub action: Option<PlannedAction>,
    /// Pods the action touches (for [`PastAction::pods_touched`]).
    pub pods_touched: u32,
    /// When decided (wall ms).
    pub at: TimestampMs,
    /// [`PolicySet::version`] of the set that decided.
    pub policy_version: String,
}

impl Decision {
    /// The record the incident keeps. `proposed_by`: who suggested the
    /// verb, `None` for the rule's own action (`policy`).
    pub fn to_record(&self, proposed_by: Option<ProposedBy>) -> DecisionRecord {
        DecisionRecord {
            at: self.at,
            outcome: self.outcome,
            rule: self.rule.clone(),
            reasons: self.reasons.clone(),
            action: self.action.clone(),
            proposed_by: proposed_by.map_or("policy", ProposedBy::as_str).to_string(),
            action_id: None,
        }
    }

    /// True when the action may run now (outcome `execute`).
    pub fn allows_execution(&self) -> bool {
        self.outcome == DecisionOutcome::Execute
    }
}

/// Human duration for reasons: `7m 3s`.
pub(crate) fn dur(ms: i64) -> String {
    humantime::format_duration(Duration::from_secs((ms.max(0) / 1000) as u64)).to_string()
}

struct Trace {
    reasons: Vec<String>,
    trace: Vec<String>,
}

impl Trace {
    /// A line that matters for this workload.
    fn reason(&mut self, line: String) {
        self.trace.push(line.clone());
        self.reasons.push(line);
    }

    /// A line only `explain` shows.
    fn note(&mut self, line: String) {
        self.trace.push(line);
    }
}

/// Decides. Deny by default; missing or inconclusive input never allows.
pub fn decide(set: &PolicySet, input: &GateInput<'_>) -> Decision {
    let mut t = Trace {
        reasons: Vec::new(),
        trace: Vec::new(),
    };
    let refuse = |rule: &str, t: Trace| Decision {
        outcome: DecisionOutcome::Refused,
        rule: rule.to_string(),
        reasons: t.reasons,
        trace: t.trace,
        action: None,
        pods_touched: 0,
        at: input.now,
        policy_version: set.version().to_string(),
    };
    if let Some(why) = input.kill_switch {
        t.reason(format!("kill-switch: all actions are stopped: {why}"));
        return refuse("kill-switch", t);
    }
    if input.incident.state == IncidentState::Resolved {
        t.reason("incident-resolved: the incident is resolved; nothing to remediate".into());
        return refuse("incident-resolved", t);
    }
    match input.data_time {
        None => {
            t.reason(
                "stale-data: the incident has no data time, so the freshness of its evidence is unknown"
                    .into(),
            );
            return refuse("stale-data", t);
        }
        Some(dt) if dt > input.now + MAX_FUTURE_SKEW_MS => {
            t.reason(format!(
                "stale-data: the newest data is {} in the future; clocks disagree, so its age is unknown",
                dur(dt - input.now)
            ));
            return refuse("stale-data", t);
        }
        Some(_) => {}
    }
    let w = input.workload;
    for deny in &set.denies {
        if let Some(why) = deny_hit(deny, w) {
            t.reason(format!("{}: {} is denied: {why}", deny.id, w.target));
            return refuse(&deny.id, t);
        }
    }
    for freeze in &set.freezes {
        if let Some((win, line)) = freeze
            .windows
            .iter()
            .find(|(win, _)| win.contains(input.now))
        {
            t.reason(format!(
                "{}: inside the freeze window {win} (line {line}); no action runs",
                freeze.id
            ));
            return refuse(&freeze.id, t);
        }
    }

    let facts = facts(input);
    let mut refused_by: Option<&str> = None;
    for rule in set.rules() {
        let id = rule.id();
        if let Some(p) = input.proposal {
            if rule.verb() != p.verb {
                t.note(format!(
                    "{id}: not a candidate: its action is {}, the proposal ({}) is {}",
                    rule.verb().as_str(),
                    p.by.as_str(),
                    p.verb.as_str()
                ));
                continue;
            }
        }
        match match_rule(&rule.matcher, input, &facts) {
            Ok(()) => {}
            Err(Miss::Target(why)) => {
                t.note(format!("{id}: does not apply: {why}"));
                continue;
            }
            Err(Miss::Incident(why)) => {
                t.reason(format!("{id}: does not apply: {why}"));
                continue;
            }
        }
        if let Some(c) = &rule.condition {
            match c.eval(&facts) {
                Ok(true) => {}
                Ok(false) => {
                    t.reason(format!("{id}: condition is false: {}", c.source()));
                    continue;
                }
                Err(e) => {
                    t.reason(format!(
                        "{id}: condition could not be evaluated ({e}), so it is not met: {}",
                        c.source()
                    ));
                    continue;
                }
            }
        }
        let plan = match plan(rule, input) {
            Ok(plan) => plan,
            Err(why) => {
                t.reason(format!("{id}: refused: {why}"));
                refused_by.get_or_insert(id);
                continue;
            }
        };
        let (failures, passed) = check_limits(rule, input, &plan);
        if !failures.is_empty() {
            for f in failures {
                t.reason(format!("{id}: refused by {f}"));
            }
            refused_by.get_or_insert(id);
            continue;
        }
        for note in &plan.notes {
            t.reason(format!("{id}: {note}"));
        }
        t.reason(format!("{id}: limits passed: {passed}"));
        let outcome = match rule.mode() {
            Mode::Auto => {
                t.reason(format!(
                    "{id}: mode auto: {} runs now",
                    plan.action.describe()
                ));
                DecisionOutcome::Execute
            }
            Mode::Approve => {
                t.reason(format!(
                    "{id}: mode approve: {} waits for a person's approval",
                    plan.action.describe()
                ));
                DecisionOutcome::NeedsApproval
            }
            Mode::DryRun => {
                t.reason(format!(
                    "{id}: mode dry_run: {} is recorded, not run",
                    plan.action.describe()
                ));
                DecisionOutcome::DryRun
            }
        };
        return Decision {
            outcome,
            rule: id.to_string(),
            reasons: t.reasons,
            trace: t.trace,
            action: Some(plan.action),
            pods_touched: plan.pods,
            at: input.now,
            policy_version: set.version().to_string(),
        };
    }
    match refused_by {
        Some(id) => refuse(id, t),
        None => {
            t.reason(format!(
                "default-deny: no rule allows an action on {} for this incident",
                w.target
            ));
            refuse("default-deny", t)
        }
    }
}

fn deny_hit(deny: &DenyList, w: &WorkloadState) -> Option<String> {
    if any_match(&deny.namespaces, &w.target.namespace) {
        return Some(format!(
            "namespace `{}` is in deny.namespaces ({})",
            w.target.namespace,
            list(&deny.namespaces)
        ));
    }
    if any_match(&deny.workloads, &w.target.name) {
        return Some(format!(
            "workload `{}` is in deny.workloads ({})",
            w.target.name,
            list(&deny.workloads)
        ));
    }
    for (k, g) in &deny.labels {
        if let Some(v) = w.labels.get(k) {
            if g.matches(v) {
                return Some(format!(
                    "label {k}={v} matches deny.labels.{k} ({})",
                    g.as_str()
                ));
            }
        }
    }
    None
}

fn facts<'a>(input: &GateInput<'a>) -> Facts<'a> {
    let inc = input.incident;
    let w = input.workload;
    let mut seen = BTreeSet::new();
    let signals: Vec<&str> = inc
        .signals
        .iter()
        .map(|s| s.series.signal.as_str())
        .filter(|s| seen.insert(*s))
        .collect();
    let max_score = if inc.signals.is_empty() {
        None
    } else if inc.signals.iter().any(|s| s.peak.score.is_nan()) {
        // NaN must not vanish in a max: comparisons on it then error.
        Some(f64::NAN)
    } else {
        inc.signals
            .iter()
            .map(|s| s.peak.score.abs())
            .reduce(f64::max)
    };
    let diagnosis = input.diagnosis.and_then(|d| {
        d.top().map(|top| DiagnosisFacts {
            cause: top.cause.as_str(),
            confidence: top.confidence,
            causes: d.hypotheses.iter().map(|h| h.cause.as_str()).collect(),
        })
    });
    Facts {
        severity: inc.severity.as_str(),
        kind: input.kind.as_str(),
        signals,
        max_score,
        duration_s: input
            .data_time
            .map(|t| (t.max(inc.last_anomaly_at) - inc.opened_at) as f64 / 1000.0),
        alerts: inc.alerts.iter().map(|a| a.name.as_str()).collect(),
        firing_alerts: inc
            .alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .map(|a| a.name.as_str())
            .collect(),
        anomaly_count: inc.anomaly_count as f64,
        flap_count: f64::from(inc.flap_count()),
        group: &inc.group,
        data_age_s: input.data_time.map(|t| (input.now - t) as f64 / 1000.0),
        namespace: &w.target.namespace,
        workload_kind: w.target.kind.as_str(),
        name: &w.target.name,
        replicas: f64::from(w.replicas),
        ready_replicas: f64::from(w.ready_replicas),
        labels: &w.labels,
        has_hpa: w.hpa.is_some(),
        namespace_pods: f64::from(w.namespace_pods),
        revision: w.revision.map(|r| r as f64),
        diagnosis,
        proposal: input.proposal.map(|p| (p.verb.as_str(), p.by.as_str())),
    }
}

/// Why a rule does not apply: to another workload (only in the trace) or
/// to this workload but not this incident (a reason).
enum Miss {
    Target(String),
    Incident(String),
}

fn match_rule(m: &Matcher, input: &GateInput<'_>, facts: &Facts<'_>) -> Result<(), Miss> {
    let w = input.workload;
    let ns = w.target.namespace.as_str();
    if any_match(&m.ns_deny, ns) {
        return Err(Miss::Target(format!(
            "namespace `{ns}` is in match.namespaces.deny ({})",
            list(&m.ns_deny)
        )));
    }
    if !m.ns_allow.is_empty() && !any_match(&m.ns_allow, ns) {
        return Err(Miss::Target(format!(
            "namespace `{ns}` is not in match.namespaces.allow ({})",
            list(&m.ns_allow)
        )));
    }
    if !m.kinds.is_empty() && !m.kinds.contains(&w.target.kind) {
        let kinds: Vec<&str> = m.kinds.iter().map(|k| k.as_str()).collect();
        return Err(Miss::Target(format!(
            "kind {} is not in match.workloads.kinds ({})",
            w.target.kind.as_str(),
            kinds.join(", ")
        )));
    }
    if !m.names.is_empty() && !any_match(&m.names, &w.target.name) {
        return Err(Miss::Target(format!(
            "workload `{}` is not in match.workloads.names ({})",
            w.target.name,
            list(&m.names)
        )));
    }
    for (k, g) in &m.labels {
        match w.labels.get(k) {
            Some(v) if g.matches(v) => {}
            Some(v) => {
                return Err(Miss::Target(format!(
                    "label {k}={v} does not match match.workloads.labels.{k} ({})",
                    g.as_str()
                )))
            }
            None => {
                return Err(Miss::Target(format!(
                    "label `{k}` required by match.workloads.labels is not set"
                )))
            }
        }
    }
    let inc = input.incident;
    if !m.incident_kinds.is_empty() && !m.incident_kinds.contains(&input.kind) {
        let kinds: Vec<&str> = m.incident_kinds.iter().map(|k| k.as_str()).collect();
        return Err(Miss::Incident(format!(
            "incident kind {} is not in match.incident.kinds ({})",
            input.kind.as_str(),
            kinds.join(", ")
        )));
    }
    if let Some(min) = m.min_severity {
        if inc.severity < min {
            return Err(Miss::Incident(format!(
                "severity {} is below match.incident.min_severity ({})",
                inc.severity.as_str(),
                min.as_str()
            )));
        }
    }
    if !m.signals.is_empty() && !facts.signals.iter().any(|s| any_match(&m.signals, s)) {
        return Err(Miss::Incident(format!(
            "no signal of the incident ({}) is in match.incident.signals ({})",
            facts.signals.join(", "),
            list(&m.signals)
        )));
    }
    if !m.alerts.is_empty() && !facts.alerts.iter().any(|a| any_match(&m.alerts, a)) {
        return Err(Miss::Incident(format!(
            "no alert of the incident ({}) is in match.incident.alerts ({})",
            facts.alerts.join(", "),
            list(&m.alerts)
        )));
    }
    if !m.causes.is_empty() || m.min_confidence.is_some() {
        let Some(d) = &facts.diagnosis else {
            return Err(Miss::Incident(
                "match.diagnosis needs a diagnosis and there is none".into(),
            ));
        };
        if !m.causes.is_empty() && !any_match(&m.causes, d.cause) {
            return Err(Miss::Incident(format!(
                "diagnosed cause `{}` is not in match.diagnosis.causes ({})",
                d.cause,
                list(&m.causes)
            )));
        }
        if let Some(min) = m.min_confidence {
            // Written so that a NaN confidence does not match.
            let enough = matches!(
                d.confidence.partial_cmp(&min),
                Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
            );
            if !enough {
                return Err(Miss::Incident(format!(
                    "diagnosis confidence {:.2} is below match.diagnosis.min_confidence ({min})",
                    d.confidence
                )));
            }
        }
    }
    Ok(())
}

/// A bounded action and how it was bounded.
struct Plan {
    action: PlannedAction,
    pods: u32,
    notes: Vec<String>,
}

fn plan(rule: &Rule, input: &GateInput<'_>) -> Result<Plan, String> {
    let w = input.workload;
    let target = w.target.clone();
    if w.replicas < 0 || w.ready_replicas < 0 {
        return Err(format!(
            "the workload state is inconclusive (replicas {}, ready {})",
            w.replicas, w.ready_replicas
        ));
    }
    let replicas = w.replicas.unsigned_abs();
    match &rule.action {
        ActionRule::Scale {
            target: want,
            min,
            max,
            max_step,
            hpa,
        } => {
            if w.target.kind == WorkloadKind::DaemonSet {
                return Err("action.scale: a DaemonSet cannot be scaled".into());
            }
            let mut notes = Vec::new();
            let via_hpa = match (&w.hpa, hpa) {
                (None, _) => false,
                (Some(h), HpaMode::Refuse) => {
                    return Err(format!(
                        "action.scale.hpa: HPA `{}` scales this workload and the rule says refuse",
                        h.name
                    ))
                }
                (Some(_), HpaMode::RaiseMin) => true,
            };
            let from = w.replicas;
            let desired = match want {
                ScaleTarget::To(n) => *n,
                ScaleTarget::By(k) => from.saturating_add(*k),
            };
            if desired == from {
                return Err(format!(
                    "action.scale: no change: already at {from} replicas"
                ));
            }
            let up = desired > from;
            let mut to = desired.clamp(*min, *max);
            if to != desired {
                notes.push(format!(
                    "target {desired} bounded to {to} by action.scale.{}",
                    if desired > *max {
                        "max_replicas"
                    } else {
                        "min_replicas"
                    }
                ));
            }
            if let Some(step) = max_step {
                let stepped = from + (to - from).clamp(-step, *step);
                if stepped != to {
                    notes.push(format!(
                        "step bounded to {step} by action.scale.max_step ({to} → {stepped})"
                    ));
                    to = stepped;
                }
            }
            if let (true, Some(h)) = (via_hpa, &w.hpa) {
                if !up {
                    return Err(format!(
                        "action.scale.hpa: raise_min cannot scale down; HPA `{}` owns scale-down",
                        h.name
                    ));
                }
                if to > h.max_replicas {
                    notes.push(format!(
                        "target {to} bounded to HPA `{}` maxReplicas {}",
                        h.name, h.max_replicas
                    ));
                    to = h.max_replicas;
                }
                if to <= h.min_replicas {
                    return Err(format!(
                        "action.scale: no change: HPA `{}` minReplicas is already {}",
                        h.name, h.min_replicas
                    ));
                }
                notes.push(format!(
                    "HPA `{}` scales this workload: its minReplicas is raised from {} (action.scale.hpa: raise_min)",
                    h.name, h.min_replicas
                ));
            }
            if up && to <= from {
                return Err(format!(
                    "action.scale: no change: {from} replicas is already at or above action.scale.max_replicas ({max})"
                ));
            }
            if !up && to >= from {
                return Err(format!(
                    "action.scale: no change: {from} replicas is already at or below action.scale.min_replicas ({min})"
                ));
            }
            Ok(Plan {
                pods: (to - from).unsigned_abs(),
                action: PlannedAction::Scale {
                    target,
                    from,
                    to,
                    via_hpa,
                },
                notes,
            })
        }
        ActionRule::Restart { max_unavailable } => {
            if replicas == 0 {
                return Err(
                    "action.restart: the workload has 0 replicas; nothing to restart".into(),
                );
            }
            Ok(Plan {
                action: PlannedAction::Restart {
                    target,
                    max_unavailable: *max_unavailable,
                },
                pods: replicas,
                notes: Vec::new(),
            })
        }
        ActionRule::Evict => match input.pod {
            Some(pod) if !pod.is_empty() => Ok(Plan {
                action: PlannedAction::EvictPod {
                    target,
                    pod: pod.to_string(),
                },
                pods: 1,
                notes: Vec::new(),
            }),
            _ => Err(
                "action.restart.pod: evict needs the name of the bad pod and none was given".into(),
            ),
        },
        ActionRule::Rollback {
            max_revision_age_ms,
        } => {
            if w.target.kind != WorkloadKind::Deployment {
                return Err(format!(
                    "action.rollback: only Deployments roll back, this is a {}",
                    w.target.kind.as_str()
                ));
            }
            let Some(current) = w.revision else {
                return Err("action.rollback: the current revision is unknown".into());
            };
            let Some(prev) = input.rollback else {
                return Err("action.rollback: no previous revision is known".into());
            };
            if prev.revision >= current {
                return Err(format!(
                    "action.rollback: revision {} is not older than the current {current}",
                    prev.revision
                ));
            }
            match prev.was_healthy {
                Some(true) => {}
                Some(false) => {
                    return Err(format!(
                        "action.rollback: previous revision {} was not healthy",
                        prev.revision
                    ))
                }
                None => {
                    return Err(format!(
                        "action.rollback: whether previous revision {} was healthy is unknown",
                        prev.revision
                    ))
                }
            }
            let age = input.now - prev.created_at;
            if age > *max_revision_age_ms {
                return Err(format!(
                    "action.rollback.max_revision_age: previous revision {} is {} old, the limit is {}",
                    prev.revision,
                    dur(age),
                    dur(*max_revision_age_ms)
                ));
            }
            Ok(Plan {
                action: PlannedAction::Rollback {
                    target,
                    from_revision: current,
                    to_revision: prev.revision,
                },
                pods: replicas,
                notes: Vec::new(),
            })
        }
    }
}

/// Every failing limit (each naming its key), and a summary of the
/// passing ones.
fn check_limits(rule: &Rule, input: &GateInput<'_>, plan: &Plan) -> (Vec<String>, String) {
    let l = &rule.limits;
    let now = input.now;
    let target = &input.workload.target;
    let mut fail = Vec::new();
    let mut pass = Vec::new();

    // data_time is Some here (checked before any rule).
    let age = input.data_time.map_or(i64::MAX, |t| now - t);
    if age > l.max_data_age_ms {
        fail.push(format!(
            "limits.max_data_age: stale data: the newest sample is {} old, the limit is {}",
            dur(age),
            dur(l.max_data_age_ms)
        ));
    } else {
        pass.push(format!(
            "data {} old (max {})",
            dur(age),
            dur(l.max_data_age_ms)
        ));
    }
    if let Some(win) = l.freeze.iter().find(|w| w.contains(now)) {
        fail.push(format!("limits.freeze: inside the freeze window {win}"));
    }
    if !l.windows.is_empty() {
        if let Some(win) = l.windows.iter().find(|w| w.contains(now)) {
            pass.push(format!("inside window {win}"));
        } else {
            let all: Vec<String> = l.windows.iter().map(ToString::to_string).collect();
            fail.push(format!(
                "limits.windows: outside the allowed windows ({})",
                all.join("; ")
            ));
        }
    }

    let hour_ago = now - HOUR_MS;
    let mut last_here: Option<TimestampMs> = None;
    let (mut on_workload, mut in_ns, mut in_cluster) = (0u32, 0u32, 0u32);
    for a in input.history.iter().filter(|a| a.executed) {
        if a.target == *target {
            last_here = Some(last_here.map_or(a.at, |t| t.max(a.at)));
        }
        // Actions stamped in the future count too (clock skew is no
        // reason to act more).
        if a.at > hour_ago {
            in_cluster += 1;
            if a.target.namespace == target.namespace {
                in_ns += 1;
            }
            if a.target == *target {
                on_workload += 1;
            }
        }
    }
    match last_here {
        Some(t) if now - t < l.cooldown_ms => fail.push(format!(
            "limits.cooldown: {target} was acted on {} ago, the cooldown is {}",
            dur(now - t),
            dur(l.cooldown_ms)
        )),
        _ => pass.push(format!("cooldown {}", dur(l.cooldown_ms))),
    }
    for (key, count, max, scope) in [
        (
            "workload",
            on_workload,
            l.per_hour_workload,
            "on this workload",
        ),
        (
            "namespace",
            in_ns,
            l.per_hour_namespace,
            "in this namespace",
        ),
        ("cluster", in_cluster, l.per_hour_cluster, "in the cluster"),
    ] {
        if count >= max {
            fail.push(format!(
                "limits.max_actions_per_hour.{key}: {count} actions {scope} in the last hour, the limit is {max}"
            ));
        } else {
            pass.push(format!("{count}/{max} actions {scope} this hour"));
        }
    }
    if let Some(max_pct) = l.blast_radius_percent {
        let ns_pods = input.workload.namespace_pods;
        if ns_pods == 0 {
            fail.push(
                "limits.blast_radius_percent: the namespace's pod count is unknown (0), so the blast radius cannot be judged"
                    .into(),
            );
        } else {
            let pct = f64::from(plan.pods) * 100.0 / f64::from(ns_pods);
            if pct > max_pct {
                fail.push(format!(
                    "limits.blast_radius_percent: the action touches {} of {ns_pods} pods in namespace {} ({pct:.0}%), the limit is {max_pct}%",
                    plan.pods, target.namespace
                ));
            } else {
                pass.push(format!(
                    "{} of {ns_pods} pods touched ({pct:.0}%, max {max_pct}%)",
                    plan.pods
                ));
            }
        }
    }
    (fail, pass.join(", "))
}
