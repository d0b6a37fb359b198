//! The revocation state every introspection checks, kept in memory: for each identity that has
//! been revoked or deleted, its revocation watermark and whether it is a tombstone.
//!
//! Introspection is the hottest call of a deployment, so it never reads the database. The
//! state stays correct in three ways:
//! - at start, [`RevocationIndex::load`] reads every watermark recent enough to matter;
//! - a revoke or delete made through this server is applied by the same code path that answers
//!   204 ([`RevocationIndex::apply`]), before the answer leaves;
//! - a change made elsewhere (another instance, the CLI) reaches the identity change log in the
//!   transaction that made it, and [`RevocationIndex::poll`] applies the log's new rows every
//!   refresh interval.
//!
//! Marks only ever grow (a watermark moves forward, a tombstone stays one), so applying the same
//! change twice, or changes in any order, gives the same state.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use tokio::sync::Mutex;

use crate::domain::{ExpiryMinutes, IdentityId, Timestamp};
use crate::store::{Repository, RevocationMark, StoreResult};

/// How long a mark matters after its watermark. A token lives at most a day, so one issued at
/// or before the watermark has expired a day after it; the extra hour covers a token minted
/// by an instance whose clock runs ahead of the one that deleted its identity.
pub const MARK_RETENTION_MS: i64 = (ExpiryMinutes::MAX + 60) * 60_000;

/// Changes read from the log per query.
const POLL_BATCH: i64 = 1_000;

/// Independent locks, so concurrent introspections rarely touch the same one.
const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    revoked_before: Timestamp,
    deleted: bool,
}

/// What the revocation state says about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationStatus {
    Live,
    /// Issued at or before its identity's watermark. A token issued in the very millisecond
    /// of a revocation counts as revoked: its order against the revocation is unknown.
    Revoked,
    /// Its identity is deleted.
    Deleted,
}

pub struct RevocationIndex {
    shards: Vec<RwLock<HashMap<IdentityId, Mark>>>,
    /// The sequence number of the last change-log row applied; held while polling so two polls
    /// never interleave.
    applied: Mutex<i64>,
}

impl std::fmt::Debug for RevocationIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationIndex")
            .field("marks", &self.len())
            .finish_non_exhaustive()
    }
}

