//! COPY and ADD on the file system: what their sources are made of (for the cache
//! key), and copying files, directories and symbolic links from the build context or
//! an earlier stage's root to the stage's root, as docker does (modes and times
//! kept, `--chown` / `--chmod` applied, local tar archives unpacked by ADD).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::dockerfile::Instruction;
use super::{context, rootfs, Builder};
use crate::inroot::{self, Kind, Meta, Root};

/// What a COPY or ADD does.
pub(super) struct CopyStep {
    /// A finished stage, or `None` for the build context.
    pub from: Option<String>,
    pub sources: Vec<String>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<u32>,
    /// ADD: local tar archives are unpacked.
    pub extract: bool,
    /// Files the step makes itself: then the sources are their names, read from a
    /// directory of their own instead of the build context.
    pub made: Made,
}

/// What a COPY or ADD copies when not files of the context or a stage.
pub(super) enum Made {
    Nothing,
    /// Here-documents (name, content).
    Documents(Vec<(String, String)>),
    /// ADD's URLs, and the directory they were fetched into (before the step runs).
    Downloads {
        remotes: Vec<super::remote::Remote>,
        dir: Option<tempfile::TempDir>,
    },
}

impl Builder<'_> {
    /// What COPY's sources are made of, for its cache key: the content of every
    /// source in the context, or the `--from` stage's chain key.
    pub(super) fn copy_inputs(
        &self,
        inst: &Instruction,
        from: Option<&str>,
        sources: &[String],
    ) -> anyhow::Result<String> {
        match from {
            None => {
                let mut h = Sha256::new();
                for s in sources {
                    for rel in context::sources(&self.context, s, Some(&self.ignore))? {
                        hash_tree(&mut h, &self.context, &rel, &self.ignore)?;
                    }
                }
                Ok(hex::encode(h.finalize()))
            }
            Some(stage) => {
                let i = self.stage_index(stage).ok_or_else(|| {
                    inst.invalid(format!("--from={stage}: no earlier stage of that name"))
                })?;
                Ok(self.built(i).state.chain.clone())
            }
        }
    }

    /// Copies to the stage's root `root`.
    pub(super) fn copy_files(&mut self, root: &Path, copy: CopyStep) -> anyhow::Result<()> {
        let CopyStep {
            from,
            sources,
            dest,
            chown,
            chmod,
            extract,
            made,
        } = copy;
        let owner = chown
            .map(|c| super::run::resolve_user(root, &c))
            .transpose()?;
        let dst = Root::open(root)?;
        let to = Dest {
            root: &dst,
            owner,
            chmod,
        };
        // Another stage's files are read through that stage's root, as the image's
        // own are written through this one.
        let stage_root = match &from {
            None => None,
            Some(stage) => Some(Root::open(&self.stage_root(stage)?)?),
        };
        // Made files are in a directory of their own (names are checked where they
        // are read: letters, digits, `_.-` for documents, a URL's last segment, never
        // `.` or `..`).
        let own = match made {
            Made::Nothing => None,
            Made::Documents(docs) => {
                let dir = crate::private::tempdir("berth-heredocs-")?;
                for (name, content) in &docs {
                    std::fs::write(dir.path().join(name), content)?;
                }
                Some(dir)
            }
            Made::Downloads { dir, .. } => {
                Some(dir.ok_or_else(|| anyhow::anyhow!("the URLs were not fetched"))?)
            }
        };
        let (context_dir, ignore) = match &own {
            None => (self.context.as_path(), Some(&self.ignore)),
            Some(dir) => (dir.path(), None),
        };
        let source = match &stage_root {
            None => Source::Context(context_dir),
            Some(r) => Source::Stage(r),
        };
        let ignore = ignore.filter(|_| stage_root.is_none());
        let mut paths = Vec::new();
        for s in &sources {
            match &stage_root {
                // Made files are named as they are: no glob in a URL's file name.
                None if own.is_some() => paths.push(PathBuf::from(s)),
                None => paths.extend(context::sources(context_dir, s, ignore)?),
                Some(r) => paths.extend(context::stage_sources(r, s).map_err(|e| {
                    anyhow::anyhow!("COPY --from={}: {e}", from.as_deref().unwrap_or(""))
                })?),
            }
        }
        let to_dir = dest.ends_with('/') || paths.len() > 1;
        let dest_rel = PathBuf::from(dest.trim_start_matches('/'));
        for rel in paths {
            let meta = source.lstat(&rel)?;
            if meta.is_dir() {
                copy_tree(&source, &rel, &to, &dest_rel, ignore)?;
            } else if extract && source.open(&rel).map_or(Ok(false), is_archive)? {
                // Unpacked with the destination as its root, as docker does.
                let target = to.root.subroot(&dest_rel)?;
                rootfs::apply_layer(&target, source.open(&rel)?)?;
            } else {
                let into_dir = to_dir || to.root.is_dir(&dest_rel)?;
                let target = if into_dir {
                    dest_rel.join(rel.file_name().unwrap_or_default())
                } else {
                    dest_rel.clone()
                };
                copy_entry(&source, &rel, &to, &target)?;
            }
        }
        Ok(())
    }
}

