//! The Kubernetes executor: carries out exactly one [`PlannedAction`] the
//! gate allowed, records what it changes first, and undoes it on request.
//!
//! Read it like a reconciler step: **observe** the object, check it still
//! fits the plan, **act** with one precise merge patch carrying the
//! `resourceVersion` that was read, and on 409 Conflict read again and
//! retry (a bounded number of times). Every change carries the action id
//! in the [`ACTION_ANNOTATION`] annotation, so running the same action
//! again — after a crash, on a second replica — finds it and changes
//! nothing (`already_applied`).
//!
//! | plan | API calls |
//! |---|---|
//! | scale | `patch deployments/scale` or `statefulsets/scale`; with an HPA, `patch horizontalpodautoscalers` (minReplicas) instead |
//! | restart | `patch` the workload: `kubectl.kubernetes.io/restartedAt` in the pod template |
//! | evict | `get pods`, `create pods/eviction` (a PDB's 429 is [`ExecError::DisruptionBudget`]) |
//! | rollback | `list replicasets`, `patch deployments` with the previous ReplicaSet's template |
//!
//! plus `get` on the workload before each write, `list pods` and `list
//! horizontalpodautoscalers` to observe, `get horizontalpodautoscalers` to
//! revert, and `create events` (`events.k8s.io/v1`). deploy/ grants exactly
//! these (tests/deploy.rs checks it against the calls this code makes).
//!
//! **Where the annotation goes.** A restart and a rollback change the
//! workload itself, so the annotation is in the same patch: atomic. A
//! scale goes through the `scale` subresource, which by design carries
//! only `spec.replicas` (the API server drops metadata sent to it), and an
//! HPA change or an eviction touches another object; there the change is
//! made first and the annotation written right after (on the HPA too, in
//! the same patch as `minReplicas`). A crash in between cannot make a
//! second, different change: a scale sets an absolute count (repeating it
//! is a no-op: the executor sees the target count and only annotates), an
//! HPA carries the id itself, and an evicted pod is gone.
//!
//! **The client** must not retry on its own: kube's default retry layer
//! re-sends 429s, which would retry an eviction the disruption budget
//! refused. [`client`] builds one with `default_retry = false`.
//!
//! Events are not emitted by [`KubeCluster::execute`] itself: the
//! remediation stage calls [`KubeCluster::record_event`] for every
//! decision, execution, verification and revert, because only it knows
//! all four.

mod checks;
mod error;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams};
use ::kube::Client;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::remediate::plan::{
    ExecutionReport, HpaState, PlannedAction, PreState, WorkloadKind, WorkloadRef, WorkloadState,
    ACTION_ANNOTATION, RESTARTED_AT_ANNOTATION,
};
use crate::signal::TimestampMs;
use crate::telemetry::error_chain;

pub use checks::REVISION_ANNOTATION;
use checks::{merge_diff, owned_by, resource_of, rollback_source, scale_resource_of, Workload};
pub use error::ExecError;

/// Field manager recorded on every write (`kubectl … --show-managed-fields`).
pub const FIELD_MANAGER: &str = "aiopsd";

/// `reportingController` of the Events aiopsd writes.
pub const REPORTING_CONTROLLER: &str = "aiopsd.io/remediation";

/// Tunables of the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorSettings {
    /// Writes tried per step when the object keeps changing (409). At
    /// least 1. Default 4.
    pub write_attempts: u32,
    /// A rollback returns only to a ReplicaSet created at most this long
    /// ago (the policy rule's "younger than" limit). Default 7 days.
    pub rollback_max_age: Duration,
    /// Limit on each API call. Default 30 s.
    pub call_timeout: Duration,
    /// `reportingInstance` of Events: this replica's name (the pod name).
    /// Default `aiopsd`.
    pub reporting_instance: String,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        Self {
            write_attempts: 4,
            rollback_max_age: Duration::from_secs(7 * 24 * 3600),
            call_timeout: Duration::from_secs(30),
            reporting_instance: "aiopsd".into(),
        }
    }
}

