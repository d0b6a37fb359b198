//! Group commit for issued-token records and their audit events.
//!
//! A token is answered only once its record is durable. Committing each record in its own
//! transaction would cap issuance at the database's commit rate, so one writer task collects
//! the records of all requests waiting at that moment, commits them in one transaction, and
//! then answers each request. Batches form on their own: while one commit runs, the next
//! requests queue up, so under light load a batch is one record (no added latency) and under
//! heavy load it grows up to `MAX_BATCH`.
//!
//! If a commit fails, every request in the batch gets the error and nothing of the batch is
//! written. On shutdown the channel closes and the writer drains what is queued before it
//! stops.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{Repository, StoreError, TokenIssue};

/// Most records committed in one transaction.
pub const MAX_BATCH: usize = 1024;

/// Whether a record was written, or why the whole batch failed.
pub type WriteOutcome = Result<bool, Arc<StoreError>>;

/// Told the size of every batch committed (for metrics).
pub type BatchObserver = Arc<dyn Fn(usize) + Send + Sync>;

struct Pending {
    issue: TokenIssue,
    reply: oneshot::Sender<WriteOutcome>,
}

#[derive(Clone)]
pub struct TokenWriter {
    queue: mpsc::Sender<Pending>,
}

impl TokenWriter {
    /// Starts the writer task. It ends when every `TokenWriter` clone is dropped and the queue
    /// is drained.
    pub fn spawn(repo: Arc<dyn Repository>, on_batch: BatchObserver) -> (Self, JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(MAX_BATCH * 4);
        let task = tokio::spawn(run(repo, receiver, on_batch));
        (Self { queue }, task)
    }

    /// Queues a token record and its audit event, and waits for their commit. `Ok(false)`:
    /// the identity is missing or deleted, and nothing was written.
    pub async fn write(&self, issue: TokenIssue) -> WriteOutcome {
        let (reply, answer) = oneshot::channel();
        let closed = || {
            Arc::new(StoreError::Other(anyhow::anyhow!(
                "the token writer has stopped"
            )))
        };
        self.queue
            .send(Pending { issue, reply })
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
        let issues: Vec<TokenIssue> = batch.iter().map(|p| p.issue.clone()).collect();
        match repo.insert_token_records(&issues).await {
            Ok(written) => {
                on_batch(issues.len());
                for (pending, written) in batch.drain(..).zip(written) {
                    // The requester may have gone away; its record is durable either way.
                    let _ = pending.reply.send(Ok(written));
                }
            }
            Err(error) => {
                tracing::error!(error = %error, records = issues.len(), "token batch failed");
                let error = Arc::new(error);
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(error.clone()));
                }
            }
        }
    }
}
