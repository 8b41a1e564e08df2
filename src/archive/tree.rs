//! Reading a mount's metadata with several threads, handed out in the
//! order of a sorted walk.
//!
//! A rebuild measures its mounts before it archives them: the manifest
//! declares their totals, and the tree's fingerprint decides whether a
//! stored entry is still current, so this is most of a rebuild that finds
//! its key stored and its mounts unchanged. One `lstat` of each entry's
//! whole path, on one thread (`walkdir`), took 90 ms for the benchmark's
//! 15,000-file module cache; here directories are read by several threads
//! at once, each entry looked up from its directory (`fstatat`, not the
//! whole path again): 40 ms on two cores.
//!
//! The entries come out exactly as `WalkDir::sort_by_file_name` gives
//! them (the root, then each directory's entries sorted by name, depth
//! first), because the fingerprint is a hash over them in that order. The
//! readers work ahead of the caller by at most `AHEAD` directories, so
//! memory does not grow with the tree.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags};

use crate::cancel::Cancel;

/// Directories read but not yet handed out, at most (beyond the one the
/// caller is waiting for).
const AHEAD: usize = 256;
/// Threads reading directories.
const READERS: usize = 4;

/// What the survey needs of an entry's `lstat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: FileType,
    /// Permission bits and file type, as `st_mode`.
    pub mode: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
}

impl Stat {
    // The fields' types differ between architectures (`st_nlink` is 32
    // bits on aarch64), so some of these casts do nothing on some.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &rustix::fs::Stat) -> Stat {
        Stat {
            kind: FileType::from_raw_mode(st.st_mode as _),
            mode: st.st_mode as u32,
            size: st.st_size as u64,
            mtime: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as i64,
            nlink: st.st_nlink as u64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }

    pub fn is_file(&self) -> bool {
        self.kind == FileType::RegularFile
    }

    pub fn is_symlink(&self) -> bool {
        self.kind == FileType::Symlink
    }
}

/// One entry of a directory, as read.
struct Node {
    name: OsString,
    stat: Stat,
    /// A symbolic link's target.
    target: Option<OsString>,
    /// A directory's number, under which its own entries are filed.
    dir: Option<usize>,
}

/// Walks the tree at `root` (not following symbolic links, the root
/// included) and calls `visit` with each entry's path relative to `root`
/// (empty for the root), its metadata and, for a symbolic link, its
/// target, in sorted-walk order. Stops at the first error, `visit`'s or
/// one reading the tree (naming the path), or when `cancel` fires.
pub fn walk(
    root: &Path,
    cancel: &Cancel,
    mut visit: impl FnMut(&Path, &Stat, Option<&OsStr>) -> io::Result<()>,
) -> io::Result<()> {
    let stat = rustix::fs::statat(CWD, root, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| Stat::of(&st))
        .map_err(|e| cannot("read", root, e.into()))?;
    let target = match stat.is_symlink() {
        true => Some(std::fs::read_link(root).map_err(|e| cannot("read", root, e))?),
        false => None,
    };
    visit(Path::new(""), &stat, target.as_deref().map(Path::as_os_str))?;
    if !stat.is_dir() {
        return Ok(());
    }
    let shared = Shared::new(root.to_path_buf());
    std::thread::scope(|scope| {
        for _ in 0..READERS.min(crate::pool::threads().max(2)) {
            scope.spawn(|| shared.read_directories());
        }
        // The readers end when the walk does, however it does (a panic
        // in `visit` too: the scope waits for them).
        let _stop = Stopping(&shared);
        hand_out(&shared, cancel, &mut visit)
    })
}

/// Stops the readers when dropped.
struct Stopping<'a>(&'a Shared);

impl Drop for Stopping<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Hands the entries out depth first, each directory's as its readers
/// filed them (sorted).
fn hand_out(
    shared: &Shared,
    cancel: &Cancel,
    visit: &mut impl FnMut(&Path, &Stat, Option<&OsStr>) -> io::Result<()>,
) -> io::Result<()> {
    // The directories being handed out: each one's path and the entries
    // still to hand out, in reverse (the next one last).
    let mut open: Vec<(PathBuf, Vec<Node>)> = vec![(PathBuf::new(), shared.take(0)?)];
    while let Some((rel, nodes)) = open.last_mut() {
        let Some(node) = nodes.pop() else {
            open.pop();
            continue;
        };
        cancel.check()?;
        let path = rel.join(&node.name);
        visit(&path, &node.stat, node.target.as_deref())?;
        if let Some(dir) = node.dir {
            let nodes = shared.take(dir)?;
            open.push((path, nodes));
        }
    }
    Ok(())
}

