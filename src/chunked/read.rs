//! Reading a chunked entry: its index, then its chunks, many at a time,
//! each checked against its hash and handed to the extractor in order as
//! the tar stream it was cut from.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::anyhow;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetResult, GetResultPayload, ObjectMeta};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::buffers::Buffers;
use super::cache::ChunkCache;
use super::index::{Index, MAX_INDEX};
use super::{ChunkRef, chunk_id, frame_hash};
use crate::cancel::Cancel;
use crate::progress::{self, Progress};
use crate::storage::Store;
use crate::storage::transfer::{self, Download, Head, Turn};

/// The most one request reads: a run of chunks that lie side by side in a
/// pack (runs end at pack boundaries: 197 MB of chunks take 129 requests).
const RUN_BYTES: u64 = 2 << 20;

/// Runs downloading at once: 16 MiB in flight, well above what a 1 Gbit/s
/// link with 20 ms round trips holds (2.5 MB).
const RUNS_IN_FLIGHT: usize = 8;

/// Runs read or being read ahead of the one the extractor needs next:
/// twice those in flight. Runs share the link, so they finish out of
/// order; when this window was the runs in flight, a slow first run held
/// the finished ones behind it and no new request went out (a traced
/// restore over a 20 ms link had 4-6 in flight, not 8, with gaps of
/// 50-80 ms where none left). A finished run waits as stored bytes.
pub(crate) const RUNS_AHEAD: usize = 2 * RUNS_IN_FLIGHT;

/// Decompressed bytes checked and handed to the extractor at once. A run
/// decompresses to ~7 MiB; checked in batches, few chunks wait
/// decompressed (a restore's peak RSS went from 110-119 to 68-76 MiB).
const CHECKED_BATCH: u64 = 1 << 20;

/// Chunks read from the runner's cache as one run.
const CACHED_RUN: usize = 8;

/// Runs received, in order, waiting for the extractor.
const QUEUED: usize = 1;

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

    fn into_message(self, damaged: &AtomicBool) -> String {
        match self {
            ChunkError::Damaged(message) => {
                damaged.store(true, Ordering::SeqCst);
                message
            }
            ChunkError::Storage(e) => format!("{e:#}"),
        }
    }
}

/// Chunks read with one request, or chunks read from the runner's cache.
#[derive(Debug, PartialEq)]
enum Run {
    Cached(Vec<ChunkRef>),
    Stored(Vec<ChunkRef>),
}

/// A chunk as read, not yet checked: its stored bytes (one zstd frame),
/// or its own bytes from the runner's cache, which keeps them uncompressed.
struct Frame {
    chunk: ChunkRef,
    stored: Bytes,
    /// Read from the runner's cache: a bad copy there is not damage.
    cached: bool,
}

/// A chunk as read (for an export, which reads no cache: its frame) and
/// as checked (its tar bytes).
struct Fetched {
    stored: Bytes,
    data: Bytes,
}

/// The index of the chunked entry `meta`: `Ok(Err(why))` when the object
/// is there but is no index this larder can read (a damaged entry).
pub async fn read_index(store: &Store, meta: &ObjectMeta) -> anyhow::Result<Result<Index, String>> {
    read_index_after(store, meta, Head::none()).await
}

/// Like `read_index`, where the lookup asked for the index's first bytes,
/// `head`, already: only the rest, if any, is read.
pub async fn read_index_after(
    store: &Store,
    meta: &ObjectMeta,
    head: Head,
) -> anyhow::Result<Result<Index, String>> {
    let head = head
        .bytes()
        .await
        .map_err(|e| store.error("read of", &meta.location, e))?;
    if meta.size > MAX_INDEX {
        return Ok(Err(format!(
            "the index is {} bytes, more than any index larder writes",
            meta.size
        )));
    }
    if head.len() as u64 == meta.size {
        return Ok(Index::parse(&head));
    }
    let options = GetOptions {
        if_match: meta.e_tag.clone(),
        range: (!head.is_empty()).then(|| (head.len() as u64..meta.size).into()),
        ..GetOptions::default()
    };
    let rest = store
        .inner()
        .get_opts(&meta.location, options)
        .await
        .map_err(|e| store.error("read of", &meta.location, e))?
        .bytes()
        .await
        .map_err(|e| store.error("read of", &meta.location, e))?;
    if head.is_empty() {
        return Ok(Index::parse(&rest));
    }
    Ok(Index::parse(&[head, rest].concat()))
}

