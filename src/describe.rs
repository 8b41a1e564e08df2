//! What `debug: true` logs before a run, for people: the settings that were
//! given (each with where it came from, secrets as `***`) and the job they
//! resolved to: mode, key, mounts, storage, which credentials (by name,
//! never by value), timeouts and output.

use std::collections::HashMap;
use std::time::Duration;

use crate::human;
use crate::job::{Job, Stored, Task};
use crate::mount::MountSpec;
use crate::settings::cli::{self, Invocation};
use crate::settings::defs::{SETTINGS, Values};
use crate::settings::sources::Sources;
use crate::settings::table::{Group, Kind, Setting};
use crate::settings::values::Source;
use crate::storage::StorageConfig;

/// Longest value shown whole; longer ones are cut.
const SHOWN: usize = 100;

/// The settings given on the command line or in the environment (not
/// defaults), as their text and where each came from.
pub struct Given(Vec<(&'static Setting, String, Source)>);

impl Given {
    /// Reads them as the settings were read (`args` with the program name).
    pub fn read(args: Vec<String>, env: &HashMap<String, String>) -> Given {
        let flags = match cli::parse(args) {
            Ok(Invocation::Run(flags)) => flags,
            _ => HashMap::new(),
        };
        let Ok(sources) = Sources::new(&flags, env) else {
            return Given(Vec::new());
        };
        Given(
            SETTINGS
                .iter()
                .filter_map(|setting| match sources.text(setting)? {
                    (_, Source::Default) => None,
                    (text, source) => Some((setting, text.to_string(), source)),
                })
                .collect(),
        )
    }

    /// One line each: `bucket: ci-cache (from PLUGIN_BUCKET)`.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec!["settings given (secrets shown as ***):".to_string()];
        for (setting, text, source) in &self.0 {
            lines.push(format!(
                "  {}: {} (from {source})",
                setting.name,
                shown(setting, text)
            ));
        }
        lines
    }

    /// The text `setting` was given as, shown as the summary shows it.
    fn text(&self, setting: &Setting) -> Option<String> {
        self.0
            .iter()
            .find(|(s, ..)| s.name == setting.name)
            .map(|(s, text, _)| shown(s, text))
    }
}

/// A value as the summary shows it: secrets masked, long or multi-line
/// text (a certificate, known_hosts lines) cut to its first line.
fn shown(setting: &Setting, text: &str) -> String {
    if setting.kind == Kind::Secret {
        return "***".into();
    }
    let text = text.trim();
    let lines = text.lines().count();
    let first = text.lines().next().unwrap_or_default();
    let mut out: String = first.chars().take(SHOWN).collect();
    if lines > 1 || out.len() < first.len() {
        out.push_str(&format!(
            " ... ({} lines, {})",
            lines,
            human::bytes(text.len() as u64)
        ));
    }
    out
}

/// The job the settings resolved to.
pub fn job(
    job: &Job,
    values: &Values,
    given: &Given,
    env: &HashMap<String, String>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let key = job
        .key()
        .map(|k| format!(" of key '{k}'"))
        .unwrap_or_default();
    lines.push(format!("job: {}{key}", job.mode()));
    lines.push(format!(
        "  workspace: {}; entries under '{}'",
        job.workspace.display(),
        job.remote_root
    ));
    match &job.task {
        Task::Restore(task) => {
            lines.push(format!(
                "  mounts: {}",
                mounts(&task.mounts, "the whole entry")
            ));
            lines.push(format!(
                "  restore keys, tried in order when the key misses: {}",
                quoted(&task.prefixes)
            ));
            lines.push(format!(
                "  fail_on_miss: {}; max_restore_size: {}; file owners restored: {}",
                task.fail_on_miss,
                human::bytes(task.max_bytes),
                if task.owners {
                    "yes (root)"
                } else {
                    "no (not root)"
                }
            ));
        }
        Task::Rebuild(task) => {
            lines.push(format!("  mounts: {}", mounts(&task.mounts, "none")));
            lines.push(format!(
                "  archive: {} level {}; symbolic links {}",
                task.compression,
                task.level,
                if task.skip_symlinks {
                    "left out"
                } else {
                    "stored as links"
                }
            ));
            lines.push(format!(
                "  a stored entry for the key is {}",
                match task.stored {
                    Stored::Replace => "replaced (override: true)",
                    Stored::Keep => "kept and the upload skipped (override: false)",
                    Stored::ReplaceIfChanged => {
                        "replaced if the mounts changed since it was stored (override not set)"
                    }
                }
            ));
        }
        Task::Export(export) => {
            lines.push(format!("  key: {}", export.key));
            if !export.prefixes.is_empty() {
                lines.push(format!("  restore keys: {}", export.prefixes.join(", ")));
            }
            lines.push(format!("  export to: {}", export.output.display()));
        }
        Task::Flush(flush) => {
            let age = flush
                .max_age
                .map(|a| format!("entries older than {}", humantime::format_duration(a)))
                .unwrap_or_else(|| "no age limit".into());
            let size = flush
                .max_size
                .map(|s| format!("then the oldest until the rest fit in {}", human::bytes(s)))
                .unwrap_or_else(|| "no size limit".into());
            let dry = if flush.dry_run {
                "; dry run: nothing is deleted"
            } else {
                ""
            };
            lines.push(format!("  flush: {age}; {size}{dry}"));
        }
    }
    if let Some(reason) = &job.writes_blocked {
        lines.push(format!("  writes blocked: {reason}"));
    }
    lines.push(format!("  storage: {}", storage(job, values, given)));
    lines.push(format!(
        "  credentials: {}",
        credentials(values, given, env)
    ));
    lines.push(format!(
        "  timeouts: each storage request {} (backend_operation_timeout), connecting {}",
        seconds(job.timeout),
        seconds(job.timeout.min(Duration::from_secs(10)))
    ));
    lines.push(format!(
        "  output: log_level {}, log_format {}, exit_code {} ({}), result_file {}",
        *values.log_level,
        *values.log_format,
        job.exit_code,
        if job.exit_code {
            "a failed restore or rebuild fails the step"
        } else {
            "a failed restore or rebuild is a warning"
        },
        job.result_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into())
    ));
    lines
}

