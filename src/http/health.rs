//! Liveness and readiness probes. They take no credentials and reveal nothing about tenants.

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use super::AppState;

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(healthz).service(readyz);
}

/// The process is up and answering.
#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers (migrations ran before the server started listening).
#[get("/readyz")]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.repo.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(json!({"status": "database unavailable"}))
        }
    }
}
