//! Writing an entry: walk the mounts and emit a POSIX (PAX) tar stream.
//!
//! Links are stored as links and never followed. Hard links inside one mount
//! are stored once plus link entries. Names that do not fit ustar (long,
//! absolute) and sub-second mtimes go into PAX records, which GNU
//! tar, bsdtar and Go's archive/tar all read.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tar::{Builder, EntryType, Header};
use walkdir::WalkDir;
use xxhash_rust::xxh3::Xxh3;

use super::Stats;
use super::digest::Tally;
use super::manifest::{Manifest, Totals};
use super::order::{Placement, Planner};
use super::pax;
use super::tree::Stat;
use crate::mount::Mount;

/// Largest value a ustar numeric field holds in octal; beyond it we add a PAX record.
const USTAR_MAX_ID: u64 = 0o7777777;
const USTAR_MAX_SIZE: u64 = 0o77777777777;

#[derive(Clone)]
pub struct WriteOptions {
    pub skip_symlinks: bool,
    /// Checked between entries: a cancelled step stops archiving.
    pub cancel: crate::cancel::Cancel,
    /// Told the measured totals, then what is archived after each entry.
    pub progress: crate::progress::Progress,
}

/// What the mounts hold, measured before they are archived: each mount's
/// totals (the manifest declares them, and a restore writes no more) and a
/// fingerprint of the whole tree (a rebuild compares it with the stored
/// entry's to see whether anything changed).
#[derive(Clone, Debug)]
pub struct Survey {
    pub totals: Vec<Totals>,
    /// `xxh3-128:<hex>` over every name, kind, mode, size, mtime and link
    /// target, in walk order (sorted by name). Directory times are left
    /// out: creating and removing a temporary file changes them, and
    /// nothing else.
    pub tree: String,
    /// Per mount: which files the writer places out of walk order.
    pub placements: Vec<Placement>,
}

impl Survey {
    /// The totals of every mount together.
    pub fn total(&self) -> Totals {
        self.totals.iter().fold(Totals::default(), |mut sum, t| {
            sum.add(*t);
            sum
        })
    }
}

/// Walks the mounts as the writer will, without reading file contents
/// (their metadata read by several threads, see `tree`).
pub fn survey(mounts: &[Mount], options: &WriteOptions) -> io::Result<Survey> {
    let mut hasher = Xxh3::new();
    let mut totals = Vec::with_capacity(mounts.len());
    let mut placements = Vec::with_capacity(mounts.len());
    for mount in mounts {
        let (measured, placement) = measure(mount, options, &mut hasher)?;
        totals.push(measured);
        placements.push(placement);
    }
    Ok(Survey {
        totals,
        tree: format!("xxh3-128:{:032x}", hasher.digest128()),
        placements,
    })
}

/// Writes every mount into a tar stream on `out` and returns what was
/// written. `survey` is what `survey` measured of the same mounts just
/// before; mounts that do not exist must be filtered out by the caller.
pub fn write_archive<W: Write>(
    mounts: &[Mount],
    survey: &Survey,
    options: &WriteOptions,
    out: Tally<W>,
) -> io::Result<(Stats, Tally<W>)> {
    let mut builder = Builder::new(out);
    let expected = survey.total();
    options.progress.expect(expected.bytes, expected.entries);
    let manifest = Manifest::for_mounts(mounts, &survey.totals, &survey.tree).to_json();
    pax::append_global(&mut builder, super::manifest::PAX_KEY, manifest.as_bytes())?;
    let mut stats = Stats::default();
    let plans = survey.totals.iter().copied().zip(&survey.placements);
    for (mount, (declared, placement)) in mounts.iter().zip(plans) {
        let before = stats;
        let mut writer = MountWriter {
            builder: &mut builder,
            mount,
            options,
            stats: &mut stats,
            links: HashMap::new(),
            placement: placement.clone(),
        };
        writer.write()?;
        let entries = stats.entries() - before.entries();
        let bytes = stats.bytes - before.bytes;
        if entries > declared.entries || bytes > declared.bytes {
            return Err(io::Error::other(format!(
                "{} changed while it was being archived ({} entries and {bytes} bytes \
                 written, {} and {} measured just before); is something still writing \
                 to it? Run the rebuild when the build has finished",
                mount.path.display(),
                entries,
                declared.entries,
                declared.bytes
            )));
        }
    }
    let digest = super::digest::format(builder.get_ref().digest());
    pax::append_global(&mut builder, super::digest::PAX_KEY, digest.as_bytes())?;
    let out = builder.into_inner()?;
    Ok((stats, out))
}