/// Groups the chunks into runs: chunks side by side in one object, up to
/// `RUN_BYTES`, are read with one request; chunks the cache holds are read
/// from there, a few at a time.
///
/// The first runs are smaller, so the extractor starts sooner, and so are
/// the last, as an archive's last ranges are (`transfer::taper`): runs in
/// flight share the link and the last few arrive nearly together, and a
/// restore over a 20 ms, 1 Gbit/s link spent ~30 ms after its last byte
/// decoding and unpacking its last run of 2 MiB (~7 MiB of tar). Tapered,
/// the time from the last byte to the end went from 53-101 ms to 34-62 ms
/// (9 traced restores each), for 129 requests instead of 122.
fn plan(chunks: &[ChunkRef], cached: impl Fn(&str) -> bool) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    // Stored bytes from the next chunk to the end, and from the last run's
    // first chunk.
    let mut left: u64 = chunks.iter().map(|c| c.stored).sum();
    let mut run_left = left;
    for chunk in chunks {
        let in_cache = cached(&chunk.id);
        // The limit of the last run, the one this chunk may join.
        let limit = transfer::ramp(runs.len().saturating_sub(1) as u32, RUN_BYTES)
            .min(transfer::taper(run_left));
        let from_here = left;
        left -= chunk.stored;
        match runs.last_mut() {
            Some(Run::Cached(run)) if in_cache && run.len() < CACHED_RUN => {
                run.push(chunk.clone());
                continue;
            }
            Some(Run::Stored(run)) if !in_cache && adjoins(run, chunk, limit) => {
                run.push(chunk.clone());
                continue;
            }
            _ => {}
        }
        run_left = from_here;
        runs.push(match in_cache {
            true => Run::Cached(vec![chunk.clone()]),
            false => Run::Stored(vec![chunk.clone()]),
        });
    }
    runs
}

/// Whether `chunk` follows `run` in the same pack, within `limit` bytes.
fn adjoins(run: &[ChunkRef], chunk: &ChunkRef, limit: u64) -> bool {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return false;
    };
    last.pack.is_some()
        && last.pack == chunk.pack
        && last.range().end == chunk.offset
        && chunk.range().end - first.offset <= limit
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
    let reader = Reader::new(
        store,
        cache,
        progress.clone(),
        counters.clone(),
        Check::Frames,
    );
    tokio::spawn(async move {
        let chunks = fetch(reader, runs).map(move |checked| {
            checked
                .map(|chunks| chunks.into_iter().map(|c| c.data).collect())
                .map_err(|e| e.into_message(&damage))
        });
        transfer::forward(chunks, tx, cancel, report).await;
    });
    (Download::streamed(rx, failure, damaged, progress), counters)
}

/// The runs' chunks, in order, checked. Reading runs many at a time (a
/// request slot is taken in order, and freed once the body is read) and
/// checking batches of their chunks as many at a time as there are cores
/// keeps the network busy while only a few chunks wait decompressed (a
/// chunk is ~3.5 times its stored size once decompressed).
fn fetch(
    reader: Reader,
    runs: Vec<Run>,
) -> impl futures::Stream<Item = Result<Vec<Fetched>, ChunkError>> + Unpin {
    let checker = reader.clone();
    let requests = Arc::new(tokio::sync::Semaphore::new(RUNS_IN_FLIGHT));
    let checked = futures::stream::iter(runs)
        .then(move |run| {
            let (reader, requests) = (reader.clone(), requests.clone());
            requests.acquire_owned().then(move |slot| {
                transfer::in_turn(move |turn| async move {
                    let read = reader.read(run, turn).await;
                    drop(slot);
                    read
                })
            })
        })
        .buffered(RUNS_AHEAD)
        .flat_map(|read| futures::stream::iter(batches(joined(read))))
        .map(move |batch| {
            let checker = checker.clone();
            AbortOnDropHandle::new(tokio::spawn(async move { checker.check(batch?).await }))
        })
        .buffered(crate::pool::threads())
        .map(joined);
    Box::pin(checked)
}

