//! The admin API and the operator CLI: credentials, tenants, keys, and the bad input that
//! must change nothing.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{AdminClient, Backend, TestServer, wait_until};

crate::both_backends!(
    the_admin_api_refuses_everything_until_a_credential_exists,
    credentials_are_shown_once_stored_as_argon2_hashes_and_revocable,
    tenant_credentials_and_operator_credentials_do_not_cross,
    failed_operator_authentications_are_audited_and_throttled_per_address,
    tenants_are_created_listed_shown_updated_and_deleted_through_the_api,
    bad_admin_input_is_a_clear_4xx_and_changes_nothing,
    keys_are_listed_without_secrets_and_regenerated_one_at_a_time,
    the_cli_updates_deletes_and_rekeys_tenants_of_a_running_server,
    a_deleted_tenants_audit_trail_stays_queryable,
);

fn tenant_path(body: &Value) -> String {
    format!(
        "/admin/tenants/{}",
        body["tenantId"].as_str().expect("tenantId")
    )
}

/// Events on the deployment chain (the nil tenant id) with `operation`.
async fn deployment_events(server: &TestServer, operation: &str) -> i64 {
    let nil = if server.db.url.starts_with("sqlite") {
        "zeroblob(16)"
    } else {
        "'00000000-0000-0000-0000-000000000000'::uuid"
    };
    server
        .count(&format!(
            "audit_events WHERE tenant_id = {nil} AND operation = '{operation}'"
        ))
        .await
}

async fn the_admin_api_refuses_everything_until_a_credential_exists(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let admin = AdminClient::new(server.http_port, None);
    let before = server.snapshot().await;
    for (method, path) in [
        (Method::GET, "/admin/tenants"),
        (Method::POST, "/admin/tenants"),
        (
            Method::DELETE,
            "/admin/tenants/00000000-0000-0000-0000-000000000001",
        ),
    ] {
        let reply = admin.call(method.clone(), path, Some(json!({}))).await;
        assert_eq!(reply.error(401), "Unauthorized", "{method} {path}");
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Bearer")),
            "{}",
            reply.body
        );
    }
    let forged = format!("cso_{}_{}", "0".repeat(32), "A".repeat(43));
    let reply = admin
        .with_authorization(Some(&format!("Bearer {forged}")))
        .get("/admin/tenants")
        .await;
    assert_eq!(reply.error(401), "Unauthorized");
    assert_eq!(server.snapshot().await, before);
    // Failed operator authentications go to the deployment chain, off the request path.
    wait_until(Duration::from_secs(2), || async {
        deployment_events(&server, "auth.failure").await == 4
    })
    .await;
}

