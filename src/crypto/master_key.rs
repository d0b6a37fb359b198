//! The master key seals every secret callsign must be able to read back (tenants' HMAC access
//! keys, token signing keys) before it reaches the database, so a copy of the database alone —
//! a backup, a replica, a leaked dump — reveals no key.
//!
//! Sealing is AES-256-GCM with a random nonce. The associated data names the row a blob
//! belongs to (`access-key:<tenant>:primary`, …), so a blob copied into another row does not
//! open. The key itself lives outside the database: `CALLSIGN_MASTER_KEY` (base64) or a file,
//! by default `<data dir>/master.key`, created with mode 0600 on first start.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

/// The deployment's key-encryption key.
#[derive(Clone)]
pub struct MasterKey {
    cipher: Aes256Gcm,
    /// Keyed with the master key, to derive purpose-specific keys.
    kdf: Hmac<Sha256>,
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        if bytes.len() != 32 {
            bail!(
                "the master key must be 32 bytes (base64 of 32 random bytes); got {}",
                bytes.len()
            );
        }
        let cipher = Aes256Gcm::new_from_slice(bytes).context("building the master key cipher")?;
        let digest = Sha256::new_with_prefix(b"callsign master key id\0")
            .chain_update(bytes)
            .finalize();
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let kdf =
            <Hmac<Sha256> as Mac>::new_from_slice(bytes).context("building the key derivation")?;
        Ok(Self { cipher, kdf, id })
    }

    pub fn from_base64(text: &str) -> anyhow::Result<Self> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .context("the master key is not valid base64")?,
        );
        Self::from_bytes(&bytes)
    }

    /// Reads the key from `path`, or creates one there (mode 0600) when the file does not
    /// exist and `may_create` allows it. Returns the key and whether it was created.
    pub fn load_or_create(path: &Path, may_create: bool) -> anyhow::Result<(Self, bool)> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((
                Self::from_base64(&text)
                    .with_context(|| format!("reading the master key from {}", path.display()))?,
                false,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_create => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                rand::rngs::OsRng.fill_bytes(bytes.as_mut());
                let encoded = Zeroizing::new(STANDARD.encode(bytes.as_ref()) + "\n");
                crate::fsutil::write_private(path, encoded.as_bytes())?;
                Ok((Self::from_bytes(bytes.as_ref())?, true))
            }
            Err(e) => {
                Err(e).with_context(|| format!("reading the master key from {}", path.display()))
            }
        }
    }

    /// A short, non-secret fingerprint recorded in the database, so a server started with the
    /// wrong master key stops with a clear message instead of failing on every request.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A 32-byte key for one purpose (`label`), the same on every instance that shares the
    /// master key, and independent of the key for any other label.
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        let mut mac = self.kdf.clone();
        mac.update(b"callsign derived key\0");
        mac.update(label.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    pub fn seal(&self, plaintext: &[u8], context: &str) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing a secret failed"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], context: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let Some((&FORMAT_V1, rest)) = sealed.split_first() else {
            bail!("sealed secret for {context} has an unknown format");
        };
        if rest.len() < NONCE_LEN {
            bail!("sealed secret for {context} is truncated");
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into()?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                anyhow::anyhow!(
                    "the secret for {context} does not open with master key {}",
                    self.id
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_context() {
        let key = MasterKey::from_bytes(&[7u8; 32]).expect("key");
        let sealed = key.seal(b"secret", "access-key:t:primary").expect("seal");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            key.open(&sealed, "access-key:t:primary")
                .expect("open")
                .as_slice(),
            b"secret"
        );
        assert!(key.open(&sealed, "access-key:t:secondary").is_err());
        let other = MasterKey::from_bytes(&[8u8; 32]).expect("key");
        assert!(other.open(&sealed, "access-key:t:primary").is_err());
        assert_ne!(key.id(), other.id());
        assert_ne!(*key.derive("a"), *key.derive("b"));
        assert_ne!(*key.derive("a"), *other.derive("a"));
        assert_eq!(
            *key.derive("a"),
            *MasterKey::from_bytes(&[7u8; 32]).expect("key").derive("a")
        );
        assert!(key.open(&sealed[..5], "access-key:t:primary").is_err());
    }

    #[test]
    fn a_key_file_is_created_once_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let (first, created) = MasterKey::load_or_create(&path, true).expect("create");
        assert!(created);
        let (second, created) = MasterKey::load_or_create(&path, true).expect("load");
        assert!(!created);
        assert_eq!(first.id(), second.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(MasterKey::load_or_create(&dir.path().join("absent"), false).is_err());
    }
}
