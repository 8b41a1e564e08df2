//! Hardening: what an attacker with write access to the cache, or a fault
//! at a bad moment, could do, and what must hold anyway. Each scenario runs
//! on every backend it applies to; each was a defect (issue 9) and fails on
//! the code before its fix.

mod common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use common::hostile::{self, Raw};
use common::tree::{self, assert_same, snapshot};
use common::{Backend, Step, to_run, unique_root, workspace};

/// Scenarios that only need the backend to serve planted entries.
macro_rules! read_suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            fn backend() -> Backend {
                Backend::$backend()
            }

            #[test]
            fn a_symlink_left_by_an_earlier_restore_is_not_followed() {
                super::a_symlink_left_by_an_earlier_restore_is_not_followed(&backend());
            }
            #[test]
            fn a_mount_is_never_restored_as_a_link() {
                super::a_mount_is_never_restored_as_a_link(&backend());
            }
            #[test]
            fn expansion_is_bounded() {
                super::expansion_is_bounded(&backend());
            }
            #[test]
            fn without_mount_an_entry_only_creates_paths() {
                super::without_mount_an_entry_only_creates_paths(&backend());
            }
            #[test]
            fn the_tar_end_is_checked_in_plain_tar() {
                super::the_tar_end_is_checked_in_plain_tar(&backend());
            }
            #[test]
            fn messages_name_the_entry_not_its_garbage() {
                super::messages_name_the_entry_not_its_garbage(&backend());
            }
            #[test]
            fn a_mount_with_only_special_files_is_left_alone() {
                super::a_mount_with_only_special_files_is_left_alone(&backend());
            }
        }
    };
}

/// Scenarios where larder writes: healing and cleaning up.
macro_rules! write_suite {
    ($backend:ident, $module:ident) => {
        mod $module {
            use super::*;

            fn backend() -> Backend {
                Backend::$backend()
            }

            #[test]
            fn a_damaged_entry_is_replaced_by_the_next_rebuild() {
                super::a_damaged_entry_is_replaced_by_the_next_rebuild(&backend());
            }
            #[test]
            fn a_second_signal_does_not_skip_the_cleanup() {
                super::a_second_signal_does_not_skip_the_cleanup(&backend());
            }
            #[test]
            fn a_killed_restore_leaves_debris_the_next_one_removes() {
                super::a_killed_restore_leaves_debris_the_next_one_removes(&backend());
            }
        }
    };
}

read_suite!(filesystem);
read_suite!(s3);
read_suite!(sftp);
read_suite!(azure);
read_suite!(gcs);
write_suite!(filesystem, filesystem_writes);
write_suite!(s3, s3_writes);
write_suite!(sftp, sftp_writes);
write_suite!(azure, azure_writes);

fn tar_entry(root: &str, key: &str) -> String {
    format!("{root}/{key}.tar")
}

/// Names in `dir`, sorted; empty if it does not exist.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn no_debris(ws: &Path) {
    let debris: Vec<String> = walkdir::WalkDir::new(ws)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".larder-"))
        .collect();
    assert!(debris.is_empty(), "left behind: {debris:?}");
}

