//! Everything the fake API server serves besides Leases: workloads and
//! their `scale` subresource, ReplicaSets, Pods and their `eviction`
//! subresource, HPAs, PodDisruptionBudgets, Nodes and Events — get, list
//! (with `labelSelector`), patch (merge, strategic, apply), create, with
//! `resourceVersion` preconditions and the API server's `Status` errors.
//!
//! The Deployment controller is simulated only as far as aiopsd observes
//! it, synchronously inside the write that triggers it: a changed pod
//! template makes (or reuses) a ReplicaSet with the next
//! `deployment.kubernetes.io/revision`; replicas go straight to the status
//! (every replica ready at once).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::patch::{label_selector_matches, merge_patch, strategic_merge, Selector};
use super::{lock, micro_time_now, next_revision, status, ApiCall, Shared};

/// Stored objects by (resource, namespace — `""` when cluster-scoped, name).
pub(super) type Objects = BTreeMap<(String, String, String), Value>;

/// A served resource type.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kind {
    pub(super) group: &'static str,
    pub(super) resource: &'static str,
    pub(super) kind: &'static str,
    pub(super) api_version: &'static str,
    pub(super) namespaced: bool,
}

pub(super) const KINDS: &[Kind] = &[
    Kind {
        group: "apps",
        resource: "deployments",
        kind: "Deployment",
        api_version: "apps/v1",
        namespaced: true,
    },
    Kind {
        group: "apps",
        resource: "statefulsets",
        kind: "StatefulSet",
        api_version: "apps/v1",
        namespaced: true,
    },
    Kind {
        group: "apps",
        resource: "daemonsets",
        kind: "DaemonSet",
        api_version: "apps/v1",
        namespaced: true,
    },
    Kind {
        group: "apps",
        resource: "replicasets",
        kind: "ReplicaSet",
        api_version: "apps/v1",
        namespaced: true,
    },
    Kind {
        group: "",
        resource: "pods",
        kind: "Pod",
        api_version: "v1",
        namespaced: true,
    },
    Kind {
        group: "",
        resource: "configmaps",
        kind: "ConfigMap",
        api_version: "v1",
        namespaced: true,
    },
    Kind {
        group: "",
        resource: "nodes",
        kind: "Node",
        api_version: "v1",
        namespaced: false,
    },
    Kind {
        group: "autoscaling",
        resource: "horizontalpodautoscalers",
        kind: "HorizontalPodAutoscaler",
        api_version: "autoscaling/v2",
        namespaced: true,
    },
    Kind {
        group: "policy",
        resource: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        api_version: "policy/v1",
        namespaced: true,
    },
    Kind {
        group: "events.k8s.io",
        resource: "events",
        kind: "Event",
        api_version: "events.k8s.io/v1",
        namespaced: true,
    },
];

pub(super) fn kind_by_resource(resource: &str) -> Option<Kind> {
    KINDS.iter().copied().find(|k| k.resource == resource)
}

pub(super) fn kind_by_name(kind: &str) -> Option<Kind> {
    KINDS.iter().copied().find(|k| k.kind == kind)
}

pub(super) fn key(resource: &str, namespace: &str, name: &str) -> (String, String, String) {
    (
        resource.to_string(),
        namespace.to_string(),
        name.to_string(),
    )
}

/// `deployments.apps "web"` / `pods "web-1"`: how the API server names an
/// object in messages.
fn qualified(kind: &Kind, name: &str) -> String {
    if kind.group.is_empty() {
        format!("{} \"{name}\"", kind.resource)
    } else {
        format!("{}.{} \"{name}\"", kind.resource, kind.group)
    }
}

fn details(kind: &Kind, name: &str) -> Value {
    json!({"name": name, "group": kind.group, "kind": kind.resource})
}

fn not_found(kind: &Kind, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} not found", qualified(kind, name)),
        details(kind, name),
    )
}

fn bad_request(message: &str) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, json!({}))
}

