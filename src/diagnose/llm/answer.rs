//! Strict validation of the model's answer. The answer is untrusted input:
//! one wrong part discards all of it, and only then does anything become
//! a [`Hypothesis`] — data for the report and the policy gate, never an
//! action.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;

use super::prompt::MAX_HYPOTHESES;
use crate::diagnose::evidence::{EvidenceBundle, EvidenceId};
use crate::diagnose::hypothesis::{Hypothesis, ProposedBy, Suggestion};
use crate::remediate::plan::{ActionVerb, WorkloadKind, WorkloadRef};

/// Longest title kept; a longer one is cut (it is prose for people, not a
/// field anything acts on).
const MAX_TITLE_CHARS: usize = 120;
/// Longest explanation kept, cut likewise.
const MAX_EXPLANATION_CHARS: usize = 1200;

/// Why an answer was discarded: a class for metrics and a sentence for the
/// report (`Diagnosis::llm_status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discard {
    /// The class, a metric label value.
    pub kind: DiscardKind,
    /// What exactly was wrong.
    pub message: String,
}

impl fmt::Display for Discard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Classes of discarded answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscardKind {
    /// No content (or no choice) in the completion.
    Empty,
    /// The model refused (`message.refusal`).
    Refused,
    /// Generation stopped at `max_tokens`.
    Truncated,
    /// The content is not JSON.
    InvalidJson,
    /// JSON, but not the schema: missing or extra fields, wrong types,
    /// too many hypotheses, a malformed cause, no evidence cited.
    OutOfSchema,
    /// A confidence outside [0, 1] (or not finite).
    Confidence,
    /// An evidence id that was not in the prompt.
    UnknownEvidence,
    /// An action target that is not one of the bundle's targets.
    UnknownTarget,
    /// A verb outside {scale, restart, rollback, none}.
    UnknownVerb,
}

impl DiscardKind {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardKind::Empty => "empty",
            DiscardKind::Refused => "refused",
            DiscardKind::Truncated => "truncated",
            DiscardKind::InvalidJson => "invalid_json",
            DiscardKind::OutOfSchema => "out_of_schema",
            DiscardKind::Confidence => "confidence_out_of_range",
            DiscardKind::UnknownEvidence => "unknown_evidence",
            DiscardKind::UnknownTarget => "unknown_target",
            DiscardKind::UnknownVerb => "unknown_verb",
        }
    }
}

fn discard(kind: DiscardKind, message: impl Into<String>) -> Discard {
    Discard {
        kind,
        message: message.into(),
    }
}

// The wire shape, exactly the schema of `prompt::answer_schema`.
// `deny_unknown_fields` everywhere: an extra field means the model is not
// following the schema, and a field we do not know could be one it hopes
// something downstream will read.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    hypotheses: Vec<AnswerHypothesis>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerHypothesis {
    cause: String,
    title: String,
    confidence: f64,
    evidence_ids: Vec<String>,
    explanation: String,
    // Nullable in the strict schema; a missing field reads as null too.
    proposed_action: Option<AnswerAction>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerAction {
    verb: String,
    target: Option<AnswerTarget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerTarget {
    namespace: String,
    kind: String,
    name: String,
}

/// Checks `content` against the schema, the evidence ids that were `shown`
/// and the bundle's targets; all or nothing.
pub fn validate(
    content: &str,
    bundle: &EvidenceBundle,
    shown: &BTreeSet<String>,
) -> Result<Vec<Hypothesis>, Discard> {
    let value: serde_json::Value = serde_json::from_str(content.trim())
        .map_err(|e| discard(DiscardKind::InvalidJson, format!("invalid JSON: {e}")))?;
    let answer: Answer = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        discard(
            DiscardKind::OutOfSchema,
            format!("does not match the schema at {path}: {}", e.inner()),
        )
    })?;
    if answer.hypotheses.len() > MAX_HYPOTHESES {
        return Err(discard(
            DiscardKind::OutOfSchema,
            format!(
                "{} hypotheses, more than the {MAX_HYPOTHESES} allowed",
                answer.hypotheses.len()
            ),
        ));
    }
    answer
        .hypotheses
        .into_iter()
        .enumerate()
        .map(|(i, h)| hypothesis(i + 1, h, bundle, shown))
        .collect()
}

