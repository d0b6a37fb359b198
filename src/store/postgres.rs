//! The PostgreSQL store: the production database.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolCopyExt, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::migrate;
use super::{
    BatchOp, BatchOutcome, ChangeRow, CreateIdentity, Dialect, IdentityRecord,
    InsertIdentityOutcome, MarkIdentity, NewIdentity, SeedRepository, StoreError, StoreResult,
    TokenIssue, TokenRecord, redact_url,
};
use crate::domain::audit::{AuditEvent, ChainedEvent};
use crate::domain::{IdentityId, TenantId};

pub struct PgStore {
    pool: PgPool,
    /// The connections of the one-statement batches (`commit_at_once`): see `open`.
    batch_pool: PgPool,
    /// Identities this process has inserted: see `replanned`.
    identities_written: AtomicU64,
}

impl PgStore {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .with_context(|| format!("parsing the PostgreSQL URL {:?}", redact_url(url)))?;
        let connecting = || format!("connecting to PostgreSQL at {:?}", redact_url(url));
        let pool = Self::pool_options()
            .connect_with(options.clone())
            .await
            .with_context(connecting)?;
        migrate::run_postgres(&pool).await?;
        // A one-statement batch reaches every row it touches by key: at most a few hundred
        // index probes. For a young table PostgreSQL's cost model prefers hashing the whole
        // table to that many probes, and the plan lasts until the table doubles
        // (`replanned`); under mixed traffic, where new identities grow the table fast,
        // those scans cost up to a third of the throughput. These connections plan without them.
        //
        // And they keep the generic plan. PostgreSQL plans a prepared statement afresh for its
        // parameters whenever that plan's estimate beats the generic one's, which for these
        // statements is whenever the batch is smaller than the ten rows it assumes for an
        // array: under light load, every batch. Planning took 0.7 of the 1.2–1.4 ms each
        // batch cost PostgreSQL.
        let batch_pool = Self::pool_options()
            .connect_with(options.options([
                ("enable_seqscan", "off"),
                ("plan_cache_mode", "force_generic_plan"),
            ]))
            .await
            .with_context(connecting)?;
        Ok(Self {
            pool,
            batch_pool,
            identities_written: AtomicU64::new(0),
        })
    }

    fn pool_options() -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(16)
            // sqlx already pings a connection when it comes back to the pool (and drops it if
            // broken); pinging again on the way out would add a round trip to every query.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
    }
}

/// Selects and locks the live identities whose (tenant, identity) pairs `$pairs` (a query,
/// in pieces) yields, in key order (`LockRows` runs above the sort) whatever order it yields
/// them in.
macro_rules! lock_identities_sql {
    ($($pairs:literal),+) => {
        concat!(
            "
SELECT i.tenant_id, i.identity_id FROM identities i
 WHERE (i.tenant_id, i.identity_id) IN (",
            $($pairs,)+
            ")
   AND i.deleted_at IS NULL
 ORDER BY i.tenant_id, i.identity_id
   FOR NO KEY UPDATE"
        )
    };
}

/// The CTE `input` (for a `WITH`): a batch's token records, from the six parameters that hold
/// them as parallel arrays (tenant, jti, identity, scopes, issued at, expires at).
macro_rules! token_input_cte {
    ($t:literal, $j:literal, $i:literal, $s:literal, $at:literal, $exp:literal) => {
        concat!(
            "input AS (
    SELECT * FROM UNNEST(",
            $t,
            "::uuid[], ",
            $j,
            "::uuid[], ",
            $i,
            "::uuid[], ",
            $s,
            "::text[], ",
            $at,
            "::int8[], ",
            $exp,
            "::int8[])
        AS t (tenant_id, jti, identity_id, scopes, issued_at, expires_at)
)"
        )
    };
}

/// The CTEs that write the records of `input` whose identity `locked` holds: the UPDATE
/// moves the `last_token_issued_at` of those rows only, which this transaction holds already,
/// so whatever order its plan meets them in it never waits; and only records whose identity
/// was updated are inserted (`written`, their jtis).
macro_rules! write_tokens_ctes {
    () => {
        "live AS (
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
    };
}

/// The CTEs (for a `WITH`) that record a batch of tokens, given the six parameters of
/// `token_input_cte!` and `$after`, a `WHERE` on the records that makes the locking wait for
/// CTEs before it: `locked` locks each live identity row in key order, as every other writer
/// does (so a concurrent delete either happens before the batch and drops its records, or
/// waits for it), then `write_tokens_ctes!`.
///
/// Locking in the UPDATE itself would lock in the order of its plan: a nested loop over the
/// sorted identities keeps key order, but a plan that scans the table (the one chosen while
/// it is small) follows its physical order, and two writers meeting in two orders wait on
/// each other until PostgreSQL aborts one.
macro_rules! record_tokens_ctes {
    ($t:literal, $j:literal, $i:literal, $s:literal, $at:literal, $exp:literal, $after:literal) => {
        concat!(
            token_input_cte!($t, $j, $i, $s, $at, $exp),
            ", locked AS MATERIALIZED (",
            lock_identities_sql!("SELECT tenant_id, identity_id FROM input", $after),
            "
), ",
            write_tokens_ctes!()
        )
    };
}

