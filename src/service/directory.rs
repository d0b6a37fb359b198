//! The in-memory directory of tenants every request consults: host name → tenant, with the
//! tenant's HMAC keys ready to verify and its signing key parsed.
//!
//! It is rebuilt from the database whenever the change epoch moves (see the `change_epoch`
//! table), so a tenant or key written by the CLI or another instance is picked up by the poll
//! that follows, and a change made through this server is applied at once by `reload`.
//! Lookups never touch the database.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Mutex;

use crate::crypto::master_key::MasterKey;
use crate::crypto::signing::VerifyingKey;
use crate::domain::{Hostname, KeySlot, LimitTable, TenantId, Timestamp};
use crate::store::{Repository, TenantRecord};

use super::tenants::{open_access_key, open_current_signing_key};
use super::throttle::{TenantThrottle, ThrottleSettings};
use super::tokens::{TokenIssuer, TokenSigner};

/// How tenants' public endpoints are spelled: `https://<host>:<port>/`.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub https_port: u16,
    /// The host of the default tenant's endpoint, which claims no host name of its own.
    pub default_host: String,
}

impl Endpoints {
    pub fn endpoint(&self, hostnames: &[String]) -> String {
        let host = hostnames.first().unwrap_or(&self.default_host);
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        format!("https://{host}:{}/", self.https_port)
    }
}

/// A tenant as requests see it.
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub is_default: bool,
    pub hostnames: Vec<String>,
    /// `https://<first host name>:<port>/`; also the `iss` of its tokens.
    pub endpoint: String,
    /// The `aud` of its tokens.
    pub audience: String,
    /// The tenant's own rate limits (the deployment's defaults fill the rest).
    pub limits: LimitTable,
    /// Its rate limiters and in-flight cap, carried over from snapshot to snapshot.
    pub throttle: Arc<TenantThrottle>,
    keys: Vec<(KeySlot, Hmac<Sha256>)>,
    signer: TokenSigner,
    /// Every key whose tokens may still verify, oldest first; see [`PublishedKey`].
    verifying_keys: Vec<PublishedKey>,
}

/// A tenant's public signing key and until when it is published.
#[derive(Debug, Clone)]
pub struct PublishedKey {
    pub key: VerifyingKey,
    /// When the key leaves the JWKS (and stops verifying): set by a rotation to the moment
    /// every token the key can have signed has expired. `None` while it signs.
    pub retired_at: Option<Timestamp>,
}

impl PublishedKey {
    pub fn is_published(&self, now: Timestamp) -> bool {
        self.retired_at.is_none_or(|retired| now < retired)
    }
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Tenant {
    pub(crate) fn from_record(
        record: &TenantRecord,
        master_key: &MasterKey,
        endpoints: &Endpoints,
        throttle: Arc<TenantThrottle>,
    ) -> anyhow::Result<Self> {
        let mut keys = Vec::with_capacity(2);
        for slot in KeySlot::BOTH {
            let key = open_access_key(record, slot, master_key)?;
            // Keyed once here; each request clones the keyed state instead of re-keying.
            keys.push((slot, Hmac::<Sha256>::new_from_slice(key.as_bytes())?));
        }
        let (kid, material) = open_current_signing_key(record, master_key)?;
        let loaded_at = Timestamp::now();
        let mut verifying_keys = Vec::with_capacity(record.signing_keys.len());
        for key in &record.signing_keys {
            let published = PublishedKey {
                key: VerifyingKey::from_spki(
                    &key.kid,
                    key.algorithm.parse()?,
                    &key.public_key_der,
                )?,
                retired_at: key.retired_at,
            };
            // Keys retired for good need not be kept; later instants only retire more.
            if published.is_published(loaded_at) {
                verifying_keys.push(published);
            }
        }
        Ok(Self {
            id: record.id,
            name: record.name.clone(),
            is_default: record.is_default,
            hostnames: record.hostnames.clone(),
            endpoint: endpoints.endpoint(&record.hostnames),
            audience: format!("callsign:{}", record.id),
            limits: record.limits.clone(),
            throttle,
            keys,
            signer: TokenSigner::new(&kid, &material)?,
            verifying_keys,
        })
    }

    /// The keys published at `now` (what the JWKS lists), oldest first.
    pub fn published_keys(&self, now: Timestamp) -> impl Iterator<Item = &VerifyingKey> {
        self.verifying_keys
            .iter()
            .filter(move |k| k.is_published(now))
            .map(|k| &k.key)
    }

    /// The key `kid` of this tenant, if it is published at `now`.
    pub fn verifying_key(&self, kid: &str, now: Timestamp) -> Option<&VerifyingKey> {
        self.published_keys(now).find(|k| k.kid == kid)
    }

    /// Which access key, if any, produced `signature` over `message`. Both keys are always
    /// checked and each comparison is constant-time, so timing says nothing about either key.
    pub fn verify_hmac(&self, message: &[u8], signature: &[u8]) -> Option<KeySlot> {
        let mut matched = None;
        for (slot, keyed) in &self.keys {
            let mut mac = keyed.clone();
            mac.update(message);
            if mac.verify_slice(signature).is_ok() && matched.is_none() {
                matched = Some(*slot);
            }
        }
        matched
    }

    pub fn issuer(&self) -> TokenIssuer<'_> {
        TokenIssuer {
            tenant: self.id,
            issuer: &self.endpoint,
            audience: &self.audience,
            signer: &self.signer,
        }
    }
}

