//! The rule engine: scores every cause of the [`Catalogue`] against an
//! [`EvidenceBundle`] and returns ranked [`Hypothesis`]es.
//!
//! Confidence of a cause (docs/DIAGNOSIS.md has the worked reasoning):
//!
//! ```text
//! support    = 1 − Π (1 − wᵢ)        over matched `requires` and `supports` rules
//! against    = Π (1 − wⱼ)            over matched `contradicts` rules
//! missing    = Π mₖ                  over unmatched `requires` rules, where mₖ is
//!                                     scoring.unknown_required when a source the
//!                                     rule reads is in the bundle's gaps, else
//!                                     scoring.missing_required
//! gaps       = scoring.gap ^ g       g = gapped sources read by unmatched
//!                                     `supports`/`contradicts` rules
//! confidence = support × against × missing × gaps
//! ```
//!
//! Noisy-OR support means each weight reads as "this alone would make me
//! this sure", more evidence always helps, and a cause with one weak sign
//! cannot outrank one with several strong ones. A cause none of whose
//! required rules matched is not reported at all.
//!
//! Only the top hypothesis proposes an action (a verb and a target), and
//! only at `scoring.min_action_confidence` or above; the others keep
//! their suggestion as advice in the note.
//!
//! The safety rule lives here, not only in the catalogue: when a blocking
//! cause (always `dependency_outage` and `node_pressure`, plus any cause
//! marked `blocks_workload_actions`) is the top hypothesis or within
//! `scoring.safety_margin` of it, no scale or restart is suggested for the
//! incident, whatever any hypothesis (rules or LLM) proposed.

use std::collections::BTreeSet;

use super::catalogue::{
    AlertPred, Catalogue, Cause, ChangePred, DownstreamPred, LogPred, MetricPred, NodePred,
    PodPred, Predicate, Rule, Subject, TrendPred,
};
use super::evidence::{
    EvidenceBundle, EvidenceDetail, EvidenceId, EvidenceItem, EvidenceSource, Movement,
};
use super::hypothesis::{Diagnosis, Hypothesis, ProposedBy, Suggestion};
use crate::remediate::plan::{ActionVerb, WorkloadKind, WorkloadRef};

/// Causes that block scale/restart suggestions whatever the catalogue
/// says: acting on the workload cannot fix a failing downstream or node,
/// and scaling into a dependency outage multiplies the load on it.
pub const ALWAYS_BLOCKING_CAUSES: [&str; 2] = ["dependency_outage", "node_pressure"];

/// Labels that name the workload or service a series or alert is about.
const WORKLOAD_LABELS: [&str; 6] = [
    "deployment",
    "statefulset",
    "daemonset",
    "service",
    "app",
    "workload",
];

/// Ranks the catalogue's causes against the bundle (see the module docs
/// for the formula), best first, at most `scoring.max_hypotheses`, then
/// applies the safety rule. Suggestions only ever name a workload from
/// `bundle.targets`; a verb the target's kind does not support (rollback
/// of a StatefulSet, scaling a DaemonSet) becomes no action with a note.
pub fn diagnose(bundle: &EvidenceBundle, catalogue: &Catalogue) -> Diagnosis {
    let ctx = Ctx::new(bundle);
    let mut hypotheses: Vec<Hypothesis> = catalogue
        .causes
        .iter()
        .filter_map(|cause| score_cause(&ctx, catalogue, cause))
        .collect();
    // Stable sort: equal confidence keeps catalogue order.
    hypotheses.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    hypotheses.truncate(catalogue.scoring.max_hypotheses);
    propose_from_top_only(&mut hypotheses, catalogue.scoring.min_action_confidence);
    let mut diagnosis = Diagnosis {
        hypotheses,
        at: bundle
            .items
            .iter()
            .map(|i| i.at)
            .fold(bundle.opened_at, i64::max),
        gaps: bundle.gaps.clone(),
        llm_status: None,
        evidence: bundle.clone(),
    };
    apply_safety_rule(&mut diagnosis, catalogue);
    diagnosis
}

