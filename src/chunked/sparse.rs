//! Retiring sparse packs: packs of which the kept entries use less than
//! half, so that the rest of their bytes can be freed some day.
//!
//! A pack stays in storage while any entry names one of its chunks (see
//! `gc`), so one chunk still in use keeps a whole pack of chunks nobody
//! needs. Rewriting such packs in place (restic's "repack") would mean
//! rewriting every index that names them, racing rebuilds that publish
//! indexes at the same moment. larder does the safe half instead: flush
//! writes the sparse packs' names to `gc/retired.json`, and rebuilds do not
//! reuse chunks found only there: they store them again, in new packs. The
//! entries written before go, in time (`flush_age`, `max_size`, a rebuild
//! of their key), and with them the last names of the retired packs, which
//! flush then removes like any unused pack.
//!
//! The list is advice, never evidence: a rebuild that misses it (or cannot
//! read it) reuses a retired pack, which is only kept longer; nothing is
//! deleted because of it. Each flush that looks at the packs writes it
//! afresh from the entries it keeps. Until a retired pack goes, the chunks
//! stored again are held twice, in it and in their new pack.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use object_store::path::Path;
use object_store::{ObjectMeta, PutMode};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::Index;
use super::gc::{GC, Timing};
use super::pack::parse_name;
use crate::storage::Store;

/// The list of retired packs, in the repository's folder.
pub fn list_path() -> Path {
    Path::from(format!("{GC}/retired.json"))
}

#[derive(Serialize, Deserialize)]
struct List {
    /// Pack object names (`packs/<id>.pack`), relative to the repository's folder.
    objects: Vec<String>,
}

/// The bytes of each object (pack) that `indexes` name, each chunk of it
/// counted once however many entries name it. A chunk is known by its
/// place, not by its whole reference: an index written before frame
/// hashes names the same bytes without one.
pub fn used_bytes<'a>(indexes: impl IntoIterator<Item = &'a Index>) -> HashMap<String, u64> {
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    let mut used: HashMap<String, u64> = HashMap::new();
    for chunk in indexes.into_iter().flat_map(|i| &i.chunks) {
        let object = chunk.object().to_string();
        if seen.insert((object.clone(), chunk.offset)) {
            *used.entry(object).or_default() += chunk.stored;
        }
    }
    used
}

/// The packs in `all` that are in use (so not flush's to remove) but less
/// than half by their bytes, and older than a rebuild may take (a younger
/// one may belong to a rebuild that has not published its index yet).
pub fn sparse<'a>(
    all: &'a [ObjectMeta],
    used: &HashMap<String, u64>,
    timing: Timing,
) -> Vec<&'a ObjectMeta> {
    let old = Utc::now() - timing.max_rebuild;
    all.iter()
        .filter(|meta| parse_name(&meta.location).is_some_and(|(_, catalog)| !catalog))
        .filter(|meta| meta.last_modified <= old)
        .filter(|meta| {
            let used = used.get(meta.location.as_ref()).copied().unwrap_or(0);
            used > 0 && used.saturating_mul(2) < meta.size
        })
        .collect()
}

/// Writes the list of retired packs, replacing the last flush's; removes it
/// when there are none.
pub async fn retire(store: &Store, packs: &[&ObjectMeta]) -> anyhow::Result<()> {
    let path = list_path();
    if packs.is_empty() {
        return store.delete(&path).await;
    }
    let list = List {
        objects: packs.iter().map(|m| m.location.to_string()).collect(),
    };
    let bytes = serde_json::to_vec(&list).unwrap_or_default();
    store.write(&path, bytes, PutMode::Overwrite).await?;
    Ok(())
}

