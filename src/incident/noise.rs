//! Alert noise reduction that is explainable and never silent (issue 8):
//! silences (maintenance windows), flapping, people's verdicts
//! ([`verdicts`]) and learned self-resolving alerts ([`learned`]).
//!
//! Pure: label matchers, silences and the `noise:` config section. The
//! incident stage (src/daemon.rs) asks [`first_match`] whether a stored
//! alert is silenced *before* it reaches
//! [`Correlator::on_alert`](super::Correlator::on_alert); a silenced alert
//! is kept in the store with a suppression record naming the silence and
//! its author ([`Store::suppress_alert`](super::Store::suppress_alert)), so
//! it is visible through `GET /api/v1/suppressions`, never dropped.
//! Flapping is tracked by the correlator itself (it owns the incidents),
//! tuned by [`FlappingConfig`].
//!
//! After the silences the stage asks the verdicts in force
//! ([`verdicts::VerdictSet`], for alerts and for detector anomalies) and
//! then the history of the alert ([`learned`]); each suppression names its
//! reason (`silence`, `verdict`, `learned`) and what decided it.

pub mod learned;
pub mod verdicts;

use std::collections::BTreeMap;
use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::config::HumanDuration;
use crate::signal::{format_ts, TimestampMs};

/// Largest compiled regex of a matcher: a silence is operator or API
/// input, and an enormous pattern must not cost the pipeline memory.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// How a matcher compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `name=value`: equal.
    Equal,
    /// `name!=value`: not equal.
    NotEqual,
    /// `name=~regex`: the whole value matches the regex (anchored).
    Regex,
}

impl MatchOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
        }
    }
}

/// One label matcher, written `name=value`, `name!=value` or `name=~regex`
/// as in Alertmanager silences. A label an alert does not have compares as
/// the empty string (Alertmanager does the same).
///
/// Regexes are anchored at both ends, like Alertmanager's and Prometheus':
/// `service=~cart` matches `cart`, not `cartography`. They are compiled
/// once, when the matcher is parsed, so a bad regex is refused at load or
/// at the API, never met in the pipeline.
#[derive(Debug, Clone)]
pub struct Matcher {
    name: String,
    op: MatchOp,
    value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    /// Parses `name=value`, `name!=value` or `name=~regex`. The value may
    /// be wrapped in double quotes (`name="a b"`). The error says what is
    /// wrong; the caller prefixes the field path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let name_len = text
            .char_indices()
            .find(|&(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
            .map_or(text.len(), |(i, _)| i);
        let (name, rest) = text.split_at(name_len);
        if name.is_empty() {
            return Err(format!(
                "{text:?} does not start with a label name; write e.g. `service=cart`, \
                 `env!=dev` or `alertname=~Disk.*`"
            ));
        }
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchOp::Regex, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Equal, v)
        } else {
            return Err(format!(
                "{text:?} has no operator after the label name {name:?}; use `=`, `!=` or `=~`"
            ));
        };
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
            .to_string();
        let regex = match op {
            MatchOp::Regex => Some(
                RegexBuilder::new(&format!("^(?:{value})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("{value:?} is not a valid regex: {e}"))?,
            ),
            _ => None,
        };
        Ok(Self {
            name: name.to_string(),
            op,
            value,
            regex,
        })
    }

    /// True when `labels` satisfy this matcher.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let actual = labels.get(&self.name).map_or("", String::as_str);
        match (&self.op, &self.regex) {
            (MatchOp::Equal, _) => actual == self.value,
            (MatchOp::NotEqual, _) => actual != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(actual),
            // Not constructible: parse always compiles a regex for `=~`.
            (MatchOp::Regex, None) => false,
        }
    }

