//! The ACS Identity API: `/identities` and its actions.
//! Reference: Azure/azure-rest-api-specs, specification/communication/data-plane/Identity
//! (stable/2023-10-01/CommunicationIdentity.json and the other stable versions).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::domain::{ExpiryMinutes, ExternalId, IdentityId, LimitedOperation, ScopeSet, Timestamp};
use crate::service::identities::TokenRequest;
use crate::service::tokens::IssuedToken;

use super::AppState;
use super::api_version::RequiredApiVersion;
use super::auth::Authenticated;
use super::error::ApiError;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(create_identity)
        .service(get_identity)
        .service(delete_identity)
        .service(revoke_access_tokens)
        .service(issue_access_token);
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateIdentityRequest {
    create_token_with_scopes: Option<Vec<String>>,
    expires_in_minutes: Option<i64>,
    /// `customId` is what later ACS versions call the same thing.
    #[serde(alias = "customId")]
    external_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IssueTokenRequest {
    scopes: Vec<String>,
    expires_in_minutes: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccessTokenBody {
    token: String,
    expires_on: String,
}

impl From<IssuedToken> for AccessTokenBody {
    fn from(token: IssuedToken) -> Self {
        Self {
            token: token.token,
            expires_on: token.expires_on.to_rfc3339(),
        }
    }
}

#[derive(Serialize)]
struct IdentityBody {
    id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateIdentityResponse {
    identity: IdentityBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<AccessTokenBody>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GetIdentityResponse {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_token_issued_at: Option<String>,
}

/// Parses a JSON body; an empty body reads as `{}` where the operation allows it.
fn parse_json<T: DeserializeOwned>(body: &[u8], empty_as_object: bool) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) && empty_as_object {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestBody",
            format!("The request body is not valid: {e}."),
        )
    })
}

/// The `{id}` path segment, percent-decoded (the SDKs encode the `:` of `8:acs:`).
fn identity_id(req: &HttpRequest) -> Result<IdentityId, ApiError> {
    let raw = req.match_info().get("id").unwrap_or_default();
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::validation("The identity id is not valid UTF-8."))?;
    Ok(IdentityId::parse(&decoded)?)
}

/// Create an identity, optionally with an access token.
#[post("/identities")]
async fn create_identity(
    state: web::Data<AppState>,
    auth: Authenticated,
    _version: RequiredApiVersion,
) -> Result<HttpResponse, ApiError> {
    auth.check_limit(&state, LimitedOperation::CreateIdentity)?;
    let request: CreateIdentityRequest = parse_json(&auth.body, true)?;
    let expiry = ExpiryMinutes::parse(request.expires_in_minutes)?;
    let token = match request.create_token_with_scopes {
        Some(scopes) if !scopes.is_empty() => Some(TokenRequest {
            scopes: ScopeSet::parse(&scopes)?,
            expiry,
        }),
        _ => None,
    };
    let external_id = request.external_id.map(ExternalId::parse).transpose()?;
    if token.is_some() {
        // A token issued with an identity counts against issuing as well.
        auth.check_limit(&state, LimitedOperation::IssueToken)?;
    }

    let created = state
        .identities
        .create(
            &auth.tenant,
            &auth.caller,
            external_id,
            token,
            Timestamp::now(),
        )
        .await?;
    if created.token.is_some() {
        state.metrics.token_issued();
    }
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(CreateIdentityResponse {
        identity: IdentityBody {
            id: created.id.to_string(),
        },
        access_token: created.token.map(AccessTokenBody::from),
    }))
}

/// Read an identity.
#[get("/identities/{id}")]
async fn get_identity(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: Authenticated,
    _version: RequiredApiVersion,
) -> Result<HttpResponse, ApiError> {
    auth.check_limit(&state, LimitedOperation::GetIdentity)?;
    let id = identity_id(&req)?;
    let identity = state.identities.get(&auth.tenant, id).await?;
    Ok(HttpResponse::Ok().json(GetIdentityResponse {
        id: identity.id.to_string(),
        external_id: identity.external_id,
        last_token_issued_at: identity.last_token_issued_at.map(Timestamp::to_rfc3339),
    }))
}

/// Delete an identity: its tokens stop verifying and its personal data is removed.
#[delete("/identities/{id}")]
async fn delete_identity(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: Authenticated,
    _version: RequiredApiVersion,
) -> Result<HttpResponse, ApiError> {
    auth.check_limit(&state, LimitedOperation::DeleteIdentity)?;
    let id = identity_id(&req)?;
    state
        .identities
        .delete(&auth.tenant, &auth.caller, id, Timestamp::now())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Revoke every token issued to an identity so far.
#[post("/identities/{id}/:revokeAccessTokens")]
async fn revoke_access_tokens(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: Authenticated,
    _version: RequiredApiVersion,
) -> Result<HttpResponse, ApiError> {
    auth.check_limit(&state, LimitedOperation::RevokeTokens)?;
    let id = identity_id(&req)?;
    state
        .identities
        .revoke_tokens(&auth.tenant, &auth.caller, id, Timestamp::now())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Issue an access token for an identity.
#[post("/identities/{id}/:issueAccessToken")]
async fn issue_access_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: Authenticated,
    _version: RequiredApiVersion,
) -> Result<HttpResponse, ApiError> {
    auth.check_limit(&state, LimitedOperation::IssueToken)?;
    let id = identity_id(&req)?;
    let request: IssueTokenRequest = parse_json(&auth.body, false)?;
    let token = TokenRequest {
        scopes: ScopeSet::parse(&request.scopes)?,
        expiry: ExpiryMinutes::parse(request.expires_in_minutes)?,
    };
    let issued = state
        .identities
        .issue_token(&auth.tenant, &auth.caller, id, token, Timestamp::now())
        .await?;
    state.metrics.token_issued();
    Ok(HttpResponse::Ok().json(AccessTokenBody::from(issued)))
}
