//! A runner-local chunk cache: a directory on a volume the runner keeps
//! between builds. Restores read the chunks they find there instead of
//! downloading them, and rebuilds leave the chunks they upload. It only
//! ever supplies bytes, each checked against its name (the BLAKE3 of its
//! bytes) before use; it is never taken as evidence that storage holds a
//! chunk.
//!
//! Chunks are kept uncompressed (`<2 hex>/<id>.chunk`, the chunk's tar
//! bytes): decompressing was 40 % of a warm restore's CPU time, and a
//! restore from the cache now only reads and hashes. It takes about 3.3
//! times the disk space of the compressed chunks (see the README). Files
//! of the first layout (compressed frames, named by the id alone) are
//! removed by the next trim.

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tracing::debug;
use walkdir::WalkDir;

/// A kept chunk's file name ends so.
const CHUNK_EXTENSION: &str = "chunk";

#[derive(Clone, Debug)]
pub struct ChunkCache {
    /// The cache's folder for this repository (`<dir>/<remote_root>`).
    dir: PathBuf,
    /// The whole cache directory, trimmed as one.
    top: PathBuf,
    max_bytes: u64,
    /// Taken while chunks are written: one write at a time. A rebuild
    /// keeps chunks 32 at a time, and so many writers at once spent four
    /// times the system time of one on tmpfs (contending for its locks).
    writing: Arc<tokio::sync::Mutex<()>>,
}

/// What a trim removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub files: u64,
    pub bytes: u64,
    /// What the cache holds after the trim.
    pub kept_bytes: u64,
}

