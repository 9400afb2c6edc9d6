//! The page templates (minijinja, embedded in the binary) and their filters.

use std::sync::LazyLock;

use berth_oci::size::{human_size, SizeFormat};
use minijinja::{Environment, Value};

use crate::error::WebError;

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("../templates/base.html")),
        ("macros.html", include_str!("../templates/macros.html")),
        ("explore.html", include_str!("../templates/explore.html")),
        ("search.html", include_str!("../templates/search.html")),
        (
            "repository.html",
            include_str!("../templates/repository.html"),
        ),
        ("tag.html", include_str!("../templates/tag.html")),
        (
            "confirm_delete.html",
            include_str!("../templates/confirm_delete.html"),
        ),
        (
            "namespace.html",
            include_str!("../templates/namespace.html"),
        ),
        ("signin.html", include_str!("../templates/signin.html")),
        ("signup.html", include_str!("../templates/signup.html")),
        ("settings.html", include_str!("../templates/settings.html")),
        ("error.html", include_str!("../templates/error.html")),
        (
            "retention_preview.html",
            include_str!("../templates/retention_preview.html"),
        ),
        ("usage.html", include_str!("../templates/usage.html")),
        ("audit.html", include_str!("../templates/audit.html")),
        ("untagged.html", include_str!("../templates/untagged.html")),
        ("mirrors.html", include_str!("../templates/mirrors.html")),
        ("webhooks.html", include_str!("../templates/webhooks.html")),
    ] {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name} does not parse: {e}"));
    }
    env.add_filter("size", size);
    env.add_filter("ago", ago);
    env.add_filter("date", date);
    env.add_filter("timestamp", timestamp);
    env.add_filter("short", short_digest);
    env.add_filter("plural", plural);
    env
});

/// Renders template `name` (autoescaped: every `.html` template is).
pub fn render(name: &str, context: Value) -> Result<String, WebError> {
    Ok(TEMPLATES.get_template(name)?.render(context)?)
}

/// Bytes in decimal units with one decimal and a space (`2.5 MB`), as registries and
/// Docker Hub show sizes.
pub fn size(bytes: Option<i64>) -> String {
    let Some(bytes) = bytes else {
        return "—".into();
    };
    match u64::try_from(bytes) {
        Ok(unsigned) => human_size(unsigned, SizeFormat::OneDecimal),
        // A negative size is never stored; shown as it is rather than hidden.
        Err(_) => format!("{bytes} B"),
    }
}

/// `1 tag`, `2 tags`; `many` for irregular plurals (`repositories`).
pub fn plural(n: i64, one: &str, many: Option<&str>) -> String {
    match (n, many) {
        (1, _) => format!("{n} {one}"),
        (_, Some(many)) => format!("{n} {many}"),
        (_, None) => format!("{n} {one}s"),
    }
}

/// "3 minutes ago" from Unix milliseconds.
pub fn ago(millis: i64) -> String {
    let secs = (chrono::Utc::now().timestamp_millis() - millis).max(0) / 1000;
    let (n, unit) = match secs {
        0..60 => return "just now".into(),
        60..3600 => (secs / 60, "minute"),
        3600..86_400 => (secs / 3600, "hour"),
        86_400..2_592_000 => (secs / 86_400, "day"),
        2_592_000..31_536_000 => (secs / 2_592_000, "month"),
        _ => (secs / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// The UTC date of Unix milliseconds.
pub fn date(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// An RFC 3339 time (image configs and history) as `2026-01-31 12:00 UTC`; other
/// text unchanged.
pub fn timestamp(rfc3339: Option<String>) -> String {
    let Some(text) = rfc3339 else {
        return String::new();
    };
    chrono::DateTime::parse_from_rfc3339(&text)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .unwrap_or(text)
}

/// `sha256:` and the first 12 hex digits, as docker shows image ids.
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm}:{}", &hex[..hex.len().min(12)]),
        None => digest.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker_hub() {
        assert_eq!(size(Some(512)), "512 B");
        assert_eq!(size(Some(2_500_000)), "2.5 MB");
        assert_eq!(size(None), "—");
    }

    #[test]
    fn plurals() {
        assert_eq!(plural(0, "tag", None), "0 tags");
        assert_eq!(plural(1, "tag", None), "1 tag");
        assert_eq!(plural(2, "pull", None), "2 pulls");
        assert_eq!(
            plural(1, "repository", Some("repositories")),
            "1 repository"
        );
        assert_eq!(
            plural(3, "repository", Some("repositories")),
            "3 repositories"
        );
    }

    #[test]
    fn timestamps_read_as_utc_minutes() {
        assert_eq!(
            timestamp(Some("2026-11-26T21:05:41.26765342+01:00".into())),
            "2026-11-26 20:05 UTC"
        );
        assert_eq!(timestamp(Some("yesterday".into())), "yesterday");
        assert_eq!(timestamp(None), "");
    }

    #[test]
    fn digests_shorten_to_twelve_digits() {
        assert_eq!(
            short_digest("sha256:0123456789abcdef"),
            "sha256:0123456789ab"
        );
    }

    #[test]
    fn every_template_parses() {
        LazyLock::force(&TEMPLATES);
    }
}
