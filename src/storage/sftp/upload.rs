//! Multipart uploads over SFTP: parts are written at their offsets into one
//! hidden temporary file, which `complete` renames into place.

use std::io::SeekFrom;
use std::sync::Arc;

use async_trait::async_trait;
use object_store::path::Path;
use object_store::{MultipartUpload, PutMode, PutPayload, PutResult, UploadPart};
use russh_sftp::client::fs::File;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;

use super::{SftpStore, io_error};

pub struct SftpUpload {
    store: Arc<SftpStore>,
    location: Path,
    temp: String,
    /// `None` once completed or aborted.
    file: Arc<Mutex<Option<File>>>,
    /// Where the next part starts: parts arrive in order, with their sizes.
    next_offset: u64,
}

impl std::fmt::Debug for SftpUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SftpUpload({})", self.temp)
    }
}

impl SftpUpload {
    pub fn new(store: Arc<SftpStore>, location: Path, temp: String, file: File) -> Self {
        SftpUpload {
            store,
            location,
            temp,
            file: Arc::new(Mutex::new(Some(file))),
            next_offset: 0,
        }
    }

    async fn close(&self) -> object_store::Result<()> {
        let Some(file) = self.file.lock().await.take() else {
            return Ok(());
        };
        let closing = async {
            file.sync_all().await?;
            file.close().await.map_err(io_error)
        };
        self.store.run(&self.location, closing).await
    }
}

#[async_trait]
impl MultipartUpload for SftpUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let offset = self.next_offset;
        self.next_offset += data.content_length() as u64;
        let file = Arc::clone(&self.file);
        let store = Arc::clone(&self.store);
        let location = self.location.clone();
        Box::pin(async move {
            let mut guard = file.lock().await;
            let Some(file) = guard.as_mut() else {
                return Err(object_store::Error::Generic {
                    store: "SFTP",
                    source: "the upload was already finished".into(),
                });
            };
            let write = async {
                file.seek(SeekFrom::Start(offset)).await.map_err(io_error)?;
                for chunk in data.iter() {
                    file.write_all(chunk).await.map_err(io_error)?;
                }
                file.flush().await.map_err(io_error)
            };
            store.run(&location, write).await
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.close().await?;
        self.store
            .publish(&self.location, &self.temp, &PutMode::Overwrite)
            .await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let closed = self.close().await;
        let removed = self
            .store
            .run(
                &self.location,
                self.store.sftp().remove_file(self.temp.clone()),
            )
            .await;
        closed.and(removed)
    }
}
