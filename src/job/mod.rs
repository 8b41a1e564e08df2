//! What one run does, checked and resolved: the settings' values become a
//! `Job` (restore, rebuild or flush, each with exactly what it needs, keys
//! already rendered), which the modes take.
//!
//! Every check that can be made before touching storage is made here, so a
//! bad pipeline fails in milliseconds with exit code 2 and a message that
//! names the setting, instead of failing halfway through a transfer.

pub mod storage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::archive::Compression;
use crate::chunked::{self, cache::ChunkCache};
use crate::key::{self, KeyTemplate, Metadata};
use crate::mount::{self, MountSpec};
use crate::settings::SettingError;
use crate::settings::defs::Values;
use crate::settings::values::{Given, GivenText};
use crate::storage::StorageConfig;

/// What the process knows about where it runs, read once at its boundary.
#[derive(Clone, Debug, Default)]
pub struct Process {
    pub env: HashMap<String, String>,
    pub cwd: PathBuf,
    /// For the claim's holder, so a waiting rebuild can say who holds it.
    pub hostname: String,
    /// Whether restored files get their owners back (as GNU tar does as root).
    pub root: bool,
    /// Where OpenSSH would look for known_hosts when none is configured.
    pub known_hosts_files: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Restore,
    Rebuild,
    Flush,
    Export,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Restore => "restore",
            Mode::Rebuild => "rebuild",
            Mode::Export => "export",
            Mode::Flush => "flush",
        })
    }
}

#[derive(Clone, Debug)]
pub struct Job {
    pub task: Task,
    pub workspace: PathBuf,
    /// The folder holding this repository's entries, e.g. `octocat/hello`.
    pub remote_root: String,
    pub storage: StorageConfig,
    pub timeout: Duration,
    pub exit_code: bool,
    /// Where to write the JSON summary (absolute).
    pub result_file: Option<PathBuf>,
    pub log_level: tracing::Level,
    /// Why this build may not write to the cache, if it may not: pull
    /// requests read the cache but do not write it, so a pull request from
    /// anyone cannot plant an entry that trusted builds then restore (cache
    /// poisoning, as in CVE-2025-36852), unless `allow_pull_request_writes`.
    pub writes_blocked: Option<String>,
    /// Worth a warning, found while resolving (a field rendered as drone-cache did).
    pub notes: Vec<String>,
}

/// Why there is no job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The pipeline must be fixed: exit code 2.
    #[error(transparent)]
    Setting(#[from] SettingError),
    /// The key cannot be rendered in this build: a cache failure, which
    /// fails the step only with `exit_code`.
    #[error("{message}")]
    Unrenderable {
        mode: Mode,
        exit_code: bool,
        result_file: Option<PathBuf>,
        message: String,
    },
}

#[derive(Clone, Debug)]
pub enum Task {
    Restore(Restore),
    Rebuild(Rebuild),
    Flush(Flush),
    Export(Export),
}

/// Write an entry to one file (`export`), unpacking nothing.
#[derive(Clone, Debug)]
pub struct Export {
    pub key: String,
    /// Rendered restore keys, tried in order when `key` has no entry.
    pub prefixes: Vec<String>,
    /// The file to write (absolute).
    pub output: PathBuf,
}

#[derive(Clone, Debug)]
pub struct Restore {
    pub key: String,
    /// Rendered restore keys, tried in order as prefixes when `key` misses.
    pub prefixes: Vec<String>,
    pub mounts: Vec<MountSpec>,
    pub fail_on_miss: bool,
    /// Where drone-cache would have stored this key's entries, looked at
    /// when larder has none.
    pub drone_cache: Option<DroneCache>,
    /// The most an entry may unpack to.
    pub max_bytes: u64,
    /// Restore owners (only when running as root).
    pub owners: bool,
    /// The runner-local chunk cache (`chunk_cache`).
    pub cache: Option<ChunkCache>,
    /// Mark a restored Go build cache's entries unused (`trim_go_build_cache`).
    pub go_build_cache: bool,
}

