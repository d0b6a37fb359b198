//! The release binary as an operator runs it: `callsign serve` with JSON logs, driven over
//! HTTPS, stopped with SIGTERM. Every log line is a JSON object, no access key, operator
//! credential or token appears in any of them (at debug level for callsign), and SIGTERM
//! lets the requests in flight finish: every token answered 200 is in the database with its
//! audit event, and the process exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{AcsClient, Backend, TestDatabase};

crate::both_backends!(json_logs_hold_no_secret_and_sigterm_finishes_what_is_in_flight);

async fn json_logs_hold_no_secret_and_sigterm_finishes_what_is_in_flight(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let binary = env!("CARGO_BIN_EXE_callsign");
    let env = [
        ("CALLSIGN_DATA_DIR", db.data_dir.display().to_string()),
        ("CALLSIGN_DATABASE_URL", db.url.clone()),
        ("CALLSIGN_HTTPS_ADDR", "127.0.0.1:0".to_owned()),
        ("CALLSIGN_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("CALLSIGN_LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "info,callsign=debug".to_owned()),
    ];
    let mut child = Command::new(binary)
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start callsign");
    let (lines, mut received) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = lines.send(line);
        }
    });
    let mut log = Vec::new();
    let https_port = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .expect("callsign starts within 30 s")
            .expect("callsign exited before it listened");
        let parsed: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        log.push(line);
        if parsed["fields"]["message"] == "callsign is listening" {
            break parsed["fields"]["https_port"].as_u64().expect("https_port") as u16;
        }
    };

    let connection = std::fs::read_to_string(db.data_dir.join("default-connection-string.txt"))
        .expect("connection string");
    let key = connection
        .trim()
        .split("accesskey=")
        .nth(1)
        .expect("accesskey")
        .to_owned();
    let client = AcsClient::new(&db, "127.0.0.1", https_port, &key);
    let credential_out = Command::new(binary)
        .args(["admin", "credential", "create", "--name", "ops", "--json"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("credential create");
    assert!(credential_out.status.success());
    let credential: Value = serde_json::from_slice(&credential_out.stdout).expect("json");
    let credential = credential["credential"]
        .as_str()
        .expect("credential")
        .to_owned();

    // Successes and failures of every kind a log might be tempted to echo.
    let mut secrets = vec![key.clone(), credential.clone()];
    let created = client
        .create_identity(json!({"createTokenWithScopes": ["chat"]}))
        .await;
    assert_eq!(created.status, 201);
    let id = created.identity_id();
    secrets.push(
        created.body["accessToken"]["token"]
            .as_str()
            .expect("token")
            .to_owned(),
    );
    let token = client.token(&id, &["voip"]).await;
    assert!(client.is_active(&token).await);
    assert!(!client.is_active(&format!("{token}x")).await);
    secrets.push(token);
    let wrong = client.with_key(b"not the key, but as long as one might be");
    assert_eq!(wrong.get_identity(&id).await.status, 401);
    let admin = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    for bearer in [credential.as_str(), "cs_wrong_credential"] {
        let _ = admin
            .get(format!("https://127.0.0.1:{https_port}/admin/tenants"))
            .bearer_auth(bearer)
            .send()
            .await
            .expect("admin request");
    }

    // SIGTERM while token issues are in flight.
    let issued_before = db.count("issued_tokens").await;
    let issues = (0..60).map(|_| {
        let client = client.clone();
        let id = id.clone();
        async move {
            client
                .try_send(crate::helpers::Request::new(
                    reqwest::Method::POST,
                    &format!(
                        "/identities/{}/:issueAccessToken?{}",
                        crate::helpers::encode(&id),
                        crate::helpers::API
                    ),
                    &json!({"scopes": ["chat"]}),
                ))
                .await
                .map(|reply| reply.status.as_u16())
        }
    });
    let pid = child.id().to_string();
    let terminate = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    let (replies, ()) = tokio::join!(join_all(issues), terminate);
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(exit.success(), "callsign exited with {exit} after SIGTERM");
    let answered = replies.iter().filter(|r| matches!(r, Ok(200))).count() as i64;
    for reply in &replies {
        // Answered, or refused at the door once the listener closed; never a 5xx.
        assert!(matches!(reply, Ok(200) | Err(_)), "{reply:?}");
    }
    assert!(answered > 0, "SIGTERM came before any issue was answered");
    assert_eq!(db.count("issued_tokens").await - issued_before, answered);
    assert_eq!(
        db.count("audit_events WHERE operation = 'token.issue'")
            .await,
        db.count("issued_tokens").await
    );

    reader.join().expect("reader");
    while let Ok(line) = received.try_recv() {
        log.push(line);
    }
    assert!(
        log.iter().any(|l| l.contains("callsign stopped")),
        "no clean stop in the log"
    );
    for line in &log {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(parsed["level"].is_string(), "{line}");
        for secret in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "a secret in the log: {line}"
            );
            // Nor a recognisable piece of one (a token's signature, say).
            let tail = &secret[secret.len() - 24..];
            assert!(!line.contains(tail), "part of a secret in the log: {line}");
        }
    }
}
