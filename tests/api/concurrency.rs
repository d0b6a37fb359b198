//! Concurrent requests through the group-commit path.

use std::collections::HashSet;

use futures_util::future::join_all;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{Backend, TestServer, jwt_parts};

crate::both_backends!(
    concurrent_creates_with_one_external_id_make_one_identity,
    concurrent_token_issues_are_all_answered_and_all_recorded,
    a_delete_racing_token_issues_leaves_no_answered_token_unrecorded,
    marks_in_one_batch_have_the_outcomes_they_would_have_one_at_a_time,
    creates_for_a_tenant_gone_before_their_batch_fail_alone,
    writes_of_every_kind_in_one_batch_have_the_outcomes_they_would_have_one_at_a_time,
    the_change_log_keeps_the_newest_entries_as_batches_push_out_the_oldest,
    two_instances_and_the_cli_writing_one_tenant_keep_one_gapless_chain,
    two_instances_and_the_cli_writing_two_tenants_keep_gapless_chains,
    two_instances_issuing_and_revoking_crosswise_never_deadlock,
    two_instances_creating_one_set_of_external_ids_crosswise_never_deadlock,
);

async fn concurrent_token_issues_are_all_answered_and_all_recorded(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(server.default.new_identity().await);
    }
    let requests = (0..200).map(|i| {
        let client = server.default.clone();
        let id = ids[i % ids.len()].clone();
        async move { client.issue_token(&id, json!({"scopes": ["chat"]})).await }
    });
    let replies = join_all(requests).await;
    let mut jtis = HashSet::new();
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.body);
        let (_, claims) = jwt_parts(reply.body["token"].as_str().expect("token"));
        jtis.insert(claims["jti"].as_str().expect("jti").to_owned());
    }
    assert_eq!(jtis.len(), 200, "every token has its own jti");
    assert_eq!(server.count("issued_tokens").await, 200);
    // Each record committed with its audit event, in one gapless chain.
    assert_eq!(
        server
            .count("audit_events WHERE operation = 'token.issue'")
            .await,
        200
    );
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
    assert_eq!(
        server
            .count("identities WHERE last_token_issued_at IS NOT NULL")
            .await,
        4
    );
}

async fn a_delete_racing_token_issues_leaves_no_answered_token_unrecorded(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    let issues = (0..100).map(|_| {
        let client = server.default.clone();
        let id = id.clone();
        async move {
            client
                .issue_token(&id, json!({"scopes": ["voip"]}))
                .await
                .status
                .as_u16()
        }
    });
    let delete = {
        let client = server.default.clone();
        let id = id.clone();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            client.delete_identity(&id).await.status.as_u16()
        }
    };
    let (statuses, deleted) = tokio::join!(join_all(issues), delete);
    assert_eq!(deleted, 204);
    let answered = statuses.iter().filter(|s| **s == 200).count() as i64;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 404),
        "{statuses:?}"
    );
    assert_eq!(
        server.count("issued_tokens").await,
        answered,
        "an answered token has no record, or the reverse"
    );
    assert_eq!(
        server
            .default
            .issue_token(&id, json!({"scopes": ["voip"]}))
            .await
            .status,
        404
    );
}

/// Writes of two instances and of the CLI to one tenant's chain interleave: each batch must
/// link its events to the head as it is when the batch takes it, not as its instance last
/// left it, or the chain forks.
async fn two_instances_and_the_cli_writing_one_tenant_keep_one_gapless_chain(backend: Backend) {
    instances_and_the_cli_keep_gapless_chains(backend, &[]).await;
}

/// As above, with batches that hold the events of two tenants: each chain stays gapless, and
/// neither instance waits on the other forever for heads taken in two orders.
async fn two_instances_and_the_cli_writing_two_tenants_keep_gapless_chains(backend: Backend) {
    instances_and_the_cli_keep_gapless_chains(backend, &["acme"]).await;
}

