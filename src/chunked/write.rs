//! Storing a tar stream as chunks: cut it (on its own thread), hash each
//! chunk, and compress only those the repository's folder does not hold
//! yet, several at a time; the new ones are gathered into packs, which
//! upload while the stream goes on. The chunk references come back in
//! stream order, ready for the index.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use futures::StreamExt;
use object_store::PutMode;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::cache::ChunkCache;
use super::cutter::Cutter;
use super::pack::{Known, NewChunk, Packer, Sealed, catalog_path, pack_path, seal_size};
use super::{ChunkRef, Params, chunk_id, frame_hash};
use crate::progress::Progress;
use crate::storage::Store;

/// Chunks hashed or compressed at once.
const IN_FLIGHT: usize = 32;

/// Packs uploading at once (8 MiB each, and each then its catalog). Over a
/// 20 ms, 1 Gbit/s link, four kept the stream waiting for a free slot
/// 0.22-0.44 s of a rebuild's 2.5 s (on loopback 0.06-0.11 s): a pack holds
/// its slot for its transfer, shared with the others, and two round trips.
/// Eight: 0.12-0.14 s, and rebuilds over that link took 0.954 of the time
/// (10 pairs), on loopback 0.986; sixteen gained nothing more (0.992).
const PACKS_IN_FLIGHT: usize = 8;

/// What storing the chunks of one stream needs.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    /// Chunks the folder's packs hold (condemned packs left out: a chunk
    /// only there is stored again, in a new pack), perhaps still being read.
    pub known: Known,
    pub params: Params,
    pub level: i32,
    pub pack_size: usize,
    /// About how long the stream is: packs shrink as it nears its end.
    pub expected: u64,
    pub cache: Option<ChunkCache>,
    pub progress: Progress,
}

/// The stream as stored.
#[derive(Debug, Default)]
pub struct Stored {
    pub chunks: Vec<ChunkRef>,
    /// Chunks uploaded by this rebuild, and their stored bytes.
    pub uploaded: u64,
    pub uploaded_bytes: u64,
    /// Objects written: packs and their catalogs.
    pub objects: u64,
    /// How long packing waited for a free upload slot.
    pub waited: Duration,
}

/// The packs still going up once the stream has ended: the rebuild checks
/// its claim meanwhile, and publishes its index once the packs themselves
/// are stored, while their catalogs go up (an index names packs, never
/// catalogs). Over a link, each is a round trip saved at the end of the
/// rebuild. Dropping it aborts the uploads.
pub struct Uploads {
    tasks: JoinSet<anyhow::Result<()>>,
    /// One per pack, sent once the pack itself is stored.
    packs: Vec<oneshot::Receiver<()>>,
}

impl Uploads {
    /// Waits until every pack is stored (its catalog may still be going up).
    pub async fn packs_stored(&mut self) -> anyhow::Result<()> {
        for pack in std::mem::take(&mut self.packs) {
            if pack.await.is_err() {
                // Its task ended without storing it: the task's error says why.
                settle(&mut self.tasks, 0).await?;
                return Err(anyhow!("a pack upload stopped before storing its pack"));
            }
        }
        Ok(())
    }

    /// Waits until every pack and catalog is stored.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        settle(&mut self.tasks, 0).await.map(drop)
    }

    /// Lets the catalogs still going up land, when no index will name the
    /// packs: their chunks are then known to later rebuilds. A catalog that
    /// fails only leaves its pack to flush.
    pub async fn finish_quietly(self) {
        if let Err(e) = self.finish().await {
            tracing::debug!("a catalog of a pack no index names was not stored: {e:#}");
        }
    }
}

/// One chunk once hashed.
enum Hashed {
    /// The folder holds it already.
    Known(ChunkRef),
    /// New, compressed for its pack.
    New(NewChunk),
    /// New, and an earlier place in this stream has it.
    Repeated(String),
}

