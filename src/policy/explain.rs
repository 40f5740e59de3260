//! The offline tools behind `aiopsd policy check DIR` and
//! `aiopsd policy explain --incident FILE`: the same loader and the same
//! [`decide`] as the daemon, with the decision written out step by step.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::incident::Incident;
use crate::remediate::plan::{WorkloadKind, WorkloadRef, WorkloadState};
use crate::signal::TimestampMs;

use super::gate::{decide, dur, GateInput, IncidentKind, Proposal};
use super::load::{PolicyErrors, PolicySet};
use super::window::format_ms;

/// Why `explain` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not the JSON expected.
    #[error("{path} is not {what} JSON: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// `an incident` or `a workload state`.
        what: &'static str,
        /// The JSON error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// No workload file and none can be derived from the incident.
    #[error("no workload to decide on: {0}; pass a workload state file")]
    NoWorkload(String),
}

/// Checks every policy file in `dir`: a summary of what loaded, or every
/// problem (`file:line: field: message`, one per line).
pub fn check_dir(dir: &Path) -> Result<String, PolicyErrors> {
    let set = PolicySet::load_dir(dir)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} file(s), {} rule(s), version {}",
        dir.display(),
        set.files().len(),
        set.rules().len(),
        set.version()
    );
    for deny in &set.denies {
        let _ = writeln!(out, "  {}: global deny list", deny.id);
    }
    for freeze in &set.freezes {
        let _ = writeln!(
            out,
            "  {}: {} global freeze window(s)",
            freeze.id,
            freeze.windows.len()
        );
    }
    for rule in set.rules() {
        let _ = writeln!(
            out,
            "  {} (line {}): {} in mode {}{}",
            rule.id(),
            rule.line(),
            rule.verb().as_str(),
            rule.mode().as_str(),
            rule.condition()
                .map(|c| format!(", when {c}"))
                .unwrap_or_default()
        );
    }
    if set.rules().is_empty() {
        let _ = writeln!(out, "  no rules: every action is refused (default-deny)");
    }
    Ok(out)
}

/// Data time of an incident's newest evidence: its latest anomaly, the
/// newest evidence sample and the newest alert change. The gate refuses
/// when it is older than a rule's `max_data_age`. An incident of alerts
/// only carries no sample times; its caller should pass a fresher clock
/// (the alert's last receipt) when it has one.
pub fn newest_data_time(incident: &Incident) -> Option<TimestampMs> {
    let samples = incident
        .signals
        .iter()
        .flat_map(|s| s.samples.iter().map(|x| x.t).chain([s.last_at]));
    let alerts = incident
        .alerts
        .iter()
        .flat_map(|a| [Some(a.starts_at), a.ends_at])
        .flatten();
    samples
        .chain(alerts)
        .chain([incident.last_anomaly_at])
        .filter(|t| *t > 0)
        .max()
}

