//! Every setting larder understands, defined exactly once.
//!
//! A setting's name is what a pipeline writes under `settings:`. Drone and
//! Woodpecker pass it as `PLUGIN_<NAME>`; the same value can come from the
//! command line as `--<name-with-dashes>` or from the listed aliases (the
//! environment variables meltwater/drone-cache read, so its pipelines keep
//! working). `--help` and `docs/settings.md` are generated from this table.

use super::table::{Choice, Group, Kind, Setting};

macro_rules! choices {
    ($($value:literal $(| $also:literal)*),* $(,)?) => {
        &[$(Choice { value: $value, also: &[$($also),*] }),*]
    };
}

pub static BACKENDS: &[Choice] =
    choices!["s3", "filesystem" | "fs" | "volume", "sftp", "azure", "gcs"];
pub static FORMATS: &[Choice] = choices![
    "gzip" | "gz" | "tgz" | "tar.gz",
    "zstd" | "zst" | "tar.zst" | "tzst",
    "tar" | "none",
];
pub static ENTRY_FORMATS: &[Choice] = choices!["archive" | "whole", "chunked" | "chunks"];
pub static LOG_LEVELS: &[Choice] = choices!["error", "warn" | "warning", "info", "debug" | "trace"];
pub static LOG_FORMATS: &[Choice] = choices!["text" | "logfmt" | "plain", "json"];
pub static SFTP_AUTH_METHODS: &[Choice] =
    choices!["password", "public_key_file" | "public_key" | "key"];
/// S3 server-side encryption, as S3 spells it (matched without case).
pub static ENCRYPTIONS: &[Choice] = choices![
    "aes256" | "sse-s3",
    "aws:kms" | "sse-kms",
    "aws:kms:dsse" | "dsse-kms",
];
/// S3's canned ACLs for objects.
pub static ACLS: &[Choice] = choices![
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
];

/// Defines every setting once: the table (`SETTINGS`, for parsing, help
/// and docs) and `Values`, one typed field per setting, so code reads
/// `values.bucket` rather than looking a name up. A setting with a default
/// is always set (`Sourced<T>`); one without may be absent (`Option`).
macro_rules! settings {
    ($($name:literal => $field:ident: $kind:ident $(($choices:expr))? $(= $default:literal)?,
        $group:ident, aliases: [$($alias:literal),*], flags: [$($flag:literal),*], $help:expr;)*) => {
        /// The table. Order here is the order in `--help` within each group.
        pub static SETTINGS: &[Setting] = &[$(
            Setting {
                name: $name,
                aliases: &[$($alias),*],
                flag_aliases: &[$($flag),*],
                kind: Kind::$kind $(($choices))?,
                default: default!($($default)?),
                group: Group::$group,
                help: $help,
            },
        )*];

        /// Every setting's value, typed, with where it came from.
        #[derive(Clone, Debug)]
        pub struct Values {
            $(pub $field: field_type!($kind $(= $default)?),)*
        }

        impl Values {
            /// Reads every setting from `sources`, failing on the first
            /// value that does not parse as its kind.
            pub fn read(
                sources: &crate::settings::sources::Sources<'_>,
            ) -> Result<Values, crate::settings::SettingError> {
                let mut settings = SETTINGS.iter();
                Ok(Values {
                    $($field: read_field!(
                        sources,
                        settings.next().expect("SETTINGS has one entry per field"),
                        $kind $(= $default)?
                    ),)*
                })
            }
        }
    };
}

macro_rules! default {
    () => {
        None
    };
    ($default:literal) => {
        Some($default)
    };
}

