//! Kubernetes evidence for diagnosis: what the API says about a
//! workload's pods (OOMKilled, CrashLoopBackOff, unschedulable, not ready,
//! restarts), its recent rollouts, its HPA's scaling and the conditions of
//! the nodes its pods run on.
//!
//! Two halves: [`gather_workload`] makes the API calls — only `get` and
//! `list`, on the workload, `pods`, `replicasets`,
//! `horizontalpodautoscalers` and (cluster-scoped) `nodes` — and the pure
//! functions ([`pod_evidence`], [`rollout_evidence`], [`hpa_evidence`],
//! [`node_evidence`]) turn k8s-openapi objects into [`KubeEvidence`] items,
//! unit-tested without a server.
//!
//! A call that fails becomes a **gap** in the bundle ("kubernetes: cannot
//! list pods in shop: forbidden"), never silence: a missing item must read
//! as "unknown", not "fine". Node conditions need a ClusterRole (`get
//! nodes`); the namespaced install has none, and its bundles say so.

use std::collections::BTreeSet;

use ::kube::api::{Api, ListParams};
use ::kube::Client;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

use crate::diagnose::evidence::{
    ChangeKind, EvidenceBundle, EvidenceDetail, EvidenceId, EvidenceSource, PodProblem,
};
use crate::remediate::plan::{WorkloadKind, WorkloadRef};
use crate::signal::{format_ts, TimestampMs};

/// `deployment.kubernetes.io/revision`.
const REVISION: &str = "deployment.kubernetes.io/revision";

/// At most this many nodes are read per workload (the pods' nodes).
const MAX_NODES: usize = 20;

/// One evidence item from the Kubernetes API, ready for
/// [`EvidenceBundle::push`].
#[derive(Debug, Clone, PartialEq)]
pub struct KubeEvidence {
    /// [`EvidenceSource::Pod`], [`EvidenceSource::Change`] or [`EvidenceSource::Node`].
    pub source: EvidenceSource,
    /// When it happened (the event's own time, else when it was read).
    pub at: TimestampMs,
    /// One sentence for people.
    pub summary: String,
    /// The structured content.
    pub detail: EvidenceDetail,
}

impl KubeEvidence {
    /// Adds the item to `bundle`.
    pub fn push_into(self, bundle: &mut EvidenceBundle) -> EvidenceId {
        bundle.push(self.source, self.at, self.summary, self.detail)
    }
}

fn ms(t: Option<&Time>) -> Option<TimestampMs> {
    t.map(|t| t.0.as_millisecond())
}

