//! The SQL both dialects share. sqlx binds the same Rust types on SQLite and PostgreSQL
//! (`Uuid` as a blob or a `uuid`, `i64`, `bool`, text, bytes) and both accept `$N`
//! placeholders, so most statements are written once here and expanded into each store by
//! `impl_repository!`. Only what differs (pool setup, the batched token insert) lives in
//! `sqlite.rs` and `postgres.rs`.

/// Expands to `impl Repository for $store` with the shared methods plus the dialect-specific
/// items given in braces. `$store` must have a `pool` field of a sqlx pool type whose
/// connections are `$conn`, and inherent items `begin_write()` (a transaction that holds the
/// write lock from its first statement), `LOCK_CHAIN_SQL` (reads a chain head and locks it
/// until commit), `insert_events()`, `append_events()` (appends events to their chains as
/// the last writes of a transaction), `commit_tokens_at_once()` (a dialect's shortcut for
/// a batch of token issues, or `None`) and `lock_identities()` (locks existing identity rows
/// until commit, in one order).
///
/// Every audited write takes its locks in one order, so that no two of them wait on each
/// other: the change epoch (operator writes only, which it serialises), then the data rows
/// (new identities in external-id order, then existing identities in key order),
/// then the identity change log's head, and last the audit chain heads, held from there to
/// commit. A chain head is the one row all writers of a tenant update, so it is taken last,
/// when nothing is left to wait for but the commit.
macro_rules! impl_repository {
    ($store:ty, $conn:ty, { $($specific:tt)* }) => {
        impl $store {
            /// Reads (and locks) the chain heads of `tenants`, creating a chain for a tenant
            /// that has none.
            async fn lock_chains(
                conn: &mut $conn,
                tenants: impl IntoIterator<Item = $crate::domain::TenantId>,
            ) -> Result<$crate::domain::audit::ChainAppender, sqlx::Error> {
                use $crate::domain::audit::{ChainAppender, ChainHead, GENESIS};
                let mut tenants: Vec<_> = tenants.into_iter().collect();
                // A fixed lock order across transactions.
                tenants.sort();
                tenants.dedup();
                let mut heads = std::collections::HashMap::with_capacity(tenants.len());
                for tenant in tenants {
                    let mut head: Option<(i64, Vec<u8>)> = sqlx::query_as(Self::LOCK_CHAIN_SQL)
                        .bind(tenant.as_uuid())
                        .fetch_optional(&mut *conn)
                        .await?;
                    if head.is_none() {
                        sqlx::query(
                            "INSERT INTO audit_chains (tenant_id, last_seq, last_hash, anchor_seq, anchor_hash) \
                             VALUES ($1, 0, $2, 0, $2) ON CONFLICT DO NOTHING",
                        )
                        .bind(tenant.as_uuid())
                        .bind(GENESIS.as_slice())
                        .execute(&mut *conn)
                        .await?;
                        head = sqlx::query_as(Self::LOCK_CHAIN_SQL)
                            .bind(tenant.as_uuid())
                            .fetch_optional(&mut *conn)
                            .await?;
                    }
                    let (last_seq, last_hash) = head.ok_or(sqlx::Error::RowNotFound)?;
                    heads.insert(tenant, ChainHead { last_seq, last_hash });
                }
                Ok(ChainAppender::new(heads))
            }

            /// Locks the chain heads of the tenants of `events`, links the events into them,
            /// inserts them and moves the heads.
            async fn append_events_locking(
                conn: &mut $conn,
                events: &[$crate::domain::audit::AuditEvent],
            ) -> Result<$crate::domain::audit::ChainAppender, $crate::store::StoreError> {
                let mut chain = Self::lock_chains(&mut *conn, events.iter().map(|e| e.tenant)).await?;
                Self::append_locked(&mut *conn, &mut chain, events).await?;
                Ok(chain)
            }

            /// Links `events` into the locked chains, inserts them and moves the heads.
            async fn append_locked(
                conn: &mut $conn,
                chain: &mut $crate::domain::audit::ChainAppender,
                events: &[$crate::domain::audit::AuditEvent],
            ) -> Result<(), $crate::store::StoreError> {
                let already = chain.events().len();
                for event in events {
                    chain.append(event)?;
                }
                Self::insert_events(&mut *conn, &chain.events()[already..]).await?;
                for (tenant, head) in chain.changed_heads() {
                    sqlx::query("UPDATE audit_chains SET last_seq = $2, last_hash = $3 WHERE tenant_id = $1")
                        .bind(tenant.as_uuid())
                        .bind(head.last_seq)
                        .bind(&head.last_hash)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            }
            /// Moves the change epoch, so running servers reload tenants and credentials.
            async fn bump_epoch(conn: &mut $conn) -> Result<(), sqlx::Error> {
                sqlx::query("UPDATE change_epoch SET epoch = epoch + 1 WHERE id = 1")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }

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
        impl $crate::store::Repository for $store {
            $($specific)*

            async fn ping(&self) -> $crate::store::StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            async fn get_meta(&self, key: &str) -> $crate::store::StoreResult<Option<String>> {
                Ok(sqlx::query_scalar("SELECT value FROM server_meta WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn put_meta_if_absent(
                &self,
                key: &str,
                value: &str,
            ) -> $crate::store::StoreResult<String> {
                sqlx::query("INSERT INTO server_meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(&self.pool)
                    .await?;
                Ok(sqlx::query_scalar("SELECT value FROM server_meta WHERE key = $1")
                    .bind(key)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn change_epoch(&self) -> $crate::store::StoreResult<i64> {
                Ok(sqlx::query_scalar("SELECT epoch FROM change_epoch WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?)
            }

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

            async fn commit_batch(
                &self,
                ops: &[$crate::store::BatchOp],
            ) -> $crate::store::StoreResult<Vec<$crate::store::BatchOutcome>> {
                use $crate::store::{BatchOp, BatchOutcome, InsertIdentityOutcome};
                if let Some(outcomes) = self.commit_tokens_at_once(ops).await? {
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
                if issues || distinct.len() != marks.len() {
                    // More than one statement locks identity rows: all of them first, in one
                    // order (see `lock_identities`). Marks alone are one statement, which
                    // orders its own locks.
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
                            marked.insert(*index, $crate::store::RevocationMark {
                                identity: m.id,
                                tokens_revoked_before: $crate::domain::Timestamp::from_millis(watermark),
                                deleted: m.delete,
                            });
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
                            let Some(row) = existing else {
                                return Err($crate::store::StoreError::Other(anyhow::anyhow!(
                                    "identity insert refused by a constraint other than the external id"
                                )));
                            };
                            let existing = identity_row(c.identity.id.tenant(), &row)?;
                            outcomes.push(BatchOutcome::Created(InsertIdentityOutcome::ExternalIdTaken(existing)));
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

            async fn insert_operator_credential(
                &self,
                credential: &$crate::store::OperatorCredentialRecord,
                event: &$crate::domain::audit::AuditEvent,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = self.begin_write().await?;
                Self::bump_epoch(&mut *tx).await?;
                sqlx::query(
                    "INSERT INTO operator_credentials (credential_id, name, phc_hash, created_at, revoked_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(credential.id.as_uuid())
                .bind(&credential.name)
                .bind(&credential.phc_hash)
                .bind(credential.created_at.millis())
                .bind(credential.revoked_at.map(|t| t.millis()))
                .execute(&mut *tx)
                .await?;
                self.append_events(&mut *tx, std::slice::from_ref(event)).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn load_operator_credentials(
                &self,
            ) -> $crate::store::StoreResult<Vec<$crate::store::OperatorCredentialRecord>> {
                let rows: Vec<(uuid::Uuid, String, String, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT credential_id, name, phc_hash, created_at, revoked_at FROM operator_credentials \
                     ORDER BY created_at, credential_id",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, name, phc_hash, created_at, revoked_at)| $crate::store::OperatorCredentialRecord {
                        id: $crate::domain::OperatorCredentialId::from_uuid(id),
                        name,
                        phc_hash,
                        created_at: $crate::domain::Timestamp::from_millis(created_at),
                        revoked_at: revoked_at.map($crate::domain::Timestamp::from_millis),
                    })
                    .collect())
            }

            async fn revoke_operator_credential(
                &self,
                id: $crate::domain::OperatorCredentialId,
                at: $crate::domain::Timestamp,
                event: &$crate::domain::audit::AuditEvent,
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                Self::bump_epoch(&mut *tx).await?;
                let affected = sqlx::query(
                    "UPDATE operator_credentials SET revoked_at = $2 WHERE credential_id = $1 AND revoked_at IS NULL",
                )
                .bind(id.as_uuid())
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

            fn pool_stats(&self) -> $crate::store::PoolStats {
                $crate::store::PoolStats {
                    size: self.pool.size(),
                    idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
                    max: self.pool.options().get_max_connections(),
                }
            }

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

        impl $store {
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
                use $crate::store::{BatchOp, BatchOutcome, MarkIdentity, Repository as _};
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
                Ok(watermark.map(|watermark| $crate::store::RevocationMark {
                    identity: m.id,
                    tokens_revoked_before: $crate::domain::Timestamp::from_millis(watermark),
                    deleted: m.delete,
                }))
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