/// Builds a client for the executor: `api_url` (e.g. a test server or
/// `kubectl proxy`; no credentials sent), else the in-cluster service
/// account or the local kubeconfig. Its built-in retry is off (see the
/// module docs). Call [`crate::install_crypto_provider`] first.
pub async fn client(api_url: Option<&str>) -> Result<Client, ExecError> {
    let mut config = match api_url {
        Some(url) => {
            let uri: axum::http::Uri = url.parse().map_err(|_| ExecError::Url(url.to_string()))?;
            ::kube::Config::new(uri)
        }
        None => ::kube::Config::infer()
            .await
            .map_err(|e| ExecError::Client(::kube::Error::InferConfig(e)))?,
    };
    config.default_retry = false;
    Client::try_from(config).map_err(ExecError::Client)
}

/// The executor, over one Kubernetes client. Cheap to clone.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    settings: ExecutorSettings,
}

/// Distinguishes Events written in the same nanosecond.
static EVENT_SEQ: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> TimestampMs {
    Timestamp::now().as_millisecond()
}

fn object(target: &WorkloadRef) -> String {
    format!("{}/{}", target.namespace, target.name)
}

fn report(summary: String, already_applied: bool) -> ExecutionReport {
    ExecutionReport {
        at: now_ms(),
        summary,
        already_applied,
    }
}

fn refused(target: &WorkloadRef, reason: impl Into<String>) -> ExecError {
    ExecError::Refused {
        target: target.clone(),
        reason: reason.into(),
    }
}

/// The metadata part of every write: the version read (precondition) and
/// the action id.
fn stamped(resource_version: Option<&str>, action_id: &str) -> Value {
    json!({
        "resourceVersion": resource_version,
        "annotations": {ACTION_ANNOTATION: action_id},
    })
}

impl KubeCluster {
    /// An executor with default settings. The client should come from
    /// [`client`] (no built-in retry).
    pub fn new(client: Client) -> Self {
        Self::with_settings(client, ExecutorSettings::default())
    }

    /// An executor with `settings` (`write_attempts` below 1 counts as 1).
    pub fn with_settings(client: Client, settings: ExecutorSettings) -> Self {
        Self { client, settings }
    }

