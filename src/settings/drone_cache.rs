//! What larder does with each setting of meltwater/drone-cache (v1.4) and
//! its fork drone-plugins/drone-meltwater-cache: the migration guide's
//! table (`docs/migrating.md`, generated from this), and the names the typo
//! check must not mistake for typos. A unit test holds every row against
//! the settings table.

/// How larder treats one drone-cache setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handling {
    /// The same setting, read from the same variables.
    Same,
    /// Read, and used differently; the text says how.
    Differs(&'static str),
    /// Not implemented; a warning says so when it is set.
    Unsupported(&'static str),
}

/// One drone-cache setting.
#[derive(Debug)]
pub struct Old {
    /// The key under `settings:` (or the variable, for those without one).
    pub name: &'static str,
    /// The variables drone-cache read it from.
    pub envs: &'static [&'static str],
    /// The larder setting that reads it, if any.
    pub larder: Option<&'static str>,
    pub handling: Handling,
}

macro_rules! old {
    ($name:literal, [$($env:literal),*], $larder:expr, $handling:expr) => {
        Old {
            name: $name,
            envs: &[$($env),*],
            larder: $larder,
            handling: $handling,
        }
    };
}

use Handling::{Differs, Same, Unsupported};

/// Every setting of drone-cache and its fork, in drone-cache's order.
pub static SETTINGS: &[Old] = &[
    old!("restore", ["PLUGIN_RESTORE"], Some("restore"), Same),
    old!("rebuild", ["PLUGIN_REBUILD"], Some("rebuild"), Same),
    old!(
        "mount",
        ["PLUGIN_MOUNT"],
        Some("mount"),
        Differs(
            "patterns with ** are recorded at rebuild, so a restore into an empty workspace brings \
         them back (drone-cache restored nothing for them)"
        )
    ),
    old!(
        "cache_key",
        ["PLUGIN_CACHE_KEY"],
        Some("cache_key"),
        Differs(
            "rendered the same, then made safe as an object name (a / becomes -); without it the \
         key is the branch name, not its md5. A missing checksum file is a cache failure \
         (exit_code decides), not an empty string"
        )
    ),
    old!(
        "remote_root",
        ["PLUGIN_REMOTE_ROOT"],
        Some("remote_root"),
        Differs(
            "defaults to owner/name (DRONE_REPO), not the bare name, which collides between owners"
        )
    ),
    old!(
        "local_root",
        ["PLUGIN_LOCAL_ROOT"],
        Some("local_root"),
        Same
    ),
    old!(
        "override",
        ["PLUGIN_OVERRIDE"],
        Some("override"),
        Differs(
            "true and false mean what they meant; not set, a stored key is replaced only when \
         the mounts changed since (drone-cache: true, every rebuild uploaded again)"
        )
    ),
    old!(
        "archive_format",
        ["PLUGIN_ARCHIVE_FORMAT"],
        Some("archive_format"),
        Differs(
            "applies to entry_format: archive, and defaults to gzip there (drone-cache: tar); \
         new entries are chunked by default (zstd chunks stored once per repository, a small \
         index per key), entry_format: archive stores one archive per key as drone-cache did; \
         restore reads every format whatever these say"
        )
    ),
    old!(
        "compression_level",
        ["PLUGIN_COMPRESSION_LEVEL"],
        Some("compression_level"),
        Differs(
            "-1 picks larder's default (gzip 1, zstd 3); 0 is gzip's stored blocks and zstd's \
         default; zstd 20-22 are read as 19"
        )
    ),
    old!(
        "skip_symlinks",
        ["PLUGIN_SKIP_SYMLINKS", "SKIP_SYMLINKS"],
        Some("skip_symlinks"),
        Same
    ),
    old!(
        "exit_code",
        ["PLUGIN_EXIT_CODE", "EXIT_CODE"],
        Some("exit_code"),
        Same
    ),
    old!(
        "debug",
        ["PLUGIN_DEBUG", "DEBUG"],
        Some("debug"),
        Differs("logs each step in detail, never the environment or secrets")
    ),
    old!(
        "log_level",
        ["PLUGIN_LOG_LEVEL", "LOG_LEVEL"],
        Some("log_level"),
        Same
    ),
    old!(
        "log_format",
        ["PLUGIN_LOG_FORMAT", "LOG_FORMAT"],
        Some("log_format"),
        Differs("json or text; drone-cache's logfmt is read as text")
    ),
    old!(
        "backend",
        ["PLUGIN_BACKEND"],
        Some("backend"),
        Differs("alioss (Alibaba OSS) is not a backend: its restores never worked in drone-cache")
    ),
    old!(
        "backend_operation_timeout",
        [
            "PLUGIN_BACKEND_OPERATION_TIMEOUT",
            "BACKEND_OPERATION_TIMEOUT"
        ],
        Some("backend_operation_timeout"),
        Same
    ),
    old!(
        "endpoint",
        ["PLUGIN_ENDPOINT", "S3_ENDPOINT", "GCS_ENDPOINT"],
        Some("endpoint"),
        Same
    ),
    old!(
        "bucket",
        ["PLUGIN_BUCKET", "S3_BUCKET", "GCS_BUCKET"],
        Some("bucket"),
        Same
    ),
    old!(
        "access_key",
        [
            "PLUGIN_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "CACHE_AWS_ACCESS_KEY_ID"
        ],
        Some("access_key"),
        Same
    ),
    old!(
        "secret_key",
        [
            "PLUGIN_SECRET_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "CACHE_AWS_SECRET_ACCESS_KEY"
        ],
        Some("secret_key"),
        Same
    ),
    old!(
        "session_token",
        ["PLUGIN_SESSION_TOKEN", "AWS_SESSION_TOKEN"],
        Some("session_token"),
        Same
    ),
    old!(
        "region",
        ["PLUGIN_REGION", "S3_REGION"],
        Some("region"),
        Same
    ),
    old!(
        "path_style",
        ["PLUGIN_PATH_STYLE", "AWS_PLUGIN_PATH_STYLE"],
        Some("path_style"),
        Same
    ),
    old!(
        "acl",
        ["PLUGIN_ACL", "AWS_ACL"],
        Some("acl"),
        Differs(
            "private, drone-cache's default, sends no ACL (new objects are private anyway, and \
         buckets with ACLs disabled refuse the header); another canned ACL goes on the requests \
         that create objects"
        )
    ),
    old!(
        "encryption",
        ["PLUGIN_ENCRYPTION", "AWS_ENCRYPTION"],
        Some("encryption"),
        Differs("also aws:kms:dsse, and kms_key_id picks the KMS key")
    ),
    old!(
        "s3_bucket_public",
        ["PLUGIN_S3_BUCKET_PUBLIC", "S3_BUCKET_PUBLIC"],
        None,
        Unsupported("anonymous access is not supported")
    ),
    old!(
        "sts_endpoint",
        ["PLUGIN_STS_ENDPOINT", "AWS_STS_ENDPOINT"],
        Some("sts_endpoint"),
        Differs(
            "without a scheme it means https (http with disable_ssl) for STS only; drone-cache \
         then turned SSL off for S3 as well"
        )
    ),
    old!(
        "assume_role_arn",
        [
            "PLUGIN_ASSUME_ROLE_ARN",
            "AWS_ASSUME_ROLE_ARN",
            "PLUGIN_ASSUME_ROLE"
        ],
        Some("assume_role_arn"),
        Differs(
            "assumed with access_key and secret_key when given (as drone-cache; the fork used \
         the keys instead of the role), else with the AWS chain's credentials"
        )
    ),
    old!(
        "disable_ssl",
        ["PLUGIN_DISABLESSL", "AWS_DISABLESSL"],
        Some("disable_ssl"),
        Same
    ),
    old!(
        "api_key",
        ["PLUGIN_API_KEY", "GCP_API_KEY"],
        None,
        Unsupported("GCS API keys cannot write; use json_key")
    ),
    old!(
        "json_key",
        ["PLUGIN_JSON_KEY", "GCS_CACHE_JSON_KEY"],
        Some("json_key"),
        Same
    ),
    old!(
        "gcs_acl",
        ["PLUGIN_GCS_ACL", "GCS_ACL"],
        None,
        Unsupported("drone-cache never applied it either")
    ),
    old!(
        "gcs_encryption_key",
        ["PLUGIN_GCS_ENCRYPTION_KEY", "GCS_ENCRYPTION_KEY"],
        None,
        Unsupported("customer-supplied keys are not supported")
    ),
    old!(
        "account_name",
        ["PLUGIN_ACCOUNT_NAME", "AZURE_ACCOUNT_NAME"],
        Some("account_name"),
        Same
    ),
    old!(
        "account_key",
        ["PLUGIN_ACCOUNT_KEY", "AZURE_ACCOUNT_KEY"],
        Some("account_key"),
        Same
    ),
    old!(
        "container",
        ["PLUGIN_CONTAINER", "AZURE_CONTAINER_NAME"],
        Some("container"),
        Differs(
            "used: drone-cache read a misspelt name and wrote to the container named by the first \
         folder of the key instead"
        )
    ),
    old!(
        "blob_storage_url",
        ["AZURE_BLOB_STORAGE_URL"],
        Some("blob_storage_url"),
        Same
    ),
    old!(
        "blob_max_retry_requests",
        ["AZURE_BLOB_MAX_RETRY_REQUESTS"],
        None,
        Unsupported(
            "drone-cache never applied it either; retries follow backend_operation_timeout"
        )
    ),
    old!(
        "username",
        ["PLUGIN_USERNAME", "SFTP_USERNAME"],
        Some("sftp_username"),
        Same
    ),
    old!(
        "password",
        ["PLUGIN_PASSWORD", "SFTP_PASSWORD"],
        Some("sftp_password"),
        Same
    ),
    old!(
        "public_key_file",
        ["PLUGIN_PUBLIC_KEY_FILE", "SFTP_PUBLIC_KEY_FILE"],
        Some("sftp_public_key_file"),
        Same
    ),
    old!(
        "SFTP_AUTH_METHOD",
        ["SFTP_AUTH_METHOD"],
        Some("sftp_auth_method"),
        Same
    ),
    old!("SFTP_HOST", ["SFTP_HOST"], Some("sftp_host"), Same),
    old!("SFTP_PORT", ["SFTP_PORT"], Some("sftp_port"), Same),
    old!(
        "SFTP_CACHE_ROOT",
        ["SFTP_CACHE_ROOT"],
        Some("sftp_cache_root"),
        Differs("created if missing; the server's host key is checked: add sftp_known_hosts")
    ),
    old!(
        "filesystem_cache_root",
        ["PLUGIN_FILESYSTEM_CACHE_ROOT", "FILESYSTEM_CACHE_ROOT"],
        Some("filesystem_cache_root"),
        Differs("created if missing")
    ),
    old!(
        "alibaba_access_key",
        [
            "PLUGIN_ALIBABA_ACCESS_KEY",
            "ALIBABA_ACCESS_KEY_ID",
            "CACHE_ALIBABA_ACCESS_KEY_ID"
        ],
        None,
        Unsupported("Alibaba OSS is not a backend")
    ),
    old!(
        "alibaba_access_secret",
        [
            "PLUGIN_ALIBABA_ACCESS_SECRET",
            "ALIBABA_ACCESS_SECRET",
            "CACHE_ALIBABA_ACCESS_SECRET"
        ],
        None,
        Unsupported("Alibaba OSS is not a backend")
    ),
    // The fork's additions.
    old!(
        "fail_restore_if_key_not_present",
        ["PLUGIN_FAIL_RESTORE_IF_KEY_NOT_PRESENT"],
        Some("fail_on_miss"),
        Same
    ),
    old!(
        "assume_role_session_name",
        [
            "PLUGIN_ASSUME_ROLE_SESSION_NAME",
            "ASSUME_ROLE_SESSION_NAME"
        ],
        Some("assume_role_session_name"),
        Same
    ),
    old!(
        "external_id",
        ["PLUGIN_EXTERNAL_ID"],
        Some("external_id"),
        Same
    ),
    old!(
        "oidc_token_id",
        ["PLUGIN_OIDC_TOKEN_ID"],
        Some("oidc_token_id"),
        Differs("for S3 (with assume_role_arn) and Azure as in the fork; not for GCS")
    ),
    old!(
        "user_role_arn",
        ["PLUGIN_USER_ROLE_ARN", "AWS_USER_ROLE_ARN"],
        Some("user_role_arn"),
        Same
    ),
    old!(
        "user_role_external_id",
        ["PLUGIN_USER_ROLE_EXTERNAL_ID"],
        Some("user_role_external_id"),
        Same
    ),
    old!(
        "azure_client_id",
        ["PLUGIN_AZURE_CLIENT_ID", "AZURE_CLIENT_ID", "CLIENT_ID"],
        Some("azure_client_id"),
        Same
    ),
    old!(
        "azure_client_secret",
        [
            "PLUGIN_AZURE_CLIENT_SECRET",
            "AZURE_CLIENT_SECRET",
            "CLIENT_SECRET"
        ],
        Some("azure_client_secret"),
        Same
    ),
    old!(
        "azure_tenant_id",
        ["PLUGIN_AZURE_TENANT_ID", "AZURE_TENANT_ID", "TENANT_ID"],
        Some("azure_tenant_id"),
        Same
    ),
    old!(
        "preserve_metadata",
        ["PLUGIN_PRESERVE_METADATA"],
        None,
        Differs("always: larder keeps modes, owners and nanosecond times in every entry")
    ),
];

