//! Streaming uploads and downloads with bounded memory.
//!
//! Uploads are multipart: parts go up while the archive is still being
//! written, several at a time, and the object only appears when the upload
//! completes; any failure aborts it, so nothing partial is ever visible.
//! Downloads fetch the entry in ranges, several at a time, pinned to the
//! entry's ETag so a concurrent replacement cannot mix two versions.
//!
//! Both count what they move for the progress lines: a download the bytes
//! received, an upload the bytes of parts the storage has acknowledged.

use std::io;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use anyhow::anyhow;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetResultPayload, MultipartUpload, ObjectMeta, ObjectStoreExt, PutPayload,
    PutResult, UploadPart, WriteMultipart,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::task::AbortOnDropHandle;

use super::{Backend, Store};
use crate::cancel::Cancel;
use crate::pipe::{ChunkReader, Waited};
use crate::progress::{self, Progress};

/// Multipart part size for most entries (see `part_size` for larger ones).
pub const PART_SIZE: usize = 8 << 20;
/// Parts an upload is planned to fit in: S3 and GCS allow 10,000; the rest
/// is margin for an estimate that compression may exceed a little.
const PLANNED_PARTS: u64 = 9_000;
/// S3's largest part.
const MAX_PART: u64 = 5 << 30;
/// Parts uploading at once.
const UPLOAD_CONCURRENCY: usize = 4;
/// Size of one ranged download request, and how many run at once: 4 MiB
/// x 6 restored the benchmark entry from S3 faster than 8 MiB x 4 (1.08 s
/// against 1.21 s) in less memory (70 MiB against 88 MiB peak RSS).
pub const RANGE_SIZE: u64 = 4 << 20;
const DOWNLOAD_CONCURRENCY: usize = 6;

/// An upload whose data is all handed over but which is not yet visible:
/// it becomes the entry on `publish` and disappears on `discard` (or when
/// dropped).
///
/// Its last parts are still going up meanwhile: the rebuild checks its
/// claim on the key at the same time instead of after them, and over a
/// link that saves the last part's transfer and a round trip. The upload
/// completes only on `publish`'s word (see `Counted::complete`).
pub struct PendingUpload {
    /// `writer.finish()`, running: the last part, the parts in flight,
    /// then the completion once `go` says so.
    finishing: JoinHandle<object_store::Result<PutResult>>,
    /// `true` completes the upload; `false`, or dropping it, aborts it.
    go: oneshot::Sender<bool>,
    store: Store,
    path: Path,
    /// Compressed bytes sent.
    pub bytes: u64,
    /// How long sending waited for the upload (a free part slot); `publish`
    /// adds the last parts and the completion.
    waited: std::time::Duration,
    /// Counts the last parts; finished when the upload is published or discarded.
    progress: Progress,
}