    /// The settings in use.
    pub fn settings(&self) -> &ExecutorSettings {
        &self.settings
    }

    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: ::kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as ::kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn patch_params() -> PatchParams {
        PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        }
    }

    /// One API call, bounded in time, its error named.
    async fn call<T>(
        &self,
        verb: &'static str,
        resource: &'static str,
        object: String,
        request: impl Future<Output = Result<T, ::kube::Error>>,
    ) -> Result<T, ExecError> {
        match tokio::time::timeout(self.settings.call_timeout, request).await {
            Err(_) => Err(ExecError::Timeout {
                verb,
                resource,
                object,
                after: self.settings.call_timeout,
            }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ExecError::from_kube(verb, resource, object, e)),
        }
    }

    /// Runs `attempt` (read, check, write) until it does not meet a 409,
    /// at most `write_attempts` times, pausing a little longer each time.
    ///
    /// `attempt` is a closure returning a future (`|| async move { .. }`,
    /// capturing only references) rather than an async closure: the futures
    /// of async closures are higher-ranked, and rustc then cannot prove the
    /// remediation task that awaits them `Send` (rust-lang/rust#102211).
    async fn retry_conflicts<T, F>(&self, mut attempt: impl FnMut() -> F) -> Result<T, ExecError>
    where
        F: Future<Output = Result<T, ExecError>>,
    {
        let attempts = self.settings.write_attempts.max(1);
        let mut n = 1;
        loop {
            match attempt().await {
                Err(ExecError::Conflict {
                    verb,
                    resource,
                    object,
                    ..
                }) => {
                    if n >= attempts {
                        return Err(ExecError::Conflict {
                            verb,
                            resource,
                            object,
                            attempts,
                        });
                    }
                    tracing::debug!(
                        verb,
                        resource,
                        object,
                        attempt = n,
                        "The object changed between read and write; reading it again."
                    );
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(n))).await;
                    n += 1;
                }
                other => return other,
            }
        }
    }

    /// Reads a workload.
    async fn read(&self, target: &WorkloadRef) -> Result<Workload, ExecError> {
        let ns = &target.namespace;
        let resource = resource_of(target.kind);
        let obj = object(target);
        Ok(match target.kind {
            WorkloadKind::Deployment => {
                let d: Deployment = self
                    .call("get", resource, obj, self.api(ns).get(&target.name))
                    .await?;
                Workload::from_deployment(target, &d)
            }
            WorkloadKind::StatefulSet => {
                let s: StatefulSet = self
                    .call("get", resource, obj, self.api(ns).get(&target.name))
                    .await?;
                Workload::from_statefulset(target, &s)
            }
            WorkloadKind::DaemonSet => {
                let d: DaemonSet = self
                    .call("get", resource, obj, self.api(ns).get(&target.name))
                    .await?;
                Workload::from_daemonset(target, &d)
            }
        })
    }

    /// One merge patch on the workload itself.
    async fn patch_workload(&self, target: &WorkloadRef, patch: Value) -> Result<(), ExecError> {
        let ns = &target.namespace;
        let pp = Self::patch_params();
        let patch = Patch::Merge(&patch);
        let resource = resource_of(target.kind);
        let obj = object(target);
        match target.kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = self.api(ns);
                self.call("patch", resource, obj, api.patch(&target.name, &pp, &patch))
                    .await
                    .map(drop)
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = self.api(ns);
                self.call("patch", resource, obj, api.patch(&target.name, &pp, &patch))
                    .await
                    .map(drop)
            }
            WorkloadKind::DaemonSet => {
                let api: Api<DaemonSet> = self.api(ns);
                self.call("patch", resource, obj, api.patch(&target.name, &pp, &patch))
                    .await
                    .map(drop)
            }
        }
    }

    /// Writes the action id on the workload (re-reading on conflicts);
    /// nothing when it is already there.
    async fn annotate(&self, target: &WorkloadRef, action_id: &str) -> Result<(), ExecError> {
        self.retry_conflicts(|| async move {
            let w = self.read(target).await?;
            if w.action() == Some(action_id) {
                return Ok(());
            }
            let patch = json!({"metadata": stamped(w.resource_version.as_deref(), action_id)});
            self.patch_workload(target, patch).await
        })
        .await
    }

    /// The HPA whose `scaleTargetRef` is the workload, if any.
    async fn find_hpa(
        &self,
        target: &WorkloadRef,
    ) -> Result<Option<HorizontalPodAutoscaler>, ExecError> {
        let api: Api<HorizontalPodAutoscaler> = self.api(&target.namespace);
        let list = self
            .call(
                "list",
                "horizontalpodautoscalers",
                target.namespace.clone(),
                api.list(&ListParams::default()),
            )
            .await?;
        Ok(list.items.into_iter().find(|h| {
            let r = &h.spec.scale_target_ref;
            r.kind == target.kind.as_str()
                && r.name == target.name
                && r.api_version
                    .as_deref()
                    .is_none_or(|v| v.starts_with("apps/"))
        }))
    }

    /// Every page of a list call.
    async fn list_all<K>(
        &self,
        resource: &'static str,
        namespace: &str,
        selector: Option<&str>,
    ) -> Result<Vec<K>, ExecError>
    where
        K: ::kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as ::kube::Resource>::DynamicType: Default,
    {
        let api: Api<K> = self.api(namespace);
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        // A bound on pages, so a server that always answers with a
        // continue token cannot keep the executor here.
        for _ in 0..200 {
            let mut lp = ListParams::default().limit(500);
            if let Some(sel) = selector.filter(|s| !s.is_empty()) {
                lp = lp.labels(sel);
            }
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = self
                .call("list", resource, namespace.to_string(), api.list(&lp))
                .await?;
            items.extend(page.items);
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        Ok(items)
    }

    /// The ReplicaSets a Deployment controls.
    async fn owned_replica_sets(&self, w: &Workload) -> Result<Vec<ReplicaSet>, ExecError> {
        let sets: Vec<ReplicaSet> = self
            .list_all("replicasets", &w.target.namespace, Some(&w.selector()))
            .await?;
        Ok(sets
            .into_iter()
            .filter(|rs| owned_by(&rs.metadata, w.uid.as_deref()))
            .collect())
    }

    /// What a workload looks like now, for the gate's decision: replicas,
    /// readiness, labels, the HPA scaling it, its revision, the pod count
    /// of its namespace (blast radius) and its `resourceVersion`.
    pub async fn observe(&self, target: &WorkloadRef) -> Result<WorkloadState, ExecError> {
        let w = self.read(target).await?;
        let hpa = self.find_hpa(target).await?.map(|h| HpaState {
            name: h.metadata.name.unwrap_or_default(),
            min_replicas: h.spec.min_replicas.unwrap_or(1),
            max_replicas: h.spec.max_replicas,
        });
        let pods: Vec<Pod> = self.list_all("pods", &target.namespace, None).await?;
        Ok(WorkloadState {
            target: target.clone(),
            labels: w.labels,
            replicas: w.replicas,
            ready_replicas: w.ready,
            hpa,
            revision: w.revision,
            namespace_pods: u32::try_from(pods.len()).unwrap_or(u32::MAX),
            resource_version: w.resource_version,
        })
    }

    /// Finds the workload called `name` in `namespace`: a Deployment, else
    /// a StatefulSet, else a DaemonSet; `None` when there is none.
    pub async fn resolve(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<WorkloadRef>, ExecError> {
        for kind in [
            WorkloadKind::Deployment,
            WorkloadKind::StatefulSet,
            WorkloadKind::DaemonSet,
        ] {
            let target = WorkloadRef {
                namespace: namespace.to_string(),
                kind,
                name: name.to_string(),
            };
            match self.read(&target).await {
                Ok(_) => return Ok(Some(target)),
                Err(ExecError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The revision a rollback of this Deployment would return to (the
    /// highest revision below the current one among its ReplicaSets), with
    /// its age and whether the pods it still runs are all ready — what the
    /// gate's `rollback` rules check. `None` for other kinds or when there
    /// is no previous revision.
    pub async fn rollback_candidate(
        &self,
        target: &WorkloadRef,
    ) -> Result<Option<crate::policy::RollbackCandidate>, ExecError> {
        if target.kind != WorkloadKind::Deployment {
            return Ok(None);
        }
        let w = self.read(target).await?;
        let Some(current) = w.revision else {
            return Ok(None);
        };
        let sets = self.owned_replica_sets(&w).await?;
        let previous = sets
            .iter()
            .filter_map(|rs| checks::revision_of(&rs.metadata).map(|r| (r, rs)))
            .filter(|(r, _)| *r < current)
            .max_by_key(|(r, _)| *r);
        Ok(previous.and_then(|(revision, rs)| {
            let created_at = rs.metadata.creation_timestamp.as_ref()?.0.as_millisecond();
            // Scaled to zero: nothing says it was unhealthy, and it was the
            // stable predecessor. Still running pods: all must be ready.
            let was_healthy = rs
                .status
                .as_ref()
                .map(|s| s.replicas == 0 || s.ready_replicas.unwrap_or(0) >= s.replicas);
            Some(crate::policy::RollbackCandidate {
                revision,
                created_at,
                was_healthy: Some(was_healthy.unwrap_or(true)),
            })
        }))
    }

    /// Whether the kill-switch ConfigMap `name` in `namespace` (default:
    /// the client's) says `enabled: "true"`. Absent = off. The RBAC grants
    /// `get` on this one ConfigMap name only.
    pub async fn kill_switch(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<bool, ExecError> {
        let ns = namespace
            .map(str::to_string)
            .unwrap_or_else(|| self.client.default_namespace().to_string());
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), &ns);
        let map = self
            .call(
                "get",
                "configmaps",
                format!("{ns}/{name}"),
                api.get_opt(name),
            )
            .await?;
        Ok(map
            .and_then(|m| m.data)
            .and_then(|d| d.get("enabled").cloned())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")))
    }

    /// The action id last written on the workload ([`ACTION_ANNOTATION`]).
    /// After a crash, the stage compares it with the id of an action whose
    /// outcome it did not record: equal means done; otherwise it runs
    /// [`KubeCluster::execute`] again with the same id, which completes or
    /// skips whatever was already done.
    pub async fn applied_action(&self, target: &WorkloadRef) -> Result<Option<String>, ExecError> {
        Ok(self.read(target).await?.action().map(str::to_string))
    }

    /// Reads everything `plan` will change, so [`KubeCluster::revert`]
    /// restores it in one step. Record it before calling `execute`.
    pub async fn pre_state(&self, plan: &PlannedAction) -> Result<PreState, ExecError> {
        match plan {
            PlannedAction::Scale {
                target,
                via_hpa: false,
                ..
            } => Ok(PreState::Replicas {
                target: target.clone(),
                replicas: self.read(target).await?.replicas,
            }),
            PlannedAction::Scale {
                target,
                via_hpa: true,
                ..
            } => {
                let hpa = self.find_hpa(target).await?.ok_or_else(|| {
                    refused(
                        target,
                        "no HorizontalPodAutoscaler targets it, yet the plan scales through one",
                    )
                })?;
                Ok(PreState::HpaMin {
                    target: target.clone(),
                    hpa: hpa.metadata.name.unwrap_or_default(),
                    min_replicas: hpa.spec.min_replicas.unwrap_or(1),
                })
            }
            PlannedAction::Restart { target, .. } => Ok(PreState::RestartAnnotation {
                target: target.clone(),
                restarted_at: self
                    .read(target)
                    .await?
                    .template_annotation(RESTARTED_AT_ANNOTATION),
            }),
            PlannedAction::EvictPod { target, pod } => Ok(PreState::Irreversible {
                target: target.clone(),
                why: format!(
                    "pod {pod} was evicted; its controller replaces it with a new pod, there is \
                     nothing to put back"
                ),
            }),
            PlannedAction::Rollback { target, .. } => {
                let w = self.read(target).await?;
                let revision = w.revision.ok_or_else(|| ExecError::Malformed {
                    resource: "deployments",
                    object: object(target),
                    problem: format!("no {REVISION_ANNOTATION} annotation"),
                })?;
                Ok(PreState::Template {
                    target: target.clone(),
                    revision,
                    template: w.template,
                })
            }
        }
    }

    /// Carries out `plan` under the id `action_id` (see the module docs):
    /// idempotent, optimistic, and refusing when the workload no longer
    /// fits the plan. `already_applied` in the report means the object
    /// already carried this id and nothing was changed.
    pub async fn execute(
        &self,
        action_id: &str,
        plan: &PlannedAction,
    ) -> Result<ExecutionReport, ExecError> {
        match plan {
            PlannedAction::Scale {
                target,
                from,
                to,
                via_hpa: false,
            } => self.set_replicas(action_id, target, Some(*from), *to).await,
            PlannedAction::Scale {
                target,
                to,
                via_hpa: true,
                ..
            } => self.set_hpa_min(action_id, target, None, *to).await,
            PlannedAction::Restart {
                target,
                max_unavailable,
            } => self.restart(action_id, target, *max_unavailable).await,
            PlannedAction::EvictPod { target, pod } => self.evict(action_id, target, pod).await,
            PlannedAction::Rollback {
                target,
                from_revision,
                to_revision,
            } => {
                self.rollback(action_id, target, *from_revision, *to_revision)
                    .await
            }
        }
    }

    /// Restores `pre` exactly, as the action `action_id` (its own id, so a
    /// revert is idempotent too). An [`PreState::Irreversible`] pre-state
    /// is [`ExecError::Irreversible`].
    pub async fn revert(
        &self,
        action_id: &str,
        pre: &PreState,
    ) -> Result<ExecutionReport, ExecError> {
        match pre {
            PreState::Replicas { target, replicas } => {
                self.set_replicas(action_id, target, None, *replicas).await
            }
            PreState::HpaMin {
                target,
                hpa,
                min_replicas,
            } => {
                self.set_hpa_min(action_id, target, Some(hpa), *min_replicas)
                    .await
            }
            PreState::RestartAnnotation {
                target,
                restarted_at,
            } => {
                self.retry_conflicts(|| async move {
                    let w = self.read(target).await?;
                    if w.action() == Some(action_id) {
                        return Ok(report(format!("{target}: already reverted"), true));
                    }
                    let patch = json!({
                        "metadata": stamped(w.resource_version.as_deref(), action_id),
                        "spec": {"template": {"metadata": {"annotations": {
                            RESTARTED_AT_ANNOTATION: restarted_at,
                        }}}},
                    });
                    self.patch_workload(target, patch).await?;
                    let what = restarted_at.as_deref().unwrap_or("(absent)");
                    Ok(report(
                        format!(
                            "{target}: pod-template {RESTARTED_AT_ANNOTATION} restored to {what}"
                        ),
                        false,
                    ))
                })
                .await
            }
            PreState::Template {
                target,
                revision,
                template,
            } => {
                self.retry_conflicts(|| async move {
                    let w = self.read(target).await?;
                    if w.action() == Some(action_id) {
                        return Ok(report(format!("{target}: already reverted"), true));
                    }
                    let patch = json!({
                        "metadata": stamped(w.resource_version.as_deref(), action_id),
                        "spec": {"template": merge_diff(&w.template, template)},
                    });
                    self.patch_workload(target, patch).await?;
                    Ok(report(
                        format!(
                            "{target}: pod template of revision {revision} restored \
                             (was revision {})",
                            w.revision.map_or("unknown".to_string(), |r| r.to_string())
                        ),
                        false,
                    ))
                })
                .await
            }
            PreState::Irreversible { target, why } => Err(ExecError::Irreversible {
                target: target.clone(),
                why: why.clone(),
            }),
        }
    }

    /// Scale through the `scale` subresource to `to`; with `expect_from`,
    /// refuse when the count moved since the decision (someone else
    /// scaled: acting would undo their change).
    async fn set_replicas(
        &self,
        action_id: &str,
        target: &WorkloadRef,
        expect_from: Option<i32>,
        to: i32,
    ) -> Result<ExecutionReport, ExecError> {
        let Some(scale_resource) = scale_resource_of(target.kind) else {
            return Err(refused(
                target,
                "a DaemonSet runs one pod per node and cannot be scaled",
            ));
        };
        let outcome = self
            .retry_conflicts(|| async move {
                let w = self.read(target).await?;
                if w.action() == Some(action_id) {
                    return Ok(report(
                        format!("{target}: already at {} replicas", w.replicas),
                        true,
                    ));
                }
                let from = w.replicas;
                if from == to {
                    // Nothing to write: a crash after the scale, or already there.
                    return Ok(report(format!("{target}: replicas already {to}"), false));
                }
                if let Some(expected) = expect_from {
                    if from != expected {
                        return Err(refused(
                            target,
                            format!(
                                "it has {from} replicas now, the decision was made for {expected} \
                                 (someone else scaled it)"
                            ),
                        ));
                    }
                }
                let patch = json!({
                    "metadata": {"resourceVersion": w.resource_version},
                    "spec": {"replicas": to},
                });
                let pp = Self::patch_params();
                let patch = Patch::Merge(&patch);
                let obj = object(target);
                let ns = &target.namespace;
                match target.kind {
                    WorkloadKind::Deployment => {
                        let api: Api<Deployment> = self.api(ns);
                        self.call(
                            "patch",
                            scale_resource,
                            obj,
                            api.patch_scale(&target.name, &pp, &patch),
                        )
                        .await?;
                    }
                    _ => {
                        let api: Api<StatefulSet> = self.api(ns);
                        self.call(
                            "patch",
                            scale_resource,
                            obj,
                            api.patch_scale(&target.name, &pp, &patch),
                        )
                        .await?;
                    }
                }
                Ok(report(format!("{target}: replicas {from} → {to}"), false))
            })
            .await?;
        // Reads first; writes only when the id is not there yet.
        self.annotate(target, action_id).await?;
        Ok(outcome)
    }

    /// Set the HPA's `minReplicas` to `to` (the HPA then scales the
    /// workload); `hpa` names it for a revert, else it is looked up by its
    /// `scaleTargetRef`. Raising refuses to pass `maxReplicas` or to lower
    /// a minimum someone else raised further.
    async fn set_hpa_min(
        &self,
        action_id: &str,
        target: &WorkloadRef,
        hpa_name: Option<&str>,
        to: i32,
    ) -> Result<ExecutionReport, ExecError> {
        let ns = &target.namespace;
        let api: Api<HorizontalPodAutoscaler> = self.api(ns);
        let api = &api;
        let outcome = self
            .retry_conflicts(|| async move {
                let w = self.read(target).await?;
                if w.action() == Some(action_id) {
                    return Ok(report(format!("{target}: HPA change already made"), true));
                }
                let hpa = match hpa_name {
                    Some(name) => {
                        self.call(
                            "get",
                            "horizontalpodautoscalers",
                            format!("{ns}/{name}"),
                            api.get(name),
                        )
                        .await?
                    }
                    None => self.find_hpa(target).await?.ok_or_else(|| {
                        refused(
                            target,
                            "no HorizontalPodAutoscaler targets it any more; the plan was to \
                             raise its minReplicas",
                        )
                    })?,
                };
                let name = hpa.metadata.name.clone().unwrap_or_default();
                let hpa_action = hpa
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ACTION_ANNOTATION));
                if hpa_action.map(String::as_str) == Some(action_id) {
                    // Changed before a crash; only the workload's id is missing.
                    return Ok(report(
                        format!("{target}: HPA {name} already changed"),
                        true,
                    ));
                }
                let spec = &hpa.spec;
                let min = spec.min_replicas.unwrap_or(1);
                if hpa_name.is_none() {
                    if to > spec.max_replicas {
                        return Err(refused(
                            target,
                            format!(
                                "HPA {name} allows at most {} replicas; \
                                 minReplicas {to} would exceed it",
                                spec.max_replicas
                            ),
                        ));
                    }
                    if min > to {
                        return Err(refused(
                            target,
                            format!(
                                "HPA {name} already keeps at least {min} replicas, \
                                 more than the planned {to}"
                            ),
                        ));
                    }
                }
                if min == to {
                    let summary = format!("{target}: HPA {name} minReplicas already {to}");
                    return Ok(report(summary, false));
                }
                let patch = json!({
                    "metadata": stamped(hpa.metadata.resource_version.as_deref(), action_id),
                    "spec": {"minReplicas": to},
                });
                self.call(
                    "patch",
                    "horizontalpodautoscalers",
                    format!("{ns}/{name}"),
                    api.patch(&name, &Self::patch_params(), &Patch::Merge(&patch)),
                )
                .await?;
                Ok(report(
                    format!("{target}: HPA {name} minReplicas {min} → {to}"),
                    false,
                ))
            })
            .await?;
        self.annotate(target, action_id).await?;
        Ok(outcome)
    }

    /// `kubectl rollout restart`: a new `restartedAt` in the pod template,
    /// refused when the rollout strategy takes more pods down at once than
    /// the plan allows, or would restart nothing (OnDelete).
    async fn restart(
        &self,
        action_id: &str,
        target: &WorkloadRef,
        max_unavailable: u32,
    ) -> Result<ExecutionReport, ExecError> {
        self.retry_conflicts(|| async move {
            let w = self.read(target).await?;
            if w.action() == Some(action_id) {
                return Ok(report(format!("{target}: restart already started"), true));
            }
            let limit = w.rollout.clone().map_err(|why| refused(target, why))?;
            if limit.down_at_once > max_unavailable {
                return Err(refused(
                    target,
                    format!(
                        "its rollout strategy ({}) may take {} pods down at once, more than the \
                         plan's limit of {max_unavailable}",
                        limit.how, limit.down_at_once
                    ),
                ));
            }
            let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            let patch = json!({
                "metadata": stamped(w.resource_version.as_deref(), action_id),
                "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: now}}}},
            });
            self.patch_workload(target, patch).await?;
            Ok(report(
                format!(
                    "{target}: rolling restart started ({RESTARTED_AT_ANNOTATION}={now}; at most {} pods at once)",
                    limit.down_at_once
                ),
                false,
            ))
        })
        .await
    }

    /// Evicts one pod of the workload through the Eviction API.
    async fn evict(
        &self,
        action_id: &str,
        target: &WorkloadRef,
        pod: &str,
    ) -> Result<ExecutionReport, ExecError> {
        let w = self.read(target).await?;
        if w.action() == Some(action_id) {
            return Ok(report(format!("{target}: pod {pod} already evicted"), true));
        }
        let ns = &target.namespace;
        let pods: Api<Pod> = self.api(ns);
        let pod_object = format!("{ns}/{pod}");
        let summary = match self
            .call("get", "pods", pod_object.clone(), pods.get(pod))
            .await
        {
            Err(ExecError::NotFound { .. }) => {
                format!("{target}: pod {pod} is already gone; nothing evicted")
            }
            Err(e) => return Err(e),
            Ok(p) => {
                self.check_owner(&w, &p).await?;
                let evicted = self
                    .call(
                        "create",
                        "pods/eviction",
                        pod_object,
                        pods.evict(pod, &EvictParams::default()),
                    )
                    .await;
                match evicted {
                    Ok(_) => format!("{target}: pod {pod} evicted"),
                    Err(ExecError::NotFound { .. }) => {
                        format!("{target}: pod {pod} is already gone; nothing evicted")
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        self.annotate(target, action_id).await?;
        Ok(report(summary, false))
    }

    /// Refuses to evict a pod the workload does not control.
    async fn check_owner(&self, w: &Workload, pod: &Pod) -> Result<(), ExecError> {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let controller = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        let target = &w.target;
        let ok = match (target.kind, controller) {
            (_, None) => false,
            (WorkloadKind::Deployment, Some(o)) => {
                o.kind == "ReplicaSet"
                    && self
                        .owned_replica_sets(w)
                        .await?
                        .iter()
                        .any(|rs| rs.metadata.uid.as_deref() == Some(o.uid.as_str()))
            }
            (kind, Some(o)) => {
                o.kind == kind.as_str()
                    && o.name == target.name
                    && w.uid.as_deref().is_none_or(|uid| uid == o.uid)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(refused(
                target,
                format!("pod {pod_name} is not one of its pods"),
            ))
        }
    }

    /// Rolls a Deployment back to the previous ReplicaSet's pod template,
    /// when [`checks::rollback_source`]'s conditions hold.
    async fn rollback(
        &self,
        action_id: &str,
        target: &WorkloadRef,
        from_revision: i64,
        to_revision: i64,
    ) -> Result<ExecutionReport, ExecError> {
        if target.kind != WorkloadKind::Deployment {
            return Err(refused(
                target,
                "only Deployments keep revisions to roll back to",
            ));
        }
        let max_age = i64::try_from(self.settings.rollback_max_age.as_millis()).unwrap_or(i64::MAX);
        self.retry_conflicts(|| async move {
            let w = self.read(target).await?;
            if w.action() == Some(action_id) {
                return Ok(report(format!("{target}: rollback already made"), true));
            }
            let sets = self.owned_replica_sets(&w).await?;
            let source = rollback_source(&w, &sets, from_revision, to_revision, max_age, now_ms())
                .map_err(|why| refused(target, why))?;
            let patch = json!({
                "metadata": stamped(w.resource_version.as_deref(), action_id),
                "spec": {"template": merge_diff(&w.template, &source.template)},
            });
            self.patch_workload(target, patch).await?;
            Ok(report(
                format!(
                    "{target}: rolled back from revision {from_revision} to the pod template of \
                     revision {} (ReplicaSet {})",
                    source.revision, source.name
                ),
                false,
            ))
        })
        .await
    }

    /// Writes a Kubernetes Event (`events.k8s.io/v1`) on the workload, so
    /// `kubectl describe` and `kubectl events` show what aiopsd did and
    /// why. `reason` is a short CamelCase word (e.g. `ScaledUp`,
    /// `RemediationReverted`), `message` a sentence (cut at 1 kB);
    /// `warning` for failures and refusals. A failure to write it is
    /// logged and returned as `false`, never fatal: the action and its
    /// audit record do not depend on it.
    pub async fn record_event(
        &self,
        target: &WorkloadRef,
        reason: &str,
        message: &str,
        warning: bool,
    ) -> bool {
        let now = Timestamp::now();
        let seq = EVENT_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}.{:x}{:04x}",
            target.name,
            now.as_nanosecond(),
            seq & 0xffff
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(target.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Remediate".into()),
            reason: Some(truncate(reason, 128)),
            note: Some(truncate(message, 1024)),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(truncate(&self.settings.reporting_instance, 128)),
            regarding: Some(ObjectReference {
                api_version: Some("apps/v1".into()),
                kind: Some(target.kind.as_str().into()),
                name: Some(target.name.clone()),
                namespace: Some(target.namespace.clone()),
                ..ObjectReference::default()
            }),
            ..Event::default()
        };
        let api: Api<Event> = self.api(&target.namespace);
        let pp = PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.into()),
        };
        match self
            .call("create", "events", object(target), api.create(&pp, &event))
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(
                    target_workload = %target,
                    reason,
                    error = %error_chain(&e),
                    "Could not write a Kubernetes Event; the action's audit record is unaffected."
                );
                false
            }
        }
    }
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("ééé", 3), "é");
    }

    #[test]
    fn errors_say_whether_to_retry() {
        let conflict = ExecError::Conflict {
            verb: "patch",
            resource: "deployments",
            object: "shop/web".into(),
            attempts: 4,
        };
        assert!(conflict.is_retryable());
        assert_eq!(conflict.status_code(), Some(409));
        let pdb = ExecError::DisruptionBudget {
            object: "shop/web-1".into(),
            message: "Cannot evict".into(),
        };
        assert!(!pdb.is_retryable());
        let unavailable = ExecError::Api {
            verb: "get",
            resource: "pods",
            object: "shop".into(),
            code: 503,
            reason: "ServiceUnavailable".into(),
            message: String::new(),
        };
        assert!(unavailable.is_retryable());
        let forbidden = ExecError::Forbidden {
            verb: "patch",
            resource: "deployments/scale",
            object: "shop/web".into(),
            message: "no".into(),
        };
        assert!(!forbidden.is_retryable());
        assert!(forbidden
            .to_string()
            .contains("may not patch deployments/scale shop/web"));
    }
}
