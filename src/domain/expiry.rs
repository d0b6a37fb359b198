use super::ParseError;

/// The lifetime of an access token in minutes: 60..=1440, 1440 when the client gives none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryMinutes(u16);

impl ExpiryMinutes {
    pub const MIN: i64 = 60;
    pub const MAX: i64 = 1440;
    pub const DEFAULT: Self = Self(1440);

    pub fn parse(minutes: Option<i64>) -> Result<Self, ParseError> {
        match minutes {
            None => Ok(Self::DEFAULT),
            Some(m) if (Self::MIN..=Self::MAX).contains(&m) => Ok(Self(m as u16)),
            Some(m) => Err(ParseError::new(format!(
                "expiresInMinutes must be between {} and {}; got {m}.",
                Self::MIN,
                Self::MAX
            ))),
        }
    }

    pub fn minutes(self) -> i64 {
        i64::from(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_and_default_is_a_day() {
        assert_eq!(ExpiryMinutes::parse(None).map(|e| e.minutes()), Ok(1440));
        assert_eq!(ExpiryMinutes::parse(Some(60)).map(|e| e.minutes()), Ok(60));
        assert_eq!(
            ExpiryMinutes::parse(Some(1440)).map(|e| e.minutes()),
            Ok(1440)
        );
        for bad in [i64::MIN, -1, 0, 59, 1441, i64::MAX] {
            assert!(
                ExpiryMinutes::parse(Some(bad)).is_err(),
                "{bad} was accepted"
            );
        }
    }
}
