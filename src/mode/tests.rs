//! The fast tier: the modes run in-process against object_store's `InMemory`
//! and `LocalFileSystem`, no servers and no binary. The binary suites in
//! `tests/` run the same behaviours against real servers.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::{ObjectStoreExt, PutPayload};

use crate::archive::Compression;
use crate::cancel::Cancel;
use crate::job::{self, Job, Stored, Task};
use crate::mount::{self, MountSpec};
use crate::storage::{Backend, Opened, Scratch, StorageConfig, Store, damage, entry};
use crate::summary::Outcome;

pub(super) const ROOT: &str = "octo/hello";

pub(super) fn memory() -> Store {
    remote(Arc::new(InMemory::new()))
}

/// `inner` as a remote backend's store, in the test repository's folder
/// (the filesystem backend would read its files in place instead).
pub(super) fn remote(inner: Arc<dyn object_store::ObjectStore>) -> Store {
    let opened = Opened {
        store: inner,
        location: "memory".into(),
        scratch: Scratch::None,
    };
    Store::new(Backend::Memory, opened, ROOT)
}

pub(super) fn job(task: Task, workspace: &Path) -> Job {
    Job {
        task,
        workspace: workspace.to_path_buf(),
        remote_root: ROOT.into(),
        storage: StorageConfig::Filesystem {
            root: PathBuf::from("/nonexistent"),
        },
        timeout: Duration::from_secs(10),
        exit_code: true,
        result_file: None,
        log_level: tracing::Level::INFO,
        writes_blocked: None,
        notes: Vec::new(),
    }
}

pub(super) fn specs(workspace: &Path, mounts: &[&str]) -> Vec<MountSpec> {
    let texts: Vec<String> = mounts.iter().map(|m| m.to_string()).collect();
    mount::parse_specs(workspace, &texts).expect("valid mounts")
}

pub(super) fn rebuild_job(workspace: &Path, key: &str) -> Job {
    job(
        Task::Rebuild(job::Rebuild {
            key: key.into(),
            mounts: specs(workspace, &["pkg.mod"]),
            compression: Compression::Zstd,
            level: 3,
            skip_symlinks: false,
            stored: Stored::Keep,
            holder: "a test".into(),
            chunking: None,
            cache: None,
            go_build_cache: true,
        }),
        workspace,
    )
}

pub(super) fn restore_job(workspace: &Path, key: &str, prefixes: &[&str]) -> Job {
    job(
        Task::Restore(job::Restore {
            key: key.into(),
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            mounts: specs(workspace, &["pkg.mod"]),
            fail_on_miss: false,
            drone_cache: None,
            max_bytes: 1 << 30,
            owners: false,
            cache: None,
            go_build_cache: true,
        }),
        workspace,
    )
}

/// The objects in the test repository's folder, by name.
pub(super) async fn names(store: &Store) -> Vec<String> {
    let listed = store.list().await.unwrap();
    listed.into_iter().map(|m| m.location.to_string()).collect()
}

pub(super) async fn run(job: &Job, store: &Store) -> anyhow::Result<crate::summary::Summary> {
    super::run(job, store, &Cancel::new()).await
}

/// A small Go-module-cache-like tree: files, a read-only directory, a link.
pub(super) fn tree(workspace: &Path, seed: u8) {
    let m = workspace.join("pkg.mod");
    fs::create_dir_all(m.join("example.com/lib@v1.0.0/sub")).unwrap();
    fs::create_dir_all(m.join("cache/download")).unwrap();
    fs::write(
        m.join("example.com/lib@v1.0.0/go.mod"),
        "module example.com/lib\n",
    )
    .unwrap();
    fs::write(m.join("example.com/lib@v1.0.0/sub/a.go"), vec![seed; 3000]).unwrap();
    fs::write(m.join("cache/download/big.zip"), vec![seed ^ 0x5a; 2 << 20]).unwrap();
    std::os::unix::fs::symlink("../example.com", m.join("cache/link")).unwrap();
    let lib = m.join("example.com/lib@v1.0.0");
    fs::set_permissions(&lib, fs::Permissions::from_mode(0o555)).unwrap();
}