/// Cuts the stream arriving on `pieces` into chunks and stores the new
/// ones; returns when the stream has ended, with its last packs still
/// going up. Stops at the first failure; packs already uploaded stay
/// (flush removes those no index names).
pub async fn store_stream(
    ctx: &Context,
    pieces: mpsc::Receiver<Bytes>,
) -> anyhow::Result<(Stored, Uploads)> {
    let (chunk_tx, mut chunk_rx) = mpsc::channel::<Bytes>(IN_FLIGHT * 2);
    let params = ctx.params;
    let cutting = tokio::task::spawn_blocking(move || cut(pieces, params, chunk_tx));
    let stored = pack_chunks(
        ctx,
        futures::stream::poll_fn(move |cx| chunk_rx.poll_recv(cx)),
    )
    .await;
    // A failed upload drops the receiver, which stops the cutter.
    let cut = cutting
        .await
        .map_err(|e| anyhow!("cutting the archive into chunks stopped unexpectedly: {e}"));
    let stored = stored?;
    cut?.context("cannot cut the archive into chunks")?;
    Ok(stored)
}

/// Hashes the chunks (compressing the new ones) several at a time, then
/// takes them in order: known ones as they are, new ones into packs.
async fn pack_chunks(
    ctx: &Context,
    chunks: impl futures::Stream<Item = Bytes>,
) -> anyhow::Result<(Stored, Uploads)> {
    let scheduled = Arc::new(Mutex::new(HashSet::new()));
    let mut hashed = std::pin::pin!(
        chunks
            .map(|chunk| hash(ctx, chunk, Arc::clone(&scheduled)))
            .buffered(IN_FLIGHT)
    );
    let mut stored = Stored::default();
    let mut packer = Packer::new(ctx.pack_size);
    let mut uploads = Uploads {
        tasks: JoinSet::new(),
        packs: Vec::new(),
    };
    let mut new: HashMap<String, ChunkRef> = HashMap::new();
    let mut read = 0;
    while let Some(chunk) = hashed.next().await {
        let chunk = match chunk? {
            Hashed::Known(chunk) => chunk,
            Hashed::Repeated(id) => new
                .get(&id)
                .cloned()
                .ok_or_else(|| anyhow!("chunk {id} repeats one that was never stored"))?,
            Hashed::New(chunk) => {
                ctx.progress.sent(chunk.compressed.len() as u64);
                let seal_at = seal_size(ctx.pack_size, (read, ctx.expected), stored.uploaded_bytes);
                let (chunk, sealed) = packer.add(chunk, seal_at);
                stored.uploaded += 1;
                stored.uploaded_bytes += chunk.stored;
                new.insert(chunk.id.clone(), chunk.clone());
                if let Some(sealed) = sealed {
                    start_upload(ctx, &mut uploads, sealed, &mut stored).await?;
                }
                chunk
            }
        };
        read += chunk.size;
        stored.chunks.push(chunk);
    }
    if let Some(sealed) = packer.seal() {
        start_upload(ctx, &mut uploads, sealed, &mut stored).await?;
    }
    Ok((stored, uploads))
}

/// Waits until at most `most` uploads are in flight (all done, for 0), and
/// returns how long that took: time the stream waited for storage.
async fn settle(
    uploads: &mut JoinSet<anyhow::Result<()>>,
    most: usize,
) -> anyhow::Result<Duration> {
    let asked = std::time::Instant::now();
    while uploads.len() > most {
        if let Some(done) = uploads.join_next().await {
            done.map_err(|e| anyhow!("a pack upload stopped unexpectedly: {e}"))??;
        }
    }
    Ok(asked.elapsed())
}

/// Starts uploading a pack, first waiting for one to finish if enough are
/// in flight (the set aborts the others if this returns an error).
async fn start_upload(
    ctx: &Context,
    uploads: &mut Uploads,
    sealed: Sealed,
    stored: &mut Stored,
) -> anyhow::Result<()> {
    stored.waited += settle(&mut uploads.tasks, PACKS_IN_FLIGHT - 1).await?;
    stored.objects += 2;
    let (store, progress) = (ctx.store.clone(), ctx.progress.clone());
    let (pack_stored, pack) = oneshot::channel();
    uploads.packs.push(pack);
    uploads
        .tasks
        .spawn(async move { upload(&store, sealed, &progress, pack_stored).await });
    Ok(())
}

