//! Validated configuration: everything a mode needs, checked and typed.
//!
//! Every check that can be made before touching storage is made here, so a
//! bad pipeline fails in milliseconds with exit code 2 and a message that
//! names the setting, instead of failing halfway through a transfer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::SettingError;
use super::raw::RawSettings;
use crate::archive::Compression;
use crate::key::{self, KeyTemplate, Metadata};
use crate::mount::{self, MountSpec};
use crate::storage::StorageConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Restore,
    Rebuild,
    Flush,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Restore => "restore",
            Mode::Rebuild => "rebuild",
            Mode::Flush => "flush",
        })
    }
}

/// What `flush` deletes.
#[derive(Clone, Debug, Default)]
pub struct FlushOptions {
    pub max_age: Option<Duration>,
    pub max_size: Option<u64>,
    pub dry_run: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    pub workspace: PathBuf,
    pub mounts: Vec<MountSpec>,
    pub key: KeyTemplate,
    /// Prefix templates tried, in order, when the key has no entry.
    pub restore_keys: Vec<KeyTemplate>,
    pub fail_on_miss: bool,
    /// The most a restore unpacks (`max_restore_size`).
    pub max_restore_size: u64,
    pub allow_pull_request_writes: bool,
    pub flush: FlushOptions,
    /// Where to write the JSON summary (absolute).
    pub result_file: Option<PathBuf>,
    /// The folder holding this repository's entries, e.g. `octocat/hello`.
    pub remote_root: String,
    pub compression: Compression,
    pub level: i32,
    pub skip_symlinks: bool,
    pub override_existing: bool,
    pub storage: StorageConfig,
    pub timeout: Duration,
    pub exit_code: bool,
    pub log_level: tracing::Level,
    pub metadata: Metadata,
}

