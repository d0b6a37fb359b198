//! `callsign bench`: the load generator against a real server, and the seeder.

use std::time::Duration;

use callsign::bench::{self, ConnectionString, Operation, Plan};
use serde_json::Value;

use crate::helpers::{Backend, TestServer, encode};

crate::both_backends!(
    a_short_run_measures_every_operation_without_errors,
    half_load_runs_open_loop_at_half_the_rate_reached,
    a_chosen_rate_is_held_open_loop_instead_of_full_load,
    the_cli_reports_json_over_plain_http,
    seeding_loads_identities_and_tokens_the_server_serves,
    an_unreachable_server_is_reported_with_the_address_and_the_cause,
);

fn default_connection_string(server: &TestServer) -> String {
    std::fs::read_to_string(server.db.data_dir.join("default-connection-string.txt"))
        .expect("default connection string")
}

/// A small run of every operation against `server`'s default tenant over HTTPS.
fn plan_for(server: &TestServer, connections: usize) -> Plan {
    let connection =
        ConnectionString::parse(&default_connection_string(server)).expect("connection string");
    Plan {
        endpoint: connection.endpoint,
        access_key: connection.access_key,
        connect_to: None,
        ca_cert: server.db.data_dir.join("tls/cert.pem"),
        connections,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(100),
        operations: Operation::ALL.to_vec(),
        timeout: Duration::from_secs(30),
        pool_identities: 20,
        max_prepared: 500,
        threads: 1,
        half_load: false,
        rate: None,
        verbose: false,
    }
}

async fn a_short_run_measures_every_operation_without_errors(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    server.lift_rate_limits().await;
    let plan = Plan {
        // Long enough that even a slow write on a busy machine completes within the window.
        duration: Duration::from_secs(1),
        ..plan_for(&server, 4)
    };
    let report = bench::run(&plan).await.expect("the run completes");
    let table = report.table();
    assert_eq!(report.error_count(), 0, "{table}");
    assert!(report.ceiling.requests_per_second > 0.0, "{table}");
    assert_eq!(report.operations.len(), Operation::ALL.len(), "{table}");
    for op in &report.operations {
        if op.available {
            assert!(
                op.requests > 0,
                "{} measured nothing: {table}",
                op.operation
            );
            assert!(op.ratio_to_ceiling.is_some_and(|r| r > 0.0), "{table}");
            let latency = op.latency_ms.expect("latency");
            assert!(
                latency.p50 <= latency.p99 && latency.p99 <= latency.max,
                "{table}"
            );
        } else {
            // Only routes built after the ACS API may be missing.
            assert!(
                ["introspect-distinct", "introspect-repeated", "audit-query"]
                    .contains(&op.operation.as_str()),
                "{} unavailable: {table}",
                op.operation
            );
            assert!(table.contains("not available on this server"), "{table}");
        }
    }
    // What the run wrote is really there: the identities it deleted are tombstones.
    assert!(
        server
            .count("identities WHERE deleted_at IS NOT NULL")
            .await
            >= report.operations[8].requests as i64
    );
}

async fn half_load_runs_open_loop_at_half_the_rate_reached(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    server.lift_rate_limits().await;
    let plan = Plan {
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(200),
        operations: vec![Operation::GetIdentity],
        half_load: true,
        ..plan_for(&server, 8)
    };
    let report = bench::run(&plan).await.expect("the run completes");
    let table = report.table();
    assert_eq!(report.error_count(), 0, "{table}");
    let [full, half] = report.operations.as_slice() else {
        panic!("expected a full and a half-load row: {table}");
    };
    assert_eq!(full.operation, "get-identity", "{table}");
    let target = full.requests_per_second / 2.0;
    assert_eq!(
        half.operation,
        format!("get-identity @ {target:.0}/s"),
        "{table}"
    );
    // The schedule, not the server, sets the pace: close to the target, whatever the
    // server could do (a slow moment may make it lag a little behind).
    let achieved = half.requests_per_second / target;
    assert!(
        (0.6..=1.1).contains(&achieved),
        "{achieved:.2} of the target rate: {table}"
    );
}

async fn a_chosen_rate_is_held_open_loop_instead_of_full_load(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    server.lift_rate_limits().await;
    let plan = Plan {
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(200),
        operations: vec![Operation::IssueToken, Operation::GetIdentity],
        rate: Some(150.0),
        ..plan_for(&server, 8)
    };
    let report = bench::run(&plan).await.expect("the run completes");
    let table = report.table();
    assert_eq!(report.error_count(), 0, "{table}");
    let names: Vec<&str> = report
        .operations
        .iter()
        .map(|o| o.operation.as_str())
        .collect();
    assert_eq!(
        names,
        ["issue-token @ 150/s", "get-identity @ 150/s"],
        "{table}"
    );
    for op in &report.operations {
        // Far below what the server can do, so the schedule sets the pace.
        let achieved = op.requests_per_second / 150.0;
        assert!(
            (0.8..=1.1).contains(&achieved),
            "{achieved:.2} of the chosen rate: {table}"
        );
    }
}

