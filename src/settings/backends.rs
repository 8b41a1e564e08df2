//! Validating the storage settings into one backend's options.
//!
//! Files named by settings (a private key, known_hosts, a JSON key) are read
//! here, so a wrong path is a configuration error naming the setting, found
//! before anything connects anywhere.

use std::path::{Path, PathBuf};

use url::Url;

use super::error::SettingError;
use super::raw::{RawSettings, Secret};
use crate::storage::StorageConfig;
use crate::storage::azure::AzureOptions;
use crate::storage::gcs::{GcsCredentials, GcsOptions};
use crate::storage::s3::{S3Keys, S3Options};
use crate::storage::sftp::{HostKeyCheck, SftpAuth, SftpOptions};

pub fn storage(raw: &RawSettings) -> Result<StorageConfig, SettingError> {
    let backend = raw.text("backend").unwrap_or("s3").to_ascii_lowercase();
    match backend.as_str() {
        "filesystem" | "fs" | "volume" => filesystem(raw),
        "s3" => Ok(StorageConfig::S3(s3(raw)?)),
        "sftp" => Ok(StorageConfig::Sftp(sftp(raw)?)),
        "azure" => Ok(StorageConfig::Azure(azure(raw)?)),
        "gcs" => Ok(StorageConfig::Gcs(gcs(raw)?)),
        other => Err(SettingError::unusable(
            "backend",
            format!("'{other}' is not a backend; use s3, filesystem, sftp, azure or gcs"),
        )),
    }
}

fn filesystem(raw: &RawSettings) -> Result<StorageConfig, SettingError> {
    let root = PathBuf::from(raw.text("filesystem_cache_root").unwrap_or("/tmp/cache"));
    if !root.is_absolute() || root.parent().is_none() {
        return Err(SettingError::unusable(
            "filesystem_cache_root",
            format!(
                "'{}' must be an absolute directory other than /",
                root.display()
            ),
        ));
    }
    Ok(StorageConfig::Filesystem { root })
}

fn required<'a>(
    raw: &'a RawSettings,
    setting: &'static str,
    backend: &str,
) -> Result<&'a str, SettingError> {
    raw.text(setting).ok_or_else(|| {
        SettingError::unusable(
            setting,
            format!(
                "backend {backend} needs {setting}; set {setting}: <value> in the step's settings"
            ),
        )
    })
}

fn required_secret<'a>(
    raw: &'a RawSettings,
    setting: &'static str,
    backend: &str,
) -> Result<&'a Secret, SettingError> {
    raw.secret(setting).ok_or_else(|| {
        SettingError::unusable(
            setting,
            format!("backend {backend} needs {setting}; pass it from a secret"),
        )
    })
}

fn s3(raw: &RawSettings) -> Result<S3Options, SettingError> {
    let bucket = raw.text("bucket").ok_or_else(|| {
        SettingError::unusable(
            "bucket",
            "backend s3 needs a bucket; set bucket: <name> (or backend: filesystem for a volume)",
        )
    })?;
    let keys = match (raw.secret("access_key"), raw.secret("secret_key")) {
        (Some(access_key), Some(secret_key)) => Some(S3Keys {
            access_key: access_key.clone(),
            secret_key: secret_key.clone(),
            session_token: raw.secret("session_token").cloned(),
        }),
        (None, None) => None,
        (Some(_), None) => return Err(half_a_key_pair(raw, "access_key", "secret_key")),
        (None, Some(_)) => return Err(half_a_key_pair(raw, "secret_key", "access_key")),
    };
    Ok(S3Options {
        bucket: bucket.to_string(),
        endpoint: endpoint(raw)?,
        region: raw.text("region").map(str::to_string),
        path_style: raw.bool("path_style"),
        keys,
    })
}

fn half_a_key_pair(raw: &RawSettings, given: &'static str, missing: &'static str) -> SettingError {
    SettingError::unusable(
        missing,
        format!(
            "{given} is set (from {}) but {missing} is not; set both, \
             or neither to use the AWS credential chain",
            raw.source(given)
        ),
    )
}

/// The `endpoint` setting as a URL; `host:port` as drone-cache accepted it
/// means https, or http with `disable_ssl`.
fn endpoint(raw: &RawSettings) -> Result<Option<Url>, SettingError> {
    raw.text("endpoint")
        .map(|text| parse_url("endpoint", text, raw.bool("disable_ssl")))
        .transpose()
}