/// One incident, at most one proposal: only the top hypothesis keeps a
/// verb, and only when it is confident enough. A runner-up's suggestion
/// stays in the report as advice ("if this is the cause: …"), so a
/// 10%-likely bad rollout never puts a rollback in front of the gate.
fn propose_from_top_only(hypotheses: &mut [Hypothesis], min_confidence: f64) {
    for (rank, h) in hypotheses.iter_mut().enumerate() {
        let confidence = h.confidence;
        let Some(s) = &mut h.suggestion else { continue };
        let Some(verb) = s.verb else { continue };
        let why = if rank > 0 {
            "not the top hypothesis".to_string()
        } else if confidence < min_confidence {
            format!(
                "confidence {:.0}% is below {:.0}%",
                confidence * 100.0,
                min_confidence * 100.0
            )
        } else {
            continue;
        };
        s.note = format!(
            "Not proposed ({why}); if this is the cause: {} — {}",
            verb.as_str(),
            s.note
        );
        s.verb = None;
        s.target = None;
    }
}

/// Enforces the safety rule on a diagnosis (the engine calls it; call it
/// again after merging LLM hypotheses). Returns the blocking cause when it
/// fired. Scale and restart suggestions become no action, with the reason
/// in the note; rollback and no-action suggestions are kept.
pub fn apply_safety_rule(diagnosis: &mut Diagnosis, catalogue: &Catalogue) -> Option<String> {
    let top = diagnosis
        .hypotheses
        .iter()
        .map(|h| h.confidence)
        .fold(f64::NEG_INFINITY, f64::max);
    let margin = catalogue.scoring.safety_margin;
    let blocking = diagnosis
        .hypotheses
        .iter()
        .filter(|h| {
            ALWAYS_BLOCKING_CAUSES.contains(&h.cause.as_str())
                || catalogue
                    .cause(&h.cause)
                    .is_some_and(|c| c.blocks_workload_actions)
        })
        .find(|h| h.confidence >= top - margin)?;
    let (cause, title) = (blocking.cause.clone(), blocking.title.clone());
    for h in &mut diagnosis.hypotheses {
        if let Some(s) = &mut h.suggestion {
            if matches!(s.verb, Some(ActionVerb::Scale | ActionVerb::Restart)) {
                let verb = s.verb.map(ActionVerb::as_str).unwrap_or_default();
                s.note = format!(
                    "Not suggested ({verb}): {title} is at or near the top, and acting on this \
                     workload would not help and may hurt. Originally: {}",
                    s.note
                );
                s.verb = None;
                s.target = None;
            }
        }
    }
    Some(cause)
}

/// What every predicate needs to know about the bundle.
struct Ctx<'a> {
    bundle: &'a EvidenceBundle,
    targets: &'a [WorkloadRef],
    headline: Option<Movement>,
    gapped: BTreeSet<EvidenceSource>,
    /// A gap whose source is not recognised lowers every cause once.
    unknown_gap: bool,
}

impl<'a> Ctx<'a> {
    fn new(bundle: &'a EvidenceBundle) -> Self {
        let headline = bundle
            .items
            .iter()
            .filter_map(|i| match &i.detail {
                EvidenceDetail::Anomaly {
                    movement, score, ..
                } => Some((score.abs(), *movement)),
                _ => None,
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, m)| m);
        let mut gapped = BTreeSet::new();
        let mut unknown_gap = false;
        for gap in &bundle.gaps {
            let sources = gap_sources(gap);
            if sources.is_empty() {
                unknown_gap = true;
            }
            gapped.extend(sources);
        }
        Ctx {
            bundle,
            targets: &bundle.targets,
            headline,
            gapped,
            unknown_gap,
        }
    }

    fn is_target_name(&self, name: &str) -> bool {
        self.targets.iter().any(|t| t.name == name)
    }

    /// Whose an item with these labels is.
    fn label_subject(&self, labels: &std::collections::BTreeMap<String, String>) -> Subject {
        if self.targets.is_empty() {
            return Subject::Target;
        }
        let names: Vec<&str> = WORKLOAD_LABELS
            .iter()
            .filter_map(|k| labels.get(*k).map(String::as_str))
            .collect();
        let foreign_ns = labels
            .get("namespace")
            .is_some_and(|ns| !self.targets.iter().any(|t| &t.namespace == ns));
        if foreign_ns {
            Subject::Other
        } else if names.is_empty() || names.iter().any(|n| self.is_target_name(n)) {
            Subject::Target
        } else {
            Subject::Other
        }
    }

    fn workload_subject(&self, w: Option<&WorkloadRef>) -> Subject {
        match w {
            Some(w)
                if !self.targets.is_empty()
                    && !self
                        .targets
                        .iter()
                        .any(|t| t.namespace == w.namespace && t.name == w.name) =>
            {
                Subject::Other
            }
            _ => Subject::Target,
        }
    }

