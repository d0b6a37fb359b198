//! The repository: everything callsign keeps in SQL, behind one trait with one implementation
//! per dialect (SQLite, PostgreSQL). sqlx is the only driver.
//!
//! Methods are units of work named for what they do to the data; each runs in its own
//! transaction. `sqlx::Error` never leaves this module: callers see [`StoreError`].
//! Every query that touches tenant data names the tenant.

// `shared` defines the macro the dialect modules expand, so it comes first.
#[macro_use]
mod shared;
mod migrate;
mod postgres;
mod records;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::audit::{AuditEvent, ChainedEvent};
use crate::domain::{IdentityId, KeySlot, OperatorCredentialId, TenantId, Timestamp};

pub use records::{
    AccessKeyRecord, AuditChainState, AuditQuery, BatchOp, BatchOutcome, CreateIdentity,
    DeletedTenantRecord, DeletionCounts, IdentityChange, IdentityRecord, InsertIdentityOutcome,
    MarkIdentity, NewIdentity, OperatorCredentialRecord, PoolStats, RevocationMark,
    SigningKeyRecord, TenantChanges, TenantRecord, TenantScope, TokenIssue, TokenRecord,
};

/// Which SQL dialect a store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// What can go wrong in the repository, named by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule refused the write (a tenant name or host name already claimed).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or timed out; retrying later may work.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_owned())
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => StoreError::Unavailable(error),
            _ => StoreError::Other(anyhow::Error::new(error).context("database error")),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How many of the newest identity changes the change log keeps. Servers poll it every few
/// hundred milliseconds; one that falls further behind than this reloads the watermarks from
/// `identities` instead.
pub const IDENTITY_CHANGES_KEPT: i64 = 100_000;

/// One row of `identity_changes` as a batch writes it.
pub(crate) struct ChangeRow {
    pub seq: i64,
    pub tenant: uuid::Uuid,
    pub identity: uuid::Uuid,
    pub tokens_revoked_before: i64,
    pub deleted: bool,
    pub changed_at: i64,
}

