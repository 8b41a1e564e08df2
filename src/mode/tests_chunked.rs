//! The fast tier for chunked entries: rebuilds upload only new chunks,
//! restores check every chunk and leave the workspace as it was when one
//! is missing or wrong, and the runner's chunk cache serves repeat restores.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt;

use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::tests::{job, memory, names, rebuild_job, restore_job, run, snapshot, workspace};
use crate::chunked::cache::ChunkCache;
use crate::chunked::gc::{self, Timing};
use crate::chunked::{self, ChunkRef, Index, pack};
use crate::job::{Chunking, Job, Stored, Task};
use crate::storage::{Store, damage, entry};
use crate::summary::{Outcome, Summary};
use crate::testing::{Tap, Tapped, noise};

/// A module cache of `modules` modules, each a few files of noise.
fn modules(workspace: &Path, range: std::ops::Range<u64>) {
    for n in range {
        let dir = workspace.join(format!("pkg.mod/example.com/m{n}@v1.0.0"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("go.mod"), format!("module example.com/m{n}\n")).unwrap();
        // Sources of whole packs: zips are spread among the modules (see
        // archive::order), so smaller ones would share every pack.
        fs::write(dir.join("code.go"), noise(1_000_000, n)).unwrap();
        let zip = workspace.join("pkg.mod/cache/download/example.com");
        fs::create_dir_all(&zip).unwrap();
        fs::write(zip.join(format!("m{n}.zip")), noise(200_000, n + 1000)).unwrap();
    }
}

/// Packs of 512 KiB: a few MB of modules make several.
const TEST_PACK: usize = 512 << 10;

fn chunked(mut job: Job, cache: Option<&Path>) -> Job {
    match &mut job.task {
        Task::Rebuild(task) => {
            task.chunking = Some(Chunking {
                params: chunked::Params::DEFAULT,
                level: 3,
                timing: Default::default(),
                pack_size: TEST_PACK,
            });
            task.stored = Stored::ReplaceIfChanged;
            task.cache = cache.map(|dir| ChunkCache::new(dir, "octo/hello", 1 << 30));
        }
        Task::Restore(task) => {
            task.cache = cache.map(|dir| ChunkCache::new(dir, "octo/hello", 1 << 30));
        }
        Task::Flush(_) | Task::Export(_) => {}
    }
    job
}

async fn rebuild(ws: &Path, key: &str, store: &Store) -> Summary {
    run(&chunked(rebuild_job(ws, key), None), store)
        .await
        .unwrap()
}

async fn index(store: &Store, key: &str) -> Index {
    let (bytes, _) = store
        .read(&entry::path_in(key, entry::Format::Chunked))
        .await
        .unwrap()
        .expect("the index is stored");
    Index::parse(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_entry_restores_exactly_and_uploads_only_new_chunks() {
    let store = memory();
    let ws = workspace();
    modules(ws.path(), 0..20);
    let first = rebuild(ws.path(), "k1", &store).await;
    assert_eq!(first.result, Outcome::Stored);
    assert_eq!(first.object.as_deref(), Some("octo/hello/k1.chunked"));
    let whole = first.uploaded_bytes.unwrap();
    assert!(whole > 9_000_000, "uploaded {whole}");
    assert_eq!(first.stored_bytes, whole);

    // The same tree under a new key: no chunk is uploaded.
    let same = rebuild(ws.path(), "k2", &store).await;
    assert_eq!(same.result, Outcome::Stored);
    assert_eq!(same.uploaded_bytes, Some(0));
    assert_eq!(same.objects_written, Some(1), "only the index");

    // One more module (5 % of the bytes, at two places in the stream): the
    // chunks around the two insertions are new, the rest are found again.
    modules(ws.path(), 20..21);
    let grown = rebuild(ws.path(), "k3", &store).await;
    let uploaded = grown.uploaded_bytes.unwrap();
    assert!(uploaded >= 500_000, "uploaded {uploaded}");
    assert!(uploaded < whole / 3, "uploaded {uploaded} of {whole}");

    let target = workspace();
    let restored = run(
        &chunked(restore_job(target.path(), "k3", &[]), None),
        &store,
    )
    .await
    .unwrap();
    assert_eq!(restored.result, Outcome::Exact);
    let k3 = index(&store, "k3").await;
    assert_eq!(restored.chunks, Some(k3.chunks.len() as u64));
    // Chunks side by side in a pack come with one request.
    let packs: HashSet<_> = k3.chunks.iter().map(|c| c.pack.clone()).collect();
    let requests = restored.requests.unwrap();
    assert!(requests >= packs.len() as u64, "{requests} requests");
    assert!(
        requests < k3.chunks.len() as u64,
        "{requests} requests for {} chunks",
        k3.chunks.len()
    );
    assert_eq!(
        snapshot(&ws.path().join("pkg.mod")),
        snapshot(&target.path().join("pkg.mod"))
    );

    // Every chunk records the hash of its stored frame, the reused ones
    // too (from their packs' catalogs): restores check a third of the bytes.
    let k1 = index(&store, "k1").await;
    let reused = k3.chunks.iter().filter(|c| k1.chunks.contains(c)).count();
    assert!(reused > k3.chunks.len() / 2, "{reused} reused");
    for chunk in &k3.chunks {
        let stored = stored_frame(&store, chunk).await;
        assert_eq!(
            chunk.frame,
            Some(chunked::frame_hash(&stored)),
            "{}",
            chunk.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_tree_under_the_same_key_is_not_stored_again() {
    let store = memory();
    let ws = workspace();
    modules(ws.path(), 0..3);
    rebuild(ws.path(), "k", &store).await;
    let again = rebuild(ws.path(), "k", &store).await;
    assert_eq!(again.result, Outcome::Skipped);
    assert!(again.reason.unwrap().contains("have not changed"));
    // A whole archive of the same key goes once the chunked entry replaces it.
    modules(ws.path(), 3..4);
    let mut archive = rebuild_job(ws.path(), "k");
    if let Task::Rebuild(task) = &mut archive.task {
        task.stored = Stored::Replace;
    }
    run(&archive, &store).await.unwrap();
    modules(ws.path(), 4..5);
    rebuild(ws.path(), "k", &store).await;
    let names = names(&store).await;
    assert_eq!(names, ["k.chunked"]);
}

/// The stored bytes (the frame) of `chunk`.
async fn stored_frame(store: &Store, chunk: &ChunkRef) -> bytes::Bytes {
    let (pack, _) = store.read(&chunk.object()).await.unwrap().unwrap();
    pack.slice(chunk.offset as usize..chunk.range().end as usize)
}

/// Restores entry `key` over a workspace holding a local file, which must
/// fail, leave that workspace as it was and report the entry damaged: the
/// error, and the workspace.
async fn failed_restore(store: &Store, key: &str) -> (String, tempfile::TempDir) {
    let target = workspace();
    fs::create_dir(target.path().join("pkg.mod")).unwrap();
    fs::write(target.path().join("pkg.mod/mine"), "local").unwrap();
    let before = snapshot(target.path());
    let failed = run(&chunked(restore_job(target.path(), key, &[]), None), store).await;
    let message = format!("{:#}", failed.expect_err("the restore must fail"));
    assert_eq!(snapshot(target.path()), before, "the workspace changed");
    assert!(store.head(&damage::path(key)).await.unwrap().is_some());
    (message, target)
}

fn export_job(ws: &Path, key: &str, output: std::path::PathBuf) -> Job {
    let export = crate::job::Export {
        key: key.into(),
        prefixes: Vec::new(),
        output,
    };
    job(Task::Export(export), ws)
}

/// Damages one chunk of entry `k` with `how`, restores it over a workspace
/// holding local files, and checks nothing changed and the damage is
/// reported; then a rebuild heals it.
async fn damaged_chunk(
    how: impl for<'a> Fn(&'a ChunkRef, &'a Store) -> futures::future::BoxFuture<'a, ()>,
) {
    let store = memory();
    let ws = workspace();
    modules(ws.path(), 0..6);
    rebuild(ws.path(), "k", &store).await;
    let index = index(&store, "k").await;
    let chunk = &index.chunks[index.chunks.len() / 2];
    let victim = chunk.object();
    how(chunk, &store).await;

    let (message, target) = failed_restore(&store, "k").await;
    assert!(message.contains(&victim.to_string()), "{message}");
    assert!(
        message.contains("workspace was left as it was"),
        "{message}"
    );

    // The next rebuild of the key stores it again, chunk included.
    let healed = rebuild(ws.path(), "k", &store).await;
    assert_eq!(healed.result, Outcome::Stored);
    let restored = run(&chunked(restore_job(target.path(), "k", &[]), None), &store)
        .await
        .unwrap();
    assert_eq!(restored.result, Outcome::Exact);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_chunk_fails_the_restore_whole_and_heals() {
    damaged_chunk(|chunk, store| {
        Box::pin(async move { store.delete(&chunk.object()).await.unwrap() })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_does_not_match_its_hash_fails_the_restore_whole() {
    damaged_chunk(|chunk, store| {
        Box::pin(async move {
            // Other bytes of the same size, as a valid frame of the same
            // length: zeros, padded with a skippable frame.
            let path = chunk.object();
            let (pack, _) = store.read(&path).await.unwrap().unwrap();
            let mut pack = pack.to_vec();
            let range = chunk.offset as usize..(chunk.offset + chunk.stored) as usize;
            let mut other = zstd::bulk::compress(&vec![0; chunk.size as usize], 3).unwrap();
            let pad = range.len() - other.len() - 8;
            other.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
            other.extend_from_slice(&(pad as u32).to_le_bytes());
            other.resize(range.len(), 0);
            pack[range].copy_from_slice(&other);
            store
                .inner()
                .put(&path, PutPayload::from(pack))
                .await
                .unwrap();
        })
    })
    .await;
}

/// A reference that lies consistently, as a faulty writer could leave one:
/// the frame of other bytes, recorded as that frame, under the chunk's
/// name. The restore takes the frame as recorded, and the stream's digest
/// catches it: nothing changes, the entry is reported damaged, and the next
/// rebuild heals it. An export, which no digest follows, refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_that_lies_consistently_fails_the_restore_whole() {
    let store = memory();
    let ws = workspace();
    modules(ws.path(), 0..6);
    rebuild(ws.path(), "k", &store).await;
    let mut lying = index(&store, "k").await;
    let n = lying.chunks.len() / 2;
    let chunk = lying.chunks[n].clone();
    let path = chunk.object();
    let stored = stored_frame(&store, &chunk).await;
    let mut other = zstd::bulk::decompress(&stored, chunk.size as usize).unwrap();
    let middle = other.len() / 2;
    other[middle] ^= 0x20;
    let frame = zstd::bulk::compress(&other, 3).unwrap();
    let (pack, _) = store.read(&path).await.unwrap().unwrap();
    lying.chunks[n] = ChunkRef {
        stored: frame.len() as u64,
        offset: pack.len() as u64,
        frame: Some(chunked::frame_hash(&frame)),
        ..chunk.clone()
    };
    let pack = [pack.to_vec(), frame].concat();
    store
        .inner()
        .put(&path, PutPayload::from(pack))
        .await
        .unwrap();
    let entry = entry::path_in("k", entry::Format::Chunked);
    let json = PutPayload::from(lying.to_json());
    store.inner().put(&entry, json).await.unwrap();

    let (message, target) = failed_restore(&store, "k").await;
    assert!(message.contains("does not match its digest"), "{message}");

    let export = export_job(ws.path(), "k", ws.path().join("k.tar.zst"));
    let message = format!("{:#}", run(&export, &store).await.expect_err("no export"));
    assert!(message.contains("does not match its hash"), "{message}");

    assert_eq!(
        rebuild(ws.path(), "k", &store).await.result,
        Outcome::Stored
    );
    let healed = run(&chunked(restore_job(target.path(), "k", &[]), None), &store).await;
    assert_eq!(healed.unwrap().result, Outcome::Exact);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_cache_serves_repeat_restores_and_survives_damage() {
    let store = memory();
    let ws = workspace();
    let cache = workspace();
    modules(ws.path(), 0..6);
    rebuild(ws.path(), "k", &store).await;
    let chunks = index(&store, "k").await.chunks.len() as u64;
    let restore = |target: &Path| chunked(restore_job(target, "k", &[]), Some(cache.path()));

    let cold = workspace();
    let first = run(&restore(cold.path()), &store).await.unwrap();
    assert_eq!((first.chunks, first.chunks_cached), (Some(chunks), Some(0)));

    let warm = workspace();
    let second = run(&restore(warm.path()), &store).await.unwrap();
    assert_eq!(second.chunks_cached, Some(chunks));
    assert_eq!(second.requests, Some(0));
    assert_eq!(
        snapshot(&ws.path().join("pkg.mod")),
        snapshot(&warm.path().join("pkg.mod"))
    );

    // The cache keeps each chunk uncompressed, as `<id>.chunk`: a restore
    // from it does not decompress.
    let cached: Vec<_> = walkdir::WalkDir::new(cache.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .collect();
    assert_eq!(cached.len() as u64, chunks);
    for file in &cached {
        let name = file.file_name().to_string_lossy();
        let id = name.strip_suffix(".chunk").expect("named <id>.chunk");
        let bytes = fs::read(file.path()).unwrap();
        assert_eq!(
            chunked::chunk_id(&bytes),
            id,
            "{name} holds the chunk's bytes"
        );
    }

    // A cached chunk that went bad (one byte changed) is fetched from
    // storage again.
    let mut bad = fs::read(cached[0].path()).unwrap();
    bad[0] ^= 1;
    fs::write(cached[0].path(), bad).unwrap();
    let third_ws = workspace();
    let third = run(&restore(third_ws.path()), &store).await.unwrap();
    assert_eq!(third.chunks_cached, Some(chunks - 1));
    assert_eq!(
        snapshot(&ws.path().join("pkg.mod")),
        snapshot(&third_ws.path().join("pkg.mod"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_leaves_its_new_chunks_in_the_runner_cache() {
    let store = memory();
    let ws = workspace();
    let cache = workspace();
    modules(ws.path(), 0..4);
    let job = chunked(rebuild_job(ws.path(), "k"), Some(cache.path()));
    assert_eq!(run(&job, &store).await.unwrap().result, Outcome::Stored);
    let unique: HashSet<String> = index(&store, "k")
        .await
        .chunks
        .into_iter()
        .map(|c| c.id)
        .collect();
    let cached = walkdir::WalkDir::new(cache.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count();
    assert_eq!(cached, unique.len());
    // The next restore on this runner reads them all from there.
    let target = workspace();
    let restore = chunked(restore_job(target.path(), "k", &[]), Some(cache.path()));
    let restored = run(&restore, &store).await.unwrap();
    assert_eq!(restored.requests, Some(0));
}

fn flush_job(ws: &Path, max_age: Option<Duration>, max_size: Option<u64>, timing: Timing) -> Job {
    job(
        Task::Flush(crate::job::Flush {
            max_age,
            max_size,
            dry_run: false,
            timing,
        }),
        ws,
    )
}

/// The objects holding chunks in storage (packs), by name.
async fn stored_objects(store: &Store) -> HashSet<String> {
    gc::objects(store)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.location.to_string())
        .collect()
}

/// The objects an index names.
fn objects_of(index: &Index) -> HashSet<String> {
    index
        .chunks
        .iter()
        .map(|c| c.object().to_string())
        .collect()
}

async fn gc_objects(store: &Store) -> Vec<String> {
    let listed: Vec<_> = store
        .inner()
        .list(Some(&ObjectPath::from(gc::GC)))
        .try_collect()
        .await
        .unwrap();
    listed.iter().map(|m| m.location.to_string()).collect()
}

/// No waiting in tests: chunks are condemned at once and swept by the next flush.
const AT_ONCE: Timing = Timing {
    max_rebuild: Duration::ZERO,
    grace: Duration::ZERO,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_counts_shared_chunks_once_and_removes_unused_ones_after_the_grace() {
    let store = memory();
    let ws = workspace();
    modules(ws.path(), 0..6);
    rebuild(ws.path(), "k1", &store).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // k2 keeps one module of k1's and adds one: k1's first packs hold
    // only modules k2 no longer has.
    for n in 0..3 {
        let module = ws.path().join(format!("pkg.mod/example.com/m{n}@v1.0.0"));
        fs::remove_dir_all(module).unwrap();
        fs::remove_file(
            ws.path()
                .join(format!("pkg.mod/cache/download/example.com/m{n}.zip")),
        )
        .unwrap();
    }
    modules(ws.path(), 6..7);
    rebuild(ws.path(), "k2", &store).await;
    let (k1, k2) = (index(&store, "k1").await, index(&store, "k2").await);
    let union: u64 = {
        let mut seen = HashSet::new();
        k1.chunks
            .iter()
            .chain(&k2.chunks)
            .filter(|c| seen.insert(c.id.clone()))
            .map(|c| c.stored)
            .sum()
    };
    let objects: u64 = store.list().await.unwrap().iter().map(|m| m.size).sum();
    // Both fit when shared chunks count once (the sum of the two would not).
    assert!(k1.stored_bytes() + k2.stored_bytes() > union + objects + 1000);
    let fits = flush_job(ws.path(), None, Some(union + objects), AT_ONCE);
    let kept = run(&fits, &store).await.unwrap();
    assert_eq!((kept.deleted, kept.kept), (Some(0), Some(2)));
    assert_eq!(kept.stored_bytes, union + objects);

    // One byte less: the older entry goes; only the packs no other entry
    // uses are condemned, and none is deleted yet.
    let before = stored_objects(&store).await;
    let only_k1: HashSet<String> = &objects_of(&k1) - &objects_of(&k2);
    assert!(!only_k1.is_empty());
    let tight = flush_job(ws.path(), None, Some(union + objects - 1), AT_ONCE);
    let report = run(&tight, &store).await.unwrap();
    assert_eq!((report.deleted, report.kept), (Some(1), Some(1)));
    assert_eq!(stored_objects(&store).await, before, "deleted at once");
    let lists = gc::pending(&store).await.unwrap();
    assert_eq!(lists.len(), 1);
    assert_eq!(lists[0].objects, only_k1);

    // The next flush, after the grace: they go, catalogs too, and k2 still
    // restores.
    run(&tight, &store).await.unwrap();
    let after = stored_objects(&store).await;
    let catalogs = pack::known(&store, &pack::list(&store).await.unwrap(), &HashSet::new())
        .await
        .unwrap();
    assert!(
        catalogs
            .values()
            .all(|c| !only_k1.contains(c.object().as_ref())),
        "a deleted pack's catalog is left"
    );
    assert!(after.is_disjoint(&only_k1));
    assert_eq!(after.len(), before.len() - only_k1.len());
    assert!(
        gc_objects(&store).await.is_empty(),
        "{:?}",
        gc_objects(&store).await
    );
    let target = workspace();
    let restored = run(
        &chunked(restore_job(target.path(), "k2", &[]), None),
        &store,
    )
    .await
    .unwrap();
    assert_eq!(restored.result, Outcome::Exact);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_never_relies_on_condemned_chunks() {
    let store = memory();
    let ws = workspace();
    modules(ws.path(), 0..4);
    let first = rebuild(ws.path(), "k1", &store).await;
    // Every entry goes; all chunks are condemned.
    let everything = flush_job(ws.path(), Some(Duration::ZERO), None, AT_ONCE);
    run(&everything, &store).await.unwrap();
    let condemned = gc::pending(&store).await.unwrap();
    assert_eq!(condemned[0].objects, stored_objects(&store).await);

    // The same tree again: the chunks are in storage, but condemned, so
    // they are written again rather than relied on.
    let again = rebuild(ws.path(), "k2", &store).await;
    assert_eq!(again.result, Outcome::Stored);
    assert_eq!(again.uploaded_bytes, first.uploaded_bytes);

    // The sweep keeps them: k2 names them (and they are newer than the list).
    let keep_entries = flush_job(ws.path(), Some(Duration::from_secs(3600)), None, AT_ONCE);
    run(&keep_entries, &store).await.unwrap();
    assert!(gc::pending(&store).await.unwrap().is_empty());
    let target = workspace();
    let restored = run(
        &chunked(restore_job(target.path(), "k2", &[]), None),
        &store,
    )
    .await
    .unwrap();
    assert_eq!(restored.result, Outcome::Exact);
}

/// Packs in storage, with their sizes.
async fn packs(store: &Store) -> Vec<object_store::ObjectMeta> {
    gc::objects(store).await.unwrap()
}

/// A pack that the entries left use only a little of is retired: the next
/// rebuild stores those chunks again, and once the older entries go, so do
/// the sparse packs, so no pack is mostly chunks no entry names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_packs_are_retired_and_go_once_no_entry_names_them() {
    let store = memory();
    let ws = workspace();
    modules(ws.path(), 0..6);
    // Packs of 3 MiB: each holds parts of several modules.
    let rebuild = |ws: &Path, key: &str, store: &Store| {
        let mut job = chunked(rebuild_job(ws, key), None);
        if let Task::Rebuild(task) = &mut job.task {
            task.chunking.as_mut().unwrap().pack_size = 3 << 20;
        }
        let store = store.clone();
        async move { run(&job, &store).await.unwrap() }
    };
    rebuild(ws.path(), "k1", &store).await;
    // k2 keeps two modules of six: the packs are partly its.
    for n in [1, 2, 4, 5] {
        fs::remove_dir_all(ws.path().join(format!("pkg.mod/example.com/m{n}@v1.0.0"))).unwrap();
        fs::remove_file(
            ws.path()
                .join(format!("pkg.mod/cache/download/example.com/m{n}.zip")),
        )
        .unwrap();
    }
    rebuild(ws.path(), "k2", &store).await;
    let k2 = index(&store, "k2").await;
    let delete_entry = |key: &str| {
        let store = store.clone();
        let path = entry::path_in(key, entry::Format::Chunked);
        async move { store.delete(&path).await.unwrap() }
    };
    delete_entry("k1").await;
    let flush = flush_job(ws.path(), None, None, AT_ONCE);
    run(&flush, &store).await.unwrap();

    // The packs k2 uses less than half of are the ones retired.
    let used = chunked::sparse::used_bytes([&k2]);
    let expected: HashSet<String> = packs(&store)
        .await
        .iter()
        .filter(|m| {
            let used = used.get(m.location.as_ref()).copied().unwrap_or(0);
            used > 0 && used * 2 < m.size
        })
        .map(|m| m.location.to_string())
        .collect();
    assert!(!expected.is_empty(), "the test makes sparse packs");
    let retired = chunked::sparse::retired(&store).await;
    assert_eq!(retired, expected);

    // The same tree under a new key: the chunks found only in retired
    // packs are stored again, the rest reused.
    let k3_summary = rebuild(ws.path(), "k3", &store).await;
    let k3 = index(&store, "k3").await;
    assert!(objects_of(&k3).is_disjoint(&retired));
    let again: u64 = k2
        .chunks
        .iter()
        .filter(|c| retired.contains(c.object().as_ref()))
        .map(|c| (c.id.clone(), c.stored))
        .collect::<std::collections::HashMap<_, _>>()
        .values()
        .sum();
    assert_eq!(k3_summary.uploaded_bytes, Some(again));

    // k2 goes: the retired packs are no entry's now, and go as unused
    // ones do; every pack left is mostly k3's, and the list is gone.
    delete_entry("k2").await;
    run(&flush, &store).await.unwrap();
    run(&flush, &store).await.unwrap();
    let left = packs(&store).await;
    assert!(left.iter().all(|m| !retired.contains(m.location.as_ref())));
    let used = chunked::sparse::used_bytes([&k3]);
    assert!(chunked::sparse::sparse(&left, &used, AT_ONCE).is_empty());
    let stored: u64 = left.iter().map(|m| m.size).sum();
    assert_eq!(
        stored,
        used.values().sum::<u64>(),
        "only k3's chunks are left"
    );
    assert!(
        gc_objects(&store).await.is_empty(),
        "{:?}",
        gc_objects(&store).await
    );
    let target = workspace();
    let restore = chunked(restore_job(target.path(), "k3", &[]), None);
    assert_eq!(run(&restore, &store).await.unwrap().result, Outcome::Exact);
    assert_eq!(snapshot(target.path()), snapshot(ws.path()));
}

/// Holds the rebuild's second listing of the flushes' lists (its check
/// before publishing; the first is as it starts) until the test opens it:
/// a flush then races the rebuild between learning which chunks storage
/// holds and publishing, whatever the order of its last uploads.
#[derive(Debug, Default)]
struct Gate {
    listings: std::sync::atomic::AtomicUsize,
    reached: tokio::sync::Notify,
    open: tokio::sync::Notify,
    was_opened: std::sync::atomic::AtomicBool,
}

impl Gate {
    fn open(&self) {
        self.was_opened
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.open.notify_waiters();
    }
}

#[async_trait::async_trait]
impl Tap for Gate {
    async fn list(&self, prefix: Option<&ObjectPath>) {
        use std::sync::atomic::Ordering::SeqCst;
        if !prefix.is_some_and(|p| p.as_ref().ends_with(gc::GC)) {
            return;
        }
        if self.listings.fetch_add(1, SeqCst) == 1 {
            let open = self.open.notified();
            self.reached.notify_one();
            if !self.was_opened.load(SeqCst) {
                open.await;
            }
        }
    }
}

/// The race the removal protocol is for: a rebuild reuses k1's packs, and
/// while it uploads its one new pack (and checks, beside it, what flushes
/// are doing), a flush deletes k1, condemns its packs and starts sweeping
/// them. The rebuild must not publish an index naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_does_not_publish_while_its_chunks_are_being_swept() {
    let raw: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let plain = super::tests::remote(Arc::clone(&raw));
    let gate = Arc::new(Tapped {
        inner: raw,
        tap: Arc::new(Gate::default()),
    });
    let ws = workspace();
    modules(ws.path(), 0..3);
    rebuild(ws.path(), "k1", &plain).await;
    let gated = super::tests::remote(gate.clone());
    modules(ws.path(), 3..4);
    let racing = rebuild(ws.path(), "k2", &gated);
    let flush = async {
        gate.tap.reached.notified().await;
        let everything = flush_job(ws.path(), Some(Duration::ZERO), None, AT_ONCE);
        run(&everything, &plain).await.unwrap();
        let list = gc::pending(&plain).await.unwrap().remove(0);
        assert!(!list.objects.is_empty());
        // A sweep of that list has started (its marker is there).
        let id = list.path.filename().unwrap();
        let id = id
            .trim_start_matches("condemned-")
            .trim_end_matches(".json");
        let marker = ObjectPath::from(format!("{}/sweeping-{id}", gc::GC));
        plain.inner().put(&marker, PutPayload::new()).await.unwrap();
        gate.tap.open();
    };
    let (refused, ()) = tokio::join!(racing, flush);
    assert!(
        refused
            .uploaded_bytes
            .is_none_or(|b| b < refused.stored_bytes / 2)
    );
    assert_eq!(refused.result, Outcome::Skipped);
    assert!(
        refused
            .reason
            .unwrap()
            .contains("a flush is removing chunks")
    );
    assert!(
        plain
            .head(&entry::path_in("k2", entry::Format::Chunked))
            .await
            .unwrap()
            .is_none()
    );
}

/// An entry as larder wrote them before packs: one object per chunk,
/// named in a version 1 index. It restores, and flush removes its chunks
/// once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_entry_still_restores_and_its_chunks_are_collected() {
    let store = memory();
    let ws = workspace();
    modules(ws.path(), 0..3);
    rebuild(ws.path(), "k", &store).await;
    let mut old = index(&store, "k").await;
    for chunk in &mut old.chunks {
        let frame = stored_frame(&store, chunk).await;
        store
            .inner()
            .put(&chunked::chunk_path(&chunk.id), PutPayload::from(frame))
            .await
            .unwrap();
        (chunk.pack, chunk.offset) = (None, 0);
    }
    old.version = 1;
    let path = entry::path_in("k", entry::Format::Chunked);
    store
        .inner()
        .put(&path, old.to_json().into())
        .await
        .unwrap();
    for pack in stored_objects(&store).await {
        if pack.starts_with("packs/") {
            store.delete(&ObjectPath::from(pack)).await.unwrap();
        }
    }
    let target = workspace();
    let restored = run(&chunked(restore_job(target.path(), "k", &[]), None), &store)
        .await
        .unwrap();
    assert_eq!(restored.result, Outcome::Exact);
    assert_eq!(restored.requests, Some(old.chunks.len() as u64));
    assert_eq!(
        snapshot(&ws.path().join("pkg.mod")),
        snapshot(&target.path().join("pkg.mod"))
    );

    let everything = flush_job(ws.path(), Some(Duration::ZERO), None, AT_ONCE);
    run(&everything, &store).await.unwrap();
    assert!(!stored_objects(&store).await.is_empty(), "deleted at once");
    run(&everything, &store).await.unwrap();
    assert!(stored_objects(&store).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_a_chunked_entry_as_one_tar_zst() {
    let store = memory();
    let ws = workspace();
    modules(ws.path(), 0..3);
    rebuild(ws.path(), "k", &store).await;
    let out = ws.path().join("k.tar.zst");
    let export = export_job(ws.path(), "k", out.clone());
    let summary = run(&export, &store).await.unwrap();
    assert_eq!(summary.result, Outcome::Exact);
    let file = fs::read(&out).unwrap();
    assert_eq!(summary.stored_bytes, file.len() as u64);
    assert_eq!(file.len() as u64, index(&store, "k").await.stored_bytes());
    // Concatenated frames are one zstd stream holding the whole tar.
    let tar = zstd::stream::decode_all(file.as_slice()).unwrap();
    let mut archive = tar::Archive::new(tar.as_slice());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"pkg.mod/example.com/m2@v1.0.0/code.go".to_string()),
        "{names:?}"
    );
    assert!(!ws.path().join("k.tar.zst.larder-partial").exists());

    // A miss writes nothing.
    let missing = export_job(ws.path(), "other", ws.path().join("other.tar.zst"));
    assert_eq!(run(&missing, &store).await.unwrap().result, Outcome::Miss);
    assert!(!ws.path().join("other.tar.zst").exists());
}
