//! Tenants with their host names, access keys, signing keys and limits.

use async_trait::async_trait;

use super::{
    DeletedTenantRecord, DeletionCounts, SigningKeyRecord, StoreResult, TenantChanges,
    TenantRecord, TenantScope,
};
use crate::domain::audit::AuditEvent;
use crate::domain::{KeySlot, TenantId, Timestamp};

/// Tenants and what belongs to them. Every write moves the change epoch, so running
/// servers reload them, and records its audit event in the same transaction.
#[async_trait]
pub trait TenantRepository: Send + Sync + 'static {
    /// Creates a tenant with its host names, access keys, first signing key and audit chain,
    /// and records `event`, in one transaction. A taken name or host name is a
    /// [`StoreError::Conflict`](super::StoreError::Conflict).
    async fn insert_tenant(&self, tenant: &TenantRecord, event: &AuditEvent) -> StoreResult<()>;

    /// Every tenant with its host names, sealed keys and limits, oldest first.
    async fn load_tenants(&self) -> StoreResult<Vec<TenantRecord>> {
        self.fetch_tenants(&TenantScope::all()).await
    }

    /// The tenants in `scope`, in creation order (then by id).
    async fn fetch_tenants(&self, scope: &TenantScope) -> StoreResult<Vec<TenantRecord>>;

    /// Applies `changes` to a tenant and records `event`, in one transaction that also moves
    /// the change epoch. Returns false, writing nothing, when there is no such tenant; a name
    /// or host name another tenant has is a [`StoreError::Conflict`], and nothing is written.
    ///
    /// [`StoreError::Conflict`]: super::StoreError::Conflict
    async fn update_tenant(
        &self,
        tenant: TenantId,
        changes: &TenantChanges,
        event: &AuditEvent,
    ) -> StoreResult<bool>;

    /// Deletes a tenant with its host names, keys, limits, identities and issued-token
    /// records, keeps its name and retention in `deleted_tenants` for its audit trail, and
    /// records the event `make_event` builds from what was removed; one transaction, which
    /// moves the change epoch. `None` when there is no such tenant.
    async fn delete_tenant(
        &self,
        tenant: TenantId,
        at: Timestamp,
        make_event: &(dyn Fn(DeletionCounts) -> AuditEvent + Send + Sync),
    ) -> StoreResult<Option<DeletionCounts>>;

    /// Tenants that were deleted, whose audit trails may remain.
    async fn deleted_tenants(&self) -> StoreResult<Vec<DeletedTenantRecord>>;

    /// Replaces the access key in `slot` with `sealed_key` and records `event`, moving the
    /// change epoch. Returns false when there is no such tenant.
    async fn replace_access_key(
        &self,
        tenant: TenantId,
        slot: KeySlot,
        sealed_key: &[u8],
        at: Timestamp,
        event: &AuditEvent,
    ) -> StoreResult<bool>;

    /// Adds `key` as the tenant's signing key and sets `retired_at` to `retire_others_at` on
    /// every key of the tenant that had none, in one transaction that also moves the change
    /// epoch. Returns false when the tenant does not exist.
    async fn rotate_signing_key(
        &self,
        tenant: TenantId,
        key: &SigningKeyRecord,
        retire_others_at: Timestamp,
        event: &AuditEvent,
    ) -> StoreResult<bool>;
}