/// Every path below `root` with its kind, mode and contents or target.
pub(super) fn snapshot(root: &Path) -> Vec<(PathBuf, String)> {
    let mut items: Vec<(PathBuf, String)> = walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let meta = e.path().symlink_metadata().unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let what = if meta.is_symlink() {
                format!("link {}", fs::read_link(e.path()).unwrap().display())
            } else if meta.is_dir() {
                format!("dir {mode:o}")
            } else {
                let data = fs::read(e.path()).unwrap();
                format!(
                    "file {mode:o} {} {:x}",
                    data.len(),
                    xxhash_rust::xxh3::xxh3_64(&data)
                )
            };
            (e.path().strip_prefix(root).unwrap().to_path_buf(), what)
        })
        .collect();
    items.sort();
    items
}

pub(super) fn workspace() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_tree_restores_exactly() {
    let store = memory();
    let source = workspace();
    tree(source.path(), 1);
    let stored = run(&rebuild_job(source.path(), "k"), &store).await.unwrap();
    assert_eq!(stored.result, Outcome::Stored);
    assert_eq!(stored.object.as_deref(), Some("octo/hello/k.tar.zst"));

    let target = workspace();
    let restored = run(&restore_job(target.path(), "k", &[]), &store)
        .await
        .unwrap();
    assert_eq!(restored.result, Outcome::Exact);
    assert_eq!(restored.files, stored.files);
    assert_eq!(
        snapshot(&source.path().join("pkg.mod")),
        snapshot(&target.path().join("pkg.mod"))
    );
}

/// Every directory's mode and time, deepest first.
fn dir_times(root: &Path) -> Vec<(PathBuf, u32, i64)> {
    walkdir::WalkDir::new(root)
        .contents_first(true)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_dir())
        .map(|e| {
            let meta = e.metadata().unwrap();
            let mtime = filetime::FileTime::from_last_modification_time(&meta);
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            (
                rel,
                meta.permissions().mode() & 0o7777,
                mtime.unix_seconds(),
            )
        })
        .collect()
}