impl PendingUpload {
    /// Completes the multipart upload: the entry appears, whole, at once.
    /// Returns how long the upload was waited for in all.
    pub async fn publish(self) -> anyhow::Result<std::time::Duration> {
        let PendingUpload {
            finishing,
            go,
            store,
            path,
            progress,
            waited,
            ..
        } = self;
        let started = std::time::Instant::now();
        // A failed part has already ended the task (and dropped `go`'s
        // receiver); its error is what the task returns.
        let _ = go.send(true);
        let finished = finishing.await;
        progress.finish();
        match finished {
            Ok(result) => result.map_err(|e| store.error("upload of", &path, e))?,
            Err(join) => anyhow::bail!("the upload of '{path}' stopped unexpectedly: {join}"),
        };
        // What is left after the archiving: worth seeing when a rebuild is
        // slower than expected.
        tracing::debug!(
            "upload: last parts sent and '{path}' completed in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        Ok(waited + started.elapsed())
    }

    /// Aborts the upload; nothing of it stays visible.
    pub async fn discard(self) {
        let _ = self.go.send(false);
        if let Ok(Ok(_)) = self.finishing.await {
            tracing::warn!("the discarded upload of '{}' completed", self.path);
        }
        self.progress.finish();
    }
}

/// The part size for an upload of about `expected` bytes: `PART_SIZE`, or
/// larger (whole MiB) when that would take more than `PLANNED_PARTS`
/// parts. With 8 MiB parts alone, an entry over 78 GiB failed at its
/// 10,001st part, after all the work.
pub fn part_size(expected: u64) -> usize {
    let needed = expected.div_ceil(PLANNED_PARTS).div_ceil(1 << 20) << 20;
    needed.clamp(PART_SIZE as u64, MAX_PART) as usize
}

/// Uploads the chunks from `chunks` to `path` while `producer` writes them,
/// about `expected` bytes in all (it sets the part size).
///
/// Returns the producer's value and the upload, ready to publish, only if
/// every chunk arrived and the producer returned `Ok`; otherwise the upload
/// is aborted and the producer's or the storage's error is returned.
/// Acknowledged parts are counted in `progress`, which ends with a failure
/// here or when the pending upload is published or discarded.
pub async fn upload<T>(
    store: &Store,
    path: &Path,
    expected: u64,
    chunks: mpsc::Receiver<Bytes>,
    producer: JoinHandle<anyhow::Result<T>>,
    progress: &Progress,
) -> anyhow::Result<(T, PendingUpload)> {
    let result = send(store, path, part_size(expected), chunks, producer, progress).await;
    if result.is_err() {
        progress.finish();
    }
    result
}

async fn send<T>(
    store: &Store,
    path: &Path,
    part: usize,
    mut chunks: mpsc::Receiver<Bytes>,
    producer: JoinHandle<anyhow::Result<T>>,
    progress: &Progress,
) -> anyhow::Result<(T, PendingUpload)> {
    let upload = match store.inner().put_multipart(path).await {
        Ok(upload) => upload,
        Err(e) => {
            drop(chunks);
            let _ = producer.await;
            return Err(store.error("upload of", path, e));
        }
    };
    let (go, told) = oneshot::channel();
    let counted = Box::new(Counted {
        inner: upload,
        progress: progress.clone(),
        go: Some(told),
    });
    let mut writer = WriteMultipart::new_with_chunk_size(counted, part);
    let mut sent = 0u64;
    let mut sending = Ok(());
    let mut waited = std::time::Duration::ZERO;
    while let Some(chunk) = chunks.recv().await {
        let asked = std::time::Instant::now();
        if let Err(e) = writer.wait_for_capacity(UPLOAD_CONCURRENCY).await {
            sending = Err(e);
            break;
        }
        waited += asked.elapsed();
        sent += chunk.len() as u64;
        progress.sent(chunk.len() as u64);
        writer.put(chunk);
    }
    // Closing the channel stops a producer that is still writing.
    drop(chunks);
    let produced = producer.await;
    match (sending, produced) {
        (Ok(()), Ok(Ok(value))) => Ok((
            value,
            PendingUpload {
                // The last part goes up now, beside the ones in flight.
                finishing: tokio::spawn(writer.finish()),
                go,
                store: store.clone(),
                path: path.clone(),
                bytes: sent,
                waited,
                progress: progress.clone(),
            },
        )),
        (Err(e), _) => {
            abort(writer, path).await;
            Err(store.error("upload of", path, e))
        }
        (Ok(()), Ok(Err(e))) => {
            abort(writer, path).await;
            Err(e)
        }
        (Ok(()), Err(join)) => {
            abort(writer, path).await;
            Err(anyhow!("archiving stopped unexpectedly: {join}"))
        }
    }
}

async fn abort(writer: WriteMultipart, path: &Path) {
    if let Err(e) = writer.abort().await {
        tracing::warn!("could not abort the partial upload of '{path}': {e}");
    }
}

/// A multipart upload that counts each part once the storage acknowledged
/// it, and completes only when the rebuild says so.
#[derive(Debug)]
struct Counted {
    inner: Box<dyn MultipartUpload>,
    progress: Progress,
    /// The rebuild's word (`PendingUpload::go`): `WriteMultipart::finish`
    /// completes once every part is up, which may be before the rebuild has
    /// checked that the key is still its own.
    go: Option<oneshot::Receiver<bool>>,
}

#[async_trait::async_trait]
impl MultipartUpload for Counted {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let size = data.content_length() as u64;
        let progress = self.progress.clone();
        let part = self.inner.put_part(data);
        Box::pin(async move {
            part.await?;
            progress.uploaded(size);
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let go = match self.go.take() {
            Some(told) => told.await.unwrap_or(false),
            None => true,
        };
        if !go {
            // `WriteMultipart::finish` aborts the upload on this error.
            return Err(object_store::Error::Generic {
                store: "larder",
                source: "the upload was discarded before completing".into(),
            });
        }
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

/// An entry being read: a local file, or a download in ranges.
pub struct Download {
    source: Source,
    failure: Arc<OnceLock<String>>,
    /// Set when what was read is not what the entry should hold (a chunk
    /// missing or not matching its hash): the entry is damaged.
    damaged: Arc<std::sync::atomic::AtomicBool>,
    /// Bytes received; reports end when the reader is dropped.
    progress: Progress,
    /// How long the reader waited for the download.
    waited: Waited,
}

enum Source {
    /// The filesystem backend's file itself: no copies, no async hops.
    File(std::fs::File),
    Ranges(mpsc::Receiver<io::Result<Vec<Bytes>>>),
}

impl Download {
    /// A download whose bytes arrive in order on `rx`, a failure as an
    /// `Err` item (which is also set in `failure`).
    pub fn streamed(
        rx: mpsc::Receiver<io::Result<Vec<Bytes>>>,
        failure: Arc<OnceLock<String>>,
        damaged: Arc<std::sync::atomic::AtomicBool>,
        progress: Progress,
    ) -> Download {
        Download {
            source: Source::Ranges(rx),
            failure,
            damaged,
            progress,
            waited: Waited::default(),
        }
    }

    /// Whether the download found the entry damaged (set with the failure).
    pub fn damage_handle(&self) -> Arc<std::sync::atomic::AtomicBool> {
        Arc::clone(&self.damaged)
    }

    /// Why the download stopped early, if it did. A reader that fails on a
    /// cut-off stream reports this instead of blaming the archive.
    pub fn failure_handle(&self) -> Arc<OnceLock<String>> {
        Arc::clone(&self.failure)
    }

    /// How long the reader has waited for the download's bytes; `None`
    /// for a file read in place, with nothing to wait for.
    pub fn waited_handle(&self) -> Option<Waited> {
        match self.source {
            Source::File(_) => None,
            Source::Ranges(_) => Some(self.waited.clone()),
        }
    }

    /// The entry's bytes, for a blocking reader. Progress reports end when
    /// the reader is dropped, that is when the entry has been read.
    pub fn into_reader(self) -> Box<dyn io::BufRead + Send> {
        match self.source {
            Source::File(file) => Box::new(Reading {
                inner: io::BufReader::with_capacity(256 * 1024, file),
                progress: self.progress,
                counts: true,
            }),
            Source::Ranges(ranges) => Box::new(Reading {
                inner: ChunkReader::new(ranges, self.waited),
                progress: self.progress,
                // The ranges are counted as they arrive.
                counts: false,
            }),
        }
    }
}

/// The entry's reader: counts what it hands out (a file read in place) and
/// ends the progress reports when dropped.
struct Reading<R> {
    inner: R,
    progress: Progress,
    counts: bool,
}

impl<R: io::BufRead> io::Read for Reading<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.counts {
            self.progress.add(n as u64);
        }
        Ok(n)
    }
}

impl<R: io::BufRead> io::BufRead for Reading<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if self.counts {
            self.progress.add(amount as u64);
        }
        self.inner.consume(amount);
    }
}

