//! `GET /audit/events`: a tenant's audit trail, read with the tenant's own HMAC credentials,
//! in the Azure paging shape `{"value": [...], "nextLink": "..."}`.

use actix_web::{HttpRequest, HttpResponse, get, web};
use serde::Serialize;
use serde_json::Value;

use crate::domain::audit::{ChainedEvent, Operation, Outcome};
use crate::domain::{IdentityId, LimitedOperation, TenantId, Timestamp};
use crate::service::audit::{AuditFilter, hex};

use super::AppState;
use super::auth::Authenticated;
use super::error::ApiError;
use super::query::query_pairs;

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(list_audit_events);
}

pub const DEFAULT_PAGE_SIZE: i64 = 100;
pub const MAX_PAGE_SIZE: i64 = 1000;

/// An audit event as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventBody {
    pub sequence_number: i64,
    pub time: String,
    pub tenant_id: String,
    pub actor: String,
    pub operation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub details: Value,
    pub hash: String,
}

impl From<ChainedEvent> for AuditEventBody {
    fn from(e: ChainedEvent) -> Self {
        Self {
            sequence_number: e.seq,
            time: e.occurred_at.to_rfc3339(),
            tenant_id: e.tenant.to_string(),
            actor: e.actor,
            operation: e.operation,
            identity: e
                .identity
                .map(|local| IdentityId::from_parts(e.tenant, local).to_string()),
            outcome: e.outcome,
            client_request_id: e.origin.client_request_id,
            request_id: e.origin.request_id,
            source_address: e.origin.source_address,
            user_agent: e.origin.user_agent,
            details: serde_json::from_str(&e.details).unwrap_or(Value::String(e.details)),
            hash: hex(&e.hash),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    value: Vec<AuditEventBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
}

/// The parsed query of a request.
struct AuditRequest {
    filter: AuditFilter,
    page_size: i64,
    continuation: Option<String>,
}

fn parse_time(name: &str, value: &str) -> Result<Timestamp, ApiError> {
    let parsed = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            ApiError::validation(format!(
                "'{name}' must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z."
            ))
        })?;
    Ok(Timestamp::from_millis(
        (parsed.unix_timestamp_nanos() / 1_000_000) as i64,
    ))
}

fn parse_request(query: &str) -> Result<AuditRequest, ApiError> {
    let mut request = AuditRequest {
        filter: AuditFilter::default(),
        page_size: DEFAULT_PAGE_SIZE,
        continuation: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in query_pairs(query) {
        if seen.contains(&name) {
            return Err(ApiError::validation(format!(
                "The parameter '{name}' is given more than once."
            )));
        }
        seen.push(name.clone());
        let f = &mut request.filter;
        match name.as_str() {
            "api-version" => {}
            "identity" => f.identity = Some(IdentityId::parse(&value)?),
            "operation" => f.operation = Some(Operation::parse(&value)?),
            "outcome" => f.outcome = Some(Outcome::parse(&value)?),
            "from" => f.from = Some(parse_time("from", &value)?),
            "to" => f.to = Some(parse_time("to", &value)?),
            "order" => {
                f.descending = match value.as_str() {
                    "asc" => false,
                    "desc" => true,
                    _ => return Err(ApiError::validation("'order' must be 'asc' or 'desc'.")),
                }
            }
            "maxPageSize" => {
                request.page_size = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                    .ok_or_else(|| {
                        ApiError::validation(format!(
                            "'maxPageSize' must be an integer from 1 to {MAX_PAGE_SIZE}."
                        ))
                    })?
            }
            "continuationToken" => request.continuation = Some(value),
            other => {
                return Err(ApiError::validation(format!(
                    "Unknown parameter '{}'; the filters are identity, operation, outcome, from, to, order, maxPageSize and continuationToken.",
                    other.chars().take(40).collect::<String>()
                )));
            }
        }
    }
    Ok(request)
}

/// The link to the next page: the same query with the continuation token replaced.
fn next_link(req: &HttpRequest, tenant_endpoint_host: &str, token: &str) -> String {
    let kept: Vec<&str> = req
        .query_string()
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("continuationToken="))
        .collect();
    let mut query = kept.join("&");
    if !query.is_empty() {
        query.push('&');
    }
    query.push_str("continuationToken=");
    query.push_str(
        &percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    );
    let scheme = req.connection_info().scheme().to_owned();
    format!("{scheme}://{tenant_endpoint_host}{}?{query}", req.path())
}

/// List a tenant's audit events, oldest first unless `order=desc`.
#[get("/audit/events")]
async fn list_audit_events(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    auth.check_limit(&state, LimitedOperation::AuditQuery)?;
    let request = parse_request(req.query_string())?;
    let tenant: TenantId = auth.tenant.id;
    let page = state
        .audit
        .query(
            tenant,
            &request.filter,
            request.page_size,
            request.continuation.as_deref(),
            Timestamp::now(),
        )
        .await?;
    let host = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok(HttpResponse::Ok().json(Page {
        value: page.events.into_iter().map(AuditEventBody::from).collect(),
        next_link: page
            .continuation
            .map(|token| next_link(&req, &host, &token)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_bad_ones_are_refused() {
        let ok = parse_request("operation=token.issue&outcome=success&order=desc&maxPageSize=5&from=2026-01-01T00:00:00Z")
            .expect("valid");
        assert_eq!(ok.filter.operation, Some(Operation::TokenIssue));
        assert!(ok.filter.descending);
        assert_eq!(ok.page_size, 5);
        for bad in [
            "operation=token.steal",
            "outcome=maybe",
            "order=up",
            "maxPageSize=0",
            "maxPageSize=1001",
            "maxPageSize=x",
            "from=yesterday",
            "identity=nobody",
            "colour=blue",
            "order=asc&order=desc",
        ] {
            assert!(parse_request(bad).is_err(), "{bad} was accepted");
        }
    }
}
