//! Every setting larder understands, defined exactly once.
//!
//! A setting's name is what a pipeline writes under `settings:`. Drone and
//! Woodpecker pass it as `PLUGIN_<NAME>`; the same value can come from the
//! command line as `--<name-with-dashes>` or from the listed aliases (the
//! environment variables meltwater/drone-cache read, so its pipelines keep
//! working). `--help` and `docs/settings.md` are generated from this table.

/// How a setting's text is interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `true`/`false` (also `1`/`0`, `yes`/`no`); a bare `--flag` means true.
    Bool,
    /// Free text.
    Text,
    /// Text that must never be printed: keys, passwords, tokens.
    Secret,
    /// A comma-separated list (`mount: [a, b]` arrives as `a,b`).
    List,
    /// A whole number.
    Int,
    /// A duration such as `90s`, `3m`, `1h30m`.
    Duration,
}

/// Where a setting is shown in `--help` and in the settings reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Mode,
    Cache,
    Archive,
    Storage,
    S3,
    Filesystem,
    Output,
}

impl Group {
    pub const ALL: [Group; 7] = [
        Group::Mode,
        Group::Cache,
        Group::Archive,
        Group::Storage,
        Group::S3,
        Group::Filesystem,
        Group::Output,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Group::Mode => "Mode",
            Group::Cache => "What to cache and under which key",
            Group::Archive => "Archive",
            Group::Storage => "Storage",
            Group::S3 => "S3 and S3-compatible storage (backend: s3)",
            Group::Filesystem => "Mounted volume (backend: filesystem)",
            Group::Output => "Logging and failure handling",
        }
    }
}

/// One setting: its name, where its value may come from, and what it means.
#[derive(Debug)]
pub struct Setting {
    /// The key under `settings:`; the flag is `--` plus this with `-` for `_`.
    pub name: &'static str,
    /// Environment variables read after `PLUGIN_<NAME>`, in order.
    pub aliases: &'static [&'static str],
    /// Extra command-line spellings (drone-cache's dotted flag names).
    pub flag_aliases: &'static [&'static str],
    pub kind: Kind,
    /// Used when no source sets the setting; parsed like any user input.
    pub default: Option<&'static str>,
    pub group: Group,
    /// One paragraph of help: what it does, and what to write.
    pub help: &'static str,
}

impl Setting {
    /// The environment variable Drone and Woodpecker set from `settings:`.
    pub fn plugin_env(&self) -> String {
        format!("PLUGIN_{}", self.name.to_ascii_uppercase())
    }

    /// The command-line flag, without the leading dashes.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }

    /// Every environment variable that can set this setting, in precedence order.
    pub fn envs(&self) -> Vec<String> {
        std::iter::once(self.plugin_env())
            .chain(self.aliases.iter().map(|a| a.to_string()))
            .collect()
    }
}

macro_rules! setting {
    ($name:literal, $kind:ident, $group:ident, default: $default:expr,
     aliases: [$($alias:literal),*], flags: [$($flag:literal),*], $help:literal) => {
        Setting {
            name: $name,
            aliases: &[$($alias),*],
            flag_aliases: &[$($flag),*],
            kind: Kind::$kind,
            default: $default,
            group: Group::$group,
            help: $help,
        }
    };
}