/// Two instances issue tokens for the default tenant and `others` at once, while the CLI
/// updates each of those tenants, for a few rounds; then every request was answered 200,
/// every token and its event recorded, and every chain verifies.
async fn instances_and_the_cli_keep_gapless_chains(backend: Backend, others: &[&str]) {
    let server = TestServer::spawn(backend).await;
    let mut tenants = vec![("default".to_owned(), server.default.clone())];
    for name in others {
        let (client, _) = server.create_tenant(name, &format!("{name}.test")).await;
        tenants.push((name.to_string(), client));
    }
    let peer = server.spawn_peer().await;
    let mut writers = Vec::new();
    for (name, here) in tenants {
        let there = here.with_port(peer.https_port);
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(here.new_identity().await);
        }
        // Both instances have written to the chain before the rounds start.
        there.token(&ids[0], &["chat"]).await;
        writers.push((name, [here, there], ids));
    }
    let rounds = 6;
    let per_round = 60;
    for round in 0..rounds {
        // Alternating instances, and tenants in turn within each instance's requests.
        let requests = (0..per_round).map(|i| {
            let (_, clients, ids) = &writers[(i / 2) % writers.len()];
            let client = clients[i % 2].clone();
            let id = ids[(i / (2 * writers.len())) % ids.len()].clone();
            async move { client.issue_token(&id, json!({"scopes": ["chat"]})).await }
        });
        let limit = format!("get_identity={}/30s", 1000 + round);
        let cli = async {
            tokio::task::block_in_place(|| {
                writers
                    .iter()
                    .map(|(name, _, _)| {
                        server.cli(&["tenant", "update", "--tenant", name, "--limit", &limit])
                    })
                    .collect::<Vec<_>>()
            })
        };
        let (replies, outs) = tokio::join!(join_all(requests), cli);
        for out in outs {
            assert!(out.status.success(), "{out:?}");
        }
        for reply in &replies {
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
    }
    let issued = (writers.len() + rounds * per_round) as i64;
    assert_eq!(server.count("issued_tokens").await, issued);
    assert_eq!(
        server
            .count("audit_events WHERE operation = 'token.issue'")
            .await,
        issued
    );
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
    peer.stop().await;
}

/// A batch that issues tokens and revokes locks identity rows in two statements. Two
/// instances each issuing for the identities the other revokes would, taking those locks in
/// the order of their statements, wait on each other until the database aborts one of them
/// (a 500 for every request of its batch); every batch locks its identities at once, in
/// one order, instead.
async fn two_instances_issuing_and_revoking_crosswise_never_deadlock(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let peer = server.spawn_peer().await;
    let here = server.default.clone();
    let there = peer.default.clone();
    let mut ids = Vec::new();
    for _ in 0..16 {
        ids.push(here.new_identity().await);
    }
    let (first, second) = ids.split_at(8);
    let rounds = 8;
    for _ in 0..rounds {
        let mut requests = Vec::new();
        for (client, issued, revoked) in [(&here, first, second), (&there, second, first)] {
            for id in issued {
                let (client, id) = (client.clone(), id.clone());
                requests.push(tokio::spawn(async move {
                    client.issue_token(&id, json!({"scopes": ["chat"]})).await
                }));
            }
            for id in revoked {
                let (client, id) = (client.clone(), id.clone());
                requests.push(tokio::spawn(async move { client.revoke(&id).await }));
            }
        }
        for reply in join_all(requests).await {
            let reply = reply.expect("request task");
            assert!(
                reply.status == 200 || reply.status == 204,
                "{} {}",
                reply.status,
                reply.body
            );
        }
    }
    let issued = (rounds * ids.len()) as i64;
    assert_eq!(server.count("issued_tokens").await, issued);
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
    peer.stop().await;
}

/// Two instances creating the same external ids wait on each other's uncommitted entries
/// of the unique index; inserted in the order each batch happened to collect them, one
/// instance ascending and the other descending would wait on each other until the database
/// aborted one batch. Each external id still makes exactly one identity.
async fn two_instances_creating_one_set_of_external_ids_crosswise_never_deadlock(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let peer = server.spawn_peer().await;
    let rounds = 6;
    let per_round = 16;
    for round in 0..rounds {
        let external: Vec<String> = (0..per_round).map(|i| format!("r{round}-{i:02}")).collect();
        let mut requests = Vec::new();
        for (client, ascending) in [(&server.default, true), (&peer.default, false)] {
            let mut order = external.clone();
            if !ascending {
                order.reverse();
            }
            for external_id in order {
                let client = client.clone();
                requests.push(tokio::spawn(async move {
                    let reply = client
                        .create_identity(json!({"externalId": external_id}))
                        .await;
                    (external_id, reply)
                }));
            }
        }
        let mut made: std::collections::HashMap<String, HashSet<String>> = Default::default();
        let mut created = 0;
        for joined in join_all(requests).await {
            let (external_id, reply) = joined.expect("request task");
            assert!(
                reply.status == 201 || reply.status == 200,
                "{} {}",
                reply.status,
                reply.body
            );
            created += usize::from(reply.status == 201);
            made.entry(external_id)
                .or_default()
                .insert(reply.identity_id());
        }
        assert_eq!(created, per_round, "one 201 per external id");
        assert!(made.values().all(|ids| ids.len() == 1), "{made:?}");
    }
    assert_eq!(
        server.count("identities").await,
        (rounds * per_round) as i64
    );
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
    peer.stop().await;
}

