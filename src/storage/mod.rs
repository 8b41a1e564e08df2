//! Storage: one `object_store::ObjectStore` per backend, rooted at the
//! repository's folder, plus the few things larder builds on top of it
//! (entry names, first-writer claims, damage reports, streaming transfers,
//! readable errors). Each backend only has to build its store.

pub mod azure;
pub(crate) mod claim;
pub(crate) mod damage;
pub(crate) mod entry;
pub mod filesystem;
pub mod gcs;
pub mod http;
pub mod s3;
pub mod sftp;
pub(crate) mod transfer;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutPayload};

/// Which backend to use, validated from the settings.
#[derive(Clone, Debug)]
pub enum StorageConfig {
    Filesystem { root: PathBuf },
    S3(s3::S3Options),
    Sftp(sftp::SftpOptions),
    Azure(azure::AzureOptions),
    Gcs(gcs::GcsOptions),
}

/// The kinds of storage, for logs and for the few places that differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Filesystem,
    S3,
    Sftp,
    Azure,
    Gcs,
    /// A store handed in directly (in-process tests).
    Memory,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Filesystem => "filesystem",
            Backend::S3 => "s3",
            Backend::Sftp => "sftp",
            Backend::Azure => "azure",
            Backend::Gcs => "gcs",
            Backend::Memory => "memory",
        })
    }
}

/// A backend as built, before it is rooted at the repository's folder.
pub struct Opened {
    pub store: Arc<dyn ObjectStore>,
    /// Where, for people: `s3://ci-cache at http://127.0.0.1:9200`, `/tmp/cache`.
    pub location: String,
    pub scratch: Scratch,
}

/// The repository's folder in an opened backend, and how to describe it.
/// Paths given to it are relative to the folder (`gomod-1.tar.gz`).
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    pub backend: Backend,
    /// Where, for people: `s3://ci-cache at http://127.0.0.1:9200`, `/tmp/cache`.
    pub location: String,
    /// The repository's folder (`remote_root`), e.g. `octocat/hello`.
    pub root: String,
    /// Where the backend keeps unfinished uploads that listings do not show.
    scratch: Scratch,
}

/// Where unfinished uploads live, for removing those of killed rebuilds.
/// Object stores keep incomplete multipart uploads out of sight (a bucket
/// lifecycle rule aborts them); files on a volume or an SFTP server stay.
#[derive(Clone)]
pub enum Scratch {
    None,
    /// `LocalFileSystem` writes `<object>#<n>` beside the object.
    Local(PathBuf),
    /// The SFTP store writes hidden `.<object>.<id>.larder-tmp` files.
    Sftp(Arc<sftp::SftpStore>),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.backend, self.location, self.root)
    }
}

impl Store {
    /// Opens the configured backend, rooted at `root`. Object stores
    /// connect lazily; SFTP logs in here, so a bad password or host key
    /// fails before any work.
    pub async fn open(
        config: &StorageConfig,
        timeout: Duration,
        root: &str,
    ) -> anyhow::Result<Store> {
        let (backend, opened) = match config {
            StorageConfig::Filesystem { root } => (Backend::Filesystem, filesystem::open(root)?),
            StorageConfig::S3(options) => (Backend::S3, s3::open(options, timeout)?),
            StorageConfig::Sftp(options) => (Backend::Sftp, sftp::open(options, timeout).await?),
            StorageConfig::Azure(options) => (Backend::Azure, azure::open(options, timeout)?),
            StorageConfig::Gcs(options) => (Backend::Gcs, gcs::open(options, timeout)?),
        };
        Ok(Store::new(backend, opened, root))
    }

    /// Roots an opened backend at `root`.
    pub fn new(backend: Backend, opened: Opened, root: &str) -> Store {
        let inner: Arc<dyn ObjectStore> =
            Arc::new(PrefixStore::new(opened.store, ObjectPath::from(root)));
        Store {
            inner,
            backend,
            location: opened.location,
            root: root.to_string(),
            scratch: opened.scratch,
        }
    }