/// The repository interface both dialects implement and the same test suite runs against.
#[async_trait]
pub trait Repository: Send + Sync + 'static {
    fn dialect(&self) -> Dialect;

    /// One cheap round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;

    /// Closes the pool after in-flight work finishes.
    async fn close(&self);

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>>;

    /// Records `value` under `key` unless a value is there already; returns the stored value.
    async fn put_meta_if_absent(&self, key: &str, value: &str) -> StoreResult<String>;

    /// The counter bumped by every change to tenants and their keys.
    async fn change_epoch(&self) -> StoreResult<i64>;

    /// Creates a tenant with its host names, access keys, first signing key and audit chain,
    /// and records `event`, in one transaction. A taken name or host name is a
    /// [`StoreError::Conflict`].
    async fn insert_tenant(&self, tenant: &TenantRecord, event: &AuditEvent) -> StoreResult<()>;

    /// Every tenant with its host names, sealed keys and limits, oldest first.
    async fn load_tenants(&self) -> StoreResult<Vec<TenantRecord>> {
        self.fetch_tenants(&TenantScope::all()).await
    }

    /// The tenants in `scope`, in creation order (then by id).
    async fn fetch_tenants(&self, scope: &TenantScope) -> StoreResult<Vec<TenantRecord>>;

    /// Applies `changes` to a tenant and records `event`, in one transaction that also moves
    /// the change epoch. Returns false, writing nothing, when there is no such tenant; a name
    /// or host name another tenant has is a [`StoreError::Conflict`], and nothing is written.
    async fn update_tenant(
        &self,
        tenant: TenantId,
        changes: &TenantChanges,
        event: &AuditEvent,
    ) -> StoreResult<bool>;

    /// Deletes a tenant with its host names, keys, limits, identities and issued-token
    /// records, keeps its name and retention in `deleted_tenants` for its audit trail, and
    /// records the event `make_event` builds from what was removed; one transaction, which
    /// moves the change epoch. `None` when there is no such tenant.
    async fn delete_tenant(
        &self,
        tenant: TenantId,
        at: Timestamp,
        make_event: &(dyn Fn(DeletionCounts) -> AuditEvent + Send + Sync),
    ) -> StoreResult<Option<DeletionCounts>>;

    /// Tenants that were deleted, whose audit trails may remain.
    async fn deleted_tenants(&self) -> StoreResult<Vec<DeletedTenantRecord>>;

    /// Replaces the access key in `slot` with `sealed_key` and records `event`, moving the
    /// change epoch. Returns false when there is no such tenant.
    async fn replace_access_key(
        &self,
        tenant: TenantId,
        slot: KeySlot,
        sealed_key: &[u8],
        at: Timestamp,
        event: &AuditEvent,
    ) -> StoreResult<bool>;

    /// Stores a new operator credential's hash and records `event` on the deployment chain.
    async fn insert_operator_credential(
        &self,
        credential: &OperatorCredentialRecord,
        event: &AuditEvent,
    ) -> StoreResult<()>;

    /// Every operator credential, revoked ones included, oldest first.
    async fn load_operator_credentials(&self) -> StoreResult<Vec<OperatorCredentialRecord>>;

    /// Marks a credential revoked and records `event`, moving the change epoch so running
    /// servers drop it. Returns false when there is no such credential or it was revoked
    /// already.
    async fn revoke_operator_credential(
        &self,
        id: OperatorCredentialId,
        at: Timestamp,
        event: &AuditEvent,
    ) -> StoreResult<bool>;

    /// How many connections the pool holds and how many are idle.
    fn pool_stats(&self) -> PoolStats;

    /// A live (not deleted) identity.
    async fn find_identity(&self, id: IdentityId) -> StoreResult<Option<IdentityRecord>>;

    /// Turns a live identity into a tombstone (personal data removed, every token revoked),
    /// appends the change to the identity change log and records `event`, in one
    /// transaction. Returns the tombstone's mark, or `None` (writing nothing) when there was
    /// no live identity.
    async fn delete_identity(
        &self,
        id: IdentityId,
        at: Timestamp,
        event: &AuditEvent,
    ) -> StoreResult<Option<RevocationMark>>;

    /// Moves a live identity's revocation watermark to `at` (never backwards), appends the
    /// change to the identity change log and records `event`, in one transaction. Returns
    /// the resulting mark, or `None` (writing nothing) when there was no live identity.
    async fn revoke_tokens(
        &self,
        id: IdentityId,
        at: Timestamp,
        event: &AuditEvent,
    ) -> StoreResult<Option<RevocationMark>>;

    /// The sequence number of the newest identity change, read first, and then the mark of
    /// every identity whose watermark is at or after `since`. A change committed between the
    /// two reads shows up in both, which is harmless: marks merge.
    async fn load_revocation_marks(
        &self,
        since: Timestamp,
    ) -> StoreResult<(i64, Vec<RevocationMark>)>;

    /// Up to `limit` identity changes with a sequence number above `after`, oldest first.
    async fn identity_changes_after(
        &self,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<IdentityChange>>;

    /// Adds `key` as the tenant's signing key and sets `retired_at` to `retire_others_at` on
    /// every key of the tenant that had none, in one transaction that also moves the change
    /// epoch. Returns false when the tenant does not exist.
    async fn rotate_signing_key(
        &self,
        tenant: TenantId,
        key: &SigningKeyRecord,
        retire_others_at: Timestamp,
        event: &AuditEvent,
    ) -> StoreResult<bool>;

    /// Commits many writes in one transaction (the group-commit path), each with its audit
    /// events, and says for each, in order, what became of it:
    /// - a new identity whose external id is taken in its tenant is not written (nor its
    ///   token or events), and the existing identity is returned;
    /// - a token whose identity is missing or deleted is not written (nor its event).
    ///
    /// Either the whole batch commits or none of it does.
    async fn commit_batch(&self, ops: &[BatchOp]) -> StoreResult<Vec<BatchOutcome>>;

    /// Appends events that belong to no other write (failed authentications).
    async fn append_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()>;

    /// Reads audit events of one tenant.
    async fn query_audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<ChainedEvent>>;

    /// Where a tenant's audit chain starts and ends; `None` for a tenant that never had one.
    async fn audit_chain(&self, tenant: TenantId) -> StoreResult<Option<AuditChainState>>;

    /// The tenants that have an audit chain, including deleted ones.
    async fn audit_tenants(&self) -> StoreResult<Vec<TenantId>>;

    /// Deletes a tenant's events that occurred before `before`, re-anchors its chain at the
    /// last deleted event, and records `event` (built by `make_event` from the number of
    /// events purged and the new anchor sequence number). Returns how many were purged.
    async fn purge_audit_events(
        &self,
        tenant: TenantId,
        before: Timestamp,
        make_event: &(dyn Fn(u64, i64) -> AuditEvent + Send + Sync),
    ) -> StoreResult<u64>;

    /// Bulk-loads live identities exactly as given, in one transaction, for load tests on a
    /// large database (`callsign bench --seed`). No idempotence and no external-id lookup: a
    /// row that breaks a constraint fails the whole call and nothing of it is written.
    async fn bulk_insert_identities(&self, identities: &[IdentityRecord]) -> StoreResult<()>;

    /// Bulk-loads issued-token records exactly as given, in one transaction. Every record's
    /// identity must exist already (the foreign key refuses the whole call otherwise); unlike
    /// [`Repository::commit_batch`] nothing checks that it is live or updates it.
    async fn bulk_insert_token_records(&self, records: &[TokenRecord]) -> StoreResult<()>;

    /// Settles the tables after a bulk load changed their sizes by orders of magnitude: fresh
    /// planner statistics, and on PostgreSQL a vacuum, so that the first measurements after a
    /// seed do not pay for setting hint bits on millions of rows or run beside autovacuum.
    async fn finish_bulk_load(&self) -> StoreResult<()>;
}

/// Connects to `database_url` (`sqlite://…` or `postgres://…`), applies pending migrations,
/// and returns the store.
pub async fn open(database_url: &str) -> anyhow::Result<Arc<dyn Repository>> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(database_url).await?))
    } else if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(database_url).await?))
    } else {
        anyhow::bail!(
            "unsupported database URL scheme in {:?}: use sqlite://<path> or postgres://…",
            redact_url(database_url)
        )
    }
}

/// The URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
