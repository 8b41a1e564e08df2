//! Reading a chunked entry: its index, then its chunks, many at a time,
//! each checked against its hash and handed to the extractor in order as
//! the tar stream it was cut from.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::anyhow;
use bytes::Bytes;
use futures::StreamExt;
use object_store::{GetOptions, GetResult, GetResultPayload, ObjectMeta, ObjectStoreExt};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::buffers::Buffers;
use super::cache::ChunkCache;
use super::index::{Index, MAX_INDEX};
use super::{ChunkRef, chunk_id, chunk_path};
use crate::cancel::Cancel;
use crate::progress::{self, Progress};
use crate::storage::Store;
use crate::storage::transfer::{self, Download};

/// Chunk downloads in flight. A 256 KiB chunk is about 120 KB stored, and
/// a link of 1 Gbit/s with 20 ms round trips holds 2.5 MB in flight. Over
/// such a link (scripts/bench-link.sh) 64 restored the 600 MB benchmark
/// corpus in 2.43 s against 2.80 s with 32, at a peak RSS of 120 MiB from S3.
const IN_FLIGHT: usize = 64;

/// Chunks received, in order, waiting for the extractor.
const QUEUED: usize = 8;

/// Why a chunk could not be had.
enum ChunkError {
    /// The entry is damaged: the chunk is missing, or is not what its name says.
    Damaged(String),
    /// The storage failed (network, permissions): the entry may be fine.
    Storage(anyhow::Error),
}

/// The index of the chunked entry `meta`: `Ok(Err(why))` when the object
/// is there but is no index this larder can read (a damaged entry).
pub async fn read_index(store: &Store, meta: &ObjectMeta) -> anyhow::Result<Result<Index, String>> {
    if meta.size > MAX_INDEX {
        return Ok(Err(format!(
            "the index is {} bytes, more than any index larder writes",
            meta.size
        )));
    }
    let options = GetOptions {
        if_match: meta.e_tag.clone(),
        ..GetOptions::default()
    };
    let bytes = store
        .inner()
        .get_opts(&meta.location, options)
        .await
        .map_err(|e| store.error("read of", &meta.location, e))?
        .bytes()
        .await
        .map_err(|e| store.error("read of", &meta.location, e))?;
    Ok(Index::parse(&bytes))
}

/// Starts downloading the chunks of `index`, in order, as a `Download` of
/// the tar stream. A chunk found in `cache` is not downloaded; the counter
/// returned counts those.
pub fn download(
    store: Store,
    index: &Index,
    cache: Option<ChunkCache>,
    cancel: Cancel,
) -> (Download, Arc<AtomicU64>) {
    let cached = Arc::new(AtomicU64::new(0));
    let failure = Arc::new(OnceLock::new());
    let damaged = Arc::new(AtomicBool::new(false));
    let progress = Progress::start(progress::Kind::Restore);
    progress.expect(index.chunks.iter().map(|c| c.stored).sum(), 0);
    // Chunks wait here for the extractor while the next ones download.
    let (tx, rx) = mpsc::channel(QUEUED);
    let chunks = index.chunks.clone();
    let (report, damage, received) = (Arc::clone(&failure), Arc::clone(&damaged), progress.clone());
    let hits = Arc::clone(&cached);
    let buffers = Buffers::default();
    tokio::spawn(async move {
        let fetches = futures::stream::iter(chunks)
            .map(|chunk| {
                let fetched = fetch(
                    store.clone(),
                    cache.clone(),
                    chunk,
                    received.clone(),
                    Arc::clone(&hits),
                    buffers.clone(),
                );
                AbortOnDropHandle::new(tokio::spawn(fetched))
            })
            .buffered(IN_FLIGHT)
            .map(|joined| {
                let fetched = joined.unwrap_or_else(|e| {
                    Err(ChunkError::Storage(anyhow!("a download task failed: {e}")))
                });
                fetched.map(|bytes| vec![bytes]).map_err(|e| match e {
                    ChunkError::Damaged(message) => {
                        damage.store(true, Ordering::SeqCst);
                        message
                    }
                    ChunkError::Storage(e) => format!("{e:#}"),
                })
            });
        transfer::forward(fetches, tx, cancel, report).await;
    });
    (Download::streamed(rx, failure, damaged, progress), cached)
}