fn invalid(kind: &Kind, name: &str, causes: &[String]) -> Response {
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &format!(
            "{} {} is invalid: [{}]",
            kind.kind,
            qualified(kind, name),
            causes.join(", ")
        ),
        details(kind, name),
    )
}

fn conflict(kind: &Kind, name: &str) -> Response {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {}: the object has been modified; please apply \
             your changes to the latest version and try again",
            qualified(kind, name)
        ),
        details(kind, name),
    )
}

/// The 403 the API server sends when RBAC denies a call.
pub(super) fn forbidden(call: &ApiCall) -> Response {
    let base = call.resource.split('/').next().unwrap_or_default();
    let subject = match &call.name {
        Some(name) if call.group.is_empty() => format!("{base} \"{name}\""),
        Some(name) => format!("{base}.{} \"{name}\"", call.group),
        None if call.group.is_empty() => base.to_string(),
        None => format!("{base}.{}", call.group),
    };
    let scope = match &call.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!(
            "{subject} is forbidden: User \"system:serviceaccount:aiopsd:aiopsd\" cannot {} \
             resource \"{}\" in API group \"{}\" {scope}",
            call.verb, call.resource, call.group
        ),
        json!({"name": call.name.clone().unwrap_or_default(), "group": call.group, "kind": base}),
    )
}

fn now_seconds() -> String {
    micro_time_now()[..19].to_string() + "Z"
}

/// Serves one non-Lease call (already recorded and not forbidden).
pub(super) fn handle(
    shared: &Shared,
    call: &ApiCall,
    content_type: Option<&str>,
    query: &BTreeMap<String, String>,
    body: &[u8],
) -> Response {
    let mut parts = call.resource.splitn(2, '/');
    let base = parts.next().unwrap_or_default();
    let sub = parts.next();
    let Some(kind) = kind_by_resource(base).filter(|k| k.group == call.group) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        );
    };
    let ns = call.namespace.clone().unwrap_or_default();
    if kind.namespaced == call.namespace.is_none() && !(call.verb == "list" && kind.namespaced) {
        return not_found(&kind, call.name.as_deref().unwrap_or_default());
    }
    let name = call.name.clone().unwrap_or_default();
    match (call.verb.as_str(), sub, call.name.is_some()) {
        ("get", None, true) => match lock(&shared.objects).get(&key(kind.resource, &ns, &name)) {
            Some(obj) => (StatusCode::OK, Json(obj.clone())).into_response(),
            None => not_found(&kind, &name),
        },
        ("list", None, false) => list(shared, &kind, call.namespace.as_deref(), query),
        ("patch", None, true) => patch(shared, &kind, &ns, &name, content_type, query, body),
        ("create", None, false) => create(shared, &kind, &ns, body),
        ("get", Some("scale"), true) if is_scalable(&kind) => {
            match lock(&shared.objects).get(&key(kind.resource, &ns, &name)) {
                Some(obj) => (StatusCode::OK, Json(scale_of(obj))).into_response(),
                None => not_found(&kind, &name),
            }
        }
        ("patch", Some("scale"), true) if is_scalable(&kind) => {
            patch_scale(shared, &kind, &ns, &name, content_type, query, body)
        }
        ("create", Some("eviction"), true) if kind.resource == "pods" => {
            evict(shared, &ns, &name, body)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!(
                "{} is not supported on {} by this test server",
                call.verb, call.resource
            ),
            json!({}),
        ),
    }
}

fn is_scalable(kind: &Kind) -> bool {
    matches!(
        kind.resource,
        "deployments" | "statefulsets" | "replicasets"
    )
}

