//! Reading an entry into staging, safely and completely.
//!
//! Every entry must land inside a mount being restored: absolute names only
//! under absolute mounts, no `..`, nothing beneath a symlink the archive made,
//! hard links only to earlier entries of the same mount. Devices and FIFOs are
//! skipped and setuid/setgid bits dropped. The whole stream is then read to
//! its end, so compression checksums and the tar end marker are checked
//! before anything is moved into the workspace.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, Permissions};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, anyhow, bail};
use filetime::FileTime;
use tar::EntryType;

use super::codec;
use super::digest::{self, Progress, Verifier};
use super::manifest::{Manifest, pax_value};
use super::writers::{FileJob, SMALL_FILE, Writers, create_file, finish_file, replace_non_dir};
use super::{Compression, Stats};
use crate::staging::Staging;

/// Permission bits kept on restore: setuid and setgid are dropped.
const MODE_MASK: u32 = 0o1777;
/// Largest PAX global header read. The digest is a few bytes and the
/// manifest about 100 bytes a mount; a damaged size must not make us
/// allocate gigabytes.
const MAX_GLOBAL_HEADER: u64 = 16 << 20;

/// What was read.
#[derive(Debug)]
pub struct Extracted {
    pub stats: Stats,
    pub compression: Compression,
    pub manifest: Option<Manifest>,
    /// Bytes of tar stream after decompression.
    pub tar_bytes: u64,
}

/// Decides where to restore, once the entry's manifest (its first member)
/// says which mounts it holds; `None` for an archive without one.
pub type Planner<'a> = &'a dyn Fn(Option<&Manifest>) -> anyhow::Result<Staging>;

/// Reads the archive from `input` into staging planned by `plan`, and
/// returns the staging for the caller to commit. On error the staging is
/// dropped, which removes everything written so far.
pub fn extract(
    input: impl BufRead + Send + 'static,
    plan: Planner<'_>,
) -> anyhow::Result<(Extracted, Staging)> {
    let (compression, decoder) = codec::decoder(input)
        .context("cannot read the entry")?
        .ok_or_else(|| anyhow!("the entry is empty (0 bytes)"))?;
    let mut stream = Verifier::new(decoder);
    let progress = stream.progress();
    let mut extractor = Extractor {
        plan,
        staging: None,
        owner: rustix::process::geteuid().is_root(),
        stats: Stats::default(),
        manifest: None,
        verified: false,
        progress: Rc::clone(&progress),
        writers: Writers::new(),
        dirs: Vec::new(),
        symlinks: HashSet::new(),
        created: HashSet::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut stream);
        let entries = archive.entries().context("cannot read the tar stream")?;
        for entry in entries {
            crate::interrupt::check()?;
            let entry = entry.map_err(|e| anyhow!("corrupt archive: {e}"))?;
            if extractor.verified {
                bail!("corrupt archive: entries follow the digest trailer");
            }
            if entry.header().entry_type() == EntryType::XGlobalHeader {
                extractor.global(entry)?;
                continue;
            }
            extractor.entry(entry)?;
        }
    }
    if progress.borrow().hit_eof {
        bail!("the archive is truncated: it ends without the tar end-of-archive marker");
    }
    let digest_required = extractor
        .manifest
        .as_ref()
        .is_some_and(|m| m.digest.is_some());
    if digest_required && !extractor.verified {
        bail!("the archive is truncated or damaged: its digest trailer is missing");
    }
    io::copy(&mut stream, &mut io::sink())
        .map_err(|e| anyhow!("corrupt archive after the last entry: {e}"))?;
    extractor.finish_dirs()?;
    let tar_bytes = progress.borrow().count;
    extractor.staging()?;
    let staging = extractor.staging.take().unwrap_or_else(Staging::empty);
    Ok((
        Extracted {
            stats: extractor.stats,
            compression,
            manifest: extractor.manifest,
            tar_bytes,
        },
        staging,
    ))
}

struct DirMeta {
    path: PathBuf,
    mode: u32,
    mtime: FileTime,
    owner: Option<(u32, u32)>,
}

