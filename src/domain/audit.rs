//! Audit events and the hash chain that makes them tamper-evident.
//!
//! Each tenant's events form one chain: event `n` stores the hash of event `n - 1`
//! (`prev_hash`) and its own `hash`, SHA-256 over that previous hash and the event's canonical
//! fields. Editing, deleting or reordering rows breaks a link that `callsign audit verify`
//! finds. The function is plain SHA-256, so anyone with read access to the database can check
//! the chain independently; to detect a rewrite of a whole chain, keep the head hash that
//! `audit verify` prints somewhere outside the database.
//!
//! Events never hold an `externalId`: it is personal data that must be erasable, and erasing
//! it from a chained event would break the chain.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{KeySlot, OperatorCredentialId, ParseError, TenantId, Timestamp};

/// The hash a chain starts from, and what an unpurged chain is anchored at.
pub const GENESIS: [u8; 32] = [0; 32];

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(value: &str) -> Result<Self, ParseError> {
                match value {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseError::new(format!(
                        "'{}' is not a valid {}; expected one of: {}.",
                        super::api_version::truncate(value, 40),
                        stringify!($name).to_lowercase(),
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// What happened.
    Operation {
        IdentityCreate = "identity.create",
        IdentityDelete = "identity.delete",
        TokenIssue = "token.issue",
        TokenRevoke = "token.revoke",
        TenantCreate = "tenant.create",
        TenantUpdate = "tenant.update",
        SigningKeyRotate = "signing_key.rotate",
        TenantDelete = "tenant.delete",
        KeyRegenerate = "key.regenerate",
        AuthFailure = "auth.failure",
        AuditPurge = "audit.purge",
        CredentialCreate = "operator.credential.create",
        CredentialRevoke = "operator.credential.revoke",
    }
);

string_enum!(
    /// Whether it succeeded.
    Outcome {
        Success = "success",
        Failure = "failure",
    }
);

/// The chain of events that belong to no tenant: operator credentials created or revoked,
/// and failed authentications on the admin API. It is keyed by the nil UUID, which no tenant
/// can have (tenant ids are random version-4 UUIDs), and is hashed, verified, queried
/// (`callsign audit query --tenant deployment`) and purged like any tenant's chain.
pub const DEPLOYMENT: TenantId = TenantId::from_uuid(Uuid::nil());

/// Who did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Actor {
    /// A request signed with one of the tenant's access keys.
    AccessKey(KeySlot),
    /// A request to the admin API, with the operator credential it presented.
    Operator(OperatorCredentialId),
    /// An operator, through the CLI.
    Cli,
    /// The server itself (first-start bootstrap, retention).
    System,
    /// A request that did not authenticate.
    Anonymous,
}

impl fmt::Display for Actor {
    /// As stored: `primaryKey`, `secondaryKey`, `operator:<credential id>`, `cli`, `system`,
    /// `anonymous`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::AccessKey(KeySlot::Primary) => f.write_str("primaryKey"),
            Actor::AccessKey(KeySlot::Secondary) => f.write_str("secondaryKey"),
            Actor::Operator(id) => write!(f, "operator:{id}"),
            Actor::Cli => f.write_str("cli"),
            Actor::System => f.write_str("system"),
            Actor::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// Where a request came from, as far as the server can tell. Client-supplied values are
/// bounded before they get here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOrigin {
    pub client_request_id: Option<String>,
    pub request_id: Option<String>,
    pub source_address: Option<String>,
    pub user_agent: Option<String>,
}

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub tenant: TenantId,
    pub occurred_at: Timestamp,
    pub actor: Actor,
    pub operation: Operation,
    pub identity: Option<Uuid>,
    pub outcome: Outcome,
    pub origin: RequestOrigin,
    pub details: Value,
}

/// An event with its place in the chain, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainedEvent {
    pub seq: i64,
    pub tenant: TenantId,
    pub occurred_at: Timestamp,
    pub actor: String,
    pub operation: String,
    pub identity: Option<Uuid>,
    pub outcome: String,
    pub origin: RequestOrigin,
    /// The details object as stored: compact JSON text, hashed byte for byte.
    pub details: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// What the hash of an event starts with: the version of the format, then the previous hash
/// (no length: it is always 32 bytes), then each field as its length (u64, big-endian; all
/// ones for none) and its bytes — tenant, seq, then the rest (`ChainedEvent::hashed_rest`).
/// The PostgreSQL store links events with the same bytes in SQL (`link_events_ctes!`).
pub const HASH_PREFIX: &[u8] = b"callsign-audit-v1";

impl ChainedEvent {
    /// `event` with the strings it is stored as, not yet linked to a chain (no seq, no hashes).
    pub fn unlinked(event: &AuditEvent) -> Self {
        ChainedEvent {
            seq: 0,
            tenant: event.tenant,
            occurred_at: event.occurred_at,
            actor: event.actor.to_string(),
            operation: event.operation.as_str().to_owned(),
            identity: event.identity,
            outcome: event.outcome.as_str().to_owned(),
            origin: event.origin.clone(),
            details: event.details.to_string(),
            prev_hash: Vec::new(),
            hash: Vec::new(),
        }
    }

    /// The hash this event must carry, given its fields and `prev_hash`.
    pub fn expected_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(HASH_PREFIX);
        h.update(&self.prev_hash);
        {
            let mut sink = |bytes: &[u8]| h.update(bytes);
            let mut field = field_encoder(&mut sink);
            field(Some(self.tenant.as_uuid().as_bytes()));
            field(Some(&self.seq.to_be_bytes()));
            self.feed_rest(&mut field);
        }
        h.finalize().into()
    }

    /// The bytes hashed after the seq: every field that does not depend on the event's place
    /// in its chain.
    pub fn hashed_rest(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.details.len());
        {
            let mut sink = |bytes: &[u8]| out.extend_from_slice(bytes);
            self.feed_rest(&mut field_encoder(&mut sink));
        }
        out
    }

    /// Passes the fields after the seq, in order, to `field`.
    fn feed_rest(&self, field: &mut impl FnMut(Option<&[u8]>)) {
        field(Some(&self.occurred_at.millis().to_be_bytes()));
        field(Some(self.actor.as_bytes()));
        field(Some(self.operation.as_bytes()));
        field(self.identity.as_ref().map(|u| u.as_bytes().as_slice()));
        field(Some(self.outcome.as_bytes()));
        field(self.origin.client_request_id.as_deref().map(str::as_bytes));
        field(self.origin.request_id.as_deref().map(str::as_bytes));
        field(self.origin.source_address.as_deref().map(str::as_bytes));
        field(self.origin.user_agent.as_deref().map(str::as_bytes));
        field(Some(self.details.as_bytes()));
    }
}

