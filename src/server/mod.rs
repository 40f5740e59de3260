//! The HTTP server: incident API, Markdown reports, /metrics and probes.
//!
//! [`router`] builds the whole application from an [`AppState`] without
//! binding a socket, so tests drive it with `tower::ServiceExt::oneshot`;
//! [`serve`] runs it on a listener until the shutdown future completes.
//!
//! | Route | Auth | Answer |
//! |---|---|---|
//! | `GET /api/v1/incidents` | token | incident summaries, newest first, filtered and paged |
//! | `GET /api/v1/incidents/{id}` | token | one incident with all its evidence |
//! | `GET /api/v1/incidents/{id}/report.md` | token | the Markdown report |
//! | `GET /api/v1/actions?state=pending` | token | actions awaiting (or past) approval |
//! | `GET /api/v1/actions/{id}` | token | one action |
//! | `POST /api/v1/actions/{id}/approve` | token | approve: body `{"by", "reason"}`; 404 unknown, 409 decided/expired |
//! | `POST /api/v1/actions/{id}/deny` | token | deny: same body and answers |
//! | `POST /api/v1/alerts/alertmanager` | token or basic | Alertmanager webhook (payload v4); 200 once stored |
//! | `GET /api/v1/alerts?status=&suppressed=&limit=&before_id=` | token | stored alerts, each with its suppression |
//! | `GET /api/v1/suppressions` | token | every suppression with its reason |
//! | `GET`, `POST /api/v1/silences`; `DELETE /api/v1/silences/{id}` | token | silences (see [`noise`]) |
//! | `GET /metrics` | none | aiopsd's own metrics (OpenMetrics) |
//! | `GET /healthz` | none | `ok` while the process serves HTTP |
//! | `GET /readyz` | none | 200, or 503 with every reason it is not ready |
//! | `GET /`, `/ui/...` | session or token | the web UI (see [`crate::ui`]) |
//!
//! Errors are JSON `{"error": "..."}` (see [`ApiError`]).

mod actions;
mod alerts;
mod api;
pub(crate) mod auth;
mod capacity;
mod error;
mod noise;
mod probes;
mod remediation;
pub mod tls;
mod trends;

pub use error::ApiError;

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::routing::{delete, get, post};
use axum::{middleware, Router};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::{AlertmanagerConfig, Secret};
use crate::incident::{AlertBatch, Store, StoreError};
use crate::telemetry::{Health, Metrics};

/// What every handler may use; cloned per request, so everything in it is
/// a handle (the token is a short string).
#[derive(Clone)]
pub struct AppState {
    /// Where incidents are read from.
    pub store: Store,
    /// aiopsd's own metrics, served on /metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness state, served on /readyz.
    pub health: Arc<Health>,
    /// Bearer token required on `/api/*`; `None` leaves the API open (config
    /// validation allows that only on a loopback listener).
    pub api_token: Option<Secret>,
    /// Cluster name from config.
    pub cluster: String,
    /// The Alertmanager webhook's settings (basic auth, body limit).
    pub alertmanager: AlertmanagerConfig,
    /// Where the webhook hands stored alerts to the incident stage; `None`
    /// when nothing listens (tests): alerts then wait in the store.
    pub alert_tx: Option<tokio::sync::mpsc::Sender<AlertBatch>>,
    /// Silences from `noise.silences`, listed with the API ones by
    /// `GET /api/v1/silences` (the incident stage applies both).
    pub config_silences: Arc<[crate::incident::noise::Silence]>,
    /// Remediation settings (the config kill switch and its ConfigMap,
    /// shown by `GET /api/v1/remediation/kill-switch`).
    pub remediation: crate::remediate::config::RemediationConfig,
    /// The whole config, for endpoints that query on demand
    /// (`GET /api/v1/capacity/{service}` reads Prometheus); `None` in tests
    /// that need none.
    pub config: Option<Arc<crate::config::Config>>,
}

