//! Access tokens: the claims callsign puts in a JWT and the key that signs it.

use std::fmt;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;
use jsonwebtoken::signature::Signer;
use serde::Serialize;
use uuid::Uuid;

use crate::crypto::signing::{ParsedSigner, SigningAlgorithm, SigningKeyMaterial};
use crate::domain::{ExpiryMinutes, IdentityId, ScopeSet, TenantId, Timestamp};
use crate::store::TokenRecord;

/// A tenant's current signing key, parsed once and kept in memory, with its JWS header
/// already encoded.
pub struct TokenSigner {
    header: Header,
    encoded_header: String,
    signer: ParsedSigner,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.header.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    pub fn new(kid: &str, material: &SigningKeyMaterial) -> anyhow::Result<Self> {
        let mut header = Header::new(material.algorithm.jwt_algorithm());
        header.kid = Some(kid.to_owned());
        let encoded_header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
        Ok(Self {
            header,
            encoded_header,
            signer: material.signer()?,
        })
    }

    /// The compact JWS of `claims`: `header.payload.signature`, each base64url.
    fn sign<T: Serialize>(&self, claims: &T) -> anyhow::Result<String> {
        let payload = serde_json::to_vec(claims)?;
        let mut token =
            String::with_capacity(self.encoded_header.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&self.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self
            .signer
            .try_sign(token.as_bytes())
            .context("signing an access token")?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }

    pub fn kid(&self) -> &str {
        self.header.kid.as_deref().unwrap_or_default()
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        match self.header.alg {
            jsonwebtoken::Algorithm::ES256 => SigningAlgorithm::Es256,
            jsonwebtoken::Algorithm::RS256 => SigningAlgorithm::Rs256,
            _ => SigningAlgorithm::EdDsa,
        }
    }
}

/// The payload of a callsign access token. ACS clients read `exp` (and nothing else) from it;
/// downstream verifiers use the rest.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: String,
    jti: Uuid,
    iat: i64,
    nbf: i64,
    exp: i64,
    /// Space-separated, the OAuth convention.
    scp: String,
    /// Comma-joined, as ACS tokens carry it.
    acs_scope: String,
    resource_id: TenantId,
}

/// A signed token as the API returns it.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_on: Timestamp,
}

/// Who issues a token: the tenant's issuer URL and audience, and its signing key.
pub struct TokenIssuer<'a> {
    pub tenant: TenantId,
    pub issuer: &'a str,
    pub audience: &'a str,
    pub signer: &'a TokenSigner,
}

impl TokenIssuer<'_> {
    /// Signs a token for `identity` and returns it with the record to persist. The `jti` is a
    /// UUIDv7 carrying `now` to the millisecond, so a token's issue instant can be compared
    /// with a revocation watermark more finely than `iat`'s whole seconds allow.
    pub fn mint(
        &self,
        identity: IdentityId,
        scopes: &ScopeSet,
        expiry: ExpiryMinutes,
        now: Timestamp,
    ) -> anyhow::Result<(IssuedToken, TokenRecord)> {
        let millis = u64::try_from(now.millis()).context("issue time before 1970")?;
        let jti = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            millis / 1000,
            (millis % 1000) as u32 * 1_000_000,
        ));
        let iat = now.seconds();
        let exp = iat + expiry.minutes() * 60;
        let claims = Claims {
            iss: self.issuer,
            aud: self.audience,
            sub: identity.to_string(),
            jti,
            iat,
            nbf: iat,
            exp,
            scp: scopes.space_joined(),
            acs_scope: scopes.comma_joined(),
            resource_id: self.tenant,
        };
        let token = self.signer.sign(&claims)?;
        let expires_on = Timestamp::from_millis(exp * 1000);
        let record = TokenRecord {
            jti,
            identity,
            scopes: scopes.comma_joined(),
            issued_at: now,
            expires_at: expires_on,
        };
        Ok((IssuedToken { token, expires_on }, record))
    }
}

impl Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn minted_tokens_carry_the_acs_claims() {
        let material = SigningKeyMaterial::generate(SigningAlgorithm::EdDsa).expect("key");
        let signer = TokenSigner::new("kid-1", &material).expect("signer");
        let tenant = TenantId::generate();
        let issuer = TokenIssuer {
            tenant,
            issuer: "https://h/",
            audience: "aud",
            signer: &signer,
        };
        let identity = IdentityId::generate(tenant);
        let scopes = ScopeSet::parse(&["chat", "voip"]).expect("scopes");
        let now = Timestamp::from_millis(1_700_000_000_500);
        let expiry = ExpiryMinutes::parse(Some(60)).expect("expiry");
        let (token, record) = issuer.mint(identity, &scopes, expiry, now).expect("mint");

        let parts: Vec<&str> = token.token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |p: &str| -> serde_json::Value {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .expect("b64");
            serde_json::from_slice(&bytes).expect("json")
        };
        let header = decode(parts[0]);
        assert_eq!(header["kid"], "kid-1");
        assert_eq!(header["alg"], "EdDSA");
        let claims = decode(parts[1]);
        assert_eq!(claims["sub"], identity.to_string());
        assert_eq!(claims["acsScope"], "chat,voip");
        assert_eq!(claims["scp"], "chat voip");
        assert_eq!(claims["resourceId"], tenant.to_string());
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["exp"], 1_700_000_000 + 3600);
        assert_eq!(token.expires_on.millis(), (1_700_000_000 + 3600) * 1000);
        assert_eq!(claims["jti"], record.jti.to_string());
        let (secs, nanos) = record.jti.get_timestamp().expect("v7").to_unix();
        assert_eq!((secs, nanos / 1_000_000), (1_700_000_000, 500));
    }
}
