//! The free-space reserve: below `storage.min_free` on the file systems Berth writes
//! (the SQLite database's directory, the local blob root), new uploads and pushes are
//! refused before they send a byte, so the small metadata commits that are still
//! allowed (completions of what was received, deletes, cancels, sessions) never meet a
//! full disk. Space is measured at each check (one `statvfs`), so pushes resume as
//! soon as space is freed.

use std::path::PathBuf;

use berth_config::{Config, MinFree, StorageConfig};

use crate::db::sqlite_file;
use crate::error::{Result, StorageError};

#[derive(Debug, Clone)]
pub struct Space {
    /// Directories on the file systems to watch (none with PostgreSQL and S3).
    dirs: Vec<PathBuf>,
    reserve: MinFree,
    /// Whether blobs are stored on a local file system (watched among `dirs`).
    local_blobs: bool,
}

/// Free space on the fullest watched file system, and the reserve kept there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSpace {
    pub free: u64,
    pub reserve: u64,
}

impl FreeSpace {
    pub fn below_reserve(&self) -> bool {
        self.free < self.reserve
    }
}

impl Space {
    pub fn for_config(config: &Config) -> Space {
        let mut dirs = Vec::new();
        if let Some(db) = sqlite_file(&config.database_url()) {
            dirs.push(
                db.parent()
                    .map_or_else(|| PathBuf::from("."), PathBuf::from),
            );
        }
        let local_blobs = matches!(config.storage, StorageConfig::Filesystem { .. });
        if local_blobs {
            dirs.extend(config.blob_root());
        }
        // Proxies spool the blobs they fetch there (even on PostgreSQL and S3).
        if !config.proxies.is_empty() {
            dirs.push(config.data_dir.clone());
        }
        Space {
            dirs,
            reserve: config.min_free,
            local_blobs,
        }
    }

    /// Whether a blob stored takes its size of the watched local disk.
    pub fn local_blobs(&self) -> bool {
        self.local_blobs
    }

    /// The tightest watched file system; `None` when Berth writes no local files.
    pub fn measure(&self) -> Result<Option<FreeSpace>> {
        let mut tightest: Option<FreeSpace> = None;
        for dir in &self.dirs {
            let stat = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
            let free = stat.f_bavail.saturating_mul(stat.f_frsize);
            let total = stat.f_blocks.saturating_mul(stat.f_frsize);
            let here = FreeSpace {
                free,
                reserve: self.reserve.bytes_of(total),
            };
            let margin = |s: &FreeSpace| s.free as i128 - s.reserve as i128;
            if tightest.as_ref().is_none_or(|t| margin(&here) < margin(t)) {
                tightest = Some(here);
            }
        }
        Ok(tightest)
    }

    /// `BelowReserve` when new data must be refused.
    pub fn ensure_room(&self) -> Result<()> {
        match self.measure()? {
            Some(space) if space.below_reserve() => Err(StorageError::BelowReserve {
                free: space.free,
                reserve: space.reserve,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_none_admits() {
        let dir = tempfile::tempdir().unwrap();
        let mut space = Space {
            dirs: vec![dir.path().to_owned()],
            reserve: MinFree::Bytes(u64::MAX),
            local_blobs: true,
        };
        let measured = space.measure().unwrap().unwrap();
        assert!(measured.free > 0 && measured.below_reserve());
        assert!(matches!(
            space.ensure_room(),
            Err(StorageError::BelowReserve { .. })
        ));
        space.reserve = MinFree::Bytes(0);
        space.ensure_room().unwrap();
        space.reserve = MinFree::Percent(0);
        space.ensure_room().unwrap();
    }

    #[test]
    fn without_local_files_nothing_is_watched() {
        let nothing = Space {
            dirs: Vec::new(),
            reserve: MinFree::Bytes(u64::MAX),
            local_blobs: false,
        };
        assert_eq!(nothing.measure().unwrap(), None);
        nothing.ensure_room().unwrap();
    }
}
