//! Incremental hashing whose state can be saved between requests, so an upload can
//! continue on any replica. The digest types themselves are `berth_oci`'s.

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};

pub use berth_oci::digest::{Algorithm, Digest};

use crate::error::StorageError;

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
        Digest::from_hash(alg, &bytes)
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
