//! Token verification as introspection answers it (RFC 7662): is this token one the tenant
//! issued, unaltered, unexpired, and neither revoked nor of a deleted identity?
//!
//! Everything here is in memory: the tenant's published keys come from the directory and the
//! revocation state from the [`RevocationIndex`]; time comes in as an argument. Why a token is
//! inactive is never shown to the caller — RFC 7662 answers `active: false` and nothing more,
//! so a token of another tenant is indistinguishable from garbage — but it is logged at debug
//! level.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::{IdentityId, ScopeSet, TenantId, Timestamp};

use super::directory::Tenant;
use super::revocations::{RevocationIndex, RevocationStatus};

/// Longer tokens are refused unread: callsign's are well under a kilobyte.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How far `nbf` may lie in the future: tokens minted by another instance whose clock runs a
/// little ahead are valid here at once.
pub const NOT_BEFORE_LEEWAY_SECONDS: i64 = 60;

/// Why a token is not active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inactive {
    /// Not a JWT, a JWT of an unknown algorithm (`none` included), or claims callsign never
    /// writes.
    Malformed,
    /// No `kid`, or one that no key of this tenant published now has.
    UnknownKey,
    /// The header's `alg` is not the algorithm of the key its `kid` names.
    AlgorithmMismatch,
    BadSignature,
    Expired,
    NotYetValid,
    /// Signed by this tenant's key, but naming another tenant.
    WrongTenant,
    Revoked,
    Deleted,
}

impl Inactive {
    pub fn as_str(self) -> &'static str {
        match self {
            Inactive::Malformed => "malformed",
            Inactive::UnknownKey => "unknown key",
            Inactive::AlgorithmMismatch => "algorithm mismatch",
            Inactive::BadSignature => "bad signature",
            Inactive::Expired => "expired",
            Inactive::NotYetValid => "not yet valid",
            Inactive::WrongTenant => "wrong tenant",
            Inactive::Revoked => "revoked",
            Inactive::Deleted => "identity deleted",
        }
    }
}

/// The claims of an active token, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveToken {
    pub subject: IdentityId,
    pub scopes: ScopeSet,
    pub issuer: String,
    pub audience: String,
    pub jti: Uuid,
    pub issued_at: i64,
    pub not_before: i64,
    pub expires_at: i64,
}

/// The claims callsign writes (see `tokens::Claims`); a token without one of them was not
/// minted by callsign.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    jti: Uuid,
    iat: i64,
    nbf: i64,
    exp: i64,
    scp: String,
    resource_id: String,
}

/// Tokens whose signature and claims verified recently, so that a token a downstream service
/// presents again is not verified again: signature verification is most of what
/// introspection costs, and verifiers see the same tokens over and over.
///
/// What is cached is only what cannot change for a given token — that its signature is good
/// and what its claims say. Everything that can change is checked on every answer, cached or
/// not: the clock (expiry), whether the signing key is still published (rotation, tenant
/// re-keying), and the revocation index (revocation and deletion). So a revocation or deletion
/// takes effect for cached tokens the moment the index has it, with nothing to invalidate by
/// hand. A tenant that is deleted is not found before the cache is reached.
///
/// Entries are keyed by the tenant and a SHA-256 digest of the whole token (an altered token
/// has another digest, so it misses and is verified), bounded in number, and dropped when
/// their token expires.
pub struct VerifiedTokens {
    cache: Option<moka::sync::Cache<CacheKey, Arc<Verified>>>,
}

/// The tenant and the SHA-256 digest of the token.
type CacheKey = (TenantId, [u8; 32]);

/// A token whose signature verified, with the key that signed it.
struct Verified {
    token: ActiveToken,
    kid: String,
    /// The issue instant to the millisecond (from the UUIDv7 jti).
    issued: Timestamp,
}

/// Drops an entry when its token expires: it can never be active again.
struct UntilExpiry;

impl moka::Expiry<CacheKey, Arc<Verified>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Verified>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let left = value.token.expires_at - Timestamp::now().seconds();
        Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
    }
}

