//! The PostgreSQL store: the production database.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolCopyExt, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::migrate;
use super::{
    BatchOp, BatchOutcome, ChangeRow, Dialect, IdentityRecord, MarkIdentity, NewIdentity,
    SeedRepository, StoreError, StoreResult, TokenIssue, TokenRecord, redact_url,
};
use crate::domain::TenantId;
use crate::domain::audit::{AuditEvent, ChainAppender, ChainHead, ChainedEvent};

pub struct PgStore {
    pool: PgPool,
    /// The head each tenant's chain will have once the transactions this process sent have
    /// committed: the guess a batch appends its events to without reading the head first.
    predicted_heads: Mutex<HashMap<TenantId, ChainHead>>,
    /// Appends of this process take turns (see `append_events`).
    appending: tokio::sync::Mutex<()>,
    /// Identities this process has inserted: see `replanned`.
    identities_written: AtomicU64,
}

impl PgStore {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .with_context(|| format!("parsing the PostgreSQL URL {:?}", redact_url(url)))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // sqlx already pings a connection when it comes back to the pool (and drops it if
            // broken); pinging again on the way out would add a round trip to every query.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {:?}", redact_url(url)))?;
        migrate::run_postgres(&pool).await?;
        Ok(Self {
            pool,
            predicted_heads: Mutex::new(HashMap::new()),
            appending: tokio::sync::Mutex::new(()),
            identities_written: AtomicU64::new(0),
        })
    }
}

