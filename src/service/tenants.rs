//! Creating tenants and reading their secrets back, for the server's first start and the CLI.

use crate::crypto::master_key::MasterKey;
use crate::crypto::signing::{SigningAlgorithm, SigningKeyMaterial};
use crate::domain::{
    AccessKey, ExpiryMinutes, Hostname, KeySlot, LimitSetting, LimitTable, LimitedOperation,
    TenantId, TenantName, Timestamp,
};
use crate::store::{
    AccessKeyRecord, DeletionCounts, Repository, SigningKeyRecord, TenantChanges, TenantRecord,
    TenantScope,
};

use super::audit::Caller;
use super::{ServiceError, ServiceResult};
use crate::domain::audit::Operation;

/// The name of the tenant a server creates on first start.
pub const DEFAULT_TENANT_NAME: &str = "default";

pub struct NewTenant {
    pub name: TenantName,
    pub hostnames: Vec<Hostname>,
    pub is_default: bool,
    pub algorithm: SigningAlgorithm,
    /// The tenant's own limits from the start; empty: the deployment's defaults.
    pub limits: LimitTable,
}

/// A tenant just created, with the only copy of its access keys that leaves the server.
pub struct CreatedTenant {
    pub record: TenantRecord,
    pub primary_key: AccessKey,
    pub secondary_key: AccessKey,
}

pub fn access_key_context(tenant: TenantId, slot: KeySlot) -> String {
    format!("access-key:{tenant}:{}", slot.as_str())
}

pub fn signing_key_context(tenant: TenantId, kid: &str) -> String {
    format!("signing-key:{tenant}:{kid}")
}

pub async fn create_tenant(
    repo: &dyn Repository,
    master_key: &MasterKey,
    spec: NewTenant,
    caller: &Caller,
    now: Timestamp,
) -> ServiceResult<CreatedTenant> {
    let created = new_tenant(master_key, spec, now)?;
    let record = &created.record;
    let event = caller.event(
        record.id,
        Operation::TenantCreate,
        None,
        now,
        serde_json::json!({
            "name": record.name,
            "hostnames": record.hostnames,
            "isDefault": record.is_default,
            "limits": record.limits.iter().map(|(op, s)| (op.as_str().to_owned(), serde_json::Value::String(s.to_string()))).collect::<serde_json::Map<_, _>>(),
            "signingKey": {"kid": record.signing_keys[0].kid, "algorithm": record.signing_keys[0].algorithm},
        }),
    );
    repo.insert_tenant(record, &event).await?;
    Ok(created)
}

/// A tenant's record with fresh keys, sealed, not yet stored.
pub(crate) fn new_tenant(
    master_key: &MasterKey,
    spec: NewTenant,
    now: Timestamp,
) -> ServiceResult<CreatedTenant> {
    let hostnames = distinct_hostnames(spec.hostnames)?;
    let id = TenantId::generate();
    let primary_key = AccessKey::generate();
    let secondary_key = AccessKey::generate();
    let access_keys = [
        (KeySlot::Primary, &primary_key),
        (KeySlot::Secondary, &secondary_key),
    ]
    .into_iter()
    .map(|(slot, key)| {
        Ok(AccessKeyRecord {
            slot,
            sealed_key: master_key.seal(key.as_bytes(), &access_key_context(id, slot))?,
            created_at: now,
        })
    })
    .collect::<anyhow::Result<Vec<_>>>()?;
    let signing_key = new_signing_key(id, spec.algorithm, master_key, now)?;
    let record = TenantRecord {
        id,
        name: spec.name.as_str().to_owned(),
        is_default: spec.is_default,
        created_at: now,
        hostnames,
        access_keys,
        signing_keys: vec![signing_key],
        audit_retention_days: None,
        limits: spec.limits,
    };
    Ok(CreatedTenant {
        record,
        primary_key,
        secondary_key,
    })
}

pub(crate) fn new_signing_key(
    tenant: TenantId,
    algorithm: SigningAlgorithm,
    master_key: &MasterKey,
    now: Timestamp,
) -> anyhow::Result<SigningKeyRecord> {
    let material = SigningKeyMaterial::generate(algorithm)?;
    let kid = uuid::Uuid::now_v7().simple().to_string();
    Ok(SigningKeyRecord {
        sealed_private_key: master_key.seal(
            material.private_pkcs8_pem.as_bytes(),
            &signing_key_context(tenant, &kid),
        )?,
        kid,
        algorithm: algorithm.as_str().to_owned(),
        public_key_der: material.public_key_der,
        created_at: now,
        retired_at: None,
    })
}

