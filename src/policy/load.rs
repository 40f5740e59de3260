//! Loading policy files: YAML → checked rules, with every problem of every
//! file reported as `file:line: field.path: what is wrong`; the
//! [`PolicySet`] and its [`PolicyReloader`].

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

use super::condition::Condition;
use super::rule::{
    ActionRule, DenyList, Freeze, Glob, Limits, Matcher, Rule, ScaleTarget, DEFAULT_COOLDOWN_MS,
    DEFAULT_MAX_DATA_AGE_MS, DEFAULT_PER_HOUR_CLUSTER, DEFAULT_PER_HOUR_NAMESPACE,
    DEFAULT_PER_HOUR_WORKLOAD,
};
use super::spec::{
    ActionSpec, FileSpec, LimitsSpec, MatchSpec, PodMode, RuleSpec, ScaleSpec, WindowSpec,
};
use super::window::{parse_days, parse_hours, parse_instant, Window};
use super::Mode;

/// The only `apiVersion` this version reads.
pub const API_VERSION: &str = "aiopsd.io/v1";

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    /// The file, as given (e.g. `policies/a.yaml`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// The field path, e.g. `rules[1].action.scale.max_replicas`; empty
    /// for a problem with the whole file.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found while loading, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyProblem>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl PolicyErrors {
    fn one(file: &str, message: String) -> PolicyErrors {
        PolicyErrors(vec![PolicyProblem {
            file: file.to_string(),
            line: None,
            field: String::new(),
            message,
        }])
    }
}

/// All rules of a policy directory, in file-name then file order, plus
/// the global deny lists and freeze windows. Immutable: a reload builds a
/// new set and swaps it in whole.
#[derive(Debug)]
pub struct PolicySet {
    pub(crate) rules: Vec<Rule>,
    pub(crate) denies: Vec<DenyList>,
    pub(crate) freezes: Vec<Freeze>,
    files: Vec<String>,
    version: String,
}

impl PolicySet {
    /// No rules: everything is refused (`default-deny`). What the gate
    /// uses before any policy loaded.
    pub fn empty() -> PolicySet {
        PolicySet {
            rules: Vec::new(),
            denies: Vec::new(),
            freezes: Vec::new(),
            files: Vec::new(),
            version: hash_sources(&[]),
        }
    }

    /// Loads every `*.yaml`/`*.yml` directly in `dir` (not subdirectories,
    /// so `policies/examples/` is never active by accident), in file-name
    /// order. Reports every problem of every file.
    pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyErrors> {
        let sources = read_dir_sources(dir)?;
        Self::from_sources(&sources)
    }

    /// Parses one file's text; `origin` names it in errors and rule ids.
    pub fn from_yaml(origin: &str, text: &str) -> Result<PolicySet, PolicyErrors> {
        Self::from_sources(&[Source {
            display: origin.to_string(),
            name: file_name(Path::new(origin)),
            text: text.to_string(),
        }])
    }

    fn from_sources(sources: &[Source]) -> Result<PolicySet, PolicyErrors> {
        let mut set = PolicySet::empty();
        let mut problems = Vec::new();
        for src in sources {
            match parse_file(src) {
                Ok(file) => {
                    set.rules.extend(file.rules);
                    set.denies.extend(file.deny);
                    set.freezes.extend(file.freeze);
                    set.files.push(src.display.clone());
                }
                Err(mut p) => problems.append(&mut p),
            }
        }
        if !problems.is_empty() {
            return Err(PolicyErrors(problems));
        }
        set.version = hash_sources(sources);
        Ok(set)
    }

    /// Content hash of the files (16 hex digits): which policy decided.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The rules in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The files loaded, as given.
    pub fn files(&self) -> &[String] {
        &self.files
    }
}

