//! Bad input gets a clear ACS-shaped 4xx and changes nothing.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{API, Backend, Request, TestServer, encode};

crate::both_backends!(
    missing_or_unknown_api_versions_are_400,
    bad_token_requests_are_400_and_write_nothing,
    bad_create_requests_are_400_and_write_nothing,
    malformed_identity_ids_are_400_and_unknown_ones_404,
    another_tenants_identity_is_a_404_never_a_leak,
    oversized_bodies_are_413,
    unknown_routes_are_404_in_the_acs_shape,
    a_database_failure_is_a_500_that_leaks_nothing,
);

async fn missing_or_unknown_api_versions_are_400(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let before = server.snapshot().await;
    for path in [
        "/identities",
        "/identities?api-version=",
        "/identities?api-version=2020-07-20-preview2",
        "/identities?api-version=2099-01-01",
        "/identities?apiversion=2023-10-01",
    ] {
        let reply = server.default.call(Method::POST, path, json!({})).await;
        assert_eq!(reply.error(400), "InvalidApiVersion", "{path}");
    }
    assert_eq!(server.snapshot().await, before);
}

async fn bad_token_requests_are_400_and_write_nothing(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    let before = server.snapshot().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown scope", br#"{"scopes": ["admin"]}"#.to_vec()),
        ("miscased scope", br#"{"scopes": ["Chat"]}"#.to_vec()),
        ("empty scope list", br#"{"scopes": []}"#.to_vec()),
        (
            "duplicate scope",
            br#"{"scopes": ["chat", "voip", "chat"]}"#.to_vec(),
        ),
        ("scopes not a list", br#"{"scopes": "chat"}"#.to_vec()),
        ("scope not a string", br#"{"scopes": [1]}"#.to_vec()),
        ("scopes missing", br#"{"expiresInMinutes": 60}"#.to_vec()),
        ("scopes null", br#"{"scopes": null}"#.to_vec()),
        (
            "59 minutes",
            br#"{"scopes": ["chat"], "expiresInMinutes": 59}"#.to_vec(),
        ),
        (
            "1441 minutes",
            br#"{"scopes": ["chat"], "expiresInMinutes": 1441}"#.to_vec(),
        ),
        (
            "negative minutes",
            br#"{"scopes": ["chat"], "expiresInMinutes": -60}"#.to_vec(),
        ),
        (
            "minutes as string",
            br#"{"scopes": ["chat"], "expiresInMinutes": "60"}"#.to_vec(),
        ),
        (
            "fractional minutes",
            br#"{"scopes": ["chat"], "expiresInMinutes": 60.5}"#.to_vec(),
        ),
        (
            "huge minutes",
            br#"{"scopes": ["chat"], "expiresInMinutes": 1e300}"#.to_vec(),
        ),
        ("empty body", Vec::new()),
        ("not JSON", b"scopes=chat".to_vec()),
        ("truncated JSON", br#"{"scopes": ["chat""#.to_vec()),
        ("JSON array", br#"[{"scopes": ["chat"]}]"#.to_vec()),
        (
            "duplicate key",
            br#"{"scopes": ["chat"], "scopes": ["voip"]}"#.to_vec(),
        ),
        ("invalid UTF-8", b"{\"scopes\": [\"\xff\"]}".to_vec()),
    ];
    let path = format!("/identities/{}/:issueAccessToken?{API}", encode(&id));
    for (name, body) in cases {
        let reply = server
            .default
            .send(Request::raw(Method::POST, &path, body))
            .await;
        let code = reply.error(400);
        assert!(
            ["ValidationError", "InvalidRequestBody"].contains(&code.as_str()),
            "{name}: {code}"
        );
    }
    assert_eq!(
        server.snapshot().await,
        before,
        "a refused request changed the database"
    );
}

async fn bad_create_requests_are_400_and_write_nothing(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let before = server.snapshot().await;
    let long = "x".repeat(257);
    let cases: Vec<(&str, Value)> = vec![
        (
            "unknown scope",
            json!({"createTokenWithScopes": ["everything"]}),
        ),
        (
            "duplicate scope",
            json!({"createTokenWithScopes": ["voip", "voip"]}),
        ),
        (
            "scopes not a list",
            json!({"createTokenWithScopes": "voip"}),
        ),
        (
            "expiry too short",
            json!({"createTokenWithScopes": ["voip"], "expiresInMinutes": 59}),
        ),
        (
            "expiry too long",
            json!({"createTokenWithScopes": ["voip"], "expiresInMinutes": 1441}),
        ),
        (
            "expiry without scopes, out of range",
            json!({"expiresInMinutes": 0}),
        ),
        ("empty externalId", json!({"externalId": ""})),
        ("externalId too long", json!({"externalId": long})),
        ("externalId not a string", json!({"externalId": 42})),
        (
            "externalId with a control character",
            json!({"externalId": "a\u{0}b"}),
        ),
        ("a JSON string", json!("identity")),
        ("a JSON number", json!(1)),
    ];
    for (name, body) in cases {
        let reply = server.default.create_identity(body).await;
        let code = reply.error(400);
        assert!(
            ["ValidationError", "InvalidRequestBody"].contains(&code.as_str()),
            "{name}: {code}"
        );
    }
    let reply = server
        .default
        .send(Request::raw(
            Method::POST,
            &format!("/identities?{API}"),
            b"{".to_vec(),
        ))
        .await;
    assert_eq!(reply.error(400), "InvalidRequestBody");
    assert_eq!(
        server.snapshot().await,
        before,
        "a refused request changed the database"
    );
}

async fn malformed_identity_ids_are_400_and_unknown_ones_404(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    let before = server.snapshot().await;
    let tenant = id
        .trim_start_matches("8:acs:")
        .split('_')
        .next()
        .expect("tenant")
        .to_owned();
    for bad in [
        "nobody".to_owned(),
        "8:acs:".to_owned(),
        format!("8:acs:{tenant}"),
        format!("8:acs:{tenant}_not-a-uuid"),
        format!("8:teams:{tenant}_{}", uuid::Uuid::new_v4()),
        format!("{id}x"),
        "%FF%FE".to_owned(),
    ] {
        let path = format!(
            "/identities/{}?{API}",
            if bad.starts_with('%') {
                bad.clone()
            } else {
                encode(&bad)
            }
        );
        let reply = server.default.call(Method::GET, &path, Value::Null).await;
        assert_eq!(reply.error(400), "ValidationError", "{bad}");
    }
    let unknown = format!("8:acs:{tenant}_{}", uuid::Uuid::now_v7());
    assert_eq!(
        server.default.get_identity(&unknown).await.error(404),
        "IdentityNotFound"
    );
    assert_eq!(
        server
            .default
            .issue_token(&unknown, json!({"scopes": ["chat"]}))
            .await
            .error(404),
        "IdentityNotFound"
    );
    assert_eq!(
        server.default.revoke(&unknown).await.error(404),
        "IdentityNotFound"
    );
    assert_eq!(
        server.default.delete_identity(&unknown).await.error(404),
        "IdentityNotFound"
    );
    assert_eq!(server.snapshot().await, before);
}

async fn another_tenants_identity_is_a_404_never_a_leak(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, _) = server.create_tenant("acme", "acme.test").await;
    let theirs = acme
        .create_identity(json!({"externalId": "secret-user"}))
        .await;
    let theirs = theirs.identity_id();
    let before = server.snapshot().await;

    let unknown_here = format!(
        "8:acs:{}_{}",
        theirs
            .trim_start_matches("8:acs:")
            .split('_')
            .next()
            .expect("t"),
        uuid::Uuid::now_v7()
    );
    let expected = server.default.get_identity(&unknown_here).await;
    for reply in [
        server.default.get_identity(&theirs).await,
        server
            .default
            .issue_token(&theirs, json!({"scopes": ["chat"]}))
            .await,
        server.default.revoke(&theirs).await,
        server.default.delete_identity(&theirs).await,
    ] {
        assert_eq!(reply.error(404), "IdentityNotFound");
        assert!(!reply.body.to_string().contains("secret-user"));
    }
    // Indistinguishable from an id that exists nowhere (apart from the id echoed back).
    assert_eq!(expected.error(404), "IdentityNotFound");
    // An external id in use by another tenant creates a new identity here.
    let mine = server
        .default
        .create_identity(json!({"externalId": "secret-user"}))
        .await;
    assert_eq!(mine.status, 201);
    assert_ne!(mine.body["identity"]["id"], theirs.as_str());
    assert_eq!(server.snapshot().await[1], before[1] + 1);
    assert_eq!(acme.get_identity(&theirs).await.status, 200);
}

async fn oversized_bodies_are_413(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let before = server.snapshot().await;
    let huge = format!(r#"{{"externalId": "{}"}}"#, "x".repeat(70 * 1024));
    let reply = server
        .default
        .send(Request::raw(
            Method::POST,
            &format!("/identities?{API}"),
            huge.into_bytes(),
        ))
        .await;
    assert_eq!(reply.error(413), "RequestEntityTooLarge");
    assert_eq!(server.snapshot().await, before);
}

async fn unknown_routes_are_404_in_the_acs_shape(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    for (method, path) in [
        (Method::GET, format!("/nothing?{API}")),
        (Method::GET, format!("/identities?{API}")),
        (Method::PUT, format!("/identities/x?{API}")),
        (Method::POST, format!("/identities/x/:explode?{API}")),
    ] {
        let reply = server
            .default
            .call(method.clone(), &path, Value::Null)
            .await;
        assert_eq!(reply.error(404), "NotFound", "{method} {path}");
    }
}

async fn a_database_failure_is_a_500_that_leaks_nothing(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    server.execute("DROP TABLE issued_tokens").await;
    let reply = server
        .default
        .issue_token(&id, json!({"scopes": ["chat"]}))
        .await;
    assert_eq!(reply.error(500), "InternalError");
    let text = reply.body.to_string();
    for leak in ["issued_tokens", "sqlx", "SQL", "table", "relation"] {
        assert!(!text.contains(leak), "the error leaks {leak:?}: {text}");
    }
}
