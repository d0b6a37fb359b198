//! The identity lifecycle of the ACS Identity API: create (optionally with a token, optionally
//! idempotent on `externalId`), read, issue tokens, revoke, delete.
//!
//! Every operation takes the tenant the request was authenticated for; an identity id of
//! another tenant is reported exactly like one that does not exist.

use std::sync::Arc;

use serde_json::json;

use crate::domain::audit::{AuditEvent, Operation};
use crate::domain::{ExpiryMinutes, ExternalId, IdentityId, ScopeSet, Timestamp};
use crate::store::{
    BatchOp, BatchOutcome, CreateIdentity, IdentityRecord, InsertIdentityOutcome, MarkIdentity,
    NewIdentity, Repository, StoreError, TokenIssue, TokenRecord,
};

use super::audit::Caller;

use super::directory::Tenant;
use super::group_commit::GroupCommit;
use super::revocations::RevocationIndex;
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
    batches: GroupCommit,
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
        batches: GroupCommit,
        revocations: Arc<RevocationIndex>,
    ) -> Self {
        Self {
            repo,
            batches,
            revocations,
        }
    }

    pub async fn create(
        &self,
        tenant: &Tenant,
        caller: &Caller,
        external_id: Option<ExternalId>,
        token: Option<TokenRequest>,
        now: Timestamp,
    ) -> ServiceResult<CreatedIdentity> {
        let id = IdentityId::generate(tenant.id);
        let minted = token
            .as_ref()
            .map(|t| tenant.issuer().mint(id, &t.scopes, t.expiry, now))
            .transpose()?;
        // The external id is personal data and never enters the audit trail; only the fact
        // that one was given does.
        let mut events = vec![identity_event(
            caller,
            id,
            Operation::IdentityCreate,
            now,
            json!({"externalId": external_id.is_some(), "withToken": minted.is_some()}),
        )];
        if let Some((_, record)) = &minted {
            events.push(token_event(caller, record));
        }
        let identity = NewIdentity {
            id,
            external_id: external_id.map(|e| e.as_str().to_owned()),
            created_at: now,
        };
        let (minted_token, record) = match minted {
            Some((token, record)) => (Some(token), Some(record)),
            None => (None, None),
        };
        let op = BatchOp::CreateIdentity(CreateIdentity {
            identity,
            token: record,
            events,
        });
        let outcome = match self.batches.write(op).await {
            Ok(BatchOutcome::Created(outcome)) => outcome,
            Ok(other) => return Err(unexpected(other)),
            Err(error) => return Err(shared_store_error(&error)),
        };
        match outcome {
            InsertIdentityOutcome::Inserted => Ok(CreatedIdentity {
                id,
                created: true,
                token: minted_token,
            }),
            InsertIdentityOutcome::ExternalIdTaken(existing) => {
                // Idempotent create: the caller gets the identity it made before, and a fresh
                // token for it if it asked for one.
                let token = match token {
                    Some(t) => Some(
                        self.issue_token(tenant, caller, existing.id, t, now)
                            .await?,
                    ),
                    None => None,
                };
                Ok(CreatedIdentity {
                    id: existing.id,
                    created: false,
                    token,
                })
            }
            InsertIdentityOutcome::TenantDeleted => Err(ServiceError::TenantDeleted),
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
        caller: &Caller,
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
        let event = token_event(caller, &record);
        match self
            .batches
            .write(BatchOp::IssueToken(TokenIssue { record, event }))
            .await
        {
            Ok(BatchOutcome::Issued(true)) => Ok(token),
            Ok(BatchOutcome::Issued(false)) => Err(not_found(&id)),
            Ok(other) => Err(unexpected(other)),
            Err(error) => Err(shared_store_error(&error)),
        }
    }

    pub async fn revoke_tokens(
        &self,
        tenant: &Tenant,
        caller: &Caller,
        id: IdentityId,
        now: Timestamp,
    ) -> ServiceResult<()> {
        let details = json!({"revokedBefore": now.to_rfc3339()});
        let event = identity_event(caller, id, Operation::TokenRevoke, now, details);
        self.mark(tenant, id, now, false, event).await
    }

    pub async fn delete(
        &self,
        tenant: &Tenant,
        caller: &Caller,
        id: IdentityId,
        now: Timestamp,
    ) -> ServiceResult<()> {
        let event = identity_event(caller, id, Operation::IdentityDelete, now, json!({}));
        self.mark(tenant, id, now, true, event).await
    }

    /// Revokes (or deletes) through the group commit, like the writes it must order with,
    /// and applies the mark here before answering, so introspection on this server agrees
    /// at once.
    async fn mark(
        &self,
        tenant: &Tenant,
        id: IdentityId,
        at: Timestamp,
        delete: bool,
        event: AuditEvent,
    ) -> ServiceResult<()> {
        if id.tenant() != tenant.id {
            return Err(not_found(&id));
        }
        let op = BatchOp::MarkIdentity(MarkIdentity {
            id,
            at,
            delete,
            event,
        });
        match self.batches.write(op).await {
            Ok(BatchOutcome::Marked(Some(mark))) => {
                self.revocations.apply(mark);
                Ok(())
            }
            Ok(BatchOutcome::Marked(None)) => Err(not_found(&id)),
            Ok(other) => Err(unexpected(other)),
            Err(error) => Err(shared_store_error(&error)),
        }
    }
}

/// The batch answered a write with the outcome of another kind of write: a bug.
fn unexpected(outcome: BatchOutcome) -> ServiceError {
    ServiceError::Internal(anyhow::anyhow!("unexpected batch outcome {outcome:?}"))
}

/// A batch error is shared by every request of the batch; each gets its own copy.
fn shared_store_error(error: &StoreError) -> ServiceError {
    match error {
        StoreError::Unavailable(e) => ServiceError::Unavailable(anyhow::anyhow!("{e}")),
        other => ServiceError::Internal(anyhow::anyhow!("{other:#}")),
    }
}

fn identity_event(
    caller: &Caller,
    id: IdentityId,
    operation: Operation,
    now: Timestamp,
    details: serde_json::Value,
) -> AuditEvent {
    caller.event(id.tenant(), operation, Some(id.local()), now, details)
}

/// The audit event of an issued token: which token (jti), what it allows, until when.
fn token_event(caller: &Caller, record: &TokenRecord) -> AuditEvent {
    identity_event(
        caller,
        record.identity,
        Operation::TokenIssue,
        record.issued_at,
        json!({
            "jti": record.jti,
            "scopes": record.scopes.split(',').collect::<Vec<_>>(),
            "expiresOn": record.expires_at.to_rfc3339(),
        }),
    )
}
