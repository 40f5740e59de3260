//! The MQTT sink: sends the outbox's `mqtt` rows to the broker with QoS 1
//! and listens for signed approval messages.
//!
//! One tokio task, one broker connection at a time. Each connection gets a
//! *fresh* rumqttc client and event loop: rumqttc's own replay of
//! unacknowledged packets is thrown away with the old one, and the outbox
//! is the only source of truth for what still has to go. After every
//! (re)connect the sender starts again from the oldest row of the outbox,
//! so an event whose PUBACK was lost is sent again (consumers deduplicate
//! by id) and events are always sent in queue order — per incident, too.
//!
//! Rows are deleted only once the broker acknowledged them (PUBACK), in
//! small batches; a crash between PUBACK and delete resends a few events,
//! never loses one. The task never blocks detection: the pipeline only
//! writes rows, and this task reads them at its own pace.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use super::approvals::{self, ApprovalRefused, Channel, Decision};
use super::config::{ApprovalsConfig, BrokerAddress, MqttConfig, MqttTlsConfig};
use super::event::state_topic;
use super::outbox::{OutboxRow, MQTT_SINK};
use super::PublishError;
use crate::incident::{Store, StoreError};
use crate::signal::now_ms;
use crate::telemetry::{error_chain, Health, Metrics};

/// How often the sender looks for new rows when idle, and flushes
/// acknowledgements. New events wait at most this long.
const TICK: Duration = Duration::from_millis(100);

/// Acknowledged rows are deleted in batches of at most this many (or at
/// every tick).
const ACK_BATCH: usize = 512;

/// The MQTT publisher, built and checked from config; [`run`](Self::run)
/// it as a task.
pub struct MqttPublisher {
    config: MqttConfig,
    approvals: ApprovalsConfig,
    cluster: String,
    broker: BrokerAddress,
    tls: Option<Arc<rustls::ClientConfig>>,
    approvals_topic: String,
    store: Store,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl std::fmt::Debug for MqttPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttPublisher")
            .field("broker", &self.config.url)
            .finish_non_exhaustive()
    }
}

/// How one connection ended.
enum SessionEnd {
    /// Shutdown was asked for.
    Cancelled,
    /// The connection failed or dropped.
    Failed { error: String, was_connected: bool },
}

/// A publish handed to rumqttc and not yet acknowledged.
struct InFlight {
    /// The outbox row, or `None` for a retained state message (not tracked:
    /// the next event of the incident carries the same state).
    row: Option<i64>,
    /// Packet id, once rumqttc has written the packet.
    pkid: Option<u16>,
}

