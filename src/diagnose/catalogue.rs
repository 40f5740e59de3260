//! The cause catalogue: which root causes the rule engine knows, the
//! evidence each needs, what speaks against it and what it suggests.
//!
//! Why data and not code: a new cause, or a better weight, is a reviewed
//! change to `models/diagnosis/catalogue.yaml` that the labelled
//! scenarios (tests/diagnosis_scenarios.rs) measure, without a release.
//! The `version` field lets aiopsd refuse a file written for a format it
//! does not understand; every error names the file, the line when known,
//! and the field path. docs/DIAGNOSIS.md is the format reference.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::evidence::{ChangeKind, EvidenceSource, MetricKind, Movement, PodProblem};
use crate::config::HumanDuration;
use crate::remediate::plan::ActionVerb;

/// The catalogue format this build reads.
pub const CATALOGUE_FORMAT_VERSION: u32 = 1;

/// The catalogue shipped with aiopsd (`models/diagnosis/catalogue.yaml`),
/// compiled in so the daemon diagnoses without the file on disk.
pub const BUILTIN_CATALOGUE: &str = include_str!("../../models/diagnosis/catalogue.yaml");

/// A parsed, validated catalogue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    /// Format version; must be [`CATALOGUE_FORMAT_VERSION`].
    pub version: u32,
    /// What this catalogue is for.
    #[serde(default)]
    pub description: String,
    /// The knobs of the confidence formula.
    #[serde(default)]
    pub scoring: Scoring,
    /// The causes, in tie-break order.
    pub causes: Vec<Cause>,
}

/// The knobs of the confidence formula (docs/DIAGNOSIS.md).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scoring {
    /// Factor per required rule that did not match while its sources were
    /// read. Default 0.2.
    pub missing_required: f64,
    /// Factor per required rule that did not match because a source it
    /// reads is in the bundle's gaps (unknown, not absent). Default 0.5.
    pub unknown_required: f64,
    /// Factor per gapped source that an unmatched supporting or
    /// contradicting rule of the cause reads. Default 0.85.
    pub gap: f64,
    /// Hypotheses below this confidence are not reported. Default 0.05.
    pub min_confidence: f64,
    /// A blocking cause (dependency outage, node pressure) within this
    /// much confidence of the top hypothesis suppresses scale/restart
    /// suggestions. Default 0.1.
    pub safety_margin: f64,
    /// Hypotheses kept, best first. Default 5.
    pub max_hypotheses: usize,
    /// Only the top hypothesis proposes an action, and only at or above
    /// this confidence; the others keep their suggestion as advice (no
    /// verb). Default 0.5.
    pub min_action_confidence: f64,
}

impl Default for Scoring {
    fn default() -> Self {
        Self {
            missing_required: 0.2,
            unknown_required: 0.5,
            gap: 0.85,
            min_confidence: 0.05,
            safety_margin: 0.1,
            max_hypotheses: 5,
            min_action_confidence: 0.5,
        }
    }
}

/// One root cause.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cause {
    /// Stable id (`[a-z][a-z0-9_]*`), e.g. `bad_rollout`.
    pub id: String,
    /// Title for people.
    pub title: String,
    /// What the cause is, for the docs and the LLM prompt.
    #[serde(default)]
    pub description: String,
    /// When this cause is (near) the top, no scale or restart is suggested
    /// for the incident. The engine also blocks for `dependency_outage`
    /// and `node_pressure` whatever this says.
    #[serde(default)]
    pub blocks_workload_actions: bool,
    /// Evidence the cause needs; each unmatched one multiplies the
    /// confidence by `scoring.missing_required`.
    pub requires: Vec<Rule>,
    /// Evidence that strengthens it when present.
    #[serde(default)]
    pub supports: Vec<Rule>,
    /// Evidence that speaks against it.
    #[serde(default)]
    pub contradicts: Vec<Rule>,
    /// What to do, first matching entry wins.
    pub suggest: Vec<SuggestRule>,
}

