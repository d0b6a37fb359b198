//! The `callsign` command line: `serve` (the default), `migrate`, `tenant …`, `audit …`,
//! `signing-key …` and `bench`.

mod audit;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::bench::{self, BenchArgs};
use crate::bootstrap;
use crate::config::Settings;
use crate::crypto::signing::SigningAlgorithm;
use crate::domain::{Hostname, KeySlot, TenantName, Timestamp};
use crate::service::audit::Caller;
use crate::service::tenants::{
    NewTenant, connection_string, create_tenant, open_access_key, rotate_signing_key,
    set_audit_retention,
};
use crate::startup::Application;
use crate::store::{Repository, TenantRecord};

/// A self-hosted, multi-tenant communication identity and access-token server, wire-compatible
/// with the Identity API of Azure Communication Services.
#[derive(Debug, Parser)]
#[command(name = "callsign", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API over HTTPS (and plain HTTP); the default command.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create, list and show tenants, directly in the database. A running server picks the
    /// change up within a second.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Query, export and verify the audit log, directly in the database.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Rotate and list a tenant's token signing keys, directly in the database. A running
    /// server picks the change up within a second.
    SigningKey {
        #[command(subcommand)]
        command: SigningKeyCommand,
    },
    /// Load a running server with signed requests and report each operation's throughput
    /// and latency, also as a ratio to the server's ceiling (GET /healthz under the same
    /// load); or, with --seed, bulk-load identities and token records into the database.
    /// Exits non-zero when any request failed.
    #[command(after_help = BENCH_EXAMPLES)]
    Bench(Box<BenchArgs>),
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Make a new key sign the tenant's tokens from now on. The key it replaces stays in the
    /// JWKS, and its tokens keep verifying, until every token it can have signed has expired
    /// (a day and a quarter of an hour), then it is retired.
    Rotate {
        /// The tenant, by name or id.
        #[arg(long)]
        tenant: String,
        /// Algorithm of the new key [default: the current key's].
        #[arg(long, value_enum)]
        algorithm: Option<SigningAlgorithm>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the tenant's signing keys: the one that signs, those still published, the retired.
    List {
        /// The tenant, by name or id.
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
}

const BENCH_EXAMPLES: &str = "Examples:
  callsign bench --connection-string \"$(cat callsign-data/default-connection-string.txt)\"
  callsign bench --duration 2s --operations issue-token,get-identity --json
  CALLSIGN_DATABASE_URL=postgres://… callsign bench --seed --identities 1000000 --tokens 10000000";

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant that serves the given host names, and print its keys once.
    Create {
        /// A unique name (letters, digits, '-', '_', '.').
        #[arg(long)]
        name: String,
        /// A host name the tenant claims (repeatable); the first names its endpoint.
        #[arg(long = "hostname", required = true)]
        hostnames: Vec<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a tenant's settings.
    Update {
        /// The tenant's name or id.
        #[arg(long)]
        tenant: String,
        /// Days of audit events to keep, or "none" to keep them forever.
        #[arg(long, value_parser = parse_retention)]
        audit_retention_days: Option<Retention>,
    },
    /// Show one tenant, by name or id.
    Show {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
        /// Also print both access keys and the connection string.
        #[arg(long)]
        show_keys: bool,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            Application::build(&settings)
                .await?
                .run_until_stopped()
                .await
        }
        Command::Migrate => {
            bootstrap::open(&settings).await?;
            println!("migrations are up to date");
            Ok(())
        }
        Command::Tenant { command } => tenant(&settings, command).await,
        Command::Audit { command } => audit::run(&settings, command).await,
        Command::SigningKey { command } => signing_key(&settings, command).await,
        Command::Bench(args) => bench::main(&settings, *args).await,
    }
}