/// One chunk's bytes, checked: from the runner's cache if it has a good
/// copy, else from storage (and then kept in the cache).
async fn fetch(
    store: Store,
    cache: Option<ChunkCache>,
    chunk: ChunkRef,
    progress: Progress,
    hits: Arc<AtomicU64>,
    buffers: Buffers,
) -> Result<Bytes, ChunkError> {
    if let Some(cache) = &cache
        && let Some(stored) = cache.get(&chunk.id).await
    {
        match decode(Bytes::from(stored), &chunk, &buffers).await {
            Ok(data) => {
                hits.fetch_add(1, Ordering::Relaxed);
                progress.add(chunk.stored);
                return Ok(data);
            }
            Err(_) => cache.remove(&chunk.id).await,
        }
    }
    let path = chunk_path(&chunk.id);
    let stored = match store.inner().get(&path).await {
        Ok(result) => read_body(result, &buffers)
            .await
            .map_err(|e| ChunkError::Storage(store.error("read of", &path, e)))?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(ChunkError::Damaged(format!(
                "chunk '{}' is missing from storage (deleted by hand, or by a flush that \
                 did not follow the protocol)",
                store.full(&path)
            )));
        }
        Err(e) => return Err(ChunkError::Storage(store.error("read of", &path, e))),
    };
    progress.add(stored.len() as u64);
    let data = decode(stored.clone(), &chunk, &buffers)
        .await
        .map_err(|why| ChunkError::Damaged(format!("chunk '{}' {why}", store.full(&path))))?;
    if let Some(cache) = &cache {
        cache.put(&chunk.id, &stored).await;
    }
    Ok(data)
}

/// A chunk's stored bytes (one zstd frame), checked against its hash: what
/// an export writes, frame after frame, as a `.tar.zst`.
pub async fn stored_chunk(
    store: &Store,
    chunk: &ChunkRef,
    buffers: &Buffers,
) -> anyhow::Result<Bytes> {
    let path = chunk_path(&chunk.id);
    let stored = match store.inner().get(&path).await {
        Ok(result) => read_body(result, buffers)
            .await
            .map_err(|e| store.error("read of", &path, e))?,
        Err(e) => return Err(store.error("read of", &path, e)),
    };
    decode(stored.clone(), chunk, buffers)
        .await
        .map_err(|why| anyhow!("chunk '{}' {why}; the entry is damaged", store.full(&path)))?;
    Ok(stored)
}

/// A chunk's stored bytes: a local file is read into a reused buffer,
/// anything else as the body arrives.
async fn read_body(result: GetResult, buffers: &Buffers) -> object_store::Result<Bytes> {
    let size = result.meta.size as usize;
    match result.payload {
        GetResultPayload::File(mut file, path) => {
            let buffers = buffers.clone();
            let read = tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut buffer = buffers.take(size);
                file.read_to_end(&mut buffer).map(|_| buffers.share(buffer))
            })
            .await;
            match read {
                Ok(Ok(bytes)) => Ok(bytes),
                Ok(Err(e)) => Err(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: format!("cannot read {}: {e}", path.display()).into(),
                }),
                Err(e) => Err(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                }),
            }
        }
        _ => result.bytes().await,
    }
}

/// Decompresses a chunk (never past its declared size) into a reused
/// buffer and checks it is what its name says.
async fn decode(stored: Bytes, chunk: &ChunkRef, buffers: &Buffers) -> Result<Bytes, String> {
    let (size, id, buffers) = (chunk.size as usize, chunk.id.clone(), buffers.clone());
    // As many decoding at once as there are cores: more threads only
    // take turns, and the extractor needs a core too.
    let _permit = decoders().acquire().await;
    tokio::task::spawn_blocking(move || {
        let mut data = buffers.take(size);
        decompress(&stored, &mut data).map_err(|e| format!("does not decompress ({e})"))?;
        if data.len() != size {
            return Err(format!(
                "holds {} bytes, and the index says {size}",
                data.len()
            ));
        }
        if chunk_id(&data) != id {
            return Err("does not match its hash".to_string());
        }
        Ok(buffers.share(data))
    })
    .await
    .map_err(|e| format!("could not be checked: {e}"))?
}

fn decoders() -> &'static tokio::sync::Semaphore {
    static DECODERS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    DECODERS.get_or_init(|| tokio::sync::Semaphore::new(crate::pool::threads()))
}

/// One zstd frame into `out` (whose capacity bounds it); each thread keeps
/// its decompressor.
fn decompress(stored: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    use std::cell::RefCell;
    thread_local! {
        static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { RefCell::new(None) };
    }
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(decompressor) => decompressor.decompress_to_buffer(stored, out).map(drop),
            None => Err(io::Error::other("no decompressor")),
        }
    })
}
