//! Per-tenant, per-operation rate limits end to end: set through the admin API and the CLI,
//! answered with 429, `Retry-After` and the ACS error shape, nothing written for a refused
//! request, other tenants unaffected, and lifted again with `none`.

use serde_json::json;

use crate::helpers::{AcsClient, Backend, Reply, TestServer, wait_until};

crate::both_backends!(
    a_used_up_limit_is_a_429_that_writes_nothing_and_spares_other_tenants,
    the_cli_lifts_a_limit_of_a_running_server,
    a_tenant_at_its_in_flight_cap_gets_429s_while_another_is_served,
);

fn assert_throttled(reply: &Reply) {
    assert_eq!(reply.error(429), "TooManyRequests");
    let retry = reply.retry_after();
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
}

async fn limited_tenant(server: &TestServer, limits: serde_json::Value) -> (AcsClient, String) {
    let admin = server.admin().await;
    let created = admin.create_tenant("acme", "acme.test").await;
    let tenant = created["tenantId"].as_str().expect("tenantId").to_owned();
    let reply = admin
        .patch(
            &format!("/admin/tenants/{tenant}"),
            json!({"limits": limits}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let client = server.client("acme.test", created["primaryKey"].as_str().expect("key"));
    (client, tenant)
}

async fn a_used_up_limit_is_a_429_that_writes_nothing_and_spares_other_tenants(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, _) = limited_tenant(
        &server,
        json!({"issue_token": "5/30s", "create_identity": "3/30s", "introspect": "2/30s"}),
    )
    .await;

    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(acme.new_identity().await);
    }
    let before = server.snapshot().await;
    assert_throttled(&acme.create_identity(json!({})).await);
    assert_eq!(
        server.snapshot().await,
        before,
        "a refused create wrote something"
    );

    let mut tokens = Vec::new();
    for i in 0..5 {
        tokens.push(acme.token(&ids[i % 3], &["chat"]).await);
    }
    let before = server.snapshot().await;
    let events = server.count("audit_events").await;
    assert_throttled(&acme.issue_token(&ids[0], json!({"scopes": ["chat"]})).await);
    // Creating with a token counts against both limits; it is refused before anything.
    assert_throttled(
        &acme
            .create_identity(json!({"createTokenWithScopes": ["chat"]}))
            .await,
    );
    assert_eq!(
        server.snapshot().await,
        before,
        "a refused issue wrote something"
    );
    assert_eq!(server.count("audit_events").await, events);

    assert!(acme.is_active(&tokens[0]).await);
    assert!(acme.is_active(&tokens[1]).await);
    assert_throttled(&acme.introspect(&tokens[2]).await);

    // The default tenant has the defaults (1000 / 30 s) and is not touched by acme's.
    let id = server.default.new_identity().await;
    for _ in 0..10 {
        server.default.token(&id, &["voip"]).await;
    }
}

/// Sets acme's limit with the CLI, then waits (at most the documented second) until issuing
/// for `id` answers `status`.
async fn set_by_cli(server: &TestServer, acme: &AcsClient, id: &str, limit: &str, status: u16) {
    let out = server.cli(&["tenant", "update", "--tenant", "acme", "--limit", limit]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(std::time::Duration::from_secs(1), || async {
        acme.issue_token(id, json!({"scopes": ["chat"]}))
            .await
            .status
            == status
    })
    .await;
}

async fn the_cli_lifts_a_limit_of_a_running_server(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, _) = limited_tenant(&server, json!({"issue_token": "1/30s"})).await;
    let id = acme.new_identity().await;
    acme.token(&id, &["chat"]).await;
    assert_throttled(&acme.issue_token(&id, json!({"scopes": ["chat"]})).await);

    set_by_cli(&server, &acme, &id, "issue_token=none", 200).await;
    for _ in 0..20 {
        acme.token(&id, &["chat"]).await;
    }

    // And back: a limit set by the CLI applies the same way.
    set_by_cli(&server, &acme, &id, "issue_token=2/30s", 429).await;
    assert_throttled(&acme.issue_token(&id, json!({"scopes": ["chat"]})).await);
}

async fn a_tenant_at_its_in_flight_cap_gets_429s_while_another_is_served(backend: Backend) {
    let server =
        TestServer::spawn_with(backend, |settings| settings.tenant_max_in_flight = 2).await;
    server.lift_rate_limits().await;
    let (acme, _) = server.create_tenant("acme", "acme.test").await;
    let id = server.default.new_identity().await;
    let acme_id = acme.new_identity().await;

    // The default tenant floods; acme goes on one request at a time meanwhile.
    let flood = (0..60).map(|_| {
        let client = server.default.clone();
        let id = id.clone();
        async move { client.issue_token(&id, json!({"scopes": ["chat"]})).await }
    });
    let steady = async {
        for _ in 0..10 {
            acme.token(&acme_id, &["chat"]).await;
        }
    };
    let (replies, ()) = tokio::join!(futures_util::future::join_all(flood), steady);
    let throttled: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert!(
        !throttled.is_empty(),
        "60 concurrent requests never exceeded a cap of 2"
    );
    for reply in &throttled {
        assert_throttled(reply);
    }
    assert!(replies.iter().all(|r| r.status == 200 || r.status == 429));
    let answered = replies.iter().filter(|r| r.status == 200).count() as i64;
    // The refused requests wrote nothing: every record is an answered token (acme's 10, the
    // default tenant's answered ones).
    assert_eq!(server.count("issued_tokens").await, answered + 10);
}
