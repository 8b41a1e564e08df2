//! Where a cache entry lives: `<key>.<tar|tar.gz|tar.zst>` (one archive) or
//! `<key>.chunked` (the index of a chunked entry) in the repository's folder.
//!
//! The extension shows the format in any listing, and lookups try all four,
//! so changing `archive_format` or `entry_format` never hides an existing
//! entry.

use futures::StreamExt;
use futures::future::join_all;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta};

use super::transfer::Head;
use super::{Backend, Store};
use crate::archive::Compression;
use crate::archive::manifest::{self, Manifest};

pub fn path(key: &str, compression: Compression) -> Path {
    Path::from(format!("{key}.{}", compression.extension()))
}

/// How an entry is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One archive object.
    Archive(Compression),
    /// An index naming chunks.
    Chunked,
}

impl Format {
    pub const ALL: [Format; 4] = [
        Format::Archive(Compression::Gzip),
        Format::Archive(Compression::Zstd),
        Format::Archive(Compression::None),
        Format::Chunked,
    ];

    fn extension(self) -> &'static str {
        match self {
            Format::Archive(c) => c.extension(),
            Format::Chunked => "chunked",
        }
    }
}

/// Where the entry of `key` in `format` is stored.
pub fn path_in(key: &str, format: Format) -> Path {
    Path::from(format!("{key}.{}", format.extension()))
}

/// The format of the stored entry `meta`.
pub fn format_of(meta: &ObjectMeta) -> Option<Format> {
    key_of(meta.location.filename()?).map(|(_, format)| format)
}

/// The object that marks a rebuild of `key` in progress.
pub fn claim_path(key: &str) -> Path {
    Path::from(format!("{key}.claim"))
}

/// Finds the entry for `key` in any format; the newest wins if several exist.
pub async fn find(store: &Store, key: &str) -> anyhow::Result<Option<ObjectMeta>> {
    let lookups = Format::ALL.map(|f| async move { store.head(&path_in(key, f)).await });
    let mut found = Vec::new();
    for result in join_all(lookups).await {
        found.extend(result?);
    }
    Ok(found.into_iter().max_by_key(|meta| meta.last_modified))
}

/// An entry found by `open`, with its first bytes.
pub struct Opened {
    pub meta: ObjectMeta,
    /// The object's first bytes, asked for with the lookup: an archive's
    /// first download range, a chunked entry's index (or its start).
    pub head: Head,
}

/// What a restore's lookup asks for of each format: an archive's first
/// download range, an index whole (600 MB of Go modules have a 270 kB one).
/// The archive's is a full range, as large as one round trip carries over
/// a fast link (4 MiB: 1 Gbit/s for 33 ms): the reader takes its bytes as
/// they come, and the next ranges, asked for once the answer's headers are
/// in, find the link still busy with it. With 256 KiB (2 ms of such a
/// link) the link stood idle for the round trip (24 ms in a timeline of
/// a restore over a 20 ms link).
fn first_bytes(format: Format) -> u64 {
    match format {
        Format::Archive(_) => super::transfer::RANGE_SIZE,
        Format::Chunked => 1 << 20,
    }
}

/// Finds the entry for `key`, like `find`, and reads its first bytes with
/// the same request: a GET of the start of each format's object instead of
/// a HEAD, so a restore does not wait one more round trip for them.
pub async fn open(store: &Store, key: &str) -> anyhow::Result<Option<Opened>> {
    if store.backend == Backend::Filesystem {
        // The file is read in place; nothing to gain.
        let meta = find(store, key).await?;
        return Ok(meta.map(|meta| Opened {
            meta,
            head: Head::none(),
        }));
    }
    let lookups = Format::ALL.map(|f| async move { open_one(store, &path_in(key, f), f).await });
    let mut found = Vec::new();
    for result in join_all(lookups).await {
        found.extend(result?);
    }
    Ok(found.into_iter().max_by_key(|o| o.meta.last_modified))
}