/// Records a whole batch of tokens in one statement and one round trip.
const INSERT_TOKEN_BATCH: &str = concat!(
    "WITH ",
    record_tokens_ctes!("$1", "$2", "$3", "$4", "$5", "$6", ""),
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

/// The parameters `$1`–`$11` of a statement that takes events, one array per column, and the
/// columns they fill.
macro_rules! event_fields {
    (params) => {
        "$1::uuid[], $2::int8[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::text[], $11::text[]"
    };
    (columns) => {
        "tenant_id, occurred_at, actor, operation, identity_id, outcome, client_request_id,
    request_id, source_address, user_agent, details"
    };
}

/// Events already linked to their chains, in one statement: their fields, then seq, previous
/// hash and hash as `$12`–`$14`.
const INSERT_EVENTS: &str = concat!(
    "INSERT INTO audit_events (",
    event_fields!(columns),
    ", seq, prev_hash, hash)
SELECT * FROM UNNEST(",
    event_fields!(params),
    ", $12::int8[], $13::bytea[], $14::bytea[])"
);

/// The CTEs (for a `WITH RECURSIVE`) that append events to their chains in the statement
/// itself, given their fields as `$1`–`$11` and the rest of the bytes each one's hash covers
/// (`ChainedEvent::hashed_rest`) as `$12`, each tenant's events together and in order.
/// `chains` locks the tenants' chain heads in tenant order, as `lock_chains` takes them
/// (`$after` adds to its `WHERE`), and reads them as they are once locked; `link` numbers and
/// hashes each tenant's events from there, with the bytes `ChainedEvent::expected_hash`
/// hashes; `head` moves the heads and returns their tenants; `events` inserts the events. A
/// tenant without a chain yet gets none of its events in: the caller links those the general
/// way, which creates the chain.
///
/// The head is read and moved inside one statement, so it is held only from there to the
/// commit, and nothing this process guesses about it can be wrong: another instance, or the
/// CLI, appending in between costs a wait for its commit, not a retry.
macro_rules! link_events_ctes {
    ($after:literal) => {
        concat!(
            "ev AS (
    SELECT * FROM UNNEST(",
            event_fields!(params),
            ", $12::bytea[]) WITH ORDINALITY
        AS ev (",
            event_fields!(columns),
            ", rest, ord)
), batch AS (
    SELECT tenant_id, min(ord) AS first, max(ord) AS last FROM ev GROUP BY tenant_id
), chains AS MATERIALIZED (
    SELECT tenant_id, last_seq, last_hash FROM audit_chains
     WHERE tenant_id IN (SELECT tenant_id FROM batch) ",
            $after,
            "
     ORDER BY tenant_id
       FOR UPDATE
), link (tenant_id, ord, last, seq, prev_hash, hash) AS (
    SELECT c.tenant_id, b.first - 1, b.last, c.last_seq, NULL::bytea, c.last_hash
      FROM chains c JOIN batch b USING (tenant_id)
    UNION ALL
    SELECT l.tenant_id, l.ord + 1, l.last, l.seq + 1, l.hash,
           sha256('callsign-audit-v1'::bytea || l.hash
                  || int8send(16) || uuid_send(l.tenant_id)
                  || int8send(8) || int8send(l.seq + 1)
                  || ($12::bytea[])[(l.ord + 1)::int4])
      FROM link l
     WHERE l.ord < l.last
), head AS (
    UPDATE audit_chains c
       SET last_seq = l.seq, last_hash = l.hash
      FROM link l
     WHERE c.tenant_id = l.tenant_id AND l.ord = l.last
    RETURNING c.tenant_id
), events AS (
    INSERT INTO audit_events (",
            event_fields!(columns),
            ", seq, prev_hash, hash)
    SELECT ev.tenant_id, ev.occurred_at, ev.actor, ev.operation, ev.identity_id, ev.outcome,
           ev.client_request_id, ev.request_id, ev.source_address, ev.user_agent, ev.details,
           l.seq, l.prev_hash, l.hash
      FROM ev JOIN link l ON l.tenant_id = ev.tenant_id AND l.ord = ev.ord
)"
        )
    };
}

/// Appends a transaction's events (`link_events_ctes!`) as its last statement; returns the
/// tenants whose events went in.
const APPEND_EVENTS: &str = concat!(
    "WITH RECURSIVE ",
    link_events_ctes!(""),
    "\nSELECT tenant_id FROM head"
);

/// A batch of token issues as one statement, committed on its own: the records (and their
/// identities' `last_token_issued_at`), their events and the moved chain heads go in
/// together. The division fails the whole statement, leaving nothing of it, when a record was
/// refused (its identity deleted meanwhile: its event must not be in the chain) or a tenant
/// has no chain yet. The heads are locked after `written` is read, so the identity rows are
/// locked before the heads, in the order every write takes its locks.
const ISSUE_AT_ONCE: &str = concat!(
    "WITH RECURSIVE ",
    record_tokens_ctes!("$13", "$14", "$15", "$16", "$17", "$18", ""),
    ", ",
    link_events_ctes!("AND (SELECT count(*) FROM written) >= 0"),
    "
SELECT 1 / CASE WHEN (SELECT count(*) FROM written) = cardinality($13::uuid[])
                 AND (SELECT count(*) FROM head) = (SELECT count(*) FROM batch)
                THEN 1 ELSE 0 END"
);

/// SQLSTATE `division_by_zero`: how `ISSUE_AT_ONCE` refuses a batch.
const REFUSED_AT_ONCE: &str = "22012";

/// SQLSTATE `deadlock_detected`. Every writer locks identity rows in key order, so
/// `ISSUE_AT_ONCE` should never be aborted as a deadlock's victim; should a writer ever lock in
/// another order, its batch goes the general way rather than failing.
const DEADLOCK_DETECTED: &str = "40P01";

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// `query` with `events` bound as its next 12 parameters: their fields and the rest of the
/// bytes each one's hash covers, each tenant's events together, as `link_events_ctes!` reads
/// them.
fn bind_unlinked<'q>(query: PgQuery<'q>, events: &[&AuditEvent]) -> PgQuery<'q> {
    let mut unlinked: Vec<ChainedEvent> =
        events.iter().map(|e| ChainedEvent::unlinked(e)).collect();
    // Stable: a tenant's events keep their order.
    unlinked.sort_by_key(|e| e.tenant);
    let rest: Vec<Vec<u8>> = unlinked.iter().map(ChainedEvent::hashed_rest).collect();
    PgStore::bind_event_fields(query, &unlinked).bind(rest)
}

impl PgStore {
    /// Appends `events` to their chains as the last statement of a transaction, linking them
    /// in the statement (`link_events_ctes!`); the events of a tenant without a chain yet go
    /// the general way, which creates it.
    async fn append_events(
        &self,
        conn: &mut PgConnection,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let all: Vec<&AuditEvent> = events.iter().collect();
        let rows = bind_unlinked(sqlx::query(APPEND_EVENTS), &all)
            .fetch_all(&mut *conn)
            .await?;
        let linked: HashSet<Uuid> = rows
            .iter()
            .map(|row| row.try_get::<Uuid, _>(0))
            .collect::<Result<_, _>>()?;
        let rest: Vec<AuditEvent> = events
            .iter()
            .filter(|e| !linked.contains(&e.tenant.as_uuid()))
            .cloned()
            .collect();
        if !rest.is_empty() {
            Self::append_events_locking(&mut *conn, &rest).await?;
        }
        Ok(())
    }

    /// Commits a batch made only of token issues (`ISSUE_AT_ONCE`), only of new identities
    /// (`CREATE_AT_ONCE`), of both (`CREATE_ISSUE_AT_ONCE`), only of revocations and deletions
    /// (`MARK_AT_ONCE`), or of revocations and deletions with the others (`WRITE_AT_ONCE`), in
    /// one statement and no transaction around it: one round trip instead of four to nine, and
    /// the chain heads held only while the statement ends and commits. `None` when an identity
    /// is marked twice or both marked and issued for, or when the statement refused the batch
    /// (an identity not live or not created, a tenant without a chain); nothing of it was
    /// written then, and the batch goes the general way.
    pub(super) async fn commit_at_once(
        &self,
        ops: &[BatchOp],
    ) -> Result<Option<Vec<BatchOutcome>>, StoreError> {
        let (mut creates, mut issues, mut marks) = (Vec::new(), Vec::new(), Vec::new());
        for op in ops {
            match op {
                BatchOp::CreateIdentity(create) => creates.push(create),
                BatchOp::IssueToken(issue) => issues.push(issue),
                BatchOp::MarkIdentity(mark) => marks.push(mark),
            }
        }
        // No identity marked twice, nor both marked and issued for: one statement cannot
        // update a row twice, and the second write must see what the first did.
        let marked: HashSet<IdentityId> = marks.iter().map(|m| m.id).collect();
        let marked_once = marked.len() == marks.len()
            && !issues.iter().any(|i| marked.contains(&i.record.identity));
        let outcome = match (creates.is_empty(), issues.is_empty(), marks.is_empty()) {
            (true, false, true) => self.issue_at_once(&issues).await,
            (false, true, true) => self.create_at_once(&creates).await,
            (true, true, false) if marked_once => self.mark_at_once(&marks).await,
            _ if marked_once => self.write_at_once(ops, &creates, &issues, &marks).await,
            _ => return Ok(None),
        };
        match outcome {
            Ok(outcomes) => Ok(Some(outcomes)),
            Err(sqlx::Error::Database(error))
                if matches!(
                    error.code().as_deref(),
                    Some(REFUSED_AT_ONCE | DEADLOCK_DETECTED)
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn issue_at_once(
        &self,
        issues: &[&TokenIssue],
    ) -> Result<Vec<BatchOutcome>, sqlx::Error> {
        let events: Vec<&AuditEvent> = issues.iter().map(|i| &i.event).collect();
        let records: Vec<&TokenRecord> = issues.iter().map(|i| &i.record).collect();
        let query = bind_unlinked(sqlx::query(self.replanned(ISSUE_AT_ONCE)), &events);
        bind_tokens(query, &records)
            .execute(&self.batch_pool)
            .await?;
        Ok(vec![BatchOutcome::Issued(true); issues.len()])
    }

    async fn create_at_once(
        &self,
        creates: &[&CreateIdentity],
    ) -> Result<Vec<BatchOutcome>, sqlx::Error> {
        let events: Vec<&AuditEvent> = creates.iter().flat_map(|c| &c.events).collect();
        let query = bind_unlinked(sqlx::query(CREATE_AT_ONCE), &events);
        Self::bind_creates(query, creates)
            .execute(&self.batch_pool)
            .await?;
        self.identities_written
            .fetch_add(creates.len() as u64, Ordering::Relaxed);
        Ok(vec![
            BatchOutcome::Created(InsertIdentityOutcome::Inserted);
            creates.len()
        ])
    }

    /// `query` with `creates` bound as `create_at_once_ctes!` reads them: the identities, each
    /// with its token's time as `last_token_issued_at` (nothing else can have issued for an
    /// identity not yet committed), then the token records.
    fn bind_creates<'q>(query: PgQuery<'q>, creates: &[&'q CreateIdentity]) -> PgQuery<'q> {
        let identities = creates
            .iter()
            .map(|c| (&c.identity, c.token.as_ref().map(|t| t.issued_at.millis())))
            .collect();
        let records: Vec<&TokenRecord> = creates.iter().filter_map(|c| c.token.as_ref()).collect();
        bind_tokens(bind_identities(query, identities), &records)
    }

    async fn mark_at_once(
        &self,
        marks: &[&MarkIdentity],
    ) -> Result<Vec<BatchOutcome>, sqlx::Error> {
        let events: Vec<&AuditEvent> = marks.iter().map(|m| &m.event).collect();
        let query = bind_unlinked(sqlx::query(self.replanned(MARK_AT_ONCE)), &events);
        let watermarks = fetch_watermarks(bind_marks(query, marks), &self.batch_pool).await?;
        Ok(marks
            .iter()
            .map(|m| marked_outcome(m, &watermarks))
            .collect())
    }

    /// `ops` holds `creates`, `issues` and `marks` and nothing else: `WRITE_AT_ONCE`, or
    /// `CREATE_ISSUE_AT_ONCE` when nothing is marked (its statement leaves the change log
    /// alone).
    async fn write_at_once(
        &self,
        ops: &[BatchOp],
        creates: &[&CreateIdentity],
        issues: &[&TokenIssue],
        marks: &[&MarkIdentity],
    ) -> Result<Vec<BatchOutcome>, sqlx::Error> {
        let events: Vec<&AuditEvent> = creates
            .iter()
            .flat_map(|c| &c.events)
            .chain(issues.iter().map(|i| &i.event))
            .chain(marks.iter().map(|m| &m.event))
            .collect();
        let records: Vec<&TokenRecord> = issues.iter().map(|i| &i.record).collect();
        let sql = if marks.is_empty() {
            CREATE_ISSUE_AT_ONCE
        } else {
            WRITE_AT_ONCE
        };
        let query = bind_unlinked(sqlx::query(self.replanned(sql)), &events);
        let query = bind_tokens(Self::bind_creates(query, creates), &records);
        let watermarks = if marks.is_empty() {
            query.execute(&self.batch_pool).await?;
            HashMap::new()
        } else {
            fetch_watermarks(bind_marks(query, marks), &self.batch_pool).await?
        };
        self.identities_written
            .fetch_add(creates.len() as u64, Ordering::Relaxed);
        Ok(ops
            .iter()
            .map(|op| match op {
                BatchOp::CreateIdentity(_) => {
                    BatchOutcome::Created(InsertIdentityOutcome::Inserted)
                }
                BatchOp::IssueToken(_) => BatchOutcome::Issued(true),
                BatchOp::MarkIdentity(mark) => marked_outcome(mark, &watermarks),
            })
            .collect())
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

    /// `query` with `events` bound as its next 14 parameters, one array per column, as
    /// `INSERT_EVENTS` reads them.
    fn bind_events<'q>(query: PgQuery<'q>, events: &[ChainedEvent]) -> PgQuery<'q> {
        Self::bind_event_fields(query, events)
            .bind(events.iter().map(|e| e.seq).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.prev_hash.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| e.hash.clone()).collect::<Vec<_>>())
    }

    /// `query` with the fields of `events` (`event_fields!`) bound as its next 11 parameters.
    fn bind_event_fields<'q>(query: PgQuery<'q>, events: &[ChainedEvent]) -> PgQuery<'q> {
        let column =
            |f: fn(&ChainedEvent) -> Option<String>| events.iter().map(f).collect::<Vec<_>>();
        query
            .bind(
                events
                    .iter()
                    .map(|e| e.tenant.as_uuid())
                    .collect::<Vec<_>>(),
            )
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
    }
}

/// The CTEs (for a `WITH`) that insert new identities in the order given, given the five
/// parameters that hold them as parallel arrays (tenant, identity, external id, created at,
/// last token issued at); `created` returns the (tenant, identity) pairs written. An external
/// id already taken in the tenant (or taken earlier in the same batch) skips the row, and so
/// does a tenant deleted since its request was admitted (by another instance): `tenants_live`
/// share-locks the tenants that still exist, in key order, as the foreign key check would (so
/// a deletion waits for the batch, or the batch skips what it deleted), instead of failing the
/// whole batch on the key.
macro_rules! insert_identities_ctes {
    ($t:literal, $i:literal, $ext:literal, $at:literal, $last:literal) => {
        concat!(
            "tenants_live AS (
    SELECT tenant_id FROM tenants WHERE tenant_id = ANY(",
            $t,
            "::uuid[])
     ORDER BY tenant_id
       FOR KEY SHARE
), created AS (
    INSERT INTO identities (tenant_id, identity_id, external_id, created_at, last_token_issued_at)
    SELECT u.tenant_id, u.identity_id, u.external_id, u.created_at, u.last_token_issued_at
      FROM UNNEST(",
            $t, "::uuid[], ", $i, "::uuid[], ", $ext, "::text[], ", $at, "::int8[], ", $last,
            "::int8[]) WITH ORDINALITY
           AS u (tenant_id, identity_id, external_id, created_at, last_token_issued_at, n)
     WHERE u.tenant_id IN (SELECT tenant_id FROM tenants_live)
     ORDER BY u.n
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, identity_id
)"
        )
    };
}

/// New identities in one statement (`insert_identities_ctes!`).
const INSERT_IDENTITIES: &str = concat!(
    "WITH ",
    insert_identities_ctes!("$1", "$2", "$3", "$4", "$5"),
    "\nSELECT tenant_id, identity_id FROM created"
);

/// `CREATE_AT_ONCE`'s new identities (`$13`–`$17`) and their token records (`$18`–`$23`).
macro_rules! create_at_once_ctes {
    () => {
        concat!(
            insert_identities_ctes!("$13", "$14", "$15", "$16", "$17"),
            ", tokens AS (
    INSERT INTO issued_tokens (tenant_id, jti, identity_id, scopes, issued_at, expires_at)
    SELECT * FROM UNNEST($18::uuid[], $19::uuid[], $20::uuid[], $21::text[], $22::int8[], $23::int8[])
)"
        )
    };
}

/// A batch of new identities (with or without a token each) as one statement, committed on its
/// own, as `ISSUE_AT_ONCE` does for token issues: the identities (`$13`–`$17`, each with its
/// token's time as `last_token_issued_at`: nothing else can have issued for an identity not
/// yet committed), the token records (`$18`–`$23`, as `bind_tokens` binds them), the events
/// and the moved chain heads. The division fails the whole statement, leaving nothing of it,
/// when an identity was skipped (its external id taken, its tenant deleted: the general way
/// answers those) or a tenant has no chain yet. Locks in the order every write takes them:
/// the tenant rows, the new identities' index entries, the chain heads once `created` is done.
const CREATE_AT_ONCE: &str = concat!(
    "WITH RECURSIVE ",
    create_at_once_ctes!(),
    ", ",
    link_events_ctes!("AND (SELECT count(*) FROM created) >= 0"),
    "
SELECT 1 / CASE WHEN (SELECT count(*) FROM created) = cardinality($13::uuid[])
                 AND (SELECT count(*) FROM head) = (SELECT count(*) FROM batch)
                THEN 1 ELSE 0 END"
);

/// A batch of new identities and token issues for existing ones, the writes of live traffic
/// but revocations, as one statement: `CREATE_AT_ONCE`'s CTEs and parameters, then
/// `ISSUE_AT_ONCE`'s records as `$24`–`$29`. Refused, with nothing written, when either would
/// refuse its part. The existing identities are locked once `created` is done (the tenant
/// rows and the new identities first, as every write takes them), the chain heads once the
/// records are written.
const CREATE_ISSUE_AT_ONCE: &str = concat!(
    "WITH RECURSIVE ",
    create_at_once_ctes!(),
    ", ",
    record_tokens_ctes!(
        "$24",
        "$25",
        "$26",
        "$27",
        "$28",
        "$29",
        " WHERE (SELECT count(*) FROM created) >= 0"
    ),
    ", ",
    link_events_ctes!("AND (SELECT count(*) FROM written) >= 0"),
    "
SELECT 1 / CASE WHEN (SELECT count(*) FROM created) = cardinality($13::uuid[])
                 AND (SELECT count(*) FROM written) = cardinality($24::uuid[])
                 AND (SELECT count(*) FROM head) = (SELECT count(*) FROM batch)
                THEN 1 ELSE 0 END"
);

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
        // The batch's token statement moves `last_token_issued_at` of those with a token.
        let rows: Vec<(Uuid, Uuid)> = bind_identities(
            sqlx::query(INSERT_IDENTITIES),
            identities.iter().map(|i| (*i, None)).collect(),
        )
        .try_map(|row: sqlx::postgres::PgRow| Ok((row.try_get(0)?, row.try_get(1)?)))
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

/// `query` with new identities bound as its next five parameters, one array per column
/// (tenant, identity, external id, created at, last token issued at), as
/// `insert_identities_ctes!` reads them: each identity with the time of the token issued with
/// it, if any, and in external-id order within each tenant, so that two instances inserting
/// the same external ids wait on each other's (unique index) entries in one order. Stable, so
/// that of two creates of one external id in the batch the first still wins.
fn bind_identities<'q>(
    query: PgQuery<'q>,
    mut identities: Vec<(&NewIdentity, Option<i64>)>,
) -> PgQuery<'q> {
    identities.sort_by(|(a, _), (b, _)| {
        (a.id.tenant(), a.external_id.as_deref()).cmp(&(b.id.tenant(), b.external_id.as_deref()))
    });
    let column =
        |f: fn(&NewIdentity) -> Uuid| identities.iter().map(|(i, _)| f(i)).collect::<Vec<_>>();
    query
        .bind(column(|i| i.id.tenant().as_uuid()))
        .bind(column(|i| i.id.local()))
        .bind(
            identities
                .iter()
                .map(|(i, _)| i.external_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            identities
                .iter()
                .map(|(i, _)| i.created_at.millis())
                .collect::<Vec<_>>(),
        )
        .bind(identities.iter().map(|(_, last)| *last).collect::<Vec<_>>())
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

/// `query` with `marks` bound as its next four parameters, one array per column (tenant,
/// identity, at, delete), as `mark_identities_ctes!` reads them.
fn bind_marks<'q>(query: PgQuery<'q>, marks: &[&MarkIdentity]) -> PgQuery<'q> {
    let column = |f: fn(&MarkIdentity) -> Uuid| marks.iter().map(|m| f(m)).collect::<Vec<_>>();
    query
        .bind(column(|m| m.id.tenant().as_uuid()))
        .bind(column(|m| m.id.local()))
        .bind(marks.iter().map(|m| m.at.millis()).collect::<Vec<_>>())
        .bind(marks.iter().map(|m| m.delete).collect::<Vec<_>>())
}