impl<R> Drop for Reading<R> {
    fn drop(&mut self) {
        self.progress.finish();
    }
}

/// The first bytes of an entry, asked for with its lookup.
pub enum Head {
    /// Read whole: a chunked entry's index (or its start), which is needed
    /// before anything else; empty where the lookup read only the metadata
    /// (the filesystem backend, an entry found by a restore key).
    Read(Bytes),
    /// An archive's first range, `len` bytes, still arriving: the download
    /// hands them on as they come while its next ranges are already asked
    /// for. Waiting for them first cost a restore a round trip.
    Arriving {
        body: BoxStream<'static, object_store::Result<Bytes>>,
        len: u64,
    },
}

impl Head {
    pub fn none() -> Head {
        Head::Read(Bytes::new())
    }

    /// All of the head, waiting for what is still arriving.
    pub async fn bytes(self) -> object_store::Result<Bytes> {
        match self {
            Head::Read(bytes) => Ok(bytes),
            Head::Arriving { body, .. } => {
                let chunks: Vec<Bytes> = body.try_collect().await?;
                Ok(Bytes::from(chunks.concat()))
            }
        }
    }
}

/// Starts reading the entry described by `meta`, whose first bytes `head`
/// (possibly none) the lookup read already. On the filesystem backend the
/// open file is read directly (it cannot change under us: entries are
/// replaced by rename); elsewhere ranges are fetched, several at a time,
/// into a channel of chunks in order, a failure arriving as an `Err` item.
pub async fn download(
    store: Store,
    meta: ObjectMeta,
    head: Head,
    cancel: Cancel,
) -> anyhow::Result<Download> {
    let failure = Arc::new(OnceLock::new());
    let progress = Progress::start(progress::Kind::Restore);
    progress.expect(meta.size, 0);
    if store.backend == Backend::Filesystem {
        let options = GetOptions {
            if_match: meta.e_tag.clone(),
            ..GetOptions::default()
        };
        let result = store
            .inner()
            .get_opts(&meta.location, options)
            .await
            .map_err(|e| store.error("read of", &meta.location, e))?;
        if let GetResultPayload::File(file, _) = result.payload {
            return Ok(Download {
                source: Source::File(file),
                failure,
                damaged: Arc::default(),
                progress,
                waited: Waited::default(),
            });
        }
    }
    // What has arrived of the first range waits here while the reader
    // works on what came before.
    let (tx, rx) = mpsc::channel(1);
    let report = Arc::clone(&failure);
    let received = progress.clone();
    let (read, head, first) = match head {
        Head::Read(head) => {
            received.add(head.len() as u64);
            let len = head.len() as u64;
            (len, (!head.is_empty()).then(|| Ok(vec![head])), None)
        }
        Head::Arriving { body, len } => {
            let (store, meta, received) = (store.clone(), meta.clone(), received.clone());
            (
                len,
                None,
                Some(InFlight::arriving(store, meta, body, len, received)),
            )
        }
    };
    tokio::spawn(async move {
        let ranges = in_order(store, meta, read, received, first);
        let items = futures::stream::iter(head).chain(ranges);
        forward(Box::pin(items), tx, cancel, report).await;
    });
    Ok(Download::streamed(rx, failure, Arc::default(), progress))
}

/// Told by a request when it has set out: polled once, it holds a
/// connection from the client's pool, an idle one if there was one.
pub struct Turn(tokio::sync::oneshot::Sender<()>);

/// Spawns the request `start` makes, and returns its handle once the
/// request has set out (see `Turn`). Requests spawned with this one after
/// the other take the pool's warm connections in order, so the first
/// ranges, which the reader needs first, never wait for a new connection's
/// handshake. Spawned all at once, they ran in tokio's order, not theirs
/// (often the newest first): in a traced restore the lookup's connections
/// went to ranges 2-5 and the first range waited for a new connection,
/// a round trip late over a 20 ms link.
pub async fn in_turn<F>(start: impl FnOnce(Turn) -> F) -> AbortOnDropHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (told, set_out) = tokio::sync::oneshot::channel();
    let handle = AbortOnDropHandle::new(tokio::spawn(start(Turn(told))));
    // An error: the task ended (or failed) without telling.
    let _ = set_out.await;
    handle
}

