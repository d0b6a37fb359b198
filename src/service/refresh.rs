//! Keeps a server's in-memory views in step with the database: the tenant directory (tenants,
//! keys, limits), the operator credentials, and the host names the TLS certificate names.
//!
//! Every change to any of them moves the change epoch in the same transaction. A server polls
//! the epoch (`poll`), so a change made by the CLI or another instance is applied within the
//! refresh interval; a change made through this server's admin API calls `reload` before it
//! answers, so it is in effect on this server by the time the client hears back.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::store::Repository;
use crate::tls::CertResolver;

use super::directory::TenantDirectory;
use super::operators::OperatorAuth;

struct Applied {
    epoch: i64,
    hostnames: Vec<String>,
}

pub struct Refresher {
    repo: Arc<dyn Repository>,
    directory: Arc<TenantDirectory>,
    operators: Arc<OperatorAuth>,
    resolver: Arc<CertResolver>,
    /// What was applied last; the lock also serialises reloads.
    applied: Mutex<Applied>,
}

impl Refresher {
    /// Starts from what `directory` and `operators` loaded already.
    pub fn new(
        repo: Arc<dyn Repository>,
        directory: Arc<TenantDirectory>,
        operators: Arc<OperatorAuth>,
        resolver: Arc<CertResolver>,
    ) -> Self {
        let applied = Applied {
            epoch: directory.epoch(),
            hostnames: directory.hostnames(),
        };
        Self {
            repo,
            directory,
            operators,
            resolver,
            applied: Mutex::new(applied),
        }
    }

    /// Reloads when the change epoch has moved; returns whether it did.
    pub async fn poll(&self) -> anyhow::Result<bool> {
        let epoch = self.repo.change_epoch().await?;
        if epoch == self.applied.lock().await.epoch {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Reloads everything now.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let mut applied = self.applied.lock().await;
        self.directory.reload().await?;
        self.operators.reload().await?;
        let hostnames = self.directory.hostnames();
        if hostnames != applied.hostnames {
            // A certificate that does not name a new host only fails that host's handshakes;
            // the reload itself stands.
            if let Err(error) = self.resolver.update_hostnames(&hostnames) {
                tracing::error!(error = %format!("{error:#}"), "could not re-issue the TLS certificate");
            }
            applied.hostnames = hostnames;
        }
        applied.epoch = self.directory.epoch();
        tracing::info!(
            tenants = self.directory.tenants().len(),
            epoch = applied.epoch,
            "tenants and credentials reloaded"
        );
        Ok(())
    }
}
