//! Verify callsign access tokens inside a Rust service.
//!
//! A [`Verifier`] is built for one tenant's issuer (its endpoint, `https://<host>:<port>/`,
//! which is also the `iss` of its tokens). It reads the tenant's discovery document and JWKS
//! once, keeps the public keys in memory, and checks each token offline: the signature with
//! the key its `kid` names (in that key's algorithm only), the issuer, the expiry, and — on
//! request — the scopes. A token signed with a key it does not know makes it fetch the JWKS
//! again (at most once per [`VerifierBuilder::min_refresh_interval`]), so a signing-key
//! rotation needs nothing from the service.
//!
//! Offline verification cannot know about revocations: a token revoked (or whose identity was
//! deleted) before it expires still verifies here. Services that must honour revocation at
//! once ask callsign's introspection endpoint (`POST /oauth2/introspect`) instead.
//!
//! ```no_run
//! # async fn example(token: &str) -> Result<(), callsign_verify::VerifyError> {
//! let verifier = callsign_verify::Verifier::builder("https://acme.example.com:8443/")
//!     .build()
//!     .await?;
//! let claims = verifier.verify_with_scopes(token, &["chat"]).await?;
//! println!("{} may chat until {}", claims.subject, claims.expires_at);
//! # Ok(())
//! # }
//! ```
//!
//! This crate depends on neither actix nor sqlx; it needs a tokio runtime (for reqwest).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

/// Longer tokens are refused unread; callsign's are well under a kilobyte.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused, or why the keys could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is not a well-formed callsign access token")]
    Malformed,
    #[error("the token names no key (kid)")]
    MissingKeyId,
    #[error("no published key has kid {0:?}")]
    UnknownKey(String),
    #[error("the token is signed with {found:?}, but its key is for {expected:?}")]
    AlgorithmMismatch {
        expected: Algorithm,
        found: Algorithm,
    },
    #[error("the token's signature does not verify")]
    InvalidSignature,
    #[error("the token was issued by {0:?}, not by the expected issuer")]
    WrongIssuer(String),
    #[error("the token is not meant for the expected audience")]
    WrongAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token does not grant the scope {0:?}")]
    MissingScope(String),
    #[error("could not fetch {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("the discovery document does not describe this issuer: {0}")]
    Discovery(String),
}

/// The checked claims of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The identity the token was issued to, `8:acs:<tenant id>_<identity id>`.
    pub subject: String,
    /// The tenant (ACS resource) id.
    pub tenant_id: String,
    pub issuer: String,
    pub audience: Vec<String>,
    /// The token's unique id (`jti`).
    pub token_id: String,
    /// What the token allows: `chat`, `voip`, `chat.join`, `chat.join.limited`, `voip.join`.
    pub scopes: Vec<String>,
    /// Seconds since the Unix epoch.
    pub issued_at: i64,
    pub not_before: i64,
    pub expires_at: i64,
}