/// `docs/migrating.md`: the guide, with the table made from `SETTINGS`.
pub fn markdown() -> String {
    let mut out = String::from(GUIDE);
    out.push_str(
        "\n## Every drone-cache setting\n\n\
         | drone-cache setting | variables | in larder | what changes |\n|---|---|---|---|\n",
    );
    for old in SETTINGS {
        let larder = old
            .larder
            .map(|name| format!("`{name}`"))
            .unwrap_or_else(|| "(none)".into());
        let what = match old.handling {
            Same => "the same".to_string(),
            Differs(text) => text.to_string(),
            Unsupported(text) => format!("not supported, a warning says so: {text}"),
        };
        let envs: Vec<String> = old.envs.iter().map(|e| format!("`{e}`")).collect();
        out.push_str(&format!(
            "| `{}` | {} | {larder} | {what} |\n",
            old.name,
            envs.join(", ")
        ));
    }
    out
}

/// The guide's text before the table.
const GUIDE: &str = "\
# Coming from drone-cache

<!-- Generated by `larder --migration-markdown`; do not edit by hand. -->

larder replaces meltwater/drone-cache and its fork drone-plugins/drone-meltwater-cache: change
the `image:` line and the pipeline keeps working. This page lists what differs, on purpose, and
what to change where you want the old behaviour.

