//! Reading a chunked entry: its index, then its chunks, many at a time,
//! each checked against its hash and handed to the extractor in order as
//! the tar stream it was cut from.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::anyhow;
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, GetResultPayload, ObjectMeta};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::buffers::Buffers;
use super::cache::ChunkCache;
use super::index::{Index, MAX_INDEX};
use super::{ChunkRef, chunk_id};
use crate::cancel::Cancel;
use crate::progress::{self, Progress};
use crate::storage::Store;
use crate::storage::transfer::{self, Download};

/// The most one request reads: a run of chunks that lie side by side in a
/// pack. 190 MB of chunks take ~95 requests.
const RUN_BYTES: u64 = 2 << 20;

/// Runs downloading at once: 16 MiB in flight, well above what a 1 Gbit/s
/// link with 20 ms round trips holds (2.5 MB).
const RUNS_IN_FLIGHT: usize = 8;

/// Runs received, in order, waiting for the extractor.
const QUEUED: usize = 2;

/// Why a chunk could not be had.
enum ChunkError {
    /// The entry is damaged: the chunk is missing, or is not what its name says.
    Damaged(String),
    /// The storage failed (network, permissions): the entry may be fine.
    Storage(anyhow::Error),
}

impl ChunkError {
    fn into_anyhow(self) -> anyhow::Error {
        match self {
            ChunkError::Damaged(why) => anyhow!("{why}; the entry is damaged"),
            ChunkError::Storage(e) => e,
        }
    }
}

/// Chunks read with one request, or one chunk from the runner's cache.
#[derive(Debug, PartialEq)]
enum Run {
    Cached(ChunkRef),
    Stored(Vec<ChunkRef>),
}

/// A chunk as stored (one zstd frame) and as checked (its tar bytes).
struct Fetched {
    stored: Bytes,
    data: Bytes,
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

/// Groups the chunks into requests: chunks side by side in one object, up
/// to `RUN_BYTES`, are read at once; chunks the cache holds are not read.
fn plan(chunks: &[ChunkRef], cached: impl Fn(&str) -> bool) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for chunk in chunks {
        if cached(&chunk.id) {
            runs.push(Run::Cached(chunk.clone()));
            continue;
        }
        if let Some(Run::Stored(run)) = runs.last_mut()
            && let (Some(first), Some(last)) = (run.first(), run.last())
            && last.pack.is_some()
            && last.pack == chunk.pack
            && last.range().end == chunk.offset
            && chunk.range().end - first.offset <= RUN_BYTES
        {
            run.push(chunk.clone());
            continue;
        }
        runs.push(Run::Stored(vec![chunk.clone()]));
    }
    runs
}

/// Starts downloading the chunks of `index`, in order, as a `Download` of
/// the tar stream. A chunk found in `cache` is not downloaded; the counters
/// returned count those, and the requests made.
pub fn download(
    store: Store,
    index: &Index,
    cache: Option<ChunkCache>,
    cancel: Cancel,
) -> (Download, Counters) {
    let counters = Counters::default();
    let failure = Arc::new(OnceLock::new());
    let damaged = Arc::new(AtomicBool::new(false));
    let progress = Progress::start(progress::Kind::Restore);
    progress.expect(index.chunks.iter().map(|c| c.stored).sum(), 0);
    // Runs wait here for the extractor while the next ones download.
    let (tx, rx) = mpsc::channel(QUEUED);
    let runs = plan(&index.chunks, |id| {
        cache.as_ref().is_some_and(|c| c.contains(id))
    });
    let (report, damage) = (Arc::clone(&failure), Arc::clone(&damaged));
    let reader = Reader {
        store,
        cache,
        progress: progress.clone(),
        counters: counters.clone(),
        buffers: Buffers::default(),
    };
    tokio::spawn(async move {
        let fetches = futures::stream::iter(runs)
            .map(|run| {
                let reader = reader.clone();
                AbortOnDropHandle::new(tokio::spawn(async move { reader.run(run).await }))
            })
            .buffered(RUNS_IN_FLIGHT)
            .map(|joined| {
                let fetched = joined.unwrap_or_else(|e| {
                    Err(ChunkError::Storage(anyhow!("a download task failed: {e}")))
                });
                fetched
                    .map(|chunks| chunks.into_iter().map(|c| c.data).collect())
                    .map_err(|e| match e {
                        ChunkError::Damaged(message) => {
                            damage.store(true, Ordering::SeqCst);
                            message
                        }
                        ChunkError::Storage(e) => format!("{e:#}"),
                    })
            });
        transfer::forward(fetches, tx, cancel, report).await;
    });
    (Download::streamed(rx, failure, damaged, progress), counters)
}

