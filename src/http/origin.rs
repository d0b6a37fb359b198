//! Where a request came from, attached to every request before any handler runs: a server
//! request id, the client's `x-ms-client-request-id` (echoed back, as ACS does), the peer
//! address and the user agent. All of it is bounded, because it ends up in the audit trail.

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, USER_AGENT};
use actix_web::middleware::Next;

use crate::domain::audit::RequestOrigin;

pub const CLIENT_REQUEST_ID: &str = "x-ms-client-request-id";
pub const REQUEST_ID: &str = "x-ms-request-id";

const MAX_CLIENT_REQUEST_ID: usize = 256;
const MAX_USER_AGENT: usize = 512;

pub async fn attach(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let origin = origin_of(&req);
    req.extensions_mut().insert(origin.clone());
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    for (name, value) in [
        (CLIENT_REQUEST_ID, &origin.client_request_id),
        (REQUEST_ID, &origin.request_id),
    ] {
        if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    Ok(response)
}

fn origin_of(req: &ServiceRequest) -> RequestOrigin {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    // A client request id that is not short, visible ASCII is ignored rather than stored.
    let client_request_id = header(CLIENT_REQUEST_ID)
        .filter(|v| {
            !v.is_empty()
                && v.len() <= MAX_CLIENT_REQUEST_ID
                && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned);
    let user_agent = header(USER_AGENT.as_str()).map(|ua| {
        ua.chars()
            .filter(|c| !c.is_control())
            .take(MAX_USER_AGENT)
            .collect::<String>()
    });
    RequestOrigin {
        client_request_id,
        request_id: Some(uuid::Uuid::new_v4().to_string()),
        source_address: req.peer_addr().map(|a| a.ip().to_string()),
        user_agent,
    }
}

/// The origin the middleware attached (an empty one if it did not run).
pub fn of(req: &actix_web::HttpRequest) -> RequestOrigin {
    req.extensions()
        .get::<RequestOrigin>()
        .cloned()
        .unwrap_or_default()
}
