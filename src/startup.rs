//! Builds a running server from settings: database, master key, tenants, TLS, listeners and
//! background tasks. Tests use the same path with port 0 and read the ports back.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, middleware, web};
use anyhow::Context;
use tokio::task::JoinHandle;

use crate::bootstrap;
use crate::config::Settings;
use crate::domain::Timestamp;
use crate::http::{self, AppState, Limits};
use crate::metrics::Metrics;
use crate::service::audit::{AuditService, FailureRecorder};
use crate::service::directory::TenantDirectory;
use crate::service::group_commit::GroupCommit;
use crate::service::identities::IdentityService;
use crate::service::operators::OperatorAuth;
use crate::service::refresh::Refresher;
use crate::service::revocations::RevocationIndex;
use crate::service::verification::VerifiedTokens;
use crate::store::{Dialect, Repository};
use crate::tls::{CertResolver, TlsSource, server_config};

pub struct Application {
    server: Server,
    https_port: u16,
    http_port: Option<u16>,
    repo: Arc<dyn Repository>,
    /// Writers that drain their queues when the server stops.
    writers: Vec<JoinHandle<()>>,
    /// Loops that are simply stopped.
    background: Vec<JoinHandle<()>>,
}

impl Application {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // Bind first: with port 0 the real ports are known only now, and tenants' endpoints
        // (and so the `iss` of their tokens) name the HTTPS port.
        let https_listener = TcpListener::bind(settings.https_addr)
            .with_context(|| format!("listening on {}", settings.https_addr))?;
        let http_listener = settings
            .http_addr
            .0
            .map(|addr| TcpListener::bind(addr).with_context(|| format!("listening on {addr}")))
            .transpose()?;
        let mut settings = settings.clone();
        settings.https_addr = https_listener.local_addr()?;
        let settings = &settings;

        let (repo, master_key) = bootstrap::open(settings).await?;
        bootstrap::ensure_default_tenant(settings, repo.as_ref(), &master_key).await?;
        let audit = AuditService::new(repo.clone(), &master_key)?;
        let directory = Arc::new(
            TenantDirectory::load(
                repo.clone(),
                master_key.clone(),
                bootstrap::endpoints(settings),
                settings.throttle(),
            )
            .await?,
        );
        let operators =
            Arc::new(OperatorAuth::load(repo.clone(), &settings.operator_auth()).await?);
        if !operators.has_credentials() {
            println!(
                "No operator credential exists yet, so the admin API (/admin) refuses every request. \
                 Create one with: callsign admin credential create --name <who>"
            );
        }

        let tls_source = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => TlsSource::Provided {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => TlsSource::Generated {
                dir: settings.tls_dir(),
                extra_names: settings.tls_extra_names.clone(),
            },
        };
        let resolver = Arc::new(CertResolver::new(&tls_source, &directory.hostnames())?);
        let revocations = Arc::new(RevocationIndex::load(repo.as_ref(), Timestamp::now()).await?);
        tracing::info!(marks = revocations.len(), "revocation watermarks loaded");

        let tls_config = server_config(resolver.clone())?;

