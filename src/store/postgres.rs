//! The PostgreSQL store: the production database.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use super::migrate;
use super::{Dialect, StoreResult, TokenRecord, redact_url};

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .with_context(|| format!("parsing the PostgreSQL URL {:?}", redact_url(url)))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {:?}", redact_url(url)))?;
        migrate::run_postgres(&pool).await?;
        Ok(Self { pool })
    }
}

/// Inserts a whole batch in one statement and one round trip: the records arrive as parallel
/// arrays, the UPDATE locks each live identity row (so a concurrent delete either happens
/// before the batch and drops its records, or waits for it), and only records whose identity
/// was updated are inserted.
const INSERT_TOKEN_BATCH: &str = "
WITH input AS (
    SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::int8[], $6::int8[])
        AS t (tenant_id, jti, identity_id, scopes, issued_at, expires_at)
), live AS (
    UPDATE identities i
       SET last_token_issued_at = GREATEST(COALESCE(i.last_token_issued_at, 0), m.issued_at)
      FROM (SELECT tenant_id, identity_id, max(issued_at) AS issued_at
              FROM input GROUP BY tenant_id, identity_id) m
     WHERE i.tenant_id = m.tenant_id AND i.identity_id = m.identity_id AND i.deleted_at IS NULL
    RETURNING i.tenant_id, i.identity_id
)
INSERT INTO issued_tokens (tenant_id, jti, identity_id, scopes, issued_at, expires_at)
SELECT input.tenant_id, input.jti, input.identity_id, input.scopes, input.issued_at, input.expires_at
  FROM input JOIN live USING (tenant_id, identity_id)
RETURNING jti";

impl_repository!(PgStore, {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn insert_token_records(&self, records: &[TokenRecord]) -> StoreResult<Vec<bool>> {
        let tenants: Vec<Uuid> = records
            .iter()
            .map(|r| r.identity.tenant().as_uuid())
            .collect();
        let jtis: Vec<Uuid> = records.iter().map(|r| r.jti).collect();
        let identities: Vec<Uuid> = records.iter().map(|r| r.identity.local()).collect();
        let scopes: Vec<&str> = records.iter().map(|r| r.scopes.as_str()).collect();
        let issued: Vec<i64> = records.iter().map(|r| r.issued_at.millis()).collect();
        let expires: Vec<i64> = records.iter().map(|r| r.expires_at.millis()).collect();
        let inserted: HashSet<Uuid> = sqlx::query_scalar(INSERT_TOKEN_BATCH)
            .bind(&tenants)
            .bind(&jtis)
            .bind(&identities)
            .bind(&scopes)
            .bind(&issued)
            .bind(&expires)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect();
        Ok(records.iter().map(|r| inserted.contains(&r.jti)).collect())
    }
});