async fn concurrent_creates_with_one_external_id_make_one_identity(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    // Concurrent creates land in the same group-committed batch as often as not.
    let creates = (0..50).map(|i| {
        let client = server.default.clone();
        let body = if i % 2 == 0 {
            json!({"externalId": "grace"})
        } else {
            json!({"externalId": "grace", "createTokenWithScopes": ["chat"]})
        };
        async move { client.create_identity(body).await }
    });
    let replies = join_all(creates).await;
    let ids: HashSet<String> = replies.iter().map(|r| r.identity_id()).collect();
    assert_eq!(ids.len(), 1, "one external id, one identity");
    let created = replies.iter().filter(|r| r.status == 201).count();
    assert_eq!(created, 1, "exactly one 201, the rest 200");
    assert!(replies.iter().all(|r| r.status == 201 || r.status == 200));
    // Every token asked for was issued for that identity and recorded with its event.
    let tokens = replies
        .iter()
        .filter(|r| r.body.get("accessToken").is_some())
        .count() as i64;
    assert_eq!(tokens, 25);
    assert_eq!(server.count("identities").await, 1);
    assert_eq!(server.count("issued_tokens").await, tokens);
    assert_eq!(
        server
            .count("audit_events WHERE operation = 'identity.create'")
            .await,
        1
    );
    assert_eq!(
        server
            .count("audit_events WHERE operation = 'token.issue'")
            .await,
        tokens
    );
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
}

/// A batch's revocations and deletions are written by one statement when no identity is marked
/// twice, and one after the other when one is; either way each mark gets the outcome it would
/// have had alone, in the batch's order, and the change log and the trail follow that order.
/// On PostgreSQL a batch of live identities only is also the whole transaction in that one
/// statement (`MARK_AT_ONCE`), and one with an identity not live goes the general way.
async fn marks_in_one_batch_have_the_outcomes_they_would_have_one_at_a_time(backend: Backend) {
    use callsign::domain::{IdentityId, Timestamp};
    use callsign::store::BatchOutcome;

    let server = TestServer::spawn(backend).await;
    let revoked = server.default.new_identity().await;
    let deleted = server.default.new_identity().await;
    let twice = server.default.new_identity().await;
    let live_deleted = server.default.new_identity().await;
    let live_revoked = server.default.new_identity().await;
    let unknown = IdentityId::generate(IdentityId::parse(&revoked).expect("id").tenant());
    let (repo, _) = server.open_store().await;
    let watermark = |outcome: &BatchOutcome| match outcome {
        BatchOutcome::Marked(Some(mark)) => {
            Some((mark.tokens_revoked_before.millis(), mark.deleted))
        }
        BatchOutcome::Marked(None) => None,
        other => panic!("not a mark: {other:?}"),
    };
    let now = Timestamp::now().millis();

    // Distinct live identities: the batch at once.
    let outcomes = repo
        .commit_batch(&[
            mark(&live_deleted, now, true),
            mark(&live_revoked, now - 1, false),
        ])
        .await
        .expect("batch");
    let got: Vec<_> = outcomes.iter().map(watermark).collect();
    assert_eq!(got, [Some((now, true)), Some((now - 1, false))]);
    let logged = repo.identity_changes_after(0, 10).await.expect("changes");
    let logged: Vec<_> = logged
        .iter()
        .map(|c| (c.seq, c.mark.identity.to_string(), c.mark.deleted))
        .collect();
    assert_eq!(
        logged,
        [
            (1, live_deleted.clone(), true),
            (2, live_revoked.clone(), false)
        ],
        "change log entries numbered in the batch's order"
    );

    // Distinct identities, one of them unknown: one statement.
    let outcomes = repo
        .commit_batch(&[
            mark(&revoked, now, false),
            mark(&deleted, now, true),
            mark(&unknown.to_string(), now, false),
        ])
        .await
        .expect("batch");
    let got: Vec<_> = outcomes.iter().map(watermark).collect();
    assert_eq!(got, [Some((now, false)), Some((now, true)), None]);

    // A watermark never moves back, and a deleted identity is not marked again.
    let outcomes = repo
        .commit_batch(&[
            mark(&revoked, now - 60_000, false),
            mark(&deleted, now + 1, false),
        ])
        .await
        .expect("batch");
    let got: Vec<_> = outcomes.iter().map(watermark).collect();
    assert_eq!(got, [Some((now, false)), None]);

    // One identity three times: revoke, delete, then a revoke that finds it gone.
    let outcomes = repo
        .commit_batch(&[
            mark(&twice, now, false),
            mark(&twice, now + 5, true),
            mark(&twice, now + 10, false),
        ])
        .await
        .expect("batch");
    let got: Vec<_> = outcomes.iter().map(watermark).collect();
    assert_eq!(got, [Some((now, false)), Some((now + 5, true)), None]);
    repo.close().await;

    // Seven marks took effect: seven change-log entries, the deleted identities gone.
    assert_eq!(server.count("identity_changes").await, 7);
    assert_eq!(server.default.get_identity(&live_deleted).await.status, 404);
    assert_eq!(server.default.get_identity(&live_revoked).await.status, 200);
    assert_eq!(server.default.get_identity(&deleted).await.status, 404);
    assert_eq!(server.default.get_identity(&twice).await.status, 404);
    assert_eq!(server.default.get_identity(&revoked).await.status, 200);
    let (intact, report) = server.audit_verify();
    assert!(intact, "{report}");
}