async fn credentials_are_shown_once_stored_as_argon2_hashes_and_revocable(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let out = server.cli(&[
        "admin",
        "credential",
        "create",
        "--name",
        "ops-team",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("json");
    let credential = created["credential"]
        .as_str()
        .expect("credential")
        .to_owned();
    let id = created["credentialId"].as_str().expect("id").to_owned();
    assert!(credential.starts_with("cso_"), "{credential}");
    assert_eq!(created["name"], "ops-team");

    // Only an argon2id hash is stored; the secret part appears nowhere in the database.
    let secret = &credential[credential.len() - 43..];
    assert_eq!(
        server
            .count("operator_credentials WHERE phc_hash LIKE '$argon2id$%'")
            .await,
        1
    );
    assert_eq!(
        server
            .count(&format!(
                "operator_credentials WHERE phc_hash LIKE '%{secret}%'"
            ))
            .await,
        0
    );
    assert_eq!(
        deployment_events(&server, "operator.credential.create").await,
        1
    );

    // The server picks the new credential up within a second.
    server.wait_for_credentials(server.http_port).await;
    let admin = AdminClient::new(server.http_port, Some(&credential));
    assert_eq!(admin.get("/admin/tenants").await.status, StatusCode::OK);

    let out = server.cli(&["admin", "credential", "list", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains(&id) && !text.contains(secret), "{text}");

    let out = server.cli(&["admin", "credential", "revoke", "--id", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Revocation beats the verification cache: refused within a second.
    server.wait_for_credentials(server.http_port).await;
    assert_eq!(admin.get("/admin/tenants").await.error(401), "Unauthorized");
    assert_eq!(
        deployment_events(&server, "operator.credential.revoke").await,
        1
    );
    let out = server.cli(&["admin", "credential", "revoke", "--id", &id]);
    assert!(!out.status.success(), "revoking twice must fail");
}

async fn tenant_credentials_and_operator_credentials_do_not_cross(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let admin = server.admin().await;
    let before = server.snapshot().await;

    // A tenant's HMAC-signed request to /admin: 401, with a message that says why.
    let reply = server
        .default
        .call(Method::GET, "/admin/tenants", Value::Null)
        .await;
    assert_eq!(reply.error(401), "Unauthorized");
    let message = reply.body["error"]["message"].as_str().expect("message");
    assert!(message.contains("operator credential"), "{message}");
    let reply = server
        .default
        .call(
            Method::POST,
            "/admin/tenants",
            json!({"name": "evil", "hostnames": ["evil.test"]}),
        )
        .await;
    assert_eq!(reply.error(401), "Unauthorized");

    // An operator credential on the ACS API and the audit API: 401.
    let credential = server.admin_credential();
    for path in [
        "/identities?api-version=2023-10-01".to_owned(),
        "/audit/events".to_owned(),
    ] {
        let reply = reqwest::Client::new()
            .request(
                if path.starts_with("/identities") {
                    Method::POST
                } else {
                    Method::GET
                },
                format!("http://127.0.0.1:{}{path}", server.http_port),
            )
            .header("authorization", format!("Bearer {credential}"))
            .json(&json!({}))
            .send()
            .await
            .expect("sent");
        assert_eq!(reply.status(), 401, "{path}");
        let body: Value = reply.json().await.expect("json");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("admin API")),
            "{body}"
        );
    }
    assert_eq!(server.snapshot().await, before);
    // The operator credential still works where it belongs.
    assert_eq!(admin.get("/admin/tenants").await.status, 200);
}

async fn failed_operator_authentications_are_audited_and_throttled_per_address(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let admin = server.admin().await;
    let wrong = AdminClient::new(server.http_port, Some("not-a-credential"));
    // The limit is 10 uncached attempts a minute per address; the valid credential uses one
    // when it is first verified.
    assert_eq!(admin.get("/admin/tenants").await.status, 200);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(wrong.get("/admin/tenants").await);
    }
    let unauthorized = statuses.iter().filter(|r| r.status == 401).count();
    let throttled: Vec<_> = statuses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        unauthorized,
        9,
        "{:?}",
        statuses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(throttled.len(), 3);
    for reply in &throttled {
        assert_eq!(reply.error(429), "TooManyRequests");
        let retry = reply.retry_after();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    // A cached, valid credential is not throttled by its address's failures.
    assert_eq!(admin.get("/admin/tenants").await.status, 200);
    wait_until(Duration::from_secs(2), || async {
        deployment_events(&server, "auth.failure").await == 12
    })
    .await;
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
    assert!(report.contains("(deployment)"), "{report}");
}

async fn tenants_are_created_listed_shown_updated_and_deleted_through_the_api(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let admin = server.admin().await;
    let created = admin.create_tenant("acme", "acme.test").await;
    assert_eq!(created["name"], "acme");
    assert_eq!(created["hostnames"], json!(["acme.test"]));
    assert_eq!(
        created["endpoint"],
        format!("https://acme.test:{}/", server.https_port)
    );
    assert_eq!(created["limits"]["issue_token"], "1000/30s");
    assert_eq!(created["limits"]["get_identity"], "none");
    let key = created["primaryKey"].as_str().expect("primaryKey");
    assert!(
        created["connectionString"]
            .as_str()
            .is_some_and(|c| c.ends_with(key))
    );
    // Usable at once, over HTTPS: the certificate already names the new host.
    let acme = server.client("acme.test", key);
    assert_eq!(acme.create_identity(json!({})).await.status, 201);

    // Paged listing in creation order, following nextLink.
    admin.create_tenant("beta", "beta.test").await;
    let mut names = Vec::new();
    let mut path = "/admin/tenants?maxPageSize=1".to_owned();
    loop {
        let page = admin.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let value = page.body["value"].as_array().expect("value");
        assert!(value.len() <= 1);
        for t in value {
            names.push(t["name"].as_str().expect("name").to_owned());
            assert!(t.get("primaryKey").is_none(), "a listing shows no key");
        }
        match page.body["nextLink"].as_str() {
            Some(next) => {
                path = next
                    .split_once("/admin/")
                    .map(|(_, rest)| format!("/admin/{rest}"))
                    .expect("link")
            }
            None => break,
        }
    }
    assert_eq!(names, ["default", "acme", "beta"]);

    let path = tenant_path(&created);
    let shown = admin.get(&path).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["name"], "acme");
    assert!(shown.body.get("primaryKey").is_none());

    // Update name, host names and limits together.
    let updated = admin
        .patch(
            &path,
            json!({"name": "acme-corp", "hostnames": ["corp.test"], "limits": {"issue_token": "5/30s", "get_identity": "none"}, "auditRetentionDays": 30}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["name"], "acme-corp");
    assert_eq!(updated.body["hostnames"], json!(["corp.test"]));
    assert_eq!(updated.body["limits"]["issue_token"], "5/30s");
    assert_eq!(
        updated.body["limitOverrides"],
        json!({"issue_token": "5/30s", "get_identity": "none"})
    );
    assert_eq!(updated.body["auditRetentionDays"], 30);
    // The new host serves the tenant at once; the old one no longer does.
    let corp = server.client("corp.test", key);
    assert_eq!(corp.create_identity(json!({})).await.status, 201);
    assert_eq!(acme.create_identity(json!({})).await.status, 401);
    // null returns a limit to the default.
    let reset = admin
        .patch(&path, json!({"limits": {"issue_token": null}}))
        .await;
    assert_eq!(reset.body["limits"]["issue_token"], "1000/30s");
    assert_eq!(
        reset.body["limitOverrides"],
        json!({"get_identity": "none"})
    );

    // Every change is in the tenant's trail, by the operator.
    let (events, _) = corp.audit_all("operation=tenant.update").await;
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| {
        e["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("operator:"))
    }));

    // Delete: the tenant's requests fail at once, its identities are gone.
    let identity = corp.new_identity().await;
    assert_eq!(admin.delete(&path).await.status, 204);
    assert_eq!(corp.get_identity(&identity).await.status, 401);
    assert_eq!(admin.get(&path).await.error(404), "TenantNotFound");
    assert_eq!(admin.delete(&path).await.error(404), "TenantNotFound");
    let tenant = created["tenantId"].as_str().expect("id");
    let hex = tenant.replace('-', "");
    let filter = if server.db.url.starts_with("sqlite") {
        format!("tenant_id = x'{hex}'")
    } else {
        format!("tenant_id = '{tenant}'")
    };
    for table in [
        "identities",
        "issued_tokens",
        "access_keys",
        "signing_keys",
        "tenant_hostnames",
        "tenant_limits",
    ] {
        assert_eq!(
            server.count(&format!("{table} WHERE {filter}")).await,
            0,
            "{table}"
        );
    }
    assert_eq!(
        server
            .count(&format!("deleted_tenants WHERE {filter}"))
            .await,
        1
    );
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
}

async fn bad_admin_input_is_a_clear_4xx_and_changes_nothing(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let admin = server.admin().await;
    let acme = admin.create_tenant("acme", "acme.test").await;
    admin.create_tenant("beta", "beta.test").await;
    let path = tenant_path(&acme);
    let shown_before = admin.get(&path).await.body;
    let before = server.snapshot().await;
    let events_before = server.count("audit_events").await;
    let unknown = "/admin/tenants/6f1c1c5e-4b7a-4c36-9a51-8d2f0f6b0c11";

    let cases: Vec<(Method, String, Value, u16, &str)> = vec![
        (
            Method::GET,
            unknown.to_owned(),
            Value::Null,
            404,
            "TenantNotFound",
        ),
        (
            Method::PATCH,
            unknown.to_owned(),
            json!({"name": "x"}),
            404,
            "TenantNotFound",
        ),
        (
            Method::DELETE,
            unknown.to_owned(),
            Value::Null,
            404,
            "TenantNotFound",
        ),
        (
            Method::POST,
            format!("{unknown}/:regenerateKey"),
            json!({"keyType": "primary"}),
            404,
            "TenantNotFound",
        ),
        (
            Method::GET,
            format!("{unknown}/keys"),
            Value::Null,
            404,
            "TenantNotFound",
        ),
        (
            Method::GET,
            "/admin/tenants/not-a-uuid".to_owned(),
            Value::Null,
            400,
            "ValidationError",
        ),
        // Duplicate host name and name, on create and on update.
        (
            Method::POST,
            "/admin/tenants".to_owned(),
            json!({"name": "gamma", "hostnames": ["BETA.test"]}),
            409,
            "Conflict",
        ),
        (
            Method::POST,
            "/admin/tenants".to_owned(),
            json!({"name": "beta", "hostnames": ["gamma.test"]}),
            409,
            "Conflict",
        ),
        (
            Method::PATCH,
            path.clone(),
            json!({"hostnames": ["beta.test"]}),
            409,
            "Conflict",
        ),
        (
            Method::PATCH,
            path.clone(),
            json!({"hostnames": ["new.test", "beta.test"], "limits": {"issue_token": "1/30s"}}),
            409,
            "Conflict",
        ),
        (
            Method::PATCH,
            path.clone(),
            json!({"name": "beta"}),
            409,
            "Conflict",
        ),
        // Malformed limits, names, host names, fields.
        (
            Method::PATCH,
            path.clone(),
            json!({"limits": {"issue_token": "5"}}),
            400,
            "ValidationError",
        ),
        (
            Method::PATCH,
            path.clone(),
            json!({"limits": {"issue_token": "0/30s"}}),
            400,
            "ValidationError",
        ),
        (
            Method::PATCH,
            path.clone(),
            json!({"limits": {"issue_token": "5/30x"}}),
            400,
            "ValidationError",
        ),
        (
            Method::PATCH,
            path.clone(),
            json!({"limits": {"issue_token": 5}}),
            400,
            "ValidationError",
        ),
        (
            Method::PATCH,
            path.clone(),
            json!({"limits": {"steal_token": "5/30s"}}),
            400,
            "ValidationError",
        ),
        (
            Method::PATCH,
            path.clone(),
            json!({"name": "x y"}),
            400,
            "ValidationError",
        ),
        (
            Method::PATCH,
            path.clone(),
            json!({"hostnames": ["bad host"]}),
            400,
            "ValidationError",
        ),
        (
            Method::PATCH,
            path.clone(),
            json!({"hostnames": ["a.test", "a.test"]}),
            400,
            "ValidationError",
        ),
        (
            Method::PATCH,
            path.clone(),
            json!({"auditRetentionDays": 0}),
            400,
            "ValidationError",
        ),
        (
            Method::PATCH,
            path.clone(),
            json!({}),
            400,
            "ValidationError",
        ),
        (
            Method::PATCH,
            path.clone(),
            json!({"colour": "blue"}),
            400,
            "InvalidRequestBody",
        ),
        (
            Method::POST,
            "/admin/tenants".to_owned(),
            json!({"name": "gamma"}),
            400,
            "InvalidRequestBody",
        ),
        (
            Method::POST,
            "/admin/tenants".to_owned(),
            json!({"name": "gamma", "hostnames": []}),
            400,
            "ValidationError",
        ),
        (
            Method::POST,
            "/admin/tenants".to_owned(),
            json!({"name": "gamma", "hostnames": ["g.test"], "limits": {"issue_token": "lots"}}),
            400,
            "ValidationError",
        ),
        (
            Method::POST,
            format!("{path}/:regenerateKey"),
            json!({"keyType": "tertiary"}),
            400,
            "ValidationError",
        ),
        (
            Method::POST,
            format!("{path}/:regenerateKey"),
            json!({}),
            400,
            "InvalidRequestBody",
        ),
        (
            Method::GET,
            "/admin/tenants?maxPageSize=0".to_owned(),
            Value::Null,
            400,
            "ValidationError",
        ),
        (
            Method::GET,
            "/admin/tenants?continuationToken=forged".to_owned(),
            Value::Null,
            400,
            "ValidationError",
        ),
        (
            Method::GET,
            "/admin/tenants?colour=blue".to_owned(),
            Value::Null,
            400,
            "ValidationError",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let body = if body.is_null() { None } else { Some(body) };
        let reply = admin.call(method.clone(), &path, body.clone()).await;
        assert_eq!(
            reply.error(status),
            code,
            "{method} {path} {body:?}: {}",
            reply.body
        );
    }
    assert_eq!(admin.get(&path).await.body, shown_before);
    assert_eq!(server.snapshot().await, before);
    assert_eq!(server.count("tenant_limits").await, 0);
    assert_eq!(server.count("audit_events").await, events_before);
}

async fn keys_are_listed_without_secrets_and_regenerated_one_at_a_time(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let admin = server.admin().await;
    let created = admin.create_tenant("acme", "acme.test").await;
    let path = tenant_path(&created);
    let primary = created["primaryKey"].as_str().expect("primary").to_owned();
    let secondary = created["secondaryKey"]
        .as_str()
        .expect("secondary")
        .to_owned();

    let keys = admin.get(&format!("{path}/keys")).await;
    assert_eq!(keys.status, 200);
    let text = keys.body.to_string();
    assert!(
        !text.contains(&primary) && !text.contains(&secondary),
        "{text}"
    );
    assert_eq!(keys.body["value"][0]["keyType"], "primary");
    assert_eq!(keys.body["value"][1]["keyType"], "secondary");

    let reply = admin
        .post(
            &format!("{path}/:regenerateKey"),
            json!({"keyType": "Primary"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["keyType"], "primary");
    let new_primary = reply.body["key"].as_str().expect("key").to_owned();
    assert_ne!(new_primary, primary);
    assert!(
        reply.body["connectionString"]
            .as_str()
            .is_some_and(|c| c.ends_with(&new_primary))
    );
    // The old value fails at once; the other key and the new one work.
    let old = server.client("acme.test", &primary);
    assert_eq!(
        old.create_identity(json!({})).await.error(401),
        "Unauthorized"
    );
    assert_eq!(
        server
            .client("acme.test", &secondary)
            .create_identity(json!({}))
            .await
            .status,
        201
    );
    assert_eq!(
        server
            .client("acme.test", &new_primary)
            .create_identity(json!({}))
            .await
            .status,
        201
    );
    let after = admin.get(&format!("{path}/keys")).await;
    assert_ne!(
        after.body["value"][0]["createdAt"],
        keys.body["value"][0]["createdAt"]
    );
    assert_eq!(
        after.body["value"][1]["createdAt"],
        keys.body["value"][1]["createdAt"]
    );
    // The regeneration is in the trail, without the key.
    let (events, _) = server
        .client("acme.test", &secondary)
        .audit_all("operation=key.regenerate")
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["details"], json!({"keyType": "primary"}));
    assert!(!events[0].to_string().contains(&new_primary));
}

async fn the_cli_updates_deletes_and_rekeys_tenants_of_a_running_server(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, json) = server.create_tenant("acme", "acme.test").await;
    let secondary = json["secondaryKey"].as_str().expect("secondary").to_owned();

    // A limit set by the CLI reaches the server within a second.
    let out = server.cli(&[
        "tenant",
        "update",
        "--tenant",
        "acme",
        "--limit",
        "get_identity=2/1h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = acme.new_identity().await;
    wait_until(Duration::from_secs(1), || async {
        acme.get_identity(&id).await.status == StatusCode::TOO_MANY_REQUESTS
    })
    .await;
    let out = server.cli(&[
        "tenant",
        "update",
        "--tenant",
        "acme",
        "--limit",
        "get_identity=none",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(1), || async {
        acme.get_identity(&id).await.status == StatusCode::OK
    })
    .await;
    let out = server.cli(&["tenant", "show", "--tenant", "acme", "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(shown["limitOverrides"], json!({"get_identity": "none"}));
    assert_eq!(shown["limits"]["create_identity"], "1000/30s");

    // Malformed input changes nothing.
    let before = server.snapshot().await;
    for (args, expected) in [
        (vec!["--limit", "issue_token=5"], "not a rate limit"),
        (vec!["--limit", "steal=5/30s"], "not a limited operation"),
        (vec!["--hostname", "bad host"], "not a valid host name"),
        (vec!["--audit-retention-days", "0"], "at least 1"),
        (vec![], "nothing to change"),
    ] {
        let mut full = vec!["tenant", "update", "--tenant", "acme"];
        full.extend(args.iter().copied());
        let out = server.cli(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let out = server.cli(&[
        "tenant",
        "update",
        "--tenant",
        "nobody",
        "--limit",
        "issue_token=none",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tenant"));
    assert_eq!(server.snapshot().await, before);

    // Regenerate the primary key: the old one stops within a second, the secondary works.
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
    let rekeyed: Value = serde_json::from_slice(&out.stdout).expect("json");
    let new_key = rekeyed["key"].as_str().expect("key");
    wait_until(Duration::from_secs(1), || async {
        acme.get_identity(&id).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(
        server
            .client("acme.test", new_key)
            .get_identity(&id)
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .client("acme.test", &secondary)
            .get_identity(&id)
            .await
            .status,
        200
    );

    // Delete needs --yes, then takes effect within a second.
    let out = server.cli(&["tenant", "delete", "--tenant", "acme"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let out = server.cli(&["tenant", "delete", "--tenant", "acme", "--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secondary_client = server.client("acme.test", &secondary);
    wait_until(Duration::from_secs(1), || async {
        !matches!(secondary_client.try_send(crate::helpers::Request::new(Method::GET, &format!("/identities/{}?{}", crate::helpers::encode(&id), crate::helpers::API), &Value::Null)).await, Ok(r) if r.status == 200)
    })
    .await;
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
}

async fn a_deleted_tenants_audit_trail_stays_queryable(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, json) = server.create_tenant("acme", "acme.test").await;
    let tenant = json["tenantId"].as_str().expect("id").to_owned();
    acme.new_identity().await;
    let out = server.cli(&[
        "tenant",
        "update",
        "--tenant",
        "acme",
        "--audit-retention-days",
        "30",
    ]);
    assert!(out.status.success());
    let out = server.cli(&["tenant", "delete", "--tenant", "acme", "--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [tenant.as_str(), "acme"] {
        let out = server.cli(&["audit", "query", "--tenant", name, "--format", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for op in [
            "tenant.create",
            "identity.create",
            "tenant.update",
            "tenant.delete",
        ] {
            assert!(text.contains(op), "{op} missing: {text}");
        }
    }
    let retention: i64 = server
        .count("deleted_tenants WHERE audit_retention_days = 30")
        .await;
    assert_eq!(retention, 1);
    let out = server.cli(&[
        "audit",
        "query",
        "--tenant",
        "deployment",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
    assert!(report.contains("acme (deleted)"), "{report}");
}
