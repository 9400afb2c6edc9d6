//! Berth's typed configuration.
//!
//! Sources, lowest precedence first: built-in defaults, a TOML file, `BERTH_*`
//! environment variables, command-line flags. Each source is a [`Layer`] of
//! optional values; [`Config::resolve`] folds them in that order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod events;
pub mod proxy;
pub use events::{NotificationEndpoint, WebhookSettings};
pub use proxy::{ProxyAccess, ProxyConfig};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:5000";
pub const DEFAULT_DATA_DIR: &str = "./berth-data";
/// The spec leaves the limit to registries; 4 MiB is what Docker Hub and Distribution use.
pub const DEFAULT_MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Distribution purges abandoned uploads after a week; a day keeps less garbage and
/// is still far longer than any real push.
pub const DEFAULT_UPLOAD_EXPIRY_SECS: u64 = 24 * 3600;
/// Free space kept for metadata commits: far more than any burst of manifest, tag and
/// upload-row writes needs, and small next to any disk a registry runs on.
pub const DEFAULT_MIN_FREE: MinFree = MinFree::Bytes(256 * 1024 * 1024);
/// Garbage collection: a pass every 10 minutes keeps little garbage and costs little
/// (a pass over a quiet registry is a few index lookups and a listing of the store).
pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// What a blob nothing references is given before it is collected: far longer than
/// any push takes between uploading its layers and its manifest.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);
/// Audit log entries are kept this long: a quarter covers most incident reviews
/// (longer, or forever, is a setting).
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid value {value:?} for {key}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// The resolved configuration every other crate reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Database URL; `None` means SQLite inside `data_dir`.
    pub database_url: Option<String>,
    pub storage: StorageConfig,
    /// Upload sessions untouched for this long are deleted with their data.
    pub upload_expiry_secs: u64,
    /// Below this much free space in the data directory (and the blob root), new
    /// uploads and pushes are refused, so metadata commits never meet a full disk.
    pub min_free: MinFree,
    pub limits: Limits,
    pub auth: AuthConfig,
    pub gc: GcConfig,
    /// Audit log entries older than this are deleted (`[audit] retention`); `None`:
    /// kept forever.
    pub audit_retention: Option<Duration>,
    /// The storage quota of every namespace without one of its own (`[quota] default`);
    /// `None`: unlimited.
    pub default_quota: Option<u64>,
    pub log_format: LogFormat,
    /// Upstream registries mirrored under local namespaces (`[[proxy]]`).
    pub proxies: Vec<ProxyConfig>,
    /// Endpoints registry events are posted to (`[[notifications]]`).
    pub notifications: Vec<NotificationEndpoint>,
    pub webhooks: WebhookSettings,
}

/// Garbage collection (`[gc]`).
#[derive(Debug, Clone, PartialEq)]
pub struct GcConfig {
    /// Time between background passes; `None` (`"off"`) runs none (`berthd gc` still works).
    pub interval: Option<Duration>,
    /// Unreferenced blobs, and objects no row names, are kept this long after their
    /// last use (upload, mount, HEAD/GET) before they are deleted.
    pub grace: Duration,
    /// Untagged manifests (not listed by a tagged index, not pulled within the grace)
    /// older than this are deleted with their referrers; `None`: kept forever.
    pub delete_untagged_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// `None`: on when at least one user exists (so a fresh laptop install is an open
    /// registry until the first `berthd user add`).
    pub enabled: Option<bool>,
    /// The token `service` (and JWT audience) clients present.
    pub service: String,
    /// Base URL clients reach the registry at, for the token realm; `None` takes it
    /// from each request's Host header.
    pub external_url: Option<String>,
    pub token_ttl_secs: i64,
    /// Whether a repository created by its first push is private.
    pub private_by_default: bool,
    /// Whether anyone may create an account (`POST /auth/signup`; the web UI's form).
    pub signup: bool,
    /// The Ed25519 token-signing key (PKCS#8 DER); `None`: generated in the data dir.
    pub signing_key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StorageConfig {
    /// Blobs under `<data_dir>/blobs` (or the given root).
    Filesystem { root: Option<PathBuf> },
    /// An S3 bucket (AWS or any S3-compatible server); credentials come from the
    /// standard `AWS_*` environment variables, never from the config file.
    S3 {
        bucket: String,
        /// `None`: AWS itself. `http://` is allowed (a server on a private network).
        endpoint: Option<String>,
        region: String,
        /// Answer blob GETs with a redirect to a pre-signed URL when the blob is a
        /// single object, so the bytes do not pass through Berth.
        redirect: bool,
    },
}

/// A free-space reserve: bytes, or a share of the file system's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinFree {
    Bytes(u64),
    Percent(u8),
}