#[derive(Clone, Debug)]
pub struct Rebuild {
    pub key: String,
    pub mounts: Vec<MountSpec>,
    pub compression: Compression,
    pub level: i32,
    pub skip_symlinks: bool,
    /// What to do when the key is already stored (`override`).
    pub stored: Stored,
    /// Who holds the claim while this rebuild uploads, for others' logs.
    pub holder: String,
    /// Store the entry as chunks (`entry_format: chunked`).
    pub chunking: Option<Chunking>,
    /// The runner-local chunk cache (`chunk_cache`).
    pub cache: Option<ChunkCache>,
    /// Remove what the build did not use from a Go build cache (`trim_go_build_cache`).
    pub go_build_cache: bool,
}

/// How a rebuild cuts and compresses a chunked entry.
#[derive(Clone, Copy, Debug)]
pub struct Chunking {
    pub params: chunked::Params,
    /// The zstd level of new chunks.
    pub level: i32,
    /// How long the rebuild may take before it may not publish.
    pub timing: chunked::gc::Timing,
    /// Bytes of new chunks gathered into one pack.
    pub pack_size: usize,
}

/// Not settings: knobs for the benchmark's chunk-size table.
pub const CHUNK_SIZE_VAR: &str = "LARDER_CHUNK_SIZE";
pub const CHUNK_LEVEL_VAR: &str = "LARDER_CHUNK_LEVEL";
pub const PACK_SIZE_VAR: &str = "LARDER_PACK_SIZE";
/// Not a setting: the chunk removal protocol's times in seconds, `D,G`
/// (tests shorten them to run the protocol in seconds).
pub const GC_TIMING_VAR: &str = "LARDER_GC_TIMING";

/// The chunk removal protocol's times: the default, or `LARDER_GC_TIMING`
/// when it holds two numbers of seconds, D <= G. Only tests shorten them:
/// below D + 5 minutes < G the protocol is no longer safe against rebuilds
/// running at the same time.
fn gc_timing(process: &Process) -> chunked::gc::Timing {
    let given = process.env.get(GC_TIMING_VAR).and_then(|text| {
        let (d, g) = text.split_once(',')?;
        let (d, g) = (d.trim().parse().ok()?, g.trim().parse().ok()?);
        (d <= g).then_some(chunked::gc::Timing {
            max_rebuild: Duration::from_secs(d),
            grace: Duration::from_secs(g),
        })
    });
    given.unwrap_or(chunked::gc::Timing::DEFAULT)
}

/// drone-cache's names for this build's entries: `<namespace>/<key>/<mount>`
/// (meltwater/drone-cache), or `<key>/<mount>` at the bucket's root (its
/// fork, drone-plugins/drone-meltwater-cache).
#[derive(Clone, Debug)]
pub struct DroneCache {
    /// `remote_root` if set, else the repository's name (not owner/name).
    pub namespace: String,
    /// The key as drone-cache rendered it: unsanitised, missing files as
    /// "", and md5 of the branch when `cache_key` is not set.
    pub key: String,
}

/// What a rebuild does with a key that is already stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// `override: false`: keys are immutable; skip.
    Keep,
    /// `override: true`: upload and replace, every time.
    Replace,
    /// `override` not set: replace only when the mounts changed since the
    /// entry was stored, so a static key (`cache_key: volume`, the branch)
    /// stays fresh and a checksum key is not uploaded again.
    ReplaceIfChanged,
}

/// What `flush` deletes.
#[derive(Clone, Debug, Default)]
pub struct Flush {
    pub max_age: Option<Duration>,
    pub max_size: Option<u64>,
    pub dry_run: bool,
    /// The chunk removal protocol's times.
    pub timing: chunked::gc::Timing,
}

impl Job {
    pub fn mode(&self) -> Mode {
        match self.task {
            Task::Restore(_) => Mode::Restore,
            Task::Rebuild(_) => Mode::Rebuild,
            Task::Flush(_) => Mode::Flush,
            Task::Export(_) => Mode::Export,
        }
    }

    /// The rendered key, for restore and rebuild.
    pub fn key(&self) -> Option<&str> {
        match &self.task {
            Task::Restore(r) => Some(&r.key),
            Task::Rebuild(r) => Some(&r.key),
            Task::Flush(_) => None,
            Task::Export(e) => Some(&e.key),
        }
    }

