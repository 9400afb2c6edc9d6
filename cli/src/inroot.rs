//! Files inside an image root, reached only through a descriptor of the root
//! directory: every path is resolved by the kernel with `openat2(RESOLVE_IN_ROOT)`,
//! as if the root were `/` (a chroot). A symbolic link in the image to `/etc` leads to
//! `<root>/etc`, `..` at the root stays at the root, and nothing an image holds can
//! lead a build or a load to the host's files. The last component of a path is
//! handled with `*at` calls on its (resolved) parent directory, without following
//! it, so creating, linking or removing a symbolic link acts on the link itself.
//!
//! Paths given here are relative to the root, with or without a leading `/`.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;

/// Symbolic links followed by hand (to create the missing directory a dangling link
/// names) before a path counts as a loop; the kernel's own limit is 40.
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {op} {path} in the image: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot {op} {path} in the image: too many levels of symbolic links (a symlink loop)")]
    Loop { op: &'static str, path: String },
    #[error("cannot {op} {path} in the image: {reason}")]
    Invalid {
        op: &'static str,
        path: String,
        reason: &'static str,
    },
    #[error("resolving paths inside an image root needs openat2(2), Linux 5.6 or later")]
    Unsupported,
}

pub type Result<T> = std::result::Result<T, Error>;

/// `path` as shown in messages: absolute, from the image root.
fn shown(path: &Path) -> String {
    let s = path.to_string_lossy();
    if s.starts_with('/') {
        s.into_owned()
    } else {
        format!("/{s}")
    }
}

fn fail(op: &'static str, path: &Path, errno: Errno) -> Error {
    match errno {
        Errno::LOOP => Error::Loop {
            op,
            path: shown(path),
        },
        Errno::NOSYS => Error::Unsupported,
        e => Error::Io {
            op,
            path: shown(path),
            source: e.into(),
        },
    }
}

/// The normal components of `path`, cleaned as docker cleans a path: `.` and empty
/// components dropped, `..` taking one back (at the root it stays at the root),
/// a leading `/` meaning the root.
pub fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The components of a symbolic link's target, `..` kept (the kernel resolves them
/// after the links before them).
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn joined(parts: &[OsString]) -> PathBuf {
    parts.iter().collect()
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// The metadata of a file in the image.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits, with set-user-ID, set-group-ID and sticky.
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
}

impl Meta {
    // The field types of `struct stat` differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &rustix::fs::Stat) -> Meta {
        let kind = match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::RegularFile => Kind::File,
            rustix::fs::FileType::Directory => Kind::Dir,
            rustix::fs::FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        };
        Meta {
            kind,
            mode: st.st_mode & 0o7777,
            mtime: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as u32,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
}

/// An image root directory (or a directory treated as one, as ADD does for the
/// archives it unpacks).
pub struct Root {
    dir: OwnedFd,
}