/// Entry A restores `node_modules/evil -> <outside>`, which is allowed (a
/// link inside a mount). Entry B then names a mount below that link; staging
/// must not create or replace anything through it.
fn a_symlink_left_by_an_earlier_restore_is_not_followed(backend: &Backend) {
    let outside = workspace();
    let target = outside.path().display().to_string();
    fs::create_dir_all(outside.path().join("x/node_modules")).unwrap();
    fs::write(outside.path().join("x/node_modules/keep"), "theirs").unwrap();
    let before_outside = snapshot(outside.path());
    let root = unique_root("symlink-escape");
    let ws = workspace();
    backend.put(
        &tar_entry(&root, "a"),
        hostile::tar(&[
            Raw::dir("node_modules/"),
            Raw::symlink("node_modules/evil", &target),
        ]),
    );
    Step::new(ws.path(), backend, &root)
        .set("PLUGIN_MOUNT", "node_modules")
        .set("PLUGIN_CACHE_KEY", "a")
        .restore()
        .assert_code(0);
    assert!(ws.path().join("node_modules/evil").is_symlink());
    let nested = "node_modules/evil/x/node_modules";
    let fresh = "node_modules/evil/y/node_modules";
    backend.put(
        &tar_entry(&root, "b"),
        hostile::tar(&[
            hostile::manifest(&[nested, fresh], &[]),
            Raw::dir(&format!("{nested}/")),
            Raw::file(&format!("{nested}/planted"), b"x"),
            Raw::dir(&format!("{fresh}/")),
            Raw::file(&format!("{fresh}/planted"), b"x"),
        ]),
    );
    let before_ws = snapshot(ws.path());
    // Listed explicitly, matched by a pattern, or taken from the entry.
    for mount in [Some(nested), Some(fresh), Some("**/node_modules"), None] {
        let step = Step::new(ws.path(), backend, &root).set("PLUGIN_CACHE_KEY", "b");
        let step = match mount {
            Some(mount) => step.set("PLUGIN_MOUNT", mount),
            None => step.unset("PLUGIN_MOUNT"),
        };
        let run = step.restore();
        assert_eq!(run.code, 1, "{mount:?}: {}", run.log());
        run.assert_log("node_modules/evil is a symbolic link");
        assert_same(&before_outside, &snapshot(outside.path()));
        assert_same(&before_ws, &snapshot(ws.path()));
    }
}

fn a_mount_is_never_restored_as_a_link(backend: &Backend) {
    let outside = workspace();
    for (name, entry) in [
        (
            "symlink",
            Raw::symlink("pkg.mod", &outside.path().display().to_string()),
        ),
        ("hard link", Raw::hardlink("pkg.mod", "pkg.mod")),
    ] {
        let root = unique_root("mount-link");
        let ws = workspace();
        backend.put(&tar_entry(&root, "gomod-main"), hostile::tar(&[entry]));
        let before = snapshot(ws.path());
        let run = Step::new(ws.path(), backend, &root).restore();
        assert_eq!(run.code, 1, "{name}: {}", run.log());
        run.assert_log("a mount must be a directory or a file");
        assert_same(&before, &snapshot(ws.path()));
        assert!(!ws.path().join("pkg.mod").exists());
    }
}

