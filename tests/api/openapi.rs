//! `/openapi.json` against the routes that exist.
//!
//! The routes a handler declares are read from the source: every handler in `src/http/` is
//! registered through an actix route attribute (`#[get("/path")]`, `#[post(…)]`, …), which is
//! the one place a route is written. This test reads those attributes and checks both ways:
//! every declared route is documented, and every documented operation is declared. Then it
//! asks a running server: every documented operation reaches a handler (anything but the
//! default service's "No such route."), and the served document is the checked-in one.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{API, Backend, TestServer};

crate::both_backends!(every_documented_operation_reaches_a_handler);

/// (METHOD, path with every `{parameter}` written `{}`).
type Route = (String, String);

fn normalized(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_parameter = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_parameter = true;
                out.push_str("{}");
            }
            '}' => in_parameter = false,
            c if !in_parameter => out.push(c),
            _ => {}
        }
    }
    out
}

/// The routes declared by route attributes in `src/http/*.rs`.
fn declared_routes() -> BTreeSet<Route> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("src/http") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("source");
        for line in source.lines() {
            let line = line.trim();
            for method in ["get", "post", "put", "patch", "delete", "head", "options"] {
                if let Some(rest) = line.strip_prefix(&format!("#[{method}(\"")) {
                    let route = rest.split('"').next().expect("quoted path");
                    routes.insert((method.to_uppercase(), normalized(route)));
                }
            }
        }
    }
    routes
}

fn document() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("openapi.json")).expect("json")
}

fn documented_routes(document: &Value) -> BTreeSet<Route> {
    let mut routes = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if method != "parameters" {
                routes.insert((method.to_uppercase(), normalized(path)));
            }
        }
    }
    routes
}

#[test]
fn the_document_and_the_declared_routes_are_the_same_set() {
    let declared = declared_routes();
    assert!(
        declared.len() >= 15,
        "too few route attributes found: {declared:?}"
    );
    let documented = documented_routes(&document());
    let undocumented: Vec<_> = declared.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&declared).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "openapi.json documents routes no handler declares: {unserved:?}"
    );
}

#[test]
fn every_reference_in_the_document_resolves() {
    let document = document();
    let mut stack = vec![&document];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    let pointer = reference.strip_prefix('#').expect("local reference");
                    assert!(
                        document.pointer(pointer).is_some(),
                        "{reference} does not resolve"
                    );
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
}

async fn every_documented_operation_reaches_a_handler(backend: Backend) {
    let server = TestServer::spawn(backend).await;
    let served = server
        .default
        .public_get("/openapi.json", None)
        .await
        .body
        .clone();
    assert_eq!(
        served,
        document(),
        "the served document is not the checked-in one"
    );

    // Unsigned requests: a handler answers them (401, 400, 404 of its own, …); only a path
    // and method no route matches reach the default service.
    let http = server.default.http();
    let probe = |method: Method, path: String| {
        let http = http.clone();
        let url = format!("https://{}{path}?{API}", server.default.authority());
        async move {
            let response = http
                .request(method, url)
                .send()
                .await
                .expect("request sent");
            let body: Value = serde_json::from_slice(&response.bytes().await.expect("body"))
                .unwrap_or(Value::Null);
            body["error"]["message"].as_str().map(str::to_owned)
        }
    };
    // What a path no route matches gets, so the check below can tell.
    assert_eq!(
        probe(Method::GET, "/no/such/route".into()).await.as_deref(),
        Some("No such route.")
    );
    for (method, path) in documented_routes(&document()) {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        assert_ne!(
            probe(method.clone(), path.replace("{}", "unknown"))
                .await
                .as_deref(),
            Some("No such route."),
            "{method} {path} is documented but reaches no handler"
        );
    }
}
