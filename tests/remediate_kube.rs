//! The Kubernetes executor (src/remediate/kube/) and the evidence reader
//! (src/remediate/gather.rs), driven through the production kube client
//! over HTTP against the wire-level fake API server
//! (tests/support/fake_kube.rs): every verb with its pre-state and revert,
//! HPA-owned scaling, PodDisruptionBudget 429s, 409 re-reads, bounded
//! conflicts, 403s, idempotency by action id, the safety refusals, Events.

mod support;

use std::time::Duration;

use aiopsd::diagnose::evidence::{EvidenceBundle, EvidenceDetail, EvidenceSource, PodProblem};
use aiopsd::remediate::gather::gather_workload;
use aiopsd::remediate::kube::{client, ExecError, ExecutorSettings, KubeCluster};
use aiopsd::remediate::plan::{
    PlannedAction, PreState, WorkloadKind, WorkloadRef, ACTION_ANNOTATION, RESTARTED_AT_ANNOTATION,
};
use serde_json::{json, Value};

use support::fake_kube::{ApiCall, FakeKube, PodState};

const NS: &str = "shop";

async fn cluster_with(kube: &FakeKube, settings: ExecutorSettings) -> KubeCluster {
    aiopsd::install_crypto_provider();
    let c = client(Some(&kube.url()))
        .await
        .expect("client for the fake API");
    KubeCluster::with_settings(c, settings)
}

async fn cluster(kube: &FakeKube) -> KubeCluster {
    cluster_with(
        kube,
        ExecutorSettings {
            call_timeout: Duration::from_secs(10),
            ..ExecutorSettings::default()
        },
    )
    .await
}

fn workload(kind: WorkloadKind, name: &str) -> WorkloadRef {
    WorkloadRef {
        namespace: NS.into(),
        kind,
        name: name.into(),
    }
}

fn web() -> WorkloadRef {
    workload(WorkloadKind::Deployment, "web")
}