fn expansion_is_bounded(backend: &Backend) {
    let root = unique_root("bounded");
    // (case, entry bytes, extra setting, expected message)
    let big = tree::noise(3, 2 << 20);
    let zeros = vec![0u8; 64 << 20];
    type Setting = Option<(&'static str, &'static str)>;
    let cases: Vec<(&str, Vec<u8>, Setting, &str)> = vec![
        (
            "more than the manifest declares",
            hostile::tar(&[
                hostile::manifest(&["pkg.mod"], &[(2, 1000)]),
                Raw::dir("pkg.mod/"),
                Raw::file("pkg.mod/big", &big),
            ]),
            None,
            "holds more than its manifest declares for pkg.mod",
        ),
        (
            "more entries than declared",
            hostile::tar(
                &std::iter::once(hostile::manifest(&["pkg.mod"], &[(3, 1 << 20)]))
                    .chain(std::iter::once(Raw::dir("pkg.mod/")))
                    .chain((0..10).map(|i| Raw::file(&format!("pkg.mod/f{i}"), b"x")))
                    .collect::<Vec<_>>(),
            ),
            None,
            "holds more than its manifest declares",
        ),
        (
            "a declared size no disk has",
            hostile::tar(&[
                hostile::manifest(&["pkg.mod"], &[(2, 1 << 50)]),
                Raw::dir("pkg.mod/"),
                Raw::file("pkg.mod/f", b"x"),
            ]),
            Some(("PLUGIN_MAX_RESTORE_SIZE", "2PiB")),
            "not enough disk space to restore pkg.mod",
        ),
        (
            "a zstd bomb",
            zstd::encode_all(
                hostile::tar(&[Raw::dir("pkg.mod/"), Raw::file("pkg.mod/zeros", &zeros)])
                    .as_slice(),
                19,
            )
            .unwrap(),
            Some(("PLUGIN_MAX_RESTORE_SIZE", "16MiB")),
            "more than max_restore_size (16.8 MB)",
        ),
        (
            "a sparse bomb",
            hostile::tar(&[
                Raw::dir("pkg.mod/"),
                Raw::sparse("pkg.mod/sparse", 20 << 30, &[1; 512]),
            ]),
            Some(("PLUGIN_MAX_RESTORE_SIZE", "1GiB")),
            "more than max_restore_size (1.1 GB)",
        ),
        (
            "a sparse file bigger than the disk",
            hostile::tar(&[
                Raw::dir("pkg.mod/"),
                Raw::sparse("pkg.mod/sparse", 1 << 50, &[1; 512]),
            ]),
            Some(("PLUGIN_MAX_RESTORE_SIZE", "2PiB")),
            "not enough disk space: the file is 1.1 PB",
        ),
    ];
    for (name, bytes, setting, expected) in cases {
        let ws = workspace();
        let key = format!("bomb-{}", name.replace(' ', "-"));
        let object = format!("{root}/{key}.tar");
        println!("{name}: {} bytes of entry", bytes.len());
        backend.put(&object, bytes);
        let before = snapshot(ws.path());
        let mut step = Step::new(ws.path(), backend, &root).set("PLUGIN_CACHE_KEY", &key);
        if let Some((k, v)) = setting {
            step = step.set(k, v);
        }
        let started = Instant::now();
        let run = step.restore();
        assert_eq!(run.code, 1, "{name}: {}", run.log());
        run.assert_log(expected);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name}: took {:?}",
            started.elapsed()
        );
        assert_same(&before, &snapshot(ws.path()));
    }
}

fn without_mount_an_entry_only_creates_paths(backend: &Backend) {
    let root = unique_root("no-mount");
    let ws = workspace();
    fs::write(ws.path().join("main.go"), "package main // mine").unwrap();
    fs::create_dir_all(ws.path().join(".git/hooks")).unwrap();
    backend.put(
        &tar_entry(&root, "gomod-main"),
        hostile::tar(&[
            hostile::manifest(&["main.go", ".git/hooks/post-checkout", "pkg.mod"], &[]),
            Raw::file("main.go", b"package main // planted"),
            Raw::file(".git/hooks/post-checkout", b"#!/bin/sh\necho planted\n").mode(0o755),
            Raw::dir("pkg.mod/"),
            Raw::file("pkg.mod/module", b"cached"),
        ]),
    );
    let run = Step::new(ws.path(), backend, &root)
        .unset("PLUGIN_MOUNT")
        .restore();
    run.assert_code(0)
        .assert_log("main.go, which already exists in the workspace")
        .assert_log("inside .git");
    assert_eq!(
        fs::read_to_string(ws.path().join("main.go")).unwrap(),
        "package main // mine"
    );
    assert!(!ws.path().join(".git/hooks/post-checkout").exists());
    assert_eq!(
        fs::read_to_string(ws.path().join("pkg.mod/module")).unwrap(),
        "cached"
    );
    // Listing it is the way to replace it.
    Step::new(ws.path(), backend, &root)
        .set("PLUGIN_MOUNT", "main.go")
        .restore()
        .assert_code(0);
    assert_eq!(
        fs::read_to_string(ws.path().join("main.go")).unwrap(),
        "package main // planted"
    );
}