        let refresher = Arc::new(Refresher::new(
            repo.clone(),
            directory.clone(),
            operators.clone(),
            resolver,
        ));
        let metrics = Arc::new(Metrics::new()?);
        let batch_metrics = metrics.clone();
        let (batches, batches_task) = GroupCommit::spawn(
            repo.clone(),
            Arc::new(move |size, took| batch_metrics.token_batch(size, took)),
            match repo.dialect() {
                Dialect::Sqlite => 1,
                Dialect::Postgres => usize::from(settings.batch_writers),
            },
        );
        let (failures, failures_task) = FailureRecorder::spawn(repo.clone());
        let retention = tokio::spawn(apply_retention(audit.clone()));
        let state = web::Data::new(AppState {
            directory: directory.clone(),
            identities: IdentityService::new(repo.clone(), batches, revocations.clone()),
            audit,
            failures,
            revocations: revocations.clone(),
            verified_tokens: VerifiedTokens::new(settings.verified_token_cache),
            repo: repo.clone(),
            limits: Limits {
                clock_skew: settings.clock_skew(),
                ..Limits::default()
            },
            operators: operators.clone(),
            refresher: refresher.clone(),
            metrics,
            master_key,
            signing_algorithm: settings.signing_algorithm,
        });

        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(middleware::from_fn(http::origin::attach))
                .wrap(
                    middleware::Logger::new("%a \"%r\" %s %b %Dms")
                        .exclude("/healthz")
                        .exclude("/metrics"),
                )
                .wrap(middleware::from_fn(http::metrics::track))
                .configure(http::configure)
        })
        .shutdown_timeout(30)
        // An answer leaves as soon as it is written. With Nagle's algorithm the last, short
        // segment of an answer longer than one segment (an audit page over a real network)
        // waits for the ACK of the ones before it, which the client may delay by up to 40 ms.
        .tcp_nodelay(true)
        .listen_rustls_0_23(https_listener, tls_config)?;
        let https_port = settings.https_addr.port();
        let mut http_port = None;
        if let Some(listener) = http_listener {
            http_port = Some(listener.local_addr()?.port());
            server = server.listen(listener)?;
        }
        let server = server.run();

        let watcher = tokio::spawn(watch_changes(
            refresher,
            repo.clone(),
            revocations,
            settings.refresh_interval(),
        ));
        let sweeper = tokio::spawn(forget_idle_addresses(operators));
        tracing::info!(https_port, http_port, "callsign is listening");
        Ok(Self {
            server,
            https_port,
            http_port,
            repo,
            writers: vec![batches_task, failures_task],
            background: vec![watcher, retention, sweeper],
        })
    }

    pub fn https_port(&self) -> u16 {
        self.https_port
    }

    pub fn http_port(&self) -> Option<u16> {
        self.http_port
    }

    /// Stops the server gracefully when called (tests); SIGTERM and SIGINT do the same.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped, then lets in-flight requests finish, flushes queued token
    /// records and closes the database.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        for task in &self.background {
            task.abort();
        }
        // The workers that held the writers' queues are gone; the writers drain and end.
        let drained = futures_util::future::join_all(self.writers);
        if tokio::time::timeout(Duration::from_secs(30), drained)
            .await
            .is_err()
        {
            tracing::warn!("pending writes were not flushed within 30 s");
        }
        self.repo.close().await;
        tracing::info!("callsign stopped");
        Ok(result?)
    }
}

/// How often marks that no longer matter are dropped from the revocation index.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Polls the database for what other processes (the CLI, other instances) changed: the change
/// epoch (tenants, keys, limits, operator credentials and the certificate's host names) and
/// the identity change log (revocations and deletions).
async fn watch_changes(
    refresher: Arc<Refresher>,
    repo: Arc<dyn Repository>,
    revocations: Arc<RevocationIndex>,
    every: Duration,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = tokio::time::Instant::now();
    loop {
        ticker.tick().await;
        if let Err(error) = refresher.poll().await {
            tracing::warn!(error = %format!("{error:#}"), "change refresh failed");
        }
        match revocations.poll(repo.as_ref(), Timestamp::now()).await {
            Ok(0) => {}
            Ok(applied) => tracing::debug!(applied, "identity changes applied"),
            Err(error) => tracing::warn!(error = %error, "identity change poll failed"),
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            let dropped = revocations.prune(Timestamp::now());
            if dropped > 0 {
                tracing::debug!(dropped, "expired revocation marks dropped");
            }
            last_prune = tokio::time::Instant::now();
        }
    }
}

/// Drops per-address counters of operator authentication that have recovered, each minute.
async fn forget_idle_addresses(operators: Arc<OperatorAuth>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    loop {
        ticker.tick().await;
        operators.forget_idle_addresses();
    }
}

/// Purges audit events past each tenant's retention, at start and then hourly.
async fn apply_retention(audit: AuditService) {
    let mut ticker = tokio::time::interval(Duration::from_secs(3600));
    loop {
        ticker.tick().await;
        match audit.apply_retention(Timestamp::now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "audit retention applied"),
            Err(error) => tracing::warn!(error = %error, "audit retention failed"),
        }
    }
}