fn annotation(obj: &Value, key: &str) -> Option<String> {
    obj["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_string)
}

fn image(kube: &FakeKube) -> String {
    kube.field(
        "deployments",
        NS,
        "web",
        "/spec/template/spec/containers/0/image",
    )
    .and_then(|v| v.as_str().map(str::to_string))
    .expect("image")
}

fn count(calls: &[ApiCall], verb: &str, resource: &str) -> usize {
    calls
        .iter()
        .filter(|c| c.verb == verb && c.resource == resource)
        .count()
}

fn refusal(result: Result<impl std::fmt::Debug, ExecError>) -> String {
    match result {
        Err(ExecError::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn scale_uses_the_scale_subresource_records_pre_state_and_reverts() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 2, 2);
    kube.seed_pods(NS, "web", 2);
    let exec = cluster(&kube).await;

    let state = exec.observe(&web()).await.expect("observe");
    assert_eq!((state.replicas, state.ready_replicas), (2, 2));
    assert_eq!(state.revision, Some(2));
    assert_eq!(state.hpa, None);
    assert_eq!(state.namespace_pods, 2);
    assert_eq!(state.labels.get("team").map(String::as_str), Some("shop"));
    assert!(state.resource_version.is_some());

    let plan = PlannedAction::Scale {
        target: web(),
        from: 2,
        to: 4,
        via_hpa: false,
    };
    let pre = exec.pre_state(&plan).await.expect("pre-state");
    assert_eq!(
        pre,
        PreState::Replicas {
            target: web(),
            replicas: 2
        }
    );
    let done = exec.execute("act-1", &plan).await.expect("scale");
    assert!(!done.already_applied);
    assert!(done.summary.contains("2 → 4"), "{}", done.summary);
    let dep = kube.object("deployments", NS, "web").expect("deployment");
    assert_eq!(dep["spec"]["replicas"], 4);
    assert_eq!(dep["status"]["readyReplicas"], 4);
    assert_eq!(
        annotation(&dep, ACTION_ANNOTATION).as_deref(),
        Some("act-1")
    );
    assert_eq!(count(&kube.calls(), "patch", "deployments/scale"), 1);
    assert_eq!(
        exec.applied_action(&web()).await.expect("read"),
        Some("act-1".into())
    );

    let back = exec.revert("act-1-revert", &pre).await.expect("revert");
    assert!(back.summary.contains("4 → 2"), "{}", back.summary);
    assert_eq!(
        kube.field("deployments", NS, "web", "/spec/replicas"),
        Some(json!(2))
    );
    assert_eq!(
        exec.applied_action(&web()).await.expect("read").as_deref(),
        Some("act-1-revert")
    );
}

#[tokio::test]
async fn a_workload_owned_by_an_hpa_gets_its_min_replicas_raised_not_its_scale() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 2, 1);
    kube.seed_hpa(NS, "web-hpa", "Deployment", "web", 2, 6);
    let exec = cluster(&kube).await;

    let state = exec.observe(&web()).await.expect("observe");
    let hpa = state.hpa.expect("the HPA is found by its scaleTargetRef");
    assert_eq!(
        (hpa.name.as_str(), hpa.min_replicas, hpa.max_replicas),
        ("web-hpa", 2, 6)
    );

    let plan = PlannedAction::Scale {
        target: web(),
        from: 2,
        to: 4,
        via_hpa: true,
    };
    let pre = exec.pre_state(&plan).await.expect("pre-state");
    assert_eq!(
        pre,
        PreState::HpaMin {
            target: web(),
            hpa: "web-hpa".into(),
            min_replicas: 2
        }
    );
    let done = exec.execute("act-hpa", &plan).await.expect("scale via HPA");
    assert!(
        done.summary.contains("minReplicas 2 → 4"),
        "{}",
        done.summary
    );
    let hpa = kube
        .object("horizontalpodautoscalers", NS, "web-hpa")
        .expect("hpa");
    assert_eq!(hpa["spec"]["minReplicas"], 4);
    assert_eq!(
        annotation(&hpa, ACTION_ANNOTATION).as_deref(),
        Some("act-hpa")
    );
    // aiopsd and the HPA never fight: the replica count is the HPA's to move.
    assert_eq!(
        kube.field("deployments", NS, "web", "/spec/replicas"),
        Some(json!(2))
    );
    assert_eq!(count(&kube.calls(), "patch", "deployments/scale"), 0);
    assert_eq!(
        exec.applied_action(&web()).await.expect("read"),
        Some("act-hpa".into())
    );

    exec.revert("act-hpa-revert", &pre).await.expect("revert");
    assert_eq!(
        kube.field(
            "horizontalpodautoscalers",
            NS,
            "web-hpa",
            "/spec/minReplicas"
        ),
        Some(json!(2))
    );

    // Beyond the HPA's maximum: refused, nothing written.
    let too_far = PlannedAction::Scale {
        target: web(),
        from: 2,
        to: 9,
        via_hpa: true,
    };
    let reason = refusal(exec.execute("act-far", &too_far).await);
    assert!(reason.contains("at most 6 replicas"), "{reason}");
}

#[tokio::test]
async fn running_the_same_action_id_twice_changes_the_object_once() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 8, 1);
    let exec = cluster(&kube).await;

    let scale = PlannedAction::Scale {
        target: web(),
        from: 8,
        to: 10,
        via_hpa: false,
    };
    assert!(
        !exec
            .execute("act-s", &scale)
            .await
            .expect("first")
            .already_applied
    );
    let rv = kube.field("deployments", NS, "web", "/metadata/resourceVersion");
    let again = exec.execute("act-s", &scale).await.expect("second");
    assert!(again.already_applied);
    assert_eq!(
        kube.field("deployments", NS, "web", "/metadata/resourceVersion"),
        rv
    );
    assert_eq!(count(&kube.calls(), "patch", "deployments/scale"), 1);

    let restart = PlannedAction::Restart {
        target: web(),
        max_unavailable: 3,
    };
    exec.execute("act-r", &restart).await.expect("restart");
    let first = kube.object("deployments", NS, "web").expect("deployment");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        exec.execute("act-r", &restart)
            .await
            .expect("again")
            .already_applied
    );
    let second = kube.object("deployments", NS, "web").expect("deployment");
    assert_eq!(
        first, second,
        "a repeated restart must not roll the pods again"
    );
    assert_eq!(kube.revision(NS, "web"), Some(2));
}

