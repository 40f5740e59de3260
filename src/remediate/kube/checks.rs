//! The pure half of the executor: reading a workload out of its
//! k8s-openapi object, resolving its rollout strategy into "pods down at
//! once", choosing the ReplicaSet a rollback goes back to, and computing
//! the merge patch that turns one pod template into another. No I/O, so
//! every rule here is unit-tested on plain objects.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value};

use crate::remediate::plan::{WorkloadKind, WorkloadRef, ACTION_ANNOTATION};
use crate::signal::TimestampMs;

/// `deployment.kubernetes.io/revision`, on Deployments and their
/// ReplicaSets.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// The label the Deployment controller adds to each ReplicaSet's template;
/// it is not part of the Deployment's own template.
const HASH_LABEL: &str = "pod-template-hash";

/// How many pods a template change takes down at once, and how that
/// follows from the strategy (for the refusal message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RolloutLimit {
    /// Pods that may be unavailable at once during the rollout.
    pub(super) down_at_once: u32,
    /// E.g. `RollingUpdate with maxUnavailable 25% of 8 replicas`.
    pub(super) how: String,
}

/// What the executor needs of a Deployment, StatefulSet or DaemonSet.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Workload {
    pub(super) target: WorkloadRef,
    pub(super) uid: Option<String>,
    pub(super) resource_version: Option<String>,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) annotations: BTreeMap<String, String>,
    /// `spec.replicas` (default 1); a DaemonSet's desired pod count.
    pub(super) replicas: i32,
    pub(super) ready: i32,
    /// `spec.selector.matchLabels`.
    pub(super) match_labels: BTreeMap<String, String>,
    /// `spec.template`, as JSON.
    pub(super) template: Value,
    /// `Err(why)` when a template change restarts no pod (OnDelete) or
    /// the strategy cannot be read.
    pub(super) rollout: Result<RolloutLimit, String>,
    /// Deployments: `deployment.kubernetes.io/revision`.
    pub(super) revision: Option<i64>,
}

impl Workload {
    /// The action id aiopsd last wrote on the object.
    pub(super) fn action(&self) -> Option<&str> {
        self.annotations.get(ACTION_ANNOTATION).map(String::as_str)
    }

    fn base(target: &WorkloadRef, meta: &ObjectMeta) -> Workload {
        Workload {
            target: target.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            replicas: 0,
            ready: 0,
            match_labels: BTreeMap::new(),
            template: Value::Null,
            rollout: Err("no rollout strategy read".into()),
            revision: revision_of(meta),
        }
    }

    /// From a Deployment.
    pub(super) fn from_deployment(target: &WorkloadRef, d: &Deployment) -> Workload {
        let mut w = Workload::base(target, &d.metadata);
        let spec = &d.spec;
        w.replicas = spec.replicas.unwrap_or(1);
        w.match_labels = spec.selector.match_labels.clone().unwrap_or_default();
        w.template = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
        w.rollout = deployment_rollout(spec.strategy.as_ref(), w.replicas);
        w.ready = d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        w
    }

    /// From a StatefulSet.
    pub(super) fn from_statefulset(target: &WorkloadRef, s: &StatefulSet) -> Workload {
        let mut w = Workload::base(target, &s.metadata);
        {
            let spec = &s.spec;
            w.replicas = spec.replicas.unwrap_or(1);
            w.match_labels = spec.selector.match_labels.clone().unwrap_or_default();
            w.template = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
            let strategy = spec.update_strategy.as_ref();
            w.rollout = match strategy.and_then(|s| s.type_.as_deref()) {
                Some("OnDelete") => Err(on_delete("StatefulSet")),
                _ => {
                    let max = strategy
                        .and_then(|s| s.rolling_update.as_ref())
                        .and_then(|r| r.max_unavailable.as_ref());
                    // Default 1; a percentage rounds down, at least 1.
                    rolling_limit(max, w.replicas, false, 1, "RollingUpdate")
                }
            };
        }
        w.ready = s
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        w
    }

