//! A stage's root filesystem on disk: unpacked from image layers (whiteouts applied),
//! snapshotted before and after a step, and the difference written as a new layer
//! (changed and new files, whiteouts for deleted ones).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use flate2::{Compression, GzBuilder};
use sha2::{Digest as _, Sha256};

use crate::store::Store;

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Unpacks one layer (gzip or plain tar) into `root`, applying its whiteouts.
pub fn apply_layer(root: &Path, layer: impl Read) -> anyhow::Result<()> {
    let mut layer = std::io::BufReader::new(layer);
    let gzip = std::io::BufRead::fill_buf(&mut layer)?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip {
        Box::new(GzDecoder::new(layer))
    } else {
        Box::new(layer)
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let parent = root.join(path.parent().unwrap_or(Path::new("")));
        match name.as_deref() {
            Some(OPAQUE) => {
                // Everything below this directory from earlier layers goes.
                if parent.is_dir() {
                    for child in std::fs::read_dir(&parent)? {
                        remove_any(&child?.path())?;
                    }
                }
            }
            Some(n) if n.starts_with(WHITEOUT) => {
                remove_any(&parent.join(&n[WHITEOUT.len()..]))?;
            }
            _ => {
                // A later layer may replace a directory with a file or the reverse.
                let target = root.join(&path);
                if let Ok(meta) = target.symlink_metadata() {
                    let replacing_dir_with_dir =
                        meta.is_dir() && entry.header().entry_type().is_dir();
                    if !replacing_dir_with_dir {
                        remove_any(&target)?;
                    }
                }
                entry.set_preserve_permissions(true);
                entry.set_preserve_mtime(true);
                entry.set_unpack_xattrs(false);
                entry.unpack_in(root)?;
                if running_as_root() {
                    let (uid, gid) = (entry.header().uid()?, entry.header().gid()?);
                    let _ = std::os::unix::fs::lchown(&target, Some(uid as u32), Some(gid as u32));
                }
            }
        }
    }
    Ok(())
}

pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What identifies a file's state: a change to any of these is a change to the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    link: Option<PathBuf>,
}

/// Every path under `root` (relative, `/`-separated) with its state.
pub type Snapshot = BTreeMap<PathBuf, FileState>;

pub fn snapshot(root: &Path) -> anyhow::Result<Snapshot> {
    let mut out = Snapshot::new();
    walk(root, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk(root: &Path, rel: &Path, out: &mut Snapshot) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let rel_path = rel.join(entry.file_name());
        let meta = entry.path().symlink_metadata()?;
        let link = meta
            .file_type()
            .is_symlink()
            .then(|| std::fs::read_link(entry.path()))
            .transpose()?;
        out.insert(
            rel_path.clone(),
            FileState {
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                size: meta.len(),
                mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
                ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
                ino: meta.ino(),
                link,
            },
        );
        if meta.is_dir() {
            walk(root, &rel_path, out)?;
        }
    }
    Ok(())
}

/// A layer written to the store: its blob digest, compressed size and `diff_id`.
#[derive(Debug, Clone)]
pub struct Layer {
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
}

