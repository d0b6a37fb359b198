//! The `api-version` query parameter, required on the ACS routes.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};

use crate::domain::ApiVersion;

use super::error::ApiError;

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

/// The first value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| {
            percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_found_and_decoded() {
        assert_eq!(
            query_param("a=1&api-version=2023-10-01", "api-version").as_deref(),
            Some("2023-10-01")
        );
        assert_eq!(
            query_param("api-version=2023%2D10%2D01", "api-version").as_deref(),
            Some("2023-10-01")
        );
        assert_eq!(query_param("api-versions=x", "api-version"), None);
        assert_eq!(query_param("", "api-version"), None);
    }
}