/// The Rust type a kind's values have.
macro_rules! value_type {
    (Bool) => { bool };
    (Text) => { String };
    (Secret) => { crate::secret::Secret };
    (List) => { Vec<String> };
    (Int) => { i64 };
    (Duration) => { std::time::Duration };
    (Size) => { u64 };
    (Choice) => { &'static str };
}

macro_rules! field_type {
    ($kind:ident = $default:literal) => { crate::settings::values::Sourced<value_type!($kind)> };
    (List) => { crate::settings::values::Sourced<Vec<String>> };
    ($kind:ident) => { Option<crate::settings::values::Sourced<value_type!($kind)>> };
}

macro_rules! read_field {
    ($sources:ident, $setting:expr, $kind:ident = $default:literal) => {
        $sources.required::<value_type!($kind)>($setting)?
    };
    ($sources:ident, $setting:expr, List) => {
        $sources.list($setting)?
    };
    ($sources:ident, $setting:expr, $kind:ident) => {
        $sources.optional::<value_type!($kind)>($setting)?
    };
}

settings! {
    "restore" => restore: Bool = "false", Mode,
        aliases: [], flags: [],
        "Download the cache entry for the key and unpack it into the workspace. \
         A miss is not an error. Exactly one of restore and rebuild must be true.";
    "rebuild" => rebuild: Bool = "false", Mode,
        aliases: [], flags: [],
        "Archive the mounts and upload them under the key. If the key is already \
         stored the upload is skipped (see override).";
    "flush" => flush: Bool = "false", Mode,
        aliases: [], flags: [],
        "Delete this repository's old entries: those older than flush_age, then the \
         oldest until the rest fit in max_size. Other repositories' entries are never touched.";
    "export" => export: Text, Mode,
        aliases: [], flags: [],
        "Write the entry for the key (or the newest under restore_keys) to this file as \
         a standard archive GNU tar extracts, and unpack nothing: a chunked entry becomes \
         a .tar.zst (its chunks are zstd frames, each checked against its hash), an \
         archive entry is copied as stored (.tar.gz, .tar.zst or .tar). For people and \
         scripts that need one file, e.g. larder --export gomod.tar.zst --cache-key ... \
         (same storage settings as the pipeline's).";
    "mount" => mount: List, Cache,
        aliases: [], flags: [],
        "Directories or files to cache, relative to the workspace (absolute paths \
         are allowed). All mounts go into one entry. Patterns with *, ? or ** \
         (packages/**/node_modules) are expanded at rebuild, and restore brings back \
         whatever they matched. Restore without mount restores the whole entry.";
    "restore_keys" => restore_keys: List, Cache,
        aliases: [], flags: [],
        "Fallbacks when cache_key has no entry: templates like cache_key, each used as a \
         prefix, tried in order; the newest entry with that prefix is restored. \
         Example: ['gomod-{{ .Commit.Branch }}-', 'gomod-'].";
    "cache_key" => cache_key: Text, Cache,
        aliases: [], flags: ["cache.key"],
        "Template for the cache key, in drone-cache's Go-template syntax: \
         {{ .Commit.Branch }}, {{ checksum \"go.sum\" }}, {{ hashFiles \"**/go.sum\" }}, \
         {{ arch }}, {{ os }}, {{ epoch }}. Characters other than letters, digits and \
         . _ - + = @ become '-'. Default: the commit branch.";
    "remote_root" => remote_root: Text, Cache,
        aliases: [], flags: ["remote.root"],
        "Folder in the bucket or cache root that holds this repository's entries. \
         Default: the repository's owner/name (DRONE_REPO or CI_REPO).";
    "local_root" => local_root: Text, Cache,
        aliases: ["DRONE_WORKSPACE", "CI_WORKSPACE"], flags: ["local.root"],
        "The workspace: relative mounts and checksum paths start here. \
         Default: DRONE_WORKSPACE or CI_WORKSPACE, else the current directory.";
    "override" => override_existing: Bool, Cache,
        aliases: [], flags: [],
        "What a rebuild does when the key is already stored. Not set (the default): \
         replace the entry only if the mounts changed since it was stored, so a static key \
         (the branch, cache_key: volume) stays fresh and an unchanged tree is not uploaded \
         again. true: replace it every time (drone-cache's default). false: never; keys \
         are immutable.";
    "fail_on_miss" => fail_on_miss: Bool = "false", Cache,
        aliases: ["PLUGIN_FAIL_RESTORE_IF_KEY_NOT_PRESENT"], flags: [],
        "Fail the step (exit 1) when restore finds no entry for the key or the restore keys.";
    "allow_pull_request_writes" => allow_pull_request_writes: Bool = "false", Cache,
        aliases: [], flags: [],
        "Let pull request builds rebuild and flush. Off by default, so a pull request \
         cannot poison entries that other builds restore; restore still works.";
    "flush_age" => flush_age: Duration, Cache,
        aliases: [], flags: [],
        "With flush: delete entries older than this, e.g. 14d. 0s deletes every entry \
         (with dry_run: lists them).";
    "max_size" => max_size: Size, Cache,
        aliases: [], flags: [],
        "With flush: then delete the oldest entries until the repository's entries \
         fit in this size, e.g. 10GB. Chunked entries count each chunk they use once; \
         the packs holding the chunks can be larger (flush logs both).";
    "dry_run" => dry_run: Bool = "false", Cache,
        aliases: [], flags: [],
        "With flush: list what would be deleted, delete nothing.";
    "max_restore_size" => max_restore_size: Size = "50GB", Cache,
        aliases: [], flags: [],
        "With restore: the most an entry may unpack to (its tar stream). Larger entries \
         are refused before they fill the disk. Entries also declare their own size, and \
         a restore never writes more than that, nor starts when the disk has no room for it.";
    "archive_format" => archive_format: Choice(FORMATS) = "gzip", Archive,
        aliases: [], flags: ["archive.format"],
        "Compression of archive entries (entry_format: archive): gzip (.tar.gz), zstd \
         (.tar.zst) or tar (no compression); chunks are always zstd. Restore reads any of \
         them, whatever this says.";
    "entry_format" => entry_format: Choice(ENTRY_FORMATS) = "chunked", Archive,
        aliases: [], flags: [],
        "How new entries are stored. chunked: the tar stream cut into content-defined \
         chunks, each stored once per repository (zstd, in packs of about 8 MiB), and a \
         small index per entry; a rebuild uploads only the chunks storage does not hold yet. \
         archive: one object per entry (.tar.gz, .tar.zst or .tar, as archive_format says), \
         as drone-cache stored them. Restore reads both, whatever this says.";
    "chunk_cache" => chunk_cache: Text, Archive,
        aliases: [], flags: [],
        "A directory on a volume the runner keeps between builds (e.g. /var/cache/larder): \
         restores of chunked entries read the chunks they find there instead of downloading \
         them, and keep what they download. Every chunk is checked against its hash.";
    "chunk_cache_size" => chunk_cache_size: Size = "10GB", Archive,
        aliases: [], flags: [],
        "The most chunk_cache may hold; the least recently used chunks are removed beyond it.";
    "trim_go_build_cache" => trim_go_build_cache: Bool = "true", Cache,
        aliases: [], flags: [],
        "For a mount that holds a Go build cache (GOCACHE; Go's README in it says so): \
         after a restore, mark its entries unused (and keep Go's own trim from running \
         mid-build); before the rebuild, remove the entries the build did not use, so the \
         entry holds what this build used and does not grow from run to run.";
    "compression_level" => compression_level: Int = "-1", Archive,
        aliases: [], flags: ["compression.level"],
        "Compression level: gzip 1-9, zstd 1-19. -1 picks the format's default, chosen \
         for CI speed: gzip 1, zstd 3 (measured in the README, under Speed).";
    "skip_symlinks" => skip_symlinks: Bool = "false", Archive,
        aliases: ["SKIP_SYMLINKS"], flags: [],
        "Leave symbolic links out of the archive. By default they are stored as links \
         (never followed) and restored as links.";
    "backend" => backend: Choice(BACKENDS) = "s3", Storage,
        aliases: [], flags: [],
        "Where entries are stored: s3 (AWS S3 or any S3-compatible server), filesystem \
         (a mounted volume), sftp, azure or gcs.";
    "backend_operation_timeout" => backend_operation_timeout: Duration = "3m", Storage,
        aliases: ["BACKEND_OPERATION_TIMEOUT"], flags: ["backend.operation-timeout"],
        "Longest time one storage request may take (one upload part, one download \
         range, one lookup) before the step gives up. Whole transfers may take longer.";
    "ca_cert" => ca_cert: Text, Storage,
        aliases: [], flags: [],
        "CA certificates to trust for an https endpoint behind a private CA (self-hosted \
         MinIO or Ceph, Azure Stack), for backends s3, azure and gcs: the PEM text itself \
         (a secret or a YAML block scalar) or the path of a PEM file. The public CAs \
         stay trusted as well.";
    "bucket" => bucket: Text, S3,
        aliases: ["S3_BUCKET", "GCS_BUCKET"], flags: [],
        "Bucket name. Required for backends s3 and gcs.";
    "endpoint" => endpoint: Text, S3,
        aliases: ["S3_ENDPOINT", "GCS_ENDPOINT"], flags: [],
        "Server URL for an S3-compatible server (https://minio.example.com:9000), a GCS \
         emulator, or an Azure endpoint (https://account.blob.core.chinacloudapi.cn, Azurite). \
         Default: the provider's public endpoint.";
    "region" => region: Text, S3,
        aliases: ["S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"], flags: [],
        "Bucket region. Default: us-east-1.";
    "path_style" => path_style: Bool = "false", S3,
        aliases: ["AWS_PLUGIN_PATH_STYLE"], flags: [],
        "Address the bucket as endpoint/bucket instead of bucket.endpoint. \
         Most self-hosted servers (MinIO, Ceph, Garage) need true. An endpoint that is an \
         IP address always uses path style (as the AWS SDKs do); localhost and *.localhost \
         do unless this is set to false.";
    "access_key" => access_key: Secret, S3,
        aliases: ["AWS_ACCESS_KEY_ID", "CACHE_AWS_ACCESS_KEY_ID"], flags: [],
        "Access key ID. Without access_key and secret_key, the standard AWS chain is \
         used: web identity (IRSA), ECS/EKS container credentials, instance profile.";
    "secret_key" => secret_key: Secret, S3,
        aliases: ["AWS_SECRET_ACCESS_KEY", "CACHE_AWS_SECRET_ACCESS_KEY"], flags: [],
        "Secret access key. Pass it from a secret, never in the pipeline file.";
    "session_token" => session_token: Secret, S3,
        aliases: ["AWS_SESSION_TOKEN"], flags: [],
        "Session token for temporary credentials (used with access_key and secret_key).";
    "disable_ssl" => disable_ssl: Bool = "false", S3,
        aliases: ["PLUGIN_DISABLESSL", "AWS_DISABLESSL"], flags: [],
        "Use plain http for an endpoint given without a scheme. An endpoint written \
         as http://... is always used as given.";
    "assume_role_arn" => assume_role_arn: Text, S3,
        aliases: ["PLUGIN_ASSUME_ROLE", "AWS_ASSUME_ROLE_ARN"], flags: ["role-arn"],
        "IAM role to work as: larder calls STS AssumeRole, signed with access_key and \
         secret_key if they are set, else with the AWS chain's credentials, and uses the \
         role's temporary keys (renewed before they expire). With oidc_token_id it calls \
         AssumeRoleWithWebIdentity instead, and needs no keys.";
    "assume_role_session_name" => assume_role_session_name: Text = "drone-cache", S3,
        aliases: ["ASSUME_ROLE_SESSION_NAME"], flags: [],
        "Session name of the assumed role, as CloudTrail shows it (2-64 letters, digits \
         and =,.@_-). The default is the name drone-cache and its fork used, so trust \
         policies written for them keep matching.";
    "external_id" => external_id: Secret, S3,
        aliases: [], flags: [],
        "External id sent with AssumeRole of assume_role_arn, for a trust policy that \
         requires sts:ExternalId.";
    "oidc_token_id" => oidc_token_id: Secret, S3,
        aliases: [], flags: [],
        "An OIDC token issued by the CI server (the JWT itself, from a secret). Backend s3: \
         with assume_role_arn, AssumeRoleWithWebIdentity with it. Backend azure: the \
         federated credential of azure_client_id in azure_tenant_id (workload identity \
         federation).";
    "user_role_arn" => user_role_arn: Text, S3,
        aliases: ["AWS_USER_ROLE_ARN"], flags: [],
        "A second role, assumed with the keys of assume_role_arn (or, without it, with \
         access_key or the AWS chain): role chaining, e.g. into the bucket's account.";
    "user_role_external_id" => user_role_external_id: Secret, S3,
        aliases: [], flags: [],
        "External id sent with AssumeRole of user_role_arn.";
    "sts_endpoint" => sts_endpoint: Text, S3,
        aliases: ["AWS_STS_ENDPOINT", "AWS_ENDPOINT_URL_STS"], flags: [],
        "STS endpoint for assume_role_arn and the AWS chain's web identity: a VPC endpoint, \
         a FIPS or private one. Without a scheme, https (http with disable_ssl). \
         Default: https://sts.<region>.amazonaws.com.";
    "encryption" => encryption: Choice(ENCRYPTIONS), S3,
        aliases: ["AWS_ENCRYPTION"], flags: [],
        "Server-side encryption of the objects larder writes: AES256 (SSE-S3), aws:kms \
         (SSE-KMS) or aws:kms:dsse (DSSE-KMS). Default: nothing is sent and the bucket's \
         default encryption applies.";
    "kms_key_id" => kms_key_id: Text, S3,
        aliases: [], flags: [],
        "KMS key for aws:kms or aws:kms:dsse: key id, key ARN or alias ARN. Set alone, \
         it means encryption aws:kms. Default: the bucket's default key, else aws/s3.";
    "kms_bucket_key" => kms_bucket_key: Bool, S3,
        aliases: [], flags: [],
        "With SSE-KMS: true uses an S3 Bucket Key (fewer KMS requests), false does not. \
         Default: the bucket's setting.";
    "acl" => acl: Choice(ACLS), S3,
        aliases: ["AWS_ACL"], flags: [],
        "Canned ACL of the objects larder creates, e.g. bucket-owner-full-control when \
         writing to another account's bucket. private (drone-cache's default) sends no \
         ACL: new objects are private anyway, and buckets with ACLs disabled (the AWS \
         default since 2023) refuse ACL headers other than bucket-owner-full-control.";
    "storage_class" => storage_class: Text, S3,
        aliases: [], flags: [],
        "Storage class of entries: STANDARD_IA, INTELLIGENT_TIERING, ONEZONE_IA, \
         GLACIER_IR, REDUCED_REDUNDANCY or a server's own. Claims stay STANDARD (they \
         live minutes). GLACIER and DEEP_ARCHIVE are refused: a restore must read the \
         entry at once. Default: the bucket's (STANDARD).";
    "filesystem_cache_root" => filesystem_cache_root: Text = "/tmp/cache", Filesystem,
        aliases: ["FILESYSTEM_CACHE_ROOT"], flags: ["filesystem.cache-root"],
        "Directory that holds the entries, usually a host volume mounted into the \
         step. Created if missing.";
    "sftp_host" => sftp_host: Text, Sftp,
        aliases: ["SFTP_HOST"], flags: [],
        "SFTP server host name or address. Required for backend sftp.";
    "sftp_port" => sftp_port: Int = "22", Sftp,
        aliases: ["SFTP_PORT"], flags: [],
        "SFTP server port.";
    "sftp_username" => sftp_username: Text, Sftp,
        aliases: ["PLUGIN_USERNAME", "SFTP_USERNAME"], flags: [],
        "User to log in as.";
    "sftp_password" => sftp_password: Secret, Sftp,
        aliases: ["PLUGIN_PASSWORD", "SFTP_PASSWORD"], flags: [],
        "Password, for password login.";
    "sftp_public_key_file" => sftp_public_key_file: Text, Sftp,
        aliases: ["PLUGIN_PUBLIC_KEY_FILE", "SFTP_PUBLIC_KEY_FILE"], flags: [],
        "Path to the private key file for key login (drone-cache's name for it).";
    "sftp_private_key" => sftp_private_key: Secret, Sftp,
        aliases: ["SFTP_PRIVATE_KEY"], flags: [],
        "The private key itself (OpenSSH or PEM text), for key login from a secret.";
    "sftp_key_passphrase" => sftp_key_passphrase: Secret, Sftp,
        aliases: ["SFTP_KEY_PASSPHRASE"], flags: [],
        "Passphrase of an encrypted private key.";
    "sftp_auth_method" => sftp_auth_method: Choice(SFTP_AUTH_METHODS), Sftp,
        aliases: ["SFTP_AUTH_METHOD"], flags: [],
        "PASSWORD or PUBLIC_KEY_FILE. Default: the key when one is given, else the password.";
    "sftp_cache_root" => sftp_cache_root: Text, Sftp,
        aliases: ["SFTP_CACHE_ROOT"], flags: [],
        "Directory on the server that holds the entries; relative paths start in the \
         user's home. Created if missing. Default: the home directory.";
    "sftp_known_hosts" => sftp_known_hosts: Text, Sftp,
        aliases: ["SFTP_KNOWN_HOSTS"], flags: [],
        "The server's known_hosts lines (as printed by ssh-keyscan -p PORT HOST), or a \
         path to such a file. The host key is checked against it. Without this or \
         sftp_host_key_fingerprint, ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts are \
         used when they exist, as OpenSSH does.";
    "sftp_host_key_fingerprint" => sftp_host_key_fingerprint: Text, Sftp,
        aliases: ["SFTP_HOST_KEY_FINGERPRINT"], flags: [],
        "The server's host key fingerprint, SHA256:... as printed by ssh-keygen -lf; an \
         alternative to sftp_known_hosts.";
    "sftp_insecure_ignore_host_key" => sftp_insecure_ignore_host_key: Bool = "false", Sftp,
        aliases: ["SFTP_INSECURE_IGNORE_HOST_KEY"], flags: [],
        "Accept any host key without checking. Anyone on the network path can then \
         impersonate the server; every run logs a warning.";
    "account_name" => account_name: Text, Azure,
        aliases: ["AZURE_ACCOUNT_NAME"], flags: [],
        "Storage account name. Required for backend azure.";
    "account_key" => account_key: Secret, Azure,
        aliases: ["AZURE_ACCOUNT_KEY"], flags: [],
        "Storage account key (shared key). Backend azure needs this or a Microsoft Entra \
         login: azure_client_secret, workload identity (azure_federated_token_file or \
         oidc_token_id) or azure_managed_identity.";
    "container" => container: Text, Azure,
        aliases: ["AZURE_CONTAINER_NAME", "AZURE_CONTAINER"], flags: [],
        "Blob container that holds the entries. Required for backend azure.";
    "blob_storage_url" => blob_storage_url: Text, Azure,
        aliases: ["AZURE_BLOB_STORAGE_URL"], flags: ["azure.blob-storage-url"],
        "Blob service domain for sovereign clouds (blob.core.chinacloudapi.cn), used as \
         https://<account>.<domain>; a full URL is used as given. Default: blob.core.windows.net.";
    "azure_client_id" => azure_client_id: Text, Azure,
        aliases: ["AZURE_CLIENT_ID", "CLIENT_ID"], flags: ["azure.client-id"],
        "Application (client) id: of the service principal for azure_client_secret or \
         workload identity, or of a user-assigned managed identity.";
    "azure_client_secret" => azure_client_secret: Secret, Azure,
        aliases: ["AZURE_CLIENT_SECRET", "CLIENT_SECRET"], flags: ["azure.client-secret"],
        "Client secret of the service principal azure_client_id in azure_tenant_id.";
    "azure_tenant_id" => azure_tenant_id: Text, Azure,
        aliases: ["AZURE_TENANT_ID", "TENANT_ID"], flags: ["azure.tenant-id"],
        "Microsoft Entra tenant (directory) id, for azure_client_secret and workload identity.";
    "azure_federated_token_file" => azure_federated_token_file: Text, Azure,
        aliases: ["AZURE_FEDERATED_TOKEN_FILE"], flags: [],
        "File holding a federated token for workload identity (with azure_client_id and \
         azure_tenant_id), re-read when it is renewed. AKS workload identity sets it, \
         with AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_AUTHORITY_HOST.";
    "azure_authority_host" => azure_authority_host: Text, Azure,
        aliases: ["AZURE_AUTHORITY_HOST"], flags: [],
        "Microsoft Entra endpoint for azure_client_secret and workload identity, for \
         sovereign clouds (https://login.chinacloudapi.cn). \
         Default: https://login.microsoftonline.com.";
    "azure_managed_identity" => azure_managed_identity: Bool = "false", Azure,
        aliases: [], flags: [],
        "Log in as the managed identity of the VM, or of the App Service or Container Apps \
         environment (IDENTITY_ENDPOINT); azure_client_id picks a user-assigned one.";
    "azure_msi_endpoint" => azure_msi_endpoint: Text, Azure,
        aliases: ["IDENTITY_ENDPOINT"], flags: [],
        "Token endpoint of the managed identity. Default: IDENTITY_ENDPOINT when set \
         (App Service, Container Apps), else the VM's instance metadata service.";
    "json_key" => json_key: Secret, Gcs,
        aliases: ["GCS_CACHE_JSON_KEY"], flags: [],
        "Service account key JSON, the content itself (from a secret).";
    "json_key_file" => json_key_file: Text, Gcs,
        aliases: ["GOOGLE_APPLICATION_CREDENTIALS"], flags: [],
        "Path to a service account key JSON file. Without json_key or json_key_file, \
         the runner's workload identity or metadata server is used.";
    "exit_code" => exit_code: Bool = "false", Output,
        aliases: ["EXIT_CODE"], flags: [],
        "Fail the step (exit 1) when restore or rebuild fails. By default a failure is \
         logged as a warning and the step succeeds, so a cache problem never breaks a build.";
    "result_file" => result_file: Text, Output,
        aliases: [], flags: [],
        "Write a JSON summary of the run here (relative to the workspace) for later \
         steps: result (exact, partial, miss, stored, skipped...), keys, files, bytes, seconds.";
    "debug" => debug: Bool = "false", Output,
        aliases: ["DEBUG"], flags: [],
        "Log each step in detail, starting with the settings given (and where each came \
         from) and what they resolved to: key, mounts, storage, which credentials, \
         timeouts. Secrets are never logged, with or without debug.";
    "log_level" => log_level: Choice(LOG_LEVELS) = "info", Output,
        aliases: ["LOG_LEVEL"], flags: ["log.level"],
        "error, warn, info or debug.";
    "log_format" => log_format: Choice(LOG_FORMATS) = "text", Output,
        aliases: ["LOG_FORMAT"], flags: ["log.format"],
        "text (one plain line per event) or json (one JSON object per line, for log \
         pipelines: timestamp, level, message, mode and key, and the numbers of progress \
         lines; the last line, with event summary, holds the result file's fields). \
         drone-cache's logfmt is read as text.";
}

/// drone-cache settings larder recognises but does not implement. Setting one
/// gets a warning instead of silence, so nobody believes it took effect.
pub static UNSUPPORTED: &[(&str, &str)] = &[
    (
        "PLUGIN_S3_BUCKET_PUBLIC",
        "anonymous access is not supported",
    ),
    ("PLUGIN_API_KEY", "GCS API keys cannot write; use json_key"),
    ("PLUGIN_GCS_ACL", "objects use the bucket's default ACL"),
    (
        "PLUGIN_GCS_ENCRYPTION_KEY",
        "customer-supplied keys are not supported",
    ),
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
                super::super::values::check(s, d)
                    .unwrap_or_else(|e| panic!("default of {} is invalid: {e}", s.name));
            }
        }
    }
}
