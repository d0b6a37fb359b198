//! The admin API under `/admin`: tenants, their access keys and limits, for operators.
//!
//! Requests carry `Authorization: Bearer <operator credential>` (see
//! `service::operators`); a tenant's HMAC signature is refused here, as an operator
//! credential is refused on the ACS API. Bodies are JSON with unknown fields refused, since
//! nothing but callsign's own tooling speaks this API. A change is applied to this server's
//! in-memory view before it is answered, and reaches other instances through the change
//! epoch within their refresh interval.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::AUTHORIZATION;
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpRequest, HttpResponse, delete, get, patch, post, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::domain::audit::{Actor, DEPLOYMENT};
use crate::domain::{
    Hostname, KeySlot, LimitSetting, LimitTable, LimitedOperation, TenantId, TenantName, Timestamp,
};
use crate::service::audit::Caller;
use crate::service::operators::OperatorAuthError;
use crate::service::tenants::{self, NewTenant, TenantUpdate, connection_string, create_tenant};
use crate::store::{TenantRecord, TenantScope};

use super::AppState;
use super::auth::read_body;
use super::error::ApiError;
use super::query::query_pairs;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(create_tenant_route)
        .service(list_tenants)
        .service(show_tenant)
        .service(update_tenant)
        .service(delete_tenant)
        .service(list_keys)
        .service(regenerate_key);
}

pub const DEFAULT_PAGE_SIZE: i64 = 100;
pub const MAX_PAGE_SIZE: i64 = 1000;

/// An authenticated operator, with the request body.
pub struct Operator {
    pub caller: Caller,
    pub body: Bytes,
}

impl FromRequest for Operator {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(ApiError::internal)?
                .clone();
            let origin = super::origin::of(&req);
            let header = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let bearer = header.and_then(|h| {
                h.get(..7)
                    .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                    .map(|_| h[7..].trim())
            });
            let source = req.peer_addr().map(|a| a.ip());
            match state.operators.authenticate(bearer, source).await {
                Ok(id) => {
                    let body = read_body(&req, &mut payload, state.limits.max_body_bytes).await?;
                    Ok(Operator {
                        caller: Caller {
                            actor: Actor::Operator(id),
                            origin,
                        },
                        body,
                    })
                }
                Err(error) => {
                    let (api_error, reason) = match error {
                        OperatorAuthError::Rejected(reason) => {
                            // Say plainly when a tenant's signature was sent to the admin API.
                            let message = if bearer.is_none()
                                && header.is_some_and(|h| h.starts_with("HMAC-SHA256"))
                            {
                                "The admin API takes an operator credential (Authorization: Bearer <credential>), not a tenant's HMAC-SHA256 signature.".to_owned()
                            } else {
                                format!("{}{}.", reason[..1].to_uppercase(), &reason[1..])
                            };
                            state.metrics.auth_failure("admin");
                            (ApiError::operator_unauthenticated(message), reason)
                        }
                        OperatorAuthError::Throttled(wait) => {
                            state.metrics.throttled("operator_auth");
                            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                            (
                                ApiError::throttled(
                                    seconds,
                                    format!(
                                        "Too many failed operator authentications from this address; retry after {} s.",
                                        seconds.max(1)
                                    ),
                                ),
                                "throttled: too many failed attempts from this address",
                            )
                        }
                        OperatorAuthError::Internal(cause) => {
                            tracing::error!(error = %format!("{cause:#}"), "operator authentication failed");
                            return Err(ApiError::internal());
                        }
                    };
                    // Failed operator authentications belong to no tenant: the deployment
                    // chain records them.
                    state
                        .failures
                        .record(DEPLOYMENT, reason, origin, Timestamp::now());
                    Err(api_error)
                }
            }
        })
    }
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestBody",
            format!("The request body is not valid: {e}."),
        )
    })
}

fn tenant_id(req: &HttpRequest) -> Result<TenantId, ApiError> {
    let raw = req.match_info().get("tenantId").unwrap_or_default();
    Ok(raw.parse::<TenantId>()?)
}

