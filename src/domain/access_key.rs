use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use zeroize::Zeroizing;

use super::ParseError;

/// Which of a tenant's two access keys; both verify, so one can be rotated at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySlot {
    Primary,
    Secondary,
}

impl KeySlot {
    pub const BOTH: [KeySlot; 2] = [KeySlot::Primary, KeySlot::Secondary];

    pub fn as_str(self) -> &'static str {
        match self {
            KeySlot::Primary => "primary",
            KeySlot::Secondary => "secondary",
        }
    }

    pub fn parse(value: &str) -> Result<Self, ParseError> {
        match value {
            "primary" => Ok(KeySlot::Primary),
            "secondary" => Ok(KeySlot::Secondary),
            _ => Err(ParseError::new("key must be 'primary' or 'secondary'.")),
        }
    }
}

/// An HMAC access key: 64 random bytes, shown to people in base64 as ACS keys are.
/// The bytes are wiped from memory when the value is dropped, and `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey(Zeroizing<Vec<u8>>);

impl AccessKey {
    pub const LEN: usize = 64;

    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; Self::LEN]);
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ParseError> {
        if bytes.len() < 32 {
            return Err(ParseError::new("an access key must be at least 32 bytes."));
        }
        Ok(Self(Zeroizing::new(bytes)))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.as_bytes())
    }
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_never_printed() {
        let a = AccessKey::generate();
        assert_ne!(a, AccessKey::generate());
        assert_eq!(
            STANDARD.decode(a.to_base64()).ok().as_deref(),
            Some(a.as_bytes())
        );
        assert!(!format!("{a:?}").contains(&a.to_base64()));
    }
}
