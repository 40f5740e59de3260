//! An in-process simulated cluster for `aiopsd demo`: a few Deployments
//! whose state actions change, and which tells the simulated metrics
//! source when a workload was remedied so the injected fault ends.
//!
//! It offers the same operations as the Kubernetes executor
//! ([`super::kube::KubeCluster`]) with the same contract (bounded plans
//! only, idempotent by action id, pre-state for revert), so the demo runs
//! the real gate, store, verification and revert logic. Tests of the real
//! executor use the fake API server in tests/support over HTTP; this is
//! only the demo's world.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::kube::ExecError;
use super::plan::{
    ExecutionReport, PlannedAction, PreState, WorkloadKind, WorkloadRef, WorkloadState,
};
use crate::signal::TimestampMs;

#[derive(Debug, Clone)]
struct SimWorkload {
    labels: BTreeMap<String, String>,
    replicas: i32,
    revision: i64,
    restarted_at: Option<String>,
    last_action: Option<String>,
    /// Data time of the last action that touched it.
    remedied_at: Option<TimestampMs>,
    /// Data time the current revision rolled out, when recent.
    rolled_out_at: Option<TimestampMs>,
}

/// The simulated cluster.
#[derive(Debug, Default)]
pub struct SimCluster {
    workloads: Mutex<BTreeMap<(String, String), SimWorkload>>,
    events: Mutex<Vec<String>>,
}

