//! Signing-key rotation: new tokens get the new key at once, old tokens keep verifying until
//! they have all expired, across restarts; then the old key leaves the JWKS. The 24-hour
//! retention is tested by passing the rotation's time in, not by waiting.

use std::time::{Duration, Instant};

use callsign::domain::Timestamp;
use callsign::service::tenants::{SUPERSEDED_KEY_RETENTION_MS, rotate_signing_key};
use callsign_verify::{Verifier, VerifyError};
use serde_json::Value;

use crate::helpers::{AcsClient, Backend, TestServer, jwt_parts};

crate::both_backends!(
    a_rotation_by_the_cli_signs_new_tokens_with_the_new_key_and_keeps_old_ones_active,
    a_superseded_key_stays_published_until_its_tokens_have_expired,
    the_rust_verifier_follows_a_rotation_and_checks_scopes,
);

async fn published_kids(client: &AcsClient) -> Vec<String> {
    client.public_get("/.well-known/jwks.json", None).await.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

/// Waits (at most a second) until the JWKS lists exactly the keys `expected`, in any order.
async fn await_published(client: &AcsClient, expected: &[String]) {
    let start = Instant::now();
    let mut expected = expected.to_vec();
    expected.sort();
    loop {
        let mut kids = published_kids(client).await;
        kids.sort();
        if kids == expected {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the JWKS lists {kids:?}, not {expected:?}, a second after the change"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn kid(token: &str) -> String {
    jwt_parts(token).0["kid"].as_str().expect("kid").to_owned()
}

async fn a_rotation_by_the_cli_signs_new_tokens_with_the_new_key_and_keeps_old_ones_active(
    backend: Backend,
) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    let old_token = server.default.token(&id, &["chat"]).await;
    let old_kid = kid(&old_token);

    let out = server.cli(&["signing-key", "rotate", "--tenant", "default", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated: Value = serde_json::from_slice(&out.stdout).expect("json");
    let new_kid = rotated["kid"].as_str().expect("kid").to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(rotated["superseded"], serde_json::json!([old_kid.clone()]));
    assert_eq!(rotated["algorithm"], "EdDSA");

    // The running server picks the rotation up within a second: both keys are published.
    let both = vec![old_kid.clone(), new_kid.clone()];
    await_published(&server.default, &both).await;
    let new_token = server.default.token(&id, &["chat"]).await;
    assert_eq!(kid(&new_token), new_kid, "new tokens use the new key");
    assert!(server.default.is_active(&old_token).await);
    assert!(server.default.is_active(&new_token).await);

    // The CLI lists what signs and what is only published.
    let out = server.cli(&["signing-key", "list", "--tenant", "default", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("json");
    let states: Vec<(&str, &str)> = listed
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().expect("kid"),
                k["state"].as_str().expect("state"),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (old_kid.as_str(), "published"),
            (new_kid.as_str(), "signing")
        ]
    );

    // Across a restart: the same keys published, both tokens active, new tokens on the new key.
    let client = server.default.clone();
    let server = server.restart().await;
    let client = client.with_port(server.https_port);
    assert_eq!(published_kids(&client).await, both);
    assert!(client.is_active(&old_token).await);
    assert!(client.is_active(&new_token).await);
    assert_eq!(kid(&client.token(&id, &["voip"]).await), new_kid);

    // A rotation for a tenant that does not exist fails clearly and changes nothing.
    let before = server.snapshot().await;
    let out = server.cli(&["signing-key", "rotate", "--tenant", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tenant"));
    assert_eq!(server.snapshot().await, before);
}

async fn a_superseded_key_stays_published_until_its_tokens_have_expired(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, _) = server.create_tenant("acme", "acme.test").await;
    let (repo, master_key) = server.open_store().await;
    let now = Timestamp::now().millis();

    // A rotation 23 hours ago: tokens of the old key issued just before it may still be
    // valid, so it is still published and still verifies.
    let id = server.default.new_identity().await;
    let old_default = server.default.token(&id, &["chat"]).await;
    let record = server.tenant_record("default").await;
    let rotated = rotate_signing_key(
        repo.as_ref(),
        &master_key,
        &record,
        None,
        &callsign::service::audit::Caller::cli(),
        Timestamp::from_millis(now - 23 * 3600 * 1000),
    )
    .await
    .expect("rotate");
    await_published(&server.default, &[kid(&old_default), rotated.kid.clone()]).await;
    assert!(server.default.is_active(&old_default).await);
    assert_eq!(
        kid(&server.default.token(&id, &["chat"]).await),
        rotated.kid
    );

    // A rotation one retention period (a day and a quarter hour) and a second ago: every
    // token of the old key has expired, and the key is retired.
    let acme_id = acme.new_identity().await;
    let old_acme = acme.token(&acme_id, &["chat"]).await;
    let record = server.tenant_record("acme").await;
    let rotated = rotate_signing_key(
        repo.as_ref(),
        &master_key,
        &record,
        None,
        &callsign::service::audit::Caller::cli(),
        Timestamp::from_millis(now - SUPERSEDED_KEY_RETENTION_MS - 1000),
    )
    .await
    .expect("rotate");
    repo.close().await;
    await_published(&acme, std::slice::from_ref(&rotated.kid)).await;
    let new_acme = acme.token(&acme_id, &["chat"]).await;
    assert_eq!(kid(&new_acme), rotated.kid);
    assert!(acme.is_active(&new_acme).await);
    // (This token was issued after the backdated rotation, so it outlives its key: a key
    // leaves with the tokens it signed.)
    assert!(!acme.is_active(&old_acme).await);

    let out = server.cli(&["signing-key", "list", "--tenant", "acme", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("json");
    let state = |kid: &str| -> String {
        listed
            .as_array()
            .expect("keys")
            .iter()
            .find(|k| k["kid"] == kid)
            .map(|k| k["state"].as_str().expect("state").to_owned())
            .expect("listed")
    };
    assert_eq!(state(&kid(&old_acme)), "retired");
    assert_eq!(state(&rotated.kid), "signing");
}

async fn the_rust_verifier_follows_a_rotation_and_checks_scopes(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, _) = server.create_tenant("acme", "acme.test").await;
    let issuer = format!("https://127.0.0.1:{}/", server.https_port);
    let verifier = Verifier::builder(&issuer)
        .http_client(server.default.http())
        .min_refresh_interval(Duration::ZERO)
        .build()
        .await
        .expect("verifier");
    assert_eq!(verifier.jwks_fetches(), 1);

    let id = server.default.new_identity().await;
    let token = server.default.token(&id, &["chat", "voip"]).await;
    let claims = verifier
        .verify_with_scopes(&token, &["chat"])
        .await
        .expect("verifies");
    assert_eq!(claims.subject, id);
    assert_eq!(claims.issuer, issuer);
    assert_eq!(claims.scopes, ["chat", "voip"]);
    assert_eq!(
        verifier.verify_with_scopes(&token, &["chat.join"]).await,
        Err(VerifyError::MissingScope("chat.join".into()))
    );
    // Another tenant's token names a key this tenant never published.
    let theirs = acme.new_identity().await;
    let foreign = acme.token(&theirs, &["chat"]).await;
    assert!(matches!(
        verifier.verify(&foreign).await,
        Err(VerifyError::UnknownKey(_))
    ));
    // One byte changed.
    let mut altered = token.clone().into_bytes();
    let at = token.find('.').expect("dot") + 8;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    assert!(
        verifier
            .verify(&String::from_utf8(altered).expect("utf8"))
            .await
            .is_err()
    );
    let fetches = verifier.jwks_fetches();

    // After a rotation, the first token with the new kid makes it fetch the keys once.
    let out = server.cli(&["signing-key", "rotate", "--tenant", "default"]);
    assert!(out.status.success());
    let start = Instant::now();
    let rotated = loop {
        let candidate = server.default.token(&id, &["chat"]).await;
        if kid(&candidate) != kid(&token) {
            break candidate;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "rotation not seen"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    verifier.verify(&rotated).await.expect("new key verifies");
    assert_eq!(verifier.jwks_fetches(), fetches + 1);
    verifier
        .verify(&token)
        .await
        .expect("old key still verifies");
    verifier.verify(&rotated).await.expect("cached");
    assert_eq!(verifier.jwks_fetches(), fetches + 1);

    // A verifier that expects another issuer refuses the discovery document.
    let wrong = Verifier::builder(format!("https://localhost:{}/", server.https_port))
        .http_client(server.default.http())
        .build()
        .await;
    assert!(matches!(wrong, Err(VerifyError::Discovery(_))), "{wrong:?}");
}