/// Makes a change effective on this server before it is answered. The change is committed
/// either way: if this reload fails, the next poll applies it.
async fn apply(state: &AppState) {
    if let Err(error) = state.refresher.reload().await {
        tracing::warn!(error = %format!("{error:#}"), "reload after an admin change failed; the next poll applies it");
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyBody {
    key_type: &'static str,
    created_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SigningKeyBody {
    kid: String,
    algorithm: String,
}

/// A tenant as the admin API shows it: never a secret.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TenantBody {
    tenant_id: String,
    name: String,
    is_default: bool,
    hostnames: Vec<String>,
    endpoint: String,
    created_at: String,
    audit_retention_days: Option<i32>,
    /// The limit in force for every operation (`none`: unlimited).
    limits: Map<String, Value>,
    /// The tenant's own settings; operations not named here use the deployment's defaults.
    limit_overrides: Map<String, Value>,
    keys: Vec<KeyBody>,
    signing_key: Option<SigningKeyBody>,
}

fn describe(state: &AppState, record: &TenantRecord) -> TenantBody {
    let defaults = &state.directory.throttle_settings().default_limits;
    let limits = LimitedOperation::ALL
        .iter()
        .map(|op| {
            let value = record
                .limits
                .effective(*op, defaults)
                .map_or_else(|| "none".to_owned(), |l| l.to_string());
            (op.as_str().to_owned(), Value::String(value))
        })
        .collect();
    let limit_overrides = record
        .limits
        .iter()
        .map(|(op, setting)| (op.as_str().to_owned(), Value::String(setting.to_string())))
        .collect();
    let mut keys: Vec<KeyBody> = record
        .access_keys
        .iter()
        .map(|k| KeyBody {
            key_type: k.slot.as_str(),
            created_at: k.created_at.to_rfc3339(),
        })
        .collect();
    keys.sort_by_key(|k| k.key_type != "primary");
    TenantBody {
        tenant_id: record.id.to_string(),
        name: record.name.clone(),
        is_default: record.is_default,
        hostnames: record.hostnames.clone(),
        endpoint: state.directory.endpoints().endpoint(&record.hostnames),
        created_at: record.created_at.to_rfc3339(),
        audit_retention_days: record.audit_retention_days,
        limits,
        limit_overrides,
        keys,
        signing_key: record
            .signing_keys
            .iter()
            .rev()
            .find(|k| k.retired_at.is_none())
            .map(|k| SigningKeyBody {
                kid: k.kid.clone(),
                algorithm: k.algorithm.clone(),
            }),
    }
}

/// `{"issue_token": "5/30s", "get_identity": "none", "create_identity": null}`: a value sets
/// a limit or lifts it, null returns the operation to the deployment's default.
fn parse_limits(
    limits: Map<String, Value>,
) -> Result<Vec<(LimitedOperation, Option<LimitSetting>)>, ApiError> {
    limits
        .into_iter()
        .map(|(op, value)| {
            let op = LimitedOperation::parse(&op)?;
            let setting = match value {
                Value::Null => None,
                Value::String(text) => Some(text.parse::<LimitSetting>()?),
                _ => {
                    return Err(ApiError::validation(format!(
                        "The limit of {op} must be a string such as \"1000/30s\" or \"none\", or null for the default."
                    )));
                }
            };
            Ok((op, setting))
        })
        .collect()
}

fn parse_hostnames(hostnames: &[String]) -> Result<Vec<Hostname>, ApiError> {
    Ok(hostnames
        .iter()
        .map(|h| Hostname::parse(h))
        .collect::<Result<_, _>>()?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateTenantRequest {
    name: String,
    hostnames: Vec<String>,
    #[serde(default)]
    limits: Map<String, Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedTenantBody {
    #[serde(flatten)]
    tenant: TenantBody,
    primary_key: String,
    secondary_key: String,
    connection_string: String,
    secondary_connection_string: String,
}

/// Create a tenant; its keys are in this response and nowhere else.
#[post("/admin/tenants")]
async fn create_tenant_route(
    state: web::Data<AppState>,
    operator: Operator,
) -> Result<HttpResponse, ApiError> {
    let request: CreateTenantRequest = parse_body(&operator.body)?;
    if request.hostnames.is_empty() {
        return Err(ApiError::validation(
            "A tenant needs at least one host name: requests find their tenant by Host.",
        ));
    }
    let mut limits = LimitTable::default();
    for (op, setting) in parse_limits(request.limits)? {
        limits.set(op, setting);
    }
    let spec = NewTenant {
        name: TenantName::parse(&request.name)?,
        hostnames: parse_hostnames(&request.hostnames)?,
        is_default: false,
        algorithm: state.signing_algorithm,
        limits,
    };
    let created = create_tenant(
        state.repo.as_ref(),
        &state.master_key,
        spec,
        &operator.caller,
        Timestamp::now(),
    )
    .await?;
    apply(&state).await;
    let tenant = describe(&state, &created.record);
    let body = CreatedTenantBody {
        connection_string: connection_string(&tenant.endpoint, &created.primary_key),
        secondary_connection_string: connection_string(&tenant.endpoint, &created.secondary_key),
        primary_key: created.primary_key.to_base64(),
        secondary_key: created.secondary_key.to_base64(),
        tenant,
    };
    Ok(HttpResponse::Created().json(body))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TenantPage {
    value: Vec<TenantBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
}

/// The keyset position after a tenant: its creation time and id.
fn encode_position(record: &TenantRecord) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", record.created_at.millis(), record.id))
}

fn decode_position(token: &str) -> Result<(Timestamp, TenantId), ApiError> {
    let invalid = || ApiError::validation("The continuation token is not valid.");
    let text = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid)?;
    let (millis, id) = text.split_once(':').ok_or_else(invalid)?;
    let millis: i64 = millis.parse().map_err(|_| invalid())?;
    let id: TenantId = id.parse().map_err(|_| invalid())?;
    Ok((Timestamp::from_millis(millis), id))
}

/// List tenants in creation order, a page at a time (`maxPageSize`, `continuationToken`).
#[get("/admin/tenants")]
async fn list_tenants(
    req: HttpRequest,
    state: web::Data<AppState>,
    _operator: Operator,
) -> Result<HttpResponse, ApiError> {
    let mut page_size = DEFAULT_PAGE_SIZE;
    let mut after = None;
    for (name, value) in query_pairs(req.query_string()) {
        match name.as_str() {
            "api-version" => {}
            "maxPageSize" => {
                page_size = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                    .ok_or_else(|| {
                        ApiError::validation(format!(
                            "'maxPageSize' must be an integer from 1 to {MAX_PAGE_SIZE}."
                        ))
                    })?;
            }
            "continuationToken" => after = Some(decode_position(&value)?),
            other => {
                return Err(ApiError::validation(format!(
                    "Unknown parameter '{}'; the parameters are maxPageSize and continuationToken.",
                    other.chars().take(40).collect::<String>()
                )));
            }
        }
    }
    let mut records = state
        .repo
        .fetch_tenants(&TenantScope::page(after, page_size + 1))
        .await
        .map_err(crate::service::ServiceError::from)?;
    let more = records.len() as i64 > page_size;
    records.truncate(page_size as usize);
    let next_link = match (more, records.last()) {
        (true, Some(last)) => Some(format!(
            "{}://{}/admin/tenants?maxPageSize={page_size}&continuationToken={}",
            req.connection_info().scheme(),
            req.connection_info().host(),
            encode_position(last)
        )),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(TenantPage {
        value: records.iter().map(|r| describe(&state, r)).collect(),
        next_link,
    }))
}

/// Show one tenant.
#[get("/admin/tenants/{tenantId}")]
async fn show_tenant(
    req: HttpRequest,
    state: web::Data<AppState>,
    _operator: Operator,
) -> Result<HttpResponse, ApiError> {
    let record = tenants::find_tenant(state.repo.as_ref(), tenant_id(&req)?).await?;
    Ok(HttpResponse::Ok().json(describe(&state, &record)))
}

/// A JSON field that may be absent (`None`), null (`Some(None)`) or a value.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateTenantRequest {
    name: Option<String>,
    hostnames: Option<Vec<String>>,
    limits: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "nullable")]
    audit_retention_days: Option<Option<i32>>,
}

/// Change a tenant's name, host names (the list given replaces the old one), limits or audit
/// retention; all or nothing.
#[patch("/admin/tenants/{tenantId}")]
async fn update_tenant(
    req: HttpRequest,
    state: web::Data<AppState>,
    operator: Operator,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_id(&req)?;
    let request: UpdateTenantRequest = parse_body(&operator.body)?;
    let update = TenantUpdate {
        name: request.name.as_deref().map(TenantName::parse).transpose()?,
        hostnames: request
            .hostnames
            .as_deref()
            .map(parse_hostnames)
            .transpose()?,
        limits: request
            .limits
            .map(parse_limits)
            .transpose()?
            .unwrap_or_default(),
        audit_retention_days: request.audit_retention_days,
    };
    tenants::update_tenant(
        state.repo.as_ref(),
        tenant,
        update,
        &operator.caller,
        Timestamp::now(),
    )
    .await?;
    apply(&state).await;
    let record = tenants::find_tenant(state.repo.as_ref(), tenant).await?;
    Ok(HttpResponse::Ok().json(describe(&state, &record)))
}

/// Delete a tenant: its requests stop authenticating and its tokens stop verifying at once,
/// its identities are removed, and its audit trail stays under its retention.
#[delete("/admin/tenants/{tenantId}")]
async fn delete_tenant(
    req: HttpRequest,
    state: web::Data<AppState>,
    operator: Operator,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_id(&req)?;
    tenants::delete_tenant(
        state.repo.as_ref(),
        tenant,
        &operator.caller,
        Timestamp::now(),
    )
    .await?;
    apply(&state).await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize)]
