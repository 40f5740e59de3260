//! A webhook receiver for the webhook sink's tests: a real HTTP server
//! (axum, 127.0.0.1) that records every POST with its headers and raw
//! body, and answers 200 unless told otherwise: a script of statuses for
//! the next requests (an outage, a 429 with `Retry-After`), or a fixed
//! refusal for one event id (a receiver that rejects one payload).

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

/// The path the receiver listens on.
pub const PATH: &str = "/hooks/aiopsd";

/// One POST as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request headers (names lowercase).
    pub headers: HeaderMap,
    /// The raw body bytes (what a signature is computed over).
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Whether the receiver answered 2xx.
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A scripted answer: status, optional `Retry-After`, body.
type Answer = (u16, Option<String>, String);

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: VecDeque<Answer>,
    refuse: HashMap<String, Answer>,
}

/// The running receiver; stops when dropped.
pub struct WebhookReceiver {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts on a free loopback port.
    pub async fn start() -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind 127.0.0.1:0");
        Self::serve(listener)
    }

    /// Starts on `port` (a receiver coming back after an outage), retrying
    /// the bind for a few seconds in case the port is still held.
    pub async fn start_on(port: u16) -> WebhookReceiver {
        let mut last = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
                Ok(listener) => return Self::serve(listener),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot bind 127.0.0.1:{port}: {last:?}");
    }

    fn serve(listener: tokio::net::TcpListener) -> WebhookReceiver {
        let addr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route(PATH, post(receive))
            .with_state(Arc::clone(&inner));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver { addr, inner, task }
    }

    /// The URL to configure as `webhook.url`.
    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers the next requests (whatever they carry) with these
    /// statuses and optional `Retry-After` values, then 200 again.
    pub fn script(&self, answers: &[(u16, Option<&str>)]) {
        let mut inner = self.inner.lock().expect("receiver state");
        for (status, retry_after) in answers {
            inner.script.push_back((
                *status,
                retry_after.map(str::to_owned),
                format!("scripted {status}"),
            ));
        }
    }

    /// Always answers `status` with `body` to the event with this id.
    pub fn refuse(&self, event_id: &str, status: u16, body: &str) {
        self.inner
            .lock()
            .expect("receiver state")
            .refuse
            .insert(event_id.to_owned(), (status, None, body.to_owned()));
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("receiver state").received.clone()
    }

    /// Bodies of the accepted (2xx) requests, in arrival order.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(Received::accepted)
            .collect()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = inner.lock().expect("receiver state");
    let event_id = headers
        .get("x-aiopsd-event-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (status, retry_after, text) = match inner.script.pop_front() {
        Some(answer) => answer,
        None => inner
            .refuse
            .get(&event_id)
            .cloned()
            .unwrap_or((200, None, "ok".into())),
    };
    inner.received.push(Received {
        headers,
        body: body.to_vec(),
        status,
    });
    let code = StatusCode::from_u16(status).expect("a valid status in the test");
    let mut response = (code, text).into_response();
    if let Some(r) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", r.parse().expect("header value"));
    }
    response
}
