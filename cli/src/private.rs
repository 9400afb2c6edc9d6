//! Temporary directories only their owner enters. What `berth` unpacks or stages (an
//! image's files, setuid programs among them, a build's context copies, downloads and
//! secrets) must be neither readable, runnable nor writable by other local users while
//! it works, whatever the umask.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A new temporary directory (`prefix` and a random part), mode 0700.
pub fn tempdir(prefix: &str) -> std::io::Result<TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(Permissions::from_mode(0o700))
        .tempdir()
}

/// A root file system in a private directory: the root keeps the mode a `/` has (the
/// image's own users must reach it when a step runs there), and its parent keeps
/// everyone else out. Removed when dropped.
pub struct PrivateRoot {
    _dir: TempDir,
    root: PathBuf,
}

impl PrivateRoot {
    pub fn new(prefix: &str) -> std::io::Result<PrivateRoot> {
        let dir = tempdir(prefix)?;
        let root = dir.path().join("root");
        std::fs::create_dir(&root)?;
        std::fs::set_permissions(&root, Permissions::from_mode(0o755))?;
        Ok(PrivateRoot { _dir: dir, root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_enters() {
        let dir = tempdir("berth-test-").unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let root = PrivateRoot::new("berth-test-").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(root.path()), 0o755);
        assert_eq!(mode(root.path().parent().unwrap()), 0o700);
        let parent = root.path().parent().unwrap().to_owned();
        drop(root);
        assert!(!parent.exists());
    }
}
