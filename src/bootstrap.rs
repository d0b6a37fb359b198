//! What has to exist before a server or a CLI command can use the database: the master key
//! that matches it, and on a server's first start the default tenant.

use std::sync::Arc;

use anyhow::{Context, bail};

use crate::config::Settings;
use crate::crypto::master_key::MasterKey;
use crate::domain::{KeySlot, LimitTable, TenantName, Timestamp};
use crate::service::ServiceError;
use crate::service::audit::Caller;
use crate::service::directory::Endpoints;
use crate::service::tenants::{
    CreatedTenant, DEFAULT_TENANT_NAME, NewTenant, connection_string, create_tenant,
    open_access_key,
};
use crate::store::{self, Repository};

const MASTER_KEY_ID: &str = "master_key_id";

/// Opens the database (applying migrations) and the master key that belongs to it.
pub async fn open(settings: &Settings) -> anyhow::Result<(Arc<dyn Repository>, MasterKey)> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "creating the data directory {}",
            settings.data_dir.display()
        )
    })?;
    let repo = store::open(&settings.database_url()).await?;
    let recorded = repo.get_meta(MASTER_KEY_ID).await?;
    let (master_key, created) =
        settings
            .load_master_key(recorded.is_none())
            .with_context(|| match &recorded {
                Some(id) => format!(
                    "the database's secrets are sealed with master key {id}: provide it with \
                 CALLSIGN_MASTER_KEY or CALLSIGN_MASTER_KEY_FILE"
                ),
                None => "loading the master key".to_owned(),
            })?;
    if created {
        tracing::info!(id = master_key.id(), "created a master key");
    }
    let stored = repo
        .put_meta_if_absent(MASTER_KEY_ID, master_key.id())
        .await?;
    if stored != master_key.id() {
        bail!(
            "the master key given ({}) is not the one this database's secrets are sealed with ({stored})",
            master_key.id()
        );
    }
    Ok((repo, master_key))
}

pub fn endpoints(settings: &Settings) -> Endpoints {
    Endpoints {
        https_port: settings.https_addr.port(),
        default_host: settings.public_host(),
    }
}

/// On a first start (no tenant at all) creates the `default` tenant, writes its connection
/// string to `<data dir>/default-connection-string.txt` (mode 0600) and prints it once.
pub async fn ensure_default_tenant(
    settings: &Settings,
    repo: &dyn Repository,
    master_key: &MasterKey,
) -> anyhow::Result<()> {
    let path = settings.default_connection_string_file();
    let tenants = repo.load_tenants().await?;
    // Only a database that never had a tenant gets one; one whose tenants were all deleted
    // stays as the operators left it.
    if tenants.is_empty() && repo.deleted_tenants().await?.is_empty() {
        let spec = NewTenant {
            name: TenantName::parse(DEFAULT_TENANT_NAME)?,
            hostnames: Vec::new(),
            is_default: true,
            algorithm: settings.signing_algorithm,
            limits: LimitTable::default(),
        };
        match create_tenant(repo, master_key, spec, &Caller::system(), Timestamp::now()).await {
            Ok(CreatedTenant { primary_key, .. }) => {
                let endpoint = endpoints(settings).endpoint(&[]);
                let connection = connection_string(&endpoint, &primary_key);
                crate::fsutil::write_private(&path, format!("{connection}\n").as_bytes())?;
                println!(
                    "Created the default tenant. Its connection string (shown only this once) is:"
                );
                println!("  {connection}");
                println!("It is saved in {}", path.display());
                return Ok(());
            }
            // Another instance created it at the same moment.
            Err(ServiceError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let default = tenants.iter().find(|t| t.is_default);
    if path.exists() {
        println!(
            "The default tenant's connection string is in {}",
            path.display()
        );
    } else if let Some(default) = default {
        // Created by another instance over the same database: write it here too.
        let key = open_access_key(default, KeySlot::Primary, master_key)?;
        let connection = connection_string(&endpoints(settings).endpoint(&default.hostnames), &key);
        crate::fsutil::write_private(&path, format!("{connection}\n").as_bytes())?;
        println!(
            "The default tenant's connection string is in {}",
            path.display()
        );
    }
    Ok(())
}