fn mounts(specs: &[MountSpec], none: &str) -> String {
    if specs.is_empty() {
        return none.into();
    }
    specs
        .iter()
        .map(MountSpec::text)
        .collect::<Vec<_>>()
        .join(", ")
}

fn quoted(items: &[String]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn seconds(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Where entries go, before connecting (the location once connected is
/// logged by the run).
fn storage(job: &Job, values: &Values, given: &Given) -> String {
    match &job.storage {
        StorageConfig::Filesystem { root } => format!("filesystem, under {}", root.display()),
        _ => {
            let backend = *values.backend;
            let group = group_of(backend);
            // bucket and endpoint serve GCS and Azure too.
            let shared =
                |s: &Setting| s.group == Group::S3 && matches!(s.name, "bucket" | "endpoint");
            let given: Vec<String> = SETTINGS
                .iter()
                .filter(|s| (s.group == group || shared(s)) && !is_credential(s))
                .filter_map(|s| given.text(s).map(|t| format!("{} {t}", s.name)))
                .collect();
            match given.is_empty() {
                true => backend.to_string(),
                false => format!("{backend}: {}", given.join(", ")),
            }
        }
    }
}

/// Which credentials the backend uses, by setting name.
fn credentials(values: &Values, given: &Given, env: &HashMap<String, String>) -> String {
    let backend = *values.backend;
    let group = group_of(backend);
    let given: Vec<&str> = SETTINGS
        .iter()
        .filter(|s| s.group == group && is_credential(s))
        .filter(|s| given.text(s).is_some())
        .map(|s| s.name)
        .collect();
    let named = given.join(", ");
    match backend {
        "filesystem" => "none (a mounted directory)".into(),
        "s3" if given.contains(&"access_key") && given.contains(&"secret_key") => {
            format!("static keys: {named}")
        }
        "s3" => {
            let chain: Vec<&str> = crate::storage::s3::CREDENTIAL_CHAIN_VARS
                .iter()
                .copied()
                .filter(|v| env.contains_key(*v))
                .collect();
            let set = match chain.as_slice() {
                [] => "none of its variables is set, so the instance profile".to_string(),
                vars => format!("set: {}", vars.join(", ")),
            };
            let also = match given.as_slice() {
                [] => String::new(),
                _ => format!("; also given: {named}"),
            };
            format!(
                "the AWS credential chain, since access_key and secret_key are not both \
                 given (web identity, container credentials, instance profile; {set}){also}"
            )
        }
        "gcs" if given.is_empty() => {
            "the runner's workload identity or metadata server (no json_key or json_key_file)"
                .into()
        }
        "sftp" => {
            let method = values
                .sftp_auth_method
                .as_ref()
                .map(|m| format!("sftp_auth_method {}; ", m.value))
                .unwrap_or_default();
            let host_key = if *values.sftp_insecure_ignore_host_key {
                "NOT CHECKED (sftp_insecure_ignore_host_key)".to_string()
            } else if values.sftp_known_hosts.is_some() {
                "checked against sftp_known_hosts".to_string()
            } else if values.sftp_host_key_fingerprint.is_some() {
                "checked against sftp_host_key_fingerprint".to_string()
            } else {
                "checked against ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts".to_string()
            };
            let given = if named.is_empty() {
                "none given".into()
            } else {
                named
            };
            format!("{method}{given}; host key {host_key}")
        }
        _ if given.is_empty() => "none given".into(),
        _ => named,
    }
}

/// Settings that hold or name a credential (shown by name only).
fn is_credential(setting: &Setting) -> bool {
    const WORDS: [&str; 12] = [
        "key",
        "secret",
        "token",
        "password",
        "role",
        "external_id",
        "oidc",
        "client",
        "tenant",
        "identity",
        "username",
        "credential",
    ];
    setting.kind == Kind::Secret
        || (WORDS.iter().any(|w| setting.name.contains(w))
            && !setting.name.contains("host_key")
            && !setting.name.contains("known_hosts"))
}

fn group_of(backend: &str) -> Group {
    match backend {
        "filesystem" => Group::Filesystem,
        "sftp" => Group::Sftp,
        "azure" => Group::Azure,
        "gcs" => Group::Gcs,
        _ => Group::S3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::defs::find;

    #[test]
    fn secrets_are_masked_and_long_text_is_cut() {
        assert_eq!(shown(find("secret_key").unwrap(), "hunter2"), "***");
        assert_eq!(shown(find("bucket").unwrap(), "ci-cache"), "ci-cache");
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            shown(find("ca_cert").unwrap(), pem),
            "-----BEGIN CERTIFICATE----- ... (3 lines, 58 B)"
        );
    }

    #[test]
    fn settings_given_name_their_source_and_hide_secrets() {
        let env = crate::settings::sources::env_of(&[
            ("PLUGIN_RESTORE", "true"),
            ("PLUGIN_SECRET_KEY", "hunter2"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
        ]);
        let args = vec!["larder".to_string(), "--bucket".into(), "b".into()];
        let lines = Given::read(args, &env).lines().join("\n");
        assert!(lines.contains("  bucket: b (from --bucket)"), "{lines}");
        assert!(
            lines.contains("  secret_key: *** (from PLUGIN_SECRET_KEY)"),
            "{lines}"
        );
        assert!(
            lines.contains("  access_key: *** (from AWS_ACCESS_KEY_ID)"),
            "{lines}"
        );
        assert!(
            !lines.contains("hunter2") && !lines.contains("AKID"),
            "{lines}"
        );
        // Defaults are not "given".
        assert!(!lines.contains("backend"), "{lines}");
    }

    #[test]
    fn credentials_are_named_never_shown() {
        for name in [
            "access_key",
            "sftp_username",
            "json_key_file",
            "account_key",
        ] {
            assert!(is_credential(find(name).unwrap()), "{name}");
        }
        for name in [
            "bucket",
            "sftp_known_hosts",
            "sftp_host_key_fingerprint",
            "endpoint",
        ] {
            assert!(!is_credential(find(name).unwrap()), "{name}");
        }
    }
}
