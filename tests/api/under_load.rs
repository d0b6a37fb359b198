//! Group commit keeps every promise a single transaction per request would keep: a batch that
//! fails fails every request in it and leaves nothing of itself behind, and a revocation or
//! deletion covers every token issued before it, including tokens whose batch was still
//! waiting to commit when it ran.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{AcsClient, Backend, TestServer, jwt_parts};

crate::both_backends!(
    a_failed_batch_fails_every_request_in_it_and_writes_none_of_it,
    writes_waiting_together_fail_together,
    a_revocation_covers_every_token_issued_before_it_even_mid_batch,
    a_deletion_covers_every_token_answered_even_mid_batch,
);

/// Row counts and chain heads that a failed batch must leave as they were.
async fn written_state(server: &TestServer) -> Vec<i64> {
    let mut state = server.snapshot().await;
    for table in [
        "issued_tokens",
        "identities WHERE last_token_issued_at IS NOT NULL",
        "audit_events WHERE operation = 'token.issue'",
    ] {
        state.push(server.count(table).await);
    }
    state
}

/// Makes every insert into `table` fail, from now until `repair_inserts`.
async fn sabotage_inserts(server: &TestServer, backend: Backend, table: &str) {
    let sql = if backend == Backend::Sqlite {
        format!(
            "CREATE TRIGGER sabotage BEFORE INSERT ON {table} \
             BEGIN SELECT RAISE(ABORT, 'sabotaged'); END"
        )
    } else {
        format!(
            "CREATE FUNCTION sabotage() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'sabotaged'; END $$; \
             CREATE TRIGGER sabotage BEFORE INSERT ON {table} \
             FOR EACH ROW EXECUTE FUNCTION sabotage()"
        )
    };
    server.execute(&sql).await;
}

async fn repair_inserts(server: &TestServer, backend: Backend, table: &str) {
    let sql = if backend == Backend::Sqlite {
        "DROP TRIGGER sabotage".to_owned()
    } else {
        format!("DROP TRIGGER sabotage ON {table}; DROP FUNCTION sabotage()")
    };
    server.execute(&sql).await;
}

async fn a_failed_batch_fails_every_request_in_it_and_writes_none_of_it(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(server.default.new_identity().await);
    }
    server.default.token(&ids[0], &["chat"]).await;
    let before = written_state(&server).await;

    // Every audit insert fails from now on: a batch gets as far as its identities and token
    // records, then fails on its events, after the rows that must not survive were written.
    sabotage_inserts(&server, backend, "audit_events").await;
    let issues = (0..120).map(|i| {
        let client = server.default.clone();
        let id = ids[i % ids.len()].clone();
        async move { client.issue_token(&id, json!({"scopes": ["chat"]})).await }
    });
    let creates = (0..40).map(|i| {
        let client = server.default.clone();
        async move {
            let body = if i % 2 == 0 {
                json!({"createTokenWithScopes": ["voip"]})
            } else {
                json!({})
            };
            client.create_identity(body).await
        }
    });
    let (issued, created) = tokio::join!(join_all(issues), join_all(creates));
    for reply in issued.iter().chain(&created) {
        assert_eq!(reply.error(500), "InternalError");
    }
    assert_eq!(
        written_state(&server).await,
        before,
        "a failed batch left rows behind"
    );

    repair_inserts(&server, backend, "audit_events").await;
    server.default.token(&ids[1], &["chat"]).await;
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
}

/// Revocations commit together with the token issues waiting with them: when every
/// revocation fails, a token is issued only if its batch held no revocation, and every answer
/// says what was written.
async fn writes_waiting_together_fail_together(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let issued_to = server.default.new_identity().await;
    let mut revoked = Vec::new();
    for _ in 0..80 {
        revoked.push(server.default.new_identity().await);
    }
    let tokens_before = server.count("issued_tokens").await;
    let marks_before = server
        .count("identities WHERE tokens_revoked_before IS NOT NULL")
        .await;

    // Only revocations append to the identity change log.
    sabotage_inserts(&server, backend, "identity_changes").await;
    // Interleaved, so that revocations and issues wait for the writer together.
    let requests = (0..320).map(|i| {
        let client = server.default.clone();
        let issued_to = issued_to.clone();
        let revoked = revoked[i / 4].clone();
        async move {
            if i % 4 == 0 {
                (false, client.revoke(&revoked).await)
            } else {
                let body = json!({"scopes": ["chat"]});
                (true, client.issue_token(&issued_to, body).await)
            }
        }
    });
    let (issued, revocations): (Vec<_>, Vec<_>) = join_all(requests)
        .await
        .into_iter()
        .partition(|(issue, _)| *issue);
    repair_inserts(&server, backend, "identity_changes").await;

    for (_, reply) in &revocations {
        assert_eq!(reply.error(500), "InternalError");
    }
    let mut answered_issued = 0;
    for (_, reply) in &issued {
        if reply.status != 500 {
            assert_eq!(reply.status, 200, "{}", reply.body);
            answered_issued += 1;
        }
    }
    assert_eq!(
        server
            .count("identities WHERE tokens_revoked_before IS NOT NULL")
            .await,
        marks_before
    );
    assert_eq!(
        server.count("issued_tokens").await,
        tokens_before + answered_issued,
        "tokens recorded and tokens answered 200 differ"
    );
    let (ok, report) = server.audit_verify();
    assert!(ok, "{report}");
}

