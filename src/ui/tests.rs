//! The UI through the whole router (no socket): authentication, roles,
//! CSRF, escaping, and the forms' effects on the store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::config::{AlertmanagerConfig, Secret};
use crate::diagnose::{Diagnosis, Hypothesis, ProposedBy};
use crate::incident::{
    ActionPlanRecord, Incident, IncidentState, Peak, Severity, SignalEvidence, TimelineEntry,
    UpdateKind,
};
use crate::publish::approvals::ActionId;
use crate::remediate::plan::{PlannedAction, PreState, WorkloadKind, WorkloadRef};
use crate::remediate::record::{DecisionOutcome, DecisionRecord};
use crate::signal::{now_ms, Sample, SeriesKey};
use crate::telemetry::{Health, Metrics};

const OPERATOR: &str = "operator-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";

struct Fixture {
    app: AppState,
    incident: IncidentId,
    action: ActionId,
}

fn incident(service: &str) -> Incident {
    let group = [
        ("namespace".to_string(), "shop".to_string()),
        ("service".to_string(), service.to_string()),
    ];
    let t0 = now_ms() - 600_000;
    Incident {
        id: None,
        cluster: "test".into(),
        group: group.clone().into(),
        state: IncidentState::Open,
        severity: Severity::Critical,
        opened_at: t0,
        last_anomaly_at: t0 + 60_000,
        resolved_at: None,
        anomaly_count: 2,
        signals: vec![SignalEvidence {
            series: SeriesKey::new("error_ratio", group),
            first_at: t0,
            last_at: t0 + 60_000,
            anomaly_count: 2,
            peak: Peak {
                t: t0 + 60_000,
                value: 0.25,
                expected: 0.01,
                spread: 0.02,
                score: 12.0,
            },
            samples: (0..10)
                .map(|i| Sample {
                    t: t0 - 480_000 + i * 60_000,
                    v: if i >= 8 {
                        0.2 + 0.05 * (i - 8) as f64
                    } else {
                        0.01
                    },
                })
                .collect(),
            anomalous_at: vec![t0, t0 + 60_000],
        }],
        alerts: Vec::new(),
        diagnosis: None,
        decisions: Vec::new(),
        logs: Vec::new(),
        prediction: None,
        timeline: vec![TimelineEntry {
            at: t0,
            kind: "opened".into(),
            message: format!("{service} error_ratio is anomalous."),
        }],
    }
}

fn diagnosis() -> Diagnosis {
    Diagnosis {
        hypotheses: vec![Hypothesis {
            cause: "bad_rollout".into(),
            title: "Bad rollout".into(),
            confidence: 0.8,
            supporting: vec![crate::diagnose::evidence::EvidenceId("c1".into())],
            contradicting: Vec::new(),
            explanation: "Errors began 40 s after revision 7 rolled out.".into(),
            suggestion: None,
            proposed_by: ProposedBy::Rules,
        }],
        at: now_ms() - 300_000,
        gaps: vec!["logs".into()],
        llm_status: None,
        evidence: Default::default(),
    }
}

fn fixture(api_token: Option<&str>, service: &str) -> Fixture {
    let store = Store::open_in_memory().expect("store");
    let incident = store
        .save_incident_with_events(&incident(service), UpdateKind::Opened, now_ms())
        .expect("incident")
        .id;
    store
        .save_diagnosis(incident, &diagnosis(), now_ms())
        .expect("diagnosis");
    let plan = PlannedAction::Rollback {
        target: WorkloadRef {
            namespace: "shop".into(),
            kind: WorkloadKind::Deployment,
            name: "cart".into(),
        },
        from_revision: 7,
        to_revision: 6,
    };
    let (action, _) = store
        .record_decision(
            incident,
            &DecisionRecord {
                at: now_ms(),
                outcome: DecisionOutcome::NeedsApproval,
                rule: "policy.yaml:rollback-shop".into(),
                reasons: vec!["rule rollback-shop allows rollback in approve mode".into()],
                action: Some(plan),
                proposed_by: "rules".into(),
                action_id: None,
            },
            Some(&ActionPlanRecord {
                mode: "approve".into(),
                pods_touched: 3,
                approval_ttl_ms: 600_000,
            }),
            now_ms(),
        )
        .expect("decision");
    let action = action.expect("an action in approve mode");
    let app = AppState {
        store,
        metrics: Arc::new(Metrics::new()),
        health: Health::new(),
        api_token: api_token.map(Secret::from),
        cluster: "test".into(),
        alertmanager: AlertmanagerConfig::default(),
        alert_tx: None,
        config_silences: Default::default(),
        remediation: Default::default(),
        config: None,
    };
    Fixture {
        app,
        incident,
        action: action.id,
    }
}

