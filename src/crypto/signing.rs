//! Token signing keys: generation, and the algorithms callsign signs with.
//!
//! Ed25519 is the default: its signatures are the cheapest to make of the JOSE algorithms and
//! every mainstream JWT library verifies them. ES256 and RS256 are there for downstream
//! verifiers that cannot do EdDSA.

use std::fmt;
use std::str::FromStr;

use anyhow::Context;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use jsonwebtoken::crypto::JwtSigner;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::signature::{self, Signer};
use jsonwebtoken::{Algorithm, DecodingKey};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
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

    /// The key parsed once, ready to sign many tokens. (`jsonwebtoken::encode` would parse
    /// the PKCS#8 document again for every token, which for Ed25519 costs about as much as
    /// the signature itself.)
    pub fn signer(&self) -> anyhow::Result<ParsedSigner> {
        let der = PrivateKeyDer::from_pem_slice(self.private_pkcs8_pem.as_bytes())
            .context("reading the signing key")?;
        let PrivateKeyDer::Pkcs8(pkcs8) = der else {
            anyhow::bail!("the signing key is not a PKCS#8 document");
        };
        let pkcs8 = pkcs8.secret_pkcs8_der();
        let key = match self.algorithm {
            SigningAlgorithm::EdDsa => HeldKey::Ed25519(
                Ed25519KeyPair::from_pkcs8(pkcs8)
                    .map_err(|e| anyhow::anyhow!("Ed25519 key: {e}"))?,
            ),
            SigningAlgorithm::Es256 => HeldKey::P256(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                    .map_err(|e| anyhow::anyhow!("P-256 key: {e}"))?,
            ),
            SigningAlgorithm::Rs256 => HeldKey::Rsa(
                RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| anyhow::anyhow!("RSA key: {e}"))?,
            ),
        };
        Ok(ParsedSigner {
            algorithm: self.algorithm,
            key,
            rng: SystemRandom::new(),
        })
    }
}

enum HeldKey {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A signing key parsed once, plugged into jsonwebtoken's signer interface.
pub struct ParsedSigner {
    algorithm: SigningAlgorithm,
    key: HeldKey,
    rng: SystemRandom,
}

impl Signer<Vec<u8>> for ParsedSigner {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        match &self.key {
            HeldKey::Ed25519(key) => Ok(key.sign(message).as_ref().to_vec()),
            HeldKey::P256(key) => key
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            HeldKey::Rsa(key) => {
                let mut out = vec![0; key.public_modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut out)
                    .map_err(|_| signature::Error::new())?;
                Ok(out)
            }
        }
    }
}

impl JwtSigner for ParsedSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm.jwt_algorithm()
    }
}

/// The public half of a signing key, as verifiers use it: the JWK the JWKS publishes and the
/// key that checks signatures. Both come from the stored SubjectPublicKeyInfo, and the
/// checking key is rebuilt from the JWK itself, so callsign verifies with exactly what it
/// publishes.
#[derive(Clone)]
pub struct VerifyingKey {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    pub jwk: Jwk,
    pub decoding: DecodingKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    pub fn from_spki(
        kid: &str,
        algorithm: SigningAlgorithm,
        spki_der: &[u8],
    ) -> anyhow::Result<Self> {
        // jsonwebtoken reads SubjectPublicKeyInfo only as PEM.
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(spki_der)
        );
        let parsed = match algorithm {
            SigningAlgorithm::EdDsa => DecodingKey::from_ed_pem(pem.as_bytes()),
            SigningAlgorithm::Es256 => DecodingKey::from_ec_pem(pem.as_bytes()),
            SigningAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
        }
        .with_context(|| format!("reading the {algorithm} public key {kid}"))?;
        let mut jwk = Jwk::from_decoding_key(&parsed, Some(algorithm.jwt_algorithm()))
            .with_context(|| format!("describing the public key {kid} as a JWK"))?;
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk)
            .with_context(|| format!("reading the JWK of public key {kid}"))?;
        Ok(Self {
            kid: kid.to_owned(),
            algorithm,
            jwk,
            decoding,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Header, Validation};

    /// A compact JWS signed with the parsed key, as the token service assembles it.
    fn sign(key: &SigningKeyMaterial) -> String {
        let b64 = |bytes: &[u8]| {
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
        };
        let header =
            serde_json::to_vec(&Header::new(key.algorithm.jwt_algorithm())).expect("header");
        let claims = serde_json::json!({"sub": "x", "exp": 4_000_000_000u64});
        let message = format!(
            "{}.{}",
            b64(&header),
            b64(&serde_json::to_vec(&claims).expect("claims"))
        );
        let signer = key.signer().expect("signer");
        assert_eq!(JwtSigner::algorithm(&signer), key.algorithm.jwt_algorithm());
        let signature = signer.try_sign(message.as_bytes()).expect("sign");
        format!("{message}.{}", b64(&signature))
    }

    #[test]
    fn every_algorithm_signs_tokens_its_public_key_verifies() {
        for algorithm in [
            SigningAlgorithm::EdDsa,
            SigningAlgorithm::Es256,
            SigningAlgorithm::Rs256,
        ] {
            let key = SigningKeyMaterial::generate(algorithm).expect("generate");
            let token = sign(&key);
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

    #[test]
    fn published_jwks_verify_what_the_private_keys_sign() {
        for (algorithm, kty) in [
            (SigningAlgorithm::EdDsa, "OKP"),
            (SigningAlgorithm::Es256, "EC"),
            (SigningAlgorithm::Rs256, "RSA"),
        ] {
            let key = SigningKeyMaterial::generate(algorithm).expect("generate");
            let verifying =
                VerifyingKey::from_spki("k1", algorithm, &key.public_key_der).expect("jwk");
            let jwk = serde_json::to_value(&verifying.jwk).expect("json");
            assert_eq!(jwk["kty"], kty, "{jwk}");
            assert_eq!(jwk["kid"], "k1");
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["alg"], algorithm.as_str());
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(
                    jwk.get(private).is_none(),
                    "{algorithm}: {private} published"
                );
            }
            let token = sign(&key);
            // What a client library does: parse the published JWK and verify with it.
            let parsed: Jwk = serde_json::from_value(jwk).expect("parse jwk");
            let decoding = DecodingKey::from_jwk(&parsed).expect("decoding key");
            let validation = Validation::new(algorithm.jwt_algorithm());
            jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
                .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
            jsonwebtoken::decode::<serde_json::Value>(&token, &verifying.decoding, &validation)
                .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
        }
    }
}