/// Whether introspection found the token in the cache (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    Miss,
}

impl VerifiedTokens {
    /// A cache of at most `capacity` tokens; 0 turns it off.
    pub fn new(capacity: u64) -> Self {
        let cache = (capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpiry)
                .build()
        });
        Self { cache }
    }

    /// Checks `token` for `tenant` at `now`, verifying its signature only if it is not cached.
    pub fn introspect(
        &self,
        tenant: &Tenant,
        revocations: &RevocationIndex,
        token: &str,
        now: Timestamp,
    ) -> (Result<ActiveToken, Inactive>, CacheUse) {
        if token.len() > MAX_TOKEN_BYTES {
            return (Err(Inactive::Malformed), CacheUse::Miss);
        }
        let Some(cache) = &self.cache else {
            let answer = verify(tenant, token, now).and_then(|v| v.check(tenant, revocations, now));
            return (answer, CacheUse::Miss);
        };
        let key = (tenant.id, Sha256::digest(token.as_bytes()).into());
        if let Some(verified) = cache.get(&key) {
            return (verified.check(tenant, revocations, now), CacheUse::Hit);
        }
        let answer = verify(tenant, token, now).and_then(|verified| {
            let verified = Arc::new(verified);
            let answer = verified.check(tenant, revocations, now);
            // Only tokens that can still become or stay active are worth a place.
            if !matches!(answer, Err(Inactive::Expired | Inactive::Deleted)) {
                cache.insert(key, verified);
            }
            answer
        });
        (answer, CacheUse::Miss)
    }
}

/// Checks `token` for `tenant` at `now`, without a cache.
pub fn introspect(
    tenant: &Tenant,
    revocations: &RevocationIndex,
    token: &str,
    now: Timestamp,
) -> Result<ActiveToken, Inactive> {
    VerifiedTokens::new(0)
        .introspect(tenant, revocations, token, now)
        .0
}

/// What holds for `token` whenever it is checked: a key of `tenant` published at `now`
/// signed it, with its own algorithm, over claims callsign writes, naming this tenant.
fn verify(tenant: &Tenant, token: &str, now: Timestamp) -> Result<Verified, Inactive> {
    // An unknown `alg` (`none`, say) does not parse.
    let header = decode_header(token).map_err(|_| Inactive::Malformed)?;
    let kid = header.kid.ok_or(Inactive::UnknownKey)?;
    let key = tenant
        .verifying_key(&kid, now)
        .ok_or(Inactive::UnknownKey)?;
    // Only the key's own algorithm: no HS256 keyed with the public key, no downgrade.
    let algorithm = key.algorithm.jwt_algorithm();
    if header.alg != algorithm {
        return Err(Inactive::AlgorithmMismatch);
    }
    let mut validation = Validation::new(algorithm);
    // Time is checked on every answer (see `Verified::check`), audience below.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    let claims = decode::<Claims>(token, &key.decoding, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => Inactive::BadSignature,
            _ => Inactive::Malformed,
        })?
        .claims;

    // `iss` is not compared: it names the listener (host and port), which an operator may
    // change without invalidating tokens. The key, which belongs to this tenant alone, already
    // proves who issued the token.
    let subject = IdentityId::parse(&claims.sub).map_err(|_| Inactive::Malformed)?;
    let resource: TenantId = claims
        .resource_id
        .parse()
        .map_err(|_| Inactive::Malformed)?;
    if subject.tenant() != tenant.id || resource != tenant.id || claims.aud != tenant.audience {
        return Err(Inactive::WrongTenant);
    }
    let scopes = ScopeSet::parse(&claims.scp.split(' ').collect::<Vec<_>>())
        .map_err(|_| Inactive::Malformed)?;
    // The jti is a UUIDv7 carrying the issue instant to the millisecond; `iat` has only whole
    // seconds, too coarse to order a token against a revocation.
    let issued = claims
        .jti
        .get_timestamp()
        .map(|ts| {
            let (seconds, nanos) = ts.to_unix();
            Timestamp::from_millis(seconds as i64 * 1000 + i64::from(nanos / 1_000_000))
        })
        .ok_or(Inactive::Malformed)?;
    Ok(Verified {
        token: ActiveToken {
            subject,
            scopes,
            issuer: claims.iss,
            audience: claims.aud,
            jti: claims.jti,
            issued_at: claims.iat,
            not_before: claims.nbf,
            expires_at: claims.exp,
        },
        kid,
        issued,
    })
}