fn name_of(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn pod_item(
    pod: &str,
    workload: Option<&WorkloadRef>,
    problem: PodProblem,
    count: u32,
    at: TimestampMs,
    summary: String,
) -> KubeEvidence {
    KubeEvidence {
        source: EvidenceSource::Pod,
        at,
        summary,
        detail: EvidenceDetail::Pod {
            pod: pod.to_string(),
            workload: workload.cloned(),
            problem,
            count,
        },
    }
}

/// A pod's problems: a container waiting in `CrashLoopBackOff` or
/// `ImagePullBackOff`/`ErrImagePull` (its current state, always
/// reported), a last termination `OOMKilled` or any other restart
/// (reported when it ended at or after `since`), `Unschedulable`, and a
/// running pod that is not ready (when nothing above explains it). `now`
/// dates items that carry no time of their own.
pub fn pod_evidence(
    pod: &Pod,
    workload: Option<&WorkloadRef>,
    since: TimestampMs,
    now: TimestampMs,
) -> Vec<KubeEvidence> {
    let name = name_of(&pod.metadata);
    let mut out = Vec::new();
    let status = pod.status.clone().unwrap_or_default();
    let mut waiting_problem = false;
    for c in status.container_statuses.iter().flatten() {
        let restarts = u32::try_from(c.restart_count).unwrap_or(0);
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        let last_end = last.and_then(|t| ms(t.finished_at.as_ref()));
        match waiting.and_then(|w| w.reason.as_deref()) {
            Some("CrashLoopBackOff") => {
                waiting_problem = true;
                let why = last
                    .and_then(|t| t.reason.clone())
                    .map(|r| format!(", last exit: {r}"))
                    .unwrap_or_default();
                out.push(pod_item(
                    &name,
                    workload,
                    PodProblem::CrashLoopBackOff,
                    restarts.max(1),
                    last_end.unwrap_or(now),
                    format!(
                        "pod {name} container {} is in CrashLoopBackOff after {restarts} restarts{why}",
                        c.name
                    ),
                ));
                continue;
            }
            Some(reason @ ("ImagePullBackOff" | "ErrImagePull")) => {
                waiting_problem = true;
                out.push(pod_item(
                    &name,
                    workload,
                    PodProblem::ImagePullBackOff,
                    1,
                    now,
                    format!(
                        "pod {name} container {} cannot pull its image ({reason}: {})",
                        c.name,
                        waiting.and_then(|w| w.message.clone()).unwrap_or_default()
                    ),
                ));
                continue;
            }
            _ => {}
        }
        if restarts == 0 || last_end.is_some_and(|t| t < since) {
            continue;
        }
        let at = last_end.unwrap_or(now);
        if last.and_then(|t| t.reason.as_deref()) == Some("OOMKilled") {
            out.push(pod_item(
                &name,
                workload,
                PodProblem::OomKilled,
                restarts,
                at,
                format!(
                    "pod {name} container {} was OOMKilled (restarted {restarts} times), last at {}",
                    c.name,
                    format_ts(at)
                ),
            ));
        } else {
            let why = last
                .and_then(|t| t.reason.clone())
                .unwrap_or_else(|| "unknown reason".into());
            out.push(pod_item(
                &name,
                workload,
                PodProblem::Restarted,
                restarts,
                at,
                format!(
                    "pod {name} container {} restarted {restarts} times, last at {} ({why})",
                    c.name,
                    format_ts(at)
                ),
            ));
        }
    }
    let conditions = status.conditions.unwrap_or_default();
    if let Some(c) = conditions.iter().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    }) {
        out.push(pod_item(
            &name,
            workload,
            PodProblem::Unschedulable,
            1,
            ms(c.last_transition_time.as_ref()).unwrap_or(now),
            format!(
                "pod {name} cannot be scheduled: {}",
                c.message.clone().unwrap_or_default()
            ),
        ));
    } else if status.phase.as_deref() == Some("Running") && !waiting_problem {
        if let Some(c) = conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.status != "True")
        {
            let at = ms(c.last_transition_time.as_ref()).unwrap_or(now);
            out.push(pod_item(
                &name,
                workload,
                PodProblem::NotReady,
                1,
                at,
                format!(
                    "pod {name} is running but not ready since {}",
                    format_ts(at)
                ),
            ));
        }
    }
    out
}

fn revision(meta: &ObjectMeta) -> Option<i64> {
    meta.annotations.as_ref()?.get(REVISION)?.parse().ok()
}

/// Rollouts of a Deployment: each ReplicaSet it controls (by owner `uid`)
/// created at or after `since` is a new revision, reported with the
/// revision before it.
pub fn rollout_evidence(
    deployment: &WorkloadRef,
    uid: &str,
    replica_sets: &[ReplicaSet],
    since: TimestampMs,
) -> Vec<KubeEvidence> {
    let mut owned: Vec<(i64, TimestampMs, String)> = replica_sets
        .iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .filter_map(|rs| {
            Some((
                revision(&rs.metadata)?,
                ms(rs.metadata.creation_timestamp.as_ref())?,
                name_of(&rs.metadata),
            ))
        })
        .collect();
    owned.sort();
    let mut out = Vec::new();
    for (i, (rev, created, rs_name)) in owned.iter().enumerate() {
        if *created < since {
            continue;
        }
        let before = i.checked_sub(1).map(|j| owned[j].0);
        let from = before.map_or("none".to_string(), |r| r.to_string());
        out.push(KubeEvidence {
            source: EvidenceSource::Change,
            at: *created,
            summary: format!(
                "{deployment} rolled out revision {rev} (ReplicaSet {rs_name}, previous revision {from}) at {}",
                format_ts(*created)
            ),
            detail: EvidenceDetail::Change {
                change: ChangeKind::Rollout,
                object: format!("ReplicaSet/{rs_name}"),
                workload: Some(deployment.clone()),
                from_revision: before,
                to_revision: Some(*rev),
            },
        });
    }
    out
}

