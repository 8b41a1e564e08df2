//! The index of a chunked entry: which chunks, in which order, make its tar
//! stream, and the entry's manifest (so a rebuild can tell whether the
//! mounts changed, and a restore can check the disk, from this one small
//! object).

use serde::{Deserialize, Serialize};

use object_store::path::Path;

use super::{Params, chunk_path, is_chunk_id, pack::is_pack_id, pack::pack_path};
use crate::archive::manifest::Manifest;

/// What `format` says in every index.
const FORMAT: &str = "larder-chunked";
/// Version 2 stores chunks in packs; version 1 (one object per chunk) is
/// still read.
const VERSION: u32 = 2;
const READS: [u32; 2] = [1, 2];

/// The largest chunk an index may name, whatever the chunker's settings:
/// a restore holds a few chunks in memory at once.
pub const MAX_CHUNK: u64 = 16 << 20;

/// The largest index a restore reads (about 200,000 chunks).
pub const MAX_INDEX: u64 = 64 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub format: String,
    pub version: u32,
    /// The chunker and its sizes (`fastcdc-v2020 65536/262144/1048576`).
    pub chunker: String,
    /// How chunks are named and compressed.
    pub hash: String,
    pub compression: String,
    /// The length of the tar stream: the sum of the chunks' sizes.
    pub tar_bytes: u64,
    pub manifest: Manifest,
    pub chunks: Vec<ChunkRef>,
}

/// One chunk of the stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// BLAKE3 of the uncompressed bytes, hex.
    pub id: String,
    /// Uncompressed bytes.
    pub size: u64,
    /// Stored (compressed) bytes.
    pub stored: u64,
    /// The pack holding it, at `offset`; `None` in a version 1 index,
    /// where each chunk is its own object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// BLAKE3 of the stored bytes (the zstd frame), hex. A restore that
    /// finds those bytes as recorded leaves the decompressed chunk to the
    /// stream's digest instead of hashing it (`read::vouched`): a third of
    /// the bytes. Absent where a larder before it wrote the index or the
    /// pack's catalog: those chunks are checked by `id`. Older larders
    /// ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ChunkRef {
    /// The object that holds the chunk: its pack, or (version 1) itself.
    pub fn object(&self) -> Path {
        match &self.pack {
            Some(pack) => pack_path(pack),
            None => chunk_path(&self.id),
        }
    }

    /// Where in `object()` its bytes are.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + self.stored
    }
}

