//! Repository names and tags, by the grammar of the distribution spec.

use std::sync::LazyLock;

use regex::Regex;

use crate::error::OciError;

static NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")
        .expect("valid regex")
});
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").expect("valid regex"));

/// Docker clients limit a full reference to 255 characters; the name is the bulk of it.
const MAX_NAME_LEN: usize = 255;

/// A repository name that satisfies the spec's grammar: every value of this type was
/// checked once, where it entered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(name: &str) -> Result<RepoName, OciError> {
        validate_name(name)?;
        Ok(RepoName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace of `alice/app` is `alice`; a name without one (`app`) has none.
    pub fn namespace(&self) -> Option<&str> {
        self.0.split_once('/').map(|(ns, _)| ns)
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for RepoName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

pub fn validate_name(name: &str) -> Result<(), OciError> {
    if name.len() <= MAX_NAME_LEN && NAME.is_match(name) {
        Ok(())
    } else {
        Err(OciError::NameInvalid(format!(
            "{name:?} must be lowercase path components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/', at most {MAX_NAME_LEN} characters"
        )))
    }
}

pub fn validate_tag(tag: &str) -> Result<(), OciError> {
    if TAG.is_match(tag) {
        Ok(())
    } else {
        Err(OciError::TagInvalid(format!(
            "{tag:?} must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_grammar() {
        for ok in ["a", "foo/bar", "library/ubuntu", "a.b_c__d--e/f0", "x/y/z"] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            "Foo",
            "foo/",
            "/foo",
            "foo//bar",
            "foo..bar",
            "foo___bar",
            "-foo",
            "foo:bar",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        for ok in ["latest", "v1.0", "_x", "A-b.c_d"] {
            validate_tag(ok).unwrap();
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }
}
