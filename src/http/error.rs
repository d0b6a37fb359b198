//! The one error type of the HTTP layer, rendered in the ACS shape
//! `{"error": {"code": "...", "message": "..."}}`.
//!
//! Service and parse errors are converted here; 5xx answers carry a generic message and the
//! cause goes to the log only.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::ParseError;
use crate::service::ServiceError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for `Retry-After` (429).
    retry_after: Option<u64>,
    /// The `WWW-Authenticate` scheme of a 401: HMAC-SHA256 on the ACS API, Bearer on /admin.
    challenge: &'static str,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            challenge: "HMAC-SHA256",
        }
    }

    /// 401 on the admin API, which takes a bearer operator credential.
    pub fn operator_unauthenticated(message: impl Into<String>) -> Self {
        Self {
            challenge: "Bearer",
            ..Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
        }
    }

    /// 429 with `Retry-After`, as ACS throttles.
    pub fn throttled(retry_after_seconds: u64, message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(retry_after_seconds.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message)
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("The request body is larger than {limit} bytes."),
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "The server could not complete the request.",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(self.challenge),
            ));
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(Body {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        })
    }
}

impl From<ParseError> for ApiError {
    fn from(error: ParseError) -> Self {
        ApiError::validation(error.0)
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Validation(message) => ApiError::validation(message),
            ServiceError::NotFound(message) => {
                ApiError::new(StatusCode::NOT_FOUND, "IdentityNotFound", message)
            }
            ServiceError::UnknownTenant(message) => {
                ApiError::new(StatusCode::NOT_FOUND, "TenantNotFound", message)
            }
            ServiceError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "Conflict", message)
            }
            ServiceError::TenantDeleted => {
                ApiError::unauthenticated("The tenant of this access key has been deleted.")
            }
            ServiceError::Unavailable(cause) => {
                tracing::error!(error = %format!("{cause:#}"), "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable; retry later.",
                )
            }
            ServiceError::Internal(cause) => {
                tracing::error!(error = %format!("{cause:#}"), "internal error");
                ApiError::internal()
            }
        }
    }
}
