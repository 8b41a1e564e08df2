//! All-or-nothing placement of restored mounts.
//!
//! Each mount is extracted into a hidden sibling (`.larder-restore-*` in the
//! same directory as the mount), so moving it into place is one `rename` on
//! the same filesystem that needs no write permission on the tree itself
//! (Go's read-only module cache). Nothing in the workspace changes until the
//! whole archive has been read and checked; then every mount is swapped in,
//! and if any swap fails the ones already made are undone. Dropping a
//! `Staging` that was not committed removes everything it created.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::mount::Mount;

#[derive(Debug)]
pub struct Staged {
    pub mount: Mount,
    /// Where this mount's tree is built; a sibling of `mount.path`.
    pub root: PathBuf,
    /// Whether the archive held anything for this mount.
    pub present: bool,
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

    /// Reserves a staging name beside every mount, creating missing parents.
    pub fn prepare(mounts: &[Mount]) -> io::Result<Staging> {
        let mut staging = Staging::empty();
        for mount in mounts {
            let parent = mount.path.parent().ok_or_else(|| {
                io::Error::other(format!("{} has no parent directory", mount.path.display()))
            })?;
            staging.remember_time(parent);
            staging.create_parents(parent)?;
            staging.mounts.push(Staged {
                mount: mount.clone(),
                root: parent.join(unique_name("restore")),
                present: false,
            });
        }
        Ok(staging)
    }

    /// Notes the mtime of the nearest existing directory at or above `dir`.
    fn remember_time(&mut self, dir: &Path) {
        let Some(existing) = dir.ancestors().find(|a| a.is_dir()) else {
            return;
        };
        if self.parent_times.iter().any(|(p, _)| p == existing) {
            return;
        }
        if let Ok(meta) = existing.metadata() {
            let time = filetime::FileTime::from_last_modification_time(&meta);
            self.parent_times.push((existing.to_path_buf(), time));
        }
    }

    fn create_parents(&mut self, dir: &Path) -> io::Result<()> {
        let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
        for dir in missing.into_iter().rev() {
            fs::create_dir(dir).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
            })?;
            self.created_dirs.push(dir.to_path_buf());
        }
        Ok(())
    }

    /// Moves every extracted mount into place, replacing what was there.
    pub fn commit(mut self) -> io::Result<Placed> {
        let mut swapped: Vec<(usize, Option<PathBuf>)> = Vec::new();
        for index in 0..self.mounts.len() {
            if !self.mounts[index].present {
                continue;
            }
            match swap_in(&self.mounts[index]) {
                Ok(old) => swapped.push((index, old)),
                Err(e) => {
                    for (undo, old) in swapped.iter().rev() {
                        undo_swap(&self.mounts[*undo], old.as_deref());
                    }
                    return Err(e);
                }
            }
        }
        self.committed = true;
        // Parents made for mounts the entry did not hold are empty: remove them.
        for dir in self.created_dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
        let mut placed = Placed::default();
        for (index, old) in swapped {
            let name = self.mounts[index].mount.name.clone();
            match old {
                Some(old) => {
                    if let Err(e) = remove_tree(&old) {
                        tracing::warn!("could not remove the replaced copy {}: {e}", old.display());
                    }
                    placed.replaced.push(name);
                }
                None => placed.created.push(name),
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
            if staged.root.symlink_metadata().is_ok()
                && let Err(e) = remove_tree(&staged.root)
            {
                tracing::warn!("could not remove staging {}: {e}", staged.root.display());
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

/// Puts one staged mount in place; returns where the previous copy went.
fn swap_in(staged: &Staged) -> io::Result<Option<PathBuf>> {
    let target = &staged.mount.path;
    let old = match target.symlink_metadata() {
        Ok(_) => {
            let old = target.with_file_name(unique_name("old"));
            fs::rename(target, &old).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot move the existing {} aside: {e}", target.display()),
                )
            })?;
            Some(old)
        }
        Err(_) => None,
    };
    if let Err(e) = fs::rename(&staged.root, target) {
        if let Some(old) = &old {
            let _ = fs::rename(old, target);
        }
        return Err(io::Error::new(
            e.kind(),
            format!(
                "cannot move the restored {} into place: {e}",
                target.display()
            ),
        ));
    }
    Ok(old)
}

fn undo_swap(staged: &Staged, old: Option<&Path>) {
    let target = &staged.mount.path;
    if let Err(e) = fs::rename(target, &staged.root) {
        tracing::error!("could not undo the restore of {}: {e}", target.display());
        return;
    }
    if let Some(old) = old
        && let Err(e) = fs::rename(old, target)
    {
        tracing::error!(
            "could not put {} back from {}: {e}",
            target.display(),
            old.display()
        );
    }
}

fn unique_name(purpose: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!(".larder-{purpose}-{}", &id[..12])
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

    #[test]
    fn dropping_uncommitted_staging_leaves_the_workspace_as_it_was() {
        let ws = tempfile::tempdir().unwrap();
        let m = mount(ws.path(), "deep/er/cache");
        {
            let mut staging = Staging::prepare(std::slice::from_ref(&m)).unwrap();
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
        let mut staging = Staging::prepare(std::slice::from_ref(&m)).unwrap();
        fs::create_dir(&staging.mounts[0].root).unwrap();
        fs::write(staging.mounts[0].root.join("new"), "new").unwrap();
        staging.mounts[0].present = true;
        let placed = staging.commit().unwrap();
        assert_eq!(placed.replaced, vec!["mod".to_string()]);
        assert_eq!(fs::read_to_string(m.path.join("new")).unwrap(), "new");
        assert!(!m.path.join("a").exists());
        let names: Vec<_> = fs::read_dir(ws.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("mod")]);
    }

    #[test]
    fn absent_mounts_are_left_alone() {
        let ws = tempfile::tempdir().unwrap();
        let m = mount(ws.path(), "keep");
        fs::write(&m.path, "mine").unwrap();
        let staging = Staging::prepare(std::slice::from_ref(&m)).unwrap();
        let placed = staging.commit().unwrap();
        assert!(placed.replaced.is_empty() && placed.created.is_empty());
        assert_eq!(fs::read_to_string(&m.path).unwrap(), "mine");
    }
}