    fn name_subject(&self, name: &str) -> Subject {
        if self.targets.is_empty() || self.is_target_name(name) {
            Subject::Target
        } else {
            Subject::Other
        }
    }
}

fn subject_ok(want: Subject, is: Subject) -> bool {
    want == Subject::Any || want == is
}

/// Which evidence sources a gap concerns, from its first word (before
/// `:` or a space): `kubernetes`/`kube` → changes, pods, nodes; `pods`,
/// `nodes`, `changes`/`events`/`replicasets`; `logs`/`elasticsearch`;
/// `prometheus`/`metrics`; `correlated`; `alertmanager`/`alerts`;
/// `forecast`. Anything else is an unknown gap.
pub fn gap_sources(gap: &str) -> BTreeSet<EvidenceSource> {
    use EvidenceSource as S;
    let word = gap
        .split(|c: char| c == ':' || c.is_whitespace())
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match word.as_str() {
        "kubernetes" | "kube" | "k8s" => [S::Change, S::Pod, S::Node].into(),
        "pods" | "pod" => [S::Pod].into(),
        "nodes" | "node" => [S::Node].into(),
        "changes" | "change" | "events" | "replicasets" | "rollouts" => [S::Change].into(),
        "logs" | "log" | "elasticsearch" => [S::Log].into(),
        "prometheus" | "metrics" | "metric" => [S::Metric, S::Correlated].into(),
        "correlated" => [S::Correlated].into(),
        "alertmanager" | "alerts" | "alert" => [S::Alert].into(),
        "forecast" | "forecasts" => [S::Forecast].into(),
        _ => BTreeSet::new(),
    }
}

fn score_cause(ctx: &Ctx<'_>, catalogue: &Catalogue, cause: &Cause) -> Option<Hypothesis> {
    let scoring = &catalogue.scoring;
    let mut unsupported = 1.0;
    let mut factor = 1.0;
    let mut supporting: Vec<EvidenceId> = Vec::new();
    let mut contradicting: Vec<EvidenceId> = Vec::new();
    let mut any_required = false;
    let mut for_words = Vec::new();
    let mut against_words = Vec::new();
    let mut missing_words = Vec::new();
    let mut touched_gaps: BTreeSet<EvidenceSource> = BTreeSet::new();

    for rule in &cause.requires {
        let ids = eval(ctx, &rule.predicate);
        if ids.is_empty() {
            let gapped = rule
                .predicate
                .sources()
                .iter()
                .any(|s| ctx.gapped.contains(s));
            factor *= if gapped {
                scoring.unknown_required
            } else {
                scoring.missing_required
            };
            missing_words.push(if gapped {
                format!("{} (unknown: source unavailable)", rule.label)
            } else {
                rule.label.clone()
            });
        } else {
            any_required = true;
            unsupported *= 1.0 - rule.weight;
            for_words.push(cite(&rule.label, &ids));
            extend_unique(&mut supporting, ids);
        }
    }
    if !any_required {
        return None;
    }
    for rule in &cause.supports {
        let ids = eval(ctx, &rule.predicate);
        if ids.is_empty() {
            touch_gaps(ctx, rule, &mut touched_gaps);
        } else {
            unsupported *= 1.0 - rule.weight;
            for_words.push(cite(&rule.label, &ids));
            extend_unique(&mut supporting, ids);
        }
    }
    for rule in &cause.contradicts {
        let ids = eval(ctx, &rule.predicate);
        if ids.is_empty() {
            touch_gaps(ctx, rule, &mut touched_gaps);
        } else {
            factor *= 1.0 - rule.weight;
            against_words.push(cite(&rule.label, &ids));
            extend_unique(&mut contradicting, ids);
        }
    }
    let gap_count = touched_gaps.len() + usize::from(ctx.unknown_gap);
    factor *= scoring
        .gap
        .powi(i32::try_from(gap_count).unwrap_or(i32::MAX));
    let confidence = ((1.0 - unsupported) * factor).clamp(0.0, 1.0);
    if confidence < scoring.min_confidence {
        return None;
    }

    let mut explanation = format!("{}: {}", cause.title, for_words.join(", "));
    if !against_words.is_empty() {
        explanation.push_str("; against: ");
        explanation.push_str(&against_words.join(", "));
    }
    if !missing_words.is_empty() {
        explanation.push_str("; not seen: ");
        explanation.push_str(&missing_words.join(", "));
    }
    explanation.push('.');

    Some(Hypothesis {
        cause: cause.id.clone(),
        title: cause.title.clone(),
        confidence,
        suggestion: suggest(ctx, cause, &supporting),
        supporting,
        contradicting,
        explanation,
        proposed_by: ProposedBy::Rules,
    })
}

