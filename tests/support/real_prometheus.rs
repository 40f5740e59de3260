//! A real Prometheus server (the Debian `prometheus` binary) for a test.
//!
//! Started through `scripts/prometheus-start.sh` on a free loopback port
//! with its own temporary directory, so tests can run in parallel; stopped
//! through `scripts/prometheus-stop.sh` when the guard drops — also when the
//! test panics. If the test binary is killed outright, the start script's
//! watchdog stops the server once this process is gone. The mechanism is
//! [`ScriptServer`]'s; this adds the OpenMetrics backfill and the URL.

use std::ffi::OsString;
use std::path::Path;

use super::openmetrics::{self, Family};
use super::script_server::ScriptServer;

/// A running Prometheus; stopped on drop.
pub struct RealPrometheus {
    server: ScriptServer,
}

impl RealPrometheus {
    /// Starts an empty Prometheus and waits until it is ready.
    ///
    /// Blocks (a few seconds at most); from async tests call it from a
    /// multi-thread runtime or `spawn_blocking`. Panics with the server's
    /// log if it does not come up — this is test support.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Writes `families` as OpenMetrics, backfills them with promtool into
    /// the new server's data dir, then starts it: the data is queryable as
    /// soon as this returns.
    pub fn start_with(families: &[Family]) -> Self {
        let file = tempfile::Builder::new()
            .prefix("aiopsd-openmetrics-")
            .suffix(".txt")
            .tempfile()
            .expect("temp file for OpenMetrics data");
        openmetrics::write(file.path(), families).expect("write OpenMetrics data");
        Self::start_inner(Some(file.path()))
    }

    /// Starts a server preloaded with an existing OpenMetrics file.
    pub fn start_with_file(openmetrics: &Path) -> Self {
        Self::start_inner(Some(openmetrics))
    }

    /// Starts a server on the given `prometheus.yml` (scrape targets,
    /// `rule_files` with absolute paths, Alertmanagers) instead of the
    /// default one without scrapes.
    pub fn start_with_config(config: &Path) -> Self {
        RealPrometheus {
            server: ScriptServer::start("prometheus", &["--config".into(), config.into()]),
        }
    }

    fn start_inner(openmetrics: Option<&Path>) -> Self {
        let extra: Vec<OsString> = match openmetrics {
            Some(file) => vec!["--openmetrics".into(), file.into()],
            None => Vec::new(),
        };
        RealPrometheus {
            server: ScriptServer::start("prometheus", &extra),
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Its working directory (data/, prometheus.yml, prometheus.log, prometheus.pid).
    pub fn dir(&self) -> &Path {
        self.server.dir()
    }

    /// The PID of the server process.
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        self.server.log()
    }
}
