//! Learned suppression: low-severity alerts that history shows always
//! resolve on their own (issue 8).
//!
//! Pure: the store reads the past episodes of an alert
//! ([`Store::alert_history`](crate::incident::Store::alert_history)), and
//! [`judge`] decides from them alone, with a sentence that says why —
//! "resolved on its own 12/12 times within 10m (median 3m, longest 6m)".
//! Nothing is guessed: one past episode that lasted longer, was part of an
//! incident where aiopsd acted, or that a person called `real`, and the
//! alert is not suppressed.
//!
//! A suppressed episode is a bet that it resolves within `within`; the
//! incident stage checks the bet (every sweep) and an episode still firing
//! after `within` has its suppression *lifted* and goes to an incident,
//! with the reason on the incident's timeline.

use serde::Deserialize;

use crate::config::HumanDuration;
use crate::incident::correlate::CorrelationConfig;
use crate::incident::AlertId;
use crate::signal::TimestampMs;

/// The `noise.learned` config section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedConfig {
    /// Whether learned suppression runs at all. Default: `true`.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Past episodes needed before an alert can be suppressed; every one
    /// of them must have resolved on its own within `within`. Default: `5`.
    /// `2..=1000`.
    #[serde(default = "default_min_occurrences")]
    pub min_occurrences: u32,
    /// How quickly past episodes must have resolved, and how long a
    /// suppressed episode may fire before it is un-suppressed and opens an
    /// incident. Default: `10m`. `1m..=24h`.
    #[serde(default = "default_within")]
    pub within: HumanDuration,
    /// Values of the alert's `severity` label that may be suppressed
    /// (compared without case). An alert without a `severity` label is
    /// never suppressed this way. Default: `[info, warning]`.
    #[serde(default = "default_severities")]
    pub severities: Vec<String>,
    /// How far back history counts (episodes that started earlier are
    /// ignored). Default: `7d`. `1h..=90d`.
    #[serde(default = "default_lookback")]
    pub lookback: HumanDuration,
}

impl Default for LearnedConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            min_occurrences: default_min_occurrences(),
            within: default_within(),
            severities: default_severities(),
            lookback: default_lookback(),
        }
    }
}

fn default_enabled() -> bool {
    true
}
fn default_min_occurrences() -> u32 {
    5
}
fn default_within() -> HumanDuration {
    HumanDuration::secs(600)
}
fn default_severities() -> Vec<String> {
    vec!["info".into(), "warning".into()]
}
fn default_lookback() -> HumanDuration {
    HumanDuration::secs(7 * 86_400)
}

/// Most past episodes read for one decision (the newest ones).
pub const MAX_HISTORY: usize = 200;

impl LearnedConfig {
    /// True when an alert with these labels may be suppressed by history:
    /// enabled, and its `severity` label is one of `severities`.
    pub fn eligible(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.enabled
            && labels
                .get("severity")
                .is_some_and(|s| self.severities.iter().any(|w| w.eq_ignore_ascii_case(s)))
    }

    /// Checks what types alone cannot; each error names its field.
    pub fn validate(&self, err: &mut impl FnMut(String, String)) {
        if !(2..=1000).contains(&self.min_occurrences) {
            err(
                "noise.learned.min_occurrences".into(),
                format!("must be 2..=1000, got {}", self.min_occurrences),
            );
        }
        if !(60..=86_400).contains(&self.within.0.as_secs()) {
            err(
                "noise.learned.within".into(),
                format!("must be 1m..=24h, got {}", self.within),
            );
        }
        if !(3_600..=90 * 86_400).contains(&self.lookback.0.as_secs()) {
            err(
                "noise.learned.lookback".into(),
                format!("must be 1h..=90d, got {}", self.lookback),
            );
        }
        if self.enabled && self.severities.is_empty() {
            err(
                "noise.learned.severities".into(),
                "must name at least one severity (or set enabled: false)".into(),
            );
        }
    }
}

/// What makes two alerts "the same" for history: the values of the
/// identity labels (`noise.verdicts.identity_labels`, through
/// `correlation.label_map`); with the `alertname`, which the store query
/// matches.
pub fn identity(
    mapping: &CorrelationConfig,
    identity_labels: &[String],
    labels: &std::collections::BTreeMap<String, String>,
) -> Vec<Option<String>> {
    let get = |n: &str| labels.get(n).cloned();
    identity_labels
        .iter()
        .map(|l| mapping.label(&get, l))
        .collect()
}

