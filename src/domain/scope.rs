use std::fmt;

use super::ParseError;
use super::api_version::truncate;

/// What a token lets its holder do, as the ACS Identity API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Chat,
    Voip,
    ChatJoin,
    ChatJoinLimited,
    VoipJoin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Chat,
        Scope::Voip,
        Scope::ChatJoin,
        Scope::ChatJoinLimited,
        Scope::VoipJoin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Voip => "voip",
            Scope::ChatJoin => "chat.join",
            Scope::ChatJoinLimited => "chat.join.limited",
            Scope::VoipJoin => "voip.join",
        }
    }

    pub fn parse(value: &str) -> Result<Self, ParseError> {
        Self::ALL.into_iter().find(|s| s.as_str() == value).ok_or_else(|| {
            ParseError::new(format!(
                "'{}' is not a valid scope; valid scopes are chat, voip, chat.join, chat.join.limited and voip.join.",
                truncate(value, 40)
            ))
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-empty list of distinct scopes, in the order the client gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, ParseError> {
        if values.is_empty() {
            return Err(ParseError::new("At least one scope is required."));
        }
        let mut scopes = Vec::with_capacity(values.len());
        for value in values {
            let scope = Scope::parse(value.as_ref())?;
            if scopes.contains(&scope) {
                return Err(ParseError::new(format!(
                    "The scope '{scope}' is listed twice."
                )));
            }
            scopes.push(scope);
        }
        Ok(Self(scopes))
    }

    /// Parses the comma-joined form kept in the database.
    pub fn from_stored(value: &str) -> Result<Self, ParseError> {
        let parts: Vec<&str> = value.split(',').collect();
        Self::parse(&parts)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    /// `chat,voip`: how ACS tokens carry scopes in `acsScope`, and how the database keeps them.
    pub fn comma_joined(&self) -> String {
        self.join(",")
    }

    /// `chat voip`: the OAuth form (`scp`, RFC 7662 `scope`).
    pub fn space_joined(&self) -> String {
        self.join(" ")
    }

    fn join(&self, separator: &str) -> String {
        self.0
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(separator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_round_trips() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Ok(scope));
        }
    }

    #[test]
    fn sets_keep_order_and_join_both_ways() {
        let set = ScopeSet::parse(&["voip", "chat.join"]).expect("valid");
        assert_eq!(set.comma_joined(), "voip,chat.join");
        assert_eq!(set.space_joined(), "voip chat.join");
        assert_eq!(ScopeSet::from_stored("voip,chat.join"), Ok(set));
    }

    #[test]
    fn empty_unknown_duplicate_and_miscased_scopes_are_refused() {
        let cases: [&[&str]; 5] = [
            &[],
            &["Chat"],
            &["chat", "chat"],
            &["chat", ""],
            &["openid"],
        ];
        for case in cases {
            assert!(ScopeSet::parse(case).is_err(), "{case:?} was accepted");
        }
    }
}
