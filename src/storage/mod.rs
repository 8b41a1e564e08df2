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
    /// The backend itself, at its root (the bucket, the cache directory).
    base: Arc<dyn ObjectStore>,
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
        Store {
            inner: rooted(&opened.store, root),
            base: opened.store,
            backend,
            location: opened.location,
            root: root.to_string(),
            scratch: opened.scratch,
        }
    }

    /// The same backend rooted at another folder (`""`: its root), to read
    /// what drone-cache stored outside the repository's folder.
    pub fn rooted(&self, root: &str) -> Store {
        Store {
            inner: rooted(&self.base, root),
            base: Arc::clone(&self.base),
            backend: self.backend,
            location: self.location.clone(),
            root: root.to_string(),
            scratch: self.scratch.clone(),
        }
    }

    /// `path` with the repository's folder in front, for messages.
    pub fn full(&self, path: &ObjectPath) -> String {
        match self.root.as_str() {
            "" => path.to_string(),
            root => format!("{root}/{path}"),
        }
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
        let (detail, hint) = explain(&err, self.backend);
        let hint = hint.map(|h| format!(". {h}")).unwrap_or_default();
        anyhow::anyhow!(
            "{} {operation} '{}' in {} failed: {detail}{hint}",
            self.backend,
            self.full(path),
            self.location
        )
    }
}

fn rooted(store: &Arc<dyn ObjectStore>, root: &str) -> Arc<dyn ObjectStore> {
    match root.trim_matches('/') {
        "" => Arc::clone(store),
        root => Arc::new(PrefixStore::new(Arc::clone(store), ObjectPath::from(root))),
    }
}

/// The error's own message and its causes, with a hint about what to check.
fn explain(err: &object_store::Error, backend: Backend) -> (String, Option<String>) {
    let detail = chain(err);
    let hint = match err {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Some(denied(backend).to_string()),
        _ => hint(&detail, backend),
    };
    (detail, hint)
}

/// What to check when the storage refused an operation: the settings that
/// decide who larder is on that backend, and what grants it access.
fn denied(backend: Backend) -> &'static str {
    match backend {
        Backend::S3 => {
            "The credentials were rejected: check access_key and secret_key (or the role) and \
             the bucket policy"
        }
        Backend::Azure => {
            "The credentials were rejected: check account_name and account_key (or the \
             Azure login settings) and the identity's role on the container"
        }
        Backend::Gcs => {
            "The credentials were rejected: check json_key (or json_key_file) and the service \
             account's role on the bucket"
        }
        Backend::Sftp => {
            "The SFTP server refused it: sftp_username may not write there; check the owner \
             and permissions of sftp_cache_root on the server"
        }
        Backend::Filesystem | Backend::Memory => {
            "The cache folder refused it: check the owner and permissions of \
             filesystem_cache_root (the mounted volume) for the user the step runs as"
        }
    }
}

