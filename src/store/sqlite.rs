//! The SQLite store: the embedded default.
//!
//! WAL journal with `synchronous = FULL`, so an acknowledged commit survives a power cut, and
//! a busy timeout so the CLI and a running server can write to the same file.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use std::collections::{HashMap, HashSet};

use serde_json::json;
use uuid::Uuid;

use super::migrate;
use super::{
    ChangeRow, Dialect, IdentityRecord, MarkIdentity, NewIdentity, SeedRepository, StoreError,
    StoreResult, TokenRecord,
};
use crate::domain::TenantId;
use crate::domain::audit::{AuditEvent, ChainedEvent};
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
            // sqlx already pings a connection when it comes back to the pool (and drops it if
            // broken); pinging again on the way out would add a round trip to every query.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .with_context(|| format!("opening the SQLite database {url:?}"))?;
        migrate::run_sqlite(&pool).await?;
        Ok(Self { pool })
    }
}

impl SqliteStore {
    /// Appends `events` to their chains; with one writer at a time, the heads read are the
    /// heads.
    async fn append_events(
        &self,
        conn: &mut SqliteConnection,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        Self::append_events_locking(conn, events).await.map(drop)
    }

    /// A write transaction holds the whole database from its first statement: no row locks
    /// to order.
    async fn lock_identities(
        &self,
        _conn: &mut SqliteConnection,
        _identities: &[(Uuid, Uuid)],
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// SQLite has no shortcut for a batch in one statement: its transaction is already one
    /// writer's, with no network round trips.
    async fn commit_at_once(
        &self,
        _ops: &[super::BatchOp],
    ) -> Result<Option<Vec<super::BatchOutcome>>, StoreError> {
        Ok(None)
    }

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

    /// The write transaction holds the whole database already.
    async fn lock_tenant_for_delete(
        _conn: &mut SqliteConnection,
        _tenant: TenantId,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }

    async fn insert_events(
        conn: &mut SqliteConnection,
        events: &[ChainedEvent],
    ) -> Result<(), sqlx::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let rows: Vec<_> = events
            .iter()
            .map(|e| {
                json!([
                    hex(e.tenant.as_uuid().as_bytes()),
                    e.seq,
                    e.occurred_at.millis(),
                    e.actor,
                    e.operation,
                    e.identity.map(|id| hex(id.as_bytes())),
                    e.outcome,
                    e.origin.client_request_id,
                    e.origin.request_id,
                    e.origin.source_address,
                    e.origin.user_agent,
                    e.details,
                    hex(&e.prev_hash),
                    hex(&e.hash),
                ])
            })
            .collect();
        sqlx::query(
            "INSERT INTO audit_events (tenant_id, seq, occurred_at, actor, operation, identity_id, \
             outcome, client_request_id, request_id, source_address, user_agent, details, prev_hash, hash) \
             SELECT unhex(value ->> 0), value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
                    unhex(value ->> 5), value ->> 6, value ->> 7, value ->> 8, value ->> 9, \
                    value ->> 10, value ->> 11, unhex(value ->> 12), unhex(value ->> 13) \
               FROM json_each($1) ORDER BY key",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Lower-case hex, as SQLite's `unhex` reads it.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The (tenant, identity) pair of a row `RETURNING tenant_id, identity_id`.
fn written_pair(row: &sqlx::sqlite::SqliteRow) -> Result<(Uuid, Uuid), sqlx::Error> {
    use sqlx::Row as _;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

// The batch writes below are one statement each whatever the batch size: the rows travel as
// one JSON array that `json_each` unpacks, so the statement is prepared once and a batch of
// a thousand costs three statements, not three thousand round trips to SQLite's thread.
impl SqliteStore {
    /// Inserts new identities; returns the (tenant, identity) pairs written. One whose
    /// external id is taken in its tenant (or earlier in the batch) is skipped.
    async fn insert_identities(
        &self,
        conn: &mut SqliteConnection,
        identities: &[&NewIdentity],
    ) -> Result<HashSet<(Uuid, Uuid)>, sqlx::Error> {
        if identities.is_empty() {
            return Ok(HashSet::new());
        }
        let rows: Vec<_> = identities
            .iter()
            .map(|i| {
                json!([
                    hex(i.id.tenant().as_uuid().as_bytes()),
                    hex(i.id.local().as_bytes()),
                    i.external_id,
                    i.created_at.millis(),
                ])
            })
            .collect();
        // No conflict target: the only constraint a fresh UUIDv7 can meet is the tenant's
        // external-id index. A tenant deleted since its request was admitted (by another
        // instance) has its rows skipped rather than failing the batch on the foreign key.
        let written = sqlx::query(
            "INSERT INTO identities (tenant_id, identity_id, external_id, created_at) \
             SELECT unhex(value ->> 0), unhex(value ->> 1), value ->> 2, value ->> 3 \
               FROM json_each($1) \
              WHERE unhex(value ->> 0) IN (SELECT tenant_id FROM tenants) ORDER BY key \
             ON CONFLICT DO NOTHING RETURNING tenant_id, identity_id",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .fetch_all(conn)
        .await?;
        written.iter().map(written_pair).collect()
    }

    /// Inserts token records whose identity is live, moving each identity's
    /// `last_token_issued_at`; returns the jtis written.
    async fn insert_tokens(
        &self,
        conn: &mut SqliteConnection,
        records: &[&TokenRecord],
    ) -> Result<HashSet<Uuid>, sqlx::Error> {
        if records.is_empty() {
            return Ok(HashSet::new());
        }
        let rows: Vec<_> = records
            .iter()
            .map(|r| {
                json!([
                    hex(r.identity.tenant().as_uuid().as_bytes()),
                    hex(r.jti.as_bytes()),
                    hex(r.identity.local().as_bytes()),
                    r.scopes,
                    r.issued_at.millis(),
                    r.expires_at.millis(),
                ])
            })
            .collect();
        let written: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO issued_tokens (tenant_id, jti, identity_id, scopes, issued_at, expires_at) \
             SELECT unhex(value ->> 0), unhex(value ->> 1), unhex(value ->> 2), value ->> 3, \
                    value ->> 4, value ->> 5 \
               FROM json_each($1) \
              WHERE EXISTS (SELECT 1 FROM identities i WHERE i.tenant_id = unhex(value ->> 0) \
                              AND i.identity_id = unhex(value ->> 2) AND i.deleted_at IS NULL) \
              ORDER BY key \
             RETURNING jti",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .fetch_all(&mut *conn)
        .await?;
        let written: HashSet<Uuid> = written.into_iter().collect();
        let issued: Vec<_> = records
            .iter()
            .filter(|r| written.contains(&r.jti))
            .map(|r| {
                json!([
                    hex(r.identity.tenant().as_uuid().as_bytes()),
                    hex(r.identity.local().as_bytes()),
                    r.issued_at.millis(),
                ])
            })
            .collect();
        if !issued.is_empty() {
            sqlx::query(
                "UPDATE identities SET last_token_issued_at = latest.issued_at \
                   FROM (SELECT unhex(value ->> 0) AS tenant_id, unhex(value ->> 1) AS identity_id, \
                                max(value ->> 2) AS issued_at \
                           FROM json_each($1) GROUP BY 1, 2) AS latest \
                  WHERE identities.tenant_id = latest.tenant_id \
                    AND identities.identity_id = latest.identity_id \
                    AND (identities.last_token_issued_at IS NULL \
                         OR identities.last_token_issued_at < latest.issued_at)",
            )
            .bind(serde_json::Value::Array(issued).to_string())
            .execute(conn)
            .await?;
        }
        Ok(written)
    }
}

impl SqliteStore {
    /// Revokes or deletes the batch's identities in one statement (each at most once); the
    /// watermark only moves forward, and an identity already deleted is left alone. Returns
    /// the new watermark of each one marked.
    async fn mark_identities(
        &self,
        conn: &mut SqliteConnection,
        marks: &[(usize, &MarkIdentity)],
    ) -> Result<HashMap<(Uuid, Uuid), i64>, sqlx::Error> {
        use sqlx::Row as _;
        if marks.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<_> = marks
            .iter()
            .map(|(_, m)| {
                json!([
                    hex(m.id.tenant().as_uuid().as_bytes()),
                    hex(m.id.local().as_bytes()),
                    m.at.millis(),
                    m.delete,
                ])
            })
            .collect();
        let marked = sqlx::query(
            "UPDATE identities \
                SET deleted_at = CASE WHEN m.del THEN m.at ELSE identities.deleted_at END, \
                    external_id = CASE WHEN m.del THEN NULL ELSE identities.external_id END, \
                    tokens_revoked_before = max(coalesce(identities.tokens_revoked_before, m.at), m.at) \
               FROM (SELECT unhex(value ->> 0) AS tenant_id, unhex(value ->> 1) AS identity_id, \
                            value ->> 2 AS at, value ->> 3 AS del FROM json_each($1)) AS m \
              WHERE identities.tenant_id = m.tenant_id AND identities.identity_id = m.identity_id \
                AND identities.deleted_at IS NULL \
             RETURNING identities.tenant_id, identities.identity_id, identities.tokens_revoked_before",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .fetch_all(conn)
        .await?;
        marked
            .iter()
            .map(|row| Ok((written_pair(row)?, row.try_get(2)?)))
            .collect()
    }

    async fn insert_identity_changes(
        conn: &mut SqliteConnection,
        changes: &[ChangeRow],
    ) -> Result<(), sqlx::Error> {
        let rows: Vec<_> = changes
            .iter()
            .map(|c| {
                json!([
                    c.seq,
                    hex(c.tenant.as_bytes()),
                    hex(c.identity.as_bytes()),
                    c.tokens_revoked_before,
                    c.deleted,
                    c.changed_at,
                ])
            })
            .collect();
        sqlx::query(
            "INSERT INTO identity_changes (seq, tenant_id, identity_id, tokens_revoked_before, \
             deleted, changed_at) \
             SELECT value ->> 0, unhex(value ->> 1), unhex(value ->> 2), value ->> 3, value ->> 4, \
                    value ->> 5 FROM json_each($1)",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(conn)
        .await?;
        Ok(())
    }
}

impl_repository!(SqliteStore, SqliteConnection, Dialect::Sqlite);

#[async_trait]
impl SeedRepository for SqliteStore {
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
}

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