struct Extractor<'a> {
    /// Writes small files on other threads. Declared first so that it is
    /// dropped first: on failure the pool stops before the staging it writes
    /// into is removed.
    writers: Writers,
    plan: Planner<'a>,
    /// Created by `plan` once the manifest has been read.
    staging: Option<Staging>,
    /// Restore ownership too (as GNU tar does when run as root).
    owner: bool,
    stats: Stats,
    manifest: Option<Manifest>,
    /// Whether the digest trailer was seen and matched.
    verified: bool,
    progress: Rc<RefCell<Progress>>,
    /// Directory metadata, applied last so read-only directories can be filled.
    dirs: Vec<DirMeta>,
    /// Symlinks this archive created, as (mount index, path below the mount).
    symlinks: HashSet<(usize, PathBuf)>,
    /// Directories known to exist in staging, to skip repeated checks.
    created: HashSet<PathBuf>,
}

/// Where one archive entry goes.
struct Place {
    mount: usize,
    rel: PathBuf,
    path: PathBuf,
}

impl Extractor<'_> {
    /// The staging, planned on first use: after the manifest, before the
    /// first entry that needs a place.
    fn staging(&mut self) -> anyhow::Result<&mut Staging> {
        let staging = match self.staging.take() {
            Some(staging) => staging,
            None => (self.plan)(self.manifest.as_ref())?,
        };
        Ok(self.staging.insert(staging))
    }

    /// A PAX global header: the manifest (first) or the digest trailer (last).
    fn global<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> anyhow::Result<()> {
        // Taken before reading the records: the hash of everything up to this header.
        let (actual, covered) = self.progress.borrow().digest_before_last_block();
        let position = entry.raw_header_position();
        if entry.size() > MAX_GLOBAL_HEADER {
            bail!(
                "corrupt archive: a global header claims {} bytes",
                entry.size()
            );
        }
        let mut records = Vec::new();
        entry.read_to_end(&mut records)?;
        if let Some(expected) = pax_value(&records, digest::PAX_KEY) {
            if covered != position {
                bail!("corrupt archive: the digest trailer is misplaced");
            }
            let actual = digest::format(actual);
            if expected != actual.as_bytes() {
                bail!(
                    "corrupt archive: its content does not match its digest ({} recorded, {actual} read)",
                    String::from_utf8_lossy(expected)
                );
            }
            self.verified = true;
        } else if self.manifest.is_none() {
            self.manifest = Manifest::from_pax(&records);
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> anyhow::Result<()> {
        let kind = entry.header().entry_type();
        let raw_name = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_name).into_owned();
        let refuse = || format!("refusing entry '{shown}'");
        let Some(place) = self.place(&raw_name).with_context(refuse)? else {
            return Ok(());
        };
        let source = match kind {
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| anyhow!("hard link without a target"))
                    .with_context(refuse)?;
                Some(
                    self.link_source(&target, place.mount)
                        .with_context(refuse)?,
                )
            }
            _ => None,
        };
        self.create(&mut entry, kind, &place, source, &shown)
            .with_context(|| format!("cannot restore entry '{shown}'"))
    }

    /// Decides where a name goes: `None` for a mount not being restored,
    /// an error for a name that would land outside every mount.
    fn place(&mut self, raw: &[u8]) -> anyhow::Result<Option<Place>> {
        let name = normalize(raw)?;
        let staging = self.staging()?;
        let found = staging.mounts.iter().enumerate().find_map(|(i, s)| {
            s.mount
                .relative_part(&name)
                .map(|rel| (i, rel.to_path_buf()))
        });
        let Some((mount, rel)) = found else {
            if self.in_unrequested_mount(&name) {
                return Ok(None);
            }
            let no_manifest = self.manifest.is_none();
            let mounts: Vec<&str> = self
                .staging()?
                .mounts
                .iter()
                .map(|s| s.mount.name.as_str())
                .collect();
            if mounts.is_empty() && no_manifest {
                bail!(
                    "the entry was not written by larder (it has no manifest), so list the \
                     directories to restore in mount"
                );
            }
            bail!(
                "it is outside the mounts being restored ({})",
                mounts.join(", ")
            );
        };
        // Most archives have no symlinks: skip the per-component lookups.
        if !self.symlinks.is_empty() {
            for ancestor in rel.ancestors().skip(1) {
                if self.symlinks.contains(&(mount, ancestor.to_path_buf())) {
                    bail!(
                        "it lies beneath the symbolic link '{}' from the same archive",
                        Path::new(&self.staging()?.mounts[mount].mount.name)
                            .join(ancestor)
                            .display()
                    );
                }
            }
        }
        let staged = &mut self.staging()?.mounts[mount];
        staged.present = true;
        let path = if rel.as_os_str().is_empty() {
            staged.root.clone()
        } else {
            staged.root.join(&rel)
        };
        Ok(Some(Place { mount, rel, path }))
    }

    /// True for entries of mounts listed in the archive's manifest but not
    /// requested now: they are read (to check the archive) but not written.
    fn in_unrequested_mount(&self, name: &Path) -> bool {
        self.manifest.as_ref().is_some_and(|m| {
            m.mounts
                .iter()
                .any(|mount| !mount.is_empty() && mount != "/" && name.starts_with(mount))
        })
    }

    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        place: &Place,
        link_source: Option<Place>,
        shown: &str,
    ) -> anyhow::Result<()> {
        // Some writers leave numeric fields blank: fall back to sane values
        // rather than refusing an otherwise fine archive.
        let header = entry.header();
        let default_mode = if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        };
        let mode = header.mode().unwrap_or(default_mode) & MODE_MASK;
        let owner = match (self.owner, header.uid(), header.gid()) {
            (true, Ok(uid), Ok(gid)) => Some((uid as u32, gid as u32)),
            _ => None,
        };
        let mtime = mtime(entry);
        match kind {
            EntryType::Directory => {
                self.make_dir(&place.path)?;
                self.stats.dirs += 1;
                self.dirs.push(DirMeta {
                    path: place.path.clone(),
                    mode,
                    mtime,
                    owner,
                });
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.parent(&place.path)?;
                self.writers.settle(&[&place.path])?;
                if self.created.contains(&place.path) {
                    bail!("the name of an earlier directory entry is reused for a non-directory");
                }
                let size = entry.size();
                if size <= SMALL_FILE {
                    // Small files: read here, written by the pool.
                    let mut data = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut data)?;
                    check_size(data.len() as u64, size)?;
                    self.writers.submit(FileJob {
                        name: shown.to_string(),
                        path: place.path.clone(),
                        data,
                        mode,
                        mtime,
                        owner,
                    })?;
                } else {
                    let mut file = create_file(&place.path)?;
                    let copied = copy_large(entry, &mut file)?;
                    check_size(copied, size)?;
                    finish_file(&file, mode, mtime, owner)?;
                }
                self.stats.files += 1;
                self.stats.bytes += size;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| anyhow!("symbolic link without a target"))?;
                let target = OsStr::from_bytes(&target).to_owned();
                self.parent(&place.path)?;
                self.writers.settle(&[&place.path])?;
                replace_non_dir(&place.path)?;
                std::os::unix::fs::symlink(&target, &place.path)?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::lchown(&place.path, Some(uid), Some(gid))?;
                }
                filetime::set_symlink_file_times(&place.path, mtime, mtime)?;
                self.symlinks.insert((place.mount, place.rel.clone()));
                self.stats.symlinks += 1;
            }
            EntryType::Link => {
                let source = link_source.ok_or_else(|| anyhow!("hard link without a target"))?;
                self.parent(&place.path)?;
                self.writers.settle(&[&place.path, &source.path])?;
                replace_non_dir(&place.path)?;
                fs::hard_link(&source.path, &place.path).with_context(|| {
                    format!(
                        "hard link to '{}' failed (it must be an earlier entry)",
                        source.rel.display()
                    )
                })?;
                if self.symlinks.contains(&(source.mount, source.rel)) {
                    self.symlinks.insert((place.mount, place.rel.clone()));
                }
                self.stats.hardlinks += 1;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.stats.skipped += 1;
            }
            other => bail!("unsupported entry type {other:?}"),
        }
        Ok(())
    }

    /// Resolves a hard link's target, which must be in the same mount.
    fn link_source(&mut self, target: &[u8], mount: usize) -> anyhow::Result<Place> {
        let shown = String::from_utf8_lossy(target).into_owned();
        let source = self
            .place(target)
            .with_context(|| format!("hard link target '{shown}'"))?
            .ok_or_else(|| {
                anyhow!("hard link target '{shown}' is in a mount not being restored")
            })?;
        if source.mount != mount {
            bail!("hard link target '{shown}' is in another mount");
        }
        Ok(source)
    }

    fn make_dir(&mut self, path: &Path) -> anyhow::Result<()> {
        if self.created.contains(path) {
            return Ok(());
        }
        self.parent(path)?;
        self.writers.settle(&[path])?;
        match fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !path.symlink_metadata()?.is_dir() {
                    bail!("a directory entry duplicates an earlier non-directory");
                }
            }
            Err(e) => return Err(e.into()),
        }
        fs::set_permissions(path, Permissions::from_mode(0o700))?;
        self.created.insert(path.to_path_buf());
        Ok(())
    }

    /// Makes sure the parent directory exists (archives may omit parents).
    fn parent(&mut self, path: &Path) -> anyhow::Result<()> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        if self.created.contains(parent) {
            return Ok(());
        }
        self.writers.settle(&[parent])?;
        match parent.symlink_metadata() {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => bail!("its parent {} is not a directory", parent.display()),
            Err(_) => {
                fs::create_dir_all(parent)?;
            }
        }
        self.created.insert(parent.to_path_buf());
        Ok(())
    }

    /// Applies directory modes, owners and times deepest first, so a
    /// read-only directory is only locked once everything inside is written.
    fn finish_dirs(&mut self) -> anyhow::Result<()> {
        self.writers.wait_all()?;
        self.dirs
            .sort_by_key(|d| std::cmp::Reverse(d.path.components().count()));
        for dir in &self.dirs {
            if let Some((uid, gid)) = dir.owner {
                std::os::unix::fs::lchown(&dir.path, Some(uid), Some(gid))?;
            }
            fs::set_permissions(&dir.path, Permissions::from_mode(dir.mode))?;
            filetime::set_file_mtime(&dir.path, dir.mtime)?;
        }
        Ok(())
    }
}