/// The stored frames of `index`'s chunks, in order, each checked against
/// its hash: what an export writes, frame after frame, as a `.tar.zst`.
pub fn frames(
    store: &Store,
    index: &Index,
) -> impl futures::Stream<Item = anyhow::Result<Vec<Bytes>>> + use<> {
    let reader = Reader {
        store: store.clone(),
        cache: None,
        progress: Progress::start(progress::Kind::Restore),
        counters: Counters::default(),
        buffers: Buffers::default(),
    };
    futures::stream::iter(plan(&index.chunks, |_| false))
        .map(move |run| {
            let reader = reader.clone();
            async move {
                let fetched = reader.run(run).await.map_err(ChunkError::into_anyhow)?;
                Ok(fetched.into_iter().map(|c| c.stored).collect())
            }
        })
        .buffered(RUNS_IN_FLIGHT)
}

/// What a restore of chunks counted.
#[derive(Clone, Default)]
pub struct Counters {
    /// Chunks taken from the runner's cache.
    pub cached: Arc<AtomicU64>,
    /// Requests to storage.
    pub requests: Arc<AtomicU64>,
}

/// What reading runs needs.
#[derive(Clone)]
struct Reader {
    store: Store,
    cache: Option<ChunkCache>,
    progress: Progress,
    counters: Counters,
    buffers: Buffers,
}

impl Reader {
    /// One run's chunks, checked: from the runner's cache if it has a good
    /// copy, else from storage (and then kept in the cache).
    async fn run(self, run: Run) -> Result<Vec<Fetched>, ChunkError> {
        let chunks = match run {
            Run::Stored(chunks) => chunks,
            Run::Cached(chunk) => match self.read_cached(&chunk).await {
                Some(fetched) => return Ok(vec![fetched]),
                None => vec![chunk],
            },
        };
        let fetched = self.read_stored(&chunks).await?;
        if let Some(cache) = &self.cache {
            for (chunk, fetched) in chunks.iter().zip(&fetched) {
                cache.put(&chunk.id, &fetched.stored).await;
            }
        }
        Ok(fetched)
    }

    async fn read_cached(&self, chunk: &ChunkRef) -> Option<Fetched> {
        let cache = self.cache.as_ref()?;
        let stored = Bytes::from(cache.get(&chunk.id).await?);
        match decode(vec![stored], vec![chunk.clone()], &self.buffers).await {
            Ok(mut fetched) => {
                self.counters.cached.fetch_add(1, Ordering::Relaxed);
                self.progress.add(chunk.stored);
                fetched.pop()
            }
            Err(_) => {
                cache.remove(&chunk.id).await;
                None
            }
        }
    }

