//! The archive format: a POSIX tar stream, optionally gzip or zstd compressed.

pub mod codec;
pub mod digest;
pub mod extract;
pub(crate) mod files;
pub mod format;
pub(crate) mod gzip_blocks;
pub mod manifest;
pub(crate) mod order;
pub mod pax;
pub(crate) mod tree;
pub mod write;

pub use format::Compression;

/// Counts of what an archive holds; `bytes` is the size of regular files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Sockets, FIFOs and devices left out.
    pub skipped: u64,
    pub bytes: u64,
}

impl Stats {
    /// Every entry: files, directories and links.
    pub fn entries(&self) -> u64 {
        self.files + self.dirs + self.symlinks + self.hardlinks
    }
}

/// `1,234 files, 56 dirs, 7 links`: what an archive holds, for the log.
impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::human::plural;
        write!(
            f,
            "{}, {}, {}",
            plural(self.files, "file"),
            plural(self.dirs, "dir"),
            plural(self.symlinks + self.hardlinks, "link")
        )
    }
}

use std::io::{self, BufWriter, Write};

use crate::mount::Mount;

/// What `pack` produced.
#[derive(Clone, Copy, Debug)]
pub struct Packed {
    pub stats: Stats,
    /// Size of the tar stream before compression.
    pub tar_bytes: u64,
}

/// Archives `mounts` and compresses the stream into `out`, returning `out`
/// once the compressor's trailer is written.
pub fn pack<W: Write>(
    mounts: &[Mount],
    survey: &write::Survey,
    options: &write::WriteOptions,
    compression: Compression,
    level: i32,
    out: W,
) -> io::Result<(Packed, W)> {
    let encoder = codec::Encoder::new(compression, level, out)?;
    let tally = digest::Tally::new(BufWriter::with_capacity(256 * 1024, encoder));
    let (stats, tally) = write::write_archive(mounts, survey, options, tally)?;
    let tar_bytes = tally.count;
    let encoder = tally.inner.into_inner().map_err(|e| e.into_error())?;
    let out = encoder.finish()?;
    Ok((Packed { stats, tar_bytes }, out))
}