impl Index {
    pub fn new(params: Params, manifest: Manifest, chunks: Vec<ChunkRef>) -> Index {
        Index {
            format: FORMAT.into(),
            version: VERSION,
            chunker: params.describe(),
            hash: "blake3".into(),
            compression: "zstd".into(),
            tar_bytes: chunks.iter().map(|c| c.size).sum(),
            manifest,
            chunks,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads and checks an index: an entry that does not check out is
    /// damaged, and is reported as such before anything is downloaded.
    pub fn parse(bytes: &[u8]) -> Result<Index, String> {
        let index: Index =
            serde_json::from_slice(bytes).map_err(|e| format!("the index does not parse: {e}"))?;
        if index.format != FORMAT || !READS.contains(&index.version) {
            return Err(format!(
                "the index is {} version {}, and this larder reads {FORMAT} versions 1 and \
                 {VERSION}; a newer larder wrote it",
                index.format, index.version
            ));
        }
        if index.hash != "blake3" || index.compression != "zstd" {
            return Err(format!(
                "the index names chunks by {} compressed with {}, which this larder does not read",
                index.hash, index.compression
            ));
        }
        let mut total = 0u64;
        for (n, chunk) in index.chunks.iter().enumerate() {
            if !is_chunk_id(&chunk.id) {
                return Err(format!("chunk {n} has no valid name ('{}')", chunk.id));
            }
            if chunk.size == 0 || chunk.size > MAX_CHUNK || chunk.stored > MAX_CHUNK + 1024 {
                return Err(format!(
                    "chunk {n} ({}) declares {} bytes ({} stored), outside 1..={MAX_CHUNK}",
                    chunk.id, chunk.size, chunk.stored
                ));
            }
            if let Some(frame) = &chunk.frame
                && !is_chunk_id(frame)
            {
                return Err(format!("chunk {n} has no valid frame hash ('{frame}')"));
            }
            if let Some(pack) = &chunk.pack
                && (!is_pack_id(pack) || chunk.offset.checked_add(chunk.stored).is_none())
            {
                return Err(format!("chunk {n} names no valid pack ('{pack}')"));
            }
            total = total.saturating_add(chunk.size);
        }
        if total != index.tar_bytes {
            return Err(format!(
                "the chunks add up to {total} bytes, and the index declares {}",
                index.tar_bytes
            ));
        }
        Ok(index)
    }

    /// Bytes stored for this entry's distinct chunks.
    pub fn stored_bytes(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.chunks
            .iter()
            .filter(|c| seen.insert(c.id.as_str()))
            .map(|c| c.stored)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        let chunk = |b: u8, size| ChunkRef {
            id: super::super::chunk_id(&[b]),
            size,
            stored: size / 2,
            pack: Some("0".repeat(32)),
            offset: u64::from(b) * 1000,
            frame: (b == 1).then(|| super::super::frame_hash(&[b, b])),
        };
        Index::new(
            Params::DEFAULT,
            Manifest::default(),
            vec![chunk(1, 100), chunk(2, 50), chunk(1, 100)],
        )
    }

    #[test]
    fn an_index_round_trips_and_counts_shared_chunks_once() {
        let index = sample();
        assert_eq!(index.tar_bytes, 250);
        assert_eq!(index.stored_bytes(), 75);
        assert_eq!(Index::parse(&index.to_json()).unwrap(), index);
    }

    #[test]
    fn a_version_1_index_is_read_with_chunks_as_objects() {
        let mut v1 = sample();
        v1.version = 1;
        for chunk in &mut v1.chunks {
            (chunk.pack, chunk.offset, chunk.frame) = (None, 0, None);
        }
        let json = String::from_utf8(v1.to_json()).unwrap();
        assert!(
            !json.contains("pack") && !json.contains("offset") && !json.contains("frame"),
            "{json}"
        );
        let index = Index::parse(json.as_bytes()).unwrap();
        assert_eq!(index.chunks[0].pack, None);
        let id = &index.chunks[0].id;
        assert_eq!(
            index.chunks[0].object().to_string(),
            format!("chunks/{}/{id}", &id[..2])
        );
        assert_eq!(index.chunks[0].range(), 0..50);
    }

    #[test]
    fn a_bad_index_says_what_is_wrong() {
        let mut lying = sample();
        lying.tar_bytes += 1;
        let e = Index::parse(&lying.to_json()).unwrap_err();
        assert!(e.contains("add up to 250 bytes"), "{e}");
        let mut huge = sample();
        huge.chunks[1].size = MAX_CHUNK + 1;
        huge.tar_bytes = huge.chunks.iter().map(|c| c.size).sum();
        assert!(
            Index::parse(&huge.to_json())
                .unwrap_err()
                .contains("chunk 1")
        );
        let mut named = sample();
        named.chunks[0].id = "../../etc/passwd".into();
        assert!(
            Index::parse(&named.to_json())
                .unwrap_err()
                .contains("no valid name")
        );
        let mut newer = sample();
        newer.version = 3;
        assert!(
            Index::parse(&newer.to_json())
                .unwrap_err()
                .contains("newer larder")
        );
        let mut packed = sample();
        packed.chunks[2].pack = Some("../x".into());
        assert!(
            Index::parse(&packed.to_json())
                .unwrap_err()
                .contains("no valid pack")
        );
        let mut framed = sample();
        framed.chunks[1].frame = Some("not a hash".into());
        assert!(
            Index::parse(&framed.to_json())
                .unwrap_err()
                .contains("no valid frame hash")
        );
        assert!(Index::parse(b"{").unwrap_err().contains("does not parse"));
    }
}
