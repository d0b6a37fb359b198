//! Identities, their issued-token records and revocation watermarks, and the identity
//! change log that carries revocations to every running server.

use async_trait::async_trait;

use super::{BatchOp, BatchOutcome, IdentityChange, IdentityRecord, RevocationMark, StoreResult};
use crate::domain::audit::AuditEvent;
use crate::domain::{IdentityId, Timestamp};

/// Identities and issued tokens. Creations and issues go through the group-commit batch;
/// revocations and deletions too, or one at a time.
#[async_trait]
pub trait IdentityRepository: Send + Sync + 'static {
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

    /// Commits many writes in one transaction (the group-commit path), each with its audit
    /// events, and says for each, in order, what became of it:
    /// - a new identity whose external id is taken in its tenant is not written (nor its
    ///   token or events), and the existing identity is returned;
    /// - a token whose identity is missing or deleted is not written (nor its event).
    ///
    /// Either the whole batch commits or none of it does.
    async fn commit_batch(&self, ops: &[BatchOp]) -> StoreResult<Vec<BatchOutcome>>;
}

/// Implements [`IdentityRepository`] for a store (see `impl_repository!`).
macro_rules! impl_identity_repository {
    ($store:ty, $conn:ty) => {
        impl $store {
            /// Moves a live identity's revocation watermark to `at` — never backwards, even if
            /// the clocks of two instances disagree — and with `delete` turns it into a
            /// tombstone without personal data. In the same transaction, appends the resulting
            /// mark to the identity change log (the sequence number comes from
            /// `identity_change_head`, whose row lock orders concurrent writers: numbers are
            /// gapless and committed in order, and rows older than the newest
            /// `IDENTITY_CHANGES_KEPT` are pruned) and records `event` in the tenant's audit
            /// chain, locked first like every audited write. `None`, with nothing written, when
            /// there is no live identity.
            async fn mark_identity(
                &self,
                id: $crate::domain::IdentityId,
                at: $crate::domain::Timestamp,
                delete: bool,
                event: &$crate::domain::audit::AuditEvent,
            ) -> $crate::store::StoreResult<Option<$crate::store::RevocationMark>> {
                use $crate::store::{BatchOp, BatchOutcome, IdentityRepository as _, MarkIdentity};
                let op = BatchOp::MarkIdentity(MarkIdentity { id, at, delete, event: event.clone() });
                match self.commit_batch(std::slice::from_ref(&op)).await?.pop() {
                    Some(BatchOutcome::Marked(mark)) => Ok(mark),
                    other => Err($crate::store::StoreError::Other(anyhow::anyhow!(
                        "unexpected outcome of a mark: {other:?}"
                    ))),
                }
            }

            /// Revokes or deletes one live identity inside a batch's transaction (the chain
            /// heads already locked); `None` when it was not live.
            async fn mark_locked(
                conn: &mut $conn,
                m: &$crate::store::MarkIdentity,
            ) -> Result<Option<$crate::store::RevocationMark>, sqlx::Error> {
                let sql = if m.delete {
                    "UPDATE identities SET deleted_at = $3, external_id = NULL, \
                       tokens_revoked_before = CASE \
                         WHEN tokens_revoked_before IS NULL OR tokens_revoked_before < $3 THEN $3 \
                         ELSE tokens_revoked_before END \
                     WHERE tenant_id = $1 AND identity_id = $2 AND deleted_at IS NULL \
                     RETURNING tokens_revoked_before"
                } else {
                    "UPDATE identities SET tokens_revoked_before = CASE \
                       WHEN tokens_revoked_before IS NULL OR tokens_revoked_before < $3 THEN $3 \
                       ELSE tokens_revoked_before END \
                     WHERE tenant_id = $1 AND identity_id = $2 AND deleted_at IS NULL \
                     RETURNING tokens_revoked_before"
                };
                let watermark: Option<i64> = sqlx::query_scalar(sql)
                    .bind(m.id.tenant().as_uuid())
                    .bind(m.id.local())
                    .bind(m.at.millis())
                    .fetch_optional(&mut *conn)
                    .await?;
                Ok(watermark.map(|watermark| m.written(watermark)))
            }

            /// Whether `tenant` still exists, as this transaction sees it.
            async fn tenant_exists(conn: &mut $conn, tenant: $crate::domain::TenantId) -> Result<bool, sqlx::Error> {
                let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE tenant_id = $1")
                    .bind(tenant.as_uuid())
                    .fetch_optional(conn)
                    .await?;
                Ok(found.is_some())
            }

            /// Appends the batch's marks to the identity change log (one move of its head for
            /// the whole batch) and drops entries old enough that no poller needs them.
            async fn log_identity_changes(
                conn: &mut $conn,
                ops: &[$crate::store::BatchOp],
                marked: &std::collections::HashMap<usize, $crate::store::RevocationMark>,
            ) -> Result<(), sqlx::Error> {
                if marked.is_empty() {
                    return Ok(());
                }
                let count = i64::try_from(marked.len()).unwrap_or(i64::MAX);
                let last: i64 = sqlx::query_scalar(
                    "UPDATE identity_change_head SET seq = seq + $1 WHERE id = 1 RETURNING seq",
                )
                .bind(count)
                .fetch_one(&mut *conn)
                .await?;
                // Sequence numbers in the order of the batch.
                let changes: Vec<$crate::store::ChangeRow> = ops
                    .iter()
                    .enumerate()
                    .filter_map(|(index, op)| match (op, marked.get(&index)) {
                        ($crate::store::BatchOp::MarkIdentity(m), Some(mark)) => Some((m, mark)),
                        _ => None,
                    })
                    .zip(last - count + 1..)
                    .map(|((m, mark), seq)| $crate::store::ChangeRow {
                        seq,
                        tenant: m.id.tenant().as_uuid(),
                        identity: m.id.local(),
                        tokens_revoked_before: mark.tokens_revoked_before.millis(),
                        deleted: m.delete,
                        changed_at: m.at.millis(),
                    })
                    .collect();
                Self::insert_identity_changes(&mut *conn, &changes).await?;
                // Exactly the entries this batch pushed out of the kept window: every batch
                // drops its own, and naming the range keeps PostgreSQL from walking the index
                // entries of all the rows dropped before vacuum clears them.
                let kept_from = last - $crate::store::IDENTITY_CHANGES_KEPT;
                sqlx::query("DELETE FROM identity_changes WHERE seq > $1 AND seq <= $2")
                    .bind(kept_from - count)
                    .bind(kept_from)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::IdentityRepository for $store {
            async fn find_identity(
                &self,
                id: $crate::domain::IdentityId,
            ) -> $crate::store::StoreResult<Option<$crate::store::IdentityRecord>> {
                let row = sqlx::query(
                    "SELECT identity_id, external_id, created_at, last_token_issued_at, tokens_revoked_before \
                     FROM identities WHERE tenant_id = $1 AND identity_id = $2 AND deleted_at IS NULL",
                )
                .bind(id.tenant().as_uuid())
                .bind(id.local())
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| identity_row(id.tenant(), &row)).transpose()
            }

            async fn delete_identity(
                &self,
                id: $crate::domain::IdentityId,
                at: $crate::domain::Timestamp,
                event: &$crate::domain::audit::AuditEvent,
            ) -> $crate::store::StoreResult<Option<$crate::store::RevocationMark>> {
                self.mark_identity(id, at, true, event).await
            }

            async fn revoke_tokens(
                &self,
                id: $crate::domain::IdentityId,
                at: $crate::domain::Timestamp,
                event: &$crate::domain::audit::AuditEvent,
            ) -> $crate::store::StoreResult<Option<$crate::store::RevocationMark>> {
                self.mark_identity(id, at, false, event).await
            }

            async fn load_revocation_marks(
                &self,
                since: $crate::domain::Timestamp,
            ) -> $crate::store::StoreResult<(i64, Vec<$crate::store::RevocationMark>)> {
                use sqlx::Row as _;
                // The head first: a change committed after it is polled later even if the
                // read below already saw it.
                let head: i64 =
                    sqlx::query_scalar("SELECT seq FROM identity_change_head WHERE id = 1")
                        .fetch_one(&self.pool)
                        .await?;
                let rows = sqlx::query(
                    "SELECT tenant_id, identity_id, tokens_revoked_before, deleted_at FROM identities \
                     WHERE tokens_revoked_before IS NOT NULL AND tokens_revoked_before >= $1",
                )
                .bind(since.millis())
                .fetch_all(&self.pool)
                .await?;
                let mut marks = Vec::with_capacity(rows.len());
                for row in rows {
                    let deleted_at: Option<i64> = row.try_get("deleted_at")?;
                    marks.push(revocation_mark(&row, deleted_at.is_some())?);
                }
                Ok((head, marks))
            }

            async fn identity_changes_after(
                &self,
                after: i64,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::IdentityChange>> {
                use sqlx::Row as _;
                let rows = sqlx::query(
                    "SELECT seq, tenant_id, identity_id, tokens_revoked_before, deleted \
                     FROM identity_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let mut changes = Vec::with_capacity(rows.len());
                for row in rows {
                    changes.push($crate::store::IdentityChange {
                        seq: row.try_get("seq")?,
                        mark: revocation_mark(&row, row.try_get("deleted")?)?,
                    });
                }
                Ok(changes)
            }

            async fn commit_batch(
                &self,
                ops: &[$crate::store::BatchOp],
            ) -> $crate::store::StoreResult<Vec<$crate::store::BatchOutcome>> {
                use $crate::store::{BatchOp, BatchOutcome, InsertIdentityOutcome};
                if let Some(outcomes) = self.commit_at_once(ops).await? {
                    return Ok(outcomes);
                }
                let mut tx = self.begin_write().await?;

                let creates: Vec<&$crate::store::NewIdentity> = ops
                    .iter()
                    .filter_map(|op| match op {
                        BatchOp::CreateIdentity(c) => Some(&c.identity),
                        _ => None,
                    })
                    .collect();
                let created = self.insert_identities(&mut *tx, &creates).await?;
                let is_created = |c: &$crate::store::CreateIdentity| {
                    created.contains(&(c.identity.id.tenant().as_uuid(), c.identity.id.local()))
                };

                let tokens: Vec<&$crate::store::TokenRecord> = ops
                    .iter()
                    .filter_map(|op| match op {
                        BatchOp::CreateIdentity(c) if is_created(c) => c.token.as_ref(),
                        BatchOp::CreateIdentity(_) => None,
                        BatchOp::IssueToken(i) => Some(&i.record),
                        BatchOp::MarkIdentity(_) => None,
                    })
                    .collect();
                let marks: Vec<(usize, &$crate::store::MarkIdentity)> = ops
                    .iter()
                    .enumerate()
                    .filter_map(|(index, op)| match op {
                        BatchOp::MarkIdentity(m) => Some((index, m)),
                        _ => None,
                    })
                    .collect();
                let distinct: std::collections::HashSet<_> = marks.iter().map(|(_, m)| m.id).collect();
                let issues = ops.iter().any(|op| matches!(op, BatchOp::IssueToken(_)));
                if (issues && !marks.is_empty()) || distinct.len() != marks.len() {
                    // More than one statement locks identity rows: all of them first, in one
                    // order (see `lock_identities`). Token records alone, or marks alone, are
                    // one statement, which orders its own locks.
                    let mut touched: Vec<(uuid::Uuid, uuid::Uuid)> = ops
                        .iter()
                        .filter_map(|op| match op {
                            BatchOp::IssueToken(i) => Some(i.record.identity),
                            BatchOp::MarkIdentity(m) => Some(m.id),
                            BatchOp::CreateIdentity(_) => None,
                        })
                        .map(|id| (id.tenant().as_uuid(), id.local()))
                        .collect();
                    touched.sort_unstable();
                    touched.dedup();
                    self.lock_identities(&mut *tx, &touched).await?;
                }
                let written = self.insert_tokens(&mut *tx, &tokens).await?;

                // Revocations and deletions after the inserts, so a token recorded in this
                // batch is covered by a mark of the same batch; their events follow, so the
                // trail's order is the order the changes took effect in.
                let mut marked = std::collections::HashMap::new();
                if distinct.len() == marks.len() {
                    // One statement for all of them; with no identity marked twice, the order
                    // of the marks within the batch cannot change any outcome.
                    let watermarks = self.mark_identities(&mut *tx, &marks).await?;
                    for (index, m) in &marks {
                        if let Some(&watermark) = watermarks.get(&(m.id.tenant().as_uuid(), m.id.local())) {
                            marked.insert(*index, m.written(watermark));
                        }
                    }
                } else {
                    // The same identity twice (a revoke, then a delete): one after the other,
                    // so the second sees what the first did.
                    for (index, m) in &marks {
                        if let Some(mark) = Self::mark_locked(&mut *tx, m).await? {
                            marked.insert(*index, mark);
                        }
                    }
                }
                Self::log_identity_changes(&mut *tx, ops, &marked).await?;

                // Events in the order of the batch, only for what was written.
                let mut events = Vec::with_capacity(ops.len() * 2);
                let mut outcomes = Vec::with_capacity(ops.len());
                for (index, op) in ops.iter().enumerate() {
                    match op {
                        BatchOp::CreateIdentity(c) if is_created(c) => {
                            events.extend(c.events.iter().cloned());
                            outcomes.push(BatchOutcome::Created(InsertIdentityOutcome::Inserted));
                        }
                        BatchOp::CreateIdentity(c) => {
                            let existing = match &c.identity.external_id {
                                Some(external_id) => sqlx::query(
                                    "SELECT identity_id, external_id, created_at, last_token_issued_at, tokens_revoked_before \
                                     FROM identities WHERE tenant_id = $1 AND external_id = $2 AND deleted_at IS NULL",
                                )
                                .bind(c.identity.id.tenant().as_uuid())
                                .bind(external_id)
                                .fetch_optional(&mut *tx)
                                .await?,
                                None => None,
                            };
                            let outcome = match existing {
                                Some(row) => InsertIdentityOutcome::ExternalIdTaken(identity_row(c.identity.id.tenant(), &row)?),
                                None if !Self::tenant_exists(&mut *tx, c.identity.id.tenant()).await? => {
                                    InsertIdentityOutcome::TenantDeleted
                                }
                                None => {
                                    return Err($crate::store::StoreError::Other(anyhow::anyhow!(
                                        "identity insert refused by a constraint other than the external id"
                                    )));
                                }
                            };
                            outcomes.push(BatchOutcome::Created(outcome));
                        }
                        BatchOp::IssueToken(i) => {
                            let ok = written.contains(&i.record.jti);
                            if ok {
                                events.push(i.event.clone());
                            }
                            outcomes.push(BatchOutcome::Issued(ok));
                        }
                        BatchOp::MarkIdentity(_) => {
                            outcomes.push(BatchOutcome::Marked(marked.get(&index).copied()));
                        }
                    }
                }
                events.extend(ops.iter().enumerate().filter_map(|(index, op)| match op {
                    BatchOp::MarkIdentity(m) if marked.contains_key(&index) => Some(m.event.clone()),
                    _ => None,
                }));
                self.append_events(&mut *tx, &events).await?;
                tx.commit().await?;
                Ok(outcomes)
            }
        }

        /// A revocation mark from a row with `tenant_id`, `identity_id` and
        /// `tokens_revoked_before`.
        fn revocation_mark<R: sqlx::Row>(
            row: &R,
            deleted: bool,
        ) -> Result<$crate::store::RevocationMark, $crate::store::StoreError>
        where
            for<'r> uuid::Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> &'r str: sqlx::ColumnIndex<R>,
        {
            use $crate::domain::{IdentityId, TenantId, Timestamp};
            Ok($crate::store::RevocationMark {
                identity: IdentityId::from_parts(
                    TenantId::from_uuid(row.try_get("tenant_id")?),
                    row.try_get("identity_id")?,
                ),
                tokens_revoked_before: Timestamp::from_millis(row.try_get("tokens_revoked_before")?),
                deleted,
            })
        }

        fn identity_row<R: sqlx::Row>(
            tenant: $crate::domain::TenantId,
            row: &R,
        ) -> Result<$crate::store::IdentityRecord, $crate::store::StoreError>
        where
            for<'r> uuid::Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> &'r str: sqlx::ColumnIndex<R>,
        {
            use $crate::domain::Timestamp;
            let last: Option<i64> = row.try_get("last_token_issued_at")?;
            let revoked: Option<i64> = row.try_get("tokens_revoked_before")?;
            Ok($crate::store::IdentityRecord {
                id: $crate::domain::IdentityId::from_parts(tenant, row.try_get("identity_id")?),
                external_id: row.try_get("external_id")?,
                created_at: Timestamp::from_millis(row.try_get("created_at")?),
                last_token_issued_at: last.map(Timestamp::from_millis),
                tokens_revoked_before: revoked.map(Timestamp::from_millis),
            })
        }
    };
}
