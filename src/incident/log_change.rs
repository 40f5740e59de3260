//! Log evidence on an incident: the log templates whose rate changed
//! around its start. Logs say *why* when metrics say *that*; a person
//! reading the report sees "`connection refused to <*>:<*>` 0 → 412 lines"
//! with a few redacted example lines, not a dump.
//!
//! Stored inside the incident's JSON, so the shape is small and stable;
//! the log pipeline (`logs::pipeline`) fills it, the report and the
//! diagnoser read it.

use serde::{Deserialize, Serialize};

use crate::signal::TimestampMs;

/// How a template's rate changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogChangeKind {
    /// Never seen before the incident.
    New,
    /// Seen before, now much more frequent.
    Surge,
    /// Steady before, gone since.
    Vanished,
    /// Seen before, now much less frequent (but not gone).
    Drop,
}

impl LogChangeKind {
    /// The lowercase name used in the API and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            LogChangeKind::New => "new",
            LogChangeKind::Surge => "surge",
            LogChangeKind::Vanished => "vanished",
            LogChangeKind::Drop => "drop",
        }
    }
}

/// One log template whose rate changed around an incident's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogTemplateChange {
    /// The service whose logs these are.
    pub service: String,
    /// Stable template id (survives restarts).
    pub template_id: u64,
    /// The template, variables masked (`<*>`, `<NUM>`, …).
    pub template: String,
    /// Log level of the lines (`error`, `warn`, …) when known.
    #[serde(default)]
    pub level: Option<String>,
    /// What changed.
    pub change: LogChangeKind,
    /// Lines in the window before the incident's start.
    pub before: u64,
    /// Lines in the window after it.
    pub after: u64,
    /// Length of each of the two windows.
    pub window_ms: i64,
    /// First line of this template ever seen, when known.
    #[serde(default)]
    pub first_seen: Option<TimestampMs>,
    /// A few example lines, secrets redacted before they were stored.
    #[serde(default)]
    pub examples: Vec<String>,
}
