//! The audit log: who was given access to what, when, and by which key.
//!
//! Events are written by the repository in the same transaction as the change they describe
//! (see `store`); this module builds them, reads them back in pages, verifies the hash chain,
//! applies retention, and records failed authentications, which belong to no other write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::crypto::master_key::MasterKey;
use crate::domain::audit::{
    Actor, AuditEvent, ChainedEvent, GENESIS, Operation, Outcome, RequestOrigin,
};
use crate::domain::{IdentityId, TenantId, Timestamp};
use crate::store::{AuditQuery, Repository, StoreError};

use super::{ServiceError, ServiceResult};

/// Who is asking: the credential a request authenticated with, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub actor: Actor,
    pub origin: RequestOrigin,
}

impl Caller {
    pub fn cli() -> Self {
        Self {
            actor: Actor::Cli,
            origin: RequestOrigin::default(),
        }
    }

    pub fn system() -> Self {
        Self {
            actor: Actor::System,
            origin: RequestOrigin::default(),
        }
    }

    /// A successful event of `operation` by this caller.
    pub fn event(
        &self,
        tenant: TenantId,
        operation: Operation,
        identity: Option<Uuid>,
        at: Timestamp,
        details: Value,
    ) -> AuditEvent {
        AuditEvent {
            tenant,
            occurred_at: at,
            actor: self.actor,
            operation,
            identity,
            outcome: Outcome::Success,
            origin: self.origin.clone(),
            details,
        }
    }
}

/// Filters of an audit query, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub identity: Option<IdentityId>,
    pub operation: Option<Operation>,
    pub outcome: Option<Outcome>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub descending: bool,
}

impl AuditFilter {
    /// Checks what a single parameter cannot: the range's direction and the identity's tenant.
    pub fn validate(&self, tenant: TenantId) -> ServiceResult<()> {
        if let (Some(from), Some(to)) = (self.from, self.to)
            && to <= from
        {
            return Err(ServiceError::Validation(
                "'to' must be later than 'from'.".into(),
            ));
        }
        if let Some(identity) = self.identity
            && identity.tenant() != tenant
        {
            return Err(ServiceError::NotFound(format!(
                "Identity '{identity}' was not found."
            )));
        }
        Ok(())
    }

    /// A digest of the filters, so a continuation token only continues the query it came from.
    fn digest(&self) -> String {
        let text = format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{}",
            self.identity.map(|i| i.to_string()),
            self.operation.map(Operation::as_str),
            self.outcome.map(Outcome::as_str),
            self.from.map(Timestamp::millis),
            self.to.map(Timestamp::millis),
            self.descending
        );
        Sha256::digest(text.as_bytes())[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// One page of events and, when there may be more, the token for the next.
pub struct AuditPage {
    pub events: Vec<ChainedEvent>,
    pub continuation: Option<String>,
}

/// The contents of a continuation token. It is signed, so a client can neither forge one nor
/// move it to another tenant or another query.
#[derive(Serialize, Deserialize)]
struct Cursor {
    /// Tenant.
    t: Uuid,
    /// Last sequence number returned.
    s: i64,
    /// Filter digest.
    f: String,
    /// Issued at, seconds.
    i: i64,
}

/// Events read per round trip when walking a whole chain.
const VERIFY_PAGE: i64 = 5000;

/// How long a continuation token stays valid.
const CURSOR_LIFETIME_SECONDS: i64 = 24 * 3600;

/// The outcome of walking one tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub tenant: TenantId,
    pub events: u64,
    pub anchor_seq: i64,
    pub head_seq: i64,
    pub head_hash: String,
    /// The first broken link, if any: its sequence number and what is wrong.
    pub broken: Option<(i64, String)>,
}

#[derive(Clone)]
pub struct AuditService {
    repo: Arc<dyn Repository>,
    cursor_key: Hmac<Sha256>,
}

impl AuditService {
    pub fn new(repo: Arc<dyn Repository>, master_key: &MasterKey) -> anyhow::Result<Self> {
        let key = master_key.derive("audit continuation tokens");
        let cursor_key = Hmac::<Sha256>::new_from_slice(key.as_ref())?;
        Ok(Self { repo, cursor_key })
    }

