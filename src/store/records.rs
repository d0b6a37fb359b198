//! Rows as the repository hands them over: plain data, already typed.

use uuid::Uuid;

use crate::domain::{IdentityId, KeySlot, TenantId, Timestamp};

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

#[derive(Debug, Clone)]
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
