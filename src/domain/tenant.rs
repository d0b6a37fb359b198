use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::ParseError;
use super::api_version::truncate;

/// A tenant (an ACS "communication resource"): the UUID that appears in its identity ids and
/// in the `resourceId` claim of its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Uuid);

impl TenantId {
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }

    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for TenantId {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| ParseError::new(format!("'{}' is not a tenant id.", truncate(s, 40))))
    }
}

/// A tenant's human-readable name, unique across the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantName(String);

impl TenantName {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let ok = !value.is_empty()
            && value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(ParseError::new(format!(
                "tenant name '{}' must be 1 to 63 characters of letters, digits, '-', '_' or '.'.",
                truncate(value, 70)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host name a tenant claims: requests whose `Host` (without port) equals it belong to the
/// tenant. Kept lowercase, since DNS names compare case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hostname(String);

impl Hostname {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let lower = value.trim_end_matches('.').to_ascii_lowercase();
        if lower.parse::<std::net::IpAddr>().is_ok() && !lower.contains(':') {
            return Ok(Self(lower));
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !lower.is_empty() && lower.len() <= 253 && lower.split('.').all(label_ok) {
            Ok(Self(lower))
        } else {
            Err(ParseError::new(format!(
                "'{}' is not a valid host name (a DNS name or an IPv4 address, without port).",
                truncate(value, 70)
            )))
        }
    }

    /// The host of a `Host` header value: the port and any IPv6 brackets removed, lowercased.
    /// Returns `None` for a value that is not a host at all.
    ///
    /// The JS SDK (`@azure/communication-common`) appends the port to a host that already has
    /// it, and sends and signs `Host: example.com:8443:8443` for an endpoint with a port; that
    /// repeated port is dropped too.
    pub fn from_host_header(value: &str) -> Option<Self> {
        fn strip_port(value: &str) -> Option<(&str, &str)> {
            value
                .rsplit_once(':')
                .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        }
        let host = if let Some(rest) = value.strip_prefix('[') {
            rest.split(']').next()?
        } else {
            match strip_port(value) {
                Some((host, port)) => match strip_port(host) {
                    Some((twice, again)) if again == port && !port.is_empty() => twice,
                    _ => host,
                },
                None => value,
            }
        };
        if host.parse::<std::net::Ipv6Addr>().is_ok() {
            return Some(Self(host.to_ascii_lowercase()));
        }
        Self::parse(host).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_drops_port_and_case() {
        let h = |v| Hostname::from_host_header(v).map(|h| h.as_str().to_owned());
        assert_eq!(h("127.0.0.2:8443").as_deref(), Some("127.0.0.2"));
        assert_eq!(h("Acme.Example.com").as_deref(), Some("acme.example.com"));
        assert_eq!(h("[::1]:8443").as_deref(), Some("::1"));
        assert_eq!(h("bad host:1"), None);
        // As the JS SDK sends it for an endpoint with a port.
        assert_eq!(h("127.0.0.2:8443:8443").as_deref(), Some("127.0.0.2"));
        assert_eq!(h("acme.test:8443:8443").as_deref(), Some("acme.test"));
        assert_eq!(h("[::1]:8443:8443").as_deref(), Some("::1"));
        assert_eq!(h("acme.test:8443:9443"), None);
        assert_eq!(h("acme.test:").as_deref(), Some("acme.test"));
    }

    #[test]
    fn hostnames_are_dns_names_or_ipv4() {
        for ok in ["localhost", "a.b-c.example", "127.0.0.2"] {
            assert!(Hostname::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            "-a.example",
            "a_b.example",
            "host:8443",
            "x".repeat(64).as_str(),
        ] {
            assert!(Hostname::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tenant_names_are_bounded() {
        assert!(TenantName::parse("acme").is_ok());
        assert!(TenantName::parse("").is_err());
        assert!(TenantName::parse("a b").is_err());
        assert!(TenantName::parse(&"a".repeat(64)).is_err());
    }
}
