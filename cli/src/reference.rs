//! Image references the way docker reads them: `nginx` is
//! `docker.io/library/nginx:latest`, a first component with a `.` or `:` (or
//! `localhost`) is a registry host, `@sha256:…` pins a digest.

use std::fmt;

pub const DOCKER_HUB: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (and port), e.g. `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/nginx`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
    /// No tag or digest was written, so the tag is `latest` (docker says so on pull).
    pub tag_defaulted: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {0:?}: {1}")]
pub struct ReferenceError(String, &'static str);

impl Reference {
    /// Parses `text`; a name without a registry goes to `default_registry` (Docker Hub
    /// rules, `library/` for one-component names, apply only there).
    pub fn parse(text: &str, default_registry: &str) -> Result<Reference, ReferenceError> {
        let bad = |why| ReferenceError(text.to_owned(), why);
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => {
                let (algo, hex) = d
                    .split_once(':')
                    .ok_or_else(|| bad("digest needs algo:hex"))?;
                if algo.is_empty() || hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(bad("malformed digest"));
                }
                (r, Some(d.to_owned()))
            }
            None => (text, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_owned())),
            _ => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(bad("invalid tag"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), path.to_owned())
            }
            _ => (default_registry.to_owned(), name.to_owned()),
        };
        if path.is_empty()
            || !path.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            })
        {
            return Err(bad(
                "repository names are lowercase letters, digits and . _ - separated by /",
            ));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag_defaulted = tag.is_none() && digest.is_none();
        let tag = if tag_defaulted {
            Some("latest".to_owned())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
            tag_defaulted,
        })
    }

    /// What a manifest request names: the digest if pinned, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// `registry/repository`, the name images are listed under.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The name as docker shows it: Docker Hub's `docker.io/`, and `library/` before
    /// a one-component name, left out (`nginx`, `alice/app`, `127.0.0.1:5000/app`).
    pub fn familiar_name(&self) -> String {
        if self.registry != DOCKER_HUB {
            return self.name();
        }
        match self.repository.strip_prefix("library/") {
            Some(short) if !short.contains('/') => short.to_owned(),
            _ => self.repository.clone(),
        }
    }

    /// The whole reference as docker shows it: `nginx:latest`.
    pub fn familiar(&self) -> String {
        self.with_name(self.familiar_name())
    }

    fn with_name(&self, mut name: String) -> String {
        if let Some(t) = &self.tag {
            name += &format!(":{t}");
        }
        if let Some(d) = &self.digest {
            name += &format!("@{d}");
        }
        name
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_name(self.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Reference {
        Reference::parse(s, DOCKER_HUB).unwrap()
    }

    #[test]
    fn short_names_follow_docker_hub_rules() {
        assert_eq!(parse("nginx").to_string(), "docker.io/library/nginx:latest");
        assert_eq!(parse("alice/app:1").to_string(), "docker.io/alice/app:1");
        let r = parse("127.0.0.1:5000/team/app");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "team/app")
        );
        assert_eq!(r.reference(), "latest");
        let r = parse("localhost/x:v2");
        assert_eq!(r.registry, "localhost");
        let d = "sha256:".to_owned() + &"ab".repeat(32);
        let r = parse(&format!("reg.example:443/a/b@{d}"));
        assert_eq!(r.reference(), d);
        assert_eq!(r.tag, None);
        let own = Reference::parse("busybox", "127.0.0.1:5000").unwrap();
        assert_eq!(own.to_string(), "127.0.0.1:5000/busybox:latest");
        assert!(own.tag_defaulted && !parse("a:latest").tag_defaulted);
    }

    #[test]
    fn familiar_names_are_dockers() {
        assert_eq!(parse("nginx").familiar(), "nginx:latest");
        assert_eq!(parse("docker.io/library/nginx:1").familiar(), "nginx:1");
        assert_eq!(parse("alice/app:1").familiar(), "alice/app:1");
        assert_eq!(parse("library/a/b").familiar_name(), "library/a/b");
        assert_eq!(
            parse("127.0.0.1:5000/library/x").familiar_name(),
            "127.0.0.1:5000/library/x"
        );
        let d = "sha256:".to_owned() + &"ab".repeat(32);
        assert_eq!(
            parse(&format!("busybox@{d}")).familiar(),
            format!("busybox@{d}")
        );
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "",
            "UPPER/case",
            "a//b",
            "a:",
            "a:-x",
            "a@sha256",
            "a@sha256:zz",
        ] {
            assert!(Reference::parse(bad, DOCKER_HUB).is_err(), "{bad}");
        }
    }
}
