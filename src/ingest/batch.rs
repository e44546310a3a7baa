//! Group commit for webhook deliveries: one writer, one transaction and one sync to disk
//! per batch.
//!
//! Committed one by one, each delivery costs a transaction, and on SQLite a turn at the
//! single write lock and an `fsync`: under an alert storm the webhooks queue for the lock
//! (SQLite's busy handler sleeps milliseconds at a time) and for the disk. The writer
//! takes every delivery waiting when it is free, stores the batch in one transaction
//! (each delivery in a savepoint: one that fails is rolled back alone), and only after
//! the commit hands the new incidents to the engine and answers each webhook: an
//! acknowledgement still means the delivery is on disk.
//!
//! The writer, not the webhook handler, hands new incidents on: a handler that gave up
//! waiting (503 after `--db-wait`) may see its delivery committed a moment later, and its
//! incidents must still be decided at once, not by the slow sweep.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::IncidentSink;
use crate::alert::Delivery;
use crate::store::{NewIncidents, Store, StoreError};

/// Deliveries stored in one transaction at most.
const MAX_BATCH: usize = 256;

struct Job {
    delivery: Delivery,
    now: DateTime<Utc>,
    answer: oneshot::Sender<Result<NewIncidents, StoreError>>,
}

/// Hands deliveries to the writer task; cheap to clone. The task ends when every
/// handle is dropped.
#[derive(Clone)]
pub struct DeliveryWriter {
    jobs: mpsc::Sender<Job>,
}

impl DeliveryWriter {
    /// Starts the writer task: it stores into `store` and hands new incidents to `sink`.
    pub fn start(store: Store, sink: Arc<dyn IncidentSink>) -> DeliveryWriter {
        let (jobs, queue) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_batches(store, sink, queue));
        DeliveryWriter { jobs }
    }

    /// Stores a delivery; returns once the batch holding it is committed.
    pub async fn record(
        &self,
        delivery: Delivery,
        now: DateTime<Utc>,
    ) -> Result<NewIncidents, StoreError> {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            delivery,
            now,
            answer,
        };
        if self.jobs.send(job).await.is_err() {
            return Err(stopped());
        }
        answered.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// The writer is gone (salve is stopping): a retryable answer.
fn stopped() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolClosed)
}

async fn write_batches(store: Store, sink: Arc<dyn IncidentSink>, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A webhook that stopped waiting before its batch began is not stored: it was
        // answered 503, and Alertmanager sends it again.
        batch.retain(|job| !job.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        let deliveries: Vec<(&Delivery, DateTime<Utc>)> =
            batch.iter().map(|j| (&j.delivery, j.now)).collect();
        match store.record_delivery_batch(&deliveries).await {
            Ok(results) => {
                for (job, stored) in batch.drain(..).zip(results) {
                    if let Ok(stored) = &stored {
                        sink.submit(stored.to_decide.clone());
                    }
                    let _ = job.answer.send(stored);
                }
            }
            Err(e) => {
                let transient = e.is_transient();
                for job in batch.drain(..) {
                    let cause = sqlx::Error::Protocol(format!(
                        "the batch holding this delivery failed: {e}"
                    ));
                    let _ = job.answer.send(Err(if transient {
                        StoreError::Unavailable(cause)
                    } else {
                        StoreError::Query(cause)
                    }));
                }
            }
        }
    }
}