impl Claims {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Ok when the token grants every scope in `required`.
    pub fn require_scopes(&self, required: &[&str]) -> Result<(), VerifyError> {
        match required.iter().find(|s| !self.has_scope(s)) {
            Some(missing) => Err(VerifyError::MissingScope((*missing).to_owned())),
            None => Ok(()),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawClaims {
    iss: String,
    sub: String,
    aud: Audience,
    jti: String,
    iat: i64,
    nbf: Option<i64>,
    exp: i64,
    /// Space-separated.
    scp: Option<String>,
    /// Comma-joined, as ACS tokens carry it.
    acs_scope: Option<String>,
    resource_id: String,
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

/// Configures a [`Verifier`].
#[derive(Debug, Clone)]
pub struct VerifierBuilder {
    issuer: String,
    jwks_uri: Option<String>,
    http: Option<reqwest::Client>,
    audience: Option<String>,
    leeway: Duration,
    min_refresh_interval: Duration,
    max_cache_age: Duration,
}

impl VerifierBuilder {
    /// The HTTP client to fetch with, e.g. one that trusts callsign's generated certificate
    /// (`reqwest::ClientBuilder::add_root_certificate`). By default, a client that trusts the
    /// system's certificate store.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Fetch the keys from this URL instead of the `jwks_uri` of the discovery document.
    pub fn jwks_uri(mut self, uri: impl Into<String>) -> Self {
        self.jwks_uri = Some(uri.into());
        self
    }

    /// Also require this `aud` (callsign writes `callsign:<tenant id>`).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Clock difference tolerated on `exp` and `nbf` (default 60 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The shortest time between two JWKS fetches caused by unknown key ids (default 5 s), so
    /// tokens with made-up `kid`s cannot make the verifier hammer callsign.
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh_interval = interval;
        self
    }

    /// The longest the keys are kept before they are fetched again (default 5 min, shortened
    /// by the JWKS response's `Cache-Control: max-age`).
    pub fn max_cache_age(mut self, age: Duration) -> Self {
        self.max_cache_age = age;
        self
    }

    /// Reads the discovery document (unless a JWKS URL was given), checks that it names this
    /// issuer, and fetches the keys.
    pub async fn build(self) -> Result<Verifier, VerifyError> {
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| VerifyError::Fetch {
                    url: self.issuer.clone(),
                    message: e.to_string(),
                })?,
        };
        let jwks_uri = match self.jwks_uri {
            Some(uri) => uri,
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer.trim_end_matches('/')
                );
                let document: DiscoveryDocument = fetch_json(&http, &url).await?.0;
                // OpenID Connect Discovery §4.3: the issuer must be exactly the one asked for.
                if document.issuer != self.issuer {
                    return Err(VerifyError::Discovery(format!(
                        "it names the issuer {:?}, not {:?}",
                        document.issuer, self.issuer
                    )));
                }
                document.jwks_uri
            }
        };
        let verifier = Verifier {
            inner: Arc::new(Inner {
                http,
                issuer: self.issuer,
                jwks_uri,
                audience: self.audience,
                leeway: self.leeway,
                min_refresh_interval: self.min_refresh_interval,
                max_cache_age: self.max_cache_age,
                cache: RwLock::new(KeyCache::default()),
                refresh: tokio::sync::Mutex::new(()),
            }),
        };
        verifier.refresh().await?;
        Ok(verifier)
    }
}

/// Verifies one tenant's tokens. Cheap to clone; clones share the cached keys.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.issuer)
            .field("jwks_uri", &self.inner.jwks_uri)
            .finish_non_exhaustive()
    }
}

struct Inner {
    http: reqwest::Client,
    issuer: String,
    jwks_uri: String,
    audience: Option<String>,
    leeway: Duration,
    min_refresh_interval: Duration,
    max_cache_age: Duration,
    cache: RwLock<KeyCache>,
    /// Held while fetching, so concurrent misses cause one fetch.
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, CachedKey>,
    fetched_at: Option<Instant>,
    fresh_until: Option<Instant>,
    fetches: u64,
}

impl KeyCache {
    fn is_fresh(&self) -> bool {
        self.fresh_until.is_some_and(|until| Instant::now() < until)
    }
}

#[derive(Clone)]
struct CachedKey {
    algorithm: Algorithm,
    decoding: DecodingKey,
}

impl Verifier {
    /// A verifier for tokens whose `iss` is `issuer`, the tenant's endpoint with its trailing
    /// slash (`https://acme.example.com:8443/`).
    pub fn builder(issuer: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.into(),
            jwks_uri: None,
            http: None,
            audience: None,
            leeway: Duration::from_secs(60),
            min_refresh_interval: Duration::from_secs(5),
            max_cache_age: Duration::from_secs(300),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The key ids currently cached.
    pub fn cached_key_ids(&self) -> Vec<String> {
        let cache = self.read_cache();
        let mut kids: Vec<String> = cache.keys.keys().cloned().collect();
        kids.sort();
        kids
    }

    /// How many times the JWKS has been fetched.
    pub fn jwks_fetches(&self) -> u64 {
        self.read_cache().fetches
    }

    /// Checks `token` now.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        self.verify_at(token, SystemTime::now()).await
    }