/// Awaits `request`, telling `turn` once it has been polled the first time.
pub async fn set_out<F: std::future::Future>(request: F, turn: Turn) -> F::Output {
    let mut request = std::pin::pin!(request);
    let first = futures::poll!(request.as_mut());
    let _ = turn.0.send(());
    match first {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => request.await,
    }
}

/// Hands what `items` yield, in order, to a download's reader until the
/// end, the first failure (also set in `failure`, for the reader's error)
/// or a signal.
pub async fn forward(
    mut items: impl futures::Stream<Item = Result<Vec<Bytes>, String>> + Unpin,
    tx: mpsc::Sender<io::Result<Vec<Bytes>>>,
    cancel: Cancel,
    failure: Arc<OnceLock<String>>,
) {
    loop {
        let item = tokio::select! {
            item = items.next() => item,
            () = cancel.cancelled() => {
                let stop = io::Error::new(io::ErrorKind::Interrupted, "interrupted by a signal");
                let _ = tx.send(Err(stop)).await;
                return;
            }
        };
        let Some(item) = item else { return };
        let item = item.map_err(|message| {
            let _ = failure.set(message.clone());
            io::Error::other(message)
        });
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// The ranges of an object of `size` bytes from `from` on: `RANGE_SIZE`
/// each, but the first few smaller (`ramp`, continued past the ranges
/// `from` covers), so the reader starts as soon as possible, and the last
/// ones smaller too (`taper`), so it finishes soon after the last byte.
fn ranges(size: u64, from: u64) -> impl Iterator<Item = Range<u64>> {
    let (mut covered, mut first) = (0, 0);
    while covered < from {
        covered += ramp(first, RANGE_SIZE);
        first += 1;
    }
    let mut start = from;
    (first..).map_while(move |n| {
        (start < size).then(|| {
            let len = ramp(n, RANGE_SIZE).min(taper(size - start));
            let range = start..start.saturating_add(len).min(size);
            start = range.end;
            range
        })
    })
}

/// Ranges near the end of an object shrink to an eighth of what is left,
/// down to 768 KiB. Ranges in flight share the link, so the last few
/// arrive nearly together, and the reader, which takes them in order, was
/// left with all their bytes to unpack after the last one came: 4 MiB of
/// sources is about 20 ms of unpacking, and a restore over a 20 ms, 1 Gbit/s
/// link unpacked for 5-100 ms after its last byte (0-30 ms with the taper;
/// restores took 0.97-0.98 of the time, 12 pairs). Smaller ranges would leave
/// the link idle between requests: six of 512 KiB in flight hold less than
/// what such a link carries in a round trip.
pub fn taper(left: u64) -> u64 {
    (left / 8).max(768 << 10)
}

/// The size of the `n`th of several reads of at most `full` bytes that run
/// at once: 256 KiB, doubling up to `full`. Reads in flight share the link,
/// so equal ones all finish late, and the reader, which needs the first,
/// waits for nearly all of them: over a 20 ms, 1 Gbit/s link that cost a
/// restore a quarter of a second before its first byte.
pub fn ramp(n: u32, full: u64) -> u64 {
    // Not `checked_shl`: it checks the shift, not the value, and 256 KiB
    // shifted 46 places or more wrapped to 0, so an entry of over 45
    // ranges (172 MiB) asked for an empty range and failed to restore.
    2u64.saturating_pow(n).saturating_mul(256 << 10).min(full)
}

/// A range being fetched by its own task, which sends the body's chunks
/// as they arrive (no copy into one buffer).
struct InFlight {
    range: Range<u64>,
    chunks: mpsc::UnboundedReceiver<Result<Bytes, String>>,
    received: u64,
    _task: AbortOnDropHandle<()>,
}

/// The bytes of `meta` from `from` on, in order: `DOWNLOAD_CONCURRENCY`
/// ranges are fetched at once, each by its own task, so the others keep
/// downloading while the reader is busy (extraction stalls while the
/// kernel writes back: restoring a 4 GB cache from S3 onto disk took 29.5-
/// 29.9 s against 33.9-35.0 s when ranges were only polled in turn). The
/// first range's chunks are handed on as they arrive, not once it is whole:
/// the reader works on a range while its last bytes are on the way (over
/// a 20 ms, 1 Gbit/s link restores took 0.97 of the time, 12 pairs).
fn in_order(
    store: Store,
    meta: ObjectMeta,
    from: u64,
    progress: Progress,
    first: Option<InFlight>,
) -> impl futures::Stream<Item = Result<Vec<Bytes>, String>> {
    let (started, queue) = mpsc::channel(DOWNLOAD_CONCURRENCY);
    let scheduler = {
        let (store, meta) = (store.clone(), meta.clone());
        AbortOnDropHandle::new(tokio::spawn(schedule(store, meta, from, progress, started)))
    };
    let state = (queue, first, scheduler);
    futures::stream::unfold(state, move |(mut queue, mut front, scheduler)| {
        let (store, meta) = (store.clone(), meta.clone());
        async move {
            loop {
                let current = match front.as_mut() {
                    Some(current) => current,
                    None => front.insert(queue.recv().await?),
                };
                let range = current.range.clone();
                let ours = |why: String| {
                    format!(
                        "{} download of bytes {}..{} of '{}' in {}: {why}",
                        store.backend,
                        range.start,
                        range.end,
                        store.full(&meta.location),
                        store.location
                    )
                };
                let item = match current.chunks.recv().await {
                    Some(Ok(chunk)) => current.take(chunk, ours),
                    Some(Err(message)) => Err(message),
                    None if current.received == range.end - range.start => {
                        front = None;
                        continue;
                    }
                    None => Err(ours(format!(
                        "the download stopped after {} bytes",
                        current.received
                    ))),
                };
                // After an error the reader drops this stream, and with it
                // the scheduler and the queue: the other ranges stop.
                return Some((item, (queue, front, scheduler)));
            }
        }
    })
}

/// Starts fetching the ranges of `meta` from `from` on, in order, and
/// queues them on `started` for the reader: a range starts as soon as one
/// of the `DOWNLOAD_CONCURRENCY` downloads in flight has all its bytes and
/// the queue has room, not only when the reader has taken the first range.
/// Otherwise, while the reader lagged (a run of small files), the link
/// stood idle once every range in flight had arrived, and a new request
/// then took a round trip to bring bytes (24-30 ms gaps over a 20 ms
/// link). At most `DOWNLOAD_CONCURRENCY` ranges wait in the queue, so what
/// is held in memory stays bounded.
async fn schedule(
    store: Store,
    meta: ObjectMeta,
    from: u64,
    progress: Progress,
    started: mpsc::Sender<InFlight>,
) {
    let downloads = Arc::new(tokio::sync::Semaphore::new(DOWNLOAD_CONCURRENCY));
    for range in ranges(meta.size, from) {
        let Ok(permit) = Arc::clone(&downloads).acquire_owned().await else {
            return;
        };
        let (store, meta, progress) = (store.clone(), meta.clone(), progress.clone());
        let range = start(store, meta, range, progress, permit).await;
        if started.send(range).await.is_err() {
            return;
        }
    }
}

impl InFlight {
    /// The lookup's read of the first `len` bytes of `meta`, still arriving
    /// (`Head::Arriving`), as the first range.
    fn arriving(
        store: Store,
        meta: ObjectMeta,
        body: BoxStream<'static, object_store::Result<Bytes>>,
        len: u64,
        progress: Progress,
    ) -> InFlight {
        let (to, chunks) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move { pour(&store, &meta, body, &progress, &to).await });
        InFlight {
            range: 0..len,
            chunks,
            received: 0,
            _task: AbortOnDropHandle::new(task),
        }
    }

    /// `first` and whatever else of this range has arrived, checked against
    /// the range's size (a range that runs long is described by `ours`; a
    /// failure the range's task sent is passed on as it is).
    fn take(
        &mut self,
        first: Bytes,
        ours: impl Fn(String) -> String,
    ) -> Result<Vec<Bytes>, String> {
        let mut chunks = vec![first];
        while let Ok(more) = self.chunks.try_recv() {
            chunks.push(more?);
        }
        self.received += chunks.iter().map(|c| c.len() as u64).sum::<u64>();
        let expected = self.range.end - self.range.start;
        if self.received > expected {
            return Err(ours(format!(
                "the server returned more than the {expected} bytes asked for"
            )));
        }
        Ok(chunks)
    }
}

/// Starts fetching `range` of `meta` in its own task, which holds
/// `permit` (a place among the downloads in flight) until the range has
/// arrived; returns once the request has set out (see `in_turn`).
async fn start(
    store: Store,
    meta: ObjectMeta,
    range: Range<u64>,
    progress: Progress,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> InFlight {
    let (tx, chunks) = mpsc::unbounded_channel();
    let task = in_turn({
        let range = range.clone();
        move |turn| async move {
            fetch(store, meta, range, progress, turn, tx).await;
            drop(permit);
        }
    })
    .await;
    InFlight {
        range,
        chunks,
        received: 0,
        _task: task,
    }
}

/// Fetches one range, sending its chunks to `to` as they arrive and
/// counting them in `progress`; a failure is sent as an `Err`.
async fn fetch(
    store: Store,
    meta: ObjectMeta,
    range: Range<u64>,
    progress: Progress,
    turn: Turn,
    to: mpsc::UnboundedSender<Result<Bytes, String>>,
) {
    let options = GetOptions {
        range: Some(range.into()),
        if_match: meta.e_tag.clone(),
        ..GetOptions::default()
    };
    match set_out(store.inner().get_opts(&meta.location, options), turn).await {
        Ok(result) => pour(&store, &meta, result.into_stream(), &progress, &to).await,
        Err(e) => {
            let _ = to.send(Err(describe(&store, &meta, e)));
        }
    }
}

/// Sends the chunks of `body`, a range of `meta`, to `to` as they arrive,
/// counting them in `progress`, up to the first failure.
async fn pour(
    store: &Store,
    meta: &ObjectMeta,
    mut body: BoxStream<'static, object_store::Result<Bytes>>,
    progress: &Progress,
    to: &mpsc::UnboundedSender<Result<Bytes, String>>,
) {
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| describe(store, meta, e));
        if let Ok(chunk) = &chunk {
            progress.add(chunk.len() as u64);
        }
        let failed = chunk.is_err();
        if to.send(chunk).is_err() || failed {
            return;
        }
    }
}