/// Plain tar has no compression checksum: the end-of-archive marker and
/// what follows it are checked by larder itself.
fn the_tar_end_is_checked_in_plain_tar(backend: &Backend) {
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage, &str); 3] = [
        (
            "appended data",
            |b| b.extend_from_slice(b"appended by someone"),
            "after the end-of-archive marker are not zero",
        ),
        (
            "damaged second end block",
            |b| {
                let at = b.len() - 100;
                b[at] = 7;
            },
            "after the end-of-archive marker are not zero",
        ),
        (
            "missing second end block",
            |b| b.truncate(b.len() - 512),
            "end-of-archive marker is incomplete",
        ),
    ];
    for (name, damage, expected) in cases {
        let root = unique_root("tar-end");
        let ws = workspace();
        tree::rich(ws.path());
        Step::new(ws.path(), backend, &root)
            .set("PLUGIN_ARCHIVE_FORMAT", "tar")
            .store_entry();
        let object = tar_entry(&root, "gomod-main");
        let mut bytes = backend.get(&object).unwrap();
        damage(&mut bytes);
        backend.put(&object, bytes);
        fs::write(ws.path().join("pkg.mod/mine"), "local work").unwrap();
        let before = snapshot(ws.path());
        let run = Step::new(ws.path(), backend, &root).restore();
        assert_eq!(run.code, 1, "{name}: {}", run.log());
        run.assert_log(expected);
        assert_same(&before, &snapshot(ws.path()));
    }
}

fn messages_name_the_entry_not_its_garbage(backend: &Backend) {
    let mut garbage = b"GARBAGE!".repeat(64);
    garbage.extend(b"GARBAGE!".repeat(64));
    let cases: Vec<(&str, Vec<Raw>, &str)> = vec![
        (
            "unknown type",
            vec![Raw::dir("pkg.mod/"), Raw::typed("pkg.mod/z", b'Z')],
            "entry 'pkg.mod/z': it is of an unsupported type ('Z', unknown entry type)",
        ),
        (
            "lying size",
            vec![
                Raw::dir("pkg.mod/"),
                Raw::file("pkg.mod/liar", &garbage).declared_size(100),
                Raw::file("pkg.mod/after", b"x"),
            ],
            "(after entry 'pkg.mod/liar') is not a valid tar header (bad checksum, size or other number); entry 'pkg.mod/liar' may declare a wrong size",
        ),
        (
            "negative size",
            vec![
                Raw::dir("pkg.mod/"),
                Raw::file("pkg.mod/ok", b"x"),
                Raw::file("pkg.mod/negative", b"x").negative_size(),
            ],
            "the tar header at byte 1536 (after entry 'pkg.mod/ok') is not a valid tar header",
        ),
    ];
    for (name, entries, expected) in cases {
        let root = unique_root("messages");
        let ws = workspace();
        backend.put(&tar_entry(&root, "gomod-main"), hostile::tar(&entries));
        let run = Step::new(ws.path(), backend, &root).restore();
        assert_eq!(run.code, 1, "{name}: {}", run.log());
        run.assert_log(expected);
        for bad in ["GARBAGE", "Nonexhaustive", "size overflow"] {
            assert!(!run.log().contains(bad), "{name}: {bad} in\n{}", run.log());
        }
    }
}

/// An entry that names a mount but holds only a FIFO for it (skipped, as
/// devices are) leaves that mount as it is; it used to fail at commit after
/// moving the existing copy aside. Found by the `extract` fuzz target.
fn a_mount_with_only_special_files_is_left_alone(backend: &Backend) {
    let root = unique_root("fifo-only");
    let ws = workspace();
    fs::create_dir(ws.path().join("pkg.mod")).unwrap();
    fs::write(ws.path().join("pkg.mod/mine"), "local").unwrap();
    backend.put(
        &tar_entry(&root, "gomod-main"),
        hostile::tar(&[Raw::special("pkg.mod/fifo", tar::EntryType::Fifo)]),
    );
    let before = snapshot(ws.path());
    Step::new(ws.path(), backend, &root)
        .restore()
        .assert_code(0)
        .assert_log("the entry holds nothing for mount pkg.mod");
    assert_same(&before, &snapshot(ws.path()));
}

