//! The audit log: what is recorded, how it is read, and that tampering is detected.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{API, Backend, Request, TestServer, encode};

crate::both_backends!(
    every_change_is_recorded_with_who_and_from_where,
    the_audit_trail_never_holds_an_external_id,
    failed_authentications_appear_in_the_tenants_trail,
    paging_follows_next_links_and_stays_correct_while_events_arrive,
    filters_narrow_the_events,
    bad_audit_queries_are_400_or_404,
    a_tenant_never_reads_another_tenants_events,
    changes_that_did_not_happen_leave_no_event,
    verify_detects_edited_deleted_and_reordered_rows,
    purging_keeps_the_chain_verifiable,
);

fn ops(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["operation"].as_str().expect("operation"))
        .collect()
}

async fn every_change_is_recorded_with_who_and_from_where(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let path = format!("/identities?{API}");
    let created = server
        .default
        .send(Request {
            extra_headers: &[
                ("x-ms-client-request-id", "client-req-1"),
                ("user-agent", "audit-test/1.0"),
            ],
            ..Request::new(
                Method::POST,
                &path,
                &json!({"createTokenWithScopes": ["chat"], "expiresInMinutes": 60}),
            )
        })
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.headers["x-ms-client-request-id"], "client-req-1");
    let request_id = created.headers["x-ms-request-id"]
        .to_str()
        .expect("request id")
        .to_owned();
    let id = created.identity_id();
    let jti = crate::helpers::jwt_parts(
        created.body["accessToken"]["token"]
            .as_str()
            .expect("token"),
    )
    .1["jti"]
        .clone();
    server
        .default
        .issue_token(&id, json!({"scopes": ["voip"]}))
        .await;
    server.default.revoke(&id).await;
    server.default.delete_identity(&id).await;

    let (events, _) = server.default.audit_all("").await;
    assert_eq!(
        ops(&events),
        [
            "tenant.create",
            "identity.create",
            "token.issue",
            "token.issue",
            "token.revoke",
            "identity.delete"
        ]
    );
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| e["sequenceNumber"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    let create = &events[1];
    assert_eq!(create["actor"], "primaryKey");
    assert_eq!(create["identity"], id.as_str());
    assert_eq!(create["outcome"], "success");
    assert_eq!(create["clientRequestId"], "client-req-1");
    assert_eq!(create["requestId"], request_id.as_str());
    assert_eq!(create["sourceAddress"], "127.0.0.1");
    assert_eq!(create["userAgent"], "audit-test/1.0");
    assert_eq!(create["details"]["withToken"], true);
    // The token issued with the identity: which one, what it allows, until when.
    let token = &events[2];
    assert_eq!(token["requestId"], request_id.as_str());
    assert_eq!(token["details"]["jti"], jti);
    assert_eq!(token["details"]["scopes"], json!(["chat"]));
    assert!(token["details"]["expiresOn"].as_str().is_some());
    assert_eq!(events[3]["details"]["scopes"], json!(["voip"]));
    assert!(events[0]["actor"] == "system" && events[0]["details"]["name"] == "default");
    for e in &events {
        assert_eq!(e["hash"].as_str().expect("hash").len(), 64);
        assert!(e["time"].as_str().expect("time").ends_with('Z'));
    }
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
}

async fn the_audit_trail_never_holds_an_external_id(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let created = server
        .default
        .create_identity(json!({"externalId": "erin@example.com"}))
        .await;
    let id = created.identity_id();
    server.default.delete_identity(&id).await;
    let (events, _) = server.default.audit_all("").await;
    assert_eq!(
        events[1]["details"]["externalId"], true,
        "only the fact that one was given"
    );
    assert!(
        !serde_json::to_string(&events)
            .expect("json")
            .contains("erin")
    );
    assert_eq!(
        server
            .count("audit_events WHERE details LIKE '%erin%'")
            .await,
        0
    );
    // The pseudonymous id stays in the trail after the identity is gone.
    assert_eq!(events.last().expect("event")["identity"], id.as_str());
}

