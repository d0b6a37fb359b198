//! Operator credentials: creating and revoking them, and verifying the bearer credential of
//! an admin API request.
//!
//! Credentials are stored only as argon2id hashes (the `argon2` crate, RustCrypto's
//! maintained implementation, with its default OWASP parameters: 19 MiB, 2 passes). An
//! argon2 verification costs tens of milliseconds of CPU on purpose, so it runs once per
//! credential and server: a verified credential is remembered in a `moka` cache keyed by the
//! SHA-256 of the presented text (a fast digest; the text itself is never kept), with an
//! expiry. `moka` is a maintained concurrent cache with per-entry time-to-live and a size
//! bound, so neither stale entries nor a flood of distinct credentials can grow it without
//! limit. A cache hit still requires the credential to be active in the in-memory list, which
//! is reloaded with the change epoch, so revoking one takes effect at once on the server that
//! did it and within the refresh interval on the others.
//!
//! Every attempt the cache cannot answer (a wrong, unknown, malformed or missing credential)
//! takes a place from a per-source-address `governor` limiter before any hashing, so a client
//! can neither guess credentials quickly nor make the server burn CPU on argon2; at most two
//! hashes run at once whatever the load.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::domain::audit::{DEPLOYMENT, Operation};
use crate::domain::{OperatorCredential, OperatorCredentialId, Timestamp};
use crate::store::{OperatorCredentialRecord, Repository};

use super::audit::Caller;
use super::{ServiceError, ServiceResult};

/// How operator authentication is tuned.
#[derive(Debug, Clone)]
pub struct OperatorAuthSettings {
    /// How long a verified credential is remembered before argon2 runs again.
    pub cache_ttl: Duration,
    /// Attempts per source address and minute that the cache cannot answer.
    pub attempts_per_minute: NonZeroU32,
}

impl Default for OperatorAuthSettings {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(300),
            attempts_per_minute: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// Why an admin request did not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum OperatorAuthError {
    /// No credential, a malformed one, an unknown, revoked or wrong one; the reason is for
    /// the audit trail and the client alike (it reveals nothing about any credential).
    #[error("{0}")]
    Rejected(&'static str),
    /// Too many failed attempts from this address; try again after the duration.
    #[error("too many failed operator authentications from this address")]
    Throttled(Duration),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Verifies admin API credentials.
pub struct OperatorAuth {
    repo: Arc<dyn Repository>,
    /// Active credentials: id → argon2 PHC string.
    active: ArcSwap<HashMap<OperatorCredentialId, Arc<str>>>,
    verified: moka::sync::Cache<[u8; 32], OperatorCredentialId>,
    attempts: DefaultKeyedRateLimiter<IpAddr>,
    hashing: Semaphore,
}

impl OperatorAuth {
    pub async fn load(
        repo: Arc<dyn Repository>,
        settings: &OperatorAuthSettings,
    ) -> anyhow::Result<Self> {
        let burst = settings.attempts_per_minute;
        let every = Duration::from_secs(60) / burst.get();
        let quota = Quota::with_period(every)
            .unwrap_or_else(|| Quota::per_minute(burst))
            .allow_burst(burst);
        let auth = Self {
            repo,
            active: ArcSwap::from_pointee(HashMap::new()),
            verified: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(settings.cache_ttl)
                .build(),
            attempts: RateLimiter::keyed(quota),
            hashing: Semaphore::new(2),
        };
        auth.reload().await?;
        Ok(auth)
    }

    /// Re-reads the active credentials.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let active: HashMap<OperatorCredentialId, Arc<str>> = self
            .repo
            .load_operator_credentials()
            .await?
            .into_iter()
            .filter(|c| c.revoked_at.is_none())
            .map(|c| (c.id, Arc::from(c.phc_hash)))
            .collect();
        self.active.store(Arc::new(active));
        Ok(())
    }

    /// Whether any credential could authenticate.
    pub fn has_credentials(&self) -> bool {
        self.active_count() > 0
    }

    /// How many credentials could authenticate.
    pub fn active_count(&self) -> usize {
        self.active.load().len()
    }

    /// Forgets per-address counters that have fully recovered, bounding their memory.
    pub fn forget_idle_addresses(&self) {
        self.attempts.retain_recent();
        self.attempts.shrink_to_fit();
    }

    /// Who presented `presented` (the bearer text, if any) from `source`.
    pub async fn authenticate(
        &self,
        presented: Option<&str>,
        source: Option<IpAddr>,
    ) -> Result<OperatorCredentialId, OperatorAuthError> {
        let active = self.active.load_full();
        let digest: Option<[u8; 32]> = presented.map(|text| Sha256::digest(text).into());
        if let Some(digest) = &digest
            && let Some(id) = self.verified.get(digest)
            && active.contains_key(&id)
        {
            return Ok(id);
        }
        if let Some(address) = source {
            self.attempts.check_key(&address).map_err(|not_until| {
                OperatorAuthError::Throttled(not_until.wait_time_from(self.attempts.clock().now()))
            })?;
        }
        let presented = presented.ok_or(OperatorAuthError::Rejected(
            "the admin API needs an operator credential: Authorization: Bearer <credential>",
        ))?;
        let credential = OperatorCredential::parse(presented)
            .map_err(|_| OperatorAuthError::Rejected("the operator credential is malformed"))?;
        let id = credential.id();
        let stored = active.get(&id).cloned();
        let known = stored.is_some();
        let _slot = self
            .hashing
            .acquire()
            .await
            .map_err(|e| OperatorAuthError::Internal(e.into()))?;
        // An unknown id is checked against a dummy hash, so timing does not tell which
        // credential ids exist.
        let matched = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
            let phc: &str = match &stored {
                Some(phc) => phc,
                None => dummy_hash()?,
            };
            let parsed = PasswordHash::new(phc).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
            Ok(Argon2::default()
                .verify_password(credential.expose().as_bytes(), &parsed)
                .is_ok())
        })
        .await
        .map_err(|e| OperatorAuthError::Internal(e.into()))??;
        match (matched && known, digest) {
            (true, Some(digest)) => {
                self.verified.insert(digest, id);
                Ok(id)
            }
            _ => Err(OperatorAuthError::Rejected(
                "the operator credential is not valid",
            )),
        }
    }
}