/// What `mount` will unpack to, walked just as the writer walks it, its
/// part of the tree's fingerprint, and where its files go in the stream.
fn measure(
    mount: &Mount,
    options: &WriteOptions,
    tree: &mut Xxh3,
) -> io::Result<(Totals, Placement)> {
    let mut totals = Totals::default();
    let mut planner = Planner::default();
    let mut linked = std::collections::HashSet::new();
    tree.update(mount.name.as_bytes());
    tree.update(&[0]);
    super::tree::walk(&mount.path, &options.cancel, |rel, stat, target| {
        if stat.is_symlink() && options.skip_symlinks {
            return Ok(());
        }
        if !(stat.is_dir() || stat.is_symlink() || stat.is_file()) {
            return Ok(());
        }
        fingerprint(tree, rel, stat, target);
        planner.note(rel, stat);
        totals.entries += 1;
        // Later names of a hard-linked file are stored as links, without data.
        if stat.is_file() && (stat.nlink == 1 || linked.insert((stat.dev, stat.ino))) {
            totals.bytes += stat.size;
        }
        Ok(())
    })?;
    Ok((totals, planner.finish()))
}

/// Adds one walked entry to the tree's fingerprint (`target`: a symbolic
/// link's).
fn fingerprint(tree: &mut Xxh3, rel: &Path, stat: &Stat, target: Option<&OsStr>) {
    tree.update(rel.as_os_str().as_bytes());
    tree.update(&[0]);
    tree.update(&stat.mode.to_le_bytes());
    if stat.is_dir() {
        return;
    }
    tree.update(&stat.size.to_le_bytes());
    tree.update(&stat.mtime.to_le_bytes());
    tree.update(&stat.mtime_nsec.to_le_bytes());
    if let Some(target) = target {
        tree.update(target.as_bytes());
        tree.update(&[0]);
    }
}

struct MountWriter<'a, W: Write> {
    builder: &'a mut Builder<W>,
    mount: &'a Mount,
    options: &'a WriteOptions,
    stats: &'a mut Stats,
    /// First archive name seen for each (device, inode) with more than one link.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Compressed files written after an anchor entry rather than where
    /// the walk finds them (see `order`).
    placement: Placement,
}