fn parse_url(setting: &'static str, text: &str, plain_http: bool) -> Result<Url, SettingError> {
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else if plain_http {
        format!("http://{text}")
    } else {
        format!("https://{text}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| SettingError::unusable(setting, format!("'{text}' is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(SettingError::unusable(
            setting,
            format!(
                "'{text}' must be an http or https URL such as https://storage.example.com:9000"
            ),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SettingError::unusable(
            setting,
            "must not contain credentials; use the credential settings",
        ));
    }
    Ok(url)
}

fn sftp(raw: &RawSettings) -> Result<SftpOptions, SettingError> {
    let host = required(raw, "sftp_host", "sftp")?;
    let port = raw.int("sftp_port").unwrap_or(22);
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| SettingError::unusable("sftp_port", format!("{port} is not a TCP port")))?;
    let username = required(raw, "sftp_username", "sftp")?;
    Ok(SftpOptions {
        host: host.to_string(),
        port,
        username: username.to_string(),
        auth: sftp_auth(raw)?,
        host_key: host_key_check(raw)?,
        root: raw.text("sftp_cache_root").unwrap_or("").to_string(),
    })
}

fn sftp_auth(raw: &RawSettings) -> Result<SftpAuth, SettingError> {
    let key = match (
        raw.text("sftp_public_key_file"),
        raw.secret("sftp_private_key"),
    ) {
        (Some(_), Some(_)) => {
            return Err(SettingError::Conflict(
                "sftp_public_key_file and sftp_private_key are both set; use one".into(),
            ));
        }
        (Some(path), None) => Some(SftpAuth::Key {
            key: Secret::new(read_file("sftp_public_key_file", path)?),
            passphrase: raw.secret("sftp_key_passphrase").cloned(),
            origin: format!("key file {path}"),
        }),
        (None, Some(key)) => Some(SftpAuth::Key {
            key: key.clone(),
            passphrase: raw.secret("sftp_key_passphrase").cloned(),
            origin: "the key in sftp_private_key".into(),
        }),
        (None, None) => None,
    };
    let password = raw.secret("sftp_password").cloned().map(SftpAuth::Password);
    let method = raw.text("sftp_auth_method").map(|m| m.to_ascii_uppercase());
    match (method.as_deref(), key, password) {
        (Some("PASSWORD"), _, Some(password)) => Ok(password),
        (Some("PASSWORD"), _, None) => Err(SettingError::unusable(
            "sftp_password",
            "sftp_auth_method is PASSWORD but no password is set",
        )),
        (Some("PUBLIC_KEY_FILE" | "PUBLIC_KEY" | "KEY"), Some(key), _) => Ok(key),
        (Some("PUBLIC_KEY_FILE" | "PUBLIC_KEY" | "KEY"), None, _) => Err(SettingError::unusable(
            "sftp_public_key_file",
            "sftp_auth_method is PUBLIC_KEY_FILE but neither sftp_public_key_file nor \
             sftp_private_key is set",
        )),
        (Some(other), _, _) => Err(SettingError::unusable(
            "sftp_auth_method",
            format!("'{other}' is not a method; use PASSWORD or PUBLIC_KEY_FILE"),
        )),
        (None, Some(key), _) => Ok(key),
        (None, None, Some(password)) => Ok(password),
        (None, None, None) => Err(SettingError::unusable(
            "sftp_password",
            "backend sftp needs a way to log in: sftp_password, sftp_public_key_file \
             or sftp_private_key",
        )),
    }
}

fn host_key_check(raw: &RawSettings) -> Result<HostKeyCheck, SettingError> {
    let insecure = raw.bool("sftp_insecure_ignore_host_key");
    match (
        raw.text("sftp_known_hosts"),
        raw.text("sftp_host_key_fingerprint"),
    ) {
        (Some(_), Some(_)) => Err(SettingError::Conflict(
            "sftp_known_hosts and sftp_host_key_fingerprint are both set; use one".into(),
        )),
        (Some(text), None) => {
            let (lines, origin) = if looks_like_path(text) {
                (
                    read_file("sftp_known_hosts", text)?,
                    format!("known_hosts file {text}"),
                )
            } else {
                (text.to_string(), "sftp_known_hosts".to_string())
            };
            Ok(HostKeyCheck::KnownHosts { lines, origin })
        }
        (None, Some(fingerprint)) => {
            if !fingerprint.starts_with("SHA256:") {
                return Err(SettingError::unusable(
                    "sftp_host_key_fingerprint",
                    format!(
                        "'{fingerprint}' is not a SHA256 fingerprint; get it with \
                         ssh-keyscan -p PORT HOST | ssh-keygen -lf -"
                    ),
                ));
            }
            Ok(HostKeyCheck::Fingerprint(fingerprint.to_string()))
        }
        (None, None) if insecure => Ok(HostKeyCheck::Insecure),
        (None, None) => Err(SettingError::unusable(
            "sftp_known_hosts",
            "the server's host key must be checked: set sftp_known_hosts to the output of \
             `ssh-keyscan -p PORT HOST`, or sftp_host_key_fingerprint to its SHA256 \
             fingerprint (or, knowingly, sftp_insecure_ignore_host_key: true)",
        )),
    }
}

/// A single line without spaces is a path; known_hosts content has spaces.
fn looks_like_path(text: &str) -> bool {
    !text.trim().contains(char::is_whitespace)
}

fn read_file(setting: &'static str, path: &str) -> Result<String, SettingError> {
    std::fs::read_to_string(Path::new(path))
        .map_err(|e| SettingError::unusable(setting, format!("cannot read {path}: {e}")))
}

fn azure(raw: &RawSettings) -> Result<AzureOptions, SettingError> {
    let account = required(raw, "account_name", "azure")?;
    let key = required_secret(raw, "account_key", "azure")?;
    let container = required(raw, "container", "azure")?;
    let endpoint = match (raw.text("endpoint"), raw.text("blob_storage_url")) {
        (Some(_), Some(_)) => {
            return Err(SettingError::Conflict(
                "endpoint and blob_storage_url are both set; use one".into(),
            ));
        }
        (Some(url), None) => Some(parse_url("endpoint", url, false)?),
        (None, Some(domain)) if domain.contains("://") => {
            Some(parse_url("blob_storage_url", domain, false)?)
        }
        (None, Some(domain)) => Some(parse_url(
            "blob_storage_url",
            &format!("https://{account}.{}", domain.trim_matches('.')),
            false,
        )?),
        (None, None) => None,
    };
    Ok(AzureOptions {
        account: account.to_string(),
        key: key.clone(),
        container: container.to_string(),
        endpoint,
    })
}

fn gcs(raw: &RawSettings) -> Result<GcsOptions, SettingError> {
    let bucket = required(raw, "bucket", "gcs")?;
    let credentials = match (raw.secret("json_key"), raw.text("json_key_file")) {
        (Some(_), Some(_)) => {
            return Err(SettingError::Conflict(
                "json_key and json_key_file are both set; use one".into(),
            ));
        }
        (Some(json), None) => GcsCredentials::KeyJson(json.clone()),
        (None, Some(path)) => {
            GcsCredentials::KeyJson(Secret::new(read_file("json_key_file", path)?))
        }
        (None, None) => GcsCredentials::Default,
    };
    Ok(GcsOptions {
        bucket: bucket.to_string(),
        endpoint: endpoint(raw)?,
        credentials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn storage_of(pairs: &[(&str, &str)]) -> Result<StorageConfig, SettingError> {
        let env = crate::settings::raw::env_of(pairs);
        storage(&RawSettings::resolve(&HashMap::new(), &env)?)
    }

    #[test]
    fn endpoint_without_scheme_follows_disable_ssl() {
        let s3 = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("PLUGIN_BUCKET", "b"), ("PLUGIN_ENDPOINT", "minio:9000")];
            pairs.extend_from_slice(extra);
            match storage_of(&pairs).unwrap() {
                StorageConfig::S3(s3) => s3.endpoint.unwrap(),
                _ => panic!("expected s3"),
            }
        };
        assert_eq!(s3(&[]).as_str(), "https://minio:9000/");
        assert_eq!(s3(&[("PLUGIN_DISABLESSL", "true")]).scheme(), "http");
    }

    #[test]
    fn sftp_needs_a_login_and_a_host_key_check() {
        let base = [
            ("PLUGIN_BACKEND", "sftp"),
            ("PLUGIN_SFTP_HOST", "h"),
            ("SFTP_USERNAME", "u"),
        ];
        let err = storage_of(&base).unwrap_err().to_string();
        assert!(err.contains("a way to log in"), "{err}");
        let mut with_password = base.to_vec();
        with_password.push(("SFTP_PASSWORD", "pw"));
        let err = storage_of(&with_password).unwrap_err().to_string();
        assert!(
            err.contains("sftp_known_hosts") && err.contains("ssh-keyscan"),
            "{err}"
        );
        with_password.push(("PLUGIN_SFTP_HOST_KEY_FINGERPRINT", "SHA256:abc"));
        let StorageConfig::Sftp(options) = storage_of(&with_password).unwrap() else {
            panic!("expected sftp")
        };
        assert!(matches!(options.auth, SftpAuth::Password(_)));
        assert_eq!(options.port, 22);
        with_password.push(("SFTP_AUTH_METHOD", "PUBLIC_KEY_FILE"));
        let err = storage_of(&with_password).unwrap_err().to_string();
        assert!(err.contains("sftp_public_key_file"), "{err}");
    }

    #[test]
    fn a_missing_key_file_names_the_setting() {
        let err = storage_of(&[
            ("PLUGIN_BACKEND", "sftp"),
            ("SFTP_HOST", "h"),
            ("SFTP_USERNAME", "u"),
            ("SFTP_PUBLIC_KEY_FILE", "/nonexistent/id_ed25519"),
            ("SFTP_INSECURE_IGNORE_HOST_KEY", "true"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("setting sftp_public_key_file") && err.contains("/nonexistent"),
            "{err}"
        );
    }

    #[test]
    fn azure_container_and_domain_are_used() {
        let StorageConfig::Azure(options) = storage_of(&[
            ("PLUGIN_BACKEND", "azure"),
            ("AZURE_ACCOUNT_NAME", "acct"),
            ("AZURE_ACCOUNT_KEY", "a2V5"),
            ("PLUGIN_CONTAINER", "builds"),
            ("AZURE_BLOB_STORAGE_URL", "blob.core.chinacloudapi.cn"),
        ])
        .unwrap() else {
            panic!("expected azure")
        };
        assert_eq!(options.container, "builds");
        assert_eq!(
            options.endpoint.unwrap().as_str(),
            "https://acct.blob.core.chinacloudapi.cn/"
        );
        let err = storage_of(&[("PLUGIN_BACKEND", "azure"), ("AZURE_ACCOUNT_NAME", "a")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("setting account_key"), "{err}");
    }
}
