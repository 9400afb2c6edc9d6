//! `RUN`: a command executed in a chroot of the stage's root filesystem, in its own
//! mount namespace with a fresh /proc and the host's /dev bound in (the mounts vanish
//! with the namespace when the command ends), as the stage's user, in its working
//! directory, with its environment.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::inroot::Root;

/// A mount for one RUN (`RUN --mount`): made in the command's mount namespace, gone
/// with it; its mount point, when made for it, removed afterwards.
pub struct Mount {
    pub source: MountSource,
    /// Where the command sees it (resolved inside the image).
    pub target: PathBuf,
    /// The target is a file (a secret), not a directory.
    pub file: bool,
    pub readonly: bool,
}

pub enum MountSource {
    /// A host directory or file, opened (`O_PATH`) where it was resolved safely.
    Path(OwnedFd),
    /// A new tmpfs of at most this many bytes.
    Tmpfs { size: Option<u64> },
}

/// What one RUN executes.
pub struct Run<'a> {
    pub argv: &'a [String],
    /// Put at [`SCRIPT_PATH`] for the run, when given.
    pub script: Option<&'a str>,
    pub env: &'a [(String, String)],
    pub workdir: &'a str,
    pub user: Option<(u32, u32)>,
    pub mounts: &'a [Mount],
}

/// Where `fd` is, every symbolic link on the way resolved when it was opened. A
/// mount is made in the command's new mount namespace, where descriptors opened
/// before it still name the old one's mounts, so mounts take this path; nothing
/// else changes the image's root or berth's own directories meanwhile.
fn real_path(fd: &OwnedFd) -> anyhow::Result<CString> {
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    Ok(CString::new(path.into_os_string().into_vec())?)
}

/// Where a here-document script (`RUN <<EOF` starting with `#!`) is put for its run.
pub const SCRIPT_PATH: &str = "/.berth-heredoc-script";

