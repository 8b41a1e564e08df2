//! Packs: the chunks a rebuild uploads, written a few MiB at a time into one
//! object each (`packs/<id>.pack`), with a catalog beside it
//! (`packs/<id>.catalog`) naming the chunks inside and where they are.
//!
//! One object per chunk cost a request per chunk: 1,665 requests for the
//! benchmark corpus, which showed on S3 and most over a real link. Packed,
//! a restore reads runs of chunks that lie side by side with one ranged
//! request each (borg and restic store chunks the same way, for the same
//! reason). A pack is written before its catalog, and the catalog is what
//! makes its chunks known to later rebuilds: a pack without one (a killed
//! rebuild's) is never relied on, and flush removes it like any unused
//! object.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tokio_util::task::AbortOnDropHandle;
use tracing::warn;

use super::ChunkRef;
use crate::storage::Store;

/// The folder of the packs and their catalogs, inside the repository's folder.
pub const PACKS: &str = "packs";

/// A pack is sealed and uploaded once it holds this much: small enough for
/// a few to upload at once in little memory and for flush to free space
/// pack by pack, large enough that a corpus of 190 MB makes ~25 packs.
pub const PACK_SIZE: usize = 8 << 20;

/// The smallest size packs are sealed at as a stream nears its end.
pub const SMALLEST_PACK: usize = 2 << 20;

const CATALOG_FORMAT: &str = "larder-pack-catalog";

/// Catalogs read at once when a rebuild learns what the folder holds:
/// over a 20 ms link, 279 packs' took 240-270 ms 32 at a time, 130-160 ms
/// 64 at a time (each read in flight holds a connection of its own).
const CATALOG_READS: usize = 64;

/// A new pack's name: random, so two rebuilds never write the same object.
pub fn new_pack_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `id` can name a pack (32 lowercase hex digits).
pub fn is_pack_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub fn pack_path(id: &str) -> Path {
    Path::from(format!("{PACKS}/{id}.pack"))
}

pub fn catalog_path(id: &str) -> Path {
    Path::from(format!("{PACKS}/{id}.catalog"))
}

/// The pack a path in `packs/` belongs to, and whether it is the catalog.
pub fn parse_name(path: &Path) -> Option<(&str, bool)> {
    let name = path.filename()?;
    let (id, catalog) = match (name.strip_suffix(".pack"), name.strip_suffix(".catalog")) {
        (Some(id), _) => (id, false),
        (_, Some(id)) => (id, true),
        _ => return None,
    };
    is_pack_id(id).then_some((id, catalog))
}

/// What a catalog says: the chunks of one pack, in the order written.
#[derive(Debug, Serialize, Deserialize)]
pub struct Catalog {
    format: String,
    pub chunks: Vec<ChunkRef>,
}

