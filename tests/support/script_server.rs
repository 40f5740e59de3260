//! The mechanism [`real_prometheus`](super::real_prometheus) and
//! [`real_mosquitto`](super::real_mosquitto) share: a server run by
//! `scripts/NAME-start.sh` on a free loopback port with its own temporary
//! directory (so tests can run in parallel), and stopped by
//! `scripts/NAME-stop.sh` when the guard drops — also when the test panics.
//! Both scripts source `scripts/lib/service.sh`, which fixes the layout of
//! the directory (`NAME.pid`, `NAME.log`) and the start script's watchdog
//! (`--owner-pid`): if the test binary is killed outright, the server stops
//! once this process is gone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::free_port;

/// A server started by `scripts/NAME-start.sh`; stopped on drop.
pub struct ScriptServer {
    name: &'static str,
    dir: tempfile::TempDir,
    port: u16,
}

/// Exit code of a start script when the port was fine but its input was not
/// (prometheus-start.sh: promtool refused the data): another port will not help.
const EXIT_BAD_INPUT: i32 = 5;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

impl ScriptServer {
    /// Runs `scripts/NAME-start.sh --dir D --port P --owner-pid ME EXTRA...`
    /// in a new temporary directory on a free port and returns once the
    /// script says the server is ready.
    ///
    /// A free port can be taken between picking and binding, so this tries
    /// three ports. Panics with the script's output if none works — this is
    /// test support.
    pub fn start(name: &'static str, extra_args: &[OsString]) -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix(&format!("aiopsd-{name}-"))
                .tempdir()
                .unwrap_or_else(|e| panic!("temp dir for {name}: {e}"));
            // The guard exists before the script runs, so a half-started
            // server is stopped when it drops.
            let guard = ScriptServer {
                name,
                dir,
                port: free_port(),
            };
            match guard.run_start(extra_args) {
                Ok(()) => return guard,
                Err((code, e)) => {
                    last_error = e;
                    if code == Some(EXIT_BAD_INPUT) {
                        break;
                    }
                }
            }
        }
        panic!("{name} did not start: {last_error}");
    }

    /// Runs the start script again on the same port and directory (after
    /// [`stop`](Self::stop)); on failure, the exit code and the script's
    /// output.
    pub fn run_start(&self, extra_args: &[OsString]) -> Result<(), (Option<i32>, String)> {
        let start = format!("{}-start.sh", self.name);
        let out = Command::new(script(&start))
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--owner-pid")
            .arg(std::process::id().to_string())
            .args(extra_args)
            .output()
            .map_err(|e| (None, format!("cannot run scripts/{start}: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err((
                out.status.code(),
                format!(
                    "exit {:?}\nstdout:\n{}\nstderr:\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ))
        }
    }

    /// Runs `scripts/NAME-stop.sh --dir D`; Err with a message if it fails.
    pub fn stop(&self) -> Result<(), String> {
        let stop = format!("{}-stop.sh", self.name);
        let status = Command::new(script(&stop))
            .arg("--dir")
            .arg(self.dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Ok(()),
            _ => Err(format!(
                "{stop} failed for {}: {status:?}",
                self.dir.path().display()
            )),
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's PID, from `NAME.pid` (None once stopped).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join(format!("{}.pid", self.name)))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The server's log so far (`NAME.log`), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.name)))
            .unwrap_or_default()
    }
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("{e}");
        }
    }
}