/// A weighted predicate over evidence items.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct Rule {
    /// How much this alone speaks for (or against) the cause, in (0, 1].
    pub weight: f64,
    /// Words for the explanation, e.g. "a rollout shortly before".
    pub label: String,
    /// What must be true of the evidence.
    pub predicate: Predicate,
}

/// A suggestion, possibly conditional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuggestRule {
    /// Applies only when this matches (absent: always).
    #[serde(default)]
    pub when: Option<Rule>,
    /// `scale`, `restart`, `rollback` or `none`.
    pub verb: SuggestedVerb,
    /// One sentence for people (advice that is not an action goes here).
    pub note: String,
}

/// A verb from the closed set, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuggestedVerb {
    /// Change the replica count.
    Scale,
    /// Rolling restart.
    Restart,
    /// Previous revision.
    Rollback,
    /// No workload action.
    None,
}

impl SuggestedVerb {
    /// The action verb, `None` for `none`.
    pub fn action(self) -> Option<ActionVerb> {
        match self {
            SuggestedVerb::Scale => Some(ActionVerb::Scale),
            SuggestedVerb::Restart => Some(ActionVerb::Restart),
            SuggestedVerb::Rollback => Some(ActionVerb::Rollback),
            SuggestedVerb::None => None,
        }
    }
}

/// Whose evidence a predicate looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// The incident's own workload (items that name no workload count as
    /// the incident's own).
    #[default]
    Target,
    /// A workload or service other than the targets.
    Other,
    /// Either.
    Any,
}

/// What must be true of the evidence (exactly one per rule).
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// A flagged series (`Metric` anomaly, optionally a `Correlated` one).
    Metric(MetricPred),
    /// A steady movement (`Trend` item).
    Trend(TrendPred),
    /// A member alert.
    Alert(AlertPred),
    /// A cluster change shortly before the incident.
    Change(ChangePred),
    /// A pod problem.
    Pod(PodPred),
    /// A node condition.
    Node(NodePred),
    /// A log template that appeared or rose.
    Log(LogPred),
    /// A service the incident's logs mention has bad signals of its own.
    DownstreamUnhealthy(DownstreamPred),
    /// Any of these.
    AnyOf(Vec<Predicate>),
}

impl Predicate {
    /// The evidence sources this predicate reads (for gaps).
    pub fn sources(&self) -> BTreeSet<EvidenceSource> {
        use EvidenceSource as S;
        match self {
            Predicate::Metric(p) if p.include_correlated => [S::Metric, S::Correlated].into(),
            Predicate::Metric(_) | Predicate::Trend(_) => [S::Metric].into(),
            Predicate::Alert(_) => [S::Alert].into(),
            Predicate::Change(_) => [S::Change].into(),
            Predicate::Pod(_) => [S::Pod].into(),
            Predicate::Node(_) => [S::Node].into(),
            Predicate::Log(_) => [S::Log].into(),
            Predicate::DownstreamUnhealthy(_) => {
                [S::Log, S::Metric, S::Correlated, S::Alert].into()
            }
            Predicate::AnyOf(ps) => ps.iter().flat_map(Predicate::sources).collect(),
        }
    }