/// Encodes a field as hashed: its length (u64, big-endian) and its bytes, or all ones for
/// none, into `sink`.
fn field_encoder(sink: &mut impl FnMut(&[u8])) -> impl FnMut(Option<&[u8]>) + '_ {
    move |value| match value {
        Some(bytes) => {
            sink(&(bytes.len() as u64).to_be_bytes());
            sink(bytes);
        }
        None => sink(&u64::MAX.to_be_bytes()),
    }
}

/// The end of a tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub last_seq: i64,
    pub last_hash: Vec<u8>,
}

/// The heads of the chains a transaction appends to, read (and locked) at its start.
#[derive(Debug, Default)]
pub struct ChainAppender {
    heads: HashMap<TenantId, ChainHead>,
    appended: Vec<ChainedEvent>,
}

impl ChainAppender {
    pub fn new(heads: HashMap<TenantId, ChainHead>) -> Self {
        Self {
            heads,
            appended: Vec::new(),
        }
    }

    /// Links `event` to its tenant's chain. Fails if the head was not read first, which would
    /// be a bug in the caller, not bad input.
    pub fn append(&mut self, event: &AuditEvent) -> anyhow::Result<()> {
        let head = self.heads.get_mut(&event.tenant).ok_or_else(|| {
            anyhow::anyhow!("audit chain of tenant {} was not locked", event.tenant)
        })?;
        let mut chained = ChainedEvent {
            seq: head.last_seq + 1,
            prev_hash: head.last_hash.clone(),
            ..ChainedEvent::unlinked(event)
        };
        chained.hash = chained.expected_hash().to_vec();
        head.last_seq = chained.seq;
        head.last_hash = chained.hash.clone();
        self.appended.push(chained);
        Ok(())
    }

