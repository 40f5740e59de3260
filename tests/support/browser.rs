//! Headless Chromium driven through chromedriver's W3C WebDriver HTTP API.
//!
//! The protocol is a handful of JSON-over-HTTP calls (new session, navigate,
//! find, click, type, execute, screenshot), so it is spoken here with the
//! reqwest client the crate already has rather than through a WebDriver
//! crate and its dependency tree. Chromium and chromedriver come from
//! Debian's `chromium` and `chromium-driver` packages; when they are
//! missing, [`Driver::start`] **panics** with what to install — CI installs
//! them, so a browser test never passes by skipping.
//!
//! Each [`Driver`] is its own chromedriver on a free port with its own
//! empty profile directory, so browser tests run in parallel. The session
//! is closed and chromedriver killed on drop, even when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The W3C key under which an element reference travels.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Flags that make Chromium work on a closed, sandbox-less CI machine:
/// no GPU, no background network traffic, no first-run UI.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

fn find_binary(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Waits until chromedriver at `base` answers `/status`; false if it exits
/// or `timeout` passes.
async fn wait_ready(
    http: &reqwest::Client,
    base: &str,
    child: &mut Child,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let ready = http
            .get(format!("{base}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A chromedriver process with one browser session.
pub struct Driver {
    child: Option<Child>,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// A reference to an element on the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Driver {
    /// Starts chromedriver and a headless Chromium window of `width` ×
    /// `height` CSS pixels. Panics, naming the packages, when either
    /// binary is missing.
    pub async fn start(width: u32, height: u32) -> Driver {
        let chromium = find_binary(
            "CHROMIUM",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        )
        .unwrap_or_else(|| {
            panic!(
                "Chromium is not installed: the browser tests need Debian's `chromium` and \
                 `chromium-driver` packages (apt-get install chromium chromium-driver; \
                 .ci/run installs them). Set CHROMIUM=/path to use another binary."
            )
        });
        let chromedriver =
            find_binary("CHROMEDRIVER", &["/usr/bin/chromedriver"]).unwrap_or_else(|| {
                panic!(
                    "chromedriver is not installed: the browser tests need Debian's \
                     `chromium-driver` package (apt-get install chromium chromium-driver; \
                     .ci/run installs it). Set CHROMEDRIVER=/path to use another binary."
                )
            });
        let profile = tempfile::tempdir().expect("profile dir");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        // chromedriver picks no port itself; retry on the rare race where
        // the free port is taken before it binds.
        for _ in 0..5 {
            let port = super::free_port();
            let log = profile.path().join(format!("chromedriver-{port}.log"));
            let mut child = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
            let base = format!("http://127.0.0.1:{port}");
            if !wait_ready(&http, &base, &mut child, Duration::from_secs(20)).await {
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            let mut driver = Driver {
                child: Some(child),
                base,
                session: String::new(),
                http,
                _profile: profile,
            };
            driver.open_session(&chromium, width, height).await;
            return driver;
        }
        panic!("chromedriver did not start on any of 5 free ports");
    }

    async fn open_session(&mut self, chromium: &Path, width: u32, height: u32) {
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            self._profile.path().join("chromium").display()
        ));
        args.push(format!("--window-size={width},{height}"));
        let body = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    // Confirmation dialogs are answered explicitly by the test.
                    "unhandledPromptBehavior": "ignore",
                    "goog:chromeOptions": {
                        "binary": chromium.display().to_string(),
                        "args": args,
                    }
                }
            }
        });
        let answer = self.call_raw("POST", "/session", Some(body)).await;
        self.session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not open a session: {answer}"))
            .to_string();
        self.set_size(width, height).await;
    }

    async fn call_raw(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let text = response.text().await.unwrap_or_default();
        serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("WebDriver {method} {path}: not JSON: {text}"))
    }

    /// One command in the session; panics with WebDriver's error.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = self.try_call(method, path, body).await;
        match answer {
            Ok(v) => v,
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    /// One command; `Err(error text)` when WebDriver answers with an error.
    async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let answer = self
            .call_raw(method, &format!("/session/{}{path}", self.session), body)
            .await;
        let value = answer["value"].clone();
        match value.get("error").and_then(Value::as_str) {
            Some(error) => Err(format!(
                "{error}: {}",
                value["message"].as_str().unwrap_or_default()
            )),
            None => Ok(value),
        }
    }

    /// Resizes the window (CSS pixels of the outer window).
    pub async fn set_size(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Navigates and waits for the load.
    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// The document title.
    pub async fn title(&self) -> String {
        self.call("GET", "/title", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.call("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Elements matching a CSS selector (possibly none).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .call(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT_KEY].as_str().map(|s| Element(s.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element matching `css`; panics with the page text if none.
    pub async fn find(&self, css: &str) -> Element {
        match self.find_all(css).await.into_iter().next() {
            Some(e) => e,
            None => panic!(
                "no element matches {css:?} on {}; page text:\n{}",
                self.url().await,
                self.body_text().await
            ),
        }
    }

    /// Visible text of an element.
    pub async fn text(&self, e: &Element) -> String {
        self.call("GET", &format!("/element/{}/text", e.0), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The visible text of the whole page.
    pub async fn body_text(&self) -> String {
        self.execute(
            "return document.body ? document.body.innerText : ''",
            json!([]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Clicks an element (scrolling it into view first).
    pub async fn click(&self, e: &Element) {
        self.call("POST", &format!("/element/{}/click", e.0), Some(json!({})))
            .await;
    }

    /// Types `text` into an element.
    pub async fn type_into(&self, e: &Element, text: &str) {
        self.call(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Runs a script in the page (`arguments` are passed as `arguments[i]`)
    /// and returns its value; a returned Promise is awaited.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Accepts the open confirmation dialog, waiting up to 5 s for it, and
    /// returns its text.
    pub async fn accept_dialog(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(text) = self.try_call("GET", "/alert/text", None).await {
                self.call("POST", "/alert/accept", Some(json!({}))).await;
                return text.as_str().unwrap_or_default().to_string();
            }
            if Instant::now() > deadline {
                panic!("no confirmation dialog appeared");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the page until `condition` (a script returning a boolean)
    /// holds; panics with `what` and the page text after `timeout`.
    pub async fn wait_until(&self, what: &str, condition: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(v) = self
                .try_call(
                    "POST",
                    "/execute/sync",
                    Some(json!({ "script": condition, "args": [] })),
                )
                .await
            {
                if v.as_bool() == Some(true) {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what} on {}; page text:\n{}",
                    self.url().await,
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the whole page (not just the window) to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        // Chromium's full-page capture through the DevTools command that
        // chromedriver exposes; falls back to the viewport.
        let full = self
            .try_call(
                "POST",
                "/goog/cdp/execute",
                Some(json!({
                    "cmd": "Page.captureScreenshot",
                    "params": {"format": "png", "captureBeyondViewport": true}
                })),
            )
            .await
            .ok()
            .and_then(|v| v["data"].as_str().map(str::to_string));
        let data = match full {
            Some(d) => d,
            None => self
                .call("GET", "/screenshot", None)
                .await
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Close the session so chromedriver stops Chromium, then stop
        // chromedriver. A plain blocking HTTP request: Drop cannot await.
        if !self.session.is_empty() {
            if let Some(addr) = self.base.strip_prefix("http://") {
                if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                    use std::io::{Read, Write};
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = write!(
                        s,
                        "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        self.session
                    );
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