/// Splits an archive name into plain components: no `..`, no empty name.
/// Absolute names keep their leading `/` so they only match absolute mounts.
fn normalize(raw: &[u8]) -> anyhow::Result<PathBuf> {
    let path = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir => out.push("/"),
            Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir => bail!("its name contains '..'"),
            Component::Prefix(_) => bail!("its name is not a Unix path"),
        }
    }
    if out.as_os_str().is_empty() || out == Path::new("/") {
        bail!("its name is empty");
    }
    Ok(out)
}

/// Copies a large file in big pieces: `io::copy`'s 8 KiB buffer would mean
/// a system call and a pass down the decoding chain per 8 KiB.
fn copy_large(mut from: impl Read, to: &mut File) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut copied = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        copied += n as u64;
    }
}

fn check_size(got: u64, want: u64) -> anyhow::Result<()> {
    if got != want {
        bail!("the archive is truncated: {got} of {want} bytes present");
    }
    Ok(())
}

/// The entry's mtime, with the PAX fraction when present (0 if unreadable).
fn mtime<R: Read>(entry: &mut tar::Entry<'_, R>) -> FileTime {
    let secs = entry.header().mtime().unwrap_or(0) as i64;
    if let Ok(Some(records)) = entry.pax_extensions() {
        for record in records.flatten() {
            if record.key() == Ok("mtime")
                && let Some(time) = record.value().ok().and_then(parse_pax_time)
            {
                return time;
            }
        }
    }
    FileTime::from_unix_time(secs, 0)
}

fn parse_pax_time(text: &str) -> Option<FileTime> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos: u32 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some(FileTime::from_unix_time(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_rejects_escapes_and_keeps_absolute_names() {
        assert_eq!(normalize(b"./a//b/").unwrap(), Path::new("a/b"));
        assert_eq!(normalize(b"/abs/x").unwrap(), Path::new("/abs/x"));
        assert!(normalize(b"a/../../etc").is_err());
        assert!(normalize(b"..").is_err());
        assert!(normalize(b"./").is_err());
        assert!(normalize(b"/").is_err());
    }

    #[test]
    fn pax_times_keep_nanoseconds() {
        let t = parse_pax_time("1700000000.5").unwrap();
        assert_eq!(
            (t.unix_seconds(), t.nanoseconds()),
            (1700000000, 500_000_000)
        );
        let t = parse_pax_time("1700000000.123456789123").unwrap();
        assert_eq!(t.nanoseconds(), 123_456_789);
        assert_eq!(parse_pax_time("12").unwrap().unix_seconds(), 12);
        assert!(parse_pax_time("x").is_none());
    }
}
