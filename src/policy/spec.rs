//! The policy file format as written (YAML), before checking.
//!
//! These types only mirror the file: `deny_unknown_fields` everywhere so a
//! misspelt limit is an error rather than a silently missing limit, and
//! `Spanned` on every value a semantic check looks at, so its error can
//! name the line. [`super::load`] turns them into checked rules.
//! docs/POLICY.md is the user reference; keep the two in step.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::incident::Severity;
use crate::remediate::plan::WorkloadKind;

use super::gate::IncidentKind;

/// One policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSpec {
    /// Must be `aiopsd.io/v1`.
    #[serde(rename = "apiVersion")]
    pub(crate) api_version: Spanned<String>,
    /// Must be `Policy`.
    pub(crate) kind: Spanned<String>,
    /// Free text for people.
    #[serde(default)]
    #[allow(dead_code)] // Documentation for readers of the file only.
    pub(crate) description: Option<String>,
    /// Targets no rule of any file may touch.
    #[serde(default)]
    pub(crate) deny: Option<DenySpec>,
    /// Windows in which no rule of any file may act.
    #[serde(default)]
    pub(crate) freeze: Vec<Spanned<WindowSpec>>,
    /// The rules, tried in order.
    #[serde(default)]
    pub(crate) rules: Vec<Spanned<RuleSpec>>,
}

/// Global deny lists (globs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DenySpec {
    #[serde(default)]
    pub(crate) namespaces: Vec<Spanned<String>>,
    /// Workload names.
    #[serde(default)]
    pub(crate) workloads: Vec<Spanned<String>>,
    /// Any of these labels (value glob) on the target denies it.
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, Spanned<String>>,
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleSpec {
    pub(crate) name: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)] // Documentation for readers of the file only.
    pub(crate) description: Option<String>,
    #[serde(rename = "match", default)]
    pub(crate) matches: MatchSpec,
    #[serde(default)]
    pub(crate) condition: Option<Spanned<String>>,
    pub(crate) action: ActionSpec,
    #[serde(default)]
    pub(crate) limits: LimitsSpec,
}

/// What a rule applies to; every present criterion must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MatchSpec {
    #[serde(default)]
    pub(crate) namespaces: Option<AllowDenySpec>,
    #[serde(default)]
    pub(crate) workloads: Option<WorkloadMatchSpec>,
    #[serde(default)]
    pub(crate) incident: Option<IncidentMatchSpec>,
    #[serde(default)]
    pub(crate) diagnosis: Option<DiagnosisMatchSpec>,
}

/// Allow and deny lists of globs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllowDenySpec {
    #[serde(default)]
    pub(crate) allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) deny: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkloadMatchSpec {
    #[serde(default)]
    pub(crate) kinds: Vec<WorkloadKind>,
    #[serde(default)]
    pub(crate) names: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IncidentMatchSpec {
    #[serde(default)]
    pub(crate) kinds: Vec<IncidentKind>,
    #[serde(default)]
    pub(crate) min_severity: Option<Severity>,
    #[serde(default)]
    pub(crate) signals: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) alerts: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiagnosisMatchSpec {
    #[serde(default)]
    pub(crate) causes: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) min_confidence: Option<Spanned<f64>>,
}

/// Exactly one action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum ActionSpec {
    /// Boxed: the spanned fields make it several times larger than the others.
    Scale(Box<ScaleSpec>),
    Restart(RestartSpec),
    Rollback(RollbackSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScaleSpec {
    #[serde(default)]
    pub(crate) to: Option<Spanned<i32>>,
    #[serde(default)]
    pub(crate) by: Option<Spanned<i32>>,
    #[serde(default)]
    pub(crate) min_replicas: Option<Spanned<i32>>,
    pub(crate) max_replicas: Spanned<i32>,
    #[serde(default)]
    pub(crate) max_step: Option<Spanned<i32>>,
    #[serde(default)]
    pub(crate) hpa: HpaMode,
}

/// What to do when an HPA scales the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HpaMode {
    /// Refuse: the HPA owns the replica count.
    #[default]
    Refuse,
    /// Raise the HPA's `minReplicas` instead of patching the scale.
    RaiseMin,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestartSpec {
    #[serde(default)]
    pub(crate) max_unavailable: Option<Spanned<u32>>,
    #[serde(default)]
    pub(crate) pod: Option<PodMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PodMode {
    /// Evict the one pod named in the gate input.
    Evict,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackSpec {
    pub(crate) max_revision_age: Spanned<String>,
}

/// Limits; absent fields take the safe defaults in [`super::Limits`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsSpec {
    #[serde(default)]
    pub(crate) mode: Option<super::Mode>,
    #[serde(default)]
    pub(crate) cooldown: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) max_actions_per_hour: Option<RateSpec>,
    #[serde(default)]
    pub(crate) blast_radius_percent: Option<Spanned<f64>>,
    #[serde(default)]
    pub(crate) windows: Vec<Spanned<WindowSpec>>,
    #[serde(default)]
    pub(crate) freeze: Vec<Spanned<WindowSpec>>,
    #[serde(default)]
    pub(crate) max_data_age: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateSpec {
    #[serde(default)]
    pub(crate) workload: Option<u32>,
    #[serde(default)]
    pub(crate) namespace: Option<u32>,
    #[serde(default)]
    pub(crate) cluster: Option<u32>,
}

/// A recurring window (`days` and/or `hours`) or an absolute one
/// (`from` and `until`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowSpec {
    #[serde(default)]
    pub(crate) days: Vec<String>,
    #[serde(default)]
    pub(crate) hours: Option<String>,
    #[serde(default)]
    pub(crate) from: Option<String>,
    #[serde(default)]
    pub(crate) until: Option<String>,
}
