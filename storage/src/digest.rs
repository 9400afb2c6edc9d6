//! Content digests (`algorithm:hex`) and incremental hashing whose state can be
//! saved between requests, so an upload can continue on any replica.

use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};

use crate::error::StorageError;

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

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// Parses an algorithm name; a well-formed but unknown one is `DigestUnsupported`.
    pub fn parse(name: &str) -> Result<Algorithm, StorageError> {
        match name {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other if is_algorithm_grammar(other) => {
                Err(StorageError::DigestUnsupported(other.to_owned()))
            }
            other => Err(StorageError::DigestInvalid(format!(
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
        let mut h = Hasher::new(algorithm);
        h.update(data);
        h.finish()
    }
}

impl FromStr for Digest {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Digest, StorageError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| StorageError::DigestInvalid(format!("{s:?} is not algorithm:hex")))?;
        let algorithm = Algorithm::parse(alg)?;
        let valid_hex = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid_hex {
            return Err(StorageError::DigestInvalid(format!(
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

/// A running hash of one algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let (alg, bytes) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest(format!("{}:{}", alg.name(), hex::encode(bytes)))
    }

    /// The hash state, to be stored with an upload between requests.
    pub fn save(&self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.serialize().to_vec(),
            Hasher::Sha512(h) => h.serialize().to_vec(),
        }
    }

    pub fn restore(algorithm: Algorithm, state: &[u8]) -> Option<Hasher> {
        match algorithm {
            Algorithm::Sha256 => state
                .try_into()
                .ok()
                .and_then(|s| Sha256::deserialize(s).ok())
                .map(Hasher::Sha256),
            Algorithm::Sha512 => state
                .try_into()
                .ok()
                .and_then(|s| Sha512::deserialize(s).ok())
                .map(Hasher::Sha512),
        }
    }
}

/// Hashes a body as it streams in. A long body is hashed on a blocking thread, so
/// hashing one chunk overlaps receiving and writing the next: SHA-256 runs at about
/// the speed of the network here, and on the receiving thread it would nearly halve
/// uploads. A short body is hashed inline (a thread hand-off costs more than its hash).
pub(crate) struct StreamHasher<'h> {
    hasher: &'h mut Hasher,
    hashed_inline: usize,
    worker: Option<(
        tokio::sync::mpsc::Sender<bytes::Bytes>,
        tokio::task::JoinHandle<Hasher>,
    )>,
}

impl<'h> StreamHasher<'h> {
    /// Bytes hashed inline before the rest goes to a thread.
    const INLINE_LIMIT: usize = 1024 * 1024;
    /// Chunks queued for the hashing thread at most (bounded memory).
    const QUEUE: usize = 16;

    pub fn new(hasher: &'h mut Hasher) -> StreamHasher<'h> {
        StreamHasher {
            hasher,
            hashed_inline: 0,
            worker: None,
        }
    }

    pub async fn update(&mut self, chunk: &bytes::Bytes) -> Result<(), StorageError> {
        if let Some((queue, _)) = &self.worker {
            return queue
                .send(chunk.clone())
                .await
                .map_err(|_| hashing_failed());
        }
        self.hasher.update(chunk);
        self.hashed_inline += chunk.len();
        if self.hashed_inline >= Self::INLINE_LIMIT {
            let (queue, mut chunks) = tokio::sync::mpsc::channel::<bytes::Bytes>(Self::QUEUE);
            let mut hasher = self.hasher.clone();
            let task = tokio::task::spawn_blocking(move || {
                while let Some(chunk) = chunks.blocking_recv() {
                    hasher.update(&chunk);
                }
                hasher
            });
            self.worker = Some((queue, task));
        }
        Ok(())
    }

    /// Waits for the hashing thread: the hasher then covers every chunk given.
    pub async fn finish(self) -> Result<(), StorageError> {
        if let Some((queue, task)) = self.worker {
            drop(queue);
            *self.hasher = task.await.map_err(|_| hashing_failed())?;
        }
        Ok(())
    }
}

fn hashing_failed() -> StorageError {
    StorageError::Io(std::io::Error::other("the hashing thread failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_long_stream_hashed_on_a_thread_matches_the_inline_hash() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut hasher = Hasher::new(algorithm);
            let mut stream = StreamHasher::new(&mut hasher);
            for chunk in data.chunks(100_000) {
                stream
                    .update(&bytes::Bytes::copy_from_slice(chunk))
                    .await
                    .unwrap();
            }
            stream.finish().await.unwrap();
            // The state covers every chunk: hashing can go on from it (a resumed upload).
            hasher.update(b"more");
            let whole = [data.as_slice(), b"more"].concat();
            assert_eq!(hasher.finish(), Digest::of(algorithm, &whole));
        }
    }

    #[test]
    fn parses_and_rejects_digests() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(d, Digest::of(Algorithm::Sha256, b""));
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(StorageError::DigestInvalid(_))
        ));
        assert!(matches!(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
                .parse::<Digest>(),
            Err(StorageError::DigestInvalid(_))
        ));
        assert!(matches!(
            "nodigest".parse::<Digest>(),
            Err(StorageError::DigestInvalid(_))
        ));
        assert!(matches!(
            "md5:abc".parse::<Digest>(),
            Err(StorageError::DigestUnsupported(_))
        ));
        assert!(matches!(
            "SHA256:abc".parse::<Digest>(),
            Err(StorageError::DigestInvalid(_))
        ));
        let long = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(long.hex().len(), 128);
        assert_eq!(long.as_str().parse::<Digest>().unwrap(), long);
    }

    #[test]
    fn saved_state_continues_the_hash() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut h = Hasher::new(alg);
            h.update(b"hello ");
            let mut resumed = Hasher::restore(alg, &h.save()).unwrap();
            resumed.update(b"world");
            assert_eq!(resumed.finish(), Digest::of(alg, b"hello world"));
        }
        assert!(Hasher::restore(Algorithm::Sha256, b"garbage").is_none());
    }
}