impl<W: Write> MountWriter<'_, W> {
    fn write(&mut self) -> io::Result<()> {
        let walk = WalkDir::new(&self.mount.path)
            .follow_links(false)
            .follow_root_links(false)
            .sort_by_file_name();
        for item in walk {
            self.options.cancel.check()?;
            let item = item.map_err(walk_error)?;
            let path = item.path();
            let rel = path.strip_prefix(&self.mount.path).unwrap_or(Path::new(""));
            if self.placement.moves(rel) {
                continue;
            }
            let meta = item
                .metadata()
                .map_err(|e| io::Error::other(format!("cannot stat {}: {e}", path.display())))?;
            self.walked(path, rel, &meta)?;
            for moved in self.placement.take_after(rel) {
                self.moved(&moved)?;
            }
        }
        for moved in self.placement.take_rest() {
            self.moved(&moved)?;
        }
        Ok(())
    }

    /// Writes one entry and reports progress.
    fn walked(&mut self, path: &Path, rel: &Path, meta: &Metadata) -> io::Result<()> {
        let name = self.mount.entry_name(rel);
        self.entry(path, name.as_os_str().as_bytes(), meta)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let done = &self.stats;
        self.options.progress.archived(done.bytes, done.entries());
        Ok(())
    }

    /// Writes a file the walk skipped, at its placed position. One removed
    /// since the survey is left out, as the walk would have left it out.
    fn moved(&mut self, rel: &Path) -> io::Result<()> {
        self.options.cancel.check()?;
        let path = self.mount.path.join(rel);
        let meta = match path.symlink_metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(io::Error::other(format!(
                    "cannot stat {}: {e}",
                    path.display()
                )));
            }
        };
        if !meta.is_file() {
            return Err(io::Error::other(format!(
                "{} changed while it was being archived (it was a file); is something \
                 still writing to it? Run the rebuild when the build has finished",
                path.display()
            )));
        }
        self.walked(&path, rel, &meta)
    }

    fn entry(&mut self, path: &Path, name: &[u8], meta: &Metadata) -> io::Result<()> {
        let kind = meta.file_type();
        if kind.is_dir() {
            self.stats.dirs += 1;
            let mut name = name.to_vec();
            name.push(b'/');
            return self.append(&name, meta, EntryType::Directory, None, 0, io::empty());
        }
        if kind.is_symlink() {
            if self.options.skip_symlinks {
                return Ok(());
            }
            self.stats.symlinks += 1;
            let target = fs::read_link(path)?;
            let target = target.as_os_str().as_bytes();
            return self.append(name, meta, EntryType::Symlink, Some(target), 0, io::empty());
        }
        if !kind.is_file() {
            // Sockets, FIFOs and devices are not cache material; restore skips them too.
            self.stats.skipped += 1;
            tracing::debug!(path = %path.display(), "skipping special file");
            return Ok(());
        }
        if meta.nlink() > 1 {
            let id = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&id).cloned() {
                self.stats.hardlinks += 1;
                return self.append(name, meta, EntryType::Link, Some(&first), 0, io::empty());
            }
            self.links.insert(id, name.to_vec());
        }
        let size = meta.len();
        let file = File::open(path)?;
        self.stats.files += 1;
        self.stats.bytes += size;
        self.append(
            name,
            meta,
            EntryType::Regular,
            None,
            size,
            Exact::new(file, size),
        )
    }

    fn append(
        &mut self,
        name: &[u8],
        meta: &Metadata,
        kind: EntryType,
        link: Option<&[u8]>,
        size: u64,
        data: impl Read,
    ) -> io::Result<()> {
        let mut header = Header::new_ustar();
        let mut pax = Pax::default();
        header.set_entry_type(kind);
        header.set_mode(meta.mode() & 0o7777);
        set_number(
            &mut header,
            &mut pax,
            "uid",
            u64::from(meta.uid()),
            USTAR_MAX_ID,
            Header::set_uid,
        );
        set_number(
            &mut header,
            &mut pax,
            "gid",
            u64::from(meta.gid()),
            USTAR_MAX_ID,
            Header::set_gid,
        );
        set_number(
            &mut header,
            &mut pax,
            "size",
            size,
            USTAR_MAX_SIZE,
            Header::set_size,
        );
        set_mtime(&mut header, &mut pax, meta);
        set_name(&mut header, &mut pax, name);
        if let Some(link) = link {
            set_link(&mut header, &mut pax, link);
        }
        if !pax.records.is_empty() {
            self.builder
                .append_pax_extensions(pax.records.iter().map(|(k, v)| (*k, v.as_slice())))?;
        }
        header.set_cksum();
        self.builder.append(&header, data)
    }
}

fn walk_error(e: walkdir::Error) -> io::Error {
    let path = e
        .path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    io::Error::other(format!("cannot read {path}: {e}"))
}