/// A tenant by name or id.
/// Reads the tenant named `name_or_id` from the database.
async fn load_tenant(repo: &dyn Repository, name_or_id: &str) -> anyhow::Result<TenantRecord> {
    find_tenant(&repo.load_tenants().await?, name_or_id).cloned()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SigningKeyListing {
    kid: String,
    algorithm: String,
    created_at: String,
    /// `signing`, `published` (superseded, still verifying) or `retired`.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retired_at: Option<String>,
}

async fn signing_key(settings: &Settings, command: SigningKeyCommand) -> anyhow::Result<()> {
    let (repo, master_key) = bootstrap::open(settings).await?;
    let result = async {
        match command {
            SigningKeyCommand::Rotate {
                tenant,
                algorithm,
                json,
            } => {
                let record = load_tenant(repo.as_ref(), &tenant).await?;
                let rotated = rotate_signing_key(
                    repo.as_ref(),
                    &master_key,
                    &record,
                    algorithm,
                    &Caller::cli(),
                    Timestamp::now(),
                )
                .await?;
                if json {
                    let out = serde_json::json!({
                        "tenantId": record.id.to_string(),
                        "kid": rotated.kid,
                        "algorithm": rotated.algorithm.as_str(),
                        "superseded": rotated.superseded,
                        "supersededUntil": rotated.superseded_until.to_rfc3339(),
                    });
                    println!("{}", serde_json::to_string_pretty(&out)?);
                } else {
                    println!(
                        "tenant {}: new signing key {} ({})",
                        record.name, rotated.kid, rotated.algorithm
                    );
                    for kid in &rotated.superseded {
                        println!(
                            "superseded {kid}: published until {}",
                            rotated.superseded_until.to_rfc3339()
                        );
                    }
                }
                Ok(())
            }
            SigningKeyCommand::List { tenant, json } => {
                let record = load_tenant(repo.as_ref(), &tenant).await?;
                let now = Timestamp::now();
                let keys: Vec<SigningKeyListing> = record
                    .signing_keys
                    .iter()
                    .map(|k| SigningKeyListing {
                        kid: k.kid.clone(),
                        algorithm: k.algorithm.clone(),
                        created_at: k.created_at.to_rfc3339(),
                        state: match k.retired_at {
                            None => "signing",
                            Some(at) if now < at => "published",
                            Some(_) => "retired",
                        },
                        retired_at: k.retired_at.map(Timestamp::to_rfc3339),
                    })
                    .collect();
                if json {
                    println!("{}", serde_json::to_string_pretty(&keys)?);
                } else {
                    for k in &keys {
                        let until = k
                            .retired_at
                            .as_deref()
                            .map(|t| format!(" (retired at {t})"))
                            .unwrap_or_default();
                        println!("{}  {:<6}  {:<9}{until}", k.kid, k.algorithm, k.state);
                    }
                }
                Ok(())
            }
        }
    }
    .await;
    repo.close().await;
    result
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TenantJson {
    tenant_id: String,
    name: String,
    is_default: bool,
    hostnames: Vec<String>,
    endpoint: String,
    created_at: String,
    signing_key: Option<SigningKeyJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secondary_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_string: Option<String>,
}

#[derive(Serialize)]
struct SigningKeyJson {
    kid: String,
    algorithm: String,
}

fn describe(settings: &Settings, record: &TenantRecord) -> TenantJson {
    let signing_key = record
        .signing_keys
        .iter()
        .rev()
        .find(|k| k.retired_at.is_none());
    TenantJson {
        tenant_id: record.id.to_string(),
        name: record.name.clone(),
        is_default: record.is_default,
        hostnames: record.hostnames.clone(),
        endpoint: bootstrap::endpoints(settings).endpoint(&record.hostnames),
        created_at: record.created_at.to_rfc3339(),
        signing_key: signing_key.map(|k| SigningKeyJson {
            kid: k.kid.clone(),
            algorithm: k.algorithm.clone(),
        }),
        primary_key: None,
        secondary_key: None,
        connection_string: None,
    }
}

fn print_tenant(t: &TenantJson) {
    println!("tenant      {} ({})", t.name, t.tenant_id);
    let hosts = if t.is_default {
        "(default: every host no other tenant claims)".to_owned()
    } else {
        t.hostnames.join(", ")
    };
    println!("host names  {hosts}");
    println!("endpoint    {}", t.endpoint);
    if let Some(k) = &t.signing_key {
        println!("signing key {} ({})", k.kid, k.algorithm);
    }
    if let (Some(p), Some(s), Some(c)) = (&t.primary_key, &t.secondary_key, &t.connection_string) {
        println!("primary     {p}");
        println!("secondary   {s}");
        println!("connection  {c}");
    }
}

/// The tenant named `name_or_id`.
pub(crate) fn find_tenant<'a>(
    records: &'a [TenantRecord],
    name_or_id: &str,
) -> anyhow::Result<&'a TenantRecord> {
    records
        .iter()
        .find(|t| t.name == name_or_id || t.id.to_string() == name_or_id)
        .ok_or_else(|| anyhow::anyhow!("no tenant named or with id '{name_or_id}'"))
}

