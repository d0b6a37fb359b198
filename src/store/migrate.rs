//! Migrations: SQL files under `migrations/<dialect>/`, embedded at build time and applied
//! by refinery.
//!
//! refinery has no sqlx driver, and adding its rusqlite/tokio-postgres drivers would mean a
//! second client library per database (and, for SQLite, a second copy of libsqlite3). So this
//! module implements refinery's three async traits over a sqlx connection: run each batch of
//! migrations in one sqlx transaction, and read refinery's history table back.

use refinery_core::Migration;
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use sqlx::{Connection, PgConnection, PgPool, Row, SqliteConnection, SqlitePool};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod sqlite_migrations {
    refinery::embed_migrations!("migrations/sqlite");
}

mod postgres_migrations {
    refinery::embed_migrations!("migrations/postgres");
}

/// A sqlx connection seen through refinery's traits.
pub struct MigrationConnection<C>(C);

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error("refinery history row is malformed: {0}")]
    History(String),
}

macro_rules! impl_refinery_traits {
    ($conn:ty) => {
        impl AsyncTransaction for MigrationConnection<$conn> {
            type Error = MigrationError;

            async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
                &'a mut self,
                queries: T,
            ) -> Result<usize, Self::Error> {
                let mut tx = self.0.begin().await?;
                let mut count = 0;
                for query in queries {
                    // A migration file holds several statements: raw_sql runs them all.
                    sqlx::raw_sql(sqlx::AssertSqlSafe(query))
                        .execute(&mut *tx)
                        .await?;
                    count += 1;
                }
                tx.commit().await?;
                Ok(count)
            }
        }

        impl AsyncQuery<Vec<Migration>> for MigrationConnection<$conn> {
            async fn query<'a>(
                &'a mut self,
                query: &'a str,
            ) -> Result<Vec<Migration>, Self::Error> {
                let rows = sqlx::query(sqlx::AssertSqlSafe(query))
                    .fetch_all(&mut self.0)
                    .await?;
                rows.iter()
                    .map(|row| {
                        let version: i32 = row.try_get(0)?;
                        let name: String = row.try_get(1)?;
                        let applied_on: String = row.try_get(2)?;
                        let checksum: String = row.try_get(3)?;
                        let applied_on = OffsetDateTime::parse(&applied_on, &Rfc3339)
                            .map_err(|e| MigrationError::History(format!("applied_on: {e}")))?;
                        let checksum = checksum
                            .parse::<u64>()
                            .map_err(|e| MigrationError::History(format!("checksum: {e}")))?;
                        Ok(Migration::applied(version, name, applied_on, checksum))
                    })
                    .collect()
            }
        }

        impl AsyncMigrate for MigrationConnection<$conn> {}
    };
}

impl_refinery_traits!(SqliteConnection);
impl_refinery_traits!(PgConnection);

pub async fn run_sqlite(pool: &SqlitePool) -> anyhow::Result<()> {
    let conn = pool.acquire().await?.detach();
    let mut conn = MigrationConnection(conn);
    let report = sqlite_migrations::migrations::runner()
        .run_async(&mut conn)
        .await?;
    log_report(&report);
    Ok(())
}

pub async fn run_postgres(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = MigrationConnection(pool.acquire().await?.detach());
    // Instances starting together must not apply the same migration twice.
    sqlx::query("SELECT pg_advisory_lock(7261626)")
        .execute(&mut conn.0)
        .await?;
    let result = postgres_migrations::migrations::runner()
        .run_async(&mut conn)
        .await;
    sqlx::query("SELECT pg_advisory_unlock(7261626)")
        .execute(&mut conn.0)
        .await?;
    log_report(&result?);
    Ok(())
}

fn log_report(report: &refinery_core::Report) {
    for migration in report.applied_migrations() {
        tracing::info!(
            version = migration.version(),
            name = migration.name(),
            "applied migration"
        );
    }
}

#[cfg(test)]
mod tests {
    fn names(dialect: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dialect);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn both_dialects_have_the_same_migration_versions_and_names() {
        let sqlite = names("sqlite");
        assert!(!sqlite.is_empty());
        assert_eq!(sqlite, names("postgres"));
    }
}
