//! `callsign bench`: a load generator for a running callsign server, and a seeder that makes
//! its database large.
//!
//! The generator opens N keep-alive connections and, per operation, has each send one signed
//! request at a time (a fresh `x-ms-date` each, as the SDKs do) for a warm-up and then a
//! measured window. It first measures the server's ceiling, `GET /healthz` under the same
//! load, and reports every operation's throughput also as a ratio to it: on a shared,
//! noisy machine absolute figures drift from run to run, the ratio much less.
//!
//! Module map: `target` (connection string, TCP/TLS), `request` (prepared requests and the
//! HMAC signature), `client` (one connection), `runner` (phases over all connections),
//! `operation` (what each operation sends), `workload` (a whole run), `stats` and `report`
//! (figures, table, JSON), `seed` (bulk load).

mod client;
mod operation;
mod report;
mod request;
mod runner;
pub mod seed;
mod stats;
mod target;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use crate::config::Settings;

pub use operation::Operation;
pub use report::{OperationReport, Report};
pub use target::{ConnectionString, Endpoint};
pub use workload::{Plan, run};

/// `callsign bench` flags, under headings of their own so that `--help` shows them apart
/// from the server settings every command takes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Load generator")]
pub struct BenchArgs {
    /// Connection string of the tenant to load: endpoint=https://host:port/;accesskey=…
    /// (e.g. the content of <data dir>/default-connection-string.txt).
    #[arg(
        long,
        env = "CALLSIGN_BENCH_CONNECTION_STRING",
        hide_env_values = true,
        required_unless_present = "seed"
    )]
    pub connection_string: Option<String>,

    /// Send to this endpoint instead of the connection string's, e.g. http://127.0.0.1:8080/
    /// for the plain-HTTP listener. Its host is what requests are signed for.
    #[arg(long)]
    pub endpoint: Option<String>,

    /// Connect to this host:port instead of resolving the endpoint's host (the Host header
    /// and TLS name stay the endpoint's), to reach a tenant's host name on this machine.
    #[arg(long)]
    pub connect_to: Option<String>,

    /// PEM certificate(s) to trust for an https endpoint [default: <data dir>/tls/cert.pem].
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,

    /// Concurrent keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,

    /// Measured time per operation: seconds, or with a unit (500ms, 2s, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Unmeasured load before each operation's measured time.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Operations to measure, comma-separated, in order [default: all]. The ceiling
    /// (GET /healthz) is always measured first.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub operations: Vec<Operation>,

    /// Longest wait for one answer before it counts as a timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Threads of the load generator. One is usually best when it shares the machine with
    /// the server.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,

    /// Identities created to cycle over (issue, get, audit; revoke has as many of its own).
    #[arg(long, default_value_t = 1000)]
    pub pool_identities: usize,

    /// Most requests prepared for an operation that uses each only once (delete, distinct
    /// introspection); when they run out, its measurement ends early and says so.
    #[arg(long, default_value_t = 100_000)]
    pub max_prepared: usize,

    /// After each operation, measure it again at half the rate it just reached, open loop
    /// (requests leave on a fixed schedule whatever the answers; an overdue request's latency
    /// counts from when it was due): the latency of a server at half its maximum load.
    #[arg(long)]
    pub half_load: bool,

    /// Measure each operation only open loop at this many requests per second, instead of at
    /// full load: the latency of a server at a load you choose, comparable between builds and
    /// machines whatever their maximum.
    #[arg(long, value_parser = parse_rate, conflicts_with = "half_load")]
    pub rate: Option<f64>,

    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,

    /// Instead of a load run: bulk-load --identities and --tokens straight into the database
    /// (CALLSIGN_DATABASE_URL), for measuring on a large database.
    #[arg(help_heading = "Seeding (--seed)")]
    #[arg(long)]
    pub seed: bool,

    /// Identities to seed.
    #[arg(help_heading = "Seeding (--seed)")]
    #[arg(long, requires = "seed", default_value_t = 0)]
    pub identities: u64,

    /// Issued-token records to seed, spread round-robin over the seeded identities.
    #[arg(help_heading = "Seeding (--seed)")]
    #[arg(long, requires = "seed", default_value_t = 0)]
    pub tokens: u64,

    /// Tenant (name or id) to seed into [default: the default tenant].
    #[arg(help_heading = "Seeding (--seed)")]
    #[arg(long, requires = "seed")]
    pub tenant: Option<String>,
}

/// Parses `2`, `1.5`, `2s`, `500ms` or `1m`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let (number, scale) = if let Some(n) = value.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('m') {
        (n, 60.0)
    } else {
        (value, 1.0)
    };
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a duration (e.g. 10s, 500ms, 1m)"))?;
    if !number.is_finite() || number < 0.0 {
        return Err(format!("{value:?} is not a duration"));
    }
    Duration::try_from_secs_f64(number * scale).map_err(|e| e.to_string())
}

