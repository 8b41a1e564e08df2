//! Where a cache entry lives: `<remote_root>/<key>.<tar|tar.gz|tar.zst>`.
//!
//! The extension shows the format in any listing, and lookups try all three,
//! so changing `archive_format` never hides an existing entry.

use futures::future::join_all;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};

use super::Store;
use crate::archive::Compression;

/// An entry found in storage.
#[derive(Clone, Debug)]
pub struct Entry {
    pub meta: ObjectMeta,
    /// The format its name claims; restore still checks the bytes.
    pub named_format: Compression,
}

pub fn path(root: &str, key: &str, compression: Compression) -> Path {
    Path::from(format!("{root}/{key}.{}", compression.extension()))
}

/// The object that marks a rebuild of `key` in progress.
pub fn claim_path(root: &str, key: &str) -> Path {
    Path::from(format!("{root}/{key}.claim"))
}

/// Finds the entry for `key` in any format; the newest wins if several exist.
pub async fn find(store: &Store, root: &str, key: &str) -> anyhow::Result<Option<Entry>> {
    let lookups = Compression::ALL.map(|c| async move {
        let path = path(root, key, c);
        match store.inner().head(&path).await {
            Ok(meta) => Ok(Some(Entry {
                meta,
                named_format: c,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store.error("lookup of", &path, e)),
        }
    });
    let mut found = Vec::new();
    for result in join_all(lookups).await {
        found.extend(result?);
    }
    Ok(found.into_iter().max_by_key(|e| e.meta.last_modified))
}
