//! Rows as the repository hands them over: plain data, already typed.

use uuid::Uuid;

use crate::domain::audit::AuditEvent;
use crate::domain::{
    IdentityId, KeySlot, LimitSetting, LimitTable, LimitedOperation, OperatorCredentialId,
    TenantId, Timestamp,
};

/// A tenant with everything a server caches about it. Secrets are sealed with the master key.
#[derive(Debug, Clone)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: String,
    pub is_default: bool,
    pub created_at: Timestamp,
    /// In the order the operator gave them; the first names the tenant's endpoint.
    pub hostnames: Vec<String>,
    pub access_keys: Vec<AccessKeyRecord>,
    /// Oldest first.
    pub signing_keys: Vec<SigningKeyRecord>,
    /// Days of audit events kept; `None` keeps them forever.
    pub audit_retention_days: Option<i32>,
    /// The tenant's own rate limits; operations not named use the deployment's defaults.
    pub limits: LimitTable,
}

#[derive(Debug, Clone)]
pub struct AccessKeyRecord {
    pub slot: KeySlot,
    pub sealed_key: Vec<u8>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub algorithm: String,
    pub sealed_private_key: Vec<u8>,
    pub public_key_der: Vec<u8>,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIdentity {
    pub id: IdentityId,
    pub external_id: Option<String>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    pub id: IdentityId,
    pub external_id: Option<String>,
    pub created_at: Timestamp,
    pub last_token_issued_at: Option<Timestamp>,
    pub tokens_revoked_before: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertIdentityOutcome {
    Inserted,
    /// The external id belongs to this identity already; nothing was written.
    ExternalIdTaken(IdentityRecord),
    /// The tenant was deleted (by another instance, whose change this one had not yet
    /// loaded) before the batch was written; nothing was written.
    TenantDeleted,
}

/// The durable record of one issued token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub jti: Uuid,
    pub identity: IdentityId,
    /// Comma-joined, as in the `acsScope` claim.
    pub scopes: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A token record and the audit event that commits with it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenIssue {
    pub record: TokenRecord,
    pub event: AuditEvent,
}

/// Which audit events to read, newest or oldest first, after a keyset cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub tenant: TenantId,
    pub identity: Option<Uuid>,
    pub operation: Option<String>,
    pub outcome: Option<String>,
    /// Inclusive lower bound on `occurred_at`.
    pub from: Option<Timestamp>,
    /// Exclusive upper bound on `occurred_at`.
    pub to: Option<Timestamp>,
    /// Only events after (ascending) or before (descending) this sequence number.
    pub cursor: Option<i64>,
    pub descending: bool,
    pub limit: i64,
}

/// Where a tenant's chain starts (after purges) and ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditChainState {
    pub anchor_seq: i64,
    pub anchor_hash: Vec<u8>,
    pub last_seq: i64,
    pub last_hash: Vec<u8>,
}

/// A new identity, the token issued with it (if any) and their audit events.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateIdentity {
    pub identity: NewIdentity,
    pub token: Option<TokenRecord>,
    pub events: Vec<AuditEvent>,
}

/// A revocation (every token issued up to `at`) or a deletion of a live identity, and its
/// audit event.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkIdentity {
    pub id: IdentityId,
    pub at: Timestamp,
    pub delete: bool,
    pub event: AuditEvent,
}

impl MarkIdentity {
    /// What this mark left once written: the identity's watermark as the database moved it
    /// (`watermark`, in milliseconds; never backwards, so not always `at`).
    pub fn written(&self, watermark: i64) -> RevocationMark {
        RevocationMark {
            identity: self.id,
            tokens_revoked_before: Timestamp::from_millis(watermark),
            deleted: self.delete,
        }
    }
}

/// One write of a group-committed batch.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOp {
    CreateIdentity(CreateIdentity),
    IssueToken(TokenIssue),
    MarkIdentity(MarkIdentity),
}

impl BatchOp {
    pub fn tenant(&self) -> TenantId {
        match self {
            BatchOp::CreateIdentity(c) => c.identity.id.tenant(),
            BatchOp::IssueToken(i) => i.record.identity.tenant(),
            BatchOp::MarkIdentity(m) => m.id.tenant(),
        }
    }
}

/// Which tenants to read: all of them, one, or a page in creation order after a keyset
/// position (creation time, tenant id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    pub id: Option<TenantId>,
    pub after: Option<(Timestamp, TenantId)>,
    pub limit: Option<i64>,
}

impl TenantScope {
    pub fn all() -> Self {
        Self {
            id: None,
            after: None,
            limit: None,
        }
    }

    pub fn one(id: TenantId) -> Self {
        Self {
            id: Some(id),
            ..Self::all()
        }
    }

    pub fn page(after: Option<(Timestamp, TenantId)>, limit: i64) -> Self {
        Self {
            id: None,
            after,
            limit: Some(limit),
        }
    }
}

/// What became of one write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    Created(InsertIdentityOutcome),
    /// Whether the token was recorded (false: its identity is missing or deleted).
    Issued(bool),
    /// The identity's mark after a revocation or deletion; `None` when it was not live.
    Marked(Option<RevocationMark>),
}

/// What a revoke or delete left on an identity: its revocation watermark (every token issued
/// at or before it is revoked) and whether it is a tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationMark {
    pub identity: IdentityId,
    pub tokens_revoked_before: Timestamp,
    pub deleted: bool,
}

/// One row of the identity change log, as running servers poll it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityChange {
    /// Gapless and in commit order.
    pub seq: i64,
    pub mark: RevocationMark,
}

/// Changes to a tenant, applied together; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantChanges {
    pub name: Option<String>,
    /// Replaces every host name the tenant claims, in this order.
    pub hostnames: Option<Vec<String>>,
    /// Per operation: a new setting, or `None` to return to the deployment's default.
    pub limits: Vec<(LimitedOperation, Option<LimitSetting>)>,
    /// `Some(None)`: keep events forever.
    pub audit_retention_days: Option<Option<i32>>,
}

impl TenantChanges {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// What a tenant deletion removed, for its audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletionCounts {
    pub identities: i64,
    pub issued_tokens: i64,
}

/// What remains of a deleted tenant: the name its audit trail is shown under and the
/// retention that still applies to that trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedTenantRecord {
    pub id: TenantId,
    pub name: String,
    pub deleted_at: Timestamp,
    pub audit_retention_days: Option<i32>,
}

/// An operator credential as stored: its argon2 hash, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorCredentialRecord {
    pub id: OperatorCredentialId,
    pub name: String,
    /// argon2id, as a PHC string.
    pub phc_hash: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// Connections of the database pool, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}
