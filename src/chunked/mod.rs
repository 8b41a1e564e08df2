//! Chunked entries: the tar stream larder writes, cut into content-defined
//! chunks, each compressed on its own (one zstd frame) and stored once under
//! the BLAKE3 hash of its uncompressed bytes. An entry is then a small index
//! (`<key>.chunked`) naming its chunks in order, beside the manifest.
//!
//! Chunks live in packs in the repository's folder (`packs/<id>.pack`, see
//! `pack`) and are shared by all its entries, never across repositories. A
//! rebuild uploads only the chunks the folder does not hold yet, and
//! publishes the index once every pack it names is stored. Concatenated,
//! the chunks are a valid `.tar.zst`. Version 1 indexes named one object
//! per chunk (`chunks/<2 hex>/<64 hex>`); they are still read.

pub mod buffers;
pub mod cache;
pub mod cutter;
pub mod gc;
pub mod index;
pub mod pack;
pub mod read;
pub mod sparse;
pub mod write;

use object_store::path::Path;

pub use index::{ChunkRef, Index};

/// The folder of version 1's one-object chunks, inside the repository's folder.
pub const CHUNKS: &str = "chunks";

/// Chunk sizes (bytes) for FastCDC: the cut points are part of the format,
/// recorded in each index, and never changed silently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
}

impl Params {
    /// 64 KiB / 256 KiB / 1 MiB: chosen from the table in the README
    /// (dedup against request count and compression).
    pub const DEFAULT: Params = Params::around(256 * 1024);

    /// Small chunks for tests, so a few hundred KiB make many chunks.
    #[cfg(test)]
    pub const SMALL: Params = Params::around(16 * 1024);

    /// A quarter of `avg` to four times it, as casync and desync advise.
    pub const fn around(avg: usize) -> Params {
        Params {
            min: avg / 4,
            avg,
            max: avg * 4,
        }
    }

    /// How an index names them.
    pub fn describe(&self) -> String {
        format!("fastcdc-v2020 {}/{}/{}", self.min, self.avg, self.max)
    }
}

/// The zstd level of chunks when `compression_level` is not set. Only new
/// chunks are compressed, so a rebuild pays for it once per chunk; the level
/// wins back what compressing each chunk alone loses (see the README).
pub const DEFAULT_LEVEL: i32 = 3;

/// Where version 1 stored a chunk: `chunks/ab/ab12...`.
pub fn chunk_path(id: &str) -> Path {
    Path::from(format!("{CHUNKS}/{}/{id}", &id[..2.min(id.len())]))
}

/// The hash that names a chunk, as lowercase hex.
pub fn chunk_id(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// The hash of a chunk's stored bytes (`ChunkRef::frame`): the same hash,
/// of the zstd frame.
pub fn frame_hash(stored: &[u8]) -> String {
    chunk_id(stored)
}

/// Whether `id` can name a chunk (64 lowercase hex digits).
pub fn is_chunk_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