/// The readers' and the walk's common state.
struct Shared {
    root: PathBuf,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// Directories to read: number and path below the root. The top is
    /// read first, and holds the first subdirectory of the directory read
    /// last, so reading runs ahead in about the order of the walk.
    todo: Vec<(usize, PathBuf)>,
    /// Directories read, by number: their entries, reversed.
    read: HashMap<usize, io::Result<Vec<Node>>>,
    /// The next directory's number.
    numbered: usize,
    /// The directory the walk waits for: read next, whatever is ahead.
    wanted: Option<usize>,
    stopped: bool,
}

impl Shared {
    fn new(root: PathBuf) -> Shared {
        Shared {
            root,
            state: Mutex::new(State {
                todo: vec![(0, PathBuf::new())],
                read: HashMap::new(),
                numbered: 1,
                wanted: None,
                stopped: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entries of directory `dir` (reversed), once read.
    fn take(&self, dir: usize) -> io::Result<Vec<Node>> {
        let mut state = self.lock();
        loop {
            if let Some(read) = state.read.remove(&dir) {
                state.wanted = None;
                self.changed.notify_all();
                return read;
            }
            if state.wanted != Some(dir) {
                state.wanted = Some(dir);
                self.changed.notify_all();
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Tells the readers to end (the walk is over, or failed).
    fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }

    /// A reader: reads directories until the walk stops.
    fn read_directories(&self) {
        while let Some((dir, rel)) = self.next_to_read() {
            let read = read_dir(&self.root, &rel);
            let mut state = self.lock();
            let read = read.map(|mut nodes| {
                // Numbered and queued last first, so the first
                // subdirectory is read next; handed out last first.
                for node in nodes.iter_mut().rev().filter(|n| n.stat.is_dir()) {
                    let number = state.numbered;
                    state.numbered += 1;
                    node.dir = Some(number);
                    state.todo.push((number, rel.join(&node.name)));
                }
                nodes.reverse();
                nodes
            });
            state.read.insert(dir, read);
            self.changed.notify_all();
        }
    }

    /// The next directory to read: the one the walk waits for, or any
    /// while the readers are not too far ahead.
    fn next_to_read(&self) -> Option<(usize, PathBuf)> {
        let mut state = self.lock();
        loop {
            if state.stopped {
                return None;
            }
            let wanted = state
                .wanted
                .and_then(|w| state.todo.iter().rposition(|(dir, _)| *dir == w));
            let next = match wanted {
                Some(at) => Some(state.todo.remove(at)),
                None if state.read.len() < AHEAD => state.todo.pop(),
                None => None,
            };
            if let Some(next) = next {
                return Some(next);
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Reads the directory `rel` below `root`: its entries sorted by name,
/// each with its metadata (and a link's target).
fn read_dir(root: &Path, rel: &Path) -> io::Result<Vec<Node>> {
    // Not `root.join("")`: a trailing slash would follow a link there.
    let path = match rel.as_os_str().is_empty() {
        true => root.to_path_buf(),
        false => root.join(rel),
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir: OwnedFd = rustix::fs::open(&path, flags, Mode::empty())
        .map_err(|e| cannot("read", &path, e.into()))?;
    let mut names = Vec::new();
    let mut entries = Dir::read_from(&dir).map_err(|e| cannot("read", &path, e.into()))?;
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(|e| cannot("read", &path, e.into()))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    names.sort();
    let mut nodes = Vec::with_capacity(names.len());
    for name in names {
        let stat = rustix::fs::statat(&dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| Stat::of(&st))
            .map_err(|e| cannot("stat", &path.join(&name), e.into()))?;
        let target = match stat.is_symlink() {
            true => Some(
                rustix::fs::readlinkat(&dir, name.as_os_str(), Vec::new())
                    .map(|t| OsString::from_vec(t.into_bytes()))
                    .map_err(|e| cannot("read the link", &path.join(&name), e.into()))?,
            ),
            false => None,
        };
        nodes.push(Node {
            name,
            stat,
            target,
            dir: None,
        });
    }
    Ok(nodes)
}

fn cannot(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, symlink};

    use super::*;

    /// What a walk hands out of one entry.
    type Seen = (PathBuf, Stat, Option<OsString>);

    fn walked(root: &Path) -> io::Result<Vec<Seen>> {
        let mut seen = Vec::new();
        walk(root, &Cancel::new(), |rel, stat, target| {
            seen.push((rel.to_path_buf(), *stat, target.map(OsStr::to_os_string)));
            Ok(())
        })?;
        Ok(seen)
    }

    /// The same, as `walkdir` and `std` give it (how the survey walked
    /// before, and what the fingerprints of stored entries were made of).
    fn reference(root: &Path) -> Vec<Seen> {
        walkdir::WalkDir::new(root)
            .follow_links(false)
            .follow_root_links(false)
            .sort_by_file_name()
            .into_iter()
            .map(|item| {
                let item = item.unwrap();
                let meta = item.path().symlink_metadata().unwrap();
                let stat = Stat {
                    kind: FileType::from_raw_mode(meta.mode()),
                    mode: meta.mode(),
                    size: meta.len(),
                    mtime: meta.mtime(),
                    mtime_nsec: meta.mtime_nsec(),
                    nlink: meta.nlink(),
                    dev: meta.dev(),
                    ino: meta.ino(),
                };
                let target = meta
                    .file_type()
                    .is_symlink()
                    .then(|| std::fs::read_link(item.path()).unwrap().into_os_string());
                let rel = item.path().strip_prefix(root).unwrap().to_path_buf();
                (rel, stat, target)
            })
            .collect()
    }

    /// Names that sort differently by bytes than by other orders, links of
    /// every kind, empty directories, and more directories than the
    /// readers may read ahead, several levels deep: in `m` in a new
    /// temporary directory.
    fn awkward_tree() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("m");
        std::fs::create_dir(&root).unwrap();
        let names: [&[u8]; 8] = [
            b"a",
            b"A",
            b"a.b",
            b"a-b",
            b"a0",
            b"\xff\xfe",
            b"\xc3\xa9",
            b"_",
        ];
        for name in names {
            let name = OsStr::from_bytes(name);
            std::fs::write(root.join(name), name.as_bytes()).unwrap();
        }
        for i in 0..12 {
            for j in 0..30 {
                let dir = root.join(format!("d{i}")).join(format!("{j:02}")).join("x");
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("f"), format!("{i} {j}")).unwrap();
            }
        }
        std::fs::create_dir_all(root.join("empty/inner")).unwrap();
        symlink("a", root.join("to-file")).unwrap();
        symlink("d0", root.join("to-dir")).unwrap();
        symlink("nowhere", root.join("dangling")).unwrap();
        std::fs::hard_link(root.join("a"), root.join("d3/07/x/hard")).unwrap();
        (dir, root)
    }

    #[test]
    fn hands_out_what_a_sorted_walkdir_gives_in_its_order() {
        let (dir, root) = awkward_tree();
        let ours = walked(&root).unwrap();
        assert_eq!(ours.len(), 1 + 8 + 12 * (1 + 30 * 3) + 2 + 3 + 1);
        assert_eq!(ours, reference(&root));

        // A root that is a link is handed out, not followed; so is a file.
        symlink(&root, dir.path().join("link")).unwrap();
        let link = walked(&dir.path().join("link")).unwrap();
        assert_eq!(link, reference(&dir.path().join("link")));
        assert_eq!(link.len(), 1);
        assert_eq!(link[0].2.as_deref(), Some(root.as_os_str()));
        assert_eq!(walked(&root.join("a")).unwrap(), reference(&root.join("a")));
    }

    #[test]
    fn stops_at_the_first_error_and_names_the_path() {
        let (_dir, root) = awkward_tree();

        // The caller's own error ends the walk (and its readers) at once.
        let mut calls = 0;
        let stopped = walk(&root, &Cancel::new(), |rel, _, _| {
            calls += 1;
            match rel.ends_with("d2/05") {
                true => Err(io::Error::other("enough")),
                false => Ok(()),
            }
        });
        assert_eq!(stopped.unwrap_err().to_string(), "enough");
        let before = reference(&root)
            .iter()
            .position(|(rel, ..)| rel.ends_with("d2/05"))
            .unwrap();
        assert_eq!(calls, before + 1);

        // So does a cancelled step.
        let cancel = Cancel::new();
        cancel.cancel();
        let mut calls = 0;
        assert!(
            walk(&root, &cancel, |_, _, _| {
                calls += 1;
                Ok(())
            })
            .is_err()
        );
        assert_eq!(calls, 1, "only the root, before the readers start");

        let missing = walked(&root.join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(missing.to_string().contains("/m/missing"), "{missing}");
    }

    #[test]
    fn a_panic_in_the_caller_does_not_hang_the_readers() {
        let (_dir, root) = awkward_tree();
        let panicked = std::panic::catch_unwind(|| {
            walk(&root, &Cancel::new(), |rel, _, _| {
                assert!(!rel.ends_with("d1"), "stop here");
                Ok(())
            })
        });
        assert!(panicked.is_err());
    }
}
