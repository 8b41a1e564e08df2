//! All-or-nothing placement of restored mounts.
//!
//! Each mount is extracted into a hidden directory beside it
//! (`.larder-restore-*/new`, in the same directory as the mount), so moving
//! it into place is one `rename` on the same filesystem that needs no write
//! permission on the tree itself (Go's read-only module cache). Nothing in
//! the workspace changes until the whole archive has been read and checked;
//! then every mount is swapped in (the previous copy moves into the hidden
//! directory, which is then deleted), and if any swap fails the ones already
//! made are undone. Dropping a `Staging` that was not committed removes
//! everything it created.
//!
//! The way to each mount is walked one directory at a time from the
//! workspace, never following a symbolic link: an earlier restore may have
//! left `node_modules/evil -> /outside`, and a later mount below it must not
//! land outside the workspace. Renames go through the opened parent
//! directory, not through a path that could be redirected.
//!
//! Each hidden directory is locked (`flock`) while its restore runs. One left
//! by a killed restore is unlocked, and the next restore into the same
//! directory removes it.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};

use crate::mount::Mount;

/// Prefix of the hidden directories restores work in.
const HIDDEN: &str = ".larder-restore-";
/// What earlier versions named the moved-aside copy; removed as debris too.
const OLD_HIDDEN: &str = ".larder-old-";
/// Inside the hidden directory: the restored mount, and the replaced copy.
const NEW: &str = "new";
const OLD: &str = "old";

#[derive(Debug)]
pub struct Staged {
    pub mount: Mount,
    /// Where this mount's tree is built: `<parent>/.larder-restore-*/new`.
    pub root: PathBuf,
    /// Whether the archive held anything for this mount.
    pub present: bool,
    /// The hidden directory holding `root`, and its lock.
    hidden: PathBuf,
    hidden_fd: OwnedFd,
    /// The mount's parent directory, opened without following links.
    parent_fd: OwnedFd,
}

#[derive(Debug)]
pub struct Staging {
    pub mounts: Vec<Staged>,
    /// Parent directories created for mounts that had none, newest last.
    created_dirs: Vec<PathBuf>,
    /// Modification times of the directories staging writes into, put back
    /// when nothing is committed so the workspace is exactly as it was.
    parent_times: Vec<(PathBuf, filetime::FileTime)>,
    committed: bool,
}

/// What a commit changed.
#[derive(Debug, Default)]
pub struct Placed {
    /// Mounts that replaced an existing file or directory.
    pub replaced: Vec<String>,
    /// Mounts that were created.
    pub created: Vec<String>,
}

impl Staging {
    /// A staging with no mounts, which commits to nothing.
    pub fn empty() -> Staging {
        Staging {
            mounts: Vec::new(),
            created_dirs: Vec::new(),
            parent_times: Vec::new(),
            committed: false,
        }
    }

    /// Reserves a hidden directory beside every mount, creating missing
    /// parents. Mounts inside `workspace` are reached without following
    /// symbolic links; a link on the way is refused, naming it.
    pub fn prepare(mounts: &[Mount], workspace: &Path) -> io::Result<Staging> {
        let mut staging = Staging::empty();
        for mount in mounts {
            let (parent, _) = split(mount)?;
            let parent_fd = staging.open_parent(mount, workspace, &parent)?;
            remove_debris(&parent_fd, &parent);
            let (hidden, hidden_fd) = make_hidden(&parent_fd, &parent)?;
            staging.mounts.push(Staged {
                mount: mount.clone(),
                root: hidden.join(NEW),
                present: false,
                hidden,
                hidden_fd,
                parent_fd,
            });
        }
        Ok(staging)
    }

    /// Notes the mtime of `dir`, the directory staging is about to change
    /// (it is read through the opened directory, never through a path that
    /// a link could redirect outside the workspace).
    fn remember_time(&mut self, dir: &Path, fd: &OwnedFd) {
        if self.parent_times.iter().any(|(p, _)| p == dir) {
            return;
        }
        if let Ok(stat) = rustix::fs::fstat(fd) {
            let time = filetime::FileTime::from_unix_time(stat.st_mtime, stat.st_mtime_nsec as u32);
            self.parent_times.push((dir.to_path_buf(), time));
        }
    }