    /// Checks `token` and that it grants every scope in `required`.
    pub async fn verify_with_scopes(
        &self,
        token: &str,
        required: &[&str],
    ) -> Result<Claims, VerifyError> {
        let claims = self.verify(token).await?;
        claims.require_scopes(required)?;
        Ok(claims)
    }

    /// Checks `token` as of `now`.
    pub async fn verify_at(&self, token: &str, now: SystemTime) -> Result<Claims, VerifyError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::Malformed);
        }
        let header = decode_header(token).map_err(|_| VerifyError::Malformed)?;
        let kid = header.kid.ok_or(VerifyError::MissingKeyId)?;
        let key = self.key(&kid).await?;
        // The key's algorithm only: no `none`, no HS256 keyed with the public key.
        if header.alg != key.algorithm {
            return Err(VerifyError::AlgorithmMismatch {
                expected: key.algorithm,
                found: header.alg,
            });
        }
        let mut validation = Validation::new(key.algorithm);
        // Time and audience are checked below, against `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        let raw = decode::<RawClaims>(token, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => VerifyError::InvalidSignature,
                _ => VerifyError::Malformed,
            })?
            .claims;

        if raw.iss != self.inner.issuer {
            return Err(VerifyError::WrongIssuer(raw.iss));
        }
        let audience = match raw.aud {
            Audience::One(aud) => vec![aud],
            Audience::Many(auds) => auds,
        };
        if let Some(expected) = &self.inner.audience
            && !audience.contains(expected)
        {
            return Err(VerifyError::WrongAudience);
        }
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let leeway = self.inner.leeway.as_secs() as i64;
        if now >= raw.exp + leeway {
            return Err(VerifyError::Expired);
        }
        let not_before = raw.nbf.unwrap_or(raw.iat);
        if not_before > now + leeway {
            return Err(VerifyError::NotYetValid);
        }
        let scopes = match (raw.scp, raw.acs_scope) {
            (Some(scp), _) => scp
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            (None, Some(acs)) => acs
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            (None, None) => Vec::new(),
        };
        Ok(Claims {
            subject: raw.sub,
            tenant_id: raw.resource_id,
            issuer: raw.iss,
            audience,
            token_id: raw.jti,
            scopes,
            issued_at: raw.iat,
            not_before,
            expires_at: raw.exp,
        })
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, KeyCache> {
        self.inner
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The key `kid`: from the cache while it is fresh; otherwise after fetching the JWKS again
    /// (an unknown `kid` at most once per `min_refresh_interval`). When a fetch fails, a key
    /// already known is still used.
    async fn key(&self, kid: &str) -> Result<CachedKey, VerifyError> {
        let known = {
            let cache = self.read_cache();
            match cache.keys.get(kid) {
                Some(key) if cache.is_fresh() => return Ok(key.clone()),
                other => other.cloned(),
            }
        };
        match self.refresh_for(kid).await {
            Ok(()) => {}
            Err(error) => return known.ok_or(error),
        }
        self.read_cache()
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| VerifyError::UnknownKey(kid.to_owned()))
    }

    async fn refresh_for(&self, kid: &str) -> Result<(), VerifyError> {
        let _single_flight = self.inner.refresh.lock().await;
        {
            // Another task may have fetched while this one waited.
            let cache = self.read_cache();
            if cache.is_fresh()
                && (cache.keys.contains_key(kid)
                    || cache
                        .fetched_at
                        .is_some_and(|at| at.elapsed() < self.inner.min_refresh_interval))
            {
                return Ok(());
            }
        }
        self.fetch_keys().await
    }

    /// Fetches the JWKS now, replacing the cached keys (a key no longer published stops
    /// verifying).
    pub async fn refresh(&self) -> Result<(), VerifyError> {
        let _single_flight = self.inner.refresh.lock().await;
        self.fetch_keys().await
    }

    async fn fetch_keys(&self) -> Result<(), VerifyError> {
        let (set, max_age): (JwkSet, Option<Duration>) =
            fetch_json(&self.inner.http, &self.inner.jwks_uri).await?;
        let keys: HashMap<String, CachedKey> = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, cached_key(jwk)?)))
            .collect();
        // A server that forbids caching still gets no more than one fetch per interval.
        let lifetime = max_age
            .map_or(self.inner.max_cache_age, |age| {
                age.min(self.inner.max_cache_age)
            })
            .max(self.inner.min_refresh_interval);
        let now = Instant::now();
        let mut cache = self
            .inner
            .cache
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        cache.keys = keys;
        cache.fetched_at = Some(now);
        cache.fresh_until = Some(now + lifetime);
        cache.fetches += 1;
        Ok(())
    }
}

