//! The `api-version` query parameter, required on the ACS routes.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};

use crate::domain::ApiVersion;

use super::error::ApiError;
use super::query::query_param;

/// A supported `api-version`; a missing or unknown one is a 400.
pub struct RequiredApiVersion(#[allow(dead_code)] pub ApiVersion);

impl FromRequest for RequiredApiVersion {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let value = query_param(req.query_string(), "api-version");
        ready(
            ApiVersion::parse(value.as_deref())
                .map(RequiredApiVersion)
                .map_err(|e| {
                    ApiError::new(
                        actix_web::http::StatusCode::BAD_REQUEST,
                        "InvalidApiVersion",
                        e.0,
                    )
                }),
        )
    }
}