/// The table. Order here is the order in `--help` within each group.
pub static SETTINGS: &[Setting] = &[
    setting!("restore", Bool, Mode, default: Some("false"), aliases: [], flags: [],
        "Download the cache entry for the key and unpack it into the workspace. \
         A miss is not an error. Exactly one of restore and rebuild must be true."),
    setting!("rebuild", Bool, Mode, default: Some("false"), aliases: [], flags: [],
        "Archive the mounts and upload them under the key. If the key is already \
         stored the upload is skipped (see override)."),
    setting!("mount", List, Cache, default: None, aliases: [], flags: [],
        "Directories or files to cache, relative to the workspace (absolute paths \
         are allowed). All mounts go into one cache entry. Example: [pkg.mod, .cache/go-build]."),
    setting!("cache_key", Text, Cache, default: None, aliases: [], flags: ["cache.key"],
        "Template for the cache key, in drone-cache's Go-template syntax: \
         {{ .Commit.Branch }}, {{ checksum \"go.sum\" }}, {{ hashFiles \"**/go.sum\" }}, \
         {{ arch }}, {{ os }}, {{ epoch }}. Characters other than letters, digits and \
         . _ - + = @ become '-'. Default: the commit branch."),
    setting!("remote_root", Text, Cache, default: None, aliases: [], flags: ["remote.root"],
        "Folder in the bucket or cache root that holds this repository's entries. \
         Default: the repository's owner/name (DRONE_REPO or CI_REPO)."),
    setting!("local_root", Text, Cache,
        default: None, aliases: ["DRONE_WORKSPACE", "CI_WORKSPACE"], flags: ["local.root"],
        "The workspace: relative mounts and checksum paths start here. \
         Default: DRONE_WORKSPACE or CI_WORKSPACE, else the current directory."),
    setting!("override", Bool, Cache, default: Some("false"), aliases: [], flags: [],
        "Replace an entry that already exists under the key. Off by default: keys are \
         immutable, so put a lockfile checksum in cache_key and a changed lockfile \
         makes a new entry. (drone-cache defaulted this to true.)"),
    setting!("archive_format", Text, Archive, default: Some("gzip"), aliases: [],
        flags: ["archive.format"],
        "Compression of new entries: gzip (.tar.gz), zstd (.tar.zst) or tar (no compression). \
         Restore reads any of them, whatever this says."),
    setting!("compression_level", Int, Archive, default: Some("-1"), aliases: [],
        flags: ["compression.level"],
        "Compression level: gzip 1-9, zstd 1-19. -1 picks the format's default \
         (gzip 6, zstd 3)."),
    setting!("skip_symlinks", Bool, Archive, default: Some("false"),
        aliases: ["SKIP_SYMLINKS"], flags: [],
        "Leave symbolic links out of the archive. By default they are stored as links \
         (never followed) and restored as links."),
    setting!("backend", Text, Storage, default: Some("s3"), aliases: [], flags: [],
        "Where entries are stored: s3 (AWS S3 or any S3-compatible server) or \
         filesystem (a mounted volume)."),
    setting!("backend_operation_timeout", Duration, Storage, default: Some("3m"),
        aliases: ["BACKEND_OPERATION_TIMEOUT"], flags: ["backend.operation-timeout"],
        "Longest time one storage request may take (one upload part, one download \
         range, one lookup) before the step gives up. Whole transfers may take longer."),
    setting!("bucket", Text, S3, default: None, aliases: ["S3_BUCKET"], flags: [],
        "Bucket name. Required for backend s3."),
    setting!("endpoint", Text, S3, default: None, aliases: ["S3_ENDPOINT"], flags: [],
        "S3-compatible server URL, e.g. https://minio.example.com:9000. \
         Default: AWS for the region."),
    setting!("region", Text, S3, default: None,
        aliases: ["S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"], flags: [],
        "Bucket region. Default: us-east-1."),
    setting!("path_style", Bool, S3, default: Some("false"),
        aliases: ["AWS_PLUGIN_PATH_STYLE"], flags: [],
        "Address the bucket as endpoint/bucket instead of bucket.endpoint. \
         Most self-hosted servers (MinIO, Ceph, Garage) need true."),
    setting!("access_key", Secret, S3, default: None,
        aliases: ["AWS_ACCESS_KEY_ID", "CACHE_AWS_ACCESS_KEY_ID"], flags: [],
        "Access key ID. Without access_key and secret_key, the standard AWS chain is \
         used: web identity (IRSA), ECS/EKS container credentials, instance profile."),
    setting!("secret_key", Secret, S3, default: None,
        aliases: ["AWS_SECRET_ACCESS_KEY", "CACHE_AWS_SECRET_ACCESS_KEY"], flags: [],
        "Secret access key. Pass it from a secret, never in the pipeline file."),
    setting!("session_token", Secret, S3, default: None, aliases: ["AWS_SESSION_TOKEN"],
        flags: [],
        "Session token for temporary credentials (used with access_key and secret_key)."),
    setting!("disable_ssl", Bool, S3, default: Some("false"),
        aliases: ["PLUGIN_DISABLESSL", "AWS_DISABLESSL"], flags: [],
        "Use plain http for an endpoint given without a scheme. An endpoint written \
         as http://... is always used as given."),
    setting!("filesystem_cache_root", Text, Filesystem, default: Some("/tmp/cache"),
        aliases: ["FILESYSTEM_CACHE_ROOT"], flags: ["filesystem.cache-root"],
        "Directory that holds the entries, usually a host volume mounted into the \
         step. Created if missing."),
    setting!("exit_code", Bool, Output, default: Some("false"), aliases: ["EXIT_CODE"],
        flags: [],
        "Fail the step (exit 1) when restore or rebuild fails. By default a failure is \
         logged as a warning and the step succeeds, so a cache problem never breaks a build."),
    setting!("debug", Bool, Output, default: Some("false"), aliases: ["DEBUG"], flags: [],
        "Log each step in detail. Secrets are never logged, with or without debug."),
    setting!("log_level", Text, Output, default: Some("info"), aliases: ["LOG_LEVEL"],
        flags: ["log.level"],
        "error, warn, info or debug."),
];

/// drone-cache settings larder recognises but does not implement. Setting one
/// gets a warning instead of silence, so nobody believes it took effect.
pub static UNSUPPORTED: &[(&str, &str)] = &[
    (
        "PLUGIN_ACL",
        "objects are stored with the bucket's default ACL",
    ),
    (
        "PLUGIN_ENCRYPTION",
        "objects use the bucket's default encryption",
    ),
    (
        "PLUGIN_S3_BUCKET_PUBLIC",
        "anonymous access is not supported",
    ),
    (
        "PLUGIN_STS_ENDPOINT",
        "assume-role is not supported; use web identity or keys",
    ),
    (
        "PLUGIN_ASSUME_ROLE_ARN",
        "assume-role is not supported; use web identity or keys",
    ),
    ("PLUGIN_LOG_FORMAT", "logs are plain text"),
];

/// Looks a setting up by its name.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_flags_and_envs_are_unique() {
        let mut names = HashSet::new();
        let mut envs = HashSet::new();
        let mut flags = HashSet::new();
        for s in SETTINGS {
            assert!(names.insert(s.name), "duplicate setting {}", s.name);
            for e in s.envs() {
                assert!(envs.insert(e.clone()), "env {e} used twice");
            }
            assert!(flags.insert(s.flag()), "flag {} used twice", s.flag());
            for f in s.flag_aliases {
                assert!(flags.insert(f.to_string()), "flag {f} used twice");
            }
        }
    }

    #[test]
    fn every_default_parses_as_its_kind() {
        for s in SETTINGS {
            if let Some(d) = s.default {
                super::super::raw::parse_value(s, d)
                    .unwrap_or_else(|e| panic!("default of {} is invalid: {e}", s.name));
            }
        }
    }
}
