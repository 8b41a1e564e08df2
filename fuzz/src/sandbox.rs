//! A workspace to restore into, and the checks made after every restore.
//!
//! The sandbox is a temporary directory holding `ws/` (the workspace, with a
//! few files inside and outside the mounts) and `outside/` (a sibling that no
//! restore may touch). Every restore is checked against snapshots taken
//! before and after it:
//!
//! - nothing outside `ws/` changed, down to ctimes (so a file created and
//!   removed again, or a hard link count raised, shows);
//! - on success, nothing in `ws/` changed except below the planned mounts and
//!   the directories leading to them; no mount is left a symlink;
//! - on failure, `ws/` is exactly as before (contents, modes, owners, mtimes);
//! - no `.larder-*` name is left anywhere.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use larder::archive::extract;
use larder::archive::manifest::Manifest;
use larder::cancel::Cancel;
use larder::mount::{self, Mount, MountSpec};
use larder::staging::{Staging, remove_tree};

/// The `mount` settings a restore runs with, chosen by the input.
const SPECS: [&[&str]; 4] = [
    &["cache", "deep/nm"],
    &["**/node_modules", "cache"],
    // No `mount`: the entry's manifest decides.
    &[],
    &["cache/sub", "node_modules"],
];

pub struct Sandbox {
    _dir: tempfile::TempDir,
    pub base: PathBuf,
    pub ws: PathBuf,
    pub outside: PathBuf,
}