async fn the_cli_reports_json_over_plain_http(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    server.lift_rate_limits().await;
    let output = server.db.data_dir.join("bench.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callsign"))
        .args([
            "bench",
            "--endpoint",
            &format!("http://127.0.0.1:{}/", server.http_port),
            "--connections",
            "3",
            "--duration",
            "1s",
            "--warmup",
            "100ms",
            "--pool-identities",
            "10",
            "--operations",
            "issue-token,get-identity,audit-query",
            "--json",
            "--output",
        ])
        .arg(&output)
        .env(
            "CALLSIGN_BENCH_CONNECTION_STRING",
            default_connection_string(&server),
        )
        .env("CALLSIGN_DATA_DIR", &server.db.data_dir)
        .output()
        .expect("run callsign bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let written: Value =
        serde_json::from_slice(&std::fs::read(&output).expect("--output file")).expect("JSON");
    assert_eq!(printed, written);
    assert_eq!(
        printed["settings"]["endpoint"],
        format!("http://127.0.0.1:{}/", server.http_port)
    );
    assert!(printed["ceiling"]["requestsPerSecond"].as_f64() > Some(0.0));
    let ops = printed["operations"].as_array().expect("operations");
    let names: Vec<&str> = ops.iter().filter_map(|o| o["operation"].as_str()).collect();
    assert_eq!(names, ["issue-token", "get-identity", "audit-query"]);
    for op in &ops[..2] {
        assert!(op["requestsPerSecond"].as_f64() > Some(0.0), "{op}");
        assert_eq!(op["errors"], serde_json::json!({}), "{op}");
    }
}

async fn seeding_loads_identities_and_tokens_the_server_serves(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    server.lift_rate_limits().await;
    // More tokens than one repository call takes, and identities that are not a multiple of
    // one SQLite statement's rows.
    let out = server.cli(&[
        "bench",
        "--seed",
        "--identities",
        "1234",
        "--tokens",
        "60001",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("seeded 1234 identities and 60001"));
    assert_eq!(server.count("identities").await, 1234);
    assert_eq!(server.count("issued_tokens").await, 60001);
    assert_eq!(
        server
            .count("identities WHERE last_token_issued_at IS NOT NULL AND external_id IS NOT NULL")
            .await,
        1234
    );
    assert_eq!(
        server
            .count(
                "issued_tokens t WHERE NOT EXISTS (SELECT 1 FROM identities i \
                 WHERE i.tenant_id = t.tenant_id AND i.identity_id = t.identity_id)"
            )
            .await,
        0
    );

    // A seeded identity is one the API serves, with the time of its newest seeded token.
    let fresh = server.default.new_identity().await;
    let tenant = fresh
        .strip_prefix("8:acs:")
        .and_then(|rest| rest.split_once('_'))
        .expect("id form")
        .0
        .to_owned();
    let seeded = first_seeded_identity(&server).await;
    let id = format!("8:acs:{tenant}_{seeded}");
    let reply = server.default.get_identity(&id).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body["externalId"]
            .as_str()
            .is_some_and(|e| e.starts_with("bench-0-")),
        "{}",
        reply.body
    );
    assert!(
        reply.body["lastTokenIssuedAt"].is_string(),
        "{}",
        reply.body
    );
    let issued = server
        .default
        .issue_token(&id, serde_json::json!({"scopes": ["chat"]}))
        .await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    assert!(encode(&id).contains("%3A"));

    // Seeding needs identities for its tokens.
    let out = server.cli(&["bench", "--seed", "--tokens", "5"]);
    assert!(!out.status.success());
}

/// The oldest seeded identity's UUID (seeded ones are created months in the past).
async fn an_unreachable_server_is_reported_with_the_address_and_the_cause(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let target = format!("127.0.0.1:{port}");
    let plan = Plan {
        connect_to: Some(target.clone()),
        ..plan_for(&server, 2)
    };
    let error = format!(
        "{:#}",
        bench::run(&plan).await.expect_err("nothing listens")
    );
    assert!(
        error.contains(&format!("cannot connect to {target} (HTTPS)")),
        "{error}"
    );
    assert!(error.to_lowercase().contains("refused"), "{error}");
}

async fn first_seeded_identity(server: &TestServer) -> uuid::Uuid {
    use sqlx::Connection as _;
    let sql = "SELECT identity_id FROM identities WHERE external_id LIKE 'bench-%' \
               ORDER BY created_at LIMIT 1";
    if server.db.url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&server.db.url)
            .await
            .expect("sqlite");
        sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .expect("a seeded identity")
    } else {
        let mut conn = sqlx::PgConnection::connect(&server.db.url)
            .await
            .expect("pg");
        sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .expect("a seeded identity")
    }
}