/// A file read for loading.
#[derive(Debug, Clone)]
struct Source {
    /// Path as given, for errors.
    display: String,
    /// File name, for rule ids (stable wherever the directory lives).
    name: String,
    text: String,
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyErrors> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| PolicyErrors::one(&shown, format!("cannot read the directory: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| PolicyErrors::one(&shown, format!("cannot read the directory: {e}")))?;
        let path = entry.path();
        let name = file_name(&path);
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if yaml && !name.starts_with('.') && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_dir_sources(dir: &Path) -> Result<Vec<Source>, PolicyErrors> {
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    for path in policy_files(dir)? {
        let display = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push(Source {
                name: file_name(&path),
                display,
                text,
            }),
            Err(e) => problems.extend(PolicyErrors::one(&display, format!("cannot read: {e}")).0),
        }
    }
    if problems.is_empty() {
        Ok(sources)
    } else {
        Err(PolicyErrors(problems))
    }
}

fn hash_sources(sources: &[Source]) -> String {
    let mut h = Sha256::new();
    for s in sources {
        h.update(s.name.as_bytes());
        h.update([0]);
        h.update(s.text.as_bytes());
        h.update([0]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------- parsing

struct ParsedFile {
    rules: Vec<Rule>,
    deny: Option<DenyList>,
    freeze: Option<Freeze>,
}

/// Collects problems of one file.
struct Problems<'a> {
    file: &'a str,
    list: Vec<PolicyProblem>,
}

impl Problems<'_> {
    fn add(&mut self, line: u32, field: impl Into<String>, message: impl Into<String>) {
        self.list.push(PolicyProblem {
            file: self.file.to_string(),
            line: Some(line),
            field: field.into(),
            message: message.into(),
        });
    }
}

fn has_content(text: &str) -> bool {
    text.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && t != "---"
    })
}

fn parse_file(src: &Source) -> Result<ParsedFile, Vec<PolicyProblem>> {
    if !has_content(&src.text) {
        return Err(PolicyErrors::one(
            &src.display,
            format!("the file is empty; a policy starts with `apiVersion: {API_VERSION}` and `kind: Policy`"),
        )
        .0);
    }
    let mut path = None;
    let parsed = serde_saphyr::with_deserializer_from_str(&src.text, |de| {
        serde_path_to_error::deserialize::<_, FileSpec>(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    let spec = match parsed {
        Ok(spec) => spec,
        Err(e) => {
            let line = e.location().map(|l| l.line() as u32);
            let field = path.map(|p| clean_path(&p)).unwrap_or_default();
            return Err(vec![PolicyProblem {
                file: src.display.clone(),
                line,
                field: if field == "." { String::new() } else { field },
                message: clean_message(&e.without_snippet().to_string()),
            }]);
        }
    };
    let mut p = Problems {
        file: &src.display,
        list: Vec::new(),
    };
    if spec.api_version.value != API_VERSION {
        p.add(
            line(&spec.api_version),
            "apiVersion",
            format!(
                "expected `{API_VERSION}`, found `{}`",
                spec.api_version.value
            ),
        );
    }
    if spec.kind.value != "Policy" {
        p.add(
            line(&spec.kind),
            "kind",
            format!("expected `Policy`, found `{}`", spec.kind.value),
        );
    }
    let deny = spec.deny.map(|d| DenyList {
        id: format!("{}:deny", src.name),
        namespaces: globs(&mut p, "deny.namespaces", &d.namespaces),
        workloads: globs(&mut p, "deny.workloads", &d.workloads),
        labels: label_globs(&mut p, "deny.labels", &d.labels),
    });
    let freeze = (!spec.freeze.is_empty()).then(|| Freeze {
        id: format!("{}:freeze", src.name),
        windows: windows(&mut p, "freeze", &spec.freeze),
    });
    let mut names = BTreeSet::new();
    let mut rules = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("rules[{i}]");
        let name = &rule.value.name;
        if !valid_name(&name.value) {
            p.add(
                line(name),
                format!("{at}.name"),
                format!(
                    "`{}` is not a valid rule name (letters, digits, `-`, `_`, `.`; 1 to 63 characters)",
                    name.value
                ),
            );
        } else if !names.insert(name.value.clone()) {
            p.add(
                line(name),
                format!("{at}.name"),
                format!("duplicate rule name `{}` in this file", name.value),
            );
        }
        if let Some(r) = check_rule(&mut p, &at, src, rule) {
            rules.push(r);
        }
    }
    if p.list.is_empty() {
        Ok(ParsedFile {
            rules,
            deny,
            freeze,
        })
    } else {
        Err(p.list)
    }
}

fn line<T>(s: &Spanned<T>) -> u32 {
    s.referenced.line() as u32
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `rules[0].value.action` → `rules[0].action`: `Spanned` adds a `value`
/// level the file does not have (a label literally named `value` keeps it).
fn clean_path(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('.') {
        if seg == "value" && out.last().is_none_or(|prev| !prev.ends_with("labels")) {
            continue;
        }
        out.push(seg);
    }
    if out.is_empty() {
        ".".into()
    } else {
        out.join(".")
    }
}

/// Drops the parser's ` at line N, column M` (the line is reported apart)
/// and says "integer" where the parser says "u32".
fn clean_message(msg: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    for int in ["u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64"] {
        if msg == format!("invalid {int}") {
            return if int.starts_with('u') {
                "expected a non-negative integer".into()
            } else {
                "expected an integer".into()
            };
        }
    }
    match msg {
        "invalid f64" | "invalid f32" => "expected a number".into(),
        "invalid bool" => "expected true or false".into(),
        "expected string scalar" => "expected a string".into(),
        other => other.to_string(),
    }
}

fn globs(p: &mut Problems<'_>, at: &str, list: &[Spanned<String>]) -> Vec<Glob> {
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        match Glob::new(&s.value) {
            Ok(g) => out.push(g),
            Err(e) => p.add(line(s), format!("{at}[{i}]"), e),
        }
    }
    out
}

fn label_globs(
    p: &mut Problems<'_>,
    at: &str,
    labels: &std::collections::BTreeMap<String, Spanned<String>>,
) -> Vec<(String, Glob)> {
    let mut out = Vec::new();
    for (k, v) in labels {
        match Glob::new(&v.value) {
            Ok(g) => out.push((k.clone(), g)),
            Err(e) => p.add(line(v), format!("{at}.{k}"), e),
        }
    }
    out
}

fn duration_ms(p: &mut Problems<'_>, at: &str, s: &Spanned<String>) -> Option<i64> {
    match humantime::parse_duration(s.value.trim()) {
        Ok(d) if d.is_zero() => {
            p.add(line(s), at, "must be longer than zero");
            None
        }
        Ok(d) => match i64::try_from(d.as_millis()) {
            Ok(ms) => Some(ms),
            Err(_) => {
                p.add(line(s), at, "too long");
                None
            }
        },
        Err(e) => {
            p.add(
                line(s),
                at,
                format!(
                    "expected a duration such as `10m` or `1h 30m`, found `{}`: {e}",
                    s.value
                ),
            );
            None
        }
    }
}

fn windows(p: &mut Problems<'_>, at: &str, list: &[Spanned<WindowSpec>]) -> Vec<(Window, u32)> {
    let mut out = Vec::new();
    for (i, w) in list.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let ln = line(w);
        match window(&w.value) {
            Ok(win) => out.push((win, ln)),
            Err((field, msg)) => p.add(
                ln,
                if field.is_empty() {
                    here
                } else {
                    format!("{here}.{field}")
                },
                msg,
            ),
        }
    }
    out
}

fn window(w: &WindowSpec) -> Result<Window, (&'static str, String)> {
    let absolute = w.from.is_some() || w.until.is_some();
    let weekly = !w.days.is_empty() || w.hours.is_some();
    match (absolute, weekly) {
        (true, true) => Err((
            "",
            "a window is either `days`/`hours` or `from`/`until`, not both".into(),
        )),
        (false, false) => Err((
            "",
            "an empty window; give `days` and/or `hours`, or `from` and `until`".into(),
        )),
        (true, false) => {
            let from = w
                .from
                .as_deref()
                .ok_or(("from", "missing (needs `from` and `until`)".to_string()))?;
            let until = w
                .until
                .as_deref()
                .ok_or(("until", "missing (needs `from` and `until`)".to_string()))?;
            let from = parse_instant(from).map_err(|e| ("from", e))?;
            let until = parse_instant(until).map_err(|e| ("until", e))?;
            if from >= until {
                return Err(("until", "must be after `from`".into()));
            }
            Ok(Window::Range { from, until })
        }
        (false, true) => {
            let days = parse_days(&w.days).map_err(|e| ("days", e))?;
            let (start, end) = match &w.hours {
                Some(h) => parse_hours(h).map_err(|e| ("hours", e))?,
                None => (0, 24 * 60),
            };
            Ok(Window::Weekly { days, start, end })
        }
    }
}

fn check_rule(
    p: &mut Problems<'_>,
    at: &str,
    src: &Source,
    rule: &Spanned<RuleSpec>,
) -> Option<Rule> {
    let before = p.list.len();
    let spec = &rule.value;
    let matcher = check_match(p, &format!("{at}.match"), &spec.matches);
    let condition = spec
        .condition
        .as_ref()
        .and_then(|c| match Condition::parse(&c.value) {
            Ok(c) => Some(c),
            Err(e) => {
                p.add(line(c), format!("{at}.condition"), e.to_string());
                None
            }
        });
    let action = check_action(p, &format!("{at}.action"), &spec.action);
    let limits = check_limits(p, &format!("{at}.limits"), &spec.limits);
    if p.list.len() > before {
        return None;
    }
    Some(Rule {
        id: format!("{}:{}", src.name, spec.name.value),
        line: line(rule),
        matcher,
        condition,
        action: action?,
        limits,
    })
}

fn check_match(p: &mut Problems<'_>, at: &str, m: &MatchSpec) -> Matcher {
    let mut out = Matcher::default();
    if let Some(ns) = &m.namespaces {
        out.ns_allow = globs(p, &format!("{at}.namespaces.allow"), &ns.allow);
        out.ns_deny = globs(p, &format!("{at}.namespaces.deny"), &ns.deny);
    }
    if let Some(w) = &m.workloads {
        out.kinds = w.kinds.clone();
        out.names = globs(p, &format!("{at}.workloads.names"), &w.names);
        out.labels = label_globs(p, &format!("{at}.workloads.labels"), &w.labels);
    }
    if let Some(i) = &m.incident {
        out.incident_kinds = i.kinds.clone();
        out.min_severity = i.min_severity;
        out.signals = globs(p, &format!("{at}.incident.signals"), &i.signals);
        out.alerts = globs(p, &format!("{at}.incident.alerts"), &i.alerts);
    }
    if let Some(d) = &m.diagnosis {
        out.causes = globs(p, &format!("{at}.diagnosis.causes"), &d.causes);
        if let Some(c) = &d.min_confidence {
            if (0.0..=1.0).contains(&c.value) {
                out.min_confidence = Some(c.value);
            } else {
                p.add(
                    line(c),
                    format!("{at}.diagnosis.min_confidence"),
                    format!("must be within 0..=1, found {}", c.value),
                );
            }
        }
    }
    out
}

fn check_action(p: &mut Problems<'_>, at: &str, a: &ActionSpec) -> Option<ActionRule> {
    match a {
        ActionSpec::Scale(s) => check_scale(p, &format!("{at}.scale"), s),
        ActionSpec::Restart(r) => {
            let at = format!("{at}.restart");
            match (r.pod, &r.max_unavailable) {
                (Some(PodMode::Evict), Some(m)) => {
                    p.add(
                        line(m),
                        format!("{at}.max_unavailable"),
                        "`pod: evict` evicts one pod; it takes no max_unavailable",
                    );
                    None
                }
                (Some(PodMode::Evict), None) => Some(ActionRule::Evict),
                (None, Some(m)) if m.value == 0 => {
                    p.add(
                        line(m),
                        format!("{at}.max_unavailable"),
                        "must be at least 1",
                    );
                    None
                }
                (None, m) => Some(ActionRule::Restart {
                    max_unavailable: m.as_ref().map_or(1, |m| m.value),
                }),
            }
        }
        ActionSpec::Rollback(r) => {
            let at = format!("{at}.rollback.max_revision_age");
            duration_ms(p, &at, &r.max_revision_age).map(|ms| ActionRule::Rollback {
                max_revision_age_ms: ms,
            })
        }
    }
}

fn check_scale(p: &mut Problems<'_>, at: &str, s: &ScaleSpec) -> Option<ActionRule> {
    let before = p.list.len();
    let min = s.min_replicas.as_ref().map_or(1, |m| m.value);
    if let Some(m) = &s.min_replicas {
        if m.value < 1 {
            p.add(
                line(m),
                format!("{at}.min_replicas"),
                format!(
                    "must be at least 1 (aiopsd never scales a workload to zero), found {}",
                    m.value
                ),
            );
        }
    }
    let max = &s.max_replicas;
    if max.value < min {
        p.add(
            line(max),
            format!("{at}.max_replicas"),
            format!("must be at least min_replicas ({min}), found {}", max.value),
        );
    }
    if let Some(step) = &s.max_step {
        if step.value <= 0 {
            p.add(
                line(step),
                format!("{at}.max_step"),
                format!("must be greater than 0, found {}", step.value),
            );
        }
    }
    let target = match (&s.to, &s.by) {
        (Some(to), None) => {
            if to.value < min || to.value > max.value {
                p.add(
                    line(to),
                    format!("{at}.to"),
                    format!(
                        "must be within min_replicas..=max_replicas ({min}..={}), found {}",
                        max.value, to.value
                    ),
                );
            }
            ScaleTarget::To(to.value)
        }
        (None, Some(by)) => {
            if by.value == 0 {
                p.add(line(by), format!("{at}.by"), "must not be 0");
            }
            ScaleTarget::By(by.value)
        }
        (Some(to), Some(_)) => {
            p.add(
                line(to),
                at.to_string(),
                "give either `to` or `by`, not both",
            );
            return None;
        }
        (None, None) => {
            p.add(line(max), at.to_string(), "missing `to` or `by`");
            return None;
        }
    };
    (p.list.len() == before).then_some(ActionRule::Scale {
        target,
        min,
        max: max.value,
        max_step: s.max_step.as_ref().map(|s| s.value),
        hpa: s.hpa,
    })
}

fn check_limits(p: &mut Problems<'_>, at: &str, l: &LimitsSpec) -> Limits {
    let rates = l.max_actions_per_hour.as_ref();
    let blast = l.blast_radius_percent.as_ref().and_then(|b| {
        if (0.0..=100.0).contains(&b.value) {
            Some(b.value)
        } else {
            p.add(
                line(b),
                format!("{at}.blast_radius_percent"),
                format!("must be within 0..=100, found {}", b.value),
            );
            None
        }
    });
    Limits {
        mode: l.mode.unwrap_or(Mode::DryRun),
        cooldown_ms: l
            .cooldown
            .as_ref()
            .and_then(|c| duration_ms(p, &format!("{at}.cooldown"), c))
            .unwrap_or(DEFAULT_COOLDOWN_MS),
        per_hour_workload: rates
            .and_then(|r| r.workload)
            .unwrap_or(DEFAULT_PER_HOUR_WORKLOAD),
        per_hour_namespace: rates
            .and_then(|r| r.namespace)
            .unwrap_or(DEFAULT_PER_HOUR_NAMESPACE),
        per_hour_cluster: rates
            .and_then(|r| r.cluster)
            .unwrap_or(DEFAULT_PER_HOUR_CLUSTER),
        blast_radius_percent: blast,
        windows: windows(p, &format!("{at}.windows"), &l.windows)
            .into_iter()
            .map(|(w, _)| w)
            .collect(),
        freeze: windows(p, &format!("{at}.freeze"), &l.freeze)
            .into_iter()
            .map(|(w, _)| w)
            .collect(),
        max_data_age_ms: l
            .max_data_age
            .as_ref()
            .and_then(|c| duration_ms(p, &format!("{at}.max_data_age"), c))
            .unwrap_or(DEFAULT_MAX_DATA_AGE_MS),
    }
}

// ---------------------------------------------------------------- reload

/// What [`PolicyReloader::reload_if_changed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Nothing changed (or the same bad content as last time, which was
    /// reported then; see [`PolicyReloader::last_error`]).
    Unchanged,
    /// A new valid set is in use.
    Reloaded {
        /// Its [`PolicySet::version`].
        version: String,
        /// Its number of rules.
        rules: usize,
    },
    /// The directory changed but does not load: the last good set stays
    /// in use. Reported once per distinct bad content.
    Rejected(PolicyErrors),
}

/// Keeps the policy set of a directory current. No thread of its own: the
/// daemon calls [`PolicyReloader::reload_if_changed`] periodically, which
/// costs one directory listing when nothing changed.
#[derive(Debug)]
pub struct PolicyReloader {
    dir: PathBuf,
    current: Arc<PolicySet>,
    /// (path, mtime, size) of the files last read.
    stamp: Vec<(PathBuf, Option<SystemTime>, u64)>,
    /// True once a set from `dir` is in use.
    loaded: bool,
    /// Content hash of the last rejected content.
    rejected: Option<String>,
    last_error: Option<PolicyErrors>,
}

impl PolicyReloader {
    /// A reloader that always serves `set` and never reads a directory
    /// (the demo's embedded policy; tests).
    pub fn fixed(set: PolicySet) -> PolicyReloader {
        PolicyReloader {
            dir: PathBuf::new(),
            current: Arc::new(set),
            stamp: Vec::new(),
            loaded: true,
            rejected: None,
            last_error: None,
        }
    }

