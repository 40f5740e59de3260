//! The vocabulary shared by the policy gate, the executor and the
//! remediation stage: which workload, what it looks like now, and which
//! bounded change to make to it.
//!
//! The gate ([`crate::policy`]) turns an incident plus a [`WorkloadState`]
//! into a [`PlannedAction`] whose numbers are already bounded (a scale
//! target inside min/max and max step, a restart with its batch size); the
//! executor ([`super::kube`]) carries out exactly that plan and nothing
//! wider. Keeping the plan a closed enum is what makes "unknown input can
//! never widen what is allowed" checkable: there is no free-form field an
//! LLM answer or a malformed policy could smuggle a verb through.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::signal::TimestampMs;

/// Kinds of workload aiopsd may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment: scale, restart, rollback.
    Deployment,
    /// `apps/v1` StatefulSet: scale, restart.
    StatefulSet,
    /// `apps/v1` DaemonSet: restart only.
    DaemonSet,
}

impl WorkloadKind {
    /// The Kubernetes `kind`, as written in manifests and policies.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }

    /// Parses a `kind` as written in manifests and policies.
    pub fn parse(s: &str) -> Option<WorkloadKind> {
        match s {
            "Deployment" => Some(WorkloadKind::Deployment),
            "StatefulSet" => Some(WorkloadKind::StatefulSet),
            "DaemonSet" => Some(WorkloadKind::DaemonSet),
            _ => None,
        }
    }
}

/// A workload by identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkloadRef {
    /// Its namespace.
    pub namespace: String,
    /// Its kind.
    pub kind: WorkloadKind,
    /// Its name.
    pub name: String,
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind.as_str(), self.name)
    }
}

/// A HorizontalPodAutoscaler that targets a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HpaState {
    /// The HPA's name (same namespace as the workload).
    pub name: String,
    /// `spec.minReplicas` (Kubernetes' default is 1 when absent).
    pub min_replicas: i32,
    /// `spec.maxReplicas`.
    pub max_replicas: i32,
}

/// What a workload looks like now, read from the API just before a
/// decision: the gate's bounds are computed from it, and the executor's
/// pre-state is a subset of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadState {
    /// Which workload.
    pub target: WorkloadRef,
    /// Its labels (policies match on them).
    pub labels: BTreeMap<String, String>,
    /// `spec.replicas` (a DaemonSet reports its desired pod count).
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready_replicas: i32,
    /// The HPA that scales it, if any: scaling then moves the HPA's
    /// `minReplicas` instead of fighting it.
    pub hpa: Option<HpaState>,
    /// `deployment.kubernetes.io/revision` of the current rollout
    /// (Deployments only).
    pub revision: Option<i64>,
    /// Pods in the workload's namespace, for the blast-radius limit.
    pub namespace_pods: u32,
    /// `metadata.resourceVersion` when read, for optimistic concurrency.
    pub resource_version: Option<String>,
}

/// One bounded change, fully specified: the executor needs nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PlannedAction {
    /// Set the replica count (through the HPA's `minReplicas` when
    /// `via_hpa`), already clamped to the rule's bounds and step.
    Scale {
        /// The workload.
        target: WorkloadRef,
        /// Replicas before (as read for the decision).
        from: i32,
        /// Replicas after.
        to: i32,
        /// Raise the HPA's `minReplicas` to `to` instead of patching
        /// the scale subresource (the HPA would undo that).
        via_hpa: bool,
    },
    /// Rolling restart (`kubectl rollout restart` semantics: a pod-template
    /// annotation), the workload's own rollout strategy limiting how many
    /// pods go at once.
    Restart {
        /// The workload.
        target: WorkloadRef,
        /// Upper bound on pods replaced at once, recorded for the audit;
        /// the executor refuses when the workload's strategy allows more.
        max_unavailable: u32,
    },
    /// Evict one pod through the Eviction API (honours PodDisruptionBudgets).
    EvictPod {
        /// The workload the pod belongs to (for limits and the audit).
        target: WorkloadRef,
        /// The pod's name.
        pod: String,
    },
    /// Roll a Deployment back to its previous revision's pod template.
    Rollback {
        /// The Deployment.
        target: WorkloadRef,
        /// Revision running now.
        from_revision: i64,
        /// The previous revision, restored.
        to_revision: i64,
    },
}