impl MinFree {
    /// `"512MiB"`, `"2GiB"`, `"10%"`, a number of bytes (`"0"` turns the reserve off).
    pub fn parse(text: &str) -> Result<MinFree, String> {
        let text = text.trim();
        if let Some(percent) = text.strip_suffix('%') {
            return match percent.trim().parse::<u8>() {
                Ok(p) if p < 100 => Ok(MinFree::Percent(p)),
                _ => Err("expected a percentage below 100, e.g. 5%".into()),
            };
        }
        parse_bytes(text)
            .map(MinFree::Bytes)
            .map_err(|_| "expected a size such as 512MiB, 2GiB or 10%".into())
    }

    /// The reserve in bytes on a file system of `total` bytes.
    pub fn bytes_of(self, total: u64) -> u64 {
        match self {
            MinFree::Bytes(n) => n,
            MinFree::Percent(p) => total / 100 * u64::from(p),
        }
    }
}

/// A size: `"50GiB"`, `"512MiB"`, `"20GB"` (decimal units too), or a number of bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let units = [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("TB", 1_000_000_000_000),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("kB", 1_000),
        ("KB", 1_000),
    ];
    let (number, unit) = units
        .iter()
        .find_map(|(suffix, size)| Some((text.strip_suffix(suffix)?, *size)))
        .unwrap_or((text.strip_suffix('B').unwrap_or(text), 1));
    number
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{text:?} is not a size such as 50GiB, 512MiB or 20GB"))
}

/// A size in the TOML file: a string with a unit (`"512MiB"`, `"5%"`) or a number of bytes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SizeSetting {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_manifest_bytes: u64,
    /// Pieces one upload takes at most: each `PATCH` is one, or on local disk several
    /// objects of up to 64 MiB for a large one.
    pub max_upload_chunks: u64,
}

/// As S3 takes 10,000 parts: real clients send one chunk, or chunks of megabytes.
pub const DEFAULT_MAX_UPLOAD_CHUNKS: u64 = 10_000;

/// One source of settings; every field is optional so sources can be stacked.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    #[serde(default)]
    pub database: DatabaseLayer,
    #[serde(default)]
    pub storage: StorageLayer,
    #[serde(default)]
    pub limits: LimitsLayer,
    #[serde(default)]
    pub auth: AuthLayer,
    #[serde(default)]
    pub gc: GcLayer,
    #[serde(default)]
    pub audit: AuditLayer,
    #[serde(default)]
    pub quota: QuotaLayer,
    /// `[[proxy]]` entries (the file only: a list does not fit one variable).
    pub proxy: Option<Vec<proxy::ProxyLayer>>,
    /// `[[notifications]]` entries (the file only).
    pub notifications: Option<Vec<events::NotificationLayer>>,
    #[serde(default)]
    pub webhooks: events::WebhooksLayer,
}