impl ChunkCache {
    pub fn new(top: &Path, remote_root: &str, max_bytes: u64) -> ChunkCache {
        let root = remote_root.trim_matches('/');
        ChunkCache {
            dir: if root.is_empty() {
                top.join("_")
            } else {
                top.join(root)
            },
            top: top.to_path_buf(),
            max_bytes,
            writing: Arc::default(),
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir
            .join(&id[..2.min(id.len())])
            .join(format!("{id}.{CHUNK_EXTENSION}"))
    }

    /// Whether the cache has chunk `id` (a restore then does not ask
    /// storage for it, unless the copy turns out bad).
    pub fn contains(&self, id: &str) -> bool {
        self.path(id).is_file()
    }

    /// Appends the bytes of each chunk of `ids` that the cache has to
    /// `into`, says where each is (`None`: not there), and marks them
    /// used, so a trim keeps them longest. Blocking: a restore
    /// reads a run of chunks with one trip to a blocking thread, into a
    /// reused buffer (fresh ones cost a page fault per 4 KiB).
    pub fn read_run(&self, ids: &[String], into: &mut Vec<u8>) -> Vec<Option<Range<usize>>> {
        let now = SystemTime::now();
        ids.iter()
            .map(|id| {
                let path = self.path(id);
                // Opened for writing to set its time; a read-only volume
                // still serves the chunk.
                let mut file = File::options()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .or_else(|_| File::open(&path))
                    .ok()?;
                let start = into.len();
                if file.read_to_end(into).is_err() {
                    into.truncate(start);
                    return None;
                }
                let _ = file.set_modified(now);
                Some(start..into.len())
            })
            .collect()
    }

    /// Keeps each chunk of `chunks` (its id and its uncompressed bytes),
    /// with one trip to a blocking thread, once no other write is under way.
    pub async fn put(&self, chunks: Vec<(String, Bytes)>) {
        let _turn = self.writing.lock().await;
        let cache = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for (id, bytes) in chunks {
                cache.keep(&id, &bytes);
            }
        })
        .await;
    }

    /// Keeps chunk `id`: written aside and renamed, so a reader never sees
    /// half a chunk. Best effort: a full or read-only volume only costs
    /// the next restore a download.
    fn keep(&self, id: &str, bytes: &[u8]) {
        let path = self.path(id);
        let temporary = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
        let written = (|| {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&temporary, bytes)?;
            std::fs::rename(&temporary, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            debug!("chunk cache: cannot keep {}: {e}", path.display());
        }
    }

    /// Forgets chunk `id` (it did not match its hash).
    pub async fn remove(&self, id: &str) {
        let _ = tokio::fs::remove_file(self.path(id)).await;
    }

    /// Trims the cache (on a blocking thread: it walks the cache) and says
    /// what it removed.
    pub async fn trim_and_log(self) {
        let trimmed = tokio::task::spawn_blocking(move || self.trim()).await;
        if let Ok(trimmed) = trimmed
            && trimmed.files > 0
        {
            tracing::info!(
                "chunk cache: removed {} least recently used chunks ({}); it holds {}",
                crate::human::count(trimmed.files),
                crate::human::bytes(trimmed.bytes),
                crate::human::bytes(trimmed.kept_bytes)
            );
        }
    }

    /// Removes the least recently used chunks until the whole cache fits
    /// in its size, leftovers of killed writes, and chunks of the first
    /// layout.
    pub fn trim(&self) -> Trimmed {
        let mut files = Vec::new();
        let mut total = 0u64;
        let mut trimmed = Trimmed::default();
        let an_hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        for entry in WalkDir::new(&self.top).into_iter().filter_map(Result::ok) {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let name = entry.file_name().to_string_lossy();
            // A file is removed now (a killed write's after an hour, a
            // chunk of the first layout), or counted towards the size.
            let (leftover, counted) = match entry.path().extension().and_then(|e| e.to_str()) {
                Some(CHUNK_EXTENSION) => (false, true),
                Some("tmp") => (used < an_hour_ago, false),
                _ if super::is_chunk_id(&name) => (true, false),
                _ => (false, true),
            };
            if leftover && std::fs::remove_file(entry.path()).is_ok() {
                trimmed.files += 1;
                trimmed.bytes += meta.len();
            }
            if !counted {
                continue;
            }
            total += meta.len();
            files.push((used, meta.len(), entry.into_path()));
        }
        files.sort();
        for (_, size, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= size;
                trimmed.files += 1;
                trimmed.bytes += size;
            }
        }
        trimmed.kept_bytes = total;
        trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(cache: &ChunkCache, id: &str) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        let places = cache.read_run(&[id.to_string()], &mut bytes);
        places[0].clone().map(|range| bytes[range].to_vec())
    }

    #[tokio::test]
    async fn keeps_chunks_and_trims_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::new(dir.path(), "octo/repo", 250);
        let id = |n: u8| format!("{n:02x}{}", "0".repeat(62));
        for n in 0..3 {
            cache.put(vec![(id(n), Bytes::from(vec![n; 100]))]).await;
            // Distinct times, oldest first.
            let past = SystemTime::now() - std::time::Duration::from_secs(100 - n as u64);
            std::fs::File::options()
                .write(true)
                .open(cache.path(&id(n)))
                .unwrap()
                .set_modified(past)
                .unwrap();
        }
        // Reading chunk 0 makes it the most recently used.
        assert_eq!(get(&cache, &id(0)), Some(vec![0; 100]));
        let trimmed = cache.trim();
        assert_eq!(
            (trimmed.files, trimmed.bytes, trimmed.kept_bytes),
            (1, 100, 200)
        );
        assert!(
            get(&cache, &id(1)).is_none(),
            "the least recently used goes"
        );
        assert!(get(&cache, &id(0)).is_some());
        assert!(get(&cache, &id(2)).is_some());
        assert!(dir.path().join("octo/repo").is_dir());

        // A chunk kept by an older larder (a compressed frame, named by its
        // id alone) is never read, and goes at the next trim.
        let old = dir.path().join("octo/repo/00").join(id(0));
        std::fs::write(&old, [7; 10]).unwrap();
        let trimmed = cache.trim();
        assert_eq!((trimmed.files, trimmed.bytes), (1, 10));
        assert!(!old.exists());
        assert_eq!(get(&cache, &id(0)), Some(vec![0; 100]));

        // A run is read into one buffer, each chunk at its place, a
        // missing one in between told apart.
        let mut bytes = vec![9];
        let places = cache.read_run(&[id(2), id(1), id(0)], &mut bytes);
        assert_eq!(places, [Some(1..101), None, Some(101..201)]);
        assert_eq!((bytes[1], bytes[101], bytes.len()), (2, 0, 201));
    }
}