    /// Checks the values and resolves them into a job.
    pub fn new(values: &Values, process: &Process) -> Result<Job, JobError> {
        let metadata = Metadata::from_env(&process.env);
        let mode = mode(values)?;
        let workspace = workspace(values, &process.cwd)?;
        // Everything is checked before any key is rendered: a rendered key
        // may read files, and a typo elsewhere is the clearer message.
        let mounts = mounts(values, mode, &workspace)?;
        let template = key_template(values)?;
        let restore_templates = restore_templates(values)?;
        let flush = (mode == Mode::Flush)
            .then(|| flush(values, process))
            .transpose()?;
        let compression = compression(values);
        let (level, level_note) = compression
            .level(*values.compression_level)
            .map_err(|p| SettingError::unusable("compression_level", p))?;
        let remote_root = remote_root(values, &metadata)?;
        let storage = storage::storage(values, process)?;

        // A key that cannot be rendered now (a lockfile that is missing in
        // this build) is a cache failure, under exit_code, not a mistake in
        // the pipeline: drone-cache did not break such a build either.
        let mut notes: Vec<String> = level_note.into_iter().collect();
        let unrenderable = |problem: String| JobError::Unrenderable {
            mode,
            exit_code: *values.exit_code,
            result_file: values.result_file.text().map(|f| workspace.join(f)),
            message: format!(
                "cache_key '{}' cannot be rendered: {problem}",
                template.source
            ),
        };
        let rendered = match mode {
            Mode::Flush => None,
            _ => Some(
                template
                    .render(&metadata, &workspace)
                    .map_err(unrenderable)?,
            ),
        };
        let key = rendered.map(|r| {
            notes.extend(r.notes.into_iter().map(|n| format!("cache_key: {n}")));
            r.key
        });
        let task = match (mode, flush) {
            (Mode::Restore, _) => Task::Restore(Restore {
                key: key.unwrap_or_default(),
                prefixes: render_prefixes(&restore_templates, &metadata, &workspace, &mut notes),
                drone_cache: drone_cache_lookup(values, &template, &metadata, &workspace),
                mounts,
                fail_on_miss: *values.fail_on_miss,
                max_bytes: *values.max_restore_size,
                owners: process.root,
                cache: chunk_cache(values, &workspace, &remote_root),
                go_build_cache: *values.trim_go_build_cache,
            }),
            (Mode::Rebuild, _) => Task::Rebuild(Rebuild {
                key: key.unwrap_or_default(),
                mounts,
                compression,
                level,
                skip_symlinks: *values.skip_symlinks,
                stored: match values.override_existing.given() {
                    Some(true) => Stored::Replace,
                    Some(false) => Stored::Keep,
                    None => Stored::ReplaceIfChanged,
                },
                holder: holder(&metadata, process),
                chunking: chunking(values, compression, process, &mut notes),
                cache: chunk_cache(values, &workspace, &remote_root),
                go_build_cache: *values.trim_go_build_cache,
            }),
            (Mode::Flush, flush) => Task::Flush(flush.unwrap_or_default()),
            (Mode::Export, _) => Task::Export(Export {
                key: key.unwrap_or_default(),
                prefixes: render_prefixes(&restore_templates, &metadata, &workspace, &mut notes),
                output: process.cwd.join(values.export.text().unwrap_or_default()),
            }),
        };
        Ok(Job {
            task,
            result_file: values.result_file.text().map(|f| workspace.join(f)),
            remote_root,
            storage,
            timeout: *values.backend_operation_timeout,
            exit_code: *values.exit_code,
            log_level: log_level(values),
            writes_blocked: writes_blocked(values, &metadata),
            notes,
            workspace,
        })
    }
}

/// The restore keys that render; one that does not (a missing file) is
/// left out with a note.
fn render_prefixes(
    templates: &[KeyTemplate],
    metadata: &Metadata,
    workspace: &Path,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let mut prefixes = Vec::new();
    for template in templates {
        match template.render(metadata, workspace) {
            Ok(rendered) => {
                notes.extend(
                    rendered
                        .notes
                        .into_iter()
                        .map(|n| format!("restore_keys: {n}")),
                );
                prefixes.push(rendered.key);
            }
            Err(problem) => notes.push(format!(
                "restore key '{}' cannot be rendered ({problem}); it is left out",
                template.source
            )),
        }
    }
    prefixes
}