    /// The label the matcher looks at.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

impl TryFrom<String> for Matcher {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Matcher::parse(&text)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Matcher::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Matcher {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Checks a silence's matchers as a whole; the error names `path`.
///
/// At least one matcher must *not* match an alert without labels:
/// otherwise the silence (e.g. only `env!=prod`) would silence almost
/// everything, which is never what a maintenance window means
/// (Alertmanager refuses such silences for the same reason).
pub fn check_matchers(path: &str, matchers: &[Matcher]) -> Result<(), (String, String)> {
    if matchers.is_empty() {
        return Err((path.to_string(), "must list at least one matcher".into()));
    }
    let empty = BTreeMap::new();
    if matchers.iter().all(|m| m.matches(&empty)) {
        return Err((
            path.to_string(),
            "every matcher also matches an alert without that label; add one that names \
             a value (e.g. `namespace=shop`) so the silence cannot mute everything"
                .into(),
        ));
    }
    Ok(())
}

/// A wall-clock time written in RFC 3339 (`2026-11-24T22:00:00Z`), as ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WallTime(pub TimestampMs);

impl<'de> Deserialize<'de> for WallTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_rfc3339(&text)
            .map(WallTime)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses an RFC 3339 UTC time into ms since the epoch.
pub fn parse_rfc3339(raw: &str) -> Result<TimestampMs, String> {
    let t = humantime::parse_rfc3339_weak(raw.trim()).map_err(|e| {
        format!("{raw:?} is not an RFC 3339 UTC time ({e}); write e.g. 2026-11-24T22:00:00Z")
    })?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{raw:?} is before 1970"))?
        .as_millis();
    i64::try_from(ms).map_err(|_| format!("{raw:?} is too far in the future"))
}

/// Where a silence was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SilenceSource {
    /// `noise.silences` in the config file.
    Config,
    /// `POST /api/v1/silences` (stored in the `silences` table).
    Api,
}

/// A silence (maintenance window): alerts matching all its matchers while
/// it is active are suppressed, with the silence named as the reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Silence {
    /// `config-<n>` (its position in `noise.silences`) or `api-<id>`.
    pub id: String,
    /// Where it was defined.
    pub source: SilenceSource,
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// Active from (ms); `None` = since forever.
    pub starts_at: Option<TimestampMs>,
    /// Active until (ms, exclusive); `None` = until removed.
    pub ends_at: Option<TimestampMs>,
    /// Who asked for it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

impl Silence {
    /// True when the silence is in force at `at`.
    pub fn is_active(&self, at: TimestampMs) -> bool {
        self.starts_at.is_none_or(|s| s <= at) && self.ends_at.is_none_or(|e| at < e)
    }

    /// True when the silence is in force at `at` and `labels` match every
    /// matcher.
    pub fn silences(&self, labels: &BTreeMap<String, String>, at: TimestampMs) -> bool {
        self.is_active(at) && self.matchers.iter().all(|m| m.matches(labels))
    }

    /// The reason recorded with a suppression: which silence, by whom, why
    /// and until when.
    pub fn describe(&self) -> String {
        let matchers: Vec<String> = self.matchers.iter().map(ToString::to_string).collect();
        let until = self.ends_at.map_or_else(
            || "until removed".to_string(),
            |e| format!("until {}", format_ts(e)),
        );
        format!(
            "silenced by {} ({}) by {}: {} — {}",
            self.id,
            matchers.join(", "),
            self.created_by,
            self.comment,
            until
        )
    }
}

/// The first silence that silences `labels` at `at`, config silences first.
pub fn first_match<'a>(
    silences: impl IntoIterator<Item = &'a Silence>,
    labels: &BTreeMap<String, String>,
    at: TimestampMs,
) -> Option<&'a Silence> {
    silences.into_iter().find(|s| s.silences(labels, at))
}