#[tokio::test]
async fn a_crash_between_the_scale_and_its_annotation_is_completed_not_repeated() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 2, 1);
    let exec = cluster(&kube).await;
    // The scale went through, then the process died before annotating.
    kube.edit("deployments", NS, "web", |d| {
        d["spec"]["replicas"] = json!(4)
    });
    let plan = PlannedAction::Scale {
        target: web(),
        from: 2,
        to: 4,
        via_hpa: false,
    };
    exec.execute("act-c", &plan).await.expect("completes");
    assert_eq!(count(&kube.calls(), "patch", "deployments/scale"), 0);
    assert_eq!(
        exec.applied_action(&web()).await.expect("read"),
        Some("act-c".into())
    );
}

#[tokio::test]
async fn scaling_is_refused_when_someone_else_scaled_since_the_decision() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 2, 1);
    let exec = cluster(&kube).await;
    kube.edit("deployments", NS, "web", |d| {
        d["spec"]["replicas"] = json!(6)
    });
    let plan = PlannedAction::Scale {
        target: web(),
        from: 2,
        to: 4,
        via_hpa: false,
    };
    let reason = refusal(exec.execute("act-x", &plan).await);
    assert!(reason.contains("6 replicas now"), "{reason}");
    assert_eq!(
        kube.field("deployments", NS, "web", "/spec/replicas"),
        Some(json!(6))
    );
}

#[tokio::test]
async fn a_conflict_is_read_again_and_the_write_succeeds() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 2, 1);
    let exec = cluster(&kube).await;
    kube.conflict_on_next_writes(1);
    let plan = PlannedAction::Scale {
        target: web(),
        from: 2,
        to: 3,
        via_hpa: false,
    };
    exec.execute("act-409", &plan)
        .await
        .expect("succeeds after one 409");
    assert_eq!(
        kube.field("deployments", NS, "web", "/spec/replicas"),
        Some(json!(3))
    );
    let calls = kube.calls();
    assert_eq!(
        count(&calls, "patch", "deployments/scale"),
        2,
        "one 409, one success"
    );
    assert!(
        count(&calls, "get", "deployments") >= 2,
        "re-read after the conflict"
    );
}

#[tokio::test]
async fn endless_conflicts_fail_after_a_bounded_number_of_attempts() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 2, 1);
    let exec = cluster_with(
        &kube,
        ExecutorSettings {
            write_attempts: 3,
            call_timeout: Duration::from_secs(10),
            ..ExecutorSettings::default()
        },
    )
    .await;
    kube.conflict_on_next_writes(usize::MAX);
    let plan = PlannedAction::Restart {
        target: web(),
        max_unavailable: 1,
    };
    match exec.execute("act-stale", &plan).await {
        Err(e @ ExecError::Conflict { attempts: 3, .. }) => {
            assert!(e.is_retryable());
            assert!(e.to_string().contains("patch deployments shop/web"), "{e}");
        }
        other => panic!("expected a bounded conflict, got {other:?}"),
    }
    assert_eq!(count(&kube.calls(), "patch", "deployments"), 3);
    let dep = kube.object("deployments", NS, "web").expect("deployment");
    assert_eq!(annotation(&dep, ACTION_ANNOTATION), None);
}

#[tokio::test]
async fn a_forbidden_call_names_its_verb_and_resource() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 2, 1);
    let exec = cluster(&kube).await;
    kube.forbid("patch", "deployments/scale");
    let plan = PlannedAction::Scale {
        target: web(),
        from: 2,
        to: 3,
        via_hpa: false,
    };
    match exec.execute("act-403", &plan).await {
        Err(
            e @ ExecError::Forbidden {
                verb: "patch",
                resource: "deployments/scale",
                ..
            },
        ) => {
            assert!(!e.is_retryable());
            assert_eq!(e.status_code(), Some(403));
            let text = e.to_string();
            assert!(
                text.contains("cannot patch resource \"deployments/scale\""),
                "{text}"
            );
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    assert_eq!(
        kube.field("deployments", NS, "web", "/spec/replicas"),
        Some(json!(2))
    );
}

#[tokio::test]
async fn restart_sets_restarted_at_and_revert_restores_the_template() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 8, 2);
    let exec = cluster(&kube).await;
    // 25% of 8 = 2 pods at once.
    let plan = PlannedAction::Restart {
        target: web(),
        max_unavailable: 2,
    };
    let pre = exec.pre_state(&plan).await.expect("pre-state");
    assert_eq!(
        pre,
        PreState::RestartAnnotation {
            target: web(),
            restarted_at: None
        }
    );
    let done = exec.execute("act-rs", &plan).await.expect("restart");
    assert!(done.summary.contains("at most 2 pods"), "{}", done.summary);
    let dep = kube.object("deployments", NS, "web").expect("deployment");
    let at = dep["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION]
        .as_str()
        .expect("restartedAt set");
    assert!(at.ends_with('Z') && at.len() == 20, "{at}");
    assert_eq!(
        annotation(&dep, ACTION_ANNOTATION).as_deref(),
        Some("act-rs")
    );
    assert_eq!(kube.revision(NS, "web"), Some(3), "a new rollout");

    exec.revert("act-rs-revert", &pre).await.expect("revert");
    let dep = kube.object("deployments", NS, "web").expect("deployment");
    assert!(dep["spec"]["template"]["metadata"]["annotations"]
        .get(RESTARTED_AT_ANNOTATION)
        .is_none());
    // Back to revision 2's template: its ReplicaSet is reused as revision 4.
    assert_eq!(kube.revision(NS, "web"), Some(4));
    assert_eq!(kube.replica_sets(NS, "web").len(), 3);
}

