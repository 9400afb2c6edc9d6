//! Registry credentials in Docker's `config.json` format (`{"auths": {host: {"auth":
//! base64(user:password)}}}`), kept in `$BERTH_HOME/config.json` with mode 0600.
//! Docker's own `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`) is read
//! too, so a `docker login` is enough.

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

    /// (user, password) for `host`: ours first, then Docker's.
    pub fn get(&self, host: &str) -> Option<(String, String)> {
        let docker = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
            .map(|d| d.join("config.json"));
        [Some(self.path.clone()), docker]
            .into_iter()
            .flatten()
            .find_map(|p| lookup(&read(&p), host))
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

fn lookup(config: &Value, host: &str) -> Option<(String, String)> {
    let auth = config["auths"][host]["auth"].as_str()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}
