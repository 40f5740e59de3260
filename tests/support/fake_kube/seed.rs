//! Seeding the fake API server with realistic objects and reading them
//! back: what a test arranges before driving the real client at it.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

use super::objects::{self, key, kind_by_name, kind_by_resource, REVISION};
use super::{lock, next_revision, FakeKube};

/// How a seeded pod is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Running and ready, never restarted.
    Ready,
    /// Running, readiness probe failing.
    NotReady,
    /// Waiting in `CrashLoopBackOff` after `restarts` restarts.
    CrashLoop {
        /// `restartCount`.
        restarts: i32,
    },
    /// Running again after its last container was `OOMKilled`.
    OomKilled {
        /// `restartCount`.
        restarts: i32,
    },
    /// Pending: the scheduler found no node.
    Unschedulable,
    /// Pending: the image cannot be pulled.
    ImagePullBackOff,
}

/// `ago` before now, in the API's `Time` format.
pub fn time_ago(ago: Duration) -> String {
    let t = Timestamp::now() - SignedDuration::try_from(ago).unwrap_or(SignedDuration::ZERO);
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl FakeKube {
    /// Stores any object as the API server would after a create (name,
    /// namespace and kind from the object; `uid`, `resourceVersion`,
    /// `creationTimestamp` filled in when absent), running the controller
    /// simulation. Panics on a kind this server does not serve.
    pub fn put(&self, mut obj: Value) {
        let kind_name = obj["kind"].as_str().unwrap_or_default().to_string();
        let kind = kind_by_name(&kind_name)
            .unwrap_or_else(|| panic!("fake API serves no kind {kind_name:?}"));
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("seeded object has a name")
            .to_string();
        let ns = if kind.namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .expect("namespaced object has a namespace")
                .to_string()
        } else {
            String::new()
        };
        obj["apiVersion"] = json!(kind.api_version);
        let rv = next_revision(&self.shared);
        let meta = &mut obj["metadata"];
        if meta.get("uid").is_none() {
            meta["uid"] = json!(format!("uid-{name}-{rv}"));
        }
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] = json!(time_ago(Duration::ZERO));
        }
        let mut objects = lock(&self.shared.objects);
        let k = key(kind.resource, &ns, &name);
        let before = objects.get(&k).cloned().unwrap_or(Value::Null);
        objects::write(&self.shared, &mut objects, &kind, &k, obj, &before);
    }

    /// A stored object by resource (plural), namespace (`""` for
    /// cluster-scoped) and name.
    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.shared.objects)
            .get(&key(resource, namespace, name))
            .cloned()
    }

    /// Every stored object of `resource` in `namespace`, by name.
    pub fn objects(&self, resource: &str, namespace: &str) -> Vec<Value> {
        lock(&self.shared.objects)
            .iter()
            .filter(|((r, n, _), _)| r == resource && n == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Changes a stored object as another client would (bumps its
    /// `resourceVersion`, runs the controller). False when absent.
    pub fn edit(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> bool {
        let kind =
            kind_by_resource(resource).unwrap_or_else(|| panic!("fake API serves no {resource}"));
        let mut objects = lock(&self.shared.objects);
        let k = key(resource, namespace, name);
        let Some(before) = objects.get(&k).cloned() else {
            return false;
        };
        let mut obj = before.clone();
        change(&mut obj);
        objects::write(&self.shared, &mut objects, &kind, &k, obj, &before);
        true
    }

    /// A field of a stored object, e.g. `("deployments", "shop", "web",
    /// "/spec/replicas")`.
    pub fn field(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        pointer: &str,
    ) -> Option<Value> {
        self.object(resource, namespace, name)?
            .pointer(pointer)
            .cloned()
    }

    /// A Deployment `name` (label and selector `app=name`, RollingUpdate
    /// 25%/25%) with `revisions` rollouts behind it (images `…:v1` to
    /// `…:vN`, each a ReplicaSet with its `deployment.kubernetes.io/revision`;
    /// revision r created `(N - r + 1) × 10` minutes ago).
    pub fn seed_deployment(
        &self,
        namespace: &str,
        name: &str,
        replicas: i32,
        revisions: u32,
    ) -> Value {
        self.put(json!({
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name, "team": "shop"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": format!("registry.example/{name}:v1")}]},
                },
            },
        }));
        for r in 2..=revisions.max(1) {
            self.edit("deployments", namespace, name, |d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"] =
                    json!(format!("registry.example/{name}:v{r}"));
            });
        }
        for rs in self.replica_sets(namespace, name) {
            let rev = rs_revision(&rs);
            let age =
                Duration::from_secs(600 * (i64::from(revisions.max(1)) - rev + 1).max(1) as u64);
            let rs_name = rs["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            self.set_age("replicasets", namespace, &rs_name, age);
        }
        self.object("deployments", namespace, name).expect("seeded")
    }

    /// Sets an object's `creationTimestamp` to `ago` before now.
    pub fn set_age(&self, resource: &str, namespace: &str, name: &str, ago: Duration) {
        let mut objects = lock(&self.shared.objects);
        if let Some(obj) = objects.get_mut(&key(resource, namespace, name)) {
            obj["metadata"]["creationTimestamp"] = json!(time_ago(ago));
        }
    }

    /// The ReplicaSets a Deployment owns, oldest revision first.
    pub fn replica_sets(&self, namespace: &str, deployment: &str) -> Vec<Value> {
        let Some(uid) = self.field("deployments", namespace, deployment, "/metadata/uid") else {
            return Vec::new();
        };
        let mut out: Vec<Value> = self
            .objects("replicasets", namespace)
            .into_iter()
            .filter(|rs| {
                rs.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|r| r.iter().any(|o| o["uid"] == uid))
            })
            .collect();
        out.sort_by_key(rs_revision);
        out
    }

    /// A Deployment's current `deployment.kubernetes.io/revision`.
    pub fn revision(&self, namespace: &str, deployment: &str) -> Option<i64> {
        let dep = self.object("deployments", namespace, deployment)?;
        dep["metadata"]["annotations"][REVISION]
            .as_str()?
            .parse()
            .ok()
    }

    /// A StatefulSet `name` (selector `app=name`, RollingUpdate, 1 at a time).
    pub fn seed_statefulset(&self, namespace: &str, name: &str, replicas: i32) {
        self.put(json!({
            "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "db", "image": format!("registry.example/{name}:v1")}]},
                },
            },
        }));
    }

    /// A DaemonSet `name` on `nodes` nodes (RollingUpdate, 1 at a time).
    pub fn seed_daemonset(&self, namespace: &str, name: &str, nodes: i32) {
        self.put(json!({
            "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "agent", "image": format!("registry.example/{name}:v1")}]},
                },
            },
            "status": {
                "currentNumberScheduled": nodes, "desiredNumberScheduled": nodes,
                "numberMisscheduled": 0, "numberReady": nodes, "numberAvailable": nodes,
                "updatedNumberScheduled": nodes,
            },
        }));
    }

    /// `n` ready pods of the Deployment's current ReplicaSet, on `node-a`;
    /// their names.
    pub fn seed_pods(&self, namespace: &str, deployment: &str, n: usize) -> Vec<String> {
        let rs = self
            .replica_sets(namespace, deployment)
            .pop()
            .unwrap_or_else(|| panic!("{deployment} has no ReplicaSet"));
        let rs_name = rs["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let labels = rs["spec"]["template"]["metadata"]["labels"].clone();
        (0..n)
            .map(|i| {
                let name = format!("{rs_name}-p{i}");
                self.seed_pod(
                    namespace,
                    &name,
                    labels.clone(),
                    Some(("ReplicaSet", &rs_name)),
                    PodState::Ready,
                );
                name
            })
            .collect()
    }

    /// One pod with `labels`, controlled by `owner` (kind, name — its uid
    /// is looked up), on `node-a` unless pending, in `state`.
    pub fn seed_pod(
        &self,
        namespace: &str,
        name: &str,
        labels: Value,
        owner: Option<(&str, &str)>,
        state: PodState,
    ) {
        let owner_refs: Vec<Value> = owner
            .map(|(kind, owner_name)| {
                let resource = kind_by_name(kind).map(|k| k.resource).unwrap_or_default();
                let uid = self
                    .field(resource, namespace, owner_name, "/metadata/uid")
                    .unwrap_or(json!("unknown"));
                json!({"apiVersion": "apps/v1", "kind": kind, "name": owner_name, "uid": uid,
                       "controller": true, "blockOwnerDeletion": true})
            })
            .into_iter()
            .collect();
        let started = time_ago(Duration::from_secs(3600));
        let recent = time_ago(Duration::from_secs(120));
        let cond = |t: &str, s: &str| json!({"type": t, "status": s, "lastTransitionTime": recent});
        let container = |ready: bool, restarts: i32, state: Value, last: Option<Value>| {
            let mut c = json!({"name": "app", "image": "registry.example/app:v1", "imageID": "",
                               "ready": ready, "restartCount": restarts, "started": ready, "state": state});
            if let Some(last) = last {
                c["lastState"] = last;
            }
            c
        };
        let running = json!({"running": {"startedAt": started}});
        let (phase, node, conditions, containers) = match state {
            PodState::Ready => (
                "Running",
                true,
                vec![cond("PodScheduled", "True"), cond("Ready", "True")],
                vec![container(true, 0, running, None)],
            ),
            PodState::NotReady => (
                "Running",
                true,
                vec![cond("PodScheduled", "True"), cond("Ready", "False")],
                vec![container(false, 0, running, None)],
            ),
            PodState::CrashLoop { restarts } => (
                "Running",
                true,
                vec![cond("PodScheduled", "True"), cond("Ready", "False")],
                vec![container(
                    false,
                    restarts,
                    json!({"waiting": {"reason": "CrashLoopBackOff",
                                        "message": format!("back-off 5m0s restarting failed container=app pod={name}")}}),
                    Some(json!({"terminated": {"exitCode": 1, "reason": "Error",
                                                "startedAt": recent, "finishedAt": recent}})),
                )],
            ),
            PodState::OomKilled { restarts } => (
                "Running",
                true,
                vec![cond("PodScheduled", "True"), cond("Ready", "True")],
                vec![container(
                    true,
                    restarts,
                    running,
                    Some(
                        json!({"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                                "startedAt": started, "finishedAt": recent}}),
                    ),
                )],
            ),
            PodState::Unschedulable => (
                "Pending",
                false,
                vec![
                    json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/3 nodes are available: 3 Insufficient memory.",
                            "lastTransitionTime": recent}),
                ],
                vec![],
            ),
            PodState::ImagePullBackOff => (
                "Pending",
                true,
                vec![cond("PodScheduled", "True"), cond("Ready", "False")],
                vec![container(
                    false,
                    0,
                    json!({"waiting": {"reason": "ImagePullBackOff",
                                        "message": "Back-off pulling image \"registry.example/app:v9\""}}),
                    None,
                )],
            ),
        };
        let mut spec = json!({"containers": [{"name": "app", "image": "registry.example/app:v1"}]});
        if node {
            spec["nodeName"] = json!("node-a");
        }
        let mut status = json!({"phase": phase, "conditions": conditions});
        if !containers.is_empty() {
            status["containerStatuses"] = json!(containers);
        }
        self.put(json!({
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": owner_refs},
            "spec": spec,
            "status": status,
        }));
    }

    /// An `autoscaling/v2` HPA scaling `kind/target` between `min` and
    /// `max` on CPU.
    pub fn seed_hpa(
        &self,
        namespace: &str,
        name: &str,
        kind: &str,
        target: &str,
        min: i32,
        max: i32,
    ) {
        self.put(json!({
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
                "minReplicas": min,
                "maxReplicas": max,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                             "target": {"type": "Utilization", "averageUtilization": 70}}}],
            },
            "status": {"currentReplicas": min, "desiredReplicas": min},
        }));
    }

    /// A PodDisruptionBudget over pods matching `labels` that allows
    /// `disruptions_allowed` more evictions (0: every eviction gets 429).
    pub fn seed_pdb(&self, namespace: &str, name: &str, labels: Value, disruptions_allowed: i32) {
        self.put(json!({
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": labels}},
            "status": {"currentHealthy": 2 + disruptions_allowed, "desiredHealthy": 2,
                       "disruptionsAllowed": disruptions_allowed, "expectedPods": 2 + disruptions_allowed,
                       "observedGeneration": 1},
        }));
    }

    /// A Node with `conditions` as (type, status), e.g.
    /// `[("Ready", "True"), ("MemoryPressure", "True")]`.
    pub fn seed_node(&self, name: &str, conditions: &[(&str, &str)]) {
        let since = time_ago(Duration::from_secs(300));
        let conditions: Vec<Value> = conditions
            .iter()
            .map(|(t, s)| {
                json!({"type": t, "status": s, "reason": format!("Kubelet{t}"),
                                  "message": format!("{t} is {s}"), "lastTransitionTime": since,
                                  "lastHeartbeatTime": since})
            })
            .collect();
        self.put(json!({
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"conditions": conditions},
        }));
    }

    /// The Events stored in `namespace`, oldest first.
    pub fn events(&self, namespace: &str) -> Vec<Value> {
        let mut events = self.objects("events", namespace);
        events.sort_by_key(|e| {
            e["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|r| r.parse::<u64>().ok())
                .unwrap_or(0)
        });
        events
    }
}

fn rs_revision(rs: &Value) -> i64 {
    rs["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}