/// `[quota]`.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuotaLayer {
    pub default: Option<SizeSetting>,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthLayer {
    pub enabled: Option<bool>,
    pub service: Option<String>,
    pub external_url: Option<String>,
    pub token_ttl_secs: Option<i64>,
    /// `public` or `private`.
    pub default_visibility: Option<String>,
    pub signup: Option<bool>,
    pub signing_key: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseLayer {
    pub url: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageLayer {
    pub backend: Option<String>,
    pub root: Option<PathBuf>,
    pub bucket: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub redirect: Option<bool>,
    pub upload_expiry_secs: Option<u64>,
    pub min_free: Option<SizeSetting>,
}

/// `[audit]`: `retention` as a duration (`"90days"`), or `"0"`/`"off"`/`"none"` to
/// keep entries forever.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditLayer {
    pub retention: Option<String>,
}

/// `[gc]`: durations as text, e.g. `"10m"`, `"1h"`, `"30days"`, or `"off"`.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GcLayer {
    pub interval: Option<String>,
    pub grace: Option<String>,
    pub delete_untagged_after: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsLayer {
    pub max_manifest_bytes: Option<u64>,
    pub max_upload_chunks: Option<u64>,
}

impl Layer {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Layer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads `BERTH_*` variables through `get` (the process environment in production).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
        let bool_var = |key| parsed_var(&get, key, parse_bool);
        let u64_var = |key| parsed_var(&get, key, parse_u64);
        Ok(Layer {
            listen: get("BERTH_LISTEN"),
            data_dir: get("BERTH_DATA_DIR").map(PathBuf::from),
            log_format: get("BERTH_LOG_FORMAT"),
            database: DatabaseLayer {
                url: get("BERTH_DATABASE_URL"),
            },
            storage: StorageLayer {
                backend: get("BERTH_STORAGE_BACKEND"),
                root: get("BERTH_STORAGE_ROOT").map(PathBuf::from),
                bucket: get("BERTH_STORAGE_BUCKET"),
                endpoint: get("BERTH_STORAGE_ENDPOINT"),
                region: get("BERTH_STORAGE_REGION"),
                redirect: bool_var("BERTH_STORAGE_REDIRECT")?,
                upload_expiry_secs: u64_var("BERTH_STORAGE_UPLOAD_EXPIRY_SECS")?,
                min_free: get("BERTH_STORAGE_MIN_FREE").map(SizeSetting::Text),
            },
            limits: LimitsLayer {
                max_manifest_bytes: u64_var("BERTH_LIMITS_MAX_MANIFEST_BYTES")?,
                max_upload_chunks: u64_var("BERTH_LIMITS_MAX_UPLOAD_CHUNKS")?,
            },
            auth: AuthLayer {
                enabled: bool_var("BERTH_AUTH_ENABLED")?,
                service: get("BERTH_AUTH_SERVICE"),
                external_url: get("BERTH_AUTH_EXTERNAL_URL"),
                token_ttl_secs: u64_var("BERTH_AUTH_TOKEN_TTL_SECS")?.map(|s| s as i64),
                default_visibility: get("BERTH_AUTH_DEFAULT_VISIBILITY"),
                signup: bool_var("BERTH_AUTH_SIGNUP")?,
                signing_key: get("BERTH_AUTH_SIGNING_KEY").map(PathBuf::from),
            },
            quota: QuotaLayer {
                default: get("BERTH_QUOTA_DEFAULT").map(SizeSetting::Text),
            },
            proxy: None,
            notifications: None,
            webhooks: events::WebhooksLayer {
                allow_private: bool_var("BERTH_WEBHOOKS_ALLOW_PRIVATE")?,
                timeout: get("BERTH_WEBHOOKS_TIMEOUT"),
            },
            audit: AuditLayer {
                retention: get("BERTH_AUDIT_RETENTION"),
            },
            gc: GcLayer {
                interval: get("BERTH_GC_INTERVAL"),
                grace: get("BERTH_GC_GRACE"),
                delete_untagged_after: get("BERTH_GC_DELETE_UNTAGGED_AFTER"),
            },
        })
    }

    /// `self` with every value that `over` sets replaced by it.
    pub fn overlay(self, over: Layer) -> Layer {
        Layer {
            listen: over.listen.or(self.listen),
            data_dir: over.data_dir.or(self.data_dir),
            log_format: over.log_format.or(self.log_format),
            database: DatabaseLayer {
                url: over.database.url.or(self.database.url),
            },
            storage: StorageLayer {
                backend: over.storage.backend.or(self.storage.backend),
                root: over.storage.root.or(self.storage.root),
                bucket: over.storage.bucket.or(self.storage.bucket),
                endpoint: over.storage.endpoint.or(self.storage.endpoint),
                region: over.storage.region.or(self.storage.region),
                redirect: over.storage.redirect.or(self.storage.redirect),
                upload_expiry_secs: over
                    .storage
                    .upload_expiry_secs
                    .or(self.storage.upload_expiry_secs),
                min_free: over.storage.min_free.or(self.storage.min_free),
            },
            limits: LimitsLayer {
                max_manifest_bytes: over
                    .limits
                    .max_manifest_bytes
                    .or(self.limits.max_manifest_bytes),
                max_upload_chunks: over
                    .limits
                    .max_upload_chunks
                    .or(self.limits.max_upload_chunks),
            },
            auth: AuthLayer {
                enabled: over.auth.enabled.or(self.auth.enabled),
                service: over.auth.service.or(self.auth.service),
                external_url: over.auth.external_url.or(self.auth.external_url),
                token_ttl_secs: over.auth.token_ttl_secs.or(self.auth.token_ttl_secs),
                default_visibility: over
                    .auth
                    .default_visibility
                    .or(self.auth.default_visibility),
                signup: over.auth.signup.or(self.auth.signup),
                signing_key: over.auth.signing_key.or(self.auth.signing_key),
            },
            quota: QuotaLayer {
                default: over.quota.default.or(self.quota.default),
            },
            proxy: over.proxy.or(self.proxy),
            notifications: over.notifications.or(self.notifications),
            webhooks: events::WebhooksLayer {
                allow_private: over.webhooks.allow_private.or(self.webhooks.allow_private),
                timeout: over.webhooks.timeout.or(self.webhooks.timeout),
            },
            audit: AuditLayer {
                retention: over.audit.retention.or(self.audit.retention),
            },
            gc: GcLayer {
                interval: over.gc.interval.or(self.gc.interval),
                grace: over.gc.grace.or(self.gc.grace),
                delete_untagged_after: over
                    .gc
                    .delete_untagged_after
                    .or(self.gc.delete_untagged_after),
            },
        }
    }
}