/// Runs a statement that marks identities (`MARK_AT_ONCE`, `WRITE_AT_ONCE`), with the change
/// log's kept window bound last; returns the new watermark of each identity marked.
async fn fetch_watermarks(
    query: PgQuery<'_>,
    pool: &PgPool,
) -> Result<HashMap<(Uuid, Uuid), i64>, sqlx::Error> {
    let (_, tenants, identities, revoked_before): (i32, Vec<Uuid>, Vec<Uuid>, Vec<i64>) = query
        .bind(super::IDENTITY_CHANGES_KEPT)
        .try_map(|row: sqlx::postgres::PgRow| {
            Ok((
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            ))
        })
        .fetch_one(pool)
        .await?;
    Ok(tenants
        .into_iter()
        .zip(identities)
        .zip(revoked_before)
        .collect())
}

/// `mark`'s outcome: written with its identity's new watermark, or nothing when the identity
/// was not live.
fn marked_outcome(mark: &MarkIdentity, watermarks: &HashMap<(Uuid, Uuid), i64>) -> BatchOutcome {
    let watermark = watermarks.get(&(mark.id.tenant().as_uuid(), mark.id.local()));
    BatchOutcome::Marked(watermark.map(|&w| mark.written(w)))
}

/// 0 below 1024 identities written, then one more each time they double.
fn plan_generation(identities_written: u64) -> u32 {
    (identities_written >> 10)
        .checked_ilog2()
        .map_or(0, |g| g + 1)
}

