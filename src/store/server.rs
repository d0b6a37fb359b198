//! The server's own state in the database (metadata, the change epoch) and the connection
//! pool itself.

use async_trait::async_trait;

use super::{Dialect, PoolStats, StoreResult};

/// What the server keeps about itself, and the pool's health.
#[async_trait]
pub trait ServerRepository: Send + Sync + 'static {
    fn dialect(&self) -> Dialect;

    /// One cheap round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;

    /// Closes the pool after in-flight work finishes.
    async fn close(&self);

    /// How many connections the pool holds and how many are idle.
    fn pool_stats(&self) -> PoolStats;

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>>;

    /// Records `value` under `key` unless a value is there already; returns the stored value.
    async fn put_meta_if_absent(&self, key: &str, value: &str) -> StoreResult<String>;

    /// The counter bumped by every change to tenants and their keys.
    async fn change_epoch(&self) -> StoreResult<i64>;
}

/// Implements [`ServerRepository`] for a store; `$dialect` is its [`Dialect`].
macro_rules! impl_server_repository {
    ($store:ty, $dialect:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::ServerRepository for $store {
            fn dialect(&self) -> $crate::store::Dialect {
                $dialect
            }

            async fn ping(&self) -> $crate::store::StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            fn pool_stats(&self) -> $crate::store::PoolStats {
                $crate::store::PoolStats {
                    size: self.pool.size(),
                    idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
                    max: self.pool.options().get_max_connections(),
                }
            }

            async fn get_meta(&self, key: &str) -> $crate::store::StoreResult<Option<String>> {
                Ok(
                    sqlx::query_scalar("SELECT value FROM server_meta WHERE key = $1")
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }

            async fn put_meta_if_absent(
                &self,
                key: &str,
                value: &str,
            ) -> $crate::store::StoreResult<String> {
                sqlx::query(
                    "INSERT INTO server_meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(key)
                .bind(value)
                .execute(&self.pool)
                .await?;
                Ok(
                    sqlx::query_scalar("SELECT value FROM server_meta WHERE key = $1")
                        .bind(key)
                        .fetch_one(&self.pool)
                        .await?,
                )
            }

            async fn change_epoch(&self) -> $crate::store::StoreResult<i64> {
                Ok(
                    sqlx::query_scalar("SELECT epoch FROM change_epoch WHERE id = 1")
                        .fetch_one(&self.pool)
                        .await?,
                )
            }
        }
    };
}