impl Catalog {
    pub fn new(chunks: Vec<ChunkRef>) -> Catalog {
        Catalog {
            format: CATALOG_FORMAT.into(),
            chunks,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn parse(bytes: &[u8], pack: &str) -> Result<Catalog, String> {
        let catalog: Catalog = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if catalog.format != CATALOG_FORMAT {
            return Err(format!("its format is '{}'", catalog.format));
        }
        let wrong = catalog.chunks.iter().find(|c| {
            !super::is_chunk_id(&c.id)
                || c.frame.as_deref().is_some_and(|f| !super::is_chunk_id(f))
                || c.pack.as_deref() != Some(pack)
                || c.stored == 0
        });
        match wrong {
            Some(chunk) => Err(format!("it names chunk '{}' wrongly", chunk.id)),
            None => Ok(catalog),
        }
    }
}

/// Chunks being gathered into a pack.
pub struct Packer {
    /// Sealed once it holds this many bytes.
    size: usize,
    id: String,
    bytes: Vec<u8>,
    chunks: Vec<ChunkRef>,
}

/// A chunk new to the folder, compressed for its pack.
pub struct NewChunk {
    pub id: String,
    /// Uncompressed bytes.
    pub size: u64,
    /// One zstd frame.
    pub compressed: Vec<u8>,
    /// Its hash (`frame_hash`).
    pub frame: String,
}

/// A pack ready to upload.
pub struct Sealed {
    pub id: String,
    pub bytes: Vec<u8>,
    pub catalog: Catalog,
}

impl Packer {
    pub fn new(size: usize) -> Packer {
        Packer {
            size,
            id: String::new(),
            bytes: Vec::new(),
            chunks: Vec::new(),
        }
    }

    /// Adds a compressed chunk; returns its reference, and the pack once it
    /// holds `seal_at` bytes (see `seal_size`).
    pub fn add(&mut self, new: NewChunk, seal_at: usize) -> (ChunkRef, Option<Sealed>) {
        let NewChunk {
            id,
            size,
            compressed,
            frame,
        } = new;
        if self.chunks.is_empty() {
            self.id = new_pack_id();
            self.bytes.reserve(self.size + compressed.len());
        }
        let chunk = ChunkRef {
            id,
            size,
            stored: compressed.len() as u64,
            pack: Some(self.id.clone()),
            offset: self.bytes.len() as u64,
            frame: Some(frame),
        };
        self.bytes.extend_from_slice(&compressed);
        self.chunks.push(chunk.clone());
        let sealed = (self.bytes.len() >= seal_at.min(self.size))
            .then(|| self.seal())
            .flatten();
        (chunk, sealed)
    }

    /// The pack as it is, if it holds anything.
    pub fn seal(&mut self) -> Option<Sealed> {
        if self.chunks.is_empty() {
            return None;
        }
        Some(Sealed {
            id: std::mem::take(&mut self.id),
            bytes: std::mem::take(&mut self.bytes),
            catalog: Catalog::new(std::mem::take(&mut self.chunks)),
        })
    }
}

/// The size a pack of a stream is sealed at, `read` bytes of an `expected`
/// into the (uncompressed) stream, `uploaded` bytes of packs so far: the
/// `full` size until the end is near, then a quarter of what is still to
/// upload (the stream still to come, compressed as its new chunks were so
/// far), down to `SMALLEST_PACK`. The packs still going up when the stream
/// ends are then small: over a link, a rebuild waited after its last byte
/// for whole 8 MiB packs to go up. Packs shrink only over the last ~4 full
/// ones: a few more requests, no more for a stream with few new chunks.
pub fn seal_size(full: usize, (read, expected): (u64, u64), uploaded: u64) -> usize {
    if read == 0 {
        return full;
    }
    let left = u128::from(expected.saturating_sub(read));
    let to_upload = left * u128::from(uploaded) / u128::from(read);
    usize::try_from(to_upload / 4)
        .unwrap_or(usize::MAX)
        .clamp(SMALLEST_PACK.min(full), full)
}

/// The packs folder's listing, for `known`: a rebuild lists it while it
/// reads which packs to avoid, a round trip less than one after the other.
pub async fn list(store: &Store) -> anyhow::Result<Vec<ObjectMeta>> {
    let prefix = Path::from(PACKS);
    store
        .inner()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| store.error("listing of", &prefix, e))
}

/// The chunks the folder's packs hold (by id, as `known` reads them),
/// while they are still being read: a rebuild archives, cuts and hashes
/// its stream meanwhile, and only deciding whether a chunk is new waits
/// for them. Over a 20 ms link a folder of 279 packs took 130-160 ms to
/// read, which the archiving waited for.
#[derive(Clone)]
pub struct Known(Shared<BoxFuture<'static, Result<KnownChunks, Arc<anyhow::Error>>>>);

pub type KnownChunks = Arc<HashMap<String, ChunkRef>>;

impl Known {
    /// Chunks known at once (none, for a rebuild that trusts no stored chunk).
    pub fn ready(chunks: HashMap<String, ChunkRef>) -> Known {
        Known(
            futures::future::ready(Ok(Arc::new(chunks)))
                .boxed()
                .shared(),
        )
    }

    /// The chunks `reading` finds, read on a task of its own (whether or
    /// not anyone waits yet), which stops when every copy of this is gone.
    pub fn reading(
        reading: impl Future<Output = anyhow::Result<HashMap<String, ChunkRef>>> + Send + 'static,
    ) -> Known {
        let task = AbortOnDropHandle::new(tokio::spawn(reading));
        let read = async move {
            match task.await {
                Ok(read) => read.map(Arc::new).map_err(Arc::new),
                Err(e) => Err(Arc::new(anyhow::anyhow!(
                    "reading the packs' catalogs stopped unexpectedly: {e}"
                ))),
            }
        };
        Known(read.boxed().shared())
    }

    /// The chunks, once read; the reading's error if it failed.
    pub async fn get(&self) -> anyhow::Result<KnownChunks> {
        self.0.clone().await.map_err(|e| anyhow::anyhow!("{e:#}"))
    }
}

/// The chunks stored in the folder's packs (`listing`, from `list`), by
/// id, leaving out the packs in `avoided` (object names: condemned or
/// retired ones, see `gc` and `sparse`). When two packs hold a chunk, the
/// newer catalog wins: a rebuild that replaced a damaged entry wrote it last.
pub async fn known(
    store: &Store,
    listing: &[ObjectMeta],
    avoided: &HashSet<String>,
) -> anyhow::Result<HashMap<String, ChunkRef>> {
    let packs: HashSet<&str> = listing
        .iter()
        .filter_map(|m| parse_name(&m.location))
        .filter(|(_, catalog)| !catalog)
        .map(|(id, _)| id)
        .filter(|id| !avoided.contains(pack_path(id).as_ref()))
        .collect();
    // Owned names: the reading runs on a task of its own (see `Known`).
    let catalogs: Vec<(String, DateTime<Utc>)> = listing
        .iter()
        .filter_map(|m| Some((parse_name(&m.location)?, m.last_modified)))
        .filter(|((id, catalog), _)| *catalog && packs.contains(id))
        .map(|((id, _), at)| (id.to_string(), at))
        .collect();
    let mut read: Vec<(DateTime<Utc>, Catalog)> = futures::stream::iter(catalogs)
        .map(|(id, at)| async move {
            Ok::<_, anyhow::Error>(read_catalog(store, &id).await?.map(|c| (at, c)))
        })
        .buffer_unordered(CATALOG_READS)
        .try_filter_map(|c| async move { Ok(c) })
        .try_collect()
        .await?;
    read.sort_by_key(|(at, _)| *at);
    Ok(read
        .into_iter()
        .flat_map(|(_, c)| c.chunks)
        .map(|c| (c.id.clone(), c))
        .collect())
}

/// One pack's catalog; `None` (with a warning) when it is gone or does not
/// check out, so its chunks are stored again rather than trusted.
async fn read_catalog(store: &Store, id: &str) -> anyhow::Result<Option<Catalog>> {
    let path = catalog_path(id);
    let Some((bytes, _)) = store
        .read(&path)
        .await
        .with_context(|| format!("cannot learn which chunks pack '{id}' holds"))?
    else {
        return Ok(None);
    };
    match Catalog::parse(&bytes, id) {
        Ok(catalog) => Ok(Some(catalog)),
        Err(why) => {
            warn!(
                "rebuild: the catalog '{}' does not check out ({why}); its chunks are stored \
                 again",
                store.full(&path)
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(n: u8, compressed: Vec<u8>) -> NewChunk {
        NewChunk {
            id: super::super::chunk_id(&[n]),
            size: 10,
            frame: super::super::frame_hash(&compressed),
            compressed,
        }
    }

    /// Packs are full-sized until the end of the stream is near, then
    /// shrink to a quarter of what is left to upload, down to the smallest.
    #[test]
    fn packs_shrink_as_the_stream_nears_its_end() {
        const MIB: u64 = 1 << 20;
        let full = PACK_SIZE;
        // 600 MiB of tar compressing to a third: 200 MiB to upload.
        let at = |read: u64| seal_size(full, (read * MIB, 600 * MIB), read * MIB / 3);
        assert_eq!(at(0), full, "nothing read yet");
        assert_eq!(at(300), full, "100 MiB still to upload");
        assert_eq!(at(600 - 96), full, "32 MiB still to upload");
        assert_eq!(at(600 - 48), 4 << 20, "16 MiB still to upload");
        assert_eq!(at(600 - 12), SMALLEST_PACK, "4 MiB still to upload");
        assert_eq!(at(600), SMALLEST_PACK, "at the end");
        assert_eq!(at(700), SMALLEST_PACK, "past a low estimate");
        // A stream with few new chunks uploads little: its packs stay small
        // as they would be anyway, never below the smallest.
        assert_eq!(seal_size(full, (300 * MIB, 600 * MIB), MIB), SMALLEST_PACK);
        // Packs smaller than the smallest (a test's) stay as they are.
        assert_eq!(
            seal_size(1 << 20, (600 * MIB, 600 * MIB), 200 * MIB),
            1 << 20
        );
    }

    #[test]
    fn a_packer_places_chunks_side_by_side_and_seals_when_full() {
        let mut packer = Packer::new(PACK_SIZE);
        let (a, sealed) = packer.add(new(1, vec![1; 5]), PACK_SIZE);
        assert!(sealed.is_none());
        let (b, _) = packer.add(new(2, vec![2; 7]), PACK_SIZE);
        assert_eq!((a.offset, a.stored, b.offset, b.stored), (0, 5, 5, 7));
        assert_eq!(a.pack, b.pack);
        assert_eq!(b.frame, Some(super::super::frame_hash(&[2; 7])));
        let pack = a.pack.clone().unwrap();
        assert!(is_pack_id(&pack));
        let (_, full) = packer.add(new(3, vec![3; PACK_SIZE]), PACK_SIZE);
        let full = full.expect("a full pack is sealed");
        assert_eq!(full.id, pack);
        assert_eq!(full.bytes.len(), 12 + PACK_SIZE);
        assert_eq!(&full.bytes[5..12], &[2; 7]);
        assert_eq!(full.catalog.chunks.len(), 3);
        let json = full.catalog.to_json();
        let parsed = Catalog::parse(&json, &pack).expect("a catalog reads back");
        assert_eq!(parsed.chunks[1], b, "frame hashes and all");
        assert!(
            Catalog::parse(&json, &new_pack_id()).is_err(),
            "a catalog names its own pack"
        );
        let mut odd = full.catalog;
        odd.chunks[0].frame = Some("xyz".into());
        assert!(
            Catalog::parse(&odd.to_json(), &pack).is_err(),
            "a frame hash is a hash"
        );
        assert!(packer.seal().is_none());
        let (c, _) = packer.add(new(4, vec![4]), PACK_SIZE);
        assert_ne!(
            c.pack.as_deref(),
            Some(pack.as_str()),
            "a new pack after a seal"
        );
    }

    #[test]
    fn names_in_the_packs_folder_are_told_apart() {
        let id = new_pack_id();
        assert_eq!(parse_name(&pack_path(&id)), Some((id.as_str(), false)));
        assert_eq!(parse_name(&catalog_path(&id)), Some((id.as_str(), true)));
        assert_eq!(parse_name(&Path::from("packs/x.pack")), None);
        assert_eq!(parse_name(&Path::from("packs/a.tmp")), None);
    }
}