fn list(
    shared: &Shared,
    kind: &Kind,
    namespace: Option<&str>,
    query: &BTreeMap<String, String>,
) -> Response {
    let selector = match query.get("labelSelector").map(|s| Selector::parse(s)) {
        None => Selector::default(),
        Some(Ok(s)) => s,
        Some(Err(e)) => return bad_request(&e),
    };
    let items: Vec<Value> = lock(&shared.objects)
        .iter()
        .filter(|((res, ns, _), _)| res == kind.resource && namespace.is_none_or(|n| n == ns))
        .filter(|(_, obj)| selector.matches(&obj["metadata"]["labels"]))
        .map(|(_, obj)| {
            // The API server omits kind/apiVersion on list items.
            let mut item = obj.clone();
            if let Some(m) = item.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            item
        })
        .collect();
    let rv = shared
        .revision
        .load(std::sync::atomic::Ordering::SeqCst)
        .to_string();
    (
        StatusCode::OK,
        Json(json!({
            "kind": format!("{}List", kind.kind),
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": rv},
            "items": items,
        })),
    )
        .into_response()
}

/// Parses a patch body by content type and applies it to `target`.
fn apply_patch(
    target: &mut Value,
    content_type: Option<&str>,
    query: &BTreeMap<String, String>,
    body: &[u8],
    kind: &Kind,
) -> Result<(), Box<Response>> {
    let ct = content_type.unwrap_or_default();
    let parse_json = |body: &[u8]| {
        serde_json::from_slice::<Value>(body)
            .map_err(|e| Box::new(bad_request(&format!("invalid JSON patch body: {e}"))))
    };
    if ct.starts_with("application/merge-patch+json") {
        merge_patch(target, &parse_json(body)?);
    } else if ct.starts_with("application/strategic-merge-patch+json") {
        strategic_merge(target, &parse_json(body)?);
    } else if ct.starts_with("application/apply-patch+yaml") {
        if query.get("fieldManager").is_none_or(|m| m.is_empty()) {
            return Err(Box::new(bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: \
                 is required for apply patch",
            )));
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| Box::new(bad_request("apply body is not UTF-8")))?;
        let applied: Value = serde_saphyr::from_str(text)
            .map_err(|e| Box::new(bad_request(&format!("error decoding YAML: {e}"))))?;
        // Subresources (scale) are applied with their own kind.
        let expected_kind = target
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or(kind.kind);
        if applied.get("kind").and_then(Value::as_str) != Some(expected_kind) {
            return Err(Box::new(bad_request(
                "apply patch must carry the object's kind and apiVersion",
            )));
        }
        strategic_merge(target, &applied);
    } else {
        return Err(Box::new(status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types \
                 include: application/json-patch+json, application/merge-patch+json, \
                 application/apply-patch+yaml, application/strategic-merge-patch+json \
                 (got {ct:?})"
            ),
            json!({}),
        )));
    }
    Ok(())
}