impl Builder<'_> {
    /// A copy of the context's `source` (a file or a directory; `.dockerignore`
    /// applied, as for COPY) in a new directory, for a `RUN --mount=type=bind`: the
    /// command sees what COPY would copy and what the step's key was made of, and
    /// its writes go to the copy.
    pub(super) fn context_copy(
        &self,
        source: &str,
    ) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
        let found = context::sources(&self.context, source, Some(&self.ignore))?;
        let [rel] = found.as_slice() else {
            anyhow::bail!(
                "--mount source={source} names {} paths: one is mounted",
                found.len()
            );
        };
        let dir = crate::private::tempdir("berth-bind-")?;
        let root = Root::open(dir.path())?;
        let to = Dest {
            root: &root,
            owner: None,
            chmod: None,
        };
        let src = Source::Context(&self.context);
        let copy = Path::new("source");
        if src.lstat(rel)?.is_dir() {
            copy_tree(&src, rel, &to, copy, Some(&self.ignore))?;
        } else {
            copy_entry(&src, rel, &to, copy)?;
        }
        let path = dir.path().join(copy);
        Ok((dir, path))
    }
}

/// Feeds a source's content to the cache key: paths, modes, link targets, bytes.
fn hash_tree(
    h: &mut Sha256,
    root: &Path,
    rel: &Path,
    ignore: &context::Ignore,
) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let full = root.join(rel);
    let meta = full.symlink_metadata()?;
    h.update(rel.to_string_lossy().as_bytes());
    h.update(meta.mode().to_le_bytes());
    if meta.file_type().is_symlink() {
        h.update(std::fs::read_link(&full)?.to_string_lossy().as_bytes());
    } else if meta.is_file() {
        use std::io::Read;
        let mut file = std::fs::File::open(&full)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    } else if meta.is_dir() {
        let mut children: Vec<PathBuf> = std::fs::read_dir(&full)?
            .map(|e| Ok(child_path(rel, &e?.file_name())))
            .collect::<std::io::Result<_>>()?;
        children.sort();
        for child in children {
            if !ignore.ignored(&child) {
                hash_tree(h, root, &child, ignore)?;
            }
        }
    }
    Ok(())
}

/// `rel/name`, where the context itself (`.`) is the empty path, as `.dockerignore`
/// patterns expect.
fn child_path(rel: &Path, name: &std::ffi::OsStr) -> PathBuf {
    if rel == Path::new(".") {
        PathBuf::from(name)
    } else {
        rel.join(name)
    }
}

/// Where COPY reads: the build context (the user's own directory, read as it is) or
/// an earlier stage's root (read through that root, its symbolic links followed
/// inside it).
enum Source<'a> {
    Context(&'a Path),
    Stage(&'a Root),
}

impl Source<'_> {
    /// The metadata of `rel` itself (a symbolic link is not followed).
    fn lstat(&self, rel: &Path) -> anyhow::Result<Meta> {
        match self {
            Source::Context(dir) => {
                use std::os::unix::fs::MetadataExt;
                let m = dir.join(rel).symlink_metadata()?;
                let t = m.file_type();
                Ok(Meta {
                    kind: if t.is_symlink() {
                        Kind::Symlink
                    } else if t.is_dir() {
                        Kind::Dir
                    } else if t.is_file() {
                        Kind::File
                    } else {
                        Kind::Other
                    },
                    mode: m.mode() & 0o7777,
                    mtime: m.mtime(),
                    mtime_nsec: m.mtime_nsec() as u32,
                })
            }
            Source::Stage(root) => root
                .lstat(rel)?
                .ok_or_else(|| anyhow::anyhow!("{}: no such file or directory", rel.display())),
        }
    }

    fn read_dir(&self, rel: &Path) -> anyhow::Result<Vec<std::ffi::OsString>> {
        match self {
            Source::Context(dir) => Ok(std::fs::read_dir(dir.join(rel))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()?),
            Source::Stage(root) => Ok(root.read_dir(rel)?),
        }
    }

    fn read_link(&self, rel: &Path) -> anyhow::Result<PathBuf> {
        match self {
            Source::Context(dir) => Ok(std::fs::read_link(dir.join(rel))?),
            Source::Stage(root) => Ok(root.read_link(rel)?),
        }
    }

    /// Opens the file `rel` for reading, a symbolic link resolved inside the context
    /// or stage as if it were `/` (a link in the context never reaches a host file,
    /// whatever matched it: a glob's matches are not checked otherwise).
    fn open(&self, rel: &Path) -> anyhow::Result<std::fs::File> {
        match self {
            Source::Context(dir) => Ok(Root::open(dir)?.open_read(rel, true)?),
            Source::Stage(root) => Ok(root.open_read(rel, false)?),
        }
    }
}

