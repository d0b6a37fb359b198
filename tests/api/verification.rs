//! What downstream services verify tokens with: the JWKS and discovery document of each tenant,
//! and RFC 7662 introspection, with every reason a token is inactive.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use callsign::domain::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{API, Backend, Request, TestServer, jwt_parts};

crate::both_backends!(
    jwks_and_discovery_describe_each_tenants_keys,
    the_public_documents_are_cacheable_and_revalidate_with_etags,
    a_fresh_token_is_active_with_its_claims_in_form_or_json,
    expired_altered_foreign_and_forged_tokens_are_inactive,
    garbage_truncated_and_oversized_tokens_are_inactive_never_an_error,
    revoked_and_deleted_identities_tokens_are_inactive_at_once,
    introspection_without_the_tenants_hmac_is_401,
    malformed_introspection_requests_are_400,
);

/// Exactly what RFC 7662 answers for a token that is not active: nothing else.
fn inactive() -> Value {
    json!({"active": false})
}

async fn jwks_and_discovery_describe_each_tenants_keys(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, _) = server.create_tenant("acme", "acme.test").await;
    for (client, host) in [(&server.default, "127.0.0.1"), (&acme, "acme.test")] {
        let id = client.new_identity().await;
        let token = client.token(&id, &["chat"]).await;
        let (header, claims) = jwt_parts(&token);

        // api-version is accepted, and not required.
        for query in ["", "?api-version=2023-10-01"] {
            let discovery = client
                .public_get(&format!("/.well-known/openid-configuration{query}"), None)
                .await;
            assert_eq!(discovery.status, StatusCode::OK, "{}", discovery.body);
            let issuer = format!("https://{host}:{}/", server.https_port);
            assert_eq!(discovery.body["issuer"], issuer.as_str());
            assert_eq!(discovery.body["issuer"], claims["iss"], "iss is the issuer");
            assert_eq!(
                discovery.body["jwks_uri"],
                format!("{issuer}.well-known/jwks.json")
            );
            assert_eq!(
                discovery.body["introspection_endpoint"],
                format!("{issuer}oauth2/introspect")
            );
            assert_eq!(
                discovery.body["id_token_signing_alg_values_supported"],
                json!(["EdDSA"])
            );
            assert_eq!(
                discovery.body["scopes_supported"],
                json!([
                    "chat",
                    "voip",
                    "chat.join",
                    "chat.join.limited",
                    "voip.join"
                ])
            );

            let jwks = client
                .public_get(&format!("/.well-known/jwks.json{query}"), None)
                .await;
            assert_eq!(jwks.status, StatusCode::OK);
            let keys = jwks.body["keys"].as_array().expect("keys");
            assert_eq!(keys.len(), 1, "{}", jwks.body);
            let key = &keys[0];
            assert_eq!(key["kid"], header["kid"]);
            assert_eq!(key["kty"], "OKP");
            assert_eq!(key["crv"], "Ed25519");
            assert_eq!(key["alg"], "EdDSA");
            assert_eq!(key["use"], "sig");
            assert_eq!(
                URL_SAFE_NO_PAD
                    .decode(key["x"].as_str().expect("x"))
                    .expect("base64url")
                    .len(),
                32
            );
            assert!(key.get("d").is_none(), "a private key is published");
        }
    }
    // Each tenant publishes its own key.
    let default_jwks = server
        .default
        .public_get("/.well-known/jwks.json", None)
        .await;
    let acme_jwks = acme.public_get("/.well-known/jwks.json", None).await;
    assert_ne!(
        default_jwks.body["keys"][0]["kid"],
        acme_jwks.body["keys"][0]["kid"]
    );
    // The plain-HTTP listener serves the same documents.
    let over_http = server
        .default
        .over_http(server.http_port)
        .public_get("/.well-known/jwks.json", None)
        .await;
    assert_eq!(over_http.body, default_jwks.body);
}

async fn the_public_documents_are_cacheable_and_revalidate_with_etags(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
    ] {
        let first = server.default.public_get(path, None).await;
        assert_eq!(first.status, StatusCode::OK);
        let header = |reply: &crate::helpers::Reply, name: &str| {
            reply
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header(&first, "cache-control"), "public, max-age=300");
        assert_eq!(header(&first, "content-type"), "application/json");
        let etag = header(&first, "etag");
        assert!(etag.starts_with('"') && etag.len() > 2, "{etag:?}");

        let again = server.default.public_get(path, Some(&etag)).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.body, Value::Null);
        assert_eq!(header(&again, "etag"), etag);
        assert_eq!(header(&again, "cache-control"), "public, max-age=300");

        let stale = server.default.public_get(path, Some("\"other\"")).await;
        assert_eq!(stale.status, StatusCode::OK);
        assert_eq!(stale.body, first.body);
    }
}