/// Writes a pack, says so on `pack_stored`, then writes its catalog: a
/// catalog always names a whole pack.
async fn upload(
    store: &Store,
    sealed: Sealed,
    progress: &Progress,
    pack_stored: oneshot::Sender<()>,
) -> anyhow::Result<()> {
    let Sealed { id, bytes, catalog } = sealed;
    let size = bytes.len() as u64;
    store.write(&pack_path(&id), bytes, PutMode::Create).await?;
    progress.uploaded(size);
    // (The rebuild may have stopped waiting: it failed.)
    let _ = pack_stored.send(());
    store
        .write(&catalog_path(&id), catalog.to_json(), PutMode::Create)
        .await?;
    Ok(())
}

/// The cutter's thread: reads the tar stream's pieces and sends chunks on.
fn cut(
    mut pieces: mpsc::Receiver<Bytes>,
    params: Params,
    out: mpsc::Sender<Bytes>,
) -> io::Result<()> {
    let sink = |chunk: Bytes| {
        out.blocking_send(chunk)
            .map_err(|_| io::Error::other("the upload of the chunks stopped"))
    };
    let mut cutter = Cutter::new(params, sink);
    while let Some(piece) = pieces.blocking_recv() {
        cutter.write_all(&piece)?;
    }
    cutter.finish().map(drop)
}

/// Hashes one chunk, and compresses it if it is new and its first copy in
/// the stream.
async fn hash(
    ctx: &Context,
    chunk: Bytes,
    scheduled: Arc<Mutex<HashSet<String>>>,
) -> anyhow::Result<Hashed> {
    let level = ctx.level;
    let size = chunk.len() as u64;
    let id = {
        let chunk = chunk.clone();
        tokio::task::spawn_blocking(move || chunk_id(&chunk))
            .await
            .map_err(|e| anyhow!("hashing a chunk stopped unexpectedly: {e}"))?
    };
    // The first chunks wait here while the catalogs are still being read.
    let known = ctx.known.get().await?;
    if let Some(stored) = known.get(&id) {
        return Ok(Hashed::Known(ChunkRef {
            size,
            ..stored.clone()
        }));
    }
    // (A poisoned lock still holds a valid set.)
    let first = scheduled
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone());
    if !first {
        return Ok(Hashed::Repeated(id));
    }
    // With a runner cache, the chunk's own bytes go there (it keeps them
    // uncompressed).
    let kept = ctx.cache.as_ref().map(|cache| (cache, chunk.clone()));
    let (compressed, frame) = tokio::task::spawn_blocking(move || {
        compress(&chunk, level).map(|frame| {
            let hash = frame_hash(&frame);
            (frame, hash)
        })
    })
    .await
    .map_err(|e| anyhow!("compressing a chunk stopped unexpectedly: {e}"))?
    .context("cannot compress a chunk")?;
    // Kept for this runner's next restores here, several at a time, not in
    // the ordered loop that packs them.
    if let Some((cache, chunk)) = kept {
        cache.put(vec![(id.clone(), chunk)]).await;
    }
    Ok(Hashed::New(NewChunk {
        id,
        size,
        compressed,
        frame,
    }))
}