    /// A page of `tenant`'s events matching `filter`, after `continuation` if given.
    pub async fn query(
        &self,
        tenant: TenantId,
        filter: &AuditFilter,
        page_size: i64,
        continuation: Option<&str>,
        now: Timestamp,
    ) -> ServiceResult<AuditPage> {
        filter.validate(tenant)?;
        let cursor = continuation
            .map(|c| self.open_cursor(c, tenant, filter, now))
            .transpose()?;
        let mut events = self.scan(tenant, filter, cursor, page_size + 1).await?;
        let more = events.len() as i64 > page_size;
        events.truncate(page_size as usize);
        let continuation = match (more, events.last()) {
            (true, Some(last)) => Some(self.seal_cursor(tenant, last.seq, filter, now)),
            _ => None,
        };
        Ok(AuditPage {
            events,
            continuation,
        })
    }

    /// Events matching `filter` after the keyset `cursor`, at most `limit` of them.
    pub async fn scan(
        &self,
        tenant: TenantId,
        filter: &AuditFilter,
        cursor: Option<i64>,
        limit: i64,
    ) -> ServiceResult<Vec<ChainedEvent>> {
        Ok(self
            .repo
            .query_audit_events(&AuditQuery {
                tenant,
                identity: filter.identity.map(|i| i.local()),
                operation: filter.operation.map(|o| o.as_str().to_owned()),
                outcome: filter.outcome.map(|o| o.as_str().to_owned()),
                from: filter.from,
                to: filter.to,
                cursor,
                descending: filter.descending,
                limit,
            })
            .await?)
    }

    fn seal_cursor(
        &self,
        tenant: TenantId,
        seq: i64,
        filter: &AuditFilter,
        now: Timestamp,
    ) -> String {
        let cursor = Cursor {
            t: tenant.as_uuid(),
            s: seq,
            f: filter.digest(),
            i: now.seconds(),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cursor).unwrap_or_default());
        let mut mac = self.cursor_key.clone();
        mac.update(payload.as_bytes());
        format!(
            "{payload}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn open_cursor(
        &self,
        token: &str,
        tenant: TenantId,
        filter: &AuditFilter,
        now: Timestamp,
    ) -> ServiceResult<i64> {
        let invalid = |why: &str| {
            ServiceError::Validation(format!("The continuation token is not valid: {why}."))
        };
        let (payload, signature) = token.split_once('.').ok_or_else(|| invalid("malformed"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| invalid("malformed"))?;
        let mut mac = self.cursor_key.clone();
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| invalid("it was not issued by this server"))?;
        let cursor: Cursor = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| invalid("malformed"))?;
        if cursor.t != tenant.as_uuid() {
            return Err(invalid("it belongs to another tenant"));
        }
        if cursor.f != filter.digest() {
            return Err(invalid("it belongs to a query with other filters"));
        }
        if now.seconds() - cursor.i > CURSOR_LIFETIME_SECONDS {
            return Err(invalid("it has expired; start the query again"));
        }
        Ok(cursor.s)
    }

    /// Walks a tenant's chain from its anchor to its head and reports the first broken link.
    pub async fn verify_chain(&self, tenant: TenantId) -> ServiceResult<ChainReport> {
        let chain =
            self.repo.audit_chain(tenant).await?.ok_or_else(|| {
                ServiceError::NotFound(format!("tenant {tenant} has no audit trail"))
            })?;
        let mut report = ChainReport {
            tenant,
            events: 0,
            anchor_seq: chain.anchor_seq,
            head_seq: chain.last_seq,
            head_hash: hex(&chain.last_hash),
            broken: None,
        };
        let mut expected_seq = chain.anchor_seq + 1;
        let mut expected_prev = chain.anchor_hash.clone();
        let mut cursor = Some(chain.anchor_seq);
        loop {
            let page = self
                .scan(tenant, &AuditFilter::default(), cursor, VERIFY_PAGE)
                .await?;
            for event in &page {
                let problem = if event.seq != expected_seq {
                    Some(format!(
                        "expected event {expected_seq} next, found {} (events missing or reordered)",
                        event.seq
                    ))
                } else if event.prev_hash != expected_prev {
                    Some("its prev_hash is not the hash of the event before it".to_owned())
                } else if event.expected_hash().to_vec() != event.hash {
                    Some("its contents do not match its hash (the row was edited)".to_owned())
                } else {
                    None
                };
                if let Some(problem) = problem {
                    report.broken = Some((event.seq, problem));
                    return Ok(report);
                }
                report.events += 1;
                expected_seq += 1;
                expected_prev = event.hash.clone();
            }
            match page.last() {
                Some(last) if page.len() as i64 == VERIFY_PAGE => cursor = Some(last.seq),
                _ => break,
            }
        }
        if expected_seq - 1 != chain.last_seq || expected_prev != chain.last_hash {
            report.broken = Some((
                expected_seq,
                format!(
                    "the chain ends at event {} but its head is event {} (events missing at the end)",
                    expected_seq - 1,
                    chain.last_seq
                ),
            ));
        }
        Ok(report)
    }

