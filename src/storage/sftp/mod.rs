//! `backend: sftp`: an SFTP server, as an `object_store::ObjectStore`, so it
//! gets the same entries, claims and transfers as every other backend.
//!
//! Objects are files under the cache root. Writes go to a hidden temporary
//! file that is renamed into place, so a reader never sees a partial entry.
//! SFTP's rename fails when the target exists (OpenSSH links, then unlinks),
//! which gives `PutMode::Create` its first-writer-wins meaning. Overwrites
//! remove the target first: for a moment the object is absent, never torn.

mod session;
mod upload;

use std::fmt;
use std::io::SeekFrom;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{OpenFlags, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{Opened, Scratch};
use crate::secret::Secret;
use session::Connection;

pub use session::verify as verify_host_key;

#[derive(Clone, Debug)]
pub struct SftpOptions {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub auth: SftpAuth,
    pub host_key: HostKeyCheck,
    /// Directory holding the entries; relative to the login directory, "" for it.
    pub root: String,
}

#[derive(Clone, Debug)]
pub enum SftpAuth {
    Password(Secret),
    Key {
        key: Secret,
        passphrase: Option<Secret>,
        /// Where the key came from, for messages: "key file /x", "sftp_private_key".
        origin: String,
    },
}

#[derive(Clone, Debug)]
pub enum HostKeyCheck {
    /// known_hosts lines, and where they came from.
    KnownHosts { lines: String, origin: String },
    /// `SHA256:...`
    Fingerprint(String),
    /// Explicitly disabled by the user.
    Insecure,
}

/// Suffix of temporary upload files; listings skip them.
const TEMP_SUFFIX: &str = ".larder-tmp";
/// Size of one read from the server when streaming a download.
const READ_CHUNK: usize = 256 * 1024;

pub async fn open(options: &SftpOptions, timeout: Duration) -> anyhow::Result<Opened> {
    let connection = session::connect(options, timeout).await?;
    let target = format!("{}@{}:{}", options.username, options.host, options.port);
    let root = resolve_root(&connection.sftp, &options.root, timeout)
        .await
        .map_err(|e| root_error(e, options, &target))?;
    let location = format!("sftp://{target}{root}");
    let store = SftpStore {
        connection: Arc::new(connection),
        root,
        location: location.clone(),
        timeout,
    };
    let store = Arc::new(store);
    Ok(Opened {
        store: Arc::clone(&store) as Arc<dyn ObjectStore>,
        location,
        scratch: Scratch::Sftp(store),
    })
}

/// Creates the cache root if needed and returns its absolute path.
async fn resolve_root(
    sftp: &SftpSession,
    root: &str,
    timeout: Duration,
) -> Result<String, SftpError> {
    let root = if root.is_empty() { "." } else { root };
    bounded(timeout, make_dirs(sftp, root)).await?;
    let absolute = bounded(timeout, sftp.canonicalize(root)).await?;
    Ok(absolute.trim_end_matches('/').to_string())
}

/// Why sftp_cache_root cannot be used, and what to change.
fn root_error(e: SftpError, options: &SftpOptions, target: &str) -> anyhow::Error {
    let why = match e {
        SftpError::Status(status) if status.status_code == StatusCode::PermissionDenied => format!(
            "the server refused to create or open it (permission denied). The user '{}' may \
             not write there: set sftp_cache_root to a folder that user owns (a relative path \
             is under its home), or give it the folder on the server",
            options.username
        ),
        other => other.to_string(),
    };
    anyhow::anyhow!(
        "sftp: cannot use sftp_cache_root '{}' on {target}: {why}",
        options.root
    )
}

async fn bounded<T>(
    timeout: Duration,
    future: impl Future<Output = Result<T, SftpError>>,
) -> Result<T, SftpError> {
    tokio::time::timeout(timeout, future)
        .await
        .unwrap_or(Err(SftpError::Timeout))
}

/// `mkdir -p`: creates each missing directory of `path`.
async fn make_dirs(sftp: &SftpSession, path: &str) -> Result<(), SftpError> {
    let mut prefix = String::new();
    if path.starts_with('/') {
        prefix.push('/');
    }
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        prefix.push_str(part);
        if let Err(e) = sftp.create_dir(prefix.clone()).await {
            match sftp.metadata(prefix.clone()).await {
                Ok(meta) if meta.is_dir() => {}
                _ => return Err(e),
            }
        }
        prefix.push('/');
    }
    Ok(())
}