/// A variable that is set must parse; its name is in the error.
fn parsed_var<T>(
    get: &impl Fn(&str) -> Option<String>,
    key: &'static str,
    parse: fn(&'static str, &str) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    get(key).map(|v| parse(key, &v)).transpose()
}

fn parse_bool(key: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Invalid {
            key,
            value: value.to_owned(),
            reason: "expected true or false".into(),
        }),
    }
}

/// A duration such as `"90s"`, `"10m"`, `"1h 30m"`, `"30days"`; `"off"` (or `"0"`) is `None`.
pub fn parse_duration(key: &'static str, value: &str) -> Result<Option<Duration>, ConfigError> {
    match value.trim() {
        "off" | "0" => Ok(None),
        text => humantime::parse_duration(text)
            .map(Some)
            .map_err(|e| ConfigError::Invalid {
                key,
                value: value.to_owned(),
                reason: format!("{e} (expected a duration such as 10m, 1h or 30days, or off)"),
            }),
    }
}

/// A count or size setting: `value`, else `default`; 0 is refused (`key` names it).
fn positive(key: &'static str, value: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(ConfigError::Invalid {
            key,
            value: "0".into(),
            reason: "must be positive".into(),
        }),
        n => Ok(n),
    }
}

fn parse_u64(key: &'static str, value: &str) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| ConfigError::Invalid {
            key,
            value: value.to_owned(),
            reason: e.to_string(),
        })
}