#[tokio::test]
async fn restart_is_refused_when_the_strategy_takes_more_pods_down_than_allowed() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 8, 1);
    kube.seed_statefulset(NS, "db", 3);
    let exec = cluster(&kube).await;
    let rv = kube.field("deployments", NS, "web", "/metadata/resourceVersion");
    let plan = PlannedAction::Restart {
        target: web(),
        max_unavailable: 1,
    };
    let reason = refusal(exec.execute("act-wide", &plan).await);
    assert!(reason.contains("may take 2 pods down at once"), "{reason}");
    assert!(reason.contains("25%"), "{reason}");
    assert_eq!(
        kube.field("deployments", NS, "web", "/metadata/resourceVersion"),
        rv
    );

    kube.edit("deployments", NS, "web", |d| {
        d["spec"]["strategy"] = json!({"type": "Recreate"});
    });
    let reason = refusal(exec.execute("act-recreate", &plan).await);
    assert!(reason.contains("Recreate"), "{reason}");

    kube.edit("statefulsets", NS, "db", |s| {
        s["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    });
    let db = PlannedAction::Restart {
        target: workload(WorkloadKind::StatefulSet, "db"),
        max_unavailable: 1,
    };
    let reason = refusal(exec.execute("act-ondelete", &db).await);
    assert!(reason.contains("OnDelete"), "{reason}");
}

#[tokio::test]
async fn statefulsets_scale_and_daemonsets_restart_one_pod_at_a_time() {
    let kube = FakeKube::start().await;
    kube.seed_statefulset(NS, "db", 3);
    kube.seed_daemonset(NS, "agent", 5);
    let exec = cluster(&kube).await;
    let db = workload(WorkloadKind::StatefulSet, "db");
    exec.execute(
        "act-db",
        &PlannedAction::Scale {
            target: db.clone(),
            from: 3,
            to: 5,
            via_hpa: false,
        },
    )
    .await
    .expect("scale a StatefulSet");
    assert_eq!(
        kube.field("statefulsets", NS, "db", "/spec/replicas"),
        Some(json!(5))
    );
    assert_eq!(count(&kube.calls(), "patch", "statefulsets/scale"), 1);
    exec.execute(
        "act-db-r",
        &PlannedAction::Restart {
            target: db,
            max_unavailable: 1,
        },
    )
    .await
    .expect("restart a StatefulSet one pod at a time");

    let agent = workload(WorkloadKind::DaemonSet, "agent");
    let state = exec.observe(&agent).await.expect("observe");
    assert_eq!((state.replicas, state.ready_replicas), (5, 5));
    exec.execute(
        "act-ds",
        &PlannedAction::Restart {
            target: agent.clone(),
            max_unavailable: 1,
        },
    )
    .await
    .expect("restart a DaemonSet");
    assert!(kube
        .field(
            "daemonsets",
            NS,
            "agent",
            "/spec/template/metadata/annotations"
        )
        .is_some_and(|a| a.get(RESTARTED_AT_ANNOTATION).is_some()));
    let reason = refusal(
        exec.execute(
            "act-ds-scale",
            &PlannedAction::Scale {
                target: agent,
                from: 5,
                to: 6,
                via_hpa: false,
            },
        )
        .await,
    );
    assert!(reason.contains("cannot be scaled"), "{reason}");
}

#[tokio::test]
async fn eviction_honours_disruption_budgets_and_is_not_retried_blindly() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 3, 1);
    let pods = kube.seed_pods(NS, "web", 3);
    kube.seed_pdb(NS, "web-pdb", json!({"app": "web"}), 1);
    let exec = cluster(&kube).await;

    let first = PlannedAction::EvictPod {
        target: web(),
        pod: pods[0].clone(),
    };
    let pre = exec.pre_state(&first).await.expect("pre-state");
    assert!(matches!(pre, PreState::Irreversible { .. }));
    match exec.revert("nope", &pre).await {
        Err(ExecError::Irreversible { why, .. }) => assert!(why.contains("evicted"), "{why}"),
        other => panic!("expected Irreversible, got {other:?}"),
    }
    let done = exec.execute("act-ev1", &first).await.expect("evict");
    assert!(done.summary.contains("evicted"), "{}", done.summary);
    assert!(kube.object("pods", NS, &pods[0]).is_none());

    // The budget is used up: 429.
    let second = PlannedAction::EvictPod {
        target: web(),
        pod: pods[1].clone(),
    };
    match exec.execute("act-ev2", &second).await {
        Err(e @ ExecError::DisruptionBudget { .. }) => {
            assert!(!e.is_retryable());
            assert_eq!(e.status_code(), Some(429));
            let text = e.to_string();
            assert!(text.contains("disruption budget"), "{text}");
            assert!(text.contains("web-pdb"), "{text}");
        }
        other => panic!("expected DisruptionBudget, got {other:?}"),
    }
    assert!(kube.object("pods", NS, &pods[1]).is_some());
    assert_eq!(
        count(&kube.calls(), "create", "pods/eviction"),
        2,
        "one call per eviction: the 429 is not retried"
    );
    assert_eq!(
        exec.applied_action(&web()).await.expect("read"),
        Some("act-ev1".into())
    );
}

