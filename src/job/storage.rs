//! Validating the storage settings into one backend's options.
//!
//! Files named by settings (a private key, known_hosts, a JSON key) are read
//! here, so a wrong path is a configuration error naming the setting, found
//! before anything connects anywhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use url::Url;

use super::Process;
use crate::secret::Secret;
use crate::settings::SettingError;
use crate::settings::defs::Values;
use crate::settings::values::{Given, GivenText, Source, Sourced};
use crate::storage::StorageConfig;
use crate::storage::azure::{AzureAuth, AzureOptions, FederatedToken};
use crate::storage::gcs::{GcsCredentials, GcsOptions};
use crate::storage::http::CaCerts;
use crate::storage::s3::{CREDENTIAL_CHAIN_VARS, Encryption, Role, S3Keys, S3Options};
use crate::storage::sftp::{HostKeyCheck, SftpAuth, SftpOptions};

/// Where OpenSSH looks for host keys when nothing else is configured: the
/// user's file, then the system's.
pub fn known_hosts_files(home: Option<&Path>) -> Vec<PathBuf> {
    home.map(|h| h.join(".ssh/known_hosts"))
        .into_iter()
        .chain([PathBuf::from("/etc/ssh/ssh_known_hosts")])
        .collect()
}

/// The backend's options. The process gives the known_hosts files to fall
/// back on and the AWS credential chain's variables.
pub fn storage(values: &Values, process: &Process) -> Result<StorageConfig, SettingError> {
    match *values.backend {
        "filesystem" => filesystem(values),
        "sftp" => Ok(StorageConfig::Sftp(sftp(
            values,
            &process.known_hosts_files,
        )?)),
        "azure" => Ok(StorageConfig::Azure(azure(values)?)),
        "gcs" => Ok(StorageConfig::Gcs(gcs(values)?)),
        _ => Ok(StorageConfig::S3(s3(values, &process.env)?)),
    }
}

/// Storage settings that are set but do nothing for the chosen backend.
pub fn warnings(values: &Values) -> Vec<String> {
    let backend = *values.backend;
    let mut warnings = Vec::new();
    if values.ca_cert.text().is_some() && !matches!(backend, "s3" | "azure" | "gcs") {
        warnings.push(format!(
            "ca_cert is set but backend {backend} does not use https; it is ignored"
        ));
    }
    // Settings of one backend's logins and objects, given for another.
    let s3_only = [
        ("assume_role_arn", values.assume_role_arn.is_some()),
        ("user_role_arn", values.user_role_arn.is_some()),
        ("external_id", values.external_id.is_some()),
        ("sts_endpoint", values.sts_endpoint.is_some()),
        ("encryption", values.encryption.is_some()),
        ("kms_key_id", values.kms_key_id.is_some()),
        ("acl", values.acl.is_some()),
        ("storage_class", values.storage_class.is_some()),
    ];
    let azure_only = [
        ("azure_client_secret", values.azure_client_secret.is_some()),
        ("azure_managed_identity", *values.azure_managed_identity),
    ];
    let unused: Vec<&str> = match backend {
        "s3" => azure_only
            .iter()
            .filter(|(_, set)| *set)
            .map(|(n, _)| *n)
            .collect(),
        "azure" => s3_only
            .iter()
            .filter(|(_, set)| *set)
            .map(|(n, _)| *n)
            .collect(),
        _ => s3_only
            .iter()
            .chain(&azure_only)
            .chain(&[("oidc_token_id", values.oidc_token_id.is_some())])
            .filter(|(_, set)| *set)
            .map(|(n, _)| *n)
            .collect(),
    };
    if !unused.is_empty() {
        warnings.push(format!(
            "{} {} set but backend {backend} does not use {}; ignored",
            unused.join(", "),
            if unused.len() == 1 { "is" } else { "are" },
            if unused.len() == 1 { "it" } else { "them" },
        ));
    }
    warnings
}

/// The `ca_cert` setting: PEM text, or the path of a PEM file.
fn ca_certs(values: &Values) -> Result<CaCerts, SettingError> {
    let Some(text) = values.ca_cert.text() else {
        return Ok(CaCerts::default());
    };
    let (pem, origin) = if text.contains("-----BEGIN") {
        (text.to_string(), "ca_cert".to_string())
    } else {
        (read_file("ca_cert", text)?, format!("ca_cert file {text}"))
    };
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let unusable = |why: String| {
        SettingError::unusable(
            "ca_cert",
            format!(
                "{origin} {why}; give the CA's -----BEGIN CERTIFICATE----- block(s), or the \
                 path of a .pem or .crt file"
            ),
        )
    };
    let ders = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(format!("is not readable PEM ({e})")))?;
    if ders.is_empty() {
        return Err(unusable("holds no PEM certificate".into()));
    }
    let mut certs = Vec::new();
    for (i, der) in ders.iter().enumerate() {
        // Parsed as the TLS client will use it, so a broken one fails here.
        webpki::anchor_from_trusted_cert(der).map_err(|e| {
            unusable(format!(
                "has a certificate (number {}) that does not parse: {e}",
                i + 1
            ))
        })?;
        let cert = object_store::Certificate::from_der(der.as_ref()).map_err(|e| {
            unusable(format!(
                "has a certificate (number {}) that cannot be used: {e}",
                i + 1
            ))
        })?;
        certs.push(cert);
    }
    Ok(CaCerts { origin, certs })
}

