use std::fmt;

use uuid::Uuid;

use super::api_version::truncate;
use super::{ParseError, TenantId};

/// An identity id in the ACS form `8:acs:<tenant-uuid>_<identity-uuid>`.
///
/// Identity UUIDs are version 7 (time-ordered), which keeps the primary-key index append-mostly
/// on both databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityId {
    tenant: TenantId,
    local: Uuid,
}

const PREFIX: &str = "8:acs:";

impl IdentityId {
    pub fn generate(tenant: TenantId) -> Self {
        Self {
            tenant,
            local: Uuid::now_v7(),
        }
    }

    pub const fn from_parts(tenant: TenantId, local: Uuid) -> Self {
        Self { tenant, local }
    }

    /// Parses the decoded path segment of a request. Anything that is not exactly the ACS
    /// form is refused here; whether the tenant matches is the caller's business.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let err = || {
            ParseError::new(format!(
                "'{}' is not a valid identity id; expected 8:acs:<resource id>_<user id>.",
                truncate(value, 100)
            ))
        };
        let rest = value.strip_prefix(PREFIX).ok_or_else(err)?;
        let (tenant, local) = rest.split_once('_').ok_or_else(err)?;
        // Uuid::parse_str also accepts braced and URN forms; ids are only ever hyphenated.
        if tenant.len() != 36 || local.len() != 36 {
            return Err(err());
        }
        let tenant = Uuid::parse_str(tenant).map_err(|_| err())?;
        let local = Uuid::parse_str(local).map_err(|_| err())?;
        Ok(Self {
            tenant: TenantId::from_uuid(tenant),
            local,
        })
    }

    pub const fn tenant(&self) -> TenantId {
        self.tenant
    }

    pub const fn local(&self) -> Uuid {
        self.local
    }
}

impl fmt::Display for IdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}_{}", self.tenant, self.local.hyphenated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_text_form() {
        let id = IdentityId::generate(TenantId::generate());
        assert_eq!(IdentityId::parse(&id.to_string()), Ok(id));
        assert!(id.to_string().starts_with("8:acs:"));
    }

    #[test]
    fn anything_else_is_refused() {
        let t = TenantId::generate();
        let u = Uuid::new_v4();
        for bad in [
            String::new(),
            format!("{t}_{u}"),
            format!("8:acs:{t}"),
            format!("8:acs:{t}_{u}x"),
            format!("8:acs:{{{t}}}_{u}"),
            format!("8:teams:{t}_{u}"),
            format!("8:acs:{}_{u}", u.simple()),
        ] {
            assert!(IdentityId::parse(&bad).is_err(), "{bad} was accepted");
        }
    }
}
