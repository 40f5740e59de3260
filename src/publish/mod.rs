//! Publishing events and taking approvals: the stage after the store.
//!
//! ```text
//! incident stage ──(one transaction)──► Store: incident row + outbox rows
//! API / MQTT approval ──(one transaction)──► Store: decision + outbox row
//!                                              │
//!                       mqtt::MqttPublisher ◄──┤ reads in order, QoS 1,
//!                       (own task)             │ deletes on PUBACK
//!                 webhook::WebhookPublisher ◄──┘ own rows, POSTs in order,
//!                       (own task)               deletes on 2xx
//! ```
//!
//! - [`event`]: the versioned schema `aiopsd.event/v1` (docs/EVENTS.md).
//! - [`outbox`]: the durable, bounded, multi-sink queue and its reports.
//! - [`mqtt`]: the MQTT sink and the approvals listener.
//! - [`webhook`]: the HTTP webhook sink (issue 8's notifier).
//! - [`approvals`]: pending actions, decisions, signed approval messages.
//! - [`config`]: the `mqtt:`, `webhook:` and `approvals:` config sections.
//! - [`telemetry`]: broker, outbox and approval metrics and log lines.
//!
//! [`start`] is what the daemon calls: it declares the outbox sinks,
//! starts the MQTT and webhook senders if configured (each its own task,
//! its own rows, its own `/readyz` entry) and the expiry sweeper always.
//! Nothing here can block detection: the pipeline only writes rows.

pub mod approvals;
pub mod config;
pub mod event;
pub mod mqtt;
pub mod outbox;
pub mod telemetry;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::incident::{Store, StoreError};
use crate::signal::now_ms;
use crate::telemetry::{error_chain, Health, Metrics};

/// How often pending actions past their expiry are marked expired.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the publishing stage could not start.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A config value is unusable (validation normally catches this first).
    #[error("{field}: {reason}")]
    Config {
        /// Dotted path of the field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A TLS file could not be read or parsed.
    #[error("{field}: {}: {reason}", path.display())]
    TlsFile {
        /// Dotted path of the field naming the file.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Declaring the outbox sinks in the store failed.
    #[error("cannot configure the event outbox")]
    Store(#[source] StoreError),
}

/// Declares the outbox sinks, then spawns the MQTT publisher (if `mqtt`
/// is configured), the webhook sender (if `webhook` is configured) and the
/// approval expiry sweeper. The returned task ends when `cancel` fires and
/// all have stopped.
///
/// Blocks briefly on the store; call it before the pipeline starts.
pub fn start(
    config: &Config,
    store: &Store,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, PublishError> {
    let sinks: Vec<outbox::SinkSpec> = config
        .mqtt
        .iter()
        .map(|m| outbox::SinkSpec {
            name: outbox::MQTT_SINK.into(),
            max_events: m.outbox.max_events,
        })
        .chain(config.webhook.iter().map(|w| outbox::SinkSpec {
            name: webhook::WEBHOOK_SINK.into(),
            max_events: w.outbox.max_events,
        }))
        .collect();
    let publisher = match &config.mqtt {
        Some(m) => Some(mqtt::MqttPublisher::new(
            m,
            &config.approvals,
            &config.cluster,
            store.clone(),
            Arc::clone(metrics),
            Arc::clone(health),
        )?),
        None => None,
    };
    let webhook = match &config.webhook {
        Some(w) => Some(webhook::WebhookPublisher::new(
            w,
            store.clone(),
            Arc::clone(metrics),
            Arc::clone(health),
        )?),
        None => None,
    };
    let dropped = store
        .configure_outbox(&sinks)
        .map_err(PublishError::Store)?;
    for (sink, count) in dropped {
        tracing::warn!(
            sink,
            count,
            "Events were queued for a sink that is no longer configured; they were deleted."
        );
    }
    let sweeper = tokio::spawn(sweep(
        store.clone(),
        Arc::clone(metrics),
        config.approvals.max_age.as_millis_i64(),
        cancel.clone(),
    ));
    let publisher = publisher.map(|p| {
        tracing::info!(broker = %config.mqtt.as_ref().map(|m| m.url.as_str()).unwrap_or_default(), "Starting the MQTT publisher.");
        tokio::spawn(p.run(cancel.clone()))
    });
    let webhook = webhook.map(|w| {
        tracing::info!(url = %w.shown_url(), "Starting the webhook sender.");
        tokio::spawn(w.run(cancel))
    });
    Ok(tokio::spawn(async move {
        let _ = sweeper.await;
        for task in [publisher, webhook].into_iter().flatten() {
            let _ = task.await;
        }
    }))
}

/// Marks expired actions (queueing `action.expired`) and forgets nonces
/// too old to matter, until `cancel` fires.
async fn sweep(store: Store, metrics: Arc<Metrics>, max_age_ms: i64, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let store = store.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let expired = store.expire_actions(now)?;
            // Twice the accepted age: a message within max_age of either
            // clock is still refused as a replay.
            store.prune_nonces(now.saturating_sub(max_age_ms.saturating_mul(2)))?;
            Ok::<_, StoreError>(expired)
        })
        .await;
        match swept {
            Ok(Ok((expired, report))) => {
                report.emit(&metrics);
                for action in expired {
                    metrics.action_expired(&action);
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error_chain(&error), "Expiring pending actions failed; will retry.");
            }
            Err(error) => {
                tracing::warn!(error = %error, "The action expiry task did not complete; will retry.");
            }
        }
    }
}
