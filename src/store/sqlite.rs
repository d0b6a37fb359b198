//! The SQLite store: the embedded default.
//!
//! WAL journal with `synchronous = FULL`, so an acknowledged commit survives a power cut, and
//! a busy timeout so the CLI and a running server can write to the same file.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::migrate;
use super::{Dialect, IdentityRecord, StoreResult, TokenRecord};

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

impl_repository!(SqliteStore, {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn insert_token_records(&self, records: &[TokenRecord]) -> StoreResult<Vec<bool>> {
        // In-process statements cost microseconds; the commit (an fsync) is what the batch
        // shares. The INSERT comes first so the transaction takes the write lock at once and
        // waits on the busy timeout instead of failing on a lock upgrade.
        let mut tx = self.pool.begin().await?;
        let mut written = Vec::with_capacity(records.len());
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
            .execute(&mut *tx)
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
                .execute(&mut *tx)
                .await?;
            }
            written.push(inserted);
        }
        tx.commit().await?;
        Ok(written)
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