impl Config {
    /// Validates raw settings. `cwd` is the workspace when nothing names one.
    pub fn from_raw(
        raw: &RawSettings,
        metadata: Metadata,
        cwd: &Path,
    ) -> Result<Self, SettingError> {
        let mode = mode(raw)?;
        let workspace = workspace(raw, cwd)?;
        let mounts = mounts(raw, mode, &workspace)?;
        let key = key_template(raw)?;
        let restore_keys = raw
            .list("restore_keys")
            .iter()
            .map(|source| {
                KeyTemplate::parse(source).map_err(|p| {
                    SettingError::unusable("restore_keys", format!("cannot parse '{source}': {p}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let flush = flush_options(raw, mode)?;
        let result_file = raw.text("result_file").map(|f| workspace.join(f));
        let remote_root = remote_root(raw, &metadata)?;
        let compression = raw
            .text("archive_format")
            .and_then(Compression::from_setting)
            .ok_or_else(|| {
                SettingError::unusable(
                    "archive_format",
                    format!(
                        "'{}' is not a format; use gzip, zstd or tar",
                        raw.text("archive_format").unwrap_or_default()
                    ),
                )
            })?;
        let level = compression
            .level(raw.int("compression_level").unwrap_or(-1))
            .map_err(|p| SettingError::unusable("compression_level", p))?;
        Ok(Config {
            mode,
            workspace,
            mounts,
            key,
            restore_keys,
            fail_on_miss: raw.bool("fail_on_miss"),
            max_restore_size: raw.size("max_restore_size").unwrap_or(u64::MAX),
            allow_pull_request_writes: raw.bool("allow_pull_request_writes"),
            flush,
            result_file,
            remote_root,
            compression,
            level,
            skip_symlinks: raw.bool("skip_symlinks"),
            override_existing: raw.bool("override"),
            storage: super::backends::storage(raw)?,
            timeout: raw
                .duration("backend_operation_timeout")
                .unwrap_or(Duration::from_secs(180)),
            exit_code: raw.bool("exit_code"),
            log_level: log_level(raw)?,
            metadata,
        })
    }
}

fn mode(raw: &RawSettings) -> Result<Mode, SettingError> {
    let chosen: Vec<Mode> = [
        ("restore", Mode::Restore),
        ("rebuild", Mode::Rebuild),
        ("flush", Mode::Flush),
    ]
    .into_iter()
    .filter(|(name, _)| raw.bool(name))
    .map(|(_, mode)| mode)
    .collect();
    match chosen.as_slice() {
        [mode] => Ok(*mode),
        [] => Err(SettingError::Conflict(
            "none of restore, rebuild and flush is true; set restore: true to fetch the cache, \
             rebuild: true to store it, or flush: true to clean it up"
                .into(),
        )),
        several => Err(SettingError::Conflict(format!(
            "{} are {} true; use one larder step per job (restore before the build, \
             rebuild after it)",
            several
                .iter()
                .map(Mode::to_string)
                .collect::<Vec<_>>()
                .join(" and "),
            if several.len() == 2 { "both" } else { "all" }
        ))),
    }
}

fn flush_options(raw: &RawSettings, mode: Mode) -> Result<FlushOptions, SettingError> {
    let options = FlushOptions {
        max_age: raw.duration("flush_age"),
        max_size: raw.size("max_size"),
        dry_run: raw.bool("dry_run"),
    };
    if mode == Mode::Flush && options.max_age.is_none() && options.max_size.is_none() {
        return Err(SettingError::unusable(
            "flush_age",
            "flush needs flush_age (e.g. 14d), max_size (e.g. 10GB) or both",
        ));
    }
    Ok(options)
}

fn workspace(raw: &RawSettings, cwd: &Path) -> Result<PathBuf, SettingError> {
    let path = match raw.text("local_root") {
        Some(text) => cwd.join(text),
        None => cwd.to_path_buf(),
    };
    if !path.is_dir() {
        return Err(SettingError::unusable(
            "local_root",
            format!(
                "the workspace {} (from {}) is not a directory",
                path.display(),
                raw.source("local_root")
            ),
        ));
    }
    Ok(normalize(&path))
}

/// Removes `.` components and trailing slashes without touching the disk,
/// so mount paths compare equal however the workspace was spelled.
fn normalize(path: &Path) -> PathBuf {
    path.components().collect()
}

fn mounts(raw: &RawSettings, mode: Mode, workspace: &Path) -> Result<Vec<MountSpec>, SettingError> {
    let texts = raw.list("mount");
    if texts.is_empty() && mode == Mode::Rebuild {
        return Err(SettingError::unusable(
            "mount",
            "nothing to cache; list directories relative to the workspace, e.g. mount: [pkg.mod]",
        ));
    }
    mount::parse_specs(workspace, texts).map_err(|p| SettingError::unusable("mount", p))
}

fn key_template(raw: &RawSettings) -> Result<KeyTemplate, SettingError> {
    let source = raw.text("cache_key").unwrap_or(key::DEFAULT_TEMPLATE);
    KeyTemplate::parse(source)
        .map_err(|p| SettingError::unusable("cache_key", format!("cannot parse '{source}': {p}")))
}

fn remote_root(raw: &RawSettings, metadata: &Metadata) -> Result<String, SettingError> {
    let text = match raw.text("remote_root") {
        Some(t) => t.to_string(),
        None => metadata.full_name().ok_or_else(|| {
            SettingError::unusable(
                "remote_root",
                "not set, and the repository is unknown (DRONE_REPO and CI_REPO are unset); \
                 set remote_root to a folder name for this repository's entries",
            )
        })?,
    };
    let mut parts = Vec::new();
    for part in text.split('/').filter(|p| !p.is_empty()) {
        let clean = key::sanitize(part).map_err(|p| SettingError::unusable("remote_root", p))?;
        if clean.trim_matches(['.', '_']).is_empty() {
            return Err(SettingError::unusable(
                "remote_root",
                format!("'{text}' contains the folder name '{part}'; use plain names"),
            ));
        }
        parts.push(clean);
    }
    if parts.is_empty() {
        return Err(SettingError::unusable(
            "remote_root",
            "is empty; use e.g. octocat/hello",
        ));
    }
    Ok(parts.join("/"))
}

fn log_level(raw: &RawSettings) -> Result<tracing::Level, SettingError> {
    if raw.bool("debug") {
        return Ok(tracing::Level::DEBUG);
    }
    match raw
        .text("log_level")
        .unwrap_or("info")
        .to_ascii_lowercase()
        .as_str()
    {
        "error" => Ok(tracing::Level::ERROR),
        "warn" | "warning" => Ok(tracing::Level::WARN),
        "info" => Ok(tracing::Level::INFO),
        "debug" | "trace" => Ok(tracing::Level::DEBUG),
        other => Err(SettingError::unusable(
            "log_level",
            format!("'{other}' is not a level; use error, warn, info or debug"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, SettingError> {
        let env = crate::settings::raw::env_of(pairs);
        let raw = RawSettings::resolve(&HashMap::new(), &env)?;
        Config::from_raw(&raw, Metadata::from_env(&env), Path::new("/"))
    }

    const BASE: &[(&str, &str)] = &[
        ("PLUGIN_RESTORE", "true"),
        ("PLUGIN_MOUNT", "pkg.mod"),
        ("PLUGIN_BUCKET", "ci-cache"),
        ("DRONE_REPO", "octo/hello"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut all = BASE.to_vec();
        for (k, v) in extra {
            all.retain(|(key, _)| key != k);
            all.push((k, v));
        }
        all
    }

    #[test]
    fn a_minimal_s3_restore_is_valid() {
        let c = config(BASE).unwrap();
        assert_eq!(c.mode, Mode::Restore);
        assert_eq!(c.remote_root, "octo/hello");
        assert_eq!(c.compression, Compression::Gzip);
        assert!(!c.override_existing);
        let StorageConfig::S3(s3) = &c.storage else {
            panic!("expected s3")
        };
        assert_eq!(s3.bucket, "ci-cache");
        assert!(s3.keys.is_none());
    }

    #[test]
    fn mode_errors_say_what_to_set() {
        let err = config(&with(&[("PLUGIN_REBUILD", "true")])).unwrap_err();
        assert!(
            err.to_string()
                .contains("restore and rebuild are both true"),
            "{err}"
        );
        let err = config(&with(&[("PLUGIN_RESTORE", "false")])).unwrap_err();
        assert!(
            err.to_string()
                .contains("none of restore, rebuild and flush"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_setting() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("PLUGIN_BACKEND", "floppy")], "setting backend"),
            (
                &[("PLUGIN_ARCHIVE_FORMAT", "rar")],
                "setting archive_format",
            ),
            (
                &[("PLUGIN_COMPRESSION_LEVEL", "42")],
                "setting compression_level",
            ),
            (&[("PLUGIN_CACHE_KEY", "{{ .Nope }}")], "setting cache_key"),
            (&[("PLUGIN_MOUNT", "../up")], "setting mount"),
            (&[("PLUGIN_ENDPOINT", "ftp://x")], "setting endpoint"),
            (&[("PLUGIN_ACCESS_KEY", "AKID")], "setting secret_key"),
            (&[("PLUGIN_LOG_LEVEL", "loud")], "setting log_level"),
        ];
        for (extra, expected) in cases {
            let err = config(&with(extra)).unwrap_err().to_string();
            assert!(err.contains(expected), "{extra:?}: {err}");
        }
        let no_bucket: Vec<_> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| *k != "PLUGIN_BUCKET")
            .collect();
        let err = config(&no_bucket).unwrap_err().to_string();
        assert!(err.contains("setting bucket"), "{err}");
    }

    #[test]
    fn remote_root_defaults_to_owner_and_name_and_is_sanitised() {
        let c = config(&with(&[("PLUGIN_REMOTE_ROOT", "team a//cache")])).unwrap();
        assert_eq!(c.remote_root, "team-a/cache");
        assert!(config(&with(&[("PLUGIN_REMOTE_ROOT", "a/../b")])).is_err());
    }
}