impl PlannedAction {
    /// The workload the action touches.
    pub fn target(&self) -> &WorkloadRef {
        match self {
            PlannedAction::Scale { target, .. }
            | PlannedAction::Restart { target, .. }
            | PlannedAction::EvictPod { target, .. }
            | PlannedAction::Rollback { target, .. } => target,
        }
    }

    /// The verb, as policies and metrics name it.
    pub fn verb(&self) -> ActionVerb {
        match self {
            PlannedAction::Scale { .. } => ActionVerb::Scale,
            PlannedAction::Restart { .. } | PlannedAction::EvictPod { .. } => ActionVerb::Restart,
            PlannedAction::Rollback { .. } => ActionVerb::Rollback,
        }
    }

    /// One sentence for reports and events.
    pub fn describe(&self) -> String {
        match self {
            PlannedAction::Scale {
                target,
                from,
                to,
                via_hpa,
            } => {
                let how = if *via_hpa { " (HPA minReplicas)" } else { "" };
                format!("scale {target} from {from} to {to} replicas{how}")
            }
            PlannedAction::Restart {
                target,
                max_unavailable,
            } => format!("rolling restart of {target} (at most {max_unavailable} pods at once)"),
            PlannedAction::EvictPod { target, pod } => format!("evict pod {pod} of {target}"),
            PlannedAction::Rollback {
                target,
                from_revision,
                to_revision,
            } => format!("roll back {target} from revision {from_revision} to {to_revision}"),
        }
    }
}

/// The closed set of remediation verbs (policies, LLM proposals, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionVerb {
    /// Change the replica count.
    Scale,
    /// Restart pods (rolling, or one pod by eviction).
    Restart,
    /// Go back to the previous revision.
    Rollback,
}

impl ActionVerb {
    /// The lowercase name used in policies, the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionVerb::Scale => "scale",
            ActionVerb::Restart => "restart",
            ActionVerb::Rollback => "rollback",
        }
    }
}

/// What an action changed, recorded *before* it runs so that one call
/// restores it (`aiopsd action revert ID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PreState {
    /// Replica count before a scale.
    Replicas {
        /// The workload.
        target: WorkloadRef,
        /// `spec.replicas` before.
        replicas: i32,
    },
    /// HPA bounds before a scale through the HPA.
    HpaMin {
        /// The workload.
        target: WorkloadRef,
        /// The HPA.
        hpa: String,
        /// `spec.minReplicas` before.
        min_replicas: i32,
    },
    /// The restart annotation before a restart (`None`: absent).
    RestartAnnotation {
        /// The workload.
        target: WorkloadRef,
        /// `kubectl.kubernetes.io/restartedAt` before.
        restarted_at: Option<String>,
    },
    /// The pod template and revision before a rollback.
    Template {
        /// The workload.
        target: WorkloadRef,
        /// Revision before.
        revision: i64,
        /// The full `spec.template` before, as JSON.
        template: serde_json::Value,
    },
    /// An eviction cannot be undone (the pod is recreated by its owner).
    Irreversible {
        /// The workload.
        target: WorkloadRef,
        /// Why.
        why: String,
    },
}

/// Annotation aiopsd writes on every object it changes, holding the action
/// id; after a crash the executor finds it and never runs an action twice.
pub const ACTION_ANNOTATION: &str = "aiopsd.io/last-action";

/// Annotation `kubectl rollout restart` uses; a restart sets it to now.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// What the executor reports after carrying out a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionReport {
    /// Data/wall time when the change was accepted by the API server.
    pub at: TimestampMs,
    /// One sentence on what was changed (e.g. "replicas 2 → 4").
    pub summary: String,
    /// True when the object already carried this action's id: the change
    /// had been made before a crash and was not made again.
    pub already_applied: bool,
}
