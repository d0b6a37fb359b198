//! `callsign admin credential …`: operator credentials for the admin API, straight in the
//! database. A running server picks up a new or revoked credential within its refresh
//! interval.

use clap::Subcommand;
use serde::Serialize;

use crate::bootstrap;
use crate::config::Settings;
use crate::domain::{OperatorCredentialId, Timestamp};
use crate::service::audit::Caller;
use crate::service::operators::{create_credential, revoke_credential};
use crate::store::OperatorCredentialRecord;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create, list and revoke operator credentials.
    Credential {
        #[command(subcommand)]
        command: CredentialCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Create a credential and print it once; only its argon2 hash is stored. Send it as
    /// `Authorization: Bearer <credential>` to /admin.
    Create {
        /// What or whom the credential is for (shown in listings).
        #[arg(long, default_value = "operator")]
        name: String,
        /// Print one JSON object ({credentialId, name, credential, createdAt}).
        #[arg(long)]
        json: bool,
    },
    /// List credentials (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a credential: running servers refuse it within a second.
    Revoke {
        /// The credential's id (the listing shows it; it is also the part of the credential
        /// after `cso_`).
        #[arg(long, value_parser = |s: &str| OperatorCredentialId::parse(s).map_err(|e| e.0))]
        id: OperatorCredentialId,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CredentialJson {
    credential_id: String,
    name: String,
    created_at: String,
    revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<String>,
}

impl From<&OperatorCredentialRecord> for CredentialJson {
    fn from(record: &OperatorCredentialRecord) -> Self {
        Self {
            credential_id: record.id.to_string(),
            name: record.name.clone(),
            created_at: record.created_at.to_rfc3339(),
            revoked_at: record.revoked_at.map(Timestamp::to_rfc3339),
            credential: None,
        }
    }
}

pub async fn run(settings: &Settings, command: AdminCommand) -> anyhow::Result<()> {
    let AdminCommand::Credential { command } = command;
    let (repo, _master_key) = bootstrap::open(settings).await?;
    let result = match command {
        CredentialCommand::Create { name, json } => {
            let (record, credential) =
                create_credential(repo.as_ref(), &name, &Caller::cli(), Timestamp::now()).await?;
            let mut out = CredentialJson::from(&record);
            out.credential = Some(credential.expose().to_owned());
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("operator credential {} ({})", out.credential_id, out.name);
                println!("  {}", credential.expose());
                println!(
                    "It is shown only now; send it as 'Authorization: Bearer <credential>' to /admin."
                );
            }
            Ok(())
        }
        CredentialCommand::List { json } => {
            let records = repo.load_operator_credentials().await?;
            let list: Vec<CredentialJson> = records.iter().map(CredentialJson::from).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for c in &list {
                    let state = match &c.revoked_at {
                        Some(at) => format!("revoked {at}"),
                        None => "active".to_owned(),
                    };
                    println!(
                        "{}  {:<20}  created {}  {state}",
                        c.credential_id, c.name, c.created_at
                    );
                }
            }
            Ok(())
        }
        CredentialCommand::Revoke { id } => {
            revoke_credential(repo.as_ref(), id, &Caller::cli(), Timestamp::now()).await?;
            println!("operator credential {id} revoked");
            Ok(())
        }
    };
    repo.close().await;
    result
}
