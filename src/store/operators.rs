//! Operator credentials: who may use the admin API.

use async_trait::async_trait;

use super::{OperatorCredentialRecord, StoreResult};
use crate::domain::audit::AuditEvent;
use crate::domain::{OperatorCredentialId, Timestamp};

/// Operator credentials (their Argon2 hashes, never the secrets).
#[async_trait]
pub trait OperatorRepository: Send + Sync + 'static {
    /// Stores a new operator credential's hash and records `event` on the deployment chain.
    async fn insert_operator_credential(
        &self,
        credential: &OperatorCredentialRecord,
        event: &AuditEvent,
    ) -> StoreResult<()>;

    /// Every operator credential, revoked ones included, oldest first.
    async fn load_operator_credentials(&self) -> StoreResult<Vec<OperatorCredentialRecord>>;

    /// Marks a credential revoked and records `event`, moving the change epoch so running
    /// servers drop it. Returns false when there is no such credential or it was revoked
    /// already.
    async fn revoke_operator_credential(
        &self,
        id: OperatorCredentialId,
        at: Timestamp,
        event: &AuditEvent,
    ) -> StoreResult<bool>;
}

/// Implements [`OperatorRepository`] for a store (see `impl_repository!`).
macro_rules! impl_operator_repository {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::OperatorRepository for $store {
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
        }
    };
}