/// A published key callsign can have signed with, or `None` for anything else (symmetric
/// keys above all: a JWKS never vouches for an HMAC secret).
fn cached_key(jwk: &Jwk) -> Option<CachedKey> {
    let inferred = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => Algorithm::ES384,
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        _ => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        None => inferred,
        Some(declared) => {
            let declared = Algorithm::try_from(declared).ok()?;
            // The declared algorithm must fit the key type.
            let fits = match inferred {
                Algorithm::RS256 => matches!(
                    declared,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                ),
                other => declared == other,
            };
            if !fits {
                return None;
            }
            declared
        }
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(CachedKey {
        algorithm,
        decoding,
    })
}

/// GETs `url` as JSON; also returns the response's `Cache-Control: max-age`, if any.
async fn fetch_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<(T, Option<Duration>), VerifyError> {
    let failed = |message: String| VerifyError::Fetch {
        url: url.to_owned(),
        message,
    };
    let response = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?
        .error_for_status()
        .map_err(|e| failed(e.to_string()))?;
    let max_age = response
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(max_age);
    let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
    let value = serde_json::from_slice(&body).map_err(|e| failed(e.to_string()))?;
    Ok((value, max_age))
}

/// The `max-age` of a `Cache-Control` value (`no-store` and `no-cache` count as zero).
fn max_age(cache_control: &str) -> Option<Duration> {
    let mut age = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(seconds) = lower.strip_prefix("max-age=") {
            age = seconds
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age_is_read() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn scopes_are_required_one_by_one() {
        let claims = Claims {
            subject: "8:acs:t_u".into(),
            tenant_id: "t".into(),
            issuer: "https://h/".into(),
            audience: vec!["callsign:t".into()],
            token_id: "j".into(),
            scopes: vec!["chat".into(), "voip.join".into()],
            issued_at: 0,
            not_before: 0,
            expires_at: 1,
        };
        assert!(claims.has_scope("chat"));
        assert!(!claims.has_scope("chat.join"));
        assert_eq!(claims.require_scopes(&["chat", "voip.join"]), Ok(()));
        assert_eq!(
            claims.require_scopes(&["chat", "voip"]),
            Err(VerifyError::MissingScope("voip".into()))
        );
    }

    #[test]
    fn symmetric_and_mismatched_keys_are_never_trusted() {
        let parse = |v: serde_json::Value| -> Jwk { serde_json::from_value(v).expect("jwk") };
        let oct =
            parse(serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "a"}));
        assert!(cached_key(&oct).is_none());
        let okp = serde_json::json!({"kty": "OKP", "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "b"});
        let mut claimed_rs = okp.clone();
        claimed_rs["alg"] = "RS256".into();
        assert!(cached_key(&parse(claimed_rs)).is_none());
        let inferred = cached_key(&parse(okp)).expect("Ed25519 key");
        assert_eq!(inferred.algorithm, Algorithm::EdDSA);
    }
}