/// Where drone-cache kept this build's entries, for restoring them when
/// larder has none yet (the first run after switching).
fn drone_cache_lookup(
    values: &Values,
    template: &KeyTemplate,
    metadata: &Metadata,
    workspace: &Path,
) -> Option<DroneCache> {
    let key = match values.cache_key.text() {
        Some(_) => template.render_as_drone_cache(metadata, workspace)?,
        None => {
            use md5::Digest;
            let field = key::metadata::field(".Commit.Branch")?;
            let branch = metadata
                .get(field)
                .unwrap_or(key::metadata::unset_value(field));
            key::functions::hex(&md5::Md5::digest(branch.as_bytes()))
        }
    };
    let namespace = match values.remote_root.text() {
        Some(root) => root.to_string(),
        None => metadata
            .get_path(".Repo.Name")
            .unwrap_or_default()
            .to_string(),
    };
    (!key.is_empty()).then_some(DroneCache { namespace, key })
}

/// The `restore_keys` templates, parsed.
fn restore_templates(values: &Values) -> Result<Vec<KeyTemplate>, SettingError> {
    values
        .restore_keys
        .iter()
        .map(|source| {
            KeyTemplate::parse(source).map_err(|p| {
                SettingError::unusable("restore_keys", format!("cannot parse '{source}': {p}"))
            })
        })
        .collect()
}