/// Typed decode plus the validation rules the tests rely on.
fn validate(kind: &Kind, obj: &Value) -> Result<(), Vec<String>> {
    use k8s_openapi::api;
    let v = obj.clone();
    let decoded = match kind.resource {
        "deployments" => serde_json::from_value::<api::apps::v1::Deployment>(v).map(drop),
        "statefulsets" => serde_json::from_value::<api::apps::v1::StatefulSet>(v).map(drop),
        "daemonsets" => serde_json::from_value::<api::apps::v1::DaemonSet>(v).map(drop),
        "replicasets" => serde_json::from_value::<api::apps::v1::ReplicaSet>(v).map(drop),
        "pods" => serde_json::from_value::<api::core::v1::Pod>(v).map(drop),
        "nodes" => serde_json::from_value::<api::core::v1::Node>(v).map(drop),
        "configmaps" => serde_json::from_value::<api::core::v1::ConfigMap>(v).map(drop),
        "horizontalpodautoscalers" => {
            serde_json::from_value::<api::autoscaling::v2::HorizontalPodAutoscaler>(v).map(drop)
        }
        "poddisruptionbudgets" => {
            serde_json::from_value::<api::policy::v1::PodDisruptionBudget>(v).map(drop)
        }
        "events" => serde_json::from_value::<api::events::v1::Event>(v).map(drop),
        _ => Ok(()),
    };
    let mut causes = Vec::new();
    if let Err(e) = decoded {
        causes.push(format!("cannot decode {}: {e}", kind.kind));
    }
    if obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .is_some_and(|r| r < 0)
    {
        causes.push("spec.replicas: Invalid value: must be greater than or equal to 0".into());
    }
    if kind.resource == "horizontalpodautoscalers" {
        let min = obj
            .pointer("/spec/minReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let max = obj
            .pointer("/spec/maxReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if min < 1 {
            causes.push(format!(
                "spec.minReplicas: Invalid value: {min}: must be greater than or equal to 1"
            ));
        }
        if max < min {
            causes.push(format!(
                "spec.maxReplicas: Invalid value: {max}: must be greater than or equal to `minReplicas`"
            ));
        }
    }
    if kind.resource == "events" {
        for (field, pointer) in [
            ("eventTime", "/eventTime"),
            ("reportingController", "/reportingController"),
            ("reportingInstance", "/reportingInstance"),
            ("action", "/action"),
            ("reason", "/reason"),
        ] {
            if obj
                .pointer(pointer)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(format!("{field}: Required value"));
            }
        }
        if !matches!(obj["type"].as_str(), Some("Normal" | "Warning")) {
            causes.push("type: Unsupported value: must be Normal or Warning".into());
        }
        if obj["note"].as_str().is_some_and(|n| n.len() > 1024) {
            causes.push("note: Too long: may not be longer than 1024".into());
        }
        if obj.pointer("/regarding/kind").is_none() {
            causes.push("regarding: Required value".into());
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

/// Takes one injected conflict: another writer changes the object just
/// before this write, so a write carrying the version it read meets 409.
fn interpose_writer(shared: &Shared, objects: &mut Objects, k: &(String, String, String)) {
    let take = shared
        .conflicts
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        )
        .is_ok();
    if take {
        if let Some(obj) = objects.get_mut(k) {
            obj["metadata"]["resourceVersion"] = json!(next_revision(shared));
        }
    }
}

fn patch(
    shared: &Shared,
    kind: &Kind,
    ns: &str,
    name: &str,
    content_type: Option<&str>,
    query: &BTreeMap<String, String>,
    body: &[u8],
) -> Response {
    let mut objects = lock(&shared.objects);
    let k = key(kind.resource, ns, name);
    interpose_writer(shared, &mut objects, &k);
    let Some(stored) = objects.get(&k).cloned() else {
        return not_found(kind, name);
    };
    let mut obj = stored.clone();
    if let Err(r) = apply_patch(&mut obj, content_type, query, body, kind) {
        return *r;
    }
    let sent_rv = obj.pointer("/metadata/resourceVersion").cloned();
    let stored_rv = stored.pointer("/metadata/resourceVersion").cloned();
    if sent_rv.is_some() && sent_rv != stored_rv {
        return conflict(kind, name);
    }
    // Identity is not patchable.
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "generation",
    ] {
        match stored["metadata"].get(field) {
            Some(v) => obj["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    obj["kind"] = json!(kind.kind);
    obj["apiVersion"] = json!(kind.api_version);
    if let Err(causes) = validate(kind, &obj) {
        return invalid(kind, name, &causes);
    }
    if obj == stored {
        // A no-op patch does not write (and keeps the resourceVersion).
        return (StatusCode::OK, Json(obj)).into_response();
    }
    write(shared, &mut objects, kind, &k, obj, &stored);
    let obj = objects.get(&k).cloned().unwrap_or(Value::Null);
    (StatusCode::OK, Json(obj)).into_response()
}

/// Stores a changed object: bumps resourceVersion (and generation when
/// the spec changed) and runs the controller simulation.
pub(super) fn write(
    shared: &Shared,
    objects: &mut Objects,
    kind: &Kind,
    k: &(String, String, String),
    mut obj: Value,
    before: &Value,
) {
    prune_empty_maps(&mut obj);
    obj["metadata"]["resourceVersion"] = json!(next_revision(shared));
    if obj.get("spec") != before.get("spec") {
        let generation = before
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        obj["metadata"]["generation"] = json!(generation + 1);
    }
    objects.insert(k.clone(), obj);
    match kind.resource {
        "deployments" => reconcile_deployment(shared, objects, &k.1, &k.2),
        "statefulsets" | "daemonsets" | "replicasets" => reconcile_simple(objects, k),
        _ => {}
    }
}

/// Go's `omitempty`: a `labels` or `annotations` map left empty (say, by
/// a patch deleting its last key) is not stored, so templates that differ
/// only by it are the same template.
fn prune_empty_maps(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, v| {
                !(matches!(k.as_str(), "labels" | "annotations")
                    && v.as_object().is_some_and(Map::is_empty))
            });
            m.values_mut().for_each(prune_empty_maps);
        }
        Value::Array(a) => a.iter_mut().for_each(prune_empty_maps),
        _ => {}
    }
}

fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// The `scale` subresource: only `spec.replicas` (and the
/// `resourceVersion` precondition) reach the object, as in the real API
/// server — labels or annotations in a Scale patch are dropped.
fn patch_scale(
    shared: &Shared,
    kind: &Kind,
    ns: &str,
    name: &str,
    content_type: Option<&str>,
    query: &BTreeMap<String, String>,
    body: &[u8],
) -> Response {
    let mut objects = lock(&shared.objects);
    let k = key(kind.resource, ns, name);
    interpose_writer(shared, &mut objects, &k);
    let Some(stored) = objects.get(&k).cloned() else {
        return not_found(kind, name);
    };
    let mut scale = scale_of(&stored);
    if let Err(r) = apply_patch(&mut scale, content_type, query, body, kind) {
        return *r;
    }
    if scale.pointer("/metadata/resourceVersion") != stored.pointer("/metadata/resourceVersion") {
        return conflict(kind, name);
    }
    let Some(replicas) = scale.pointer("/spec/replicas").and_then(Value::as_i64) else {
        return invalid(kind, name, &["spec.replicas: Required value".into()]);
    };
    if replicas < 0 {
        return invalid(
            kind,
            name,
            &[format!(
                "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
            )],
        );
    }
    if stored.pointer("/spec/replicas").and_then(Value::as_i64) != Some(replicas) {
        let mut obj = stored.clone();
        obj["spec"]["replicas"] = json!(replicas);
        write(shared, &mut objects, kind, &k, obj, &stored);
    }
    let obj = objects.get(&k).cloned().unwrap_or(Value::Null);
    (StatusCode::OK, Json(scale_of(&obj))).into_response()
}

fn create(shared: &Shared, kind: &Kind, ns: &str, body: &[u8]) -> Response {
    let mut obj: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("invalid JSON body: {e}")),
    };
    if obj.get("kind").and_then(Value::as_str) != Some(kind.kind)
        || obj.get("apiVersion").and_then(Value::as_str) != Some(kind.api_version)
    {
        return bad_request(&format!("body is not a {} {}", kind.api_version, kind.kind));
    }
    if let Some(body_ns) = obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        if body_ns != ns {
            return bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            );
        }
    }
    if obj.pointer("/metadata/resourceVersion").is_some() {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "resourceVersion should not be set on objects to be created",
            json!({}),
        );
    }
    let rv = next_revision(shared);
    let name = match (
        obj.pointer("/metadata/name").and_then(Value::as_str),
        obj.pointer("/metadata/generateName")
            .and_then(Value::as_str),
    ) {
        (Some(n), _) => n.to_string(),
        (None, Some(prefix)) => format!("{prefix}{rv}"),
        (None, None) => {
            return invalid(
                kind,
                "",
                &["metadata.name: Required value: name or generateName is required".into()],
            )
        }
    };
    if let Err(causes) = validate(kind, &obj) {
        return invalid(kind, &name, &causes);
    }
    let mut objects = lock(&shared.objects);
    let k = key(kind.resource, ns, &name);
    if objects.contains_key(&k) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("{} already exists", qualified(kind, &name)),
            details(kind, &name),
        );
    }
    let meta = &mut obj["metadata"];
    meta["name"] = json!(name);
    if kind.namespaced {
        meta["namespace"] = json!(ns);
    }
    meta["resourceVersion"] = json!(rv);
    meta["uid"] = json!(format!("uid-{rv}"));
    meta["creationTimestamp"] = json!(now_seconds());
    objects.insert(k, obj.clone());
    (StatusCode::CREATED, Json(obj)).into_response()
}