/// Builds the application: every route, the token check on `/api/*`, and
/// the trace and timeout layers.
///
/// A request that takes longer than `request_timeout` gets 503, as the
/// `server.request_timeout` docs promise.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    router_with_ui(state, crate::ui::UiSettings::default(), request_timeout)
}

/// [`router`] with the web UI's own settings (viewer token, policy view,
/// verdict and revert hooks); the UI (`/ui/`, see [`crate::ui`]) is
/// mounted either way.
pub fn router_with_ui(
    state: AppState,
    ui: crate::ui::UiSettings,
    request_timeout: Duration,
) -> Router {
    let api = Router::new()
        .route(api::INCIDENTS_PATH, get(api::list_incidents))
        .route(
            &format!("{}/{{id}}", api::INCIDENTS_PATH),
            get(api::get_incident),
        )
        .route(
            &format!("{}/{{id}}/report.md", api::INCIDENTS_PATH),
            get(api::get_report),
        )
        .route(actions::ACTIONS_PATH, get(actions::list_actions))
        .route(
            noise::SILENCES_PATH,
            get(noise::list_silences).post(noise::create_silence),
        )
        .route(
            &format!("{}/{{id}}", noise::SILENCES_PATH),
            delete(noise::delete_silence),
        )
        .route(noise::ALERTS_PATH, get(noise::list_alerts))
        .route(noise::SUPPRESSIONS_PATH, get(noise::list_suppressions))
        .merge(noise::verdict_routes())
        .route(
            &format!("{}/{{id}}", actions::ACTIONS_PATH),
            get(actions::get_action),
        )
        .route(
            &format!("{}/{{id}}/approve", actions::ACTIONS_PATH),
            post(actions::approve),
        )
        .route(
            &format!("{}/{{id}}/deny", actions::ACTIONS_PATH),
            post(actions::deny),
        )
        .route(
            &format!("{}/{{id}}/revert", actions::ACTIONS_PATH),
            post(remediation::revert),
        )
        .route(capacity::CAPACITY_PATH, get(capacity::get_capacity))
        .route(trends::TRENDS_PATH, get(trends::get_trends))
        .route(
            remediation::KILL_SWITCH_PATH,
            get(remediation::get_kill_switch).put(remediation::put_kill_switch),
        )
        // route_layer: the check runs only on matched routes, so an unknown
        // path is a plain 404 rather than a 401 that hints it exists.
        .route_layer(middleware::from_fn_with_state(
            state.api_token.clone(),
            auth::require_token,
        ));
    // The webhook has its own credentials check (the token or basic auth)
    // and body limit, both applied before the body is read.
    let credentials = auth::WebhookCredentials {
        token: state.api_token.clone(),
        basic: state
            .alertmanager
            .basic_auth
            .as_ref()
            .map(|b| (b.username.clone(), b.password.clone())),
    };
    let webhook = Router::new()
        .route(alerts::ALERTMANAGER_PATH, post(alerts::receive))
        .layer(DefaultBodyLimit::max(state.alertmanager.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(
            Arc::new(credentials),
            auth::require_webhook_credentials,
        ));
    Router::new()
        .merge(api)
        .merge(webhook)
        .route("/metrics", get(probes::metrics))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .merge(crate::ui::router(state.clone(), ui))
        .fallback(not_found)
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
        // Outermost, so timeouts are traced too. Failures (5xx) are not
        // logged here: ApiError logs internal errors once with their cause,
        // and a 503 from /readyz is an answer, not a failure of aiopsd.
        .layer(TraceLayer::new_for_http().on_failure(()))
}

/// JSON 404 for any path without a route.
async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

/// Runs a store call on the blocking pool: SQLite calls block, and a slow
/// disk must not stall the runtime's few worker threads.
async fn with_store<T, F>(store: &Store, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(ApiError::Task)?
        .map_err(ApiError::Store)
}

/// Parses an `{id}` path segment; `what` names it in the error, e.g.
/// "an incident id".
fn parse_id<T: FromStr>(raw: &str, what: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::InvalidParam {
        name: "id",
        reason: format!("{raw:?} is not {what} (a whole number)"),
    })
}

