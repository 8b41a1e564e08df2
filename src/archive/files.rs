//! Writing restored files on the worker pool.
//!
//! Creating many small files is mostly system calls (create, write, chmod,
//! utimes, close), so the tar reader hands each small file's bytes to a
//! pool and moves on. The caller keeps order where it matters: `settle`
//! waits for pending files before anything else touches their paths.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;

use crate::pool::{self, Msg, Pool};

/// Files up to this size go to the pool; larger ones are streamed inline.
pub const SMALL_FILE: u64 = 1 << 20;

/// Everything needed to create one regular file.
pub struct FileJob {
    /// The entry's name in the archive, for messages.
    pub name: String,
    pub path: PathBuf,
    pub data: Vec<u8>,
    pub mode: u32,
    pub mtime: FileTime,
    pub owner: Option<(u32, u32)>,
}

/// A file the pool could not write. It names its own entry: the error
/// reaches the reader while it handles some later entry, whose name must
/// not be put in front of it.
#[derive(Debug, thiserror::Error)]
#[error("cannot restore entry '{name}': {cause}")]
pub struct WriteFailed {
    name: String,
    cause: io::Error,
}

impl WriteFailed {
    /// Whether `error` came from the pool (and so already names its entry).
    pub fn is_in(error: &anyhow::Error) -> bool {
        error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .is_some_and(|inner| inner.is::<WriteFailed>())
    }
}

/// Files are handed over in batches, so one wake-up moves many small files.
const BATCH_FILES: usize = 32;
const BATCH_BYTES: usize = 1 << 20;
/// After this many queued paths, wait for the (few) files in flight and
/// forget them, so the bookkeeping does not grow with the cache.
const PENDING_LIMIT: usize = 4096;

pub struct Writers {
    pool: Pool<Vec<FileJob>, u64>,
    batch: Vec<FileJob>,
    batch_bytes: usize,
    /// Batches sent, and files in them; files written so far.
    batches: u64,
    submitted: u64,
    written: u64,
    /// Paths handed to the pool since the last `settle`.
    pending: HashSet<PathBuf>,
}

impl Default for Writers {
    fn default() -> Self {
        Self::new()
    }
}

impl Writers {
    pub fn new() -> Writers {
        let (pool, _) = Pool::new(pool::threads(), || (), write_batch);
        Writers {
            pool,
            batch: Vec::with_capacity(BATCH_FILES),
            batch_bytes: 0,
            batches: 0,
            submitted: 0,
            written: 0,
            pending: HashSet::new(),
        }
    }

    /// Queues a file; fails early if an earlier one could not be written.
    pub fn submit(&mut self, job: FileJob) -> io::Result<()> {
        self.check()?;
        if self.pending.len() >= PENDING_LIMIT {
            self.wait_all()?;
        }
        self.pending.insert(job.path.clone());
        self.submitted += 1;
        self.batch_bytes += job.data.len();
        self.batch.push(job);
        if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            self.send_batch()?;
        }
        Ok(())
    }

    fn send_batch(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_FILES));
        self.batch_bytes = 0;
        self.batches += 1;
        self.pool.submit(self.batches, batch)
    }

    /// Waits for queued files if any of `paths` is among them, so an
    /// operation on a path never races a pending write of it.
    pub fn settle(&mut self, paths: &[&Path]) -> io::Result<()> {
        if paths.iter().any(|p| self.pending.contains(*p)) {
            self.wait_all()?;
        }
        Ok(())
    }

    /// Waits until every queued file is written.
    pub fn wait_all(&mut self) -> io::Result<()> {
        self.send_batch()?;
        while self.written < self.submitted {
            let msg = self.pool.next()?;
            self.count(msg)?;
        }
        self.pending.clear();
        Ok(())
    }

    /// Takes in the batches finished so far; the first error, if any.
    fn check(&mut self) -> io::Result<()> {
        while let Some(msg) = self.pool.try_next()? {
            self.count(msg)?;
        }
        Ok(())
    }

    fn count(&mut self, msg: Msg<u64>) -> io::Result<()> {
        match msg {
            Msg::Done(_, written) => self.written += written?,
            Msg::End(_) => {}
        }
        Ok(())
    }
}

impl Drop for Writers {
    /// Skips whatever is still queued; the pool then waits for the batches
    /// being written, so nothing is created after the writers are gone.
    fn drop(&mut self) {
        self.pool.cancel();
    }
}

/// Writes one batch; the error names the file that failed.
fn write_batch(_: &mut (), batch: Vec<FileJob>) -> io::Result<u64> {
    for job in &batch {
        write_file(job).map_err(|e| {
            let kind = e.kind();
            let failed = WriteFailed {
                name: job.name.clone(),
                cause: e,
            };
            io::Error::new(kind, failed)
        })?;
    }
    Ok(batch.len() as u64)
}

/// Creates one file with its contents, owner, mode and mtime.
pub fn write_file(job: &FileJob) -> io::Result<()> {
    let mut file = create_file(&job.path)?;
    file.write_all(&job.data)?;
    finish_file(&file, job.mode, job.mtime, job.owner)
}

/// Sets owner (as root), mode and mtime on a written file or a finished
/// directory, in that order: chown would clear mode bits set before it.
pub fn finish_file(
    file: &File,
    mode: u32,
    mtime: FileTime,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(file, Some(uid), Some(gid))?;
    }
    file.set_permissions(Permissions::from_mode(mode))?;
    filetime::set_file_handle_times(file, None, Some(mtime))
}

pub fn create_file(path: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            replace_non_dir(path)?;
            open()
        }
        other => other,
    }
}

/// Removes an earlier entry with the same name (later entries win, as in
/// tar), but never a directory: that would drop what was extracted into it.
pub fn replace_non_dir(path: &Path) -> io::Result<()> {
    match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => Err(io::Error::other(
            "the name of an earlier directory entry is reused for a non-directory",
        )),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_files_and_reports_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let mut writers = Writers::new();
        for i in 0..50 {
            writers
                .submit(FileJob {
                    name: format!("f{i}"),
                    path: dir.path().join(format!("f{i}")),
                    data: vec![i as u8; 1000],
                    mode: 0o444,
                    mtime: FileTime::from_unix_time(1_000_000, 5),
                    owner: None,
                })
                .unwrap();
        }
        writers.wait_all().unwrap();
        let meta = fs::metadata(dir.path().join("f7")).unwrap();
        assert_eq!(meta.len(), 1000);
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        writers
            .submit(FileJob {
                name: "missing/dir/f".into(),
                path: dir.path().join("missing/dir/f"),
                data: Vec::new(),
                mode: 0o644,
                mtime: FileTime::zero(),
                owner: None,
            })
            .unwrap();
        let err = writers.wait_all().unwrap_err();
        assert!(err.to_string().contains("entry 'missing/dir/f'"), "{err}");
    }
}