/// Why an alert or an anomaly opened or joined no incident. Recorded in
/// the store (table `suppressions`), listed by `GET /api/v1/suppressions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suppression {
    /// Store id.
    pub id: i64,
    /// The suppressed alert episode (`alerts` table); `None` for anomalies.
    pub alert_id: Option<super::AlertId>,
    /// Its fingerprint (empty for anomalies).
    pub fingerprint: String,
    /// Its `alertname` (empty for anomalies).
    pub alertname: String,
    /// The suppressed series, for anomalies
    /// (`latency{namespace="shop",service="cart"}`); one row covers the
    /// anomalies of one episode of that series (`first_at`..`last_at`).
    pub series: Option<String>,
    /// Data time of the first suppressed anomaly (anomalies only).
    pub first_at: Option<TimestampMs>,
    /// Data time of the latest suppressed anomaly (anomalies only).
    pub last_at: Option<TimestampMs>,
    /// Anomalous samples suppressed (1 for an alert).
    pub count: u64,
    /// The kind of reason: `silence`, `verdict` or `learned`.
    pub reason: String,
    /// What decided it: the silence id (`config-0`, `api-3`), the verdict
    /// (`verdict-4`) or `learned`.
    pub reference: String,
    /// The verdict, for reason `verdict`.
    pub verdict_id: Option<i64>,
    /// Who is answerable for it (the silence's or the verdict's author;
    /// `aiopsd` for learned suppressions).
    pub created_by: String,
    /// The full sentence: which silence or verdict and why, or the history
    /// a learned suppression rests on.
    pub detail: String,
    /// Wall time it was recorded (ms).
    pub at: TimestampMs,
    /// Wall time it was lifted (a learned suppression of an alert that kept
    /// firing longer than `noise.learned.within`); the alert then went to
    /// an incident.
    pub lifted_at: Option<TimestampMs>,
    /// Why it was lifted.
    pub lift_detail: Option<String>,
}

/// What decided a suppression, as [`Store::suppress_alert_by`](super::Store::suppress_alert_by)
/// and [`Store::record_anomaly_suppressions`](super::Store::record_anomaly_suppressions)
/// record it.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressedBy {
    /// `silence`, `verdict` or `learned`.
    pub reason: &'static str,
    /// The silence id, `verdict-<id>` or `learned`.
    pub reference: String,
    /// The verdict, for reason `verdict`.
    pub verdict_id: Option<i64>,
    /// Who is answerable for it.
    pub created_by: String,
    /// The sentence.
    pub detail: String,
}

impl SuppressedBy {
    /// Suppressed by a silence.
    pub fn silence(silence: &Silence) -> Self {
        Self {
            reason: "silence",
            reference: silence.id.clone(),
            verdict_id: None,
            created_by: silence.created_by.clone(),
            detail: silence.describe(),
        }
    }

    /// Suppressed by a person's verdict.
    pub fn verdict(hit: &verdicts::VerdictHit) -> Self {
        Self {
            reason: "verdict",
            reference: hit.verdict.reference(),
            verdict_id: Some(hit.verdict.id),
            created_by: hit.verdict.by.clone(),
            detail: hit.detail.clone(),
        }
    }

    /// Suppressed because history shows it resolves on its own.
    pub fn learned(detail: String) -> Self {
        Self {
            reason: "learned",
            reference: "learned".into(),
            verdict_id: None,
            created_by: "aiopsd".into(),
            detail,
        }
    }
}

/// One suppressed anomalous sample, to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalySuppression {
    /// The series, as the store keys it (`SeriesKey` display form).
    pub series: String,
    /// Data time of the sample.
    pub t: TimestampMs,
    /// Why.
    pub by: SuppressedBy,
}

/// What the incident stage does with a stored alert after asking the
/// noise rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    /// Apply it to the correlator.
    Apply,
    /// Apply it, and say on the incident's timeline why a suppression was
    /// lifted (the sentence).
    ApplyLifted(String),
    /// Suppressed (recorded with its reason); do not apply it.
    Suppressed,
}

/// The `noise:` config section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseConfig {
    /// Silences (maintenance windows) defined by the operator. More can be
    /// added at run time with `POST /api/v1/silences`. Default: none.
    #[serde(default)]
    pub silences: Vec<SilenceConfig>,
    /// When a re-firing alert counts as flapping.
    #[serde(default)]
    pub flapping: FlappingConfig,
    /// How closely an alert or anomaly must match a person's `noise` (or
    /// `expected`) verdict to be suppressed by it.
    #[serde(default)]
    pub verdicts: verdicts::VerdictsConfig,
    /// Suppression of low-severity alerts that history shows always
    /// resolve on their own.
    #[serde(default)]
    pub learned: learned::LearnedConfig,
}

