//! The identity lifecycle of the ACS Identity API: create (optionally with a token, optionally
//! idempotent on `externalId`), read, issue tokens, revoke, delete.
//!
//! Every operation takes the tenant the request was authenticated for; an identity id of
//! another tenant is reported exactly like one that does not exist.

use std::sync::Arc;

use crate::domain::{ExpiryMinutes, ExternalId, IdentityId, ScopeSet, Timestamp};
use crate::store::{IdentityRecord, InsertIdentityOutcome, NewIdentity, Repository, StoreError};

use super::directory::Tenant;
use super::revocations::RevocationIndex;
use super::token_writer::TokenWriter;
use super::tokens::IssuedToken;
use super::{ServiceError, ServiceResult};

/// A token request after validation.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub scopes: ScopeSet,
    pub expiry: ExpiryMinutes,
}

#[derive(Debug)]
pub struct CreatedIdentity {
    pub id: IdentityId,
    /// False when `externalId` matched an existing identity.
    pub created: bool,
    pub token: Option<IssuedToken>,
}

#[derive(Clone)]
pub struct IdentityService {
    repo: Arc<dyn Repository>,
    tokens: TokenWriter,
    /// Revokes and deletes update it before they answer, so introspection on this server
    /// reflects them at once.
    revocations: Arc<RevocationIndex>,
}

fn not_found(id: &IdentityId) -> ServiceError {
    ServiceError::NotFound(format!("Identity '{id}' was not found."))
}

impl IdentityService {
    pub fn new(
        repo: Arc<dyn Repository>,
        tokens: TokenWriter,
        revocations: Arc<RevocationIndex>,
    ) -> Self {
        Self {
            repo,
            tokens,
            revocations,
        }
    }

    pub async fn create(
        &self,
        tenant: &Tenant,
        external_id: Option<ExternalId>,
        token: Option<TokenRequest>,
        now: Timestamp,
    ) -> ServiceResult<CreatedIdentity> {
        let id = IdentityId::generate(tenant.id);
        let minted = token
            .as_ref()
            .map(|t| tenant.issuer().mint(id, &t.scopes, t.expiry, now))
            .transpose()?;
        let identity = NewIdentity {
            id,
            external_id: external_id.map(|e| e.as_str().to_owned()),
            created_at: now,
        };
        let outcome = self
            .repo
            .insert_identity(&identity, minted.as_ref().map(|(_, r)| r))
            .await?;
        match outcome {
            InsertIdentityOutcome::Inserted => Ok(CreatedIdentity {
                id,
                created: true,
                token: minted.map(|(t, _)| t),
            }),
            InsertIdentityOutcome::ExternalIdTaken(existing) => {
                // Idempotent create: the caller gets the identity it made before, and a fresh
                // token for it if it asked for one.
                let token = match token {
                    Some(t) => Some(self.issue_token(tenant, existing.id, t, now).await?),
                    None => None,
                };
                Ok(CreatedIdentity {
                    id: existing.id,
                    created: false,
                    token,
                })
            }
        }
    }

    pub async fn get(&self, tenant: &Tenant, id: IdentityId) -> ServiceResult<IdentityRecord> {
        if id.tenant() != tenant.id {
            return Err(not_found(&id));
        }
        self.repo
            .find_identity(id)
            .await?
            .ok_or_else(|| not_found(&id))
    }

    pub async fn issue_token(
        &self,
        tenant: &Tenant,
        id: IdentityId,
        request: TokenRequest,
        now: Timestamp,
    ) -> ServiceResult<IssuedToken> {
        if id.tenant() != tenant.id {
            return Err(not_found(&id));
        }
        // Signing first and letting the batched insert check that the identity is live
        // costs one round trip instead of two; an unknown identity wastes one signature.
        let (token, record) = tenant
            .issuer()
            .mint(id, &request.scopes, request.expiry, now)?;
        match self.tokens.write(record).await {
            Ok(true) => Ok(token),
            Ok(false) => Err(not_found(&id)),
            Err(error) => Err(shared_store_error(&error)),
        }
    }

    pub async fn revoke_tokens(
        &self,
        tenant: &Tenant,
        id: IdentityId,
        now: Timestamp,
    ) -> ServiceResult<()> {
        if id.tenant() != tenant.id {
            return Err(not_found(&id));
        }
        let mark = self
            .repo
            .revoke_tokens(id, now)
            .await?
            .ok_or_else(|| not_found(&id))?;
        self.revocations.apply(mark);
        Ok(())
    }

    pub async fn delete(
        &self,
        tenant: &Tenant,
        id: IdentityId,
        now: Timestamp,
    ) -> ServiceResult<()> {
        if id.tenant() != tenant.id {
            return Err(not_found(&id));
        }
        let mark = self
            .repo
            .delete_identity(id, now)
            .await?
            .ok_or_else(|| not_found(&id))?;
        self.revocations.apply(mark);
        Ok(())
    }
}

/// A batch error is shared by every request of the batch; each gets its own copy.
fn shared_store_error(error: &StoreError) -> ServiceError {
    match error {
        StoreError::Unavailable(e) => ServiceError::Unavailable(anyhow::anyhow!("{e}")),
        other => ServiceError::Internal(anyhow::anyhow!("{other:#}")),
    }
}