    /// From a DaemonSet.
    pub(super) fn from_daemonset(target: &WorkloadRef, d: &DaemonSet) -> Workload {
        let mut w = Workload::base(target, &d.metadata);
        let status = d.status.as_ref();
        w.replicas = status.map_or(0, |s| s.desired_number_scheduled);
        w.ready = status.map_or(0, |s| s.number_ready);
        {
            let spec = &d.spec;
            w.match_labels = spec.selector.match_labels.clone().unwrap_or_default();
            w.template = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
            let strategy = spec.update_strategy.as_ref();
            w.rollout = match strategy.and_then(|s| s.type_.as_deref()) {
                Some("OnDelete") => Err(on_delete("DaemonSet")),
                _ => {
                    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
                    let surge = rolling
                        .and_then(|r| r.max_surge.as_ref())
                        .map(|s| scaled(s, w.replicas, true))
                        .transpose();
                    match surge {
                        Err(e) => Err(e),
                        // With surge, the new pod starts before the old one
                        // goes (maxUnavailable must then be 0).
                        Ok(Some(s)) if s > 0 => rolling_limit(
                            rolling.and_then(|r| r.max_unavailable.as_ref()),
                            w.replicas,
                            true,
                            0,
                            "RollingUpdate with maxSurge",
                        ),
                        // A DaemonSet's percentage rounds up.
                        Ok(_) => rolling_limit(
                            rolling.and_then(|r| r.max_unavailable.as_ref()),
                            w.replicas,
                            true,
                            1,
                            "RollingUpdate",
                        ),
                    }
                }
            };
        }
        w
    }

    /// `spec.template.metadata.annotations[key]`.
    pub(super) fn template_annotation(&self, key: &str) -> Option<String> {
        self.template
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// `k=v,…` for a list call's `labelSelector`.
    pub(super) fn selector(&self) -> String {
        self.match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn on_delete(kind: &str) -> String {
    format!("the {kind}'s updateStrategy is OnDelete: changing its pod template restarts no pod")
}

pub(super) fn revision_of(meta: &ObjectMeta) -> Option<i64> {
    meta.annotations
        .as_ref()?
        .get(REVISION_ANNOTATION)?
        .parse()
        .ok()
}

/// An int-or-percent of `total`, rounded as Kubernetes does for the field
/// (`maxSurge` up, `maxUnavailable` down — up for DaemonSets).
pub(super) fn scaled(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) if *n >= 0 => Ok(*n),
        IntOrString::Int(n) => Err(format!("negative value {n}")),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .filter(|p| (0..=100).contains(p))
                .ok_or_else(|| format!("{s:?} is neither a number nor a percentage"))?;
            let product = pct * i64::from(total.max(0));
            let v = if round_up {
                (product + 99) / 100
            } else {
                product / 100
            };
            Ok(v as i32)
        }
    }
}

fn describe(v: Option<&IntOrString>, default: &str) -> String {
    match v {
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => format!("{default} (default)"),
    }
}

/// A rolling strategy's `maxUnavailable` (default `default`) resolved
/// against `replicas`, at least `floor` (the controllers move at least one
/// pod at a time unless surging).
fn rolling_limit(
    max_unavailable: Option<&IntOrString>,
    replicas: i32,
    round_up: bool,
    floor: i32,
    strategy: &str,
) -> Result<RolloutLimit, String> {
    let resolved = match max_unavailable {
        Some(v) => scaled(v, replicas, round_up).map_err(|e| format!("maxUnavailable: {e}"))?,
        // The default is 1, or 0 when surging (then it must be 0).
        None => floor.min(1),
    };
    let down = resolved.max(floor).min(replicas.max(0));
    Ok(RolloutLimit {
        down_at_once: down.max(0) as u32,
        how: format!(
            "{strategy}, maxUnavailable {} of {replicas} pods",
            describe(max_unavailable, if floor == 0 { "0" } else { "1" })
        ),
    })
}

/// A Deployment's strategy: `Recreate` takes every pod down at once;
/// `RollingUpdate` (the default) takes `maxUnavailable` (default 25%,
/// rounded down) — or one pod when both it and `maxSurge` resolve to 0,
/// as the controller does.
pub(super) fn deployment_rollout(
    strategy: Option<&k8s_openapi::api::apps::v1::DeploymentStrategy>,
    replicas: i32,
) -> Result<RolloutLimit, String> {
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return Ok(RolloutLimit {
            down_at_once: replicas.max(0) as u32,
            how: format!("Recreate: all {replicas} pods at once"),
        });
    }
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let pct25 = IntOrString::String("25%".into());
    let unavailable_v = rolling.and_then(|r| r.max_unavailable.as_ref());
    let surge_v = rolling.and_then(|r| r.max_surge.as_ref());
    let unavailable = scaled(unavailable_v.unwrap_or(&pct25), replicas, false)
        .map_err(|e| format!("maxUnavailable: {e}"))?;
    let surge =
        scaled(surge_v.unwrap_or(&pct25), replicas, true).map_err(|e| format!("maxSurge: {e}"))?;
    let down = if unavailable == 0 && surge == 0 {
        1
    } else {
        unavailable
    };
    Ok(RolloutLimit {
        down_at_once: down.min(replicas.max(0)).max(0) as u32,
        how: format!(
            "RollingUpdate, maxUnavailable {} of {replicas} pods",
            describe(unavailable_v, "25%")
        ),
    })
}