async fn failed_authentications_appear_in_the_tenants_trail(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let wrong = server.default.with_key(&[9u8; 64]);
    let reply = wrong
        .send(Request {
            extra_headers: &[("x-ms-client-request-id", "attacker-1")],
            ..Request::new(Method::POST, &format!("/identities?{API}"), &json!({}))
        })
        .await;
    assert_eq!(reply.status, 401);
    // Failed authentications are written asynchronously, off the request path.
    let started = Instant::now();
    let failure = loop {
        let reply = server.default.audit("operation=auth.failure").await;
        if let Some(event) = reply.body["value"].as_array().and_then(|v| v.first()) {
            break event.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no auth.failure event"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failure["outcome"], "failure");
    assert_eq!(failure["actor"], "anonymous");
    assert_eq!(failure["sourceAddress"], "127.0.0.1");
    assert_eq!(failure["clientRequestId"], "attacker-1");
    assert!(
        failure["details"]["reason"]
            .as_str()
            .expect("reason")
            .contains("signature")
    );
    assert!(failure.get("identity").is_none());
    // The unfiltered list shows it too.
    let (events, _) = server.default.audit_all("").await;
    assert!(ops(&events).contains(&"auth.failure"));
}

async fn paging_follows_next_links_and_stays_correct_while_events_arrive(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    for _ in 0..24 {
        server.default.new_identity().await;
    }
    // 25 events: tenant.create + 24 identity.create.
    let (events, pages) = server.default.audit_all("maxPageSize=10").await;
    assert_eq!((events.len(), pages), (25, 3));
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| e["sequenceNumber"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());

    // Start paging newest first, then add events before reading the next page: the pages
    // continue where they left off, with no duplicates and no gaps.
    let first = server.default.audit("order=desc&maxPageSize=10").await;
    let next = first.body["nextLink"]
        .as_str()
        .expect("nextLink")
        .to_owned();
    for _ in 0..5 {
        server.default.new_identity().await;
    }
    let prefix = format!("https://{}", server.default.authority());
    let second = server
        .default
        .call(
            Method::GET,
            next.strip_prefix(&prefix).expect("same host"),
            Value::Null,
        )
        .await;
    let seqs = |r: &crate::helpers::Reply| -> Vec<i64> {
        r.body["value"]
            .as_array()
            .expect("value")
            .iter()
            .map(|e| e["sequenceNumber"].as_i64().expect("seq"))
            .collect()
    };
    assert_eq!(seqs(&first), (16..=25).rev().collect::<Vec<_>>());
    assert_eq!(seqs(&second), (6..=15).rev().collect::<Vec<_>>());
    // Ascending paging sees the new events at the end.
    let (events, _) = server.default.audit_all("maxPageSize=7").await;
    assert_eq!(events.len(), 30);
    // The last page has no nextLink.
    let last = server.default.audit("maxPageSize=1000").await;
    assert!(last.body.get("nextLink").is_none());
}

async fn filters_narrow_the_events(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let a = server.default.new_identity().await;
    let b = server.default.new_identity().await;
    server
        .default
        .issue_token(&a, json!({"scopes": ["chat"]}))
        .await;
    server
        .default
        .issue_token(&b, json!({"scopes": ["chat"]}))
        .await;
    server.default.revoke(&a).await;
    let before_delete = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(5)).await;
    server.default.delete_identity(&b).await;

    let (events, _) = server
        .default
        .audit_all(&format!("identity={}", encode(&a)))
        .await;
    assert_eq!(
        ops(&events),
        ["identity.create", "token.issue", "token.revoke"]
    );
    let (events, _) = server.default.audit_all("operation=token.issue").await;
    assert_eq!(events.len(), 2);
    let (events, _) = server.default.audit_all("outcome=failure").await;
    assert!(events.is_empty());
    let from = before_delete
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    let (events, _) = server
        .default
        .audit_all(&format!("from={}", encode(&from)))
        .await;
    assert_eq!(ops(&events), ["identity.delete"]);
    let (events, _) = server
        .default
        .audit_all(&format!("to={}", encode(&from)))
        .await;
    assert_eq!(events.len(), 6);
    let (events, _) = server
        .default
        .audit_all("order=desc&api-version=2023-10-01")
        .await;
    assert_eq!(events[0]["operation"], "identity.delete");
    assert_eq!(events.last().expect("first")["operation"], "tenant.create");
}

async fn bad_audit_queries_are_400_or_404(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    for _ in 0..3 {
        server.default.new_identity().await;
    }
    let (acme, _) = server.create_tenant("acme", "acme.test").await;
    let theirs = acme.new_identity().await;
    let page = server.default.audit("maxPageSize=1").await;
    let next = page.body["nextLink"].as_str().expect("nextLink").to_owned();
    let token = next
        .split("continuationToken=")
        .nth(1)
        .expect("token")
        .to_owned();
    let decoded = percent_encoding::percent_decode_str(&token)
        .decode_utf8()
        .expect("utf8")
        .into_owned();
    let mut forged = decoded.clone().into_bytes();
    forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
    let forged = encode(&String::from_utf8(forged).expect("utf8"));

    for (query, code) in [
        ("operation=token.steal".to_owned(), 400),
        ("outcome=maybe".to_owned(), 400),
        ("from=yesterday".to_owned(), 400),
        (
            "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z".to_owned(),
            400,
        ),
        (
            "from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z".to_owned(),
            400,
        ),
        ("order=sideways".to_owned(), 400),
        ("maxPageSize=0".to_owned(), 400),
        ("maxPageSize=100000".to_owned(), 400),
        ("identity=someone".to_owned(), 400),
        ("colour=blue".to_owned(), 400),
        (format!("maxPageSize=1&continuationToken={forged}"), 400),
        ("continuationToken=garbage".to_owned(), 400),
        // A token continues only the query it came from.
        (
            format!("maxPageSize=1&operation=identity.create&continuationToken={token}"),
            400,
        ),
        (format!("identity={}", encode(&theirs)), 404),
    ] {
        let reply = server.default.audit(&query).await;
        reply.error(code);
        assert!(
            !reply.body.to_string().contains(&theirs) || code == 404,
            "{query}"
        );
    }
    // Another tenant cannot use this tenant's continuation token.
    acme.audit(&format!("maxPageSize=1&continuationToken={token}"))
        .await
        .error(400);
    // An audit query needs the tenant's credentials.
    server
        .default
        .with_key(&[1u8; 64])
        .audit("")
        .await
        .error(401);
}

async fn a_tenant_never_reads_another_tenants_events(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, acme_json) = server.create_tenant("acme", "acme.test").await;
    server.default.new_identity().await;
    acme.new_identity().await;
    acme.new_identity().await;
    let acme_id = acme_json["tenantId"].as_str().expect("id");
    let (mine, _) = server.default.audit_all("").await;
    let (theirs, _) = acme.audit_all("").await;
    assert_eq!(
        ops(&theirs),
        ["tenant.create", "identity.create", "identity.create"]
    );
    assert!(theirs.iter().all(|e| e["tenantId"] == acme_id));
    assert!(mine.iter().all(|e| e["tenantId"] != acme_id));
    // Each chain is numbered on its own.
    assert_eq!(theirs[0]["sequenceNumber"], 1);
}