fn hypothesis(
    n: usize,
    h: AnswerHypothesis,
    bundle: &EvidenceBundle,
    shown: &BTreeSet<String>,
) -> Result<Hypothesis, Discard> {
    let valid_cause = h.cause.len() <= 64
        && h.cause.starts_with(|c: char| c.is_ascii_lowercase())
        && h.cause
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid_cause {
        return Err(discard(
            DiscardKind::OutOfSchema,
            format!(
                "cause {:?} of hypothesis {n} is not a snake_case id",
                short(&h.cause)
            ),
        ));
    }
    if !(0.0..=1.0).contains(&h.confidence) {
        return Err(discard(
            DiscardKind::Confidence,
            format!(
                "confidence {} of hypothesis {n} is outside [0, 1]",
                h.confidence
            ),
        ));
    }
    if h.evidence_ids.is_empty() {
        return Err(discard(
            DiscardKind::OutOfSchema,
            format!("hypothesis {n} cites no evidence"),
        ));
    }
    let mut supporting: Vec<EvidenceId> = Vec::with_capacity(h.evidence_ids.len());
    for id in h.evidence_ids {
        if !shown.contains(&id) {
            return Err(discard(
                DiscardKind::UnknownEvidence,
                format!("unknown evidence id {:?} in hypothesis {n}", short(&id)),
            ));
        }
        let id = EvidenceId(id);
        if !supporting.contains(&id) {
            supporting.push(id);
        }
    }
    let suggestion = match h.proposed_action {
        None => None,
        Some(action) => Some(suggestion(n, action, bundle)?),
    };
    Ok(Hypothesis {
        cause: h.cause,
        title: cut(h.title, MAX_TITLE_CHARS),
        confidence: h.confidence,
        supporting,
        contradicting: Vec::new(),
        explanation: cut(h.explanation, MAX_EXPLANATION_CHARS),
        suggestion,
        proposed_by: ProposedBy::Llm,
    })
}

fn suggestion(
    n: usize,
    action: AnswerAction,
    bundle: &EvidenceBundle,
) -> Result<Suggestion, Discard> {
    let verb = match action.verb.as_str() {
        "scale" => Some(ActionVerb::Scale),
        "restart" => Some(ActionVerb::Restart),
        "rollback" => Some(ActionVerb::Rollback),
        "none" => None,
        other => {
            return Err(discard(
                DiscardKind::UnknownVerb,
                format!("unknown verb {:?} in hypothesis {n}", short(other)),
            ))
        }
    };
    let target = match action.target {
        None => None,
        Some(t) => {
            let described = format!(
                "{}/{}/{}",
                short(&t.namespace),
                short(&t.kind),
                short(&t.name)
            );
            let known = WorkloadKind::parse(&t.kind).and_then(|kind| {
                let wanted = WorkloadRef {
                    namespace: t.namespace,
                    kind,
                    name: t.name,
                };
                bundle.targets.iter().find(|x| **x == wanted).cloned()
            });
            match known {
                Some(t) => Some(t),
                None => {
                    return Err(discard(
                        DiscardKind::UnknownTarget,
                        format!(
                            "target {described:?} of hypothesis {n} is not one of the incident's workloads"
                        ),
                    ))
                }
            }
        }
    };
    match (verb, target) {
        (Some(verb), None) => Err(discard(
            DiscardKind::OutOfSchema,
            format!("verb {} in hypothesis {n} has no target", verb.as_str()),
        )),
        (Some(verb), Some(target)) => Ok(Suggestion {
            note: format!("proposed by the LLM: {} {target}", verb.as_str()),
            verb: Some(verb),
            target: Some(target),
        }),
        // `none` needs no target; a valid one named anyway is dropped, as
        // `Suggestion` documents `target: None` with `verb: None`.
        (None, _) => Ok(Suggestion {
            verb: None,
            target: None,
            note: "proposed by the LLM: no workload action".into(),
        }),
    }
}

/// `s` cut to `max` characters (with `…`).
fn cut(s: String, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s,
    }
}

