//! A real Prometheus server (the Debian `prometheus` binary) for a test.
//!
//! Started through `scripts/prometheus-start.sh` on a free loopback port
//! with its own temporary directory, so tests can run in parallel; stopped
//! through `scripts/prometheus-stop.sh` when the guard drops — also when the
//! test panics. If the test binary is killed outright, the start script's
//! watchdog stops the server once this process is gone.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::free_port;
use super::openmetrics::{self, Family};

/// A running Prometheus; stopped on drop.
pub struct RealPrometheus {
    dir: tempfile::TempDir,
    port: u16,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
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

    fn start_inner(openmetrics: Option<&Path>) -> Self {
        let mut last_error = String::new();
        // A free port can be taken between picking and binding; try a few.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("aiopsd-prometheus-")
                .tempdir()
                .expect("temp dir for Prometheus");
            let port = free_port();
            let mut cmd = Command::new(script("prometheus-start.sh"));
            cmd.arg("--dir")
                .arg(dir.path())
                .arg("--port")
                .arg(port.to_string())
                .arg("--owner-pid")
                .arg(std::process::id().to_string());
            if let Some(file) = openmetrics {
                cmd.arg("--openmetrics").arg(file);
            }
            let out = cmd.output().expect("run scripts/prometheus-start.sh");
            // Construct the guard before checking, so a half-started server is stopped.
            let guard = RealPrometheus { dir, port };
            if out.status.success() {
                return guard;
            }
            last_error = format!(
                "exit {:?}\nstdout:\n{}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.code() == Some(5) {
                break; // promtool refused the data: retrying will not help
            }
        }
        panic!("Prometheus did not start: {last_error}");
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its working directory (data/, prometheus.yml, prometheus.log, prometheus.pid).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PID of the server process.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("prometheus.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for RealPrometheus {
    fn drop(&mut self) {
        let status = Command::new(script("prometheus-stop.sh"))
            .arg("--dir")
            .arg(self.dir.path())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "prometheus-stop.sh failed for {}: {status:?}",
                self.dir.path().display()
            );
        }
    }
}
