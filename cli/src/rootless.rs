//! Rootless builds: `berth image build` run by a user who is not root runs itself
//! again in a user namespace where that user is root and their subordinate ids
//! (`/etc/subuid`, `/etc/subgid`, mapped by Debian's `newuidmap` / `newgidmap`) are
//! ids 1 to N. There it may make mount namespaces and chroot for RUN, and give files
//! their owners, as a root build does; on the host, those files belong to the user
//! and their subordinate ids.
//!
//! The parent starts the child with [`CHILD`] set; the child, still one thread, leaves
//! for a new user namespace ([`enter_if_child`]) and waits until its ids are mapped;
//! the parent maps them when it sees the child in another namespace, then waits for
//! it and exits as it does.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// Set in the child's environment: it is to enter a user namespace.
pub const CHILD: &str = "BERTH_ROOTLESS_CHILD";

/// How long either side waits for the other.
const PATIENCE: Duration = Duration::from_secs(10);

/// In the child: enters a new user namespace and waits for its ids to be mapped.
/// Must run while the process has one thread (before the async runtime starts).
pub fn enter_if_child() -> anyhow::Result<()> {
    if std::env::var_os(CHILD).is_none() {
        return Ok(());
    }
    // SAFETY: the process has one thread here (nothing has started another), as
    // unsharing a user namespace requires.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER) }?;
    let start = Instant::now();
    while std::fs::read_to_string("/proc/self/uid_map")?
        .trim()
        .is_empty()
    {
        anyhow::ensure!(
            start.elapsed() < PATIENCE,
            "the user namespace's ids were never mapped"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// In the user's own process: runs this command again in a user namespace and
/// returns its exit code; `None` (the build goes on as it is, without RUN) when the
/// user has no subordinate ids or the `uidmap` tools are missing.
pub fn rerun_in_user_namespace() -> anyhow::Result<Option<ExitCode>> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let Ok(user) = user_name(uid) else {
        return Ok(None);
    };
    let (Some(subuid), Some(subgid)) = (
        subordinate("/etc/subuid", &user, uid),
        subordinate("/etc/subgid", &user, gid),
    ) else {
        return Ok(None);
    };
    if !["/usr/bin/newuidmap", "/usr/bin/newgidmap"]
        .iter()
        .all(|tool| Path::new(tool).exists())
    {
        return Ok(None);
    }
    let mut child = Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(CHILD, "1")
        .spawn()?;
    let pid = child.id();
    let ours = std::fs::read_link("/proc/self/ns/user")?;
    let start = Instant::now();
    while std::fs::read_link(format!("/proc/{pid}/ns/user"))? == ours {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("berth ended before it entered a user namespace ({status})");
        }
        anyhow::ensure!(
            start.elapsed() < PATIENCE,
            "berth never entered a user namespace (are unprivileged user namespaces off?)"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    for (tool, own, (first, count)) in [("newgidmap", gid, subgid), ("newuidmap", uid, subuid)] {
        let status = Command::new(tool)
            .arg(pid.to_string())
            .args([
                "0",
                &own.to_string(),
                "1",
                "1",
                &first.to_string(),
                &count.to_string(),
            ])
            .status()
            .map_err(|e| {
                anyhow::anyhow!("{tool}: {e} (rootless builds need Debian's uidmap package)")
            })?;
        if !status.success() {
            let _ = child.kill();
            anyhow::bail!("{tool} could not map the build's ids ({status})");
        }
    }
    let status = child.wait()?;
    Ok(Some(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8,
    )))
}

/// The name of user `uid` in /etc/passwd (subordinate ids are listed by name).
fn user_name(uid: u32) -> anyhow::Result<String> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&uid.to_string().as_str()))
        .and_then(|f| f.first().map(|n| (*n).to_owned()))
        .ok_or_else(|| anyhow::anyhow!("user {uid} is not in /etc/passwd"))
}

/// The first subordinate id and how many, for `user` (or their id) in `file`.
fn subordinate(file: &str, user: &str, id: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(Path::new(file)).unwrap_or_default();
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() == 3 && (f[0] == user || f[0] == id.to_string()))
        .and_then(|f| Some((f[1].parse().ok()?, f[2].parse().ok()?)))
}
