//! The PostgreSQL store: the production database.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::migrate;
use super::{Dialect, NewIdentity, TokenRecord, redact_url};
use crate::domain::audit::ChainedEvent;

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

/// All events of a transaction in one statement, as parallel arrays.
const INSERT_EVENTS: &str = "
INSERT INTO audit_events (tenant_id, seq, occurred_at, actor, operation, identity_id, outcome,
    client_request_id, request_id, source_address, user_agent, details, prev_hash, hash)
SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::uuid[],
    $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[], $14::bytea[])";

impl PgStore {
    /// Row locks serialise the writers of one tenant's chain until they commit.
    const LOCK_CHAIN_SQL: &'static str =
        "SELECT last_seq, last_hash FROM audit_chains WHERE tenant_id = $1 FOR UPDATE";

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    async fn insert_events(
        conn: &mut PgConnection,
        events: &[ChainedEvent],
    ) -> Result<(), sqlx::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let column =
            |f: fn(&ChainedEvent) -> Option<String>| events.iter().map(f).collect::<Vec<_>>();
        sqlx::query(INSERT_EVENTS)
            .bind(
                events
                    .iter()
                    .map(|e| e.tenant.as_uuid())
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| e.seq).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.occurred_at.millis())
                    .collect::<Vec<_>>(),
            )
            .bind(column(|e| Some(e.actor.clone())))
            .bind(column(|e| Some(e.operation.clone())))
            .bind(events.iter().map(|e| e.identity).collect::<Vec<_>>())
            .bind(column(|e| Some(e.outcome.clone())))
            .bind(column(|e| e.origin.client_request_id.clone()))
            .bind(column(|e| e.origin.request_id.clone()))
            .bind(column(|e| e.origin.source_address.clone()))
            .bind(column(|e| e.origin.user_agent.clone()))
            .bind(column(|e| Some(e.details.clone())))
            .bind(
                events
                    .iter()
                    .map(|e| e.prev_hash.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| e.hash.clone()).collect::<Vec<_>>())
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// New identities in one statement; an external id already taken in the tenant (or taken
/// earlier in the same batch) skips the row.
const INSERT_IDENTITIES: &str = "
INSERT INTO identities (tenant_id, identity_id, external_id, created_at)
SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int8[])
ON CONFLICT DO NOTHING
RETURNING tenant_id, identity_id";

impl PgStore {
    /// Inserts new identities; returns the (tenant, identity) pairs written.
    async fn insert_identities(
        conn: &mut PgConnection,
        identities: &[&NewIdentity],
    ) -> Result<HashSet<(Uuid, Uuid)>, sqlx::Error> {
        if identities.is_empty() {
            return Ok(HashSet::new());
        }
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(INSERT_IDENTITIES)
            .bind(
                identities
                    .iter()
                    .map(|i| i.id.tenant().as_uuid())
                    .collect::<Vec<_>>(),
            )
            .bind(identities.iter().map(|i| i.id.local()).collect::<Vec<_>>())
            .bind(
                identities
                    .iter()
                    .map(|i| i.external_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                identities
                    .iter()
                    .map(|i| i.created_at.millis())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(conn)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// Inserts token records whose identity is live, in one statement; returns the jtis
    /// written.
    async fn insert_tokens(
        conn: &mut PgConnection,
        records: &[&TokenRecord],
    ) -> Result<HashSet<Uuid>, sqlx::Error> {
        if records.is_empty() {
            return Ok(HashSet::new());
        }
        let tenants: Vec<Uuid> = records
            .iter()
            .map(|r| r.identity.tenant().as_uuid())
            .collect();
        let jtis: Vec<Uuid> = records.iter().map(|r| r.jti).collect();
        let identities: Vec<Uuid> = records.iter().map(|r| r.identity.local()).collect();
        let scopes: Vec<&str> = records.iter().map(|r| r.scopes.as_str()).collect();
        let issued: Vec<i64> = records.iter().map(|r| r.issued_at.millis()).collect();
        let expires: Vec<i64> = records.iter().map(|r| r.expires_at.millis()).collect();
        let written: Vec<Uuid> = sqlx::query_scalar(INSERT_TOKEN_BATCH)
            .bind(&tenants)
            .bind(&jtis)
            .bind(&identities)
            .bind(&scopes)
            .bind(&issued)
            .bind(&expires)
            .fetch_all(conn)
            .await?;
        Ok(written.into_iter().collect())
    }
}

impl_repository!(PgStore, PgConnection, {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
});