pub struct SftpStore {
    connection: Arc<Connection>,
    /// Absolute path of the cache root on the server.
    root: String,
    location: String,
    timeout: Duration,
}

impl fmt::Debug for SftpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SftpStore({})", self.location)
    }
}

impl fmt::Display for SftpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SFTP({})", self.location)
    }
}

impl SftpStore {
    fn sftp(&self) -> &SftpSession {
        &self.connection.sftp
    }

    fn full(&self, location: &Path) -> String {
        format!("{}/{location}", self.root)
    }

    /// Runs one server operation within the operation timeout.
    async fn run<T>(
        &self,
        location: &Path,
        future: impl Future<Output = Result<T, SftpError>>,
    ) -> object_store::Result<T> {
        bounded(self.timeout, future)
            .await
            .map_err(|e| to_object_store(location, e, self.timeout))
    }

    async fn stat(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        let attrs = self
            .run(location, self.sftp().metadata(self.full(location)))
            .await?;
        if attrs.is_dir() {
            return Err(object_store::Error::NotFound {
                path: location.to_string(),
                source: "it is a directory".into(),
            });
        }
        Ok(meta(
            location.clone(),
            attrs.size.unwrap_or(0),
            attrs.mtime.unwrap_or(0),
        ))
    }

    /// Writes `payload` to a new temporary file next to `location`.
    async fn write_temp(
        &self,
        location: &Path,
        payload: PutPayload,
    ) -> object_store::Result<String> {
        let full = self.full(location);
        let temp = temp_name(&full);
        self.run(location, make_dirs(self.sftp(), parent(&full)))
            .await?;
        let written = async {
            let mut file = self
                .sftp()
                .open_with_flags(
                    temp.clone(),
                    OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
                )
                .await?;
            for chunk in payload.iter() {
                file.write_all(chunk).await.map_err(io_error)?;
            }
            file.sync_all().await?;
            file.close().await.map_err(io_error)
        };
        self.run(location, written).await?;
        Ok(temp)
    }