/// Writes the difference between `before` and the current state of `root` as a gzip
/// layer: new and changed paths, and a whiteout for each deleted one (one for a deleted
/// directory, not one per file in it). `None` when nothing changed. With `clamp`
/// (SOURCE_DATE_EPOCH) no file time in the layer is later than it, so the same inputs
/// give the same bytes.
pub fn write_diff(
    store: &Store,
    root: &Path,
    before: &Snapshot,
    clamp: Option<u64>,
) -> anyhow::Result<Option<Layer>> {
    let after = snapshot(root)?;
    let changed: Vec<&PathBuf> = after
        .iter()
        .filter(|(p, state)| before.get(*p) != Some(state))
        .map(|(p, _)| p)
        .collect();
    let deleted: Vec<&PathBuf> = before
        .keys()
        .filter(|p| !after.contains_key(*p))
        .filter(|p| {
            // Only the topmost deleted path: its whiteout covers everything below.
            !p.ancestors()
                .skip(1)
                .any(|a| before.contains_key(a) && !after.contains_key(a))
        })
        .collect();
    if changed.is_empty() && deleted.is_empty() {
        return Ok(None);
    }
    let mut entries: Vec<(PathBuf, bool)> = changed.iter().map(|p| ((*p).clone(), false)).collect();
    entries.extend(deleted.iter().map(|p| {
        let name = format!("{WHITEOUT}{}", p.file_name().unwrap().to_string_lossy());
        (p.parent().unwrap_or(Path::new("")).join(name), true)
    }));
    entries.sort();

    let tar_hash = HashingWriter {
        inner: GzBuilder::new()
            .mtime(0)
            .write(store.blob_writer()?, Compression::default()),
        hasher: Sha256::new(),
    };
    let mut tar = tar::Builder::new(tar_hash);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    for (path, whiteout) in entries {
        let mut header = tar::Header::new_gnu();
        if whiteout {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(0);
            header.set_mode(0o644);
            header.set_mtime(clamp.unwrap_or(0));
            header.set_uid(0);
            header.set_gid(0);
            tar.append_data(&mut header, &path, std::io::empty())?;
            continue;
        }
        let full = root.join(&path);
        let meta = full.symlink_metadata()?;
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        if let Some(gnu) = header.as_gnu_mut() {
            // Access and change times say when the build ran, not what it made.
            gnu.set_atime(0);
            gnu.set_ctime(0);
        }
        if let Some(limit) = clamp {
            header.set_mtime(header.mtime()?.min(limit));
        }
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full)?;
            header.set_size(0);
            tar.append_link(&mut header, &path, &target)?;
        } else if meta.is_file() {
            tar.append_data(&mut header, &path, std::fs::File::open(&full)?)?;
        } else {
            header.set_size(0);
            tar.append_data(&mut header, &path, std::io::empty())?;
        }
    }
    let hashing = tar.into_inner()?;
    let diff_id = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    let writer = hashing.inner.finish()?;
    let size = writer.size();
    let digest = writer.finish(None)?;
    Ok(Some(Layer {
        digest,
        size,
        diff_id,
    }))
}

/// Hashes what passes through: the uncompressed tar's digest is the layer's diff_id.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_hold_changes_and_whiteouts() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(&home.path().join("images")).unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc/conf.d")).unwrap();
        std::fs::write(r.join("etc/keep"), "same").unwrap();
        std::fs::write(r.join("etc/conf.d/a"), "a").unwrap();
        std::fs::write(r.join("etc/gone"), "x").unwrap();
        let before = snapshot(r).unwrap();
        assert!(
            write_diff(&store, r, &before, None).unwrap().is_none(),
            "nothing changed"
        );
        std::fs::remove_dir_all(r.join("etc/conf.d")).unwrap();
        std::fs::remove_file(r.join("etc/gone")).unwrap();
        std::fs::write(r.join("etc/new"), "new").unwrap();
        let layer = write_diff(&store, r, &before, Some(1)).unwrap().unwrap();
        let bytes = store.read_blob(&layer.digest).unwrap();
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(GzDecoder::new(&bytes[..]));
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            assert!(e.header().mtime().unwrap() <= 1, "times clamped");
            names.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(names, ["etc", "etc/.wh.conf.d", "etc/.wh.gone", "etc/new"]);

        // Applied to a copy of the old tree, the layer gives the new tree.
        let copy = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(copy.path().join("etc/conf.d")).unwrap();
        std::fs::write(copy.path().join("etc/conf.d/a"), "a").unwrap();
        std::fs::write(copy.path().join("etc/gone"), "x").unwrap();
        apply_layer(copy.path(), &bytes[..]).unwrap();
        assert!(!copy.path().join("etc/conf.d").exists());
        assert!(!copy.path().join("etc/gone").exists());
        assert_eq!(
            std::fs::read_to_string(copy.path().join("etc/new")).unwrap(),
            "new"
        );
    }
}
