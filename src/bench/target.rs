//! The server under load: where to connect, how (TCP or TLS), and as which tenant.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::Uri;
use http::header::HeaderValue;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The endpoint and access key of a tenant, as a connection string names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    /// Host name or address, without brackets or port: what TLS verifies.
    pub host: String,
    pub port: u16,
    /// `host[:port]` exactly as the endpoint spells it: the `Host` header the SDKs send and
    /// sign.
    pub authority: String,
}

impl Endpoint {
    /// Parses `https://host[:port]/` or `http://…`.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url
            .trim()
            .parse()
            .with_context(|| format!("{url:?} is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("the endpoint {url:?} must start with https:// or http://"),
        };
        let authority = uri
            .authority()
            .with_context(|| format!("the endpoint {url:?} has no host"))?;
        if uri.path() != "/" && !uri.path().is_empty() {
            bail!("the endpoint {url:?} has a path; callsign tells tenants apart by host name");
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Self {
            https,
            host,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
        })
    }
}

/// What a connection string holds: `endpoint=https://host:port/;accesskey=<base64>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    pub endpoint: Endpoint,
    pub access_key: Vec<u8>,
}

impl ConnectionString {
    pub fn parse(value: &str) -> anyhow::Result<Self> {
        let mut endpoint = None;
        let mut key = None;
        for part in value.trim().split(';').filter(|p| !p.trim().is_empty()) {
            let (name, v) = part
                .split_once('=')
                .with_context(|| "a connection string is endpoint=…;accesskey=…".to_owned())?;
            match name.trim().to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = Some(Endpoint::parse(v)?),
                "accesskey" => {
                    key = Some(
                        STANDARD
                            .decode(v.trim())
                            .context("the connection string's accesskey is not base64")?,
                    );
                }
                _ => {}
            }
        }
        match (endpoint, key) {
            (Some(endpoint), Some(access_key)) => Ok(Self {
                endpoint,
                access_key,
            }),
            _ => bail!("the connection string needs both endpoint=… and accesskey=…"),
        }
    }
}

/// Makes the load generator's connections: TCP with Nagle off, then TLS for https.
pub struct Connector {
    /// What the sockets connect to, as given (for messages).
    target: String,
    addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// A connected stream, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connector {
    /// `connect_to` replaces the endpoint's host and port for the socket only (the `Host`
    /// header and TLS name stay the endpoint's), to reach a tenant's host name on this
    /// machine without DNS.
    pub async fn new(
        endpoint: &Endpoint,
        connect_to: Option<&str>,
        ca_cert: &Path,
    ) -> anyhow::Result<Self> {
        let target = connect_to.map_or_else(
            || format!("{}:{}", bracket(&endpoint.host), endpoint.port),
            str::to_owned,
        );
        let addr = tokio::net::lookup_host(&target)
            .await
            .with_context(|| format!("resolving {target}"))?
            .next()
            .with_context(|| format!("{target} resolves to no address"))?;
        let tls = if endpoint.https {
            let name = ServerName::try_from(endpoint.host.clone())
                .with_context(|| format!("{:?} is not a valid TLS name", endpoint.host))?;
            Some((TlsConnector::from(client_config(ca_cert)?), name))
        } else {
            None
        };
        Ok(Self { target, addr, tls })
    }

    /// Opens one connection and closes it: whether the server can be reached at all, and
    /// if not, why (the load's connections count failures, not their causes).
    pub async fn check(&self) -> anyhow::Result<()> {
        self.connect().await.with_context(|| {
            format!(
                "cannot connect to {} ({})",
                self.target,
                if self.tls.is_some() { "HTTPS" } else { "HTTP" }
            )
        })?;
        Ok(())
    }

    pub async fn connect(&self) -> std::io::Result<Stream> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some((connector, name)) => Ok(Stream::Tls(Box::new(
                connector.connect(name.clone(), tcp).await?,
            ))),
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// TLS that trusts only the certificates in `ca_cert` (callsign's generated `cert.pem`, or
/// the CA of the certificate it was given) and speaks HTTP/1.1.
fn client_config(ca_cert: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_cert)
        .with_context(|| format!("reading {} (--ca-cert)", ca_cert.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("parsing {}", ca_cert.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("trusting a certificate of {}", ca_cert.display()))?;
    }
    if roots.is_empty() {
        bail!("{} holds no certificate to trust", ca_cert.display());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The `Host` header value of an endpoint.
pub fn host_header(endpoint: &Endpoint) -> anyhow::Result<HeaderValue> {
    HeaderValue::from_str(&endpoint.authority)
        .with_context(|| format!("{:?} is not a valid Host header", endpoint.authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_as_callsign_writes_them() {
        let cs = ConnectionString::parse("endpoint=https://127.0.0.1:8443/;accesskey=AAEC\n")
            .expect("parses");
        assert_eq!(cs.access_key, vec![0, 1, 2]);
        assert_eq!(
            cs.endpoint,
            Endpoint {
                https: true,
                host: "127.0.0.1".into(),
                port: 8443,
                authority: "127.0.0.1:8443".into(),
            }
        );
        let cs = ConnectionString::parse("AccessKey=AAEC;Endpoint=http://acme.example.com")
            .expect("parses");
        assert_eq!(cs.endpoint.port, 80);
        assert_eq!(cs.endpoint.authority, "acme.example.com");
        assert!(!cs.endpoint.https);
        let v6 = Endpoint::parse("https://[::1]:9443/").expect("parses");
        assert_eq!(
            (v6.host.as_str(), v6.authority.as_str()),
            ("::1", "[::1]:9443")
        );
    }

    #[test]
    fn bad_connection_strings_are_refused() {
        for bad in [
            "",
            "endpoint=https://h/",
            "accesskey=AAEC",
            "endpoint=ftp://h/;accesskey=AAEC",
            "endpoint=https://h/tenant/;accesskey=AAEC",
            "endpoint=https://h/;accesskey=***",
        ] {
            assert!(ConnectionString::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
