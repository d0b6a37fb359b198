//! Operator credentials: bearer secrets for the admin API.
//!
//! A credential reads `cso_<credential id, 32 hex digits>_<secret, 43 base64url characters>`.
//! The id is not secret: it names the one stored argon2 hash to check, so verifying costs one
//! hash however many credentials exist, and it names the operator in the audit trail. The
//! 256-bit secret is shown once, at creation, and stored only as an argon2 hash.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::ParseError;

const PREFIX: &str = "cso_";
const ID_LEN: usize = 32;
const SECRET_BYTES: usize = 32;
const SECRET_LEN: usize = 43;

/// Names one operator credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperatorCredentialId(Uuid);

impl OperatorCredentialId {
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }

    pub fn parse(value: &str) -> Result<Self, ParseError> {
        Uuid::parse_str(value.trim())
            .map(Self)
            .map_err(|_| ParseError::new("an operator credential id is a UUID."))
    }
}

impl fmt::Display for OperatorCredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A whole credential as an operator presents it. Wiped from memory when dropped; `Debug`
/// never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorCredential {
    id: OperatorCredentialId,
    text: Zeroizing<String>,
}

impl OperatorCredential {
    pub fn generate() -> Self {
        let id = OperatorCredentialId::generate();
        let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
        rand::rngs::OsRng.fill_bytes(secret.as_mut());
        let text = Zeroizing::new(format!(
            "{PREFIX}{}_{}",
            id.0.simple(),
            URL_SAFE_NO_PAD.encode(secret.as_ref())
        ));
        Self { id, text }
    }

    /// Checks the form only; whether the secret is right is the verifier's business.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let malformed = || ParseError::new("the operator credential is malformed.");
        let rest = value.strip_prefix(PREFIX).ok_or_else(malformed)?;
        if rest.len() != ID_LEN + 1 + SECRET_LEN || !rest.is_ascii() {
            return Err(malformed());
        }
        let (id, secret) = rest.split_at(ID_LEN);
        let secret = secret.strip_prefix('_').ok_or_else(malformed)?;
        if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        let id = Uuid::parse_str(id).map_err(|_| malformed())?;
        if URL_SAFE_NO_PAD
            .decode(secret)
            .ok()
            .is_none_or(|bytes| bytes.len() != SECRET_BYTES)
        {
            return Err(malformed());
        }
        Ok(Self {
            id: OperatorCredentialId(id),
            text: Zeroizing::new(value.to_owned()),
        })
    }

    pub fn id(&self) -> OperatorCredentialId {
        self.id
    }

    /// The text to show the operator, once.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// A fast digest, the key under which a verified credential is cached.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }
}

impl fmt::Debug for OperatorCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OperatorCredential({}, [redacted])", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_parse_back_and_are_never_printed() {
        let credential = OperatorCredential::generate();
        let text = credential.expose().to_owned();
        assert_eq!(text.len(), PREFIX.len() + ID_LEN + 1 + SECRET_LEN);
        let parsed = OperatorCredential::parse(&text).expect("parses");
        assert_eq!(parsed, credential);
        assert_eq!(parsed.digest(), credential.digest());
        assert!(!format!("{credential:?}").contains(&text[PREFIX.len() + ID_LEN..]));
        assert_ne!(OperatorCredential::generate(), credential);
    }

    #[test]
    fn anything_else_is_malformed() {
        let good = OperatorCredential::generate().expose().to_owned();
        for bad in [
            String::new(),
            good.replacen("cso_", "csx_", 1),
            good[..good.len() - 1].to_owned(),
            format!("{good}A"),
            good.replacen('_', "-", 2),
            format!("cso_{}_{}", "g".repeat(32), &good[37..]),
            "HMAC-SHA256 SignedHeaders=x&Signature=y".to_owned(),
        ] {
            assert!(
                OperatorCredential::parse(&bad).is_err(),
                "{bad:?} was accepted"
            );
        }
    }
}
