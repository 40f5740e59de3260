//! The incident report's "Diagnosis" section: the top hypotheses with
//! their confidence, who proposed them, what they suggest, and the
//! evidence for and against each, cited by id with its summary so a person
//! can check every claim in a minute.
//!
//! Evidence summaries carry text from outside (log lines, label values),
//! so everything is escaped: a log line cannot add a link, a heading or
//! an image to the report.

use std::fmt::Write as _;

use super::evidence::{EvidenceBundle, EvidenceId};
use super::hypothesis::{Diagnosis, Hypothesis};

/// Hypotheses shown in full; the rest get one line each.
const DETAILED: usize = 3;
/// Evidence items cited per hypothesis and side.
const MAX_CITED: usize = 6;

/// Renders the "Diagnosis" section (starting with `## Diagnosis`) for the
/// incident report.
pub fn render_markdown(diagnosis: &Diagnosis, bundle: &EvidenceBundle) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_section(&mut out, diagnosis, bundle);
    out
}

fn write_section(
    out: &mut String,
    diagnosis: &Diagnosis,
    bundle: &EvidenceBundle,
) -> std::fmt::Result {
    writeln!(out, "## Diagnosis")?;
    writeln!(out)?;
    if diagnosis.hypotheses.is_empty() {
        writeln!(
            out,
            "No known cause fits the evidence ({} {}).",
            bundle.items.len(),
            if bundle.items.len() == 1 {
                "item"
            } else {
                "items"
            }
        )?;
        writeln!(out)?;
    }
    for (i, h) in diagnosis.hypotheses.iter().enumerate() {
        if i < DETAILED {
            write_hypothesis(out, i + 1, h, bundle)?;
        } else {
            if i == DETAILED {
                writeln!(out, "Also considered:")?;
                writeln!(out)?;
            }
            writeln!(
                out,
                "- {} — {} ({})",
                escape(&h.title),
                percent(h.confidence),
                h.proposed_by.as_str()
            )?;
            if i + 1 == diagnosis.hypotheses.len() {
                writeln!(out)?;
            }
        }
    }
    if !diagnosis.gaps.is_empty() {
        writeln!(
            out,
            "Evidence gaps (unknown, not absent; confidence is lowered accordingly):"
        )?;
        for g in &diagnosis.gaps {
            writeln!(out, "- {}", escape(g))?;
        }
        writeln!(out)?;
    }
    match &diagnosis.llm_status {
        Some(status) => writeln!(out, "LLM: {}.", escape(status))?,
        None => writeln!(out, "LLM: not asked.")?,
    }
    Ok(())
}

fn write_hypothesis(
    out: &mut String,
    rank: usize,
    h: &Hypothesis,
    bundle: &EvidenceBundle,
) -> std::fmt::Result {
    writeln!(
        out,
        "### {rank}. {} — {} (proposed by {})",
        escape(&h.title),
        percent(h.confidence),
        h.proposed_by.as_str()
    )?;
    writeln!(out)?;
    writeln!(out, "{}", escape(&h.explanation))?;
    writeln!(out)?;
    if let Some(s) = &h.suggestion {
        match (&s.verb, &s.target) {
            (Some(verb), Some(target)) => writeln!(
                out,
                "- **Suggests:** {} `{}` — {} (subject to the policy gate)",
                verb.as_str(),
                target,
                escape(&s.note)
            )?,
            _ => writeln!(
                out,
                "- **Suggests:** no workload action — {}",
                escape(&s.note)
            )?,
        }
    }
    write_cited(out, "For", &h.supporting, bundle)?;
    write_cited(out, "Against", &h.contradicting, bundle)?;
    writeln!(out)
}

fn write_cited(
    out: &mut String,
    what: &str,
    ids: &[EvidenceId],
    bundle: &EvidenceBundle,
) -> std::fmt::Result {
    if ids.is_empty() {
        return Ok(());
    }
    writeln!(out, "- **{what}:**")?;
    for id in ids.iter().take(MAX_CITED) {
        match bundle.get(&id.0) {
            Some(item) => writeln!(
                out,
                "  - `{}` {}",
                escape_code(&id.0),
                escape(&item.summary)
            )?,
            None => writeln!(out, "  - `{}` (not in the bundle)", escape_code(&id.0))?,
        }
    }
    if ids.len() > MAX_CITED {
        writeln!(out, "  - … and {} more", ids.len() - MAX_CITED)?;
    }
    Ok(())
}