/// A hint for an error's text. The order matters: a credential chain that
/// fell through to a metadata service fails with a network error at that
/// address, which is no network problem of the endpoint; a DNS failure and a
/// refused connection are told apart from a timeout; and object_store's
/// retry errors always print their `retry_timeout` setting, which is no sign
/// of a timeout (so the bare word is never matched).
fn hint(detail: &str, backend: Backend) -> Option<String> {
    let lower = detail.to_ascii_lowercase().replace("retry_timeout", "");
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    let host = failing_host(&lower);
    let at = host.map(|h| format!(" at {h}")).unwrap_or_default();
    let hint = if has(&[
        "/metadata/identity/oauth2/token",
        "msi_endpoint",
        "identity_endpoint",
    ]) {
        "No Azure credentials found: account_key is not set, and the instance metadata \
         address gave no managed identity token. Set account_key (from a secret), or run where \
         a managed identity is assigned"
            .to_string()
    } else if has(&["computemetadata", "metadata.google.internal"]) {
        "No Google credentials found: json_key and json_key_file are not set, and the metadata \
         server gave none. Set json_key (from a secret) or json_key_file, or run where \
         workload identity provides credentials"
            .to_string()
    } else if has(&[
        "169.254.169.254",
        "/latest/api/token",
        "/latest/meta-data/iam",
        "169.254.170.2",
    ]) {
        "No credentials found: access_key and secret_key are not set, and the AWS credential \
         chain found none (its last resort, the instance metadata service at 169.254.169.254, \
         gave none: this runner has no instance role). Set access_key and secret_key \
         (from secrets), or run where the AWS chain provides credentials: an instance \
         profile, IRSA web identity (AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE) or an ECS \
         task role"
            .to_string()
    } else if has(&["signaturedoesnotmatch", "invalidaccesskeyid"]) {
        "The credentials were rejected: check access_key and secret_key".to_string()
    } else if has(&["nosuchbucket"]) {
        "The bucket does not exist: check bucket and region".to_string()
    } else if has(&[
        "dns error",
        "failed to lookup address",
        "name or service not known",
        "temporary failure in name resolution",
        "no address associated with hostname",
    ]) {
        let name = host
            .map(|h| format!("'{}'", h.split(':').next().unwrap_or(h)))
            .unwrap_or_else(|| "of the endpoint".into());
        let mut hint = format!(
            "The host name {name} does not resolve (DNS): check the host in endpoint for \
             typos, and that the runner's DNS knows it"
        );
        if backend == Backend::S3 {
            hint.push_str(
                ". Without path_style the bucket is part of the host name \
                 (<bucket>.<endpoint host>); a self-hosted server usually needs path_style: true",
            );
        }
        hint
    } else if has(&["connection refused"]) {
        format!(
            "Nothing accepts connections{at}: check endpoint (host and port) and that the \
             server is running"
        )
    } else if has(&["network is unreachable", "no route to host"]) {
        format!(
            "The runner has no route to the endpoint{at}: check endpoint and the runner's \
             network (firewall, proxy, VPN)"
        )
    } else if has(&["certificate", "unknownissuer"]) {
        "The server's TLS certificate is not trusted: if a private CA issued it, give that \
         CA's certificate in ca_cert (PEM text or a file path)"
            .to_string()
    } else if has(&["tcp connect error", "client error (connect)"])
        && has(&["deadline has elapsed", "timed out"])
    {
        format!(
            "Connecting to the endpoint{at} timed out: nothing answered there (a firewall \
             dropping packets, a wrong address or port, or a host that is down). Check \
             endpoint and network access from the runner"
        )
    } else if has(&["timed out", "did not answer", "deadline has elapsed"]) {
        "No answer within backend_operation_timeout: the server accepted the connection but \
         did not answer in time. Check that it is healthy, or raise backend_operation_timeout \
         for a slow server"
            .to_string()
    } else if has(&[
        "client error (connect)",
        "tcp connect error",
        "dns",
        "resolve",
    ]) {
        "Cannot reach the endpoint: check endpoint, DNS and network access from the runner"
            .to_string()
    } else {
        return None;
    };
    Some(hint)
}

