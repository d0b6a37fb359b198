//! Bulk loads for measuring on a large database (`callsign bench --seed`). Each dialect
//! implements them its own fastest way (multi-row inserts on SQLite, COPY on PostgreSQL).

use async_trait::async_trait;

use super::{IdentityRecord, StoreResult, TokenRecord};

/// Bulk loads, which bypass every check of the API for speed.
#[async_trait]
pub trait SeedRepository: Send + Sync + 'static {
    /// Bulk-loads live identities exactly as given, in one transaction, for load tests on a
    /// large database (`callsign bench --seed`). No idempotence and no external-id lookup: a
    /// row that breaks a constraint fails the whole call and nothing of it is written.
    async fn bulk_insert_identities(&self, identities: &[IdentityRecord]) -> StoreResult<()>;

    /// Bulk-loads issued-token records exactly as given, in one transaction. Every record's
    /// identity must exist already (the foreign key refuses the whole call otherwise); unlike
    /// [`IdentityRepository::commit_batch`] nothing checks that it is live or updates it.
    ///
    /// [`IdentityRepository::commit_batch`]: super::IdentityRepository::commit_batch
    async fn bulk_insert_token_records(&self, records: &[TokenRecord]) -> StoreResult<()>;

    /// Settles the tables after a bulk load changed their sizes by orders of magnitude: fresh
    /// planner statistics, and on PostgreSQL a vacuum, so that the first measurements after a
    /// seed do not pay for setting hint bits on millions of rows or run beside autovacuum.
    async fn finish_bulk_load(&self) -> StoreResult<()>;
}
