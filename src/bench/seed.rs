//! `callsign bench --seed`: bulk-loads identities and issued-token records straight into the
//! database, so that the operations can be measured on a database of production size.
//!
//! The rows look like the server's own: ids are UUIDv7 whose time is the row's creation
//! (identities) or issue time (token `jti`s), times are milliseconds since the epoch, every
//! token belongs to a live identity of the tenant, and each identity's `last_token_issued_at`
//! is its newest token's issue time. Identities were created over the 60 to 30 days before
//! the seed and their tokens issued over the 30 days after that, round-robin, each valid for
//! 24 hours; identity `n` has the external id `bench-<n>-<its uuid>`.

use std::time::Instant;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use uuid::{Builder, Uuid};

use crate::domain::{IdentityId, TenantId, Timestamp};
use crate::store::{IdentityRecord, Repository, TokenRecord};

/// Rows per repository call (one transaction each): large enough that commits cost nothing,
/// small enough to show progress and to keep a call's memory in the tens of megabytes.
const CHUNK: usize = 50_000;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// What to seed.
#[derive(Debug, Clone, Copy)]
pub struct SeedPlan {
    pub tenant: TenantId,
    pub identities: u64,
    pub tokens: u64,
}

/// What was seeded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seeded {
    pub identities: u64,
    pub tokens: u64,
    pub seconds: f64,
}

/// Times of the seeded rows, fixed from one `now`.
struct Timeline {
    identities_from: i64,
    tokens_from: i64,
    span: i64,
    identities: u64,
    tokens: u64,
}

impl Timeline {
    fn new(now: Timestamp, identities: u64, tokens: u64) -> Self {
        Self {
            identities_from: now.millis() - 60 * DAY_MS,
            tokens_from: now.millis() - 30 * DAY_MS,
            span: 30 * DAY_MS,
            identities,
            tokens,
        }
    }

    fn spread(from: i64, span: i64, index: u64, count: u64) -> i64 {
        let offset = i128::from(span) * i128::from(index) / i128::from(count.max(1));
        from + offset as i64
    }

    fn identity_created(&self, n: u64) -> i64 {
        Self::spread(self.identities_from, self.span, n, self.identities)
    }

    fn token_issued(&self, i: u64) -> i64 {
        Self::spread(self.tokens_from, self.span, i, self.tokens)
    }

    /// Token `i` belongs to identity `i % identities`, so identity `n`'s newest token is the
    /// last index of that residue below `tokens`.
    fn last_token_of(&self, n: u64) -> Option<i64> {
        (n < self.tokens).then(|| {
            let last = n + (self.tokens - 1 - n) / self.identities * self.identities;
            self.token_issued(last)
        })
    }
}

/// A UUIDv7 for `millis`, random in its other bits, as `Uuid::now_v7` makes them.
fn uuid_v7_at(millis: i64) -> Uuid {
    let random: [u8; 10] = rand::random();
    Builder::from_unix_timestamp_millis(u64::try_from(millis).unwrap_or(0), &random).into_uuid()
}

/// A progress bar on stderr when it is a terminal, nothing otherwise.
pub fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{bar:40}] {human_pos}/{human_len} rows, {per_sec}, eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Seeds `plan` into `repo`, advancing `progress` by the rows written.
pub async fn seed(
    repo: &dyn Repository,
    plan: SeedPlan,
    progress: &ProgressBar,
) -> anyhow::Result<Seeded> {
    if plan.identities == 0 && plan.tokens > 0 {
        bail!("tokens need identities to belong to: give --identities too");
    }
    let started = Instant::now();
    let timeline = Timeline::new(Timestamp::now(), plan.identities, plan.tokens);
    let capacity = usize::try_from(plan.identities).unwrap_or(usize::MAX);
    let mut ids: Vec<Uuid> = Vec::with_capacity(capacity);

    progress.set_message("identities");
    let mut n = 0u64;
    while n < plan.identities {
        let chunk_end = (n + CHUNK as u64).min(plan.identities);
        let chunk: Vec<IdentityRecord> = (n..chunk_end)
            .map(|n| {
                let created = timeline.identity_created(n);
                let local = uuid_v7_at(created);
                ids.push(local);
                IdentityRecord {
                    id: IdentityId::from_parts(plan.tenant, local),
                    external_id: Some(format!("bench-{n}-{}", local.simple())),
                    created_at: Timestamp::from_millis(created),
                    last_token_issued_at: timeline.last_token_of(n).map(Timestamp::from_millis),
                    tokens_revoked_before: None,
                }
            })
            .collect();
        repo.bulk_insert_identities(&chunk).await?;
        progress.inc(chunk_end - n);
        n = chunk_end;
    }

    progress.set_message("tokens");
    let mut i = 0u64;
    while i < plan.tokens {
        let chunk_end = (i + CHUNK as u64).min(plan.tokens);
        let chunk: Vec<TokenRecord> = (i..chunk_end)
            .map(|i| {
                let issued = timeline.token_issued(i);
                let owner = ids[usize::try_from(i % plan.identities).unwrap_or(0)];
                TokenRecord {
                    jti: uuid_v7_at(issued),
                    identity: IdentityId::from_parts(plan.tenant, owner),
                    scopes: if i % 2 == 0 { "chat" } else { "chat,voip" }.to_owned(),
                    issued_at: Timestamp::from_millis(issued),
                    expires_at: Timestamp::from_millis(issued + DAY_MS),
                }
            })
            .collect();
        repo.bulk_insert_token_records(&chunk).await?;
        progress.inc(chunk_end - i);
        i = chunk_end;
    }

    progress.set_message("vacuum");
    repo.finish_bulk_load().await?;
    progress.finish_and_clear();
    Ok(Seeded {
        identities: plan.identities,
        tokens: plan.tokens,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_identity_knows_its_newest_token() {
        let timeline = Timeline::new(Timestamp::from_millis(100 * DAY_MS), 3, 7);
        // Tokens 0..7 go to identities 0,1,2,0,1,2,0.
        assert_eq!(timeline.last_token_of(0), Some(timeline.token_issued(6)));
        assert_eq!(timeline.last_token_of(1), Some(timeline.token_issued(4)));
        assert_eq!(timeline.last_token_of(2), Some(timeline.token_issued(5)));
        let few = Timeline::new(Timestamp::from_millis(100 * DAY_MS), 5, 2);
        assert_eq!(few.last_token_of(1), Some(few.token_issued(1)));
        assert_eq!(few.last_token_of(2), None);
    }

    #[test]
    fn times_are_in_order_and_in_the_past() {
        let now = Timestamp::from_millis(100 * DAY_MS);
        let timeline = Timeline::new(now, 1_000_000, 10_000_000);
        assert!(timeline.identity_created(999_999) < timeline.token_issued(0));
        assert!(timeline.token_issued(0) < timeline.token_issued(1));
        assert!(timeline.token_issued(9_999_999) < now.millis());
    }

    #[test]
    fn ids_are_uuid_v7_carrying_their_time() {
        let id = uuid_v7_at(1_700_000_000_123);
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().expect("v7 has a time").to_unix();
        assert_eq!((secs, nanos / 1_000_000), (1_700_000_000, 123));
    }
}
