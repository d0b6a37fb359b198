//! The audit trail: hash-chained events per tenant.

use async_trait::async_trait;

use super::{AuditChainState, AuditQuery, StoreResult};
use crate::domain::audit::{AuditEvent, ChainedEvent};
use crate::domain::{TenantId, Timestamp};

/// Reading, appending to and purging the audit chains.
#[async_trait]
pub trait AuditRepository: Send + Sync + 'static {
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
}

/// Implements [`AuditRepository`] for a store (see `impl_repository!`).
macro_rules! impl_audit_repository {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::AuditRepository for $store {
            async fn append_audit_events(
                &self,
                events: &[$crate::domain::audit::AuditEvent],
            ) -> $crate::store::StoreResult<()> {
                if events.is_empty() {
                    return Ok(());
                }
                let mut tx = self.begin_write().await?;
                self.append_events(&mut *tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn query_audit_events(
                &self,
                query: &$crate::store::AuditQuery,
            ) -> $crate::store::StoreResult<Vec<$crate::domain::audit::ChainedEvent>> {
                // Only fixed fragments go into the text; every value is bound.
                let table = if query.identity.is_some() { Self::AUDIT_BY_IDENTITY } else { "audit_events" };
                let mut sql = format!(
                    "SELECT tenant_id, seq, occurred_at, actor, operation, identity_id, outcome, \
                     client_request_id, request_id, source_address, user_agent, details, prev_hash, hash \
                     FROM {table} WHERE tenant_id = $1"
                );
                let mut n = 1;
                let mut next = |column: &str, op: &str| {
                    n += 1;
                    format!(" AND {column} {op} ${n}")
                };
                if query.identity.is_some() { sql += &next("identity_id", "="); }
                if query.operation.is_some() { sql += &next("operation", "="); }
                if query.outcome.is_some() { sql += &next("outcome", "="); }
                if query.from.is_some() { sql += &next("occurred_at", ">="); }
                if query.to.is_some() { sql += &next("occurred_at", "<"); }
                if query.cursor.is_some() { sql += &next("seq", if query.descending { "<" } else { ">" }); }
                sql += if query.descending { " ORDER BY seq DESC" } else { " ORDER BY seq ASC" };
                sql += &format!(" LIMIT ${}", n + 1);

                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(query.tenant.as_uuid());
                if let Some(v) = query.identity { q = q.bind(v); }
                if let Some(v) = &query.operation { q = q.bind(v.clone()); }
                if let Some(v) = &query.outcome { q = q.bind(v.clone()); }
                if let Some(v) = query.from { q = q.bind(v.millis()); }
                if let Some(v) = query.to { q = q.bind(v.millis()); }
                if let Some(v) = query.cursor { q = q.bind(v); }
                let rows = q.bind(query.limit).fetch_all(&self.pool).await?;
                rows.iter().map(|row| event_row(row)).collect()
            }

            async fn audit_chain(
                &self,
                tenant: $crate::domain::TenantId,
            ) -> $crate::store::StoreResult<Option<$crate::store::AuditChainState>> {
                let row: Option<(i64, Vec<u8>, i64, Vec<u8>)> = sqlx::query_as(
                    "SELECT anchor_seq, anchor_hash, last_seq, last_hash FROM audit_chains WHERE tenant_id = $1",
                )
                .bind(tenant.as_uuid())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(anchor_seq, anchor_hash, last_seq, last_hash)| {
                    $crate::store::AuditChainState { anchor_seq, anchor_hash, last_seq, last_hash }
                }))
            }

            async fn audit_tenants(&self) -> $crate::store::StoreResult<Vec<$crate::domain::TenantId>> {
                let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT tenant_id FROM audit_chains ORDER BY tenant_id")
                    .fetch_all(&self.pool)
                    .await?;
                Ok(ids.into_iter().map($crate::domain::TenantId::from_uuid).collect())
            }

            async fn purge_audit_events(
                &self,
                tenant: $crate::domain::TenantId,
                before: $crate::domain::Timestamp,
                make_event: &(dyn Fn(u64, i64) -> $crate::domain::audit::AuditEvent + Send + Sync),
            ) -> $crate::store::StoreResult<u64> {
                let mut tx = self.begin_write().await?;
                let mut chain = Self::lock_chains(&mut *tx, [tenant]).await?;
                // The newest event to purge becomes the anchor: the first event kept links to
                // its hash, so verification starts there.
                let last: Option<(i64, Vec<u8>)> = sqlx::query_as(
                    "SELECT seq, hash FROM audit_events WHERE tenant_id = $1 AND occurred_at < $2 \
                     ORDER BY seq DESC LIMIT 1",
                )
                .bind(tenant.as_uuid())
                .bind(before.millis())
                .fetch_optional(&mut *tx)
                .await?;
                let Some((anchor_seq, anchor_hash)) = last else {
                    return Ok(0);
                };
                let purged = sqlx::query("DELETE FROM audit_events WHERE tenant_id = $1 AND seq <= $2")
                    .bind(tenant.as_uuid())
                    .bind(anchor_seq)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("UPDATE audit_chains SET anchor_seq = $2, anchor_hash = $3 WHERE tenant_id = $1")
                    .bind(tenant.as_uuid())
                    .bind(anchor_seq)
                    .bind(&anchor_hash)
                    .execute(&mut *tx)
                    .await?;
                let event = make_event(purged, anchor_seq);
                Self::append_locked(&mut *tx, &mut chain, std::slice::from_ref(&event)).await?;
                tx.commit().await?;
                Ok(purged)
            }
        }

        fn event_row<R: sqlx::Row>(row: &R) -> Result<$crate::domain::audit::ChainedEvent, $crate::store::StoreError>
        where
            for<'r> uuid::Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> &'r str: sqlx::ColumnIndex<R>,
        {
            Ok($crate::domain::audit::ChainedEvent {
                seq: row.try_get("seq")?,
                tenant: $crate::domain::TenantId::from_uuid(row.try_get("tenant_id")?),
                occurred_at: $crate::domain::Timestamp::from_millis(row.try_get("occurred_at")?),
                actor: row.try_get("actor")?,
                operation: row.try_get("operation")?,
                identity: row.try_get("identity_id")?,
                outcome: row.try_get("outcome")?,
                origin: $crate::domain::audit::RequestOrigin {
                    client_request_id: row.try_get("client_request_id")?,
                    request_id: row.try_get("request_id")?,
                    source_address: row.try_get("source_address")?,
                    user_agent: row.try_get("user_agent")?,
                },
                details: row.try_get("details")?,
                prev_hash: row.try_get("prev_hash")?,
                hash: row.try_get("hash")?,
            })
        }
    };
}