/// A batch may hold creates for a tenant another instance deleted after they were admitted:
/// those are answered `TenantDeleted` with nothing written, and the rest of the batch (creates
/// with the same external id in a live tenant among them) is written as if they were not there.
async fn creates_for_a_tenant_gone_before_their_batch_fail_alone(backend: Backend) {
    use callsign::domain::audit::Operation;
    use callsign::domain::{IdentityId, TenantId, Timestamp};
    use callsign::store::{
        BatchOp, BatchOutcome, CreateIdentity, InsertIdentityOutcome, NewIdentity,
    };

    let server = TestServer::spawn(backend).await;
    let live = IdentityId::parse(&server.default.new_identity().await)
        .expect("id")
        .tenant();
    let gone = TenantId::generate();
    let (repo, _) = server.open_store().await;
    let create = |tenant: TenantId, external_id: Option<&str>| {
        let id = IdentityId::generate(tenant);
        BatchOp::CreateIdentity(CreateIdentity {
            identity: NewIdentity {
                id,
                external_id: external_id.map(str::to_owned),
                created_at: Timestamp::now(),
            },
            token: None,
            events: vec![crate::helpers::cli_event(
                &id.to_string(),
                Operation::IdentityCreate,
            )],
        })
    };
    let outcomes = repo
        .commit_batch(&[
            create(gone, Some("alice")),
            create(live, Some("alice")),
            create(gone, None),
            create(live, None),
        ])
        .await
        .expect("batch");
    repo.close().await;
    let got: Vec<_> = outcomes
        .iter()
        .map(|outcome| match outcome {
            BatchOutcome::Created(created) => created.clone(),
            other => panic!("not a create: {other:?}"),
        })
        .collect();
    use InsertIdentityOutcome::{Inserted, TenantDeleted};
    assert_eq!(got, [TenantDeleted, Inserted, TenantDeleted, Inserted]);
    // The default tenant's first identity and the two of this batch; the trail holds their
    // events only, and is intact.
    assert_eq!(server.count("identities").await, 3);
    assert_eq!(
        server
            .count("audit_events WHERE operation = 'identity.create'")
            .await,
        3
    );
    let (intact, report) = server.audit_verify();
    assert!(intact, "{report}");
}