/// One past firing episode of the same alert (same name and identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastEpisode {
    /// Its store id.
    pub alert_id: AlertId,
    /// When it started firing (wall ms).
    pub starts_at: TimestampMs,
    /// When it resolved; `None` while still firing.
    pub ends_at: Option<TimestampMs>,
    /// It was a member of an incident in which aiopsd carried out an
    /// action, or that a person marked `real`.
    pub attended: bool,
}

/// Decides from `history` (past episodes, the current one excluded) whether
/// an episode that started at `starts_at` is suppressed at `now`. Returns
/// the explanation when it is.
///
/// Suppressed only when the episode has fired for less than `within` (an
/// old episode seen late is not a bet any more), there are at least
/// `min_occurrences` past episodes, and *every* one resolved within
/// `within` and was never attended to.
pub fn judge(
    config: &LearnedConfig,
    history: &[PastEpisode],
    starts_at: TimestampMs,
    now: TimestampMs,
) -> Option<String> {
    let within = config.within.as_millis_i64();
    if !config.enabled || now.saturating_sub(starts_at) >= within {
        return None;
    }
    let n = history.len();
    if n < config.min_occurrences as usize {
        return None;
    }
    let mut durations = Vec::with_capacity(n);
    for episode in history {
        let end = episode.ends_at?;
        let lasted = end.saturating_sub(episode.starts_at);
        if episode.attended || lasted > within {
            return None;
        }
        durations.push(lasted);
    }
    durations.sort_unstable();
    let median = durations[n / 2];
    let longest = durations[n - 1];
    Some(format!(
        "resolved on its own {n}/{n} times within {} (median {}, longest {}) in the last {}; \
         suppressed unless it is still firing {} after it started — then it opens an incident",
        config.within,
        minutes(median),
        minutes(longest),
        config.lookback,
        config.within,
    ))
}

/// A duration in ms as `3m`, `45s` or `1m 30s`, for sentences.
fn minutes(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m {s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn history(durations_min: &[i64]) -> Vec<PastEpisode> {
        durations_min
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let start = i as i64 * 60 * MIN;
                PastEpisode {
                    alert_id: i as i64 + 1,
                    starts_at: start,
                    ends_at: Some(start + d * MIN),
                    attended: false,
                }
            })
            .collect()
    }

    #[test]
    fn an_alert_that_always_resolved_quickly_is_suppressed_with_the_figures() {
        let cfg = LearnedConfig::default();
        let past = history(&[3, 2, 6, 3, 4, 1]);
        let now = 1000 * MIN;
        let why = judge(&cfg, &past, now, now).expect("suppressed");
        assert!(
            why.starts_with("resolved on its own 6/6 times within 10m"),
            "{why}"
        );
        assert!(why.contains("median 3m, longest 6m"), "{why}");
    }

    #[test]
    fn one_long_open_or_attended_episode_or_too_little_history_keeps_it() {
        let cfg = LearnedConfig::default();
        let now = 1000 * MIN;
        assert!(
            judge(&cfg, &history(&[3, 2, 3, 4]), now, now).is_none(),
            "4 < 5"
        );
        assert!(
            judge(&cfg, &history(&[3, 2, 11, 3, 4]), now, now).is_none(),
            "one took 11m"
        );
        let mut open = history(&[3, 2, 3, 3, 4]);
        open[2].ends_at = None;
        assert!(judge(&cfg, &open, now, now).is_none(), "one still firing");
        let mut attended = history(&[3, 2, 3, 3, 4]);
        attended[4].attended = true;
        assert!(
            judge(&cfg, &attended, now, now).is_none(),
            "acted on or real"
        );
        assert!(
            judge(&cfg, &history(&[3, 2, 3, 3, 4]), now - 10 * MIN, now).is_none(),
            "already firing for 10m: not a bet any more"
        );
        let off = LearnedConfig {
            enabled: false,
            ..LearnedConfig::default()
        };
        assert!(judge(&off, &history(&[3, 2, 3, 3, 4]), now, now).is_none());
    }

    #[test]
    fn only_listed_severities_are_eligible() {
        let cfg = LearnedConfig::default();
        let with =
            |s: &str| std::collections::BTreeMap::from([("severity".to_string(), s.to_string())]);
        assert!(cfg.eligible(&with("Warning")));
        assert!(cfg.eligible(&with("info")));
        assert!(!cfg.eligible(&with("critical")));
        assert!(!cfg.eligible(&std::collections::BTreeMap::new()));
    }
}
