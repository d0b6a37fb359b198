//! The five operations of the ACS Identity API, as the SDKs use them.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{API, Backend, TestServer, jwt_parts};

crate::both_backends!(
    create_identity_answers_201_with_an_acs_id,
    create_identity_with_scopes_also_issues_a_token,
    token_claims_follow_the_acs_shape,
    issued_tokens_default_to_a_day_and_honour_expires_in_minutes,
    every_supported_api_version_is_accepted,
    external_id_makes_create_idempotent,
    get_identity_reports_external_id_and_last_token_issued_at,
    revoke_answers_204_and_keeps_the_identity,
    delete_makes_the_identity_unknown_and_frees_its_external_id,
    every_token_is_recorded,
    the_plain_http_listener_serves_the_same_api,
);

async fn create_identity_answers_201_with_an_acs_id(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let reply = server.default.create_identity(json!({})).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.body["identity"]["id"].as_str().expect("id");
    assert!(id.starts_with("8:acs:"), "{id}");
    assert!(reply.body.get("accessToken").is_none());

    // The SDK's create_user sends no body at all.
    let reply = server
        .default
        .call(
            Method::POST,
            &format!("/identities?{API}"),
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_ne!(reply.body["identity"]["id"].as_str(), Some(id));
}

async fn create_identity_with_scopes_also_issues_a_token(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let reply = server
        .default
        .create_identity(json!({"createTokenWithScopes": ["chat", "voip"], "expiresInMinutes": 90}))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.body["identity"]["id"].as_str().expect("id");
    let token = reply.body["accessToken"]["token"].as_str().expect("token");
    let (_, claims) = jwt_parts(token);
    assert_eq!(claims["sub"], id);
    assert_eq!(claims["acsScope"], "chat,voip");
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        90 * 60
    );

    // An empty scope list on create means "no token", as in ACS.
    let reply = server
        .default
        .create_identity(json!({"createTokenWithScopes": []}))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert!(reply.body.get("accessToken").is_none());
}

async fn token_claims_follow_the_acs_shape(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    let reply = server
        .default
        .issue_token(&id, json!({"scopes": ["chat.join", "voip.join"]}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let (header, claims) = jwt_parts(reply.body["token"].as_str().expect("token"));
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()));
    for claim in [
        "exp",
        "iat",
        "nbf",
        "jti",
        "sub",
        "iss",
        "aud",
        "scp",
        "acsScope",
        "resourceId",
    ] {
        assert!(
            claims.get(claim).is_some(),
            "claim {claim} missing from {claims}"
        );
    }
    assert_eq!(claims["sub"], id);
    assert_eq!(claims["scp"], "chat.join voip.join");
    assert_eq!(claims["acsScope"], "chat.join,voip.join");
    let tenant = id
        .trim_start_matches("8:acs:")
        .split('_')
        .next()
        .expect("tenant");
    assert_eq!(claims["resourceId"], tenant);
    assert_eq!(
        claims["iss"],
        format!("https://127.0.0.1:{}/", server.https_port)
    );

    // expiresOn is RFC 3339 UTC and names the same instant as exp.
    let expires_on = reply.body["expiresOn"].as_str().expect("expiresOn");
    assert!(expires_on.ends_with('Z'), "{expires_on}");
    let parsed =
        time::OffsetDateTime::parse(expires_on, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
    assert_eq!(
        parsed.unix_timestamp(),
        claims["exp"].as_i64().expect("exp")
    );
}

async fn issued_tokens_default_to_a_day_and_honour_expires_in_minutes(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    for (body, minutes) in [
        (json!({"scopes": ["voip"]}), 1440),
        (json!({"scopes": ["voip"], "expiresInMinutes": 60}), 60),
        (json!({"scopes": ["voip"], "expiresInMinutes": 1440}), 1440),
        (json!({"scopes": ["chat"], "expiresInMinutes": 61}), 61),
    ] {
        let reply = server.default.issue_token(&id, body.clone()).await;
        assert_eq!(reply.status, StatusCode::OK, "{body}: {}", reply.body);
        let (_, claims) = jwt_parts(reply.body["token"].as_str().expect("token"));
        let lifetime = claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat");
        assert_eq!(lifetime, minutes * 60, "{body}");
    }
}

async fn every_supported_api_version_is_accepted(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    for version in [
        "2021-03-07",
        "2022-06-01",
        "2022-10-01",
        "2023-08-01",
        "2023-10-01",
        "2025-06-30",
    ] {
        let reply = server
            .default
            .call(
                Method::POST,
                &format!("/identities?api-version={version}"),
                json!({}),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "api-version {version}: {}",
            reply.body
        );
    }
}

async fn external_id_makes_create_idempotent(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let first = server
        .default
        .create_identity(json!({"externalId": "alice@example.com"}))
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let id = first.identity_id();

    let again = server
        .default
        .create_identity(
            json!({"externalId": "alice@example.com", "createTokenWithScopes": ["chat"]}),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["identity"]["id"], id.as_str());
    let (_, claims) = jwt_parts(again.body["accessToken"]["token"].as_str().expect("token"));
    assert_eq!(claims["sub"], id.as_str());

    // `customId`, the later ACS name, is the same field.
    let custom = server
        .default
        .create_identity(json!({"customId": "alice@example.com"}))
        .await;
    assert_eq!(custom.status, StatusCode::OK);
    assert_eq!(custom.body["identity"]["id"], id.as_str());

    // Another tenant has its own namespace of external ids.
    let (acme, _) = server.create_tenant("acme", "acme.test").await;
    let other = acme
        .create_identity(json!({"externalId": "alice@example.com"}))
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.body);
    assert_ne!(other.body["identity"]["id"], id.as_str());
    assert_eq!(server.count("identities").await, 2);
}