/// New identities, token issues, revocations and deletions in one batch (on PostgreSQL one
/// statement when every write in it can be written, the general way when one cannot or an
/// identity is both issued for and revoked) answer each as it would alone.
async fn writes_of_every_kind_in_one_batch_have_the_outcomes_they_would_have_one_at_a_time(
    backend: Backend,
) {
    use callsign::domain::audit::Operation;
    use callsign::domain::{IdentityId, TenantId, Timestamp};
    use callsign::store::{
        BatchOp, BatchOutcome, CreateIdentity, InsertIdentityOutcome, NewIdentity, RevocationMark,
        TokenIssue, TokenRecord,
    };

    let server = TestServer::spawn(backend).await;
    let live = server.default.new_identity().await;
    let deleted = server.default.new_identity().await;
    server.default.delete_identity(&deleted).await;
    let revoked = server.default.new_identity().await;
    let doomed = server.default.new_identity().await;
    let tenant = IdentityId::parse(&live).expect("id").tenant();
    let (repo, _) = server.open_store().await;
    let now = Timestamp::now().millis();
    let record = |id: IdentityId, at: i64| TokenRecord {
        jti: Uuid::now_v7(),
        identity: id,
        scopes: "chat".to_owned(),
        issued_at: Timestamp::from_millis(at),
        expires_at: Timestamp::from_millis(at + 3_600_000),
    };
    let issue = |id: &str, at: i64| {
        BatchOp::IssueToken(TokenIssue {
            record: record(IdentityId::parse(id).expect("id"), at),
            event: crate::helpers::cli_event(id, Operation::TokenIssue),
        })
    };
    let create = |tenant: TenantId, external_id: Option<&str>, token_at: Option<i64>| {
        let id = IdentityId::generate(tenant);
        let mut events = vec![crate::helpers::cli_event(
            &id.to_string(),
            Operation::IdentityCreate,
        )];
        if token_at.is_some() {
            events.push(crate::helpers::cli_event(
                &id.to_string(),
                Operation::TokenIssue,
            ));
        }
        BatchOp::CreateIdentity(CreateIdentity {
            identity: NewIdentity {
                id,
                external_id: external_id.map(str::to_owned),
                created_at: Timestamp::from_millis(now),
            },
            token: token_at.map(|at| record(id, at)),
            events,
        })
    };
    let marked = |id: &str, at: i64, deleted: bool| {
        BatchOutcome::Marked(Some(RevocationMark {
            identity: IdentityId::parse(id).expect("id"),
            tokens_revoked_before: Timestamp::from_millis(at),
            deleted,
        }))
    };
    use BatchOutcome::{Created, Issued, Marked};
    use InsertIdentityOutcome::Inserted;

    // Every write can be written.
    let outcomes = repo
        .commit_batch(&[
            create(tenant, None, Some(now)),
            issue(&live, now + 1),
            create(tenant, Some("carol"), None),
            issue(&live, now + 2),
        ])
        .await
        .expect("batch");
    assert_eq!(
        outcomes,
        [
            Created(Inserted),
            Issued(true),
            Created(Inserted),
            Issued(true)
        ]
    );
    assert_eq!(server.count("issued_tokens").await, 3);
    let found = repo
        .find_identity(IdentityId::parse(&live).expect("id"))
        .await
        .expect("read")
        .expect("live");
    assert_eq!(
        found.last_token_issued_at.map(|t| t.millis()),
        Some(now + 2)
    );

    // An external id taken, a deleted identity: each answered as alone, the rest written.
    let outcomes = repo
        .commit_batch(&[
            create(tenant, Some("carol"), Some(now)),
            issue(&deleted, now + 3),
            issue(&live, now + 4),
            create(tenant, None, None),
        ])
        .await
        .expect("batch");
    assert!(
        matches!(
            &outcomes[0],
            Created(InsertIdentityOutcome::ExternalIdTaken(existing))
                if existing.external_id.as_deref() == Some("carol")
        ),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[1..],
        [Issued(false), Issued(true), Created(Inserted)]
    );
    assert_eq!(server.count("issued_tokens").await, 4);
    // The four identities of the API, the two of the first batch and the last one.
    assert_eq!(server.count("identities").await, 7);

    // Revocations and deletions beside the rest, all writable.
    let changes_before = server.count("identity_changes").await;
    let outcomes = repo
        .commit_batch(&[
            create(tenant, None, Some(now)),
            mark(&revoked, now + 5, false),
            issue(&live, now + 6),
            mark(&doomed, now + 7, true),
        ])
        .await
        .expect("batch");
    assert_eq!(
        outcomes,
        [
            Created(Inserted),
            marked(&revoked, now + 5, false),
            Issued(true),
            marked(&doomed, now + 7, true)
        ]
    );
    // A revocation of an identity no longer live, beside writable ones: answered as alone.
    let outcomes = repo
        .commit_batch(&[
            mark(&deleted, now + 8, false),
            issue(&live, now + 9),
            create(tenant, None, None),
        ])
        .await
        .expect("batch");
    assert_eq!(outcomes, [Marked(None), Issued(true), Created(Inserted)]);
    // A token issued for an identity revoked in the same batch: written in the batch's order.
    let outcomes = repo
        .commit_batch(&[issue(&revoked, now + 10), mark(&revoked, now + 11, false)])
        .await
        .expect("batch");
    repo.close().await;
    assert_eq!(outcomes, [Issued(true), marked(&revoked, now + 11, false)]);

    assert_eq!(server.count("issued_tokens").await, 8);
    assert_eq!(server.count("identities").await, 9);
    assert_eq!(
        server
            .count("identities WHERE deleted_at IS NOT NULL")
            .await,
        2
    );
    assert_eq!(server.count("identity_changes").await, changes_before + 3);
    assert_eq!(
        server
            .count("audit_events WHERE operation = 'token.issue'")
            .await,
        8
    );
    assert_eq!(
        server
            .count("audit_events WHERE operation IN ('token.revoke', 'identity.delete')")
            .await,
        4
    );
    let (intact, report) = server.audit_verify();
    assert!(intact, "{report}");
}