fn evict(shared: &Shared, ns: &str, name: &str, body: &[u8]) -> Response {
    let eviction: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("invalid JSON body: {e}")),
    };
    // The API server defaults kind/apiVersion of an eviction body (kube-rs
    // sends none); present ones must be right.
    if eviction
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k != "Eviction")
    {
        return bad_request("body is not a policy/v1 Eviction");
    }
    if eviction
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_some_and(|n| n != name)
    {
        return bad_request("name in URL does not match name in Eviction object");
    }
    let pods = kind_by_resource("pods").expect("pods are served");
    let mut objects = lock(&shared.objects);
    let pod_key = key("pods", ns, name);
    let Some(pod) = objects.get(&pod_key).cloned() else {
        return not_found(&pods, name);
    };
    let labels = pod["metadata"]["labels"].clone();
    let budgets: Vec<(String, String, String)> = objects
        .iter()
        .filter(|((res, n, _), pdb)| {
            res == "poddisruptionbudgets"
                && n == ns
                && label_selector_matches(&pdb["spec"]["selector"], &labels)
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in &budgets {
        let pdb = &objects[k];
        if pdb
            .pointer("/status/disruptionsAllowed")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            <= 0
        {
            let desired = pdb
                .pointer("/status/desiredHealthy")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let current = pdb
                .pointer("/status/currentHealthy")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            return status(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
                json!({"causes": [{
                    "reason": "DisruptionBudget",
                    "message": format!(
                        "The disruption budget {} needs {desired} healthy pods and has {current} currently",
                        k.2
                    ),
                }]}),
            );
        }
    }
    for k in &budgets {
        if let Some(pdb) = objects.get_mut(k) {
            let allowed = pdb
                .pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
            pdb["metadata"]["resourceVersion"] = json!(next_revision(shared));
        }
    }
    objects.remove(&pod_key);
    (
        StatusCode::CREATED,
        Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})),
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// Controller simulation.

