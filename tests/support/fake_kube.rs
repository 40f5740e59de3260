//! An in-process server speaking the Kubernetes API wire format, driven
//! through the real kube client: `coordination.k8s.io/v1` Leases (leader
//! election) and everything remediation and diagnosis use (see
//! [`objects`] and [`seed`]).
//!
//! Leases, as the real API server does:
//!
//! - `GET /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}`:
//!   200 with the object, or 404 with a `Status` body
//!   (`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,…}`);
//! - `POST …/namespaces/{ns}/leases`: 201 with the stored object
//!   (`resourceVersion`, `uid`, `creationTimestamp` set), or 409
//!   `AlreadyExists`;
//! - `PUT …/leases/{name}`: optimistic concurrency — a body whose
//!   `metadata.resourceVersion` is not the stored one gets 409 `Conflict`
//!   ("the object has been modified"); a successful write bumps the
//!   version (one counter for the whole server, like etcd's revision);
//! - bodies are parsed as `k8s_openapi` Leases, so a wrongly typed field is
//!   a 400, and `kind`/`apiVersion`/name mismatches are refused.
//!
//! Workloads and the rest ([`objects`]): Deployments, StatefulSets and
//! DaemonSets (get, list, patch with `application/merge-patch+json`,
//! `application/strategic-merge-patch+json` or
//! `application/apply-patch+yaml`; the `scale` subresource of Deployments
//! and StatefulSets), ReplicaSets, Pods (and `pods/eviction`, answered 429
//! when a PodDisruptionBudget has no disruption left), HPAs
//! (`autoscaling/v2`), PodDisruptionBudgets, Nodes, and
//! `events.k8s.io/v1` Events (create). Every write bumps the
//! `resourceVersion`; a patch carrying a stale one gets 409 `Conflict`. A
//! small Deployment controller runs inside each write (new template → new
//! ReplicaSet revision; replicas → ready at once).
//!
//! Anything else is recorded and answered 404 `NotFound`.
//!
//! It **records every call** as `(verb, api group, resource, namespace,
//! name)` in RBAC terms (`get`, `list`, `watch`, `create`, `update`,
//! `patch`, `delete`), per server and in a process-wide log
//! ([`all_recorded_calls`]), so a test can compare what the code really
//! called with what deploy/'s RBAC rules allow.
//!
//! Failure modes: [`FakeKube::set_down`] answers 503 `ServiceUnavailable`
//! (an API server that is unreachable behind its load balancer);
//! [`FakeKube::interpose_before_next_write`] lets another "replica" write
//! the Lease just before the next create/replace is processed, which is
//! the race optimistic concurrency exists for;
//! [`FakeKube::conflict_on_next_writes`] does the same for patches of
//! other objects (another writer bumps the object first, so the patch's
//! `resourceVersion` is stale: a genuine 409); [`FakeKube::forbid`] makes
//! RBAC deny one verb on one resource (403 with the API server's message).

mod objects;
mod patch;
mod seed;

// Not every test binary seeds pods.
#[allow(unused_imports)]
pub use seed::{time_ago, PodState};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One API call in RBAC terms.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiCall {
    /// RBAC verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// API group; `""` for the core group (`/api/v1`).
    pub group: String,
    /// Resource (plural), with `/subresource` when there is one.
    pub resource: String,
    /// Namespace, or `None` for a cluster-scoped call.
    pub namespace: Option<String>,
    /// Object name from the path (`None` for create and collections).
    pub name: Option<String>,
}

fn global_log() -> &'static Mutex<Vec<ApiCall>> {
    static LOG: OnceLock<Mutex<Vec<ApiCall>>> = OnceLock::new();
    LOG.get_or_init(|| Mutex::new(Vec::new()))
}

/// Every call recorded by every fake API server in this test process.
pub fn all_recorded_calls() -> Vec<ApiCall> {
    lock(global_log()).clone()
}