/// The identity change log keeps its newest `IDENTITY_CHANGES_KEPT` entries: each batch drops
/// the ones it pushes out of that window, however the batches fall across its edge.
async fn the_change_log_keeps_the_newest_entries_as_batches_push_out_the_oldest(backend: Backend) {
    use callsign::domain::audit::Operation;
    use callsign::domain::{IdentityId, Timestamp};
    use callsign::store::{BatchOp, IDENTITY_CHANGES_KEPT, IdentityRecord, MarkIdentity};

    let server = TestServer::spawn(backend).await;
    let first = server.default.new_identity().await;
    let tenant = IdentityId::parse(&first).expect("id").tenant();
    let (repo, _) = server.open_store().await;
    let kept = usize::try_from(IDENTITY_CHANGES_KEPT).expect("size");
    let now = Timestamp::now();
    let identities: Vec<IdentityRecord> = (0..kept + 1500)
        .map(|_| IdentityRecord {
            id: IdentityId::generate(tenant),
            external_id: None,
            created_at: now,
            last_token_issued_at: None,
            tokens_revoked_before: None,
        })
        .collect();
    repo.bulk_insert_identities(&identities)
        .await
        .expect("bulk insert");
    // Batches of 7,000 straddle the window's edge: the last one pushes out 1,500 entries.
    for chunk in identities.chunks(7_000) {
        let ops: Vec<BatchOp> = chunk
            .iter()
            .map(|identity| {
                BatchOp::MarkIdentity(MarkIdentity {
                    id: identity.id,
                    at: now,
                    delete: false,
                    event: crate::helpers::cli_event(
                        &identity.id.to_string(),
                        Operation::TokenRevoke,
                    ),
                })
            })
            .collect();
        repo.commit_batch(&ops).await.expect("batch");
    }
    let oldest = repo.identity_changes_after(0, 1).await.expect("changes");
    repo.close().await;

    assert_eq!(
        server.count("identity_changes").await,
        IDENTITY_CHANGES_KEPT
    );
    assert_eq!(oldest.len(), 1);
    assert_eq!(
        oldest[0].seq, 1501,
        "the oldest entry kept follows the 1,500 pushed out"
    );
}

/// A revocation (or, with `delete`, a deletion) of `id` at `at` as the group commit gets it.
fn mark(id: &str, at: i64, delete: bool) -> callsign::store::BatchOp {
    use callsign::domain::audit::Operation;
    let operation = if delete {
        Operation::IdentityDelete
    } else {
        Operation::TokenRevoke
    };
    callsign::store::BatchOp::MarkIdentity(callsign::store::MarkIdentity {
        id: callsign::domain::IdentityId::parse(id).expect("id"),
        at: callsign::domain::Timestamp::from_millis(at),
        delete,
        event: crate::helpers::cli_event(id, operation),
    })
}
