//! The repository: everything callsign keeps in SQL, behind one trait per area (tenants,
//! identities, audit, …, gathered in [`Repository`]) with one implementation per dialect
//! (SQLite, PostgreSQL). sqlx is the only driver.
//!
//! Methods are units of work named for what they do to the data; each runs in its own
//! transaction. `sqlx::Error` never leaves this module: callers see [`StoreError`].
//! Every query that touches tenant data names the tenant.

// The area modules define the macros `shared` combines and the dialect modules expand, so
// they come first.
#[macro_use]
mod audit;
#[macro_use]
mod identities;
#[macro_use]
mod operators;
#[macro_use]
mod server;
#[macro_use]
mod tenants;
#[macro_use]
mod shared;
mod migrate;
mod postgres;
mod records;
mod seed;
mod sqlite;

use std::sync::Arc;

pub use audit::AuditRepository;
pub use identities::IdentityRepository;
pub use operators::OperatorRepository;
pub use records::{
    AccessKeyRecord, AuditChainState, AuditQuery, BatchOp, BatchOutcome, CreateIdentity,
    DeletedTenantRecord, DeletionCounts, IdentityChange, IdentityRecord, InsertIdentityOutcome,
    MarkIdentity, NewIdentity, OperatorCredentialRecord, PoolStats, RevocationMark,
    SigningKeyRecord, TenantChanges, TenantRecord, TenantScope, TokenIssue, TokenRecord,
};
pub use seed::SeedRepository;
pub use server::ServerRepository;
pub use tenants::TenantRepository;

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

/// The repository interface both dialects implement and the same test suite runs against:
/// one trait per area, so that a caller names the part of the data it uses.
pub trait Repository:
    ServerRepository
    + TenantRepository
    + OperatorRepository
    + IdentityRepository
    + AuditRepository
    + SeedRepository
{
}

impl<T> Repository for T where
    T: ServerRepository
        + TenantRepository
        + OperatorRepository
        + IdentityRepository
        + AuditRepository
        + SeedRepository
{
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