/// The CTE `m` (for a `WITH`): a batch's revocations and deletions, from the four parameters
/// that hold them as parallel arrays (tenant, identity, at, delete), each with its place in the
/// batch (`n`, from 1).
macro_rules! mark_input_cte {
    ($t:literal, $i:literal, $at:literal, $del:literal) => {
        concat!(
            "m AS (
    SELECT * FROM UNNEST(",
            $t,
            "::uuid[], ",
            $i,
            "::uuid[], ",
            $at,
            "::int8[], ",
            $del,
            "::bool[]) WITH ORDINALITY
        AS m (tenant_id, identity_id, at, del, n)
)"
        )
    };
}

/// The CTE `marked` that revokes or deletes the identities of `m` (each at most once) whose
/// rows `locked` holds: the watermark only moves forward, and an identity already deleted is
/// left alone. Returns each identity marked with its new watermark and its mark's place.
macro_rules! marked_cte {
    () => {
        "marked AS (
    UPDATE identities i
       SET deleted_at = CASE WHEN m.del THEN m.at ELSE i.deleted_at END,
           external_id = CASE WHEN m.del THEN NULL ELSE i.external_id END,
           tokens_revoked_before = GREATEST(COALESCE(i.tokens_revoked_before, m.at), m.at)
      FROM m JOIN locked USING (tenant_id, identity_id)
     WHERE i.tenant_id = m.tenant_id AND i.identity_id = m.identity_id AND i.deleted_at IS NULL
    RETURNING i.tenant_id, i.identity_id, i.tokens_revoked_before, m.n, m.del, m.at
)"
    };
}

