//! The step cache: each step's result (image config and layers) kept in a file named
//! by the step's chain key, the hash of the previous step's key and the step itself.

use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use berth_oci::{Algorithm, Digest};

use super::State;
use crate::manifest::digest_of;
use crate::store::Store;

/// The step cache's key for a chain of steps: the hex SHA-256 of its description.
pub(super) fn chain_hash(data: &[u8]) -> String {
    Digest::of(Algorithm::Sha256, data).hex().to_owned()
}

/// A cache file's content.
#[derive(Serialize, Deserialize)]
struct Saved {
    config: Value,
    layers: Vec<Descriptor>,
}

pub(super) struct StepCache {
    dir: PathBuf,
}

impl StepCache {
    pub fn open(dir: &Path) -> anyhow::Result<StepCache> {
        std::fs::create_dir_all(dir)?;
        Ok(StepCache {
            dir: dir.to_owned(),
        })
    }

    /// A step's cached result, if every blob it names is still in the store.
    pub fn get(&self, store: &Store, chain: &str) -> Option<State> {
        let bytes = std::fs::read(self.dir.join(chain)).ok()?;
        let saved: Saved = serde_json::from_slice(&bytes).ok()?;
        let complete = saved.layers.iter().all(|l| store.has_blob(digest_of(l)));
        complete.then(|| State {
            config: saved.config,
            layers: saved.layers,
            chain: chain.to_owned(),
        })
    }

    pub fn put(&self, state: &State) -> anyhow::Result<()> {
        let saved = Saved {
            config: state.config.clone(),
            layers: state.layers.clone(),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::io::Write::write_all(&mut tmp, &serde_json::to_vec(&saved)?)?;
        tmp.persist(self.dir.join(&state.chain))?;
        Ok(())
    }
}