/// A hash of a random secret, to verify unknown credential ids against.
fn dummy_hash() -> anyhow::Result<&'static str> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let hash = hash_secret(OperatorCredential::generate().expose())?;
    Ok(DUMMY.get_or_init(|| hash))
}

fn hash_secret(secret: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing a credential: {e}"))?
        .to_string())
}

/// A credential's label: what it is for, or whom (1 to 64 printable characters).
fn check_name(name: &str) -> ServiceResult<()> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ServiceError::Validation(
            "a credential name is 1 to 64 printable characters".into(),
        ));
    }
    Ok(())
}

/// Creates a credential and returns it: the only time its text exists outside the operator's
/// hands. Its hash and a `operator.credential.create` event on the deployment chain commit
/// together.
pub async fn create_credential(
    repo: &dyn Repository,
    name: &str,
    caller: &Caller,
    now: Timestamp,
) -> ServiceResult<(OperatorCredentialRecord, OperatorCredential)> {
    check_name(name)?;
    let credential = OperatorCredential::generate();
    let text = credential.clone();
    let phc_hash = tokio::task::spawn_blocking(move || hash_secret(text.expose()))
        .await
        .map_err(anyhow::Error::from)??;
    let record = OperatorCredentialRecord {
        id: credential.id(),
        name: name.to_owned(),
        phc_hash,
        created_at: now,
        revoked_at: None,
    };
    let event = caller.event(
        DEPLOYMENT,
        Operation::CredentialCreate,
        None,
        now,
        json!({"credentialId": record.id.to_string(), "name": record.name}),
    );
    repo.insert_operator_credential(&record, &event).await?;
    Ok((record, credential))
}

/// Revokes a credential; running servers stop accepting it when they reload.
pub async fn revoke_credential(
    repo: &dyn Repository,
    id: OperatorCredentialId,
    caller: &Caller,
    now: Timestamp,
) -> ServiceResult<()> {
    let event = caller.event(
        DEPLOYMENT,
        Operation::CredentialRevoke,
        None,
        now,
        json!({"credentialId": id.to_string()}),
    );
    if !repo.revoke_operator_credential(id, now, &event).await? {
        return Err(ServiceError::NotFound(format!(
            "no active operator credential with id {id}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_own_secret() {
        let credential = OperatorCredential::generate();
        let phc = hash_secret(credential.expose()).expect("hash");
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains(credential.expose()));
        let parsed = PasswordHash::new(&phc).expect("phc");
        assert!(
            Argon2::default()
                .verify_password(credential.expose().as_bytes(), &parsed)
                .is_ok()
        );
        let other = OperatorCredential::generate();
        assert!(
            Argon2::default()
                .verify_password(other.expose().as_bytes(), &parsed)
                .is_err()
        );
    }
}