/// Model-written text quoted in a reason, bounded so a reason stays one
/// short line.
fn short(s: &str) -> String {
    cut(s.to_string(), 40)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bundle() -> (EvidenceBundle, BTreeSet<String>) {
        let b = EvidenceBundle {
            targets: vec![WorkloadRef {
                namespace: "shop".into(),
                kind: WorkloadKind::Deployment,
                name: "cart".into(),
            }],
            ..EvidenceBundle::default()
        };
        let shown = ["m1", "c1", "l1"].iter().map(|s| s.to_string()).collect();
        (b, shown)
    }

    fn good() -> serde_json::Value {
        json!({"hypotheses": [{
            "cause": "bad_rollout", "title": "Bad rollout", "confidence": 0.8,
            "evidence_ids": ["m1", "c1", "m1"], "explanation": "errors after revision 7",
            "proposed_action": {"verb": "rollback", "target": {"namespace": "shop", "kind": "Deployment", "name": "cart"}}
        }, {
            "cause": "dependency_outage", "title": "Payments down", "confidence": 0.1,
            "evidence_ids": ["l1"], "explanation": "mentions payments", "proposed_action": {"verb": "none", "target": null}
        }]})
    }

    fn check(v: &serde_json::Value) -> Result<Vec<Hypothesis>, Discard> {
        let (b, shown) = bundle();
        validate(&v.to_string(), &b, &shown)
    }

    fn kind_of(v: serde_json::Value) -> DiscardKind {
        check(&v).expect_err("must be discarded").kind
    }

    #[test]
    fn a_valid_answer_becomes_llm_hypotheses() {
        let hs = check(&good()).expect("valid");
        assert_eq!(hs.len(), 2);
        assert!(hs.iter().all(|h| h.proposed_by == ProposedBy::Llm));
        assert_eq!(
            hs[0].supporting,
            vec![EvidenceId("m1".into()), EvidenceId("c1".into())]
        );
        let s = hs[0].suggestion.as_ref().expect("suggestion");
        assert_eq!(s.verb, Some(ActionVerb::Rollback));
        assert_eq!(s.target.as_ref().map(|t| t.name.as_str()), Some("cart"));
        assert_eq!(hs[1].suggestion.as_ref().and_then(|s| s.verb), None);
    }

    #[test]
    fn each_violation_discards_the_whole_answer() {
        let mut v = good();
        v["hypotheses"][1]["confidence"] = json!(1.5);
        assert_eq!(kind_of(v), DiscardKind::Confidence);

        let mut v = good();
        v["hypotheses"][1]["evidence_ids"] = json!(["l1", "m9"]);
        let d = check(&v).expect_err("hallucinated id");
        assert_eq!(d.kind, DiscardKind::UnknownEvidence);
        assert_eq!(d.message, "unknown evidence id \"m9\" in hypothesis 2");

        let mut v = good();
        v["hypotheses"][0]["proposed_action"]["target"]["name"] = json!("payments");
        assert_eq!(kind_of(v), DiscardKind::UnknownTarget);

        let mut v = good();
        v["hypotheses"][0]["proposed_action"]["target"]["kind"] = json!("Pod");
        assert_eq!(kind_of(v), DiscardKind::UnknownTarget);

        let mut v = good();
        v["hypotheses"][0]["proposed_action"]["verb"] = json!("delete");
        assert_eq!(kind_of(v), DiscardKind::UnknownVerb);

        let mut v = good();
        v["hypotheses"][0]["proposed_action"]["replicas"] = json!(100);
        let d = check(&v).expect_err("extra field");
        assert_eq!(d.kind, DiscardKind::OutOfSchema);
        assert!(
            d.message.contains("hypotheses[0].proposed_action"),
            "{}",
            d.message
        );
        assert!(d.message.contains("replicas"), "{}", d.message);

        let mut v = good();
        v["note"] = json!("hi");
        assert_eq!(kind_of(v), DiscardKind::OutOfSchema);

        let mut v = good();
        v["hypotheses"][0]["proposed_action"]["target"] = json!(null);
        assert_eq!(kind_of(v), DiscardKind::OutOfSchema);

        let mut v = good();
        v["hypotheses"][0]["cause"] = json!("Bad Rollout!");
        assert_eq!(kind_of(v), DiscardKind::OutOfSchema);

        let mut v = good();
        v["hypotheses"][0]["evidence_ids"] = json!([]);
        assert_eq!(kind_of(v), DiscardKind::OutOfSchema);

        let mut v = good();
        let one = v["hypotheses"][0].clone();
        v["hypotheses"] = json!([
            one.clone(),
            one.clone(),
            one.clone(),
            one.clone(),
            one.clone(),
            one
        ]);
        assert_eq!(kind_of(v), DiscardKind::OutOfSchema);

        let (b, shown) = bundle();
        let d = validate("{\"hypotheses\": [", &b, &shown).expect_err("cut JSON");
        assert_eq!(d.kind, DiscardKind::InvalidJson);
        assert!(d.message.starts_with("invalid JSON: "));
    }

    #[test]
    fn long_prose_is_cut_not_discarded() {
        let mut v = good();
        v["hypotheses"][0]["explanation"] = json!("x".repeat(5000));
        let hs = check(&v).expect("valid");
        assert_eq!(hs[0].explanation.chars().count(), MAX_EXPLANATION_CHARS + 1);
    }
}
