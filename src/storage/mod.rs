//! Storage: one `object_store::ObjectStore` per backend, plus the few things
//! larder builds on top of it (entry names, first-writer claims, streaming
//! transfers, readable errors). Each backend only has to build its store.

pub mod claim;
pub mod entry;
pub mod filesystem;
pub mod s3;
pub mod transfer;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use url::Url;

use crate::settings::Secret;

/// Which backend to use, validated from the settings.
#[derive(Clone, Debug)]
pub enum StorageConfig {
    Filesystem { root: PathBuf },
    S3(S3Options),
}

#[derive(Clone, Debug)]
pub struct S3Options {
    pub bucket: String,
    pub endpoint: Option<Url>,
    pub region: Option<String>,
    pub path_style: bool,
    /// Static keys; `None` means the AWS credential chain.
    pub keys: Option<S3Keys>,
}

#[derive(Clone, Debug)]
pub struct S3Keys {
    pub access_key: Secret,
    pub secret_key: Secret,
    pub session_token: Option<Secret>,
}

impl StorageConfig {
    /// Values that must be scrubbed from any text before it is logged.
    pub fn secrets(&self) -> Vec<String> {
        match self {
            StorageConfig::S3(S3Options {
                keys: Some(keys), ..
            }) => [
                Some(&keys.access_key),
                Some(&keys.secret_key),
                keys.session_token.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(|s| s.expose().to_string())
            .collect(),
            _ => Vec::new(),
        }
    }
}

/// An opened backend and how to describe it in logs.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// The backend's name: `s3`, `filesystem`.
    pub backend: &'static str,
    /// Where, for people: `s3://ci-cache at http://127.0.0.1:9200`, `/tmp/cache`.
    pub location: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.backend, self.location)
    }
}

impl Store {
    /// Opens the configured backend. Nothing is sent over the network yet.
    pub fn open(config: &StorageConfig, timeout: Duration) -> anyhow::Result<Store> {
        match config {
            StorageConfig::Filesystem { root } => filesystem::open(root),
            StorageConfig::S3(options) => s3::open(options, timeout),
        }
    }

    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Wraps a storage failure in a sentence naming backend, operation and object.
    pub fn error(
        &self,
        operation: &str,
        path: &ObjectPath,
        err: object_store::Error,
    ) -> anyhow::Error {
        let (detail, hint) = explain(&err);
        let hint = hint.map(|h| format!(". {h}")).unwrap_or_default();
        anyhow::anyhow!(
            "{} {operation} '{path}' in {} failed: {detail}{hint}",
            self.backend,
            self.location
        )
    }
}

/// The error's own message and its causes, with a hint about what to check.
fn explain(err: &object_store::Error) -> (String, Option<&'static str>) {
    let detail = chain(err);
    let lower = detail.to_ascii_lowercase();
    let hint = match err {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Some(
            "The credentials were rejected: check access_key and secret_key (or the role) and the bucket policy",
        ),
        _ if lower.contains("signaturedoesnotmatch") || lower.contains("invalidaccesskeyid") => {
            Some("The credentials were rejected: check access_key and secret_key")
        }
        _ if lower.contains("nosuchbucket") => {
            Some("The bucket does not exist: check bucket and region")
        }
        _ if lower.contains("timed out")
            || lower.contains("timeout")
            || lower.contains("deadline") =>
        {
            Some(
                "No answer within backend_operation_timeout: the endpoint is unreachable or stalled",
            )
        }
        _ if lower.contains("connect") || lower.contains("dns") || lower.contains("resolve") => {
            Some(
                "Cannot reach the endpoint: check endpoint, DNS and network access from the runner",
            )
        }
        _ => None,
    };
    (detail, hint)
}

/// `err` and its sources, without repeating a message its parent already shows.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}
