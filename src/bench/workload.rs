//! A whole run: the ceiling first, then each operation with what it needs prepared before
//! its phase (identities to read, tokens to introspect, identities to delete), so that setup
//! traffic never overlaps a measurement.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::StatusCode;

use super::client::Client;
use super::operation::{self, Operation};
use super::report::{Machine, OperationReport, Report, RunSettings};
use super::request::{Prepared, Signer};
use super::runner::{Phase, Pool, Source, excerpt};
use super::target::{Connector, Endpoint, host_header};

/// How many tokens `introspect-repeated` cycles over: few enough that a verifier's cache of
/// recently seen tokens holds them all.
const REPEATED_TOKENS: usize = 64;

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Plan {
    pub endpoint: Endpoint,
    pub access_key: Vec<u8>,
    /// Socket address to use instead of resolving the endpoint's host.
    pub connect_to: Option<String>,
    /// PEM certificates to trust for an https endpoint.
    pub ca_cert: std::path::PathBuf,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub operations: Vec<Operation>,
    pub timeout: Duration,
    /// Identities created for the operations that cycle over a pool.
    pub pool_identities: usize,
    /// Most requests prepared for an operation that uses each once (delete, distinct
    /// introspection).
    pub max_prepared: usize,
    /// After each operation, measure it again open-loop at half the rate it reached.
    pub half_load: bool,
    /// Measure each operation only open-loop at this rate, not at full load.
    pub rate: Option<f64>,
    /// Worker threads of the generator (for the report; the caller builds the runtime).
    pub threads: usize,
    /// Print what the run is doing to stderr.
    pub verbose: bool,
}

/// Runs the plan against the server and reports every operation, failed requests included
/// (the caller decides what failures mean).
pub async fn run(plan: &Plan) -> anyhow::Result<Report> {
    let connector =
        Arc::new(Connector::new(&plan.endpoint, plan.connect_to.as_deref(), &plan.ca_cert).await?);
    connector.check().await?;
    let signer = Arc::new(Signer::new(&plan.access_key, host_header(&plan.endpoint)?)?);
    let clients = (0..plan.connections.max(1))
        .map(|_| Client::new(connector.clone(), signer.clone(), plan.timeout))
        .collect();
    let machine = Machine::probe();
    let pool = Pool::connect(clients)
        .await
        .with_context(|| format!("connecting to {}", plan.endpoint.authority))?;
    let mut session = Session {
        plan,
        pool,
        ceiling: None,
        stable: None,
        introspection: None,
    };

    session.say("ceiling: GET /healthz");
    let phase = session
        .pool
        .load(
            Source::Fixed(operation::healthz()?),
            plan.warmup,
            plan.duration,
            None,
        )
        .await?;
    let ceiling = OperationReport::measured("healthz", &phase, None);
    session.ceiling = Some(ceiling.requests_per_second);

    let mut operations = Vec::new();
    for op in &plan.operations {
        if let Some(rate) = plan.rate {
            operations.push(session.measure(*op, Some(rate)).await?);
            continue;
        }
        let full = session.measure(*op, None).await?;
        let half = full.requests_per_second / 2.0;
        operations.push(full);
        if plan.half_load && half > 0.0 {
            operations.push(session.measure(*op, Some(half)).await?);
        }
    }
    Ok(Report {
        machine,
        settings: RunSettings {
            endpoint: format!(
                "{}://{}/",
                if plan.endpoint.https { "https" } else { "http" },
                plan.endpoint.authority
            ),
            connections: session.pool.connections(),
            duration_seconds: plan.duration.as_secs_f64(),
            warmup_seconds: plan.warmup.as_secs_f64(),
            threads: plan.threads,
        },
        ceiling,
        operations,
    })
}

struct Session<'a> {
    plan: &'a Plan,
    pool: Pool,
    ceiling: Option<f64>,
    /// Identities that live for the whole run (issue, get, introspect, audit).
    stable: Option<Vec<String>>,
    /// Whether the server has `/oauth2/introspect`, once probed.
    introspection: Option<bool>,
}