fn settings() -> UiSettings {
    UiSettings {
        viewer_token: Some(Secret::from(VIEWER)),
        ..UiSettings::default()
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// `name=value` of the Set-Cookie header, without attributes.
    fn cookie(&self) -> String {
        let full = self
            .headers
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .expect("Set-Cookie");
        full.split(';').next().unwrap_or_default().to_string()
    }

    /// The value of the first hidden `csrf` input.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .expect("a csrf field")
            + 19;
        self.body[at..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

/// The whole server router with the UI, built once per test (open mode
/// draws a random session key per router, as per process).
fn routes(app: &AppState, ui: &UiSettings) -> axum::Router {
    crate::server::router_with_ui(app.clone(), ui.clone(), Duration::from_secs(5))
}

async fn send(
    router: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    form: Option<&str>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if form.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let body = form.map_or_else(Body::empty, |f| Body::from(f.to_string()));
    let response = router
        .clone()
        .oneshot(request.body(body).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8"),
    }
}

/// Logs in with `token` and returns the cookie.
async fn login(r: &axum::Router, token: &str) -> String {
    let a = send(
        r,
        "POST",
        "/ui/login",
        &[],
        Some(&format!("token={token}&next=%2Fui%2Fincidents%2F1")),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.location(), "/ui/incidents/1");
    let set = a
        .headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("cookie")
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(
        !set.contains(token),
        "the token itself is never the cookie: {set}"
    );
    a.cookie()
}

fn action_state(f: &Fixture) -> String {
    f.app
        .store
        .get_action(f.action)
        .expect("read")
        .expect("action")
        .state
        .as_str()
        .to_string()
}

#[tokio::test]
async fn without_credentials_pages_redirect_to_login_and_others_get_401() {
    let f = fixture(Some(OPERATOR), "cart");
    let ui = settings();
    let r = routes(&f.app, &ui);
    let page = send(
        &r,
        "GET",
        "/ui/incidents/1",
        &[("accept", "text/html")],
        None,
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/ui/login?next=/ui/incidents/1");
    let script = send(&r, "GET", "/ui/", &[], None).await;
    assert_eq!(script.status, StatusCode::UNAUTHORIZED);
    assert!(script.headers.contains_key(header::WWW_AUTHENTICATE));
    let post = send(
        &r,
        "POST",
        &format!("/ui/actions/{}/approve", f.action),
        &[],
        Some("by=mallory&reason=x"),
    )
    .await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);
    let wrong = send(
        &r,
        "GET",
        "/ui/",
        &[("authorization", "Bearer nope-nope-nope-nope")],
        None,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let bad_login = send(
        &r,
        "POST",
        "/ui/login",
        &[],
        Some("token=guess-guess-guess&next="),
    )
    .await;
    assert_eq!(bad_login.status, StatusCode::UNAUTHORIZED);
    assert!(bad_login.body.contains("not valid"));
    assert!(!bad_login.headers.contains_key(header::SET_COOKIE));
    assert_eq!(action_state(&f), "pending");
    // The login page and the assets need no session.
    let login = send(&r, "GET", "/ui/login", &[], None).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains(r#"type="password""#));
    let css = send(&r, "GET", "/ui/assets/ui.css", &[], None).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.body.contains("svg.chart"));
}

#[tokio::test]
async fn a_viewer_reads_everything_but_cannot_decide() {
    let f = fixture(Some(OPERATOR), "cart");
    let ui = settings();
    let r = routes(&f.app, &ui);
    let cookie = login(&r, VIEWER).await;
    let page = send(
        &r,
        "GET",
        &format!("/ui/incidents/{}", f.incident),
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    for needle in [
        "Bad rollout",
        "policy.yaml:rollback-shop",
        "Viewer (read-only)",
        "<svg",
        "Only an operator",
    ] {
        assert!(page.body.contains(needle), "{needle}");
    }
    assert!(
        !page.body.contains("/approve\""),
        "no approve form for a viewer"
    );
    // Even a forged POST with the viewer's own CSRF token is refused.
    let csrf = page.csrf();
    let post = send(
        &r,
        "POST",
        &format!("/ui/actions/{}/approve", f.action),
        &[("cookie", &cookie)],
        Some(&format!("by=eve&reason=because&csrf={csrf}")),
    )
    .await;
    assert_eq!(post.status, StatusCode::FORBIDDEN);
    assert_eq!(action_state(&f), "pending");
    for body in [&page.body, &post.body] {
        assert!(
            !body.contains(VIEWER) && !body.contains(OPERATOR),
            "no secret rendered"
        );
    }
}

#[tokio::test]
async fn an_operator_approves_with_a_csrf_token_from_this_origin() {
    let f = fixture(Some(OPERATOR), "cart");
    let ui = settings();
    let r = routes(&f.app, &ui);
    let cookie = login(&r, OPERATOR).await;
    let page = send(
        &r,
        "GET",
        &format!("/ui/incidents/{}", f.incident),
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert!(page.body.contains("Needs a decision"), "{}", page.body);
    let csrf = page.csrf();
    let uri = format!("/ui/actions/{}/approve", f.action);
    let form = |csrf: &str| format!("by=alice&reason=error+rate+doubled&csrf={csrf}");
    // Missing or wrong CSRF token, or another site's Origin: refused.
    for (headers, body) in [
        (vec![("cookie", cookie.as_str())], form("")),
        (vec![("cookie", cookie.as_str())], form("00ff")),
        (
            vec![
                ("cookie", cookie.as_str()),
                ("origin", "http://evil.example"),
                ("host", "127.0.0.1:9464"),
            ],
            form(&csrf),
        ),
    ] {
        let a = send(&r, "POST", &uri, &headers, Some(&body)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    // Missing why: refused, naming the field.
    let a = send(
        &r,
        "POST",
        &uri,
        &[("cookie", &cookie)],
        Some(&format!("by=alice&reason=&csrf={csrf}")),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("reason"), "{}", a.body);
    assert_eq!(action_state(&f), "pending");

    let ok = send(
        &r,
        "POST",
        &uri,
        &[
            ("cookie", &cookie),
            ("origin", "http://127.0.0.1:9464"),
            ("host", "127.0.0.1:9464"),
        ],
        Some(&form(&csrf)),
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(
        ok.location(),
        format!(
            "/ui/incidents/{}?notice=approved#action-{}",
            f.incident, f.action
        )
    );
    let action = f
        .app
        .store
        .get_action(f.action)
        .expect("read")
        .expect("action");
    assert_eq!(action.state.as_str(), "approved");
    assert_eq!(action.decided_by.as_deref(), Some("alice"));
    assert_eq!(action.reason.as_deref(), Some("error rate doubled"));
    // Twice: the page says someone already decided.
    let again = send(&r, "POST", &uri, &[("cookie", &cookie)], Some(&form(&csrf))).await;
    assert!(
        again.location().contains("notice=already_decided"),
        "{}",
        again.location()
    );
    let metrics = f.app.metrics.encode();
    assert!(
        metrics.contains(r#"aiopsd_approvals_total{channel="api",outcome="approved"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_script_with_the_bearer_token_needs_no_csrf_token() {
    let f = fixture(Some(OPERATOR), "cart");
    let ui = settings();
    let r = routes(&f.app, &ui);
    let bearer = format!("Bearer {OPERATOR}");
    let a = send(
        &r,
        "POST",
        &format!("/ui/actions/{}/deny", f.action),
        &[("authorization", &bearer)],
        Some("by=bot&reason=outside+change+window"),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(action_state(&f), "denied");
    let viewer = format!("Bearer {VIEWER}");
    let list = send(
        &r,
        "GET",
        "/ui/?state=open&q=car",
        &[("authorization", &viewer)],
        None,
    )
    .await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("cart (shop)"));
    let none = send(
        &r,
        "GET",
        "/ui/?q=nothing-like-this",
        &[("authorization", &viewer)],
        None,
    )
    .await;
    assert!(none.body.contains("No incidents match."));
}

#[tokio::test]
async fn values_from_sources_are_escaped_everywhere() {
    let f = fixture(Some(OPERATOR), "<script>alert(1)</script>");
    let ui = settings();
    let r = routes(&f.app, &ui);
    let bearer = format!("Bearer {OPERATOR}");
    for uri in [
        "/ui/".to_string(),
        format!("/ui/incidents/{}", f.incident),
        "/ui/policy".into(),
    ] {
        let a = send(&r, "GET", &uri, &[("authorization", &bearer)], None).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}");
        assert!(!a.body.contains("<script>alert"), "{uri}: {}", a.body);
        assert!(a.body.contains("&lt;script&gt;alert(1)"), "{uri}");
        let csp = a
            .headers
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok());
        assert!(
            csp.is_some_and(|c| c.contains("script-src 'self'")),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn with_no_token_configured_the_ui_is_open_but_forms_still_need_csrf() {
    let f = fixture(None, "cart");
    let ui = UiSettings::default();
    let r = routes(&f.app, &ui);
    let page = send(
        &r,
        "GET",
        &format!("/ui/incidents/{}", f.incident),
        &[],
        None,
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let cookie = page.cookie();
    assert!(cookie.starts_with("aiopsd_ui=operator."), "{cookie}");
    let uri = format!("/ui/actions/{}/approve", f.action);
    let forged = send(&r, "POST", &uri, &[], Some("by=a&reason=b&csrf=00")).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let ok = send(
        &r,
        "POST",
        &uri,
        &[("cookie", &cookie)],
        Some(&format!("by=a&reason=b&csrf={}", page.csrf())),
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(action_state(&f), "approved");
    let root = send(&r, "GET", "/", &[], None).await;
    assert_eq!(root.location(), "/ui/");
}

static VERDICTS: Mutex<Vec<(IncidentId, Feedback, String, String)>> = Mutex::new(Vec::new());

fn record_for_test(
    _store: &Store,
    id: IncidentId,
    verdict: Feedback,
    by: &str,
    reason: &str,
    _now: TimestampMs,
) -> Result<(), StoreError> {
    if id != 1 {
        return Err(StoreError::UnknownIncident { id });
    }
    if let Ok(mut v) = VERDICTS.lock() {
        v.push((id, verdict, by.into(), reason.into()));
    }
    Ok(())
}

#[tokio::test]
async fn verdicts_wait_for_the_store_function_then_go_through_it() {
    let f = fixture(Some(OPERATOR), "cart");
    let ui = settings();
    let r = routes(&f.app, &ui);
    let bearer = format!("Bearer {OPERATOR}");
    let page = send(
        &r,
        "GET",
        &format!("/ui/incidents/{}", f.incident),
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert!(
        page.body.contains("Not yet recorded"),
        "disabled with a note"
    );
    let form = "verdict=noise&by=alice&reason=load+test";
    let uri = format!("/ui/incidents/{}/verdict", f.incident);
    let a = send(&r, "POST", &uri, &[("authorization", &bearer)], Some(form)).await;
    assert!(
        a.location().ends_with("notice=unavailable"),
        "{}",
        a.location()
    );

    let ui = UiSettings {
        record_verdict: Some(record_for_test),
        ..settings()
    };
    let r = routes(&f.app, &ui);
    let page = send(
        &r,
        "GET",
        &format!("/ui/incidents/{}", f.incident),
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert!(!page.body.contains("Not yet recorded"));
    let a = send(&r, "POST", &uri, &[("authorization", &bearer)], Some(form)).await;
    assert!(
        a.location().ends_with("notice=verdict_recorded"),
        "{}",
        a.location()
    );
    let bad = send(
        &r,
        "POST",
        &uri,
        &[("authorization", &bearer)],
        Some("verdict=maybe&by=a&reason=b"),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let recorded = VERDICTS.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(
        recorded,
        vec![(
            1,
            Feedback::Noise,
            "alice".to_string(),
            "load test".to_string()
        )]
    );
}

#[tokio::test]
async fn policy_and_health_pages_show_what_exists() {
    let f = fixture(Some(OPERATOR), "cart");
    let (_tx, rx) = watch::channel(PolicyView {
        source: Some("/etc/aiopsd/policy.yaml".into()),
        loaded_at: Some(now_ms()),
        rules: vec![RuleSummary {
            name: "policy.yaml:rollback-shop".into(),
            mode: "approve".into(),
            verbs: vec!["rollback".into()],
            matches: "namespace shop".into(),
            limits: vec!["at most 1 per hour".into()],
        }],
        kill_switch: Some(KillSwitchView {
            engaged: true,
            detail: "engaged by bob: incident review".into(),
        }),
    });
    let ui = UiSettings {
        policy: Some(rx),
        ..settings()
    };
    let r = routes(&f.app, &ui);
    let bearer = format!("Bearer {VIEWER}");
    let policy = send(&r, "GET", "/ui/policy", &[("authorization", &bearer)], None).await;
    for needle in [
        "ENGAGED",
        "engaged by bob",
        "rollback-shop",
        "NEEDS APPROVAL",
        "at most 1 per hour",
    ] {
        assert!(policy.body.contains(needle), "{needle}");
    }
    f.app.health.register_source("prometheus");
    f.app.health.source_failed(
        "prometheus",
        "connect to http://scraper:s3cret@prom:9090 refused",
    );
    let health = send(&r, "GET", "/ui/health", &[("authorization", &bearer)], None).await;
    assert_eq!(health.status, StatusCode::OK);
    for needle in ["NOT READY", "prometheus", "DOWN", "http://***@prom:9090"] {
        assert!(health.body.contains(needle), "{needle}: {}", health.body);
    }
    assert!(!health.body.contains("s3cret"));
    let report = send(
        &r,
        "GET",
        &format!("/ui/incidents/{}/report.md", f.incident),
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(report.status, StatusCode::OK);
    assert!(report.body.starts_with("# Incident #1"), "{}", report.body);
    let missing = send(
        &r,
        "GET",
        "/ui/incidents/999",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_executed_action_shows_its_pre_state_and_outcome_and_can_be_reverted() {
    use crate::publish::approvals::{Channel, Decision, Verdict};
    let f = fixture(Some(OPERATOR), "cart");
    let ui = settings();
    let r = routes(&f.app, &ui);
    let store = &f.app.store;
    let decided = store
        .decide_action(
            f.action,
            &Decision {
                verdict: Verdict::Approve,
                by: "alice".into(),
                reason: "go".into(),
                channel: Channel::Api,
                nonce: None,
            },
            now_ms(),
        )
        .expect("decide");
    assert!(decided.result.is_ok());
    let target = WorkloadRef {
        namespace: "shop".into(),
        kind: WorkloadKind::Deployment,
        name: "cart".into(),
    };
    let pre = PreState::Template {
        target,
        revision: 7,
        template: serde_json::json!({"spec": {}}),
    };
    assert!(store
        .begin_execution(f.action, &pre, now_ms())
        .expect("begin"));
    store
        .finish_execution(
            f.action,
            Ok("rolled back to revision 6"),
            Some(now_ms()),
            now_ms(),
        )
        .expect("finish");
    store
        .set_setting("kill_switch", "on", "bob", "incident review", now_ms())
        .expect("kill switch");

    let bearer = format!("Bearer {OPERATOR}");
    let page = send(
        &r,
        "GET",
        &format!("/ui/incidents/{}", f.incident),
        &[("authorization", &bearer)],
        None,
    )
    .await;
    for needle in [
        "EXECUTED",
        "ran revision 7",
        "rolled back to revision 6",
        "REMEDIATING",
        "Revert action",
    ] {
        assert!(page.body.contains(needle), "{needle}");
    }
    let revert = send(
        &r,
        "POST",
        &format!("/ui/actions/{}/revert", f.action),
        &[("authorization", &bearer)],
        Some("by=carol&reason=made+it+worse"),
    )
    .await;
    assert_eq!(revert.status, StatusCode::SEE_OTHER, "{}", revert.body);
    assert!(revert.location().contains("notice=revert_requested"));
    let action = store.get_action(f.action).expect("read").expect("action");
    let exec = action.execution.expect("execution");
    assert_eq!(exec.revert_requested_by.as_deref(), Some("carol"));
    // A second request is refused with the store's reason.
    let again = send(
        &r,
        "POST",
        &format!("/ui/actions/{}/revert", f.action),
        &[("authorization", &bearer)],
        Some("by=carol&reason=again"),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("already requested"), "{}", again.body);

    let list = send(
        &r,
        "GET",
        "/ui/?state=remediating",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert!(list.body.contains("cart (shop)"), "phase filter");
    let list = send(
        &r,
        "GET",
        "/ui/?state=escalated",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert!(list.body.contains("No incidents match."));
    let policy = send(&r, "GET", "/ui/policy", &[("authorization", &bearer)], None).await;
    assert!(
        policy.body.contains("ENGAGED"),
        "kill switch from the store"
    );
    assert!(policy.body.contains("incident review"));
}