fn filesystem(values: &Values) -> Result<StorageConfig, SettingError> {
    let root = PathBuf::from(&*values.filesystem_cache_root.value);
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
    value: &'a Option<Sourced<String>>,
    setting: &'static str,
    backend: &str,
) -> Result<&'a str, SettingError> {
    value.text().ok_or_else(|| {
        SettingError::unusable(
            setting,
            format!(
                "backend {backend} needs {setting}; set {setting}: <value> in the step's settings"
            ),
        )
    })
}

fn s3(values: &Values, env: &HashMap<String, String>) -> Result<S3Options, SettingError> {
    let bucket = values.bucket.text().ok_or_else(|| {
        SettingError::unusable(
            "bucket",
            "backend s3 needs a bucket; set bucket: <name> (or backend: filesystem for a volume)",
        )
    })?;
    let keys = match (values.access_key.given(), values.secret_key.given()) {
        (Some(access_key), Some(secret_key)) => Some(S3Keys {
            access_key: access_key.clone(),
            secret_key: secret_key.clone(),
            session_token: values.session_token.given().cloned(),
        }),
        (None, None) => None,
        (Some(_), None) => return Err(half_a_key_pair(&values.access_key, "secret_key")),
        (None, Some(_)) => return Err(half_a_key_pair(&values.secret_key, "access_key")),
    };
    Ok(S3Options {
        bucket: bucket.to_string(),
        endpoint: endpoint(values)?,
        region: values.region.text().map(str::to_string),
        path_style: (values.path_style.source != Source::Default).then_some(*values.path_style),
        roles: roles(values, keys.is_some())?,
        keys,
        credential_env: CREDENTIAL_CHAIN_VARS
            .iter()
            .filter_map(|var| Some((var.to_string(), env.get(*var)?.clone())))
            .collect(),
        sts_endpoint: values
            .sts_endpoint
            .text()
            .map(|text| parse_url("sts_endpoint", text, *values.disable_ssl))
            .transpose()?,
        encryption: encryption(values)?,
        acl: match values.acl.given() {
            // The default object ACL: sending it would only make buckets
            // with ACLs disabled refuse the write.
            Some(&"private") | None => None,
            Some(acl) => Some(acl.to_string()),
        },
        storage_class: storage_class(values)?,
        ca_certs: ca_certs(values)?,
    })
}

/// The roles to assume, in order: `assume_role_arn` (by web identity with
/// `oidc_token_id`), then `user_role_arn`.
fn roles(values: &Values, have_keys: bool) -> Result<Vec<Role>, SettingError> {
    let session_name = values.assume_role_session_name.value.trim();
    let session_ok = (2..=64).contains(&session_name.len())
        && session_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "=,.@_-".contains(c));
    if !session_ok {
        return Err(SettingError::unusable(
            "assume_role_session_name",
            format!(
                "'{session_name}' is not a session name: 2 to 64 letters, digits and =,.@_- \
                 (STS refuses anything else)"
            ),
        ));
    }
    let arn = |value: &Option<Sourced<String>>, setting: &'static str| {
        value
            .text()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                if a.starts_with("arn:") {
                    Ok(a.to_string())
                } else {
                    Err(SettingError::unusable(
                        setting,
                        format!(
                            "'{a}' is not a role ARN; write arn:aws:iam::<account>:role/<name>"
                        ),
                    ))
                }
            })
            .transpose()
    };
    let first = arn(&values.assume_role_arn, "assume_role_arn")?;
    let second = arn(&values.user_role_arn, "user_role_arn")?;
    let token = values.oidc_token_id.given();
    let needs = |given: bool, setting: &'static str, what: &str, needed: &str| {
        if given {
            Err(SettingError::unusable(
                setting,
                format!("{setting} is set but {needed} is not; {what}"),
            ))
        } else {
            Ok(())
        }
    };
    if first.is_none() {
        needs(
            token.is_some(),
            "oidc_token_id",
            "the token is exchanged for the keys of that role (AssumeRoleWithWebIdentity)",
            "assume_role_arn",
        )?;
        needs(
            values.external_id.is_some(),
            "external_id",
            "it is sent when assuming that role",
            "assume_role_arn",
        )?;
    }
    if second.is_none() {
        needs(
            values.user_role_external_id.is_some(),
            "user_role_external_id",
            "it is sent when assuming that role",
            "user_role_arn",
        )?;
    }
    if token.is_some() && have_keys {
        return Err(SettingError::Conflict(
            "oidc_token_id and access_key/secret_key are both set: web identity needs no keys; \
             remove one of them"
                .into(),
        ));
    }
    let mut roles = Vec::new();
    if let Some(arn) = first {
        roles.push(Role {
            arn,
            session_name: session_name.to_string(),
            external_id: values.external_id.given().cloned(),
            web_identity_token: token.cloned(),
        });
    }
    if let Some(arn) = second {
        roles.push(Role {
            arn,
            session_name: session_name.to_string(),
            external_id: values.user_role_external_id.given().cloned(),
            web_identity_token: None,
        });
    }
    Ok(roles)
}