/// A ReplicaSet a rollback can return to.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RollbackSource {
    /// The ReplicaSet's name.
    pub(super) name: String,
    /// Its revision.
    pub(super) revision: i64,
    /// Its pod template without the controller's `pod-template-hash` label.
    pub(super) template: Value,
}

/// Whether `rs` is controlled by the object with `uid`.
pub(super) fn owned_by(meta: &ObjectMeta, uid: Option<&str>) -> bool {
    let Some(uid) = uid else { return false };
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// Chooses the ReplicaSet to roll `deployment` back to, or says why not.
///
/// "Healthy previous revision" means, as far as the API can tell:
/// - the Deployment is still at `from_revision` (nothing rolled since the
///   decision);
/// - the previous revision — the highest below the current one among the
///   ReplicaSets the Deployment controls — exists and is `to_revision`
///   (a rollback never skips a revision);
/// - its ReplicaSet was created at most `max_age_ms` ago (a recent,
///   known-good state, not an ancient one);
/// - if it still runs pods (a rollout in progress), all of them are ready.
///
/// The API keeps no record of how an old revision behaved once scaled to
/// zero; that it was the stable predecessor is what the checks above
/// establish, and the verification after the action catches the rest.
pub(super) fn rollback_source(
    deployment: &Workload,
    replica_sets: &[ReplicaSet],
    from_revision: i64,
    to_revision: i64,
    max_age_ms: i64,
    now: TimestampMs,
) -> Result<RollbackSource, String> {
    let current = deployment
        .revision
        .ok_or("the Deployment has no deployment.kubernetes.io/revision annotation")?;
    if current != from_revision {
        return Err(format!(
            "the Deployment is at revision {current} now, \
             the plan was made at revision {from_revision}"
        ));
    }
    let previous = replica_sets
        .iter()
        .filter(|rs| owned_by(&rs.metadata, deployment.uid.as_deref()))
        .filter_map(|rs| revision_of(&rs.metadata).map(|r| (r, rs)))
        .filter(|(r, _)| *r < current)
        .max_by_key(|(r, _)| *r);
    let Some((revision, rs)) = previous else {
        return Err(format!(
            "no previous revision: no ReplicaSet of the Deployment has a revision below {current}"
        ));
    };
    if revision != to_revision {
        return Err(format!(
            "the previous revision is {revision}, not the planned {to_revision}; \
             a rollback only goes back one revision"
        ));
    }
    let name = rs.metadata.name.clone().unwrap_or_default();
    let created = rs
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .ok_or_else(|| format!("ReplicaSet {name} has no creationTimestamp"))?;
    let age = now - created;
    if age > max_age_ms {
        return Err(format!(
            "revision {revision} (ReplicaSet {name}) is {} old, older than the {} limit",
            human_ms(age),
            human_ms(max_age_ms)
        ));
    }
    if let Some(status) = &rs.status {
        let ready = status.ready_replicas.unwrap_or(0);
        if status.replicas > 0 && ready < status.replicas {
            return Err(format!(
                "revision {revision} (ReplicaSet {name}) runs pods that are not ready ({ready}/{})",
                status.replicas
            ));
        }
    }
    let template = rs
        .spec
        .template
        .as_ref()
        .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
        .ok_or_else(|| format!("ReplicaSet {name} has no pod template"))?;
    Ok(RollbackSource {
        name,
        revision,
        template: without_hash_label(template),
    })
}

fn without_hash_label(mut template: Value) -> Value {
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    template
}

/// `3d 4h`, `25m`, `40s`: an age for a message.
pub(super) fn human_ms(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The RFC 7386 merge patch that turns `from` into `to`: keys only in
/// `from` become `null` (deleted), changed scalars and arrays are replaced
/// whole, equal parts are left out. Applied to `from` it yields exactly
/// `to` (nulls inside `to` are dropped first: a merge patch cannot set one).
pub(super) fn merge_diff(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(f), Value::Object(t)) => {
            let mut patch = Map::new();
            for key in f.keys() {
                if !t.contains_key(key) || t[key].is_null() {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            for (key, tv) in t {
                if tv.is_null() {
                    continue;
                }
                match f.get(key) {
                    Some(fv) if fv == tv => {}
                    Some(fv @ Value::Object(_)) if tv.is_object() => {
                        patch.insert(key.clone(), merge_diff(fv, tv));
                    }
                    _ => {
                        patch.insert(key.clone(), strip_nulls(tv));
                    }
                }
            }
            Value::Object(patch)
        }
        _ => strip_nulls(to),
    }
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// The workload kinds a plan may name, with their API resource names.
pub(super) fn resource_of(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "deployments",
        WorkloadKind::StatefulSet => "statefulsets",
        WorkloadKind::DaemonSet => "daemonsets",
    }
}

/// The `scale` subresource of a kind (DaemonSets have none).
pub(super) fn scale_resource_of(kind: WorkloadKind) -> Option<&'static str> {
    match kind {
        WorkloadKind::Deployment => Some("deployments/scale"),
        WorkloadKind::StatefulSet => Some("statefulsets/scale"),
        WorkloadKind::DaemonSet => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::apps::v1::{ReplicaSetSpec, ReplicaSetStatus};
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
    use serde_json::json;

    fn target() -> WorkloadRef {
        WorkloadRef {
            namespace: "shop".into(),
            kind: WorkloadKind::Deployment,
            name: "web".into(),
        }
    }

    fn strategy(
        kind: &str,
        unavailable: Option<IntOrString>,
        surge: Option<IntOrString>,
    ) -> DeploymentStrategy {
        DeploymentStrategy {
            type_: Some(kind.into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_unavailable: unavailable,
                max_surge: surge,
            }),
        }
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled(&p("25%"), 10, false), Ok(2));
        assert_eq!(scaled(&p("25%"), 10, true), Ok(3));
        assert_eq!(scaled(&p("25%"), 3, false), Ok(0));
        assert_eq!(scaled(&IntOrString::Int(2), 10, false), Ok(2));
        assert!(scaled(&p("lots"), 10, false).is_err());
        assert!(scaled(&p("120%"), 10, false).is_err());
    }

    #[test]
    fn deployment_strategy_resolves_pods_down_at_once() {
        // Default 25% of 8 = 2.
        assert_eq!(deployment_rollout(None, 8).map(|l| l.down_at_once), Ok(2));
        // 25% of 3 rounds down to 0, surge 25% rounds up to 1: zero down.
        assert_eq!(deployment_rollout(None, 3).map(|l| l.down_at_once), Ok(0));
        // Both zero: the controller still moves one.
        let s = strategy(
            "RollingUpdate",
            Some(IntOrString::Int(0)),
            Some(IntOrString::Int(0)),
        );
        assert_eq!(
            deployment_rollout(Some(&s), 4).map(|l| l.down_at_once),
            Ok(1)
        );
        let s = strategy(
            "RollingUpdate",
            Some(IntOrString::String("50%".into())),
            None,
        );
        let limit = deployment_rollout(Some(&s), 6).expect("valid");
        assert_eq!(limit.down_at_once, 3);
        assert!(limit.how.contains("50%"), "{}", limit.how);
        let recreate = DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        };
        assert_eq!(
            deployment_rollout(Some(&recreate), 5).map(|l| l.down_at_once),
            Ok(5)
        );
        let bad = strategy("RollingUpdate", Some(IntOrString::String("x".into())), None);
        assert!(deployment_rollout(Some(&bad), 5).is_err());
    }

    fn deployment(revision: i64) -> Workload {
        let d = Deployment {
            metadata: ObjectMeta {
                uid: Some("dep-uid".into()),
                annotations: Some([(REVISION_ANNOTATION.to_string(), revision.to_string())].into()),
                ..Default::default()
            },
            spec: DeploymentSpec {
                replicas: Some(4),
                selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                },
                template: PodTemplateSpec::default(),
                ..Default::default()
            },
            status: None,
        };
        Workload::from_deployment(&target(), &d)
    }

    fn rs(name: &str, revision: i64, created_ms: i64, replicas: i32, ready: i32) -> ReplicaSet {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web", "pod-template-hash": name}},
            "spec": {"containers": [{"name": "app", "image": format!("web:v{revision}")}]}
        }))
        .expect("template");
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some([(REVISION_ANNOTATION.to_string(), revision.to_string())].into()),
                creation_timestamp: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_millisecond(created_ms).expect("time"),
                )),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "web".into(),
                    uid: "dep-uid".into(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                template: Some(template),
                ..Default::default()
            },
            status: Some(ReplicaSetStatus {
                replicas,
                ready_replicas: Some(ready),
                ..Default::default()
            }),
        }
    }

    const NOW: i64 = 1_800_000_000_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn rollback_goes_to_the_immediately_previous_recent_revision() {
        let sets = [
            rs("web-1", 1, NOW - 5 * HOUR, 0, 0),
            rs("web-2", 2, NOW - 2 * HOUR, 0, 0),
            rs("web-3", 3, NOW - HOUR, 4, 4),
        ];
        let source = rollback_source(&deployment(3), &sets, 3, 2, 24 * HOUR, NOW).expect("allowed");
        assert_eq!(source.revision, 2);
        assert_eq!(source.name, "web-2");
        assert_eq!(source.template["spec"]["containers"][0]["image"], "web:v2");
        assert!(source.template["metadata"]["labels"]
            .get(HASH_LABEL)
            .is_none());
    }

    #[test]
    fn rollback_is_refused_without_a_fitting_previous_revision() {
        let sets = [
            rs("web-1", 1, NOW - 30 * HOUR, 0, 0),
            rs("web-3", 3, NOW - HOUR, 4, 4),
        ];
        // Skipping a revision.
        let err = rollback_source(&deployment(3), &sets, 3, 2, 48 * HOUR, NOW).expect_err("skip");
        assert!(err.contains("previous revision is 1"), "{err}");
        // Too old.
        let err = rollback_source(&deployment(3), &sets, 3, 1, 24 * HOUR, NOW).expect_err("old");
        assert!(err.contains("older than the 1d 0h limit"), "{err}");
        // None at all.
        let err =
            rollback_source(&deployment(3), &sets[1..], 3, 2, 24 * HOUR, NOW).expect_err("none");
        assert!(err.contains("no previous revision"), "{err}");
        // The Deployment moved on since the decision.
        let err = rollback_source(&deployment(4), &sets, 3, 1, 48 * HOUR, NOW).expect_err("moved");
        assert!(err.contains("revision 4 now"), "{err}");
        // A previous revision whose pods are failing mid-rollout.
        let sets = [
            rs("web-2", 2, NOW - HOUR, 3, 1),
            rs("web-3", 3, NOW - HOUR, 2, 2),
        ];
        let err =
            rollback_source(&deployment(3), &sets, 3, 2, 24 * HOUR, NOW).expect_err("unready");
        assert!(err.contains("not ready (1/3)"), "{err}");
        // ReplicaSets of another owner do not count.
        let mut foreign = rs("other-2", 2, NOW - HOUR, 0, 0);
        foreign.metadata.owner_references = None;
        let err =
            rollback_source(&deployment(3), &[foreign], 3, 2, 24 * HOUR, NOW).expect_err("foreign");
        assert!(err.contains("no previous revision"), "{err}");
    }

    #[test]
    fn merge_diff_turns_one_template_into_the_other() {
        let from = json!({"metadata": {"labels": {"app": "web", "x": "1"}, "annotations": {"a": "1"}},
                          "spec": {"containers": [{"name": "app", "image": "v3", "env": [{"name": "E"}]}]}});
        let to = json!({"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "app", "image": "v2"}]}});
        let patch = merge_diff(&from, &to);
        assert_eq!(
            patch,
            json!({"metadata": {"labels": {"x": null}, "annotations": null},
                   "spec": {"containers": [{"name": "app", "image": "v2"}]}})
        );
        // Applying it (RFC 7386) gives `to`.
        fn apply(target: &mut Value, patch: &Value) {
            match (target.as_object_mut(), patch) {
                (Some(t), Value::Object(p)) => {
                    for (k, v) in p {
                        if v.is_null() {
                            t.remove(k);
                        } else {
                            apply(t.entry(k.clone()).or_insert(Value::Null), v);
                        }
                    }
                }
                (_, p) => *target = p.clone(),
            }
        }
        let mut applied = from.clone();
        apply(&mut applied, &patch);
        assert_eq!(applied, to);
        assert_eq!(merge_diff(&to, &to), json!({}));
    }

    #[test]
    fn human_ages_read_well() {
        assert_eq!(human_ms(90 * 60_000), "1h 30m");
        assert_eq!(human_ms(3 * 86_400_000 + 2 * HOUR), "3d 2h");
        assert_eq!(human_ms(45_000), "45s");
    }
}
