//! HTTP: routes, extractors, and the mapping of errors to the ACS error shape. Handlers parse
//! into domain types, call one service function, and shape the response; they never see SQL.

pub mod admin;
mod api_version;
pub mod audit;
mod auth;
mod error;
mod health;
mod identities;
pub mod metrics;
mod openapi;
pub mod origin;
mod query;
mod verification;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;

use crate::crypto::master_key::MasterKey;
use crate::crypto::signing::SigningAlgorithm;
use crate::metrics::Metrics;
use crate::service::audit::{AuditService, FailureRecorder};
use crate::service::directory::TenantDirectory;
use crate::service::identities::IdentityService;
use crate::service::operators::OperatorAuth;
use crate::service::refresh::Refresher;
use crate::service::revocations::RevocationIndex;
use crate::service::verification::VerifiedTokens;
use crate::store::Repository;

pub use error::ApiError;

/// Bounds on what a request may cost.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted; ACS bodies are a few hundred bytes.
    pub max_body_bytes: usize,
    /// How far `x-ms-date` may be from the server's clock.
    pub clock_skew: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            clock_skew: Duration::from_secs(15 * 60),
        }
    }
}

/// What every handler can reach.
pub struct AppState {
    pub directory: Arc<TenantDirectory>,
    pub identities: IdentityService,
    pub audit: AuditService,
    pub failures: FailureRecorder,
    /// Revocation watermarks and tombstones, for introspection.
    pub revocations: Arc<RevocationIndex>,
    /// Tokens introspection verified recently.
    pub verified_tokens: VerifiedTokens,
    pub repo: Arc<dyn Repository>,
    pub limits: Limits,
    pub operators: Arc<OperatorAuth>,
    /// Applies a change made through this server before the change is answered.
    pub refresher: Arc<Refresher>,
    pub metrics: Arc<Metrics>,
    /// Seals the access keys of tenants created or re-keyed through the admin API.
    pub master_key: MasterKey,
    /// Signing algorithm of tenants created through the admin API.
    pub signing_algorithm: SigningAlgorithm,
}

/// Registers every route.
pub fn configure(config: &mut web::ServiceConfig) {
    identities::configure(config);
    audit::configure(config);
    verification::configure(config);
    admin::configure(config);
    health::configure(config);
    metrics::configure(config);
    openapi::configure(config);
    config.default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::not_found("No such route."))
    }));
}