impl SimCluster {
    /// A cluster with one Deployment per `(namespace, name, replicas)`.
    pub fn new(deployments: &[(&str, &str, i32)]) -> Self {
        let workloads = deployments
            .iter()
            .map(|&(ns, name, replicas)| {
                (
                    (ns.to_string(), name.to_string()),
                    SimWorkload {
                        labels: BTreeMap::from([("app".to_string(), name.to_string())]),
                        replicas,
                        revision: 3,
                        restarted_at: None,
                        last_action: None,
                        remedied_at: None,
                        rolled_out_at: None,
                    },
                )
            })
            .collect();
        Self {
            workloads: Mutex::new(workloads),
            events: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), SimWorkload>> {
        match self.workloads.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Records that `namespace/name`'s current revision rolled out at
    /// `at` (data time): the demo's "bad rollout" evidence.
    pub fn with_rollout(self, namespace: &str, name: &str, at: TimestampMs) -> Self {
        if let Some(w) = self
            .lock()
            .get_mut(&(namespace.to_string(), name.to_string()))
        {
            w.rolled_out_at = Some(at);
        }
        self
    }

    /// What the simulated API would tell diagnosis about `target`: its
    /// recent rollout, as a `Change` item (the same item the Kubernetes
    /// gatherer adds from ReplicaSet revisions).
    pub fn evidence(
        &self,
        target: &WorkloadRef,
        bundle: &mut crate::diagnose::evidence::EvidenceBundle,
    ) {
        use crate::diagnose::evidence::{ChangeKind, EvidenceDetail, EvidenceSource};
        let workloads = self.lock();
        let Some(w) = workloads.get(&(target.namespace.clone(), target.name.clone())) else {
            return;
        };
        if let Some(at) = w.rolled_out_at {
            bundle.push(
                EvidenceSource::Change,
                at,
                format!(
                    "{target} rolled out revision {} (from {})",
                    w.revision,
                    w.revision - 1
                ),
                EvidenceDetail::Change {
                    change: ChangeKind::Rollout,
                    object: format!("deployment/{}", target.name),
                    workload: Some(target.clone()),
                    from_revision: Some(w.revision - 1),
                    to_revision: Some(w.revision),
                },
            );
        }
    }

    /// Data time at which an action last touched `namespace/name`: the
    /// simulated source ends the injected fault shortly after it.
    pub fn remedied_at(&self, namespace: &str, name: &str) -> Option<TimestampMs> {
        self.lock()
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(|w| w.remedied_at)
    }

    /// Events recorded so far (`Reason: message`), for the demo's output.
    pub fn events(&self) -> Vec<String> {
        match self.events.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Finds a Deployment by namespace and name.
    pub fn resolve(&self, namespace: &str, name: &str) -> Option<WorkloadRef> {
        self.lock()
            .contains_key(&(namespace.to_string(), name.to_string()))
            .then(|| WorkloadRef {
                namespace: namespace.to_string(),
                kind: WorkloadKind::Deployment,
                name: name.to_string(),
            })
    }

    /// The workload as it is now.
    pub fn observe(&self, target: &WorkloadRef) -> Result<WorkloadState, ExecError> {
        let workloads = self.lock();
        let w = workloads
            .get(&(target.namespace.clone(), target.name.clone()))
            .ok_or_else(|| not_found(target))?;
        let namespace_pods = workloads
            .iter()
            .filter(|((ns, _), _)| *ns == target.namespace)
            .map(|(_, w)| u32::try_from(w.replicas).unwrap_or(0))
            .sum();
        Ok(WorkloadState {
            target: target.clone(),
            labels: w.labels.clone(),
            replicas: w.replicas,
            ready_replicas: w.replicas,
            hpa: None,
            revision: Some(w.revision),
            namespace_pods,
            resource_version: None,
        })
    }

    /// What `plan` will change.
    pub fn pre_state(&self, plan: &PlannedAction) -> Result<PreState, ExecError> {
        let target = plan.target().clone();
        let workloads = self.lock();
        let w = workloads
            .get(&(target.namespace.clone(), target.name.clone()))
            .ok_or_else(|| not_found(&target))?;
        Ok(match plan {
            PlannedAction::Scale { .. } => PreState::Replicas {
                target,
                replicas: w.replicas,
            },
            PlannedAction::Restart { .. } => PreState::RestartAnnotation {
                target,
                restarted_at: w.restarted_at.clone(),
            },
            PlannedAction::EvictPod { .. } => PreState::Irreversible {
                target,
                why: "an evicted pod is replaced by its owner, not restored".into(),
            },
            PlannedAction::Rollback { .. } => PreState::Template {
                target,
                revision: w.revision,
                template: serde_json::json!({"simulated": true}),
            },
        })
    }

    /// Carries out `plan` at data time `at` (idempotent by `action_id`).
    pub fn execute(
        &self,
        action_id: &str,
        plan: &PlannedAction,
        at: TimestampMs,
    ) -> Result<ExecutionReport, ExecError> {
        let target = plan.target().clone();
        let mut workloads = self.lock();
        let w = workloads
            .get_mut(&(target.namespace.clone(), target.name.clone()))
            .ok_or_else(|| not_found(&target))?;
        if w.last_action.as_deref() == Some(action_id) {
            return Ok(ExecutionReport {
                at,
                summary: "already applied".into(),
                already_applied: true,
            });
        }
        let summary = match plan {
            PlannedAction::Scale { to, .. } => {
                let s = format!("replicas {} → {to}", w.replicas);
                w.replicas = *to;
                s
            }
            PlannedAction::Restart { .. } => {
                w.restarted_at = Some(crate::signal::format_ts(at));
                "pod template annotated; pods replaced one by one".into()
            }
            PlannedAction::EvictPod { pod, .. } => format!("pod {pod} evicted"),
            PlannedAction::Rollback { to_revision, .. } => {
                let s = format!("revision {} → {to_revision}", w.revision);
                w.revision = *to_revision;
                s
            }
        };
        w.last_action = Some(action_id.to_string());
        w.remedied_at = Some(at);
        Ok(ExecutionReport {
            at,
            summary,
            already_applied: false,
        })
    }

    /// Restores `pre`.
    pub fn revert(
        &self,
        action_id: &str,
        pre: &PreState,
        at: TimestampMs,
    ) -> Result<ExecutionReport, ExecError> {
        let target = pre_target(pre).clone();
        let mut workloads = self.lock();
        let w = workloads
            .get_mut(&(target.namespace.clone(), target.name.clone()))
            .ok_or_else(|| not_found(&target))?;
        let summary = match pre {
            PreState::Replicas { replicas, .. }
            | PreState::HpaMin {
                min_replicas: replicas,
                ..
            } => {
                let s = format!("replicas {} → {replicas}", w.replicas);
                w.replicas = *replicas;
                s
            }
            PreState::RestartAnnotation { restarted_at, .. } => {
                w.restarted_at = restarted_at.clone();
                "restart annotation restored".into()
            }
            PreState::Template { revision, .. } => {
                let s = format!("revision {} → {revision}", w.revision);
                w.revision = *revision;
                s
            }
            PreState::Irreversible { why, .. } => {
                return Err(ExecError::Irreversible {
                    target,
                    why: why.clone(),
                })
            }
        };
        w.last_action = Some(format!("revert-{action_id}"));
        Ok(ExecutionReport {
            at,
            summary,
            already_applied: false,
        })
    }

    /// The previous revision (one below the current), created an hour
    /// ago and healthy: the simulated rollout history.
    pub fn rollback_candidate(
        &self,
        target: &WorkloadRef,
    ) -> Option<crate::policy::RollbackCandidate> {
        let workloads = self.lock();
        let w = workloads.get(&(target.namespace.clone(), target.name.clone()))?;
        (w.revision > 1).then(|| crate::policy::RollbackCandidate {
            revision: w.revision - 1,
            created_at: crate::signal::now_ms() - 3_600_000,
            was_healthy: Some(true),
        })
    }

    /// The id of the last action applied to `target`.
    pub fn applied_action(&self, target: &WorkloadRef) -> Option<String> {
        self.lock()
            .get(&(target.namespace.clone(), target.name.clone()))
            .and_then(|w| w.last_action.clone())
    }

    /// Records an event on `target`.
    pub fn record_event(&self, target: &WorkloadRef, reason: &str, message: &str) {
        let mut events = match self.events.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        events.push(format!("{target} {reason}: {message}"));
    }
}

fn pre_target(pre: &PreState) -> &WorkloadRef {
    match pre {
        PreState::Replicas { target, .. }
        | PreState::HpaMin { target, .. }
        | PreState::RestartAnnotation { target, .. }
        | PreState::Template { target, .. }
        | PreState::Irreversible { target, .. } => target,
    }
}

fn not_found(target: &WorkloadRef) -> ExecError {
    ExecError::NotFound {
        verb: "get",
        resource: "deployments",
        object: format!("{}/{}", target.namespace, target.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkout() -> WorkloadRef {
        WorkloadRef {
            namespace: "demo".into(),
            kind: WorkloadKind::Deployment,
            name: "checkout".into(),
        }
    }

    #[test]
    fn an_action_applies_once_and_reverts_to_its_pre_state() {
        let cluster = SimCluster::new(&[("demo", "checkout", 2)]);
        let plan = PlannedAction::Scale {
            target: checkout(),
            from: 2,
            to: 4,
            via_hpa: false,
        };
        let pre = cluster.pre_state(&plan).expect("pre-state");
        let first = cluster.execute("a1", &plan, 10).expect("execute");
        assert!(!first.already_applied);
        let again = cluster.execute("a1", &plan, 11).expect("again");
        assert!(
            again.already_applied,
            "same action id: nothing changes twice"
        );
        assert_eq!(cluster.observe(&checkout()).expect("observe").replicas, 4);
        assert_eq!(cluster.remedied_at("demo", "checkout"), Some(10));
        cluster.revert("a1", &pre, 12).expect("revert");
        assert_eq!(cluster.observe(&checkout()).expect("observe").replicas, 2);
    }
}