/// `encryption`, `kms_key_id` and `kms_bucket_key` together.
fn encryption(values: &Values) -> Result<Option<Encryption>, SettingError> {
    let key_id = values
        .kms_key_id
        .text()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let bucket_key = values.kms_bucket_key.given().copied();
    let algorithm = match (values.encryption.given().copied(), key_id) {
        (Some("aes256"), _) => "AES256",
        (Some(other), _) => other,
        // A KMS key alone says which encryption is meant.
        (None, Some(_)) => "aws:kms",
        (None, None) if bucket_key.is_some() => {
            return Err(SettingError::unusable(
                "kms_bucket_key",
                "kms_bucket_key is set but encryption is not; set encryption: aws:kms",
            ));
        }
        (None, None) => return Ok(None),
    };
    if algorithm == "AES256" && (key_id.is_some() || bucket_key.is_some()) {
        return Err(SettingError::Conflict(format!(
            "encryption is AES256 (SSE-S3) but {} is set, which only SSE-KMS uses; \
             set encryption: aws:kms or remove it",
            if key_id.is_some() {
                "kms_key_id"
            } else {
                "kms_bucket_key"
            }
        )));
    }
    Ok(Some(Encryption {
        algorithm,
        kms_key_id: key_id.map(str::to_string),
        bucket_key,
    }))
}

/// `storage_class`, upper-cased; classes a restore cannot read at once are refused.
fn storage_class(values: &Values) -> Result<Option<String>, SettingError> {
    let Some(text) = values.storage_class.text().map(str::trim) else {
        return Ok(None);
    };
    let class = text.to_ascii_uppercase();
    if class.is_empty() || !class.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(SettingError::unusable(
            "storage_class",
            format!(
                "'{text}' is not a storage class; write e.g. STANDARD_IA or INTELLIGENT_TIERING"
            ),
        ));
    }
    if matches!(class.as_str(), "GLACIER" | "DEEP_ARCHIVE") {
        return Err(SettingError::unusable(
            "storage_class",
            format!(
                "{class} objects cannot be read until they are restored from the archive, so \
                 no cache restore could use them; use STANDARD_IA, GLACIER_IR or \
                 INTELLIGENT_TIERING, or a bucket lifecycle rule for old entries"
            ),
        ));
    }
    Ok((class != "STANDARD").then_some(class))
}

fn half_a_key_pair(given: &Option<Sourced<Secret>>, missing: &'static str) -> SettingError {
    let name = given.as_ref().map_or("", |g| g.name());
    SettingError::unusable(
        missing,
        format!(
            "{name} is set (from {}) but {missing} is not; set both, \
             or neither to use the AWS credential chain",
            given.source()
        ),
    )
}

/// The `endpoint` setting as a URL; `host:port` as drone-cache accepted it
/// means https, or http with `disable_ssl`.
fn endpoint(values: &Values) -> Result<Option<Url>, SettingError> {
    values
        .endpoint
        .text()
        .map(|text| parse_url("endpoint", text, *values.disable_ssl))
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

fn sftp(values: &Values, known_hosts_files: &[PathBuf]) -> Result<SftpOptions, SettingError> {
    let host = required(&values.sftp_host, "sftp_host", "sftp")?;
    let port = *values.sftp_port;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| SettingError::unusable("sftp_port", format!("{port} is not a TCP port")))?;
    let username = required(&values.sftp_username, "sftp_username", "sftp")?;
    Ok(SftpOptions {
        host: host.to_string(),
        port,
        username: username.to_string(),
        auth: sftp_auth(values)?,
        host_key: host_key_check(values, known_hosts_files)?,
        root: values.sftp_cache_root.text().unwrap_or("").to_string(),
    })
}