/// Selects and locks the live identities whose (tenant, identity) pairs `$pairs` (a query)
/// yields, in key order (`LockRows` runs above the sort) whatever order it yields them in.
macro_rules! lock_identities_sql {
    ($pairs:literal) => {
        concat!(
            "
SELECT i.tenant_id, i.identity_id FROM identities i
 WHERE (i.tenant_id, i.identity_id) IN (",
            $pairs,
            ")
   AND i.deleted_at IS NULL
 ORDER BY i.tenant_id, i.identity_id
   FOR NO KEY UPDATE"
        )
    };
}

/// The CTEs that record a batch of tokens, given the six parameters that hold the records as
/// parallel arrays (tenant, jti, identity, scopes, issued at, expires at): `locked` locks
/// each live identity row in key order, as every other writer does (so a concurrent delete
/// either happens before the batch and drops its records, or waits for it); the UPDATE moves
/// the `last_token_issued_at` of those rows only, which this transaction holds already, so
/// whatever order its plan meets them in it never waits; and only records whose identity was
/// updated are inserted (`written`, their jtis).
///
/// Locking in the UPDATE itself would lock in the order of its plan: a nested loop over the
/// sorted identities keeps key order, but a plan that scans the table (the one chosen while
/// it is small) follows its physical order, and two writers meeting in two orders wait on
/// each other until PostgreSQL aborts one.
macro_rules! record_tokens_ctes {
    ($t:literal, $j:literal, $i:literal, $s:literal, $at:literal, $exp:literal) => {
        concat!(
            "
WITH input AS (
    SELECT * FROM UNNEST(",
            $t, "::uuid[], ", $j, "::uuid[], ", $i, "::uuid[], ", $s, "::text[], ", $at,
            "::int8[], ", $exp, "::int8[])
        AS t (tenant_id, jti, identity_id, scopes, issued_at, expires_at)
), locked AS MATERIALIZED (",
            lock_identities_sql!("SELECT tenant_id, identity_id FROM input"),
            "
), live AS (
    UPDATE identities i
       SET last_token_issued_at = GREATEST(COALESCE(i.last_token_issued_at, 0), m.issued_at)
      FROM (SELECT tenant_id, identity_id, max(issued_at) AS issued_at
              FROM input GROUP BY tenant_id, identity_id) m
      JOIN locked USING (tenant_id, identity_id)
     WHERE i.tenant_id = m.tenant_id AND i.identity_id = m.identity_id
    RETURNING i.tenant_id, i.identity_id
), written AS (
    INSERT INTO issued_tokens (tenant_id, jti, identity_id, scopes, issued_at, expires_at)
    SELECT input.tenant_id, input.jti, input.identity_id, input.scopes, input.issued_at, input.expires_at
      FROM input JOIN live USING (tenant_id, identity_id)
    RETURNING jti
)"
        )
    };
}

/// Records a whole batch of tokens in one statement and one round trip.
const INSERT_TOKEN_BATCH: &str = concat!(
    record_tokens_ctes!("$1", "$2", "$3", "$4", "$5", "$6"),
    "\nSELECT jti FROM written"
);

/// Appends `value` as a field of COPY's text format: backslash, tab and line breaks escaped.
fn push_copy_text(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Appends an optional integer field (`\N` is COPY's NULL).
fn push_copy_int(out: &mut String, value: Option<i64>) {
    match value {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("\\N"),
    }
}

impl PgStore {
    /// Streams `data` (COPY text format) into the table named by `statement`. COPY is the
    /// fastest way into PostgreSQL and is atomic on its own: one call, one transaction.
    async fn copy_in(&self, statement: &'static str, data: String) -> StoreResult<()> {
        let mut copy = self.pool.copy_in_raw(statement).await?;
        if let Err(error) = copy.send(data.into_bytes()).await {
            let _ = copy.abort("bulk load failed").await;
            return Err(error.into());
        }
        copy.finish().await?;
        Ok(())
    }
}

/// All events of a transaction in one statement, as parallel arrays.
macro_rules! insert_events_sql {
    () => {
        "
INSERT INTO audit_events (tenant_id, seq, occurred_at, actor, operation, identity_id, outcome,
    client_request_id, request_id, source_address, user_agent, details, prev_hash, hash)
SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::uuid[],
    $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[], $14::bytea[])
    AS ev (tenant_id, seq, occurred_at, actor, operation, identity_id, outcome, client_request_id,
           request_id, source_address, user_agent, details, prev_hash, hash)"
    };
}
const INSERT_EVENTS: &str = insert_events_sql!();

/// The CTEs that append the events of a transaction's tenants, given the events as `$1`–`$14`
/// and each tenant with the head after its events and the head this process expects before
/// them as `$15`–`$19` (NULL heads for a tenant it expects nothing of): `chains` locks every
/// head, in tenant order as `lock_chains` takes them (`$after` adds to its `WHERE`); `head`
/// moves each head still the one expected and says which did (`linked`); `events` inserts
/// those tenants' events. The expectation is checked in the SET, against the row as it is
/// once locked: a WHERE on the head's values would be checked against the row as the
/// statement's snapshot saw it, so a statement queued behind an append of this process that
/// had not committed yet would never match. Both the seq and the hash are compared: a head
/// moved by others can have the expected seq.
macro_rules! append_if_heads_ctes {
    ($after:literal) => {
        concat!(
            "expected AS (
    SELECT * FROM UNNEST($15::uuid[], $16::int8[], $17::bytea[], $18::int8[], $19::bytea[])
        AS e (tenant_id, to_seq, to_hash, from_seq, from_hash)
), chains AS MATERIALIZED (
    SELECT tenant_id FROM audit_chains
     WHERE tenant_id IN (SELECT tenant_id FROM expected) ",
            $after,
            "
     ORDER BY tenant_id
       FOR UPDATE
), head AS (
    UPDATE audit_chains c
       SET last_seq = CASE WHEN c.last_seq = e.from_seq AND c.last_hash = e.from_hash
                           THEN e.to_seq ELSE c.last_seq END,
           last_hash = CASE WHEN c.last_seq = e.from_seq AND c.last_hash = e.from_hash
                            THEN e.to_hash ELSE c.last_hash END
      FROM expected e JOIN chains USING (tenant_id)
     WHERE c.tenant_id = e.tenant_id AND e.from_seq IS NOT NULL
    RETURNING c.tenant_id, c.last_seq = e.to_seq AND c.last_hash = e.to_hash AS linked
), events AS (",
            insert_events_sql!(),
            "
 WHERE ev.tenant_id IN (SELECT tenant_id FROM head WHERE linked)
)"
        )
    };
}

/// Appends the events of a transaction's tenants in one statement (`append_if_heads_ctes!`);
/// returns the tenants whose events went in.
const APPEND_IF_HEADS: &str = concat!(
    "WITH ",
    append_if_heads_ctes!(""),
    "\nSELECT tenant_id FROM head WHERE linked"
);

/// A batch of token issues as one statement, committed on its own: the records (and their
/// identities' `last_token_issued_at`), their events and the moved chain heads go in
/// together. The division fails the whole statement, leaving nothing of it, when a record was
/// refused (its identity deleted meanwhile: its event must not be in the chain) or a head is
/// not the one expected. The heads are locked after `written` is read, so the identity rows
/// are locked before the heads, in the order every write takes its locks.
const ISSUE_AT_ONCE: &str = concat!(
    record_tokens_ctes!("$20", "$21", "$22", "$23", "$24", "$25"),
    ", ",
    append_if_heads_ctes!("AND (SELECT count(*) FROM written) >= 0"),
    "
SELECT 1 / CASE WHEN (SELECT count(*) FROM written) = cardinality($20::uuid[])
                 AND (SELECT count(*) FROM head WHERE linked) = cardinality($15::uuid[])
                THEN 1 ELSE 0 END"
);

/// SQLSTATE `division_by_zero`: how `ISSUE_AT_ONCE` refuses a batch.
const REFUSED_AT_ONCE: &str = "22012";

/// SQLSTATE `deadlock_detected`: `ISSUE_AT_ONCE` met a writer that locks identity rows in
/// another order than key order (a tenant's deletion) and was the one aborted.
const DEADLOCK_DETECTED: &str = "40P01";

/// A tenant's events linked to the head this process expects its chain to have.
struct Prediction {
    from: ChainHead,
    to: ChainHead,
    events: Vec<ChainedEvent>,
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// `query` with the predicted events of `tenants` as `$1`–`$14` and, as `$15`–`$19`, each
/// tenant with the head after its events and the head expected before them (NULLs where
/// there is no prediction), as `APPEND_IF_HEADS` reads them.
fn bind_predictions<'q>(
    query: PgQuery<'q>,
    tenants: &[TenantId],
    predictions: &[Option<Prediction>],
) -> PgQuery<'q> {
    let events: Vec<ChainedEvent> = predictions
        .iter()
        .flatten()
        .flat_map(|p| p.events.iter().cloned())
        .collect();
    let seqs = |f: fn(&Prediction) -> &ChainHead| {
        predictions
            .iter()
            .map(|p| p.as_ref().map(|p| f(p).last_seq))
            .collect::<Vec<_>>()
    };
    let hashes = |f: fn(&Prediction) -> &ChainHead| {
        predictions
            .iter()
            .map(|p| p.as_ref().map(|p| f(p).last_hash.clone()))
            .collect::<Vec<_>>()
    };
    PgStore::bind_events(query, &events)
        .bind(tenants.iter().map(|t| t.as_uuid()).collect::<Vec<_>>())
        .bind(seqs(|p| &p.to))
        .bind(hashes(|p| &p.to))
        .bind(seqs(|p| &p.from))
        .bind(hashes(|p| &p.from))
}

impl PgStore {
    /// Appends `events` to their chains as the last writes of a transaction.
    ///
    /// A chain head is the one row every audited write of a tenant updates, and its row lock
    /// is held until commit: the shorter the time between taking it and committing, the more
    /// transactions of a tenant commit per second. So each tenant's events are linked to the
    /// head this process expects (the one its own last append left), and the events of all
    /// the tenants go in one statement that moves each head only if it still is that one.
    /// Only for a tenant whose head another writer moved in between (another instance, the
    /// CLI, a transaction that rolled back) is the head read and linked to again, after the
    /// statement locked every head in tenant order, as `lock_chains` takes them. Appends of
    /// this process take turns, so that each one's statement reaches the heads after the one
    /// it expects to follow.
    async fn append_events(
        &self,
        conn: &mut PgConnection,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        let _turn = self.appending.lock().await;
        let mut tenants: Vec<TenantId> = events.iter().map(|e| e.tenant).collect();
        tenants.sort();
        tenants.dedup();
        let single = tenants.len() == 1;
        // Most appends are of one tenant: those need no copy.
        let own = |tenant: TenantId| -> Cow<'_, [AuditEvent]> {
            if single {
                Cow::Borrowed(events)
            } else {
                events
                    .iter()
                    .filter(|e| e.tenant == tenant)
                    .cloned()
                    .collect()
            }
        };
        let mut predictions = Vec::with_capacity(tenants.len());
        for &tenant in &tenants {
            predictions.push(self.predict(tenant, own(tenant).iter())?);
        }
        let linked: HashSet<Uuid> = if predictions.iter().any(Option::is_some) {
            let rows = bind_predictions(sqlx::query(APPEND_IF_HEADS), &tenants, &predictions)
                .fetch_all(&mut *conn)
                .await?;
            rows.iter()
                .map(|row| row.try_get::<Uuid, _>(0))
                .collect::<Result<_, _>>()?
        } else {
            HashSet::new()
        };
        // The rest is linked to the heads as they are, taken in tenant order either way: by
        // the statement, if it ran, or here.
        for tenant in tenants {
            if linked.contains(&tenant.as_uuid()) {
                continue;
            }
            let chain = Self::append_events_locking(&mut *conn, &own(tenant)).await?;
            let mut heads = self.predicted_heads();
            for (tenant, head) in chain.changed_heads() {
                heads.insert(*tenant, head.clone());
            }
        }
        Ok(())
    }

    /// Commits a batch of token issues in one statement and no transaction around it, when
    /// this process expects the chain head of each of its tenants: one round trip instead of
    /// four, and the heads held only while the statement ends and commits. `None` when the
    /// batch is not such a batch or the statement refused it (a record refused, a head
    /// moved); nothing of it was written then, and the batch goes the general way.
    pub(super) async fn commit_tokens_at_once(
        &self,
        ops: &[BatchOp],
    ) -> Result<Option<Vec<BatchOutcome>>, StoreError> {
        let issues: Vec<&TokenIssue> = ops
            .iter()
            .filter_map(|op| match op {
                BatchOp::IssueToken(issue) => Some(issue),
                _ => None,
            })
            .collect();
        let own_event = |i: &&TokenIssue| i.event.tenant == i.record.identity.tenant();
        if issues.is_empty() || issues.len() != ops.len() || !issues.iter().all(own_event) {
            return Ok(None);
        }
        let mut tenants: Vec<TenantId> = issues.iter().map(|i| i.event.tenant).collect();
        tenants.sort();
        tenants.dedup();
        // Not holding `appending` while the statement runs: it waits on identity rows, which
        // a transaction of this process waiting for its turn to append may hold.
        let predictions = {
            let _turn = self.appending.lock().await;
            let heads = self.predicted_heads();
            if !tenants.iter().all(|tenant| heads.contains_key(tenant)) {
                return Ok(None);
            }
            drop(heads);
            let mut predictions = Vec::with_capacity(tenants.len());
            for &tenant in &tenants {
                let events = issues.iter().map(|i| &i.event);
                predictions.push(self.predict(tenant, events.filter(|e| e.tenant == tenant))?);
            }
            predictions
        };
        let records: Vec<&TokenRecord> = issues.iter().map(|i| &i.record).collect();
        let query = bind_predictions(
            sqlx::query(self.replanned(ISSUE_AT_ONCE)),
            &tenants,
            &predictions,
        );
        let refused = match bind_tokens(query, &records).execute(&self.pool).await {
            Ok(_) => false,
            Err(sqlx::Error::Database(error))
                if matches!(
                    error.code().as_deref(),
                    Some(REFUSED_AT_ONCE | DEADLOCK_DETECTED)
                ) =>
            {
                true
            }
            Err(error) => return Err(error.into()),
        };
        if refused {
            // The general way reads the heads anew.
            let mut heads = self.predicted_heads();
            for tenant in &tenants {
                heads.remove(tenant);
            }
            return Ok(None);
        }
        Ok(Some(vec![BatchOutcome::Issued(true); ops.len()]))
    }

    /// The expected heads. They are only a guess that is checked, so one left by a thread
    /// that panicked is as good as any.
    fn predicted_heads(&self) -> MutexGuard<'_, HashMap<TenantId, ChainHead>> {
        self.predicted_heads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Links `events` (all of `tenant`, at least one) to the expected head and expects the
    /// head after them next; `None` when this process has no expectation for the tenant yet.
    fn predict<'a>(
        &self,
        tenant: TenantId,
        events: impl IntoIterator<Item = &'a AuditEvent>,
    ) -> Result<Option<Prediction>, StoreError> {
        let mut heads = self.predicted_heads();
        let Some(from) = heads.get(&tenant).cloned() else {
            return Ok(None);
        };
        let mut chain = ChainAppender::new(HashMap::from([(tenant, from.clone())]));
        for event in events {
            chain.append(event)?;
        }
        let Some((_, to)) = chain.changed_heads().next() else {
            return Ok(None);
        };
        let to = to.clone();
        heads.insert(tenant, to.clone());
        Ok(Some(Prediction {
            from,
            to,
            events: chain.events().to_vec(),
        }))
    }

    /// PostgreSQL's planner picks the identity index by itself.
    const AUDIT_BY_IDENTITY: &'static str = "audit_events";

    /// Row locks serialise the writers of one tenant's chain until they commit.
    const LOCK_CHAIN_SQL: &'static str =
        "SELECT last_seq, last_hash FROM audit_chains WHERE tenant_id = $1 FOR UPDATE";

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    /// Locks `tenant`'s row, then its identities in key order, as the first writes of its
    /// deletion. The tenant row first: a batch that creates identities share-locks it before
    /// any identity row (`INSERT_IDENTITIES`), so from here on none can start and the ones
    /// running finish first. The identities next, in the order token batches lock them, so
    /// that a batch of this tenant's tokens that got there first commits before the token
    /// records are deleted (and none is left behind), and none waits on the deletion while
    /// holding what it waits for.
    async fn lock_tenant_for_delete(
        conn: &mut PgConnection,
        tenant: TenantId,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1 FOR UPDATE")
            .bind(tenant.as_uuid())
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "SELECT count(*) FROM (SELECT 1 FROM identities WHERE tenant_id = $1 \
             ORDER BY identity_id FOR UPDATE) AS locked",
        )
        .bind(tenant.as_uuid())
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn insert_events(
        conn: &mut PgConnection,
        events: &[ChainedEvent],
    ) -> Result<(), sqlx::Error> {
        if events.is_empty() {
            return Ok(());
        }
        Self::bind_events(sqlx::query(INSERT_EVENTS), events)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// `query` with `events` bound as its next 14 parameters, one array per column.
    fn bind_events<'q>(query: PgQuery<'q>, events: &[ChainedEvent]) -> PgQuery<'q> {
        let column =
            |f: fn(&ChainedEvent) -> Option<String>| events.iter().map(f).collect::<Vec<_>>();
        query
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
    }
}