/// How long a key superseded by a rotation stays published: the longest a token lives, plus a
/// margin. Instances that have not yet picked the rotation up keep signing with the old key
/// until their next refresh (a fraction of a second, longer only while they cannot reach the
/// database, when they cannot record tokens either), and clocks of instances may disagree.
pub const ROTATION_MARGIN_MS: i64 = 15 * 60_000;
pub const SUPERSEDED_KEY_RETENTION_MS: i64 = ExpiryMinutes::MAX * 60_000 + ROTATION_MARGIN_MS;

/// The outcome of a signing-key rotation.
#[derive(Debug, Clone)]
pub struct RotatedKey {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    /// The keys it superseded, which stay published until this instant.
    pub superseded: Vec<String>,
    pub superseded_until: Timestamp,
}

/// Gives `tenant` a new signing key: tokens are signed with it from now on (on every server
/// within a refresh interval), while the keys it supersedes stay published, and verify, until
/// every token they can have signed has expired. `algorithm` defaults to the current key's.
pub async fn rotate_signing_key(
    repo: &dyn Repository,
    master_key: &MasterKey,
    tenant: &TenantRecord,
    algorithm: Option<SigningAlgorithm>,
    caller: &Caller,
    now: Timestamp,
) -> ServiceResult<RotatedKey> {
    let current: Vec<&SigningKeyRecord> = tenant
        .signing_keys
        .iter()
        .filter(|k| k.retired_at.is_none())
        .collect();
    let algorithm = match (algorithm, current.last()) {
        (Some(algorithm), _) => algorithm,
        (None, Some(key)) => key.algorithm.parse()?,
        (None, None) => SigningAlgorithm::default(),
    };
    let key = new_signing_key(tenant.id, algorithm, master_key, now)?;
    let superseded_until = Timestamp::from_millis(now.millis() + SUPERSEDED_KEY_RETENTION_MS);
    let superseded: Vec<&str> = current.iter().map(|k| k.kid.as_str()).collect();
    let event = caller.event(
        tenant.id,
        Operation::SigningKeyRotate,
        None,
        now,
        serde_json::json!({
            "kid": key.kid,
            "algorithm": key.algorithm,
            "superseded": superseded,
            "supersededPublishedUntil": superseded_until.to_rfc3339(),
        }),
    );
    if !repo
        .rotate_signing_key(tenant.id, &key, superseded_until, &event)
        .await?
    {
        return Err(ServiceError::NotFound(format!(
            "tenant '{}' no longer exists",
            tenant.name
        )));
    }
    Ok(RotatedKey {
        kid: key.kid,
        algorithm,
        superseded: current.iter().map(|k| k.kid.clone()).collect(),
        superseded_until,
    })
}

/// Unseals a tenant's access key in `slot`.
pub fn open_access_key(
    tenant: &TenantRecord,
    slot: KeySlot,
    master_key: &MasterKey,
) -> anyhow::Result<AccessKey> {
    let record = tenant
        .access_keys
        .iter()
        .find(|k| k.slot == slot)
        .ok_or_else(|| anyhow::anyhow!("tenant {} has no {} key", tenant.name, slot.as_str()))?;
    let bytes = master_key.open(&record.sealed_key, &access_key_context(tenant.id, slot))?;
    Ok(AccessKey::from_bytes(bytes.to_vec())?)
}

/// Unseals the key that signs a tenant's new tokens: the newest one not retired.
pub fn open_current_signing_key(
    tenant: &TenantRecord,
    master_key: &MasterKey,
) -> anyhow::Result<(String, SigningKeyMaterial)> {
    let record = tenant
        .signing_keys
        .iter()
        .rev()
        .find(|k| k.retired_at.is_none())
        .ok_or_else(|| anyhow::anyhow!("tenant {} has no active signing key", tenant.name))?;
    let pem = master_key.open(
        &record.sealed_private_key,
        &signing_key_context(tenant.id, &record.kid),
    )?;
    let material = SigningKeyMaterial {
        algorithm: record.algorithm.parse()?,
        private_pkcs8_pem: zeroize::Zeroizing::new(String::from_utf8(pem.to_vec())?),
        public_key_der: record.public_key_der.clone(),
    };
    Ok((record.kid.clone(), material))
}

/// `endpoint=https://host:port/;accesskey=…`, the form every ACS SDK takes.
pub fn connection_string(endpoint: &str, key: &AccessKey) -> String {
    format!("endpoint={endpoint};accesskey={}", key.to_base64())
}

/// Host names as strings, refusing one listed twice.
fn distinct_hostnames(hostnames: Vec<Hostname>) -> ServiceResult<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(hostnames.len());
    for hostname in hostnames {
        if out.iter().any(|h| h == hostname.as_str()) {
            return Err(ServiceError::Validation(format!(
                "host name '{hostname}' is listed twice"
            )));
        }
        out.push(hostname.as_str().to_owned());
    }
    Ok(out)
}

fn unknown_tenant(tenant: TenantId) -> ServiceError {
    ServiceError::UnknownTenant(format!("Tenant '{tenant}' was not found."))
}