impl Session<'_> {
    fn say(&self, what: &str) {
        if self.plan.verbose {
            eprintln!("bench: {what}");
        }
    }

    /// Measures `op` at full load, or open-loop at `rate` requests per second.
    async fn measure(
        &mut self,
        op: Operation,
        rate: Option<f64>,
    ) -> anyhow::Result<OperationReport> {
        let Some(source) = self
            .prepare(op)
            .await
            .with_context(|| format!("preparing {}", op.name()))?
        else {
            self.say(&format!("{}: not available on this server", op.name()));
            return Ok(OperationReport::unavailable(op.name()));
        };
        let name = match rate {
            None => op.name().to_owned(),
            Some(rate) => format!("{} @ {rate:.0}/s", op.name()),
        };
        self.say(&format!("{name}: measuring"));
        let phase: Phase = self
            .pool
            .load(source, self.plan.warmup, self.plan.duration, rate)
            .await?;
        Ok(OperationReport::measured(&name, &phase, self.ceiling))
    }

    /// What `op` sends, or `None` when the server does not have its route.
    async fn prepare(&mut self, op: Operation) -> anyhow::Result<Option<Source>> {
        Ok(Some(match op {
            Operation::CreateIdentity => Source::Fixed(operation::create_identity(false)?),
            Operation::CreateIdentityWithToken => Source::Fixed(operation::create_identity(true)?),
            Operation::IssueToken => Source::Cycle(self.for_stable(operation::issue_token).await?),
            Operation::GetIdentity => {
                Source::Cycle(self.for_stable(operation::get_identity).await?)
            }
            Operation::AuditQuery => {
                let requests = self.for_stable(operation::audit_query).await?;
                if let Some(first) = requests.first()
                    && self.probe(first).await? == StatusCode::NOT_FOUND
                {
                    return Ok(None);
                }
                Source::Cycle(requests)
            }
            Operation::IntrospectDistinct | Operation::IntrospectRepeated => {
                if !self.introspection_available().await? {
                    return Ok(None);
                }
                let count = if op == Operation::IntrospectRepeated {
                    REPEATED_TOKENS
                } else {
                    self.prepared_count()
                };
                let tokens = self.tokens(count).await?;
                let requests = tokens
                    .iter()
                    .map(|t| operation::introspect(t))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                if op == Operation::IntrospectRepeated {
                    Source::Cycle(requests)
                } else {
                    Source::once(requests)
                }
            }
            Operation::Revoke => {
                // Its own identities: revoking the stable ones would make the tokens that
                // introspection checks inactive.
                let ids = self.create_identities(self.plan.pool_identities).await?;
                Source::Cycle(
                    ids.iter()
                        .map(|id| operation::revoke(id))
                        .collect::<anyhow::Result<_>>()?,
                )
            }
            Operation::Delete => {
                let ids = self.create_identities(self.prepared_count()).await?;
                Source::once(
                    ids.iter()
                        .map(|id| operation::delete(id))
                        .collect::<anyhow::Result<_>>()?,
                )
            }
            Operation::MixedWrites => {
                let issued_to = self.stable_ids().await?.to_vec();
                // Revoked identities of its own, as `revoke` has.
                let revoked = self.create_identities(issued_to.len()).await?;
                Source::Cycle(mixed_writes(&issued_to, &revoked)?)
            }
        }))
    }

    /// How many single-use requests to prepare: enough for the whole phase even at the
    /// ceiling's rate (no operation is faster than a trivial endpoint), within
    /// `--max-prepared`.
    fn prepared_count(&self) -> usize {
        let seconds = (self.plan.warmup + self.plan.duration).as_secs_f64();
        let at_ceiling = (self.ceiling.unwrap_or(0.0) * seconds * 1.1).ceil() as usize;
        at_ceiling
            .max(self.pool.connections() * 4)
            .min(self.plan.max_prepared.max(1))
    }

    async fn probe(&mut self, request: &Prepared) -> anyhow::Result<StatusCode> {
        match self.pool.send_one(request).await {
            Ok(answer) => Ok(answer.status),
            Err(failure) => bail!(
                "probing {} {}: {}",
                request.method,
                request.path_and_query(),
                failure.key()
            ),
        }
    }

    async fn introspection_available(&mut self) -> anyhow::Result<bool> {
        if let Some(known) = self.introspection {
            return Ok(known);
        }
        let token = self.tokens(1).await?;
        let probe = operation::introspect(&token[0])?;
        let available = match self.pool.send_one(&probe).await {
            Ok(answer) if answer.status == StatusCode::NOT_FOUND => false,
            Ok(answer) => {
                let active = serde_json::from_slice::<serde_json::Value>(&answer.body)
                    .ok()
                    .and_then(|v| v.get("active").and_then(serde_json::Value::as_bool));
                if answer.status == StatusCode::OK && active != Some(true) {
                    self.say(&format!(
                        "warning: a fresh token introspected as {}",
                        excerpt(&answer.body)
                    ));
                }
                true
            }
            Err(failure) => bail!("probing POST /oauth2/introspect: {}", failure.key()),
        };
        self.introspection = Some(available);
        Ok(available)
    }

    /// Requests built by `make` for every stable identity (created on first use).
    async fn for_stable(
        &mut self,
        make: fn(&str) -> anyhow::Result<Prepared>,
    ) -> anyhow::Result<Vec<Prepared>> {
        self.stable_ids().await?.iter().map(|id| make(id)).collect()
    }

    async fn stable_ids(&mut self) -> anyhow::Result<&[String]> {
        if self.stable.is_none() {
            let ids = self.create_identities(self.plan.pool_identities).await?;
            self.stable = Some(ids);
        }
        Ok(self.stable.as_deref().unwrap_or_default())
    }

    async fn create_identities(&mut self, count: usize) -> anyhow::Result<Vec<String>> {
        self.say(&format!("setup: creating {count} identities"));
        let request = operation::create_identity(false)?;
        let bodies = self.pool.setup(vec![request; count.max(1)]).await?;
        bodies
            .iter()
            .map(|body| field(body, &["identity", "id"]))
            .collect()
    }

    /// `count` fresh tokens, issued round-robin to the stable identities.
    async fn tokens(&mut self, count: usize) -> anyhow::Result<Vec<String>> {
        let ids = self.stable_ids().await?.to_vec();
        self.say(&format!("setup: issuing {count} tokens"));
        let requests = (0..count.max(1))
            .map(|i| operation::issue_token(&ids[i % ids.len()]))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bodies = self.pool.setup(requests).await?;
        bodies.iter().map(|body| field(body, &["token"])).collect()
    }
}