/// New identities in one statement, in the order given; an external id already taken in the
/// tenant (or taken earlier in the same batch) skips the row, and so does a tenant deleted
/// since its request was admitted (by another instance): `live` share-locks the tenants that
/// still exist, in key order, as the foreign key check would (so a deletion waits for the
/// batch, or the batch skips what it deleted), instead of failing the whole batch on the key.
const INSERT_IDENTITIES: &str = "
WITH live AS (
    SELECT tenant_id FROM tenants WHERE tenant_id = ANY($1::uuid[])
     ORDER BY tenant_id
       FOR KEY SHARE
)
INSERT INTO identities (tenant_id, identity_id, external_id, created_at)
SELECT u.tenant_id, u.identity_id, u.external_id, u.created_at
  FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int8[]) WITH ORDINALITY
       AS u (tenant_id, identity_id, external_id, created_at, n)
 WHERE u.tenant_id IN (SELECT tenant_id FROM live)
 ORDER BY u.n
ON CONFLICT DO NOTHING
RETURNING tenant_id, identity_id";

const LOCK_IDENTITIES: &str = lock_identities_sql!("SELECT * FROM UNNEST($1::uuid[], $2::uuid[])");

impl PgStore {
    /// Locks the rows of `identities` until commit, in one statement and in key order: the
    /// statements after it (token records, then revocations and deletions) each lock their
    /// own rows in key order, but one after the other, so two instances whose batches issued
    /// for the identities the other revoked would wait on each other until PostgreSQL aborted
    /// one of them (a 500 for every request of its batch).
    async fn lock_identities(
        &self,
        conn: &mut PgConnection,
        identities: &[(Uuid, Uuid)],
    ) -> Result<(), sqlx::Error> {
        if identities.is_empty() {
            return Ok(());
        }
        sqlx::query(self.replanned(LOCK_IDENTITIES))
            .bind(identities.iter().map(|(t, _)| *t).collect::<Vec<_>>())
            .bind(identities.iter().map(|(_, i)| *i).collect::<Vec<_>>())
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Inserts new identities; returns the (tenant, identity) pairs written.
    async fn insert_identities(
        &self,
        conn: &mut PgConnection,
        identities: &[&NewIdentity],
    ) -> Result<HashSet<(Uuid, Uuid)>, sqlx::Error> {
        if identities.is_empty() {
            return Ok(HashSet::new());
        }
        // In external-id order, so that two instances inserting the same external ids wait
        // on each other's (unique index) entries in one order; stable, so that of two creates
        // of one external id in the batch the first still wins.
        let mut identities = identities.to_vec();
        identities.sort_by_key(|i| (i.id.tenant(), i.external_id.as_deref()));
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
        self.identities_written
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        Ok(rows.into_iter().collect())
    }

    /// `sql`, a statement that joins a batch's rows to `identities`, as the prepared statement
    /// of the current plan generation.
    ///
    /// A prepared statement keeps the generic plan PostgreSQL made for it after its first
    /// executions until the tables it reads are analyzed again. One made while `identities`
    /// was small joins by hashing the whole table, and on a server without autovacuum kept
    /// doing so long after the table had grown (deletions fell from 11k/s to 600/s). Planning
    /// on every execution instead (an unnamed statement) costs a round trip in the batch
    /// writer's transaction, which measured 16.5k against 19–20k issued tokens/s. So the
    /// statement text carries a generation that moves each time the identities this process
    /// inserted double (from 1024 on): a new text is a new prepared statement, planned for the
    /// table as it is then, and a plan is never used on a table more than about twice the
    /// size it was made for.
    fn replanned(&self, sql: &'static str) -> sqlx::AssertSqlSafe<String> {
        let generation = plan_generation(self.identities_written.load(Ordering::Relaxed));
        sqlx::AssertSqlSafe(format!("{sql}\n-- plan generation {generation}"))
    }

    /// Inserts token records whose identity is live, in one statement; returns the jtis
    /// written.
    async fn insert_tokens(
        &self,
        conn: &mut PgConnection,
        records: &[&TokenRecord],
    ) -> Result<HashSet<Uuid>, sqlx::Error> {
        if records.is_empty() {
            return Ok(HashSet::new());
        }
        let rows = bind_tokens(sqlx::query(self.replanned(INSERT_TOKEN_BATCH)), records)
            .fetch_all(conn)
            .await?;
        rows.iter().map(|row| row.try_get::<Uuid, _>(0)).collect()
    }
}

/// `query` with `records` bound as its next six parameters, one array per column (tenant,
/// jti, identity, scopes, issued at, expires at).
fn bind_tokens<'q>(query: PgQuery<'q>, records: &[&'q TokenRecord]) -> PgQuery<'q> {
    let column = |f: fn(&TokenRecord) -> Uuid| records.iter().map(|r| f(r)).collect::<Vec<_>>();
    let millis = |f: fn(&TokenRecord) -> i64| records.iter().map(|r| f(r)).collect::<Vec<_>>();
    let scopes: Vec<&str> = records.iter().map(|r| r.scopes.as_str()).collect();
    query
        .bind(column(|r| r.identity.tenant().as_uuid()))
        .bind(column(|r| r.jti))
        .bind(column(|r| r.identity.local()))
        .bind(scopes)
        .bind(millis(|r| r.issued_at.millis()))
        .bind(millis(|r| r.expires_at.millis()))
}

/// 0 below 1024 identities written, then one more each time they double.
fn plan_generation(identities_written: u64) -> u32 {
    (identities_written >> 10)
        .checked_ilog2()
        .map_or(0, |g| g + 1)
}

/// Revokes or deletes the batch's identities in one statement (each at most once); the
/// watermark only moves forward, and an identity already deleted is left alone. The rows are
/// locked first, in key order (`lock_identities_sql!`), when the batch did not lock them
/// already: a batch of marks alone saves that round trip.
const MARK_IDENTITIES: &str = concat!(
    "
WITH m AS (
    SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::bool[])
        AS m (tenant_id, identity_id, at, del)
), locked AS MATERIALIZED (",
    lock_identities_sql!("SELECT tenant_id, identity_id FROM m"),
    "
)
UPDATE identities i
   SET deleted_at = CASE WHEN m.del THEN m.at ELSE i.deleted_at END,
       external_id = CASE WHEN m.del THEN NULL ELSE i.external_id END,
       tokens_revoked_before = GREATEST(COALESCE(i.tokens_revoked_before, m.at), m.at)
  FROM m JOIN locked USING (tenant_id, identity_id)
 WHERE i.tenant_id = m.tenant_id AND i.identity_id = m.identity_id AND i.deleted_at IS NULL
RETURNING i.tenant_id, i.identity_id, i.tokens_revoked_before"
);

const INSERT_IDENTITY_CHANGES: &str = "
INSERT INTO identity_changes (seq, tenant_id, identity_id, tokens_revoked_before, deleted, changed_at)
SELECT * FROM UNNEST($1::int8[], $2::uuid[], $3::uuid[], $4::int8[], $5::bool[], $6::int8[])";

impl PgStore {
    /// Marks identities (no two the same); returns the new watermark of each one marked.
    async fn mark_identities(
        &self,
        conn: &mut PgConnection,
        marks: &[(usize, &MarkIdentity)],
    ) -> Result<HashMap<(Uuid, Uuid), i64>, sqlx::Error> {
        if marks.is_empty() {
            return Ok(HashMap::new());
        }
        let column =
            |f: fn(&MarkIdentity) -> Uuid| marks.iter().map(|(_, m)| f(m)).collect::<Vec<_>>();
        let rows: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(self.replanned(MARK_IDENTITIES))
            .bind(column(|m| m.id.tenant().as_uuid()))
            .bind(column(|m| m.id.local()))
            .bind(marks.iter().map(|(_, m)| m.at.millis()).collect::<Vec<_>>())
            .bind(marks.iter().map(|(_, m)| m.delete).collect::<Vec<_>>())
            .fetch_all(conn)
            .await?;
        Ok(rows.into_iter().map(|(t, i, w)| ((t, i), w)).collect())
    }

