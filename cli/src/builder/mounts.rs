//! `RUN --mount=…`: what BuildKit's mount types give a command for its run only,
//! never in the layer — `cache` (a directory kept between builds, under
//! `$BERTH_HOME/build-cache-mounts/`), `bind` (a directory or file of the build
//! context or an earlier stage, read-only), `secret` (a file, or an environment
//! variable, from `berth image build --secret`; never in the image, its history or
//! the step's key) and `tmpfs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::os::fd::OwnedFd;

use sha2::{Digest as _, Sha256};

use super::run::{Mount, MountSource};
use super::Builder;
use crate::inroot::Root;

impl Builder<'_> {
    /// A bind mount's source, opened: a file or directory of an earlier stage
    /// (resolved inside its root), or a copy of the context's (`.dockerignore`
    /// applied, as the step's key was made), kept as long as the command runs.
    pub(super) fn bind_source(
        &mut self,
        spec: &MountSpec,
    ) -> anyhow::Result<(OwnedFd, Option<tempfile::TempDir>)> {
        let source = spec.source.as_deref().unwrap_or(".");
        match &spec.from {
            Some(stage) => {
                let root = self.stage_root(stage)?;
                Ok((Root::open(&root)?.open_path(Path::new(source))?, None))
            }
            None => {
                let (copy, path) = self.context_copy(source)?;
                let fd = Root::open(path.parent().unwrap_or(copy.path()))?
                    .open_path(Path::new(path.file_name().unwrap_or_default()))?;
                Ok((fd, Some(copy)))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
}

/// How builds share a cache mount (`sharing=`): `shared` and `private` use it at
/// once (berth keeps one directory per id), `locked` one build at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sharing {
    Shared,
    Locked,
}

/// One `--mount` of a RUN, as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MountSpec {
    pub kind: Kind,
    target: Option<String>,
    pub source: Option<String>,
    /// `from=`: a bind mount's (or cache's seed) stage.
    pub from: Option<String>,
    id: Option<String>,
    readonly: Option<bool>,
    sharing: Sharing,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    required: bool,
    /// `env=`: a secret given as this environment variable instead of a file.
    env: Option<String>,
    size: Option<u64>,
}

impl MountSpec {
    /// Reads `type=cache,target=/root/.cache,id=go,sharing=locked` and the like.
    pub fn parse(text: &str) -> Result<MountSpec, String> {
        let mut spec = MountSpec {
            kind: Kind::Bind,
            target: None,
            source: None,
            from: None,
            id: None,
            readonly: None,
            sharing: Sharing::Shared,
            mode: None,
            uid: None,
            gid: None,
            required: false,
            env: None,
            size: None,
        };
        let number = |key: &str, value: &str, radix: u32| {
            u64::from_str_radix(value, radix)
                .map_err(|_| format!("--mount {key}={value} is not a number"))
        };
        for field in text.split(',').filter(|f| !f.is_empty()) {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (field.trim(), None),
            };
            let flag = |v: Option<&str>| match v {
                None | Some("true") => Ok(true),
                Some("false") => Ok(false),
                Some(other) => Err(format!("--mount {key}={other}: true or false")),
            };
            let text = || {
                value
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| format!("--mount {key} needs a value"))
            };
            match key {
                "type" => {
                    spec.kind = match value {
                        Some("bind") => Kind::Bind,
                        Some("cache") => Kind::Cache,
                        Some("tmpfs") => Kind::Tmpfs,
                        Some("secret") => Kind::Secret,
                        Some("ssh") => {
                            return Err("--mount type=ssh is not supported: berth has no SSH agent forwarding; use a secret".into())
                        }
                        other => {
                            return Err(format!(
                                "--mount type={}: bind, cache, tmpfs or secret",
                                other.unwrap_or("")
                            ))
                        }
                    }
                }
                "target" | "dst" | "destination" => spec.target = Some(text()?),
                "source" | "src" => spec.source = Some(text()?),
                "from" => spec.from = Some(text()?),
                "id" => spec.id = Some(text()?),
                "ro" | "readonly" => spec.readonly = Some(flag(value)?),
                "rw" | "readwrite" => spec.readonly = Some(!flag(value)?),
                "sharing" => {
                    spec.sharing = match value {
                        Some("shared" | "private") => Sharing::Shared,
                        Some("locked") => Sharing::Locked,
                        other => {
                            return Err(format!(
                                "--mount sharing={}: shared, private or locked",
                                other.unwrap_or("")
                            ))
                        }
                    }
                }
                "mode" => spec.mode = Some(number(key, &text()?, 8)? as u32 & 0o7777),
                "uid" => spec.uid = Some(number(key, &text()?, 10)? as u32),
                "gid" => spec.gid = Some(number(key, &text()?, 10)? as u32),
                "required" => spec.required = flag(value)?,
                "env" => spec.env = Some(text()?),
                "size" | "tmpfs-size" => spec.size = Some(number(key, &text()?, 10)?),
                other => return Err(format!("--mount does not know {other}")),
            }
        }
        if spec.kind != Kind::Secret && spec.target.is_none() {
            return Err("--mount needs target=".into());
        }
        if spec.kind == Kind::Secret && spec.id.is_none() {
            spec.id = spec
                .target
                .as_deref()
                .and_then(|t| Path::new(t).file_name())
                .map(|n| n.to_string_lossy().into_owned());
            if spec.id.is_none() {
                return Err("--mount type=secret needs id= (or a target=)".into());
            }
        }
        // The context is bound as a copy, whose writes are thrown away (as BuildKit
        // does); a stage's files are bound as they are, so never writable.
        if spec.kind == Kind::Bind && spec.readonly == Some(false) && spec.from.is_some() {
            return Err(
                "--mount type=bind,from=…,rw is not supported: a stage's files are bound read-only"
                    .into(),
            );
        }
        if spec.kind == Kind::Cache && spec.from.is_some() {
            return Err("--mount type=cache,from= is not supported: the cache starts empty".into());
        }
        Ok(spec)
    }

    /// Where the command sees it.
    pub fn target(&self) -> String {
        match (&self.target, self.kind) {
            (Some(t), _) => t.clone(),
            (None, _) => format!("/run/secrets/{}", self.id.as_deref().unwrap_or("")),
        }
    }

    /// What the step's cache key holds of it: its kind, target and settings (a bind
    /// source's content is added by the builder; a secret's never is).
    pub fn key(&self) -> String {
        format!(
            "{:?} {} source={:?} from={:?} id={:?} mode={:?} uid={:?} gid={:?} env={:?} size={:?}",
            self.kind,
            self.target(),
            self.source,
            self.from,
            self.id,
            self.mode,
            self.uid,
            self.gid,
            self.env,
            self.size
        )
    }
}

