//! The SQL both dialects share. sqlx binds the same Rust types on SQLite and PostgreSQL
//! (`Uuid` as a blob or a `uuid`, `i64`, `bool`, text, bytes) and both accept `$N`
//! placeholders, so most statements are written once, in the macro of their area
//! (`impl_tenant_repository!` in `tenants.rs`, …), and expanded into each store by
//! `impl_repository!`. Only what differs (pool setup, the batched inserts, bulk loads) lives
//! in `sqlite.rs` and `postgres.rs`.

/// Expands to the implementation of every repository trait but [`SeedRepository`] for
/// `$store`, whose [`Dialect`] is `$dialect`. `$store` must have a `pool` field of a sqlx
/// pool type whose connections are `$conn`, and inherent items `begin_write()` (a
/// transaction that holds the write lock from its first statement), `LOCK_CHAIN_SQL` (reads
/// a chain head and locks it until commit), `insert_events()`, `append_events()` (appends
/// events to their chains as the last writes of a transaction), `commit_at_once()` (a
/// dialect's shortcut for a batch as one statement, or `None`), `lock_identities()` (locks
/// existing identity rows until commit, in one order), `insert_identities()`,
/// `insert_tokens()`, `mark_identities()`, `insert_identity_changes()` (the batch's statements),
/// `lock_tenant_for_delete()` (the first locks of a tenant's deletion) and
/// `AUDIT_BY_IDENTITY` (what an audit query by identity reads from: the table, with an index
/// hint on SQLite).
///
/// Every audited write takes its locks in one order, so that no two of them wait on each
/// other: the change epoch (operator writes only, which it serialises), then the data rows
/// (tenant rows in key order, then new identities in external-id order, then existing
/// identities in key order),
/// then the identity change log's head, and last the audit chain heads, held from there to
/// commit. A chain head is the one row all writers of a tenant update, so it is taken last,
/// when nothing is left to wait for but the commit.
///
/// [`SeedRepository`]: crate::store::SeedRepository
/// [`Dialect`]: crate::store::Dialect
macro_rules! impl_repository {
    ($store:ty, $conn:ty, $dialect:expr) => {
        /// The steps every audited write shares.
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
        }

        impl_server_repository!($store, $dialect);
        impl_tenant_repository!($store, $conn);
        impl_operator_repository!($store);
        impl_identity_repository!($store, $conn);
        impl_audit_repository!($store);
    };
}