    async fn insert_identity_changes(
        conn: &mut PgConnection,
        changes: &[ChangeRow],
    ) -> Result<(), sqlx::Error> {
        sqlx::query(INSERT_IDENTITY_CHANGES)
            .bind(changes.iter().map(|c| c.seq).collect::<Vec<_>>())
            .bind(changes.iter().map(|c| c.tenant).collect::<Vec<_>>())
            .bind(changes.iter().map(|c| c.identity).collect::<Vec<_>>())
            .bind(
                changes
                    .iter()
                    .map(|c| c.tokens_revoked_before)
                    .collect::<Vec<_>>(),
            )
            .bind(changes.iter().map(|c| c.deleted).collect::<Vec<_>>())
            .bind(changes.iter().map(|c| c.changed_at).collect::<Vec<_>>())
            .execute(conn)
            .await?;
        Ok(())
    }
}

impl_repository!(PgStore, PgConnection, Dialect::Postgres);

#[async_trait]
impl SeedRepository for PgStore {
    async fn bulk_insert_identities(&self, identities: &[IdentityRecord]) -> StoreResult<()> {
        let mut data = String::with_capacity(identities.len() * 140);
        for identity in identities {
            let _ = write!(
                data,
                "{}\t{}\t",
                identity.id.tenant().as_uuid(),
                identity.id.local()
            );
            match &identity.external_id {
                Some(external_id) => push_copy_text(&mut data, external_id),
                None => data.push_str("\\N"),
            }
            let _ = write!(data, "\t{}\t", identity.created_at.millis());
            push_copy_int(&mut data, identity.last_token_issued_at.map(|t| t.millis()));
            data.push('\t');
            push_copy_int(
                &mut data,
                identity.tokens_revoked_before.map(|t| t.millis()),
            );
            data.push('\n');
        }
        self.copy_in(
            "COPY identities (tenant_id, identity_id, external_id, created_at, \
             last_token_issued_at, tokens_revoked_before) FROM STDIN",
            data,
        )
        .await
    }

