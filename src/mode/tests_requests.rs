//! The requests a restore makes: the lookup reads the entry's first bytes
//! (an archive's first range, a chunked entry's index) instead of asking
//! for its metadata and then reading, no byte is read twice, entries of
//! any size are read in ranges, and a slow read does not hold back the
//! next. Each round trip saved is one a restore over a real link does not
//! wait for.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use object_store::GetOptions;
use object_store::path::Path as ObjectPath;

use super::tests::{names, restore_job, run, tree, workspace};
use crate::job::{Chunking, Task};
use crate::storage::{Store, entry};
use crate::summary::Outcome;
use crate::testing::{Tap, Tapped};

/// One read: the object, the bytes asked for (`None`: all), and whether
/// it asked only for the metadata (a HEAD).
#[derive(Clone, Debug, PartialEq)]
struct Read {
    path: String,
    range: Option<Range<u64>>,
    head: bool,
}

/// Writes down every read a store is asked for.
#[derive(Debug, Default)]
struct Recorder {
    reads: Mutex<Vec<Read>>,
}

impl Recorder {
    fn take(&self) -> Vec<Read> {
        std::mem::take(&mut self.reads.lock().unwrap())
    }
}

#[async_trait::async_trait]
impl Tap for Recorder {
    async fn get(&self, location: &ObjectPath, options: &GetOptions) {
        let range = match &options.range {
            Some(object_store::GetRange::Bounded(r)) => Some(r.clone()),
            Some(other) => panic!("a restore asked for {other:?}"),
            None => None,
        };
        self.reads.lock().unwrap().push(Read {
            path: location.to_string(),
            range,
            head: options.head,
        });
    }
}

/// An in-memory store that records reads, labelled as a remote backend
/// (the filesystem backend reads its files in place instead).
fn recording() -> (Store, Arc<Tapped<Recorder>>) {
    let recorder = Arc::new(Tapped {
        inner: Arc::new(object_store::memory::InMemory::new()),
        tap: Arc::new(Recorder::default()),
    });
    (super::tests::remote(recorder.clone()), recorder)
}

/// A rebuild of the tree in `ws` under `key` as a chunked entry, in packs
/// of `pack_size`.
fn chunked_rebuild(ws: &std::path::Path, key: &str, pack_size: usize) -> crate::job::Job {
    let mut job = super::tests::rebuild_job(ws, key);
    if let Task::Rebuild(task) = &mut job.task {
        task.chunking = Some(Chunking {
            params: crate::chunked::Params::DEFAULT,
            level: 3,
            timing: Default::default(),
            pack_size,
        });
    }
    job
}

/// A workspace with the test tree and `len` incompressible bytes (from
/// `seed`) in one file of its module cache.
fn noisy_workspace(len: usize, seed: u64) -> tempfile::TempDir {
    let ws = workspace();
    tree(ws.path(), 3);
    let noise = crate::testing::noise(len, seed);
    std::fs::write(ws.path().join("pkg.mod/cache/download/noise.bin"), noise).unwrap();
    ws
}

/// Stores the test tree under `key`, as a chunked entry if `chunked`, and
/// returns the entry's object (relative to the repository's folder).
async fn stored(store: &Store, key: &str, chunked: bool) -> String {
    // Incompressible, so the entry spans several download ranges.
    let ws = noisy_workspace(6 << 20, 3);
    let job = match chunked {
        true => chunked_rebuild(ws.path(), key, 512 << 10),
        false => super::tests::rebuild_job(ws.path(), key),
    };
    assert_eq!(run(&job, store).await.unwrap().result, Outcome::Stored);
    let format = match chunked {
        true => entry::Format::Chunked,
        false => entry::Format::Archive(crate::archive::Compression::Zstd),
    };
    entry::path_in(key, format).to_string()
}

/// The reads a restore of key `k` makes; it must hit, and ask for no
/// metadata alone (no HEAD).
async fn restore_reads(store: &Store, recorder: &Tapped<Recorder>) -> Vec<Read> {
    recorder.tap.take();
    let target = workspace();
    let restored = run(&restore_job(target.path(), "k", &[]), store)
        .await
        .unwrap();
    assert_eq!(restored.result, Outcome::Exact);
    let reads = recorder.tap.take();
    assert!(
        reads.iter().all(|r| !r.head),
        "the lookup asked for metadata alone: {reads:?}"
    );
    reads
}

