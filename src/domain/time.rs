use std::time::{SystemTime, UNIX_EPOCH};

use ::time::OffsetDateTime;
use ::time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch: the one time representation stored in both databases
/// (an `int8` on PostgreSQL, an `INTEGER` on SQLite), so the two dialects never disagree on
/// time zones or text formats.
pub type UnixMillis = i64;

/// A point in time with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(UnixMillis);

impl Timestamp {
    pub fn now() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self(millis)
    }

    pub const fn from_millis(millis: UnixMillis) -> Self {
        Self(millis)
    }

    pub const fn millis(self) -> UnixMillis {
        self.0
    }

    /// Whole seconds, rounded down: what JWT `iat`/`nbf`/`exp` carry.
    pub const fn seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub const fn plus_minutes(self, minutes: i64) -> Self {
        Self(self.0 + minutes * 60_000)
    }

    /// RFC 3339 in UTC with a `Z` suffix and millisecond precision, as ACS answers
    /// `expiresOn` and `lastTokenIssuedAt`.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_with_z() {
        assert_eq!(
            Timestamp::from_millis(0).to_rfc3339(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_millis(1_700_000_000_123).to_rfc3339(),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn seconds_round_down() {
        assert_eq!(Timestamp::from_millis(1999).seconds(), 1);
        assert_eq!(
            Timestamp::from_millis(1000).plus_minutes(60).millis(),
            3_601_000
        );
    }
}
