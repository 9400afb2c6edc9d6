//! ADD's downloads: an http(s) URL fetched into a directory of the step's own before
//! the step is keyed (so a changed file is a new layer), checked against `--checksum`
//! when given, with mode 0600 and the server's `Last-Modified` as its time, as docker
//! does. Git repositories are refused with a clear error.

use std::io::Write;
use std::time::{Duration, SystemTime};

use sha2::digest::DynDigest;

/// One URL of an ADD.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    pub url: String,
    /// The URL as shown (history, messages, the step's key): without a user or
    /// password it carries.
    pub shown: String,
    /// The file's name: the URL's last path segment (`download` when it has none).
    pub name: String,
    /// `sha256:<hex>` (or `sha384:`, `sha512:`) the content must have.
    pub checksum: Option<String>,
}

impl Remote {
    /// Reads ADD's source `text` and its `--checksum`.
    pub fn parse(text: &str, checksum: Option<String>) -> Result<Remote, String> {
        if text.starts_with("git@")
            || text.starts_with("git://")
            || text.ends_with(".git")
            || text.contains(".git#")
        {
            return Err(format!(
                "ADD from a git repository ({text}) is not supported: clone it in a RUN step"
            ));
        }
        let url = reqwest::Url::parse(text).map_err(|e| format!("{text} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "ADD downloads http and https URLs, not {}",
                url.scheme()
            ));
        }
        if let Some(c) = &checksum {
            let (algorithm, hex) = c.split_once(':').unwrap_or(("", c));
            let length = match algorithm {
                "sha256" => 64,
                "sha384" => 96,
                "sha512" => 128,
                _ => 0,
            };
            if length == 0 || hex.len() != length || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "--checksum={c} is not sha256:<hex>, sha384:<hex> or sha512:<hex>"
                ));
            }
        }
        let mut shown = url.clone();
        if !url.username().is_empty() || url.password().is_some() {
            let _ = shown.set_username("***");
            let _ = shown.set_password(None);
        }
        // The name stays percent-encoded: a decoded `%2F` would be a path.
        let name = url
            .path_segments()
            .and_then(|mut segments| segments.next_back())
            .filter(|n| !n.bytes().all(|b| b == b'.'))
            .unwrap_or("download")
            .to_owned();
        Ok(Remote {
            url: text.to_owned(),
            shown: shown.to_string(),
            name,
            checksum: checksum.map(|c| c.to_ascii_lowercase()),
        })
    }
}

/// Fetches `remotes` into a new directory; returns it and a line per URL with its
/// content's digest (for the step's key).
pub(super) async fn fetch(remotes: &[Remote]) -> anyhow::Result<(tempfile::TempDir, String)> {
    let dir = crate::private::tempdir("berth-add-")?;
    let http = reqwest::Client::builder()
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        // A server that stops sending fails the build instead of holding it.
        .read_timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let downgrade = attempt.url().scheme() == "http"
                && attempt.previous().iter().any(|u| u.scheme() == "https");
            if downgrade {
                attempt.error("a redirect from https to http is refused")
            } else if attempt.previous().len() >= 10 {
                attempt.error("more than 10 redirects")
            } else {
                attempt.follow()
            }
        }))
        .build()?;
    let mut digests = String::new();
    for remote in remotes {
        let url = &remote.shown;
        // reqwest's errors name the URL: shown without its credentials.
        let mut res = http
            .get(&remote.url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("ADD {url}: {}", e.without_url()))?;
        anyhow::ensure!(
            res.status().is_success(),
            "ADD {url}: the server answered {}",
            res.status()
        );
        let modified = res
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .map(SystemTime::from)
            // A time a tar header cannot hold, or one in the future, is not kept.
            .filter(|t| *t >= SystemTime::UNIX_EPOCH && *t <= SystemTime::now());
        let algorithm = remote
            .checksum
            .as_deref()
            .and_then(|c| c.split_once(':'))
            .map_or("sha256", |(a, _)| a);
        let mut hasher: Box<dyn DynDigest> = match algorithm {
            "sha384" => Box::new(sha2::Sha384::default()),
            "sha512" => Box::new(sha2::Sha512::default()),
            _ => Box::new(sha2::Sha256::default()),
        };
        let path = dir.path().join(&remote.name);
        let mut file = std::fs::File::create(&path)?;
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| anyhow::anyhow!("ADD {url}: {}", e.without_url()))?
        {
            hasher.update(&chunk);
            file.write_all(&chunk)?;
        }
        let digest = format!("{algorithm}:{}", hex::encode(hasher.finalize()));
        if let Some(expected) = &remote.checksum {
            anyhow::ensure!(
                &digest == expected,
                "ADD {url}: checksum mismatch: --checksum says {expected}, the download is {digest}"
            );
        }
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        if let Some(time) = modified {
            file.set_modified(time)?;
        }
        digests.push_str(&format!("\n{url} {digest}"));
    }
    Ok((dir, digests))
}

#[cfg(test)]
mod tests {
    use super::Remote;

    #[test]
    fn urls_name_their_files_and_git_is_refused() {
        let r = Remote::parse("https://example.com/dl/tool-1.2.tar.gz?x=1", None).unwrap();
        assert_eq!(r.name, "tool-1.2.tar.gz");
        assert_eq!(
            Remote::parse("http://example.com/", None).unwrap().name,
            "download"
        );
        assert_eq!(
            Remote::parse("http://example.com/..", None).unwrap().name,
            "download"
        );
        assert_eq!(
            Remote::parse("http://e.com/a%2Fb", None).unwrap().name,
            "a%2Fb"
        );
        for git in [
            "https://github.com/moby/buildkit.git",
            "git@github.com:moby/buildkit.git",
            "https://github.com/moby/buildkit.git#v0.10.1",
        ] {
            let e = Remote::parse(git, None).unwrap_err();
            assert!(e.contains("git repository"), "{e}");
        }
        assert!(Remote::parse("ftp://example.com/f", None)
            .unwrap_err()
            .contains("http and https"));
        let sum = format!("sha256:{}", "a".repeat(64));
        assert!(Remote::parse("https://e.com/f", Some(sum)).is_ok());
        for bad in ["sha256:abc", "md5:0123", "nothex"] {
            assert!(
                Remote::parse("https://e.com/f", Some(bad.into())).is_err(),
                "{bad}"
            );
        }
    }
}
