//! Domain types: every value that crosses the API edge is parsed into one of these once,
//! so the services and the repository never see an unchecked string.
//!
//! Each type has a private inner value, a `parse` (or `TryFrom`) that is the only way to build
//! it from untrusted input, and an error whose message is safe to show a client.

mod access_key;
mod api_version;
pub mod audit;
mod expiry;
mod external_id;
mod identity_id;
mod limits;
mod operator;
mod scope;
mod tenant;
mod time;

pub use access_key::{AccessKey, KeySlot};
pub use api_version::ApiVersion;
pub use expiry::ExpiryMinutes;
pub use external_id::ExternalId;
pub use identity_id::IdentityId;
pub use limits::{LimitSetting, LimitTable, LimitedOperation, RateLimit, parse_assignment};
pub use operator::{OperatorCredential, OperatorCredentialId};
pub use scope::{Scope, ScopeSet};
pub use tenant::{Hostname, TenantId, TenantName};
pub use time::{Timestamp, UnixMillis};

/// Why a value from a client was refused; the message is shown to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
