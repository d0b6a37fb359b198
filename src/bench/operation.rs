//! The operations the load generator measures, and the requests each one sends.

use http::{Method, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;

use super::request::Prepared;

/// The `api-version` the generator sends on the ACS routes.
pub const API_VERSION: &str = "2023-10-01";

/// Scopes of the tokens the generator asks for.
const SCOPES: [&str; 2] = ["chat", "voip"];

/// What JavaScript's `encodeURIComponent` leaves alone, which is how the JS SDK puts an
/// identity id into a path (`8:acs:…` becomes `8%3Aacs%3A…`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// An operation of the API, as named on the command line and in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Operation {
    /// `POST /identities` with an empty body.
    CreateIdentity,
    /// `POST /identities` with `createTokenWithScopes`.
    CreateIdentityWithToken,
    /// `POST /identities/{id}/:issueAccessToken`, cycling over a pool of identities.
    IssueToken,
    /// `GET /identities/{id}`, cycling over the same pool.
    GetIdentity,
    /// `POST /oauth2/introspect`, each request with a token not introspected before.
    IntrospectDistinct,
    /// `POST /oauth2/introspect`, cycling over a few tokens (what a verifier's cache sees).
    IntrospectRepeated,
    /// `GET /audit/events?identity={id}`, cycling over the pool.
    AuditQuery,
    /// `POST /identities/{id}/:revokeAccessTokens`, cycling over a pool of its own.
    Revoke,
    /// `DELETE /identities/{id}`, each request a different, freshly created identity.
    Delete,
    /// The writes of a live deployment at once, interleaved in every connection's sequence
    /// (`MIXED_WRITES`): token issues, new identities with and without a token, revocations.
    /// One writer commits whatever is waiting, so its batches hold every kind together.
    MixedWrites,
}

/// One round of `mixed-writes`, repeated over its identities: mostly token issues (a token
/// each time an end user opens a chat or joins a call), some new identities, a revocation.
pub const MIXED_WRITES: [Operation; 10] = [
    Operation::IssueToken,
    Operation::CreateIdentity,
    Operation::IssueToken,
    Operation::Revoke,
    Operation::IssueToken,
    Operation::CreateIdentityWithToken,
    Operation::IssueToken,
    Operation::CreateIdentity,
    Operation::IssueToken,
    Operation::IssueToken,
];

impl Operation {
    /// Every operation, in the order a run measures them by default: reads and issues first,
    /// then what revokes and deletes.
    pub const ALL: [Operation; 10] = [
        Operation::CreateIdentity,
        Operation::CreateIdentityWithToken,
        Operation::IssueToken,
        Operation::GetIdentity,
        Operation::IntrospectDistinct,
        Operation::IntrospectRepeated,
        Operation::AuditQuery,
        Operation::Revoke,
        Operation::Delete,
        Operation::MixedWrites,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateIdentity => "create-identity",
            Operation::CreateIdentityWithToken => "create-identity-with-token",
            Operation::IssueToken => "issue-token",
            Operation::GetIdentity => "get-identity",
            Operation::IntrospectDistinct => "introspect-distinct",
            Operation::IntrospectRepeated => "introspect-repeated",
            Operation::AuditQuery => "audit-query",
            Operation::Revoke => "revoke",
            Operation::Delete => "delete",
            Operation::MixedWrites => "mixed-writes",
        }
    }

    /// Whether the route may be missing on a server (built later than the ACS API); a 404
    /// to its probe then means "not available" rather than a failure.
    pub fn optional(self) -> bool {
        matches!(
            self,
            Operation::IntrospectDistinct | Operation::IntrospectRepeated | Operation::AuditQuery
        )
    }
}

/// The identity id as the SDKs put it in a URL.
pub fn encode_id(id: &str) -> String {
    utf8_percent_encode(id, COMPONENT).to_string()
}

