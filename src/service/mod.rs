//! The rules of callsign, between the HTTP layer and the repository: which tenant owns what,
//! token policy and signing, identity lifecycle. No actix or sqlx types appear here; time
//! comes in as an argument so the rules can be tested without a clock.

pub mod audit;
pub mod directory;
pub mod group_commit;
pub mod identities;
pub mod operators;
pub mod refresh;
pub mod revocations;
pub mod tenants;
pub mod throttle;
pub mod tokens;
pub mod verification;

use crate::domain::ParseError;
use crate::store::StoreError;

/// What a service call can fail with, named by outcome; the HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NotFound(String),
    /// No tenant has the id given (admin API, CLI).
    #[error("{0}")]
    UnknownTenant(String),
    #[error("{0}")]
    Conflict(String),
    /// The caller's tenant was deleted after its request was authenticated (by another
    /// instance, whose change this one had not yet loaded).
    #[error("the tenant of this access key has been deleted")]
    TenantDeleted,
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(message) => ServiceError::Conflict(message),
            StoreError::Unavailable(e) => ServiceError::Unavailable(e.into()),
            StoreError::Other(e) => ServiceError::Internal(e),
        }
    }
}

impl From<ParseError> for ServiceError {
    fn from(error: ParseError) -> Self {
        ServiceError::Validation(error.0)
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