impl MqttPublisher {
    /// Checks the config and loads the TLS files, so a bad path or PEM
    /// fails at start with the field named, not at the first connect.
    pub fn new(
        config: &MqttConfig,
        approvals: &ApprovalsConfig,
        cluster: &str,
        store: Store,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Self, PublishError> {
        let broker = config.broker().map_err(|reason| PublishError::Config {
            field: "mqtt.url",
            reason,
        })?;
        let tls = if broker.tls {
            Some(Arc::new(tls_config(&config.tls)?))
        } else {
            None
        };
        Ok(Self {
            approvals_topic: approvals.topic_for(&config.topic_prefix, cluster),
            config: config.clone(),
            approvals: approvals.clone(),
            cluster: cluster.to_string(),
            broker,
            tls,
            store,
            metrics,
            health,
        })
    }

    fn options(&self) -> MqttOptions {
        let mut o = MqttOptions::new(
            self.config.client_id_for(&self.cluster),
            self.broker.host.clone(),
            self.broker.port,
        );
        o.set_keep_alive(self.config.keep_alive.0);
        // Clean session: the outbox, not the broker's session state, says
        // what is still to be sent.
        o.set_clean_session(true);
        let window = self.window();
        // Room for every tracked event plus its retained state message.
        o.set_inflight(u16::try_from(window * 2 + 2).unwrap_or(u16::MAX));
        o.set_request_channel_capacity(window * 2 + 16);
        // Events are small; 1 MiB leaves room for approvals with long reasons.
        o.set_max_packet_size(1 << 20, 1 << 20);
        if let Some(user) = &self.config.username {
            let password = self
                .config
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            o.set_credentials(user.clone(), password);
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::clone(tls),
            )));
        }
        o
    }

    fn window(&self) -> usize {
        usize::from(self.config.inflight.max(1))
    }

    /// Connects, sends, reconnects with backoff, until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let initial = self.config.reconnect.initial_backoff.0;
        let max = self.config.reconnect.max_backoff.0;
        let mut backoff = initial;
        self.health
            .publisher_registered(MQTT_SINK, &self.config.url);
        self.refresh_depth().await;
        while !cancel.is_cancelled() {
            let (client, eventloop) = AsyncClient::new(self.options(), self.window() * 2 + 16);
            match self.session(&client, eventloop, &cancel).await {
                SessionEnd::Cancelled => {
                    let _ = client.try_disconnect();
                    break;
                }
                SessionEnd::Failed {
                    error,
                    was_connected,
                } => {
                    if was_connected {
                        backoff = initial;
                    }
                    self.metrics
                        .broker_down(&self.health, MQTT_SINK, &error, backoff);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(max);
                }
            }
        }
        self.health.publisher_connected(MQTT_SINK, false, None);
        self.metrics.set_broker_connected(MQTT_SINK, false);
        tracing::info!("The MQTT publisher stopped; undelivered events stay in the outbox.");
    }

    /// One connection: from connect to failure or shutdown.
    async fn session(
        &self,
        client: &AsyncClient,
        mut eventloop: EventLoop,
        cancel: &CancellationToken,
    ) -> SessionEnd {
        let mut connected = false;
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut acked: Vec<i64> = Vec::new();
        // Highest outbox row handed to rumqttc in this session.
        let mut sent_upto: i64 = 0;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The event loop is polled by its own task and never dropped
        // mid-poll: cancelling `poll` while it connects or writes could
        // lose a half-done step. Its events come through a channel, which
        // is safe to select on.
        let (events_tx, mut events) = tokio::sync::mpsc::channel(self.window() * 2 + 16);
        let poller = tokio::spawn(async move {
            loop {
                let polled = eventloop.poll().await;
                let failed = polled.is_err();
                if events_tx.send(polled).await.is_err() || failed {
                    return;
                }
            }
        });
        let _stop_poller = AbortOnDrop(poller);
        loop {
            let polled = tokio::select! {
                _ = cancel.cancelled() => {
                    self.flush_acks(&mut acked).await;
                    return SessionEnd::Cancelled;
                }
                _ = tick.tick() => None,
                polled = events.recv() => match polled {
                    Some(p) => Some(p),
                    None => Some(Err(ConnectionError::RequestsDone)),
                },
            };
            match polled {
                None => {
                    self.flush_acks(&mut acked).await;
                }
                Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    connected = true;
                    self.metrics
                        .broker_up(&self.health, MQTT_SINK, &self.config.url);
                    if self.approvals.secret.is_some() {
                        if let Err(e) =
                            client.try_subscribe(self.approvals_topic.clone(), QoS::AtLeastOnce)
                        {
                            return SessionEnd::Failed {
                                error: format!("cannot subscribe to the approvals topic: {e}"),
                                was_connected: true,
                            };
                        }
                    }
                }
                Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(entry) = inflight.iter_mut().find(|e| e.pkid.is_none()) {
                        entry.pkid = Some(pkid);
                    }
                }
                Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    if let Some(pos) = inflight.iter().position(|e| e.pkid == Some(ack.pkid)) {
                        if let Some(InFlight { row: Some(row), .. }) = inflight.remove(pos) {
                            acked.push(row);
                        }
                    }
                    if acked.len() >= ACK_BATCH {
                        self.flush_acks(&mut acked).await;
                    }
                }
                Some(Ok(Event::Incoming(Packet::Publish(message)))) => {
                    if message.topic == self.approvals_topic {
                        self.on_approval(&message.payload).await;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    self.flush_acks(&mut acked).await;
                    let unacked = inflight.iter().filter(|e| e.row.is_some()).count();
                    self.metrics.events_failed(MQTT_SINK, unacked as u64);
                    return SessionEnd::Failed {
                        error: describe(&error),
                        was_connected: connected,
                    };
                }
            }
            // Refill when half the window is free, in one store read.
            let window = self.window();
            if connected && inflight.len() <= window / 2 {
                let room = window.saturating_sub(inflight.len());
                if let Some(rows) = self.next_rows(sent_upto, room).await {
                    for row in rows {
                        if !self.publish(client, &row, &mut inflight) {
                            break;
                        }
                        sent_upto = row.id;
                    }
                }
            }
        }
    }

    /// Hands one row (and its retained state, if enabled) to rumqttc;
    /// false if its request channel is full (try again next round).
    fn publish(
        &self,
        client: &AsyncClient,
        row: &OutboxRow,
        inflight: &mut VecDeque<InFlight>,
    ) -> bool {
        let topic = format!("{}/{}", self.config.topic_prefix, row.route);
        if self.config.retain_state && row.kind.is_some_and(|k| !k.is_action()) {
            if let Some(state) = state_payload(&row.payload) {
                let t = state_topic(&self.config.topic_prefix, &self.cluster, row.incident_id);
                if client.try_publish(t, QoS::AtLeastOnce, true, state).is_ok() {
                    inflight.push_back(InFlight {
                        row: None,
                        pkid: None,
                    });
                }
            }
        }
        match client.try_publish(
            topic,
            QoS::AtLeastOnce,
            false,
            row.payload.clone().into_bytes(),
        ) {
            Ok(()) => {
                inflight.push_back(InFlight {
                    row: Some(row.id),
                    pkid: None,
                });
                true
            }
            Err(_) => false,
        }
    }

    async fn next_rows(&self, after: i64, limit: usize) -> Option<Vec<OutboxRow>> {
        if limit == 0 {
            return None;
        }
        let store = self.store.clone();
        match blocking(move || store.outbox_batch(MQTT_SINK, after, limit)).await {
            Ok(rows) if rows.is_empty() => None,
            Ok(rows) => Some(rows),
            Err(error) => {
                tracing::warn!(error = %error, "Reading the outbox failed; retrying shortly.");
                None
            }
        }
    }

    /// Deletes acknowledged rows; on failure keeps them for the next try
    /// (worst case they are sent again after a restart: a duplicate, never
    /// a loss).
    async fn flush_acks(&self, acked: &mut Vec<i64>) {
        if acked.is_empty() {
            return;
        }
        let ids = std::mem::take(acked);
        let n = ids.len() as u64;
        let store = self.store.clone();
        let ids_for_store = ids.clone();
        match blocking(move || store.outbox_ack(MQTT_SINK, &ids_for_store)).await {
            Ok(depth) => {
                self.metrics.events_sent(MQTT_SINK, n);
                self.metrics
                    .outbox_depth_now(&self.health, MQTT_SINK, depth);
            }
            Err(error) => {
                tracing::warn!(error = %error, "Deleting delivered events from the outbox failed; will retry.");
                *acked = ids;
            }
        }
    }

    async fn refresh_depth(&self) {
        let store = self.store.clone();
        if let Ok(Some((depth, max))) = blocking(move || store.outbox_depth(MQTT_SINK)).await {
            self.health.publisher_depth(MQTT_SINK, depth, max);
            self.metrics
                .outbox_depth_now(&self.health, MQTT_SINK, depth);
        }
    }

    /// Checks and records one approval message; every outcome is logged
    /// and counted (never with the secret or the signature).
    async fn on_approval(&self, payload: &[u8]) {
        let action_hint = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v.get("action_id").and_then(serde_json::Value::as_i64));
        let Some(secret) = &self.approvals.secret else {
            self.metrics
                .approval_refused(Channel::Mqtt, action_hint, &ApprovalRefused::Disabled);
            return;
        };
        let now = now_ms();
        let message = match approvals::verify(
            payload,
            secret.expose().as_bytes(),
            &self.cluster,
            now,
            self.approvals.max_age.as_millis_i64(),
        ) {
            Ok(m) => m,
            Err(refused) => {
                self.metrics
                    .approval_refused(Channel::Mqtt, action_hint, &refused);
                return;
            }
        };
        let decision = Decision {
            verdict: message.decision,
            by: message.by.clone(),
            reason: message.reason.clone(),
            channel: Channel::Mqtt,
            nonce: Some(message.nonce.clone()),
        };
        let store = self.store.clone();
        let id = message.action_id;
        match blocking(move || store.decide_action(id, &decision, now)).await {
            Ok(outcome) => {
                outcome.report.emit(&self.metrics);
                match outcome.result {
                    Ok(action) => self.metrics.approval_decided(&action),
                    Err(refused) => self.metrics.approval_refused(
                        Channel::Mqtt,
                        Some(id),
                        &ApprovalRefused::Decision(refused),
                    ),
                }
            }
            Err(error) => {
                // The message is lost to us but not to its sender: the
                // broker acknowledged it, so it must be sent again.
                tracing::error!(action = id, error = %error, "Recording an MQTT approval failed in the store; the sender must send it again.");
            }
        }
    }
}

