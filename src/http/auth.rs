//! Tenant resolution and HMAC-SHA256 request authentication, as the ACS SDKs sign requests:
//!
//! ```text
//! Authorization: HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=<b64>
//! string to sign: VERB \n path-and-query \n <x-ms-date>;<host>;<x-ms-content-sha256>
//! ```
//!
//! The path and query are taken exactly as they arrived (still percent-encoded); the body is
//! read (bounded) and its hash checked before the signature, which is compared in constant
//! time against both of the tenant's keys.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpRequest, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use sha2::{Digest, Sha256};

use crate::domain::audit::Actor;
use crate::domain::{Hostname, KeySlot, LimitedOperation, Timestamp};
use crate::service::audit::Caller;
use crate::service::directory::Tenant;
use crate::service::throttle::Throttled;

use super::AppState;
use super::error::ApiError;

const SIGNED_HEADERS: &str = "x-ms-date;host;x-ms-content-sha256";

/// A request whose tenant is known and whose HMAC signature verified, with its body and who
/// sent it (for the audit trail). It holds one of the tenant's in-flight places until the
/// handler is done with it.
pub struct Authenticated {
    pub tenant: Arc<Tenant>,
    pub caller: Caller,
    pub body: Bytes,
    _in_flight: tokio::sync::OwnedSemaphorePermit,
}

impl Authenticated {
    /// Counts the request against the tenant's rate limit for `op`; 429 when it is used up.
    pub fn check_limit(&self, state: &AppState, op: LimitedOperation) -> Result<(), ApiError> {
        self.tenant
            .throttle
            .check(op)
            .map_err(|refused| throttled(state, &refused))
    }
}

/// The 429 of a throttled request, counted in the metrics.
pub(super) fn throttled(state: &AppState, refused: &Throttled) -> ApiError {
    let seconds = refused.retry_after_seconds();
    match refused {
        Throttled::RateLimited(op, limit, _) => {
            state.metrics.throttled(op.as_str());
            ApiError::throttled(
                seconds,
                format!("The rate limit of {op} ({limit}) is used up; retry after {seconds} s."),
            )
        }
        Throttled::TooManyInFlight(max) => {
            state.metrics.throttled("in_flight");
            ApiError::throttled(
                seconds,
                format!("More than {max} requests of this tenant are in progress; retry shortly."),
            )
        }
    }
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(ApiError::internal)?
                .clone();
            let (host, tenant) = resolve_tenant(&req, &state)?
                .ok_or_else(|| ApiError::unauthenticated("No tenant serves this host name."))?;
            let origin = super::origin::of(&req);
            let body = read_body(&req, &mut payload, state.limits.max_body_bytes).await?;
            let now = SystemTime::now();
            match verify(&req, &host, &tenant, &body, state.limits.clock_skew, now) {
                Ok(key) => {
                    let in_flight = tenant
                        .throttle
                        .admit()
                        .map_err(|refused| throttled(&state, &refused))?;
                    Ok(Authenticated {
                        tenant,
                        caller: Caller {
                            actor: Actor::AccessKey(key),
                            origin,
                        },
                        body,
                        _in_flight: in_flight,
                    })
                }
                Err(error) => {
                    // The tenant's trail shows the refused attempt; nothing else is written.
                    state.metrics.auth_failure("acs");
                    state
                        .failures
                        .record(tenant.id, error.message(), origin, Timestamp::now());
                    Err(error)
                }
            }
        })
    }
}

/// The host the request addressed (with port, as a client signs it) and the tenant that
/// serves it, if any. A missing or malformed `Host` is a 400.
pub(super) fn resolve_tenant(
    req: &HttpRequest,
    state: &AppState,
) -> Result<Option<(String, Arc<Tenant>)>, ApiError> {
    let host = request_host(req)
        .ok_or_else(|| ApiError::validation("The request has no valid Host header."))?;
    let hostname = Hostname::from_host_header(&host).ok_or_else(|| {
        ApiError::validation("The request's Host header is not a valid host name.")
    })?;
    Ok(state.directory.resolve(&hostname).map(|t| (host, t)))
}

