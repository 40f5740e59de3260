//! `server.tls`: the HTTP server (API, webhook, UI, probes on one
//! listener) over HTTPS with a certificate made at test time (rcgen),
//! called by reqwest trusting only that certificate; plain HTTP on the
//! same port gets no answer; bad certificate/key files are config errors
//! naming the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aiopsd::config::{AlertmanagerConfig, Config, ConfigError, Secret};
use aiopsd::incident::Store;
use aiopsd::server::tls::ServerTls;
use aiopsd::server::AppState;
use aiopsd::telemetry::{Health, Metrics};
use base64::Engine;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "tls-test-token-0123456789";

/// A self-signed certificate for 127.0.0.1/localhost, written as PEM.
struct Pair {
    cert_der: Vec<u8>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn self_signed(dir: &Path, name: &str) -> Pair {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("generate a certificate");
    let cert_der = made.cert.der().to_vec();
    let cert_file = dir.join(format!("{name}.crt"));
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&cert_file, pem("CERTIFICATE", &cert_der)).expect("write cert");
    std::fs::write(
        &key_file,
        pem("PRIVATE KEY", &made.signing_key.serialize_der()),
    )
    .expect("write key");
    Pair {
        cert_der,
        cert_file,
        key_file,
    }
}

fn config(cert: &Path, key: &Path) -> Result<Config, ConfigError> {
    let yaml = format!(
        "cluster: tls\nserver:\n  listen: 127.0.0.1:0\n  tls:\n    cert_file: {}\n    key_file: {}\n",
        cert.display(),
        key.display()
    );
    Config::from_yaml(&yaml, Path::new("tls.yaml"), Vec::new())
}

/// The server, stopped (and awaited) when dropped, even if the test fails.
struct Running {
    addr: std::net::SocketAddr,
    cancel: CancellationToken,
    _store_dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn start(config: &Config) -> Running {
    let store_dir = tempfile::tempdir().expect("tempdir");
    let state = AppState {
        store: Store::open(&store_dir.path().join("aiopsd.db")).expect("store"),
        metrics: Arc::new(Metrics::new()),
        health: Health::new(),
        api_token: Some(Secret::from(TOKEN)),
        cluster: config.cluster.clone(),
        alertmanager: AlertmanagerConfig::default(),
        alert_tx: None,
        config_silences: Default::default(),
        remediation: Default::default(),
        config: None,
    };
    let tls = ServerTls::load(config.server.tls.as_ref().expect("tls section")).expect("load");
    let router = aiopsd::server::router(state, Duration::from_secs(5));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(aiopsd::server::serve_tls(
        listener,
        tls,
        router,
        async move { stop.cancelled().await },
    ));
    Running {
        addr,
        cancel,
        _store_dir: store_dir,
    }
}

fn client_trusting(cert_der: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(cert_der).expect("certificate")])
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

const PAYLOAD: &str = r#"{
  "version": "4", "groupKey": "{}:{alertname=\"CartDown\"}", "truncatedAlerts": 0,
  "status": "firing", "receiver": "aiopsd",
  "groupLabels": {"alertname": "CartDown"}, "commonLabels": {}, "commonAnnotations": {},
  "externalURL": "http://alertmanager:9093",
  "alerts": [{
    "status": "firing",
    "labels": {"alertname": "CartDown", "namespace": "shop", "service": "cart"},
    "annotations": {"summary": "cart is down"},
    "startsAt": "2026-11-25T01:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://prometheus:9090/graph", "fingerprint": "0123456789abcdef"
  }]
}"#;

#[tokio::test]
async fn the_api_and_the_webhook_are_served_over_https_only() {
    aiopsd::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = self_signed(dir.path(), "server");
    let config = config(&pair.cert_file, &pair.key_file).expect("a valid TLS config");
    let server = start(&config).await;
    let port = server.addr.port();
    let client = client_trusting(&pair.cert_der);

    let health = client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("HTTPS answers");
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.expect("body"), "ok");

    // The webhook shares the listener, so Alertmanager can use https://.
    let stored = client
        .post(format!(
            "https://localhost:{port}/api/v1/alerts/alertmanager"
        ))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(PAYLOAD)
        .send()
        .await
        .expect("webhook over HTTPS");
    assert_eq!(stored.status(), 200);
    let receipt: serde_json::Value =
        serde_json::from_str(&stored.text().await.expect("body")).expect("JSON receipt");
    assert_eq!(receipt["new"], 1, "{receipt}");
    let incidents = client
        .get(format!("https://127.0.0.1:{port}/api/v1/incidents"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("incidents");
    assert_eq!(incidents.status(), 200);
    let unauthenticated = client
        .get(format!("https://127.0.0.1:{port}/api/v1/incidents"))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        unauthenticated.status(),
        401,
        "TLS does not replace the token"
    );

    // Plain HTTP on the same port: the handshake fails, no HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must not be served: {plain:?}");

    // A client that does not trust the certificate is refused too.
    let other = self_signed(dir.path(), "other");
    let untrusted = client_trusting(&other.cert_der)
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(untrusted.is_err(), "{untrusted:?}");

    // The server still serves after failed handshakes.
    let again = client
        .get(format!("https://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("still serving");
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn bad_certificate_files_are_config_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = self_signed(dir.path(), "a");
    let b = self_signed(dir.path(), "b");
    let problems = |r: Result<Config, ConfigError>| match r {
        Ok(_) => panic!("config was accepted"),
        Err(e) => e.problems().join("\n"),
    };

    let missing = dir.path().join("missing.crt");
    let text = problems(config(&missing, &a.key_file));
    assert!(text.contains("server.tls.cert_file"), "{text}");
    assert!(text.contains("missing.crt"), "{text}");

    // The key of another certificate.
    let text = problems(config(&a.cert_file, &b.key_file));
    assert!(text.contains("server.tls.key_file"), "{text}");
    assert!(text.contains("b.key") && text.contains("a.crt"), "{text}");
    assert!(text.contains("does not fit"), "{text}");

    // Certificate and key swapped.
    let text = problems(config(&a.key_file, &a.cert_file));
    assert!(text.contains("server.tls.cert_file"), "{text}");
    assert!(text.contains("a.key holds no PEM certificate"), "{text}");
}