    /// Opens the mount's parent directory, creating what is missing. Inside
    /// the workspace every component is opened with `O_NOFOLLOW`; outside
    /// it (a mount the user listed by absolute path) the existing part of
    /// the path is the user's and is resolved normally.
    fn open_parent(
        &mut self,
        mount: &Mount,
        workspace: &Path,
        parent: &Path,
    ) -> io::Result<OwnedFd> {
        let (anchor, below): (PathBuf, Vec<&OsStr>) = match parent.strip_prefix(workspace) {
            Ok(rel) if !mount.name.starts_with('/') => (workspace.to_path_buf(), normal(rel)),
            _ => {
                let existing = parent
                    .ancestors()
                    .find(|a| a.is_dir())
                    .unwrap_or(Path::new("/"))
                    .to_path_buf();
                let rest = parent.strip_prefix(&existing).unwrap_or(Path::new(""));
                (existing, normal(rest))
            }
        };
        let mut dir = rustix::fs::open(&anchor, dir_flags(), Mode::empty())
            .map_err(|e| located(e, "cannot open", &anchor))?;
        let mut at = anchor;
        let mut creating = false;
        for name in below {
            let above = at.clone();
            at.push(name);
            dir = match rustix::fs::openat(&dir, name, dir_flags(), Mode::empty()) {
                Ok(next) => next,
                Err(rustix::io::Errno::NOENT) => {
                    if !creating {
                        self.remember_time(&above, &dir);
                        creating = true;
                    }
                    rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755))
                        .map_err(|e| located(e, "cannot create", &at))?;
                    self.created_dirs.push(at.clone());
                    rustix::fs::openat(&dir, name, dir_flags(), Mode::empty())
                        .map_err(|e| located(e, "cannot open", &at))?
                }
                Err(e) => return Err(not_a_directory(&dir, name, &at, mount, e)),
            };
        }
        if !creating {
            self.remember_time(&at, &dir);
        }
        Ok(dir)
    }

    /// Moves every extracted mount into place, replacing what was there.
    pub fn commit(mut self) -> io::Result<Placed> {
        let mut swapped: Vec<(usize, bool)> = Vec::new();
        for index in 0..self.mounts.len() {
            if !self.mounts[index].has_tree() {
                continue;
            }
            match swap_in(&self.mounts[index]) {
                Ok(replaced) => swapped.push((index, replaced)),
                Err(e) => {
                    for (undo, replaced) in swapped.iter().rev() {
                        undo_swap(&self.mounts[*undo], *replaced);
                    }
                    return Err(e);
                }
            }
        }
        self.committed = true;
        for staged in &self.mounts {
            if let Err(e) = remove_tree(&staged.hidden) {
                tracing::warn!(
                    "could not remove {} (the replaced copy): {e}; the next restore removes it",
                    staged.hidden.display()
                );
            }
        }
        // Parents made for mounts the entry did not hold are empty: remove them.
        for dir in self.created_dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
        // A directory that received no mount is as it was, time included
        // (its hidden directory came and went).
        let received: Vec<&Path> = swapped
            .iter()
            .filter_map(|(index, _)| self.mounts[*index].mount.path.parent())
            .collect();
        for (dir, time) in &self.parent_times {
            if !received.iter().any(|r| r.starts_with(dir)) {
                let _ = filetime::set_file_mtime(dir, *time);
            }
        }
        let mut placed = Placed::default();
        for (index, replaced) in swapped {
            let name = self.mounts[index].mount.name.clone();
            match replaced {
                true => placed.replaced.push(name),
                false => placed.created.push(name),
            }
        }
        Ok(placed)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for staged in &self.mounts {
            if staged.hidden.symlink_metadata().is_ok()
                && let Err(e) = remove_tree(&staged.hidden)
            {
                tracing::warn!("could not remove staging {}: {e}", staged.hidden.display());
            }
        }
        for dir in self.created_dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
        for (dir, time) in &self.parent_times {
            let _ = filetime::set_file_mtime(dir, *time);
        }
    }
}

impl Staged {
    /// Whether the archive gave this mount a tree to put in place. An
    /// archive can name a mount and create nothing for it (only FIFOs or
    /// devices, which are skipped): such a mount is left as it is.
    pub fn has_tree(&self) -> bool {
        self.present && rustix::fs::statat(&self.hidden_fd, NEW, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }
}

/// The mount's parent directory and its own name.
fn split(mount: &Mount) -> io::Result<(PathBuf, &OsStr)> {
    match (mount.path.parent(), mount.path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent.to_path_buf(), name)),
        _ => Err(io::Error::other(format!(
            "{} has no parent directory",
            mount.path.display()
        ))),
    }
}

fn normal(path: &Path) -> Vec<&OsStr> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect()
}