/// `MIXED_WRITES` once for each of `issued_to` (the identities tokens are issued to) and
/// `revoked` (as many, whose tokens are revoked), in that order.
fn mixed_writes(issued_to: &[String], revoked: &[String]) -> anyhow::Result<Vec<Prepared>> {
    let mut requests = Vec::with_capacity(issued_to.len() * operation::MIXED_WRITES.len());
    for (issued_to, revoked) in issued_to.iter().zip(revoked) {
        for op in operation::MIXED_WRITES {
            requests.push(match op {
                Operation::IssueToken => operation::issue_token(issued_to)?,
                Operation::Revoke => operation::revoke(revoked)?,
                Operation::CreateIdentity => operation::create_identity(false)?,
                Operation::CreateIdentityWithToken => operation::create_identity(true)?,
                other => bail!("{} is not one of the mixed writes", other.name()),
            });
        }
    }
    Ok(requests)
}

/// A string at `path` in a JSON body.
fn field(body: &Bytes, path: &[&str]) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .with_context(|| format!("the server answered non-JSON: {}", excerpt(body)))?;
    let mut at = &value;
    for key in path {
        at = &at[key];
    }
    at.as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {} in {}", path.join("."), excerpt(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_writes_repeat_the_round_for_every_identity() {
        let issued_to = ["8:acs:t_a".to_owned(), "8:acs:t_b".to_owned()];
        let revoked = ["8:acs:t_r".to_owned(), "8:acs:t_s".to_owned()];
        let requests = mixed_writes(&issued_to, &revoked).expect("requests");
        assert_eq!(requests.len(), 2 * operation::MIXED_WRITES.len());
        let paths: Vec<&str> = requests.iter().map(|r| r.path_and_query()).collect();
        let count = |needle: &str| paths.iter().filter(|p| p.contains(needle)).count();
        assert_eq!(count("t_a/:issueAccessToken"), 6);
        assert_eq!(count("t_b/:issueAccessToken"), 6);
        assert_eq!(count("t_r/:revokeAccessTokens"), 1);
        assert_eq!(count("t_s/:revokeAccessTokens"), 1);
        assert_eq!(count("/identities?"), 6);
        let with_token = requests
            .iter()
            .filter(|r| r.body.starts_with(b"{\"createTokenWithScopes\""))
            .count();
        assert_eq!(with_token, 2);
    }
}