impl Verified {
    /// What can change after a token verified: the clock, the tenant's published keys, and
    /// revocations.
    fn check(
        &self,
        tenant: &Tenant,
        revocations: &RevocationIndex,
        now: Timestamp,
    ) -> Result<ActiveToken, Inactive> {
        let now_seconds = now.seconds();
        if now_seconds >= self.token.expires_at {
            return Err(Inactive::Expired);
        }
        if self.token.not_before > now_seconds + NOT_BEFORE_LEEWAY_SECONDS {
            return Err(Inactive::NotYetValid);
        }
        if tenant.verifying_key(&self.kid, now).is_none() {
            return Err(Inactive::UnknownKey);
        }
        match revocations.status(self.token.subject, self.issued) {
            RevocationStatus::Live => Ok(self.token.clone()),
            RevocationStatus::Revoked => Err(Inactive::Revoked),
            RevocationStatus::Deleted => Err(Inactive::Deleted),
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use super::*;
    use crate::crypto::master_key::MasterKey;
    use crate::crypto::signing::SigningAlgorithm;
    use crate::domain::{ExpiryMinutes, TenantName};
    use crate::service::directory::Endpoints;
    use crate::service::tenants::{NewTenant, SUPERSEDED_KEY_RETENTION_MS, new_tenant};
    use crate::store::{RevocationMark, TenantRecord};

    struct Fixture {
        master_key: MasterKey,
        record: TenantRecord,
        tenant: Tenant,
        revocations: RevocationIndex,
    }

    fn fixture(algorithm: SigningAlgorithm) -> Fixture {
        let master_key = MasterKey::from_bytes(&[9u8; 32]).expect("master key");
        let spec = NewTenant {
            name: TenantName::parse("t").expect("name"),
            hostnames: Vec::new(),
            is_default: true,
            algorithm,
            limits: crate::domain::LimitTable::default(),
        };
        let record = new_tenant(&master_key, spec, Timestamp::now())
            .expect("tenant")
            .record;
        let tenant = load(&record, &master_key);
        Fixture {
            master_key,
            record,
            tenant,
            revocations: RevocationIndex::empty(),
        }
    }

    fn load(record: &TenantRecord, master_key: &MasterKey) -> Tenant {
        let endpoints = Endpoints {
            https_port: 8443,
            default_host: "127.0.0.1".into(),
        };
        let throttle = crate::service::throttle::TenantThrottle::new(
            &crate::service::throttle::ThrottleSettings::default(),
            &record.limits,
        );
        Tenant::from_record(
            record,
            master_key,
            &endpoints,
            std::sync::Arc::new(throttle),
        )
        .expect("tenant loads")
    }

    fn mint(tenant: &Tenant, at: Timestamp) -> (String, IdentityId) {
        let identity = IdentityId::generate(tenant.id);
        let scopes = ScopeSet::parse(&["chat", "voip"]).expect("scopes");
        let expiry = ExpiryMinutes::parse(Some(60)).expect("expiry");
        let (token, _) = tenant
            .issuer()
            .mint(identity, &scopes, expiry, at)
            .expect("mint");
        (token.token, identity)
    }

    fn segment(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
    }

    #[test]
    fn a_fresh_token_is_active_with_its_claims() {
        for algorithm in [
            SigningAlgorithm::EdDsa,
            SigningAlgorithm::Es256,
            SigningAlgorithm::Rs256,
        ] {
            let f = fixture(algorithm);
            let now = Timestamp::now();
            let (token, identity) = mint(&f.tenant, now);
            let active = introspect(&f.tenant, &f.revocations, &token, now).expect("active token");
            assert_eq!(active.subject, identity);
            assert_eq!(active.scopes.space_joined(), "chat voip");
            assert_eq!(active.issued_at, now.seconds());
            assert_eq!(active.expires_at, now.seconds() + 3600);
            assert_eq!(active.issuer, "https://127.0.0.1:8443/");
            assert_eq!(active.audience, f.tenant.audience);
        }
    }

    #[test]
    fn a_token_is_active_until_the_second_it_expires() {
        let f = fixture(SigningAlgorithm::EdDsa);
        let issued = Timestamp::from_millis(Timestamp::now().millis() - 30 * 60_000);
        let (token, _) = mint(&f.tenant, issued);
        let exp_ms = (issued.seconds() + 3600) * 1000;
        let at = |ms| {
            introspect(
                &f.tenant,
                &f.revocations,
                &token,
                Timestamp::from_millis(ms),
            )
        };
        assert!(at(exp_ms - 1).is_ok());
        assert_eq!(at(exp_ms), Err(Inactive::Expired));
        assert_eq!(at(exp_ms + 86_400_000), Err(Inactive::Expired));
        // Minted by an instance whose clock runs ahead: valid within the leeway only.
        let ahead = (issued.seconds() - NOT_BEFORE_LEEWAY_SECONDS) * 1000;
        assert!(at(ahead).is_ok());
        assert_eq!(at(ahead - 1000), Err(Inactive::NotYetValid));
    }

    #[test]
    fn revocation_covers_tokens_issued_up_to_the_watermark_and_deletion_all() {
        let f = fixture(SigningAlgorithm::EdDsa);
        let issued = Timestamp::now();
        let (token, identity) = mint(&f.tenant, issued);
        let check = || introspect(&f.tenant, &f.revocations, &token, issued);
        let mark = |at: i64, deleted| RevocationMark {
            identity,
            tokens_revoked_before: Timestamp::from_millis(at),
            deleted,
        };
        f.revocations.apply(mark(issued.millis() - 1, false));
        assert!(check().is_ok(), "revoked before it was issued");
        f.revocations.apply(mark(issued.millis(), false));
        assert_eq!(check(), Err(Inactive::Revoked), "same millisecond");
        // A later token of the same identity is live.
        let (later, _) = {
            let scopes = ScopeSet::parse(&["chat"]).expect("scopes");
            let expiry = ExpiryMinutes::parse(None).expect("expiry");
            f.tenant
                .issuer()
                .mint(
                    identity,
                    &scopes,
                    expiry,
                    Timestamp::from_millis(issued.millis() + 1),
                )
                .expect("mint")
        };
        assert!(introspect(&f.tenant, &f.revocations, &later.token, issued).is_ok());
        f.revocations.apply(mark(issued.millis() - 10, true));
        assert_eq!(
            introspect(&f.tenant, &f.revocations, &later.token, issued),
            Err(Inactive::Deleted)
        );
    }

    #[test]
    fn only_the_keys_own_algorithm_verifies() {
        let f = fixture(SigningAlgorithm::EdDsa);
        let now = Timestamp::now();
        let (token, _) = mint(&f.tenant, now);
        let kid = f
            .tenant
            .published_keys(now)
            .next()
            .expect("key")
            .kid
            .clone();
        let payload = token.split('.').nth(1).expect("payload").to_owned();
        let spki = &f.record.signing_keys[0].public_key_der;

        // HS256 keyed with the public key, in either of its published forms.
        for secret in [spki.as_slice(), &spki[spki.len() - 32..]] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(kid.clone());
            let claims: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&payload).expect("b64"))
                    .expect("claims");
            let forged = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
                .expect("forge");
            assert_eq!(
                introspect(&f.tenant, &f.revocations, &forged, now),
                Err(Inactive::AlgorithmMismatch)
            );
        }
        // `none`, with and without a signature part.
        let none = segment(&serde_json::json!({"alg": "none", "kid": kid, "typ": "JWT"}));
        for forged in [format!("{none}.{payload}."), format!("{none}.{payload}")] {
            assert_eq!(
                introspect(&f.tenant, &f.revocations, &forged, now),
                Err(Inactive::Malformed)
            );
        }
        // ES256 claimed for an Ed25519 key.
        let es = segment(&serde_json::json!({"alg": "ES256", "kid": kid}));
        let signature = token.split('.').nth(2).expect("sig");
        assert_eq!(
            introspect(
                &f.tenant,
                &f.revocations,
                &format!("{es}.{payload}.{signature}"),
                now
            ),
            Err(Inactive::AlgorithmMismatch)
        );
    }

    #[test]
    fn altered_foreign_and_garbage_tokens_are_inactive() {
        let f = fixture(SigningAlgorithm::EdDsa);
        let other = fixture(SigningAlgorithm::EdDsa);
        let now = Timestamp::now();
        let (token, _) = mint(&f.tenant, now);
        let check = |t: &str| introspect(&f.tenant, &f.revocations, t, now);

        let mut altered = token.clone().into_bytes();
        let middle = token.find('.').expect("dot") + 10;
        altered[middle] = if altered[middle] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("utf8");
        assert!(matches!(
            check(&altered),
            Err(Inactive::BadSignature | Inactive::Malformed)
        ));
        let mut signature_altered = token.clone().into_bytes();
        let at = token.len() - 20;
        signature_altered[at] = if signature_altered[at] == b'x' {
            b'y'
        } else {
            b'x'
        };
        let signature_altered = String::from_utf8(signature_altered).expect("utf8");
        assert_eq!(check(&signature_altered), Err(Inactive::BadSignature));

        let (foreign, _) = mint(&other.tenant, now);
        assert_eq!(check(&foreign), Err(Inactive::UnknownKey));
        // This tenant's claims and signature under the other tenant's header (its kid).
        let foreign_header = foreign.split('.').next().expect("header");
        let own_rest = &token[token.find('.').expect("dot")..];
        assert_eq!(
            check(&format!("{foreign_header}{own_rest}")),
            Err(Inactive::UnknownKey)
        );

        let huge = format!("{token}{}", "A".repeat(MAX_TOKEN_BYTES));
        for garbage in [
            "",
            ".",
            "..",
            "not a token",
            "a.b.c",
            "eyJ.eyJ.sig",
            &token[..token.len() / 2],
            &token[..token.rfind('.').expect("dot")],
            huge.as_str(),
            "\u{0}\u{ffff}",
        ] {
            assert!(check(garbage).is_err(), "{garbage:.40} was active");
        }
    }

    #[test]
    fn a_superseded_key_verifies_until_every_token_it_signed_has_expired() {
        let mut f = fixture(SigningAlgorithm::EdDsa);
        let rotated_at = Timestamp::now();
        let (old_token, _) = mint(&f.tenant, rotated_at);
        let retired_at = Timestamp::from_millis(rotated_at.millis() + SUPERSEDED_KEY_RETENTION_MS);
        f.record.signing_keys[0].retired_at = Some(retired_at);
        let new_key = crate::service::tenants::new_signing_key(
            f.record.id,
            SigningAlgorithm::Es256,
            &f.master_key,
            rotated_at,
        )
        .expect("key");
        let new_kid = new_key.kid.clone();
        f.record.signing_keys.push(new_key);
        let tenant = load(&f.record, &f.master_key);

        let (new_token, _) = mint(&tenant, rotated_at);
        assert_eq!(
            jsonwebtoken::decode_header(&new_token).expect("header").kid,
            Some(new_kid.clone())
        );
        let kids = |at: Timestamp| -> Vec<String> {
            tenant.published_keys(at).map(|k| k.kid.clone()).collect()
        };
        let old_kid = f.record.signing_keys[0].kid.clone();
        assert_eq!(kids(rotated_at), [old_kid.clone(), new_kid.clone()]);
        let last_moment = Timestamp::from_millis(retired_at.millis() - 1);
        assert_eq!(kids(last_moment), [old_kid, new_kid.clone()]);
        assert_eq!(kids(retired_at), [new_kid]);
        // Every token the old key signed expired long before it left (at most a day).
        assert!(
            retired_at.millis() >= rotated_at.millis() + ExpiryMinutes::MAX * 60_000,
            "the old key left before its tokens expired"
        );
        assert!(introspect(&tenant, &f.revocations, &old_token, rotated_at).is_ok());
        assert!(introspect(&tenant, &f.revocations, &new_token, rotated_at).is_ok());
        assert_eq!(
            introspect(&tenant, &f.revocations, &old_token, retired_at),
            Err(Inactive::UnknownKey)
        );
    }

    #[test]
    fn a_cached_token_still_answers_to_revocation_deletion_rotation_and_time() {
        let mut f = fixture(SigningAlgorithm::EdDsa);
        let cache = VerifiedTokens::new(16);
        let issued = Timestamp::now();
        let (token, identity) = mint(&f.tenant, issued);
        let check = |tenant: &Tenant, token: &str, at: Timestamp| {
            cache.introspect(tenant, &f.revocations, token, at)
        };
        let (first, used) = check(&f.tenant, &token, issued);
        assert!(first.is_ok());
        assert_eq!(used, CacheUse::Miss);
        let (again, used) = check(&f.tenant, &token, issued);
        assert_eq!(again, first);
        assert_eq!(used, CacheUse::Hit);

        // An altered token is another entry: verified, and refused.
        let mut altered = token.clone();
        altered.replace_range(altered.len() - 3.., "AAA");
        let (answer, used) = check(&f.tenant, &altered, issued);
        assert_eq!(answer, Err(Inactive::BadSignature));
        assert_eq!(used, CacheUse::Miss);
        // Another tenant's cache entries are not this tenant's.
        let other = fixture(SigningAlgorithm::EdDsa);
        let (answer, used) = check(&other.tenant, &token, issued);
        assert_eq!(answer, Err(Inactive::UnknownKey));
        assert_eq!(used, CacheUse::Miss);

        // Time.
        let expired = Timestamp::from_millis((issued.seconds() + 3600) * 1000);
        assert_eq!(
            check(&f.tenant, &token, expired),
            (Err(Inactive::Expired), CacheUse::Hit)
        );

        // The signing key retired (a rotation long ago): the cached verification no longer counts.
        let retired_at = Timestamp::from_millis(issued.millis() + 1000);
        f.record.signing_keys[0].retired_at = Some(retired_at);
        let new_key = crate::service::tenants::new_signing_key(
            f.record.id,
            SigningAlgorithm::EdDsa,
            &f.master_key,
            issued,
        )
        .expect("key");
        f.record.signing_keys.push(new_key);
        let rotated = load(&f.record, &f.master_key);
        assert_eq!(check(&rotated, &token, issued).0, first);
        assert_eq!(
            check(&rotated, &token, retired_at),
            (Err(Inactive::UnknownKey), CacheUse::Hit)
        );

        // Revocation and deletion reach cached tokens at once.
        let mark = |deleted| RevocationMark {
            identity,
            tokens_revoked_before: issued,
            deleted,
        };
        f.revocations.apply(mark(false));
        assert_eq!(
            check(&f.tenant, &token, issued),
            (Err(Inactive::Revoked), CacheUse::Hit)
        );
        f.revocations.apply(mark(true));
        assert_eq!(
            check(&f.tenant, &token, issued),
            (Err(Inactive::Deleted), CacheUse::Hit)
        );
    }

    #[test]
    fn a_cache_of_size_zero_verifies_every_time() {
        let f = fixture(SigningAlgorithm::EdDsa);
        let cache = VerifiedTokens::new(0);
        let now = Timestamp::now();
        let (token, _) = mint(&f.tenant, now);
        for _ in 0..2 {
            let (answer, used) = cache.introspect(&f.tenant, &f.revocations, &token, now);
            assert!(answer.is_ok());
            assert_eq!(used, CacheUse::Miss);
        }
    }
}