async fn a_fresh_token_is_active_with_its_claims_in_form_or_json(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    let token = server.default.token(&id, &["chat", "voip.join"]).await;
    let (_, claims) = jwt_parts(&token);

    let form = server.default.introspect(&token).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert_eq!(
        form.body,
        json!({
            "active": true,
            "scope": "chat voip.join",
            "sub": id,
            "exp": claims["exp"],
            "iat": claims["iat"],
            "nbf": claims["nbf"],
            "jti": claims["jti"],
            "iss": claims["iss"],
            "aud": claims["aud"],
        })
    );
    assert_eq!(
        form.headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );

    // A JSON body, an api-version, a token_type_hint: the same answer.
    for (path, body) in [
        (
            "/oauth2/introspect".to_owned(),
            json!({"token": token.clone()}),
        ),
        (
            format!("/oauth2/introspect?{API}"),
            json!({"token": token.clone(), "token_type_hint": "access_token"}),
        ),
    ] {
        let reply = server.default.call(Method::POST, &path, body).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        assert_eq!(reply.body, form.body, "{path}");
    }
    let hinted = server
        .default
        .send(Request {
            content_type: Some("application/x-www-form-urlencoded; charset=utf-8"),
            ..Request::raw(
                Method::POST,
                "/oauth2/introspect?api-version=2025-06-30",
                format!("token_type_hint=access_token&token={token}").into_bytes(),
            )
        })
        .await;
    assert_eq!(hinted.body, form.body);

    // A token created with the identity is active too, and over plain HTTP.
    let created = server
        .default
        .create_identity(json!({"createTokenWithScopes": ["voip"]}))
        .await;
    let token = created.body["accessToken"]["token"]
        .as_str()
        .expect("token");
    let http = server.default.over_http(server.http_port);
    let reply = http.introspect(token).await;
    assert_eq!(reply.body["active"], true, "{}", reply.body);
    assert_eq!(reply.body["scope"], "voip");
}

async fn expired_altered_foreign_and_forged_tokens_are_inactive(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, _) = server.create_tenant("acme", "acme.test").await;
    let id = server.default.new_identity().await;
    let token = server.default.token(&id, &["chat"]).await;
    assert!(server.default.is_active(&token).await);

    let mut cases: Vec<(&str, String)> = Vec::new();
    // Signed by the tenant's key, issued two hours ago for one: expired.
    let two_hours_ago = Timestamp::from_millis(Timestamp::now().millis() - 2 * 3600 * 1000);
    cases.push((
        "expired",
        server.mint("default", &id, two_hours_ago, 60).await,
    ));
    // One byte changed, in the payload and in the signature.
    let dot = token.find('.').expect("dot");
    for (name, at) in [
        ("payload altered", dot + 12),
        ("signature altered", token.len() - 12),
    ] {
        let mut altered = token.clone().into_bytes();
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        cases.push((name, String::from_utf8(altered).expect("utf8")));
    }
    // A valid token of another tenant: inactive here, with no hint it exists elsewhere.
    let theirs = acme.new_identity().await;
    let foreign = acme.token(&theirs, &["chat"]).await;
    assert!(acme.is_active(&foreign).await, "active for its own tenant");
    cases.push(("another tenant's token", foreign));
    // The tenant's payload under another tenant's header (and kid).
    let acme_header = cases[3].1.split('.').next().expect("header").to_owned();
    cases.push((
        "another tenant's kid",
        format!("{acme_header}{}", &token[dot..]),
    ));

    // HS256 keyed with the public key, as a JWKS publishes it and as the server stores it.
    let (header, claims) = jwt_parts(&token);
    let kid = header["kid"].as_str().expect("kid");
    let jwks = server
        .default
        .public_get("/.well-known/jwks.json", None)
        .await;
    let x = URL_SAFE_NO_PAD
        .decode(jwks.body["keys"][0]["x"].as_str().expect("x"))
        .expect("x");
    let (spki, _) = server.signing_public_key(kid).await;
    for (name, secret) in [
        ("HS256 with the JWK's public key", x.clone()),
        ("HS256 with the SPKI public key", spki),
        (
            "HS256 with the JWK text",
            jwks.body["keys"][0].to_string().into_bytes(),
        ),
    ] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        cases.push((
            name,
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret))
                .expect("forge"),
        ));
    }
    // alg none, with the real kid and payload.
    let payload = token.split('.').nth(1).expect("payload");
    for none in [
        json!({"alg": "none", "kid": kid}),
        json!({"alg": "None", "kid": kid}),
    ] {
        let none = URL_SAFE_NO_PAD.encode(none.to_string());
        cases.push(("alg none", format!("{none}.{payload}.")));
        cases.push(("alg none, no signature part", format!("{none}.{payload}")));
    }
    // The real signature under a header claiming another asymmetric algorithm.
    let es = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": kid}).to_string());
    cases.push((
        "alg ES256 on an EdDSA key",
        format!("{es}{}", &token[dot..]),
    ));
    // No kid at all.
    let no_kid = URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA"}).to_string());
    cases.push(("no kid", format!("{no_kid}{}", &token[dot..])));

    for (name, candidate) in &cases {
        let reply = server.default.introspect(candidate).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.body);
        assert_eq!(reply.body, inactive(), "{name}");
    }
    // The genuine token is still fine.
    assert!(server.default.is_active(&token).await);
}

