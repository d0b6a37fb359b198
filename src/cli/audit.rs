//! `callsign audit …`: the audit log from the command line, straight from the database.

use std::io::{IsTerminal, Write};

use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::bootstrap;
use crate::config::Settings;
use crate::domain::audit::{ChainedEvent, Operation, Outcome};
use crate::domain::{IdentityId, Timestamp};
use crate::http::audit::AuditEventBody;
use crate::service::audit::{AuditFilter, AuditService, Caller, ChainReport};

use super::find_trail;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print a tenant's events, filtered.
    Query {
        #[command(flatten)]
        filter: FilterArgs,
        /// Newest first.
        #[arg(long)]
        desc: bool,
        /// Most events to print.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, value_enum, default_value = "table")]
        format: QueryFormat,
    },
    /// Stream every matching event of a tenant (all of them by default), oldest first.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    /// Walk the hash chain of one tenant (or of every tenant) and report the first broken
    /// link; exits non-zero if there is one.
    Verify {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Delete a tenant's events older than a time, keeping the chain verifiable.
    Purge {
        #[arg(long)]
        tenant: String,
        /// RFC 3339 time; events before it are deleted.
        #[arg(long, value_parser = parse_time)]
        before: Timestamp,
    },
}

#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// The tenant's name or id (a deleted tenant's id or name, or "deployment" for the
    /// operator events that belong to no tenant).
    #[arg(long)]
    tenant: String,
    /// Only events about this identity (8:acs:…).
    #[arg(long, value_parser = |s: &str| IdentityId::parse(s).map_err(|e| e.0))]
    identity: Option<IdentityId>,
    /// Only this operation (identity.create, token.issue, token.revoke, …).
    #[arg(long, value_parser = |s: &str| Operation::parse(s).map_err(|e| e.0))]
    operation: Option<Operation>,
    /// Only this outcome (success, failure).
    #[arg(long, value_parser = |s: &str| Outcome::parse(s).map_err(|e| e.0))]
    outcome: Option<Outcome>,
    /// From this RFC 3339 time (inclusive).
    #[arg(long, value_parser = parse_time)]
    from: Option<Timestamp>,
    /// Up to this RFC 3339 time (exclusive).
    #[arg(long, value_parser = parse_time)]
    to: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum QueryFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    Csv,
}

/// Events read per round trip while exporting.
const EXPORT_PAGE: i64 = 5000;

fn parse_time(value: &str) -> Result<Timestamp, String> {
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("'{value}' is not an RFC 3339 time, e.g. 2026-01-31T12:00:00Z"))?;
    Ok(Timestamp::from_millis(
        (t.unix_timestamp_nanos() / 1_000_000) as i64,
    ))
}

const CSV_HEADER: [&str; 12] = [
    "sequenceNumber",
    "time",
    "actor",
    "operation",
    "identity",
    "outcome",
    "clientRequestId",
    "requestId",
    "sourceAddress",
    "userAgent",
    "details",
    "hash",
];

fn csv_row(e: &AuditEventBody) -> [String; 12] {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        e.sequence_number.to_string(),
        e.time.clone(),
        e.actor.clone(),
        e.operation.clone(),
        opt(&e.identity),
        e.outcome.clone(),
        opt(&e.client_request_id),
        opt(&e.request_id),
        opt(&e.source_address),
        opt(&e.user_agent),
        e.details.to_string(),
        e.hash.clone(),
    ]
}

