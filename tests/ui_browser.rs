//! The web UI in a real browser: headless Chromium (Debian's `chromium`)
//! driven through chromedriver, against the UI served over HTTP.
//!
//! - `demo_incident_in_a_browser`: the `aiopsd demo` binary, as a user runs
//!   it; the list and the incident page of the demo's real incident (title,
//!   chart SVG with its data points and anomaly window), a pending action
//!   created through the demo's store and approved with a click (the
//!   confirmation answered), and screenshots at desktop and phone width.
//! - `tokens_roles_and_evidence_in_a_browser`: the same router served
//!   in-process with an operator and a viewer token (the demo has no
//!   tokens), on a store seeded with a diagnosis and a policy decision:
//!   unauthenticated requests are refused (login page for the browser, 401
//!   for a script), a viewer sees the evidence but no approve button and
//!   cannot POST one, an operator denies through the form.
//!
//! Missing chromium/chromedriver fail these tests with what to install.
//! Screenshots go to `target/ui-screenshots/` (paths printed).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::browser::Driver;

const DESKTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);

fn screenshot_dir() -> PathBuf {
    // CARGO_TARGET_DIR when set, else ./target, like cargo itself.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("ui-screenshots")
}

/// Screenshots the current page at desktop and phone width.
async fn screenshots(browser: &Driver, name: &str) {
    for (label, (w, h)) in [("desktop", DESKTOP), ("phone", PHONE)] {
        browser.set_size(w, h).await;
        let path = screenshot_dir().join(format!("{name}-{label}.png"));
        browser.screenshot(&path).await;
        println!("screenshot: {}", path.display());
        // Nothing may overflow sideways at phone width.
        if label == "phone" {
            let overflow = browser
                .execute(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                    json!([]),
                )
                .await;
            assert!(
                overflow.as_i64().unwrap_or(0) <= 1,
                "{name} scrolls sideways at {w}px: {overflow}"
            );
        }
    }
    browser.set_size(DESKTOP.0, DESKTOP.1).await;
}

/// `aiopsd demo` serving until dropped.
struct Demo {
    child: Child,
    base: String,
    data_dir: tempfile::TempDir,
}

