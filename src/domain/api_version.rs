use super::ParseError;

/// An `api-version` of the ACS Identity API that this server speaks. All stable versions share
/// the wire shapes callsign serves, so the value is validated but does not change behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersion(&'static str);

impl ApiVersion {
    pub const SUPPORTED: [&'static str; 6] = [
        "2021-03-07",
        "2022-06-01",
        "2022-10-01",
        "2023-08-01",
        "2023-10-01",
        "2025-06-30",
    ];

    pub fn parse(value: Option<&str>) -> Result<Self, ParseError> {
        let Some(value) = value else {
            return Err(ParseError::new(format!(
                "The api-version query parameter is required; supported versions are {}.",
                Self::SUPPORTED.join(", ")
            )));
        };
        Self::SUPPORTED
            .iter()
            .find(|v| **v == value)
            .map(|v| Self(v))
            .ok_or_else(|| {
                ParseError::new(format!(
                    "The api-version '{}' is not supported; supported versions are {}.",
                    truncate(value, 40),
                    Self::SUPPORTED.join(", ")
                ))
            })
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

/// Bounds what a client-supplied value may add to an error message.
pub(crate) fn truncate(value: &str, max_chars: usize) -> String {
    let mut out: String = value.chars().take(max_chars).collect();
    if value.chars().count() > max_chars {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stable_version_is_accepted() {
        for v in ApiVersion::SUPPORTED {
            assert_eq!(ApiVersion::parse(Some(v)).map(|a| a.as_str()), Ok(v));
        }
    }

    #[test]
    fn missing_unknown_and_preview_versions_are_refused() {
        for v in [
            None,
            Some(""),
            Some("2020-07-20-preview2"),
            Some("2023-10-01 "),
            Some("x"),
        ] {
            assert!(ApiVersion::parse(v).is_err(), "{v:?} was accepted");
        }
    }
}