fn gc_config(layer: &GcLayer) -> Result<GcConfig, ConfigError> {
    let setting = |key, value: &Option<String>, default: Option<Duration>| match value {
        Some(text) => parse_duration(key, text),
        None => Ok(default),
    };
    let grace = setting("gc.grace", &layer.grace, Some(DEFAULT_GC_GRACE))?
        // No grace at all: a blob may go between its upload and its manifest.
        .unwrap_or_default();
    Ok(GcConfig {
        interval: setting("gc.interval", &layer.interval, Some(DEFAULT_GC_INTERVAL))?,
        grace,
        delete_untagged_after: setting(
            "gc.delete_untagged_after",
            &layer.delete_untagged_after,
            None,
        )?,
    })
}

impl Config {
    /// The defaults, with data kept in `dir` (tests and tools that set up a store of
    /// their own).
    pub fn in_dir(dir: &std::path::Path) -> Config {
        let flags = Layer {
            data_dir: Some(dir.to_owned()),
            ..Layer::default()
        };
        Config::resolve(Layer::default(), Layer::default(), flags)
            .expect("the defaults with a data directory are valid")
    }

    /// Folds the sources (file < env < flags) over the defaults.
    pub fn resolve(file: Layer, env: Layer, flags: Layer) -> Result<Config, ConfigError> {
        let merged = file.overlay(env).overlay(flags);
        let listen_text = merged.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen =
            listen_text
                .parse()
                .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                    key: "listen",
                    value: listen_text.clone(),
                    reason: format!("{e} (expected ADDR:PORT, e.g. 0.0.0.0:5000)"),
                })?;
        let storage = storage_config(merged.storage.clone())?;
        let upload_expiry_secs = positive(
            "storage.upload_expiry_secs",
            merged.storage.upload_expiry_secs,
            DEFAULT_UPLOAD_EXPIRY_SECS,
        )?;
        let min_free = match merged.storage.min_free.clone() {
            None => DEFAULT_MIN_FREE,
            Some(SizeSetting::Bytes(n)) => MinFree::Bytes(n),
            Some(SizeSetting::Text(text)) => {
                MinFree::parse(&text).map_err(|reason| ConfigError::Invalid {
                    key: "storage.min_free",
                    value: text,
                    reason,
                })?
            }
        };
        let log_format = match merged.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "log_format",
                    value: other.to_owned(),
                    reason: "expected text or json".into(),
                })
            }
        };
        let max_manifest_bytes = positive(
            "limits.max_manifest_bytes",
            merged.limits.max_manifest_bytes,
            DEFAULT_MAX_MANIFEST_BYTES,
        )?;
        let max_upload_chunks = positive(
            "limits.max_upload_chunks",
            merged.limits.max_upload_chunks,
            DEFAULT_MAX_UPLOAD_CHUNKS,
        )?;
        let private_by_default = match merged.auth.default_visibility.as_deref() {
            None | Some("public") => false,
            Some("private") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "auth.default_visibility",
                    value: other.to_owned(),
                    reason: "expected public or private".into(),
                })
            }
        };
        let gc = gc_config(&merged.gc)?;
        let audit_retention = match merged.audit.retention.as_deref().map(str::trim) {
            None => Some(DEFAULT_AUDIT_RETENTION),
            Some("none") => None,
            Some(text) => parse_duration("audit.retention", text)?,
        };
        let default_quota = match merged.quota.default.clone() {
            None => None,
            Some(SizeSetting::Bytes(n)) => Some(n),
            Some(SizeSetting::Text(text)) => {
                Some(parse_bytes(&text).map_err(|reason| ConfigError::Invalid {
                    key: "quota.default",
                    value: text,
                    reason,
                })?)
            }
        };
        Ok(Config {
            listen,
            data_dir: merged
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            database_url: merged.database.url,
            storage,
            upload_expiry_secs,
            min_free,
            limits: Limits {
                max_manifest_bytes,
                max_upload_chunks,
            },
            auth: AuthConfig {
                enabled: merged.auth.enabled,
                service: merged.auth.service.unwrap_or_else(|| "berth".into()),
                external_url: merged
                    .auth
                    .external_url
                    .map(|u| u.trim_end_matches('/').to_owned()),
                token_ttl_secs: merged.auth.token_ttl_secs.unwrap_or(300),
                private_by_default,
                signup: merged.auth.signup.unwrap_or(false),
                signing_key: merged.auth.signing_key,
            },
            gc,
            audit_retention,
            default_quota,
            log_format,
            proxies: proxy::resolve_all(merged.proxy.as_deref().unwrap_or_default(), listen)?,
            notifications: events::resolve_notifications(
                merged.notifications.as_deref().unwrap_or_default(),
            )?,
            webhooks: merged.webhooks.resolve()?,
        })
    }

    /// The database URL in force: the configured one, or SQLite in the data dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("berth.db").display()
            ),
        }
    }

    /// Where the filesystem backend keeps blobs (`None` for S3).
    pub fn blob_root(&self) -> Option<PathBuf> {
        match &self.storage {
            StorageConfig::Filesystem { root } => {
                Some(root.clone().unwrap_or_else(|| self.data_dir.join("blobs")))
            }
            StorageConfig::S3 { .. } => None,
        }
    }
}

