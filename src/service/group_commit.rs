//! Group commit: the writes that dominate traffic (new identities and issued tokens, each
//! with its audit events) are committed many to a transaction.
//!
//! A request is answered only once its write is durable. Committing each in its own
//! transaction would cap throughput at the database's commit rate — and, since every audited
//! write holds its tenant's audit-chain head until commit, at that rate *per tenant*. So one
//! writer task collects the writes of all requests waiting at that moment, commits them in one
//! transaction, and then answers each request. Batches form on their own: while one commit
//! runs, the next requests queue up, so under light load a batch is one write (no added
//! latency) and under heavy load it grows up to `MAX_BATCH`.
//!
//! If a commit fails, every request in the batch gets the error and nothing of the batch is
//! written. On shutdown the queue closes and the writer drains it before it stops.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{BatchOp, BatchOutcome, Repository, StoreError};

/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 1024;

/// What became of a write, or why its whole batch failed.
pub type WriteOutcome = Result<BatchOutcome, Arc<StoreError>>;

/// Told the size of every batch committed (for metrics).
pub type BatchObserver = Arc<dyn Fn(usize) + Send + Sync>;

struct Pending {
    op: BatchOp,
    reply: oneshot::Sender<WriteOutcome>,
}

#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts the writer task. It ends when every `GroupCommit` clone is dropped and the queue
    /// is drained.
    pub fn spawn(repo: Arc<dyn Repository>, on_batch: BatchObserver) -> (Self, JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(MAX_BATCH * 4);
        let task = tokio::spawn(run(repo, receiver, on_batch));
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
    mut receiver: mpsc::Receiver<Pending>,
    on_batch: BatchObserver,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let ops: Vec<BatchOp> = batch.iter().map(|p| p.op.clone()).collect();
        match repo.commit_batch(&ops).await {
            Ok(outcomes) => {
                on_batch(ops.len());
                for (pending, outcome) in batch.drain(..).zip(outcomes) {
                    // The requester may have gone away; its write is durable either way.
                    let _ = pending.reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::error!(error = %error, writes = ops.len(), "batch commit failed");
                let error = Arc::new(error);
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(error.clone()));
                }
            }
        }
    }
}
