//! Optional TLS for the HTTP server (`server.tls`).
//!
//! The API, the UI, /metrics, the probes and the Alertmanager webhook share
//! one listener, so TLS is terminated here, under axum: [`TlsListener`]
//! accepts TCP connections, completes each TLS handshake on its own task
//! (a slow or silent client never holds up the next one) and hands axum
//! only finished TLS streams. rustls with the aws-lc-rs provider — the one
//! aiopsd installs at start anyway (../shared/STACK.md) — named explicitly,
//! so this works whatever the process default is. No OpenSSL.
//!
//! The certificate and key are checked when the config is loaded
//! ([`ServerTls::load`] from `Config::validate`, errors naming the file)
//! and re-read when either file changes on disk ([`ServerTls::watch`]), so
//! a renewed certificate mounted from a Kubernetes Secret is picked up
//! without a restart. A renewal that does not load is logged and the
//! previous pair kept: a half-written Secret update must not take the
//! webhook down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerTlsConfig;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; more connections wait in the kernel's
/// accept queue. Bounds the memory a flood of half-open clients can take.
const MAX_HANDSHAKES: usize = 256;

/// How often the certificate and key files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(30);

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// `server.tls.cert_file` or `server.tls.key_file`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but does not hold what it should.
    #[error("{} {reason}", path.display())]
    Pem {
        /// `server.tls.cert_file` or `server.tls.key_file`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, e.g. "holds no PEM certificate".
        reason: String,
    },
    /// The key cannot sign for the certificate (a key of another
    /// certificate, or an unsupported key type).
    #[error("the private key in {} does not fit the certificate in {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the protocol settings (not expected with defaults).
    #[error("cannot build the TLS server configuration")]
    Config(#[source] rustls::Error),
}

impl TlsError {
    /// The config field a person has to fix.
    pub fn field(&self) -> &'static str {
        match self {
            TlsError::Read { field, .. } | TlsError::Pem { field, .. } => field,
            TlsError::Mismatch { .. } => "server.tls.key_file",
            TlsError::Config(_) => "server.tls",
        }
    }

    /// The whole message with its causes, on one line.
    pub fn describe(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

/// The provider every server config is built with (see the module docs).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks the certificate chain and key named by `config`.
fn load_key(config: &ServerTlsConfig) -> Result<CertifiedKey, TlsError> {
    let cert_field = "server.tls.cert_file";
    let key_field = "server.tls.key_file";
    let read = |field: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            field,
            path: path.to_path_buf(),
            source,
        })
    };
    let pem = |field: &'static str, path: &Path, reason: String| TlsError::Pem {
        field,
        path: path.to_path_buf(),
        reason,
    };
    let cert_pem = read(cert_field, &config.cert_file)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            pem(
                cert_field,
                &config.cert_file,
                format!("is not valid PEM: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(pem(
            cert_field,
            &config.cert_file,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let key_pem = read(key_field, &config.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let reason = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "holds no PEM private key \
                (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
                .to_string(),
            other => format!("is not valid PEM: {other}"),
        };
        pem(key_field, &config.key_file, reason)
    })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|source| TlsError::Mismatch {
        cert: config.cert_file.clone(),
        key: config.key_file.clone(),
        source,
    })
}

/// The current certificate and key; swapped in place on reload, so
/// connections after a renewal get the new pair and open ones are untouched.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl CurrentCert {
    fn get(&self) -> Arc<CertifiedKey> {
        match self.0.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn set(&self, key: CertifiedKey) {
        let key = Arc::new(key);
        match self.0.write() {
            Ok(mut k) => *k = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// A loaded, checked `server.tls`: the rustls server configuration and
/// what [`ServerTls::watch`] needs to reload it.
#[derive(Debug, Clone)]
pub struct ServerTls {
    files: ServerTlsConfig,
    current: Arc<CurrentCert>,
    config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// Reads the files and builds the server configuration; errors name the
    /// file and the problem.
    pub fn load(files: &ServerTlsConfig) -> Result<Self, TlsError> {
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(load_key(files)?))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        // The router speaks HTTP/1.1 only (axum's `http1` feature).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            files: files.clone(),
            current,
            config: Arc::new(config),
        })
    }

    /// The rustls server configuration.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.config)
    }

    /// Re-reads the files now if either changed since `seen`; returns the
    /// new modification times. Keeps the old pair (and logs why) when the
    /// new one does not load.
    fn reload_if_changed(&self, seen: &mut Option<[SystemTime; 2]>) {
        let now = self.mtimes();
        if now.is_none() || now == *seen {
            return;
        }
        match load_key(&self.files) {
            Ok(key) => {
                self.current.set(key);
                *seen = now;
                tracing::info!(
                    cert_file = %self.files.cert_file.display(),
                    "Loaded the renewed TLS certificate; new connections use it."
                );
            }
            Err(error) => {
                // Not remembered as seen: a Secret update writes the two
                // files one after the other, so the next check retries.
                tracing::warn!(
                    error = %error.describe(),
                    "The TLS certificate or key changed but cannot be used; still serving the previous pair."
                );
            }
        }
    }

    fn mtimes(&self) -> Option<[SystemTime; 2]> {
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some([mtime(&self.files.cert_file)?, mtime(&self.files.key_file)?])
    }

    /// Starts re-reading the files when they change (checked every 30 s);
    /// the task stops when the returned guard is dropped.
    pub fn watch(&self) -> WatchGuard {
        let tls = self.clone();
        let mut seen = tls.mtimes();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                tls.reload_if_changed(&mut seen);
            }
        });
        WatchGuard(task)
    }
}