pub(super) const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    t
}

/// FNV-1a over the template: stable, short, like the real hash's role.
fn template_hash(template: &Value) -> String {
    let text = serde_json::to_string(&without_hash(template)).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", h & 0xff_ffff_ffff)
}

fn revision_of(obj: &Value) -> i64 {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn owned_by(obj: &Value, uid: &Value) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| &r["uid"] == uid))
}

fn set_if_changed(
    shared: &Shared,
    objects: &mut Objects,
    k: &(String, String, String),
    obj: Value,
) {
    if objects.get(k) != Some(&obj) {
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = json!(next_revision(shared));
        objects.insert(k.clone(), obj);
    }
}

/// The Deployment controller, instantly: the ReplicaSet for the current
/// template (new revision, or an old one reused with the next revision
/// number, as a rollback does), replicas moved to it, status updated.
fn reconcile_deployment(shared: &Shared, objects: &mut Objects, ns: &str, name: &str) {
    let dk = key("deployments", ns, name);
    let Some(mut dep) = objects.get(&dk).cloned() else {
        return;
    };
    let uid = dep["metadata"]["uid"].clone();
    let template = dep["spec"]["template"].clone();
    let replicas = dep
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let owned: Vec<(String, String, String)> = objects
        .iter()
        .filter(|((res, n, _), rs)| res == "replicasets" && n == ns && owned_by(rs, &uid))
        .map(|(k, _)| k.clone())
        .collect();
    let max_revision = owned
        .iter()
        .map(|k| revision_of(&objects[k]))
        .max()
        .unwrap_or(0);
    let wanted = without_hash(&template);
    let current = owned
        .iter()
        .find(|k| without_hash(&objects[*k]["spec"]["template"]) == wanted)
        .cloned();
    let hash = template_hash(&template);
    let (current_key, revision) = match current {
        Some(k) => {
            let rev = revision_of(&objects[&k]);
            (
                k,
                if rev == max_revision {
                    rev
                } else {
                    max_revision + 1
                },
            )
        }
        None => {
            let rs_name = format!("{name}-{hash}");
            let rv = next_revision(shared);
            let mut labels = dep
                .pointer("/spec/selector/matchLabels")
                .cloned()
                .unwrap_or(json!({}));
            labels[HASH_LABEL] = json!(hash);
            let mut rs_template = template.clone();
            rs_template["metadata"]["labels"][HASH_LABEL] = json!(hash);
            let rs = json!({
                "kind": "ReplicaSet",
                "apiVersion": "apps/v1",
                "metadata": {
                    "name": rs_name,
                    "namespace": ns,
                    "uid": format!("uid-{rv}"),
                    "resourceVersion": rv,
                    "generation": 1,
                    "creationTimestamp": now_seconds(),
                    "labels": labels,
                    "annotations": {REVISION: (max_revision + 1).to_string()},
                    "ownerReferences": [{
                        "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                        "uid": uid, "controller": true, "blockOwnerDeletion": true,
                    }],
                },
                "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": rs_template},
                "status": {"replicas": 0, "observedGeneration": 1},
            });
            let k = key("replicasets", ns, &rs_name);
            objects.insert(k.clone(), rs);
            (k, max_revision + 1)
        }
    };
    for k in owned.iter().chain(std::iter::once(&current_key)) {
        let Some(mut rs) = objects.get(k).cloned() else {
            continue;
        };
        let n = if *k == current_key { replicas } else { 0 };
        if *k == current_key {
            rs["metadata"]["annotations"][REVISION] = json!(revision.to_string());
        }
        rs["spec"]["replicas"] = json!(n);
        rs["status"] = ready_status(n, rs.pointer("/metadata/generation").cloned());
        rs["status"]["fullyLabeledReplicas"] = json!(n);
        set_if_changed(shared, objects, k, rs);
    }
    dep["metadata"]["annotations"][REVISION] = json!(revision.to_string());
    dep["status"] = ready_status(replicas, dep.pointer("/metadata/generation").cloned());
    dep["status"]["updatedReplicas"] = json!(replicas);
    // Same write as the change that caused it (no extra resourceVersion).
    objects.insert(dk, dep);
}