async fn changes_that_did_not_happen_leave_no_event(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let created = server
        .default
        .create_identity(json!({"externalId": "frank"}))
        .await;
    let id = created.identity_id();
    // Idempotent create: no second identity.create.
    assert_eq!(
        server
            .default
            .create_identity(json!({"externalId": "frank"}))
            .await
            .status,
        200
    );
    server.default.delete_identity(&id).await;
    // Refused operations on a deleted identity write no event.
    assert_eq!(
        server
            .default
            .issue_token(&id, json!({"scopes": ["chat"]}))
            .await
            .status,
        404
    );
    assert_eq!(server.default.revoke(&id).await.status, 404);
    assert_eq!(server.default.delete_identity(&id).await.status, 404);
    // Bad input neither.
    server
        .default
        .create_identity(json!({"createTokenWithScopes": ["nope"]}))
        .await
        .error(400);
    let (events, _) = server.default.audit_all("").await;
    assert_eq!(
        ops(&events),
        ["tenant.create", "identity.create", "identity.delete"]
    );
}

async fn verify_detects_edited_deleted_and_reordered_rows(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    for _ in 0..4 {
        server
            .default
            .issue_token(&id, json!({"scopes": ["chat"]}))
            .await;
    }
    // Events 1..=6. Each tampering is undone (by restoring a copy) before the next.
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
    assert!(report.contains("intact"), "{report}");
    server
        .execute("CREATE TABLE audit_copy AS SELECT * FROM audit_events")
        .await;
    let restore = "DELETE FROM audit_events; INSERT INTO audit_events SELECT * FROM audit_copy;";
    let swap = "UPDATE audit_events SET seq = -4 WHERE seq = 4; UPDATE audit_events SET seq = 4 WHERE seq = 5; \
                UPDATE audit_events SET seq = 5 WHERE seq = -4;";
    for (tampering, sql, at) in [
        (
            "edited details",
            "UPDATE audit_events SET details = '{\"scopes\":[\"voip\"]}' WHERE seq = 4",
            "event 4",
        ),
        (
            "edited actor",
            "UPDATE audit_events SET actor = 'secondaryKey' WHERE seq = 2",
            "event 2",
        ),
        (
            "deleted row",
            "DELETE FROM audit_events WHERE seq = 3",
            "event 4",
        ),
        ("reordered rows", swap, "event 4"),
        (
            "deleted last row",
            "DELETE FROM audit_events WHERE seq = 6",
            "event 6",
        ),
        (
            "forged hash",
            "UPDATE audit_events SET hash = prev_hash WHERE seq = 5",
            "event 5",
        ),
    ] {
        server.execute(sql).await;
        let (ok, report) = server.audit_verify();
        assert!(!ok, "{tampering} was not detected: {report}");
        assert!(
            report.contains(&format!("BROKEN at {at}")),
            "{tampering}: {report}"
        );
        server.execute(restore).await;
        let (ok, report) = server.audit_verify();
        assert!(ok, "restoring after {tampering}: {report}");
    }
}

async fn purging_keeps_the_chain_verifiable(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    for _ in 0..3 {
        server.default.new_identity().await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("now");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let kept = server.default.new_identity().await;
    let out = server.cli(&["audit", "purge", "--tenant", "default", "--before", &cutoff]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("purged 4 events"));
    let (events, _) = server.default.audit_all("").await;
    assert_eq!(ops(&events), ["identity.create", "audit.purge"]);
    assert_eq!(events[0]["identity"], kept.as_str());
    assert_eq!(events[0]["sequenceNumber"], 5);
    assert_eq!(events[1]["details"]["purged"], 4);
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
    assert!(report.contains("events 5..=6"), "{report}");

    // Retention is a tenant setting; the CLI change is itself audited.
    let out = server.cli(&[
        "tenant",
        "update",
        "--tenant",
        "default",
        "--audit-retention-days",
        "30",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (events, _) = server.default.audit_all("operation=tenant.update").await;
    assert_eq!(events[0]["actor"], "cli");
    assert_eq!(events[0]["details"]["auditRetentionDays"], 30);
    let out = server.cli(&[
        "tenant",
        "update",
        "--tenant",
        "default",
        "--audit-retention-days",
        "0",
    ]);
    assert!(!out.status.success());
}