impl Demo {
    fn start() -> Demo {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_aiopsd"))
            .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiopsd demo");
        // The demo prints `api: http://ADDR/api/v1/incidents` before it
        // runs the scenario.
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.trim().strip_prefix("api:") {
                        let url = url.trim();
                        if let Some(base) = url.strip_suffix("/api/v1/incidents") {
                            break base.to_string();
                        }
                    }
                }
                _ => {
                    let _ = child.kill();
                    panic!("aiopsd demo exited before printing its API address");
                }
            }
        };
        // Keep draining stdout so the demo never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Demo {
            child,
            base,
            data_dir,
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get_json(url: &str) -> Option<Value> {
    let response = reqwest::get(url).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    serde_json::from_str(&response.text().await.ok()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_incident_in_a_browser() {
    aiopsd::install_crypto_provider();
    let demo = Demo::start();
    // Wait for the demo's incident (the injected fault on `checkout`).
    let deadline = Instant::now() + Duration::from_secs(90);
    let id = loop {
        let list = get_json(&format!("{}/api/v1/incidents", demo.base)).await;
        let found = list.as_ref().and_then(|l| {
            l["items"].as_array()?.iter().find_map(|i| {
                (i["group"]["service"] == "checkout" && i["signals"].as_array()?.len() >= 2)
                    .then(|| i["id"].as_i64())
                    .flatten()
            })
        });
        if let Some(id) = found {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "the demo opened no incident on checkout"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // A pending action on it, as the policy gate would ask, through the
    // demo's own store (SQLite in WAL mode takes a second process).
    let store = aiopsd::incident::Store::open(&demo.data_dir.path().join("aiopsd-demo.db"))
        .expect("open the demo's store");
    let (action, _) = store
        .request_action(
            &aiopsd::publish::approvals::ActionRequest {
                incident_id: id,
                description: "Roll back demo/Deployment/checkout to revision 6".into(),
                detail: json!({"kind": "rollback", "pre_state": "revision 7"}),
                ttl_ms: 600_000,
            },
            aiopsd::signal::now_ms(),
        )
        .expect("request an action");

    let browser = Driver::start(DESKTOP.0, DESKTOP.1).await;
    // The list.
    browser.goto(&format!("{}/ui/", demo.base)).await;
    assert_eq!(browser.title().await, "Incidents — aiopsd");
    let row = browser.find(&format!("tr[data-id='{id}']")).await;
    let row_text = browser.text(&row).await;
    for needle in ["checkout (demo)", "AWAITING APPROVAL"] {
        assert!(
            row_text.contains(needle),
            "{needle:?} not in row: {row_text}"
        );
    }
    assert!(
        row_text.contains("CRITICAL") || row_text.contains("WARNING"),
        "severity as text: {row_text}"
    );
    screenshots(&browser, "incident-list").await;

    // The incident page, reached by its link.
    let link = browser.find(&format!("tr[data-id='{id}'] a")).await;
    browser.click(&link).await;
    browser
        .wait_until(
            "the incident page",
            &format!("return location.pathname === '/ui/incidents/{id}'"),
            Duration::from_secs(10),
        )
        .await;
    let title = browser.title().await;
    assert!(
        title.starts_with(&format!("#{id} checkout (demo)")),
        "{title}"
    );
    let summary = browser.text(&browser.find("p.summary").await).await;
    assert!(
        summary.contains("rose to") || summary.contains("fell to"),
        "{summary}"
    );
    // One chart per signal, each with its data points and anomaly window.
    let charts = browser
        .execute(
            "return Array.from(document.querySelectorAll('svg.chart')).map(function (s) {
               var line = s.querySelector('polyline.line');
               return {
                 points: line ? line.getAttribute('points').trim().split(' ').length : 0,
                 anomalous: s.querySelectorAll('rect.pt-anomalous').length,
                 window: s.querySelectorAll('rect.anomaly-window').length,
                 title: s.querySelector('title').textContent,
                 width: s.getBoundingClientRect().width
               };
             })",
            json!([]),
        )
        .await;
    let charts = charts.as_array().expect("charts");
    assert!(charts.len() >= 2, "{charts:?}");
    for c in charts {
        assert!(c["points"].as_u64().unwrap_or(0) >= 10, "{c}");
        assert!(c["anomalous"].as_u64().unwrap_or(0) >= 1, "{c}");
        assert_eq!(c["window"], 1, "{c}");
        assert!(c["width"].as_f64().unwrap_or(0.0) > 300.0, "drawn: {c}");
    }
    assert!(charts.iter().any(|c| c["title"]
        .as_str()
        .is_some_and(|t| t.starts_with("error_ratio"))));
    let report = browser.find("a[download]").await;
    assert!(browser.text(&report).await.contains("report.md"));
    screenshots(&browser, "incident").await;

    // Approve with a click: who, why, confirm.
    let prefix = format!("#decide-{}", action.id);
    browser
        .type_into(&browser.find(&format!("{prefix}-by")).await, "alice")
        .await;
    browser
        .type_into(
            &browser.find(&format!("{prefix}-reason")).await,
            "error ratio doubled since the rollout",
        )
        .await;
    browser
        .click(&browser.find("form.decide button.approve").await)
        .await;
    let question = browser.accept_dialog().await;
    assert!(
        question.contains(&format!("Approve action {}", action.id)),
        "{question}"
    );
    browser
        .wait_until(
            "the approval notice",
            "return location.search.indexOf('notice=approved') >= 0",
            Duration::from_secs(10),
        )
        .await;
    let card = browser
        .text(&browser.find(&format!("#action-{}", action.id)).await)
        .await;
    assert!(card.contains("APPROVED"), "{card}");
    assert!(card.contains("alice"), "{card}");
    let stored = store.get_action(action.id).expect("read").expect("action");
    assert_eq!(stored.state.as_str(), "approved");
    assert_eq!(stored.decided_by.as_deref(), Some("alice"));
    screenshots(&browser, "incident-after-approval").await;
}

const OPERATOR: &str = "operator-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";

/// The server's router with both tokens, served on a free loopback port
/// until the returned sender is dropped.
async fn serve_with_tokens(
    store: aiopsd::incident::Store,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    use aiopsd::config::{AlertmanagerConfig, Secret};
    let state = aiopsd::server::AppState {
        store,
        metrics: Arc::new(aiopsd::telemetry::Metrics::new()),
        health: aiopsd::telemetry::Health::new(),
        api_token: Some(Secret::from(OPERATOR)),
        cluster: "test".into(),
        alertmanager: AlertmanagerConfig::default(),
        alert_tx: None,
        config_silences: Default::default(),
        remediation: Default::default(),
        config: None,
    };
    let ui = aiopsd::ui::UiSettings {
        viewer_token: Some(Secret::from(VIEWER)),
        ..Default::default()
    };
    let router = aiopsd::server::router_with_ui(state, ui, Duration::from_secs(10));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(aiopsd::server::serve(listener, router, async move {
        let _ = stopped.await;
    }));
    (base, stop)
}

/// An incident with a diagnosis and a policy decision, and its pending action.
fn seed(store: &aiopsd::incident::Store) -> (i64, i64) {
    use aiopsd::diagnose::{evidence::EvidenceId, Diagnosis, Hypothesis, ProposedBy};
    use aiopsd::incident::{
        ActionPlanRecord, Incident, IncidentState, Peak, Severity, SignalEvidence, TimelineEntry,
        UpdateKind,
    };
    use aiopsd::remediate::plan::{PlannedAction, WorkloadKind, WorkloadRef};
    use aiopsd::remediate::record::{DecisionOutcome, DecisionRecord};
    use aiopsd::signal::{now_ms, Sample, SeriesKey};
    let t0 = now_ms() - 900_000;
    let group = [
        ("namespace".to_string(), "shop".to_string()),
        ("service".to_string(), "cart".to_string()),
    ];
    let samples: Vec<Sample> = (0..40)
        .map(|i| Sample {
            t: t0 - 1_800_000 + i * 60_000,
            v: if i >= 30 {
                0.3
            } else {
                0.01 + 0.002 * (i % 3) as f64
            },
        })
        .collect();
    let anomalous: Vec<i64> = samples[30..].iter().map(|s| s.t).collect();
    let incident = Incident {
        id: None,
        cluster: "test".into(),
        group: group.clone().into(),
        state: IncidentState::Open,
        severity: Severity::Critical,
        opened_at: anomalous[0],
        last_anomaly_at: *anomalous.last().expect("anomalies"),
        resolved_at: None,
        anomaly_count: anomalous.len() as u64,
        signals: vec![SignalEvidence {
            series: SeriesKey::new("error_ratio", group),
            first_at: anomalous[0],
            last_at: *anomalous.last().expect("anomalies"),
            anomaly_count: anomalous.len() as u64,
            peak: Peak {
                t: anomalous[2],
                value: 0.3,
                expected: 0.012,
                spread: 0.004,
                score: 71.5,
            },
            samples,
            anomalous_at: anomalous.clone(),
        }],
        alerts: Vec::new(),
        diagnosis: None,
        decisions: Vec::new(),
        logs: Vec::new(),
        prediction: None,
        timeline: vec![TimelineEntry {
            at: anomalous[0],
            kind: "opened".into(),
            message: "cart error_ratio is anomalous.".into(),
        }],
    };
    let id = store
        .save_incident_with_events(&incident, UpdateKind::Opened, now_ms())
        .expect("incident")
        .id;
    // Diagnosis and the gate's decision go through the store calls the
    // diagnose and policy stages use.
    store
        .save_diagnosis(
            id,
            &Diagnosis {
                hypotheses: vec![Hypothesis {
                    cause: "bad_rollout".into(),
                    title: "Bad rollout of cart revision 7".into(),
                    confidence: 0.82,
                    supporting: vec![EvidenceId("c1".into()), EvidenceId("m1".into())],
                    contradicting: Vec::new(),
                    explanation: "Errors began 40 s after revision 7 rolled out.".into(),
                    suggestion: None,
                    proposed_by: ProposedBy::Rules,
                }],
                at: anomalous[0] + 60_000,
                gaps: Vec::new(),
                llm_status: None,
                evidence: Default::default(),
            },
            now_ms(),
        )
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
            id,
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
    let action = action.expect("an action waiting for approval");
    (id, action.id)
}

async fn log_in(browser: &Driver, base: &str, token: &str, next: &str) {
    browser.goto(&format!("{base}{next}")).await;
    browser
        .wait_until(
            "the login form",
            "return location.pathname === '/ui/login'",
            Duration::from_secs(10),
        )
        .await;
    browser
        .type_into(&browser.find("#token").await, token)
        .await;
    browser
        .click(&browser.find("form.login button").await)
        .await;
    browser
        .wait_until(
            "the page after login",
            &format!("return location.pathname === '{next}'"),
            Duration::from_secs(10),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_and_evidence_in_a_browser() {
    aiopsd::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = aiopsd::incident::Store::open(&dir.path().join("ui.db")).expect("store");
    let (id, action) = seed(&store);
    let (base, _stop) = serve_with_tokens(store.clone()).await;
    let page = format!("/ui/incidents/{id}");

    // A script without credentials gets 401; with the viewer token, a page.
    let client = reqwest::Client::new();
    let anonymous = client
        .get(format!("{base}{page}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(anonymous.status().as_u16(), 401);
    let as_viewer = client
        .get(format!("{base}{page}"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("GET");
    assert_eq!(as_viewer.status().as_u16(), 200);

    // A browser without a session lands on the login form; a viewer logs in.
    let browser = Driver::start(DESKTOP.0, DESKTOP.1).await;
    log_in(&browser, &base, VIEWER, &page).await;
    let text = browser.body_text().await;
    for needle in [
        "Bad rollout of cart revision 7",
        "82% confidence",
        "policy.yaml:rollback-shop",
        "NEEDS APPROVAL",
        "Viewer (read-only)",
        "Only an operator can approve or deny this action.",
    ] {
        assert!(text.contains(needle), "{needle:?} not on the page:\n{text}");
    }
    assert!(
        browser.find_all("button.approve").await.is_empty(),
        "no approve button for a viewer"
    );
    assert!(!text.contains(VIEWER) && !text.contains(OPERATOR));
    // Forging the form from the viewer's own page is refused by the server.
    let status = browser
        .execute(
            "var form = new URLSearchParams({by: 'eve', reason: 'forged', csrf: document.querySelector('input[name=csrf]').value});
             return fetch('/ui/actions/' + arguments[0] + '/approve', {method: 'POST', body: form, redirect: 'manual'})
               .then(function (r) { return r.status; });",
            json!([action]),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        store
            .get_action(action)
            .expect("read")
            .expect("action")
            .state
            .as_str(),
        "pending"
    );
    screenshots(&browser, "incident-viewer").await;

    // Sign out; an operator signs in and denies through the form.
    browser
        .click(&browser.find("form.logout button").await)
        .await;
    browser
        .wait_until(
            "the login form",
            "return location.pathname === '/ui/login'",
            Duration::from_secs(10),
        )
        .await;
    log_in(&browser, &base, OPERATOR, &page).await;
    let prefix = format!("#decide-{action}");
    browser
        .type_into(&browser.find(&format!("{prefix}-by")).await, "bob")
        .await;
    browser
        .type_into(
            &browser.find(&format!("{prefix}-reason")).await,
            "not during the sale",
        )
        .await;
    browser
        .click(&browser.find("form.decide button.deny").await)
        .await;
    let question = browser.accept_dialog().await;
    assert!(question.contains("Deny action"), "{question}");
    browser
        .wait_until(
            "the denial notice",
            "return location.search.indexOf('notice=denied') >= 0",
            Duration::from_secs(10),
        )
        .await;
    let card = browser
        .text(&browser.find(&format!("#action-{action}")).await)
        .await;
    assert!(card.contains("DENIED") && card.contains("bob"), "{card}");
    assert_eq!(
        store
            .get_action(action)
            .expect("read")
            .expect("action")
            .state
            .as_str(),
        "denied"
    );
    // The verdict form waits for the store function, and says so.
    let note = browser
        .text(&browser.find("#verdict-unavailable").await)
        .await;
    assert!(note.contains("Not yet recorded"), "{note}");
}