/// The packs the last flush retired: a rebuild stores their chunks again
/// rather than reuse them. The list is only advice: one that cannot be
/// read or does not parse is passed over with a warning, and the rebuild
/// reuses every pack as before.
pub async fn retired(store: &Store) -> HashSet<String> {
    let path = list_path();
    let why = match store.read(&path).await {
        Ok(None) => return HashSet::new(),
        Ok(Some((bytes, _))) => match serde_json::from_slice::<List>(&bytes) {
            Ok(list) => return list.objects.into_iter().collect(),
            Err(e) => format!("it does not parse ({e})"),
        },
        Err(e) => format!("it cannot be read ({e:#})"),
    };
    warn!(
        "rebuild: the list of retired packs '{}' is passed over: {why}; packs are reused as if \
         it were not there, and the next flush writes it again",
        store.full(&path)
    );
    HashSet::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunked::ChunkRef;
    use crate::chunked::pack::pack_path;

    fn chunk(n: u8, pack: &str, offset: u64, stored: u64) -> ChunkRef {
        ChunkRef {
            id: crate::chunked::chunk_id(&[n]),
            size: stored * 3,
            stored,
            pack: Some(pack.to_string()),
            offset,
            frame: None,
        }
    }

    fn meta(pack: &str, size: u64, hours_old: i64) -> ObjectMeta {
        ObjectMeta {
            location: pack_path(pack),
            last_modified: Utc::now() - chrono::Duration::hours(hours_old),
            size,
            e_tag: None,
            version: None,
        }
    }

    fn index(chunks: Vec<ChunkRef>) -> Index {
        let manifest = crate::archive::manifest::Manifest::default();
        Index::new(crate::chunked::Params::DEFAULT, manifest, chunks)
    }

    #[test]
    fn packs_less_than_half_used_are_sparse() {
        let (a, b, c, d, e) = (
            "a".repeat(32),
            "b".repeat(32),
            "c".repeat(32),
            "d".repeat(32),
            "e".repeat(32),
        );
        // Two entries share chunk 1 of pack a: it counts once, though the
        // newer index records its frame hash and the older does not.
        let one = index(vec![chunk(1, &a, 0, 40), chunk(2, &b, 0, 60)]);
        let framed = ChunkRef {
            frame: Some(crate::chunked::frame_hash(&[1])),
            ..chunk(1, &a, 0, 40)
        };
        let two = index(vec![framed, chunk(3, &c, 0, 10), chunk(4, &d, 0, 10)]);
        let used = used_bytes([&one, &two]);
        assert_eq!(used.get(pack_path(&a).as_ref()), Some(&40));
        // A chunk stored again in a second pack counts in each; a version 1
        // chunk, its own object, is never a sparse pack.
        let mut v1 = chunk(5, &e, 0, 10);
        v1.pack = None;
        let three = index(vec![chunk(1, &b, 60, 40), v1.clone()]);
        let used = used_bytes([&one, &two, &three]);
        assert_eq!(used.get(pack_path(&a).as_ref()), Some(&40));
        assert_eq!(used.get(pack_path(&b).as_ref()), Some(&100));
        assert_eq!(used.get(v1.object().as_ref()), Some(&10));
        let all = [
            meta(&a, 100, 2), // 40 of 100 used: sparse
            meta(&b, 100, 2), // 60 of 100: kept as it is
            meta(&c, 100, 0), // 10 of 100, but younger than a rebuild may take
            meta(&d, 20, 2),  // exactly half: not sparse
            meta(&e, 100, 2), // unused: flush's to remove, not to retire
            ObjectMeta {
                location: v1.object(),
                ..meta(&e, 1000, 2)
            },
        ];
        let found: Vec<String> = sparse(&all, &used, Timing::DEFAULT)
            .iter()
            .map(|m| m.location.to_string())
            .collect();
        assert_eq!(found, vec![pack_path(&a).to_string()]);
    }

    /// A list that cannot be read or parsed is passed over: a rebuild
    /// reuses every pack rather than fail.
    #[tokio::test]
    async fn a_list_that_cannot_be_read_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let opened = crate::storage::filesystem::open(dir.path()).unwrap();
        let store = Store::new(crate::storage::Backend::Filesystem, opened, "octo/hello");
        let file = dir.path().join("octo/hello/gc/retired.json");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"{\"objects\": [\"packs/x.pack\"]}").unwrap();
        assert_eq!(retired(&store).await.len(), 1);
        std::fs::write(&file, b"{not json").unwrap();
        assert!(retired(&store).await.is_empty());
        // A link to itself where the list should be: the read fails.
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&file, &file).unwrap();
        assert!(store.read(&list_path()).await.is_err());
        assert!(retired(&store).await.is_empty());
    }
}
