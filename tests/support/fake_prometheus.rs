//! An in-process server speaking Prometheus's HTTP query API wire format.
//!
//! Serves `GET`/`POST /api/v1/query_range` and `/api/v1/query` (parameters
//! in the query string or a form body, as the real server accepts them),
//! `/-/ready` and `/-/healthy`. Data comes from a generator closure asked,
//! for each evaluation timestamp, which series have which value; the
//! server evaluates it at `start, start+step, …, end` like Prometheus does
//! and answers with the real JSON shapes:
//!
//! ```json
//! {"status":"success","data":{"resultType":"matrix",
//!   "result":[{"metric":{"service":"cart"},"values":[[1700000000,"0.5"]]}]}}
//! ```
//!
//! It enforces the same request checks that matter to clients (required
//! parameters, `end >= start`, `step > 0`, at most 11,000 points per
//! series) with Prometheus's 400 `bad_data` error. [`Mode`] switches it
//! into the failures a client must survive.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the server behaves; switch with [`FakePrometheus::set_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers queries from the generator.
    Healthy,
    /// Answers every query with 503 and Prometheus's JSON error body
    /// (`errorType: unavailable`), like a server that is shutting down.
    Down,
    /// Closes its listening socket: connections are refused until the mode
    /// changes (the server then listens on the same port again).
    Refuse,
    /// Sleeps this long before answering normally — set it longer than the
    /// client's timeout to provoke timeouts.
    Slow(Duration),
    /// Answers 422 `{"status":"error","errorType":"execution",…}`, as
    /// Prometheus does when evaluation fails.
    Error,
    /// Answers 400 `{"status":"error","errorType":"bad_data",…}`, as
    /// Prometheus does for a query that does not parse.
    BadData,
}

/// One series' value at one evaluation timestamp, from the generator.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The series' labels (including `__name__` if the query would keep it).
    pub labels: BTreeMap<String, String>,
    /// The value; NaN and ±Inf are sent as `"NaN"`, `"+Inf"`, `"-Inf"`.
    pub value: f64,
}

impl Point {
    /// A point for the series with `labels`.
    pub fn new(labels: &[(&str, &str)], value: f64) -> Self {
        Self {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }
}

/// Given the PromQL query and an evaluation time (ms since the epoch),
/// returns the series that exist at that time and their values.
pub type Generator = dyn Fn(&str, i64) -> Vec<Point> + Send + Sync;

/// A query the server received (in any mode), with its parsed parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `/api/v1/query_range` or `/api/v1/query`.
    pub path: String,
    /// `GET` or `POST`.
    pub method: String,
    /// The `query` parameter, exactly as received.
    pub query: String,
    /// All parameters as received (`start`, `end`, `step`, `timeout`, …).
    pub params: BTreeMap<String, String>,
}

impl Request {
    /// A parameter parsed as a float (`start`, `end`, `step`, `time`).
    pub fn number(&self, name: &str) -> Option<f64> {
        self.params.get(name)?.parse().ok()
    }
}

struct Shared {
    generator: Box<Generator>,
    mode: watch::Receiver<Mode>,
    requests: Mutex<Vec<Request>>,
    queries: AtomicUsize,
}