fn storage_config(layer: StorageLayer) -> Result<StorageConfig, ConfigError> {
    let unused_for = |key: &'static str, set: bool, backend: &str| {
        if set {
            Err(ConfigError::Invalid {
                key,
                value: "(set)".into(),
                reason: format!("not used by the {backend} backend"),
            })
        } else {
            Ok(())
        }
    };
    match layer.backend.as_deref() {
        None | Some("filesystem") => {
            unused_for("storage.bucket", layer.bucket.is_some(), "filesystem")?;
            unused_for("storage.endpoint", layer.endpoint.is_some(), "filesystem")?;
            unused_for("storage.redirect", layer.redirect.is_some(), "filesystem")?;
            Ok(StorageConfig::Filesystem { root: layer.root })
        }
        Some("s3") => {
            unused_for("storage.root", layer.root.is_some(), "s3")?;
            let bucket = layer
                .bucket
                .filter(|b| !b.is_empty())
                .ok_or(ConfigError::Invalid {
                    key: "storage.bucket",
                    value: String::new(),
                    reason: "the s3 backend needs a bucket".into(),
                })?;
            if let Some(endpoint) = &layer.endpoint {
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return Err(ConfigError::Invalid {
                        key: "storage.endpoint",
                        value: endpoint.clone(),
                        reason: "expected an http:// or https:// URL".into(),
                    });
                }
            }
            Ok(StorageConfig::S3 {
                bucket,
                endpoint: layer.endpoint.map(|e| e.trim_end_matches('/').to_owned()),
                region: layer.region.unwrap_or_else(|| "us-east-1".into()),
                redirect: layer.redirect.unwrap_or(false),
            })
        }
        Some(other) => Err(ConfigError::Invalid {
            key: "storage.backend",
            value: other.to_owned(),
            reason: "supported backends: filesystem, s3".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Layer {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Layer::from_env(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = Config::resolve(Layer::default(), Layer::default(), Layer::default()).unwrap();
        assert_eq!(c.listen, "0.0.0.0:5000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("./berth-data"));
        assert_eq!(c.limits.max_manifest_bytes, 4 * 1024 * 1024);
        assert_eq!(c.database_url(), "sqlite://./berth-data/berth.db?mode=rwc");
        assert_eq!(c.blob_root(), Some(PathBuf::from("./berth-data/blobs")));
        assert_eq!(c.upload_expiry_secs, DEFAULT_UPLOAD_EXPIRY_SECS);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.min_free, MinFree::Bytes(256 * 1024 * 1024));
    }

    #[test]
    fn the_free_space_reserve_takes_sizes_and_percentages_with_the_usual_precedence() {
        let file: Layer = toml::from_str("[storage]\nmin_free = \"1GiB\"\n").unwrap();
        let c = Config::resolve(file.clone(), Layer::default(), Layer::default()).unwrap();
        assert_eq!(c.min_free, MinFree::Bytes(1 << 30));
        let c = Config::resolve(
            file,
            env(&[("BERTH_STORAGE_MIN_FREE", "5%")]),
            Layer::default(),
        )
        .unwrap();
        assert_eq!(c.min_free, MinFree::Percent(5));
        assert_eq!(c.min_free.bytes_of(1000), 50);
        let bytes: Layer = toml::from_str("[storage]\nmin_free = 4096\n").unwrap();
        let c = Config::resolve(bytes, Layer::default(), Layer::default()).unwrap();
        assert_eq!(c.min_free, MinFree::Bytes(4096));
        assert_eq!(MinFree::parse("0"), Ok(MinFree::Bytes(0)));
        assert_eq!(MinFree::parse("64 MiB"), Ok(MinFree::Bytes(64 << 20)));
        assert_eq!(MinFree::parse("300KiB"), Ok(MinFree::Bytes(300 << 10)));
        for bad in ["lots", "150%", "-1", "12XB", ""] {
            assert!(MinFree::parse(bad).is_err(), "{bad}");
        }
        let err = Config::resolve(
            Layer::default(),
            env(&[("BERTH_STORAGE_MIN_FREE", "plenty")]),
            Layer::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("storage.min_free"), "{err}");
    }

    #[test]
    fn s3_storage_takes_the_documented_keys_from_file_and_env() {
        let file: Layer = toml::from_str(
            "[database]\nurl = \"postgres://u:p@h:5432/berth\"\n[storage]\nbackend = \"s3\"\nbucket = \"registry\"\nendpoint = \"http://127.0.0.1:9000/\"\nregion = \"eu-west-1\"\n",
        )
        .unwrap();
        let c = Config::resolve(file.clone(), Layer::default(), Layer::default()).unwrap();
        assert_eq!(
            c.storage,
            StorageConfig::S3 {
                bucket: "registry".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: "eu-west-1".into(),
                redirect: false,
            }
        );
        assert_eq!(c.blob_root(), None);
        assert_eq!(c.database_url(), "postgres://u:p@h:5432/berth");
        let env = env(&[
            ("BERTH_STORAGE_BUCKET", "other"),
            ("BERTH_STORAGE_REDIRECT", "true"),
            ("BERTH_STORAGE_UPLOAD_EXPIRY_SECS", "60"),
            ("BERTH_LOG_FORMAT", "json"),
        ]);
        let c = Config::resolve(file, env, Layer::default()).unwrap();
        assert!(matches!(
            c.storage,
            StorageConfig::S3 { ref bucket, redirect: true, .. } if bucket == "other"
        ));
        assert_eq!(c.upload_expiry_secs, 60);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn s3_without_a_bucket_or_with_filesystem_keys_is_refused() {
        let resolve = |toml_text: &str| {
            let file: Layer = toml::from_str(toml_text).unwrap();
            Config::resolve(file, Layer::default(), Layer::default())
                .unwrap_err()
                .to_string()
        };
        assert!(resolve("[storage]\nbackend = \"s3\"\n").contains("storage.bucket"));
        assert!(
            resolve("[storage]\nbackend = \"s3\"\nbucket = \"b\"\nroot = \"/x\"\n")
                .contains("storage.root")
        );
        assert!(resolve("[storage]\nbucket = \"b\"\n").contains("storage.bucket"));
        assert!(
            resolve("[storage]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"ftp://x\"\n")
                .contains("storage.endpoint")
        );
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let file: Layer = toml::from_str(
            "listen = \"127.0.0.1:1\"\ndata_dir = \"/file\"\n[limits]\nmax_manifest_bytes = 10\n",
        )
        .unwrap();
        let env = env(&[("BERTH_LISTEN", "127.0.0.1:2"), ("BERTH_DATA_DIR", "/env")]);
        let flags = Layer {
            listen: Some("127.0.0.1:3".into()),
            ..Layer::default()
        };
        let c = Config::resolve(file.clone(), env.clone(), flags).unwrap();
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.data_dir, PathBuf::from("/env"));
        assert_eq!(c.limits.max_manifest_bytes, 10);
        let c = Config::resolve(file.clone(), env, Layer::default()).unwrap();
        assert_eq!(c.listen.port(), 2);
        let c = Config::resolve(file, Layer::default(), Layer::default()).unwrap();
        assert_eq!(c.listen.port(), 1);
        assert_eq!(c.data_dir, PathBuf::from("/file"));
    }

    #[test]
    fn bad_values_are_named() {
        let flags = Layer {
            listen: Some("nowhere".into()),
            ..Layer::default()
        };
        let err = Config::resolve(Layer::default(), Layer::default(), flags).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let unknown = toml::from_str::<Layer>("lisen = \"x\"").unwrap_err();
        assert!(unknown.to_string().contains("lisen"), "{unknown}");
        let env_err = Layer::from_env(|k| {
            (k == "BERTH_LIMITS_MAX_MANIFEST_BYTES").then(|| "lots".to_string())
        })
        .unwrap_err();
        assert!(env_err
            .to_string()
            .contains("BERTH_LIMITS_MAX_MANIFEST_BYTES"));
    }

    #[test]
    fn audit_retention_defaults_to_90_days_and_turns_off() {
        let resolve = |toml_text: &str| {
            let file: Layer = toml::from_str(toml_text).unwrap();
            Config::resolve(file, Layer::default(), Layer::default())
        };
        assert_eq!(
            resolve("").unwrap().audit_retention,
            Some(DEFAULT_AUDIT_RETENTION)
        );
        let year = resolve("[audit]\nretention = \"365days\"\n").unwrap();
        assert_eq!(
            year.audit_retention,
            Some(Duration::from_secs(365 * 86_400))
        );
        for forever in ["0", "off", "none"] {
            let text = format!("[audit]\nretention = \"{forever}\"\n");
            assert_eq!(resolve(&text).unwrap().audit_retention, None, "{forever}");
        }
        let err = resolve("[audit]\nretention = \"long\"\n").unwrap_err();
        assert!(err.to_string().contains("audit.retention"), "{err}");
        let env = Layer::from_env(|k| (k == "BERTH_AUDIT_RETENTION").then(|| "7days".into()));
        let c = Config::resolve(Layer::default(), env.unwrap(), Layer::default()).unwrap();
        assert_eq!(c.audit_retention, Some(Duration::from_secs(7 * 86_400)));
    }

    #[test]
    fn gc_durations_parse_and_turn_off() {
        let resolve = |toml_text: &str| {
            let file: Layer = toml::from_str(toml_text).unwrap();
            Config::resolve(file, Layer::default(), Layer::default())
        };
        let defaults = resolve("").unwrap().gc;
        assert_eq!(defaults.interval, Some(DEFAULT_GC_INTERVAL));
        assert_eq!(defaults.grace, DEFAULT_GC_GRACE);
        assert_eq!(defaults.delete_untagged_after, None);
        let set = resolve(
            "[gc]\ninterval = \"off\"\ngrace = \"90s\"\ndelete_untagged_after = \"30days\"\n",
        )
        .unwrap()
        .gc;
        assert_eq!(set.interval, None);
        assert_eq!(set.grace, Duration::from_secs(90));
        assert_eq!(
            set.delete_untagged_after,
            Some(Duration::from_secs(30 * 86400))
        );
        let err = resolve("[gc]\ngrace = \"soon\"\n").unwrap_err().to_string();
        assert!(err.contains("gc.grace") && err.contains("soon"), "{err}");
        assert!(toml::from_str::<Layer>("[gc]\nperiod = \"1h\"\n").is_err());
    }
}
