//! The build context: the directory sent to the build, minus what `.dockerignore`
//! excludes, and the files a `COPY`/`ADD` source (a path or a glob) names in it.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

use crate::inroot::Root;

/// `.dockerignore`: patterns in order, `!` re-includes, the last match wins; a pattern
/// that matches a directory excludes everything below it.
pub struct Ignore {
    rules: Vec<(GlobMatcher, bool)>,
}

fn glob(pattern: &str) -> anyhow::Result<GlobMatcher> {
    Ok(GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| anyhow::anyhow!("bad pattern {pattern:?}: {e}"))?
        .compile_matcher())
}

/// Cleans a pattern or path as Docker does: no leading `/` or `./`, no trailing `/`.
fn clean(p: &str) -> String {
    let p = p.trim();
    let p = p.trim_start_matches("./").trim_start_matches('/');
    p.trim_end_matches('/').to_owned()
}

impl Ignore {
    pub fn load(context: &Path) -> anyhow::Result<Ignore> {
        let text = match std::fs::read_to_string(context.join(".dockerignore")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        Ignore::parse(&text)
    }

    pub fn parse(text: &str) -> anyhow::Result<Ignore> {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (pattern, include) = match line.strip_prefix('!') {
                Some(p) => (p, true),
                None => (line, false),
            };
            let pattern = clean(pattern);
            if pattern.is_empty() {
                continue;
            }
            rules.push((glob(&pattern)?, include));
        }
        Ok(Ignore { rules })
    }

    /// Whether `rel` (relative to the context) is left out of the build.
    pub fn ignored(&self, rel: &Path) -> bool {
        let mut ignored = false;
        for (matcher, include) in &self.rules {
            if rel
                .ancestors()
                .filter(|a| !a.as_os_str().is_empty())
                .any(|a| matcher.is_match(a))
            {
                ignored = !include;
            }
        }
        ignored
    }
}

/// The paths (relative to `root`) a COPY source names: the path itself, or every path
/// a glob matches. Ignored paths are left out. Errors if nothing matches.
pub fn sources(root: &Path, source: &str, ignore: Option<&Ignore>) -> anyhow::Result<Vec<PathBuf>> {
    let cleaned = clean(source);
    let has_glob = cleaned.contains(['*', '?', '[']);
    let mut found = Vec::new();
    if has_glob {
        let matcher = glob(&cleaned)?;
        let mut all = Vec::new();
        list(root, Path::new(""), &mut all)?;
        found.extend(all.into_iter().filter(|p| matcher.is_match(p)));
        // A matched directory brings its contents; do not list them twice.
        found.sort();
        found.dedup_by(|b, a| b.starts_with(&*a));
    } else {
        let rel = PathBuf::from(if cleaned.is_empty() { "." } else { &cleaned });
        let full = root.join(&rel);
        // Sources may not leave the context.
        let canonical = full.canonicalize().map_err(|_| {
            anyhow::anyhow!("{source}: no such file or directory in the build context")
        })?;
        anyhow::ensure!(
            canonical.starts_with(root.canonicalize()?),
            "{source} is outside the build context"
        );
        found.push(rel);
    }
    if let Some(ignore) = ignore {
        found.retain(|p| p == Path::new(".") || !ignore.ignored(p));
    }
    anyhow::ensure!(
        !found.is_empty(),
        "{source}: no such file or directory in the build context (or excluded by .dockerignore)"
    );
    Ok(found)
}

/// The paths (relative to that stage's root) a `COPY --from=<stage>` source names:
/// the path itself, resolved in the stage's root (its symbolic links followed inside
/// that root, as in a chroot), or every path a glob matches (symbolic links to
/// directories are not descended into). Errors if nothing matches.
pub fn stage_sources(root: &Root, source: &str) -> anyhow::Result<Vec<PathBuf>> {
    let cleaned = clean(source);
    let mut found = Vec::new();
    if cleaned.contains(['*', '?', '[']) {
        let matcher = glob(&cleaned)?;
        let mut all = Vec::new();
        list_in_root(root, Path::new(""), &mut all)?;
        found.extend(all.into_iter().filter(|p| matcher.is_match(p)));
        found.sort();
        found.dedup_by(|b, a| b.starts_with(&*a));
    } else {
        let rel = crate::inroot::clean(Path::new(&cleaned));
        if root.lstat(&rel)?.is_some() {
            found.push(if rel.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                rel
            });
        }
    }
    anyhow::ensure!(
        !found.is_empty(),
        "{source}: no such file or directory in that stage"
    );
    Ok(found)
}

fn list_in_root(root: &Root, rel: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for name in root.read_dir(rel)? {
        let path = rel.join(name);
        out.push(path.clone());
        if root.lstat(&path)?.is_some_and(|m| m.is_dir()) {
            list_in_root(root, &path, out)?;
        }
    }
    Ok(())
}

fn list(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let path = rel.join(entry.file_name());
        out.push(path.clone());
        if entry.file_type()?.is_dir() {
            list(root, &path, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let ignore =
            Ignore::parse("# comment\n*.log\n/target\n**/secret*\n!keep.log\ndocs/*.md\n").unwrap();
        let ignored = |p: &str| ignore.ignored(Path::new(p));
        assert!(ignored("debug.log"));
        assert!(!ignored("keep.log"), "re-included");
        assert!(
            ignored("target/release/app"),
            "everything under an ignored directory"
        );
        assert!(ignored("a/b/secret.txt"));
        assert!(ignored("docs/x.md"));
        assert!(!ignored("docs/sub/x.md"), "* does not cross /");
        assert!(!ignored("src/main.rs"));
        assert!(
            !ignored("sub/debug.log"),
            "patterns are anchored at the context root"
        );
    }

    #[test]
    fn sources_by_path_and_glob() {
        let ctx = tempfile::tempdir().unwrap();
        let root = ctx.path();
        std::fs::create_dir_all(root.join("src/deep")).unwrap();
        for f in ["a.txt", "b.txt", "c.log", "src/x.rs", "src/deep/y.rs"] {
            std::fs::write(root.join(f), f).unwrap();
        }
        let ignore = Ignore::parse("b.txt\n").unwrap();
        assert_eq!(
            sources(root, "*.txt", Some(&ignore)).unwrap(),
            [PathBuf::from("a.txt")]
        );
        assert_eq!(
            sources(root, "./src/", None).unwrap(),
            [PathBuf::from("src")]
        );
        assert_eq!(
            sources(root, "src/**/*.rs", None).unwrap(),
            [PathBuf::from("src/deep/y.rs"), PathBuf::from("src/x.rs")]
        );
        assert!(sources(root, "b.txt", Some(&ignore)).is_err());
        assert!(sources(root, "missing", None)
            .unwrap_err()
            .to_string()
            .contains("no such file"));
        assert!(sources(root, "../etc/passwd", None).is_err());
    }
}