fn mode(values: &Values) -> Result<Mode, SettingError> {
    let chosen: Vec<Mode> = [
        (*values.restore, Mode::Restore),
        (*values.rebuild, Mode::Rebuild),
        (*values.flush, Mode::Flush),
        (values.export.text().is_some(), Mode::Export),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, mode)| mode)
    .collect();
    match chosen.as_slice() {
        [mode] => Ok(*mode),
        [] => Err(SettingError::Conflict(
            "none of restore, rebuild and flush is true; set restore: true to fetch the cache, \
             rebuild: true to store it, or flush: true to clean it up (or export: FILE to \
             write an entry to a file)"
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

fn flush(values: &Values, process: &Process) -> Result<Flush, SettingError> {
    let flush = Flush {
        max_age: values.flush_age.given().copied(),
        max_size: values.max_size.given().copied(),
        dry_run: *values.dry_run,
        timing: gc_timing(process),
    };
    if flush.max_age.is_none() && flush.max_size.is_none() {
        return Err(SettingError::unusable(
            "flush_age",
            "flush needs flush_age (e.g. 14d), max_size (e.g. 10GB) or both",
        ));
    }
    Ok(flush)
}

/// How new entries are chunked, if they are (`entry_format: chunked`).
/// Chunks are zstd frames: `compression_level` sets their level when
/// `archive_format` is zstd, as it would for a whole archive.
fn chunking(
    values: &Values,
    compression: Compression,
    process: &Process,
    notes: &mut Vec<String>,
) -> Option<Chunking> {
    if *values.entry_format != "chunked" {
        return None;
    }
    let mut level = match (compression, *values.compression_level) {
        (Compression::Zstd, level @ 1..=19) => level as i32,
        _ => chunked::DEFAULT_LEVEL,
    };
    let mut params = chunked::Params::DEFAULT;
    let mut knob = |name: &str, range: std::ops::RangeInclusive<usize>| {
        let text = process.env.get(name)?;
        let value = text.parse::<usize>().ok().filter(|v| range.contains(v));
        if value.is_none() {
            notes.push(format!(
                "{name}={text} is not a number in {range:?}; ignored"
            ));
        }
        value
    };
    if let Some(avg) = knob(CHUNK_SIZE_VAR, 1024..=4 << 20) {
        params = chunked::Params::around(avg & !1);
    }
    if let Some(chosen) = knob(CHUNK_LEVEL_VAR, 1..=19) {
        level = chosen as i32;
    }
    let pack_size = knob(PACK_SIZE_VAR, 1..=256 << 20).unwrap_or(chunked::pack::PACK_SIZE);
    Some(Chunking {
        params,
        level,
        timing: gc_timing(process),
        pack_size,
    })
}

/// The runner-local chunk cache, if `chunk_cache` names one.
fn chunk_cache(values: &Values, workspace: &Path, remote_root: &str) -> Option<ChunkCache> {
    let dir = workspace.join(values.chunk_cache.text()?);
    Some(ChunkCache::new(&dir, remote_root, *values.chunk_cache_size))
}

fn compression(values: &Values) -> Compression {
    match *values.archive_format {
        "zstd" => Compression::Zstd,
        "tar" => Compression::None,
        _ => Compression::Gzip,
    }
}

fn workspace(values: &Values, cwd: &Path) -> Result<PathBuf, SettingError> {
    let path = match values.local_root.text() {
        Some(text) => cwd.join(text),
        None => cwd.to_path_buf(),
    };
    if !path.is_dir() {
        return Err(SettingError::unusable(
            "local_root",
            format!(
                "the workspace {} (from {}) is not a directory",
                path.display(),
                values.local_root.source()
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

fn mounts(values: &Values, mode: Mode, workspace: &Path) -> Result<Vec<MountSpec>, SettingError> {
    let texts = &values.mount.value;
    if texts.is_empty() && mode == Mode::Rebuild {
        return Err(SettingError::unusable(
            "mount",
            "nothing to cache; list directories relative to the workspace, e.g. mount: [pkg.mod]",
        ));
    }
    mount::parse_specs(workspace, texts).map_err(|p| SettingError::unusable("mount", p))
}

fn key_template(values: &Values) -> Result<KeyTemplate, SettingError> {
    let source = values.cache_key.text().unwrap_or(key::DEFAULT_TEMPLATE);
    KeyTemplate::parse(source)
        .map_err(|p| SettingError::unusable("cache_key", format!("cannot parse '{source}': {p}")))
}

/// Who holds a claim, for the log of a rebuild that has to wait.
fn holder(metadata: &Metadata, process: &Process) -> String {
    let build = metadata
        .get_path(".Build.Number")
        .map(|n| format!("build {n}"))
        .unwrap_or_else(|| "a rebuild".into());
    format!(
        "{build} (host {}, pid {})",
        process.hostname,
        std::process::id()
    )
}

fn writes_blocked(values: &Values, metadata: &Metadata) -> Option<String> {
    if *values.allow_pull_request_writes {
        return None;
    }
    let field = key::metadata::field(".Build.Event")?;
    let event = metadata.get(field)?;
    event.starts_with("pull_request").then(|| {
        format!(
            "this is a pull request build ({} is '{event}'), and pull requests do not write to \
             the cache, so one cannot plant entries that other builds restore. Set \
             allow_pull_request_writes: true to allow it",
            field.sources_text()
        )
    })
}

fn remote_root(values: &Values, metadata: &Metadata) -> Result<String, SettingError> {
    let text = match values.remote_root.text() {
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

fn log_level(values: &Values) -> tracing::Level {
    if *values.debug {
        return tracing::Level::DEBUG;
    }
    match *values.log_level {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::values_of;

    fn config(pairs: &[(&str, &str)]) -> Result<Job, JobError> {
        let process = Process {
            env: crate::settings::sources::env_of(pairs),
            cwd: PathBuf::from("/"),
            ..Process::default()
        };
        Job::new(&values_of(pairs)?, &process)
    }

    const BASE: &[(&str, &str)] = &[
        ("PLUGIN_RESTORE", "true"),
        ("PLUGIN_MOUNT", "pkg.mod"),
        ("PLUGIN_BUCKET", "ci-cache"),
        ("DRONE_REPO", "octo/hello"),
        ("DRONE_COMMIT_BRANCH", "main"),
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
        assert_eq!(c.mode(), Mode::Restore);
        assert_eq!(c.remote_root, "octo/hello");
        let rebuild = config(&with(&[
            ("PLUGIN_RESTORE", "false"),
            ("PLUGIN_REBUILD", "true"),
        ]))
        .unwrap();
        let Task::Rebuild(task) = &rebuild.task else {
            panic!("expected a rebuild")
        };
        assert_eq!(task.compression, Compression::Gzip);
        assert_eq!(task.stored, Stored::ReplaceIfChanged);
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
                &[
                    ("PLUGIN_RESTORE", "false"),
                    ("PLUGIN_REBUILD", "true"),
                    ("PLUGIN_COMPRESSION_LEVEL", "42"),
                ],
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
