//! An in-process server speaking Elasticsearch's wire format for what the
//! log source uses: opening a point in time, searching it with
//! `search_after`, closing it, and the error bodies a client must handle.
//!
//! - `POST /{index}/_pit?keep_alive=1m` → `{"id": "…"}` (a snapshot of the
//!   documents at that moment, like a real PIT).
//! - `POST /_search` with `pit`, `size`, `sort`, `query.bool.filter[].range`
//!   on one field (`gte`/`lt`, epoch ms) and `search_after` → hits sorted by
//!   `[timestamp, _shard_doc]`, each with its `sort` array, and `pit_id`.
//!   An unknown PIT id → 404 `search_context_missing_exception`.
//! - `DELETE /_pit` with `{"id": …}` → `{"succeeded": true, "num_freed": 1}`.
//! - With a required `Authorization` value, anything else → 401
//!   `security_exception` with a `WWW-Authenticate` header.
//! - [`FakeElastic::fail_next`] queues 429/503/401 answers with the real
//!   error body `{"error":{"root_cause":[…],"type":…,"reason":…},"status":…}`,
//!   or a search answer with partial shard failures.
//!
//! Every request is recorded (method, path, query, `Authorization`, body).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A scripted failure for the next request(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 `es_rejected_execution_exception` (search queue full).
    TooManyRequests,
    /// 503 `cluster_block_exception` / no master.
    Unavailable,
    /// 401 `security_exception`.
    Unauthorized,
    /// A 200 search answer where one of two shards failed
    /// (`_shards.failed: 1` with a `failures` entry) and no hits: what a
    /// search returns while a shard is relocating. Only for `_search`.
    PartialShards,
}

/// One document in the fake index.
#[derive(Debug, Clone)]
pub struct Doc {
    /// `_id`.
    pub id: String,
    /// Timestamp in epoch ms (the sort value).
    pub timestamp_ms: i64,
    /// `_source`.
    pub source: Value,
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: Method,
    /// Path, e.g. `/logs-*/_pit`.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body (Null when empty or not JSON).
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    /// Documents with their `_shard_doc` (insertion order).
    docs: Vec<Doc>,
    /// PIT id → snapshot of document count at opening.
    pits: HashMap<String, usize>,
    next_pit: u64,
    failures: VecDeque<Failure>,
    shard_failures: usize,
    required_auth: Option<String>,
    requests: Vec<Recorded>,
}

/// The fake server; stops when dropped.
pub struct FakeElastic {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: JoinHandle<()>,
}

impl FakeElastic {
    /// Starts on a free loopback port with no documents.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Indexes documents (visible to PITs opened afterwards).
    pub fn add_docs(&self, docs: impl IntoIterator<Item = Doc>) {
        self.lock().docs.extend(docs);
    }

    /// Requires this exact `Authorization` header on every request.
    pub fn require_auth(&self, value: &str) {
        self.lock().required_auth = Some(value.to_owned());
    }