fn percent(c: f64) -> String {
    if c.is_finite() {
        format!("{:.0}%", (c * 100.0).clamp(0.0, 100.0))
    } else {
        "?".into()
    }
}

/// One line, Markdown punctuation backslash-escaped (CommonMark allows it
/// for every ASCII punctuation character), so outside text renders as
/// text.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\r' | '\n' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|' | '!' | '(' | ')' | '~'
            | '&' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Ids are ours, but a backtick would still end the code span.
fn escape_code(s: &str) -> String {
    s.replace(['`', '\r', '\n'], "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::evidence::{EvidenceDetail, EvidenceSource, MetricKind, Movement};
    use crate::diagnose::hypothesis::{ProposedBy, Suggestion};
    use crate::remediate::plan::{ActionVerb, WorkloadKind, WorkloadRef};

    #[test]
    fn section_cites_evidence_and_escapes_outside_text() {
        let mut b = EvidenceBundle::default();
        let id = b.push(
            EvidenceSource::Log,
            0,
            "cart logs: ![x](http://evil) **click** `rm`\n# heading".into(),
            EvidenceDetail::Log {
                service: "cart".into(),
                template: "t".into(),
                rate_before: 0.0,
                rate_during: 1.0,
                examples: vec![],
                mentions: vec![],
            },
        );
        let m = b.push(
            EvidenceSource::Metric,
            0,
            "latency rose".into(),
            EvidenceDetail::Anomaly {
                signal: "latency".into(),
                labels: Default::default(),
                kind: MetricKind::Latency,
                movement: Movement::Up,
                from: 0,
                to: 0,
                peak: 1.0,
                expected: 0.1,
                score: 5.0,
            },
        );
        let target = WorkloadRef {
            namespace: "shop".into(),
            kind: WorkloadKind::Deployment,
            name: "cart".into(),
        };
        let d = Diagnosis {
            hypotheses: vec![Hypothesis {
                cause: "bad_rollout".into(),
                title: "Bad rollout".into(),
                confidence: 0.734,
                supporting: vec![id, m.clone()],
                contradicting: vec![EvidenceId("x9".into())],
                explanation: "Bad rollout: fits.".into(),
                suggestion: Some(Suggestion {
                    verb: Some(ActionVerb::Rollback),
                    target: Some(target),
                    note: "Roll back.".into(),
                }),
                proposed_by: ProposedBy::Rules,
            }],
            at: 0,
            gaps: vec!["kubernetes: 403 on pods".into()],
            llm_status: Some("discarded: unknown evidence id m9".into()),
            evidence: Default::default(),
        };
        let md = render_markdown(&d, &b);
        assert!(md.starts_with("## Diagnosis\n"), "{md}");
        assert!(
            md.contains("### 1. Bad rollout — 73% (proposed by rules)"),
            "{md}"
        );
        assert!(md.contains("rollback `shop/Deployment/cart`"), "{md}");
        assert!(md.contains("`m1` latency rose"), "{md}");
        assert!(md.contains("`x9` (not in the bundle)"), "{md}");
        assert!(md.contains("\\!\\[x\\]\\(http://evil\\)"), "{md}");
        assert!(!md.contains("\n# heading"), "{md}");
        assert!(md.contains("- kubernetes: 403 on pods"), "{md}");
        assert!(
            md.contains("LLM: discarded: unknown evidence id m9."),
            "{md}"
        );
    }

    #[test]
    fn empty_diagnosis_says_so() {
        let md = render_markdown(&Diagnosis::default(), &EvidenceBundle::default());
        assert!(
            md.contains("No known cause fits the evidence (0 items)."),
            "{md}"
        );
        assert!(md.contains("LLM: not asked."), "{md}");
    }
}