/// A restore that finds the entry damaged records it; the next rebuild of
/// the key replaces it; a pull request build neither records nor rebuilds.
fn a_damaged_entry_is_replaced_by_the_next_rebuild(backend: &Backend) {
    let root = unique_root("heal");
    let ws = workspace();
    tree::rich(ws.path());
    let expected = snapshot(&ws.path().join("pkg.mod"));
    Step::new(ws.path(), backend, &root).store_entry();
    let object = format!("{root}/gomod-main.tar.gz");
    let mut bytes = backend.get(&object).unwrap();
    bytes.truncate(bytes.len() / 2);
    backend.put(&object, bytes);
    let report = format!("{root}/gomod-main.damaged");

    let fresh = workspace();
    Step::new(fresh.path(), backend, &root)
        .set("DRONE_BUILD_EVENT", "pull_request")
        .restore()
        .assert_code(1)
        .assert_log("pull requests do not write to the cache");
    assert!(backend.get(&report).is_none(), "a pull request wrote");

    Step::new(fresh.path(), backend, &root)
        .restore()
        .assert_code(1)
        .assert_log("the next rebuild of 'gomod-main' will replace it");
    assert!(backend.get(&report).is_some(), "no damage report");
    assert_eq!(names(fresh.path()), Vec::<String>::new());

    Step::new(ws.path(), backend, &root)
        .set("DRONE_BUILD_EVENT", "pull_request")
        .rebuild()
        .assert_code(0)
        .assert_log("rebuild: skipped: this is a pull request build");
    Step::new(ws.path(), backend, &root)
        .rebuild()
        .assert_code(0)
        .assert_log("a restore found that entry damaged")
        .assert_log("rebuild: stored key 'gomod-main'")
        .assert_log("the damaged entry of key 'gomod-main' was replaced");
    assert!(backend.get(&report).is_none(), "the report stayed");
    Step::new(ws.path(), backend, &root)
        .rebuild()
        .assert_code(0)
        .assert_log("is already stored");
    Step::new(fresh.path(), backend, &root)
        .restore()
        .assert_code(0)
        .assert_log("restore: hit");
    assert_same(&expected, &snapshot(&fresh.path().join("pkg.mod")));
}

/// A workspace with an entry big enough that a restore takes a while.
fn slow_entry(backend: &Backend, root: &str) -> tempfile::TempDir {
    let ws = workspace();
    fs::create_dir(ws.path().join("pkg.mod")).unwrap();
    for i in 0..3000 {
        let dir = ws.path().join(format!("pkg.mod/d{}", i % 40));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("f{i}")), tree::noise(i, 16_000)).unwrap();
    }
    Step::new(ws.path(), backend, root)
        .set("PLUGIN_ARCHIVE_FORMAT", "zstd")
        .store_entry();
    ws
}