#[tokio::test]
async fn evicting_a_pod_of_another_workload_is_refused() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 2, 1);
    kube.seed_deployment(NS, "api", 2, 1);
    let api_pods = kube.seed_pods(NS, "api", 1);
    let exec = cluster(&kube).await;
    let plan = PlannedAction::EvictPod {
        target: web(),
        pod: api_pods[0].clone(),
    };
    let reason = refusal(exec.execute("act-wrong", &plan).await);
    assert!(reason.contains("not one of its pods"), "{reason}");
    assert!(kube.object("pods", NS, &api_pods[0]).is_some());
    assert_eq!(count(&kube.calls(), "create", "pods/eviction"), 0);
}

#[tokio::test]
async fn rollback_applies_the_previous_template_and_revert_rolls_forward() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 3, 3);
    let exec = cluster(&kube).await;
    assert_eq!(image(&kube), "registry.example/web:v3");
    let plan = PlannedAction::Rollback {
        target: web(),
        from_revision: 3,
        to_revision: 2,
    };
    let pre = exec.pre_state(&plan).await.expect("pre-state");
    let PreState::Template {
        revision: 3,
        template,
        ..
    } = &pre
    else {
        panic!("expected the template pre-state, got {pre:?}");
    };
    assert_eq!(
        template["spec"]["containers"][0]["image"],
        "registry.example/web:v3"
    );

    let done = exec.execute("act-rb", &plan).await.expect("rollback");
    assert!(
        done.summary.contains("revision 3") && done.summary.contains("revision 2"),
        "{}",
        done.summary
    );
    assert_eq!(image(&kube), "registry.example/web:v2");
    // The Deployment controller reuses revision 2's ReplicaSet as revision 4.
    assert_eq!(kube.revision(NS, "web"), Some(4));
    assert_eq!(kube.replica_sets(NS, "web").len(), 3);
    // No pod-template-hash leaked into the Deployment's template.
    assert!(kube
        .field(
            "deployments",
            NS,
            "web",
            "/spec/template/metadata/labels/pod-template-hash"
        )
        .is_none());

    exec.revert("act-rb-revert", &pre)
        .await
        .expect("roll forward");
    assert_eq!(image(&kube), "registry.example/web:v3");
    assert_eq!(kube.revision(NS, "web"), Some(5));
}