/// Where COPY writes: the stage's root, with `--chown`'s owner and `--chmod`'s mode.
#[derive(Clone, Copy)]
struct Dest<'a> {
    root: &'a Root,
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
}

/// Copies the directory `rel`'s contents to `dest` (created as needed, symbolic
/// links on the way followed inside the root).
fn copy_tree(
    src: &Source<'_>,
    rel: &Path,
    to: &Dest<'_>,
    dest: &Path,
    ignore: Option<&context::Ignore>,
) -> anyhow::Result<()> {
    to.root.create_dir_all(dest)?;
    for name in src.read_dir(rel)? {
        let child_rel = child_path(rel, &name);
        if ignore.is_some_and(|i| i.ignored(&child_rel)) {
            continue;
        }
        let target = dest.join(&name);
        let meta = src.lstat(&child_rel)?;
        if meta.is_dir() {
            copy_tree(src, &child_rel, to, &target, ignore)?;
            let times = Some((meta.mtime, meta.mtime_nsec));
            to.root
                .set_meta(&target, owner_or_root(to.owner), to.chmod, times)?;
        } else {
            copy_entry(src, &child_rel, to, &target)?;
        }
    }
    Ok(())
}

/// Copies one file or symlink to `dest` in the root, keeping its mode and
/// modification time (as docker does), then applies --chown / --chmod.
fn copy_entry(src: &Source<'_>, rel: &Path, to: &Dest<'_>, dest: &Path) -> anyhow::Result<()> {
    let Dest { root, owner, chmod } = *to;
    let meta = src.lstat(rel)?;
    match meta.kind {
        Kind::Symlink => {
            root.symlink(dest, &src.read_link(rel)?)?;
            if owner.is_some() {
                root.set_meta(dest, owner, None, None)?;
            }
        }
        Kind::File => {
            let mut from = src.open(rel)?;
            let mut to = root.create_file(dest, 0o600)?;
            std::io::copy(&mut from, &mut to)?;
            inroot::set_meta_fd(
                to.as_fd(),
                owner_or_root(owner),
                Some(chmod.unwrap_or(meta.mode)),
                Some((meta.mtime, meta.mtime_nsec)),
            )
            .map_err(|e| anyhow::anyhow!("cannot set the metadata of /{}: {e}", dest.display()))?;
        }
        Kind::Dir | Kind::Other => anyhow::bail!(
            "{}: only files, directories and symbolic links can be copied",
            rel.display()
        ),
    }
    Ok(())
}

/// The owner of copied files and directories: `--chown`'s, else root (as in docker;
/// left as it is when not running as root, which could not change it).
fn owner_or_root(owner: Option<(u32, u32)>) -> Option<(u32, u32)> {
    owner.or(rootfs::running_as_root().then_some((0, 0)))
}

/// Whether ADD unpacks this file: a tar archive, plain or gzip-compressed.
fn is_archive(mut file: std::fs::File) -> anyhow::Result<bool> {
    use std::io::{Read, Seek};
    let mut head = vec![0u8; 512];
    let n = file.read(&mut head)?;
    head.truncate(n);
    if head.starts_with(&[0x1f, 0x8b]) {
        file.rewind()?;
        let mut gz = flate2::read::GzDecoder::new(file);
        let mut block = vec![0u8; 512];
        return Ok(gz.read_exact(&mut block).is_ok() && &block[257..262] == b"ustar");
    }
    Ok(head.len() == 512 && &head[257..262] == b"ustar")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link in the build context (as a glob like `ADD *.tar /` may match) is read
    /// inside the context, never from the host file it names.
    #[test]
    fn context_links_do_not_reach_host_files() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret.tar"), b"host bytes").unwrap();
        let context = tempfile::tempdir().unwrap();
        let outside = host.path().join("secret.tar");
        std::os::unix::fs::symlink(&outside, context.path().join("x.tar")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../..", context.path().join("up")).unwrap();
        std::fs::write(context.path().join("inside.tar"), b"context bytes").unwrap();
        std::os::unix::fs::symlink("inside.tar", context.path().join("y.tar")).unwrap();
        let source = Source::Context(context.path());
        assert!(source.open(Path::new("x.tar")).is_err());
        let escaped = Path::new("up").join(outside.strip_prefix("/").unwrap());
        assert!(source.open(&escaped).is_err());
        let mut read = String::new();
        std::io::Read::read_to_string(&mut source.open(Path::new("y.tar")).unwrap(), &mut read)
            .unwrap();
        assert_eq!(read, "context bytes");
    }
}