    /// `path` with the repository's folder in front, for messages.
    pub fn full(&self, path: &ObjectPath) -> String {
        format!("{}/{path}", self.root)
    }

    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// An object's metadata, or `None` if there is no such object.
    pub async fn head(&self, path: &ObjectPath) -> anyhow::Result<Option<ObjectMeta>> {
        match self.inner.head(path).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("lookup of", path, e)),
        }
    }

    /// A small object's bytes and metadata, or `None` if there is none.
    pub async fn read(&self, path: &ObjectPath) -> anyhow::Result<Option<(Bytes, ObjectMeta)>> {
        let result = match self.inner.get(path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("read of", path, e)),
        };
        let meta = result.meta.clone();
        let bytes = result
            .bytes()
            .await
            .map_err(|e| self.error("read of", path, e))?;
        Ok(Some((bytes, meta)))
    }

    /// Writes a small object. With `PutMode::Create`, `Ok(false)` means it
    /// already existed and nothing was written.
    pub async fn write(
        &self,
        path: &ObjectPath,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> anyhow::Result<bool> {
        match self
            .inner
            .put_opts(path, PutPayload::from(bytes), mode.into())
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.error("write of", path, e)),
        }
    }

    /// Deletes an object; one that is already gone is fine.
    pub async fn delete(&self, path: &ObjectPath) -> anyhow::Result<()> {
        match self.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("removal of", path, e)),
        }
    }

    /// The folder's own objects (not deeper folders).
    pub async fn list(&self) -> anyhow::Result<Vec<ObjectMeta>> {
        let listing = self
            .inner
            .list_with_delimiter(None)
            .await
            .map_err(|e| self.error("listing of", &ObjectPath::from(""), e))?;
        Ok(listing.objects)
    }

    /// Removes unfinished uploads in the folder of the objects `wanted`
    /// accepts (by file name) that were not written to for `older_than`,
    /// and returns their names. Best effort: a failure is logged.
    pub async fn remove_temporaries(
        &self,
        wanted: impl Fn(&str) -> bool + Send + 'static,
        older_than: Duration,
    ) -> Vec<String> {
        let folder = self.root.as_str();
        let removed = match &self.scratch {
            Scratch::None => Ok(Vec::new()),
            Scratch::Local(root) => {
                let dir = root.join(folder);
                tokio::task::spawn_blocking(move || {
                    filesystem::remove_temporaries(&dir, wanted, older_than)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                .map_err(|e| e.to_string())
            }
            Scratch::Sftp(sftp) => sftp
                .remove_temporaries(folder, wanted, older_than)
                .await
                .map_err(|e| e.to_string()),
        };
        removed.unwrap_or_else(|e| {
            tracing::warn!(
                "could not look for unfinished uploads in '{folder}' in {} {}: {e}",
                self.backend,
                self.location
            );
            Vec::new()
        })
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
            "{} {operation} '{}' in {} failed: {detail}{hint}",
            self.backend,
            self.full(path),
            self.location
        )
    }
}

/// The error's own message and its causes, with a hint about what to check.
fn explain(err: &object_store::Error) -> (String, Option<&'static str>) {
    let detail = chain(err);
    // object_store's retry errors always print their "retry_timeout"
    // setting; that is no sign of a timeout.
    let lower = detail.to_ascii_lowercase().replace("retry_timeout", "");
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
        _ if lower.contains("connection refused") => Some(
            "Nothing accepts connections at the endpoint: check endpoint (host and port) and that the server is running",
        ),
        _ if lower.contains("certificate") || lower.contains("unknownissuer") => Some(
            "The server's TLS certificate is not trusted: if a private CA issued it, give that \
             CA's certificate in ca_cert (PEM text or a file path)",
        ),
        _ if lower.contains("timed out")
            || lower.contains("did not answer")
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
