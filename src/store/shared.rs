//! The SQL both dialects share. sqlx binds the same Rust types on SQLite and PostgreSQL
//! (`Uuid` as a blob or a `uuid`, `i64`, `bool`, text, bytes) and both accept `$N`
//! placeholders, so most statements are written once here and expanded into each store by
//! `impl_repository!`. Only what differs (pool setup, the batched token insert) lives in
//! `sqlite.rs` and `postgres.rs`.

/// Expands to `impl Repository for $store` with the shared methods plus the dialect-specific
/// items given in braces. `$store` must have a `pool` field of a sqlx pool type.
macro_rules! impl_repository {
    ($store:ty, { $($specific:tt)* }) => {
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

                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO tenants (tenant_id, name, is_default, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(tenant.id.as_uuid())
                .bind(&tenant.name)
                .bind(tenant.is_default)
                .bind(tenant.created_at.millis())
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
                sqlx::query("UPDATE change_epoch SET epoch = epoch + 1 WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn load_tenants(
                &self,
            ) -> $crate::store::StoreResult<Vec<$crate::store::TenantRecord>> {
                use sqlx::Row as _;
                use $crate::domain::{KeySlot, TenantId, Timestamp};
                use $crate::store::{AccessKeyRecord, SigningKeyRecord, TenantRecord};

                // One consistent snapshot of all four tables.
                let mut tx = self.pool.begin().await?;
                let mut tenants: Vec<TenantRecord> = sqlx::query(
                    "SELECT tenant_id, name, is_default, created_at FROM tenants ORDER BY created_at, name",
                )
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
                    })
                })
                .collect::<Result<_, _>>()?;
                let index: std::collections::HashMap<uuid::Uuid, usize> = tenants
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.id.as_uuid(), i))
                    .collect();

                let rows = sqlx::query(
                    "SELECT tenant_id, hostname FROM tenant_hostnames ORDER BY tenant_id, position",
                )
                .fetch_all(&mut *tx)
                .await?;
                for row in rows {
                    let tenant: uuid::Uuid = row.try_get("tenant_id")?;
                    if let Some(&i) = index.get(&tenant) {
                        tenants[i].hostnames.push(row.try_get("hostname")?);
                    }
                }

                let rows = sqlx::query("SELECT tenant_id, slot, sealed_key, created_at FROM access_keys")
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

                let rows = sqlx::query(
                    "SELECT kid, tenant_id, algorithm, sealed_private_key, public_key_der, created_at, \
                     retired_at FROM signing_keys ORDER BY created_at, kid",
                )
                .fetch_all(&mut *tx)
                .await?;
                for row in rows {
                    let tenant: uuid::Uuid = row.try_get("tenant_id")?;
                    if let Some(&i) = index.get(&tenant) {
                        let retired_at: Option<i64> = row.try_get("retired_at")?;
                        tenants[i].signing_keys.push(SigningKeyRecord {
                            kid: row.try_get("kid")?,
                            algorithm: row.try_get("algorithm")?,
                            sealed_private_key: row.try_get("sealed_private_key")?,
                            public_key_der: row.try_get("public_key_der")?,
                            created_at: Timestamp::from_millis(row.try_get("created_at")?),
                            retired_at: retired_at.map(Timestamp::from_millis),
                        });
                    }
                }
                tx.commit().await?;
                Ok(tenants)
            }

            async fn insert_identity(
                &self,
                identity: &$crate::store::NewIdentity,
                token: Option<&$crate::store::TokenRecord>,
            ) -> $crate::store::StoreResult<$crate::store::InsertIdentityOutcome> {
                let tenant = identity.id.tenant().as_uuid();
                let mut tx = self.pool.begin().await?;
                // No conflict target: the only constraint a fresh UUIDv7 can meet is the
                // tenant's external-id index, and both dialects spell this the same way.
                let inserted = sqlx::query(
                    "INSERT INTO identities (tenant_id, identity_id, external_id, created_at, last_token_issued_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(tenant)
                .bind(identity.id.local())
                .bind(identity.external_id.as_deref())
                .bind(identity.created_at.millis())
                .bind(token.map(|t| t.issued_at.millis()))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    tx.rollback().await?;
                    let existing = match &identity.external_id {
                        Some(external_id) => {
                            sqlx::query(
                                "SELECT identity_id, external_id, created_at, last_token_issued_at, tokens_revoked_before \
                                 FROM identities WHERE tenant_id = $1 AND external_id = $2 AND deleted_at IS NULL",
                            )
                            .bind(tenant)
                            .bind(external_id)
                            .fetch_optional(&self.pool)
                            .await?
                        }
                        None => None,
                    };
                    return match existing {
                        Some(row) => Ok($crate::store::InsertIdentityOutcome::ExternalIdTaken(
                            identity_row(identity.id.tenant(), &row)?,
                        )),
                        None => Err($crate::store::StoreError::Other(anyhow::anyhow!(
                            "identity insert refused by a constraint other than the external id"
                        ))),
                    };
                }
                if let Some(token) = token {
                    sqlx::query(
                        "INSERT INTO issued_tokens (tenant_id, jti, identity_id, scopes, issued_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(tenant)
                    .bind(token.jti)
                    .bind(token.identity.local())
                    .bind(&token.scopes)
                    .bind(token.issued_at.millis())
                    .bind(token.expires_at.millis())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok($crate::store::InsertIdentityOutcome::Inserted)
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
            ) -> $crate::store::StoreResult<Option<$crate::store::RevocationMark>> {
                self.mark_identity(id, at, true).await
            }

            async fn revoke_tokens(
                &self,
                id: $crate::domain::IdentityId,
                at: $crate::domain::Timestamp,
            ) -> $crate::store::StoreResult<Option<$crate::store::RevocationMark>> {
                self.mark_identity(id, at, false).await
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
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                // A write first, so SQLite takes its write lock now (waiting on the busy
                // timeout) rather than failing to upgrade a read lock later.
                sqlx::query("UPDATE change_epoch SET epoch = epoch + 1 WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
                let exists: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE tenant_id = $1")
                        .bind(tenant.as_uuid())
                        .fetch_one(&mut *tx)
                        .await?;
                if exists == 0 {
                    tx.rollback().await?;
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
                tx.commit().await?;
                Ok(true)
            }
        }

        impl $store {
            /// Moves a live identity's revocation watermark to `at` — never backwards, even if
            /// the clocks of two instances disagree — and with `delete` turns it into a
            /// tombstone without personal data. In the same transaction, appends the resulting
            /// mark to the identity change log: the sequence number comes from
            /// `identity_change_head`, whose row lock orders concurrent writers (numbers are
            /// gapless and committed in order), and rows older than the newest
            /// `IDENTITY_CHANGES_KEPT` are pruned. `None` when there is no live identity.
            async fn mark_identity(
                &self,
                id: $crate::domain::IdentityId,
                at: $crate::domain::Timestamp,
                delete: bool,
            ) -> $crate::store::StoreResult<Option<$crate::store::RevocationMark>> {
                let sql = if delete {
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
                let mut tx = self.pool.begin().await?;
                let watermark: Option<i64> = sqlx::query_scalar(sql)
                    .bind(id.tenant().as_uuid())
                    .bind(id.local())
                    .bind(at.millis())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(watermark) = watermark else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                let mark = $crate::store::RevocationMark {
                    identity: id,
                    tokens_revoked_before: $crate::domain::Timestamp::from_millis(watermark),
                    deleted: delete,
                };
                let seq: i64 = sqlx::query_scalar(
                    "UPDATE identity_change_head SET seq = seq + 1 WHERE id = 1 RETURNING seq",
                )
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO identity_changes (seq, tenant_id, identity_id, \
                     tokens_revoked_before, deleted, changed_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(seq)
                .bind(id.tenant().as_uuid())
                .bind(id.local())
                .bind(watermark)
                .bind(delete)
                .bind(at.millis())
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM identity_changes WHERE seq <= $1")
                    .bind(seq - $crate::store::IDENTITY_CHANGES_KEPT)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Some(mark))
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