/// What went wrong reading `meta`, for the reader's error.
fn describe(store: &Store, meta: &ObjectMeta, e: object_store::Error) -> String {
    let path = &meta.location;
    let error = if was_replaced(&e) {
        anyhow!(
            "{} entry '{}' in {} was replaced while it was being downloaded (the \
             server answered 412 Precondition Failed to a read pinned to the version \
             found); nothing was restored, run the step again",
            store.backend,
            store.full(path),
            store.location
        )
    } else {
        store.error("download of", path, e)
    };
    format!("{error:#}")
}

/// Whether a read pinned to an ETag failed because the object changed. The
/// status arrives as `Precondition`, or, when a broken body is retried
/// mid-stream, inside a generic error.
fn was_replaced(e: &object_store::Error) -> bool {
    if matches!(e, object_store::Error::Precondition { .. }) {
        return true;
    }
    let text = super::chain(e).to_ascii_lowercase();
    text.contains("412") && text.contains("precondition")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// An entry of more than 10,000 parts of 8 MiB (78 GiB) could not be
    /// uploaded to S3 or GCS: parts grow so that any entry fits in 9,000.
    #[test]
    fn parts_grow_so_that_a_large_entry_fits_in_the_parts_allowed() {
        assert_eq!(part_size(0), PART_SIZE);
        assert_eq!(part_size(600 << 20), PART_SIZE);
        assert_eq!(part_size(PLANNED_PARTS * PART_SIZE as u64), PART_SIZE);
        for gib in [71u64, 78, 100, 1000, 40_000] {
            let size = gib << 30;
            let part = part_size(size) as u64;
            assert!(
                size.div_ceil(part) <= PLANNED_PARTS,
                "{gib} GiB in parts of {part}"
            );
            assert_eq!(part % (1 << 20), 0, "whole MiB");
            assert!(part <= MAX_PART);
        }
        assert_eq!(part_size(u64::MAX) as u64, MAX_PART);
    }

    #[test]
    fn a_412_anywhere_in_the_error_means_the_entry_was_replaced() {
        let retried = object_store::Error::Generic {
            store: "S3",
            source: Box::new(io::Error::other(
                "Client error with status 412 Precondition Failed: At least one of the pre-conditions you specified did not hold",
            )),
        };
        assert!(was_replaced(&retried));
        let direct = object_store::Error::Precondition {
            path: "r/k.tar.gz".into(),
            source: "412".into(),
        };
        assert!(was_replaced(&direct));
        let other = object_store::Error::Generic {
            store: "S3",
            source: Box::new(io::Error::other("connection reset")),
        };
        assert!(!was_replaced(&other));
    }

    #[test]
    fn ranges_cover_the_object_exactly_growing_then_shrinking() {
        assert_eq!(ranges(0, 0).count(), 0);
        assert_eq!(ranges(5, 0).collect::<Vec<_>>(), vec![0..5]);
        let kib =
            |r: &[Range<u64>]| -> Vec<u64> { r.iter().map(|r| (r.end - r.start) >> 10).collect() };
        // 10 x 4 MiB and a byte: the ramp up (3.75 MiB), whole ranges while
        // an eighth of what is left is 4 MiB or more, then an eighth of what
        // is left each, down to 768 KiB; the last takes what remains.
        let size = RANGE_SIZE * 10 + 1;
        let r: Vec<_> = ranges(size, 0).collect();
        assert_eq!(
            kib(&r)[..6],
            [256, 512, 1024, 2048, 4096, 4096],
            "{:?}",
            kib(&r)
        );
        assert!(r.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(r.last().unwrap().end, size);
        for range in &r[5..] {
            let left = size - range.start;
            let len = range.end - range.start;
            assert!(
                len <= RANGE_SIZE && len <= (left / 8).max(768 << 10),
                "{range:?}"
            );
            assert!(len >= (768 << 10).min(left), "{range:?}");
        }
        assert!(
            r.iter().rev().take(4).all(|r| r.end - r.start <= 768 << 10),
            "the last ranges are small: {:?}",
            kib(&r)
        );
        assert_eq!(ramp(100, RANGE_SIZE), RANGE_SIZE);
        // However many ranges: 256 KiB shifted 46 to 63 places overflowed.
        assert!((0..200).all(|n| ramp(n, RANGE_SIZE) == RANGE_SIZE.min((256 << 10) << n.min(4))));
        let large = RANGE_SIZE * 200;
        let many: Vec<_> = ranges(large, 0).collect();
        assert!(many.iter().all(|r| r.end > r.start), "an empty range");
        assert!(many.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(many.last().unwrap().end, large);
        // Whole ranges in the middle; at most a few dozen small ones at the end.
        let whole = many
            .iter()
            .filter(|r| r.end - r.start == RANGE_SIZE)
            .count();
        assert!(whole >= 180 && many.len() < whole + 40, "{}", many.len());
        // After the first range (read with the lookup), the ramp goes on.
        let after: Vec<_> = ranges(size, 256 << 10).collect();
        assert_eq!(after, r[1..]);
        // From a point inside the ramp, the next size of the ramp.
        let odd: Vec<_> = ranges(size, 100).collect();
        assert_eq!(odd[0], 100..(100 + (512 << 10)));
        assert_eq!(odd.last().unwrap().end, size);
        assert!(ranges(size, size).next().is_none());
    }

    /// Sends the first range's first `SENT` bytes at once, then `then`.
    #[derive(Debug)]
    struct HeldFirstRange {
        rest: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
        then: Then,
        /// Range reads asked for so far.
        reads: std::sync::atomic::AtomicUsize,
    }

    impl HeldFirstRange {
        fn new(rest: Option<oneshot::Receiver<()>>, then: Then) -> HeldFirstRange {
            HeldFirstRange {
                rest: std::sync::Mutex::new(rest),
                then,
                reads: Default::default(),
            }
        }

        fn reads(&self) -> usize {
            self.reads.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// What follows the first bytes of a `HeldFirstRange`.
    #[derive(Debug, Clone, Copy)]
    enum Then {
        /// The rest, once `rest` says so.
        Rest,
        /// Nothing: the body ends.
        End,
        /// An error, as a connection reset mid-body gives.
        Fail,
    }

    const SENT: usize = 64 << 10;

    #[async_trait::async_trait]
    impl crate::testing::Tap for HeldFirstRange {
        async fn get(&self, _: &Path, options: &GetOptions) {
            if options.range.is_some() {
                self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }

        fn answer(&self, _: &Path, result: object_store::GetResult) -> object_store::GetResult {
            if result.range.start != 0 {
                return result;
            }
            let mut release = self.rest.lock().map(|mut r| r.take()).ok().flatten();
            let then = self.then;
            let object_store::GetResult {
                payload,
                meta,
                range,
                attributes,
                extensions,
            } = result;
            let GetResultPayload::Stream(body) = payload else {
                panic!("the in-memory store answers with a stream")
            };
            let whole = async move {
                let chunks: Vec<Bytes> = body.try_collect().await?;
                Ok::<_, object_store::Error>(Bytes::from(chunks.concat()))
            };
            let body = futures::stream::once(whole).flat_map(move |whole| {
                let release = release.take();
                let whole = match whole {
                    Ok(whole) => whole,
                    Err(e) => return futures::stream::iter([Err(e)]).boxed(),
                };
                let first = futures::stream::iter([Ok(whole.slice(..SENT))]);
                let rest = whole.slice(SENT..);
                let rest = futures::stream::once(async move {
                    if let Some(release) = release {
                        let _ = release.await;
                    }
                    Ok(rest)
                });
                match then {
                    Then::Rest => first.chain(rest).boxed(),
                    Then::End => first.boxed(),
                    Then::Fail => first
                        .chain(futures::stream::iter([Err(object_store::Error::Generic {
                            store: "test",
                            source: "the connection was reset".into(),
                        })]))
                        .boxed(),
                }
            });
            object_store::GetResult {
                payload: GetResultPayload::Stream(body.boxed()),
                meta,
                range,
                attributes,
                extensions,
            }
        }
    }

    /// An object of `len` bytes in memory, its first range answered by `tap`.
    async fn held(len: usize, tap: Arc<HeldFirstRange>) -> (Store, ObjectMeta, Vec<u8>) {
        let inner = Arc::new(object_store::memory::InMemory::new());
        let bytes = crate::testing::noise(len, 7);
        let path = Path::from("root/k.tar.zst");
        inner.put(&path, bytes.clone().into()).await.unwrap();
        let meta = inner.head(&path).await.unwrap();
        let tapped = Arc::new(crate::testing::Tapped { inner, tap });
        let opened = super::super::Opened {
            store: tapped,
            location: "memory".into(),
            scratch: super::super::Scratch::None,
        };
        let meta = ObjectMeta {
            location: Path::from("k.tar.zst"),
            ..meta
        };
        (Store::new(Backend::Memory, opened, "root"), meta, bytes)
    }

    /// Reads `download` on a blocking thread: returns the first `SENT`
    /// bytes as soon as the reader has them (failing the test if that takes
    /// 10 s: it waited for the held rest), and the task that reads the rest.
    async fn first_bytes_then_rest(
        download: Download,
    ) -> (Vec<u8>, tokio::task::JoinHandle<io::Result<Vec<u8>>>) {
        let (first_tx, first_rx) = oneshot::channel();
        let reader = tokio::task::spawn_blocking(move || {
            let mut reader = download.into_reader();
            let mut first = vec![0; SENT];
            reader.read_exact(&mut first)?;
            let _ = first_tx.send(first);
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
            Ok(rest)
        });
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), first_rx)
            .await
            .expect("the reader got nothing of the first range before all of it arrived")
            .unwrap();
        (first, reader)
    }

    /// Checks that the reader read `expected` after the first bytes.
    async fn rest_is(reader: tokio::task::JoinHandle<io::Result<Vec<u8>>>, expected: &[u8]) {
        let rest = reader.await.unwrap().unwrap();
        assert!(rest == expected, "the rest differs ({} bytes)", rest.len());
    }

    /// The reader gets a range's bytes as they arrive, not once the range
    /// is whole: it works while the rest is on the way, and after the last
    /// byte only the last few bytes are left to unpack.
    #[tokio::test]
    async fn the_reader_has_a_range_s_first_bytes_before_its_last_arrive() {
        let (release, rest) = oneshot::channel();
        let tap = Arc::new(HeldFirstRange::new(Some(rest), Then::Rest));
        let (store, meta, bytes) = held(3 << 20, tap).await;
        let download = download(store, meta, Head::none(), Cancel::new())
            .await
            .unwrap();
        let (first, reader) = first_bytes_then_rest(download).await;
        assert!(first == bytes[..SENT], "the first bytes differ");
        release.send(()).unwrap();
        rest_is(reader, &bytes[SENT..]).await;
    }

    /// Reads a 3 MiB object whose first range the tap ends with `then`, to
    /// the failure: what the reader got, its error, and the failure kept
    /// for it; and the object's bytes.
    async fn failed_read(then: Then) -> (Vec<u8>, io::Error, String, Vec<u8>) {
        let tap = Arc::new(HeldFirstRange::new(None, then));
        let (store, meta, bytes) = held(3 << 20, tap).await;
        let download = download(store, meta, Head::none(), Cancel::new())
            .await
            .unwrap();
        let failure = download.failure_handle();
        let (read, error) = tokio::task::spawn_blocking(move || {
            let mut read = Vec::new();
            let error = download.into_reader().read_to_end(&mut read).unwrap_err();
            (read, error)
        })
        .await
        .unwrap();
        let failure = failure
            .get()
            .expect("the failure is kept for the reader's error")
            .clone();
        (read, error, failure, bytes)
    }

    /// A range whose body ends early fails the download, naming the range
    /// and how far it got; the reader never sees the bytes after the cut
    /// as if they were the entry's.
    #[tokio::test]
    async fn a_range_cut_short_fails_the_download_naming_the_range() {
        let (read, error, failure, bytes) = failed_read(Then::End).await;
        assert!(
            read == bytes[..SENT],
            "the reader got {} bytes, not the {SENT} sent before the cut",
            read.len()
        );
        let first = ramp(0, RANGE_SIZE);
        let expected = format!(
            "memory download of bytes 0..{first} of 'root/k.tar.zst' in memory: the download \
             stopped after {SENT} bytes"
        );
        assert_eq!(failure, expected);
        assert!(error.to_string().contains(&expected), "{error}");
    }

    /// A range whose body fails part way fails the download with the
    /// storage's error, said once.
    #[tokio::test]
    async fn a_range_failing_part_way_fails_the_download_with_the_storage_error() {
        let (_, error, failure, _) = failed_read(Then::Fail).await;
        assert!(failure.contains("the connection was reset"), "{failure}");
        assert_eq!(failure.matches("download of").count(), 1, "{failure}");
        assert!(error.to_string().contains(&failure), "{error}");
    }

    /// While the reader waits for the first range, the others that have
    /// arrived make room for new ones: the link keeps carrying bytes. The
    /// reader-side queue bounds them: `DOWNLOAD_CONCURRENCY` ranges queued,
    /// the first, and one started but not yet queued; no more.
    #[tokio::test]
    async fn ranges_that_arrived_make_room_for_new_ones_while_the_reader_waits() {
        let (release, rest) = oneshot::channel();
        let tap = Arc::new(HeldFirstRange::new(Some(rest), Then::Rest));
        let (store, meta, bytes) = held(40 << 20, Arc::clone(&tap)).await;
        let download = download(store, meta, Head::none(), Cancel::new())
            .await
            .unwrap();
        let bound = DOWNLOAD_CONCURRENCY + 2;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while tap.reads() < bound && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            tap.reads(),
            bound,
            "ranges asked for while the first was held (only {DOWNLOAD_CONCURRENCY} \
             when new ones wait for the reader to take the first)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(tap.reads(), bound, "more ranges than the queue holds");
        release.send(()).unwrap();
        let read = tokio::task::spawn_blocking(move || {
            let mut read = Vec::new();
            download.into_reader().read_to_end(&mut read).map(|_| read)
        })
        .await
        .unwrap()
        .unwrap();
        assert!(
            read == bytes,
            "the entry read back differs ({} bytes)",
            read.len()
        );
    }

    /// The lookup's read of an archive's first range (`Head::Arriving`) is
    /// the download's first range: the reader gets its bytes as they
    /// come, and the next ranges are asked for meanwhile, not after it.
    #[tokio::test]
    async fn the_ranges_after_the_lookups_read_start_while_it_arrives() {
        let (release, rest) = oneshot::channel();
        let tap = Arc::new(HeldFirstRange::new(Some(rest), Then::Rest));
        let (store, meta, bytes) = held(30 << 20, Arc::clone(&tap)).await;
        let options = GetOptions {
            range: Some((0..RANGE_SIZE).into()),
            ..GetOptions::default()
        };
        let lookup = store
            .inner()
            .get_opts(&meta.location, options)
            .await
            .unwrap();
        let head = Head::Arriving {
            body: lookup.into_stream(),
            len: RANGE_SIZE,
        };
        let download = download(store, meta, head, Cancel::new()).await.unwrap();
        let (first, reader) = first_bytes_then_rest(download).await;
        assert!(first == bytes[..SENT], "the first bytes differ");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while tap.reads() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            tap.reads() >= 2,
            "no range after the lookup's was asked for while it arrived"
        );
        release.send(()).unwrap();
        rest_is(reader, &bytes[SENT..]).await;
    }
}