/// One silence in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceConfig {
    /// Label matchers, all of which must match: `name=value`,
    /// `name!=value`, `name=~regex` (anchored). At least one must name a
    /// value an unlabelled alert does not have.
    pub matchers: Vec<Matcher>,
    /// Start (RFC 3339). Absent: in force from the start.
    #[serde(default)]
    pub starts_at: Option<WallTime>,
    /// End (RFC 3339, exclusive). Absent: always (until removed from the
    /// config).
    #[serde(default)]
    pub ends_at: Option<WallTime>,
    /// Who asked for it; shown as the reason of every suppression.
    pub created_by: String,
    /// Why (e.g. "monthly database maintenance").
    pub comment: String,
}

/// When a re-firing alert is flapping: `min_episodes` firing episodes of
/// the same fingerprint, each starting within `window` of the previous
/// one. A flapping alert's episodes join one incident (held open for
/// `window` after the last one resolves) with a flap count, instead of one
/// incident per episode.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlappingConfig {
    /// Episodes that make an alert flapping. Default: `3`. `2..=100`.
    #[serde(default = "default_min_episodes")]
    pub min_episodes: u32,
    /// Longest gap between the starts of consecutive episodes, and how long
    /// an incident with a flapping alert stays open after it resolves.
    /// Default: `1h`. `1m..=24h`.
    #[serde(default = "default_flap_window")]
    pub window: HumanDuration,
}

impl Default for FlappingConfig {
    fn default() -> Self {
        Self {
            min_episodes: default_min_episodes(),
            window: default_flap_window(),
        }
    }
}

fn default_min_episodes() -> u32 {
    3
}
fn default_flap_window() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(3600))
}

impl NoiseConfig {
    /// The config silences, with their `config-<n>` ids.
    pub fn silences(&self) -> Vec<Silence> {
        self.silences
            .iter()
            .enumerate()
            .map(|(i, s)| Silence {
                id: format!("config-{i}"),
                source: SilenceSource::Config,
                matchers: s.matchers.clone(),
                starts_at: s.starts_at.map(|t| t.0),
                ends_at: s.ends_at.map(|t| t.0),
                created_by: s.created_by.clone(),
                comment: s.comment.clone(),
            })
            .collect()
    }

