//! What downstream services use to check tokens, per tenant (found by `Host` like every route):
//! - `GET /.well-known/jwks.json`: the tenant's published public keys (RFC 7517);
//! - `GET /.well-known/openid-configuration`: where they are and what signs with them;
//! - `POST /oauth2/introspect`: RFC 7662 introspection, authenticated with the tenant's HMAC
//!   keys, which also answers for revocation and deletion.
//!
//! These routes accept `api-version` but do not require it.

use actix_web::http::header::{self, CacheControl, CacheDirective, ContentType, EntityTag};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use jsonwebtoken::jwk::Jwk;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{LimitedOperation, Scope, Timestamp};
use crate::service::directory::Tenant;
use crate::service::verification::ActiveToken;

use super::AppState;
use super::auth::{Authenticated, resolve_tenant};
use super::error::ApiError;

/// How long clients and caches may keep the JWKS and the discovery document. Verifiers refetch
/// the JWKS on an unknown `kid` anyway; a rotation's new key appears at once.
const PUBLIC_MAX_AGE_SECONDS: u32 = 300;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(jwks)
        .service(openid_configuration)
        .service(introspect_token);
}

fn tenant_for(req: &HttpRequest, state: &AppState) -> Result<std::sync::Arc<Tenant>, ApiError> {
    resolve_tenant(req, state)?
        .map(|(_, tenant)| tenant)
        .ok_or_else(|| ApiError::not_found("No tenant serves this host name."))
}

#[derive(Serialize)]
struct JwkSet<'a> {
    keys: Vec<&'a Jwk>,
}

/// The tenant's public signing keys: the one that signs, and any a rotation superseded whose
/// tokens may not have expired yet.
#[get("/.well-known/jwks.json")]
async fn jwks(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_for(&req, &state)?;
    let set = JwkSet {
        keys: tenant
            .published_keys(Timestamp::now())
            .map(|k| &k.jwk)
            .collect(),
    };
    let body = serde_json::to_vec(&set).map_err(|_| ApiError::internal())?;
    Ok(cacheable(&req, body))
}

/// An OpenID-style discovery document. callsign is not an OpenID provider (it has no login
/// flow), but JWT libraries find the issuer, the JWKS and the algorithms here.
#[derive(Serialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
    introspection_endpoint: String,
    introspection_endpoint_auth_methods_supported: [&'static str; 1],
    /// Named as OpenID Connect names it, since that is where libraries look; callsign's access
    /// tokens are signed with these.
    id_token_signing_alg_values_supported: Vec<&'static str>,
    scopes_supported: Vec<&'static str>,
    subject_types_supported: [&'static str; 1],
    claims_supported: [&'static str; 10],
}

#[get("/.well-known/openid-configuration")]
async fn openid_configuration(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_for(&req, &state)?;
    let mut algorithms: Vec<&'static str> = Vec::new();
    for key in tenant.published_keys(Timestamp::now()) {
        let name = key.algorithm.as_str();
        if !algorithms.contains(&name) {
            algorithms.push(name);
        }
    }
    // The endpoint ends with '/'.
    let base = &tenant.endpoint;
    let document = DiscoveryDocument {
        issuer: base.clone(),
        jwks_uri: format!("{base}.well-known/jwks.json"),
        introspection_endpoint: format!("{base}oauth2/introspect"),
        introspection_endpoint_auth_methods_supported: ["hmac-sha256"],
        id_token_signing_alg_values_supported: algorithms,
        scopes_supported: Scope::ALL.iter().map(|s| s.as_str()).collect(),
        subject_types_supported: ["public"],
        claims_supported: [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "nbf",
            "jti",
            "scp",
            "acsScope",
            "resourceId",
        ],
    };
    let body = serde_json::to_vec(&document).map_err(|_| ApiError::internal())?;
    Ok(cacheable(&req, body))
}

/// A JSON answer that clients and shared caches may keep for a while, with an `ETag` so a
/// client that has it already gets a 304.
fn cacheable(req: &HttpRequest, body: Vec<u8>) -> HttpResponse {
    let digest = Sha256::digest(&body);
    let tag = EntityTag::new_strong(
        digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    );
    let cache_control = CacheControl(vec![
        CacheDirective::Public,
        CacheDirective::MaxAge(PUBLIC_MAX_AGE_SECONDS),
    ]);
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|candidate| candidate == "*" || candidate == tag.to_string())
        });
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header(cache_control)
        .insert_header(header::ETag(tag));
    if unchanged {
        response.finish()
    } else {
        response.insert_header(ContentType::json()).body(body)
    }
}

/// RFC 7662 §2.1. Other parameters, `token_type_hint` among them, are ignored: callsign has
/// one kind of token.
#[derive(Deserialize)]
struct IntrospectionRequest {
    token: String,
}

/// RFC 7662 §2.2. An inactive token gets `{"active": false}` and nothing else.
#[derive(Serialize, Default)]
struct IntrospectionResponse {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

impl From<ActiveToken> for IntrospectionResponse {
    fn from(token: ActiveToken) -> Self {
        Self {
            active: true,
            scope: Some(token.scopes.space_joined()),
            sub: Some(token.subject.to_string()),
            exp: Some(token.expires_at),
            iat: Some(token.issued_at),
            nbf: Some(token.not_before),
            jti: Some(token.jti.to_string()),
            iss: Some(token.issuer),
            aud: Some(token.audience),
        }
    }
}

/// The body as RFC 7662 sends it (`application/x-www-form-urlencoded`), or as JSON
/// (`{"token": "…"}`) when the content type says so — or, with no content type, when it
/// looks like a JSON object.
fn parse_introspection_request(
    req: &HttpRequest,
    body: &[u8],
) -> Result<IntrospectionRequest, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    let json = match content_type.as_deref() {
        Some(essence) => essence == "application/json" || essence.ends_with("+json"),
        None => body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
    };
    let invalid = |e: &dyn std::fmt::Display| {
        ApiError::new(
            actix_web::http::StatusCode::BAD_REQUEST,
            "InvalidRequestBody",
            format!("The introspection request must carry a token parameter: {e}."),
        )
    };
    if json {
        serde_json::from_slice(body).map_err(|e| invalid(&e))
    } else {
        serde_urlencoded::from_bytes(body).map_err(|e| invalid(&e))
    }
}

/// Whether a token is active for this tenant, as RFC 7662 answers it. Bad tokens of any kind
/// are `{"active": false}`, never an error; a request that fails authentication is a 401.
#[post("/oauth2/introspect")]
async fn introspect_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    auth.check_limit(&state, LimitedOperation::Introspect)?;
    let request = parse_introspection_request(&req, &auth.body)?;
    let (answer, cache) = state.verified_tokens.introspect(
        &auth.tenant,
        &state.revocations,
        &request.token,
        Timestamp::now(),
    );
    state.metrics.introspection(cache);
    let answer = match answer {
        Ok(token) => IntrospectionResponse::from(token),
        Err(reason) => {
            tracing::debug!(tenant = %auth.tenant.name, reason = reason.as_str(), "inactive token");
            IntrospectionResponse::default()
        }
    };
    // RFC 7662 §4: introspection answers must not be cached.
    Ok(HttpResponse::Ok()
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(answer))
}