#[tokio::test]
async fn rollback_is_refused_without_a_previous_revision_or_when_it_is_too_old() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 2, 1);
    kube.seed_deployment(NS, "api", 2, 2);
    let exec = cluster_with(
        &kube,
        ExecutorSettings {
            rollback_max_age: Duration::from_secs(24 * 3600),
            call_timeout: Duration::from_secs(10),
            ..ExecutorSettings::default()
        },
    )
    .await;
    let none = PlannedAction::Rollback {
        target: web(),
        from_revision: 1,
        to_revision: 0,
    };
    let reason = refusal(exec.execute("act-none", &none).await);
    assert!(reason.contains("no previous revision"), "{reason}");

    let api = workload(WorkloadKind::Deployment, "api");
    let old_rs = kube.replica_sets(NS, "api")[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    kube.set_age(
        "replicasets",
        NS,
        &old_rs,
        Duration::from_secs(10 * 24 * 3600),
    );
    let plan = PlannedAction::Rollback {
        target: api.clone(),
        from_revision: 2,
        to_revision: 1,
    };
    let reason = refusal(exec.execute("act-old", &plan).await);
    assert!(reason.contains("older than the 1d 0h limit"), "{reason}");
    // Skipping a revision is never allowed either.
    let skip = PlannedAction::Rollback {
        target: api,
        from_revision: 3,
        to_revision: 1,
    };
    let reason = refusal(exec.execute("act-skip", &skip).await);
    assert!(reason.contains("revision 2 now"), "{reason}");
    assert_eq!(kube.revision(NS, "api"), Some(2));
    assert_eq!(count(&kube.calls(), "patch", "deployments"), 0);
}

#[tokio::test]
async fn resolve_finds_deployments_statefulsets_and_daemonsets() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 1, 1);
    kube.seed_statefulset(NS, "db", 1);
    kube.seed_daemonset(NS, "agent", 2);
    let exec = cluster(&kube).await;
    for (name, kind) in [
        ("web", WorkloadKind::Deployment),
        ("db", WorkloadKind::StatefulSet),
        ("agent", WorkloadKind::DaemonSet),
    ] {
        assert_eq!(
            exec.resolve(NS, name).await.expect("resolve"),
            Some(workload(kind, name))
        );
    }
    assert_eq!(exec.resolve(NS, "ghost").await.expect("resolve"), None);
    match exec
        .observe(&workload(WorkloadKind::Deployment, "ghost"))
        .await
    {
        Err(e @ ExecError::NotFound { .. }) => assert!(e.to_string().contains("shop/ghost")),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn events_are_written_on_the_target_and_a_failure_is_not_fatal() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 2, 1);
    let exec = cluster(&kube).await;
    assert!(
        exec.record_event(
            &web(),
            "ScaledUp",
            "scaled shop/web from 2 to 4 (incident 7)",
            false
        )
        .await
    );
    assert!(
        exec.record_event(&web(), "RemediationReverted", &"x".repeat(5000), true)
            .await
    );
    let events = kube.events(NS);
    assert_eq!(events.len(), 2);
    let e = &events[0];
    assert_eq!(e["regarding"]["kind"], "Deployment");
    assert_eq!(e["regarding"]["name"], "web");
    assert_eq!(e["reason"], "ScaledUp");
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["reportingController"], "aiopsd.io/remediation");
    assert!(e["note"].as_str().is_some_and(|n| n.contains("incident 7")));
    assert_eq!(events[1]["type"], "Warning");
    assert_eq!(events[1]["note"].as_str().map(str::len), Some(1024));

    kube.forbid("create", "events");
    assert!(!exec.record_event(&web(), "ScaledUp", "again", false).await);
    assert_eq!(kube.events(NS).len(), 2);
}

#[tokio::test]
async fn the_fake_server_applies_strategic_and_apply_patches_like_the_api_server() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, Patch, PatchParams};
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 2, 1);
    aiopsd::install_crypto_provider();
    let c = client(Some(&kube.url())).await.expect("client");
    let api: Api<Deployment> = Api::namespaced(c, NS);
    let strategic = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "image": "proxy:1"}]}}}});
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(&strategic),
    )
    .await
    .expect("strategic merge");
    let containers = kube
        .field("deployments", NS, "web", "/spec/template/spec/containers")
        .expect("containers");
    assert_eq!(
        containers.as_array().map(Vec::len),
        Some(2),
        "merged by name"
    );
    let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"owner": "ops"}}});
    api.patch(
        "web",
        &PatchParams::apply("aiopsd-test"),
        &Patch::Apply(&applied),
    )
    .await
    .expect("server-side apply");
    assert_eq!(
        kube.field("deployments", NS, "web", "/metadata/labels/owner"),
        Some(json!("ops"))
    );
    let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 9}});
    match api
        .patch("web", &PatchParams::default(), &Patch::Merge(&stale))
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("expected 409, got {other:?}"),
    }
}

