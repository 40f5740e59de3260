//! The result of diagnosis: ranked root-cause hypotheses, each citing the
//! evidence for and against it, and what (if anything) it suggests doing.
//!
//! Rules and the LLM both produce these; `proposed_by` keeps them apart in
//! the report, and a suggestion is only ever input to the policy gate.

use serde::{Deserialize, Serialize};

use super::evidence::EvidenceId;
use crate::remediate::plan::{ActionVerb, WorkloadRef};

/// Who put a hypothesis or suggestion forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposedBy {
    /// The rule catalogue.
    Rules,
    /// The LLM (validated against the bundle; never acts on its own).
    Llm,
}

impl ProposedBy {
    /// The lowercase name used in reports, policies and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ProposedBy::Rules => "rules",
            ProposedBy::Llm => "llm",
        }
    }
}

/// An action a hypothesis suggests: a verb from the closed set and a
/// target from the bundle's `targets` (anything else is discarded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suggestion {
    /// `None`: the right response is no workload action (page the owner,
    /// report only).
    pub verb: Option<ActionVerb>,
    /// The workload; `None` with `verb: None`.
    pub target: Option<WorkloadRef>,
    /// Why, in one sentence (e.g. "raise the memory limit" as advice).
    pub note: String,
}

/// One candidate root cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    /// Catalogue id of the cause, e.g. `bad_rollout`, `memory_leak`.
    pub cause: String,
    /// Title for people, e.g. "Bad rollout".
    pub title: String,
    /// Confidence in [0, 1].
    pub confidence: f64,
    /// Evidence ids that support it.
    pub supporting: Vec<EvidenceId>,
    /// Evidence ids that speak against it.
    pub contradicting: Vec<EvidenceId>,
    /// One or two sentences of reasoning.
    pub explanation: String,
    /// What it suggests doing.
    pub suggestion: Option<Suggestion>,
    /// Rules or LLM.
    pub proposed_by: ProposedBy,
}

/// Ranked hypotheses for one incident, best first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Diagnosis {
    /// Best first.
    pub hypotheses: Vec<Hypothesis>,
    /// Data time of the diagnosis.
    pub at: i64,
    /// Evidence sources that could not be read; a gap lowers confidence
    /// and is shown, never silently treated as "nothing found".
    pub gaps: Vec<String>,
    /// What happened to the LLM's answer, when one was asked: `used`,
    /// or why it was discarded (`invalid JSON`, `unknown evidence id m9`,
    /// `timeout`, `budget exhausted`...).
    pub llm_status: Option<String>,
    /// The evidence the hypotheses cite (by id), kept with them so the
    /// report and the UI show exactly what was weighed. `serde(default)`:
    /// absent in diagnoses stored before it existed.
    #[serde(default)]
    pub evidence: super::evidence::EvidenceBundle,
}

impl Diagnosis {
    /// The top hypothesis, if any.
    pub fn top(&self) -> Option<&Hypothesis> {
        self.hypotheses.first()
    }
}
