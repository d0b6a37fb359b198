//! Tenant isolation across every route: one tenant's credentials against another tenant's
//! identities, tokens, events and continuation tokens, on the tenant's own host and on the
//! other's. Every combination is tried once in order, then a seeded random sample of them
//! again, interleaved with the owners' own traffic (set `CALLSIGN_ISOLATION_SEED` to replay a
//! run; the seed is printed). Zero crossings: a foreign id is a 404 exactly like an unknown
//! one, a foreign token is inactive, a foreign event never appears, a key never
//! authenticates on another tenant's host or on `/admin`, and nothing a refused request
//! touched has changed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::{API, AcsClient, AdminClient, Backend, TestServer, encode};

crate::both_backends!(no_route_lets_a_tenant_reach_another_tenants_data);

/// What one tenant owns, as its own client sees it.
struct Owned {
    client: AcsClient,
    key: String,
    tenant_id: String,
    live: Vec<String>,
    revoked: String,
    deleted: String,
    tokens: Vec<String>,
    /// A continuation token of this tenant's audit trail.
    continuation: String,
}

async fn populate(client: AcsClient, key: String, tenant_id: String) -> Owned {
    let mut live = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let id = client.new_identity().await;
        tokens.push(client.token(&id, &["chat", "voip"]).await);
        live.push(id);
    }
    let revoked = client.new_identity().await;
    client.token(&revoked, &["chat"]).await;
    assert_eq!(client.revoke(&revoked).await.status, 204);
    let deleted = client.new_identity().await;
    assert_eq!(client.delete_identity(&deleted).await.status, 204);
    let page = client.audit(&format!("maxPageSize=2&{API}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let next = page.body["nextLink"].as_str().expect("a second page");
    let continuation = next
        .split("continuationToken=")
        .nth(1)
        .expect("continuation token")
        .split('&')
        .next()
        .expect("token")
        .to_owned();
    Owned {
        client,
        key,
        tenant_id,
        live,
        revoked,
        deleted,
        tokens,
        continuation,
    }
}

/// What the owner sees of its own data; refused foreign requests must leave it unchanged.
async fn owner_view(owned: &Owned) -> Value {
    let mut identities = Vec::new();
    for id in owned.live.iter().chain([&owned.revoked, &owned.deleted]) {
        let reply = owned.client.get_identity(id).await;
        identities.push(json!([reply.status.as_u16(), reply.body]));
    }
    let mut active = Vec::new();
    for token in &owned.tokens {
        active.push(owned.client.is_active(token).await);
    }
    let (events, _) = owned
        .client
        .audit_all(&format!("maxPageSize=100&{API}"))
        .await;
    // The events about the owner's identities. (Its trail also records refused attempts on
    // its host, about no identity, and the attacker's own identities live in other trails.)
    let mine: Vec<&String> = owned
        .live
        .iter()
        .chain([&owned.revoked, &owned.deleted])
        .collect();
    let trail: Vec<_> = events
        .iter()
        .filter(|e| {
            e["identity"]
                .as_str()
                .is_some_and(|id| mine.iter().any(|m| *m == id))
        })
        .map(|e| json!([e["sequenceNumber"], e["operation"], e["hash"]]))
        .collect();
    assert!(!trail.is_empty(), "no events about the owner's identities");
    json!({"identities": identities, "active": active, "trail": trail})
}

/// One way of reaching for another tenant's data.
#[derive(Debug, Clone, Copy)]
enum Attempt {
    Get,
    Delete,
    Revoke,
    Issue,
    CreateWithForeignExternalIdTenantPrefix,
    Introspect,
    AuditByIdentity,
    AuditContinuation,
    KeyOnForeignHost,
    KeyOnAdmin,
}

const ATTEMPTS: [Attempt; 10] = [
    Attempt::Get,
    Attempt::Delete,
    Attempt::Revoke,
    Attempt::Issue,
    Attempt::CreateWithForeignExternalIdTenantPrefix,
    Attempt::Introspect,
    Attempt::AuditByIdentity,
    Attempt::AuditContinuation,
    Attempt::KeyOnForeignHost,
    Attempt::KeyOnAdmin,
];

/// `attacker` reaches for `victim`'s data with `attempt`, using victim object `pick`; fails
/// the test on any crossing.
async fn try_crossing(
    attempt: Attempt,
    attacker: &Owned,
    victim: &Owned,
    pick: usize,
    admin_anonymous: &AdminClient,
) {
    let ids: Vec<&String> = victim
        .live
        .iter()
        .chain([&victim.revoked, &victim.deleted])
        .collect();
    let id = ids[pick % ids.len()];
    let token = &victim.tokens[pick % victim.tokens.len()];
    let what = format!("{attempt:?} on {id}");
    let client = &attacker.client;
    match attempt {
        Attempt::Get => assert_eq!(
            client.get_identity(id).await.error(404),
            "IdentityNotFound",
            "{what}"
        ),
        Attempt::Delete => assert_eq!(
            client.delete_identity(id).await.error(404),
            "IdentityNotFound",
            "{what}"
        ),
        Attempt::Revoke => assert_eq!(
            client.revoke(id).await.error(404),
            "IdentityNotFound",
            "{what}"
        ),
        Attempt::Issue => {
            let reply = client.issue_token(id, json!({"scopes": ["chat"]})).await;
            assert_eq!(reply.error(404), "IdentityNotFound", "{what}");
        }
        Attempt::CreateWithForeignExternalIdTenantPrefix => {
            // An externalId equal to a foreign identity's id creates an identity of the
            // attacker's own tenant, never returns the foreign one.
            let reply = client.create_identity(json!({"externalId": id})).await;
            assert!(
                reply.status == 201 || reply.status == 200,
                "{what}: {}",
                reply.body
            );
            let created = reply.identity_id();
            assert!(
                created.starts_with(&format!("8:acs:{}_", attacker.tenant_id)),
                "{what}: {created}"
            );
        }
        Attempt::Introspect => assert!(
            !client.is_active(token).await,
            "{what}: foreign token active"
        ),
        Attempt::AuditByIdentity => {
            let reply = client
                .audit(&format!("identity={}&{API}", encode(id)))
                .await;
            // A foreign id is either refused or finds nothing; never the victim's events.
            if reply.status == 200 {
                assert_eq!(reply.body["value"], json!([]), "{what}");
            } else {
                assert!(reply.status.is_client_error(), "{what}: {}", reply.status);
            }
        }
        Attempt::AuditContinuation => {
            let reply = client
                .audit(&format!("continuationToken={}&{API}", victim.continuation))
                .await;
            if reply.status == 200 {
                for event in reply.body["value"].as_array().expect("value") {
                    assert_eq!(event["tenantId"], attacker.tenant_id.as_str(), "{what}");
                }
            } else {
                assert_eq!(reply.status, 400, "{what}: {}", reply.body);
            }
        }
        Attempt::KeyOnForeignHost => {
            // The victim's host, signed with the attacker's key.
            let forged = victim.client.with_key(
                &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &attacker.key)
                    .expect("key"),
            );
            let reply = forged.get_identity(id).await;
            assert_eq!(reply.status, 401, "{what}: {}", reply.body);
        }
        Attempt::KeyOnAdmin => {
            let as_operator =
                admin_anonymous.with_authorization(Some(&format!("Bearer {}", attacker.key)));
            let reply = as_operator.get("/admin/tenants").await;
            // Refused; after a few tries from one address, throttled as failed operator
            // authentications are.
            assert!(
                reply.status == 401 || reply.status == 429,
                "{what}: {}",
                reply.body
            );
            assert!(reply.body.get("value").is_none(), "{what}: {}", reply.body);
        }
    }
}