    /// Answers the next `n` requests with `failure`.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        let mut st = self.lock();
        if failure == Failure::PartialShards {
            st.shard_failures += n;
        } else {
            st.failures.extend(std::iter::repeat_n(failure, n));
        }
    }

    /// Forgets every open PIT, as when `keep_alive` ran out.
    pub fn expire_pits(&self) {
        self.lock().pits.clear();
    }

    /// PITs currently open.
    pub fn open_pits(&self) -> usize {
        self.lock().pits.len()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Bodies of the `_search` requests so far.
    pub fn searches(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/_search")
            .map(|r| r.body)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FakeElastic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, kind: &str, reason: &str) -> Response {
    let body = json!({
        "error": {
            "root_cause": [{ "type": kind, "reason": reason }],
            "type": kind,
            "reason": reason,
        },
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

fn failure_response(f: Failure) -> Response {
    match f {
        Failure::TooManyRequests => error(
            StatusCode::TOO_MANY_REQUESTS,
            "es_rejected_execution_exception",
            "rejected execution of TimedRunnable on EsThreadPoolExecutor[name = node-1/search, queue capacity = 1000]",
        ),
        Failure::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_block_exception",
            "blocked by: [SERVICE_UNAVAILABLE/2/no master];",
        ),
        Failure::Unauthorized | Failure::PartialShards => unauthorized(),
    }
}

fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "security_exception",
        "missing authentication credentials for REST request [/_search]",
    );
    r.headers_mut().insert(
        "www-authenticate",
        axum::http::HeaderValue::from_static("Basic realm=\"security\", charset=\"UTF-8\""),
    );
    r
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = inner.lock().unwrap_or_else(|e| e.into_inner());
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_owned();
    st.requests.push(Recorded {
        method: method.clone(),
        path: path.clone(),
        query: uri.query().unwrap_or("").to_owned(),
        authorization: authorization.clone(),
        body: body.clone(),
    });
    if let Some(f) = st.failures.pop_front() {
        return failure_response(f);
    }
    if st.shard_failures > 0 && path == "/_search" {
        st.shard_failures -= 1;
        return Json(json!({
            "took": 3,
            "timed_out": false,
            "_shards": {
                "total": 2, "successful": 1, "skipped": 0, "failed": 1,
                "failures": [{
                    "shard": 1,
                    "index": "logs-2026.11.25",
                    "node": "n1",
                    "reason": { "type": "node_not_connected_exception", "reason": "[n2] Node not connected" }
                }]
            },
            "hits": { "max_score": null, "hits": [] },
        }))
        .into_response();
    }
    if let Some(required) = &st.required_auth {
        if authorization.as_deref() != Some(required.as_str()) {
            return unauthorized();
        }
    }
    match (method, path.as_str()) {
        (Method::POST, p) if p.ends_with("/_pit") => {
            if !uri.query().unwrap_or("").contains("keep_alive=") {
                return error(
                    StatusCode::BAD_REQUEST,
                    "action_request_validation_exception",
                    "Validation Failed: 1: [keep_alive] is not specified;",
                );
            }
            st.next_pit += 1;
            let id = format!("pit-{}", st.next_pit);
            let n = st.docs.len();
            st.pits.insert(id.clone(), n);
            Json(json!({
                "id": id,
                "_shards": { "total": 1, "successful": 1, "skipped": 0, "failed": 0 }
            }))
            .into_response()
        }
        (Method::DELETE, "/_pit") => {
            let freed = body
                .get("id")
                .and_then(Value::as_str)
                .and_then(|id| st.pits.remove(id))
                .is_some();
            Json(json!({ "succeeded": true, "num_freed": usize::from(freed) })).into_response()
        }
        (Method::POST | Method::GET, "/_search") => search(&st, &body),
        (m, p) => error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            &format!("request [{p}] contains unrecognized method [{m}] for the fake"),
        ),
    }
}

fn search(st: &Inner, body: &Value) -> Response {
    let Some(pit) = body.pointer("/pit/id").and_then(Value::as_str) else {
        return error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            "the fake only serves searches over a point in time",
        );
    };
    let Some(&snapshot) = st.pits.get(pit) else {
        return error(
            StatusCode::NOT_FOUND,
            "search_context_missing_exception",
            &format!("No search context found for id [{pit}]"),
        );
    };
    let size = body.get("size").and_then(Value::as_u64).unwrap_or(10) as usize;
    // The range filter: one field with gte/lt in epoch ms.
    let range = body
        .pointer("/query/bool/filter")
        .and_then(Value::as_array)
        .and_then(|f| f.iter().find_map(|c| c.get("range")))
        .and_then(Value::as_object)
        .and_then(|r| r.values().next().cloned());
    let gte = range
        .as_ref()
        .and_then(|r| r.get("gte"))
        .and_then(Value::as_i64);
    let lt = range
        .as_ref()
        .and_then(|r| r.get("lt"))
        .and_then(Value::as_i64);
    let after: Option<(i64, u64)> = body
        .get("search_after")
        .and_then(|a| Some((a.get(0)?.as_i64()?, a.get(1)?.as_u64()?)));
    let mut hits: Vec<(i64, u64, &Doc)> = st.docs[..snapshot]
        .iter()
        .enumerate()
        .map(|(i, d)| (d.timestamp_ms, i as u64, d))
        .filter(|(ts, _, _)| gte.is_none_or(|g| *ts >= g) && lt.is_none_or(|l| *ts < l))
        .filter(|(ts, sd, _)| after.is_none_or(|a| (*ts, *sd) > a))
        .collect();
    hits.sort_by_key(|(ts, sd, _)| (*ts, *sd));
    hits.truncate(size);
    let hits: Vec<Value> = hits
        .into_iter()
        .map(|(ts, sd, d)| {
            json!({
                "_index": "logs-2026.11.25",
                "_id": d.id,
                "_score": null,
                "_source": d.source,
                "sort": [ts, sd],
            })
        })
        .collect();
    Json(json!({
        "pit_id": pit,
        "took": 1,
        "timed_out": false,
        "_shards": { "total": 1, "successful": 1, "skipped": 0, "failed": 0 },
        "hits": { "max_score": null, "hits": hits },
    }))
    .into_response()
}