/// A directory, never a link to one. `O_PATH` needs no read permission,
/// so read-only trees can be walked too.
fn dir_flags() -> OFlags {
    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn located(e: rustix::io::Errno, what: &str, path: &Path) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Explains why `name` in `dir` could not be opened as a directory.
fn not_a_directory(
    dir: &OwnedFd,
    name: &OsStr,
    at: &Path,
    mount: &Mount,
    e: rustix::io::Errno,
) -> io::Error {
    let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW);
    let kind = stat.map(|s| FileType::from_raw_mode(s.st_mode));
    match kind {
        Ok(FileType::Symlink) => {
            let target = rustix::fs::readlinkat(dir, name, Vec::new())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "?".into());
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "refusing to restore {}: {} is a symbolic link (to {target}), and larder \
                     never follows a link on the way to a mount, which could lead outside the \
                     workspace. Remove the link, or restore into a fresh workspace",
                    mount.name,
                    at.display()
                ),
            )
        }
        Ok(_) => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot restore {}: {} is not a directory",
                mount.name,
                at.display()
            ),
        ),
        Err(_) => located(e, "cannot open", at),
    }
}

/// Creates and locks a new hidden directory in `parent_fd`.
fn make_hidden(parent_fd: &OwnedFd, parent: &Path) -> io::Result<(PathBuf, OwnedFd)> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("{HIDDEN}{}", &id[..12]);
    let path = parent.join(&name);
    rustix::fs::mkdirat(parent_fd, &name, Mode::from_raw_mode(0o700))
        .map_err(|e| located(e, "cannot create", &path))?;
    let fd = rustix::fs::openat(
        parent_fd,
        &name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| located(e, "cannot open", &path))?;
    rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| located(e, "cannot lock", &path))?;
    Ok((path, fd))
}

/// Removes hidden directories left in `parent` by restores that were
/// killed: any that no running restore holds locked.
fn remove_debris(parent_fd: &OwnedFd, parent: &Path) {
    let Ok(dir) = rustix::fs::openat(
        parent_fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let Ok(entries) = rustix::fs::Dir::read_from(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy();
        if !(name.starts_with(HIDDEN) || name.starts_with(OLD_HIDDEN)) {
            continue;
        }
        let Ok(fd) = rustix::fs::openat(
            parent_fd,
            entry.file_name(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // a restore running now
        }
        let path = parent.join(&*name);
        match remove_tree(&path) {
            Ok(()) => tracing::info!(
                "removed {}, left behind by an interrupted restore",
                path.display()
            ),
            Err(e) => tracing::warn!(
                "could not remove {}, left behind by an interrupted restore: {e}",
                path.display()
            ),
        }
    }
}

/// Puts one staged mount in place; returns whether it replaced something,
/// which then sits in the hidden directory as `old`.
fn swap_in(staged: &Staged) -> io::Result<bool> {
    let target = &staged.mount.path;
    let (_, name) = split(&staged.mount)?;
    let replaced = match rustix::fs::renameat(&staged.parent_fd, name, &staged.hidden_fd, OLD) {
        Ok(()) => true,
        Err(rustix::io::Errno::NOENT) => false,
        Err(e) => {
            return Err(located(e, "cannot move aside the existing", target));
        }
    };
    if let Err(e) = rustix::fs::renameat(&staged.hidden_fd, NEW, &staged.parent_fd, name) {
        if replaced {
            let _ = rustix::fs::renameat(&staged.hidden_fd, OLD, &staged.parent_fd, name);
        }
        return Err(located(e, "cannot move into place the restored", target));
    }
    Ok(replaced)
}

fn undo_swap(staged: &Staged, replaced: bool) {
    let target = &staged.mount.path;
    let Ok((_, name)) = split(&staged.mount) else {
        return;
    };
    if let Err(e) = rustix::fs::renameat(&staged.parent_fd, name, &staged.hidden_fd, NEW) {
        tracing::error!("could not undo the restore of {}: {e}", target.display());
        return;
    }
    if replaced
        && let Err(e) = rustix::fs::renameat(&staged.hidden_fd, OLD, &staged.parent_fd, name)
    {
        tracing::error!(
            "could not put {} back from {}: {e}",
            target.display(),
            staged.hidden.display()
        );
    }
}

/// Removes a file or a whole tree, first making read-only directories
/// writable (a Go module cache is 0555 throughout).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = path.symlink_metadata()?;
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path)?;
            fs::remove_dir_all(path)
        }
        other => other,
    }
}

