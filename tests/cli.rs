//! The `aiopsd` binary as a user runs it: demo, config check, help.

use std::path::Path;
use std::process::{Command, Output};

fn aiopsd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aiopsd"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("aiopsd binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn demo_once_detects_the_injected_fault_and_writes_its_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let started = std::time::Instant::now();
    let out = aiopsd(&[
        "demo",
        "--once",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir,
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the demo must finish well under a minute"
    );
    assert!(stdout.contains("Detected: incident #"), "{stdout}");
    assert!(stdout.contains("checkout (demo)"), "{stdout}");
    assert!(
        stdout.contains("other incidents (false alarms): 0"),
        "the healthy service must not be flagged:\n{stdout}"
    );

    let report_path = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("report:"))
        .map(|p| p.trim().to_string())
        .expect("demo prints the report path");
    let report = std::fs::read_to_string(&report_path).expect("report file exists");
    // The report names the injected fault: the service, the namespace and
    // both signals the fault moved.
    for needle in ["checkout", "demo", "error_ratio", "latency_p99_seconds"] {
        assert!(
            report.contains(needle),
            "report lacks {needle:?}:\n{report}"
        );
    }
    assert!(Path::new(data_dir).join("aiopsd-demo.db").exists());

    // The slow memory leak is predicted before it breaches, restarted ahead
    // of the out-of-memory under the demo policy, and the prediction clears.
    let predicted = stdout
        .split("Predicted: incident #")
        .nth(1)
        .expect("the leak is predicted");
    let predicted = predicted.split("\n\n").next().unwrap_or_default();
    assert!(predicted.contains("orders (demo)"), "{predicted}");
    assert!(
        predicted.contains("memory_working_set_bytes of orders (demo) reaches its 1 GiB limit"),
        "{predicted}"
    );
    assert!(
        predicted.contains("restart-ahead-of-predicted-oom-in-demo"),
        "{predicted}"
    );
    assert!(predicted.contains("state resolved"), "{predicted}");
    assert!(predicted.contains("no longer predicted"), "{predicted}");

    // The growing service's capacity plan says when to scale.
    assert!(stdout.contains("cpu capacity runs out from"), "{stdout}");
    let plan = std::fs::read_to_string(Path::new(data_dir).join("capacity-search.md"))
        .expect("capacity plan written");
    assert!(plan.contains("## Capacity plan: `search`"), "{plan}");
}

#[test]
fn config_check_accepts_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/aiopsd.yaml");
    let out = aiopsd(&["config", "check", example]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(": ok"));
}

#[test]
fn config_check_names_each_bad_field_and_exits_2() {
    let cases: &[(&str, &[&str])] = &[
        (
            "prometheus:\n  url: http://127.0.0.1:9090\n  timeout: 10 parsecs\n",
            &["prometheus.timeout:", "10 parsecs"],
        ),
        (
            "prometheus:\n  url: http://127.0.0.1:9090\nsignals:\n  - name: cpu\n    query: 'up{$selector}'\n    extra: 1\n",
            &["signals[0].extra: unknown field"],
        ),
        (
            "server:\n  listen: 0.0.0.0:9464\nincidents:\n  resolve_after: 0s\n",
            &["server.api_token: required", "incidents.resolve_after: must be more than 0s"],
        ),
        (
            "prometheus:\n  url: http://127.0.0.1:9090\nsignals:\n  - name: cpu\n    query: 'rate(cpu_total{$selector}[5m])'\n    selectors:\n      service: 'x\"} or vector(1) or up{a=\"'\n",
            &["signals[0].selectors", "service"],
        ),
        ("prometheus: [unclosed\n", &["invalid YAML", "line"]),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    for (i, (yaml, needles)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&file, yaml).expect("write config");
        let out = aiopsd(&["config", "check", file.to_str().expect("utf-8 path")]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {stderr}");
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "case {i}: missing {needle:?} in:\n{stderr}"
            );
        }
    }
}

#[test]
fn config_check_of_a_missing_file_says_so() {
    let out = aiopsd(&["config", "check", "/nonexistent/aiopsd.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read config file /nonexistent/aiopsd.yaml"));
}

#[test]
fn help_has_examples_and_version_is_the_crate_version() {
    let help = text(&aiopsd(&["--help"]).stdout);
    assert!(
        help.contains("Examples:") && help.contains("aiopsd demo"),
        "{help}"
    );
    let version = text(&aiopsd(&["--version"]).stdout);
    assert_eq!(
        version.trim(),
        format!("aiopsd {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn logs_templates_prints_counts_and_assigns_one_id_per_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("app.log");
    let ids = dir.path().join("app.ids");
    std::fs::write(
        &log,
        b"Accepted password for root from 10.0.0.1 port 22\n\
          Connection closed by 10.0.0.1\n\
          Accepted password for bob from 10.0.0.2 port 4022\r\n\
          \xff broken \xfe\n",
    )
    .expect("write log");
    let out = aiopsd(&[
        "logs",
        "templates",
        log.to_str().expect("utf-8 path"),
        "--assign",
        ids.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    assert_eq!(
        first, "2\tT1\tAccepted password for <*> from <*> port <*>",
        "{stdout}"
    );
    let assigned = std::fs::read_to_string(&ids).expect("ids written");
    assert_eq!(
        assigned.lines().collect::<Vec<_>>(),
        ["T1", "T2", "T1", "T3"]
    );
    assert!(
        text(&out.stderr).contains("1 lines not UTF-8"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn logs_templates_of_a_missing_file_names_it() {
    let out = aiopsd(&["logs", "templates", "/nonexistent/app.log"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/nonexistent/app.log"),
        "{}",
        text(&out.stderr)
    );
}