    /// A short default label for explanations.
    pub fn describe(&self) -> String {
        fn kinds(ks: &[MetricKind]) -> String {
            ks.iter()
                .map(|k| format!("{k:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join("/")
        }
        match self {
            Predicate::Metric(p) => format!(
                "{} {}",
                kinds(&p.kinds),
                match p.movement {
                    Some(Movement::Up) => "up",
                    Some(Movement::Down) => "down",
                    None => "anomalous",
                }
            ),
            Predicate::Trend(p) => format!("steady {} trend", kinds(&p.kinds)),
            Predicate::Alert(_) => "a firing alert".into(),
            Predicate::Change(p) => format!(
                "{} within {} before",
                p.kinds
                    .iter()
                    .map(|k| format!("{k:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join("/"),
                p.within
            ),
            Predicate::Pod(p) => format!(
                "pods {}",
                p.problems
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join("/")
            ),
            Predicate::Node(_) => "node pressure".into(),
            Predicate::Log(p) if p.mentions_downstream => "logs naming a downstream".into(),
            Predicate::Log(_) => "new or rising log templates".into(),
            Predicate::DownstreamUnhealthy(_) => "the named downstream is unhealthy".into(),
            Predicate::AnyOf(ps) => ps
                .iter()
                .map(Predicate::describe)
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }
}

/// `metric:` — an anomaly on a series of one of `kinds`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricPred {
    /// Kinds that qualify (non-empty).
    pub kinds: Vec<MetricKind>,
    /// Direction; absent: either.
    #[serde(default)]
    pub movement: Option<Movement>,
    /// Lowest |score| in spreads. Default 0.
    #[serde(default)]
    pub min_score: f64,
    /// Whose series. Default `target`.
    #[serde(default)]
    pub subject: Subject,
    /// Also count `Correlated` items with |r| ≥ `min_correlation` (their
    /// movement is the headline's, flipped for a negative r).
    #[serde(default)]
    pub include_correlated: bool,
    /// Default 0.7.
    #[serde(default = "default_min_correlation")]
    pub min_correlation: f64,
}

fn default_min_correlation() -> f64 {
    0.7
}

/// `trend:` — a steady movement on a series of one of `kinds`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendPred {
    /// Kinds that qualify (non-empty).
    pub kinds: Vec<MetricKind>,
    /// Direction. Default `up`.
    #[serde(default = "default_up")]
    pub movement: Movement,
    /// Lowest R². Default 0.8.
    #[serde(default = "default_min_r2")]
    pub min_r2: f64,
    /// Whose series. Default `target`.
    #[serde(default)]
    pub subject: Subject,
}

fn default_up() -> Movement {
    Movement::Up
}
fn default_min_r2() -> f64 {
    0.8
}

/// `alert:` — a member alert.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertPred {
    /// Case-insensitive substrings of `alertname`, any of which
    /// qualifies; empty: any alert.
    #[serde(default)]
    pub name_contains: Vec<String>,
    /// Only firing alerts. Default true.
    #[serde(default = "default_true")]
    pub firing: bool,
    /// Whose alert (by its workload labels). Default `target`.
    #[serde(default)]
    pub subject: Subject,
}

fn default_true() -> bool {
    true
}

/// `change:` — a change in `[opened_at - within, opened_at + after]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePred {
    /// Kinds that qualify (non-empty).
    pub kinds: Vec<ChangeKind>,
    /// How long before the incident opened. Default 30m.
    #[serde(default = "default_within")]
    pub within: HumanDuration,
    /// How long after (clock skew, anomalies lagging the first sample).
    /// Default 2m.
    #[serde(default = "default_after")]
    pub after: HumanDuration,
    /// Whose change. Default `target`.
    #[serde(default)]
    pub subject: Subject,
}

fn default_within() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30 * 60))
}
fn default_after() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(2 * 60))
}

/// `pod:` — pods with one of `problems`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodPred {
    /// Problems that qualify (non-empty).
    pub problems: Vec<PodProblem>,
    /// Lowest count. Default 1.
    #[serde(default = "default_one")]
    pub min_count: u32,
    /// Whose pods. Default `target`.
    #[serde(default)]
    pub subject: Subject,
}

fn default_one() -> u32 {
    1
}

/// `node:` — a node condition.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodePred {
    /// Conditions that qualify (e.g. `MemoryPressure`); empty: any.
    #[serde(default)]
    pub conditions: Vec<String>,
}

/// `log:` — a template that appeared or rose.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogPred {
    /// The lines name a service other than the targets.
    #[serde(default)]
    pub mentions_downstream: bool,
    /// Only templates that are new (no occurrence before).
    #[serde(default)]
    pub new_only: bool,
    /// Case-insensitive words, any of which the template must contain;
    /// empty: any template.
    #[serde(default)]
    pub contains_any: Vec<String>,
    /// Whose logs. Default `target`.
    #[serde(default)]
    pub subject: Subject,
}