    async fn bulk_insert_token_records(&self, records: &[TokenRecord]) -> StoreResult<()> {
        let mut data = String::with_capacity(records.len() * 130);
        for record in records {
            let _ = write!(
                data,
                "{}\t{}\t{}\t",
                record.identity.tenant().as_uuid(),
                record.jti,
                record.identity.local()
            );
            push_copy_text(&mut data, &record.scopes);
            let _ = writeln!(
                data,
                "\t{}\t{}",
                record.issued_at.millis(),
                record.expires_at.millis()
            );
        }
        self.copy_in(
            "COPY issued_tokens (tenant_id, jti, identity_id, scopes, issued_at, expires_at) \
             FROM STDIN",
            data,
        )
        .await
    }

    async fn finish_bulk_load(&self) -> StoreResult<()> {
        // The simple-query protocol: VACUUM must not run inside a (prepared, implicit)
        // transaction block.
        sqlx::raw_sql("VACUUM (ANALYZE) identities, issued_tokens")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_the_format_reserves() {
        let mut out = String::new();
        push_copy_text(&mut out, "a\tb\\c\nd");
        assert_eq!(out, "a\\tb\\\\c\\nd");
        out.clear();
        push_copy_int(&mut out, None);
        push_copy_int(&mut out, Some(-5));
        assert_eq!(out, "\\N-5");
    }

    #[test]
    fn the_plan_generation_moves_each_time_the_identities_written_double() {
        let generations: Vec<u32> = [0, 1023, 1024, 2047, 2048, 4096, 1 << 20, u64::MAX]
            .into_iter()
            .map(plan_generation)
            .collect();
        assert_eq!(generations, [0, 0, 1, 1, 2, 3, 11, 54]);
    }
}
