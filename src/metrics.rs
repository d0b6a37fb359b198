//! Prometheus metrics, served at `GET /metrics` in the text exposition format.
//!
//! Built on the `prometheus` crate (the Rust client the TiKV project maintains) with its
//! default features off, which leaves a small dependency set. Unlike a global recorder
//! (the `metrics` facade), each server instance owns its own `Registry`, so two instances in
//! one process (as the tests run them) keep separate counts.
//!
//! Labels are bounded on purpose: routes are their patterns (`/identities/{id}`), never raw
//! paths, and no metric is labelled by tenant, identity or credential.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::service::verification::CacheUse;
use crate::store::PoolStats;

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    tokens_issued: IntCounter,
    auth_failures: IntCounterVec,
    throttled: IntCounterVec,
    token_batch_size: Histogram,
    batch_commit_duration: Histogram,
    introspection_cache: IntCounterVec,
    db_connections: IntGaugeVec,
    db_max_connections: IntGauge,
    tenants: IntGauge,
    operator_credentials: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new_custom(Some("callsign".to_owned()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from a request's arrival to its response, by route and method.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route", "method"],
        )?;
        let tokens_issued = IntCounter::new("tokens_issued_total", "Access tokens issued.")?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "auth_failures_total",
                "Requests refused for their credentials: plane is acs (HMAC) or admin (operator).",
            ),
            &["plane"],
        )?;
        let throttled = IntCounterVec::new(
            Opts::new(
                "throttled_requests_total",
                "Requests refused with 429, by reason (an operation's rate limit, in_flight, operator_auth).",
            ),
            &["reason"],
        )?;
        let token_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "token_batch_size",
                "Writes (identities, tokens, revocations, deletions) committed per group-commit transaction.",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
        )?;
        let batch_commit_duration = Histogram::with_opts(
            HistogramOpts::new(
                "batch_commit_duration_seconds",
                "Time a group-commit batch takes from its first statement to its commit.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 1.0,
            ]),
        )?;
        let introspection_cache = IntCounterVec::new(
            Opts::new(
                "introspection_cache_total",
                "Introspections by whether the token's verification was cached (hit, miss).",
            ),
            &["result"],
        )?;
        let db_connections = IntGaugeVec::new(
            Opts::new(
                "db_pool_connections",
                "Database pool connections, by state (in_use, idle).",
            ),
            &["state"],
        )?;
        let db_max_connections = IntGauge::new(
            "db_pool_max_connections",
            "Largest size of the database pool.",
        )?;
        let tenants = IntGauge::new("tenants", "Tenants this instance serves.")?;
        let operator_credentials = IntGauge::new(
            "operator_credentials",
            "Operator credentials this instance accepts (active ones, as last reloaded).",
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(tokens_issued.clone()))?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(throttled.clone()))?;
        registry.register(Box::new(token_batch_size.clone()))?;
        registry.register(Box::new(batch_commit_duration.clone()))?;
        registry.register(Box::new(introspection_cache.clone()))?;
        registry.register(Box::new(db_connections.clone()))?;
        registry.register(Box::new(db_max_connections.clone()))?;
        registry.register(Box::new(tenants.clone()))?;
        registry.register(Box::new(operator_credentials.clone()))?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            tokens_issued,
            auth_failures,
            throttled,
            token_batch_size,
            batch_commit_duration,
            introspection_cache,
            db_connections,
            db_max_connections,
            tenants,
            operator_credentials,
        })
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        self.http_requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        self.http_duration
            .with_label_values(&[route, method])
            .observe(seconds);
    }

    pub fn token_issued(&self) {
        self.tokens_issued.inc();
    }

    pub fn auth_failure(&self, plane: &str) {
        self.auth_failures.with_label_values(&[plane]).inc();
    }

    pub fn throttled(&self, reason: &str) {
        self.throttled.with_label_values(&[reason]).inc();
    }

    pub fn token_batch(&self, size: usize, commit: std::time::Duration) {
        self.token_batch_size.observe(size as f64);
        self.batch_commit_duration.observe(commit.as_secs_f64());
    }

    pub fn introspection(&self, cache: CacheUse) {
        let result = match cache {
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
        };
        self.introspection_cache.with_label_values(&[result]).inc();
    }

    /// The text exposition of every metric, with the gauges read now.
    pub fn render(
        &self,
        pool: PoolStats,
        tenants: usize,
        operator_credentials: usize,
    ) -> anyhow::Result<String> {
        let idle = i64::from(pool.idle.min(pool.size));
        self.db_connections
            .with_label_values(&["in_use"])
            .set(i64::from(pool.size) - idle);
        self.db_connections.with_label_values(&["idle"]).set(idle);
        self.db_max_connections.set(i64::from(pool.max));
        self.tenants.set(i64::try_from(tenants).unwrap_or(i64::MAX));
        self.operator_credentials
            .set(i64::try_from(operator_credentials).unwrap_or(i64::MAX));
        Ok(TextEncoder::new().encode_to_string(&self.registry.gather())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_text_names_every_family() {
        let metrics = Metrics::new().expect("metrics");
        metrics.observe_request("/identities/{id}", "GET", 404, 0.002);
        metrics.token_issued();
        metrics.auth_failure("acs");
        metrics.throttled("issue_token");
        metrics.token_batch(3, std::time::Duration::from_millis(2));
        metrics.introspection(CacheUse::Hit);
        let text = metrics
            .render(
                PoolStats {
                    size: 3,
                    idle: 1,
                    max: 8,
                },
                2,
                1,
            )
            .expect("render");
        for expected in [
            "callsign_http_requests_total{method=\"GET\",route=\"/identities/{id}\",status=\"404\"} 1",
            "callsign_http_request_duration_seconds_bucket",
            "callsign_tokens_issued_total 1",
            "callsign_auth_failures_total{plane=\"acs\"} 1",
            "callsign_throttled_requests_total{reason=\"issue_token\"} 1",
            "callsign_token_batch_size_count 1",
            "callsign_batch_commit_duration_seconds_bucket{le=\"0.002\"} 1",
            "callsign_introspection_cache_total{result=\"hit\"} 1",
            "callsign_db_pool_connections{state=\"in_use\"} 2",
            "callsign_db_pool_max_connections 8",
            "callsign_tenants 2",
            "callsign_operator_credentials 1",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}