/// The HPA's last scaling, when it happened at or after `since`.
pub fn hpa_evidence(
    target: &WorkloadRef,
    hpa: &HorizontalPodAutoscaler,
    since: TimestampMs,
) -> Option<KubeEvidence> {
    let status = hpa.status.as_ref()?;
    let at = ms(status.last_scale_time.as_ref())?;
    if at < since {
        return None;
    }
    let name = name_of(&hpa.metadata);
    let current = status.current_replicas.unwrap_or(0);
    let spec = &hpa.spec;
    Some(KubeEvidence {
        source: EvidenceSource::Change,
        at,
        summary: format!(
            "HPA {name} scaled {target} at {} (now {current} replicas, desired {}, bounds {}..{})",
            format_ts(at),
            status.desired_replicas,
            spec.min_replicas.unwrap_or(1),
            spec.max_replicas
        ),
        detail: EvidenceDetail::Change {
            change: ChangeKind::HpaScaled,
            object: format!("HorizontalPodAutoscaler/{name}"),
            workload: Some(target.clone()),
            from_revision: None,
            to_revision: None,
        },
    })
}

/// A node's bad conditions: `Ready` not `True` (as `NotReady`), and
/// `MemoryPressure`, `DiskPressure`, `PIDPressure`, `NetworkUnavailable`
/// that are `True`.
pub fn node_evidence(node: &Node, now: TimestampMs) -> Vec<KubeEvidence> {
    let name = name_of(&node.metadata);
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions
        .iter()
        .filter_map(|c| {
            let condition = match (c.type_.as_str(), c.status.as_str()) {
                ("Ready", "True") => return None,
                ("Ready", _) => "NotReady",
                (
                    t @ ("MemoryPressure" | "DiskPressure" | "PIDPressure" | "NetworkUnavailable"),
                    "True",
                ) => t,
                _ => return None,
            };
            let at = ms(c.last_transition_time.as_ref()).unwrap_or(now);
            Some(KubeEvidence {
                source: EvidenceSource::Node,
                at,
                summary: format!(
                    "node {name} is {condition} since {}{}",
                    format_ts(at),
                    c.message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
                detail: EvidenceDetail::Node {
                    node: name.clone(),
                    condition: condition.to_string(),
                },
            })
        })
        .collect()
}

/// `k=v,…` from a selector's `matchLabels` (expressions are left out: the
/// list is then wider, never narrower, and pods are filtered by owner).
fn selector_string(selector: &LabelSelector) -> String {
    selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn gap(e: &::kube::Error) -> String {
    match e {
        ::kube::Error::Api(s) => format!("{} {} ({})", s.code, s.reason, s.message),
        other => other.to_string(),
    }
}

/// Reads the workload's pods, rollouts (Deployments), HPA scaling and its
/// pods' nodes, and adds what is wrong or changed since `since` to
/// `bundle`; each failed call adds a gap instead. `now` dates items that
/// carry no time of their own. Returns how many items were added.
pub async fn gather_workload(
    client: &Client,
    target: &WorkloadRef,
    since: TimestampMs,
    now: TimestampMs,
    bundle: &mut EvidenceBundle,
) -> usize {
    let before = bundle.items.len();
    let ns = target.namespace.as_str();
    let wname = target.name.as_str();
    let read = match target.kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .get(wname)
            .await
            .map(|d| (d.metadata.uid, d.spec.selector)),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .get(wname)
            .await
            .map(|d| (d.metadata.uid, d.spec.selector)),
        WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
            .get(wname)
            .await
            .map(|d| (d.metadata.uid, d.spec.selector)),
    };
    let (uid, selector) = match read {
        Ok((uid, selector)) => (uid.unwrap_or_default(), selector),
        Err(e) => {
            bundle
                .gaps
                .push(format!("kubernetes: cannot get {target}: {}", gap(&e)));
            return 0;
        }
    };
    let labels = selector_string(&selector);

    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut nodes = BTreeSet::new();
    match pods_api.list(&ListParams::default().labels(&labels)).await {
        Ok(pods) => {
            for pod in &pods.items {
                if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                    nodes.insert(node);
                }
                for item in pod_evidence(pod, Some(target), since, now) {
                    item.push_into(bundle);
                }
            }
        }
        Err(e) => bundle.gaps.push(format!(
            "kubernetes: cannot list pods of {target}: {}",
            gap(&e)
        )),
    }

    if target.kind == WorkloadKind::Deployment {
        let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
        match rs_api.list(&ListParams::default().labels(&labels)).await {
            Ok(sets) => {
                for item in rollout_evidence(target, &uid, &sets.items, since) {
                    item.push_into(bundle);
                }
            }
            Err(e) => bundle.gaps.push(format!(
                "kubernetes: cannot list ReplicaSets of {target}: {}",
                gap(&e)
            )),
        }
    }

    let hpa_api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    match hpa_api.list(&ListParams::default()).await {
        Ok(hpas) => {
            let hpa = hpas.items.iter().find(|h| {
                h.spec.scale_target_ref.kind == target.kind.as_str()
                    && h.spec.scale_target_ref.name == target.name
            });
            if let Some(item) = hpa.and_then(|h| hpa_evidence(target, h, since)) {
                item.push_into(bundle);
            }
        }
        Err(e) => bundle
            .gaps
            .push(format!("kubernetes: cannot list HPAs in {ns}: {}", gap(&e))),
    }

    let node_api: Api<Node> = Api::all(client.clone());
    for node in nodes.iter().take(MAX_NODES) {
        match node_api.get(node).await {
            Ok(n) => {
                for item in node_evidence(&n, now) {
                    item.push_into(bundle);
                }
            }
            Err(e) => {
                // One gap for all nodes: they fail for the same reason
                // (usually no ClusterRole in a namespaced install).
                bundle.gaps.push(format!(
                    "kubernetes: cannot get node {node} (node conditions unknown): {}",
                    gap(&e)
                ));
                break;
            }
        }
    }
    bundle.items.len() - before
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: TimestampMs = 1_800_000_000_000;

    fn target() -> WorkloadRef {
        WorkloadRef {
            namespace: "shop".into(),
            kind: WorkloadKind::Deployment,
            name: "web".into(),
        }
    }

    fn iso(t: TimestampMs) -> String {
        k8s_openapi::jiff::Timestamp::from_millisecond(t)
            .expect("time")
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1"},
            "spec": {"containers": [{"name": "app"}], "nodeName": "node-a"},
            "status": status,
        }))
        .expect("pod")
    }

    fn problems(items: &[KubeEvidence]) -> Vec<(PodProblem, u32)> {
        items
            .iter()
            .filter_map(|i| match &i.detail {
                EvidenceDetail::Pod { problem, count, .. } => Some((*problem, *count)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn oom_kills_and_crash_loops_are_named_with_their_counts() {
        let oom = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "image": "", "imageID": "", "ready": true,
                "restartCount": 3, "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                              "finishedAt": iso(NOW - 60_000)}}}]}));
        let items = pod_evidence(&oom, Some(&target()), NOW - 3_600_000, NOW);
        assert_eq!(problems(&items), vec![(PodProblem::OomKilled, 3)]);
        assert_eq!(items[0].at, NOW - 60_000);
        assert!(
            items[0].summary.contains("OOMKilled"),
            "{}",
            items[0].summary
        );
        // The same kill before the window is old news.
        assert!(pod_evidence(&oom, None, NOW, NOW).is_empty());

        let crash = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "app", "image": "", "imageID": "", "ready": false,
                "restartCount": 7, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                              "finishedAt": iso(NOW - 5_000)}}}]}));
        let items = pod_evidence(&crash, Some(&target()), NOW, NOW);
        // Not also "not ready": the crash loop explains it.
        assert_eq!(problems(&items), vec![(PodProblem::CrashLoopBackOff, 7)]);
        assert!(items[0].summary.contains("last exit: Error"));
    }

    #[test]
    fn pending_and_unready_pods_are_reported() {
        let pending = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory.",
            "lastTransitionTime": iso(NOW - 120_000)}]}),
        );
        let items = pod_evidence(&pending, None, NOW, NOW);
        assert_eq!(problems(&items), vec![(PodProblem::Unschedulable, 1)]);
        assert!(items[0].summary.contains("Insufficient memory"));
        assert_eq!(items[0].at, NOW - 120_000);

        let unready = pod(json!({"phase": "Running", "conditions": [{"type": "Ready",
            "status": "False", "lastTransitionTime": iso(NOW - 30_000)}],
            "containerStatuses": [{"name": "app", "image": "", "imageID": "", "ready": false,
                "restartCount": 0}]}));
        assert_eq!(
            problems(&pod_evidence(&unready, None, NOW, NOW)),
            vec![(PodProblem::NotReady, 1)]
        );
        let healthy = pod(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "image": "", "imageID": "", "ready": true, "restartCount": 0}]}),
        );
        assert!(pod_evidence(&healthy, None, 0, NOW).is_empty());
    }

    fn rs(name: &str, rev: i64, created: TimestampMs, owner: &str) -> ReplicaSet {
        serde_json::from_value(
            json!({"metadata": {"name": name, "creationTimestamp": iso(created),
            "annotations": {REVISION: rev.to_string()},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                 "uid": owner, "controller": true}]}}),
        )
        .expect("rs")
    }

    #[test]
    fn rollouts_in_the_window_are_changes_with_both_revisions() {
        let sets = [
            rs("web-a", 1, NOW - 86_400_000, "u1"),
            rs("web-b", 2, NOW - 600_000, "u1"),
            rs("other", 5, NOW - 60_000, "u2"),
        ];
        let items = rollout_evidence(&target(), "u1", &sets, NOW - 3_600_000);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].at, NOW - 600_000);
        match &items[0].detail {
            EvidenceDetail::Change {
                change,
                from_revision,
                to_revision,
                ..
            } => {
                assert_eq!(*change, ChangeKind::Rollout);
                assert_eq!((*from_revision, *to_revision), (Some(1), Some(2)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hpa_scaling_and_node_pressure_are_reported() {
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 10},
            "status": {"currentReplicas": 6, "desiredReplicas": 8, "lastScaleTime": iso(NOW - 90_000)}}))
        .expect("hpa");
        let item = hpa_evidence(&target(), &hpa, NOW - 3_600_000).expect("recent scaling");
        assert!(item.summary.contains("desired 8"), "{}", item.summary);
        assert!(hpa_evidence(&target(), &hpa, NOW).is_none());

        let node: Node = serde_json::from_value(json!({"metadata": {"name": "node-a"},
            "status": {"conditions": [
                {"type": "Ready", "status": "Unknown", "lastTransitionTime": iso(NOW - 1000)},
                {"type": "MemoryPressure", "status": "True", "message": "low memory"},
                {"type": "DiskPressure", "status": "False"}]}}))
        .expect("node");
        let conditions: Vec<String> = node_evidence(&node, NOW)
            .into_iter()
            .map(|i| match i.detail {
                EvidenceDetail::Node { condition, .. } => condition,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(conditions, ["NotReady", "MemoryPressure"]);
    }
}
