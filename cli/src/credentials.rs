//! Registry credentials in Docker's `config.json` format (`{"auths": {host: {"auth":
//! base64(user:password)}}}`), kept in `$BERTH_HOME/config.json` with mode 0600.
//! Docker's own `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`) is read
//! too, with its credential helpers (`credHelpers`, `credsStore`: the
//! `docker-credential-<name> get` protocol), so a `docker login` is enough.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{json, Value};

pub struct Credentials {
    path: PathBuf,
}

impl Credentials {
    pub fn new(home: &Path) -> Credentials {
        Credentials {
            path: home.join("config.json"),
        }
    }

    /// (user, password) for `host`: ours first, then Docker's (helper, then file).
    pub fn get(&self, host: &str) -> Option<(String, String)> {
        if let Some(found) = lookup(&read(&self.path), host) {
            return Some(found);
        }
        let docker = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))?
            .join("config.json");
        let config = read(&docker);
        let helper = config["credHelpers"][host]
            .as_str()
            .or_else(|| config["credsStore"].as_str());
        helper
            .and_then(|h| from_helper(h, host))
            .or_else(|| lookup(&config, host))
    }

    pub fn store(&self, host: &str, user: &str, password: &str) -> anyhow::Result<()> {
        let mut config = read(&self.path);
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        config["auths"][host] = json!({ "auth": auth });
        self.write(&config)
    }

    /// Forgets `host`; false if nothing was stored for it.
    pub fn remove(&self, host: &str) -> anyhow::Result<bool> {
        let mut config = read(&self.path);
        let removed = config["auths"]
            .as_object_mut()
            .is_some_and(|auths| auths.remove(host).is_some());
        if removed {
            self.write(&config)?;
        }
        Ok(removed)
    }

    fn write(&self, config: &Value) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // The mode above holds only for a file made now: one left behind keeps its own.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f.write_all(&serde_json::to_vec_pretty(config)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

fn read(path: &Path) -> Value {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({ "auths": {} }))
}

/// Asks `docker-credential-<helper>` (Docker's protocol: the server on stdin, JSON
/// with `Username` and `Secret` on stdout). A helper that is missing or knows nothing
/// yields nothing.
fn from_helper(helper: &str, host: &str) -> Option<(String, String)> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(host.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let answer: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((
        answer["Username"].as_str()?.to_owned(),
        answer["Secret"].as_str()?.to_owned(),
    ))
}

fn lookup(config: &Value, host: &str) -> Option<(String, String)> {
    let auth = config["auths"][host]["auth"].as_str()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}
