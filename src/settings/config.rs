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
use crate::mount::{self, Mount};
use crate::storage::StorageConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Restore,
    Rebuild,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Restore => "restore",
            Mode::Rebuild => "rebuild",
        })
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    pub workspace: PathBuf,
    pub mounts: Vec<Mount>,
    pub key: KeyTemplate,
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
        let mounts = mounts(raw, &workspace)?;
        let key = key_template(raw)?;
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
    match (raw.bool("restore"), raw.bool("rebuild")) {
        (true, false) => Ok(Mode::Restore),
        (false, true) => Ok(Mode::Rebuild),
        (true, true) => Err(SettingError::Conflict(
            "restore and rebuild are both true; use one larder step with restore: true \
             before the build and another with rebuild: true after it"
                .into(),
        )),
        (false, false) => Err(SettingError::Conflict(
            "neither restore nor rebuild is true; set restore: true to fetch the cache \
             or rebuild: true to store it"
                .into(),
        )),
    }
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

fn mounts(raw: &RawSettings, workspace: &Path) -> Result<Vec<Mount>, SettingError> {
    let texts = raw.list("mount");
    if texts.is_empty() {
        return Err(SettingError::unusable(
            "mount",
            "nothing to cache; list directories relative to the workspace, e.g. mount: [pkg.mod]",
        ));
    }
    mount::resolve_all(workspace, texts).map_err(|p| SettingError::unusable("mount", p))
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
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
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
        assert!(err.to_string().contains("both true"), "{err}");
        let err = config(&with(&[("PLUGIN_RESTORE", "false")])).unwrap_err();
        assert!(
            err.to_string().contains("neither restore nor rebuild"),
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