/// PAX records for the next entry.
#[derive(Default)]
struct Pax {
    records: Vec<(&'static str, Vec<u8>)>,
}

impl Pax {
    fn add(&mut self, key: &'static str, value: impl Into<Vec<u8>>) {
        self.records.push((key, value.into()));
    }
}

fn set_number(
    header: &mut Header,
    pax: &mut Pax,
    key: &'static str,
    value: u64,
    max: u64,
    set: fn(&mut Header, u64),
) {
    if value > max {
        pax.add(key, value.to_string());
        set(header, 0);
    } else {
        set(header, value);
    }
}

/// Whole seconds in the header; the exact time in a PAX record when it has a fraction.
fn set_mtime(header: &mut Header, pax: &mut Pax, meta: &Metadata) {
    let secs = meta.mtime();
    let nanos = meta.mtime_nsec();
    header.set_mtime(u64::try_from(secs).unwrap_or(0));
    if nanos != 0 || secs < 0 {
        let text = format!("{secs}.{nanos:09}");
        pax.add("mtime", text.trim_end_matches('0').trim_end_matches('.'));
    }
}

/// Fits the name into ustar's name/prefix fields when possible; otherwise
/// (absolute, too long) it goes into a PAX `path` record and the ustar field
/// holds a truncated relative copy for readers that ignore PAX.
fn set_name(header: &mut Header, pax: &mut Pax, name: &[u8]) {
    let path = Path::new(std::ffi::OsStr::from_bytes(name));
    if !name.starts_with(b"/") && name.is_ascii() && header.set_path(path).is_ok() {
        return;
    }
    // Raw bytes, as GNU tar writes them (it warns about `hdrcharset`).
    pax.add("path", name);
    let relative = name.strip_prefix(b"/").unwrap_or(name);
    let short = &relative[..relative.len().min(99)];
    if let Some(ustar) = header.as_ustar_mut() {
        ustar.name = [0; 100];
        ustar.name[..short.len()].copy_from_slice(short);
    }
}

fn set_link(header: &mut Header, pax: &mut Pax, link: &[u8]) {
    if link.is_ascii() && header.set_link_name_literal(link).is_ok() {
        return;
    }
    pax.add("linkpath", link);
}

/// Reads exactly `size` bytes of a file, failing if it shrank while being
/// read: a short read would silently corrupt every entry after it.
struct Exact<R> {
    inner: io::Take<R>,
    remaining: u64,
}

impl<R: Read> Exact<R> {
    fn new(inner: R, size: u64) -> Self {
        Exact {
            inner: inner.take(size),
            remaining: size,
        }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being archived; is something still writing to it?",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The survey's fingerprint is the one larder computed before it read
    /// the tree with several threads: stored entries stay current.
    #[test]
    fn the_fingerprint_is_unchanged_since_the_walk_was_walkdir() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pkg.mod");
        for sub in ["b/x", "a.b", "A", "a/y/z", "empty"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        for file in ["b/x/1.zip", "a/y/z/go.mod", "A/f", "top"] {
            fs::write(root.join(file), file.repeat(40_000)).unwrap();
        }
        std::os::unix::fs::symlink("../top", root.join("a/up")).unwrap();
        fs::hard_link(root.join("top"), root.join("b/top")).unwrap();
        let mount = Mount {
            name: "pkg.mod".into(),
            path: root.clone(),
        };
        let options = WriteOptions {
            skip_symlinks: false,
            cancel: crate::cancel::Cancel::new(),
            progress: crate::progress::Progress::start(crate::progress::Kind::Rebuild),
        };
        let survey = survey(std::slice::from_ref(&mount), &options).unwrap();

        let mut tree = Xxh3::new();
        tree.update(b"pkg.mod\0");
        for item in WalkDir::new(&root)
            .follow_root_links(false)
            .sort_by_file_name()
        {
            let item = item.unwrap();
            let meta = item.path().symlink_metadata().unwrap();
            let rel = item.path().strip_prefix(&root).unwrap();
            tree.update(rel.as_os_str().as_bytes());
            tree.update(&[0]);
            tree.update(&meta.mode().to_le_bytes());
            if meta.is_dir() {
                continue;
            }
            tree.update(&meta.len().to_le_bytes());
            tree.update(&meta.mtime().to_le_bytes());
            tree.update(&meta.mtime_nsec().to_le_bytes());
            if meta.file_type().is_symlink() {
                tree.update(fs::read_link(item.path()).unwrap().as_os_str().as_bytes());
                tree.update(&[0]);
            }
        }
        assert_eq!(survey.tree, format!("xxh3-128:{:032x}", tree.digest128()));
        assert_eq!(survey.totals[0].entries, 15);
        assert_eq!(survey.totals[0].bytes, 40_000 * (9 + 12 + 3 + 3));
    }

    #[test]
    fn exact_reader_rejects_short_files() {
        let mut r = Exact::new(&b"abc"[..], 5);
        let mut out = Vec::new();
        let err = io::copy(&mut r, &mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut r = Exact::new(&b"abcdef"[..], 3);
        let mut out = Vec::new();
        io::copy(&mut r, &mut out).unwrap();
        assert_eq!(out, b"abc");
    }
}