/// Waits until a restore has written at least `files` files into its
/// staging directory.
fn wait_for_staging(ws: &Path, files: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let staged = walkdir::WalkDir::new(ws)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .filter(|e| e.path().to_string_lossy().contains(".larder-restore-"))
            .count();
        if staged >= files {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("the restore never staged {files} files in {}", ws.display());
}

fn a_second_signal_does_not_skip_the_cleanup(backend: &Backend) {
    use std::io::BufRead;
    let root = unique_root("second-signal");
    let _source = slow_entry(backend, &root);
    let ws = workspace();
    let mut child = Step::new(ws.path(), backend, &root)
        .command("restore")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log, read as it comes, so the second signal can follow the
    // first only once larder has taken it (two signals sent at once are
    // one signal).
    let stderr = child.stderr.take().unwrap();
    let (heard, first_taken) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("received a stop signal") {
                let _ = heard.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    // Half the files staged: removing them takes a while, and the second
    // signal arrives during that.
    wait_for_staging(ws.path(), 1500);
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    first_taken
        .recv_timeout(Duration::from_secs(20))
        .expect("larder never took the first signal");
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let status = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(!status.success(), "{log}");
    no_debris(ws.path());
    assert_eq!(names(ws.path()), Vec::<String>::new());
    assert!(
        log.contains("received another stop signal: still cleaning up"),
        "the second signal came too late to prove anything:\n{log}"
    );
}

fn a_killed_restore_leaves_debris_the_next_one_removes(backend: &Backend) {
    let root = unique_root("killed-restore");
    let source = slow_entry(backend, &root);
    let ws = workspace();
    let mut child = Step::new(ws.path(), backend, &root)
        .command("restore")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_staging(ws.path(), 100);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        names(ws.path())
            .iter()
            .any(|n| n.starts_with(".larder-restore-")),
        "SIGKILL left nothing to clean up; the test proves nothing"
    );
    Step::new(ws.path(), backend, &root)
        .restore()
        .assert_code(0)
        .assert_log("left behind by an interrupted restore");
    no_debris(ws.path());
    assert_same(
        &snapshot(&source.path().join("pkg.mod")),
        &snapshot(&ws.path().join("pkg.mod")),
    );
}

/// Files of unfinished uploads that a SIGKILLed rebuild leaves on a volume
/// or an SFTP server (object stores hide incomplete multipart uploads) are
/// removed by the next rebuild of the key and by flush.
fn unfinished_uploads_are_removed(
    backend: &Backend,
    local_root: &Path,
    is_temporary: fn(&str) -> bool,
) {
    let temporaries = || -> Vec<std::path::PathBuf> {
        walkdir::WalkDir::new(local_root)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| is_temporary(&e.file_name().to_string_lossy()))
            .map(|e| e.path().to_path_buf())
            .collect()
    };
    let age = |path: &Path, by: Duration| {
        let then = SystemTime::now() - by;
        filetime::set_file_mtime(path, filetime::FileTime::from_system_time(then)).unwrap();
    };
    let root = unique_root("killed-rebuild");
    let ws = workspace();
    fs::create_dir(ws.path().join("pkg.mod")).unwrap();
    for i in 0..8 {
        fs::write(
            ws.path().join(format!("pkg.mod/blob{i}")),
            tree::noise(i, 16 << 20),
        )
        .unwrap();
    }
    for key in ["one", "two"] {
        let mut child = Step::new(ws.path(), backend, &root)
            .set("PLUGIN_CACHE_KEY", key)
            .set("PLUGIN_COMPRESSION_LEVEL", "9")
            .command("rebuild")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while temporaries().len() < [1, 2][usize::from(key == "two")] && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(200));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let left = temporaries();
    assert_eq!(
        left.len(),
        2,
        "SIGKILL left {left:?}; the test proves nothing"
    );
    // The next rebuild of key one removes its own leftover once it is idle.
    let claim = local_root.join(&root).join("one.claim");
    let _ = fs::remove_file(&claim);
    for path in &left {
        age(path, Duration::from_secs(180));
    }
    Step::new(ws.path(), backend, &root)
        .set("PLUGIN_CACHE_KEY", "one")
        .set("PLUGIN_ARCHIVE_FORMAT", "tar")
        .rebuild()
        .assert_code(0)
        .assert_log("removed 1 unfinished upload(s) of key 'one'")
        .assert_log("rebuild: stored key 'one'");
    let left = temporaries();
    assert_eq!(left.len(), 1, "{left:?}");
    // Flush removes any leftover idle for an hour.
    age(&left[0], Duration::from_secs(7200));
    Step::new(ws.path(), backend, &root)
        .unset("PLUGIN_MOUNT")
        .set("PLUGIN_FLUSH_AGE", "30d")
        .run("flush")
        .assert_code(0)
        .assert_log("removed the unfinished upload");
    assert_eq!(temporaries(), Vec::<std::path::PathBuf>::new());
}