/// Aborts a task when dropped, so a session's poller never outlives it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The retained state message of an incident event: its `incident` part.
fn state_payload(event: &str) -> Option<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_str(event).ok()?;
    let incident = value.get("incident")?;
    serde_json::to_vec(incident).ok()
}

/// Runs a store call on the blocking pool and flattens the errors into
/// one message for the log.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(e) => Err(format!("store task did not complete: {e}")),
    }
}

/// A connection error in words; rumqttc's I/O errors hide their cause.
fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection ({code:?}); check mqtt.username, mqtt.password and mqtt.client_id")
        }
        other => error_chain(other),
    }
}

/// Builds the rustls client config with the aws-lc-rs provider explicitly
/// (the process may have several; see `install_crypto_provider`).
fn tls_config(tls: &MqttTlsConfig) -> Result<rustls::ClientConfig, PublishError> {
    let pem = |field: &'static str, path: &std::path::Path, e: rustls::pki_types::pem::Error| {
        PublishError::TlsFile {
            field,
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| pem("mqtt.tls.ca_file", path, e))?;
            for cert in certs {
                let cert = cert.map_err(|e| pem("mqtt.tls.ca_file", path, e))?;
                roots.add(cert).map_err(|e| PublishError::TlsFile {
                    field: "mqtt.tls.ca_file",
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            if roots.is_empty() {
                return Err(PublishError::TlsFile {
                    field: "mqtt.tls.ca_file",
                    path: path.clone(),
                    reason: "holds no PEM certificate".into(),
                });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(PublishError::Config {
                    field: "mqtt.tls.ca_file",
                    reason:
                        "the system trust store has no usable CA certificate; set mqtt.tls.ca_file"
                            .into(),
                });
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PublishError::Config {
            field: "mqtt.tls",
            reason: e.to_string(),
        })?
        .with_root_certificates(roots);
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert_path), Some(key_path)) => {
            let certs = CertificateDer::pem_file_iter(cert_path)
                .map_err(|e| pem("mqtt.tls.cert_file", cert_path, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem("mqtt.tls.cert_file", cert_path, e))?;
            if certs.is_empty() {
                return Err(PublishError::TlsFile {
                    field: "mqtt.tls.cert_file",
                    path: cert_path.clone(),
                    reason: "holds no PEM certificate".into(),
                });
            }
            let key = PrivateKeyDer::from_pem_file(key_path)
                .map_err(|e| pem("mqtt.tls.key_file", key_path, e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| PublishError::TlsFile {
                    field: "mqtt.tls.key_file",
                    path: key_path.clone(),
                    reason: format!("does not fit cert_file: {e}"),
                })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_payload_is_the_incident_part() {
        let p = state_payload(r#"{"id":"x","incident":{"id":4,"state":"open"}}"#).expect("some");
        assert_eq!(p, br#"{"id":4,"state":"open"}"#);
        assert!(state_payload(r#"{"id":"x"}"#).is_none());
    }

    #[test]
    fn tls_errors_name_the_field_and_file() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").expect("write");
        let err = tls_config(&MqttTlsConfig {
            ca_file: Some(path.clone()),
            ..Default::default()
        })
        .expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("mqtt.tls.ca_file"), "{text}");
        assert!(text.contains("ca.pem"), "{text}");
    }
}
