//! Tenants: created by the CLI while the server runs, found by host name, isolated.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestServer};

crate::both_backends!(
    a_tenant_created_by_the_cli_is_usable_within_a_second,
    tenants_never_see_each_others_identities,
    the_cli_refuses_a_host_name_already_claimed_and_bad_names,
    the_cli_lists_and_shows_tenants,
    deleting_a_tenant_removes_its_token_records_and_no_others,
);

async fn a_tenant_created_by_the_cli_is_usable_within_a_second(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    // create_tenant itself fails the test unless the server serves the tenant within 1 s.
    let (acme, json) = server.create_tenant("acme", "acme.test").await;
    assert_eq!(json["name"], "acme");
    assert_eq!(json["hostnames"], json!(["acme.test"]));
    assert_eq!(
        json["endpoint"],
        format!("https://acme.test:{}/", server.https_port)
    );
    let connection = json["connectionString"].as_str().expect("connectionString");
    assert_eq!(
        connection,
        format!(
            "endpoint=https://acme.test:{}/;accesskey={}",
            server.https_port,
            json["primaryKey"].as_str().expect("key")
        )
    );
    assert!(
        json["tenantId"]
            .as_str()
            .is_some_and(|t| uuid::Uuid::parse_str(t).is_ok())
    );
    assert!(json["secondaryKey"].as_str().is_some());

    // The HTTPS handshake checks that the served certificate now names acme.test.
    let reply = acme.create_identity(json!({})).await;
    assert_eq!(reply.status, 201);
    let id = reply.body["identity"]["id"].as_str().expect("id");
    assert!(
        id.starts_with(&format!(
            "8:acs:{}_",
            json["tenantId"].as_str().expect("id")
        )),
        "{id}"
    );
}

async fn tenants_never_see_each_others_identities(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, _) = server.create_tenant("acme", "acme.test").await;
    let (beta, _) = server.create_tenant("beta", "beta.test").await;
    let clients = [&server.default, &acme, &beta];
    let mut ids = Vec::new();
    for client in clients {
        ids.push(client.new_identity().await);
    }
    for (i, client) in clients.iter().enumerate() {
        for (j, id) in ids.iter().enumerate() {
            let status = client.get_identity(id).await.status.as_u16();
            assert_eq!(
                status,
                if i == j { 200 } else { 404 },
                "client {i} reading identity {j}"
            );
            let status = client
                .issue_token(id, json!({"scopes": ["chat"]}))
                .await
                .status
                .as_u16();
            assert_eq!(
                status,
                if i == j { 200 } else { 404 },
                "client {i} issuing for identity {j}"
            );
        }
    }
    // The tenant id in the identity id is the tenant that created it.
    let tenants: Vec<&str> = ids
        .iter()
        .map(|id| {
            id.trim_start_matches("8:acs:")
                .split('_')
                .next()
                .expect("t")
        })
        .collect();
    assert_ne!(tenants[0], tenants[1]);
    assert_ne!(tenants[1], tenants[2]);
}

async fn the_cli_refuses_a_host_name_already_claimed_and_bad_names(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    server.create_tenant("acme", "acme.test").await;
    let before = server.snapshot().await;
    for (args, expected) in [
        (
            vec!["--name", "other", "--hostname", "ACME.test"],
            "already claimed by tenant 'acme'",
        ),
        (
            vec!["--name", "acme", "--hostname", "new.test"],
            "already exists",
        ),
        (vec!["--name", "x y", "--hostname", "x.test"], "tenant name"),
        (
            vec!["--name", "x", "--hostname", "bad host"],
            "not a valid host name",
        ),
        (
            vec![
                "--name",
                "x",
                "--hostname",
                "a.test",
                "--hostname",
                "a.test",
            ],
            "listed twice",
        ),
        (vec!["--name", "x"], "--hostname"),
    ] {
        let mut full = vec!["tenant", "create"];
        full.extend(args.iter().copied());
        let out = server.cli(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert_eq!(server.snapshot().await, before);
}

async fn the_cli_lists_and_shows_tenants(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    server.create_tenant("acme", "acme.test").await;
    let out = server.cli(&["tenant", "list", "--json"]);
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["default", "acme"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("primaryKey") && !text.contains("connectionString"),
        "list must not print keys"
    );

    let out = server.cli(&["tenant", "show", "--tenant", "acme", "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(shown["hostnames"], json!(["acme.test"]));
    assert!(shown.get("primaryKey").is_none());
    assert_eq!(shown["signingKey"]["algorithm"], "EdDSA");

    let out = server.cli(&["tenant", "show", "--tenant", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tenant"));
}

/// Nothing cascades from identities to token records (V5), so deleting a tenant deletes them
/// itself: all of its own, none of another tenant's, counted in its event.
async fn deleting_a_tenant_removes_its_token_records_and_no_others(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, _) = server.create_tenant("acme", "acme.test").await;
    for (client, identities) in [(&server.default, 2), (&acme, 3)] {
        for _ in 0..identities {
            let id = client.new_identity().await;
            client.token(&id, &["chat"]).await;
            client.token(&id, &["voip"]).await;
        }
    }
    assert_eq!(server.count("issued_tokens").await, 10);

    let out = server.cli(&["tenant", "delete", "--tenant", "acme", "--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.count("issued_tokens").await, 4);
    assert_eq!(server.count("identities").await, 2);
    let counted = server
        .count(
            "audit_events WHERE operation = 'tenant.delete' \
             AND details LIKE '%\"tokenRecordsRemoved\":6%'",
        )
        .await;
    assert_eq!(counted, 1);
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
}