#[test]
fn unfinished_uploads_are_removed_on_a_volume() {
    let backend = Backend::filesystem();
    let root = backend
        .setting("PLUGIN_FILESYSTEM_CACHE_ROOT")
        .unwrap()
        .to_string();
    unfinished_uploads_are_removed(&backend, Path::new(&root), |name| {
        name.rsplit_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
}

#[test]
fn unfinished_uploads_are_removed_on_sftp() {
    let backend = Backend::sftp();
    let home = std::env::var("LARDER_TEST_SFTP_HOME").unwrap();
    let user = backend.setting("PLUGIN_SFTP_USERNAME").unwrap();
    let root = backend.setting("PLUGIN_SFTP_CACHE_ROOT").unwrap();
    let local = Path::new(&home).join(user).join(root);
    unfinished_uploads_are_removed(&backend, &local, |name| name.ends_with(".larder-tmp"));
}

/// ENOSPC while the file writer pool writes a file: the message names that
/// file once, not wrapped in the name of whatever entry came next.
#[test]
fn a_full_disk_is_reported_once_with_the_right_entry() {
    assert!(
        common::is_root(),
        "this test mounts a small tmpfs and must run as root (CI does)"
    );
    let backend = Backend::filesystem();
    let root = unique_root("enospc");
    let ws = workspace();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(ws.path())
        .status()
        .expect("mount");
    assert!(
        status.success(),
        "cannot mount a tmpfs at {}",
        ws.path().display()
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(ws.path());
    let entries: Vec<Raw> = std::iter::once(Raw::dir("pkg.mod/"))
        .chain((0..200).map(|i| Raw::file(&format!("pkg.mod/f{i:03}"), &tree::noise(i, 20_000))))
        .collect();
    backend.put(&tar_entry(&root, "gomod-main"), hostile::tar(&entries));
    let run = Step::new(ws.path(), &backend, &root).restore();
    run.assert_code(1).assert_log("No space left on device");
    assert_eq!(
        run.log().matches("cannot restore entry").count(),
        1,
        "{}",
        run.log()
    );
    assert_eq!(names(ws.path()), Vec::<String>::new());
}

/// A rebuild whose S3 server dies gives up; once the server is back, the
/// claim it held is released, so the next rebuild of the key is not
/// skipped for minutes as "being stored right now".
#[test]
fn a_claim_is_released_when_the_server_comes_back() {
    let mut server = common::S3Server::start();
    let backend = server.backend();
    let root = unique_root("server-dies");
    let ws = workspace();
    fs::create_dir(ws.path().join("pkg.mod")).unwrap();
    for i in 0..8 {
        fs::write(
            ws.path().join(format!("pkg.mod/blob{i}")),
            tree::noise(i, 16 << 20),
        )
        .unwrap();
    }
    let child = Step::new(ws.path(), &backend, &root)
        .set("PLUGIN_COMPRESSION_LEVEL", "9")
        .set("PLUGIN_EXIT_CODE", "false")
        .command("rebuild")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let claim = format!("{root}/gomod-main.claim");
    let on_disk = server
        .data
        .path()
        .join(common::S3Server::BUCKET)
        .join(&claim);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !on_disk.exists() {
        assert!(
            Instant::now() < deadline,
            "the rebuild never claimed the key"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill();
    std::thread::sleep(Duration::from_millis(2500));
    server.resume();
    let run = to_run(child.wait_with_output().unwrap());
    run.assert_code(0).assert_log("rebuild failed");
    assert!(
        backend.get(&claim).is_none(),
        "the claim stayed:\n{}",
        run.log()
    );
    let again = Step::new(ws.path(), &backend, &root)
        .set("PLUGIN_ARCHIVE_FORMAT", "tar")
        .rebuild();
    again
        .assert_code(0)
        .assert_log("rebuild: stored key 'gomod-main'");
}