/// A run's frames in batches of about `CHECKED_BATCH` bytes once
/// decompressed, each checked (and handed on) as a whole; a failed read
/// is one batch, its error.
fn batches(read: Result<Vec<Frame>, ChunkError>) -> Vec<Result<Vec<Frame>, ChunkError>> {
    let frames = match read {
        Ok(frames) => frames,
        Err(e) => return vec![Err(e)],
    };
    let mut batches: Vec<Vec<Frame>> = Vec::new();
    let mut size = 0;
    for frame in frames {
        match batches.last_mut() {
            Some(batch) if size + frame.chunk.size <= CHECKED_BATCH => {
                size += frame.chunk.size;
                batch.push(frame);
            }
            _ => {
                size = frame.chunk.size;
                batches.push(vec![frame]);
            }
        }
    }
    batches.into_iter().map(Ok).collect()
}

/// A task's result, its failure to finish counted as the storage's.
fn joined<T>(
    result: Result<Result<T, ChunkError>, tokio::task::JoinError>,
) -> Result<T, ChunkError> {
    result.unwrap_or_else(|e| Err(ChunkError::Storage(anyhow!("a download task failed: {e}"))))
}

/// The stored frames of `index`'s chunks, in order, each checked against
/// its name: what an export writes, frame after frame, as a `.tar.zst`.
pub fn frames(
    store: &Store,
    index: &Index,
) -> impl futures::Stream<Item = anyhow::Result<Vec<Bytes>>> + use<> {
    let reader = Reader::new(
        store.clone(),
        None,
        Progress::default(),
        Counters::default(),
        Check::Chunks,
    );
    fetch(reader, plan(&index.chunks, |_| false)).map(|checked| {
        checked
            .map(|chunks| chunks.into_iter().map(|c| c.stored).collect())
            .map_err(ChunkError::into_anyhow)
    })
}

/// What a restore of chunks counted.
#[derive(Clone, Default)]
pub struct Counters {
    /// Chunks taken from the runner's cache.
    pub cached: Arc<AtomicU64>,
    /// Requests to storage.
    pub requests: Arc<AtomicU64>,
}

/// How the chunks read are checked.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Check {
    /// Each against its name: for an export, where nothing checks the
    /// stream after.
    Chunks,
    /// For a restore: the extractor checks the stream's digest (written
    /// before the stream was cut) before anything is placed, so a chunk
    /// whose stored bytes are the frame its reference records is not
    /// hashed whole (see `vouched`).
    Frames,
}

/// What reading runs needs.
#[derive(Clone)]
struct Reader {
    store: Store,
    cache: Option<ChunkCache>,
    progress: Progress,
    counters: Counters,
    /// For decompressed chunks.
    buffers: Buffers,
    /// For runs read from a file, before they are decompressed.
    bodies: Buffers,
    check: Check,
}

impl Reader {
    fn new(
        store: Store,
        cache: Option<ChunkCache>,
        progress: Progress,
        counters: Counters,
        check: Check,
    ) -> Reader {
        Reader {
            store,
            cache,
            progress,
            counters,
            buffers: Buffers::default(),
            bodies: Buffers::keeping(RUNS_IN_FLIGHT),
            check,
        }
    }