/// What a build lends its RUN mounts.
pub(crate) struct Lender<'a> {
    /// `berth image build --secret`s by id.
    pub secrets: &'a BTreeMap<String, Vec<u8>>,
    /// Where cache mounts live.
    pub caches: PathBuf,
}

/// What a RUN's mounts came to: the mounts, environment variables (secrets given
/// with `env=`), and what must live as long as the command (files, locks).
#[derive(Default)]
pub(crate) struct Lent {
    pub mounts: Vec<Mount>,
    pub env: Vec<(String, String)>,
    pub keep: Vec<Box<dyn std::any::Any>>,
}

impl Lender<'_> {
    /// Resolves `specs`; `bind` opens a bind mount's source (see
    /// [`Builder::bind_source`]).
    pub fn lend(
        &self,
        specs: &[MountSpec],
        mut bind: impl FnMut(&MountSpec) -> anyhow::Result<(OwnedFd, Option<tempfile::TempDir>)>,
    ) -> anyhow::Result<Lent> {
        let mut lent = Lent::default();
        for spec in specs {
            let target = PathBuf::from(spec.target());
            match spec.kind {
                Kind::Bind => {
                    let (fd, copy) = bind(spec)?;
                    if let Some(copy) = copy {
                        lent.keep.push(Box::new(copy));
                    }
                    let file = !rustix::fs::fstat(&fd)
                        .map(|st| {
                            rustix::fs::FileType::from_raw_mode(st.st_mode)
                                == rustix::fs::FileType::Directory
                        })
                        .unwrap_or(false);
                    lent.mounts.push(Mount {
                        source: MountSource::Path(fd),
                        target,
                        file,
                        readonly: spec.readonly.unwrap_or(true),
                    });
                }
                Kind::Cache => {
                    let id = spec.id.clone().unwrap_or_else(|| spec.target());
                    let dir = self.caches.join(hex::encode(Sha256::digest(id.as_bytes())));
                    if !dir.exists() {
                        // berth's alone: other users neither read nor change caches.
                        std::fs::create_dir_all(&self.caches)?;
                        std::fs::set_permissions(
                            &self.caches,
                            std::os::unix::fs::PermissionsExt::from_mode(0o700),
                        )?;
                        let fresh = tempfile::Builder::new().tempdir_in(&self.caches)?;
                        let mode = spec.mode.unwrap_or(0o755);
                        std::fs::set_permissions(
                            fresh.path(),
                            std::os::unix::fs::PermissionsExt::from_mode(mode),
                        )?;
                        std::os::unix::fs::chown(fresh.path(), spec.uid, spec.gid)?;
                        // Another build may have made it meanwhile: theirs stays.
                        let fresh = fresh.keep();
                        if std::fs::rename(&fresh, &dir).is_err() {
                            let _ = std::fs::remove_dir(&fresh);
                        }
                    }
                    if spec.sharing == Sharing::Locked {
                        let lock = std::fs::File::create(dir.with_extension("lock"))?;
                        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
                        lent.keep.push(Box::new(lock));
                    }
                    lent.mounts.push(Mount {
                        source: MountSource::Path(Root::open(&dir)?.open_path(Path::new("."))?),
                        target,
                        file: false,
                        readonly: spec.readonly.unwrap_or(false),
                    });
                }
                Kind::Tmpfs => lent.mounts.push(Mount {
                    source: MountSource::Tmpfs { size: spec.size },
                    target,
                    file: false,
                    readonly: false,
                }),
                Kind::Secret => {
                    let id = spec.id.as_deref().unwrap_or_default();
                    let Some(value) = self.secrets.get(id) else {
                        anyhow::ensure!(
                            !spec.required,
                            "the secret {id:?} is required: give it with --secret id={id},src=FILE (or env=VARIABLE)"
                        );
                        continue;
                    };
                    if let Some(variable) = &spec.env {
                        let text = String::from_utf8(value.clone()).map_err(|_| {
                            anyhow::anyhow!("the secret {id:?} is not text: it cannot be the variable {variable}")
                        })?;
                        lent.env.push((variable.clone(), text));
                        if spec.target.is_none() {
                            continue;
                        }
                    }
                    // A file for the run, owned and moded as asked, in a directory
                    // only root may enter: no other host user reaches it meanwhile.
                    let dir = crate::private::tempdir("berth-secret-")?;
                    let file = dir.path().join("secret");
                    std::fs::write(&file, value)?;
                    std::fs::set_permissions(
                        &file,
                        std::os::unix::fs::PermissionsExt::from_mode(spec.mode.unwrap_or(0o400)),
                    )?;
                    std::os::unix::fs::chown(&file, spec.uid, spec.gid)?;
                    let fd = Root::open(dir.path())?.open_path(Path::new("secret"))?;
                    lent.keep.push(Box::new(dir));
                    lent.mounts.push(Mount {
                        source: MountSource::Path(fd),
                        target,
                        file: true,
                        readonly: true,
                    });
                }
            }
        }
        Ok(lent)
    }
}