/// Directories get their modes and times once everything inside them is
/// written, whether the restore shares that work among threads (thousands
/// of directories, all open to their owner) or not (one shuts its owner
/// out, so the deepest go first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_keep_their_modes_and_times() {
    for shut in [false, true] {
        let store = memory();
        let source = workspace();
        let m = source.path().join("pkg.mod");
        for i in 0..1500 {
            let dir = m.join(format!("mod{}/v{i}/sub", i % 40));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("a.go"), format!("package a{i}\n")).unwrap();
        }
        if shut {
            fs::create_dir_all(m.join("private/inner")).unwrap();
        }
        let mut dirs = dir_times(&m);
        for (n, (rel, _, _)) in dirs.iter_mut().enumerate() {
            let path = m.join(&*rel);
            let when = filetime::FileTime::from_unix_time(1_600_000_000 + n as i64 * 60, 0);
            filetime::set_file_mtime(&path, when).unwrap();
            if rel.starts_with("mod1") && rel.components().count() == 2 {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o555)).unwrap();
            }
        }
        if shut {
            let private = m.join("private");
            fs::set_permissions(&private, fs::Permissions::from_mode(0o640)).unwrap();
        }
        let before = dir_times(&m);
        let stored = run(&rebuild_job(source.path(), "k"), &store).await.unwrap();
        assert_eq!(stored.result, Outcome::Stored);
        let target = workspace();
        let restored = run(&restore_job(target.path(), "k", &[]), &store)
            .await
            .unwrap();
        assert_eq!(restored.result, Outcome::Exact);
        let after = dir_times(&target.path().join("pkg.mod"));
        if shut {
            // Let the test's tempdirs be removed.
            for root in [&m, &target.path().join("pkg.mod")] {
                fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o755))
                    .unwrap();
            }
        }
        assert_eq!(after.len(), before.len());
        for (want, got) in before.iter().zip(&after) {
            assert_eq!(want, got, "shut out: {shut}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_key_is_skipped_and_override_replaces_it() {
    let store = memory();
    let ws = workspace();
    tree(ws.path(), 1);
    run(&rebuild_job(ws.path(), "k"), &store).await.unwrap();
    let again = run(&rebuild_job(ws.path(), "k"), &store).await.unwrap();
    assert_eq!(again.result, Outcome::Skipped);
    assert!(again.reason.unwrap().contains("already stored"));

    let mut replace = rebuild_job(ws.path(), "k");
    if let Task::Rebuild(task) = &mut replace.task {
        task.stored = Stored::Replace;
        task.compression = Compression::Gzip;
        task.level = 1;
    }
    assert_eq!(run(&replace, &store).await.unwrap().result, Outcome::Stored);
    // One entry per key: the zstd one went when the gzip one replaced it.
    let names = names(&store).await;
    assert_eq!(names, ["k.tar.gz"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_then_a_restore_key_finds_the_newest_match() {
    let store = memory();
    let ws = workspace();
    let target = workspace();
    let missed = run(&restore_job(target.path(), "gomod-b", &["gomod-"]), &store)
        .await
        .unwrap();
    assert_eq!(missed.result, Outcome::Miss);
    assert!(!target.path().join("pkg.mod").exists());

    tree(ws.path(), 1);
    run(&rebuild_job(ws.path(), "gomod-1"), &store)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    fs::write(ws.path().join("pkg.mod/cache/newer"), "2").unwrap();
    run(&rebuild_job(ws.path(), "gomod-2"), &store)
        .await
        .unwrap();
    let partial = run(
        &restore_job(target.path(), "gomod-b", &["other-", "gomod-"]),
        &store,
    )
    .await
    .unwrap();
    assert_eq!(partial.result, Outcome::Partial);
    assert_eq!(partial.matched_key.as_deref(), Some("gomod-2"));
    assert!(target.path().join("pkg.mod/cache/newer").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_entry_is_reported_and_replaced() {
    let store = memory();
    let ws = workspace();
    tree(ws.path(), 1);
    run(&rebuild_job(ws.path(), "k"), &store).await.unwrap();
    let object = entry::path("k", Compression::Zstd);
    let bytes = store
        .inner()
        .get(&object)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let cut = PutPayload::from(bytes.slice(..bytes.len() / 2));
    store.inner().put(&object, cut).await.unwrap();

    let target = workspace();
    fs::create_dir(target.path().join("pkg.mod")).unwrap();
    fs::write(target.path().join("pkg.mod/mine"), "local").unwrap();
    let before = snapshot(target.path());
    let failed = run(&restore_job(target.path(), "k", &[]), &store).await;
    assert!(failed.is_err());
    assert_eq!(snapshot(target.path()), before, "the workspace changed");
    assert!(store.head(&damage::path("k")).await.unwrap().is_some());

    let healed = run(&rebuild_job(ws.path(), "k"), &store).await.unwrap();
    assert_eq!(healed.result, Outcome::Stored);
    assert!(store.head(&damage::path("k")).await.unwrap().is_none());
    let restored = run(&restore_job(target.path(), "k", &[]), &store)
        .await
        .unwrap();
    assert_eq!(restored.result, Outcome::Exact);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_rebuilds_at_once_one_stores() {
    let store = memory();
    let ws = workspace();
    tree(ws.path(), 1);
    let job = rebuild_job(ws.path(), "k");
    let (a, b) = tokio::join!(run(&job, &store), run(&job, &store));
    let mut results = [a.unwrap().result, b.unwrap().result];
    results.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(results, [Outcome::Skipped, Outcome::Stored]);
    assert!(store.head(&entry::claim_path("k")).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_requests_do_not_write() {
    let store = memory();
    let ws = workspace();
    tree(ws.path(), 1);
    let mut job = rebuild_job(ws.path(), "k");
    job.writes_blocked = Some("a pull request".into());
    assert_eq!(run(&job, &store).await.unwrap().result, Outcome::Skipped);
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_keeps_the_newest_entries_that_fit() {
    let store = memory();
    let ws = workspace();
    tree(ws.path(), 1);
    run(&rebuild_job(ws.path(), "old"), &store).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    run(&rebuild_job(ws.path(), "new"), &store).await.unwrap();
    let size = store.list().await.unwrap()[0].size;
    let flush = job(
        Task::Flush(job::Flush {
            max_age: None,
            max_size: Some(size + size / 2),
            dry_run: false,
            timing: Default::default(),
        }),
        ws.path(),
    );
    let report = run(&flush, &store).await.unwrap();
    assert_eq!((report.deleted, report.kept), (Some(1), Some(1)));
    let names = names(&store).await;
    assert_eq!(names, ["new.tar.zst"]);
}

/// On a volume the restore reads the entry file itself, and leftovers of
/// killed rebuilds (`<object>#<n>`) go once idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_round_trip_and_its_leftovers() {
    let volume = tempfile::tempdir().unwrap();
    let opened = crate::storage::filesystem::open(volume.path()).unwrap();
    let store = Store::new(Backend::Filesystem, opened, ROOT);
    let ws = workspace();
    tree(ws.path(), 3);
    let folder = volume.path().join(ROOT);
    fs::create_dir_all(&folder).unwrap();
    let leftover = folder.join("k.tar.zst#7");
    fs::write(&leftover, "half an upload").unwrap();
    let old = filetime::FileTime::from_unix_time(1_000_000, 0);
    filetime::set_file_mtime(&leftover, old).unwrap();

    assert_eq!(
        run(&rebuild_job(ws.path(), "k"), &store)
            .await
            .unwrap()
            .result,
        Outcome::Stored
    );
    assert!(!leftover.exists(), "the leftover upload stayed");
    let target = workspace();
    let restored = run(&restore_job(target.path(), "k", &[]), &store)
        .await
        .unwrap();
    assert_eq!(
        snapshot(&ws.path().join("pkg.mod")),
        snapshot(&target.path().join("pkg.mod"))
    );
    // Read in place: no download to wait for, and no wait reported.
    assert_eq!(restored.download_wait_seconds, None);
}

/// Without `override`, a stored key is uploaded again only when the mounts
/// changed since; `override: false` keeps it whatever changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_key_is_refreshed_only_when_its_mounts_change() {
    let store = memory();
    let ws = workspace();
    tree(ws.path(), 1);
    let mut job = rebuild_job(ws.path(), "volume");
    if let Task::Rebuild(task) = &mut job.task {
        task.stored = Stored::ReplaceIfChanged;
    }
    assert_eq!(run(&job, &store).await.unwrap().result, Outcome::Stored);
    let first = store.list().await.unwrap()[0].clone();

    let unchanged = run(&job, &store).await.unwrap();
    assert_eq!(unchanged.result, Outcome::Skipped);
    assert!(unchanged.reason.unwrap().contains("have not changed"));
    assert_eq!(store.list().await.unwrap()[0].e_tag, first.e_tag);

    fs::write(
        ws.path().join("pkg.mod/cache/download/new.zip"),
        "new module",
    )
    .unwrap();
    let mut keep = job.clone();
    if let Task::Rebuild(task) = &mut keep.task {
        task.stored = Stored::Keep;
    }
    assert_eq!(run(&keep, &store).await.unwrap().result, Outcome::Skipped);
    assert_eq!(run(&job, &store).await.unwrap().result, Outcome::Stored);
    let target = workspace();
    run(&restore_job(target.path(), "volume", &[]), &store)
        .await
        .unwrap();
    assert!(
        target
            .path()
            .join("pkg.mod/cache/download/new.zip")
            .exists()
    );
}

#[test]
fn the_pace_is_set_by_whichever_kept_the_other_waiting() {
    let s = std::time::Duration::from_secs;
    let download = ("unpacking", "download", "network or storage");
    assert_eq!(
        super::pace(download, s(3), s(4)),
        "unpacking waited 3.00 s of the 4.00 s for the download: the download (network or \
         storage) set the pace"
    );
    assert!(
        super::pace(("archiving", "upload", "network or storage"), s(1), s(4))
            .ends_with("for the upload: archiving (CPU and disk) set the pace")
    );
}
