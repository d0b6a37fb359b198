//! Settings shared by every command, from flags or `CALLSIGN_*` environment variables.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::crypto::master_key::MasterKey;
use crate::crypto::signing::SigningAlgorithm;
use crate::domain::LimitTable;

/// Where callsign keeps its data and how it listens. Every field is a flag and an
/// environment variable.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Directory for the SQLite database, the TLS certificate, the master key and the default
    /// tenant's connection string.
    #[arg(
        long,
        env = "CALLSIGN_DATA_DIR",
        default_value = "./callsign-data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Database URL: sqlite://<path> or postgres://user@host:port/db.
    /// [default: sqlite://<data dir>/callsign.db]
    #[arg(
        long,
        env = "CALLSIGN_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// HTTPS listen address.
    #[arg(
        long,
        env = "CALLSIGN_HTTPS_ADDR",
        default_value = "127.0.0.1:8443",
        global = true
    )]
    pub https_addr: SocketAddr,

    /// Plain-HTTP listen address, for use behind a TLS-terminating proxy; "off" disables it.
    #[arg(
        long,
        env = "CALLSIGN_HTTP_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub http_addr: ListenAddr,

    /// PEM certificate chain to serve instead of the generated one (needs --tls-key).
    #[arg(long, env = "CALLSIGN_TLS_CERT", requires = "tls_key", global = true)]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "CALLSIGN_TLS_KEY", requires = "tls_cert", global = true)]
    pub tls_key: Option<PathBuf>,

    /// Extra DNS names or IP addresses for the generated certificate (comma-separated).
    #[arg(
        long,
        env = "CALLSIGN_TLS_EXTRA_NAMES",
        value_delimiter = ',',
        global = true
    )]
    pub tls_extra_names: Vec<String>,

    /// Host used in the default tenant's endpoint [default: the HTTPS address's IP, or
    /// localhost when it listens on all addresses].
    #[arg(long, env = "CALLSIGN_PUBLIC_HOST", global = true)]
    pub public_host: Option<String>,

    /// Master key sealing access and signing keys at rest, base64 of 32 bytes. Overrides
    /// --master-key-file.
    #[arg(
        long,
        env = "CALLSIGN_MASTER_KEY",
        hide_env_values = true,
        global = true
    )]
    pub master_key: Option<String>,

    /// File holding the master key [default: <data dir>/master.key; created on first start].
    #[arg(long, env = "CALLSIGN_MASTER_KEY_FILE", global = true)]
    pub master_key_file: Option<PathBuf>,

    /// Largest accepted difference between x-ms-date and the server's clock, in seconds.
    #[arg(
        long,
        env = "CALLSIGN_CLOCK_SKEW_SECONDS",
        default_value_t = 900,
        global = true
    )]
    pub clock_skew_seconds: u64,

    /// Algorithm for signing keys of tenants created from now on.
    #[arg(
        long,
        env = "CALLSIGN_SIGNING_ALGORITHM",
        value_enum,
        default_value = "EdDSA",
        global = true
    )]
    pub signing_algorithm: SigningAlgorithm,

    /// How often a server checks the database for tenant and key changes made elsewhere, in
    /// milliseconds.
    #[arg(
        long,
        env = "CALLSIGN_REFRESH_INTERVAL_MS",
        default_value_t = 250,
        global = true
    )]
    pub refresh_interval_ms: u64,

    /// Rate limits of tenants that set none of their own, as operation=limit pairs
    /// (limit: <requests>/<period> such as 1000/30s, or none). Operations: create_identity,
    /// issue_token, delete_identity, revoke_tokens, get_identity, introspect, audit_query.
    #[arg(
        long,
        env = "CALLSIGN_DEFAULT_LIMITS",
        default_value = "create_identity=1000/30s,issue_token=1000/30s,delete_identity=500/30s,revoke_tokens=500/30s",
        value_parser = |s: &str| s.parse::<LimitTable>().map_err(|e| e.0),
        global = true
    )]
    pub default_limits: LimitTable,

    /// Requests of one tenant handled at once by this server; more are answered 429.
    #[arg(
        long,
        env = "CALLSIGN_TENANT_MAX_IN_FLIGHT",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..=100_000),
        global = true
    )]
    pub tenant_max_in_flight: u32,

    /// Group-commit writers on PostgreSQL: with more than one, a batch writes its rows while
    /// the one before it commits (SQLite always has one). One measured fastest on 2 cores:
    /// fewer, larger batches cost less CPU per write.
    #[arg(
        long,
        env = "CALLSIGN_BATCH_WRITERS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=16),
        global = true
    )]
    pub batch_writers: u16,

    /// How many verified tokens introspection remembers, so a token presented again is not
    /// verified again (0: none).
    #[arg(
        long,
        env = "CALLSIGN_VERIFIED_TOKEN_CACHE",
        default_value_t = 100_000,
        global = true
    )]
    pub verified_token_cache: u64,

    /// Seconds a verified operator credential is remembered before argon2 checks it again.
    #[arg(
        long,
        env = "CALLSIGN_OPERATOR_CACHE_SECONDS",
        default_value_t = 300,
        global = true
    )]
    pub operator_cache_seconds: u64,

    /// Admin API authentication attempts per source address and minute that need an argon2
    /// check (failed ones, mostly); more are answered 429.
    #[arg(
        long,
        env = "CALLSIGN_OPERATOR_AUTH_ATTEMPTS_PER_MINUTE",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..=100_000),
        global = true
    )]
    pub operator_auth_attempts_per_minute: u32,

    /// Log format: text or json.
    #[arg(
        long,
        env = "CALLSIGN_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A listen address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub Option<SocketAddr>);

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        s.parse()
            .map(|a| Self(Some(a)))
            .map_err(|e| format!("{e}: expected host:port or off"))
    }
}

impl Settings {
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("callsign.db").display()))
    }

    pub fn clock_skew(&self) -> Duration {
        Duration::from_secs(self.clock_skew_seconds)
    }

    pub fn refresh_interval(&self) -> Duration {
        Duration::from_millis(self.refresh_interval_ms.max(10))
    }

    pub fn throttle(&self) -> crate::service::throttle::ThrottleSettings {
        crate::service::throttle::ThrottleSettings {
            default_limits: self.default_limits.clone(),
            max_in_flight: self.tenant_max_in_flight,
        }
    }

    pub fn operator_auth(&self) -> crate::service::operators::OperatorAuthSettings {
        crate::service::operators::OperatorAuthSettings {
            cache_ttl: Duration::from_secs(self.operator_cache_seconds),
            attempts_per_minute: std::num::NonZeroU32::new(self.operator_auth_attempts_per_minute)
                .unwrap_or(std::num::NonZeroU32::MIN),
        }
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }

    pub fn default_connection_string_file(&self) -> PathBuf {
        self.data_dir.join("default-connection-string.txt")
    }

    /// The host that names the default tenant's endpoint.
    pub fn public_host(&self) -> String {
        if let Some(host) = &self.public_host {
            return host.clone();
        }
        match self.https_addr.ip() {
            ip if ip.is_unspecified() => "localhost".to_owned(),
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => ip.to_string(),
        }
    }

    /// Loads the master key; `may_create` lets a first start create the key file.
    pub fn load_master_key(&self, may_create: bool) -> anyhow::Result<(MasterKey, bool)> {
        if let Some(encoded) = &self.master_key {
            return Ok((MasterKey::from_base64(encoded)?, false));
        }
        let path = self
            .master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("master.key"));
        MasterKey::load_or_create(&path, may_create)
    }
}