/// What one restore did.
#[derive(Debug)]
pub struct Restored {
    /// The error, with its whole chain, when the restore failed.
    pub error: Option<String>,
    /// The mounts planned from the manifest (empty if planning never happened).
    pub mounts: Vec<Mount>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        crate::limit_file_size();
        let dir = tempfile::Builder::new()
            .prefix("larder-fuzz-")
            .tempdir_in(crate::temp_root())
            .expect("cannot create the sandbox");
        let base = dir.path().to_path_buf();
        Sandbox {
            ws: base.join("ws"),
            outside: base.join("outside"),
            base,
            _dir: dir,
        }
    }

    /// The workspace as a build left it. With `escape_link`, an earlier
    /// restore has left `node_modules/evil`, a symlink to the outside
    /// directory (allowed inside a mount).
    pub fn reset(&self, escape_link: bool) {
        for dir in [&self.ws, &self.outside] {
            if dir.symlink_metadata().is_ok() {
                remove_tree(dir).expect("cannot clear the sandbox");
            }
        }
        let file = |rel: &str, text: &str| {
            let path = self.base.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        file("ws/keep.txt", "kept: not in any mount\n");
        file("ws/src/main.rs", "fn main() {}\n");
        file("ws/cache/old.txt", "old cache\n");
        file("ws/cache/sub/old.txt", "old sub cache\n");
        file("ws/node_modules/ok/index.js", "module.exports = 1;\n");
        file("outside/victim.txt", "must never change\n");
        file("outside/x/node_modules/keep.js", "must never change\n");
        if escape_link {
            std::os::unix::fs::symlink(&self.outside, self.ws.join("node_modules/evil")).unwrap();
        }
    }

    /// The `mount` setting chosen by `choice`.
    pub fn specs(&self, choice: u8) -> Vec<MountSpec> {
        let texts: Vec<String> = SPECS[usize::from(choice) % SPECS.len()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        mount::parse_specs(&self.ws, &texts).expect("the fixed mount settings are valid")
    }

    /// Restores `archive` as `larder restore` does (plan from the manifest,
    /// extract into staging, commit on success, drop on failure) and checks
    /// the result. A broken promise panics, which libFuzzer reports.
    pub fn restore(&self, archive: Vec<u8>, specs: &[MountSpec]) -> Restored {
        let before = snapshot(&self.base);
        let planned: RefCell<Vec<Mount>> = RefCell::new(Vec::new());
        let plan = |manifest: Option<&Manifest>| -> anyhow::Result<Staging> {
            let held = manifest.map(|m| m.mounts.as_slice());
            let (mounts, _notes) = mount::for_restore(specs, held, &self.ws);
            *planned.borrow_mut() = mounts.clone();
            Ok(Staging::prepare(&mounts, &self.ws)?)
        };
        let options = extract::Options {
            max_bytes: 1 << 30,
            owners: false,
            cancel: Cancel::new(),
            strip_prefix: None,
        };
        let error = match extract::extract(io::Cursor::new(archive), &plan, &options) {
            Ok((_, staging)) => staging.commit().err().map(|e| format!("commit: {e}")),
            Err(failed) => {
                check_message(&failed.error);
                Some(format!("{:#}", failed.error))
            }
        };
        let restored = Restored {
            error,
            mounts: planned.into_inner(),
        };
        if std::env::var_os("LARDER_FUZZ_VERBOSE").is_some() {
            eprintln!("restore: {restored:?}");
        }
        let after = snapshot(&self.base);
        self.check(&before, &after, &restored);
        restored
    }

    fn check(&self, before: &Snapshot, after: &Snapshot, restored: &Restored) {
        let ws = Path::new("ws");
        let committed = restored.error.is_none();
        let commit_failed = restored
            .error
            .as_ref()
            .is_some_and(|e| e.starts_with("commit: "));
        if commit_failed && crate::skip_known() {
            // Known: a mount whose entries were all skipped (FIFOs, devices)
            // fails to commit after moving the old copy aside and back.
            return;
        }
        let mut problems = Vec::new();
        let mut mounts = Vec::new();
        for m in &restored.mounts {
            match m.path.strip_prefix(&self.base) {
                Ok(rel) if rel.starts_with(ws) && rel != ws => mounts.push(rel.to_path_buf()),
                _ => problems.push(format!(
                    "mount {} ({}) was planned outside the workspace",
                    m.name,
                    m.path.display()
                )),
            }
        }
        let paths: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
        for path in paths {
            let (old, new) = (before.get(path), after.get(path));
            // An entry may hold such names itself; larder's own are beside the mounts.
            let in_mount = committed && mounts.iter().any(|m| path.starts_with(m));
            if old.is_none() && new.is_some() && is_debris(path) && !in_mount {
                problems.push(format!("debris left: {}", path.display()));
            }
            let in_ws = path.starts_with(ws);
            // Staging creates and removes entries beside the mounts.
            let leads_to_mount = mounts.iter().any(|m| m.starts_with(path) && m != path);
            if same(old, new, in_ws && leads_to_mount) {
                continue;
            }
            let change = format!("{}: {} -> {}", path.display(), show(old), show(new));
            if !in_ws {
                problems.push(format!("changed outside the workspace: {change}"));
            } else if !committed {
                problems.push(format!("a failed restore changed the workspace: {change}"));
            } else if mounts.iter().any(|m| path.starts_with(m)) {
                // The mounts are what a restore replaces.
            } else if mounts.iter().any(|m| m.starts_with(path)) {
                // A directory leading to a mount: created, or its mtime moved.
                let fine = new.is_some_and(|n| n.kind == 'd')
                    && old.is_none_or(|o| o.kind == 'd' && o.mode == n_mode(new));
                if !fine {
                    problems.push(format!("a directory leading to a mount changed: {change}"));
                }
            } else {
                problems.push(format!("changed outside the mounts: {change}"));
            }
        }
        if committed && !crate::skip_known() {
            for m in &mounts {
                if after.get(m).is_some_and(|n| n.kind == 'l') {
                    problems.push(format!(
                        "mount {} was restored as a symlink (issue 9, defect 2): {}",
                        m.display(),
                        show(after.get(m))
                    ));
                }
            }
        }
        if !problems.is_empty() {
            let shown: Vec<&String> = problems.iter().take(30).collect();
            panic!(
                "restore broke a promise ({} problems); outcome: {:?}; planned mounts: {:?}\n  {}",
                problems.len(),
                restored.error,
                restored.mounts.iter().map(|m| &m.name).collect::<Vec<_>>(),
                shown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            );
        }
    }

    /// Whether the workspace holds a symlink anywhere (`LARDER_FUZZ_SKIP_KNOWN`
    /// skips restores into such a workspace: issue 9, defect 1).
    pub fn has_symlink(&self) -> bool {
        snapshot(&self.ws).values().any(|n| n.kind == 'l')
    }
}

/// Messages larder should never print (issue 9, defect 9).
fn check_message(error: &anyhow::Error) {
    if crate::skip_known() {
        return;
    }
    let text = format!("{error:#}");
    assert!(
        !text.contains("__Nonexhaustive"),
        "an entry type is shown as Rust's internal name (issue 9, defect 9): {text}"
    );
    let chain: Vec<String> = error.chain().map(|e| e.to_string()).collect();
    for pair in chain.windows(2) {
        assert!(
            pair[0] != pair[1],
            "the message repeats itself (issue 9, defect 9): {text}"
        );
    }
}

fn n_mode(node: Option<&Node>) -> u32 {
    node.map_or(0, |n| n.mode)
}

fn is_debris(path: &Path) -> bool {
    path.components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with(".larder-"))
}