async fn garbage_truncated_and_oversized_tokens_are_inactive_never_an_error(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    let token = server.default.token(&id, &["voip"]).await;
    let oversized = format!("{token}{}", "A".repeat(20_000));
    let huge_header = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode("x".repeat(40_000)),
        &token[token.find('.').expect("dot") + 1..]
    );
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("whitespace", "   ".into()),
        ("not a JWT", "hello world".into()),
        ("dots", "..".into()),
        ("four parts", format!("{token}.x")),
        (
            "two parts",
            token[..token.rfind('.').expect("dot")].to_owned(),
        ),
        ("truncated", token[..token.len() / 2].to_owned()),
        ("truncated by one", token[..token.len() - 1].to_owned()),
        ("not base64", "a!b.c!d.e!f".into()),
        ("base64 of garbage", "YWJj.ZGVm.Z2hp".into()),
        (
            "header not an object",
            format!("{}.e30.AA", URL_SAFE_NO_PAD.encode("[1,2]")),
        ),
        ("oversized", oversized),
        ("oversized header", huge_header),
        ("control characters", "\u{1}\u{2}\u{7f}".into()),
        ("non-ASCII", "tökén.ñ.ü".into()),
        ("bearer prefix", format!("Bearer {token}")),
    ];
    for (name, candidate) in &cases {
        let reply = server.default.introspect(candidate).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.body);
        assert_eq!(reply.body, inactive(), "{name}");
        let json = server
            .default
            .call(
                Method::POST,
                "/oauth2/introspect",
                json!({ "token": candidate }),
            )
            .await;
        assert_eq!(json.body, inactive(), "{name} (JSON)");
    }
    // Undecodable bytes in a form value are garbage too.
    let reply = server
        .default
        .send(Request {
            content_type: Some("application/x-www-form-urlencoded"),
            ..Request::raw(
                Method::POST,
                "/oauth2/introspect",
                b"token=%FF%FE%00abc".to_vec(),
            )
        })
        .await;
    assert_eq!(reply.body, inactive());
}