#[derive(Default)]
struct Snapshot {
    epoch: i64,
    by_host: HashMap<String, Arc<Tenant>>,
    default: Option<Arc<Tenant>>,
    all: Vec<Arc<Tenant>>,
}

pub struct TenantDirectory {
    snapshot: ArcSwap<Snapshot>,
    repo: Arc<dyn Repository>,
    master_key: MasterKey,
    endpoints: Endpoints,
    throttle: ThrottleSettings,
    /// Serialises reloads, so an older read can never replace a newer one.
    reload_lock: Mutex<()>,
}

impl TenantDirectory {
    pub async fn load(
        repo: Arc<dyn Repository>,
        master_key: MasterKey,
        endpoints: Endpoints,
        throttle: ThrottleSettings,
    ) -> anyhow::Result<Self> {
        let directory = Self {
            snapshot: ArcSwap::from_pointee(Snapshot {
                epoch: -1,
                ..Snapshot::default()
            }),
            repo,
            master_key,
            endpoints,
            throttle,
            reload_lock: Mutex::new(()),
        };
        directory.reload().await?;
        Ok(directory)
    }

    /// The tenant serving `host`: the one that claims it, else the default tenant.
    pub fn resolve(&self, host: &Hostname) -> Option<Arc<Tenant>> {
        let snapshot = self.snapshot.load();
        snapshot
            .by_host
            .get(host.as_str())
            .or(snapshot.default.as_ref())
            .cloned()
    }

    pub fn tenants(&self) -> Vec<Arc<Tenant>> {
        self.snapshot.load().all.clone()
    }

    /// Every host name some tenant claims, sorted.
    pub fn hostnames(&self) -> Vec<String> {
        let mut names: Vec<String> = self.snapshot.load().by_host.keys().cloned().collect();
        names.sort();
        names
    }

    /// The tenant with `id`, if this server knows it.
    pub fn get(&self, id: TenantId) -> Option<Arc<Tenant>> {
        self.snapshot
            .load()
            .all
            .iter()
            .find(|t| t.id == id)
            .cloned()
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn throttle_settings(&self) -> &ThrottleSettings {
        &self.throttle
    }

    /// The change epoch of the snapshot in use.
    pub fn epoch(&self) -> i64 {
        self.snapshot.load().epoch
    }

    /// Re-reads every tenant when the change epoch has moved. Returns whether it did.
    pub async fn refresh_if_changed(&self) -> anyhow::Result<bool> {
        let epoch = self.repo.change_epoch().await?;
        if epoch == self.snapshot.load().epoch {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Re-reads every tenant now.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let _guard = self.reload_lock.lock().await;
        // Read the epoch first: a change committed after it is seen by the next poll.
        let epoch = self.repo.change_epoch().await?;
        let records = self.repo.load_tenants().await?;
        let previous: HashMap<TenantId, Arc<TenantThrottle>> = self
            .snapshot
            .load()
            .all
            .iter()
            .map(|t| (t.id, t.throttle.clone()))
            .collect();
        let mut snapshot = Snapshot {
            epoch,
            ..Snapshot::default()
        };
        for record in &records {
            // A tenant keeps its throttle state across reloads; only changed limits reset.
            let throttle = match previous.get(&record.id) {
                Some(old) => {
                    old.apply(&self.throttle, &record.limits);
                    old.clone()
                }
                None => Arc::new(TenantThrottle::new(&self.throttle, &record.limits)),
            };
            let built = Tenant::from_record(record, &self.master_key, &self.endpoints, throttle);
            let tenant = match built {
                Ok(tenant) => Arc::new(tenant),
                Err(error) => {
                    // One unreadable tenant must not take the others down with it.
                    tracing::error!(tenant = %record.id, error = %format!("{error:#}"), "tenant not loaded");
                    continue;
                }
            };
            for hostname in &tenant.hostnames {
                snapshot.by_host.insert(hostname.clone(), tenant.clone());
            }
            if tenant.is_default {
                snapshot.default = Some(tenant.clone());
            }
            snapshot.all.push(tenant);
        }
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }
}