fn make_dirs_writable(root: &Path) -> io::Result<()> {
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        if entry.file_type().is_dir() {
            let mode = entry
                .metadata()
                .map_err(io::Error::other)?
                .permissions()
                .mode();
            if mode & 0o700 != 0o700 {
                fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode | 0o700))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(ws: &Path, name: &str) -> Mount {
        Mount::resolve(ws, name).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn dropping_uncommitted_staging_leaves_the_workspace_as_it_was() {
        let ws = tempfile::tempdir().unwrap();
        let m = mount(ws.path(), "deep/er/cache");
        {
            let mut staging = Staging::prepare(std::slice::from_ref(&m), ws.path()).unwrap();
            fs::create_dir(&staging.mounts[0].root).unwrap();
            fs::write(staging.mounts[0].root.join("f"), "x").unwrap();
            staging.mounts[0].present = true;
        }
        assert_eq!(fs::read_dir(ws.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_replaces_a_read_only_tree() {
        let ws = tempfile::tempdir().unwrap();
        let m = mount(ws.path(), "mod");
        fs::create_dir_all(m.path.join("a")).unwrap();
        fs::write(m.path.join("a/old"), "old").unwrap();
        fs::set_permissions(m.path.join("a"), fs::Permissions::from_mode(0o555)).unwrap();
        let mut staging = Staging::prepare(std::slice::from_ref(&m), ws.path()).unwrap();
        fs::create_dir(&staging.mounts[0].root).unwrap();
        fs::write(staging.mounts[0].root.join("new"), "new").unwrap();
        staging.mounts[0].present = true;
        let placed = staging.commit().unwrap();
        assert_eq!(placed.replaced, vec!["mod".to_string()]);
        assert_eq!(fs::read_to_string(m.path.join("new")).unwrap(), "new");
        assert!(!m.path.join("a").exists());
        assert_eq!(names(ws.path()), vec!["mod".to_string()]);
    }

    #[test]
    fn absent_mounts_are_left_alone() {
        let ws = tempfile::tempdir().unwrap();
        let m = mount(ws.path(), "keep");
        fs::write(&m.path, "mine").unwrap();
        let staging = Staging::prepare(std::slice::from_ref(&m), ws.path()).unwrap();
        let placed = staging.commit().unwrap();
        assert!(placed.replaced.is_empty() && placed.created.is_empty());
        assert_eq!(fs::read_to_string(&m.path).unwrap(), "mine");
        assert_eq!(names(ws.path()), vec!["keep".to_string()]);
    }

    #[test]
    fn a_symlink_on_the_way_to_a_mount_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let ws = top.path().join("ws");
        let outside = top.path().join("outside");
        fs::create_dir_all(ws.join("node_modules")).unwrap();
        fs::create_dir_all(outside.join("x/node_modules")).unwrap();
        fs::write(outside.join("x/node_modules/keep"), "mine").unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("node_modules/evil")).unwrap();
        for name in ["node_modules/evil/x/node_modules", "node_modules/evil/y/z"] {
            let m = mount(&ws, name);
            let err = Staging::prepare(std::slice::from_ref(&m), &ws).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("node_modules/evil is a symbolic link"),
                "{text}"
            );
        }
        assert_eq!(names(&outside), vec!["x".to_string()]);
        assert_eq!(
            names(&outside.join("x/node_modules")),
            vec!["keep".to_string()]
        );
        assert_eq!(names(&ws.join("node_modules")), vec!["evil".to_string()]);
    }

    #[test]
    fn debris_of_a_killed_restore_is_removed_but_a_running_one_is_not() {
        let ws = tempfile::tempdir().unwrap();
        let m = mount(ws.path(), "cache");
        let running = Staging::prepare(std::slice::from_ref(&m), ws.path()).unwrap();
        // A killed restore: its hidden directory exists, nobody holds its lock.
        let dead = ws.path().join(".larder-restore-0123456789ab");
        fs::create_dir_all(dead.join("new/sub")).unwrap();
        fs::set_permissions(dead.join("new"), fs::Permissions::from_mode(0o555)).unwrap();
        let legacy = ws.path().join(".larder-old-0123456789ab");
        fs::create_dir(&legacy).unwrap();
        let other = mount(ws.path(), "other");
        let second = Staging::prepare(std::slice::from_ref(&other), ws.path()).unwrap();
        assert!(!dead.exists() && !legacy.exists());
        assert!(
            running.mounts[0].hidden.exists(),
            "a live staging was removed"
        );
        drop((running, second));
        assert_eq!(fs::read_dir(ws.path()).unwrap().count(), 0);
    }
}
