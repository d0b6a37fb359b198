//! The verifier against a small stand-in for callsign's two public documents, so the cache can
//! be watched: how often the JWKS is fetched, and what an unknown `kid` does. (The tests of
//! the callsign crate drive this verifier against the real server.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use callsign_verify::{Verifier, VerifyError};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `GET <path>` from a table of JSON bodies and counts the hits per path.
#[derive(Clone, Default)]
struct Documents {
    bodies: Arc<Mutex<HashMap<String, Value>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Documents {
    fn set(&self, path: &str, body: Value) {
        self.bodies.lock().expect("lock").insert(path.into(), body);
    }

    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    async fn serve(self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}/", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let documents = self.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&request);
                    let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                    *documents
                        .hits
                        .lock()
                        .expect("lock")
                        .entry(path.clone())
                        .or_default() += 1;
                    let body = documents.bodies.lock().expect("lock").get(&path).cloned();
                    let response = match body {
                        Some(body) => {
                            let body = body.to_string();
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                 cache-control: public, max-age=300\r\ncontent-length: {}\r\n\
                                 connection: close\r\n\r\n{body}",
                                body.len()
                            )
                        }
                        None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .to_owned(),
                    };
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        base
    }
}

struct Key {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl Key {
    fn generate(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
        Self {
            kid: kid.into(),
            pkcs8: pkcs8.as_ref().to_vec(),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
               "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(&self.public)})
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8)).expect("sign")
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn claims(issuer: &str, scopes: &str) -> Value {
    let now = now();
    json!({"iss": issuer, "sub": "8:acs:t_u", "aud": "callsign:t", "jti": "j",
           "iat": now, "nbf": now, "exp": now + 3600, "scp": scopes,
           "acsScope": scopes.replace(' ', ","), "resourceId": "t"})
}

async fn stand_in(keys: &[&Key]) -> (Documents, String) {
    let documents = Documents::default();
    let base = documents.clone().serve().await;
    documents.set(
        "/.well-known/openid-configuration",
        json!({"issuer": base, "jwks_uri": format!("{base}.well-known/jwks.json")}),
    );
    documents.set(
        "/.well-known/jwks.json",
        json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}),
    );
    (documents, base)
}

#[tokio::test]
async fn keys_are_fetched_once_and_an_unknown_kid_refreshes_them() {
    let first = Key::generate("first");
    let second = Key::generate("second");
    let (documents, issuer) = stand_in(&[&first]).await;
    let verifier = Verifier::builder(&issuer)
        .min_refresh_interval(Duration::ZERO)
        .build()
        .await
        .expect("verifier");
    assert_eq!(documents.hits("/.well-known/openid-configuration"), 1);
    assert_eq!(documents.hits("/.well-known/jwks.json"), 1);

    for _ in 0..3 {
        let claims = verifier
            .verify_with_scopes(&first.sign(&claims(&issuer, "chat voip")), &["chat"])
            .await
            .expect("verifies");
        assert_eq!(claims.scopes, ["chat", "voip"]);
    }
    assert_eq!(
        documents.hits("/.well-known/jwks.json"),
        1,
        "served from cache"
    );

    // A rotation: the second key is published and signs from now on.
    documents.set(
        "/.well-known/jwks.json",
        json!({"keys": [first.jwk(), second.jwk()]}),
    );
    verifier
        .verify(&second.sign(&claims(&issuer, "voip")))
        .await
        .expect("the new key is fetched on first sight");
    assert_eq!(documents.hits("/.well-known/jwks.json"), 2);
    assert_eq!(verifier.cached_key_ids(), ["first", "second"]);

    // A key that is gone from the JWKS stops verifying once the keys are fetched again.
    documents.set("/.well-known/jwks.json", json!({"keys": [second.jwk()]}));
    verifier.refresh().await.expect("refresh");
    assert_eq!(
        verifier.verify(&first.sign(&claims(&issuer, "chat"))).await,
        Err(VerifyError::UnknownKey("first".into()))
    );
}

#[tokio::test]
async fn made_up_kids_cannot_make_it_fetch_more_than_once_per_interval() {
    let known = Key::generate("known");
    let (documents, issuer) = stand_in(&[&known]).await;
    let verifier = Verifier::builder(&issuer)
        .min_refresh_interval(Duration::from_secs(3600))
        .build()
        .await
        .expect("verifier");
    for i in 0..20 {
        let stranger = Key::generate(&format!("made-up-{i}"));
        assert_eq!(
            verifier
                .verify(&stranger.sign(&claims(&issuer, "chat")))
                .await,
            Err(VerifyError::UnknownKey(format!("made-up-{i}")))
        );
    }
    assert_eq!(documents.hits("/.well-known/jwks.json"), 1);
    assert!(
        verifier
            .verify(&known.sign(&claims(&issuer, "chat")))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let key = Key::generate("k");
    let (_documents, issuer) = stand_in(&[&key]).await;
    let verifier = Verifier::builder(&issuer)
        .audience("callsign:t")
        .leeway(Duration::ZERO)
        .min_refresh_interval(Duration::ZERO)
        .build()
        .await
        .expect("verifier");
    let good = key.sign(&claims(&issuer, "chat"));

    // HS256 keyed with the public key, and `none`.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k".into());
    let hs = jsonwebtoken::encode(
        &header,
        &claims(&issuer, "chat"),
        &EncodingKey::from_secret(&key.public),
    )
    .expect("forge");
    assert!(matches!(
        verifier.verify(&hs).await,
        Err(VerifyError::AlgorithmMismatch { .. })
    ));
    let payload = good.split('.').nth(1).expect("payload");
    let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k"}"#);
    assert_eq!(
        verifier.verify(&format!("{none}.{payload}.")).await,
        Err(VerifyError::Malformed)
    );

    // One byte of the payload changed.
    let mut altered = good.clone().into_bytes();
    let at = good.find('.').expect("dot") + 5;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    assert!(matches!(
        verifier
            .verify(&String::from_utf8(altered).expect("utf8"))
            .await,
        Err(VerifyError::InvalidSignature | VerifyError::Malformed)
    ));

    // Expiry, as of a later instant.
    let later = SystemTime::now() + Duration::from_secs(3601);
    assert_eq!(
        verifier.verify_at(&good, later).await,
        Err(VerifyError::Expired)
    );
    // Another issuer, another audience, a missing scope.
    let mut foreign = claims("https://elsewhere/", "chat");
    assert!(matches!(
        verifier.verify(&key.sign(&foreign)).await,
        Err(VerifyError::WrongIssuer(_))
    ));
    foreign["iss"] = issuer.clone().into();
    foreign["aud"] = "callsign:other".into();
    assert_eq!(
        verifier.verify(&key.sign(&foreign)).await,
        Err(VerifyError::WrongAudience)
    );
    assert_eq!(
        verifier.verify_with_scopes(&good, &["voip"]).await,
        Err(VerifyError::MissingScope("voip".into()))
    );
    for garbage in ["", "a.b.c", "not a jwt", &"x".repeat(10_000)] {
        assert!(verifier.verify(garbage).await.is_err());
    }
}

#[tokio::test]
async fn a_discovery_document_for_another_issuer_is_refused() {
    let key = Key::generate("k");
    let (documents, issuer) = stand_in(&[&key]).await;
    documents.set(
        "/.well-known/openid-configuration",
        json!({"issuer": "https://impostor/", "jwks_uri": format!("{issuer}.well-known/jwks.json")}),
    );
    assert!(matches!(
        Verifier::builder(&issuer).build().await,
        Err(VerifyError::Discovery(_))
    ));
}