/// The host the client addressed, with port, as it signed it: the `Host` header (HTTP/1.1)
/// or the URI authority (HTTP/2).
fn request_host(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
}

pub(super) async fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::too_large(limit));
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::validation("The request body could not be read."))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn header_str<'a>(req: &'a HttpRequest, name: &str) -> Result<&'a str, ApiError> {
    req.headers()
        .get(name)
        .ok_or_else(|| ApiError::unauthenticated(format!("The {name} header is missing.")))?
        .to_str()
        .map_err(|_| ApiError::unauthenticated(format!("The {name} header is not valid text.")))
}

fn verify(
    req: &HttpRequest,
    host: &str,
    tenant: &Tenant,
    body: &[u8],
    clock_skew: Duration,
    now: SystemTime,
) -> Result<KeySlot, ApiError> {
    let authorization = header_str(req, "authorization")?;
    if authorization
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer "))
    {
        return Err(ApiError::unauthenticated(
            "A bearer credential is not accepted here: operator credentials are for the admin API (/admin); this API takes a request signed with one of the tenant's access keys (HMAC-SHA256).",
        ));
    }
    let (signed_headers, signature) = parse_authorization(authorization)?;
    if !signed_headers.eq_ignore_ascii_case(SIGNED_HEADERS) {
        return Err(ApiError::unauthenticated(format!(
            "SignedHeaders must be {SIGNED_HEADERS}."
        )));
    }

    let date = header_str(req, "x-ms-date")?;
    let signed_at = httpdate::parse_http_date(date)
        .map_err(|_| ApiError::unauthenticated("x-ms-date is not an RFC 1123 date."))?;
    let skew = now
        .duration_since(signed_at)
        .unwrap_or_else(|e| e.duration());
    if skew > clock_skew {
        return Err(ApiError::unauthenticated(format!(
            "x-ms-date is more than {} seconds away from the server's clock.",
            clock_skew.as_secs()
        )));
    }

    let content_hash = header_str(req, "x-ms-content-sha256")?;
    let actual_hash = STANDARD.encode(Sha256::digest(body));
    if content_hash != actual_hash {
        return Err(ApiError::unauthenticated(
            "x-ms-content-sha256 does not match the request body.",
        ));
    }

    let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let string_to_sign = format!(
        "{}\n{}\n{};{};{}",
        req.method().as_str(),
        path_and_query,
        date,
        host,
        content_hash
    );
    let signature = STANDARD
        .decode(signature)
        .map_err(|_| ApiError::unauthenticated("The signature is not valid base64."))?;
    tenant
        .verify_hmac(string_to_sign.as_bytes(), &signature)
        .ok_or_else(|| ApiError::unauthenticated("The request signature is invalid."))
}

/// Splits `HMAC-SHA256 SignedHeaders=…&Signature=…` into its two values.
fn parse_authorization(value: &str) -> Result<(&str, &str), ApiError> {
    let malformed = || {
        ApiError::unauthenticated(
            "The Authorization header must be 'HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=<base64>'.",
        )
    };
    let params = value.strip_prefix("HMAC-SHA256 ").ok_or_else(malformed)?;
    let mut signed_headers = None;
    let mut signature = None;
    for pair in params.trim().split('&') {
        match pair.split_once('=') {
            Some(("SignedHeaders", v)) if signed_headers.is_none() => signed_headers = Some(v),
            Some(("Signature", v)) if signature.is_none() => signature = Some(v),
            _ => return Err(malformed()),
        }
    }
    match (signed_headers, signature) {
        (Some(h), Some(s)) if !s.is_empty() => Ok((h, s)),
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_header_parsing() {
        let ok = "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=abc=";
        assert_eq!(parse_authorization(ok).ok(), Some((SIGNED_HEADERS, "abc=")));
        for bad in [
            "",
            "Bearer x",
            "HMAC-SHA256 Signature=abc",
            "HMAC-SHA256 SignedHeaders=a&Signature=",
            "HMAC-SHA256 SignedHeaders=a&Signature=b&Signature=c",
            "HMAC-SHA256 SignedHeaders=a&Other=b",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