async fn get_identity_reports_external_id_and_last_token_issued_at(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let created = server
        .default
        .create_identity(json!({"externalId": "bob"}))
        .await;
    let id = created.identity_id();

    let before = server.default.get_identity(&id).await;
    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(before.body["id"], id.as_str());
    assert_eq!(before.body["externalId"], "bob");
    assert!(
        before.body.get("lastTokenIssuedAt").is_none(),
        "{}",
        before.body
    );

    let issued = server
        .default
        .issue_token(&id, json!({"scopes": ["chat"]}))
        .await;
    assert_last_token_issued_at_is_iat_of(&server, &id, issued.body["token"].as_str()).await;

    // An identity created with a token has issued one already.
    let created = server
        .default
        .create_identity(json!({"createTokenWithScopes": ["chat"]}))
        .await;
    let token = created.body["accessToken"]["token"].as_str();
    assert_last_token_issued_at_is_iat_of(&server, &created.identity_id(), token).await;
}

/// Asserts that the identity `id` reports `token`'s `iat` as its `lastTokenIssuedAt`.
async fn assert_last_token_issued_at_is_iat_of(server: &TestServer, id: &str, token: Option<&str>) {
    let (_, claims) = jwt_parts(token.expect("token"));
    let got = server.default.get_identity(id).await;
    let last = got.body["lastTokenIssuedAt"]
        .as_str()
        .expect("lastTokenIssuedAt");
    let last = time::OffsetDateTime::parse(last, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    assert_eq!(last.unix_timestamp(), claims["iat"].as_i64().expect("iat"));
}

async fn revoke_answers_204_and_keeps_the_identity(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    let reply = server.default.revoke(&id).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server
            .count("identities WHERE tokens_revoked_before IS NOT NULL")
            .await,
        1
    );
    // Revoking is not deleting: new tokens can be issued.
    assert_eq!(
        server
            .default
            .issue_token(&id, json!({"scopes": ["voip"]}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        server.default.revoke(&id).await.status,
        StatusCode::NO_CONTENT
    );
}

async fn delete_makes_the_identity_unknown_and_frees_its_external_id(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let created = server
        .default
        .create_identity(json!({"externalId": "carol"}))
        .await;
    let id = created.identity_id();
    assert_eq!(
        server.default.delete_identity(&id).await.status,
        StatusCode::NO_CONTENT
    );

    assert_eq!(
        server.default.get_identity(&id).await.error(404),
        "IdentityNotFound"
    );
    assert_eq!(
        server
            .default
            .issue_token(&id, json!({"scopes": ["chat"]}))
            .await
            .error(404),
        "IdentityNotFound"
    );
    assert_eq!(
        server.default.revoke(&id).await.error(404),
        "IdentityNotFound"
    );
    assert_eq!(
        server.default.delete_identity(&id).await.error(404),
        "IdentityNotFound"
    );

    // The tombstone keeps no personal data, and the external id can name a new identity.
    assert_eq!(
        server
            .count("identities WHERE external_id IS NOT NULL")
            .await,
        0
    );
    let again = server
        .default
        .create_identity(json!({"externalId": "carol"}))
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_ne!(again.body["identity"]["id"], id.as_str());
}

async fn every_token_is_recorded(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    for _ in 0..3 {
        assert_eq!(
            server
                .default
                .issue_token(&id, json!({"scopes": ["chat"]}))
                .await
                .status,
            StatusCode::OK
        );
    }
    server
        .default
        .create_identity(json!({"createTokenWithScopes": ["voip"]}))
        .await;
    assert_eq!(server.count("issued_tokens").await, 4);
    assert_eq!(server.count("issued_tokens WHERE scopes = 'chat'").await, 3);
}

async fn the_plain_http_listener_serves_the_same_api(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let http = server.default.over_http(server.http_port);
    let id = http.new_identity().await;
    let reply = server.default.get_identity(&id).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        http.issue_token(&id, json!({"scopes": ["chat"]}))
            .await
            .status,
        StatusCode::OK
    );
}