async fn no_route_lets_a_tenant_reach_another_tenants_data(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    server.lift_rate_limits().await;
    let admin = server.admin().await;
    let mut tenants = Vec::new();
    let default_tenant = {
        let reply = server.default.create_identity(json!({})).await;
        let id = reply.identity_id();
        id["8:acs:".len()..id.find('_').expect("_")].to_owned()
    };
    let connection =
        std::fs::read_to_string(server.db.data_dir.join("default-connection-string.txt"))
            .expect("default connection string");
    let default_key = connection
        .trim()
        .split("accesskey=")
        .nth(1)
        .expect("accesskey")
        .to_owned();
    tenants.push(populate(server.default.clone(), default_key, default_tenant).await);
    for name in ["alpha", "beta", "gamma"] {
        let (client, json) = server.create_tenant(name, &format!("{name}.test")).await;
        let key = json["primaryKey"].as_str().expect("key").to_owned();
        let tenant_id = json["tenantId"].as_str().expect("tenantId").to_owned();
        tenants.push(populate(client, key, tenant_id).await);
    }
    server.lift_rate_limits().await;
    let anonymous = admin.with_authorization(None);

    let mut before = Vec::new();
    for owned in &tenants {
        before.push(owner_view(owned).await);
    }
    let counts = server.snapshot().await;

    // Every combination once.
    for (a, attacker) in tenants.iter().enumerate() {
        for (v, victim) in tenants.iter().enumerate() {
            if a == v {
                continue;
            }
            for attempt in ATTEMPTS {
                for pick in 0..5 {
                    if matches!(attempt, Attempt::CreateWithForeignExternalIdTenantPrefix)
                        && pick > 0
                    {
                        continue;
                    }
                    try_crossing(attempt, attacker, victim, pick, &anonymous).await;
                }
            }
        }
    }
    // Then a random sample, with the owners' own reads between them.
    let seed: u64 = std::env::var("CALLSIGN_ISOLATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen());
    eprintln!("isolation seed: {seed} (CALLSIGN_ISOLATION_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..150 {
        let a = rng.gen_range(0..tenants.len());
        let v = (a + rng.gen_range(1..tenants.len())) % tenants.len();
        let attempt = ATTEMPTS[rng.gen_range(0..ATTEMPTS.len() - 1)];
        if matches!(attempt, Attempt::CreateWithForeignExternalIdTenantPrefix) {
            continue;
        }
        try_crossing(
            attempt,
            &tenants[a],
            &tenants[v],
            rng.gen_range(0..5),
            &anonymous,
        )
        .await;
        let own = &tenants[v];
        let id = &own.live[rng.gen_range(0..own.live.len())];
        assert_eq!(own.client.get_identity(id).await.status, 200, "seed {seed}");
    }

    // The owners see exactly what they saw: nothing was deleted, revoked, issued or audited
    // in their name. (The only rows added are the attackers' own identities.)
    for (owned, before) in tenants.iter().zip(&before) {
        assert_eq!(&owner_view(owned).await, before, "seed {seed}");
    }
    let after = server.snapshot().await;
    let created_by_attackers = (tenants.len() * (tenants.len() - 1)) as i64;
    assert_eq!(after[1], counts[1] + created_by_attackers, "identities");
    assert_eq!(after[0], counts[0], "tenants");
    assert_eq!(after[2..], counts[2..], "tokens, keys and revocations");
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
}
