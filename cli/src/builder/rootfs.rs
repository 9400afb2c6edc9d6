//! A stage's root filesystem on disk: unpacked from image layers (whiteouts applied),
//! snapshotted before and after a step, and the difference written as a new layer
//! (changed and new files, whiteouts for deleted ones).

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;

use flate2::read::GzDecoder;
use flate2::{Compression, GzBuilder};
use sha2::{Digest as _, Sha256};

use crate::inroot::{self, Root};
use crate::store::Store;

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
const AUFS_META: &str = ".wh..wh.";

/// Unpacks one layer (gzip or plain tar) into `root`, applying its whiteouts. Every
/// entry stays inside the root: names are cleaned (`..` at the root stays at the
/// root, absolute names are taken from the root) and resolved through the root's
/// own symbolic links as in a chroot, as containerd and BuildKit do.
pub fn apply_layer(root: &Root, layer: impl Read) -> anyhow::Result<()> {
    unpack(root, layer, true)
}

/// Unpacks an archive of files (an image archive for `berth image load`) into
/// `root`: no whiteouts, and a member with an absolute name or a `..` component is
/// refused, as `docker load` does.
pub fn unpack_archive(root: &Root, archive: impl Read) -> anyhow::Result<()> {
    unpack(root, archive, false)
}

/// A layer's or archive's tar stream: gunzipped when it starts as gzip does.
pub fn decompressed<'a>(input: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut input = std::io::BufReader::new(input);
    let gzip = std::io::BufRead::fill_buf(&mut input)?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(GzDecoder::new(input))
    } else {
        Box::new(input)
    })
}

fn unpack(root: &Root, input: impl Read, layer: bool) -> anyhow::Result<()> {
    let reader = decompressed(input)?;
    // Owners matter in an image's layers, not in the temporary copy of an archive.
    let set_owner = layer && running_as_root();
    let mut archive = tar::Archive::new(reader);
    // The paths this layer made: an opaque marker empties what earlier layers left
    // in its directory, not what this one put there before the marker.
    let mut made: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let kind = entry.header().entry_type();
        let what = if layer {
            "layer entry"
        } else {
            "archive member"
        };
        if !layer && (raw.has_root() || raw.components().any(|c| c == Component::ParentDir)) {
            anyhow::bail!(
                "{what} {} has an absolute name or a .. component: it would land outside the archive",
                raw.display()
            );
        }
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        let path = inroot::clean(&raw);
        let context = || format!("{what} {}", raw.display());
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let parent = path.parent().unwrap_or(Path::new("")).to_owned();
        if layer {
            match name.as_deref() {
                Some(OPAQUE) => {
                    // Everything below this directory from earlier layers goes.
                    root.clear_dir(&parent, |child| made.contains(&parent.join(child)))
                        .with_context(context)?;
                    continue;
                }
                // Other AUFS metadata (hard link directories and the like).
                Some(n) if n.starts_with(AUFS_META) => continue,
                Some(n) if n.starts_with(WHITEOUT) => {
                    let gone = &n[WHITEOUT.len()..];
                    anyhow::ensure!(
                        !gone.is_empty() && gone != "." && gone != "..",
                        "{}: not a valid whiteout",
                        context()
                    );
                    root.remove_all(&parent.join(gone)).with_context(context)?;
                    continue;
                }
                _ => {}
            }
        }
        write_entry(root, &path, &mut entry, layer, set_owner).with_context(context)?;
        made.insert(path);
    }
    Ok(())
}

/// Writes one entry at `path` (cleaned) in `root`, replacing what was there (a
/// directory stays when the entry is a directory too), with the entry's mode,
/// modification time and (for a layer, as root) owner.
fn write_entry(
    root: &Root,
    path: &Path,
    entry: &mut tar::Entry<'_, impl Read>,
    layer: bool,
    set_owner: bool,
) -> anyhow::Result<()> {
    let header = entry.header();
    let kind = header.entry_type();
    // A layer's modes are the image's; an archive's (whose writers often leave the
    // fields empty) only need to let berth read what it unpacked.
    let mode = match header.mode() {
        Ok(mode) => mode & 0o7777,
        Err(e) if layer => return Err(e.into()),
        Err(_) if kind.is_dir() => 0o755,
        Err(_) => 0o644,
    };
    // As the tar crate does: a zero time would puzzle some tools.
    let mtime = header.mtime().ok().map(|t| (t.max(1) as i64, 0));
    let owner = if set_owner {
        Some((header.uid()? as u32, header.gid()? as u32))
    } else {
        None
    };
    if path.as_os_str().is_empty() {
        // `./`: the root itself is left as it is (as docker and containerd do).
        return Ok(());
    }
    let existing = root.lstat(path)?;
    if existing.is_some_and(|m| !(m.is_dir() && kind.is_dir())) {
        root.remove_all(path)?;
    }
    if kind.is_dir() {
        root.create_dir(path, 0o700)?;
        root.set_meta(path, owner, Some(mode), mtime)?;
    } else if kind.is_symlink() {
        let target = entry
            .link_name()?
            .ok_or_else(|| anyhow::anyhow!("a symbolic link without a target"))?;
        root.symlink(path, &target)?;
        root.set_meta(path, owner, None, mtime)?;
    } else if kind.is_hard_link() {
        let target = entry
            .link_name()?
            .ok_or_else(|| anyhow::anyhow!("a hard link without a target"))?;
        root.hard_link(path, &inroot::clean(&target))?;
        // The link shares its target's inode: as before, only the owner is set.
        root.set_meta(path, owner, None, None)?;
    } else {
        // Regular files, and (as the tar crate did) anything else (devices, FIFOs)
        // as a regular file with the entry's data.
        let mut file = root.create_file(path, 0o600)?;
        std::io::copy(entry, &mut file)?;
        inroot::set_meta_fd(file.as_fd(), owner, Some(mode), mtime)
            .map_err(|e| anyhow::anyhow!("cannot set the metadata of {}: {e}", path.display()))?;
    }
    Ok(())
}

pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
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
    let files = Root::open(root)?;
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
            tar.append_data(&mut header, &path, files.open_read(&path, false)?)?;
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

    /// A tar entry with raw name and link name (the tar crate refuses `..` names).
    fn raw_entry(tar: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
        let mut header = tar::Header::new_ustar();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }

    #[test]
    fn hostile_layers_stay_in_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let (root_path, outside) = (base.join("root"), base.join("outside"));
        std::fs::create_dir_all(&root_path).unwrap();
        std::fs::create_dir_all(outside.join("dir/sub")).unwrap();
        for f in ["file", "other", "dir/child", "dir/sub/deep", "hard"] {
            std::fs::write(outside.join(f), f).unwrap();
        }
        let out = outside.to_str().unwrap();
        let up = "../../../../../../../../..";
        let mut layer = Vec::new();
        use tar::EntryType::{Link, Regular, Symlink};
        // Whiteouts through a symlinked directory, and with `..` and absolute names.
        raw_entry(&mut layer, "wh", Symlink, out, b"");
        raw_entry(&mut layer, "wh/.wh.file", Regular, "", b"");
        raw_entry(&mut layer, "wh/.wh.dir", Regular, "", b"");
        raw_entry(
            &mut layer,
            &format!("{up}{out}/.wh.other"),
            Regular,
            "",
            b"",
        );
        raw_entry(&mut layer, &format!("{out}/.wh.hard"), Regular, "", b"");
        // An opaque marker under a symlink to a host directory.
        raw_entry(&mut layer, "opq", Symlink, &format!("{out}/dir"), b"");
        raw_entry(&mut layer, "opq/.wh..wh..opq", Regular, "", b"");
        // Writes through the symlink and with `..`: into the image's copy.
        raw_entry(&mut layer, "wh/file", Regular, "", b"image file");
        raw_entry(
            &mut layer,
            &format!("{up}{out}/dotdot"),
            Regular,
            "",
            b"image dotdot",
        );
        // Hard links climbing out are confined to the image's file of that name.
        raw_entry(&mut layer, "hl", Link, &format!("{up}{out}/file"), b"");
        layer.extend_from_slice(&[0; 1024]);

        apply_layer(&Root::open(&root_path).unwrap(), &layer[..]).unwrap();
        for f in ["file", "other", "dir/child", "dir/sub/deep", "hard"] {
            assert_eq!(std::fs::read_to_string(outside.join(f)).unwrap(), f);
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 4);
        let in_root = root_path.join(out.trim_start_matches('/'));
        assert_eq!(std::fs::read(in_root.join("file")).unwrap(), b"image file");
        assert_eq!(
            std::fs::read(in_root.join("dotdot")).unwrap(),
            b"image dotdot"
        );
        assert_eq!(std::fs::read(root_path.join("hl")).unwrap(), b"image file");

        // A second layer: the opaque marker and whiteouts act on the image's copy.
        let mut second = Vec::new();
        raw_entry(&mut second, "wh/.wh..wh..opq", Regular, "", b"");
        raw_entry(&mut second, "wh/kept", Regular, "", b"same layer, after");
        raw_entry(&mut second, "hl", Regular, "", b"replaced");
        second.extend_from_slice(&[0; 1024]);
        apply_layer(&Root::open(&root_path).unwrap(), &second[..]).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&in_root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["kept"]);
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 4);
        assert_eq!(
            std::fs::read_to_string(outside.join("file")).unwrap(),
            "file"
        );

        // A hard link to a file only the host has is refused, naming the entry.
        let mut bad = Vec::new();
        raw_entry(&mut bad, "steal", Link, &format!("{up}{out}/other"), b"");
        bad.extend_from_slice(&[0; 1024]);
        let e = apply_layer(&Root::open(&root_path).unwrap(), &bad[..]).unwrap_err();
        assert!(format!("{e:#}").contains("layer entry steal"), "{e:#}");
        assert!(!root_path.join("steal").exists());
    }

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
        apply_layer(&Root::open(copy.path()).unwrap(), &bytes[..]).unwrap();
        assert!(!copy.path().join("etc/conf.d").exists());
        assert!(!copy.path().join("etc/gone").exists());
        assert_eq!(
            std::fs::read_to_string(copy.path().join("etc/new")).unwrap(),
            "new"
        );
    }
}
