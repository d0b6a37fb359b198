//! Everything survives a restart: tenants, keys, identities, and signing keys (tokens issued
//! before the restart still verify).

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestServer, jwt_parts};

crate::both_backends!(a_restart_keeps_tenants_keys_identities_and_signing_keys);

async fn verify(server: &TestServer, token: &str) -> Value {
    let (header, _) = jwt_parts(token);
    let (spki, algorithm) = server
        .signing_public_key(header["kid"].as_str().expect("kid"))
        .await;
    assert_eq!(algorithm, "EdDSA");
    // An Ed25519 SubjectPublicKeyInfo ends with the 32-byte public key.
    let key = DecodingKey::from_ed_der(&spki[spki.len() - 32..]);
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .expect("signature verifies")
        .claims
}

async fn a_restart_keeps_tenants_keys_identities_and_signing_keys(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let (acme, _) = server.create_tenant("acme", "acme.test").await;
    let created = server
        .default
        .create_identity(json!({"externalId": "dora", "createTokenWithScopes": ["voip"]}))
        .await;
    let id = created.identity_id();
    let before = created.body["accessToken"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let acme_id = acme.new_identity().await;
    verify(&server, &before).await;

    let default_client = server.default.clone();
    let server = server.restart().await;
    // Same keys (the clients were built before the restart), same identities.
    let reply = default_client
        .with_port(server.https_port)
        .get_identity(&id)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["externalId"], "dora");
    assert_eq!(
        acme.with_port(server.https_port)
            .get_identity(&acme_id)
            .await
            .status,
        200
    );

    // The token from before the restart verifies, and new tokens use the same key.
    let claims = verify(&server, &before).await;
    assert_eq!(claims["sub"], id.as_str());
    let after = server
        .default
        .issue_token(&id, json!({"scopes": ["chat"]}))
        .await;
    let after = after.body["token"].as_str().expect("token");
    verify(&server, after).await;
    assert_eq!(jwt_parts(&before).0["kid"], jwt_parts(after).0["kid"]);

    // Idempotent create still finds the identity.
    let again = server
        .default
        .create_identity(json!({"externalId": "dora"}))
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["identity"]["id"], id.as_str());
}
