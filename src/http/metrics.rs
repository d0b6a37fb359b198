//! `GET /metrics` (Prometheus text format) and the middleware that counts and times every
//! request. It takes no credentials: it shows aggregate counts only, labelled by route
//! pattern, never by tenant, identity or credential.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, get, web};

use super::AppState;
use super::error::ApiError;

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(metrics);
}

/// Counts and times a request under its route pattern (`/identities/{id}`), or `unmatched`
/// for paths no route serves, so raw paths never become labels.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = req.method().as_str().to_owned();
    let result = next.call(req).await;
    if let Some(state) = state {
        let (route, status) = match &result {
            Ok(response) => (
                response
                    .request()
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".to_owned()),
                response.status().as_u16(),
            ),
            Err(error) => (
                "unmatched".to_owned(),
                error.as_response_error().status_code().as_u16(),
            ),
        };
        state
            .metrics
            .observe_request(&route, &method, status, started.elapsed().as_secs_f64());
    }
    result
}

/// The server's metrics in the Prometheus text exposition format.
#[get("/metrics")]
async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text = state
        .metrics
        .render(
            state.repo.pool_stats(),
            state.directory.tenants().len(),
            state.operators.active_count(),
        )
        .map_err(|error| {
            tracing::error!(error = %format!("{error:#}"), "metrics could not be rendered");
            ApiError::internal()
        })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