impl Root {
    /// The directory at `path` on the host (a directory berth made: not resolved in
    /// any root).
    pub fn open(path: &Path) -> Result<Root> {
        let dir = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail("open", path, e))?;
        Ok(Root { dir })
    }

    /// The directory `path` of this root, made if missing, as a root of its own.
    pub fn subroot(&self, path: &Path) -> Result<Root> {
        Ok(Root {
            dir: self.create_dir_all(path)?,
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// `path` opened with `flags`, every symbolic link on the way (the last
    /// component too) followed inside the root.
    fn resolve(&self, path: &Path, flags: OFlags) -> std::result::Result<OwnedFd, Errno> {
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(
                self.fd(),
                path,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                // A rename elsewhere raced with the lookup: the kernel asks to retry.
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                other => return other,
            }
        }
    }

    /// The directory that holds `path` and the name of `path` in it, or `None` for
    /// the root itself. With `create`, missing directories on the way are made.
    fn parent(
        &self,
        path: &Path,
        create: bool,
        op: &'static str,
    ) -> Result<Option<(OwnedFd, OsString)>> {
        let path = clean(path);
        let Some(name) = path.file_name().map(OsStr::to_owned) else {
            return Ok(None);
        };
        let parent = path.parent().unwrap_or(Path::new(""));
        let dir = if create {
            self.create_dir_all(parent)?
        } else {
            self.resolve(parent, OFlags::PATH | OFlags::DIRECTORY)
                .map_err(|e| fail(op, &path, e))?
        };
        Ok(Some((dir, name)))
    }

    /// The directory `path` (symbolic links followed inside the root, even dangling
    /// ones: a link to a missing `/a/b` makes `<root>/a/b`), made with its missing
    /// parents (mode 0755) as `mkdir -p` does. Returns an `O_PATH` descriptor.
    pub fn create_dir_all(&self, path: &Path) -> Result<OwnedFd> {
        let cleaned = clean(path);
        match self.resolve(&cleaned, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(fail("make directory", path, e)),
        }
        let mut parts = components(&cleaned);
        let mut links = 0;
        let mut dir = self
            .resolve(Path::new(""), OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| fail("open", Path::new("/"), e))?;
        let mut i = 0;
        while i < parts.len() {
            let prefix = joined(&parts[..=i]);
            match self.resolve(&prefix, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) => {
                    dir = fd;
                    i += 1;
                    continue;
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Err(fail("make directory", path, e)),
            }
            match rustix::fs::mkdirat(&dir, &parts[i], Mode::from_raw_mode(0o755)) {
                Ok(()) => continue,
                Err(Errno::EXIST) => {}
                Err(e) => return Err(fail("make directory", &prefix, e)),
            }
            // Something is there and yet the lookup found nothing: a dangling
            // symbolic link. Make what it points to, inside the root.
            let target = match rustix::fs::readlinkat(&dir, &parts[i], Vec::new()) {
                Ok(t) => PathBuf::from(OsStr::from_bytes(t.as_bytes())),
                Err(e) => return Err(fail("make directory", &prefix, e)),
            };
            links += 1;
            if links > MAX_LINKS {
                return Err(Error::Loop {
                    op: "make directory",
                    path: shown(path),
                });
            }
            let rest = parts.split_off(i + 1);
            parts.pop();
            if target.has_root() {
                parts.clear();
                i = 0;
                dir = self
                    .resolve(Path::new(""), OFlags::PATH | OFlags::DIRECTORY)
                    .map_err(|e| fail("open", Path::new("/"), e))?;
            }
            parts.extend(components(&target));
            parts.extend(rest);
        }
        Ok(dir)
    }

    /// The metadata of `path` itself (a symbolic link is not followed; the
    /// directories on the way are), or `None` when nothing is there.
    pub fn lstat(&self, path: &Path) -> Result<Option<Meta>> {
        let (dir, name) = match self.parent(path, false, "stat") {
            Ok(Some(p)) => p,
            Ok(None) => {
                let st = rustix::fs::fstat(self.fd()).map_err(|e| fail("stat", path, e))?;
                return Ok(Some(Meta::of(&st)));
            }
            Err(Error::Io { source, .. })
                if matches!(
                    Errno::from_io_error(&source),
                    Some(Errno::NOENT | Errno::NOTDIR)
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Meta::of(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(fail("stat", path, e)),
        }
    }

    /// The metadata of what `path` leads to (symbolic links followed inside the
    /// root), or `None` when nothing is there.
    pub fn stat(&self, path: &Path) -> Result<Option<Meta>> {
        match self.resolve(&clean(path), OFlags::PATH) {
            Ok(fd) => {
                let st = rustix::fs::fstat(&fd).map_err(|e| fail("stat", path, e))?;
                Ok(Some(Meta::of(&st)))
            }
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
            Err(e) => Err(fail("stat", path, e)),
        }
    }

    /// Whether `path` leads to a directory (symbolic links followed inside the root).
    pub fn is_dir(&self, path: &Path) -> Result<bool> {
        Ok(self.stat(path)?.is_some_and(|m| m.is_dir()))
    }

    /// Opens `path` for reading: with `follow`, a symbolic link at the end is
    /// followed (inside the root); without, it is an error.
    pub fn open_read(&self, path: &Path, follow: bool) -> Result<File> {
        self.open_with(path, OFlags::RDONLY, follow, "read")
            .map(File::from)
    }

    fn open_with(
        &self,
        path: &Path,
        flags: OFlags,
        follow: bool,
        op: &'static str,
    ) -> Result<OwnedFd> {
        if follow {
            return self
                .resolve(&clean(path), flags)
                .map_err(|e| fail(op, path, e));
        }
        match self.parent(path, false, op)? {
            None => self
                .resolve(Path::new(""), flags)
                .map_err(|e| fail(op, path, e)),
            Some((dir, name)) => rustix::fs::openat(
                &dir,
                &name,
                flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| fail(op, path, e)),
        }
    }

    /// Reads the whole file `path` (symbolic links followed inside the root).
    pub fn read(&self, path: &Path) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        io::Read::read_to_end(&mut self.open_read(path, true)?, &mut out).map_err(|e| {
            Error::Io {
                op: "read",
                path: shown(path),
                source: e,
            }
        })?;
        Ok(out)
    }

    /// The names in directory `path` (symbolic links followed inside the root).
    pub fn read_dir(&self, path: &Path) -> Result<Vec<OsString>> {
        let fd = self
            .resolve(&clean(path), OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| fail("list", path, e))?;
        names(fd).map_err(|e| fail("list", path, e))
    }

    /// The target of the symbolic link `path`.
    pub fn read_link(&self, path: &Path) -> Result<PathBuf> {
        let (dir, name) = self
            .parent(path, false, "read link")?
            .ok_or(Error::Invalid {
                op: "read link",
                path: "/".into(),
                reason: "the root is not a symbolic link",
            })?;
        let target = rustix::fs::readlinkat(&dir, &name, Vec::new())
            .map_err(|e| fail("read link", path, e))?;
        Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
    }

    /// Makes the directory `path` (and its parents), keeping one already there.
    pub fn create_dir(&self, path: &Path, mode: u32) -> Result<()> {
        let Some((dir, name)) = self.parent(path, true, "make directory")? else {
            return Ok(());
        };
        match rustix::fs::mkdirat(&dir, &name, Mode::from_raw_mode(mode & 0o7777)) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST)
                if rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| Meta::of(&st).is_dir()) =>
            {
                Ok(())
            }
            Err(e) => Err(fail("make directory", path, e)),
        }
    }

    /// A new regular file at `path` (its directory made if missing), open for
    /// writing; whatever else than a directory was there is replaced.
    pub fn create_file(&self, path: &Path, mode: u32) -> Result<File> {
        let (dir, name) = self.parent(path, true, "write")?.ok_or(Error::Invalid {
            op: "write",
            path: "/".into(),
            reason: "the root is a directory",
        })?;
        remove_non_dir(&dir, &name).map_err(|e| fail("replace", path, e))?;
        rustix::fs::openat(
            &dir,
            &name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & 0o7777),
        )
        .map(File::from)
        .map_err(|e| fail("write", path, e))
    }

    /// A symbolic link at `path` to `target` (stored as given; it is resolved inside
    /// the root whenever it is followed); whatever else than a directory was there is
    /// replaced.
    pub fn symlink(&self, path: &Path, target: &Path) -> Result<()> {
        let (dir, name) = self
            .parent(path, true, "make symbolic link")?
            .ok_or(Error::Invalid {
                op: "make symbolic link",
                path: "/".into(),
                reason: "the root is a directory",
            })?;
        remove_non_dir(&dir, &name).map_err(|e| fail("replace", path, e))?;
        rustix::fs::symlinkat(target, &dir, &name).map_err(|e| fail("make symbolic link", path, e))
    }

    /// A hard link at `path` to the file `target` (both resolved in the root; a
    /// symbolic link at the end of `target` is linked, not followed).
    pub fn hard_link(&self, path: &Path, target: &Path) -> Result<()> {
        let (from_dir, from_name) =
            self.parent(target, false, "hard link to")?
                .ok_or(Error::Invalid {
                    op: "hard link to",
                    path: "/".into(),
                    reason: "the root is a directory",
                })?;
        let (dir, name) = self
            .parent(path, true, "make hard link")?
            .ok_or(Error::Invalid {
                op: "make hard link",
                path: "/".into(),
                reason: "the root is a directory",
            })?;
        remove_non_dir(&dir, &name).map_err(|e| fail("replace", path, e))?;
        rustix::fs::linkat(&from_dir, &from_name, &dir, &name, AtFlags::empty())
            .map_err(|e| fail("hard link to", target, e))
    }

    /// `path` (symbolic links followed inside the root) opened as an `O_PATH`
    /// descriptor: what a mount can name as its source or target.
    pub fn open_path(&self, path: &Path) -> Result<OwnedFd> {
        self.resolve(&clean(path), OFlags::PATH)
            .map_err(|e| fail("open", path, e))
    }

    /// A mount point at `path`: a directory (or, with `file`, an empty file) made
    /// where nothing is, kept where one of the same kind is. Returns its `O_PATH`
    /// descriptor and what was made (parents first), for [`Root::remove_stubs`].
    pub fn mount_point(&self, path: &Path, file: bool) -> Result<(OwnedFd, Vec<PathBuf>)> {
        let cleaned = clean(path);
        let mut made = Vec::new();
        let mut prefix = PathBuf::new();
        for part in cleaned.components() {
            prefix.push(part);
            if self.lstat(&prefix)?.is_none() {
                made.push(prefix.clone());
            }
        }
        let fd = if file {
            let parent = cleaned.parent().unwrap_or(Path::new(""));
            self.create_dir_all(parent)?;
            match self.lstat(&cleaned)? {
                None => drop(self.create_file(&cleaned, 0o400)?),
                Some(m) if m.kind == Kind::File => {}
                Some(_) => {
                    return Err(Error::Invalid {
                        op: "mount",
                        path: shown(path),
                        reason: "a file is mounted there, and something else than a file is",
                    })
                }
            }
            self.open_path(&cleaned)?
        } else {
            self.create_dir_all(&cleaned)?
        };
        Ok((fd, made))
    }

    /// Removes what [`Root::mount_point`] made, last first: directories only when
    /// empty (what a command wrote beside a mount stays), files only when empty.
    pub fn remove_stubs(&self, made: &[PathBuf]) {
        for path in made.iter().rev() {
            let Ok(Some((dir, name))) = self.parent(path, false, "remove") else {
                continue;
            };
            match rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if Meta::of(&st).is_dir() => {
                    let _ = rustix::fs::unlinkat(&dir, &name, AtFlags::REMOVEDIR);
                }
                Ok(st) if Meta::of(&st).kind == Kind::File && st.st_size == 0 => {
                    let _ = rustix::fs::unlinkat(&dir, &name, AtFlags::empty());
                }
                _ => {}
            }
        }
    }

    /// Removes `path` and, for a directory, everything in it. Nothing there (or a
    /// missing directory on the way) is not an error. A symbolic link is removed,
    /// not followed.
    pub fn remove_all(&self, path: &Path) -> Result<()> {
        let (dir, name) = match self.parent(path, false, "remove") {
            Ok(Some(p)) => p,
            Ok(None) => {
                return Err(Error::Invalid {
                    op: "remove",
                    path: "/".into(),
                    reason: "the root cannot be removed",
                })
            }
            Err(Error::Io { source, .. })
                if matches!(
                    Errno::from_io_error(&source),
                    Some(Errno::NOENT | Errno::NOTDIR)
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        remove_in(&dir, &name).map_err(|e| fail("remove", path, e))
    }

    /// Empties the directory `path` (symbolic links followed inside the root) but
    /// for the names `keep` accepts. Nothing there is not an error.
    pub fn clear_dir(&self, path: &Path, keep: impl Fn(&OsStr) -> bool) -> Result<()> {
        let fd = match self.resolve(&clean(path), OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
            Err(e) => return Err(fail("empty", path, e)),
        };
        for name in names(fd.try_clone().map_err(|e| Error::Io {
            op: "empty",
            path: shown(path),
            source: e,
        })?)
        .map_err(|e| fail("empty", path, e))?
        {
            if !keep(&name) {
                remove_in(&fd, &name).map_err(|e| fail("remove", &clean(path).join(&name), e))?;
            }
        }
        Ok(())
    }

    /// Sets the owner, permission bits and modification time of `path` itself
    /// (`None`s are left as they are). For a symbolic link, the mode is ignored.
    pub fn set_meta(
        &self,
        path: &Path,
        owner: Option<(u32, u32)>,
        mode: Option<u32>,
        mtime: Option<(i64, u32)>,
    ) -> Result<()> {
        let Some((dir, name)) = self.parent(path, false, "set the metadata of")? else {
            let fd = self
                .resolve(Path::new(""), OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| fail("open", path, e))?;
            return set_meta_fd(fd.as_fd(), owner, mode, mtime)
                .map_err(|e| fail("set the metadata of", path, e));
        };
        let st = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fail("stat", path, e))?;
        let kind = Meta::of(&st).kind;
        if kind == Kind::Symlink || kind == Kind::Other {
            // Not opened: a link is not followed, a device or FIFO not touched.
            if let Some((uid, gid)) = owner {
                rustix::fs::chownat(
                    &dir,
                    &name,
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| fail("change the owner of", path, e))?;
            }
            if let Some(t) = mtime {
                rustix::fs::utimensat(&dir, &name, &timestamps(t), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| fail("set the time of", path, e))?;
            }
            if let (Some(mode), Kind::Other) = (mode, kind) {
                rustix::fs::chmodat(
                    &dir,
                    &name,
                    Mode::from_raw_mode(mode & 0o7777),
                    AtFlags::empty(),
                )
                .map_err(|e| fail("change the mode of", path, e))?;
            }
            return Ok(());
        }
        let fd = rustix::fs::openat(
            &dir,
            &name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail("open", path, e))?;
        set_meta_fd(fd.as_fd(), owner, mode, mtime)
            .map_err(|e| fail("set the metadata of", path, e))
    }
}