fn full(object: &str) -> String {
    format!("{}/{object}", super::tests::ROOT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_reads_an_archives_first_range_and_no_byte_is_read_twice() {
    let (store, recorder) = recording();
    let object = stored(&store, "k", false).await;
    let size = store
        .head(&ObjectPath::from(object.as_str()))
        .await
        .unwrap()
        .unwrap()
        .size;
    let first = crate::storage::transfer::RANGE_SIZE;
    assert!(size > first, "the entry spans several ranges ({size})");
    let reads = restore_reads(&store, &recorder).await;
    // Every format's object was looked for with a read of its start.
    for format in entry::Format::ALL {
        let path = full(entry::path_in("k", format).as_ref());
        let first = reads.iter().find(|r| r.path == path).unwrap();
        assert_eq!(first.range.as_ref().map(|r| r.start), Some(0), "{first:?}");
    }
    // The archive's ranges: the lookup's first, then the rest, each byte once.
    let mut ranges: Vec<Range<u64>> = reads
        .iter()
        .filter(|r| r.path == full(&object))
        .map(|r| r.range.clone().expect("ranged reads"))
        .collect();
    assert_eq!(ranges[0], 0..first);
    ranges.sort_by_key(|r| r.start);
    assert!(
        ranges.windows(2).all(|w| w[0].end == w[1].start),
        "{ranges:?}"
    );
    assert_eq!(ranges.last().unwrap().end, size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_reads_a_chunked_entrys_index_with_one_request() {
    let (store, recorder) = recording();
    let object = stored(&store, "k", true).await;
    let reads = restore_reads(&store, &recorder).await;
    let index: Vec<&Read> = reads.iter().filter(|r| r.path == full(&object)).collect();
    assert_eq!(index.len(), 1, "the index is read once: {index:?}");
    assert_eq!(index[0].range.as_ref().map(|r| r.start), Some(0));
    // And the chunks were read (the restore did not stop at the index).
    assert!(reads.iter().any(|r| r.path.ends_with(".pack")), "{reads:?}");
}

/// Regression: the ramp's 256 KiB, shifted 46 places or more, wrapped to
/// 0, so the 46th range of an entry was empty and any whole archive of
/// over 172 MiB failed to restore from every remote backend ("Range
/// started at 180092928 and ended at 180092928").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_of_more_than_45_ranges_restores() {
    let (store, recorder) = recording();
    let ws = workspace();
    let mounted = ws.path().join("pkg.mod");
    std::fs::create_dir_all(&mounted).unwrap();
    // Uncompressed, so the entry is as large as the file: 50 ranges, the
    // lookup's 4 MiB and 49 more, the ramp's 5th to 53rd.
    let size = 200 << 20;
    let file = std::fs::File::create(mounted.join("large.bin")).unwrap();
    file.set_len(size).unwrap();
    let mut job = super::tests::rebuild_job(ws.path(), "k");
    if let Task::Rebuild(task) = &mut job.task {
        task.compression = crate::archive::Compression::None;
    }
    assert_eq!(run(&job, &store).await.unwrap().result, Outcome::Stored);
    let reads = restore_reads(&store, &recorder).await;
    let object = full(
        entry::path_in(
            "k",
            entry::Format::Archive(crate::archive::Compression::None),
        )
        .as_ref(),
    );
    let ranges: Vec<Range<u64>> = reads
        .iter()
        .filter(|r| r.path == object)
        .map(|r| r.range.clone().expect("ranged reads"))
        .collect();
    assert!(ranges.len() > 46, "{} ranges", ranges.len());
    assert!(ranges.iter().all(|r| r.end > r.start), "{ranges:?}");
    drop(ws);
}

/// Holds the first read of a pack until `RUNS_AHEAD` pack reads have
/// started (or a few seconds pass), and counts them.
#[derive(Debug, Default)]
struct SlowFirst {
    started: std::sync::atomic::AtomicUsize,
    more: tokio::sync::Notify,
    /// Pack reads started while the first was held.
    seen: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Tap for SlowFirst {
    async fn get(&self, location: &ObjectPath, _options: &GetOptions) {
        use std::sync::atomic::Ordering::SeqCst;
        if !location.as_ref().ends_with(".pack") {
            return;
        }
        if self.started.fetch_add(1, SeqCst) > 0 {
            self.more.notify_one();
            return;
        }
        let ahead = crate::chunked::read::RUNS_AHEAD;
        let enough = async {
            while self.started.load(SeqCst) < ahead {
                self.more.notified().await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), enough).await;
        self.seen.store(self.started.load(SeqCst), SeqCst);
    }
}

/// Runs share the link and finish out of order: while the first is slow,
/// the ones after it finish and free their request slots, and new
/// requests go out, up to `RUNS_AHEAD` runs ahead of the extractor. (With
/// the window as small as the requests in flight, eight, no request went
/// out until the first had come back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_run_does_not_hold_back_the_next_requests() {
    let raw: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let plain = super::tests::remote(Arc::clone(&raw));
    // Small packs: a run each, more runs than the window.
    let ws = noisy_workspace(12 << 20, 5);
    let job = chunked_rebuild(ws.path(), "k", 256 << 10);
    assert_eq!(run(&job, &plain).await.unwrap().result, Outcome::Stored);
    let slow = Arc::new(Tapped {
        inner: raw,
        tap: Arc::new(SlowFirst::default()),
    });
    let store = super::tests::remote(slow.clone());
    let target = workspace();
    let restored = run(&restore_job(target.path(), "k", &[]), &store)
        .await
        .unwrap();
    assert_eq!(restored.result, Outcome::Exact);
    let ahead = crate::chunked::read::RUNS_AHEAD;
    let packs = slow.tap.started.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        packs > ahead,
        "the entry has more runs than the window ({packs})"
    );
    assert_eq!(
        slow.tap.seen.load(std::sync::atomic::Ordering::SeqCst),
        ahead,
        "pack reads started while the first was held"
    );
}

/// Holds every read of a pack up for a while, as a slow link would.
#[derive(Debug)]
struct SlowPacks(std::time::Duration);

#[async_trait::async_trait]
impl Tap for SlowPacks {
    async fn get(&self, location: &ObjectPath, _options: &GetOptions) {
        if location.as_ref().ends_with(".pack") {
            tokio::time::sleep(self.0).await;
        }
    }

    async fn put(&self, location: &ObjectPath) {
        if location.as_ref().ends_with(".pack") {
            tokio::time::sleep(self.0).await;
        }
    }
}

/// The summary says how long unpacking waited for the download: at least
/// the time the first pack took to come, and never more than the restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_says_how_long_unpacking_waited_for_the_download() {
    let raw: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let plain = super::tests::remote(Arc::clone(&raw));
    stored(&plain, "k", true).await;
    let delay = std::time::Duration::from_millis(300);
    let slow = Arc::new(Tapped {
        inner: raw,
        tap: Arc::new(SlowPacks(delay)),
    });
    let store = super::tests::remote(slow);
    let target = workspace();
    let restored = run(&restore_job(target.path(), "k", &[]), &store)
        .await
        .unwrap();
    assert_eq!(restored.result, Outcome::Exact);
    assert_waited(restored.download_wait_seconds, restored.seconds, delay);
}

/// A wait reported: at least most of `delay`, at most the whole run.
fn assert_waited(waited: Option<f64>, seconds: f64, delay: std::time::Duration) {
    let waited = waited.expect("a transfer was waited for");
    let least = delay.as_secs_f64() * 0.8;
    assert!(
        waited >= least,
        "waited {waited} s for requests held {delay:?}"
    );
    assert!(waited <= seconds, "waited {waited} s of {seconds} s");
}

/// And a rebuild, how long it waited for its upload: at least the time
/// the last pack took to store, and never more than the rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_says_how_long_a_rebuild_waited_for_its_upload() {
    let delay = std::time::Duration::from_millis(300);
    let slow = Arc::new(Tapped {
        inner: Arc::new(object_store::memory::InMemory::new()),
        tap: Arc::new(SlowPacks(delay)),
    });
    let store = super::tests::remote(slow);
    let ws = workspace();
    tree(ws.path(), 3);
    let stored = run(&chunked_rebuild(ws.path(), "k", 512 << 10), &store)
        .await
        .unwrap();
    assert_eq!(stored.result, Outcome::Stored);
    assert_waited(stored.upload_wait_seconds, stored.seconds, delay);
}

