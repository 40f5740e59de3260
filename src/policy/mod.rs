//! The policy gate: deny by default; an action runs only when a rule in
//! `policies/*.yaml` allows it, within its bounds and limits
//! (docs/POLICY.md is the reference).
//!
//! Where to start:
//! - [`PolicySet::load_dir`] / [`PolicyReloader`] read and check the files
//!   (every problem as `file:line: field: message`);
//! - [`decide`] turns a [`GateInput`] into a [`Decision`]: pure and
//!   synchronous, so the daemon, tests and `aiopsd policy explain` get the
//!   same answer for the same input;
//! - [`check_dir`] and [`explain`] are the CLI tools.
//!
//! Layout: `spec` (the file as written) → `load` (checked into `rule`
//! types, with `condition` and `window`) → `gate` (the decision).

mod condition;
mod explain;
mod gate;
mod load;
mod rule;
mod spec;
mod window;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use explain::{check_dir, explain, newest_data_time, ExplainError};
pub use gate::{
    decide, Decision, GateInput, IncidentKind, PastAction, Proposal, RollbackCandidate,
};
pub use load::{
    PolicyErrors, PolicyProblem, PolicyReloader, PolicySet, ReloadOutcome, API_VERSION,
};
pub use rule::Rule;

/// What a rule does once it allows an action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Run it.
    Auto,
    /// Ask a person first (`Store::request_action`).
    Approve,
    /// Record what would run; run nothing. The default.
    #[default]
    DryRun,
}

impl Mode {
    /// The name used in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Approve => "approve",
            Mode::DryRun => "dry_run",
        }
    }
}