/// `downstream_unhealthy:` — a service named in the incident's changed
/// logs has its own anomaly (one of `kinds`, up), a correlated series of
/// those kinds with r ≥ `min_correlation`, or a firing alert.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownstreamPred {
    /// Default `[error_ratio, latency]`.
    #[serde(default = "default_downstream_kinds")]
    pub kinds: Vec<MetricKind>,
    /// Default 0.7.
    #[serde(default = "default_min_correlation")]
    pub min_correlation: f64,
}

fn default_downstream_kinds() -> Vec<MetricKind> {
    vec![MetricKind::ErrorRatio, MetricKind::Latency]
}

/// A rule as written: `weight`, `label` and exactly one predicate key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    metric: Option<MetricPred>,
    #[serde(default)]
    trend: Option<TrendPred>,
    #[serde(default)]
    alert: Option<AlertPred>,
    #[serde(default)]
    change: Option<ChangePred>,
    #[serde(default)]
    pod: Option<PodPred>,
    #[serde(default)]
    node: Option<NodePred>,
    #[serde(default)]
    log: Option<LogPred>,
    #[serde(default)]
    downstream_unhealthy: Option<DownstreamPred>,
    #[serde(default)]
    any_of: Option<Vec<RawRule>>,
}

const PREDICATE_KEYS: &str =
    "metric, trend, alert, change, pod, node, log, downstream_unhealthy, any_of";

impl RawRule {
    fn into_predicate(self) -> Result<Predicate, String> {
        let mut found: Vec<Predicate> = Vec::new();
        if let Some(p) = self.metric {
            if p.kinds.is_empty() {
                return Err("metric.kinds: list at least one kind".into());
            }
            found.push(Predicate::Metric(p));
        }
        if let Some(p) = self.trend {
            if p.kinds.is_empty() {
                return Err("trend.kinds: list at least one kind".into());
            }
            found.push(Predicate::Trend(p));
        }
        if let Some(p) = self.alert {
            found.push(Predicate::Alert(p));
        }
        if let Some(p) = self.change {
            if p.kinds.is_empty() {
                return Err("change.kinds: list at least one kind".into());
            }
            found.push(Predicate::Change(p));
        }
        if let Some(p) = self.pod {
            if p.problems.is_empty() {
                return Err("pod.problems: list at least one problem".into());
            }
            found.push(Predicate::Pod(p));
        }
        if let Some(p) = self.node {
            found.push(Predicate::Node(p));
        }
        if let Some(p) = self.log {
            found.push(Predicate::Log(p));
        }
        if let Some(p) = self.downstream_unhealthy {
            found.push(Predicate::DownstreamUnhealthy(p));
        }
        if let Some(list) = self.any_of {
            if list.is_empty() {
                return Err("any_of: list at least one predicate".into());
            }
            let mut ps = Vec::new();
            for (i, raw) in list.into_iter().enumerate() {
                if raw.weight.is_some() || raw.label.is_some() {
                    return Err(format!(
                        "any_of[{i}]: weight and label belong to the enclosing rule"
                    ));
                }
                ps.push(
                    raw.into_predicate()
                        .map_err(|e| format!("any_of[{i}].{e}"))?,
                );
            }
            found.push(Predicate::AnyOf(ps));
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(format!("a rule needs one of {PREDICATE_KEYS}")),
            n => Err(format!(
                "a rule has exactly one of {PREDICATE_KEYS}; this one has {n}"
            )),
        }
    }
}

impl TryFrom<RawRule> for Rule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Rule, String> {
        let weight = raw.weight.unwrap_or(0.5);
        if !(weight > 0.0 && weight <= 1.0) {
            return Err(format!("weight: must be in (0, 1], got {weight}"));
        }
        let label = raw.label.clone();
        let predicate = raw.into_predicate()?;
        let label = label.unwrap_or_else(|| predicate.describe());
        Ok(Rule {
            weight,
            label,
            predicate,
        })
    }
}