/// The CTEs (for a `WITH`) that revoke or delete a batch's identities, given the parameters
/// of `mark_input_cte!`: the rows are locked first, in key order (`lock_identities_sql!`),
/// when the batch did not lock them already (a batch of marks alone saves that round trip),
/// then `marked_cte!`.
macro_rules! mark_identities_ctes {
    ($t:literal, $i:literal, $at:literal, $del:literal) => {
        concat!(
            mark_input_cte!($t, $i, $at, $del),
            ", locked AS MATERIALIZED (",
            lock_identities_sql!("SELECT tenant_id, identity_id FROM m"),
            "
), ",
            marked_cte!()
        )
    };
}

/// Revokes or deletes the batch's identities in one statement (`mark_identities_ctes!`).
const MARK_IDENTITIES: &str = concat!(
    "WITH ",
    mark_identities_ctes!("$1", "$2", "$3", "$4"),
    "\nSELECT tenant_id, identity_id, tokens_revoked_before FROM marked"
);

/// The CTEs that enter each identity of `marked` in the identity change log, numbered in the
/// order of the batch from the log's head (which `change_head` moves once for the batch), and
/// drop the entries pushed out of the kept window (`$kept`) by exact range.
macro_rules! change_log_ctes {
    ($kept:literal) => {
        concat!(
            "change_head AS (
    UPDATE identity_change_head SET seq = seq + (SELECT count(*) FROM marked) WHERE id = 1
    RETURNING seq, seq - (SELECT count(*) FROM marked) AS before
), changes AS (
    INSERT INTO identity_changes (seq, tenant_id, identity_id, tokens_revoked_before, deleted, changed_at)
    SELECT h.before + row_number() OVER (ORDER BY mk.n), mk.tenant_id, mk.identity_id,
           mk.tokens_revoked_before, mk.del, mk.at
      FROM marked mk CROSS JOIN change_head h
), pruned AS (
    DELETE FROM identity_changes c USING change_head h
     WHERE c.seq > h.before - ",
            $kept,
            " AND c.seq <= h.seq - ",
            $kept,
            "
)"
        )
    };
}