async fn revoked_and_deleted_identities_tokens_are_inactive_at_once(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    let other = server.default.new_identity().await;
    let first = server.default.token(&id, &["chat"]).await;
    let second = server.default.token(&id, &["voip"]).await;
    let bystander = server.default.token(&other, &["chat"]).await;
    assert!(server.default.is_active(&first).await);

    // No waiting: the instance that answered 204 knows at once.
    assert_eq!(
        server.default.revoke(&id).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(!server.default.is_active(&first).await, "revoked");
    assert!(!server.default.is_active(&second).await, "revoked");
    assert!(
        server.default.is_active(&bystander).await,
        "another identity"
    );

    // A token issued after the revocation is live. (Issued in the same millisecond, it would
    // count as revoked: the order is unknown, so the answer is the safe one.)
    tokio::time::sleep(Duration::from_millis(5)).await;
    let after = server.default.token(&id, &["chat"]).await;
    assert!(server.default.is_active(&after).await, "issued after");

    assert_eq!(
        server.default.delete_identity(&id).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(!server.default.is_active(&after).await, "identity deleted");
    assert!(server.default.is_active(&bystander).await);
}

async fn introspection_without_the_tenants_hmac_is_401(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, acme_json) = server.create_tenant("acme", "acme.test").await;
    let id = server.default.new_identity().await;
    let token = server.default.token(&id, &["chat"]).await;
    let body = format!("token={token}").into_bytes();
    let form = |request: Request<'static>| Request {
        content_type: Some("application/x-www-form-urlencoded"),
        ..request
    };
    let path = "/oauth2/introspect";

    let cases: Vec<(&str, crate::helpers::AcsClient, Request)> = vec![
        (
            "a wrong key",
            server.default.with_key(&[7u8; 64]),
            form(Request::raw(Method::POST, path, body.clone())),
        ),
        (
            "acme's key on the default tenant's host",
            server.client("127.0.0.1", acme_json["primaryKey"].as_str().expect("key")),
            form(Request::raw(Method::POST, path, body.clone())),
        ),
        (
            "no authorization",
            server.default.clone(),
            form(Request {
                omit: &["authorization"],
                ..Request::raw(Method::POST, path, body.clone())
            }),
        ),
        (
            "no x-ms-date",
            server.default.clone(),
            form(Request {
                omit: &["x-ms-date"],
                ..Request::raw(Method::POST, path, body.clone())
            }),
        ),
        (
            "a body other than the one signed",
            server.default.clone(),
            form(Request {
                signed_body: Some(b"token=something-else".to_vec()),
                ..Request::raw(Method::POST, path, body.clone())
            }),
        ),
        (
            "signed for another path",
            server.default.clone(),
            form(Request {
                signed_path: Some("/identities?api-version=2023-10-01"),
                ..Request::raw(Method::POST, path, body.clone())
            }),
        ),
        (
            "a bearer token instead",
            server.default.clone(),
            form(Request {
                authorization: Some(format!("Bearer {token}")),
                ..Request::raw(Method::POST, path, body.clone())
            }),
        ),
    ];
    for (name, client, request) in cases {
        let reply = client.send(request).await;
        assert_eq!(reply.error(401), "Unauthorized", "{name}");
        assert!(reply.headers.contains_key("www-authenticate"), "{name}");
        assert!(
            reply.body.get("active").is_none(),
            "{name}: answered {}",
            reply.body
        );
    }
    // acme's own key works on acme's host, where the default tenant's token is not active.
    assert_eq!(acme.introspect(&token).await.body, inactive());
}

async fn malformed_introspection_requests_are_400(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let cases: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        (
            "empty form",
            Some("application/x-www-form-urlencoded"),
            Vec::new(),
        ),
        (
            "no token parameter",
            Some("application/x-www-form-urlencoded"),
            b"tokn=abc".to_vec(),
        ),
        ("empty JSON object", None, b"{}".to_vec()),
        ("token not a string", None, br#"{"token": 42}"#.to_vec()),
        ("token null", None, br#"{"token": null}"#.to_vec()),
        ("not JSON", Some("application/json"), b"token=abc".to_vec()),
        ("truncated JSON", None, br#"{"token": "ab"#.to_vec()),
        (
            "token given twice",
            Some("application/x-www-form-urlencoded"),
            b"token=a&token=b".to_vec(),
        ),
    ];
    for (name, content_type, body) in cases {
        let reply = server
            .default
            .send(Request {
                content_type,
                ..Request::raw(Method::POST, "/oauth2/introspect", body)
            })
            .await;
        assert_eq!(reply.error(400), "InvalidRequestBody", "{name}");
    }
    let huge = format!("token={}", "A".repeat(70 * 1024));
    let reply = server
        .default
        .send(Request {
            content_type: Some("application/x-www-form-urlencoded"),
            ..Request::raw(Method::POST, "/oauth2/introspect", huge.into_bytes())
        })
        .await;
    assert_eq!(reply.error(413), "RequestEntityTooLarge");
    // Only POST introspects.
    let reply = server
        .default
        .call(Method::GET, "/oauth2/introspect", Value::Null)
        .await;
    assert_eq!(reply.error(404), "NotFound");
}