/// Why a catalogue could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The file could not be read.
    #[error("{}: cannot read the diagnosis catalogue: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid catalogue.
    #[error("{}{}: invalid diagnosis catalogue: {field}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<u64>,
        /// Field path, e.g. `causes[2].requires[0].metric.kinds[1]`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl Catalogue {
    /// The catalogue compiled into this build.
    pub fn builtin() -> Result<Catalogue, CatalogueError> {
        Catalogue::parse(
            BUILTIN_CATALOGUE,
            Path::new("models/diagnosis/catalogue.yaml"),
        )
    }

    /// Loads and validates a catalogue file.
    pub fn load(path: &Path) -> Result<Catalogue, CatalogueError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogueError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Catalogue::parse(&text, path)
    }

    /// Parses and validates catalogue YAML; `path` names the source in
    /// errors.
    pub fn parse(text: &str, path: &Path) -> Result<Catalogue, CatalogueError> {
        let invalid = |line: Option<u64>, field: String, message: String| CatalogueError::Invalid {
            path: path.to_path_buf(),
            line,
            field,
            message,
        };
        // YAML → JSON tree → typed (as the config loader does) so the
        // error names the field path; the line comes from a second, direct
        // parse, which knows positions.
        let tree: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| {
            invalid(
                e.location().map(|l| l.line()),
                "(syntax)".into(),
                e.to_string(),
            )
        })?;
        let catalogue: Catalogue = match serde_path_to_error::deserialize(tree) {
            Ok(c) => c,
            Err(e) => {
                let field = e.path().to_string();
                let line = serde_saphyr::from_str::<Catalogue>(text)
                    .err()
                    .and_then(|d| d.location())
                    .map(|l| l.line());
                return Err(invalid(line, field, e.into_inner().to_string()));
            }
        };
        catalogue.validate().map_err(|(field, id, message)| {
            let line = match id {
                Some(_) => cause_line(text, id),
                None => top_level_line(text, &field),
            };
            invalid(line, field, message)
        })?;
        Ok(catalogue)
    }

    /// Checks what types cannot: the version, unique well-formed ids,
    /// factors in range. Errors carry the field path and the cause id.
    fn validate(&self) -> Result<(), Problem<'_>> {
        if self.version != CATALOGUE_FORMAT_VERSION {
            return Err((
                "version".into(),
                None,
                format!(
                    "this aiopsd reads format {CATALOGUE_FORMAT_VERSION}, the file is {}",
                    self.version
                ),
            ));
        }
        let s = &self.scoring;
        for (name, v) in [
            ("missing_required", s.missing_required),
            ("unknown_required", s.unknown_required),
            ("gap", s.gap),
            ("min_confidence", s.min_confidence),
            ("safety_margin", s.safety_margin),
            ("min_action_confidence", s.min_action_confidence),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err((
                    format!("scoring.{name}"),
                    None,
                    format!("must be in [0, 1], got {v}"),
                ));
            }
        }
        if self.causes.is_empty() {
            return Err(("causes".into(), None, "list at least one cause".into()));
        }
        let mut seen = BTreeSet::new();
        for (i, c) in self.causes.iter().enumerate() {
            let id = Some((c.id.as_str(), 0));
            let well_formed = c.id.starts_with(|ch: char| ch.is_ascii_lowercase())
                && c.id
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
            if !well_formed {
                return Err((
                    format!("causes[{i}].id"),
                    id,
                    format!("{:?} is not of the form [a-z][a-z0-9_]*", c.id),
                ));
            }
            if !seen.insert(c.id.as_str()) {
                return Err((
                    format!("causes[{i}].id"),
                    Some((c.id.as_str(), 1)),
                    format!("{:?} appears twice", c.id),
                ));
            }
            if c.requires.is_empty() {
                return Err((
                    format!("causes[{i}].requires"),
                    id,
                    "list at least one required rule".into(),
                ));
            }
            if c.suggest.is_empty() {
                return Err((
                    format!("causes[{i}].suggest"),
                    id,
                    "list at least one suggestion (verb: none is fine)".into(),
                ));
            }
        }
        Ok(())
    }

    /// The cause with this id.
    pub fn cause(&self, id: &str) -> Option<&Cause> {
        self.causes.iter().find(|c| c.id == id)
    }
}