/// A retention setting: a number of days, or none.
#[derive(Debug, Clone, Copy)]
pub struct Retention(Option<i32>);

fn parse_retention(value: &str) -> Result<Retention, String> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(Retention(None));
    }
    value
        .parse::<i32>()
        .ok()
        .filter(|d| *d >= 1)
        .map(|d| Retention(Some(d)))
        .ok_or_else(|| "expected a number of days (at least 1) or none".to_owned())
}

/// A tenant claiming an IP address the HTTPS listener does not listen on cannot be reached
/// (the usual surprise: 127.0.0.2 while the server listens on 127.0.0.1 only).
fn warn_unreachable_ips(settings: &Settings, hostnames: &[String]) {
    let listen = settings.https_addr.ip();
    for host in hostnames {
        if let Ok(ip) = host.parse::<std::net::IpAddr>()
            && !listen.is_unspecified()
            && ip != listen
        {
            eprintln!(
                "note: the HTTPS listener is {}, so requests to {ip} will not reach it; \
                 listen on all addresses with CALLSIGN_HTTPS_ADDR=0.0.0.0:{}",
                settings.https_addr,
                settings.https_addr.port()
            );
        }
    }
}

async fn tenant(settings: &Settings, command: TenantCommand) -> anyhow::Result<()> {
    let (repo, master_key) = bootstrap::open(settings).await?;
    let result = match command {
        TenantCommand::Create {
            name,
            hostnames,
            json,
        } => {
            let spec = NewTenant {
                name: TenantName::parse(&name)?,
                hostnames: hostnames
                    .iter()
                    .map(|h| Hostname::parse(h))
                    .collect::<Result<_, _>>()?,
                is_default: false,
                algorithm: settings.signing_algorithm,
            };
            let created = create_tenant(
                repo.as_ref(),
                &master_key,
                spec,
                &Caller::cli(),
                Timestamp::now(),
            )
            .await?;
            let mut out = describe(settings, &created.record);
            out.connection_string = Some(connection_string(&out.endpoint, &created.primary_key));
            out.primary_key = Some(created.primary_key.to_base64());
            out.secondary_key = Some(created.secondary_key.to_base64());
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_tenant(&out);
                println!("The keys are shown only now; store them safely.");
            }
            warn_unreachable_ips(settings, &created.record.hostnames);
            Ok(())
        }
        TenantCommand::List { json } => {
            let tenants: Vec<TenantJson> = repo
                .load_tenants()
                .await?
                .iter()
                .map(|t| describe(settings, t))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&tenants)?);
            } else {
                for t in &tenants {
                    let hosts = if t.is_default {
                        "(default)".to_owned()
                    } else {
                        t.hostnames.join(",")
                    };
                    println!("{}  {:<20}  {}", t.tenant_id, t.name, hosts);
                }
            }
            Ok(())
        }
        TenantCommand::Update {
            tenant,
            audit_retention_days,
        } => {
            let records = repo.load_tenants().await?;
            let record = find_tenant(&records, &tenant)?;
            if let Some(Retention(days)) = audit_retention_days {
                let (caller, now) = (Caller::cli(), Timestamp::now());
                set_audit_retention(repo.as_ref(), record.id, days, &caller, now).await?;
                match days {
                    Some(days) => {
                        println!("tenant {} keeps {days} days of audit events", record.name)
                    }
                    None => println!("tenant {} keeps its audit events forever", record.name),
                }
            }
            Ok(())
        }
        TenantCommand::Show {
            tenant,
            json,
            show_keys,
        } => {
            let records = repo.load_tenants().await?;
            let record = find_tenant(&records, &tenant)?;
            let mut out = describe(settings, record);
            if show_keys {
                let primary = open_access_key(record, KeySlot::Primary, &master_key)?;
                let secondary = open_access_key(record, KeySlot::Secondary, &master_key)?;
                out.connection_string = Some(connection_string(&out.endpoint, &primary));
                out.primary_key = Some(primary.to_base64());
                out.secondary_key = Some(secondary.to_base64());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_tenant(&out);
            }
            Ok(())
        }
    };
    repo.close().await;
    result
}