/// The server's ceiling: a trivial endpoint of the same server. It is signed like every
/// other request (the server ignores the headers) so that the generator spends the same on
/// it as on the operations it is compared with.
pub fn healthz() -> anyhow::Result<Prepared> {
    Prepared::empty(Method::GET, "/healthz", StatusCode::OK)
}

pub fn create_identity(with_token: bool) -> anyhow::Result<Prepared> {
    let body = if with_token {
        json!({"createTokenWithScopes": SCOPES})
    } else {
        json!({})
    };
    Prepared::json(
        Method::POST,
        &format!("/identities?api-version={API_VERSION}"),
        &body,
        StatusCode::CREATED,
    )
}

pub fn issue_token(id: &str) -> anyhow::Result<Prepared> {
    Prepared::json(
        Method::POST,
        &format!(
            "/identities/{}/:issueAccessToken?api-version={API_VERSION}",
            encode_id(id)
        ),
        &json!({"scopes": SCOPES}),
        StatusCode::OK,
    )
}

pub fn get_identity(id: &str) -> anyhow::Result<Prepared> {
    Prepared::empty(
        Method::GET,
        &format!("/identities/{}?api-version={API_VERSION}", encode_id(id)),
        StatusCode::OK,
    )
}

pub fn revoke(id: &str) -> anyhow::Result<Prepared> {
    Prepared::empty(
        Method::POST,
        &format!(
            "/identities/{}/:revokeAccessTokens?api-version={API_VERSION}",
            encode_id(id)
        ),
        StatusCode::NO_CONTENT,
    )
}

pub fn delete(id: &str) -> anyhow::Result<Prepared> {
    Prepared::empty(
        Method::DELETE,
        &format!("/identities/{}?api-version={API_VERSION}", encode_id(id)),
        StatusCode::NO_CONTENT,
    )
}

/// RFC 7662 introspection: `token=<jwt>` as a form body (a JWT is already URL-safe).
pub fn introspect(token: &str) -> anyhow::Result<Prepared> {
    Prepared::form(
        Method::POST,
        "/oauth2/introspect",
        format!("token={}", utf8_percent_encode(token, COMPONENT)),
        StatusCode::OK,
    )
}

pub fn audit_query(id: &str) -> anyhow::Result<Prepared> {
    Prepared::empty(
        Method::GET,
        &format!("/audit/events?identity={}", encode_id(id)),
        StatusCode::OK,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn names_on_the_command_line_match_names_in_reports() {
        for op in Operation::ALL {
            let value = op.to_possible_value().expect("listed");
            assert_eq!(value.get_name(), op.name());
        }
        assert_eq!(Operation::value_variants().len(), Operation::ALL.len());
    }

    #[test]
    fn ids_are_encoded_as_the_js_sdk_encodes_them() {
        let id = "8:acs:0196a0c4-7f53-7c61-b000-5f8f4e0e11aa_0196a0c4-7f53-7c61-b000-000000000001";
        assert_eq!(
            encode_id(id),
            "8%3Aacs%3A0196a0c4-7f53-7c61-b000-5f8f4e0e11aa_0196a0c4-7f53-7c61-b000-000000000001"
        );
        let request = get_identity(id).expect("request");
        assert!(
            request
                .path_and_query()
                .starts_with("/identities/8%3Aacs%3A")
        );
        assert!(
            request
                .path_and_query()
                .ends_with("?api-version=2023-10-01")
        );
    }

    #[test]
    fn introspection_sends_a_form() {
        let request = introspect("aGVhZA.cGF5bG9hZA.c2ln").expect("request");
        assert_eq!(&request.body[..], b"token=aGVhZA.cGF5bG9hZA.c2ln");
        assert_eq!(
            request.content_type.as_ref().map(|v| v.as_bytes()),
            Some(&b"application/x-www-form-urlencoded"[..])
        );
        assert_eq!(request.expected, StatusCode::OK);
    }
}