/// Serves `router` on `listener` until `shutdown` completes, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "Serving the HTTP API, /metrics and probes.");
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// [`serve`] over TLS (`server.tls`): handshakes are completed off the
/// accept path ([`tls::TlsListener`]) and the certificate is re-read when
/// its files change, until `shutdown` completes.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: tls::ServerTls,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "Serving the HTTP API, /metrics and probes over TLS.");
    }
    let _reload = tls.watch();
    let listener = tls::TlsListener::new(listener, tls.config())?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::body::Body;
    use axum::http::{header, HeaderMap, Request};
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::incident::{
        Incident, IncidentState, Peak, Severity, SignalEvidence, StoreError, TimelineEntry,
    };
    use crate::signal::{Sample, SeriesKey, TimestampMs};

    const TOKEN: &str = "test-token-0123456789";
    const T0: TimestampMs = 1_700_000_000_000; // 2023-11-14T22:13:20Z

    fn incident(service: &str, opened_at: TimestampMs, open: bool) -> Incident {
        let group: BTreeMap<String, String> = [("namespace", "shop"), ("service", service)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Incident {
            id: None,
            cluster: "test".into(),
            group: group.clone(),
            state: if open {
                IncidentState::Open
            } else {
                IncidentState::Resolved
            },
            severity: Severity::Warning,
            opened_at,
            last_anomaly_at: opened_at + 60_000,
            resolved_at: (!open).then_some(opened_at + 600_000),
            anomaly_count: 2,
            signals: vec![SignalEvidence {
                series: SeriesKey::new("error_ratio", group),
                first_at: opened_at,
                last_at: opened_at + 60_000,
                anomaly_count: 2,
                peak: Peak {
                    t: opened_at + 60_000,
                    value: 0.25,
                    expected: 0.01,
                    spread: 0.02,
                    score: 12.0,
                },
                samples: vec![
                    Sample {
                        t: opened_at - 60_000,
                        v: 0.01,
                    },
                    Sample {
                        t: opened_at,
                        v: 0.2,
                    },
                    Sample {
                        t: opened_at + 60_000,
                        v: 0.25,
                    },
                ],
                anomalous_at: vec![opened_at, opened_at + 60_000],
            }],
            alerts: Vec::new(),
            diagnosis: None,
            decisions: Vec::new(),
            logs: Vec::new(),
            prediction: None,
            timeline: vec![TimelineEntry {
                at: opened_at,
                kind: "opened".into(),
                message: format!("{service} error_ratio is anomalous."),
            }],
        }
    }

    struct Fixture {
        state: AppState,
        /// Ids of the seeded incidents, oldest first: cart (resolved),
        /// auth (open), cart (open).
        ids: Vec<i64>,
    }

    fn fixture(token: Option<&str>) -> Fixture {
        let store = Store::open_in_memory().expect("store");
        let ids = [
            incident("cart", T0, false),
            incident("auth", T0 + 3_600_000, true),
            incident("cart", T0 + 7_200_000, true),
        ]
        .iter()
        .map(|i| store.upsert_incident(i).expect("seed"))
        .collect();
        Fixture {
            state: AppState {
                store,
                metrics: Arc::new(Metrics::new()),
                health: Health::new(),
                api_token: token.map(Secret::from),
                cluster: "test".into(),
                alertmanager: AlertmanagerConfig::default(),
                alert_tx: None,
                config_silences: Default::default(),
                remediation: Default::default(),
                config: None,
            },
            ids,
        }
    }

    /// Sends one request through the router (no socket), with the bearer
    /// `token` and, if given, a JSON `body`; the actions tests use it too.
    pub(super) async fn send(
        state: &AppState,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let response = router(state.clone(), Duration::from_secs(5))
            .oneshot(request.body(body).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            headers,
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    /// A GET.
    async fn call(
        state: &AppState,
        uri: &str,
        token: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        send(state, "GET", uri, token, None).await
    }

    async fn json(state: &AppState, uri: &str) -> (StatusCode, Value) {
        let (status, headers, body) = call(state, uri, Some(TOKEN)).await;
        assert_eq!(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{uri}: {body}"
        );
        (status, serde_json::from_str(&body).expect("JSON body"))
    }

    fn ids(page: &Value) -> Vec<i64> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["id"].as_i64().expect("id"))
            .collect()
    }

    #[tokio::test]
    async fn list_filters_and_paginates() {
        let f = fixture(Some(TOKEN));
        let (status, page) = json(&f.state, "/api/v1/incidents").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids(&page), [f.ids[2], f.ids[1], f.ids[0]]);
        assert_eq!(page["next_before_id"], Value::Null);

        let item = &page["items"][2];
        assert_eq!(item["subject"], "cart (shop)");
        assert_eq!(item["state"], "resolved");
        assert_eq!(item["severity"], "warning");
        assert_eq!(item["opened_at"], "2023-11-14T22:13:20Z");
        assert_eq!(item["resolved_at"], "2023-11-14T22:23:20Z");
        assert_eq!(item["group"]["service"], "cart");
        assert_eq!(item["signals"], serde_json::json!(["error_ratio"]));
        assert_eq!(item["headline"]["signal"], "error_ratio");
        assert_eq!(item["headline"]["direction"], "up");
        let id = f.ids[0];
        assert_eq!(item["links"]["self"], format!("/api/v1/incidents/{id}"));
        assert_eq!(
            item["links"]["report"],
            format!("/api/v1/incidents/{id}/report.md")
        );

        let (_, open_cart) = json(
            &f.state,
            "/api/v1/incidents?state=open&service=cart&namespace=shop",
        )
        .await;
        assert_eq!(ids(&open_cart), [f.ids[2]]);

        let (_, window) = json(
            &f.state,
            "/api/v1/incidents?since=2023-11-14T22:13:20Z&until=2023-11-14T23:13:20Z",
        )
        .await;
        assert_eq!(ids(&window), [f.ids[1], f.ids[0]]);

        let (_, first) = json(&f.state, "/api/v1/incidents?limit=2").await;
        assert_eq!(ids(&first), [f.ids[2], f.ids[1]]);
        let next = first["next_before_id"].as_i64().expect("more pages");
        let (_, second) = json(
            &f.state,
            &format!("/api/v1/incidents?limit=2&before_id={next}"),
        )
        .await;
        assert_eq!(ids(&second), [f.ids[0]]);
        assert_eq!(second["next_before_id"], Value::Null);
    }

    #[tokio::test]
    async fn bad_parameters_are_400_naming_the_parameter() {
        let f = fixture(Some(TOKEN));
        for (uri, name) in [
            ("/api/v1/incidents?since=yesterday", "`since`"),
            ("/api/v1/incidents?until=2023-11-14T25:00:00Z", "`until`"),
            ("/api/v1/incidents?state=closed", "`state`"),
            ("/api/v1/incidents?limit=many", "`limit`"),
            ("/api/v1/incidents?servce=cart", "servce"),
            ("/api/v1/incidents/abc", "`id`"),
        ] {
            let (status, body) = json(&f.state, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            let message = body["error"].as_str().expect("error message");
            assert!(message.contains(name), "{uri}: {message}");
        }
    }

    #[tokio::test]
    async fn get_returns_the_full_incident_or_404() {
        let f = fixture(Some(TOKEN));
        let id = f.ids[1];
        let (status, body) = json(&f.state, &format!("/api/v1/incidents/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        let incident: Incident = serde_json::from_value(body).expect("an Incident");
        assert_eq!(incident.id, Some(id));
        assert_eq!(incident.group_label("service"), Some("auth"));
        assert_eq!(incident.signals[0].samples.len(), 3);
        assert_eq!(incident.timeline.len(), 1);

        let (status, body) = json(&f.state, "/api/v1/incidents/999999").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().expect("error").contains("999999"));

        let (status, _) = json(&f.state, "/api/v1/nothing-here").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn report_is_markdown() {
        let f = fixture(Some(TOKEN));
        let id = f.ids[0];
        let (status, headers, body) = call(
            &f.state,
            &format!("/api/v1/incidents/{id}/report.md"),
            Some(TOKEN),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("text/markdown; charset=utf-8")
        );
        assert!(
            body.starts_with(&format!(
                "# Incident #{id} — cart (shop): error_ratio up 12.0σ"
            )),
            "{body}"
        );
        assert!(body.contains("**Resolved**"), "{body}");

        let (status, _, _) =
            call(&f.state, "/api/v1/incidents/424242/report.md", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn api_requires_the_bearer_token() {
        let f = fixture(Some(TOKEN));
        for (token, expected_challenge) in
            [(None, "Bearer"), (Some("wrong-token"), "invalid_token")]
        {
            let (status, headers, body) = call(&f.state, "/api/v1/incidents", token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
            let challenge = headers
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .expect("WWW-Authenticate");
            assert!(challenge.starts_with("Bearer"), "{challenge}");
            assert!(challenge.contains(expected_challenge), "{challenge}");
            assert!(body.contains("\"error\""), "{body}");
            assert!(
                !body.contains(TOKEN) && !body.contains("wrong-token"),
                "{body}"
            );
        }
        let id = f.ids[0];
        let (status, _, _) =
            call(&f.state, &format!("/api/v1/incidents/{id}/report.md"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let (status, _, _) = call(&f.state, "/api/v1/incidents", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        // Probes and metrics never need it.
        for uri in ["/healthz", "/metrics"] {
            let (status, _, _) = call(&f.state, uri, None).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
        }
    }

    #[tokio::test]
    async fn api_is_open_without_a_configured_token() {
        let f = fixture(None);
        let (status, _, _) = call(&f.state, "/api/v1/incidents", None).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text() {
        let f = fixture(Some(TOKEN));
        f.state.metrics.anomalies_found("error_ratio", 3);
        let (status, headers, body) = call(&f.state, "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        assert!(
            body.contains(r#"aiopsd_anomalies_total{signal="error_ratio"} 3"#),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");

        let (status, _, body) = call(&f.state, "/healthz", None).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }

    #[tokio::test]
    async fn readyz_lists_reasons_until_ready() {
        let f = fixture(Some(TOKEN));
        f.state.health.register_source("prometheus");
        let (status, _, body) = call(&f.state, "/readyz", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body["ready"], false);
        let reasons = body["reasons"].to_string();
        for needle in [
            "pipeline is not running",
            "store is not available",
            "prometheus",
        ] {
            assert!(reasons.contains(needle), "{reasons}");
        }
        assert_eq!(body["sources"][0]["name"], "prometheus");

        f.state.health.set_pipeline_running(true);
        f.state.health.set_store_ok(true);
        f.state.health.source_ok("prometheus");
        let (status, _, body) = call(&f.state, "/readyz", None).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "still backfilling: {body}"
        );
        assert!(body.contains("backfilling"), "{body}");

        f.state.health.source_backfilled("prometheus");
        let (status, _, body) = call(&f.state, "/readyz", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body["ready"], true);
        assert_eq!(body["reasons"], serde_json::json!([]));
    }

    #[tokio::test]
    async fn internal_errors_get_a_generic_500() {
        let error = ApiError::Store(StoreError::NewerSchema { found: 9, known: 1 });
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(body.contains("internal error"), "{body}");
        assert!(!body.contains("schema"), "no internals in the body: {body}");
    }
}
