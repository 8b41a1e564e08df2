//! Directory trees: build fixtures shaped like real caches, and snapshot
//! trees (types, modes, owners, mtimes to the nanosecond, contents, link
//! targets, hard-link groups) so two trees can be compared exactly.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    pub content: String,
    pub link: Option<PathBuf>,
    /// Index of this node's hard-link group (by first appearance), if nlink > 1.
    pub link_group: Option<usize>,
}

pub type Snapshot = BTreeMap<PathBuf, Node>;

/// Snapshots `root` (not following links); paths are relative to `root`.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut groups: HashMap<(u64, u64), usize> = HashMap::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false)
        .sort_by_file_name()
    {
        let entry = entry.expect("walk");
        let meta = entry.metadata().expect("stat");
        let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
        let kind = if meta.is_dir() {
            'd'
        } else if meta.file_type().is_symlink() {
            'l'
        } else {
            'f'
        };
        let content = if kind == 'f' {
            let bytes = fs::read(entry.path()).expect("read");
            Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        } else {
            String::new()
        };
        let link_group = (kind == 'f' && meta.nlink() > 1).then(|| {
            let next = groups.len();
            *groups.entry((meta.dev(), meta.ino())).or_insert(next)
        });
        out.insert(
            rel,
            Node {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                size: if kind == 'd' { 0 } else { meta.len() },
                content,
                link: (kind == 'l').then(|| fs::read_link(entry.path()).unwrap()),
                link_group,
            },
        );
    }
    out
}

/// Asserts two snapshots are equal, naming the first difference.
#[track_caller]
pub fn assert_same(expected: &Snapshot, actual: &Snapshot) {
    for (path, want) in expected {
        match actual.get(path) {
            None => panic!("{} is missing after restore", path.display()),
            Some(got) => assert_eq!(got, want, "{} differs", path.display()),
        }
    }
    for path in actual.keys() {
        assert!(
            expected.contains_key(path),
            "{} appeared from nowhere",
            path.display()
        );
    }
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// Deterministic bytes that do not compress to nothing.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A tree with everything a faithful cache must keep: nested and empty
/// directories, a read-only Go-module-style subtree (0444 files, 0555 dirs),
/// an executable, relative and dangling absolute symlinks, hard links, long
/// and non-UTF-8 names, sub-second mtimes, and (as root) foreign owners.
pub fn rich(root: &Path) {
    let m = root.join("pkg.mod");
    write(
        &m.join("cache/download/example.com/lib/@v/v1.0.0.zip"),
        &noise(1, 200_000),
    );
    write(
        &m.join("cache/download/example.com/lib/@v/list"),
        b"v1.0.0\n",
    );
    write(
        &m.join("example.com/lib@v1.0.0/go.mod"),
        b"module example.com/lib\n",
    );
    write(&m.join("example.com/lib@v1.0.0/lib.go"), b"package lib\n");
    write(
        &m.join("example.com/lib@v1.0.0/big.bin"),
        &noise(2, 1_500_000),
    );
    write(&m.join("bin/tool"), b"#!/bin/sh\necho tool\n");
    chmod(&m.join("bin/tool"), 0o755);
    fs::create_dir_all(m.join("empty/deeper")).unwrap();
    symlink("../example.com/lib@v1.0.0/lib.go", m.join("bin/lib-link")).unwrap();
    symlink("/nonexistent/absolute/target", m.join("bin/dangling")).unwrap();
    fs::hard_link(
        m.join("example.com/lib@v1.0.0/go.mod"),
        m.join("bin/go.mod.hardlink"),
    )
    .unwrap();
    let long_dir = m.join("long").join("d".repeat(120)).join("e".repeat(120));
    write(
        &long_dir.join(format!("{}.txt", "f".repeat(150))),
        b"long path\n",
    );
    let mut weird = b"weird-\xff\xfe-".to_vec();
    weird.extend_from_slice("ünï".as_bytes());
    write(
        &m.join("names").join(OsStr::from_bytes(&weird)),
        b"not utf-8\n",
    );
    write(&m.join("names/space and 'quote'"), b"spaces\n");
    // Sub-second mtime on one file.
    let precise = m.join("names/precise");
    write(&precise, b"t");
    filetime::set_file_mtime(
        &precise,
        filetime::FileTime::from_unix_time(1_600_000_000, 123_456_789),
    )
    .unwrap();
    if super::is_root() {
        let owned = m.join("names/owned-by-1234");
        write(&owned, b"owner");
        std::os::unix::fs::chown(&owned, Some(1234), Some(5678)).unwrap();
    }
    // Make the module tree read-only, as Go does: files 0444, then dirs 0555.
    let module = m.join("example.com/lib@v1.0.0");
    for entry in walkdir::WalkDir::new(&module).contents_first(true) {
        let entry = entry.unwrap();
        chmod(
            entry.path(),
            if entry.file_type().is_dir() {
                0o555
            } else {
                0o444
            },
        );
    }
}

/// Makes every directory under `root` writable again so it can be deleted.
pub fn remove(root: &Path) {
    if root.symlink_metadata().is_err() {
        return;
    }
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.unwrap();
        if entry.file_type().is_dir() {
            chmod(entry.path(), 0o755);
        }
    }
    fs::remove_dir_all(root).unwrap();
}

/// Gives the whole tree to the unprivileged user (nobody), as a CI
/// container user would own its workspace.
pub fn give_to_nobody(root: &Path) {
    if !super::is_root() {
        return;
    }
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.unwrap();
        std::os::unix::fs::lchown(entry.path(), Some(65534), Some(65534)).unwrap();
    }
}