fn touch_gaps(ctx: &Ctx<'_>, rule: &Rule, touched: &mut BTreeSet<EvidenceSource>) {
    touched.extend(
        rule.predicate
            .sources()
            .into_iter()
            .filter(|s| ctx.gapped.contains(s)),
    );
}

fn cite(label: &str, ids: &[EvidenceId]) -> String {
    let ids: Vec<&str> = ids.iter().map(|i| i.0.as_str()).collect();
    format!("{label} [{}]", ids.join(", "))
}

fn extend_unique(into: &mut Vec<EvidenceId>, ids: Vec<EvidenceId>) {
    for id in ids {
        if !into.contains(&id) {
            into.push(id);
        }
    }
}

/// The first suggestion whose `when` matches, aimed at a target: the one
/// the supporting pods/changes name if it is a target, else the first.
fn suggest(ctx: &Ctx<'_>, cause: &Cause, supporting: &[EvidenceId]) -> Option<Suggestion> {
    let rule = cause.suggest.iter().find(|s| {
        s.when
            .as_ref()
            .is_none_or(|w| !eval(ctx, &w.predicate).is_empty())
    })?;
    let Some(verb) = rule.verb.action() else {
        return Some(Suggestion {
            verb: None,
            target: None,
            note: rule.note.clone(),
        });
    };
    let named = supporting.iter().find_map(|id| {
        let w = match &ctx.bundle.get(&id.0)?.detail {
            EvidenceDetail::Pod { workload, .. } | EvidenceDetail::Change { workload, .. } => {
                workload.as_ref()?
            }
            _ => return None,
        };
        ctx.targets
            .iter()
            .find(|t| t.namespace == w.namespace && t.name == w.name)
    });
    let Some(target) = named.or_else(|| ctx.targets.first()) else {
        return Some(Suggestion {
            verb: None,
            target: None,
            note: format!(
                "{} (no action: the incident names no workload to act on)",
                rule.note
            ),
        });
    };
    let supported = match verb {
        ActionVerb::Scale => target.kind != WorkloadKind::DaemonSet,
        ActionVerb::Restart => true,
        ActionVerb::Rollback => target.kind == WorkloadKind::Deployment,
    };
    if !supported {
        return Some(Suggestion {
            verb: None,
            target: None,
            note: format!(
                "{} (no action: {} is not possible on a {})",
                rule.note,
                verb.as_str(),
                target.kind.as_str()
            ),
        });
    }
    Some(Suggestion {
        verb: Some(verb),
        target: Some(target.clone()),
        note: rule.note.clone(),
    })
}

/// The items a predicate matches (empty: no match).
fn eval(ctx: &Ctx<'_>, p: &Predicate) -> Vec<EvidenceId> {
    let items = ctx.bundle.items.iter();
    let ids = |f: &dyn Fn(&EvidenceItem) -> bool| -> Vec<EvidenceId> {
        items
            .clone()
            .filter(|i| f(i))
            .map(|i| i.id.clone())
            .collect()
    };
    match p {
        Predicate::Metric(m) => ids(&|i| metric_matches(ctx, m, i)),
        Predicate::Trend(t) => ids(&|i| trend_matches(ctx, t, i)),
        Predicate::Alert(a) => ids(&|i| alert_matches(ctx, a, i)),
        Predicate::Change(c) => ids(&|i| change_matches(ctx, c, i)),
        Predicate::Pod(pp) => ids(&|i| pod_matches(ctx, pp, i)),
        Predicate::Node(n) => ids(&|i| node_matches(n, i)),
        Predicate::Log(l) => ids(&|i| log_matches(ctx, l, i)),
        Predicate::DownstreamUnhealthy(d) => downstream_unhealthy(ctx, d),
        Predicate::AnyOf(ps) => {
            let mut out = Vec::new();
            for p in ps {
                extend_unique(&mut out, eval(ctx, p));
            }
            out
        }
    }
}

