//! TLS for the HTTPS listener (rustls).
//!
//! Unless the operator gives a certificate and key, callsign makes its own on first start:
//! `<data dir>/tls/cert.pem` is a self-signed certificate (also valid for `localhost`,
//! `127.0.0.1`, `::1` and any configured extra names) that may sign certificates, and
//! `key.pem` its key (mode 0600). The server presents a leaf certificate signed by it that
//! names every host any tenant claims, regenerated in memory whenever tenants change. So
//! clients trust `cert.pem` once (`REQUESTS_CA_BUNDLE`, `NODE_EXTRA_CA_CERTS`) and a tenant
//! created while the server runs is reachable over verified HTTPS at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::{Duration, OffsetDateTime};

/// Names every generated certificate covers.
const BASE_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The locally generated certificate that signs the served leaf.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    names: Vec<String>,
}

impl LocalCa {
    /// Loads `cert.pem`/`key.pem` from `dir`, or creates them.
    pub fn load_or_create(dir: &Path, extra_names: &[String]) -> anyhow::Result<Self> {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        let mut names: Vec<String> = BASE_NAMES.iter().map(|s| s.to_string()).collect();
        for name in extra_names {
            if !name.is_empty() && !names.contains(name) {
                names.push(name.clone());
            }
        }
        if !cert_path.exists() {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::new(names.clone())?;
            params.distinguished_name = distinguished_name("callsign local certificate");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let now = OffsetDateTime::now_utc();
            params.not_before = now - Duration::days(1);
            params.not_after = now + Duration::days(3650);
            let cert = params.self_signed(&key)?;
            crate::fsutil::write_private(&key_path, key.serialize_pem().as_bytes())?;
            std::fs::write(&cert_path, cert.pem())
                .with_context(|| format!("writing {}", cert_path.display()))?;
            tracing::info!(path = %cert_path.display(), "generated a TLS certificate");
        }
        let cert_pem = std::fs::read_to_string(&cert_path)
            .with_context(|| format!("reading {}", cert_path.display()))?;
        let key_pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem).context("parsing the TLS key")?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).context("parsing the TLS certificate")?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .context("parsing the TLS certificate")?;
        Ok(Self {
            issuer,
            cert_der,
            names,
        })
    }

    /// A leaf certificate for the base names, the extra names and `hostnames`, chained to
    /// this certificate.
    pub fn leaf(&self, hostnames: &[String]) -> anyhow::Result<CertifiedKey> {
        let mut names = self.names.clone();
        for name in hostnames {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name = distinguished_name("callsign");
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(397);
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = vec![cert.der().clone(), self.cert_der.clone()];
        let key_der = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| anyhow::anyhow!("leaf key: {e}"))?;
        Ok(CertifiedKey::from_der(chain, key_der, &provider())?)
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Where the served certificate comes from.
pub enum TlsSource {
    Generated {
        dir: PathBuf,
        extra_names: Vec<String>,
    },
    Provided {
        cert: PathBuf,
        key: PathBuf,
    },
}

/// Serves the current certificate and swaps in a new leaf when host names change.
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
    ca: Option<LocalCa>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver")
            .field("generated", &self.ca.is_some())
            .finish()
    }
}

impl CertResolver {
    pub fn new(source: &TlsSource, hostnames: &[String]) -> anyhow::Result<Self> {
        match source {
            TlsSource::Generated { dir, extra_names } => {
                let ca = LocalCa::load_or_create(dir, extra_names)?;
                let leaf = ca.leaf(hostnames)?;
                Ok(Self {
                    current: ArcSwap::from_pointee(leaf),
                    ca: Some(ca),
                })
            }
            TlsSource::Provided { cert, key } => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .with_context(|| format!("reading {}", cert.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("parsing {}", cert.display()))?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("reading {}", key.display()))?;
                let certified = CertifiedKey::from_der(chain, key_der, &provider())
                    .context("the TLS certificate and key do not match")?;
                Ok(Self {
                    current: ArcSwap::from_pointee(certified),
                    ca: None,
                })
            }
        }
    }

    /// Re-issues the generated leaf for a new set of tenant host names. An operator-provided
    /// certificate is left as it is.
    pub fn update_hostnames(&self, hostnames: &[String]) -> anyhow::Result<()> {
        if let Some(ca) = &self.ca {
            self.current.store(Arc::new(ca.leaf(hostnames)?));
        }
        Ok(())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

pub fn server_config(resolver: Arc<CertResolver>) -> anyhow::Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
