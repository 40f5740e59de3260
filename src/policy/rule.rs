//! Checked rules: what [`super::load`] builds from a file and
//! [`super::gate`] evaluates. Nothing here can hold an invalid value
//! (min ≤ max, step > 0, percent within 0..=100 are checked at load).

use crate::incident::Severity;
use crate::remediate::plan::{ActionVerb, WorkloadKind};

use super::condition::Condition;
use super::gate::IncidentKind;
use super::spec::HpaMode;
use super::window::Window;
use super::Mode;

/// A name pattern: exact, or with `*` (any run) and `?` (one character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    pattern: String,
    wild: bool,
}

impl Glob {
    /// Rejects empty patterns (they would match nothing and hide a typo).
    pub(crate) fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty pattern".into());
        }
        Ok(Glob {
            pattern: pattern.to_string(),
            wild: pattern.contains(['*', '?']),
        })
    }

    /// True when `s` matches the whole pattern.
    pub(crate) fn matches(&self, s: &str) -> bool {
        if !self.wild {
            return self.pattern == s;
        }
        // Iterative matcher with one backtrack point for the last `*`:
        // linear in practice, no recursion, no regex to compile.
        let (p, t) = (self.pattern.as_bytes(), s.as_bytes());
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }

    /// The pattern as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.pattern
    }
}

/// Any of `globs` matches `s`.
pub(crate) fn any_match(globs: &[Glob], s: &str) -> bool {
    globs.iter().any(|g| g.matches(s))
}

/// Patterns as a list for reasons: `shop, team-*`.
pub(crate) fn list(globs: &[Glob]) -> String {
    globs
        .iter()
        .map(Glob::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `match` section, checked.
#[derive(Debug, Default)]
pub(crate) struct Matcher {
    pub(crate) ns_allow: Vec<Glob>,
    pub(crate) ns_deny: Vec<Glob>,
    pub(crate) kinds: Vec<WorkloadKind>,
    pub(crate) names: Vec<Glob>,
    pub(crate) labels: Vec<(String, Glob)>,
    pub(crate) incident_kinds: Vec<IncidentKind>,
    pub(crate) min_severity: Option<Severity>,
    pub(crate) signals: Vec<Glob>,
    pub(crate) alerts: Vec<Glob>,
    pub(crate) causes: Vec<Glob>,
    pub(crate) min_confidence: Option<f64>,
}

/// How a scale rule picks its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScaleTarget {
    /// An absolute replica count.
    To(i32),
    /// Relative to the current count (negative: down).
    By(i32),
}

/// The `action` section, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ActionRule {
    Scale {
        target: ScaleTarget,
        min: i32,
        max: i32,
        max_step: Option<i32>,
        hpa: HpaMode,
    },
    Restart {
        max_unavailable: u32,
    },
    Evict,
    Rollback {
        max_revision_age_ms: i64,
    },
}

impl ActionRule {
    pub(crate) fn verb(&self) -> ActionVerb {
        match self {
            ActionRule::Scale { .. } => ActionVerb::Scale,
            ActionRule::Restart { .. } | ActionRule::Evict => ActionVerb::Restart,
            ActionRule::Rollback { .. } => ActionVerb::Rollback,
        }
    }
}

/// The `limits` section with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Limits {
    pub(crate) mode: Mode,
    pub(crate) cooldown_ms: i64,
    pub(crate) per_hour_workload: u32,
    pub(crate) per_hour_namespace: u32,
    pub(crate) per_hour_cluster: u32,
    pub(crate) blast_radius_percent: Option<f64>,
    pub(crate) windows: Vec<Window>,
    pub(crate) freeze: Vec<Window>,
    pub(crate) max_data_age_ms: i64,
}

/// Default cooldown per workload: 10 minutes.
pub(crate) const DEFAULT_COOLDOWN_MS: i64 = 10 * 60_000;
/// Default actions per hour on one workload.
pub(crate) const DEFAULT_PER_HOUR_WORKLOAD: u32 = 3;
/// Default actions per hour in one namespace.
pub(crate) const DEFAULT_PER_HOUR_NAMESPACE: u32 = 10;
/// Default actions per hour in the cluster.
pub(crate) const DEFAULT_PER_HOUR_CLUSTER: u32 = 20;
/// Default maximum age of the newest evidence: 5 minutes.
pub(crate) const DEFAULT_MAX_DATA_AGE_MS: i64 = 5 * 60_000;