    /// Checks what types alone cannot; each error names its field.
    pub fn validate(&self, err: &mut impl FnMut(String, String)) {
        for (i, s) in self.silences.iter().enumerate() {
            let path = format!("noise.silences[{i}]");
            if let Err((p, reason)) = check_matchers(&format!("{path}.matchers"), &s.matchers) {
                err(p, reason);
            }
            if let (Some(start), Some(end)) = (s.starts_at, s.ends_at) {
                if end <= start {
                    err(
                        format!("{path}.ends_at"),
                        "must be later than starts_at".into(),
                    );
                }
            }
            if s.created_by.trim().is_empty() {
                err(format!("{path}.created_by"), "must not be empty".into());
            }
            if s.comment.trim().is_empty() {
                err(
                    format!("{path}.comment"),
                    "must not be empty: say why alerts are silenced".into(),
                );
            }
        }
        if !(2..=100).contains(&self.flapping.min_episodes) {
            err(
                "noise.flapping.min_episodes".into(),
                format!("must be 2..=100, got {}", self.flapping.min_episodes),
            );
        }
        let w = self.flapping.window.0.as_secs();
        if !(60..=86_400).contains(&w) {
            err(
                "noise.flapping.window".into(),
                format!("must be 1m..=24h, got {}", self.flapping.window),
            );
        }
        self.verdicts.validate(err);
        self.learned.validate(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matchers_parse_and_match_with_anchored_regexes() {
        let l = labels(&[("service", "cartography"), ("env", "prod")]);
        let eq = Matcher::parse("service=cartography").expect("eq");
        assert!(eq.matches(&l));
        let ne = Matcher::parse("env!=prod").expect("ne");
        assert!(!ne.matches(&l));
        // Anchored: `cart` must not match `cartography`.
        let re = Matcher::parse("service=~cart").expect("re");
        assert!(!re.matches(&l));
        assert!(Matcher::parse("service=~cart.*").expect("re").matches(&l));
        // Alternation stays inside the anchors.
        assert!(!Matcher::parse("service=~a|cart").expect("alt").matches(&l));
        // Quoted values and a missing label compared as "".
        assert!(Matcher::parse("zone=\"\"").expect("q").matches(&l));
        assert_eq!(
            Matcher::parse("alertname=~Disk.*").expect("re").to_string(),
            "alertname=~\"Disk.*\""
        );
    }

    #[test]
    fn bad_matchers_say_what_is_wrong() {
        let e = Matcher::parse("service=~(").expect_err("bad regex");
        assert!(e.contains("not a valid regex"), "{e}");
        let e = Matcher::parse("=cart").expect_err("no name");
        assert!(e.contains("label name"), "{e}");
        let e = Matcher::parse("service~cart").expect_err("no op");
        assert!(e.contains("operator"), "{e}");
    }

    #[test]
    fn a_silence_that_matches_everything_is_refused() {
        let all = [Matcher::parse("env!=dev").expect("m")];
        assert!(check_matchers("m", &all).is_err());
        assert!(check_matchers("m", &[]).is_err());
        let ok = [Matcher::parse("namespace=shop").expect("m")];
        assert!(check_matchers("m", &ok).is_ok());
    }

    #[test]
    fn silences_apply_only_in_their_window() {
        let s = Silence {
            id: "api-1".into(),
            source: SilenceSource::Api,
            matchers: vec![Matcher::parse("namespace=shop").expect("m")],
            starts_at: Some(1_000),
            ends_at: Some(2_000),
            created_by: "alice".into(),
            comment: "db maintenance".into(),
        };
        let l = labels(&[("namespace", "shop")]);
        assert!(!s.silences(&l, 999));
        assert!(s.silences(&l, 1_000));
        assert!(!s.silences(&l, 2_000));
        assert!(!s.silences(&labels(&[("namespace", "auth")]), 1_500));
        let d = s.describe();
        assert!(d.contains("api-1") && d.contains("alice") && d.contains("db maintenance"));
    }

    /// Loads `yaml` as a whole config and returns every problem's text.
    fn config_problems(yaml: &str) -> String {
        match crate::config::Config::from_yaml(yaml, std::path::Path::new("t"), Vec::new()) {
            Ok(_) => String::new(),
            Err(e) => match e {
                crate::config::ConfigError::Invalid(list) => list
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
                other => other.to_string(),
            },
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let p = config_problems(
            "noise:\n  silences:\n    - matchers: ['namespace=shop', 'alertname=~Disk(']\n      \
             created_by: ops\n      comment: x\n",
        );
        assert!(p.contains("noise.silences[0].matchers[1]"), "{p}");
        assert!(p.contains("not a valid regex"), "{p}");

        let p = config_problems(indoc::indoc! {"
            noise:
              silences:
                - matchers: ['env!=dev']
                  starts_at: 2026-01-02T00:00:00Z
                  ends_at: 2026-01-01T00:00:00Z
                  created_by: ' '
                  comment: ''
              flapping: { min_episodes: 1, window: 10s }
        "});
        for needle in [
            "noise.silences[0].matchers:",
            "noise.silences[0].ends_at:",
            "noise.silences[0].created_by:",
            "noise.silences[0].comment:",
            "noise.flapping.min_episodes:",
            "noise.flapping.window:",
        ] {
            assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
        }

        let p = config_problems("noise:\n  silences:\n    - matchers: ['a=b']\n      ends_at: soon\n      created_by: o\n      comment: c\n");
        assert!(p.contains("noise.silences[0].ends_at"), "{p}");
        assert!(config_problems(
            "noise: { silences: [{matchers: ['a=~b.*'], created_by: o, comment: c}] }"
        )
        .is_empty());
    }
}