/// An export looks up as a restore does (no HEAD; an archive's first range
/// read with the lookup, every byte once), and writes the entry as stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_reads_like_a_restore() {
    let (store, recorder) = recording();
    let object = stored(&store, "k", false).await;
    recorder.tap.take();
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("k.tar.zst");
    let task = crate::job::Export {
        key: "k".into(),
        prefixes: Vec::new(),
        output: output.clone(),
    };
    let job = super::tests::job(Task::Export(task), out.path());
    assert_eq!(run(&job, &store).await.unwrap().result, Outcome::Exact);
    let reads = recorder.tap.take();
    assert!(reads.iter().all(|r| !r.head), "a HEAD: {reads:?}");
    let mut ranges: Vec<Range<u64>> = reads
        .iter()
        .filter(|r| r.path == full(&object))
        .map(|r| r.range.clone().expect("ranged reads"))
        .collect();
    ranges.sort_by_key(|r| r.start);
    assert!(
        ranges.windows(2).all(|w| w[0].end == w[1].start),
        "{ranges:?}"
    );
    let path = ObjectPath::from(object.as_str());
    let whole = store.inner().get_opts(&path, GetOptions::default());
    let stored = whole.await.unwrap().bytes().await.unwrap();
    assert_eq!(std::fs::read(&output).unwrap(), stored);
}

