//! Docker token scopes (`repository:alice/app:pull,push`) and the access entries of a
//! token (`{"type":"repository","name":"alice/app","actions":["pull"]}`).

use serde::{Deserialize, Serialize};

use crate::error::AuthError;

/// One requested scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    /// Parses `type:name:actions`; the name may itself contain `:` (a registry host with
    /// a port), so the type is the first field and the actions the last.
    pub fn parse(s: &str) -> Result<Scope, AuthError> {
        let invalid = || AuthError::ScopeInvalid(s.to_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(invalid)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(invalid)?;
        if kind.is_empty() || name.is_empty() {
            return Err(invalid());
        }
        let actions = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Scope {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions,
        })
    }
}

/// What a token grants on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.kind == kind
            && self.name == name
            && self.actions.iter().any(|a| a == action || a == "*")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse() {
        let s = Scope::parse("repository:alice/app:pull,push").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.name.as_str()),
            ("repository", "alice/app")
        );
        assert_eq!(s.actions, ["pull", "push"]);
        let s = Scope::parse("repository:localhost:5000/a:pull").unwrap();
        assert_eq!(s.name, "localhost:5000/a");
        assert_eq!(Scope::parse("registry:catalog:*").unwrap().actions, ["*"]);
        assert!(Scope::parse("nonsense").is_err());
        assert!(Scope::parse("repository::pull").is_err());
    }
}