/// One zstd frame with its content size and checksum, so `zstd -d` checks
/// an exported entry too. Each thread keeps its compressor.
pub(super) fn compress(chunk: &[u8], level: i32) -> io::Result<Vec<u8>> {
    use std::cell::RefCell;
    use zstd::bulk::Compressor;
    use zstd::stream::raw::CParameter;
    thread_local! {
        static COMPRESSOR: RefCell<Option<(i32, Compressor<'static>)>> = const { RefCell::new(None) };
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let mut compressor = Compressor::new(level)?;
            compressor.set_parameter(CParameter::ChecksumFlag(true))?;
            *slot = Some((level, compressor));
        }
        match slot.as_mut() {
            Some((_, compressor)) => compressor.compress(chunk),
            None => Err(io::Error::other("no compressor")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Backend, Opened, Scratch};

    /// The stream is cut and hashed while what the folder holds is still
    /// being read: only deciding whether a chunk is new waits for it. (The
    /// rebuild read every pack's catalog before it began archiving.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stream_is_cut_and_hashed_while_the_catalogs_are_read() {
        let data = crate::testing::noise(4 << 20, 5);
        // The catalogs are read once `read_tx` says so.
        let (read_tx, read_rx) = oneshot::channel::<()>();
        let known = Known::reading(async move {
            read_rx.await.ok();
            Ok(HashMap::new())
        });
        let ctx = in_memory(known, data.len() as u64);
        let store = ctx.store.clone();
        let (tx, rx) = mpsc::channel(1);
        let storing = tokio::spawn(async move { store_stream(&ctx, rx).await });
        // A MiB goes in while the catalogs are still being read: it is
        // taken off the channel, cut and hashed (the channel holds one
        // piece). Not taken, this waits for the patience and fails.
        let pieces: Vec<Bytes> = data.chunks(64 << 10).map(Bytes::copy_from_slice).collect();
        let patience = Duration::from_secs(20);
        for piece in &pieces[..16] {
            let sent = tokio::time::timeout(patience, tx.send(piece.clone())).await;
            assert!(
                matches!(sent, Ok(Ok(()))),
                "the stream waited for the catalogs"
            );
        }
        assert_eq!(store_names(&store).await, Vec::<String>::new());
        read_tx.send(()).unwrap();
        for piece in &pieces[16..] {
            tx.send(piece.clone()).await.unwrap();
        }
        drop(tx);
        let (stored, uploads) = storing.await.unwrap().unwrap();
        uploads.finish().await.unwrap();
        let bytes: u64 = stored.chunks.iter().map(|c| c.size).sum();
        assert_eq!(bytes, data.len() as u64);
        assert_eq!(stored.uploaded, stored.chunks.len() as u64);
        assert!(!store_names(&store).await.is_empty());
    }

    /// A failed reading of the catalogs fails the stream with its error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_reading_of_the_catalogs_stops_the_stream() {
        let known = Known::reading(async { Err(anyhow!("cannot read catalog 'packs/x.catalog'")) });
        let ctx = in_memory(known, 1 << 20);
        let (tx, rx) = mpsc::channel(4);
        let storing = tokio::spawn(async move { store_stream(&ctx, rx).await });
        for piece in crate::testing::noise(1 << 20, 6).chunks(64 << 10) {
            if tx.send(Bytes::copy_from_slice(piece)).await.is_err() {
                break;
            }
        }
        drop(tx);
        let failed = storing.await.unwrap().err().expect("the stream failed");
        assert!(
            format!("{failed:#}").contains("cannot read catalog 'packs/x.catalog'"),
            "{failed:#}"
        );
    }

    /// Storing into an in-memory store, small chunks in packs of 1 MiB.
    fn in_memory(known: Known, expected: u64) -> Context {
        let opened = Opened {
            store: Arc::new(object_store::memory::InMemory::new()),
            location: "memory".into(),
            scratch: Scratch::None,
        };
        Context {
            store: Store::new(Backend::Memory, opened, "repo"),
            known,
            params: Params::SMALL,
            level: 1,
            pack_size: 1 << 20,
            expected,
            cache: None,
            progress: Progress::start(crate::progress::Kind::Rebuild),
        }
    }

    async fn store_names(store: &Store) -> Vec<String> {
        use futures::TryStreamExt;
        let listed: Vec<_> = store.inner().list(None).try_collect().await.unwrap();
        listed.iter().map(|m| m.location.to_string()).collect()
    }
}
