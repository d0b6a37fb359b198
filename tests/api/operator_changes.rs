//! Key regeneration and tenant deletion under concurrent traffic, on two instances of one
//! database. Once the change is answered, no request sent after that moment with the old key
//! (or for the deleted tenant) succeeds on the instance that made it; on the other instance
//! none succeeds once the documented delay (1 s) has passed; the untouched key keeps working
//! throughout. The same for changes the CLI makes straight in the database, where the delay
//! applies to both instances.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{API, AcsClient, AdminClient, Backend, Peer, Request, TestServer, encode};

crate::both_backends!(
    a_regenerated_key_fails_at_once_here_and_within_a_second_on_a_peer,
    a_deleted_tenant_is_gone_at_once_here_and_within_a_second_on_a_peer,
    changes_the_cli_makes_reach_both_instances_within_a_second,
    writes_racing_their_tenants_deletion_on_a_peer_fail_alone_and_cleanly,
);

/// How long a change may take to reach an instance that did not make it.
const PROPAGATION: Duration = Duration::from_secs(1);

/// One request of the traffic: which instance, when it was sent, whether it succeeded.
struct Sent {
    instance: usize,
    at: Instant,
    ok: bool,
}

/// Sends reads of `id` through each of `clients` (one per instance) from 4 tasks each until
/// `stop`; a transport error (the host's certificate gone, say) counts as a failure.
fn traffic(
    clients: Vec<AcsClient>,
    id: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Sent>> {
    tokio::spawn(async move {
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .flat_map(|(instance, client)| (0..4).map(move |_| (instance, client.clone())))
            .map(|(instance, client)| {
                let id = id.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut sent = Vec::new();
                    let path = format!("/identities/{}?{API}", encode(&id));
                    while !stop.load(Ordering::Relaxed) {
                        let at = Instant::now();
                        let ok = client
                            .try_send(Request::new(reqwest::Method::GET, &path, &Value::Null))
                            .await
                            .is_ok_and(|reply| reply.status == 200);
                        sent.push(Sent { instance, at, ok });
                    }
                    sent
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("traffic task"));
        }
        all
    })
}

/// Runs `traffic` with `old` clients and `kept` clients across `change`, then checks the
/// old ones failed from the change on (after `delay[i]` on instance `i`) and the kept ones
/// never did.
async fn across_change<F, Fut>(
    old: Vec<AcsClient>,
    kept: Option<Vec<AcsClient>>,
    id: &str,
    delays: [Duration; 2],
    change: F,
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let old_traffic = traffic(old, id.to_owned(), stop.clone());
    let kept_traffic = kept.map(|clients| traffic(clients, id.to_owned(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    change().await;
    let changed = Instant::now();
    tokio::time::sleep(PROPAGATION + Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let sent = old_traffic.await.expect("traffic");
    for (instance, delay) in delays.iter().enumerate() {
        let before = sent
            .iter()
            .filter(|s| s.instance == instance && s.at < changed)
            .count();
        assert!(
            before > 0,
            "no traffic reached instance {instance} before the change"
        );
        let after: Vec<_> = sent
            .iter()
            .filter(|s| s.instance == instance && s.at >= changed + *delay)
            .collect();
        assert!(
            !after.is_empty(),
            "no traffic on instance {instance} after the change"
        );
        let succeeded = after.iter().filter(|s| s.ok).count();
        assert_eq!(
            succeeded,
            0,
            "{succeeded} of {} requests sent to instance {instance} {:?} after the change succeeded",
            after.len(),
            delay
        );
    }
    if let Some(kept) = kept_traffic {
        let sent = kept.await.expect("traffic");
        let failed = sent.iter().filter(|s| !s.ok).count();
        assert_eq!(
            failed,
            0,
            "{failed} of {} requests with the kept key failed",
            sent.len()
        );
    }
}

/// Two instances on one database, and a tenant created through the first's admin API with an
/// identity.
struct Acme {
    server: TestServer,
    admin: AdminClient,
    tenant: String,
    primary: AcsClient,
    secondary: AcsClient,
    peer: Peer,
    id: String,
}

impl Acme {
    async fn start(backend: Backend) -> Self {
        let server = TestServer::spawn(backend).await;
        let admin = server.admin().await;
        let created = admin.create_tenant("acme", "acme.test").await;
        let key = |slot: &str| created[slot].as_str().expect("key").to_owned();
        let primary = server.client("acme.test", &key("primaryKey"));
        let secondary = server.client("acme.test", &key("secondaryKey"));
        let peer = server.spawn_peer().await;
        let id = primary.new_identity().await;
        Self {
            tenant: key("tenantId"),
            server,
            admin,
            primary,
            secondary,
            peer,
            id,
        }
    }
}

async fn a_regenerated_key_fails_at_once_here_and_within_a_second_on_a_peer(backend: Backend) {
    let Acme {
        server,
        admin,
        tenant,
        primary,
        secondary,
        peer,
        id,
    } = Acme::start(backend).await;

    let mut new_key = String::new();
    across_change(
        vec![primary.clone(), primary.with_port(peer.https_port)],
        Some(vec![
            secondary.clone(),
            secondary.with_port(peer.https_port),
        ]),
        &id,
        [Duration::ZERO, PROPAGATION],
        || async {
            let reply = admin
                .post(
                    &format!("/admin/tenants/{tenant}/:regenerateKey"),
                    json!({"keyType": "primary"}),
                )
                .await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            new_key = reply.body["key"].as_str().expect("key").to_owned();
        },
    )
    .await;
    let fresh = server.client("acme.test", &new_key);
    for client in [fresh.clone(), fresh.with_port(peer.https_port)] {
        assert_eq!(client.get_identity(&id).await.status, 200);
    }
    peer.stop().await;
}

async fn a_deleted_tenant_is_gone_at_once_here_and_within_a_second_on_a_peer(backend: Backend) {
    let Acme {
        server,
        admin,
        tenant,
        primary,
        secondary,
        peer,
        id,
    } = Acme::start(backend).await;
    let token = primary.token(&id, &["chat"]).await;
    let on_peer = secondary.with_port(peer.https_port);
    assert!(on_peer.is_active(&token).await);

    across_change(
        vec![primary.clone(), on_peer.clone()],
        None,
        &id,
        [Duration::ZERO, PROPAGATION],
        || async {
            let reply = admin.delete(&format!("/admin/tenants/{tenant}")).await;
            assert!(reply.status.is_success(), "{}", reply.body);
        },
    )
    .await;
    // Its signing key is published nowhere (a host no tenant claims may be answered by the
    // default tenant, with the default tenant's keys), so no verifier accepts its tokens.
    let (header, _) = crate::helpers::jwt_parts(&token);
    let kid = header["kid"].as_str().expect("kid").to_owned();
    for client in [&primary, &on_peer] {
        let jwks = client
            .http()
            .get(format!(
                "https://{}/.well-known/jwks.json",
                client.authority()
            ))
            .send()
            .await;
        if let Ok(response) = jwks {
            let text = response.text().await.expect("body");
            assert!(
                !text.contains(&kid),
                "the deleted tenant's key is still published: {text}"
            );
        }
    }
    // Its identities are gone (the default tenant has none in this test).
    assert_eq!(server.count("identities WHERE deleted_at IS NULL").await, 0);
    peer.stop().await;
}

async fn changes_the_cli_makes_reach_both_instances_within_a_second(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (primary, created) = server.create_tenant("acme", "acme.test").await;
    let secondary = server.client("acme.test", created["secondaryKey"].as_str().expect("key"));
    let peer = server.spawn_peer().await;
    let id = primary.new_identity().await;

    across_change(
        vec![primary.clone(), primary.with_port(peer.https_port)],
        Some(vec![
            secondary.clone(),
            secondary.with_port(peer.https_port),
        ]),
        &id,
        [PROPAGATION, PROPAGATION],
        || async {
            let out = server.cli(&[
                "tenant",
                "regenerate-key",
                "--tenant",
                "acme",
                "--key",
                "primary",
                "--json",
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        },
    )
    .await;

    across_change(
        vec![secondary.clone(), secondary.with_port(peer.https_port)],
        None,
        &id,
        [PROPAGATION, PROPAGATION],
        || async {
            let out = server.cli(&["tenant", "delete", "--tenant", "acme", "--yes"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        },
    )
    .await;
    peer.stop().await;
}

/// Writes for a tenant that another instance deletes reach this instance's group commit
/// until the deletion propagates (up to a second). They must be refused on their own —
/// never a 5xx, and never failing the other tenants' writes that share their batch.
async fn writes_racing_their_tenants_deletion_on_a_peer_fail_alone_and_cleanly(backend: Backend) {
    let Acme {
        server,
        admin,
        tenant,
        primary,
        peer,
        id,
        ..
    } = Acme::start(backend).await;
    let (globex, _) = server.create_tenant("globex", "globex.test").await;
    server.lift_rate_limits().await;
    let acme_on_peer = primary.with_port(peer.https_port);
    let globex_on_peer = globex.with_port(peer.https_port);

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let create = format!("/identities?{API}");
    let issue = format!("/identities/{}/:issueAccessToken?{API}", encode(&id));
    // Globex creates identities; acme creates identities with tokens and issues tokens.
    let writers = [
        (&globex_on_peer, "globex", &create, json!({})),
        (
            &acme_on_peer,
            "acme",
            &create,
            json!({"createTokenWithScopes": ["voip"]}),
        ),
        (&acme_on_peer, "acme", &issue, json!({"scopes": ["chat"]})),
    ];
    for (client, tenant, path, body) in writers.into_iter().cycle().take(12) {
        let (client, path, stop) = (client.clone(), path.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let reply = client
                    .try_send(Request::new(reqwest::Method::POST, &path, &body))
                    .await;
                statuses.push((tenant, reply.map(|r| r.status.as_u16()).ok()));
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = admin.delete(&format!("/admin/tenants/{tenant}")).await;
    assert!(reply.status.is_success(), "{}", reply.body);
    // Well inside the peer's propagation delay.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut statuses = Vec::new();
    for task in tasks {
        statuses.extend(task.await.expect("traffic task"));
    }
    let globex_failed: Vec<_> = statuses
        .iter()
        .filter(|(tenant, status)| *tenant == "globex" && !matches!(status, Some(200 | 201)))
        .collect();
    assert!(
        globex_failed.is_empty(),
        "{} of globex's writes failed: {:?}",
        globex_failed.len(),
        &globex_failed[..globex_failed.len().min(5)]
    );
    let acme_5xx = statuses
        .iter()
        .filter(|(tenant, status)| *tenant == "acme" && status.is_some_and(|s| s >= 500))
        .count();
    assert_eq!(acme_5xx, 0, "acme's writes answered 5xx: {statuses:?}");
    let refused = statuses
        .iter()
        .filter(|(tenant, status)| *tenant == "acme" && matches!(status, Some(401 | 404)))
        .count();
    assert!(
        refused > 0,
        "no write of acme reached the peer after the deletion"
    );
    // Nothing of acme's was written after its deletion (token records have no foreign key
    // to stop one).
    for table in ["identities", "issued_tokens"] {
        let orphans = server
            .count(&format!(
                "{table} WHERE tenant_id NOT IN (SELECT tenant_id FROM tenants)"
            ))
            .await;
        assert_eq!(orphans, 0, "{table} of the deleted tenant were left");
    }
    peer.stop().await;
}