/// A batch of revocations and deletions (no identity twice) as one statement, committed on its
/// own, as `ISSUE_AT_ONCE` does for token issues: the marks, their entries in the identity
/// change log (numbered in the order of the batch from the log's head, which `change_head`
/// moves once for the batch, and the entries pushed out of the kept window, `$17`, dropped by
/// exact range), their events and the moved chain heads. The division fails the whole
/// statement, leaving nothing of it, when an identity was not live (its mark writes nothing and
/// has no event) or a tenant has no chain yet; the batch then goes the general way. Locks in
/// the order every write takes them: the identity rows (`locked`), the change log's head once
/// `marked` is done (its `SET` reads it), the chain heads once the change log's head is held.
/// One row whatever was marked, so the division is always evaluated (over a join to `marked`,
/// PostgreSQL skips an expression no row of an empty `marked` reaches); the identities marked
/// and their watermarks come as arrays.
const MARK_AT_ONCE: &str = concat!(
    "WITH RECURSIVE ",
    mark_identities_ctes!("$13", "$14", "$15", "$16"),
    ", ",
    change_log_ctes!("$17"),
    ", ",
    link_events_ctes!("AND (SELECT count(*) FROM change_head) >= 0"),
    "
SELECT 1 / CASE WHEN count(*) = cardinality($13::uuid[])
                 AND (SELECT count(*) FROM head) = (SELECT count(*) FROM batch)
                THEN 1 ELSE 0 END,
       array_agg(tenant_id), array_agg(identity_id), array_agg(tokens_revoked_before)
  FROM marked"
);