struct KeyList {
    value: Vec<KeyBody>,
}

/// The access keys' metadata (which slots, since when); never the keys.
#[get("/admin/tenants/{tenantId}/keys")]
async fn list_keys(
    req: HttpRequest,
    state: web::Data<AppState>,
    _operator: Operator,
) -> Result<HttpResponse, ApiError> {
    let record = tenants::find_tenant(state.repo.as_ref(), tenant_id(&req)?).await?;
    Ok(HttpResponse::Ok().json(KeyList {
        value: describe(&state, &record).keys,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegenerateKeyRequest {
    key_type: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RegeneratedKeyBody {
    key_type: &'static str,
    key: String,
    connection_string: String,
    created_at: String,
}

/// Replace the primary or the secondary key, as ACS `regenerateKey` does: the old value stops
/// working at once, the other key keeps working, and the new value is in this response only.
#[post("/admin/tenants/{tenantId}/:regenerateKey")]
async fn regenerate_key(
    req: HttpRequest,
    state: web::Data<AppState>,
    operator: Operator,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_id(&req)?;
    let request: RegenerateKeyRequest = parse_body(&operator.body)?;
    // ACS spells the key types "Primary" and "Secondary".
    let slot = KeySlot::parse(&request.key_type.to_ascii_lowercase())?;
    let now = Timestamp::now();
    let key = tenants::regenerate_access_key(
        state.repo.as_ref(),
        &state.master_key,
        tenant,
        slot,
        &operator.caller,
        now,
    )
    .await?;
    apply(&state).await;
    let record = tenants::find_tenant(state.repo.as_ref(), tenant).await?;
    let endpoint = state.directory.endpoints().endpoint(&record.hostnames);
    Ok(HttpResponse::Ok().json(RegeneratedKeyBody {
        key_type: slot.as_str(),
        connection_string: connection_string(&endpoint, &key),
        key: key.to_base64(),
        created_at: now.to_rfc3339(),
    }))
}