/// Equal for the checks. A directory leading to a mount may have its ctime
/// moved (staging creates and removes entries in it), nothing else may.
fn same(old: Option<&Node>, new: Option<&Node>, leads_to_mount: bool) -> bool {
    match (old, new) {
        (None, None) => true,
        (Some(o), Some(n)) if leads_to_mount && o.kind == 'd' => {
            Node {
                ctime: n.ctime,
                ..o.clone()
            } == *n
        }
        (Some(o), Some(n)) => o == n,
        _ => false,
    }
}

fn show(node: Option<&Node>) -> String {
    match node {
        None => "absent".into(),
        Some(n) => format!("{n:?}"),
    }
}

/// What is compared of each path (atime is not).
#[derive(Clone, PartialEq, Eq)]
pub struct Node {
    /// `d`, `f`, `l` (symlink), `o` (other), `?` (lstat failed).
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    /// Contents of small files.
    pub data: Option<Vec<u8>>,
    /// Symlink target.
    pub target: Option<PathBuf>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:o} nlink {} size {} mtime {}.{:09} ctime {}.{:09}",
            self.kind,
            self.mode,
            self.nlink,
            self.size,
            self.mtime.0,
            self.mtime.1,
            self.ctime.0,
            self.ctime.1
        )?;
        if let Some(t) = &self.target {
            write!(f, " -> {}", t.display())?;
        }
        Ok(())
    }
}

/// Every path below `root` (and `root` itself, as ""), without following symlinks.
pub type Snapshot = BTreeMap<PathBuf, Node>;

pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let path = root.join(&rel);
        let node = match path.symlink_metadata() {
            Ok(meta) => {
                let kind = if meta.is_dir() {
                    'd'
                } else if meta.is_file() {
                    'f'
                } else if meta.file_type().is_symlink() {
                    'l'
                } else {
                    'o'
                };
                Node {
                    kind,
                    mode: meta.mode(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                    nlink: meta.nlink(),
                    ino: meta.ino(),
                    size: meta.size(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    ctime: (meta.ctime(), meta.ctime_nsec()),
                    data: (kind == 'f' && meta.size() <= 4096)
                        .then(|| fs::read(&path).ok())
                        .flatten(),
                    target: (kind == 'l').then(|| fs::read_link(&path).ok()).flatten(),
                }
            }
            Err(e) => Node {
                kind: '?',
                mode: e.raw_os_error().unwrap_or(0) as u32,
                uid: 0,
                gid: 0,
                nlink: 0,
                ino: 0,
                size: 0,
                mtime: (0, 0),
                ctime: (0, 0),
                data: None,
                target: None,
            },
        };
        if node.kind == 'd'
            && let Ok(entries) = fs::read_dir(&path)
        {
            for entry in entries.flatten() {
                todo.push(rel.join(entry.file_name()));
            }
        }
        out.insert(rel, node);
    }
    out
}