/// Runs `what` in `root`; fails with the exit status if the command fails.
pub fn run(root: &Path, what: &Run<'_>) -> anyhow::Result<()> {
    let Run {
        argv,
        script,
        env,
        workdir,
        user,
        mounts,
    } = *what;
    anyhow::ensure!(!argv.is_empty(), "RUN needs a command");
    anyhow::ensure!(
        crate::builder::rootfs::running_as_root(),
        "RUN needs root, or a rootless build: subordinate ids for your user in /etc/subuid and /etc/subgid (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER) and Debian's uidmap package"
    );
    // Mount points must exist in the image, as directories (a symbolic link there
    // would lead the mount elsewhere, as runc refuses too); those made here are removed
    // afterwards so they do not end up in the layer.
    let image = Root::open(root)?;
    // What is made here for the run goes when it ends, however it ends.
    let mut scaffolding = Scaffolding {
        image: &image,
        dirs: Vec::new(),
        script: false,
        stubs: Vec::new(),
    };
    for dir in ["proc", "dev"] {
        match image.lstat(Path::new(dir))? {
            None => {
                image.create_dir(Path::new(dir), 0o755)?;
                scaffolding.dirs.push(root.join(dir));
            }
            Some(m) if m.is_dir() => {}
            Some(_) => anyhow::bail!(
                "the image's /{dir} is not a directory (a symbolic link?): RUN mounts {dir} there"
            ),
        }
    }
    // The working directory, made inside the image (its symbolic links followed
    // inside the root).
    image.create_dir_all(Path::new(workdir))?;
    let script_path = Path::new(SCRIPT_PATH.trim_start_matches('/'));
    if let Some(body) = script {
        scaffolding.script = true;
        let mut file = image.create_file(script_path, 0o755)?;
        std::io::Write::write_all(&mut file, body.as_bytes())?;
    }
    // Mount points, resolved inside the image (its symbolic links cannot lead a mount
    // out of it), then mounted by the paths they resolved to. Those paths are walked
    // again in the command's namespace before anything else is mounted there, and no
    // mount is inside another or in /proc or /dev: nothing on them can have moved.
    let mut plan = Vec::new();
    let mut resolved: Vec<PathBuf> = Vec::new();
    let real_root = std::fs::canonicalize(root)?;
    for m in mounts {
        let (target, made) = image.mount_point(&m.target, m.file)?;
        scaffolding.stubs.extend(made);
        let target = real_path(&target)?;
        let inside_image = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()))
            .strip_prefix(&real_root)
            .map_err(|_| {
                anyhow::anyhow!(
                    "the mount target {} resolves outside the image",
                    m.target.display()
                )
            })?
            .to_owned();
        let first = inside_image.components().next();
        anyhow::ensure!(
            !matches!(
                first.and_then(|c| c.as_os_str().to_str()),
                None | Some("proc" | "dev" | "sys")
            ),
            "a mount target cannot be /, or in /proc, /dev or /sys ({} is {})",
            m.target.display(),
            Path::new("/").join(&inside_image).display()
        );
        if let Some(other) = resolved
            .iter()
            .find(|o| o.starts_with(&inside_image) || inside_image.starts_with(o))
        {
            anyhow::bail!(
                "mount targets cannot be inside one another: {} and /{}",
                Path::new("/").join(&inside_image).display(),
                other.display()
            );
        }
        resolved.push(inside_image);
        let source = match &m.source {
            MountSource::Path(fd) => Some(real_path(fd)?),
            MountSource::Tmpfs { .. } => None,
        };
        let data = match m.source {
            MountSource::Tmpfs { size: Some(bytes) } => format!("mode=1777,size={bytes}"),
            _ => "mode=1777".to_owned(),
        };
        // Read-only is set again after the chroot, on the path as the command sees it.
        let inside = Path::new("/").join(crate::inroot::clean(&m.target));
        let inside = CString::new(inside.as_os_str().as_bytes())
            .map_err(|_| anyhow::anyhow!("a mount target has a NUL byte"))?;
        plan.push((
            source,
            target,
            CString::new(data).expect("no NUL"),
            m.readonly.then_some(inside),
        ));
    }
    // Everything the child needs is computed here: after fork, only system calls
    // (paths this short convert to C strings on the stack, without allocating).
    let (proc_dir, dev_dir, new_root) = (root.join("proc"), root.join("dev"), root.to_owned());
    let cwd = Path::new("/").join(workdir.trim_start_matches('/'));
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)));
    // SAFETY: the closure runs in the forked child before exec and only makes system
    // calls on values prepared above.
    unsafe {
        cmd.pre_exec(move || {
            use rustix::mount::{
                mount, mount_bind, mount_bind_recursive, mount_change, MountFlags,
                MountPropagationFlags,
            };
            use rustix::thread::{unshare_unsafe, UnshareFlags};
            let io = |e: rustix::io::Errno| std::io::Error::from_raw_os_error(e.raw_os_error());
            unshare_unsafe(UnshareFlags::NEWNS).map_err(io)?;
            // Nothing mounted here propagates back to the host.
            mount_change(
                "/",
                MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
            )
            .map_err(io)?;
            // The build's mounts first, while the paths to them are as resolved.
            for (source, target, data, _) in &plan {
                match source {
                    // Not recursive: what is mounted inside a source stays out.
                    Some(source) => mount_bind(source.as_c_str(), target.as_c_str()),
                    None => mount(
                        c"tmpfs",
                        target.as_c_str(),
                        c"tmpfs",
                        MountFlags::NOSUID | MountFlags::NODEV,
                        Some(data.as_c_str()),
                    ),
                }
                .map_err(io)?;
            }
            // A fresh /proc needs a PID namespace of our own user namespace's; in a
            // rootless build (a user namespace of its own), the host's is bound.
            mount("proc", &proc_dir, "proc", MountFlags::empty(), None)
                .or_else(|_| mount_bind_recursive("/proc", &proc_dir))
                .map_err(io)?;
            mount_bind_recursive("/dev", &dev_dir).map_err(io)?;
            rustix::process::chroot(&new_root).map_err(io)?;
            for (_, _, _, readonly) in &plan {
                if let Some(inside) = readonly {
                    rustix::mount::mount_remount(
                        inside.as_c_str(),
                        MountFlags::BIND | MountFlags::RDONLY,
                        c"",
                    )
                    .map_err(io)?;
                }
            }
            rustix::process::chdir(&cwd).map_err(io)?;
            if let Some((uid, gid)) = user {
                rustix::thread::set_thread_groups(&[]).map_err(io)?;
                rustix::thread::set_thread_res_gid(
                    rustix::process::Gid::from_raw(gid),
                    rustix::process::Gid::from_raw(gid),
                    rustix::process::Gid::from_raw(gid),
                )
                .map_err(io)?;
                rustix::thread::set_thread_res_uid(
                    rustix::process::Uid::from_raw(uid),
                    rustix::process::Uid::from_raw(uid),
                    rustix::process::Uid::from_raw(uid),
                )
                .map_err(io)?;
            }
            Ok(())
        });
    }
    let status = cmd.status();
    // Mount points, /proc, /dev and the script are not part of the image: gone before
    // its changes become a layer (the mounts went with the command's namespace).
    drop(scaffolding);
    let status =
        status.map_err(|e| anyhow::anyhow!("cannot run {:?} in the image: {e}", argv[0]))?;
    anyhow::ensure!(
        status.success(),
        "the command {:?} returned a non-zero code: {}",
        argv.join(" "),
        status
            .code()
            .map_or("killed by a signal".into(), |c| c.to_string())
    );
    Ok(())
}