fn metric_matches(ctx: &Ctx<'_>, m: &MetricPred, item: &EvidenceItem) -> bool {
    match &item.detail {
        EvidenceDetail::Anomaly {
            labels,
            kind,
            movement,
            score,
            ..
        } => {
            m.kinds.contains(kind)
                && m.movement.is_none_or(|want| want == *movement)
                && score.abs() >= m.min_score
                && subject_ok(m.subject, ctx.label_subject(labels))
        }
        EvidenceDetail::Correlated {
            labels,
            kind,
            correlation,
            ..
        } if m.include_correlated => {
            let movement = ctx.headline.map(|h| match (h, *correlation >= 0.0) {
                (h, true) => h,
                (Movement::Up, false) => Movement::Down,
                (Movement::Down, false) => Movement::Up,
            });
            m.kinds.contains(kind)
                && correlation.abs() >= m.min_correlation
                && m.movement.is_none_or(|want| movement == Some(want))
                && subject_ok(m.subject, ctx.label_subject(labels))
        }
        _ => false,
    }
}

fn trend_matches(ctx: &Ctx<'_>, t: &TrendPred, item: &EvidenceItem) -> bool {
    match &item.detail {
        EvidenceDetail::Trend {
            labels,
            kind,
            movement,
            r2,
            ..
        } => {
            t.kinds.contains(kind)
                && *movement == t.movement
                && *r2 >= t.min_r2
                && subject_ok(t.subject, ctx.label_subject(labels))
        }
        _ => false,
    }
}

fn alert_matches(ctx: &Ctx<'_>, a: &AlertPred, item: &EvidenceItem) -> bool {
    match &item.detail {
        EvidenceDetail::Alert {
            name,
            firing,
            labels,
            ..
        } => {
            let lower = name.to_lowercase();
            (!a.firing || *firing)
                && (a.name_contains.is_empty()
                    || a.name_contains
                        .iter()
                        .any(|n| lower.contains(&n.to_lowercase())))
                && subject_ok(a.subject, ctx.label_subject(labels))
        }
        _ => false,
    }
}

fn change_matches(ctx: &Ctx<'_>, c: &ChangePred, item: &EvidenceItem) -> bool {
    match &item.detail {
        EvidenceDetail::Change {
            change, workload, ..
        } => {
            let opened = ctx.bundle.opened_at;
            let from = opened.saturating_sub(c.within.as_millis_i64());
            let to = opened.saturating_add(c.after.as_millis_i64());
            c.kinds.contains(change)
                && (from..=to).contains(&item.at)
                && subject_ok(c.subject, ctx.workload_subject(workload.as_ref()))
        }
        _ => false,
    }
}

fn pod_matches(ctx: &Ctx<'_>, p: &PodPred, item: &EvidenceItem) -> bool {
    match &item.detail {
        EvidenceDetail::Pod {
            workload,
            problem,
            count,
            ..
        } => {
            p.problems.contains(problem)
                && *count >= p.min_count
                && subject_ok(p.subject, ctx.workload_subject(workload.as_ref()))
        }
        _ => false,
    }
}

fn node_matches(n: &NodePred, item: &EvidenceItem) -> bool {
    match &item.detail {
        EvidenceDetail::Node { condition, .. } => {
            n.conditions.is_empty()
                || n.conditions
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(condition))
        }
        _ => false,
    }
}

fn log_matches(ctx: &Ctx<'_>, l: &LogPred, item: &EvidenceItem) -> bool {
    match &item.detail {
        EvidenceDetail::Log {
            service,
            template,
            rate_before,
            mentions,
            ..
        } => {
            let lower = template.to_lowercase();
            subject_ok(l.subject, ctx.name_subject(service))
                && (!l.new_only || *rate_before == 0.0)
                && (l.contains_any.is_empty()
                    || l.contains_any
                        .iter()
                        .any(|w| lower.contains(&w.to_lowercase())))
                && (!l.mentions_downstream
                    || mentions
                        .iter()
                        .any(|m| m != service && !ctx.is_target_name(m)))
        }
        _ => false,
    }
}

