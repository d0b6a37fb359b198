//! Group commit: the identity writes (new identities, issued tokens, revocations and
//! deletions, each with its audit events) are committed many to a transaction.
//!
//! A request is answered only once its write is durable. Committing each in its own
//! transaction would cap throughput at the database's commit rate — and, since every audited
//! write holds its tenant's audit-chain head until commit, at that rate *per tenant*. So one
//! writer task collects the writes of all requests waiting at that moment, commits them in one
//! transaction, and then answers each request. Batches form on their own: while one commit
//! runs, the next requests queue up, so under light load a batch is one write (no added
//! latency) and under heavy load it grows up to `MAX_BATCH`.
//!
//! On PostgreSQL several writers may take turns at the queue: while one batch waits for its
//! commit (a network round trip and a WAL flush), the next one is collected and its rows
//! written. Batches of the same tenant still commit one after the other, since each holds the
//! tenant's audit-chain head from its last statement to its commit. SQLite has one writer at a
//! time, so it gets one writer task.
//!
//! A batch holds every kind of write that was waiting, in the order it arrived: on PostgreSQL
//! such a mix is one statement, as a batch of one kind is (the store's `commit_at_once`).
//!
//! If a commit fails, every request in the batch gets the error and nothing of the batch is
//! written. On shutdown the queue closes and the writers drain it before they stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{BatchOp, BatchOutcome, Repository, StoreError};

/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 1024;

/// What became of a write, or why its whole batch failed.
pub type WriteOutcome = Result<BatchOutcome, Arc<StoreError>>;

/// Told the size of every batch committed and how long its transaction took (for metrics).
pub type BatchObserver = Arc<dyn Fn(usize, Duration) + Send + Sync>;

struct Pending {
    op: BatchOp,
    reply: oneshot::Sender<WriteOutcome>,
}

#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts `writers` writer tasks (at least one). The returned task ends when every
    /// `GroupCommit` clone is dropped and the queue is drained.
    pub fn spawn(
        repo: Arc<dyn Repository>,
        on_batch: BatchObserver,
        writers: usize,
    ) -> (Self, JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(MAX_BATCH * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        let tasks: Vec<_> = (0..writers.max(1))
            .map(|_| tokio::spawn(run(repo.clone(), receiver.clone(), on_batch.clone())))
            .collect();
        let task = tokio::spawn(async move {
            for task in tasks {
                let _ = task.await;
            }
        });
        (Self { queue }, task)
    }

    /// Queues `op` and waits for the commit of its batch.
    pub async fn write(&self, op: BatchOp) -> WriteOutcome {
        let (reply, answer) = oneshot::channel();
        let closed = || {
            Arc::new(StoreError::Other(anyhow::anyhow!(
                "the batch writer has stopped"
            )))
        };
        self.queue
            .send(Pending { op, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn run(
    repo: Arc<dyn Repository>,
    receiver: Arc<Mutex<mpsc::Receiver<Pending>>>,
    on_batch: BatchObserver,
) {
    let mut collected: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    loop {
        // One writer collects at a time; it lets go of the queue as soon as it has a batch.
        let count = receiver
            .lock()
            .await
            .recv_many(&mut collected, MAX_BATCH)
            .await;
        if count == 0 {
            return;
        }
        commit(&*repo, collected.drain(..), &on_batch).await;
    }
}

/// Commits `batch` as one transaction and answers each of its requests.
async fn commit(
    repo: &dyn Repository,
    batch: impl Iterator<Item = Pending>,
    on_batch: &BatchObserver,
) {
    let (ops, replies): (Vec<BatchOp>, Vec<_>) = batch.map(|p| (p.op, p.reply)).unzip();
    let started = Instant::now();
    match repo.commit_batch(&ops).await {
        Ok(outcomes) => {
            on_batch(ops.len(), started.elapsed());
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // The requester may have gone away; its write is durable either way.
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(error) => {
            tracing::error!(error = %error, writes = ops.len(), "batch commit failed");
            let error = Arc::new(error);
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