    /// Moves a finished temporary file into place.
    async fn publish(
        &self,
        location: &Path,
        temp: &str,
        mode: &PutMode,
    ) -> object_store::Result<PutResult> {
        let full = self.full(location);
        if matches!(mode, PutMode::Overwrite) {
            match self
                .run(location, self.sftp().remove_file(full.clone()))
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Err(e) = self
            .run(location, self.sftp().rename(temp.to_string(), full.clone()))
            .await
        {
            let _ = self.sftp().remove_file(temp.to_string()).await;
            // A failed rename onto an existing file is SFTP saying "already exists".
            if matches!(mode, PutMode::Create) && self.stat(location).await.is_ok() {
                return Err(object_store::Error::AlreadyExists {
                    path: location.to_string(),
                    source: "another writer created it first".into(),
                });
            }
            return Err(e);
        }
        let meta = self.stat(location).await?;
        Ok(PutResult {
            e_tag: meta.e_tag,
            version: None,
            extensions: Default::default(),
        })
    }

    /// Removes the temporary upload files in `dir` (relative to the root)
    /// of the objects `wanted` accepts that nobody has written for
    /// `older_than`: leftovers of killed rebuilds, which listings hide.
    pub async fn remove_temporaries(
        &self,
        dir: &str,
        wanted: impl Fn(&str) -> bool,
        older_than: Duration,
    ) -> object_store::Result<Vec<String>> {
        let location = Path::from(dir);
        let full = self.full(&location);
        let entries = match self
            .run(&location, self.sftp().read_dir(full.clone()))
            .await
        {
            Ok(entries) => entries,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let now = Utc::now().timestamp();
        let mut removed = Vec::new();
        for entry in entries {
            let name = entry.file_name();
            let Some(object) = temp_object(&name) else {
                continue;
            };
            let mtime = i64::from(entry.metadata().mtime.unwrap_or(0));
            let idle = u64::try_from(now - mtime).unwrap_or(0);
            if !wanted(object) || idle < older_than.as_secs() {
                continue;
            }
            let remove = self.sftp().remove_file(format!("{full}/{name}"));
            if self.run(&location, remove).await.is_ok() {
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// Every object below `dir` (a path relative to the root, "" for all).
    async fn walk(&self, dir: &str) -> object_store::Result<Vec<ObjectMeta>> {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_string()];
        while let Some(dir) = pending.pop() {
            let (files, dirs) = self.read_dir(&dir).await?;
            found.extend(files);
            pending.extend(dirs);
        }
        Ok(found)
    }

    /// One directory: its objects, and its subdirectories (relative to the root).
    /// `dir` and the names returned are object paths as object_store
    /// encodes them (a `/` inside a part is `%2F`), which is also how they
    /// are named on the server.
    async fn read_dir(&self, dir: &str) -> object_store::Result<(Vec<ObjectMeta>, Vec<String>)> {
        let location = Path::parse(dir).unwrap_or_else(|_| Path::from(dir));
        let full = if dir.is_empty() {
            self.root.clone()
        } else {
            self.full(&location)
        };
        let entries = match self.run(&location, self.sftp().read_dir(full)).await {
            Ok(entries) => entries,
            Err(object_store::Error::NotFound { .. }) => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(e),
        };
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for entry in entries {
            let name = entry.file_name();
            if name == "." || name == ".." || name.ends_with(TEMP_SUFFIX) {
                continue;
            }
            let rel = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            // A name object_store could not have written is no object.
            let Ok(path) = Path::parse(&rel) else {
                continue;
            };
            let attrs = entry.metadata();
            if attrs.is_dir() {
                dirs.push(rel);
            } else if attrs.is_regular() {
                files.push(meta(
                    path,
                    attrs.size.unwrap_or(0),
                    attrs.mtime.unwrap_or(0),
                ));
            }
        }
        // In name order, as object stores list (the server's order is its own).
        files.sort_by(|a, b| a.location.cmp(&b.location));
        dirs.sort();
        Ok((files, dirs))
    }
}

#[async_trait]
impl ObjectStore for SftpStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if matches!(opts.mode, PutMode::Update(_)) {
            return Err(object_store::Error::NotImplemented {
                operation: "put with PutMode::Update".into(),
                implementer: self.to_string(),
            });
        }
        let temp = self.write_temp(location, payload).await?;
        self.publish(location, &temp, &opts.mode).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let full = self.full(location);
        let temp = temp_name(&full);
        self.run(location, make_dirs(self.sftp(), parent(&full)))
            .await?;
        let file = self
            .run(
                location,
                self.sftp().open_with_flags(
                    temp.clone(),
                    OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
                ),
            )
            .await?;
        Ok(Box::new(upload::SftpUpload::new(
            self.clone_handle(),
            location.clone(),
            temp,
            file,
        )))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let meta = self.stat(location).await?;
        options.check_preconditions(&meta)?;
        let range = match &options.range {
            Some(range) => range
                .as_range(meta.size)
                .map_err(|e| object_store::Error::Generic {
                    store: "SFTP",
                    source: Box::new(e),
                })?,
            None => 0..meta.size,
        };
        let payload = if options.head || range.is_empty() {
            stream::empty().boxed()
        } else {
            let mut file = self
                .run(location, self.sftp().open(self.full(location)))
                .await?;
            file.seek(SeekFrom::Start(range.start))
                .await
                .map_err(|e| to_object_store(location, io_error(e), self.timeout))?;
            read_stream(
                file,
                range.end - range.start,
                location.clone(),
                self.timeout,
            )
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta,
            range,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let store = self.clone_handle();
        locations
            .then(move |location| {
                let store = store.clone();
                async move {
                    let location = location?;
                    store
                        .run(&location, store.sftp().remove_file(store.full(&location)))
                        .await?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let store = self.clone_handle();
        let prefix = prefix.map(|p| p.to_string()).unwrap_or_default();
        stream::once(async move { store.walk(&prefix).await })
            .flat_map(|result| match result {
                Ok(all) => stream::iter(all.into_iter().map(Ok)).boxed(),
                Err(e) => stream::once(async { Err(e) }).boxed(),
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let prefix = prefix.map(|p| p.to_string()).unwrap_or_default();
        let (objects, dirs) = self.read_dir(&prefix).await?;
        Ok(ListResult {
            common_prefixes: dirs.iter().filter_map(|d| Path::parse(d).ok()).collect(),
            objects,
            extensions: Default::default(),
        })
    }

    /// SFTP has no server-side copy in its base protocol: the object is
    /// read and written again, published as any put is (a rename).
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let data = self
            .get_opts(from, GetOptions::default())
            .await?
            .bytes()
            .await?;
        let mode = match options.mode {
            CopyMode::Create => PutMode::Create,
            CopyMode::Overwrite => PutMode::Overwrite,
        };
        self.put_opts(to, PutPayload::from(data), mode.into())
            .await
            .map(drop)
    }
}

impl SftpStore {
    /// Another handle on the same connection, for futures that outlive `&self`.
    fn clone_handle(&self) -> Arc<SftpStore> {
        Arc::new(SftpStore {
            connection: Arc::clone(&self.connection),
            root: self.root.clone(),
            location: self.location.clone(),
            timeout: self.timeout,
        })
    }
}

/// Streams `len` bytes from an open file, one bounded read at a time.
fn read_stream(
    file: russh_sftp::client::fs::File,
    len: u64,
    location: Path,
    timeout: Duration,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    stream::try_unfold((file, len), move |(mut file, remaining)| {
        let location = location.clone();
        async move {
            if remaining == 0 {
                return Ok(None);
            }
            let want = remaining.min(READ_CHUNK as u64) as usize;
            let mut buf = vec![0u8; want];
            let read = tokio::time::timeout(timeout, file.read_exact(&mut buf)).await;
            match read {
                Ok(Ok(_)) => Ok(Some((Bytes::from(buf), (file, remaining - want as u64)))),
                Ok(Err(e)) => Err(to_object_store(&location, io_error(e), timeout)),
                Err(_) => Err(to_object_store(&location, SftpError::Timeout, timeout)),
            }
        }
    })
    .boxed()
}

fn meta(location: Path, size: u64, mtime: u32) -> ObjectMeta {
    ObjectMeta {
        location,
        last_modified: DateTime::<Utc>::from_timestamp(i64::from(mtime), 0).unwrap_or_default(),
        size,
        // Size and mtime identify a version well enough to pin ranged reads.
        e_tag: Some(format!("{size:x}-{mtime:x}")),
        version: None,
    }
}

fn temp_name(full: &str) -> String {
    let (dir, name) = full.rsplit_once('/').unwrap_or(("", full));
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{dir}/.{name}.{}{TEMP_SUFFIX}", &id[..12])
}

/// The object a temporary file (`.<name>.<id>.larder-tmp`) was for.
fn temp_object(file_name: &str) -> Option<&str> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
    inner.rsplit_once('.').map(|(object, _id)| object)
}

fn parent(full: &str) -> &str {
    full.rsplit_once('/').map_or(".", |(dir, _)| dir)
}

fn io_error(e: std::io::Error) -> SftpError {
    SftpError::IO(e.to_string())
}

fn to_object_store(location: &Path, e: SftpError, timeout: Duration) -> object_store::Error {
    let path = location.to_string();
    match e {
        SftpError::Status(status) if status.status_code == StatusCode::NoSuchFile => {
            object_store::Error::NotFound {
                path,
                source: status.error_message.into(),
            }
        }
        SftpError::Status(status) if status.status_code == StatusCode::PermissionDenied => {
            object_store::Error::PermissionDenied {
                path,
                source: format!(
                    "permission denied on the server ({}); check the cache root's permissions",
                    status.error_message
                )
                .into(),
            }
        }
        SftpError::Timeout => object_store::Error::Generic {
            store: "SFTP",
            source: format!(
                "the server did not answer within backend_operation_timeout ({}s)",
                timeout.as_secs()
            )
            .into(),
        },
        other => object_store::Error::Generic {
            store: "SFTP",
            source: Box::new(other),
        },
    }
}
