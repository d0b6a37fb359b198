//! Token signing keys: generation, and the algorithms callsign signs with.
//!
//! Ed25519 is the default: its signatures are the cheapest to make of the JOSE algorithms and
//! every mainstream JWT library verifies them. ES256 and RS256 are there for downstream
//! verifiers that cannot do EdDSA.

use std::fmt;
use std::str::FromStr;

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey};
use zeroize::Zeroizing;

/// The JOSE algorithm a tenant's tokens are signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SigningAlgorithm {
    #[default]
    #[value(name = "EdDSA")]
    EdDsa,
    #[value(name = "ES256")]
    Es256,
    #[value(name = "RS256")]
    Rs256,
}

impl SigningAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDsa => "EdDSA",
            SigningAlgorithm::Es256 => "ES256",
            SigningAlgorithm::Rs256 => "RS256",
        }
    }

    pub fn jwt_algorithm(self) -> Algorithm {
        match self {
            SigningAlgorithm::EdDsa => Algorithm::EdDSA,
            SigningAlgorithm::Es256 => Algorithm::ES256,
            SigningAlgorithm::Rs256 => Algorithm::RS256,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlgorithm {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "EdDSA" => Ok(SigningAlgorithm::EdDsa),
            "ES256" => Ok(SigningAlgorithm::Es256),
            "RS256" => Ok(SigningAlgorithm::Rs256),
            other => anyhow::bail!("unknown signing algorithm {other:?}"),
        }
    }
}

/// A freshly generated or unsealed signing key pair.
pub struct SigningKeyMaterial {
    pub algorithm: SigningAlgorithm,
    /// PKCS#8 PEM of the private key; wiped on drop.
    pub private_pkcs8_pem: Zeroizing<String>,
    /// SubjectPublicKeyInfo DER of the public key, published later as a JWK.
    pub public_key_der: Vec<u8>,
}

impl SigningKeyMaterial {
    pub fn generate(algorithm: SigningAlgorithm) -> anyhow::Result<Self> {
        use rcgen::{KeyPair, PublicKeyData, RsaKeySize};
        let pair = match algorithm {
            SigningAlgorithm::EdDsa => KeyPair::generate_for(&rcgen::PKCS_ED25519),
            SigningAlgorithm::Es256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            SigningAlgorithm::Rs256 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
            }
        }
        .with_context(|| format!("generating a {algorithm} signing key"))?;
        Ok(Self {
            algorithm,
            private_pkcs8_pem: Zeroizing::new(pair.serialize_pem()),
            public_key_der: pair.subject_public_key_info(),
        })
    }

    /// The key in the form jsonwebtoken signs with.
    pub fn encoding_key(&self) -> anyhow::Result<EncodingKey> {
        let pem = self.private_pkcs8_pem.as_bytes();
        match self.algorithm {
            SigningAlgorithm::EdDsa => EncodingKey::from_ed_pem(pem),
            SigningAlgorithm::Es256 => EncodingKey::from_ec_pem(pem),
            SigningAlgorithm::Rs256 => EncodingKey::from_rsa_pem(pem),
        }
        .context("loading a signing key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Header, Validation};

    #[test]
    fn every_algorithm_signs_tokens_its_public_key_verifies() {
        for algorithm in [
            SigningAlgorithm::EdDsa,
            SigningAlgorithm::Es256,
            SigningAlgorithm::Rs256,
        ] {
            let key = SigningKeyMaterial::generate(algorithm).expect("generate");
            let claims = serde_json::json!({"sub": "x", "exp": 4_000_000_000u64});
            let token = jsonwebtoken::encode(
                &Header::new(algorithm.jwt_algorithm()),
                &claims,
                &key.encoding_key().expect("encoding key"),
            )
            .expect("sign");
            let spki = key.public_key_der.as_slice();
            let decoding = match algorithm {
                SigningAlgorithm::EdDsa => DecodingKey::from_ed_der(&spki[spki.len() - 32..]),
                SigningAlgorithm::Es256 => DecodingKey::from_ec_der(&spki[spki.len() - 65..]),
                SigningAlgorithm::Rs256 => {
                    let pem = format!(
                        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, spki)
                    );
                    DecodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa public key")
                }
            };
            let validation = Validation::new(algorithm.jwt_algorithm());
            jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
                .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
        }
    }
}