/// Which request a `HeldUntil` tap waits for.
#[derive(Clone, Copy, Debug)]
enum Awaited {
    /// A read of an object whose name ends so.
    Read(&'static str),
    /// A put of an object whose name ends so.
    Put(&'static str),
    /// A listing of a folder whose name ends so.
    List(&'static str),
}

/// What a request to a `HeldUntil` tap was.
#[derive(Clone, Copy, PartialEq)]
enum Request {
    Read,
    Put,
    List,
}

/// Holds every put (or multipart part) of an object whose name ends with
/// `held` until the awaited request has been made, or until `PATIENCE`
/// has passed, which it writes down: a test's way of asking whether a
/// request is made while others are still on their way.
#[derive(Debug)]
struct HeldUntil {
    held: &'static str,
    awaited: Awaited,
    /// Requests held (or let through at once, the awaited one made).
    holds: std::sync::atomic::AtomicUsize,
    made: tokio::sync::Notify,
    was_made: std::sync::atomic::AtomicBool,
    gave_up: std::sync::atomic::AtomicBool,
}

impl HeldUntil {
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

    fn new(held: &'static str, awaited: Awaited) -> HeldUntil {
        HeldUntil {
            held,
            awaited,
            holds: Default::default(),
            made: Default::default(),
            was_made: Default::default(),
            gave_up: Default::default(),
        }
    }

    fn saw(&self, location: &ObjectPath, request: Request) {
        use std::sync::atomic::Ordering::SeqCst;
        let awaited = match (self.awaited, request) {
            (Awaited::Read(end), Request::Read)
            | (Awaited::Put(end), Request::Put)
            | (Awaited::List(end), Request::List) => end,
            _ => return,
        };
        if location.as_ref().ends_with(awaited) {
            self.was_made.store(true, SeqCst);
            self.made.notify_waiters();
        }
    }

    async fn hold(&self, location: &ObjectPath) {
        use std::sync::atomic::Ordering::SeqCst;
        if !location.as_ref().ends_with(self.held) {
            return;
        }
        self.holds.fetch_add(1, SeqCst);
        let made = self.made.notified();
        if self.was_made.load(SeqCst) {
            return;
        }
        if tokio::time::timeout(Self::PATIENCE, made).await.is_err() {
            self.gave_up.store(true, SeqCst);
        }
    }

    /// Asserts that requests were held, `at_least` of them, and that the
    /// awaited one came while they were.
    fn assert_made_while_held(&self, at_least: usize, what: &str) {
        use std::sync::atomic::Ordering::SeqCst;
        let holds = self.holds.load(SeqCst);
        assert!(holds >= at_least, "{holds} requests to hold");
        assert!(!self.gave_up.load(SeqCst), "{what}");
    }
}

#[async_trait::async_trait]
impl Tap for HeldUntil {
    async fn put(&self, location: &ObjectPath) {
        self.saw(location, Request::Put);
        self.hold(location).await;
    }

    async fn get(&self, location: &ObjectPath, _options: &GetOptions) {
        self.saw(location, Request::Read);
    }

    async fn list(&self, prefix: Option<&ObjectPath>) {
        if let Some(prefix) = prefix {
            self.saw(prefix, Request::List);
        }
    }

    async fn part(&self, location: &ObjectPath) {
        self.hold(location).await;
    }
}

/// A rebuild checks its claim on the key while its last parts are still
/// going up, not after them: over a link, that is the last part's transfer
/// and a round trip saved. (Before, the rebuild waited for every part but
/// the last, then checked, then sent the last.) The entry is published
/// only once every part is up, and whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_checks_its_claim_while_the_last_parts_go_up() {
    let tap = Arc::new(HeldUntil::new(".tar.zst", Awaited::Read(".claim")));
    let store = super::tests::remote(Arc::new(Tapped {
        inner: Arc::new(object_store::memory::InMemory::new()),
        tap: Arc::clone(&tap),
    }));
    // Incompressible and over one part (8 MiB): two parts at least.
    let ws = noisy_workspace(10 << 20, 5);
    let stored = run(&super::tests::rebuild_job(ws.path(), "k"), &store)
        .await
        .unwrap();
    assert_eq!(stored.result, Outcome::Stored);
    tap.assert_made_while_held(
        2,
        "the claim was checked only after the parts were acknowledged",
    );
    assert_restores_exactly(&store, ws.path()).await;
}

/// Restores key `k` from `store` and checks it matches the tree in `ws`.
async fn assert_restores_exactly(store: &Store, ws: &std::path::Path) {
    let target = workspace();
    let restored = run(&restore_job(target.path(), "k", &[]), store)
        .await
        .unwrap();
    assert_eq!(restored.result, Outcome::Exact);
    assert_eq!(
        super::tests::snapshot(&target.path().join("pkg.mod")),
        super::tests::snapshot(&ws.join("pkg.mod"))
    );
}

/// Rebuilds the test tree with 1 MiB of noise (from `seed`) as a chunked
/// entry in packs of 512 KiB (a few, fewer than the four that go up at
/// once), through a store that `tap` watches; checks that the awaited
/// request came while `at_least` held ones waited (`what` says otherwise),
/// and that the entry restores exactly.
async fn chunked_rebuild_through(tap: HeldUntil, seed: u64, at_least: usize, what: &str) -> Store {
    let tap = Arc::new(tap);
    let store = super::tests::remote(Arc::new(Tapped {
        inner: Arc::new(object_store::memory::InMemory::new()),
        tap: Arc::clone(&tap),
    }));
    let ws = noisy_workspace(1 << 20, seed);
    let job = chunked_rebuild(ws.path(), "k", 512 << 10);
    assert_eq!(run(&job, &store).await.unwrap().result, Outcome::Stored);
    tap.assert_made_while_held(at_least, what);
    assert_restores_exactly(&store, ws.path()).await;
    store
}

/// A chunked rebuild, too, checks its claim while its last packs go up.
/// (It waited for every pack and its catalog, then checked.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_rebuild_checks_its_claim_while_the_last_packs_go_up() {
    let tap = HeldUntil::new(".pack", Awaited::Read(".claim"));
    let what = "the claim was checked only after the packs were stored";
    chunked_rebuild_through(tap, 7, 2, what).await;
}

/// A chunked rebuild publishes its index once its packs are stored, while
/// their catalogs go up (an index names packs, never catalogs): a round
/// trip less at its end. (It waited for the catalogs.) Every catalog is
/// stored in the end all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_rebuild_publishes_its_index_while_the_catalogs_go_up() {
    let tap = HeldUntil::new(".catalog", Awaited::Put("k.chunked"));
    let what = "the index was published only after the catalogs";
    let store = chunked_rebuild_through(tap, 8, 2, what).await;
    use futures::TryStreamExt;
    let listed: Vec<_> = store.inner().list(None).try_collect().await.unwrap();
    let names: Vec<String> = listed.iter().map(|m| m.location.to_string()).collect();
    let packs = names.iter().filter(|n| n.ends_with(".pack")).count();
    let catalogs = names.iter().filter(|n| n.ends_with(".catalog")).count();
    assert!(packs >= 2 && catalogs == packs, "{names:?}");
}