/// A batch of every kind of write, as live traffic makes them (new identities, token issues,
/// revocations and deletions; no identity both issued for and marked, none marked twice), as
/// one statement committed on its own: `CREATE_ISSUE_AT_ONCE`'s parameters (`$13`–`$29`),
/// then the marks as `$30`–`$33` and the change log's kept window as `$34`. The existing
/// identities of the token records and of the marks are locked together, in key order, once
/// `created` is done; the change log's head once they are marked; the chain heads once it is
/// held: the order every write takes its locks. Refused, with nothing written, when any of its
/// parts would be; returns what `MARK_AT_ONCE` returns.
const WRITE_AT_ONCE: &str = concat!(
    "WITH RECURSIVE ",
    create_at_once_ctes!(),
    ", ",
    token_input_cte!("$24", "$25", "$26", "$27", "$28", "$29"),
    ", ",
    mark_input_cte!("$30", "$31", "$32", "$33"),
    ", locked AS MATERIALIZED (",
    lock_identities_sql!(
        "SELECT tenant_id, identity_id FROM input WHERE (SELECT count(*) FROM created) >= 0",
        " UNION ALL SELECT tenant_id, identity_id FROM m"
    ),
    "
), ",
    write_tokens_ctes!(),
    ", ",
    marked_cte!(),
    ", ",
    change_log_ctes!("$34"),
    ", ",
    link_events_ctes!("AND (SELECT count(*) FROM change_head) >= 0"),
    "
SELECT 1 / CASE WHEN count(*) = cardinality($30::uuid[])
                 AND (SELECT count(*) FROM created) = cardinality($13::uuid[])
                 AND (SELECT count(*) FROM written) = cardinality($24::uuid[])
                 AND (SELECT count(*) FROM head) = (SELECT count(*) FROM batch)
                THEN 1 ELSE 0 END,
       array_agg(tenant_id), array_agg(identity_id), array_agg(tokens_revoked_before)
  FROM marked"
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
        let marks: Vec<&MarkIdentity> = marks.iter().map(|(_, m)| *m).collect();
        let rows: Vec<(Uuid, Uuid, i64)> =
            bind_marks(sqlx::query(self.replanned(MARK_IDENTITIES)), &marks)
                .try_map(|row: sqlx::postgres::PgRow| {
                    Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
                })
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
