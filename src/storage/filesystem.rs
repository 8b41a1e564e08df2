//! `backend: filesystem`: entries are files under a directory, usually a
//! volume shared between pipeline runs.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use object_store::local::LocalFileSystem;

use super::Store;

/// Opens (and creates) the cache root. Writes are fsynced on completion so a
/// crash can never leave a renamed-but-empty entry on the volume.
pub fn open(root: &Path) -> anyhow::Result<Store> {
    std::fs::create_dir_all(root).with_context(|| {
        format!(
            "filesystem_cache_root {} does not exist and cannot be created; \
             mount a volume there or choose another directory",
            root.display()
        )
    })?;
    let store = LocalFileSystem::new_with_prefix(root)
        .with_context(|| format!("cannot open filesystem_cache_root {}", root.display()))?
        .with_fsync(true)
        .with_automatic_cleanup(true);
    Ok(Store {
        inner: Arc::new(store),
        backend: "filesystem",
        location: root.display().to_string(),
    })
}
