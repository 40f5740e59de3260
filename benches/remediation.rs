//! End-to-end remediation latency: from an incident stored in the store to
//! the action accepted by the API server — diagnosis, policy decision,
//! write-ahead intent and pre-state, the Kubernetes calls (observe,
//! resolve, pre-state, scale, annotation, Events) — against the wire-level
//! fake API server of tests/support over loopback HTTP, with the
//! production kube client. Configured waits (`decide_after`, settle) are
//! excluded: the stage's pass is called directly.
//!
//! Run with `cargo bench --bench remediation`; prints the median, p95 and
//! max over 60 incidents, each on its own Deployment. Target (issue 9):
//! incident → action under 1 s.

#[path = "../tests/support/mod.rs"]
// The support module's own unit tests are compiled too (benches build
// with cfg(test)) but never run here.
#[allow(unreachable_pub, unused_imports)]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiopsd::config::HumanDuration;
use aiopsd::diagnose::bundle::SignalKinds;
use aiopsd::diagnose::catalogue::Catalogue;
use aiopsd::diagnose::diagnoser::Diagnoser;
use aiopsd::incident::{
    Incident, IncidentState, Peak, Severity, SignalEvidence, Store, TimelineEntry, UpdateKind,
};
use aiopsd::policy::{PolicyReloader, PolicySet};
use aiopsd::remediate::config::RemediationConfig;
use aiopsd::remediate::kube::{client, KubeCluster};
use aiopsd::remediate::stage::{Clock, Cluster, Remediator};
use aiopsd::signal::{now_ms, SeriesKey};
use aiopsd::telemetry::Metrics;
use support::fake_kube::FakeKube;

const INCIDENTS: usize = 60;
const POLICY: &str = r#"
apiVersion: aiopsd.io/v1
kind: Policy
rules:
  - name: scale-up
    match: { namespaces: { allow: [bench] } }
    action: { scale: { by: 1, min_replicas: 1, max_replicas: 10, max_step: 1 } }
    limits:
      mode: auto
      max_actions_per_hour: { workload: 5, namespace: 1000, cluster: 1000 }
"#;

fn incident(name: &str, opened_at: i64) -> Incident {
    let group: BTreeMap<String, String> = [("namespace", "bench"), ("deployment", name)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Incident {
        id: None,
        cluster: "bench".into(),
        group: group.clone(),
        state: IncidentState::Open,
        severity: Severity::Critical,
        opened_at,
        last_anomaly_at: opened_at,
        resolved_at: None,
        anomaly_count: 3,
        signals: vec![SignalEvidence {
            series: SeriesKey::new("error_ratio", group),
            first_at: opened_at,
            last_at: opened_at,
            anomaly_count: 3,
            peak: Peak {
                t: opened_at,
                value: 0.15,
                expected: 0.005,
                spread: 0.002,
                score: 70.0,
            },
            samples: Vec::new(),
            anomalous_at: Vec::new(),
        }],
        alerts: Vec::new(),
        diagnosis: None,
        decisions: Vec::new(),
        logs: Vec::new(),
        prediction: None,
        timeline: vec![TimelineEntry {
            at: opened_at,
            kind: "opened".into(),
            message: "Opened.".into(),
        }],
    }
}

fn main() {
    aiopsd::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let kube = FakeKube::start().await;
        for i in 0..INCIDENTS {
            kube.seed_deployment("bench", &format!("svc-{i}"), 2, 1);
        }
        let store = Store::open_in_memory().expect("store");
        let set = PolicySet::from_yaml("bench.yaml", POLICY).expect("policy");
        let config = RemediationConfig {
            enabled: true,
            decide_after: HumanDuration(Duration::ZERO),
            kill_switch_configmap: None,
            ..RemediationConfig::default()
        };
        let c = client(Some(&kube.url())).await.expect("client");
        let mut stage = Remediator::new(
            store.clone(),
            Arc::new(Metrics::new()),
            Cluster::Kube(KubeCluster::new(c)),
            Diagnoser::new(SignalKinds::new(), Catalogue::builtin().expect("catalogue")),
            PolicyReloader::fixed(set),
            config,
            Clock::Wall,
        );
        stage.reconcile().await.expect("warm-up pass");
        let mut times = Vec::with_capacity(INCIDENTS);
        for i in 0..INCIDENTS {
            let name = format!("svc-{i}");
            let now = now_ms();
            store.set_cursor("error_ratio", now).expect("cursor");
            let started = Instant::now();
            let id = store
                .save_incident_with_events(&incident(&name, now - 1_000), UpdateKind::Opened, now)
                .expect("save")
                .id;
            stage.reconcile().await.expect("pass");
            times.push(started.elapsed());
            let executed = store
                .actions_for_incident(id)
                .expect("actions")
                .iter()
                .any(|a| {
                    a.execution
                        .as_ref()
                        .is_some_and(|e| e.executed_at.is_some())
                });
            assert!(executed, "incident {id} ({name}) got no executed action");
            // Resolve it so the next passes only see the new incident.
            let mut inc = store.get_incident(id).expect("read").expect("found");
            inc.state = IncidentState::Resolved;
            inc.resolved_at = Some(now);
            store
                .save_incident_with_events(&inc, UpdateKind::Resolved, now)
                .expect("resolve");
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        eprintln!(
            "incident stored → action accepted by the API server ({INCIDENTS} incidents, \
             debug fake API on loopback): median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            ms(times[INCIDENTS / 2]),
            ms(times[INCIDENTS * 95 / 100]),
            ms(times[INCIDENTS - 1]),
        );
    });
}