struct Shared {
    /// Stored Leases by (namespace, name), as JSON objects.
    leases: Mutex<BTreeMap<(String, String), Value>>,
    revision: AtomicU64,
    calls: Mutex<Vec<ApiCall>>,
    down: AtomicBool,
    interposer: Mutex<Option<String>>,
    /// Every other object, see [`objects`].
    objects: Mutex<objects::Objects>,
    /// (verb, resource) pairs RBAC denies.
    forbidden: Mutex<BTreeSet<(String, String)>>,
    /// Writes still to be preceded by another writer's change.
    conflicts: AtomicUsize,
}

/// The running fake API server; stops when dropped.
pub struct FakeKube {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeKube {
    /// Starts on 127.0.0.1 (a free port), plain http, no Leases.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fake Kubernetes API");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            leases: Mutex::new(BTreeMap::new()),
            revision: AtomicU64::new(1000),
            calls: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
            interposer: Mutex::new(None),
            objects: Mutex::new(BTreeMap::new()),
            forbidden: Mutex::new(BTreeSet::new()),
            conflicts: AtomicUsize::new(0),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call received so far, oldest first.
    pub fn calls(&self) -> Vec<ApiCall> {
        lock(&self.shared.calls).clone()
    }

    /// `true`: answer everything with 503 `ServiceUnavailable`.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// The stored Lease, if any.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.shared.leases)
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The stored Lease's `spec.holderIdentity` (`None` when absent or empty).
    pub fn holder(&self, namespace: &str, name: &str) -> Option<String> {
        self.lease(namespace, name)?
            .pointer("/spec/holderIdentity")?
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_string)
    }

    /// Stores a Lease held by `holder`, renewed now, as another replica
    /// would have written it (bumps the resource version).
    pub fn put_lease(&self, namespace: &str, name: &str, holder: &str, duration_secs: i32) {
        put_lease(&self.shared, namespace, name, holder, duration_secs);
    }

    /// Just before the next create or replace is processed, a replica
    /// named `holder` writes the Lease first (so the request then meets
    /// 409 AlreadyExists or Conflict, exactly as in a real race).
    pub fn interpose_before_next_write(&self, holder: &str) {
        *lock(&self.shared.interposer) = Some(holder.to_string());
    }

    /// RBAC denies `verb` (`get`, `list`, `patch`, `create`, …) on
    /// `resource` (plural, with `/subresource`, e.g. `deployments/scale`,
    /// `pods/eviction`): such calls are still recorded, then answered 403
    /// with the API server's `Forbidden` Status.
    pub fn forbid(&self, verb: &str, resource: &str) {
        lock(&self.shared.forbidden).insert((verb.to_string(), resource.to_string()));
    }

    /// The next `n` patches of non-Lease objects (`usize::MAX`: all of
    /// them) each meet another writer that changed the object just before
    /// (its `resourceVersion` moves), so a patch carrying the version it
    /// read gets 409 `Conflict`.
    pub fn conflict_on_next_writes(&self, n: usize) {
        self.shared.conflicts.store(n, Ordering::SeqCst);
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Time in the API's MicroTime format, e.g. `2026-11-02T10:00:00.123456Z`.
fn micro_time_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

fn next_revision(shared: &Shared) -> String {
    (shared.revision.fetch_add(1, Ordering::SeqCst) + 1).to_string()
}

fn put_lease(shared: &Shared, namespace: &str, name: &str, holder: &str, duration_secs: i32) {
    let now = micro_time_now();
    let rv = next_revision(shared);
    let mut leases = lock(&shared.leases);
    let key = (namespace.to_string(), name.to_string());
    let transitions = leases
        .get(&key)
        .and_then(|l| l.pointer("/spec/leaseTransitions")?.as_i64())
        .map_or(0, |t| t + 1);
    leases.insert(
        key,
        json!({
            "kind": "Lease",
            "apiVersion": "coordination.k8s.io/v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": format!("uid-{rv}"),
                "resourceVersion": rv,
                "creationTimestamp": now[..19].to_string() + "Z",
            },
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": duration_secs,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": transitions,
            }
        }),
    );
}

