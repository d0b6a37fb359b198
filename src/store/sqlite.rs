//! The SQLite store: the embedded default.
//!
//! WAL journal with `synchronous = FULL`, so an acknowledged commit survives a power cut, and
//! a busy timeout so the CLI and a running server can write to the same file.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use std::collections::HashSet;

use uuid::Uuid;

use super::migrate;
use super::{Dialect, IdentityRecord, NewIdentity, StoreResult, TokenRecord};
use crate::domain::audit::ChainedEvent;
/// Rows per statement of a bulk load: 500 rows of at most 6 columns stay far below SQLite's
/// limit of 32,766 bound parameters, and every full chunk reuses one prepared statement.
const BULK_ROWS_PER_STATEMENT: usize = 500;

/// `INSERT INTO … (…) VALUES (?, …), (?, …), …` for `rows` rows of `columns` values.
fn multi_row_insert(head: &str, columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(","));
    let mut sql = String::with_capacity(head.len() + 8 + rows * (row.len() + 1));
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&row);
    }
    sql
}

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("parsing the SQLite URL {url:?}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .with_context(|| format!("opening the SQLite database {url:?}"))?;
        migrate::run_sqlite(&pool).await?;
        Ok(Self { pool })
    }
}

impl SqliteStore {
    /// One identity's events through its index. Without statistics SQLite prefers to walk
    /// the primary key in `seq` order (to skip a sort) and filter, which reads the whole
    /// trail of the tenant.
    const AUDIT_BY_IDENTITY: &'static str = "audit_events INDEXED BY audit_events_by_identity";

    /// SQLite has one writer at a time: the chain heads need no row lock.
    const LOCK_CHAIN_SQL: &'static str =
        "SELECT last_seq, last_hash FROM audit_chains WHERE tenant_id = $1";

    /// `BEGIN IMMEDIATE` takes the write lock at once, so a transaction that reads before it
    /// writes waits on the busy timeout instead of failing on a lock upgrade.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    async fn insert_events(
        conn: &mut SqliteConnection,
        events: &[ChainedEvent],
    ) -> Result<(), sqlx::Error> {
        // In-process statements cost microseconds; one prepared INSERT per event is fine.
        for e in events {
            sqlx::query(
                "INSERT INTO audit_events (tenant_id, seq, occurred_at, actor, operation, identity_id, \
                 outcome, client_request_id, request_id, source_address, user_agent, details, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(e.tenant.as_uuid())
            .bind(e.seq)
            .bind(e.occurred_at.millis())
            .bind(&e.actor)
            .bind(&e.operation)
            .bind(e.identity)
            .bind(&e.outcome)
            .bind(&e.origin.client_request_id)
            .bind(&e.origin.request_id)
            .bind(&e.origin.source_address)
            .bind(&e.origin.user_agent)
            .bind(&e.details)
            .bind(&e.prev_hash)
            .bind(&e.hash)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

impl SqliteStore {
    /// Inserts new identities; returns the (tenant, identity) pairs written. One whose
    /// external id is taken in its tenant is skipped.
    async fn insert_identities(
        conn: &mut SqliteConnection,
        identities: &[&NewIdentity],
    ) -> Result<HashSet<(Uuid, Uuid)>, sqlx::Error> {
        let mut written = HashSet::with_capacity(identities.len());
        for identity in identities {
            let tenant = identity.id.tenant().as_uuid();
            // No conflict target: the only constraint a fresh UUIDv7 can meet is the
            // tenant's external-id index.
            let inserted = sqlx::query(
                "INSERT INTO identities (tenant_id, identity_id, external_id, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(identity.id.local())
            .bind(identity.external_id.as_deref())
            .bind(identity.created_at.millis())
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 1 {
                written.insert((tenant, identity.id.local()));
            }
        }
        Ok(written)
    }

    /// Inserts token records whose identity is live, moving each identity's
    /// `last_token_issued_at`; returns the jtis written.
    async fn insert_tokens(
        conn: &mut SqliteConnection,
        records: &[&TokenRecord],
    ) -> Result<HashSet<Uuid>, sqlx::Error> {
        // In-process statements cost microseconds; the commit (an fsync) is what the batch
        // shares.
        let mut written = HashSet::with_capacity(records.len());
        for record in records {
            let tenant = record.identity.tenant().as_uuid();
            let inserted = sqlx::query(
                "INSERT INTO issued_tokens (tenant_id, jti, identity_id, scopes, issued_at, expires_at) \
                 SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM identities \
                   WHERE tenant_id = $1 AND identity_id = $3 AND deleted_at IS NULL)",
            )
            .bind(tenant)
            .bind(record.jti)
            .bind(record.identity.local())
            .bind(&record.scopes)
            .bind(record.issued_at.millis())
            .bind(record.expires_at.millis())
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1;
            if inserted {
                sqlx::query(
                    "UPDATE identities SET last_token_issued_at = $3 WHERE tenant_id = $1 \
                     AND identity_id = $2 AND (last_token_issued_at IS NULL OR last_token_issued_at < $3)",
                )
                .bind(tenant)
                .bind(record.identity.local())
                .bind(record.issued_at.millis())
                .execute(&mut *conn)
                .await?;
                written.insert(record.jti);
            }
        }
        Ok(written)
    }
}

impl_repository!(SqliteStore, SqliteConnection, {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn bulk_insert_identities(&self, identities: &[IdentityRecord]) -> StoreResult<()> {
        // One transaction (one fsync) for the whole call; multi-row statements keep the
        // per-row cost to binding values.
        let mut tx = self.pool.begin().await?;
        for chunk in identities.chunks(BULK_ROWS_PER_STATEMENT) {
            let sql = multi_row_insert(
                "INSERT INTO identities (tenant_id, identity_id, external_id, created_at, \
                 last_token_issued_at, tokens_revoked_before)",
                6,
                chunk.len(),
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for identity in chunk {
                query = query
                    .bind(identity.id.tenant().as_uuid())
                    .bind(identity.id.local())
                    .bind(identity.external_id.as_deref())
                    .bind(identity.created_at.millis())
                    .bind(identity.last_token_issued_at.map(|t| t.millis()))
                    .bind(identity.tokens_revoked_before.map(|t| t.millis()));
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn bulk_insert_token_records(&self, records: &[TokenRecord]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in records.chunks(BULK_ROWS_PER_STATEMENT) {
            let sql = multi_row_insert(
                "INSERT INTO issued_tokens (tenant_id, jti, identity_id, scopes, issued_at, expires_at)",
                6,
                chunk.len(),
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for record in chunk {
                query = query
                    .bind(record.identity.tenant().as_uuid())
                    .bind(record.jti)
                    .bind(record.identity.local())
                    .bind(record.scopes.as_str())
                    .bind(record.issued_at.millis())
                    .bind(record.expires_at.millis());
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn finish_bulk_load(&self) -> StoreResult<()> {
        // A sampled ANALYZE: a full one would read every row of a seeded database.
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA analysis_limit = 1000")
            .execute(&mut *conn)
            .await?;
        sqlx::query("ANALYZE").execute(&mut *conn).await?;
        Ok(())
    }
});

#[cfg(test)]
mod tests {
    use super::multi_row_insert;

    #[test]
    fn multi_row_insert_has_one_placeholder_per_value() {
        assert_eq!(
            multi_row_insert("INSERT INTO t (a, b)", 2, 3),
            "INSERT INTO t (a, b) VALUES (?,?),(?,?),(?,?)"
        );
    }
}