/// Stops the reload task of [`ServerTls::watch`] when dropped.
#[derive(Debug)]
pub struct WatchGuard(tokio::task::JoinHandle<()>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A TCP listener that yields only connections whose TLS handshake
/// completed; axum serves it like a plain listener.
#[derive(Debug)]
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config`. Must be called inside a
    /// tokio runtime.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        let acceptor = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx));
        Ok(Self {
            local_addr,
            ready,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop ends only when aborted (by our own drop), so
            // this is not reached while the listener is alive.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Accepts TCP connections and completes each handshake on its own task.
async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of file descriptors and the like: back off rather
                // than spin, as axum does for plain TCP.
                tracing::error!(%error, "Accepting a connection failed; retrying in 1 s.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                // A client's mistake (plain HTTP on the HTTPS port, an
                // untrusted certificate): not aiopsd's problem to log loudly.
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed; connection closed.");
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out; connection closed.");
                }
            }
        });
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str) -> ServerTlsConfig {
        let cert_file = dir.join("tls.crt");
        let key_file = dir.join("tls.key");
        std::fs::write(&cert_file, cert).expect("write cert");
        std::fs::write(&key_file, key).expect("write key");
        ServerTlsConfig {
            cert_file,
            key_file,
        }
    }

    /// A fresh self-signed pair as (certificate PEM, key PEM, cert DER).
    fn self_signed() -> (String, String, Vec<u8>) {
        use base64::Engine;
        let pem = |label: &str, der: &[u8]| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            let body: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).expect("ASCII"))
                .collect();
            format!(
                "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
                body.join("\n")
            )
        };
        let made =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("generate");
        let der = made.cert.der().to_vec();
        (
            pem("CERTIFICATE", &der),
            pem("PRIVATE KEY", &made.signing_key.serialize_der()),
            der,
        )
    }

    fn served_cert(tls: &ServerTls) -> Vec<u8> {
        tls.current.get().cert[0].to_vec()
    }

    fn touch(path: &Path, secs: u64) {
        let file = std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open");
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .expect("set mtime");
    }

    #[test]
    fn a_renewed_pair_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key, first) = self_signed();
        let config = files(dir.path(), &cert, &key);
        let tls = ServerTls::load(&config).expect("load");
        let mut seen = tls.mtimes();
        assert_eq!(served_cert(&tls), first);

        // Renewal: both files replaced.
        let (cert, key, second) = self_signed();
        files(dir.path(), &cert, &key);
        touch(&config.cert_file, 1_000);
        tls.reload_if_changed(&mut seen);
        assert_eq!(served_cert(&tls), second, "the renewed pair is served");

        // Half-written update: a new certificate with the old key. Kept out,
        // and retried at the next check (not remembered as seen).
        let (cert, _, third) = self_signed();
        std::fs::write(&config.cert_file, cert).expect("write");
        touch(&config.cert_file, 2_000);
        tls.reload_if_changed(&mut seen);
        assert_eq!(served_cert(&tls), second, "a mismatched pair is not served");
        assert_ne!(served_cert(&tls), third);
        assert_ne!(seen, tls.mtimes(), "retried at the next check");
    }

    #[test]
    fn a_missing_file_is_named_with_its_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = ServerTlsConfig {
            cert_file: dir.path().join("nope.crt"),
            key_file: dir.path().join("nope.key"),
        };
        let error = ServerTls::load(&config).expect_err("missing file");
        assert_eq!(error.field(), "server.tls.cert_file");
        let text = error.describe();
        assert!(text.contains("nope.crt"), "{text}");
        assert!(text.contains("No such file"), "{text}");
    }

    #[test]
    fn files_without_the_expected_pem_blocks_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_only = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let error = ServerTls::load(&files(dir.path(), key_only, key_only)).expect_err("no cert");
        assert_eq!(error.field(), "server.tls.cert_file");
        assert!(
            error.describe().contains("holds no PEM certificate"),
            "{}",
            error.describe()
        );

        let cert_only = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let error = ServerTls::load(&files(dir.path(), cert_only, cert_only)).expect_err("no key");
        assert_eq!(error.field(), "server.tls.key_file");
        let text = error.describe();
        assert!(text.contains("tls.key holds no PEM private key"), "{text}");
    }

    #[test]
    fn garbage_der_is_refused_as_a_key_that_does_not_fit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let error = ServerTls::load(&files(dir.path(), cert, key)).expect_err("bad key");
        assert_eq!(error.field(), "server.tls.key_file");
        assert!(
            error.describe().contains("does not fit the certificate"),
            "{}",
            error.describe()
        );
    }
}
