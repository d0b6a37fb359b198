//! Per-tenant rate limits: the operations that can be limited and "N requests per period"
//! values, modelled on the published limits of the ACS Identity API (create identity and issue
//! token 1000 per 30 s, delete identity and revoke 500 per 30 s).
//!
//! A tenant's setting for an operation is a limit, `none` (unlimited), or absent (the
//! deployment's default applies).

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use super::ParseError;
use super::api_version::truncate;

/// An operation that has its own rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitedOperation {
    CreateIdentity,
    IssueToken,
    DeleteIdentity,
    RevokeTokens,
    GetIdentity,
    Introspect,
    AuditQuery,
}

impl LimitedOperation {
    pub const ALL: [LimitedOperation; 7] = [
        LimitedOperation::CreateIdentity,
        LimitedOperation::IssueToken,
        LimitedOperation::DeleteIdentity,
        LimitedOperation::RevokeTokens,
        LimitedOperation::GetIdentity,
        LimitedOperation::Introspect,
        LimitedOperation::AuditQuery,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitedOperation::CreateIdentity => "create_identity",
            LimitedOperation::IssueToken => "issue_token",
            LimitedOperation::DeleteIdentity => "delete_identity",
            LimitedOperation::RevokeTokens => "revoke_tokens",
            LimitedOperation::GetIdentity => "get_identity",
            LimitedOperation::Introspect => "introspect",
            LimitedOperation::AuditQuery => "audit_query",
        }
    }

    /// Position in [`Self::ALL`], for per-operation arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(value: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|op| op.as_str() == value)
            .ok_or_else(|| {
                ParseError::new(format!(
                    "'{}' is not a limited operation; expected one of: {}.",
                    truncate(value, 40),
                    Self::ALL.map(Self::as_str).join(", ")
                ))
            })
    }
}

impl fmt::Display for LimitedOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// At most `requests` per `period`, as a token bucket: a burst of `requests` is allowed and
/// capacity returns evenly over the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    requests: NonZeroU32,
    period_ms: u64,
}

impl RateLimit {
    pub const MAX_REQUESTS: u32 = 10_000_000;
    pub const MIN_PERIOD_MS: u64 = 1_000;
    pub const MAX_PERIOD_MS: u64 = 86_400_000;

    pub fn new(requests: u32, period_ms: u64) -> Result<Self, ParseError> {
        let requests = NonZeroU32::new(requests)
            .filter(|r| r.get() <= Self::MAX_REQUESTS)
            .ok_or_else(|| {
                ParseError::new(format!(
                    "a limit allows 1 to {} requests per period.",
                    Self::MAX_REQUESTS
                ))
            })?;
        if !(Self::MIN_PERIOD_MS..=Self::MAX_PERIOD_MS).contains(&period_ms) {
            return Err(ParseError::new("a limit's period is 1 second to 24 hours."));
        }
        Ok(Self {
            requests,
            period_ms,
        })
    }

    pub fn requests(self) -> NonZeroU32 {
        self.requests
    }

    pub fn period(self) -> Duration {
        Duration::from_millis(self.period_ms)
    }

    pub fn period_ms(self) -> u64 {
        self.period_ms
    }
}

impl FromStr for RateLimit {
    type Err = ParseError;

    /// `N/<period>`, the period a number with a unit `s`, `m` or `h` (`1000/30s`, `60/1m`);
    /// a bare unit means one of it (`100/s`).
    fn from_str(value: &str) -> Result<Self, ParseError> {
        let bad = || {
            ParseError::new(format!(
                "'{}' is not a rate limit; expected <requests>/<period> such as 1000/30s, 60/1m or 5000/1h, or none.",
                truncate(value, 40)
            ))
        };
        let (requests, period) = value.trim().split_once('/').ok_or_else(bad)?;
        let requests: u32 = digits(requests).ok_or_else(bad)?;
        let unit_at = period.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (amount, unit) = period.split_at(unit_at);
        let amount: u64 = if amount.is_empty() {
            1
        } else {
            digits(amount).ok_or_else(bad)?
        };
        let unit_ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        let period_ms = amount.checked_mul(unit_ms).ok_or_else(bad)?;
        Self::new(requests, period_ms)
    }
}

/// Plain decimal digits only (no sign, no spaces), so `+5` or ` 5` are refused.
fn digits<T: FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl fmt::Display for RateLimit {
    /// The canonical form, in the largest unit that divides the period.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (amount, unit) = if self.period_ms.is_multiple_of(3_600_000) {
            (self.period_ms / 3_600_000, "h")
        } else if self.period_ms.is_multiple_of(60_000) {
            (self.period_ms / 60_000, "m")
        } else if self.period_ms.is_multiple_of(1_000) {
            (self.period_ms / 1_000, "s")
        } else {
            return write!(f, "{}/{}ms", self.requests, self.period_ms);
        };
        write!(f, "{}/{amount}{unit}", self.requests)
    }
}

/// What a tenant sets for one operation: a limit, or none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitSetting {
    Limited(RateLimit),
    Unlimited,
}

impl LimitSetting {
    pub fn limit(self) -> Option<RateLimit> {
        match self {
            LimitSetting::Limited(limit) => Some(limit),
            LimitSetting::Unlimited => None,
        }
    }
}

impl FromStr for LimitSetting {
    type Err = ParseError;

    fn from_str(value: &str) -> Result<Self, ParseError> {
        if value.trim().eq_ignore_ascii_case("none") {
            Ok(LimitSetting::Unlimited)
        } else {
            value.parse().map(LimitSetting::Limited)
        }
    }
}

