//! Policy files on disk: what an operator sees when a file is wrong, that
//! the shipped policies load, that a bad edit never replaces a good
//! policy, and the `policy check` / `policy explain` tools.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aiopsd::incident::{Incident, IncidentState, Peak, Severity, SignalEvidence};
use aiopsd::policy::{check_dir, explain, Mode, PolicyReloader, PolicySet, ReloadOutcome};
use aiopsd::signal::{Sample, SeriesKey};
use indoc::indoc;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write policy");
    path
}

const GOOD: &str = indoc! {"
    apiVersion: aiopsd.io/v1
    kind: Policy
    rules:
      - name: restart-cart
        match: { workloads: { names: [cart] } }
        action: { restart: {} }
"};

#[test]
fn malformed_files_are_reported_with_file_line_and_field_all_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "a-good.yaml", GOOD);
    let bad_type = write(
        dir.path(),
        "b-type.yaml",
        indoc! {"
            apiVersion: aiopsd.io/v1
            kind: Policy
            rules:
              - name: first
                action: { restart: {} }
              - name: second
                match:
                  namespaces: { allow: [shop] }
                action:
                  scale:
                    by: 1
                    max_replicas: ten
        "},
    );
    let bad_meaning = write(
        dir.path(),
        "c-meaning.yml",
        indoc! {r#"
            apiVersion: aiopsd.io/v1
            kind: Policy
            rules:
              - name: scale
                condition: "incident.severity == 'critical' &&"
                action:
                  scale: { to: 3, min_replicas: 4, max_replicas: 2 }
                limits:
                  mode: sometimes
        "#},
    );
    let unknown = write(
        dir.path(),
        "d-unknown.yaml",
        indoc! {"
            apiVersion: aiopsd.io/v1
            kind: Policy
            rules:
              - name: x
                action: { restart: {} }
                limits: { cooldown: 5m, max_per_hour: 3 }
        "},
    );
    // Not a policy file: ignored.
    write(dir.path(), "README.md", "# notes\n");

    let errors = PolicySet::load_dir(dir.path()).expect_err("bad files");
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    let d = |p: &PathBuf| p.display().to_string();
    assert_eq!(
        lines[0],
        format!(
            "{}:12: rules[1].action.scale.max_replicas: expected an integer",
            d(&bad_type)
        )
    );
    // `mode: sometimes` is a type error: the parser stops at it, so this
    // file reports it alone (the semantic checks need a parsed file).
    assert!(
        lines[1].starts_with(&format!(
            "{}:9: rules[0].limits.mode: unknown variant `sometimes`, expected one of",
            d(&bad_meaning)
        )),
        "{lines:#?}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{}:6: rules[0].limits.max_per_hour: unknown field `max_per_hour`",
            d(&unknown)
        )),
        "{lines:#?}"
    );
    assert_eq!(lines.len(), 3, "{lines:#?}");

    // With the type error fixed, every semantic problem of the file shows.
    let text = std::fs::read_to_string(&bad_meaning).expect("read");
    std::fs::write(&bad_meaning, text.replace("sometimes", "auto")).expect("write");
    let errors = PolicySet::load_dir(dir.path()).expect_err("still bad");
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    let m = d(&bad_meaning);
    for want in [
        format!("{m}:5: rules[0].condition: at column 35: expected a value, found end of expression"),
        format!("{m}:7: rules[0].action.scale.max_replicas: must be at least min_replicas (4), found 2"),
        format!("{m}:7: rules[0].action.scale.to: must be within min_replicas..=max_replicas (4..=2), found 3"),
    ] {
        assert!(lines.contains(&want), "missing {want:?} in {lines:#?}");
    }
    // check_dir is the same report.
    let report = check_dir(dir.path()).expect_err("bad").to_string();
    assert!(
        report.contains(&format!("{m}:7: rules[0].action.scale.max_replicas")),
        "{report}"
    );
}

#[test]
fn the_shipped_policies_load_and_default_to_dry_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let set = PolicySet::load_dir(&root).unwrap_or_else(|e| panic!("{e}"));
    assert!(!set.rules().is_empty());
    for rule in set.rules() {
        assert_eq!(
            rule.mode(),
            Mode::DryRun,
            "{} must ship in dry_run",
            rule.id()
        );
        assert!(rule.id().starts_with("default.yaml:"), "{}", rule.id());
    }
    let examples = root.join("examples");
    let set = PolicySet::load_dir(&examples).unwrap_or_else(|e| panic!("{e}"));
    assert!(set.files().len() >= 5, "{:?}", set.files());
    let summary = check_dir(&examples).unwrap_or_else(|e| panic!("{e}"));
    assert!(summary.contains("freeze-window.yaml:freeze"), "{summary}");
    assert!(
        summary.contains("scale-on-saturation.yaml:scale-web-on-cpu"),
        "{summary}"
    );
}