#[tokio::test]
async fn gather_reports_pod_problems_rollouts_hpa_scaling_and_node_conditions() {
    let kube = FakeKube::start().await;
    kube.seed_deployment(NS, "web", 3, 2);
    let rs = kube
        .replica_sets(NS, "web")
        .pop()
        .expect("current ReplicaSet");
    let rs_name = rs["metadata"]["name"].as_str().expect("name").to_string();
    let labels = rs["spec"]["template"]["metadata"]["labels"].clone();
    let owner = Some(("ReplicaSet", rs_name.as_str()));
    kube.seed_pod(
        NS,
        "web-oom",
        labels.clone(),
        owner,
        PodState::OomKilled { restarts: 3 },
    );
    kube.seed_pod(
        NS,
        "web-crash",
        labels.clone(),
        owner,
        PodState::CrashLoop { restarts: 9 },
    );
    kube.seed_pod(
        NS,
        "web-pending",
        labels.clone(),
        owner,
        PodState::Unschedulable,
    );
    kube.seed_pod(NS, "web-ok", labels, owner, PodState::Ready);
    kube.seed_pod(
        NS,
        "other",
        json!({"app": "other"}),
        None,
        PodState::CrashLoop { restarts: 1 },
    );
    kube.seed_hpa(NS, "web-hpa", "Deployment", "web", 2, 8);
    kube.edit("horizontalpodautoscalers", NS, "web-hpa", |h| {
        h["status"]["lastScaleTime"] = json!(support::fake_kube::time_ago(Duration::from_secs(60)));
        h["status"]["desiredReplicas"] = json!(5);
    });
    kube.seed_node("node-a", &[("Ready", "True"), ("MemoryPressure", "True")]);

    aiopsd::install_crypto_provider();
    let c = client(Some(&kube.url())).await.expect("client");
    let now = aiopsd::signal::now_ms();
    let mut bundle = EvidenceBundle::default();
    let added = gather_workload(&c, &web(), now - 3_600_000, now, &mut bundle).await;
    assert_eq!(added, bundle.items.len());
    assert!(bundle.gaps.is_empty(), "{:?}", bundle.gaps);
    let mut problems: Vec<(String, PodProblem)> = bundle
        .items
        .iter()
        .filter_map(|i| match &i.detail {
            EvidenceDetail::Pod { pod, problem, .. } => Some((pod.clone(), *problem)),
            _ => None,
        })
        .collect();
    problems.sort();
    assert_eq!(
        problems,
        [
            ("web-crash".to_string(), PodProblem::CrashLoopBackOff),
            ("web-oom".to_string(), PodProblem::OomKilled),
            ("web-pending".to_string(), PodProblem::Unschedulable),
        ]
    );
    let changes: Vec<String> = bundle
        .items
        .iter()
        .filter(|i| i.source == EvidenceSource::Change)
        .map(|i| i.summary.clone())
        .collect();
    assert_eq!(
        changes.len(),
        3,
        "two rollouts in the hour and the HPA: {changes:?}"
    );
    assert!(
        changes.iter().any(|s| s.contains("revision 2")),
        "{changes:?}"
    );
    assert!(
        changes.iter().any(|s| s.contains("HPA web-hpa")),
        "{changes:?}"
    );
    assert!(bundle.items.iter().any(|i| matches!(&i.detail,
        EvidenceDetail::Node { node, condition } if node == "node-a" && condition == "MemoryPressure")));
    assert!(bundle.get("p1").is_some() && bundle.get("n1").is_some());

    // Without node access (the namespaced install), the bundle says so.
    kube.forbid("get", "nodes");
    let mut bundle = EvidenceBundle::default();
    gather_workload(&c, &web(), now - 3_600_000, now, &mut bundle).await;
    assert!(
        bundle
            .gaps
            .iter()
            .any(|g| g.contains("node-a") && g.contains("403")),
        "{:?}",
        bundle.gaps
    );
    assert!(bundle.items.iter().any(|i| i.source == EvidenceSource::Pod));
}