impl fmt::Display for LimitSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitSetting::Limited(limit) => limit.fmt(f),
            LimitSetting::Unlimited => f.write_str("none"),
        }
    }
}

/// A setting per operation, e.g. a tenant's overrides or the deployment's defaults. Parsed
/// from `op=limit,op=none,…`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitTable(BTreeMap<LimitedOperation, LimitSetting>);

impl LimitTable {
    /// The ACS Identity API's published limits.
    pub fn acs_defaults() -> Self {
        const fn per_30s(requests: u32) -> LimitSetting {
            let requests = match NonZeroU32::new(requests) {
                Some(requests) => requests,
                None => NonZeroU32::MIN,
            };
            LimitSetting::Limited(RateLimit {
                requests,
                period_ms: 30_000,
            })
        }
        Self(BTreeMap::from([
            (LimitedOperation::CreateIdentity, per_30s(1000)),
            (LimitedOperation::IssueToken, per_30s(1000)),
            (LimitedOperation::DeleteIdentity, per_30s(500)),
            (LimitedOperation::RevokeTokens, per_30s(500)),
        ]))
    }

    pub fn get(&self, op: LimitedOperation) -> Option<LimitSetting> {
        self.0.get(&op).copied()
    }

    pub fn set(&mut self, op: LimitedOperation, setting: Option<LimitSetting>) {
        match setting {
            Some(setting) => self.0.insert(op, setting),
            None => self.0.remove(&op),
        };
    }

    pub fn iter(&self) -> impl Iterator<Item = (LimitedOperation, LimitSetting)> + '_ {
        self.0.iter().map(|(op, setting)| (*op, *setting))
    }

    /// The limit in force for `op`: this table's setting, else `defaults`', else none.
    pub fn effective(&self, op: LimitedOperation, defaults: &LimitTable) -> Option<RateLimit> {
        self.get(op)
            .or_else(|| defaults.get(op))
            .and_then(LimitSetting::limit)
    }
}

impl FromStr for LimitTable {
    type Err = ParseError;

    fn from_str(value: &str) -> Result<Self, ParseError> {
        let mut table = LimitTable::default();
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (op, setting) = parse_assignment(item)?;
            table.0.insert(op, setting);
        }
        Ok(table)
    }
}

impl fmt::Display for LimitTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.iter().map(|(op, s)| format!("{op}={s}")).collect();
        f.write_str(&items.join(","))
    }
}

/// `op=limit` or `op=none`, as the CLI's `--limit` takes it.
pub fn parse_assignment(item: &str) -> Result<(LimitedOperation, LimitSetting), ParseError> {
    let (op, setting) = item.split_once('=').ok_or_else(|| {
        ParseError::new(format!(
            "'{}' must be <operation>=<limit>, e.g. issue_token=1000/30s or issue_token=none.",
            truncate(item, 60)
        ))
    })?;
    Ok((LimitedOperation::parse(op.trim())?, setting.parse()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_print_canonically() {
        for (text, canonical, requests, period_ms) in [
            ("1000/30s", "1000/30s", 1000, 30_000),
            ("5/30s", "5/30s", 5, 30_000),
            ("60/1m", "60/1m", 60, 60_000),
            ("60/60s", "60/1m", 60, 60_000),
            ("100/s", "100/1s", 100, 1_000),
            ("5000/1h", "5000/1h", 5000, 3_600_000),
            ("1/24h", "1/24h", 1, 86_400_000),
        ] {
            let limit: RateLimit = text.parse().expect(text);
            assert_eq!(limit.to_string(), canonical, "{text}");
            assert_eq!(limit.requests().get(), requests);
            assert_eq!(limit.period_ms(), period_ms);
        }
    }

    #[test]
    fn malformed_limits_are_refused() {
        for bad in [
            "",
            "5",
            "/30s",
            "5/",
            "0/30s",
            "-5/30s",
            "+5/30s",
            "5/30",
            "5/30x",
            "5/0s",
            "5/25h",
            "5/500ms",
            "a/30s",
            "5 /30s",
            "5/3 0s",
            "99999999999/1s",
            "10000001/1s",
            "5/99999999999999999999h",
        ] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!("NONE".parse(), Ok(LimitSetting::Unlimited));
    }

    #[test]
    fn tables_merge_with_defaults() {
        let defaults = LimitTable::acs_defaults();
        assert_eq!(
            defaults.to_string(),
            "create_identity=1000/30s,issue_token=1000/30s,delete_identity=500/30s,revoke_tokens=500/30s"
        );
        let tenant: LimitTable = "issue_token=5/30s, get_identity=10/1s, delete_identity=none"
            .parse()
            .expect("table");
        let effective = |op| tenant.effective(op, &defaults).map(|l| l.to_string());
        assert_eq!(
            effective(LimitedOperation::IssueToken).as_deref(),
            Some("5/30s")
        );
        assert_eq!(
            effective(LimitedOperation::GetIdentity).as_deref(),
            Some("10/1s")
        );
        assert_eq!(effective(LimitedOperation::DeleteIdentity), None);
        assert_eq!(
            effective(LimitedOperation::CreateIdentity).as_deref(),
            Some("1000/30s")
        );
        assert_eq!(effective(LimitedOperation::AuditQuery), None);
        for bad in ["issue_token", "steal_token=5/30s", "issue_token=5"] {
            assert!(bad.parse::<LimitTable>().is_err(), "{bad}");
        }
        for op in LimitedOperation::ALL {
            assert_eq!(LimitedOperation::parse(op.as_str()), Ok(op));
            assert_eq!(LimitedOperation::ALL[op.index()], op);
        }
    }
}
