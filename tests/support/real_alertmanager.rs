//! A real Alertmanager (the Debian `prometheus-alertmanager` binary) for a
//! test.
//!
//! Started through `scripts/alertmanager-start.sh` on a free loopback port
//! with its own temporary directory and gossip off, so tests can run in
//! parallel; stopped through `scripts/alertmanager-stop.sh` when the guard
//! drops — also when the test panics. The mechanism is [`ScriptServer`]'s;
//! this adds the config file and the URL.

use std::path::Path;

use super::script_server::ScriptServer;

/// A running Alertmanager; stopped on drop.
pub struct RealAlertmanager {
    server: ScriptServer,
}

impl RealAlertmanager {
    /// Starts Alertmanager with `config_yaml` (routes and receivers) and
    /// waits until it is ready.
    ///
    /// Blocks (a second or two); from async tests call it from a
    /// multi-thread runtime or `spawn_blocking`. Panics with the script's
    /// output if it does not come up — this is test support.
    pub fn start(config_yaml: &str) -> Self {
        let file = tempfile::Builder::new()
            .prefix("aiopsd-alertmanager-")
            .suffix(".yml")
            .tempfile()
            .expect("temp file for the Alertmanager config");
        std::fs::write(file.path(), config_yaml).expect("write the Alertmanager config");
        // The start script copies the file into the server's directory, so
        // the temp file may go when this returns.
        RealAlertmanager {
            server: ScriptServer::start("alertmanager", &["--config".into(), file.path().into()]),
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

    /// Its working directory (data/, alertmanager.yml, alertmanager.log, alertmanager.pid).
    pub fn dir(&self) -> &Path {
        self.server.dir()
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        self.server.log()
    }
}