/// The rates `--rate` takes, in requests per second. Each connection waits
/// `connections / rate` between requests, which for a small enough rate no `Duration` holds;
/// one request every 1000 s and ten million a second are far past any useful measurement.
const RATES: std::ops::RangeInclusive<f64> = 0.001..=10_000_000.0;

/// Parses a request rate: requests per second, within `RATES`.
pub fn parse_rate(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(rate) if RATES.contains(&rate) => Ok(rate),
        _ => Err(format!(
            "{value:?} is not a rate (requests per second from {} to {}, e.g. 5000)",
            RATES.start(),
            RATES.end()
        )),
    }
}

/// `callsign bench`: seeds, or runs the load generator and prints its report. Fails when any
/// request failed, after printing the report.
pub async fn main(settings: &Settings, args: BenchArgs) -> anyhow::Result<()> {
    if args.seed {
        return seed_command(settings, &args).await;
    }
    let plan = plan(settings, &args)?;
    let threads = usize::from(args.threads);
    // Its own runtime, so the thread count is the generator's choice and nothing else runs
    // on its threads.
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    let report = tokio::task::spawn_blocking(move || runtime.block_on(run(&plan)))
        .await
        .context("the load generator stopped")??;

    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.output {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    let errors = report.error_count();
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}

fn plan(settings: &Settings, args: &BenchArgs) -> anyhow::Result<Plan> {
    let connection = ConnectionString::parse(
        args.connection_string
            .as_deref()
            .context("give --connection-string or CALLSIGN_BENCH_CONNECTION_STRING")?,
    )?;
    let endpoint = match &args.endpoint {
        Some(url) => Endpoint::parse(url)?,
        None => connection.endpoint,
    };
    Ok(Plan {
        endpoint,
        access_key: connection.access_key,
        connect_to: args.connect_to.clone(),
        ca_cert: args
            .ca_cert
            .clone()
            .unwrap_or_else(|| settings.tls_dir().join("cert.pem")),
        connections: args.connections as usize,
        duration: args.duration,
        warmup: args.warmup,
        operations: if args.operations.is_empty() {
            Operation::ALL.to_vec()
        } else {
            args.operations.clone()
        },
        timeout: args.timeout,
        pool_identities: args.pool_identities.max(1),
        max_prepared: args.max_prepared.max(1),
        threads: usize::from(args.threads),
        half_load: args.half_load,
        rate: args.rate,
        verbose: true,
    })
}

async fn seed_command(settings: &Settings, args: &BenchArgs) -> anyhow::Result<()> {
    let repo = crate::store::open(&settings.database_url()).await?;
    let result = async {
        let tenants = repo.load_tenants().await?;
        let tenant = match &args.tenant {
            Some(wanted) => tenants
                .iter()
                .find(|t| &t.name == wanted || &t.id.to_string() == wanted)
                .with_context(|| format!("no tenant named or with id '{wanted}'"))?,
            None => tenants.iter().find(|t| t.is_default).context(
                "the database has no default tenant yet: start the server once, or give --tenant",
            )?,
        };
        let plan = seed::SeedPlan {
            tenant: tenant.id,
            identities: args.identities,
            tokens: args.tokens,
        };
        let progress = seed::progress_bar(plan.identities + plan.tokens);
        let seeded = seed::seed(repo.as_ref(), plan, &progress).await?;
        let rows = seeded.identities + seeded.tokens;
        println!(
            "seeded {} identities and {} issued-token records into tenant {} in {:.1} s ({:.0} rows/s)",
            seeded.identities,
            seeded.tokens,
            tenant.name,
            seeded.seconds,
            rows as f64 / seeded.seconds.max(1e-9)
        );
        anyhow::Ok(())
    }
    .await;
    repo.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_and_without_units() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "-1", "fast", "1h", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_rate_is_read_and_cannot_be_combined_with_half_load() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let parse = |more: &[&str]| {
            let head = ["callsign", "bench", "--connection-string", "endpoint=x"];
            Cli::try_parse_from(head.iter().chain(more))
        };
        let parsed = parse(&["--rate", "5000"]).expect("--rate 5000");
        let Some(Command::Bench(args)) = parsed.command else {
            panic!("not the bench command: {parsed:?}");
        };
        assert_eq!(args.rate, Some(5000.0));
        let both = parse(&["--rate", "5000", "--half-load"]).expect_err("with --half-load");
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
        let zero = parse(&["--rate", "0"]).expect_err("0/s");
        assert!(zero.to_string().contains("is not a rate"), "{zero}");
    }

    #[test]
    fn rates_are_numbers_within_bounds() {
        assert_eq!(parse_rate("5000"), Ok(5000.0));
        assert_eq!(parse_rate(" 2.5 "), Ok(2.5));
        assert_eq!(parse_rate("0.001"), Ok(0.001));
        assert_eq!(parse_rate("10000000"), Ok(10_000_000.0));
        for bad in [
            "", "0", "1e-300", "1e8", "-5", "fast", "inf", "NaN", "5000/s",
        ] {
            let refused = parse_rate(bad).expect_err(bad);
            assert!(refused.contains("is not a rate"), "{refused}");
        }
    }
}