/// Sets the owner first (changing it clears set-user-ID), then the mode, then the
/// time, on an open file or directory.
pub fn set_meta_fd(
    fd: BorrowedFd<'_>,
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
    mtime: Option<(i64, u32)>,
) -> std::result::Result<(), Errno> {
    if let Some((uid, gid)) = owner {
        rustix::fs::chownat(
            fd,
            "",
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::EMPTY_PATH,
        )?;
    }
    if let Some(mode) = mode {
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?;
    }
    if let Some(t) = mtime {
        rustix::fs::futimens(fd, &timestamps(t))?;
    }
    Ok(())
}

fn timestamps((secs, nsec): (i64, u32)) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nsec.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// The names in an open directory, `.` and `..` left out.
fn names(fd: OwnedFd) -> std::result::Result<Vec<OsString>, Errno> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::new(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(out)
}

/// Removes `name` in `dir` unless it is a directory (nothing there is fine).
fn remove_non_dir(dir: &OwnedFd, name: &OsStr) -> std::result::Result<(), Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if Meta::of(&st).is_dir() => Ok(()),
        Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty()),
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes `name` in `dir`, a directory with everything in it; never follows a
/// symbolic link.
fn remove_in(dir: &OwnedFd, name: &OsStr) -> std::result::Result<(), Errno> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if !Meta::of(&st).is_dir() {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
    let child = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for n in names(
        child
            .try_clone()
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?,
    )? {
        remove_in(&child, &n)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root in a temporary directory, beside an `outside` directory with a file.
    struct Fixture {
        _tmp: tempfile::TempDir,
        root_path: PathBuf,
        outside: PathBuf,
        root: Root,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let root_path = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(&root_path).unwrap();
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("file"), "outside").unwrap();
        std::fs::write(outside.join("dir/child"), "outside child").unwrap();
        let root = Root::open(&root_path).unwrap();
        Fixture {
            _tmp: tmp,
            root_path,
            outside,
            root,
        }
    }

    impl Fixture {
        fn assert_outside_untouched(&self) {
            assert_eq!(
                std::fs::read_to_string(self.outside.join("file")).unwrap(),
                "outside"
            );
            assert_eq!(
                std::fs::read_to_string(self.outside.join("dir/child")).unwrap(),
                "outside child"
            );
            let mut names: Vec<_> = std::fs::read_dir(&self.outside)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            assert_eq!(names, ["dir", "file"]);
            assert_eq!(
                std::fs::read_dir(self.outside.join("dir")).unwrap().count(),
                1
            );
        }
    }

    #[test]
    fn dotdot_at_the_root_stays_at_the_root() {
        let f = fixture();
        let up = Path::new("../../../../../../../../outside/file");
        std::io::Write::write_all(&mut f.root.create_file(up, 0o644).unwrap(), b"in").unwrap();
        assert_eq!(
            std::fs::read_to_string(f.root_path.join("outside/file")).unwrap(),
            "in"
        );
        assert_eq!(clean(up), Path::new("outside/file"));
        // A symlink climbing out resolves at the root too.
        f.root
            .symlink(Path::new("up"), Path::new("../../../../.."))
            .unwrap();
        f.root.create_dir_all(Path::new("up/up/new-dir")).unwrap();
        assert!(f.root_path.join("new-dir").is_dir());
        assert_eq!(f.root.read(Path::new("up/outside/file")).unwrap(), b"in");
        f.assert_outside_untouched();
    }

    #[test]
    fn absolute_symlinks_are_followed_inside_the_root() {
        let f = fixture();
        let outside = f.outside.to_str().unwrap();
        f.root.symlink(Path::new("etc"), &f.outside).unwrap();
        // Writing through it: a dangling link to a host path makes the image's own.
        std::io::Write::write_all(
            &mut f.root.create_file(Path::new("etc/file"), 0o644).unwrap(),
            b"image",
        )
        .unwrap();
        let in_root = f.root_path.join(outside.trim_start_matches('/'));
        assert_eq!(
            std::fs::read_to_string(in_root.join("file")).unwrap(),
            "image"
        );
        assert!(f.root.is_dir(Path::new("/etc")).unwrap());
        assert!(f.root.lstat(Path::new("/etc")).unwrap().unwrap().kind == Kind::Symlink);
        assert_eq!(f.root.read(Path::new("/etc/file")).unwrap(), b"image");
        // Reading through a link to a host file reads the image's path of that name.
        f.root
            .symlink(Path::new("passwd"), &f.outside.join("dir/child"))
            .unwrap();
        assert!(f.root.read(Path::new("passwd")).is_err());
        assert!(f.root.stat(Path::new("passwd")).unwrap().is_none());
        // Metadata of a link is its own; removing it leaves its target.
        f.root
            .set_meta(Path::new("etc"), None, Some(0o600), Some((5, 0)))
            .unwrap();
        assert_eq!(
            std::fs::symlink_metadata(f.root_path.join("etc"))
                .unwrap()
                .modified()
                .unwrap(),
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(5)
        );
        f.root.remove_all(Path::new("etc")).unwrap();
        assert!(in_root.join("file").exists());
        f.assert_outside_untouched();
    }

    #[test]
    fn symlink_loops_fail_cleanly() {
        let f = fixture();
        f.root.symlink(Path::new("a"), Path::new("b")).unwrap();
        f.root.symlink(Path::new("b"), Path::new("/a")).unwrap();
        for result in [
            f.root.create_dir_all(Path::new("a/x")).map(drop),
            f.root.create_file(Path::new("a/x"), 0o644).map(drop),
            f.root.open_read(Path::new("a"), true).map(drop),
            f.root.is_dir(Path::new("b/c")).map(drop),
        ] {
            let e = result.unwrap_err();
            assert!(matches!(e, Error::Loop { .. }), "{e:?}");
            assert!(e.to_string().contains("symlink loop"), "{e}");
        }
        // A chain of dangling links that keeps making new ones is cut off too.
        f.root
            .symlink(Path::new("grow"), Path::new("grow/x"))
            .unwrap();
        let e = f.root.create_dir_all(Path::new("grow/y")).unwrap_err();
        assert!(matches!(e, Error::Loop { .. }), "{e:?}");
        f.assert_outside_untouched();
    }

    #[test]
    fn hard_links_to_outside_are_confined() {
        let f = fixture();
        let outside = f.outside.to_str().unwrap().trim_start_matches('/');
        // Nothing of that name in the image: refused.
        let target = PathBuf::from(format!("../../../../../../{outside}/file"));
        let e = f.root.hard_link(Path::new("hl"), &target).unwrap_err();
        assert!(e.to_string().contains("hard link"), "{e}");
        // The same name through a symlinked directory: refused as well.
        f.root.symlink(Path::new("out"), &f.outside).unwrap();
        assert!(f
            .root
            .hard_link(Path::new("hl"), Path::new("out/file"))
            .is_err());
        // With the image's own file of that name, that one is linked.
        std::io::Write::write_all(
            &mut f
                .root
                .create_file(Path::new(&format!("{outside}/file")), 0o644)
                .unwrap(),
            b"image",
        )
        .unwrap();
        f.root.hard_link(Path::new("hl"), &target).unwrap();
        f.root
            .hard_link(Path::new("hl2"), Path::new("out/file"))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(f.root_path.join("hl")).unwrap(),
            "image"
        );
        assert_eq!(
            std::fs::read_to_string(f.root_path.join("hl2")).unwrap(),
            "image"
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(f.outside.join("file")).unwrap().nlink(),
            1
        );
        f.assert_outside_untouched();
    }

    #[test]
    fn removals_never_follow_symlinks_out() {
        let f = fixture();
        f.root.symlink(Path::new("dir"), &f.outside).unwrap();
        f.root
            .symlink(Path::new("sub"), &f.outside.join("dir"))
            .unwrap();
        // A whiteout inside a symlinked directory names a path in the image.
        f.root.remove_all(Path::new("dir/file")).unwrap();
        f.root.remove_all(Path::new("dir/dir")).unwrap();
        f.root.remove_all(Path::new("sub/child")).unwrap();
        // An opaque marker under a symlink empties the image's directory only.
        f.root.clear_dir(Path::new("sub"), |_| false).unwrap();
        f.root.clear_dir(Path::new("dir"), |_| false).unwrap();
        f.assert_outside_untouched();
        // The image's own copy of that directory is emptied.
        let outside = f.outside.to_str().unwrap();
        f.root
            .create_file(Path::new(&format!("{outside}/dir/mine")), 0o644)
            .unwrap();
        f.root
            .create_file(Path::new(&format!("{outside}/dir/kept")), 0o644)
            .unwrap();
        f.root.clear_dir(Path::new("sub"), |n| n == "kept").unwrap();
        assert_eq!(f.root.read_dir(Path::new("sub")).unwrap(), ["kept"]);
        // Removing a directory holding a link to outside removes the link only.
        f.root.create_dir(Path::new("tree/deep"), 0o755).unwrap();
        f.root
            .symlink(Path::new("tree/deep/out"), &f.outside)
            .unwrap();
        f.root.remove_all(Path::new("tree")).unwrap();
        assert!(!f.root_path.join("tree").exists());
        f.assert_outside_untouched();
        assert!(f.root.remove_all(Path::new("/")).is_err());
    }
}
