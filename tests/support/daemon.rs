//! The `aiopsd run` binary as a child process, for end-to-end tests.
//!
//! Writes the config into a temp dir, starts the binary with its log going
//! to a file there, talks to its HTTP API over loopback, stops it with
//! SIGTERM like Kubernetes would, and kills it on drop so a failing test
//! never leaves a daemon behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `aiopsd run`; killed on drop if still running.
pub struct Daemon {
    child: Option<Child>,
    /// Base URL of its HTTP server, e.g. `http://127.0.0.1:41234`.
    pub base: String,
    log: PathBuf,
}

impl Daemon {
    /// Writes `config_yaml` to `dir/aiopsd.yaml` and starts the daemon on it.
    /// `listen` must match `server.listen` in the YAML.
    pub fn start(dir: &Path, config_yaml: &str, listen: std::net::SocketAddr) -> Self {
        let config = dir.join("aiopsd.yaml");
        std::fs::write(&config, config_yaml).expect("write daemon config");
        let log = dir.join(format!("aiopsd-{}.log", super::free_port()));
        let log_file = std::fs::File::create(&log).expect("create daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_aiopsd"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,aiopsd=debug")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start aiopsd");
        Self {
            child: Some(child),
            base: format!("http://{listen}"),
            log,
        }
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path`; `None` while the server does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        let response = client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body = response.text().await.ok()?;
        Some((status, body))
    }

    /// GET `path` and parse the JSON body; panics on a non-200 answer.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).await.expect("daemon answers");
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON body")
    }

    /// Polls `GET path` until `accept(status, body)` holds; panics with the
    /// daemon's log after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        path: &str,
        timeout: Duration,
        mut accept: impl FnMut(u16, &str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((status, body)) = self.get(path).await {
                if accept(status, &body) {
                    return body;
                }
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; daemon log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits (up to 30 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon still running");
        // The shell's builtin `kill`: present even where procps is not.
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", child.id())])
            .status()
            .expect("send SIGTERM");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for aiopsd") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "aiopsd did not stop within 30 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `items` of an incident list answer (`GET /api/v1/incidents`).
pub fn incidents(list: &serde_json::Value) -> Vec<serde_json::Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}
