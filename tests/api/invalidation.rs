//! Revocations and deletions made elsewhere — by another server instance on the same database,
//! or written straight to the database by another process — reach a running server's
//! introspection within a second, and survive restarts.

use std::time::{Duration, Instant};

use callsign::domain::{IdentityId, Timestamp};
use reqwest::StatusCode;

use crate::helpers::{AcsClient, Backend, TestServer};

crate::both_backends!(
    a_revoke_or_delete_on_another_instance_reaches_introspection_within_a_second,
    a_change_written_by_another_process_reaches_introspection_within_a_second,
    a_server_that_fell_behind_the_pruned_change_log_reloads_the_watermarks,
    revocations_survive_a_restart_without_the_change_log,
);

/// Polls introspection until `token` is inactive; fails unless that happens within a second
/// of `since`. Returns how long it took.
async fn inactive_within_a_second(client: &AcsClient, token: &str, since: Instant) -> Duration {
    loop {
        if !client.is_active(token).await {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "the token is still active a second after it was revoked elsewhere"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_revoke_or_delete_on_another_instance_reaches_introspection_within_a_second(
    backend: Backend,
) {
    let server = TestServer::spawn(backend).await;
    let peer = server.spawn_peer().await;
    let revoked = server.default.new_identity().await;
    let deleted = server.default.new_identity().await;
    let bystander = server.default.new_identity().await;
    let revoked_token = server.default.token(&revoked, &["chat"]).await;
    let deleted_token = server.default.token(&deleted, &["chat"]).await;
    let bystander_token = server.default.token(&bystander, &["chat"]).await;
    for token in [&revoked_token, &deleted_token, &bystander_token] {
        assert!(server.default.is_active(token).await);
        assert!(peer.default.is_active(token).await, "the peer verifies it");
    }

    assert_eq!(
        peer.default.revoke(&revoked).await.status,
        StatusCode::NO_CONTENT
    );
    let since = Instant::now();
    // The peer knew at once; the first instance within a second.
    assert!(!peer.default.is_active(&revoked_token).await);
    let took = inactive_within_a_second(&server.default, &revoked_token, since).await;
    eprintln!("revoke seen by the other instance after {took:?}");

    assert_eq!(
        peer.default.delete_identity(&deleted).await.status,
        StatusCode::NO_CONTENT
    );
    let since = Instant::now();
    assert!(!peer.default.is_active(&deleted_token).await);
    let took = inactive_within_a_second(&server.default, &deleted_token, since).await;
    eprintln!("delete seen by the other instance after {took:?}");

    // And the other way round: a revoke on the first instance reaches the peer.
    assert_eq!(
        server.default.revoke(&bystander).await.status,
        StatusCode::NO_CONTENT
    );
    inactive_within_a_second(&peer.default, &bystander_token, Instant::now()).await;
    peer.stop().await;
}

async fn a_change_written_by_another_process_reaches_introspection_within_a_second(
    backend: Backend,
) {
    let server = TestServer::spawn(backend).await;
    let revoked = server.default.new_identity().await;
    let deleted = server.default.new_identity().await;
    let revoked_token = server.default.token(&revoked, &["voip"]).await;
    let deleted_token = server.default.token(&deleted, &["voip"]).await;

    // Its own pool, as the CLI or another program opens the database: the server learns of
    // these writes only from the change log.
    let (repo, _) = server.open_store().await;
    let mark = repo
        .revoke_tokens(
            IdentityId::parse(&revoked).expect("id"),
            Timestamp::now(),
            &crate::helpers::cli_event(&revoked, callsign::domain::audit::Operation::TokenRevoke),
        )
        .await
        .expect("revoke")
        .expect("live identity");
    assert!(!mark.deleted);
    let took = inactive_within_a_second(&server.default, &revoked_token, Instant::now()).await;
    eprintln!("revoke written by another process seen after {took:?}");

    let mark = repo
        .delete_identity(
            IdentityId::parse(&deleted).expect("id"),
            Timestamp::now(),
            &crate::helpers::cli_event(
                &deleted,
                callsign::domain::audit::Operation::IdentityDelete,
            ),
        )
        .await
        .expect("delete")
        .expect("live identity");
    assert!(mark.deleted);
    let took = inactive_within_a_second(&server.default, &deleted_token, Instant::now()).await;
    eprintln!("delete written by another process seen after {took:?}");
    assert_eq!(server.count("identity_changes").await, 2);
    repo.close().await;
}

async fn a_server_that_fell_behind_the_pruned_change_log_reloads_the_watermarks(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    let token = server.default.token(&id, &["chat"]).await;
    // As if many changes were written and pruned while the server was not looking: the next
    // change it sees does not follow the last one it applied.
    server
        .execute("UPDATE identity_change_head SET seq = seq + 500000 WHERE id = 1")
        .await;
    let (repo, _) = server.open_store().await;
    repo.revoke_tokens(
        IdentityId::parse(&id).expect("id"),
        Timestamp::now(),
        &crate::helpers::cli_event(&id, callsign::domain::audit::Operation::TokenRevoke),
    )
    .await
    .expect("revoke")
    .expect("live identity");
    repo.close().await;
    inactive_within_a_second(&server.default, &token, Instant::now()).await;
    // It carries on from the head: later changes apply normally.
    let other = server.default.new_identity().await;
    let other_token = server.default.token(&other, &["chat"]).await;
    let (repo, _) = server.open_store().await;
    repo.delete_identity(
        IdentityId::parse(&other).expect("id"),
        Timestamp::now(),
        &crate::helpers::cli_event(&other, callsign::domain::audit::Operation::IdentityDelete),
    )
    .await
    .expect("delete")
    .expect("live identity");
    repo.close().await;
    inactive_within_a_second(&server.default, &other_token, Instant::now()).await;
}

async fn revocations_survive_a_restart_without_the_change_log(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let revoked = server.default.new_identity().await;
    let deleted = server.default.new_identity().await;
    let live = server.default.new_identity().await;
    let revoked_token = server.default.token(&revoked, &["chat"]).await;
    let deleted_token = server.default.token(&deleted, &["chat"]).await;
    let live_token = server.default.token(&live, &["chat"]).await;
    assert_eq!(
        server.default.revoke(&revoked).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.default.delete_identity(&deleted).await.status,
        StatusCode::NO_CONTENT
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let after = server.default.token(&revoked, &["chat"]).await;

    // A restart loads the watermarks from the identities themselves.
    let client = server.default.clone();
    let db = server.stop().await;
    let server = TestServer::start(db).await;
    server.execute("DELETE FROM identity_changes").await;
    let client = client.with_port(server.https_port);
    assert!(!client.is_active(&revoked_token).await);
    assert!(!client.is_active(&deleted_token).await);
    assert!(client.is_active(&live_token).await);
    assert!(client.is_active(&after).await);
}