/// What a RUN makes in the image for itself (`/proc` and `/dev` where missing, the
/// here-document script, mount points), removed when the run ends, however it ends.
struct Scaffolding<'a> {
    image: &'a Root,
    /// Host paths of the directories made.
    dirs: Vec<PathBuf>,
    script: bool,
    /// What [`Root::mount_point`] made.
    stubs: Vec<PathBuf>,
}

impl Drop for Scaffolding<'_> {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
        if self.script {
            let _ = self
                .image
                .remove_all(Path::new(SCRIPT_PATH.trim_start_matches('/')));
        }
        self.image.remove_stubs(&self.stubs);
    }
}

/// A user name or id (`name`, `uid`, `name:group`, `uid:gid`) as numbers, looked up
/// in the image's /etc/passwd and /etc/group.
pub fn resolve_user(root: &Path, user: &str) -> anyhow::Result<(u32, u32)> {
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let image = Root::open(root)?;
    let lookup = |file: &str, key: &str| -> Option<(u32, u32)> {
        let text = read_text(&image, file)?;
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&key)).then(|| {
                let id = fields.get(2).and_then(|f| f.parse().ok()).unwrap_or(0);
                let gid = fields.get(3).and_then(|f| f.parse().ok()).unwrap_or(id);
                (id, gid)
            })
        })
    };
    let (uid, primary_gid) = match name.parse::<u32>() {
        Ok(uid) => (uid, lookup_by_uid(&image, uid).unwrap_or(uid)),
        Err(_) => lookup("etc/passwd", name).ok_or_else(|| {
            anyhow::anyhow!("unknown user {name:?} (not in the image's /etc/passwd)")
        })?,
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup("etc/group", g).map(|(gid, _)| gid).ok_or_else(|| {
                anyhow::anyhow!("unknown group {g:?} (not in the image's /etc/group)")
            })?,
        },
    };
    Ok((uid, gid))
}

/// A file of the image as text (read inside the image root), if it is there.
fn read_text(image: &Root, file: &str) -> Option<String> {
    let bytes = image.read(Path::new(file)).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn lookup_by_uid(image: &Root, uid: u32) -> Option<u32> {
    let text = read_text(image, "etc/passwd")?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| fields.get(3)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_by_name_and_number() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user(root.path(), "app").unwrap(), (1000, 1001));
        assert_eq!(resolve_user(root.path(), "1000").unwrap(), (1000, 1001));
        assert_eq!(resolve_user(root.path(), "app:staff").unwrap(), (1000, 50));
        assert_eq!(resolve_user(root.path(), "42:7").unwrap(), (42, 7));
        assert!(resolve_user(root.path(), "nobody").is_err());
    }
}