/// The API server's `Status` error body.
fn status(code: StatusCode, reason: &str, message: &str, details: Value) -> Response {
    (
        code,
        Json(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code.as_u16(),
        })),
    )
        .into_response()
}

fn lease_details(name: &str) -> Value {
    json!({"name": name, "group": "coordination.k8s.io", "kind": "leases"})
}

/// Parses an API path into (group, version, namespace, resource, name).
fn parse_path(path: &str) -> Option<(String, Option<String>, String, Option<String>)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    match rest {
        [resource] => Some((group, namespace, resource.to_string(), None)),
        [resource, name] => Some((
            group,
            namespace,
            resource.to_string(),
            Some(name.to_string()),
        )),
        [resource, name, sub] => Some((
            group,
            namespace,
            format!("{resource}/{sub}"),
            Some(name.to_string()),
        )),
        // `GET /api/v1/namespaces/{name}` (a namespace object itself).
        [] => namespace.map(|ns| (group, None, "namespaces".into(), Some(ns))),
        _ => None,
    }
}

fn verb(method: &Method, name: Option<&str>, query: Option<&str>) -> String {
    let watching = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    match (method.as_str(), name) {
        ("GET", _) if watching => "watch",
        ("GET", Some(_)) => "get",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        (other, _) => other,
    }
    .to_string()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((group, namespace, resource, name)) = parse_path(uri.path()) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "the server could not find the requested resource ({})",
                uri.path()
            ),
            json!({}),
        );
    };
    let call = ApiCall {
        verb: verb(&method, name.as_deref(), uri.query()),
        group,
        resource,
        namespace,
        name,
    };
    lock(&shared.calls).push(call.clone());
    lock(global_log()).push(call.clone());

    if shared.down.load(Ordering::SeqCst) {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            json!({}),
        );
    }
    if lock(&shared.forbidden).contains(&(call.verb.clone(), call.resource.clone())) {
        return objects::forbidden(&call);
    }
    if call.group != "coordination.k8s.io" || call.resource != "leases" {
        let query = Query::<BTreeMap<String, String>>::try_from_uri(&uri)
            .map(|q| q.0)
            .unwrap_or_default();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        return objects::handle(&shared, &call, content_type, &query, &body);
    }
    let ApiCall {
        verb,
        group: _,
        resource: _,
        namespace,
        name,
    } = call;
    let Some(namespace) = namespace else {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "only namespaced Lease calls are served by this test server",
            json!({}),
        );
    };
    if matches!(verb.as_str(), "create" | "update") {
        let interposer = lock(&shared.interposer).take();
        if let Some(holder) = interposer {
            let target = name.clone().or_else(|| {
                serde_json::from_slice::<Value>(&body)
                    .ok()?
                    .pointer("/metadata/name")?
                    .as_str()
                    .map(str::to_string)
            });
            if let Some(target) = target {
                put_lease(&shared, &namespace, &target, &holder, 15);
            }
        }
    }
    match (verb.as_str(), name) {
        ("get", Some(name)) => match lock(&shared.leases).get(&(namespace, name.clone())) {
            Some(lease) => (StatusCode::OK, Json(lease.clone())).into_response(),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("leases.coordination.k8s.io \"{name}\" not found"),
                lease_details(&name),
            ),
        },
        ("create", None) => create(&shared, &namespace, &body),
        ("update", Some(name)) => replace(&shared, &namespace, &name, &body),
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{verb} is not supported on leases by this test server"),
            json!({}),
        ),
    }
}