/// One tenant as stored now.
pub async fn find_tenant(repo: &dyn Repository, tenant: TenantId) -> ServiceResult<TenantRecord> {
    repo.fetch_tenants(&TenantScope::one(tenant))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| unknown_tenant(tenant))
}

/// Validated changes to a tenant; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantUpdate {
    pub name: Option<TenantName>,
    /// Replaces the host names the tenant claims.
    pub hostnames: Option<Vec<Hostname>>,
    /// Per operation: a setting, or `None` to return to the deployment's default.
    pub limits: Vec<(LimitedOperation, Option<LimitSetting>)>,
    /// `Some(None)`: keep audit events forever.
    pub audit_retention_days: Option<Option<i32>>,
}

/// Applies `update` to a tenant in one transaction with its `tenant.update` event, which
/// lists what changed. Nothing is written when any part is refused.
pub async fn update_tenant(
    repo: &dyn Repository,
    tenant: TenantId,
    update: TenantUpdate,
    caller: &Caller,
    now: Timestamp,
) -> ServiceResult<()> {
    if update
        .audit_retention_days
        .is_some_and(|days| days.is_some_and(|d| d < 1))
    {
        return Err(ServiceError::Validation(
            "audit retention must be at least 1 day".into(),
        ));
    }
    let mut seen = Vec::new();
    for (op, _) in &update.limits {
        if seen.contains(op) {
            return Err(ServiceError::Validation(format!(
                "the limit of {op} is given twice"
            )));
        }
        seen.push(*op);
    }
    let changes = TenantChanges {
        name: update.name.map(|n| n.as_str().to_owned()),
        hostnames: update.hostnames.map(distinct_hostnames).transpose()?,
        limits: update.limits,
        audit_retention_days: update.audit_retention_days,
    };
    if changes.is_empty() {
        return Err(ServiceError::Validation(
            "nothing to change: give a name, host names, limits or an audit retention".into(),
        ));
    }
    let mut details = serde_json::Map::new();
    if let Some(name) = &changes.name {
        details.insert("name".into(), name.clone().into());
    }
    if let Some(hostnames) = &changes.hostnames {
        details.insert("hostnames".into(), hostnames.clone().into());
    }
    if !changes.limits.is_empty() {
        let limits: serde_json::Map<String, serde_json::Value> = changes
            .limits
            .iter()
            .map(|(op, setting)| {
                let value = match setting {
                    Some(setting) => setting.to_string().into(),
                    None => serde_json::Value::Null,
                };
                (op.as_str().to_owned(), value)
            })
            .collect();
        details.insert("limits".into(), limits.into());
    }
    if let Some(days) = changes.audit_retention_days {
        details.insert("auditRetentionDays".into(), days.into());
    }
    let event = caller.event(
        tenant,
        Operation::TenantUpdate,
        None,
        now,
        serde_json::Value::Object(details),
    );
    if !repo.update_tenant(tenant, &changes, &event).await? {
        return Err(unknown_tenant(tenant));
    }
    Ok(())
}

/// Deletes a tenant: its identities and token records go, its keys and signing keys go (so
/// its tokens can no longer be verified and its requests no longer authenticate), and its
/// audit trail stays, under its retention, with a `tenant.delete` event at the end.
pub async fn delete_tenant(
    repo: &dyn Repository,
    tenant: TenantId,
    caller: &Caller,
    now: Timestamp,
) -> ServiceResult<DeletionCounts> {
    let make_event = |counts: DeletionCounts| {
        caller.event(
            tenant,
            Operation::TenantDelete,
            None,
            now,
            serde_json::json!({
                "identitiesRemoved": counts.identities,
                "tokenRecordsRemoved": counts.issued_tokens,
            }),
        )
    };
    repo.delete_tenant(tenant, now, &make_event)
        .await?
        .ok_or_else(|| unknown_tenant(tenant))
}

/// Replaces the access key in `slot` with a new random one and returns it: the only copy that
/// leaves the server. The old value stops verifying as soon as a server reloads (at once on
/// the server that made the change); the other key is untouched.
pub async fn regenerate_access_key(
    repo: &dyn Repository,
    master_key: &MasterKey,
    tenant: TenantId,
    slot: KeySlot,
    caller: &Caller,
    now: Timestamp,
) -> ServiceResult<AccessKey> {
    let key = AccessKey::generate();
    let sealed = master_key.seal(key.as_bytes(), &access_key_context(tenant, slot))?;
    let event = caller.event(
        tenant,
        Operation::KeyRegenerate,
        None,
        now,
        serde_json::json!({"keyType": slot.as_str()}),
    );
    if !repo
        .replace_access_key(tenant, slot, &sealed, now, &event)
        .await?
    {
        return Err(unknown_tenant(tenant));
    }
    Ok(key)
}