/// `host:port` of the request that failed, from object_store's retry error
/// (`Error performing GET http://host:port/... in ...`).
fn failing_host(lower: &str) -> Option<&str> {
    let url = lower.split("error performing ").nth(1)?.split(' ').nth(1)?;
    let rest = url.split("://").nth(1)?;
    rest.split(['/', '?']).next().filter(|h| !h.is_empty())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// object_store's error for a request that failed, as the S3 client
    /// reports it (texts from real runs, see the notes of issue 12).
    fn s3_error(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::other(text.to_string())),
        }
    }

    fn hint_of(text: &str) -> String {
        explain(&s3_error(text), Backend::S3)
            .1
            .unwrap_or_else(|| "(no hint)".into())
    }

    const RETRIED: &str = "in 431.31611ms, after 3 retries, max_retries: 3, retry_timeout: 180s  \
                           - HTTP error: error sending request: client error (Connect): ";

    #[test]
    fn a_refusal_names_the_settings_of_its_backend() {
        let refused = || object_store::Error::PermissionDenied {
            path: "cache/key".into(),
            source: Box::new(std::io::Error::other("permission denied")),
        };
        let hint = |backend| explain(&refused(), backend).1.unwrap_or_default();
        assert!(hint(Backend::S3).contains("access_key"));
        assert!(hint(Backend::Azure).contains("account_key"));
        assert!(hint(Backend::Gcs).contains("json_key"));
        assert!(hint(Backend::Sftp).contains("sftp_cache_root"));
        assert!(!hint(Backend::Sftp).contains("access_key"));
        assert!(hint(Backend::Filesystem).contains("filesystem_cache_root"));
    }

    #[test]
    fn a_dns_failure_names_the_host_and_path_style() {
        for cause in [
            "Name or service not known",
            "Temporary failure in name resolution",
        ] {
            let hint = hint_of(&format!(
                "Error performing HEAD http://ci-cache.larder-test.invalid:9/o/r/main.tar.gz \
                 {RETRIED}dns error: error resolving DNS: failed to lookup address \
                 information: {cause}"
            ));
            assert!(
                hint.contains("'ci-cache.larder-test.invalid' does not resolve (DNS)"),
                "{hint}"
            );
            assert!(hint.contains("path_style: true"), "{hint}");
            assert!(!hint.contains("timeout"), "{hint}");
        }
    }

    #[test]
    fn a_refused_connection_is_not_a_timeout() {
        let hint = hint_of(&format!(
            "Error performing HEAD http://127.0.0.1:9/b/o/r/main.tar.gz {RETRIED}tcp connect \
             error: Connection refused (os error 111)"
        ));
        assert!(
            hint.starts_with("Nothing accepts connections at 127.0.0.1:9"),
            "{hint}"
        );
        assert!(!hint.contains("timeout"), "{hint}");
    }

    #[test]
    fn a_connect_timeout_and_a_silent_server_differ() {
        let connect = hint_of(&format!(
            "Error performing HEAD http://10.9.9.9:9000/b/k {RETRIED}tcp connect error: \
             deadline has elapsed"
        ));
        assert!(
            connect.starts_with("Connecting to the endpoint at 10.9.9.9:9000 timed out"),
            "{connect}"
        );
        let silent = hint_of(
            "Error performing HEAD http://127.0.0.1:9000/b/k in 2s, after 3 retries, \
             max_retries: 3, retry_timeout: 2s  - HTTP error: error sending request: \
             operation timed out",
        );
        assert!(
            silent.starts_with("No answer within backend_operation_timeout"),
            "{silent}"
        );
        let unreachable = hint_of(&format!(
            "Error performing HEAD http://10.9.9.9:9000/b/k {RETRIED}tcp connect error: \
             Network is unreachable (os error 101)"
        ));
        assert!(
            unreachable.starts_with("The runner has no route"),
            "{unreachable}"
        );
    }

    #[test]
    fn retry_timeout_alone_is_no_timeout() {
        let hint = hint_of(
            "Error performing GET http://127.0.0.1:9000/b/k in 1s, after 3 retries, \
             max_retries: 3, retry_timeout: 180s  - HTTP error: error sending request: \
             connection closed before message completed",
        );
        assert_eq!(hint, "(no hint)");
    }

    #[test]
    fn an_unanswered_metadata_service_means_no_credentials() {
        for text in [
            format!(
                "Error performing PUT http://169.254.169.254/latest/api/token {RETRIED}tcp \
                 connect error: deadline has elapsed"
            ),
            format!(
                "Error performing PUT http://127.0.0.1:9/latest/api/token {RETRIED}tcp \
                 connect error: Connection refused (os error 111)"
            ),
            format!(
                "Error performing GET http://169.254.169.254/latest/meta-data/iam/\
                 security-credentials/ {RETRIED}tcp connect error: Network is unreachable \
                 (os error 101)"
            ),
        ] {
            let hint = hint_of(&text);
            assert!(hint.starts_with("No credentials found"), "{hint}");
            assert!(hint.contains("access_key and secret_key"), "{hint}");
        }
        let azure = explain(
            &s3_error(&format!(
                "Error performing GET http://169.254.169.254/metadata/identity/oauth2/token\
                 ?api-version=2019-08-01 {RETRIED}tcp connect error: deadline has elapsed"
            )),
            Backend::Azure,
        )
        .1
        .unwrap();
        assert!(azure.starts_with("No Azure credentials found"), "{azure}");
    }

    #[test]
    fn the_dns_hint_mentions_path_style_only_for_s3() {
        let err = s3_error(&format!(
            "Error performing GET http://acct.blob.invalid/c/k {RETRIED}dns error: failed to \
             lookup address information: Name or service not known"
        ));
        let hint = explain(&err, Backend::Azure).1.unwrap();
        assert!(hint.contains("'acct.blob.invalid'"), "{hint}");
        assert!(!hint.contains("path_style"), "{hint}");
    }
}