    /// Reads chunks that lie side by side in one object with one request.
    async fn read_stored(&self, chunks: &[ChunkRef]) -> Result<Vec<Fetched>, ChunkError> {
        let (Some(first), Some(last)) = (chunks.first(), chunks.last()) else {
            return Ok(Vec::new());
        };
        let (store, path) = (&self.store, first.object());
        let range = first.offset..last.range().end;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let options = GetOptions {
            range: Some(range.clone().into()),
            ..GetOptions::default()
        };
        let body = match store.inner().get_opts(&path, options).await {
            Ok(result) => read_body(result, &self.buffers)
                .await
                .map_err(|e| ChunkError::Storage(store.error("read of", &path, e)))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ChunkError::Damaged(format!(
                    "'{}', which holds chunk '{}', is missing from storage (deleted by hand, or \
                     by a flush that did not follow the protocol)",
                    store.full(&path),
                    first.id
                )));
            }
            Err(e) => return Err(self.short_or(&path, range.end, e).await),
        };
        self.progress.add(body.len() as u64);
        if body.len() as u64 != range.end - range.start {
            return Err(ChunkError::Damaged(format!(
                "'{}' holds {} bytes at {}, and the index says {}",
                store.full(&path),
                body.len(),
                range.start,
                range.end - range.start
            )));
        }
        let slices = chunks
            .iter()
            .map(|c| {
                body.slice(
                    (c.offset - range.start) as usize..(c.range().end - range.start) as usize,
                )
            })
            .collect();
        decode(slices, chunks.to_vec(), &self.buffers)
            .await
            .map_err(|why| ChunkError::Damaged(format!("'{}': {why}", store.full(&path))))
    }

    /// A read that failed: the object is damaged if it is shorter than the
    /// index says (some servers refuse a range past the end outright);
    /// otherwise the storage failed.
    async fn short_or(&self, path: &Path, end: u64, e: object_store::Error) -> ChunkError {
        let store = &self.store;
        match store.head(path).await {
            Ok(Some(meta)) if meta.size < end => ChunkError::Damaged(format!(
                "'{}' holds {} bytes, and the index names bytes up to {end}",
                store.full(path),
                meta.size
            )),
            _ => ChunkError::Storage(store.error("read of", path, e)),
        }
    }
}

/// A chunk's stored bytes: a local file is read into a reused buffer,
/// anything else as the body arrives.
async fn read_body(result: GetResult, buffers: &Buffers) -> object_store::Result<Bytes> {
    let size = (result.range.end - result.range.start) as usize;
    match result.payload {
        GetResultPayload::File(mut file, path) => {
            let buffers = buffers.clone();
            let range = result.range;
            let read = tokio::task::spawn_blocking(move || {
                use std::io::{Read, Seek};
                let mut buffer = buffers.take(size);
                file.seek(io::SeekFrom::Start(range.start))?;
                file.take(range.end - range.start)
                    .read_to_end(&mut buffer)
                    .map(|_| buffers.share(buffer))
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

/// Decompresses chunks (each never past its declared size) into reused
/// buffers and checks each is what its name says.
async fn decode(
    stored: Vec<Bytes>,
    chunks: Vec<ChunkRef>,
    buffers: &Buffers,
) -> Result<Vec<Fetched>, String> {
    let buffers = buffers.clone();
    // As many decoding at once as there are cores: more threads only
    // take turns, and the extractor needs a core too.
    let _permit = decoders().acquire().await;
    tokio::task::spawn_blocking(move || {
        let mut fetched = Vec::with_capacity(chunks.len());
        for (stored, chunk) in stored.into_iter().zip(chunks) {
            let size = chunk.size as usize;
            let mut data = buffers.take(size);
            decompress(&stored, &mut data)
                .map_err(|e| format!("chunk '{}' does not decompress ({e})", chunk.id))?;
            if data.len() != size {
                return Err(format!(
                    "chunk '{}' holds {} bytes, and the index says {size}",
                    chunk.id,
                    data.len()
                ));
            }
            if chunk_id(&data) != chunk.id {
                return Err(format!("chunk '{}' does not match its hash", chunk.id));
            }
            let data = buffers.share(data);
            fetched.push(Fetched { stored, data });
        }
        Ok(fetched)
    })
    .await
    .map_err(|e| format!("chunks could not be checked: {e}"))?
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
