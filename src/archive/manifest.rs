//! The manifest: which mounts an entry holds, written as a PAX global header
//! at the start of the archive. GNU tar ignores the unknown keyword, so the
//! archive stays a plain tar; larder reads it to report and place mounts.

use std::io::Read;

use serde::{Deserialize, Serialize};

use super::Compression;

use super::pax;
use crate::mount::Mount;

/// Enough of an entry's head to hold its manifest, however it is compressed
/// (a zstd block is at most 128 KiB).
pub const HEAD_BYTES: usize = 256 * 1024;

/// The PAX keyword; vendor keywords are upper-case by convention.
pub const PAX_KEY: &str = "LARDER.manifest";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version, bumped if the meaning of entries ever changes.
    pub version: u32,
    /// The larder version that wrote the entry.
    pub writer: String,
    /// Mount names in archive order (`pkg.mod`, `/root/.cache/x`).
    pub mounts: Vec<String>,
    /// The digest algorithm of the trailer; when set, the trailer must be there.
    #[serde(default)]
    pub digest: Option<String>,
    /// What each mount (same order as `mounts`) unpacks to, measured before
    /// archiving. A restore never writes more than this, and checks that the
    /// disk has room for it before writing anything. Absent in entries of
    /// larder before 0.2; those are bounded by `max_restore_size` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub totals: Vec<Totals>,
    /// A fingerprint of the tree archived (`Survey::tree`): a rebuild of
    /// the same key compares it with its own to see whether anything changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<String>,
}

/// The size of one mount once unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Files, directories and links.
    pub entries: u64,
    /// Bytes of file contents.
    pub bytes: u64,
}

impl Totals {
    pub fn add(&mut self, other: Totals) {
        self.entries += other.entries;
        self.bytes += other.bytes;
    }
}

impl Manifest {
    /// The manifest of `mounts`, with what a survey measured of them: each
    /// mount's totals and the tree's fingerprint.
    pub fn for_mounts(mounts: &[Mount], totals: &[Totals], tree: &str) -> Self {
        Manifest {
            version: 1,
            writer: format!("larder {}", env!("CARGO_PKG_VERSION")),
            mounts: mounts.iter().map(|m| m.name.clone()).collect(),
            digest: Some("xxh3-64".into()),
            totals: totals.to_vec(),
            tree: Some(tree.to_string()),
        }
    }

    /// The declared size of the mount named `name`, if the entry says.
    pub fn totals_of(&self, name: &str) -> Option<Totals> {
        let index = self.mounts.iter().position(|m| m == name)?;
        self.totals.get(index).copied()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The manifest of an entry, read from its first bytes (`HEAD_BYTES` of
    /// its compressed stream), so a rebuild can compare trees without
    /// downloading the entry. `None` if those bytes hold no manifest.
    pub fn from_head(head: &[u8]) -> Option<Manifest> {
        let decoder: Box<dyn Read + '_> = match Compression::detect(head) {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(head)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(head).ok()?),
            Compression::None => Box::new(head),
        };
        // The stream is cut off: keep what decoded before the error.
        let mut tar = Vec::new();
        let _ = decoder.take(HEAD_BYTES as u64).read_to_end(&mut tar);
        let mut archive = tar::Archive::new(tar.as_slice());
        let first = archive.entries().ok()?.next()?.ok()?;
        if first.header().entry_type() != tar::EntryType::XGlobalHeader {
            return None;
        }
        let mut records = Vec::new();
        first
            .take(HEAD_BYTES as u64)
            .read_to_end(&mut records)
            .ok()?;
        Manifest::from_pax(&records)
    }

    /// Finds the manifest in a PAX global header's records, if it is there.
    pub fn from_pax(records: &[u8]) -> Option<Self> {
        pax::value(records, PAX_KEY).and_then(|v| serde_json::from_slice(v).ok())
    }
}