    /// Loads `dir` now; fails when it does not load.
    pub fn new(dir: &Path) -> Result<PolicyReloader, PolicyErrors> {
        let stamp = stamp(dir)?;
        let set = PolicySet::load_dir(dir)?;
        Ok(PolicyReloader {
            dir: dir.to_path_buf(),
            current: Arc::new(set),
            stamp,
            loaded: true,
            rejected: None,
            last_error: None,
        })
    }

    /// Starts with the deny-all [`PolicySet::empty`]; the first
    /// [`Self::reload_if_changed`] loads `dir` (or reports why not). For a
    /// daemon that must start even when its policies are broken.
    pub fn deny_all_until_loaded(dir: &Path) -> PolicyReloader {
        PolicyReloader {
            dir: dir.to_path_buf(),
            current: Arc::new(PolicySet::empty()),
            stamp: Vec::new(),
            loaded: false,
            rejected: None,
            last_error: None,
        }
    }

    /// The set in use.
    pub fn current(&self) -> Arc<PolicySet> {
        Arc::clone(&self.current)
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why the directory's present content is not in use, if it is not.
    pub fn last_error(&self) -> Option<&PolicyErrors> {
        self.last_error.as_ref()
    }

    /// Re-reads the directory when a file's mtime or size changed (or a
    /// file came or went) and its content hash differs; swaps in the new
    /// set only when it is valid, otherwise keeps the last good set and
    /// says why.
    pub fn reload_if_changed(&mut self) -> ReloadOutcome {
        if self.dir.as_os_str().is_empty() {
            // `fixed`: nothing to reload.
            return ReloadOutcome::Unchanged;
        }
        let first = !self.loaded;
        let now = match stamp(&self.dir) {
            Ok(s) => s,
            Err(e) => return self.reject(hash_str(&e.to_string()), e),
        };
        if now == self.stamp && !first {
            return ReloadOutcome::Unchanged;
        }
        let sources = match read_dir_sources(&self.dir) {
            Ok(s) => s,
            Err(e) => return self.reject(hash_str(&e.to_string()), e),
        };
        let hash = hash_sources(&sources);
        if hash == self.current.version && !first {
            self.stamp = now;
            self.rejected = None;
            self.last_error = None;
            return ReloadOutcome::Unchanged;
        }
        if self.rejected.as_deref() == Some(hash.as_str()) {
            self.stamp = now;
            return ReloadOutcome::Unchanged;
        }
        match PolicySet::from_sources(&sources) {
            Ok(set) => {
                let outcome = ReloadOutcome::Reloaded {
                    version: set.version.clone(),
                    rules: set.rules.len(),
                };
                self.current = Arc::new(set);
                self.loaded = true;
                self.stamp = now;
                self.rejected = None;
                self.last_error = None;
                outcome
            }
            Err(e) => {
                self.stamp = now;
                self.reject(hash, e)
            }
        }
    }

    fn reject(&mut self, hash: String, e: PolicyErrors) -> ReloadOutcome {
        if self.rejected.as_deref() == Some(hash.as_str()) {
            return ReloadOutcome::Unchanged;
        }
        self.rejected = Some(hash);
        self.last_error = Some(e.clone());
        ReloadOutcome::Rejected(e)
    }
}

fn hash_str(s: &str) -> String {
    hash_sources(&[Source {
        display: String::new(),
        name: String::new(),
        text: s.to_string(),
    }])
}

fn stamp(dir: &Path) -> Result<Vec<(PathBuf, Option<SystemTime>, u64)>, PolicyErrors> {
    Ok(policy_files(dir)?
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).ok();
            let mtime = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (path, mtime, len)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use indoc::indoc;

    fn problems(text: &str) -> Vec<String> {
        PolicySet::from_yaml("policies/t.yaml", text)
            .expect_err("rejected")
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn type_errors_name_file_line_and_field() {
        let p = problems(indoc! {"
            apiVersion: aiopsd.io/v1
            kind: Policy
            rules:
              - name: a
                action: { restart: {} }
              - name: b
                action:
                  scale:
                    by: 1
                    max_replicas: lots
        "});
        assert_eq!(
            p,
            ["policies/t.yaml:10: rules[1].action.scale.max_replicas: expected an integer"]
        );
    }

    #[test]
    fn semantic_errors_are_all_reported_with_lines() {
        let p = problems(indoc! {r#"
            apiVersion: aiopsd.io/v2
            kind: Policy
            rules:
              - name: a
                condition: "incident.severity == 3"
                action:
                  scale: { by: 1, min_replicas: 5, max_replicas: 2, max_step: 0 }
                limits:
                  blast_radius_percent: 150
                  cooldown: soon
              - name: a
                action: { rollback: { max_revision_age: 2d } }
                limits:
                  windows:
                    - { days: [funday] }
                    - { from: 2026-12-24, until: 2026-12-20 }
        "#});
        let want = [
            "policies/t.yaml:1: apiVersion: expected `aiopsd.io/v1`",
            "policies/t.yaml:5: rules[0].condition: at column 19: `==` cannot combine a string and a number",
            "policies/t.yaml:7: rules[0].action.scale.max_replicas: must be at least min_replicas (5)",
            "policies/t.yaml:7: rules[0].action.scale.max_step: must be greater than 0",
            "policies/t.yaml:9: rules[0].limits.blast_radius_percent: must be within 0..=100",
            "policies/t.yaml:10: rules[0].limits.cooldown: expected a duration",
            "policies/t.yaml:11: rules[1].name: duplicate rule name `a`",
            "policies/t.yaml:15: rules[1].limits.windows[0].days: unknown day `funday`",
            "policies/t.yaml:16: rules[1].limits.windows[1].until: must be after `from`",
        ];
        assert_eq!(p.len(), want.len(), "{p:#?}");
        for w in want {
            assert!(
                p.iter().any(|x| x.starts_with(w)),
                "missing {w:?} in {p:#?}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_verbs_are_refused() {
        let p = problems(indoc! {"
            apiVersion: aiopsd.io/v1
            kind: Policy
            rules:
              - name: a
                action: { restart: {} }
                limits:
                  cooldwn: 5m
        "});
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0],
            "policies/t.yaml:7: rules[0].limits.cooldwn: unknown field `cooldwn`, expected one of \
             mode, cooldown, max_actions_per_hour, blast_radius_percent, windows, freeze, max_data_age"
        );
        let p = problems(indoc! {"
            apiVersion: aiopsd.io/v1
            kind: Policy
            rules:
              - name: a
                action: { delete: {} }
        "});
        assert!(
            p[0].contains(":5: rules[0].action: unknown variant `delete`"),
            "{p:?}"
        );
    }

    #[test]
    fn empty_or_syntax_broken_files_are_errors_with_a_place() {
        assert!(problems("# nothing\n")[0].contains("the file is empty"));
        let p = problems("apiVersion: aiopsd.io/v1\nkind: Policy\nrules: [\n");
        assert!(p[0].starts_with("policies/t.yaml:"), "{p:?}");
    }

    #[test]
    fn rules_get_file_scoped_ids_and_safe_defaults() {
        let set = PolicySet::from_yaml(
            "some/dir/p.yaml",
            indoc! {"
                apiVersion: aiopsd.io/v1
                kind: Policy
                rules:
                  - name: restart-web
                    action: { restart: {} }
            "},
        )
        .expect("loads");
        let r = &set.rules()[0];
        assert_eq!(r.id(), "p.yaml:restart-web");
        assert_eq!(r.mode(), Mode::DryRun);
        assert_eq!(r.limits.cooldown_ms, DEFAULT_COOLDOWN_MS);
        assert_eq!(r.action, ActionRule::Restart { max_unavailable: 1 });
        assert_eq!(set.version().len(), 16);
    }

    #[test]
    fn paths_lose_the_spanned_level_only() {
        assert_eq!(
            clean_path("rules[1].value.action.scale.to.value"),
            "rules[1].action.scale.to"
        );
        assert_eq!(
            clean_path("rules[0].value.match.workloads.labels.value"),
            "rules[0].match.workloads.labels.value"
        );
    }
}
