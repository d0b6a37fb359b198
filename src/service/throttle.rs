//! Per-tenant throttling: a rate limit per operation and a cap on requests in flight, so one
//! tenant cannot use up what the others need.
//!
//! Rate limits use `governor`'s GCRA limiters, a well-kept implementation of the generic cell
//! rate algorithm: one atomic compare-and-swap per check, no background timer, and the time to
//! wait when a request is refused (the `Retry-After` answer). `N/period` is a bucket of `N`
//! requests that refills evenly over the period, so a tenant may burst up to `N` and then gets
//! one request every `period / N`.
//!
//! A tenant's throttle outlives reloads of the directory: the directory hands the same
//! [`TenantThrottle`] to the tenant's new snapshot and only swaps the limiters whose limit
//! changed, so a reload (caused by any tenant's change) neither resets counters nor loses
//! requests in flight. The state is per server instance: N instances admit up to N times a
//! limit.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::{LimitTable, LimitedOperation, RateLimit};

/// How a deployment throttles each tenant, unless the tenant says otherwise.
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// Limits of operations a tenant sets nothing for.
    pub default_limits: LimitTable,
    /// Requests of one tenant being handled at once; more are refused with 429.
    pub max_in_flight: u32,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            default_limits: LimitTable::acs_defaults(),
            max_in_flight: 256,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// The operation's rate limit is used up; capacity returns after the duration.
    RateLimited(LimitedOperation, RateLimit, Duration),
    /// Too many of the tenant's requests are in flight.
    TooManyInFlight(u32),
}

impl Throttled {
    /// Whole seconds to wait, at least one: what `Retry-After` says.
    pub fn retry_after_seconds(&self) -> u64 {
        match self {
            Throttled::RateLimited(_, _, wait) => {
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            }
            Throttled::TooManyInFlight(_) => 1,
        }
        .max(1)
    }
}

struct Limiter {
    limit: RateLimit,
    state: Arc<DefaultDirectRateLimiter>,
}

/// One tenant's limiters and in-flight cap.
pub struct TenantThrottle {
    limiters: ArcSwap<Vec<Option<Limiter>>>,
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
}

impl std::fmt::Debug for TenantThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantThrottle")
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

impl TenantThrottle {
    pub fn new(settings: &ThrottleSettings, limits: &LimitTable) -> Self {
        let throttle = Self {
            limiters: ArcSwap::from_pointee(Vec::new()),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1) as usize)),
            max_in_flight: settings.max_in_flight.max(1),
        };
        throttle.apply(settings, limits);
        throttle
    }

    /// Brings the limiters in line with `limits` (over `settings`' defaults), keeping the
    /// state of every limiter whose limit did not change.
    pub fn apply(&self, settings: &ThrottleSettings, limits: &LimitTable) {
        let current = self.limiters.load();
        let next: Vec<Option<Limiter>> = LimitedOperation::ALL
            .iter()
            .map(|op| {
                let limit = limits.effective(*op, &settings.default_limits)?;
                match current.get(op.index()).and_then(Option::as_ref) {
                    Some(existing) if existing.limit == limit => Some(Limiter {
                        limit,
                        state: existing.state.clone(),
                    }),
                    _ => Some(Limiter {
                        limit,
                        state: Arc::new(RateLimiter::direct(quota(limit))),
                    }),
                }
            })
            .collect();
        self.limiters.store(Arc::new(next));
    }

    /// Counts one request of `op`, or says how long to wait.
    pub fn check(&self, op: LimitedOperation) -> Result<(), Throttled> {
        let limiters = self.limiters.load();
        let Some(Some(limiter)) = limiters.get(op.index()) else {
            return Ok(());
        };
        limiter.state.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.state.clock().now());
            Throttled::RateLimited(op, limiter.limit, wait)
        })
    }

    /// A place among the tenant's requests in flight, held until the permit is dropped.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Throttled> {
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Throttled::TooManyInFlight(self.max_in_flight))
    }
}

/// `N` per period as a GCRA quota: a burst of `N`, one more every `period / N`.
fn quota(limit: RateLimit) -> Quota {
    let every = limit.period() / limit.requests().get();
    // A period of at least 1 s over at most 10^7 requests is at least 100 µs, never zero.
    Quota::with_period(every.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(limit.requests()))
        .allow_burst(limit.requests())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> LimitTable {
        text.parse().expect("limits")
    }

    #[test]
    fn a_limit_admits_its_burst_then_says_how_long_to_wait() {
        let settings = ThrottleSettings::default();
        let throttle = TenantThrottle::new(&settings, &table("issue_token=3/30s"));
        for _ in 0..3 {
            assert_eq!(throttle.check(LimitedOperation::IssueToken), Ok(()));
        }
        let refused = throttle
            .check(LimitedOperation::IssueToken)
            .expect_err("fourth is refused");
        // One request comes back every 10 s.
        assert!(
            (9..=10).contains(&refused.retry_after_seconds()),
            "{refused:?}"
        );
        // Other operations have their own budgets; unlimited ones are never refused.
        assert_eq!(throttle.check(LimitedOperation::CreateIdentity), Ok(()));
        for _ in 0..100 {
            assert_eq!(throttle.check(LimitedOperation::GetIdentity), Ok(()));
        }
    }

    #[test]
    fn applying_the_same_limits_keeps_the_count_and_a_change_resets_it() {
        let settings = ThrottleSettings::default();
        let limits = table("issue_token=2/30s");
        let throttle = TenantThrottle::new(&settings, &limits);
        throttle.check(LimitedOperation::IssueToken).expect("1");
        throttle.check(LimitedOperation::IssueToken).expect("2");
        throttle.apply(&settings, &limits);
        assert!(throttle.check(LimitedOperation::IssueToken).is_err());
        throttle.apply(&settings, &table("issue_token=none"));
        for _ in 0..10 {
            assert_eq!(throttle.check(LimitedOperation::IssueToken), Ok(()));
        }
    }

    #[test]
    fn the_in_flight_cap_frees_a_place_when_a_request_ends() {
        let settings = ThrottleSettings {
            max_in_flight: 2,
            ..ThrottleSettings::default()
        };
        let throttle = TenantThrottle::new(&settings, &LimitTable::default());
        let first = throttle.admit().expect("1");
        let _second = throttle.admit().expect("2");
        assert_eq!(
            throttle.admit().map(drop),
            Err(Throttled::TooManyInFlight(2))
        );
        drop(first);
        assert!(throttle.admit().is_ok());
    }
}
