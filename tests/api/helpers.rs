//! Starts a real callsign server for a test, on SQLite (a temp dir) or PostgreSQL (a fresh
//! database), and talks to it as the ACS SDKs do.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::sync::Arc;

use callsign::config::{ListenAddr, LogFormat, Settings};
use callsign::crypto::master_key::MasterKey;
use callsign::crypto::signing::SigningAlgorithm;
use callsign::domain::{ExpiryMinutes, IdentityId, ScopeSet, Timestamp};
use callsign::service::tenants::open_current_signing_key;
use callsign::service::tokens::{TokenIssuer, TokenSigner};
use callsign::startup::Application;
use callsign::store::{Repository, TenantRecord};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const API: &str = "api-version=2023-10-01";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` once per database, as `sqlite::name` and
/// `postgres::name`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

/// The PostgreSQL server the tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("CALLSIGN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDatabase {
    pub url: String,
    name: Option<String>,
    _dir: tempfile::TempDir,
    pub data_dir: PathBuf,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}", data_dir.join("callsign.db").display()),
                name: None,
                _dir: dir,
                data_dir,
            },
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("callsign_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&format!("{admin}/postgres"))
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL is not reachable at {admin} ({e}). The PostgreSQL tests need \
                             one: start it, or point CALLSIGN_TEST_POSTGRES_URL at a server \
                             (postgres://user:password@host:port) where this user may create databases."
                        )
                    });
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                Self {
                    url: format!("{admin}/{name}"),
                    name: Some(name),
                    _dir: dir,
                    data_dir,
                }
            }
        }
    }
}

use sqlx::Connection as _;

impl TestDatabase {
    /// `SELECT COUNT(*) FROM <table>` on a connection of its own.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        if self.url.starts_with("sqlite") {
            let mut conn = sqlx::SqliteConnection::connect(&self.url)
                .await
                .expect("sqlite");
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut conn)
                .await
                .expect("count")
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("pg");
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut conn)
                .await
                .expect("count")
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else { return };
        let admin = postgres_admin_url();
        // Drop runs inside the test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async {
                if let Ok(mut conn) =
                    sqlx::PgConnection::connect(&format!("{admin}/postgres")).await
                {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            })
        })
        .join();
    }
}

pub fn settings(db: &TestDatabase) -> Settings {
    Settings {
        data_dir: db.data_dir.clone(),
        database_url: Some(db.url.clone()),
        https_addr: "127.0.0.1:0".parse().expect("addr"),
        http_addr: ListenAddr(Some("127.0.0.1:0".parse().expect("addr"))),
        tls_cert: None,
        tls_key: None,
        tls_extra_names: Vec::new(),
        public_host: None,
        master_key: None,
        master_key_file: None,
        clock_skew_seconds: 900,
        signing_algorithm: SigningAlgorithm::EdDsa,
        refresh_interval_ms: 100,
        default_limits: callsign::domain::LimitTable::acs_defaults(),
        tenant_max_in_flight: 256,
        verified_token_cache: 100_000,
        batch_writers: 2,
        operator_cache_seconds: 300,
        operator_auth_attempts_per_minute: 10,
        log_format: LogFormat::Text,
    }
}

/// A running server and what a client needs to reach it.
pub struct TestServer {
    pub db: TestDatabase,
    pub https_port: u16,
    pub http_port: u16,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The default tenant, over HTTPS.
    pub default: AcsClient,
}

impl TestServer {
    pub async fn spawn(backend: Backend) -> Self {
        Self::start(TestDatabase::create(backend).await).await
    }

    pub async fn start(db: TestDatabase) -> Self {
        let settings = settings(&db);
        Self::start_with(db, &settings).await
    }

    /// A server whose settings `adjust` changes first.
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> Self {
        let db = TestDatabase::create(backend).await;
        let mut settings = settings(&db);
        adjust(&mut settings);
        Self::start_with(db, &settings).await
    }

    async fn start_with(db: TestDatabase, settings: &Settings) -> Self {
        let app = Application::build(settings).await.expect("server starts");
        let https_port = app.https_port();
        let http_port = app.http_port().expect("http listener");
        let handle = app.handle();
        let task = tokio::spawn(app.run_until_stopped());
        let connection = std::fs::read_to_string(db.data_dir.join("default-connection-string.txt"))
            .expect("default connection string");
        let key = connection
            .trim()
            .rsplit_once("accesskey=")
            .expect("accesskey")
            .1
            .to_owned();
        let default = AcsClient::new(&db, "127.0.0.1", https_port, &key);
        Self {
            db,
            https_port,
            http_port,
            handle,
            task,
            default,
        }
    }

    /// Stops the server gracefully and starts a new one on the same database and data dir.
    pub async fn restart(self) -> Self {
        let db = self.stop().await;
        Self::start(db).await
    }

    pub async fn stop(self) -> TestDatabase {
        self.handle.stop(true).await;
        self.task
            .await
            .expect("server task")
            .expect("server stopped cleanly");
        self.db
    }

    /// A client for the tenant with `key`, addressing `host` (resolved to loopback).
    pub fn client(&self, host: &str, key: &str) -> AcsClient {
        AcsClient::new(&self.db, host, self.https_port, key)
    }

    /// `callsign admin credential create --json`; returns the credential.
    pub fn admin_credential(&self) -> String {
        let out = self.cli(&["admin", "credential", "create", "--name", "test", "--json"]);
        assert!(
            out.status.success(),
            "credential create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).expect("credential json");
        json["credential"].as_str().expect("credential").to_owned()
    }

    /// An admin API client over plain HTTP, with a fresh operator credential that this
    /// server already accepts.
    pub async fn admin(&self) -> AdminClient {
        let credential = self.admin_credential();
        self.wait_for_credentials(self.http_port).await;
        AdminClient::new(self.http_port, Some(&credential))
    }

    /// Waits (at most 1 s) until the instance on `http_port` accepts exactly the active
    /// credentials in the database, watching its metrics: trying the credential instead would
    /// count failed attempts against the per-address limit.
    pub async fn wait_for_credentials(&self, http_port: u16) {
        let active = self
            .count("operator_credentials WHERE revoked_at IS NULL")
            .await;
        let expected = format!("callsign_operator_credentials {active}\n");
        wait_until(Duration::from_secs(1), || async {
            metrics(http_port).await.contains(&expected)
        })
        .await;
    }

    /// Lifts every rate limit of the default tenant (as a load test needs, issue 6) and waits
    /// until this server applies it.
    pub async fn lift_rate_limits(&self) {
        let lifted: Vec<String> = [
            "create_identity",
            "issue_token",
            "delete_identity",
            "revoke_tokens",
            "get_identity",
            "introspect",
            "audit_query",
        ]
        .iter()
        .map(|op| format!("{op}=none"))
        .collect();
        let mut args = vec!["tenant", "update", "--tenant", "default"];
        for limit in &lifted {
            args.extend(["--limit", limit.as_str()]);
        }
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The CLI wrote the database; the server picks it up within its refresh interval.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// Runs the `callsign` binary against this server's database and data dir.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_callsign"))
            .args(args)
            .env("CALLSIGN_DATA_DIR", &self.db.data_dir)
            .env("CALLSIGN_DATABASE_URL", &self.db.url)
            .env(
                "CALLSIGN_HTTPS_ADDR",
                format!("127.0.0.1:{}", self.https_port),
            )
            .env("RUST_LOG", "warn")
            .output()
            .expect("run callsign")
    }

    /// `callsign tenant create --json` for `name` claiming `host`, then waits until the
    /// server serves it, failing the test if that takes a second or more. Returns the client
    /// for the new tenant and the CLI's JSON.
    pub async fn create_tenant(&self, name: &str, host: &str) -> (AcsClient, Value) {
        let out = self.cli(&[
            "tenant",
            "create",
            "--name",
            name,
            "--hostname",
            host,
            "--json",
        ]);
        let created = std::time::Instant::now();
        assert!(
            out.status.success(),
            "tenant create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).expect("tenant json");
        let key = json["primaryKey"].as_str().expect("primaryKey").to_owned();
        let client = self.client(host, &key);
        // An authenticated read of an unknown identity of the new tenant: 404 once the server
        // knows the tenant (and its certificate names the host), a TLS error or 401 before.
        let probe = format!(
            "8:acs:{}_{}",
            json["tenantId"].as_str().expect("tenantId"),
            uuid::Uuid::now_v7()
        );
        let path = format!("/identities/{}?{API}", encode(&probe));
        loop {
            match client
                .try_send(Request::new(Method::GET, &path, &Value::Null))
                .await
            {
                Ok(reply) if reply.status == StatusCode::NOT_FOUND => break,
                other => assert!(
                    created.elapsed() < Duration::from_secs(1),
                    "tenant {name} not served 1 s after it was created: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (client, json)
    }

    /// Opens the test's database directly, to check what was (not) written.
    pub async fn count(&self, table: &str) -> i64 {
        self.db.count(table).await
    }

    /// Row counts of every table a request could write to.
    pub async fn snapshot(&self) -> Vec<i64> {
        let mut counts = Vec::new();
        for table in [
            "tenants",
            "identities",
            "issued_tokens",
            "access_keys",
            "signing_keys",
        ] {
            counts.push(self.count(table).await);
        }
        counts.push(
            self.count(
                "identities WHERE deleted_at IS NOT NULL OR tokens_revoked_before IS NOT NULL",
            )
            .await,
        );
        counts
    }

    /// Runs `callsign audit verify` and returns (success, stdout).
    pub fn audit_verify(&self) -> (bool, String) {
        let out = self.cli(&["audit", "verify"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Runs a statement against the test's database (for sabotage tests).
    pub async fn execute(&self, sql: &str) {
        let sql = sql.to_owned();
        if self.db.url.starts_with("sqlite") {
            let mut conn = sqlx::SqliteConnection::connect(&self.db.url)
                .await
                .expect("sqlite");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("execute");
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.db.url).await.expect("pg");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("execute");
        }
    }

    /// Starts another server instance on the same database and data directory, as a second
    /// process of a fleet would run.
    pub async fn spawn_peer(&self) -> Peer {
        let app = Application::build(&settings(&self.db))
            .await
            .expect("peer starts");
        let https_port = app.https_port();
        let handle = app.handle();
        let task = tokio::spawn(app.run_until_stopped());
        Peer {
            https_port,
            handle,
            task,
            default: self.default.with_port(https_port),
        }
    }

    /// The repository and master key, opened apart from the server, as the CLI opens them.
    pub async fn open_store(&self) -> (Arc<dyn Repository>, MasterKey) {
        callsign::bootstrap::open(&settings(&self.db))
            .await
            .expect("open the store")
    }

    /// The tenant named `name`, as stored.
    pub async fn tenant_record(&self, name: &str) -> TenantRecord {
        let (repo, _) = self.open_store().await;
        let record = repo
            .load_tenants()
            .await
            .expect("tenants")
            .into_iter()
            .find(|t| t.name == name)
            .expect("tenant");
        repo.close().await;
        record
    }

    /// A token for `identity` of tenant `tenant`, signed with its current key as if issued at
    /// `at` for `minutes` (not recorded: introspection never reads the records).
    pub async fn mint(&self, tenant: &str, identity: &str, at: Timestamp, minutes: i64) -> String {
        let (repo, master_key) = self.open_store().await;
        let record = repo
            .load_tenants()
            .await
            .expect("tenants")
            .into_iter()
            .find(|t| t.name == tenant)
            .expect("tenant");
        repo.close().await;
        let (kid, material) = open_current_signing_key(&record, &master_key).expect("signing key");
        let signer = TokenSigner::new(&kid, &material).expect("signer");
        let issuer = TokenIssuer {
            tenant: record.id,
            issuer: &format!("https://127.0.0.1:{}/", self.https_port),
            audience: &format!("callsign:{}", record.id),
            signer: &signer,
        };
        let (token, _) = issuer
            .mint(
                IdentityId::parse(identity).expect("identity id"),
                &ScopeSet::parse(&["chat"]).expect("scopes"),
                ExpiryMinutes::parse(Some(minutes)).expect("minutes"),
                at,
            )
            .expect("mint");
        token.token
    }

    /// The public key (SPKI DER) and algorithm of signing key `kid`.
    pub async fn signing_public_key(&self, kid: &str) -> (Vec<u8>, String) {
        let sql = "SELECT public_key_der, algorithm FROM signing_keys WHERE kid = $1";
        if self.db.url.starts_with("sqlite") {
            let mut conn = sqlx::SqliteConnection::connect(&self.db.url)
                .await
                .expect("sqlite");
            sqlx::query_as(sql)
                .bind(kid)
                .fetch_one(&mut conn)
                .await
                .expect("key")
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.db.url).await.expect("pg");
            sqlx::query_as(sql)
                .bind(kid)
                .fetch_one(&mut conn)
                .await
                .expect("key")
        }
    }
}

/// A second server instance on a [`TestServer`]'s database.
pub struct Peer {
    pub https_port: u16,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The default tenant, through this instance.
    pub default: AcsClient,
}

impl Peer {
    pub async fn stop(self) {
        self.handle.stop(true).await;
        self.task
            .await
            .expect("peer task")
            .expect("peer stopped cleanly");
    }
}

/// A response: status and parsed JSON body (Null when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The `identity.id` of a create-identity reply.
    pub fn identity_id(&self) -> String {
        self.body["identity"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no identity.id in {}", self.body))
            .to_owned()
    }

    /// The `Retry-After` header, in whole seconds.
    pub fn retry_after(&self) -> u64 {
        self.headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("Retry-After is whole seconds")
    }

    /// Asserts an ACS-shaped error with `status` and returns its code.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        let code = self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {}", self.body));
        let message = self.body["error"]["message"]
            .as_str()
            .expect("error.message");
        assert!(!message.is_empty());
        code.to_owned()
    }
}

/// Signs requests with HMAC-SHA256 exactly as the ACS SDKs do.
#[derive(Clone)]
pub struct AcsClient {
    http: reqwest::Client,
    host: String,
    port: u16,
    key: Vec<u8>,
    scheme: &'static str,
}

/// What to sign, and what to send; they differ only in tests that tamper.
pub struct Request<'a> {
    pub method: Method,
    pub path: &'a str,
    pub body: Vec<u8>,
    pub date: SystemTime,
    /// Sent (and signed) instead of the formatted `date`.
    pub date_header: Option<&'a str>,
    pub signed_path: Option<&'a str>,
    pub signed_body: Option<Vec<u8>>,
    pub omit: &'a [&'a str],
    pub authorization: Option<String>,
    /// Sent as they are, unsigned (as the SDKs send x-ms-client-request-id).
    pub extra_headers: &'a [(&'a str, &'a str)],
    /// Sent instead of `application/json` (which goes with any non-empty body).
    pub content_type: Option<&'a str>,
}

impl<'a> Request<'a> {
    pub fn new(method: Method, path: &'a str, body: &Value) -> Self {
        let body = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(body).expect("json")
        };
        Self::raw(method, path, body)
    }

    pub fn raw(method: Method, path: &'a str, body: Vec<u8>) -> Self {
        Self {
            method,
            path,
            body,
            date: SystemTime::now(),
            date_header: None,
            signed_path: None,
            signed_body: None,
            omit: &[],
            authorization: None,
            extra_headers: &[],
            content_type: None,
        }
    }
}

impl AcsClient {
    pub fn new(db: &TestDatabase, host: &str, port: u16, key: &str) -> Self {
        let pem = std::fs::read(db.data_dir.join("tls/cert.pem")).expect("cert.pem");
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
            .timeout(Duration::from_secs(30));
        if host.parse::<std::net::IpAddr>().is_err() {
            builder = builder.resolve(host, ([127, 0, 0, 1], port).into());
        }
        Self {
            http: builder.build().expect("client"),
            host: host.to_owned(),
            port,
            key: STANDARD.decode(key).expect("base64 key"),
            scheme: "https",
        }
    }

    /// The same tenant over the plain-HTTP listener.
    pub fn over_http(&self, port: u16) -> Self {
        Self {
            http: reqwest::Client::new(),
            port,
            scheme: "http",
            ..self.clone()
        }
    }

    /// The same client after a server restart on a new port.
    pub fn with_port(&self, port: u16) -> Self {
        // reqwest's resolve() override ignores its port, so the same client still applies.
        Self {
            port,
            ..self.clone()
        }
    }

    pub fn with_key(&self, key: &[u8]) -> Self {
        Self {
            key: key.to_vec(),
            ..self.clone()
        }
    }

    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub async fn send(&self, request: Request<'_>) -> Reply {
        self.try_send(request).await.expect("request sent")
    }

    pub async fn try_send(&self, request: Request<'_>) -> Result<Reply, reqwest::Error> {
        let authority = self.authority();
        let signed_body = request.signed_body.as_ref().unwrap_or(&request.body);
        let hash = STANDARD.encode(Sha256::digest(signed_body));
        let date = request
            .date_header
            .map_or_else(|| httpdate::fmt_http_date(request.date), str::to_owned);
        let signed_path = request.signed_path.unwrap_or(request.path);
        let to_sign = format!(
            "{}\n{}\n{};{};{}",
            request.method.as_str(),
            signed_path,
            date,
            authority,
            hash
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac");
        mac.update(to_sign.as_bytes());
        let signature = STANDARD.encode(mac.finalize().into_bytes());
        let authorization = request.authorization.clone().unwrap_or_else(|| {
            format!(
                "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={signature}"
            )
        });

        let url = format!("{}://{}{}", self.scheme, authority, request.path);
        let mut builder = self.http.request(request.method.clone(), url);
        for (name, value) in [
            ("x-ms-date", date.as_str()),
            ("x-ms-content-sha256", hash.as_str()),
            ("authorization", authorization.as_str()),
        ] {
            if !request.omit.contains(&name) {
                builder = builder.header(name, value);
            }
        }
        for (name, value) in request.extra_headers {
            builder = builder.header(*name, *value);
        }
        if let Some(content_type) = request.content_type {
            builder = builder.header("content-type", content_type);
        } else if !request.body.is_empty() {
            builder = builder.header("content-type", "application/json");
        }
        let response = builder.body(request.body).send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("response is not JSON: {}", String::from_utf8_lossy(&bytes))
            })
        };
        Ok(Reply {
            status,
            body,
            headers,
        })
    }

    pub async fn call(&self, method: Method, path: &str, body: Value) -> Reply {
        self.send(Request::new(method, path, &body)).await
    }

    pub async fn create_identity(&self, body: Value) -> Reply {
        self.call(Method::POST, &format!("/identities?{API}"), body)
            .await
    }

    /// Creates an identity and returns its id.
    pub async fn new_identity(&self) -> String {
        let reply = self.create_identity(serde_json::json!({})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.identity_id()
    }

    pub async fn issue_token(&self, id: &str, body: Value) -> Reply {
        self.call(
            Method::POST,
            &format!("/identities/{}/:issueAccessToken?{API}", encode(id)),
            body,
        )
        .await
    }

    pub async fn get_identity(&self, id: &str) -> Reply {
        self.call(
            Method::GET,
            &format!("/identities/{}?{API}", encode(id)),
            Value::Null,
        )
        .await
    }

    pub async fn revoke(&self, id: &str) -> Reply {
        self.call(
            Method::POST,
            &format!("/identities/{}/:revokeAccessTokens?{API}", encode(id)),
            Value::Null,
        )
        .await
    }

    /// `GET /audit/events` with `query` (without the leading `?`).
    pub async fn audit(&self, query: &str) -> Reply {
        self.call(Method::GET, &format!("/audit/events?{query}"), Value::Null)
            .await
    }

    /// Follows `nextLink`s from `query` and returns every event, checking each link points
    /// back at this server.
    pub async fn audit_all(&self, query: &str) -> (Vec<Value>, usize) {
        let mut events = Vec::new();
        let mut pages = 0;
        let mut reply = self.audit(query).await;
        loop {
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            pages += 1;
            events.extend(
                reply.body["value"]
                    .as_array()
                    .expect("value")
                    .iter()
                    .cloned(),
            );
            let Some(next) = reply.body["nextLink"].as_str() else {
                break;
            };
            let prefix = format!("{}://{}", self.scheme, self.authority());
            let path = next
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("nextLink {next} is not on {prefix}"));
            reply = self.call(Method::GET, path, Value::Null).await;
        }
        (events, pages)
    }

    /// Issues a token and returns it.
    pub async fn token(&self, id: &str, scopes: &[&str]) -> String {
        let reply = self
            .issue_token(id, serde_json::json!({ "scopes": scopes }))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["token"].as_str().expect("token").to_owned()
    }

    /// RFC 7662 introspection, form-encoded as the RFC sends it.
    pub async fn introspect(&self, token: &str) -> Reply {
        let body = format!(
            "token={}",
            percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC)
        );
        self.send(Request {
            content_type: Some("application/x-www-form-urlencoded"),
            ..Request::raw(Method::POST, "/oauth2/introspect", body.into_bytes())
        })
        .await
    }

    /// Whether introspection calls `token` active; fails the test on anything but a 200.
    pub async fn is_active(&self, token: &str) -> bool {
        let reply = self.introspect(token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["active"].as_bool().expect("active")
    }

    /// An unsigned GET (the public documents), optionally conditional on an ETag.
    pub async fn public_get(&self, path: &str, if_none_match: Option<&str>) -> Reply {
        let url = format!("{}://{}{}", self.scheme, self.authority(), path);
        let mut builder = self.http.get(url);
        if let Some(tag) = if_none_match {
            builder = builder.header("if-none-match", tag);
        }
        let response = builder.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        Reply {
            status,
            body,
            headers,
        }
    }

    /// The reqwest client this tenant's requests go through (it trusts the server's
    /// certificate and resolves the tenant's host name).
    pub fn http(&self) -> reqwest::Client {
        self.http.clone()
    }

    pub async fn delete_identity(&self, id: &str) -> Reply {
        self.call(
            Method::DELETE,
            &format!("/identities/{}?{API}", encode(id)),
            Value::Null,
        )
        .await
    }
}

/// Percent-encodes an id as the SDKs put it in a path.
pub fn encode(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The decoded header and payload of a JWT.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {token}");
    let decode = |p: &str| -> Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("json")
    };
    (decode(parts[0]), decode(parts[1]))
}

/// The audit event a direct store write needs, as the CLI would record it.
pub fn cli_event(
    identity: &str,
    operation: callsign::domain::audit::Operation,
) -> callsign::domain::audit::AuditEvent {
    let id = callsign::domain::IdentityId::parse(identity).expect("identity id");
    callsign::service::audit::Caller::cli().event(
        id.tenant(),
        operation,
        Some(id.local()),
        callsign::domain::Timestamp::now(),
        serde_json::json!({}),
    )
}

/// The text of `GET /metrics` on the plain-HTTP listener at `http_port`.
pub async fn metrics(http_port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Polls `check` every 10 ms until it holds, failing the test if it does not within `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Talks to `/admin` with a bearer operator credential, over plain HTTP.
#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    authorization: Option<String>,
}

impl AdminClient {
    pub fn new(http_port: u16, credential: Option<&str>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            base: format!("http://127.0.0.1:{http_port}"),
            authorization: credential.map(|c| format!("Bearer {c}")),
        }
    }

    /// The same client sending `authorization` as it is (or no Authorization header).
    pub fn with_authorization(&self, authorization: Option<&str>) -> Self {
        Self {
            authorization: authorization.map(str::to_owned),
            ..self.clone()
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut builder = self.http.request(method, format!("{}{path}", self.base));
        if let Some(authorization) = &self.authorization {
            builder = builder.header("authorization", authorization);
        }
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = builder.send().await.expect("admin request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("response is not JSON: {}", String::from_utf8_lossy(&bytes))
            })
        };
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// `POST /admin/tenants` for `name` claiming `host`; returns the 201 body.
    pub async fn create_tenant(&self, name: &str, host: &str) -> Value {
        let reply = self
            .post(
                "/admin/tenants",
                serde_json::json!({"name": name, "hostnames": [host]}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body
    }
}