/// The running fake server; stops when dropped.
pub struct FakePrometheus {
    addr: SocketAddr,
    shared: Arc<Shared>,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl FakePrometheus {
    /// Starts on 127.0.0.1 (a free port) in [`Mode::Healthy`].
    pub async fn start(
        generator: impl Fn(&str, i64) -> Vec<Point> + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fake Prometheus");
        let addr = listener.local_addr().expect("local address");
        let (mode_tx, mode_rx) = watch::channel(Mode::Healthy);
        let shared = Arc::new(Shared {
            generator: Box::new(generator),
            mode: mode_rx.clone(),
            requests: Mutex::new(Vec::new()),
            queries: AtomicUsize::new(0),
        });
        let task = tokio::spawn(serve(listener, addr, shared.clone(), mode_rx));
        Self {
            addr,
            shared,
            mode: mode_tx,
            task,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the behaviour; takes effect for the next request (for
    /// [`Mode::Refuse`], for the next connection: open keep-alive
    /// connections are closed once idle).
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current behaviour.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Queries (`/api/v1/query_range` and `/api/v1/query`) received so far, in any mode.
    pub fn query_count(&self) -> usize {
        self.shared.queries.load(Ordering::SeqCst)
    }

    /// The `query` parameter of the last query received.
    pub fn last_query(&self) -> Option<String> {
        self.requests().last().map(|r| r.query.clone())
    }

    /// Every query received so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }
}

impl Drop for FakePrometheus {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves until dropped; closes the listener while the mode is `Refuse`
/// and listens on the same address again afterwards.
async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    mut mode: watch::Receiver<Mode>,
) {
    let mut listener = Some(listener);
    let mut servers = tokio::task::JoinSet::new();
    loop {
        if mode.wait_for(|m| *m != Mode::Refuse).await.is_err() {
            return;
        }
        let current = match listener.take() {
            Some(l) => l,
            None => match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(_) => {
                    // The old listener may still be closing; try again shortly.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let mut stop = mode.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|m| *m == Mode::Refuse).await;
        };
        let app = router(shared.clone());
        servers.spawn(async move {
            let _ = axum::serve(current, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        if mode.wait_for(|m| *m == Mode::Refuse).await.is_err() {
            return;
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/query", get(instant_query).post(instant_query))
        .route("/-/ready", get(ready))
        .route("/-/healthy", get(ready))
        .with_state(shared)
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let mode = *shared.mode.borrow();
    match mode {
        Mode::Healthy | Mode::Slow(_) | Mode::Error | Mode::BadData => {
            (StatusCode::OK, "Prometheus Server is Ready.\n").into_response()
        }
        Mode::Down | Mode::Refuse => {
            (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
        }
    }
}

/// Prometheus's error body.
fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"status": "error", "errorType": error_type, "error": message})),
    )
        .into_response()
}

fn bad_data(message: &str) -> Response {
    api_error(StatusCode::BAD_REQUEST, "bad_data", message)
}

/// Records the request and applies the failure modes. `Ok(params)` when
/// the request should be answered with data.
async fn admit(
    shared: &Shared,
    path: &str,
    method: &Method,
    uri: &Uri,
    body: &Bytes,
) -> Result<BTreeMap<String, String>, Response> {
    let mut params = parse_form(uri.query().unwrap_or_default().as_bytes());
    if *method == Method::POST {
        params.extend(parse_form(body));
    }
    shared.queries.fetch_add(1, Ordering::SeqCst);
    lock(&shared.requests).push(Request {
        path: path.into(),
        method: method.to_string(),
        query: params.get("query").cloned().unwrap_or_default(),
        params: params.clone(),
    });
    let mode = *shared.mode.borrow();
    match mode {
        Mode::Healthy => Ok(params),
        Mode::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Ok(params)
        }
        // A request on a keep-alive connection opened before the switch.
        Mode::Down | Mode::Refuse => Err(api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "fake Prometheus is down",
        )),
        Mode::Error => Err(api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "execution",
            "query processing would load too many samples into memory in query execution",
        )),
        Mode::BadData => Err(bad_data(
            "invalid parameter \"query\": 1:1: parse error: unexpected character: '~'",
        )),
    }
}

async fn query_range(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let params = match admit(&shared, "/api/v1/query_range", &method, &uri, &body).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let Some(query) = params.get("query") else {
        return bad_data("invalid parameter \"query\": unknown position: parse error: no expression found in input");
    };
    let (Some(start), Some(end)) = (time_param(&params, "start"), time_param(&params, "end"))
    else {
        return bad_data(
            "invalid parameter \"start\" or \"end\": cannot parse to a valid timestamp",
        );
    };
    if end < start {
        return bad_data("end timestamp must not be before start time");
    }
    let Some(step) = params
        .get("step")
        .and_then(|s| s.parse::<f64>().ok())
        .map(|s| (s * 1000.0).round() as i64)
        .filter(|s| *s > 0)
    else {
        return bad_data("zero or negative query resolution step widths are not accepted. Try a positive integer");
    };
    if (end - start) / step > 11_000 {
        return bad_data("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)");
    }
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<Value>> = BTreeMap::new();
    let mut t = start;
    while t <= end {
        for point in (shared.generator)(query, t) {
            series
                .entry(point.labels)
                .or_default()
                .push(json!([seconds(t), format_value(point.value)]));
        }
        t += step;
    }
    let result: Vec<Value> = series
        .into_iter()
        .map(|(labels, values)| json!({"metric": labels, "values": values}))
        .collect();
    Json(json!({"status": "success", "data": {"resultType": "matrix", "result": result}}))
        .into_response()
}

async fn instant_query(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let params = match admit(&shared, "/api/v1/query", &method, &uri, &body).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let Some(query) = params.get("query") else {
        return bad_data("invalid parameter \"query\": unknown position: parse error: no expression found in input");
    };
    let t = match params.get("time") {
        None => now_ms(),
        Some(_) => match time_param(&params, "time") {
            Some(t) => t,
            None => {
                return bad_data("invalid parameter \"time\": cannot parse to a valid timestamp")
            }
        },
    };
    let result: Vec<Value> = (shared.generator)(query, t)
        .into_iter()
        .map(|p| json!({"metric": p.labels, "value": [seconds(t), format_value(p.value)]}))
        .collect();
    Json(json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
        .into_response()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A Unix-seconds parameter (float, as clients send it) in ms.
fn time_param(params: &BTreeMap<String, String>, name: &str) -> Option<i64> {
    let seconds: f64 = params.get(name)?.parse().ok()?;
    seconds
        .is_finite()
        .then(|| (seconds * 1000.0).round() as i64)
}

/// A timestamp as Prometheus encodes it: a JSON number of seconds.
fn seconds(t_ms: i64) -> Value {
    if t_ms % 1000 == 0 {
        json!(t_ms / 1000)
    } else {
        json!(t_ms as f64 / 1000.0)
    }
}

/// A sample value as Prometheus encodes it: a string, `NaN`/`+Inf`/`-Inf` for non-finite.
pub fn format_value(v: f64) -> String {
    super::openmetrics::format_value(v)
}

/// Decodes `application/x-www-form-urlencoded` (also used for query strings).
fn parse_form(raw: &[u8]) -> BTreeMap<String, String> {
    raw.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut kv = pair.splitn(2, |b| *b == b'=');
            let key = decode(kv.next().unwrap_or_default());
            let value = decode(kv.next().unwrap_or_default());
            (key, value)
        })
        .collect()
}

fn decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() => {
                let hex = std::str::from_utf8(&raw[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        let p = parse_form(b"query=rate%28x%7Ba%3D%22b%22%7D%5B5m%5D%29+%2B+1&step=30&x=%zz");
        assert_eq!(p["query"], r#"rate(x{a="b"}[5m]) + 1"#);
        assert_eq!(p["step"], "30");
        assert_eq!(p["x"], "%zz");
    }
}