/// `berth image build --secret id=NAME,src=FILE` (or `env=VARIABLE`; `type=file|env`
/// accepted, as buildx reads them): the secrets by id.
pub(crate) fn read_secrets(flags: &[String]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut secrets = BTreeMap::new();
    for flag in flags {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        for field in flag.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_owned()),
                Some(("src" | "source", v)) => src = Some(v.to_owned()),
                Some(("env", v)) => env = Some(v.to_owned()),
                Some(("type", "file" | "env")) => {}
                _ => anyhow::bail!(
                    "--secret {flag}: expected id=NAME,src=FILE or id=NAME,env=VARIABLE"
                ),
            }
        }
        let id = id.ok_or_else(|| anyhow::anyhow!("--secret {flag}: id= is missing"))?;
        let value = match (src, env) {
            (Some(path), _) => std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("--secret {id}: cannot read {path}: {e}"))?,
            (None, Some(variable)) => std::env::var(&variable)
                .map_err(|_| anyhow::anyhow!("--secret {id}: the variable {variable} is not set"))?
                .into_bytes(),
            // As buildx: `id=NAME` alone is the variable NAME.
            (None, None) => std::env::var(&id)
                .map_err(|_| anyhow::anyhow!("--secret {id}: give src=FILE or env=VARIABLE"))?
                .into_bytes(),
        };
        secrets.insert(id, value);
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_specs_read_as_buildkit_writes_them() {
        let cache = MountSpec::parse(
            "type=cache,target=/root/.cache,id=go,sharing=locked,mode=0700,uid=1000",
        )
        .unwrap();
        assert_eq!(
            (cache.kind, cache.target(), cache.sharing),
            (Kind::Cache, "/root/.cache".into(), Sharing::Locked)
        );
        assert_eq!((cache.mode, cache.uid), (Some(0o700), Some(1000)));
        let bind = MountSpec::parse("source=go.mod,target=/src/go.mod").unwrap();
        assert_eq!(bind.kind, Kind::Bind);
        let secret = MountSpec::parse("type=secret,id=token").unwrap();
        assert_eq!(secret.target(), "/run/secrets/token");
        let named = MountSpec::parse("type=secret,target=/etc/npmrc").unwrap();
        assert_eq!(named.id.as_deref(), Some("npmrc"));
        for bad in [
            "type=ssh",
            "type=weird,target=/x",
            "type=cache",
            "type=bind,target=/x,from=build,rw",
            "type=cache,target=/x,sharing=sometimes",
            "type=cache,target=/x,mode=rwx",
            "type=tmpfs,target=/x,colour=blue",
            "type=cache,target=/x,from=build",
        ] {
            assert!(MountSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_come_from_files_and_variables() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret").unwrap();
        let secrets = read_secrets(&[format!("id=token,src={}", file.display())]).unwrap();
        assert_eq!(secrets["token"], b"s3cret");
        assert!(read_secrets(&["src=/nonexistent".into()]).is_err());
        assert!(read_secrets(&["id=x,src=/nonexistent/file".into()]).is_err());
        assert!(read_secrets(&["id=x,env=BERTH_TEST_SURELY_UNSET_VARIABLE".into()]).is_err());
    }
}