/// Parses and checks a Lease body as the API server would.
/// The error is a ready answer (boxed: a `Response` is large).
fn parse_lease(body: &[u8]) -> Result<Value, Box<Response>> {
    let bad = |message: String| {
        Box::new(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &message,
            json!({}),
        ))
    };
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
    if value.get("kind").and_then(Value::as_str) != Some("Lease")
        || value.get("apiVersion").and_then(Value::as_str) != Some("coordination.k8s.io/v1")
    {
        return Err(bad("body is not a coordination.k8s.io/v1 Lease".into()));
    }
    // Typed parse: a wrongly typed field (a string duration, a malformed
    // time) fails like it would in the API server's decoder.
    serde_json::from_value::<k8s_openapi::api::coordination::v1::Lease>(value.clone())
        .map_err(|e| bad(format!("cannot decode Lease: {e}")))?;
    if let Some(d) = value
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
    {
        if d <= 0 {
            return Err(Box::new(status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "spec.leaseDurationSeconds: Invalid value: must be greater than 0",
                json!({}),
            )));
        }
    }
    Ok(value)
}

fn create(shared: &Shared, namespace: &str, body: &[u8]) -> Response {
    let mut lease = match parse_lease(body) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let Some(name) = lease
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.name: Required value: name or generateName is required",
            json!({}),
        );
    };
    if lease.pointer("/metadata/resourceVersion").is_some() {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "resourceVersion should not be set on objects to be created",
            json!({}),
        );
    }
    let mut leases = lock(&shared.leases);
    let key = (namespace.to_string(), name.clone());
    if leases.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("leases.coordination.k8s.io \"{name}\" already exists"),
            lease_details(&name),
        );
    }
    let rv = next_revision(shared);
    let meta = &mut lease["metadata"];
    meta["namespace"] = json!(namespace);
    meta["resourceVersion"] = json!(rv);
    meta["uid"] = json!(format!("uid-{rv}"));
    meta["creationTimestamp"] = json!(micro_time_now()[..19].to_string() + "Z");
    leases.insert(key, lease.clone());
    (StatusCode::CREATED, Json(lease)).into_response()
}

fn replace(shared: &Shared, namespace: &str, name: &str, body: &[u8]) -> Response {
    let mut lease = match parse_lease(body) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    if lease.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the name of the object does not match the name on the URL",
            json!({}),
        );
    }
    let mut leases = lock(&shared.leases);
    let key = (namespace.to_string(), name.to_string());
    let Some(stored) = leases.get(&key) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("leases.coordination.k8s.io \"{name}\" not found"),
            lease_details(name),
        );
    };
    let stored_rv = stored.pointer("/metadata/resourceVersion").cloned();
    let sent_rv = lease.pointer("/metadata/resourceVersion").cloned();
    // Leases allow unconditional updates (no resourceVersion); a stale one
    // is a conflict.
    if sent_rv.is_some() && sent_rv != stored_rv {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": \
                 the object has been modified; please apply your changes to the latest \
                 version and try again"
            ),
            lease_details(name),
        );
    }
    let uid = stored.pointer("/metadata/uid").cloned();
    let created = stored.pointer("/metadata/creationTimestamp").cloned();
    let rv = next_revision(shared);
    let meta = &mut lease["metadata"];
    meta["namespace"] = json!(namespace);
    meta["resourceVersion"] = json!(rv);
    meta["uid"] = uid.unwrap_or(Value::Null);
    meta["creationTimestamp"] = created.unwrap_or(Value::Null);
    leases.insert(key, lease.clone());
    (StatusCode::OK, Json(lease)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_rbac_terms() {
        assert_eq!(
            parse_path("/apis/coordination.k8s.io/v1/namespaces/ops/leases/aiopsd"),
            Some((
                "coordination.k8s.io".into(),
                Some("ops".into()),
                "leases".into(),
                Some("aiopsd".into())
            ))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/ops/pods"),
            Some(("".into(), Some("ops".into()), "pods".into(), None))
        );
        assert_eq!(
            parse_path("/apis/apps/v1/namespaces/ops/deployments/web/scale"),
            Some((
                "apps".into(),
                Some("ops".into()),
                "deployments/scale".into(),
                Some("web".into())
            ))
        );
        assert_eq!(verb(&Method::GET, None, Some("watch=true")), "watch");
    }
}