    /// One run's frames: from the runner's cache, or with one request
    /// (which tells `turn` when it has set out).
    async fn read(self, run: Run, turn: Turn) -> Result<Vec<Frame>, ChunkError> {
        let chunks = match run {
            Run::Stored(chunks) => return self.read_stored(&chunks, Some(turn)).await,
            Run::Cached(chunks) => chunks,
        };
        drop(turn);
        let (bytes, places) = self.read_cached(&chunks).await;
        let mut frames = Vec::with_capacity(chunks.len());
        for (chunk, place) in chunks.into_iter().zip(places) {
            match place {
                Some(range) => frames.push(Frame {
                    chunk,
                    stored: bytes.slice(range),
                    cached: true,
                }),
                // Trimmed meanwhile.
                None => frames.extend(self.read_stored(std::slice::from_ref(&chunk), None).await?),
            }
        }
        Ok(frames)
    }

    /// Reads what the runner's cache has of `chunks`, with one trip to a
    /// blocking thread and into a reused buffer: their bytes, and where
    /// each chunk is in them (`None` for each one it does not have).
    async fn read_cached(&self, chunks: &[ChunkRef]) -> (Bytes, Vec<Option<Range<usize>>>) {
        let missing = || (Bytes::new(), vec![None; chunks.len()]);
        let Some(cache) = self.cache.clone() else {
            return missing();
        };
        let ids: Vec<String> = chunks.iter().map(|c| c.id.clone()).collect();
        let size = chunks.iter().map(|c| c.size as usize).sum();
        let buffers = self.bodies.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut buffer = buffers.take(size);
            let places = cache.read_run(&ids, &mut buffer);
            (buffers.share(buffer), places)
        });
        read.await.unwrap_or_else(|_| missing())
    }

    /// Checks a run's frames. A bad copy in the cache is dropped and the
    /// chunk read from storage; a bad one from storage is damage. Good
    /// ones from storage are kept in the cache.
    async fn check(self, frames: Vec<Frame>) -> Result<Vec<Fetched>, ChunkError> {
        let mut fetched = Vec::with_capacity(frames.len());
        let mut downloaded = Vec::new();
        for (frame, data) in decode(frames, &self.buffers, self.check).await? {
            let Frame {
                chunk,
                stored,
                cached,
            } = frame;
            match (data, cached, &self.cache) {
                (Ok(data), true, _) => {
                    self.counters.cached.fetch_add(1, Ordering::Relaxed);
                    self.progress.add(chunk.stored);
                    fetched.push(Fetched { stored, data });
                }
                (Ok(data), false, cache) => {
                    if cache.is_some() {
                        downloaded.push((chunk.id, data.clone()));
                    }
                    fetched.push(Fetched { stored, data });
                }
                (Err(why), true, Some(cache)) => {
                    tracing::debug!("chunk cache: dropped a bad copy: {why}");
                    cache.remove(&chunk.id).await;
                    let again = self.read_stored(std::slice::from_ref(&chunk), None).await?;
                    fetched.extend(Box::pin(self.clone().check(again)).await?);
                }
                (Err(why), _, _) => {
                    return Err(ChunkError::Damaged(format!(
                        "'{}': {why}",
                        self.store.full(&chunk.object())
                    )));
                }
            }
        }
        if let Some(cache) = &self.cache
            && !downloaded.is_empty()
        {
            cache.put(downloaded).await;
        }
        Ok(fetched)
    }

    /// Reads chunks that lie side by side in one object with one request,
    /// telling `turn`, if given, when it has set out.
    async fn read_stored(
        &self,
        chunks: &[ChunkRef],
        turn: Option<Turn>,
    ) -> Result<Vec<Frame>, ChunkError> {
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
        let request = store.inner().get_opts(&path, options);
        let result = match turn {
            Some(turn) => transfer::set_out(request, turn).await,
            None => request.await,
        };
        let body = match result {
            Ok(result) => read_body(result, &self.bodies)
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
        let at = |offset: u64| (offset - range.start) as usize;
        Ok(chunks
            .iter()
            .map(|chunk| Frame {
                chunk: chunk.clone(),
                stored: body.slice(at(chunk.offset)..at(chunk.range().end)),
                cached: false,
            })
            .collect())
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

/// Decompresses frames (each never past its chunk's declared size) into
/// reused buffers and checks each as `check` says.
async fn decode(
    frames: Vec<Frame>,
    buffers: &Buffers,
    check: Check,
) -> Result<Vec<(Frame, Result<Bytes, String>)>, ChunkError> {
    let buffers = buffers.clone();
    // As many decoding at once as there are cores: more threads only
    // take turns, and the extractor needs a core too.
    let _permit = decoders().acquire().await;
    tokio::task::spawn_blocking(move || {
        frames
            .into_iter()
            .map(|frame| {
                let data = decode_one(&frame, &buffers, check);
                (frame, data)
            })
            .collect()
    })
    .await
    .map_err(|e| ChunkError::Storage(anyhow!("checking chunks stopped unexpectedly: {e}")))
}

fn decode_one(frame: &Frame, buffers: &Buffers, check: Check) -> Result<Bytes, String> {
    let (chunk, size) = (&frame.chunk, frame.chunk.size as usize);
    if frame.cached {
        return match frame.stored.len() == size && chunk_id(&frame.stored) == chunk.id {
            true => Ok(frame.stored.clone()),
            false => Err(format!("chunk '{}' does not match its hash", chunk.id)),
        };
    }
    let vouched = check == Check::Frames && vouched(frame);
    let mut data = buffers.take(size);
    decompress(&frame.stored, &mut data)
        .map_err(|e| format!("chunk '{}' does not decompress ({e})", chunk.id))?;
    if data.len() != size {
        return Err(format!(
            "chunk '{}' holds {} bytes, and the index says {size}",
            chunk.id,
            data.len()
        ));
    }
    if !vouched && chunk_id(&data) != chunk.id {
        return Err(format!("chunk '{}' does not match its hash", chunk.id));
    }
    Ok(buffers.share(data))
}

/// Whether the stored bytes are exactly the frame a rebuild wrote for the
/// chunk: they hash to the `frame` its reference records. Such a chunk is
/// checked by the stream's digest, which the rebuild computed before it cut
/// the stream and which the extractor checks before anything is placed;
/// hashing it whole as well would cost three times the bytes of hashing the
/// frame. Anything else (no recorded hash, a changed byte) is hashed and
/// compared with its name before the extractor sees it, so damage in
/// storage is named chunk by chunk, as is every copy from the runner's
/// cache (kept uncompressed: hashing it costs what decompressing a frame
/// would not).
fn vouched(frame: &Frame) -> bool {
    frame
        .chunk
        .frame
        .as_deref()
        .is_some_and(|hash| frame_hash(&frame.stored) == hash)
}

fn decoders() -> &'static tokio::sync::Semaphore {
    static DECODERS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    DECODERS.get_or_init(|| tokio::sync::Semaphore::new(crate::pool::threads()))
}

/// One zstd frame into `out` (whose capacity bounds it); each thread keeps
/// its decompressor. zstd's checksum of the contents is not checked: every
/// chunk is checked against its name, or as a recorded frame and then by
/// the stream's digest, and the checksum (XXH64 of every byte) would check
/// it a second time, at a cost that showed on two cores.
fn decompress(stored: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    use std::cell::RefCell;
    use zstd::stream::raw::DParameter;
    thread_local! {
        static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { RefCell::new(None) };
    }
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let mut decompressor = zstd::bulk::Decompressor::new()?;
            decompressor.set_parameter(DParameter::ForceIgnoreChecksum(true))?;
            *slot = Some(decompressor);
        }
        match slot.as_mut() {
            Some(decompressor) => decompressor.decompress_to_buffer(stored, out).map(drop),
            None => Err(io::Error::other("no decompressor")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u8, pack: &str, offset: u64, stored: u64) -> ChunkRef {
        ChunkRef {
            id: chunk_id(&[n]),
            size: stored * 3,
            stored,
            pack: Some(pack.repeat(32)),
            offset,
            frame: None,
        }
    }

    #[test]
    fn runs_are_chunks_side_by_side_in_one_pack_within_the_limit() {
        let half = RUN_BYTES / 2;
        let chunks = [
            chunk(1, "a", 0, 100),
            chunk(2, "a", 100, 50),
            chunk(3, "b", 0, 10),             // another pack
            chunk(4, "b", 20, 10),            // a gap
            chunk(5, "b", 30, half),          // past the third run's limit (1 MiB)
            chunk(6, "b", 30 + half, half),   // the fourth's is 2 MiB
            chunk(7, "b", 30 + 2 * half, 10), // past it
            chunk(8, "c", 0, 64 << 20),       // far from the end: none is tapered
        ];
        let sizes = |runs: &[Run]| -> Vec<usize> {
            runs.iter()
                .map(|r| match r {
                    Run::Stored(c) => c.len(),
                    Run::Cached(c) => 100 + c.len(),
                })
                .collect()
        };
        assert_eq!(sizes(&plan(&chunks, |_| false)), [2, 1, 1, 2, 1, 1]);
        // Cached chunks are read from the cache, and split the runs.
        let cached = chunk_id(&[2]);
        // (The ramp goes on counting: 4 and 5 now make the fourth run.)
        assert_eq!(
            sizes(&plan(&chunks, |id| id == cached)),
            [1, 101, 1, 2, 2, 1]
        );
        let all = plan(&chunks, |_| true);
        assert_eq!(sizes(&all), [108]);
        // Version 1 chunks are objects of their own.
        let mut v1 = chunks[..2].to_vec();
        v1.iter_mut().for_each(|c| c.pack = None);
        assert_eq!(sizes(&plan(&v1, |_| false)), [1, 1]);
    }

    #[test]
    fn a_run_is_checked_in_batches_of_about_a_mib() {
        let frame = |n: u8, size: u64| Frame {
            chunk: ChunkRef {
                size,
                ..chunk(n, "a", 0, 1)
            },
            stored: Bytes::new(),
            cached: false,
        };
        let mib = CHECKED_BATCH;
        let run = vec![
            frame(1, mib / 2),
            frame(2, mib / 2),
            frame(3, mib / 4),
            frame(4, 3 * mib), // larger than a batch: one of its own
            frame(5, 1),
        ];
        let sizes: Vec<usize> = batches(Ok(run))
            .into_iter()
            .map(|b| b.map(|b| b.len()).unwrap_or(0))
            .collect();
        assert_eq!(sizes, [2, 1, 1, 1]);
        let failed = batches(Err(ChunkError::Damaged("gone".into())));
        assert!(matches!(failed.as_slice(), [Err(ChunkError::Damaged(_))]));
    }

    /// In a restore, a chunk stored as its reference records is not hashed
    /// whole (the stream's digest checks it after); anything else is, and
    /// an export, which no digest follows, hashes every chunk.
    #[test]
    fn only_a_frame_found_as_recorded_skips_hashing_in_a_restore() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 9) as u8)
            .collect();
        let written = super::super::write::compress(&data, 3).unwrap();
        let buffers = Buffers::default();
        let frame = |stored: Vec<u8>, recorded: Option<&[u8]>| Frame {
            chunk: ChunkRef {
                id: chunk_id(&data),
                size: data.len() as u64,
                stored: stored.len() as u64,
                pack: None,
                offset: 0,
                frame: recorded.map(frame_hash),
            },
            stored: Bytes::from(stored),
            cached: false,
        };
        let decoded = |f: &Frame, check| decode_one(f, &buffers, check).map(|b| b.to_vec());
        let both = [Check::Frames, Check::Chunks];

        let unchanged = frame(written.clone(), Some(&written));
        assert!(vouched(&unchanged));
        for check in both {
            assert_eq!(decoded(&unchanged, check).unwrap(), data);
        }

        // No hash recorded (an older larder's index), or another rebuild's
        // copy (another level): hashed whole, and good.
        let other = super::super::write::compress(&data, 9).unwrap();
        for good in [frame(written.clone(), None), frame(other, Some(&written))] {
            assert!(!vouched(&good));
            for check in both {
                assert_eq!(decoded(&good, check).unwrap(), data);
            }
        }

        // A changed byte: not vouched for, and caught here.
        let mut changed = written.clone();
        changed[written.len() / 2] ^= 0x40;
        let changed = frame(changed, Some(&written));
        assert!(!vouched(&changed));
        for check in both {
            assert!(decoded(&changed, check).is_err());
        }

        // A reference that lies consistently: the frame of other bytes,
        // recorded as such, under this chunk's name. A restore passes it on
        // for the stream's digest to catch; an export catches it here.
        let mut lie = data.clone();
        lie[7] ^= 1;
        let lie = super::super::write::compress(&lie, 3).unwrap();
        let lying = frame(lie.clone(), Some(&lie));
        assert!(vouched(&lying));
        assert_ne!(decoded(&lying, Check::Frames).unwrap(), data);
        let e = decoded(&lying, Check::Chunks).unwrap_err();
        assert!(e.contains("does not match its hash"), "{e}");

        // Checked or not, the size is: a frame never grows past it.
        let mut short = frame(written.clone(), Some(&written));
        short.chunk.size -= 1;
        for check in both {
            assert!(decoded(&short, check).is_err());
        }
    }

    /// Regression: past the 45th run the ramp wrapped to 0 and every run
    /// was one chunk, a request each (18 of them for the benchmark corpus).
    #[test]
    fn runs_stay_full_however_many() {
        let step = RUN_BYTES / 2;
        let chunks: Vec<ChunkRef> = (0..400u64)
            .map(|n| chunk(n as u8, "a", n * step, step))
            .collect();
        let runs = plan(&chunks, |_| false);
        let sizes: Vec<usize> = runs
            .iter()
            .map(|r| match r {
                Run::Stored(c) => c.len(),
                Run::Cached(_) => unreachable!("nothing is cached"),
            })
            .collect();
        // The ramp (256 KiB, 512 KiB, 1 MiB: one chunk each), then two
        // chunks a run until the taper: runs of at most an eighth of what
        // is left, so one chunk each once less than 16 MiB is left.
        assert_eq!(sizes[..4], [1, 1, 1, 2], "{sizes:?}");
        let tapered = 15;
        let full = &sizes[3..sizes.len() - tapered];
        assert!(full.iter().all(|&n| n == 2), "{sizes:?}");
        assert!(
            sizes[sizes.len() - tapered..].iter().all(|&n| n == 1),
            "{sizes:?}"
        );
        assert_eq!(sizes.iter().sum::<usize>(), chunks.len());
    }

    /// The last runs shrink to an eighth of what is left, down to 768 KiB,
    /// so the last bytes to arrive are little to decode.
    #[test]
    fn the_last_runs_are_small() {
        let step = 64 << 10;
        let chunks: Vec<ChunkRef> = (0..1024u64)
            .map(|n| chunk(n as u8, "a", n * step, step))
            .collect();
        let total = 1024 * step;
        let mut start = 0;
        for run in plan(&chunks, |_| false) {
            let Run::Stored(run) = run else {
                unreachable!("nothing is cached")
            };
            let bytes: u64 = run.iter().map(|c| c.stored).sum();
            let left = total - start;
            let limit = RUN_BYTES.min((left / 8).max(768 << 10));
            assert!(bytes <= limit, "{bytes} bytes at {start}");
            // Past the ramp, no smaller than the limit allows: as few
            // requests as it can.
            assert!(
                bytes + step > limit.min(left) || start < 4 << 20,
                "{bytes} bytes at {start}"
            );
            start += bytes;
        }
        assert_eq!(start, total);
    }
}
