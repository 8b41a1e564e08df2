//! `backend: filesystem`: entries are files under a directory, usually a
//! volume shared between pipeline runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use object_store::local::LocalFileSystem;

use super::{Opened, Scratch};

/// Opens (and creates) the cache root. Writes are fsynced on completion so a
/// crash can never leave a renamed-but-empty entry on the volume.
pub fn open(root: &Path) -> anyhow::Result<Opened> {
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
    Ok(Opened {
        store: Arc::new(store),
        location: root.display().to_string(),
        scratch: Scratch::Local(root.to_path_buf()),
    })
}

/// Removes `LocalFileSystem`'s unfinished uploads (`<object>#<n>`) in `dir`
/// of the objects `wanted` accepts that were not written to for
/// `older_than`; returns their names.
pub fn remove_temporaries(
    dir: &Path,
    wanted: impl Fn(&str) -> bool,
    older_than: Duration,
) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((object, counter)) = name.rsplit_once('#') else {
            continue;
        };
        let temporary = !counter.is_empty() && counter.bytes().all(|b| b.is_ascii_digit());
        if !temporary || !wanted(object) {
            continue;
        }
        let idle = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default())
            .unwrap_or_default();
        if idle >= older_than && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(name);
        }
    }
    Ok(removed)
}
