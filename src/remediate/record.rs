//! What an incident remembers of the policy gate's decisions: a
//! serialisable summary shown in the report, the API and the UI.

use serde::{Deserialize, Serialize};

use super::plan::PlannedAction;
use crate::signal::TimestampMs;

/// How the gate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionOutcome {
    /// A rule allowed it in `auto` mode: it runs.
    Execute,
    /// A rule allowed it in `dry_run` mode: recorded, not run.
    DryRun,
    /// A rule allowed it in `approve` mode: waits for a person.
    NeedsApproval,
    /// No rule allowed it, or a limit refused it.
    Refused,
}

impl DecisionOutcome {
    /// The lowercase name used in reports, the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionOutcome::Execute => "execute",
            DecisionOutcome::DryRun => "dry_run",
            DecisionOutcome::NeedsApproval => "needs_approval",
            DecisionOutcome::Refused => "refused",
        }
    }
}

/// One decision of the gate about one incident, as the incident keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// When it was decided (wall time).
    pub at: TimestampMs,
    /// The outcome.
    pub outcome: DecisionOutcome,
    /// The rule that decided (`file:rule-name`), or the built-in reason
    /// such as `default-deny` or `kill-switch`.
    pub rule: String,
    /// Why, one sentence per check that mattered.
    pub reasons: Vec<String>,
    /// The bounded action, when a rule produced one.
    pub action: Option<PlannedAction>,
    /// `rules`, `llm` or `policy` (the rule's own action).
    pub proposed_by: String,
    /// The action record's id once one exists.
    pub action_id: Option<i64>,
}