fn read(path: &Path) -> Result<String, ExplainError> {
    std::fs::read_to_string(path).map_err(|source| ExplainError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A workload inferred from the incident's group labels when no state
/// file is given: `namespace` plus `deployment` (or `service`) as a
/// Deployment with 2 replicas, all ready, no HPA, 20 pods in the namespace.
fn derive_workload(incident: &Incident) -> Result<WorkloadState, ExplainError> {
    let ns = incident.group_label("namespace").ok_or_else(|| {
        ExplainError::NoWorkload("the incident's group has no `namespace` label".into())
    })?;
    let name = incident
        .group_label("deployment")
        .or_else(|| incident.group_label("service"))
        .ok_or_else(|| {
            ExplainError::NoWorkload(
                "the incident's group has neither a `deployment` nor a `service` label".into(),
            )
        })?;
    Ok(WorkloadState {
        target: WorkloadRef {
            namespace: ns.to_string(),
            kind: WorkloadKind::Deployment,
            name: name.to_string(),
        },
        labels: BTreeMap::new(),
        replicas: 2,
        ready_replicas: 2,
        hpa: None,
        revision: None,
        namespace_pods: 20,
        resource_version: None,
    })
}

/// The decision `set` gives the incident in `incident_json` (an
/// [`Incident`] as the API returns it), step by step.
///
/// `workload_json`: a [`WorkloadState`]; without it one is derived from
/// the incident's group labels (and the output says so). `now`: the
/// decision time; `None` takes the incident's newest data time, i.e. the
/// decision it got when it was fresh. No action history (no cooldown or
/// rate limit applies) and no kill switch; a suggestion in the incident's
/// diagnosis is passed as the proposal, as the daemon does.
pub fn explain(
    set: &PolicySet,
    incident_json: &Path,
    workload_json: Option<&Path>,
    now: Option<TimestampMs>,
) -> Result<String, ExplainError> {
    let incident: Incident =
        serde_json::from_str(&read(incident_json)?).map_err(|source| ExplainError::Parse {
            path: incident_json.to_path_buf(),
            what: "an incident",
            source,
        })?;
    let (workload, derived) = match workload_json {
        Some(p) => (
            serde_json::from_str::<WorkloadState>(&read(p)?).map_err(|source| {
                ExplainError::Parse {
                    path: p.to_path_buf(),
                    what: "a workload state",
                    source,
                }
            })?,
            false,
        ),
        None => (derive_workload(&incident)?, true),
    };
    let data_time = newest_data_time(&incident);
    let now_given = now.is_some();
    let now = now.or(data_time).unwrap_or(0);
    let kind = IncidentKind::of(&incident);
    let proposal = incident
        .diagnosis
        .as_ref()
        .and_then(|d| d.top())
        .and_then(|h| {
            h.suggestion
                .as_ref()
                .and_then(|s| s.verb)
                .map(|verb| Proposal {
                    verb,
                    by: h.proposed_by,
                })
        });
    let input = GateInput {
        incident: &incident,
        kind,
        workload: &workload,
        proposal,
        diagnosis: incident.diagnosis.as_ref(),
        history: &[],
        now,
        data_time,
        kill_switch: None,
        pod: None,
        rollback: None,
    };
    let decision = decide(set, &input);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "Policy set {} ({} file(s), {} rule(s))",
        set.version(),
        set.files().len(),
        set.rules().len()
    );
    let signals: Vec<&str> = incident
        .signals
        .iter()
        .map(|s| s.series.signal.as_str())
        .collect();
    let _ = writeln!(
        out,
        "Incident {}{}: {} {} incident; signals: {}; alerts: {}",
        incident.id.map(|i| format!("#{i} ")).unwrap_or_default(),
        incident.subject(),
        incident.severity.as_str(),
        kind.as_str(),
        if signals.is_empty() {
            "none".into()
        } else {
            signals.join(", ")
        },
        incident.alerts.len()
    );
    match data_time {
        Some(t) => {
            let _ = writeln!(
                out,
                "Newest data: {}; decided at {}{} (data age {})",
                format_ms(t),
                format_ms(now),
                if now_given {
                    ""
                } else {
                    " (the newest data time)"
                },
                dur(now - t)
            );
        }
        None => {
            let _ = writeln!(out, "Newest data: none");
        }
    }
    let w = &workload;
    let _ = writeln!(
        out,
        "Workload: {} — {} replicas ({} ready), {}, {} pods in the namespace{}",
        w.target,
        w.replicas,
        w.ready_replicas,
        w.hpa
            .as_ref()
            .map(|h| format!("HPA {} ({}..{})", h.name, h.min_replicas, h.max_replicas))
            .unwrap_or_else(|| "no HPA".into()),
        w.namespace_pods,
        w.revision
            .map(|r| format!(", revision {r}"))
            .unwrap_or_default()
    );
    if derived {
        let _ = writeln!(
            out,
            "  (derived from the incident's group labels with assumed values: replicas 2, all ready, no HPA, 20 pods in the namespace; pass a workload state file for the real ones)"
        );
    }
    match proposal {
        Some(p) => {
            let _ = writeln!(
                out,
                "Proposal: {} (by {}, from the diagnosis)",
                p.verb.as_str(),
                p.by.as_str()
            );
        }
        None => {
            let _ = writeln!(out, "Proposal: none (each rule's own action)");
        }
    }
    let _ = writeln!(out, "Assumed: no earlier actions, kill switch off");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Decision: {} by {}",
        decision.outcome.as_str(),
        decision.rule
    );
    if let Some(a) = &decision.action {
        let _ = writeln!(out, "Action: {}", a.describe());
    }
    let _ = writeln!(out, "Trace:");
    for line in &decision.trace {
        let _ = writeln!(out, "  - {line}");
    }
    Ok(out)
}