fn sftp_auth(values: &Values) -> Result<SftpAuth, SettingError> {
    let key = match (
        values.sftp_public_key_file.text(),
        values.sftp_private_key.given(),
    ) {
        (Some(_), Some(_)) => {
            return Err(SettingError::Conflict(
                "sftp_public_key_file and sftp_private_key are both set; use one".into(),
            ));
        }
        (Some(path), None) => Some(SftpAuth::Key {
            key: Secret::new(read_file("sftp_public_key_file", path)?),
            passphrase: values.sftp_key_passphrase.given().cloned(),
            origin: format!("key file {path}"),
        }),
        (None, Some(key)) => Some(SftpAuth::Key {
            key: key.clone(),
            passphrase: values.sftp_key_passphrase.given().cloned(),
            origin: "the key in sftp_private_key".into(),
        }),
        (None, None) => None,
    };
    let password = values
        .sftp_password
        .given()
        .cloned()
        .map(SftpAuth::Password);
    let method = values.sftp_auth_method.given().copied();
    match (method, key, password) {
        (Some("password"), _, Some(password)) => Ok(password),
        (Some("password"), _, None) => Err(SettingError::unusable(
            "sftp_password",
            "sftp_auth_method is PASSWORD but no password is set",
        )),
        (Some(_), Some(key), _) => Ok(key),
        (Some(_), None, _) => Err(SettingError::unusable(
            "sftp_public_key_file",
            "sftp_auth_method is PUBLIC_KEY_FILE but neither sftp_public_key_file nor \
             sftp_private_key is set",
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

fn host_key_check(
    values: &Values,
    known_hosts_files: &[PathBuf],
) -> Result<HostKeyCheck, SettingError> {
    let insecure = *values.sftp_insecure_ignore_host_key;
    match (
        values.sftp_known_hosts.text(),
        values.sftp_host_key_fingerprint.text(),
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
        (None, None) => default_known_hosts(known_hosts_files)?.ok_or_else(|| {
            SettingError::unusable(
                "sftp_known_hosts",
                format!(
                    "the server's host key must be checked: set sftp_known_hosts to the output \
                     of `ssh-keyscan -p PORT HOST`, or sftp_host_key_fingerprint to its SHA256 \
                     fingerprint (or, knowingly, sftp_insecure_ignore_host_key: true){}",
                    match known_hosts_files {
                        [] => String::new(),
                        files => format!(
                            "; there is no {} to fall back on either",
                            files
                                .iter()
                                .map(|p| p.display().to_string())
                                .collect::<Vec<_>>()
                                .join(" or ")
                        ),
                    }
                ),
            )
        }),
    }
}

/// OpenSSH's own known_hosts files, those that exist, read together (as
/// `ssh` reads the user's file and then the system's). `None` if none exists.
fn default_known_hosts(files: &[PathBuf]) -> Result<Option<HostKeyCheck>, SettingError> {
    let mut lines = String::new();
    let mut used = Vec::new();
    for file in files.iter().filter(|f| f.is_file()) {
        let text = std::fs::read_to_string(file).map_err(|e| {
            SettingError::unusable(
                "sftp_known_hosts",
                format!(
                    "is not set, so {} would be used, but it cannot be read: {e}",
                    file.display()
                ),
            )
        })?;
        lines.push_str(&text);
        lines.push('\n');
        used.push(file.display().to_string());
    }
    if used.is_empty() {
        return Ok(None);
    }
    Ok(Some(HostKeyCheck::KnownHosts {
        lines,
        origin: format!("{} (sftp_known_hosts is not set)", used.join(" and ")),
    }))
}

/// A single line without spaces is a path; known_hosts content has spaces.
fn looks_like_path(text: &str) -> bool {
    !text.trim().contains(char::is_whitespace)
}

fn read_file(setting: &'static str, path: &str) -> Result<String, SettingError> {
    std::fs::read_to_string(Path::new(path))
        .map_err(|e| SettingError::unusable(setting, format!("cannot read {path}: {e}")))
}

fn azure(values: &Values) -> Result<AzureOptions, SettingError> {
    let account = required(&values.account_name, "account_name", "azure")?;
    let auth = azure_auth(values)?;
    let container = required(&values.container, "container", "azure")?;
    let endpoint = match (values.endpoint.text(), values.blob_storage_url.text()) {
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
        auth,
        container: container.to_string(),
        endpoint,
        authority_host: values
            .azure_authority_host
            .text()
            .map(|text| parse_url("azure_authority_host", text, false))
            .transpose()?,
        ca_certs: ca_certs(values)?,
    })
}

/// How to log in to the storage account. In the drone-cache fork's order:
/// a federated token given as `oidc_token_id`, a client secret, the account
/// key; then a managed identity when asked for, and last a federated token
/// file (AKS sets it in every pod of a workload identity, so a key or secret
/// given for the step wins over it).
fn azure_auth(values: &Values) -> Result<AzureAuth, SettingError> {
    let client_id = values
        .azure_client_id
        .text()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let tenant_id = values
        .azure_tenant_id
        .text()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let secret = values.azure_client_secret.given();
    let token = values.oidc_token_id.given();
    let token_file = values
        .azure_federated_token_file
        .text()
        .filter(|s| !s.trim().is_empty());
    let key = values.account_key.given();
    let managed = *values.azure_managed_identity;
    // Names what `method` lacks, or gives the client and tenant ids.
    let ids = |method: &str| -> Result<(String, String), SettingError> {
        match (client_id, tenant_id) {
            (Some(client), Some(tenant)) => Ok((client.to_string(), tenant.to_string())),
            (None, _) => Err(SettingError::unusable(
                "azure_client_id",
                format!("{method} needs azure_client_id (the application id) and azure_tenant_id"),
            )),
            (Some(_), None) => Err(SettingError::unusable(
                "azure_tenant_id",
                format!("{method} needs azure_tenant_id (the directory id) with azure_client_id"),
            )),
        }
    };
    if managed {
        let others: Vec<&str> = [
            (key.is_some(), "account_key"),
            (secret.is_some(), "azure_client_secret"),
            (token.is_some(), "oidc_token_id"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        if !others.is_empty() {
            return Err(SettingError::Conflict(format!(
                "azure_managed_identity is true but {} is set too; use one way to log in",
                others.join(" and ")
            )));
        }
    }
    if let Some(token) = token {
        let (client_id, tenant_id) = ids("oidc_token_id (workload identity federation)")?;
        return Ok(AzureAuth::WorkloadIdentity {
            client_id,
            tenant_id,
            token: FederatedToken::Token(token.clone()),
        });
    }
    if let Some(secret) = secret {
        let (client_id, tenant_id) = ids("azure_client_secret")?;
        return Ok(AzureAuth::ClientSecret {
            client_id,
            tenant_id,
            secret: secret.clone(),
        });
    }
    if let Some(key) = key {
        return Ok(AzureAuth::Key(key.clone()));
    }
    if managed {
        return Ok(AzureAuth::ManagedIdentity {
            client_id: client_id.map(str::to_string),
            endpoint: values.azure_msi_endpoint.text().map(str::to_string),
        });
    }
    if let Some(path) = token_file {
        let (client_id, tenant_id) = ids("azure_federated_token_file (workload identity)")?;
        if !Path::new(path).is_file() {
            return Err(SettingError::unusable(
                "azure_federated_token_file",
                format!("{path} is not a readable file"),
            ));
        }
        return Ok(AzureAuth::WorkloadIdentity {
            client_id,
            tenant_id,
            token: FederatedToken::File(path.to_string()),
        });
    }
    Err(SettingError::unusable(
        "account_key",
        format!(
            "backend azure needs a way to log in: account_key (from a secret), \
             azure_client_secret with azure_client_id and azure_tenant_id, workload identity \
             (azure_client_id and azure_tenant_id with oidc_token_id or \
             azure_federated_token_file), or azure_managed_identity: true{}",
            match (client_id, tenant_id) {
                (Some(_), _) | (_, Some(_)) => {
                    "; azure_client_id or azure_tenant_id alone is not one"
                }
                _ => "",
            }
        ),
    ))
}

fn gcs(values: &Values) -> Result<GcsOptions, SettingError> {
    let bucket = required(&values.bucket, "bucket", "gcs")?;
    let credentials = match (values.json_key.given(), values.json_key_file.text()) {
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
        endpoint: endpoint(values)?,
        credentials,
        ca_certs: ca_certs(values)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::values_of;

    /// With no known_hosts files to fall back on, whatever this machine has.
    fn with_files(files: &[PathBuf]) -> Process {
        Process {
            known_hosts_files: files.to_vec(),
            ..Process::default()
        }
    }

    fn storage_of(pairs: &[(&str, &str)]) -> Result<StorageConfig, SettingError> {
        storage(&values_of(pairs)?, &Process::default())
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

    /// A self-signed CA certificate (public part only), for parsing.
    const TEST_CA: &str = include_str!("../../tests/data/test-ca.pem");

    #[test]
    fn ca_cert_is_pem_text_or_a_file_and_reaches_every_http_backend() {
        let s3 = |ca: &str| match storage_of(&[("PLUGIN_BUCKET", "b"), ("PLUGIN_CA_CERT", ca)]) {
            Ok(StorageConfig::S3(s3)) => Ok(s3.ca_certs),
            Ok(_) => panic!("expected s3"),
            Err(e) => Err(e.to_string()),
        };
        let inline = s3(TEST_CA).unwrap();
        assert_eq!((inline.certs.len(), inline.origin.as_str()), (1, "ca_cert"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, format!("{TEST_CA}\n{TEST_CA}\n")).unwrap();
        let from_file = s3(file.to_str().unwrap()).unwrap();
        assert_eq!(from_file.certs.len(), 2);
        assert!(from_file.origin.contains("ca.pem"), "{from_file:?}");
        // Errors name the setting and say what to give.
        let err = s3("/nonexistent/ca.pem").unwrap_err();
        assert!(
            err.contains("setting ca_cert") && err.contains("/nonexistent"),
            "{err}"
        );
        std::fs::write(&file, "not a certificate").unwrap();
        let err = s3(file.to_str().unwrap()).unwrap_err();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let err = s3("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----").unwrap_err();
        assert!(
            err.contains("setting ca_cert") && err.contains("does not parse"),
            "{err}"
        );
        // Azure and GCS get them too.
        let StorageConfig::Azure(azure) = storage_of(&[
            ("PLUGIN_BACKEND", "azure"),
            ("PLUGIN_ACCOUNT_NAME", "a"),
            ("PLUGIN_ACCOUNT_KEY", "a2V5"),
            ("PLUGIN_CONTAINER", "c"),
            ("PLUGIN_CA_CERT", TEST_CA),
        ])
        .unwrap() else {
            panic!("expected azure")
        };
        assert_eq!(azure.ca_certs.certs.len(), 1);
        let StorageConfig::Gcs(gcs) = storage_of(&[
            ("PLUGIN_BACKEND", "gcs"),
            ("PLUGIN_BUCKET", "b"),
            ("PLUGIN_CA_CERT", TEST_CA),
        ])
        .unwrap() else {
            panic!("expected gcs")
        };
        assert_eq!(gcs.ca_certs.certs.len(), 1);
        // A backend without https says the setting does nothing.
        let raw = values_of(&[
            ("PLUGIN_BACKEND", "filesystem"),
            ("PLUGIN_CA_CERT", TEST_CA),
        ])
        .unwrap();
        assert!(warnings(&raw)[0].contains("ca_cert is set but backend filesystem"));
        // Another backend's login and object settings are named too.
        let raw = values_of(&[
            ("PLUGIN_BACKEND", "azure"),
            ("PLUGIN_ENCRYPTION", "AES256"),
            ("AWS_ACL", "private"),
        ])
        .unwrap();
        assert_eq!(
            warnings(&raw),
            vec!["encryption, acl are set but backend azure does not use them; ignored"]
        );
        let raw = values_of(&[("PLUGIN_AZURE_MANAGED_IDENTITY", "true")]).unwrap();
        assert!(warnings(&raw)[0].contains("azure_managed_identity is set but backend s3"));
        let raw = values_of(&[("PLUGIN_BACKEND", "gcs"), ("PLUGIN_OIDC_TOKEN_ID", "t")]).unwrap();
        assert!(warnings(&raw)[0].contains("oidc_token_id is set but backend gcs"));
    }

    #[test]
    fn sftp_falls_back_on_openssh_known_hosts_files() {
        let raw = values_of(&[
            ("PLUGIN_BACKEND", "sftp"),
            ("PLUGIN_SFTP_HOST", "h"),
            ("PLUGIN_SFTP_USERNAME", "u"),
            ("PLUGIN_SFTP_PASSWORD", "pw"),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("home/.ssh/known_hosts");
        let system = dir.path().join("ssh_known_hosts");
        let files = [user.clone(), system.clone()];
        // Neither exists: the error says what to set and where it looked.
        let err = storage(&raw, &with_files(&files)).unwrap_err().to_string();
        assert!(
            err.contains("setting sftp_known_hosts")
                && err.contains("ssh-keyscan")
                && err.contains(&*system.to_string_lossy()),
            "{err}"
        );
        // Only the system file.
        std::fs::write(&system, "h ssh-ed25519 AAAAsystem\n").unwrap();
        let check = |files: &[PathBuf]| match storage(&raw, &with_files(files)).unwrap() {
            StorageConfig::Sftp(SftpOptions {
                host_key: HostKeyCheck::KnownHosts { lines, origin },
                ..
            }) => (lines, origin),
            other => panic!("{other:?}"),
        };
        let (lines, origin) = check(&files);
        assert!(lines.contains("AAAAsystem"));
        assert!(
            origin.contains("ssh_known_hosts") && origin.contains("not set"),
            "{origin}"
        );
        // Both: the user's lines and the system's are read together.
        std::fs::create_dir_all(user.parent().unwrap()).unwrap();
        std::fs::write(&user, "h ssh-ed25519 AAAAuser").unwrap();
        let (lines, origin) = check(&files);
        assert!(
            lines.contains("AAAAuser") && lines.contains("AAAAsystem"),
            "{lines}"
        );
        assert!(origin.contains(".ssh/known_hosts"), "{origin}");
        // A setting still wins over the files.
        let mut pairs = vec![
            ("PLUGIN_BACKEND", "sftp"),
            ("PLUGIN_SFTP_HOST", "h"),
            ("PLUGIN_SFTP_USERNAME", "u"),
            ("PLUGIN_SFTP_PASSWORD", "pw"),
        ];
        pairs.push(("PLUGIN_SFTP_HOST_KEY_FINGERPRINT", "SHA256:abc"));
        let raw = values_of(&pairs).unwrap();
        assert!(matches!(
            storage(&raw, &with_files(&files)).unwrap(),
            StorageConfig::Sftp(SftpOptions {
                host_key: HostKeyCheck::Fingerprint(_),
                ..
            })
        ));
    }

    fn s3_of(pairs: &[(&str, &str)]) -> Result<S3Options, String> {
        let mut all = vec![("PLUGIN_BUCKET", "b")];
        all.extend_from_slice(pairs);
        match storage_of(&all) {
            Ok(StorageConfig::S3(s3)) => Ok(s3),
            Ok(other) => panic!("expected s3, got {other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn roles_come_from_drone_cache_and_fork_variables() {
        let s3 = s3_of(&[
            ("AWS_ASSUME_ROLE_ARN", "arn:aws:iam::1:role/cache"),
            ("ASSUME_ROLE_SESSION_NAME", "ci-build"),
            ("PLUGIN_EXTERNAL_ID", "ext-1"),
            ("AWS_USER_ROLE_ARN", "arn:aws:iam::2:role/writer"),
            ("PLUGIN_USER_ROLE_EXTERNAL_ID", "ext-2"),
            ("AWS_STS_ENDPOINT", "sts.internal:8443"),
        ])
        .unwrap();
        assert_eq!(
            s3.roles,
            vec![
                Role {
                    arn: "arn:aws:iam::1:role/cache".into(),
                    session_name: "ci-build".into(),
                    external_id: Some(Secret::new("ext-1")),
                    web_identity_token: None,
                },
                Role {
                    arn: "arn:aws:iam::2:role/writer".into(),
                    session_name: "ci-build".into(),
                    external_id: Some(Secret::new("ext-2")),
                    web_identity_token: None,
                },
            ]
        );
        assert_eq!(
            s3.sts_endpoint.unwrap().as_str(),
            "https://sts.internal:8443/"
        );
        // The fork's other spelling, its default session name, and web identity.
        let s3 = s3_of(&[
            ("PLUGIN_ASSUME_ROLE", "arn:aws:iam::1:role/cache"),
            ("PLUGIN_OIDC_TOKEN_ID", "eyJ.token"),
        ])
        .unwrap();
        assert_eq!(s3.roles.len(), 1);
        assert_eq!(s3.roles[0].session_name, "drone-cache");
        assert_eq!(
            s3.roles[0].web_identity_token,
            Some(Secret::new("eyJ.token"))
        );
        assert!(s3_of(&[]).unwrap().roles.is_empty());
    }

    #[test]
    fn half_configured_roles_name_the_missing_setting() {
        let err = |pairs: &[(&str, &str)]| s3_of(pairs).unwrap_err();
        let e = err(&[("PLUGIN_OIDC_TOKEN_ID", "eyJ.token")]);
        assert!(
            e.contains("setting oidc_token_id") && e.contains("assume_role_arn"),
            "{e}"
        );
        let e = err(&[("PLUGIN_EXTERNAL_ID", "x")]);
        assert!(
            e.contains("setting external_id") && e.contains("assume_role_arn"),
            "{e}"
        );
        let e = err(&[("PLUGIN_USER_ROLE_EXTERNAL_ID", "x")]);
        assert!(e.contains("user_role_arn"), "{e}");
        let e = err(&[("PLUGIN_ASSUME_ROLE_ARN", "cache-role")]);
        assert!(
            e.contains("setting assume_role_arn") && e.contains("arn:aws:iam::"),
            "{e}"
        );
        let e = err(&[
            ("PLUGIN_ASSUME_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("PLUGIN_ASSUME_ROLE_SESSION_NAME", "has spaces"),
        ]);
        assert!(e.contains("setting assume_role_session_name"), "{e}");
        let e = err(&[
            ("PLUGIN_ASSUME_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("PLUGIN_OIDC_TOKEN_ID", "eyJ.token"),
            ("PLUGIN_ACCESS_KEY", "AKID"),
            ("PLUGIN_SECRET_KEY", "secret"),
        ]);
        assert!(e.contains("oidc_token_id and access_key"), "{e}");
        // Nothing secret in any of them.
        assert!(!e.contains("eyJ") && !e.contains("secret\""), "{e}");
    }

    #[test]
    fn encryption_acl_and_storage_class() {
        let s3 = s3_of(&[
            ("AWS_ENCRYPTION", "AES256"),
            ("AWS_ACL", "bucket-owner-full-control"),
            ("PLUGIN_STORAGE_CLASS", "standard_ia"),
        ])
        .unwrap();
        assert_eq!(
            s3.encryption,
            Some(Encryption {
                algorithm: "AES256",
                kms_key_id: None,
                bucket_key: None
            })
        );
        assert_eq!(s3.acl.as_deref(), Some("bucket-owner-full-control"));
        assert_eq!(s3.storage_class.as_deref(), Some("STANDARD_IA"));
        // drone-cache's default ACL and STANDARD send nothing.
        let s3 = s3_of(&[
            ("PLUGIN_ACL", "private"),
            ("PLUGIN_STORAGE_CLASS", "STANDARD"),
        ])
        .unwrap();
        assert_eq!(
            (s3.acl, s3.storage_class, s3.encryption),
            (None, None, None)
        );
        // A KMS key alone means aws:kms.
        let s3 = s3_of(&[
            ("PLUGIN_KMS_KEY_ID", "alias/ci"),
            ("PLUGIN_KMS_BUCKET_KEY", "true"),
        ])
        .unwrap();
        assert_eq!(
            s3.encryption,
            Some(Encryption {
                algorithm: "aws:kms",
                kms_key_id: Some("alias/ci".into()),
                bucket_key: Some(true)
            })
        );
        let dsse = s3_of(&[("PLUGIN_ENCRYPTION", "aws:kms:dsse")]).unwrap();
        assert_eq!(dsse.encryption.unwrap().algorithm, "aws:kms:dsse");
        // What cannot work is refused, naming the setting.
        let e = s3_of(&[("PLUGIN_ENCRYPTION", "AES256"), ("PLUGIN_KMS_KEY_ID", "k")]).unwrap_err();
        assert!(e.contains("kms_key_id") && e.contains("aws:kms"), "{e}");
        let e = s3_of(&[("PLUGIN_KMS_BUCKET_KEY", "true")]).unwrap_err();
        assert!(e.contains("setting kms_bucket_key"), "{e}");
        let e = s3_of(&[("PLUGIN_ENCRYPTION", "sse-c")]).unwrap_err();
        assert!(e.contains("encryption") && e.contains("aws:kms"), "{e}");
        let e = s3_of(&[("PLUGIN_ACL", "owner-only")]).unwrap_err();
        assert!(
            e.contains("acl") && e.contains("bucket-owner-full-control"),
            "{e}"
        );
        let e = s3_of(&[("PLUGIN_STORAGE_CLASS", "deep_archive")]).unwrap_err();
        assert!(
            e.contains("setting storage_class") && e.contains("DEEP_ARCHIVE"),
            "{e}"
        );
        let e = s3_of(&[("PLUGIN_STORAGE_CLASS", "cold storage")]).unwrap_err();
        assert!(e.contains("setting storage_class"), "{e}");
    }

    #[test]
    fn path_style_is_none_unless_set() {
        assert_eq!(s3_of(&[]).unwrap().path_style, None);
        assert_eq!(
            s3_of(&[("PLUGIN_PATH_STYLE", "false")]).unwrap().path_style,
            Some(false)
        );
        assert_eq!(
            s3_of(&[("AWS_PLUGIN_PATH_STYLE", "true")])
                .unwrap()
                .path_style,
            Some(true)
        );
    }

    fn azure_of(pairs: &[(&str, &str)]) -> Result<AzureOptions, String> {
        let mut all = vec![
            ("PLUGIN_BACKEND", "azure"),
            ("PLUGIN_ACCOUNT_NAME", "acct"),
            ("PLUGIN_CONTAINER", "c"),
        ];
        all.extend_from_slice(pairs);
        match storage_of(&all) {
            Ok(StorageConfig::Azure(azure)) => Ok(azure),
            Ok(other) => panic!("expected azure, got {other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn azure_logs_in_with_a_key_a_secret_a_federated_token_or_a_managed_identity() {
        let entra = [
            ("AZURE_CLIENT_ID", "app-1"),
            ("AZURE_TENANT_ID", "tenant-1"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = entra.to_vec();
            pairs.extend_from_slice(extra);
            azure_of(&pairs).unwrap().auth
        };
        let auth = with(&[("AZURE_CLIENT_SECRET", "s3cret")]);
        assert!(
            matches!(&auth, AzureAuth::ClientSecret { client_id, tenant_id, secret }
                if client_id == "app-1" && tenant_id == "tenant-1" && secret.expose() == "s3cret"),
            "{auth:?}"
        );
        // The fork's spellings, and its order: the secret wins over a key.
        let auth = azure_of(&[
            ("CLIENT_ID", "app-2"),
            ("TENANT_ID", "t"),
            ("CLIENT_SECRET", "s"),
            ("AZURE_ACCOUNT_KEY", "a2V5"),
        ])
        .unwrap()
        .auth;
        assert!(matches!(auth, AzureAuth::ClientSecret { .. }), "{auth:?}");
        let auth = with(&[("PLUGIN_OIDC_TOKEN_ID", "eyJ.t"), ("CLIENT_SECRET", "s")]);
        assert!(
            matches!(&auth, AzureAuth::WorkloadIdentity { token: FederatedToken::Token(t), .. }
                if t.expose() == "eyJ.t"),
            "{auth:?}"
        );
        // AKS's variables: the token file, unless the step gives a key.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "eyJ.file").unwrap();
        let file = file.to_str().unwrap();
        let auth = with(&[("AZURE_FEDERATED_TOKEN_FILE", file)]);
        assert!(
            matches!(&auth, AzureAuth::WorkloadIdentity { token: FederatedToken::File(f), .. }
                if f == file),
            "{auth:?}"
        );
        let auth = with(&[
            ("AZURE_FEDERATED_TOKEN_FILE", file),
            ("AZURE_ACCOUNT_KEY", "a2V5"),
        ]);
        assert!(matches!(auth, AzureAuth::Key(_)), "{auth:?}");
        let auth = with(&[
            ("AZURE_FEDERATED_TOKEN_FILE", file),
            ("PLUGIN_AZURE_MANAGED_IDENTITY", "true"),
            ("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token"),
        ]);
        assert!(
            matches!(&auth, AzureAuth::ManagedIdentity { client_id: Some(id), endpoint: Some(e) }
                if id == "app-1" && e.ends_with("/msi/token")),
            "{auth:?}"
        );
        let options = azure_of(&[
            ("PLUGIN_AZURE_MANAGED_IDENTITY", "true"),
            ("AZURE_AUTHORITY_HOST", "https://login.chinacloudapi.cn"),
        ])
        .unwrap();
        assert!(matches!(
            options.auth,
            AzureAuth::ManagedIdentity {
                client_id: None,
                endpoint: None
            }
        ));
        assert_eq!(
            options.authority_host.unwrap().as_str(),
            "https://login.chinacloudapi.cn/"
        );
    }

    #[test]
    fn half_configured_azure_logins_name_the_missing_setting() {
        let e = azure_of(&[]).unwrap_err();
        assert!(
            e.contains("setting account_key")
                && e.contains("azure_client_secret")
                && e.contains("azure_managed_identity"),
            "{e}"
        );
        let e = azure_of(&[("AZURE_CLIENT_SECRET", "s3cret")]).unwrap_err();
        assert!(e.contains("setting azure_client_id"), "{e}");
        let e =
            azure_of(&[("AZURE_CLIENT_SECRET", "s3cret"), ("AZURE_CLIENT_ID", "a")]).unwrap_err();
        assert!(e.contains("setting azure_tenant_id"), "{e}");
        let e =
            azure_of(&[("PLUGIN_OIDC_TOKEN_ID", "eyJ.t"), ("AZURE_TENANT_ID", "t")]).unwrap_err();
        assert!(
            e.contains("setting azure_client_id") && e.contains("oidc_token_id"),
            "{e}"
        );
        let e = azure_of(&[("AZURE_CLIENT_ID", "a"), ("AZURE_TENANT_ID", "t")]).unwrap_err();
        assert!(e.contains("alone is not one"), "{e}");
        let e = azure_of(&[
            ("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/token"),
            ("AZURE_CLIENT_ID", "a"),
            ("AZURE_TENANT_ID", "t"),
        ])
        .unwrap_err();
        assert!(
            e.contains("setting azure_federated_token_file") && e.contains("/nonexistent"),
            "{e}"
        );
        let e = azure_of(&[
            ("PLUGIN_AZURE_MANAGED_IDENTITY", "true"),
            ("AZURE_ACCOUNT_KEY", "a2V5"),
        ])
        .unwrap_err();
        assert!(
            e.contains("azure_managed_identity") && e.contains("account_key"),
            "{e}"
        );
        assert!(!e.contains("a2V5") && !e.contains("s3cret"), "{e}");
    }
}