/// Removes the key's claim as each part goes up, and before the claim is
/// read (the check runs beside the last parts, so it may come before a
/// part's turn): another rebuild's flush or takeover, as the uploading
/// rebuild would find it.
#[derive(Debug)]
struct TakesTheClaim(Arc<dyn object_store::ObjectStore>);

impl TakesTheClaim {
    async fn take(&self) {
        let claim = ObjectPath::from(full("k.claim"));
        object_store::ObjectStoreExt::delete(&*self.0, &claim)
            .await
            .unwrap();
    }
}

#[async_trait::async_trait]
impl Tap for TakesTheClaim {
    async fn part(&self, _location: &ObjectPath) {
        self.take().await;
    }

    async fn get(&self, location: &ObjectPath, _options: &GetOptions) {
        if location.as_ref().ends_with(".claim") {
            self.take().await;
        }
    }
}

/// A rebuild that finds its claim gone when its data is up discards the
/// upload, last parts and all: no entry appears, then or later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_claim_was_lost_is_discarded_whole() {
    let raw: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let store = super::tests::remote(Arc::new(Tapped {
        inner: Arc::clone(&raw),
        tap: Arc::new(TakesTheClaim(Arc::clone(&raw))),
    }));
    let ws = noisy_workspace(10 << 20, 6);
    let skipped = run(&super::tests::rebuild_job(ws.path(), "k"), &store)
        .await
        .unwrap();
    assert_eq!(skipped.result, Outcome::Skipped);
    assert!(
        skipped
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("took over the key"),
        "{:?}",
        skipped.reason
    );
    let plain = super::tests::remote(raw);
    let left = names(&plain).await;
    assert!(left.is_empty(), "{left:?}");
}