/// One checked rule of a policy set.
#[derive(Debug)]
pub struct Rule {
    pub(crate) id: String,
    pub(crate) line: u32,
    pub(crate) matcher: Matcher,
    pub(crate) condition: Option<Condition>,
    pub(crate) action: ActionRule,
    pub(crate) limits: Limits,
}

impl Rule {
    /// What the rule matches, in one line for people (UI, `policy check`).
    pub fn describe_match(&self) -> String {
        let m = &self.matcher;
        let globs = |g: &[Glob]| g.iter().map(Glob::as_str).collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        if !m.ns_allow.is_empty() {
            parts.push(format!("namespaces {}", globs(&m.ns_allow)));
        }
        if !m.ns_deny.is_empty() {
            parts.push(format!("not namespaces {}", globs(&m.ns_deny)));
        }
        if !m.kinds.is_empty() {
            let kinds: Vec<&str> = m.kinds.iter().map(|k| k.as_str()).collect();
            parts.push(kinds.join("/"));
        }
        if !m.names.is_empty() {
            parts.push(format!("named {}", globs(&m.names)));
        }
        for (k, v) in &m.labels {
            parts.push(format!("{k}={}", v.as_str()));
        }
        if let Some(s) = m.min_severity {
            parts.push(format!("severity ≥ {}", s.as_str()));
        }
        if !m.signals.is_empty() {
            parts.push(format!("signals {}", globs(&m.signals)));
        }
        if !m.alerts.is_empty() {
            parts.push(format!("alerts {}", globs(&m.alerts)));
        }
        if !m.causes.is_empty() {
            parts.push(format!("diagnosed {}", globs(&m.causes)));
        }
        if let Some(c) = m.min_confidence {
            parts.push(format!("confidence ≥ {c}"));
        }
        if let Some(c) = &self.condition {
            parts.push(format!("if {}", c.source()));
        }
        if parts.is_empty() {
            "every workload".into()
        } else {
            parts.join("; ")
        }
    }

    /// The rule's limits, one line each, for people.
    pub fn describe_limits(&self) -> Vec<String> {
        let l = &self.limits;
        let mut out = vec![
            format!("cooldown {}", super::gate::dur(l.cooldown_ms)),
            format!(
                "at most {}/h per workload, {}/h per namespace, {}/h in the cluster",
                l.per_hour_workload, l.per_hour_namespace, l.per_hour_cluster
            ),
            format!(
                "evidence at most {} old",
                super::gate::dur(l.max_data_age_ms)
            ),
        ];
        if let Some(b) = l.blast_radius_percent {
            out.push(format!("touches at most {b}% of a namespace's pods"));
        }
        if !l.windows.is_empty() {
            out.push(format!("only in {} allowed window(s)", l.windows.len()));
        }
        if !l.freeze.is_empty() {
            out.push(format!("never in {} freeze window(s)", l.freeze.len()));
        }
        out
    }

    /// `file:rule-name`, as decisions name it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Line of the rule in its file.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// The verb of its action.
    pub fn verb(&self) -> ActionVerb {
        self.action.verb()
    }

    /// Its mode (`dry_run` unless the file says otherwise).
    pub fn mode(&self) -> Mode {
        self.limits.mode
    }

    /// The condition as written, if any.
    pub fn condition(&self) -> Option<&str> {
        self.condition.as_ref().map(Condition::source)
    }
}

/// A file's global `deny` section.
#[derive(Debug)]
pub(crate) struct DenyList {
    pub(crate) id: String,
    pub(crate) namespaces: Vec<Glob>,
    pub(crate) workloads: Vec<Glob>,
    pub(crate) labels: Vec<(String, Glob)>,
}

/// A file's global `freeze` windows.
#[derive(Debug)]
pub(crate) struct Freeze {
    pub(crate) id: String,
    pub(crate) windows: Vec<(Window, u32)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        let g = |p: &str| Glob::new(p).expect("glob");
        assert!(g("shop").matches("shop"));
        assert!(!g("shop").matches("shops"));
        assert!(g("team-*").matches("team-a"));
        assert!(g("team-*").matches("team-"));
        assert!(!g("team-*").matches("xteam-a"));
        assert!(g("*-db-?").matches("orders-db-1"));
        assert!(!g("*-db-?").matches("orders-db-12"));
        assert!(g("a*b*c").matches("axxbyyc"));
        assert!(!g("a*b*c").matches("axxbyy"));
        assert!(Glob::new("").is_err());
    }
}
