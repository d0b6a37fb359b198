//! `GET /openapi.json`: the OpenAPI 3 document of everything this server serves.
//!
//! The document is checked in (`src/http/openapi.json`) rather than generated from
//! annotations: the ACS routes must match Microsoft's published specification word for word,
//! which is easier to review as a document than as attributes spread over handlers. A test
//! (`tests/api/openapi.rs`) keeps it honest: every route a handler declares must be in it,
//! and every operation in it must reach a handler on a running server.

use actix_web::{HttpResponse, get, web};

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(openapi);
}

/// The document, as built into the binary.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The OpenAPI document of this server's API.
#[get("/openapi.json")]
async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT)
}