/// The downstream services the incident's own changed logs mention, and
/// which of them have bad signals of their own; matches those signals
/// and the log items that name them.
fn downstream_unhealthy(ctx: &Ctx<'_>, d: &DownstreamPred) -> Vec<EvidenceId> {
    let mentioned: BTreeSet<&str> = ctx
        .bundle
        .items
        .iter()
        .filter_map(|i| match &i.detail {
            EvidenceDetail::Log {
                service, mentions, ..
            } if ctx.name_subject(service) == Subject::Target => Some(
                mentions
                    .iter()
                    .filter(move |m| *m != service && !ctx.is_target_name(m))
                    .map(String::as_str),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    if mentioned.is_empty() {
        return Vec::new();
    }
    let names_of = |labels: &std::collections::BTreeMap<String, String>| -> BTreeSet<String> {
        WORKLOAD_LABELS
            .iter()
            .filter_map(|k| labels.get(*k).cloned())
            .collect()
    };
    let mut unhealthy: BTreeSet<String> = BTreeSet::new();
    let mut ids = Vec::new();
    for item in &ctx.bundle.items {
        let (labels, bad) = match &item.detail {
            EvidenceDetail::Anomaly {
                labels,
                kind,
                movement,
                ..
            } => (labels, d.kinds.contains(kind) && *movement == Movement::Up),
            EvidenceDetail::Correlated {
                labels,
                kind,
                correlation,
                ..
            } => (
                labels,
                d.kinds.contains(kind)
                    && *correlation >= d.min_correlation
                    && ctx.headline == Some(Movement::Up),
            ),
            EvidenceDetail::Alert { labels, firing, .. } => (labels, *firing),
            _ => continue,
        };
        if !bad {
            continue;
        }
        let hit: Vec<String> = names_of(labels)
            .into_iter()
            .filter(|n| mentioned.contains(n.as_str()))
            .collect();
        if !hit.is_empty() {
            unhealthy.extend(hit);
            ids.push(item.id.clone());
        }
    }
    if ids.is_empty() {
        return ids;
    }
    let mut out: Vec<EvidenceId> = ctx
        .bundle
        .items
        .iter()
        .filter(|i| match &i.detail {
            EvidenceDetail::Log { mentions, .. } => mentions.iter().any(|m| unhealthy.contains(m)),
            _ => false,
        })
        .map(|i| i.id.clone())
        .collect();
    extend_unique(&mut out, ids);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::diagnose::evidence::{ChangeKind, MetricKind, PodProblem};

    fn target() -> WorkloadRef {
        WorkloadRef {
            namespace: "shop".into(),
            kind: WorkloadKind::Deployment,
            name: "cart".into(),
        }
    }

    fn bundle() -> EvidenceBundle {
        EvidenceBundle {
            incident_id: Some(1),
            subject: "cart (shop)".into(),
            opened_at: 10_000_000,
            targets: vec![target()],
            items: vec![],
            gaps: vec![],
        }
    }

    fn labels(service: &str) -> BTreeMap<String, String> {
        [("namespace", "shop"), ("service", service)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn anomaly(b: &mut EvidenceBundle, service: &str, kind: MetricKind, score: f64) -> EvidenceId {
        b.push(
            EvidenceSource::Metric,
            b.opened_at,
            format!("{service} {kind:?} moved"),
            EvidenceDetail::Anomaly {
                signal: format!("{kind:?}").to_lowercase(),
                labels: labels(service),
                kind,
                movement: if score >= 0.0 {
                    Movement::Up
                } else {
                    Movement::Down
                },
                from: b.opened_at,
                to: b.opened_at + 60_000,
                peak: 1.0,
                expected: 0.1,
                score,
            },
        )
    }

    fn rollout(b: &mut EvidenceBundle, minutes_before: i64) -> EvidenceId {
        b.push(
            EvidenceSource::Change,
            b.opened_at - minutes_before * 60_000,
            "cart rolled out revision 8".into(),
            EvidenceDetail::Change {
                change: ChangeKind::Rollout,
                object: "cart".into(),
                workload: Some(target()),
                from_revision: Some(7),
                to_revision: Some(8),
            },
        )
    }

    fn log_mentioning(b: &mut EvidenceBundle, downstream: &str) -> EvidenceId {
        b.push(
            EvidenceSource::Log,
            b.opened_at,
            "cart logs: upstream failures".into(),
            EvidenceDetail::Log {
                service: "cart".into(),
                template: format!("call to {downstream} failed <*>"),
                rate_before: 0.0,
                rate_during: 30.0,
                examples: vec![],
                mentions: vec![downstream.into()],
            },
        )
    }

    fn catalogue() -> Catalogue {
        Catalogue::builtin().expect("shipped catalogue")
    }

    #[test]
    fn rollout_then_errors_is_a_bad_rollout_with_rollback_of_the_target() {
        let mut b = bundle();
        let c = rollout(&mut b, 10);
        let m = anomaly(&mut b, "cart", MetricKind::ErrorRatio, 9.0);
        let d = diagnose(&b, &catalogue());
        let top = d.top().expect("a hypothesis");
        assert_eq!(top.cause, "bad_rollout");
        assert_eq!(top.supporting, vec![c, m]);
        let s = top.suggestion.as_ref().expect("suggestion");
        assert_eq!(s.verb, Some(ActionVerb::Rollback));
        assert_eq!(s.target.as_ref(), Some(&target()));
        assert!(top.explanation.contains("[c1]"), "{}", top.explanation);
    }

    #[test]
    fn only_the_top_hypothesis_proposes_an_action() {
        let mut b = bundle();
        rollout(&mut b, 20);
        anomaly(&mut b, "cart", MetricKind::Throughput, 9.0);
        anomaly(&mut b, "cart", MetricKind::Cpu, 7.0);
        anomaly(&mut b, "cart", MetricKind::Latency, 6.0);
        let d = diagnose(&b, &catalogue());
        let top = d.top().expect("top");
        assert_eq!(top.cause, "saturation");
        assert_eq!(
            top.suggestion.as_ref().and_then(|s| s.verb),
            Some(ActionVerb::Scale)
        );
        let rollout = d
            .hypotheses
            .iter()
            .find(|h| h.cause == "bad_rollout")
            .expect("bad rollout is a runner-up");
        let s = rollout.suggestion.as_ref().expect("advice kept");
        assert_eq!((s.verb, &s.target), (None, &None));
        assert!(
            s.note.contains("if this is the cause: rollback"),
            "{}",
            s.note
        );
    }

    #[test]
    fn an_old_rollout_does_not_count() {
        let mut b = bundle();
        rollout(&mut b, 120);
        anomaly(&mut b, "cart", MetricKind::ErrorRatio, 9.0);
        let d = diagnose(&b, &catalogue());
        let bad = d.hypotheses.iter().find(|h| h.cause == "bad_rollout");
        assert!(bad.is_none_or(|h| h.confidence < 0.2), "{d:?}");
    }

    #[test]
    fn gaps_lower_confidence_and_mark_requirements_unknown() {
        let mut b = bundle();
        anomaly(&mut b, "cart", MetricKind::ErrorRatio, 9.0);
        let without_gap = diagnose(&b, &catalogue());
        b.gaps.push("kubernetes: 403 on replicasets".into());
        let with_gap = diagnose(&b, &catalogue());
        let conf = |d: &Diagnosis| {
            d.hypotheses
                .iter()
                .find(|h| h.cause == "bad_rollout")
                .map(|h| h.confidence)
                .unwrap_or(0.0)
        };
        // Unknown is not absent: the missing rollout costs less when the
        // source was unreadable, but the gap still shows.
        assert!(conf(&with_gap) > conf(&without_gap));
        let h = with_gap
            .hypotheses
            .iter()
            .find(|h| h.cause == "bad_rollout")
            .expect("listed");
        assert!(h.explanation.contains("unknown"), "{}", h.explanation);
        assert_eq!(with_gap.gaps, b.gaps);
        // A fully supported cause loses confidence when a source it reads
        // for contradictions is missing.
        let mut b2 = bundle();
        rollout(&mut b2, 5);
        anomaly(&mut b2, "cart", MetricKind::Latency, 9.0);
        let clean = conf(&diagnose(&b2, &catalogue()));
        b2.gaps.push("logs: elasticsearch timed out".into());
        assert!(conf(&diagnose(&b2, &catalogue())) < clean);
    }

    #[test]
    fn dependency_outage_blocks_scaling_even_when_saturation_is_close() {
        let mut b = bundle();
        anomaly(&mut b, "cart", MetricKind::Throughput, 5.0);
        anomaly(&mut b, "cart", MetricKind::Latency, 8.0);
        anomaly(&mut b, "cart", MetricKind::Cpu, 6.0);
        log_mentioning(&mut b, "payments");
        anomaly(&mut b, "payments", MetricKind::ErrorRatio, 12.0);
        let d = diagnose(&b, &catalogue());
        let dep = d
            .hypotheses
            .iter()
            .find(|h| h.cause == "dependency_outage")
            .expect("dependency outage listed");
        assert!(dep.supporting.iter().any(|i| i.0 == "m4"), "{dep:?}");
        for h in &d.hypotheses {
            let verb = h.suggestion.as_ref().and_then(|s| s.verb);
            assert!(
                !matches!(verb, Some(ActionVerb::Scale | ActionVerb::Restart)),
                "{} still suggests {verb:?}",
                h.cause
            );
        }
    }

    #[test]
    fn healthy_downstream_is_not_an_outage() {
        let mut b = bundle();
        log_mentioning(&mut b, "payments");
        anomaly(&mut b, "cart", MetricKind::ErrorRatio, 8.0);
        // payments only has a *falling* error ratio: good news, not bad.
        anomaly(&mut b, "payments", MetricKind::ErrorRatio, -4.0);
        let d = diagnose(&b, &catalogue());
        assert!(d
            .hypotheses
            .iter()
            .all(|h| h.cause != "dependency_outage" || h.confidence < 0.2));
    }

    #[test]
    fn safety_rule_applies_to_llm_hypotheses_too() {
        let cat = catalogue();
        let h = |cause: &str, conf: f64, verb: Option<ActionVerb>| Hypothesis {
            cause: cause.into(),
            title: cause.into(),
            confidence: conf,
            supporting: vec![],
            contradicting: vec![],
            explanation: String::new(),
            suggestion: Some(Suggestion {
                verb,
                target: verb.map(|_| target()),
                note: "n".into(),
            }),
            proposed_by: ProposedBy::Llm,
        };
        let mut d = Diagnosis {
            hypotheses: vec![
                h("saturation", 0.8, Some(ActionVerb::Scale)),
                h("node_pressure", 0.75, None),
                h("bad_rollout", 0.5, Some(ActionVerb::Rollback)),
            ],
            ..Diagnosis::default()
        };
        assert_eq!(
            apply_safety_rule(&mut d, &cat).as_deref(),
            Some("node_pressure")
        );
        let s = d.hypotheses[0].suggestion.as_ref().expect("kept");
        assert_eq!((s.verb, s.target.as_ref()), (None, None));
        assert!(s.note.starts_with("Not suggested (scale)"), "{}", s.note);
        assert_eq!(
            d.hypotheses[2].suggestion.as_ref().and_then(|s| s.verb),
            Some(ActionVerb::Rollback)
        );
        // Far below the top, a blocking cause does not block.
        let mut d = Diagnosis {
            hypotheses: vec![
                h("saturation", 0.8, Some(ActionVerb::Scale)),
                h("node_pressure", 0.3, None),
            ],
            ..Diagnosis::default()
        };
        assert_eq!(apply_safety_rule(&mut d, &cat), None);
    }

    #[test]
    fn suggestions_never_leave_the_targets() {
        let mut b = bundle();
        b.push(
            EvidenceSource::Pod,
            b.opened_at,
            "other pod OOMKilled".into(),
            EvidenceDetail::Pod {
                pod: "billing-1".into(),
                workload: Some(WorkloadRef {
                    namespace: "shop".into(),
                    kind: WorkloadKind::Deployment,
                    name: "billing".into(),
                }),
                problem: PodProblem::OomKilled,
                count: 3,
            },
        );
        b.push(
            EvidenceSource::Pod,
            b.opened_at,
            "cart pod OOMKilled".into(),
            EvidenceDetail::Pod {
                pod: "cart-1".into(),
                workload: Some(target()),
                problem: PodProblem::OomKilled,
                count: 2,
            },
        );
        anomaly(&mut b, "cart", MetricKind::Memory, 6.0);
        let d = diagnose(&b, &catalogue());
        let top = d.top().expect("memory leak");
        assert_eq!(top.cause, "memory_leak");
        assert!(
            !top.supporting.iter().any(|i| i.0 == "p1"),
            "other pods are not evidence"
        );
        assert!(top.supporting.iter().any(|i| i.0 == "p2"));
        assert_eq!(
            top.suggestion.as_ref().and_then(|s| s.target.clone()),
            Some(target())
        );

        // No targets: no action.
        b.targets.clear();
        let d = diagnose(&b, &catalogue());
        for h in &d.hypotheses {
            let s = h.suggestion.as_ref().expect("suggestion");
            assert_eq!((s.verb, &s.target), (None, &None));
        }
    }
}