/// Implements [`TenantRepository`] for a store (see `impl_repository!`).
macro_rules! impl_tenant_repository {
    ($store:ty, $conn:ty) => {
        impl $store {
            /// Sets a tenant's own limit for one operation (both columns NULL: unlimited).
            async fn upsert_limit(
                conn: &mut $conn,
                tenant: $crate::domain::TenantId,
                operation: $crate::domain::LimitedOperation,
                setting: $crate::domain::LimitSetting,
            ) -> Result<(), sqlx::Error> {
                let limit = setting.limit();
                sqlx::query(
                    "INSERT INTO tenant_limits (tenant_id, operation, max_requests, period_ms) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, operation) DO UPDATE \
                     SET max_requests = excluded.max_requests, period_ms = excluded.period_ms",
                )
                .bind(tenant.as_uuid())
                .bind(operation.as_str())
                .bind(limit.map(|l| l.requests().get() as i32))
                .bind(limit.map(|l| l.period_ms() as i64))
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            /// The tenant other than `except` that claims `hostname`, if any.
            async fn hostname_owner(
                conn: &mut $conn,
                hostname: &str,
                except: $crate::domain::TenantId,
            ) -> Result<Option<String>, sqlx::Error> {
                sqlx::query_scalar(
                    "SELECT t.name FROM tenant_hostnames h JOIN tenants t USING (tenant_id) \
                     WHERE h.hostname = $1 AND h.tenant_id <> $2",
                )
                .bind(hostname)
                .bind(except.as_uuid())
                .fetch_optional(&mut *conn)
                .await
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::TenantRepository for $store {
            async fn insert_tenant(
                &self,
                tenant: &$crate::store::TenantRecord,
                event: &$crate::domain::audit::AuditEvent,
            ) -> $crate::store::StoreResult<()> {
                // Named checks first, for a clear message; the unique constraints below still
                // decide when two writers race.
                let name_taken: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE name = $1")
                        .bind(&tenant.name)
                        .fetch_one(&self.pool)
                        .await?;
                if name_taken > 0 {
                    return Err($crate::store::StoreError::Conflict(format!(
                        "a tenant named '{}' already exists",
                        tenant.name
                    )));
                }
                for hostname in &tenant.hostnames {
                    let owner: Option<String> = sqlx::query_scalar(
                        "SELECT t.name FROM tenant_hostnames h JOIN tenants t USING (tenant_id) \
                         WHERE h.hostname = $1",
                    )
                    .bind(hostname)
                    .fetch_optional(&self.pool)
                    .await?;
                    if let Some(owner) = owner {
                        return Err($crate::store::StoreError::Conflict(format!(
                            "host name '{hostname}' is already claimed by tenant '{owner}'"
                        )));
                    }
                }

                let mut tx = self.begin_write().await?;
                Self::bump_epoch(&mut *tx).await?;
                sqlx::query(
                    "INSERT INTO tenants (tenant_id, name, is_default, created_at, audit_retention_days) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(tenant.id.as_uuid())
                .bind(&tenant.name)
                .bind(tenant.is_default)
                .bind(tenant.created_at.millis())
                .bind(tenant.audit_retention_days)
                .execute(&mut *tx)
                .await?;
                for (position, hostname) in tenant.hostnames.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO tenant_hostnames (hostname, tenant_id, position) VALUES ($1, $2, $3)",
                    )
                    .bind(hostname)
                    .bind(tenant.id.as_uuid())
                    .bind(position as i32)
                    .execute(&mut *tx)
                    .await?;
                }
                for key in &tenant.access_keys {
                    sqlx::query(
                        "INSERT INTO access_keys (tenant_id, slot, sealed_key, created_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(tenant.id.as_uuid())
                    .bind(key.slot.as_str())
                    .bind(&key.sealed_key)
                    .bind(key.created_at.millis())
                    .execute(&mut *tx)
                    .await?;
                }
                for key in &tenant.signing_keys {
                    sqlx::query(
                        "INSERT INTO signing_keys (kid, tenant_id, algorithm, sealed_private_key, \
                         public_key_der, created_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&key.kid)
                    .bind(tenant.id.as_uuid())
                    .bind(&key.algorithm)
                    .bind(&key.sealed_private_key)
                    .bind(&key.public_key_der)
                    .bind(key.created_at.millis())
                    .bind(key.retired_at.map(|t| t.millis()))
                    .execute(&mut *tx)
                    .await?;
                }
                for (operation, setting) in tenant.limits.iter() {
                    Self::upsert_limit(&mut *tx, tenant.id, operation, setting).await?;
                }
                // A tenant id is new, so its chain starts here (a stale chain of a purged
                // tenant with the same id cannot exist: ids are random).
                self.append_events(&mut *tx, std::slice::from_ref(event)).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn fetch_tenants(
                &self,
                scope: &$crate::store::TenantScope,
            ) -> $crate::store::StoreResult<Vec<$crate::store::TenantRecord>> {
                use sqlx::Row as _;
                use $crate::domain::{KeySlot, LimitSetting, LimitTable, LimitedOperation, RateLimit, TenantId, Timestamp};
                use $crate::store::{AccessKeyRecord, SigningKeyRecord, TenantRecord};

                // The tenants in scope; the child tables are read for the same set.
                const SCOPE: &str = "($1 IS NULL OR tenant_id = $1) \
                    AND ($2 IS NULL OR created_at > $2 OR (created_at = $2 AND tenant_id > $3)) \
                    ORDER BY created_at, tenant_id LIMIT $4";
                let in_scope = |sql: &str| {
                    sqlx::AssertSqlSafe(format!(
                        "{sql} WHERE tenant_id IN (SELECT tenant_id FROM tenants WHERE {SCOPE})"
                    ))
                };
                let id = scope.id.map(|t| t.as_uuid());
                let after_at = scope.after.map(|(at, _)| at.millis());
                let after_id = scope.after.map(|(_, t)| t.as_uuid());
                let limit = scope.limit.unwrap_or(i64::MAX);

                // One transaction for all five reads.
                let mut tx = self.pool.begin().await?;
                let mut tenants: Vec<TenantRecord> = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT tenant_id, name, is_default, created_at, audit_retention_days FROM tenants \
                     WHERE {SCOPE}"
                )))
                .bind(id)
                .bind(after_at)
                .bind(after_id)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|row| -> Result<TenantRecord, sqlx::Error> {
                    Ok(TenantRecord {
                        id: TenantId::from_uuid(row.try_get("tenant_id")?),
                        name: row.try_get("name")?,
                        is_default: row.try_get("is_default")?,
                        created_at: Timestamp::from_millis(row.try_get("created_at")?),
                        hostnames: Vec::new(),
                        access_keys: Vec::new(),
                        signing_keys: Vec::new(),
                        audit_retention_days: row.try_get("audit_retention_days")?,
                        limits: LimitTable::default(),
                    })
                })
                .collect::<Result<_, _>>()?;
                let index: std::collections::HashMap<uuid::Uuid, usize> = tenants
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.id.as_uuid(), i))
                    .collect();

                let rows = sqlx::query(in_scope("SELECT tenant_id, hostname, position FROM tenant_hostnames"))
                    .bind(id).bind(after_at).bind(after_id).bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut hostnames: Vec<(uuid::Uuid, i32, String)> = rows
                    .iter()
                    .map(|row| Ok((row.try_get("tenant_id")?, row.try_get("position")?, row.try_get("hostname")?)))
                    .collect::<Result<_, sqlx::Error>>()?;
                hostnames.sort();
                for (tenant, _, hostname) in hostnames {
                    if let Some(&i) = index.get(&tenant) {
                        tenants[i].hostnames.push(hostname);
                    }
                }

                let rows = sqlx::query(in_scope("SELECT tenant_id, slot, sealed_key, created_at FROM access_keys"))
                    .bind(id).bind(after_at).bind(after_id).bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                for row in rows {
                    let tenant: uuid::Uuid = row.try_get("tenant_id")?;
                    let slot: String = row.try_get("slot")?;
                    let slot = KeySlot::parse(&slot).map_err(|e| anyhow::anyhow!("access_keys.slot: {e}"))?;
                    if let Some(&i) = index.get(&tenant) {
                        tenants[i].access_keys.push(AccessKeyRecord {
                            slot,
                            sealed_key: row.try_get("sealed_key")?,
                            created_at: Timestamp::from_millis(row.try_get("created_at")?),
                        });
                    }
                }

                let rows = sqlx::query(in_scope(
                    "SELECT kid, tenant_id, algorithm, sealed_private_key, public_key_der, created_at, \
                     retired_at FROM signing_keys",
                ))
                .bind(id).bind(after_at).bind(after_id).bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let mut keys: Vec<(uuid::Uuid, SigningKeyRecord)> = Vec::with_capacity(rows.len());
                for row in rows {
                    let retired_at: Option<i64> = row.try_get("retired_at")?;
                    keys.push((row.try_get("tenant_id")?, SigningKeyRecord {
                        kid: row.try_get("kid")?,
                        algorithm: row.try_get("algorithm")?,
                        sealed_private_key: row.try_get("sealed_private_key")?,
                        public_key_der: row.try_get("public_key_der")?,
                        created_at: Timestamp::from_millis(row.try_get("created_at")?),
                        retired_at: retired_at.map(Timestamp::from_millis),
                    }));
                }
                // Oldest first, as the records promise.
                keys.sort_by(|a, b| (a.1.created_at, &a.1.kid).cmp(&(b.1.created_at, &b.1.kid)));
                for (tenant, key) in keys {
                    if let Some(&i) = index.get(&tenant) {
                        tenants[i].signing_keys.push(key);
                    }
                }

                let rows = sqlx::query(in_scope("SELECT tenant_id, operation, max_requests, period_ms FROM tenant_limits"))
                    .bind(id).bind(after_at).bind(after_id).bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                for row in rows {
                    let tenant: uuid::Uuid = row.try_get("tenant_id")?;
                    let operation: String = row.try_get("operation")?;
                    let max_requests: Option<i32> = row.try_get("max_requests")?;
                    let period_ms: Option<i64> = row.try_get("period_ms")?;
                    let Ok(operation) = LimitedOperation::parse(&operation) else {
                        // Written by a newer version that knows more operations.
                        continue;
                    };
                    let setting = match (max_requests, period_ms) {
                        (Some(n), Some(ms)) => LimitSetting::Limited(
                            RateLimit::new(u32::try_from(n).unwrap_or(0), u64::try_from(ms).unwrap_or(0))
                                .map_err(|e| anyhow::anyhow!("tenant_limits row: {e}"))?,
                        ),
                        _ => LimitSetting::Unlimited,
                    };
                    if let Some(&i) = index.get(&tenant) {
                        tenants[i].limits.set(operation, Some(setting));
                    }
                }
                tx.commit().await?;
                Ok(tenants)
            }

            async fn update_tenant(
                &self,
                tenant: $crate::domain::TenantId,
                changes: &$crate::store::TenantChanges,
                event: &$crate::domain::audit::AuditEvent,
            ) -> $crate::store::StoreResult<bool> {
                use $crate::store::StoreError;
                let mut tx = self.begin_write().await?;
                Self::bump_epoch(&mut *tx).await?;
                let exists: Option<String> = sqlx::query_scalar("SELECT name FROM tenants WHERE tenant_id = $1")
                    .bind(tenant.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_none() {
                    return Ok(false);
                }
                // Every early return drops the transaction, which rolls back what it did.
                if let Some(name) = &changes.name {
                    let taken: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM tenants WHERE name = $1 AND tenant_id <> $2",
                    )
                    .bind(name)
                    .bind(tenant.as_uuid())
                    .fetch_one(&mut *tx)
                    .await?;
                    if taken > 0 {
                        return Err(StoreError::Conflict(format!("a tenant named '{name}' already exists")));
                    }
                    sqlx::query("UPDATE tenants SET name = $2 WHERE tenant_id = $1")
                        .bind(tenant.as_uuid())
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(hostnames) = &changes.hostnames {
                    for hostname in hostnames {
                        if let Some(owner) = Self::hostname_owner(&mut *tx, hostname, tenant).await? {
                            return Err(StoreError::Conflict(format!(
                                "host name '{hostname}' is already claimed by tenant '{owner}'"
                            )));
                        }
                    }
                    sqlx::query("DELETE FROM tenant_hostnames WHERE tenant_id = $1")
                        .bind(tenant.as_uuid())
                        .execute(&mut *tx)
                        .await?;
                    for (position, hostname) in hostnames.iter().enumerate() {
                        sqlx::query(
                            "INSERT INTO tenant_hostnames (hostname, tenant_id, position) VALUES ($1, $2, $3)",
                        )
                        .bind(hostname)
                        .bind(tenant.as_uuid())
                        .bind(position as i32)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                for (operation, setting) in &changes.limits {
                    match setting {
                        Some(setting) => Self::upsert_limit(&mut *tx, tenant, *operation, *setting).await?,
                        None => {
                            sqlx::query("DELETE FROM tenant_limits WHERE tenant_id = $1 AND operation = $2")
                                .bind(tenant.as_uuid())
                                .bind(operation.as_str())
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                }
                if let Some(days) = changes.audit_retention_days {
                    sqlx::query("UPDATE tenants SET audit_retention_days = $2 WHERE tenant_id = $1")
                        .bind(tenant.as_uuid())
                        .bind(days)
                        .execute(&mut *tx)
                        .await?;
                }
                self.append_events(&mut *tx, std::slice::from_ref(event)).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn delete_tenant(
                &self,
                tenant: $crate::domain::TenantId,
                at: $crate::domain::Timestamp,
                make_event: &(dyn Fn($crate::store::DeletionCounts) -> $crate::domain::audit::AuditEvent + Send + Sync),
            ) -> $crate::store::StoreResult<Option<$crate::store::DeletionCounts>> {
                let mut tx = self.begin_write().await?;
                Self::bump_epoch(&mut *tx).await?;
                Self::lock_tenant_for_delete(&mut *tx, tenant).await?;
                let row: Option<(String, Option<i32>)> = sqlx::query_as(
                    "SELECT name, audit_retention_days FROM tenants WHERE tenant_id = $1",
                )
                .bind(tenant.as_uuid())
                .fetch_optional(&mut *tx)
                .await?;
                let Some((name, retention)) = row else {
                    return Ok(None);
                };
                let identities: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM identities WHERE tenant_id = $1 AND deleted_at IS NULL",
                )
                .bind(tenant.as_uuid())
                .fetch_one(&mut *tx)
                .await?;
                let issued_tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM issued_tokens WHERE tenant_id = $1")
                    .bind(tenant.as_uuid())
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO deleted_tenants (tenant_id, name, deleted_at, audit_retention_days) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(tenant.as_uuid())
                .bind(&name)
                .bind(at.millis())
                .bind(retention)
                .execute(&mut *tx)
                .await?;
                // Children first, explicitly: token records have no foreign key to cascade
                // from (V5).
                for sql in [
                    "DELETE FROM issued_tokens WHERE tenant_id = $1",
                    "DELETE FROM identities WHERE tenant_id = $1",
                    "DELETE FROM tenant_limits WHERE tenant_id = $1",
                    "DELETE FROM tenant_hostnames WHERE tenant_id = $1",
                    "DELETE FROM access_keys WHERE tenant_id = $1",
                    "DELETE FROM signing_keys WHERE tenant_id = $1",
                    "DELETE FROM tenants WHERE tenant_id = $1",
                ] {
                    sqlx::query(sql).bind(tenant.as_uuid()).execute(&mut *tx).await?;
                }
                let counts = $crate::store::DeletionCounts { identities, issued_tokens };
                let event = make_event(counts);
                self.append_events(&mut *tx, std::slice::from_ref(&event)).await?;
                tx.commit().await?;
                Ok(Some(counts))
            }

            async fn deleted_tenants(
                &self,
            ) -> $crate::store::StoreResult<Vec<$crate::store::DeletedTenantRecord>> {
                let rows: Vec<(uuid::Uuid, String, i64, Option<i32>)> = sqlx::query_as(
                    "SELECT tenant_id, name, deleted_at, audit_retention_days FROM deleted_tenants \
                     ORDER BY deleted_at, tenant_id",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, name, deleted_at, audit_retention_days)| $crate::store::DeletedTenantRecord {
                        id: $crate::domain::TenantId::from_uuid(id),
                        name,
                        deleted_at: $crate::domain::Timestamp::from_millis(deleted_at),
                        audit_retention_days,
                    })
                    .collect())
            }

            async fn replace_access_key(
                &self,
                tenant: $crate::domain::TenantId,
                slot: $crate::domain::KeySlot,
                sealed_key: &[u8],
                at: $crate::domain::Timestamp,
                event: &$crate::domain::audit::AuditEvent,
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                Self::bump_epoch(&mut *tx).await?;
                let affected = sqlx::query(
                    "UPDATE access_keys SET sealed_key = $3, created_at = $4 WHERE tenant_id = $1 AND slot = $2",
                )
                .bind(tenant.as_uuid())
                .bind(slot.as_str())
                .bind(sealed_key)
                .bind(at.millis())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if affected != 1 {
                    return Ok(false);
                }
                self.append_events(&mut *tx, std::slice::from_ref(event)).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn rotate_signing_key(
                &self,
                tenant: $crate::domain::TenantId,
                key: &$crate::store::SigningKeyRecord,
                retire_others_at: $crate::domain::Timestamp,
                event: &$crate::domain::audit::AuditEvent,
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                Self::bump_epoch(&mut *tx).await?;
                let exists: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE tenant_id = $1")
                        .bind(tenant.as_uuid())
                        .fetch_one(&mut *tx)
                        .await?;
                if exists == 0 {
                    return Ok(false);
                }
                sqlx::query(
                    "UPDATE signing_keys SET retired_at = $2 WHERE tenant_id = $1 AND retired_at IS NULL",
                )
                .bind(tenant.as_uuid())
                .bind(retire_others_at.millis())
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO signing_keys (kid, tenant_id, algorithm, sealed_private_key, \
                     public_key_der, created_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&key.kid)
                .bind(tenant.as_uuid())
                .bind(&key.algorithm)
                .bind(&key.sealed_private_key)
                .bind(&key.public_key_der)
                .bind(key.created_at.millis())
                .bind(key.retired_at.map(|t| t.millis()))
                .execute(&mut *tx)
                .await?;
                self.append_events(&mut *tx, std::slice::from_ref(event)).await?;
                tx.commit().await?;
                Ok(true)
            }
        }
    };
}
