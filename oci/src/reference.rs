//! A manifest reference in a URL: a tag or a digest.

use crate::digest::Digest;
use crate::error::OciError;
use crate::names::validate_tag;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// A reference with a `:` is a digest (tags cannot contain one), else a tag.
    pub fn parse(s: &str) -> Result<Reference, OciError> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            validate_tag(s)?;
            Ok(Reference::Tag(s.to_owned()))
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[test]
    fn references_are_tags_or_digests() {
        assert_eq!(
            Reference::parse("latest").unwrap(),
            Reference::Tag("latest".into())
        );
        assert!(matches!(
            Reference::parse(Digest::of(Algorithm::Sha256, b"").as_str()).unwrap(),
            Reference::Digest(_)
        ));
        assert!(matches!(
            Reference::parse("bad/tag"),
            Err(OciError::TagInvalid(_))
        ));
        assert!(matches!(
            Reference::parse("sha256:zz"),
            Err(OciError::DigestInvalid(_))
        ));
    }
}