## The first run after the switch

larder keeps its entries as one object per key (`<remote_root>/<key>.tar.gz`), drone-cache kept
one per mount (`<remote_root or repository name>/<key>/<mount>`; the fork: `<key>/<mount>` at the
bucket's root). When larder has no entry for the key, a restore looks for drone-cache's objects
for each listed mount, in both layouts, and restores what it finds (names written as
`/drone/src/pkg.mod/...` are read as `pkg.mod/...`); the log says `restoring drone-cache's
entry`. The rebuild after it stores a larder entry, and from then on drone-cache's objects are not
read. Patterns in `mount` are not looked up this way (drone-cache could not restore them either).

## Behaviours that differ on purpose

| drone-cache | larder | to get the old behaviour |
|---|---|---|
| `override` defaulted to true: every rebuild uploaded again | not set: a stored key is replaced only when the mounts changed since; an unchanged tree is not uploaded | `override: true` |
| SFTP host keys were never checked | the host key is checked against `sftp_known_hosts`, `sftp_host_key_fingerprint`, `~/.ssh/known_hosts` or `/etc/ssh/ssh_known_hosts` | add `sftp_known_hosts` (the output of `ssh-keyscan -p PORT HOST`), or, knowingly, `sftp_insecure_ignore_host_key: true` |
| pull requests rebuilt the cache like any build | pull request builds restore but do not rebuild or flush, so they cannot poison the cache | `allow_pull_request_writes: true` |
| a restore wrote over whatever was at the mount's path | a restore is all or nothing and replaces a mount only when it is listed in `mount` (without `mount`, only paths that do not exist are created) | list the paths in `mount` |
| the default remote root was the repository's name | the default is `owner/name`, so two owners' repositories of one name do not share entries | `remote_root: <name>` |
| the default key was the md5 of the branch | the default key is the branch name, readable in a listing | `cache_key: '{{ .Commit.Branch }}'` keeps the default explicit |
| a missing `checksum` file rendered as an empty string | the step fails softly (a warning, exit 0; exit 1 with `exit_code: true`) and the cache is skipped, so a wrong key is never used | fix the path in `cache_key` |
| `debug: true` printed every variable, secrets included | `debug: true` prints the resolved settings with secrets masked | |
";

/// The drone-cache setting read from `var`, if any.
pub fn by_env(var: &str) -> Option<&'static Old> {
    SETTINGS.iter().find(|old| old.envs.contains(&var))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::defs;

    /// Every row names a real larder setting that reads all the variables
    /// drone-cache read; every unsupported variable gets a warning.
    #[test]
    fn every_drone_cache_setting_is_accounted_for() {
        for old in SETTINGS {
            match old.larder {
                Some(name) => {
                    let setting = defs::find(name)
                        .unwrap_or_else(|| panic!("{}: no larder setting {name}", old.name));
                    let envs = setting.envs();
                    for env in old.envs {
                        assert!(
                            envs.iter().any(|e| e == env),
                            "{}: larder's {name} does not read {env}",
                            old.name
                        );
                    }
                }
                None => assert!(
                    matches!(old.handling, Unsupported(_) | Differs(_)),
                    "{}: not read, so it must say why",
                    old.name
                ),
            }
        }
    }
}
