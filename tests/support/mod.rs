//! Helpers shared by the integration tests.
//!
//! - [`fake_kube`]: an in-process Kubernetes API server (Leases,
//!   Deployments and their scale subresource, StatefulSets, DaemonSets,
//!   ReplicaSets, Pods and evictions with PDB 429s, HPAs, Events, Nodes,
//!   ConfigMaps; merge/strategic/apply patches, resourceVersion and 409s,
//!   403s) that records every call in RBAC terms, for leader election,
//!   remediation and the RBAC test.
//! - [`fake_openai`]: an OpenAI-compatible `/v1/chat/completions` server
//!   with scripted answers and error bodies, recording each request.
//! - [`fake_elastic`]: an in-process Elasticsearch speaking PIT,
//!   `_search` with `search_after` and its error wire formats, recording
//!   requests.
//! - [`browser`]: headless Chromium through chromedriver (WebDriver) for
//!   the UI tests, with screenshots.
//! - [`fake_prometheus`]: an in-process HTTP server speaking Prometheus's
//!   query API wire format, with switchable failure modes (down, refusing
//!   connections, slow, erroring) and a record of the queries it received.
//! - [`real_prometheus`]: the Debian `prometheus` binary started through
//!   `scripts/prometheus-start.sh` on a free loopback port, optionally
//!   preloaded with OpenMetrics data; stopped when the guard drops.
//! - [`real_mosquitto`]: the Debian `mosquitto` broker started through
//!   `scripts/mosquitto-start.sh` on a free loopback port, with stop and
//!   restart on the same port (a broker outage); stopped when dropped.
//! - [`real_alertmanager`]: the Debian `prometheus-alertmanager` binary
//!   started through `scripts/alertmanager-start.sh` on a free loopback port
//!   with a given config, gossip off; stopped when the guard drops.
//! - [`script_server`]: what those two share: a server run by its
//!   `scripts/NAME-start.sh` in a temporary directory on a free port (with
//!   retries), stopped by `NAME-stop.sh` on drop.
//! - [`openmetrics`]: writes OpenMetrics files (series with known shapes,
//!   such as a step anomaly) for `promtool tsdb create-blocks-from openmetrics`.
//! - [`webhook_receiver`]: an in-process HTTP receiver for the webhook
//!   sink that records each POST and answers as scripted (5xx, 429, 400).
//! - [`incidents`]: the sample incident the event-sink tests publish.
//! - [`daemon`]: the `aiopsd run` binary as a child process with its API.
//!
//! Use from a test file with `mod support;`.

// Each test binary compiles this module but uses only part of it.
#![allow(dead_code)]

pub mod browser;
pub mod daemon;
pub mod fake_elastic;
pub mod fake_kube;
pub mod fake_openai;
pub mod fake_prometheus;
pub mod incidents;
pub mod openmetrics;
pub mod real_alertmanager;
pub mod real_mosquitto;
pub mod real_prometheus;
pub mod script_server;
pub mod webhook_receiver;

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before returning, so another process may take it
/// first; callers that start servers on it should retry with a new port when
/// binding fails ([`script_server::ScriptServer::start`] does).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port on 127.0.0.1")
}

/// Polls `condition` every 20 ms until it holds; false after `timeout`.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Awaits `future` for at most `timeout`, panicking with `what` if it takes longer.
pub async fn within<T>(timeout: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// The value of one sample line in OpenMetrics/Prometheus text, e.g.
/// `metric_value(&text, r#"aiopsd_poll_errors_total{signal="errors"}"#)`.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}
