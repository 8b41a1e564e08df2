//! Restore: find the entry for the key, stream it down, unpack it beside the
//! mounts and swap it in only once the whole archive checked out.

use std::time::Instant;

use anyhow::anyhow;
use tracing::{info, warn};

use super::Outcome;
use crate::archive::extract::{Extracted, extract};
use crate::pipe::ChunkReader;
use crate::report;
use crate::settings::Config;
use crate::staging::{Placed, Staging};
use crate::storage::{Store, entry, transfer};

pub async fn restore(config: &Config, store: &Store, key: &str) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let root = &config.remote_root;
    let Some(found) = entry::find(store, root, key).await? else {
        info!(
            "restore: miss for key '{key}': no entry under '{root}' in {} {}; nothing was restored",
            store.backend, store.location
        );
        return Ok(Outcome::Miss);
    };
    let size = found.meta.size;
    info!(
        "restore: found key '{key}' as '{}' ({}); downloading and unpacking",
        found.meta.location,
        report::bytes(size)
    );
    let download = transfer::download(store.clone(), found.meta.clone());
    let failure = download.failure_handle();
    let mounts = config.mounts.clone();
    let unpacked = tokio::task::spawn_blocking(move || -> anyhow::Result<(Extracted, Placed)> {
        let mut staging = Staging::prepare(&mounts)?;
        let extracted = extract(ChunkReader::new(download.chunks), &mut staging)?;
        crate::interrupt::check()?;
        let missing: Vec<String> = staging
            .mounts
            .iter()
            .filter(|s| !s.present)
            .map(|s| s.mount.name.clone())
            .collect();
        let placed = staging.commit()?;
        for name in missing {
            warn!("restore: the entry holds nothing for mount {name}; it was left as it was");
        }
        Ok((extracted, placed))
    })
    .await
    .map_err(|e| anyhow!("unpacking stopped unexpectedly: {e}"))?;
    let (extracted, placed) = unpacked.map_err(|e| match failure.get() {
        Some(cause) => anyhow!("{cause}; the workspace was left as it was"),
        None => e.context(format!(
            "entry '{}' could not be restored; the workspace was left as it was",
            found.meta.location
        )),
    })?;
    let elapsed = started.elapsed();
    let stats = extracted.stats;
    info!(
        "restore: hit for key '{key}': restored {}: {}; {} {} -> {} in {}, {}",
        placed_names(&placed),
        report::contents(&stats),
        report::bytes(size),
        extracted.compression,
        report::bytes(extracted.tar_bytes),
        report::seconds(elapsed),
        report::rate(extracted.tar_bytes, elapsed)
    );
    if stats.skipped > 0 {
        warn!(
            "restore: skipped {} device or FIFO entries",
            report::count(stats.skipped)
        );
    }
    Ok(Outcome::Hit)
}

fn placed_names(placed: &Placed) -> String {
    let mut parts: Vec<String> = placed.created.clone();
    parts.extend(placed.replaced.iter().map(|n| format!("{n} (replaced)")));
    parts.join(", ")
}