#[test]
fn a_bad_edit_keeps_the_last_good_set_and_says_why_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "p.yaml", GOOD);
    let mut reloader = PolicyReloader::new(dir.path()).expect("loads");
    let good = reloader.current().version().to_string();
    assert_eq!(reloader.reload_if_changed(), ReloadOutcome::Unchanged);

    std::fs::write(
        &file,
        GOOD.replace("restart: {}", "restart: { max_unavailable: -1 }"),
    )
    .expect("edit");
    match reloader.reload_if_changed() {
        ReloadOutcome::Rejected(e) => {
            let text = e.to_string();
            assert!(
                text.starts_with(&format!(
                    "{}:6: rules[0].action.restart.max_unavailable:",
                    file.display()
                )),
                "{text}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(reloader.current().version(), good, "last good set kept");
    assert_eq!(reloader.current().rules().len(), 1);
    assert!(reloader.last_error().is_some());
    // Reported once, not on every poll.
    assert_eq!(reloader.reload_if_changed(), ReloadOutcome::Unchanged);

    std::fs::write(
        &file,
        GOOD.replace("names: [cart]", "names: [cart, orders]"),
    )
    .expect("fix");
    match reloader.reload_if_changed() {
        ReloadOutcome::Reloaded { version, rules } => {
            assert_ne!(version, good);
            assert_eq!(rules, 1);
        }
        other => panic!("expected a reload, got {other:?}"),
    }
    assert!(reloader.last_error().is_none());

    // A second file joining is picked up too.
    write(
        dir.path(),
        "q.yaml",
        &GOOD.replace("restart-cart", "restart-more"),
    );
    assert!(matches!(
        reloader.reload_if_changed(),
        ReloadOutcome::Reloaded { rules: 2, .. }
    ));
}

#[test]
fn a_daemon_can_start_deny_all_and_load_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "p.yaml",
        "apiVersion: aiopsd.io/v1\nkind: Policy\nrules: [",
    );
    let mut reloader = PolicyReloader::deny_all_until_loaded(dir.path());
    assert!(matches!(
        reloader.reload_if_changed(),
        ReloadOutcome::Rejected(_)
    ));
    assert!(reloader.current().rules().is_empty());
    std::fs::write(&file, GOOD).expect("fix");
    assert!(matches!(
        reloader.reload_if_changed(),
        ReloadOutcome::Reloaded { rules: 1, .. }
    ));
}

fn incident() -> Incident {
    let group: BTreeMap<String, String> = [("namespace", "shop"), ("service", "cart")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let t0 = 1_795_428_000_000;
    Incident {
        id: Some(42),
        cluster: "test".into(),
        group: group.clone(),
        state: IncidentState::Open,
        severity: Severity::Critical,
        opened_at: t0 - 600_000,
        last_anomaly_at: t0 - 60_000,
        resolved_at: None,
        anomaly_count: 3,
        signals: vec![SignalEvidence {
            series: SeriesKey::new("memory_usage", group),
            first_at: t0 - 600_000,
            last_at: t0 - 60_000,
            anomaly_count: 3,
            peak: Peak {
                t: t0 - 60_000,
                value: 0.9,
                expected: 0.5,
                spread: 0.05,
                score: 8.0,
            },
            samples: vec![Sample { t: t0, v: 0.9 }],
            anomalous_at: vec![t0 - 60_000],
        }],
        alerts: Vec::new(),
        diagnosis: None,
        decisions: Vec::new(),
        logs: Vec::new(),
        prediction: None,
        timeline: Vec::new(),
    }
}

#[test]
fn explain_prints_the_decision_and_says_what_it_assumed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("incident.json");
    std::fs::write(&path, serde_json::to_string(&incident()).expect("json")).expect("write");
    let set = PolicySet::from_yaml("p.yaml", GOOD).expect("loads");

    let out = explain(&set, &path, None, None).expect("explains");
    assert!(
        out.contains("Decision: dry_run by p.yaml:restart-cart"),
        "{out}"
    );
    assert!(
        out.contains("Action: rolling restart of shop/Deployment/cart"),
        "{out}"
    );
    assert!(
        out.contains("derived from the incident's group labels"),
        "{out}"
    );

    // An hour later the same evidence is stale.
    let later = 1_795_428_000_000 + 3_600_000;
    let out = explain(&set, &path, None, Some(later)).expect("explains");
    assert!(
        out.contains("Decision: refused by p.yaml:restart-cart"),
        "{out}"
    );
    assert!(out.contains("limits.max_data_age: stale data"), "{out}");

    let err = explain(&set, &dir.path().join("missing.json"), None, None).expect_err("no file");
    assert!(err.to_string().contains("missing.json"), "{err}");
}