/// The start of the object at `path`, or `None` if there is none. A read
/// that fails falls back to a HEAD, whose error (if it fails too) says
/// what a lookup's always said; one that answers other than the range
/// asked for (a range refused on an empty object) keeps only the metadata.
/// An archive's bytes are left arriving (see `Head::Arriving`).
async fn open_one(store: &Store, path: &Path, format: Format) -> anyhow::Result<Option<Opened>> {
    let options = GetOptions {
        range: Some(GetRange::Bounded(0..first_bytes(format))),
        ..GetOptions::default()
    };
    let result = match store.inner().get_opts(path, options).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(_) => return fallback(store, path).await,
    };
    let len = result.meta.size.min(first_bytes(format));
    if result.range != (0..len) {
        return fallback(store, path).await;
    }
    let meta = result.meta.clone();
    let head = match format {
        Format::Archive(_) => Head::Arriving {
            body: result.into_stream().boxed(),
            len,
        },
        Format::Chunked => match result.bytes().await {
            Ok(head) if head.len() as u64 == len => Head::Read(head),
            _ => return fallback(store, path).await,
        },
    };
    Ok(Some(Opened { meta, head }))
}

/// The lookup of `path` by a HEAD, when its read did not do.
async fn fallback(store: &Store, path: &Path) -> anyhow::Result<Option<Opened>> {
    Ok(store.head(path).await?.map(|meta| Opened {
        meta,
        head: Head::none(),
    }))
}

/// The newest entry whose key starts with `prefix`, and its key. Only the
/// repository folder's own objects are considered, not deeper folders.
pub async fn newest_with_prefix(
    store: &Store,
    prefix: &str,
) -> anyhow::Result<Option<(String, ObjectMeta)>> {
    Ok(store
        .list()
        .await?
        .into_iter()
        .filter_map(|meta| {
            let (key, _) = key_of(meta.location.filename()?)?;
            let key = key.to_string();
            key.starts_with(prefix).then_some((key, meta))
        })
        .max_by_key(|(_, meta)| meta.last_modified))
}

/// The manifest of the stored archive `meta`, read from the head of the
/// object (one ranged read, pinned to its version); `None` if it has none.
pub async fn manifest(store: &Store, meta: &ObjectMeta) -> anyhow::Result<Option<Manifest>> {
    let end = meta.size.min(manifest::HEAD_BYTES as u64);
    let options = GetOptions {
        range: Some(GetRange::Bounded(0..end)),
        if_match: meta.e_tag.clone(),
        ..GetOptions::default()
    };
    let head = store
        .inner()
        .get_opts(&meta.location, options)
        .await
        .map_err(|e| store.error("read of the head of", &meta.location, e))?
        .bytes()
        .await
        .map_err(|e| store.error("read of the head of", &meta.location, e))?;
    Ok(Manifest::from_head(&head))
}

/// Splits an object's file name into its key and format; `None` for
/// anything that is not an entry (claims, temporary files).
pub fn key_of(file_name: &str) -> Option<(&str, Format)> {
    // Longest extension first: "x.tar.gz" must not be read as key "x.tar".
    let mut formats = Format::ALL;
    formats.sort_by_key(|f| std::cmp::Reverse(f.extension().len()));
    formats.into_iter().find_map(|f| {
        file_name
            .strip_suffix(f.extension())
            .and_then(|rest| rest.strip_suffix('.'))
            .filter(|key| !key.is_empty())
            .map(|key| (key, f))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_of_reads_every_format_and_nothing_else() {
        let archive = Format::Archive;
        assert_eq!(
            key_of("gomod-1.tar.gz"),
            Some(("gomod-1", archive(Compression::Gzip)))
        );
        assert_eq!(key_of("k.tar.zst"), Some(("k", archive(Compression::Zstd))));
        assert_eq!(key_of("k.tar"), Some(("k", archive(Compression::None))));
        assert_eq!(
            key_of("x.tar.tar.gz"),
            Some(("x.tar", archive(Compression::Gzip)))
        );
        assert_eq!(
            key_of("go.sum-1.chunked"),
            Some(("go.sum-1", Format::Chunked))
        );
        assert_eq!(key_of("k.claim"), None);
        assert_eq!(key_of(".tar.gz"), None);
    }
}