/// A rebuild reads its claim once, just before publishing, and then removes
/// it without reading it again: found ours a moment before, it cannot have
/// been taken over since. Over a link that is a round trip less at the end
/// of every rebuild. (It read the claim twice before.) The claim is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_reads_its_claim_once() {
    for chunked in [false, true] {
        let (store, recorder) = recording();
        let ws = workspace();
        tree(ws.path(), 2);
        let job = match chunked {
            true => chunked_rebuild(ws.path(), "k", 512 << 10),
            false => super::tests::rebuild_job(ws.path(), "k"),
        };
        assert_eq!(run(&job, &store).await.unwrap().result, Outcome::Stored);
        let claim = full("k.claim");
        let reads = recorder.tap.take();
        let claim_reads = reads.iter().filter(|r| r.path == claim).count();
        assert_eq!(claim_reads, 1, "chunked: {chunked}; reads: {reads:?}");
        assert!(
            names(&store).await.iter().all(|n| !n.ends_with(".claim")),
            "chunked: {chunked}; the claim was left: {:?}",
            names(&store).await
        );
    }
}

/// A chunked rebuild learns what the repository's folder holds (its packs,
/// the flushes' lists) while it claims the key, not after: over a link,
/// the round trips of the claim and of the listing overlap. (It listed the
/// packs only once the key was claimed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_rebuild_lists_the_packs_while_it_claims_the_key() {
    let tap = HeldUntil::new(".claim", Awaited::List("packs"));
    let what = "the packs were listed only after the key was claimed";
    chunked_rebuild_through(tap, 9, 1, what).await;
}
