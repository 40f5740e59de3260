//! The daemon's failure-prediction task: samples of signals with a limit
//! in, [`PredictiveEvent`]s out (the incident stage turns them into
//! incidents with [`OpenPredictions`](super::open_predictions::OpenPredictions)).
//!
//! Its own task because a refit is far heavier than scoring a sample: the
//! detectors must not wait for forecasts. Fitting runs on the blocking
//! pool. Data time is the batch's `until`, so backfill, live polling and
//! the fast simulated demo behave alike.

use tokio::sync::mpsc;

use super::predictive::{PredictiveEvent, PredictiveScanner};
use crate::signal::SeriesBatch;

/// Feeds each batch to the scanner, scans at the batch's data time and
/// sends what changed. Returns when `batches` closes (after the last
/// batch's events are sent) or the receiver is gone.
pub async fn run_scanner(
    mut scanner: PredictiveScanner,
    mut batches: mpsc::Receiver<SeriesBatch>,
    events: mpsc::Sender<Vec<PredictiveEvent>>,
) {
    while let Some(batch) = batches.recv().await {
        for series in &batch.series {
            scanner.observe(&series.key, &series.samples);
        }
        let now = batch.until;
        let scanned = tokio::task::spawn_blocking(move || {
            let found = scanner.scan(now);
            (scanner, found)
        })
        .await;
        let found = match scanned {
            Ok((back, found)) => {
                scanner = back;
                found
            }
            Err(error) => {
                tracing::error!(error = %error, "The failure-prediction task panicked; predictions stop until restart.");
                return;
            }
        };
        let changed: Vec<PredictiveEvent> = found
            .into_iter()
            .filter(|e| !matches!(e, PredictiveEvent::Skipped { .. }))
            .collect();
        if !changed.is_empty() && events.send(changed).await.is_err() {
            return;
        }
    }
}
