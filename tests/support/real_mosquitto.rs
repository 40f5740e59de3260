//! A real Mosquitto broker (the Debian `mosquitto` binary) for a test.
//!
//! Started through `scripts/mosquitto-start.sh` on a free loopback port with
//! its own temporary directory, so tests can run in parallel; stopped through
//! `scripts/mosquitto-stop.sh` when the guard drops — also when the test
//! panics. If the test binary is killed outright, the start script's
//! watchdog stops the broker once this process is gone.
//!
//! [`RealMosquitto::stop`] and [`RealMosquitto::restart`] take the broker
//! away and bring it back *on the same port with the same persistence
//! file*, which is how tests simulate a broker outage.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::free_port;

/// A running (or deliberately stopped) Mosquitto; stopped on drop.
pub struct RealMosquitto {
    dir: tempfile::TempDir,
    port: u16,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

impl RealMosquitto {
    /// Starts a broker and waits until it accepts connections.
    ///
    /// Blocks (well under a second); from async tests call it from a
    /// multi-thread runtime or `spawn_blocking`. Panics with the broker's
    /// log if it does not come up — this is test support.
    pub fn start() -> Self {
        let mut last_error = String::new();
        // A free port can be taken between picking and binding; try a few.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("aiopsd-mosquitto-")
                .tempdir()
                .expect("temp dir for Mosquitto");
            let guard = RealMosquitto {
                dir,
                port: free_port(),
            };
            match guard.run_start() {
                Ok(()) => return guard,
                Err(e) => last_error = e,
            }
        }
        panic!("Mosquitto did not start: {last_error}");
    }

    fn run_start(&self) -> Result<(), String> {
        let out = Command::new(script("mosquitto-start.sh"))
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--owner-pid")
            .arg(std::process::id().to_string())
            .output()
            .map_err(|e| format!("cannot run scripts/mosquitto-start.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "exit {:?}\nstdout:\n{}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Stops the broker (SIGTERM: it saves its persistence file); the port
    /// refuses connections until [`restart`](Self::restart).
    pub fn stop(&self) {
        let status = Command::new(script("mosquitto-stop.sh"))
            .arg("--dir")
            .arg(self.dir.path())
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "mosquitto-stop.sh failed: {status:?}"
        );
    }

    /// Starts the broker again on the same port and data directory.
    pub fn restart(&self) {
        // The old socket may linger for a moment; retry briefly.
        let mut last = String::new();
        for _ in 0..20 {
            match self.run_start() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        panic!("Mosquitto did not restart on port {}: {last}", self.port);
    }

    /// Broker URL, e.g. `mqtt://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for RealMosquitto {
    fn drop(&mut self) {
        let status = Command::new(script("mosquitto-stop.sh"))
            .arg("--dir")
            .arg(self.dir.path())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "mosquitto-stop.sh failed for {}: {status:?}",
                self.dir.path().display()
            );
        }
    }
}
