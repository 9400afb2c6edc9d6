//! Content digests (`algorithm:hex`) of the algorithms the registry supports.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

use crate::error::OciError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// Parses an algorithm name; a well-formed but unknown one is `DigestUnsupported`.
    pub fn parse(name: &str) -> Result<Algorithm, OciError> {
        match name {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other if is_algorithm_grammar(other) => {
                Err(OciError::DigestUnsupported(other.to_owned()))
            }
            other => Err(OciError::DigestInvalid(format!(
                "malformed digest algorithm {other:?}"
            ))),
        }
    }
}

/// `algorithm ::= component ([+._-] component)*`, `component ::= [a-z0-9]+`.
fn is_algorithm_grammar(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// A validated digest of a supported algorithm, e.g. `sha256:9f86d0…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        if self.0.starts_with("sha512:") {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        }
    }

    pub fn hex(&self) -> &str {
        &self.0[self.0.find(':').map_or(0, |i| i + 1)..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let hash = match algorithm {
            Algorithm::Sha256 => Sha256::digest(data).to_vec(),
            Algorithm::Sha512 => Sha512::digest(data).to_vec(),
        };
        Digest::from_hash(algorithm, &hash)
    }

    /// The digest whose hash is `hash` (the output of `algorithm`).
    pub fn from_hash(algorithm: Algorithm, hash: &[u8]) -> Digest {
        debug_assert_eq!(hash.len() * 2, algorithm.hex_len());
        Digest(format!("{}:{}", algorithm.name(), hex::encode(hash)))
    }
}

impl FromStr for Digest {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Digest, OciError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| OciError::DigestInvalid(format!("{s:?} is not algorithm:hex")))?;
        let algorithm = Algorithm::parse(alg)?;
        let valid_hex = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid_hex {
            return Err(OciError::DigestInvalid(format!(
                "{s:?}: {alg} needs {} lowercase hex characters",
                algorithm.hex_len()
            )));
        }
        Ok(Digest(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_digests() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(d, Digest::of(Algorithm::Sha256, b""));
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(OciError::DigestInvalid(_))
        ));
        assert!(matches!(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
                .parse::<Digest>(),
            Err(OciError::DigestInvalid(_))
        ));
        assert!(matches!(
            "nodigest".parse::<Digest>(),
            Err(OciError::DigestInvalid(_))
        ));
        assert!(matches!(
            "md5:abc".parse::<Digest>(),
            Err(OciError::DigestUnsupported(_))
        ));
        assert!(matches!(
            "SHA256:abc".parse::<Digest>(),
            Err(OciError::DigestInvalid(_))
        ));
        let long = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(long.hex().len(), 128);
        assert_eq!(long.as_str().parse::<Digest>().unwrap(), long);
    }
}