    pub fn events(&self) -> &[ChainedEvent] {
        &self.appended
    }

    /// The new heads of chains that got events.
    pub fn changed_heads(&self) -> impl Iterator<Item = (&TenantId, &ChainHead)> {
        self.heads
            .iter()
            .filter(|(tenant, _)| self.appended.iter().any(|e| e.tenant == **tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tenant: TenantId, details: Value) -> AuditEvent {
        AuditEvent {
            tenant,
            occurred_at: Timestamp::from_millis(1),
            actor: Actor::AccessKey(KeySlot::Primary),
            operation: Operation::TokenIssue,
            identity: Some(Uuid::nil()),
            outcome: Outcome::Success,
            origin: RequestOrigin::default(),
            details,
        }
    }

    /// The format is a contract (verifiers outside callsign, the SQL that links events on
    /// PostgreSQL): this vector was computed by an independent implementation of it.
    #[test]
    fn the_hash_of_an_event_is_the_documented_bytes() {
        let event = ChainedEvent {
            seq: 7,
            tenant: TenantId::from_uuid(Uuid::from_u128(1)),
            occurred_at: Timestamp::from_millis(1_700_000_000_000),
            actor: "accessKey:primary".to_owned(),
            operation: "token.issue".to_owned(),
            identity: Some(Uuid::from_u128(2)),
            outcome: "success".to_owned(),
            origin: RequestOrigin {
                client_request_id: Some("c".to_owned()),
                request_id: None,
                source_address: Some("127.0.0.1".to_owned()),
                user_agent: None,
            },
            details: r#"{"scopes":["chat"]}"#.to_owned(),
            prev_hash: GENESIS.to_vec(),
            hash: Vec::new(),
        };
        let hex: String = event
            .expected_hash()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "2c0c9f8874d4c80bbdebe12972f2ee631a7fa2edd071422601a1d9e45a9d03f1"
        );
    }

    #[test]
    fn events_chain_per_tenant_and_every_field_counts() {
        let (a, b) = (TenantId::generate(), TenantId::generate());
        let heads = [a, b].map(|t| {
            (
                t,
                ChainHead {
                    last_seq: 0,
                    last_hash: GENESIS.to_vec(),
                },
            )
        });
        let mut chain = ChainAppender::new(heads.into_iter().collect());
        chain
            .append(&event(a, serde_json::json!({"n": 1})))
            .expect("a1");
        chain
            .append(&event(b, serde_json::json!({"n": 1})))
            .expect("b1");
        chain
            .append(&event(a, serde_json::json!({"n": 2})))
            .expect("a2");
        let events = chain.events();
        assert_eq!([events[0].seq, events[1].seq, events[2].seq], [1, 1, 2]);
        assert_eq!(events[2].prev_hash, events[0].hash);
        assert_eq!(events[0].prev_hash, GENESIS.to_vec());
        for e in events {
            assert_eq!(e.expected_hash().to_vec(), e.hash);
        }
        let mut edited = events[0].clone();
        edited.user_agent_for_test("curl");
        assert_ne!(edited.expected_hash().to_vec(), edited.hash);
        assert_eq!(chain.changed_heads().count(), 2);
        assert!(
            chain
                .append(&event(TenantId::generate(), Value::Null))
                .is_err()
        );
    }

    impl ChainedEvent {
        fn user_agent_for_test(&mut self, ua: &str) {
            self.origin.user_agent = Some(ua.to_owned());
        }
    }

    #[test]
    fn names_parse_back() {
        for op in Operation::ALL {
            assert_eq!(Operation::parse(op.as_str()), Ok(*op));
        }
        assert!(Operation::parse("token.steal").is_err());
        assert_eq!(Outcome::parse("failure"), Ok(Outcome::Failure));
    }
}
