//! A real Mosquitto broker (the Debian `mosquitto` binary) for a test.
//!
//! Started through `scripts/mosquitto-start.sh` on a free loopback port with
//! its own temporary directory, so tests can run in parallel; stopped through
//! `scripts/mosquitto-stop.sh` when the guard drops — also when the test
//! panics. If the test binary is killed outright, the start script's
//! watchdog stops the broker once this process is gone. The mechanism is
//! [`ScriptServer`]'s; this adds the URL and the outage (stop, restart).
//!
//! [`RealMosquitto::stop`] and [`RealMosquitto::restart`] take the broker
//! away and bring it back *on the same port with the same persistence
//! file*, which is how tests simulate a broker outage.

use std::time::Duration;

use super::script_server::ScriptServer;

/// A running (or deliberately stopped) Mosquitto; stopped on drop.
pub struct RealMosquitto {
    server: ScriptServer,
}

impl RealMosquitto {
    /// Starts a broker and waits until it accepts connections.
    ///
    /// Blocks (well under a second); from async tests call it from a
    /// multi-thread runtime or `spawn_blocking`. Panics with the broker's
    /// log if it does not come up — this is test support.
    pub fn start() -> Self {
        RealMosquitto {
            server: ScriptServer::start("mosquitto", &[]),
        }
    }

    /// Stops the broker (SIGTERM: it saves its persistence file); the port
    /// refuses connections until [`restart`](Self::restart).
    pub fn stop(&self) {
        if let Err(e) = self.server.stop() {
            panic!("{e}");
        }
    }

    /// Starts the broker again on the same port and data directory.
    pub fn restart(&self) {
        // The old socket may linger for a moment; retry briefly.
        let mut last = String::new();
        for _ in 0..20 {
            match self.server.run_start(&[]) {
                Ok(()) => return,
                Err((_, e)) => last = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("Mosquitto did not restart on port {}: {last}", self.port());
    }

    /// Broker URL, e.g. `mqtt://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port())
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The broker's log so far, for failure messages.
    pub fn log(&self) -> String {
        self.server.log()
    }
}