/// A token answered by the server, when its answer arrived, and the instant its jti says it
/// was issued (milliseconds since the epoch).
struct Answered {
    token: String,
    arrived: SystemTime,
    issued_ms: i64,
}

fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).expect("clock").as_millis() as i64
}

/// Issues `count` tokens for `id` concurrently while `change` runs after `delay`; returns
/// the tokens answered 200 and the instants `change` was sent and answered.
async fn issue_while<F, Fut>(
    client: &AcsClient,
    id: &str,
    count: usize,
    delay: Duration,
    change: F,
) -> (Vec<Answered>, SystemTime, SystemTime)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let issues = (0..count).map(|i| {
        let client = client.clone();
        let id = id.to_owned();
        async move {
            // Spread over the change, so some batches straddle it.
            tokio::time::sleep(Duration::from_micros(200 * i as u64)).await;
            let reply = client.issue_token(&id, json!({"scopes": ["chat"]})).await;
            let arrived = SystemTime::now();
            (reply.status == 200).then(|| {
                let token = reply.body["token"].as_str().expect("token").to_owned();
                let (_, claims) = jwt_parts(&token);
                let jti = Uuid::parse_str(claims["jti"].as_str().expect("jti")).expect("uuid");
                let (seconds, nanos) = jti.get_timestamp().expect("v7").to_unix();
                Answered {
                    token,
                    arrived,
                    issued_ms: seconds as i64 * 1000 + i64::from(nanos / 1_000_000),
                }
            })
        }
    });
    let change = async move {
        tokio::time::sleep(delay).await;
        let sent = SystemTime::now();
        assert_eq!(change().await, 204);
        (sent, SystemTime::now())
    };
    let (answered, (sent, done)) = tokio::join!(join_all(issues), change);
    (answered.into_iter().flatten().collect(), sent, done)
}

async fn a_revocation_covers_every_token_issued_before_it_even_mid_batch(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    let client = server.default.clone();
    let revoke_id = id.clone();
    let (answered, sent, done) = issue_while(
        &server.default,
        &id,
        300,
        Duration::from_millis(25),
        || async move { client.revoke(&revoke_id).await.status.as_u16() },
    )
    .await;
    assert_eq!(server.count("issued_tokens").await, answered.len() as i64);

    let check = |server: &TestServer| {
        let client = server.default.clone();
        let answered = &answered;
        async move {
            let mut straddling = 0;
            for a in answered {
                let active = client.is_active(&a.token).await;
                if a.arrived < sent {
                    assert!(!active, "a token answered before the revocation is active");
                } else if a.issued_ms > millis(done) {
                    assert!(active, "a token issued after the revocation is inactive");
                } else if !active && a.arrived > done {
                    // Issued before the revocation, answered after it: its batch was waiting.
                    straddling += 1;
                }
            }
            straddling
        }
    };
    let straddling = check(&server).await;
    eprintln!(
        "{} tokens answered, {straddling} answered after the revocation and covered by it",
        answered.len()
    );
    // The same answers after a restart: the revocation was durable when it was answered.
    let server = server.restart().await;
    assert_eq!(check(&server).await, straddling);
}

async fn a_deletion_covers_every_token_answered_even_mid_batch(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let id = server.default.new_identity().await;
    let client = server.default.clone();
    let delete_id = id.clone();
    let (answered, _, _) = issue_while(
        &server.default,
        &id,
        300,
        Duration::from_millis(25),
        || async move { client.delete_identity(&delete_id).await.status.as_u16() },
    )
    .await;
    assert!(
        !answered.is_empty(),
        "no token was issued before the deletion"
    );
    assert_eq!(server.count("issued_tokens").await, answered.len() as i64);
    for a in &answered {
        assert!(!server.default.is_active(&a.token).await);
    }
    let server = server.restart().await;
    for a in &answered {
        assert!(!server.default.is_active(&a.token).await);
    }
    assert_eq!(server.default.get_identity(&id).await.status, 404);
}
