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

/// Where an action is in its execution, after the approval step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecState {
    /// Allowed (or waiting for approval); not started.
    Planned,
    /// Allowed by a `dry_run` rule: recorded, never run.
    DryRun,
    /// Intent and pre-state recorded; the API call may or may not have
    /// happened (a crash here is reconciled from the object's annotation).
    Executing,
    /// The API server accepted the change; verification pending.
    Executed,
    /// The signals recovered after the settle time.
    Verified,
    /// The call failed, or verification did not show recovery (or could
    /// not get data); see the message.
    Failed,
    /// Undone after a failed verification (or by a person).
    Reverted,
    /// Undoing failed; a person must look.
    RevertFailed,
    /// Never run: approval denied or expired, or the incident ended first.
    Cancelled,
}

impl ExecState {
    /// The lowercase name used in the store, the API and events.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecState::Planned => "planned",
            ExecState::DryRun => "dry_run",
            ExecState::Executing => "executing",
            ExecState::Executed => "executed",
            ExecState::Verified => "verified",
            ExecState::Failed => "failed",
            ExecState::Reverted => "reverted",
            ExecState::RevertFailed => "revert_failed",
            ExecState::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<ExecState> {
        Some(match s {
            "planned" => ExecState::Planned,
            "dry_run" => ExecState::DryRun,
            "executing" => ExecState::Executing,
            "executed" => ExecState::Executed,
            "verified" => ExecState::Verified,
            "failed" => ExecState::Failed,
            "reverted" => ExecState::Reverted,
            "revert_failed" => ExecState::RevertFailed,
            "cancelled" => ExecState::Cancelled,
            _ => return None,
        })
    }
}

/// The remediation side of an action record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// Progress.
    pub state: ExecState,
    /// The rule that allowed it.
    pub rule: String,
    /// `auto`, `approve` or `dry_run`.
    pub mode: String,
    /// `rules`, `llm` or `policy`.
    pub proposed_by: String,
    /// The bounded plan (unreadable plans load as `None`, and nothing runs
    /// a plan it cannot read).
    pub plan: Option<PlannedAction>,
    /// What the action changes, recorded before it ran.
    pub pre_state: Option<super::plan::PreState>,
    /// The latest outcome sentence.
    pub message: Option<String>,
    /// Wall time the change was accepted.
    pub executed_at: Option<TimestampMs>,
    /// Data time after which the signals must be normal (execution's data
    /// time plus the settle time).
    pub verify_from: Option<TimestampMs>,
    /// Wall time it reached a final state.
    pub finished_at: Option<TimestampMs>,
    /// Who asked for a revert (API or `aiopsd action revert`), if anyone.
    pub revert_requested_by: Option<String>,
    /// Why they asked.
    pub revert_reason: Option<String>,
}
