//! HMAC-SHA256 authentication: what verifies, and every way a request can fail to. No failed
//! attempt changes anything.

use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde_json::json;

use crate::helpers::{API, Backend, Request, TestServer, encode};

crate::both_backends!(
    either_of_the_two_keys_verifies,
    requests_that_fail_authentication_get_401_and_change_nothing,
    the_date_may_be_off_by_less_than_the_configured_skew,
    the_path_is_verified_as_received,
    a_key_of_one_tenant_does_not_open_another,
);

async fn either_of_the_two_keys_verifies(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let out = server.cli(&[
        "tenant",
        "show",
        "--tenant",
        "default",
        "--json",
        "--show-keys",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tenant: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for slot in ["primaryKey", "secondaryKey"] {
        let key = tenant[slot].as_str().expect("key");
        let client = server.client("127.0.0.1", key);
        assert_eq!(
            client.create_identity(json!({})).await.status,
            201,
            "{slot}"
        );
    }
}

async fn requests_that_fail_authentication_get_401_and_change_nothing(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    let before = server.snapshot().await;
    let create = format!("/identities?{API}");
    let issue = format!("/identities/{}/:issueAccessToken?{API}", encode(&id));
    let body = json!({"scopes": ["chat"]});
    let delete = format!("/identities/{}?{API}", encode(&id));
    let wrong_key = server.default.with_key(&[7u8; 64]);

    let cases: Vec<(&str, Request, bool)> = vec![
        (
            "wrong key",
            Request::new(Method::POST, &create, &json!({})),
            true,
        ),
        (
            "missing authorization",
            Request {
                omit: &["authorization"],
                ..Request::new(Method::POST, &create, &json!({}))
            },
            false,
        ),
        (
            "missing x-ms-date",
            Request {
                omit: &["x-ms-date"],
                ..Request::new(Method::POST, &create, &json!({}))
            },
            false,
        ),
        (
            "missing content hash",
            Request {
                omit: &["x-ms-content-sha256"],
                ..Request::new(Method::POST, &issue, &body)
            },
            false,
        ),
        (
            "stale date",
            Request {
                date: SystemTime::now() - Duration::from_secs(16 * 60),
                ..Request::new(Method::POST, &issue, &body)
            },
            false,
        ),
        (
            "future date",
            Request {
                date: SystemTime::now() + Duration::from_secs(16 * 60),
                ..Request::new(Method::POST, &issue, &body)
            },
            false,
        ),
        (
            "tampered body (hash of the signed body)",
            Request {
                signed_body: Some(br#"{"scopes":["chat"]}"#.to_vec()),
                ..Request::raw(Method::POST, &issue, br#"{"scopes":["voip"]}"#.to_vec())
            },
            false,
        ),
        (
            "signed for another path",
            Request {
                signed_path: Some("/identities?api-version=2023-10-01"),
                ..Request::new(Method::POST, &issue, &body)
            },
            false,
        ),
        (
            "signed for another query",
            Request {
                signed_path: Some("/identities?api-version=2022-10-01"),
                ..Request::new(Method::POST, &create, &json!({}))
            },
            false,
        ),
        (
            "not HMAC",
            Request {
                authorization: Some("Bearer abc".into()),
                ..Request::new(Method::POST, &create, &json!({}))
            },
            false,
        ),
        (
            "other signed headers",
            Request {
                authorization: Some("HMAC-SHA256 SignedHeaders=host&Signature=AAAA".into()),
                ..Request::new(Method::POST, &create, &json!({}))
            },
            false,
        ),
        (
            "signature not base64",
            Request {
                authorization: Some(
                    "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=***"
                        .into(),
                ),
                ..Request::new(Method::POST, &create, &json!({}))
            },
            false,
        ),
        (
            "empty signature",
            Request {
                authorization: Some(
                    "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature="
                        .into(),
                ),
                ..Request::new(Method::DELETE, &delete, &serde_json::Value::Null)
            },
            false,
        ),
    ];
    for (name, request, use_wrong_key) in cases {
        let client = if use_wrong_key {
            &wrong_key
        } else {
            &server.default
        };
        let reply = client.send(request).await;
        assert_eq!(reply.error(401), "Unauthorized", "{name}");
        assert!(reply.headers.contains_key("www-authenticate"), "{name}");
    }
    // A malformed date header is refused too.
    let reply = server
        .default
        .send(Request {
            date_header: Some("yesterday"),
            ..Request::new(Method::POST, &create, &json!({}))
        })
        .await;
    assert_eq!(reply.error(401), "Unauthorized");
    assert_eq!(
        server.snapshot().await,
        before,
        "a refused request changed the database"
    );
}

async fn the_date_may_be_off_by_less_than_the_configured_skew(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let create = format!("/identities?{API}");
    for offset in [-14 * 60i64, 14 * 60] {
        let date = if offset < 0 {
            SystemTime::now() - Duration::from_secs(offset.unsigned_abs())
        } else {
            SystemTime::now() + Duration::from_secs(offset as u64)
        };
        let reply = server
            .default
            .send(Request {
                date,
                ..Request::new(Method::POST, &create, &json!({}))
            })
            .await;
        assert_eq!(reply.status, 201, "offset {offset}s: {}", reply.body);
    }
}

async fn the_path_is_verified_as_received(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    let encoded = format!("/identities/{}?{API}", encode(&id));
    let decoded = format!("/identities/{id}?{API}");
    // The SDKs sign the percent-encoded path they send.
    let ok = server
        .default
        .send(Request::new(
            Method::GET,
            &encoded,
            &serde_json::Value::Null,
        ))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    // A client that sends the raw id signs it raw; that works too.
    let raw = server
        .default
        .send(Request::new(
            Method::GET,
            &decoded,
            &serde_json::Value::Null,
        ))
        .await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    // Signing the decoded form while sending the encoded one does not.
    let mismatch = server
        .default
        .send(Request {
            signed_path: Some(&decoded),
            ..Request::new(Method::GET, &encoded, &serde_json::Value::Null)
        })
        .await;
    assert_eq!(mismatch.error(401), "Unauthorized");
}

async fn a_key_of_one_tenant_does_not_open_another(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, acme_json) = server.create_tenant("acme", "acme.test").await;
    let before = server.snapshot().await;
    // The default tenant's key, sent to acme's host name.
    let default_key_on_acme = server.client("acme.test", "AAAA").with_key(&{
        let connection =
            std::fs::read_to_string(server.db.data_dir.join("default-connection-string.txt"))
                .expect("cs");
        let key = connection
            .trim()
            .rsplit_once("accesskey=")
            .expect("key")
            .1
            .to_owned();
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key).expect("b64")
    });
    assert_eq!(
        default_key_on_acme
            .create_identity(json!({}))
            .await
            .error(401),
        "Unauthorized"
    );
    // acme's key on the default tenant's host.
    let acme_key = acme_json["primaryKey"].as_str().expect("key");
    let acme_on_default = server.client("127.0.0.1", acme_key);
    assert_eq!(
        acme_on_default.create_identity(json!({})).await.error(401),
        "Unauthorized"
    );
    assert_eq!(server.snapshot().await, before);
    assert_eq!(acme.create_identity(json!({})).await.status, 201);
}