impl RevocationIndex {
    /// An index that knows of no revocation and has applied no change (for tests).
    pub fn empty() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            applied: Mutex::new(0),
        }
    }

    /// Reads every mark that still matters at `now`, and where the change log stands.
    pub async fn load(repo: &dyn Repository, now: Timestamp) -> StoreResult<Self> {
        let index = Self::empty();
        let (head, marks) = repo
            .load_revocation_marks(Timestamp::from_millis(now.millis() - MARK_RETENTION_MS))
            .await?;
        for mark in marks {
            index.apply(mark);
        }
        *index.applied.lock().await = head;
        Ok(index)
    }

    fn shard(&self, identity: &IdentityId) -> &RwLock<HashMap<IdentityId, Mark>> {
        // Identity UUIDs are v7: their low bits are random.
        let slot = (identity.local().as_u128() % SHARDS as u128) as usize;
        &self.shards[slot]
    }

    /// Merges a revoke or delete into the state.
    pub fn apply(&self, mark: RevocationMark) {
        let mut shard = self
            .shard(&mark.identity)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = shard.entry(mark.identity).or_insert(Mark {
            revoked_before: mark.tokens_revoked_before,
            deleted: mark.deleted,
        });
        entry.revoked_before = entry.revoked_before.max(mark.tokens_revoked_before);
        entry.deleted |= mark.deleted;
    }

    /// Whether a token of `identity` issued at `issued_at` (its `jti` time, to the
    /// millisecond) is still live.
    pub fn status(&self, identity: IdentityId, issued_at: Timestamp) -> RevocationStatus {
        let shard = self
            .shard(&identity)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match shard.get(&identity) {
            None => RevocationStatus::Live,
            Some(mark) if mark.deleted => RevocationStatus::Deleted,
            Some(mark) if issued_at <= mark.revoked_before => RevocationStatus::Revoked,
            Some(_) => RevocationStatus::Live,
        }
    }

    /// Applies the change-log rows written since the last poll; returns how many it applied.
    /// If rows it needed were pruned already (it fell more than the log keeps behind), it
    /// reloads every mark from the identities instead.
    pub async fn poll(&self, repo: &dyn Repository, now: Timestamp) -> StoreResult<usize> {
        let mut applied = self.applied.lock().await;
        let mut count = 0;
        loop {
            let changes = repo.identity_changes_after(*applied, POLL_BATCH).await?;
            if let Some(first) = changes.first()
                && first.seq != *applied + 1
            {
                tracing::warn!(
                    applied = *applied,
                    next = first.seq,
                    "the identity change log was pruned past this server; reloading revocations"
                );
                let (head, marks) = repo
                    .load_revocation_marks(Timestamp::from_millis(now.millis() - MARK_RETENTION_MS))
                    .await?;
                count += marks.len();
                for mark in marks {
                    self.apply(mark);
                }
                *applied = head;
                continue;
            }
            for change in &changes {
                self.apply(change.mark);
                *applied = change.seq;
            }
            count += changes.len();
            if (changes.len() as i64) < POLL_BATCH {
                return Ok(count);
            }
        }
    }

    /// Forgets marks that no longer matter at `now`: every token they revoke has expired.
    /// Returns how many it dropped.
    pub fn prune(&self, now: Timestamp) -> usize {
        let mut dropped = 0;
        for shard in &self.shards {
            let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
            let before = shard.len();
            shard.retain(|_, mark| now.millis() < mark.revoked_before.millis() + MARK_RETENTION_MS);
            dropped += before - shard.len();
        }
        dropped
    }

    /// How many identities have a mark.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantId;

    fn mark(identity: IdentityId, at: i64, deleted: bool) -> RevocationMark {
        RevocationMark {
            identity,
            tokens_revoked_before: Timestamp::from_millis(at),
            deleted,
        }
    }

    #[test]
    fn tokens_up_to_and_including_the_watermark_are_revoked() {
        let index = RevocationIndex::empty();
        let alice = IdentityId::generate(TenantId::generate());
        let bob = IdentityId::generate(TenantId::generate());
        index.apply(mark(alice, 1_000, false));
        let status = |id, at| index.status(id, Timestamp::from_millis(at));
        assert_eq!(status(alice, 999), RevocationStatus::Revoked);
        assert_eq!(status(alice, 1_000), RevocationStatus::Revoked);
        assert_eq!(status(alice, 1_001), RevocationStatus::Live);
        assert_eq!(status(bob, 1), RevocationStatus::Live);
    }

    #[test]
    fn marks_merge_in_any_order_and_never_move_back() {
        let alice = IdentityId::generate(TenantId::generate());
        let changes = [
            mark(alice, 2_000, false),
            mark(alice, 1_000, false),
            mark(alice, 1_500, true),
        ];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 0, 1]] {
            let index = RevocationIndex::empty();
            for i in order {
                index.apply(changes[i]);
            }
            let tombstone = order.contains(&2);
            let expected = if tombstone {
                RevocationStatus::Deleted
            } else {
                RevocationStatus::Live
            };
            assert_eq!(
                index.status(alice, Timestamp::from_millis(2_001)),
                expected,
                "{order:?}"
            );
            assert_ne!(
                index.status(alice, Timestamp::from_millis(2_000)),
                RevocationStatus::Live,
                "{order:?}"
            );
        }
    }

    #[test]
    fn marks_are_pruned_once_every_token_they_revoke_has_expired() {
        let index = RevocationIndex::empty();
        let old = IdentityId::generate(TenantId::generate());
        let recent = IdentityId::generate(TenantId::generate());
        index.apply(mark(old, 0, true));
        index.apply(mark(recent, 10_000, false));
        assert_eq!(
            index.prune(Timestamp::from_millis(MARK_RETENTION_MS - 1)),
            0
        );
        assert_eq!(index.prune(Timestamp::from_millis(MARK_RETENTION_MS)), 1);
        assert_eq!(index.len(), 1);
        assert_eq!(
            index.status(recent, Timestamp::from_millis(10_000)),
            RevocationStatus::Revoked
        );
    }
}