/// The line of a top-level key (`version`, `scoring`, `causes`) named by
/// the start of `field`.
fn top_level_line(text: &str, field: &str) -> Option<u64> {
    let key = field.split(['.', '[']).next()?;
    text.lines()
        .position(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))
        .map(|n| n as u64 + 1)
}

/// What [`Catalogue::validate`] found: the field path, the cause it is
/// in (id and which occurrence of that id, to find its line), the message.
type Problem<'a> = (String, Option<(&'a str, usize)>, String);

/// The line of the `nth` (0-based) `id: <cause>` in the text, for errors
/// found after parsing.
fn cause_line(text: &str, id: Option<(&str, usize)>) -> Option<u64> {
    let (id, nth) = id?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_start().trim_start_matches("- ").trim();
            l.strip_prefix("id:")
                .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == id)
        })
        .nth(nth)
        .map(|(n, _)| n as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use indoc::indoc;

    #[test]
    fn shipped_catalogue_loads_and_covers_the_issue_causes() {
        let c = Catalogue::builtin().unwrap_or_else(|e| panic!("{e}"));
        for id in [
            "bad_rollout",
            "memory_leak",
            "saturation",
            "dependency_outage",
            "config_crash_loop",
            "node_pressure",
            "traffic_spike",
        ] {
            assert!(c.cause(id).is_some(), "missing cause {id}");
        }
    }

    fn err(text: &str) -> String {
        Catalogue::parse(text, Path::new("cat.yaml"))
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn unknown_kind_names_file_line_and_field() {
        let e = err(indoc! {"
            version: 1
            causes:
              - id: x
                title: X
                requires:
                  - metric: { kinds: [latncy] }
                suggest:
                  - { verb: none, note: report }
        "});
        assert!(e.starts_with("cat.yaml:6:"), "{e}");
        assert!(e.contains("causes[0].requires[0]"), "{e}");
        assert!(e.contains("latncy"), "{e}");
    }

    #[test]
    fn rule_with_two_predicates_or_bad_weight_is_refused() {
        let e = err(indoc! {"
            version: 1
            causes:
              - id: x
                title: X
                requires:
                  - metric: { kinds: [latency] }
                    pod: { problems: [oom_killed] }
                suggest:
                  - { verb: none, note: report }
        "});
        assert!(e.contains("causes[0].requires[0]"), "{e}");
        assert!(e.contains("exactly one of"), "{e}");
        let e = err(indoc! {"
            version: 1
            causes:
              - id: x
                title: X
                requires:
                  - { weight: 1.5, node: {} }
                suggest:
                  - { verb: none, note: report }
        "});
        assert!(e.contains("weight: must be in (0, 1]"), "{e}");
    }

    #[test]
    fn duplicate_id_and_wrong_version_name_the_field() {
        let e = err(indoc! {"
            version: 1
            causes:
              - id: x
                title: X
                requires: [ { node: {} } ]
                suggest: [ { verb: none, note: report } ]
              - id: x
                title: Other
                requires: [ { node: {} } ]
                suggest: [ { verb: none, note: report } ]
        "});
        assert!(e.starts_with("cat.yaml:7:"), "{e}");
        assert!(e.contains("causes[1].id"), "{e}");
        let e = err("version: 2\ncauses: []\n");
        assert!(e.contains("version: this aiopsd reads format 1"), "{e}");
        assert!(e.starts_with("cat.yaml:1:"), "{e}");
        let e = err("version: 1\ncauses:\n  - id: x\n    titel: X\n");
        assert!(e.contains("titel"), "{e}");
    }
}
