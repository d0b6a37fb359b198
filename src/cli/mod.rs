//! The `callsign` command line: `serve` (the default), `migrate`, `tenant …`, `admin …`,
//! `audit …`, `signing-key …` and `bench`.

mod admin;
mod audit;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::bench::{self, BenchArgs};
use crate::bootstrap;
use crate::config::Settings;
use crate::crypto::signing::SigningAlgorithm;
use crate::domain::{
    Hostname, KeySlot, LimitSetting, LimitTable, LimitedOperation, TenantName, Timestamp,
    parse_assignment,
};
use crate::service::audit::Caller;
use crate::service::tenants::{
    NewTenant, TenantUpdate, connection_string, create_tenant, delete_tenant, open_access_key,
    regenerate_access_key, rotate_signing_key, update_tenant,
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
    /// Create, list, show, change and delete tenants and regenerate their keys, directly in
    /// the database. A running server picks the change up within a second.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Operator credentials for the admin API, directly in the database.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
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
    /// Change a tenant's settings; everything given is applied together, or nothing is.
    Update {
        /// The tenant's name or id.
        #[arg(long)]
        tenant: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// The host names the tenant claims from now on (repeatable; replaces the old list).
        #[arg(long = "hostname")]
        hostnames: Vec<String>,
        /// A rate limit, as operation=<requests>/<period> (issue_token=5/30s), operation=none
        /// to lift it, or operation=default for the deployment's default (repeatable).
        /// Operations: create_identity, issue_token, delete_identity, revoke_tokens,
        /// get_identity, introspect, audit_query.
        #[arg(long = "limit", value_parser = parse_limit_arg)]
        limits: Vec<(LimitedOperation, Option<LimitSetting>)>,
        /// Days of audit events to keep, or "none" to keep them forever.
        #[arg(long, value_parser = parse_retention)]
        audit_retention_days: Option<Retention>,
    },
    /// Delete a tenant: its identities, token records and keys go at once (its tokens stop
    /// verifying); its audit trail stays under its retention.
    Delete {
        /// The tenant's name or id.
        #[arg(long)]
        tenant: String,
        /// Confirms the deletion; it cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Replace the tenant's primary or secondary access key and print the new one once. The
    /// old value stops working; the other key keeps working.
    RegenerateKey {
        /// The tenant's name or id.
        #[arg(long)]
        tenant: String,
        /// Which key: primary or secondary.
        #[arg(long, value_parser = |s: &str| KeySlot::parse(s).map_err(|e| e.0))]
        key: KeySlot,
        #[arg(long)]
        json: bool,
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
        Command::Admin { command } => admin::run(&settings, command).await,
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
    audit_retention_days: Option<i32>,
    /// The limit in force for every operation, by this command's --default-limits.
    limits: std::collections::BTreeMap<String, String>,
    limit_overrides: std::collections::BTreeMap<String, String>,
    keys: Vec<KeyJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secondary_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_string: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyJson {
    key_type: &'static str,
    created_at: String,
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
        audit_retention_days: record.audit_retention_days,
        limits: LimitedOperation::ALL
            .iter()
            .map(|op| {
                let limit = record.limits.effective(*op, &settings.default_limits);
                (
                    op.as_str().to_owned(),
                    limit.map_or_else(|| "none".to_owned(), |l| l.to_string()),
                )
            })
            .collect(),
        limit_overrides: record
            .limits
            .iter()
            .map(|(op, setting)| (op.as_str().to_owned(), setting.to_string()))
            .collect(),
        keys: KeySlot::BOTH
            .iter()
            .filter_map(|slot| record.access_keys.iter().find(|k| k.slot == *slot))
            .map(|k| KeyJson {
                key_type: k.slot.as_str(),
                created_at: k.created_at.to_rfc3339(),
            })
            .collect(),
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
    for key in &t.keys {
        println!("{:<11} key created {}", key.key_type, key.created_at);
    }
    let limits: Vec<String> = t
        .limits
        .iter()
        .map(|(op, limit)| {
            let own = if t.limit_overrides.contains_key(op) {
                " (own)"
            } else {
                ""
            };
            format!("{op}={limit}{own}")
        })
        .collect();
    println!("limits      {}", limits.join(", "));
    match t.audit_retention_days {
        Some(days) => println!("audit       kept {days} days"),
        None => println!("audit       kept forever"),
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

/// The audit trail named `name_or_id`: a tenant's, a deleted tenant's (by id, or by name when
/// no live tenant has it), or `deployment` (events of no tenant). Returns its chain id and a
/// name to show.
pub(crate) fn find_trail(
    records: &[TenantRecord],
    deleted: &[crate::store::DeletedTenantRecord],
    name_or_id: &str,
) -> anyhow::Result<(crate::domain::TenantId, String)> {
    use crate::domain::audit::DEPLOYMENT;
    if name_or_id == "deployment" || name_or_id == DEPLOYMENT.to_string() {
        return Ok((DEPLOYMENT, "(deployment)".to_owned()));
    }
    if let Ok(tenant) = find_tenant(records, name_or_id) {
        return Ok((tenant.id, tenant.name.clone()));
    }
    deleted
        .iter()
        .rev()
        .find(|t| t.id.to_string() == name_or_id || t.name == name_or_id)
        .map(|t| (t.id, format!("{} (deleted)", t.name)))
        .ok_or_else(|| anyhow::anyhow!("no tenant named or with id '{name_or_id}'"))
}

/// A retention setting: a number of days, or none.
#[derive(Debug, Clone, Copy)]
pub struct Retention(Option<i32>);

/// `op=limit`, `op=none` or `op=default` (`None`: back to the deployment's default).
fn parse_limit_arg(value: &str) -> Result<(LimitedOperation, Option<LimitSetting>), String> {
    if let Some((op, setting)) = value.split_once('=')
        && setting.trim().eq_ignore_ascii_case("default")
    {
        return LimitedOperation::parse(op.trim())
            .map(|op| (op, None))
            .map_err(|e| e.0);
    }
    parse_assignment(value)
        .map(|(op, setting)| (op, Some(setting)))
        .map_err(|e| e.0)
}

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
                limits: LimitTable::default(),
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
            name,
            hostnames,
            limits,
            audit_retention_days,
        } => {
            let records = repo.load_tenants().await?;
            let record = find_tenant(&records, &tenant)?;
            let update = TenantUpdate {
                name: name.as_deref().map(TenantName::parse).transpose()?,
                hostnames: if hostnames.is_empty() {
                    None
                } else {
                    Some(
                        hostnames
                            .iter()
                            .map(|h| Hostname::parse(h))
                            .collect::<Result<_, _>>()?,
                    )
                },
                limits,
                audit_retention_days: audit_retention_days.map(|Retention(days)| days),
            };
            update_tenant(
                repo.as_ref(),
                record.id,
                update,
                &Caller::cli(),
                Timestamp::now(),
            )
            .await?;
            let records = repo.load_tenants().await?;
            let updated = find_tenant(&records, &record.id.to_string())?;
            println!("tenant {} updated", updated.name);
            print_tenant(&describe(settings, updated));
            Ok(())
        }
        TenantCommand::Delete { tenant, yes } => {
            let records = repo.load_tenants().await?;
            let record = find_tenant(&records, &tenant)?;
            if !yes {
                anyhow::bail!(
                    "deleting tenant {} removes its identities and keys for good; add --yes to confirm",
                    record.name
                );
            }
            let counts =
                delete_tenant(repo.as_ref(), record.id, &Caller::cli(), Timestamp::now()).await?;
            println!(
                "tenant {} ({}) deleted: {} identities and {} token records removed; its audit trail is kept",
                record.name, record.id, counts.identities, counts.issued_tokens
            );
            Ok(())
        }
        TenantCommand::RegenerateKey { tenant, key, json } => {
            let records = repo.load_tenants().await?;
            let record = find_tenant(&records, &tenant)?;
            let now = Timestamp::now();
            let new_key = regenerate_access_key(
                repo.as_ref(),
                &master_key,
                record.id,
                key,
                &Caller::cli(),
                now,
            )
            .await?;
            let endpoint = bootstrap::endpoints(settings).endpoint(&record.hostnames);
            let connection = connection_string(&endpoint, &new_key);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "tenantId": record.id.to_string(),
                        "keyType": key.as_str(),
                        "key": new_key.to_base64(),
                        "connectionString": connection,
                        "createdAt": now.to_rfc3339(),
                    }))?
                );
            } else {
                println!(
                    "new {} key of tenant {}: {}",
                    key.as_str(),
                    record.name,
                    new_key.to_base64()
                );
                println!("connection  {connection}");
                println!("The key is shown only now; the old one no longer works.");
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