    /// Deletes events older than `before`, keeping the chain verifiable.
    pub async fn purge(
        &self,
        tenant: TenantId,
        before: Timestamp,
        caller: &Caller,
        now: Timestamp,
    ) -> ServiceResult<u64> {
        let make_event = |purged: u64, anchor_seq: i64| {
            caller.event(
                tenant,
                Operation::AuditPurge,
                None,
                now,
                serde_json::json!({"purged": purged, "before": before.to_rfc3339(), "anchorSequenceNumber": anchor_seq}),
            )
        };
        Ok(self
            .repo
            .purge_audit_events(tenant, before, &make_event)
            .await?)
    }

    /// Applies every tenant's retention; returns how many events were purged.
    pub async fn apply_retention(&self, now: Timestamp) -> ServiceResult<u64> {
        // A deleted tenant's trail keeps the retention the tenant had.
        let retained: Vec<(TenantId, Option<i32>)> = self
            .repo
            .load_tenants()
            .await?
            .into_iter()
            .map(|t| (t.id, t.audit_retention_days))
            .chain(
                self.repo
                    .deleted_tenants()
                    .await?
                    .into_iter()
                    .map(|t| (t.id, t.audit_retention_days)),
            )
            .collect();
        let mut purged = 0;
        for (tenant, days) in retained {
            if let Some(days) = days {
                let before = Timestamp::from_millis(now.millis() - i64::from(days) * 86_400_000);
                purged += self.purge(tenant, before, &Caller::system(), now).await?;
            }
        }
        Ok(purged)
    }

    pub fn repo(&self) -> &Arc<dyn Repository> {
        &self.repo
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether an anchor hash is the genesis (nothing purged).
pub fn is_genesis(hash: &[u8]) -> bool {
    hash == GENESIS
}

/// Records failed authentications without slowing the request that failed: events go through
/// a bounded queue to a writer that appends them in batches. When a flood fills the queue,
/// further events are counted and dropped rather than letting a client exhaust memory.
#[derive(Clone)]
pub struct FailureRecorder {
    queue: mpsc::Sender<AuditEvent>,
    dropped: Arc<AtomicU64>,
}

impl FailureRecorder {
    pub fn spawn(repo: Arc<dyn Repository>) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, mut receiver) = mpsc::channel::<AuditEvent>(10_000);
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(500);
            while receiver.recv_many(&mut batch, 500).await > 0 {
                if let Err(error) = repo.append_audit_events(&batch).await {
                    let error: &StoreError = &error;
                    tracing::error!(error = %error, events = batch.len(), "could not record failed authentications");
                }
                batch.clear();
            }
        });
        (
            Self {
                queue,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            task,
        )
    }

    pub fn record(&self, tenant: TenantId, reason: &str, origin: RequestOrigin, at: Timestamp) {
        let event = AuditEvent {
            tenant,
            occurred_at: at,
            actor: Actor::Anonymous,
            operation: Operation::AuthFailure,
            identity: None,
            outcome: Outcome::Failure,
            origin,
            details: serde_json::json!({"reason": reason}),
        };
        if self.queue.try_send(event).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "audit queue full: failed authentications not recorded"
                );
            }
        }
    }
}