pub async fn run(settings: &Settings, command: AuditCommand) -> anyhow::Result<()> {
    let (repo, master_key) = bootstrap::open(settings).await?;
    let audit = AuditService::new(repo.clone(), &master_key)?;
    let tenants = repo.load_tenants().await?;
    let deleted = repo.deleted_tenants().await?;
    let filter_of = |args: &FilterArgs, descending: bool| -> anyhow::Result<_> {
        let (tenant, _) = find_trail(&tenants, &deleted, &args.tenant)?;
        let filter = AuditFilter {
            identity: args.identity,
            operation: args.operation,
            outcome: args.outcome,
            from: args.from,
            to: args.to,
            descending,
        };
        filter.validate(tenant)?;
        Ok((tenant, filter))
    };
    let result = match command {
        AuditCommand::Query {
            filter,
            desc,
            limit,
            format,
        } => {
            let (tenant, filter) = filter_of(&filter, desc)?;
            let events: Vec<AuditEventBody> = audit
                .scan(tenant, &filter, None, limit.max(1))
                .await?
                .into_iter()
                .map(Into::into)
                .collect();
            print_query(&events, format)
        }
        AuditCommand::Export {
            filter,
            format,
            output,
        } => {
            let (tenant, filter) = filter_of(&filter, false)?;
            let out: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::fs::File::create(path)?),
                None => Box::new(std::io::stdout().lock()),
            };
            let total = repo
                .audit_chain(tenant)
                .await?
                .map(|c| (c.last_seq - c.anchor_seq).max(0) as u64);
            export(&audit, tenant, &filter, format, out, total).await
        }
        AuditCommand::Verify { tenant } => {
            let ids = match tenant {
                Some(name) => vec![find_trail(&tenants, &deleted, &name)?.0],
                None => repo.audit_tenants().await?,
            };
            let mut broken = 0;
            for id in ids {
                let report = audit.verify_chain(id).await?;
                let name = match find_trail(&tenants, &deleted, &id.to_string()) {
                    Ok((_, name)) => name,
                    Err(_) => "(deleted)".to_owned(),
                };
                print_report(&name, &report);
                broken += usize::from(report.broken.is_some());
            }
            if broken > 0 {
                anyhow::bail!("{broken} audit chain(s) are broken");
            }
            Ok(())
        }
        AuditCommand::Purge { tenant, before } => {
            let (tenant, name) = find_trail(&tenants, &deleted, &tenant)?;
            let purged = audit
                .purge(tenant, before, &Caller::cli(), Timestamp::now())
                .await?;
            println!(
                "purged {purged} events of {name} before {}",
                before.to_rfc3339()
            );
            Ok(())
        }
    };
    repo.close().await;
    result
}

fn print_report(name: &str, report: &ChainReport) {
    match &report.broken {
        None => println!(
            "{name} ({}): intact, events {}..={} ({} verified), head hash {}",
            report.tenant,
            report.anchor_seq + 1,
            report.head_seq,
            report.events,
            report.head_hash
        ),
        Some((seq, problem)) => println!(
            "{name} ({}): BROKEN at event {seq}: {problem}",
            report.tenant
        ),
    }
}

fn print_query(events: &[AuditEventBody], format: QueryFormat) -> anyhow::Result<()> {
    match format {
        QueryFormat::Json => println!("{}", serde_json::to_string_pretty(events)?),
        QueryFormat::Csv => {
            let mut writer = csv::Writer::from_writer(std::io::stdout().lock());
            writer.write_record(CSV_HEADER)?;
            for e in events {
                writer.write_record(csv_row(e))?;
            }
            writer.flush()?;
        }
        QueryFormat::Table => {
            println!(
                "{:>6}  {:<24}  {:<12}  {:<15}  {:<7}  {:<80}  details",
                "seq", "time", "actor", "operation", "outcome", "identity"
            );
            for e in events {
                println!(
                    "{:>6}  {:<24}  {:<12}  {:<15}  {:<7}  {:<80}  {}",
                    e.sequence_number,
                    e.time,
                    e.actor,
                    e.operation,
                    e.outcome,
                    e.identity.as_deref().unwrap_or("-"),
                    e.details
                );
            }
        }
    }
    Ok(())
}

async fn export(
    audit: &AuditService,
    tenant: crate::domain::TenantId,
    filter: &AuditFilter,
    format: ExportFormat,
    out: Box<dyn Write>,
    total: Option<u64>,
) -> anyhow::Result<()> {
    // A progress bar only where someone watches it.
    let progress = if std::io::stderr().is_terminal() {
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        bar.set_style(ProgressStyle::with_template(
            "{bar:40} {pos}/{len} events {per_sec} {eta}",
        )?);
        bar
    } else {
        ProgressBar::hidden()
    };
    enum Sink {
        Lines(std::io::BufWriter<Box<dyn Write>>),
        Csv(Box<csv::Writer<Box<dyn Write>>>),
    }
    let mut sink = match format {
        ExportFormat::Jsonl => Sink::Lines(std::io::BufWriter::new(out)),
        ExportFormat::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            writer.write_record(CSV_HEADER)?;
            Sink::Csv(Box::new(writer))
        }
    };
    let mut cursor = None;
    loop {
        let page: Vec<ChainedEvent> = audit.scan(tenant, filter, cursor, EXPORT_PAGE).await?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.seq);
        let full = page.len() as i64 == EXPORT_PAGE;
        for event in page {
            let body = AuditEventBody::from(event);
            match &mut sink {
                Sink::Csv(writer) => writer.write_record(csv_row(&body))?,
                Sink::Lines(out) => writeln!(out, "{}", serde_json::to_string(&body)?)?,
            }
            progress.inc(1);
        }
        if !full {
            break;
        }
    }
    match &mut sink {
        Sink::Csv(writer) => writer.flush()?,
        Sink::Lines(out) => out.flush()?,
    }
    progress.finish_and_clear();
    Ok(())
}
