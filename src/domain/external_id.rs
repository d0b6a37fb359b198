use super::ParseError;

/// The caller's own key for an identity (`externalId`), unique within a tenant; creating an
/// identity with an `externalId` that exists returns the existing identity.
///
/// It is personal data: it is removed when the identity is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExternalId(String);

impl ExternalId {
    pub const MAX_CHARS: usize = 256;

    pub fn parse(value: String) -> Result<Self, ParseError> {
        let chars = value.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS {
            return Err(ParseError::new(format!(
                "externalId must be 1 to {} characters long; got {chars}.",
                Self::MAX_CHARS
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(ParseError::new(
                "externalId must not contain control characters.",
            ));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_bounded_in_characters() {
        assert!(ExternalId::parse("a".into()).is_ok());
        assert!(ExternalId::parse("é".repeat(256)).is_ok());
        assert!(ExternalId::parse(String::new()).is_err());
        assert!(ExternalId::parse("a".repeat(257)).is_err());
        assert!(ExternalId::parse("a\u{0}b".into()).is_err());
    }
}