fn ready_status(n: i64, generation: Option<Value>) -> Value {
    let mut status = Map::new();
    status.insert("replicas".into(), json!(n));
    if n > 0 {
        status.insert("readyReplicas".into(), json!(n));
        status.insert("availableReplicas".into(), json!(n));
    }
    if let Some(g) = generation {
        status.insert("observedGeneration".into(), g);
    }
    Value::Object(status)
}

/// StatefulSets and ReplicaSets: every replica ready at once; DaemonSets:
/// the seeded node count stays, the generation is observed.
fn reconcile_simple(objects: &mut Objects, k: &(String, String, String)) {
    let Some(obj) = objects.get_mut(k) else {
        return;
    };
    let generation = obj.pointer("/metadata/generation").cloned();
    if k.0 == "daemonsets" {
        if let Some(g) = generation {
            obj["status"]["observedGeneration"] = g;
        }
        return;
    }
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let mut status = ready_status(replicas, generation);
    if k.0 == "statefulsets" {
        let revision = format!("{}-{}", k.2, template_hash(&obj["spec"]["template"]));
        status["currentReplicas"] = json!(replicas);
        status["updatedReplicas"] = json!(replicas);
        status["currentRevision"] = json!(revision);
        status["updateRevision"] = json!(revision);
    }
    obj["status"] = status;
}
