//! Rebuild: archive the mounts and upload them under the key, unless the
//! key is already stored (keys are immutable unless `override` is set).

use std::time::Instant;

use anyhow::Context;
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Outcome;
use crate::archive::{self, write::WriteOptions};
use crate::mount::Mount;
use crate::pipe::ChunkWriter;
use crate::report;
use crate::settings::Config;
use crate::storage::claim::{self, Claim, Claimed};
use crate::storage::{Store, entry, transfer};

pub async fn rebuild(config: &Config, store: &Store, key: &str) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mounts = existing_mounts(&config.mounts);
    if mounts.is_empty() {
        info!("rebuild: skipped: none of the mounts exist, so there is nothing to cache");
        return Ok(Outcome::Empty);
    }
    let root = &config.remote_root;
    let target = entry::path(root, key, config.compression);

    let mut held = None;
    if !config.override_existing {
        if let Some(existing) = entry::find(store, root, key).await? {
            info!(
                "rebuild: skipped: key '{key}' is already stored ('{}', {}). Keys are immutable, \
                 so nothing was uploaded{}",
                existing.meta.location,
                report::bytes(existing.meta.size),
                immutability_hint(config)
            );
            return Ok(Outcome::Skipped);
        }
        match claim::claim(store, &entry::claim_path(root, key), &holder(config)).await? {
            Claimed::Won(claim) => held = Some(claim),
            Claimed::Held(by) => {
                info!("rebuild: skipped: key '{key}' is being stored right now by {by}");
                return Ok(Outcome::Skipped);
            }
        }
        // Another rebuild may have finished between the lookup and the claim.
        if entry::find(store, root, key).await?.is_some() {
            if let Some(claim) = held.take() {
                claim.release().await;
            }
            info!("rebuild: skipped: key '{key}' was stored by another rebuild a moment ago");
            return Ok(Outcome::Skipped);
        }
    }

    let result = upload(config, store, key, &mounts, &target, started, held.as_ref()).await;
    if let Some(claim) = held {
        claim.release().await;
    }
    let outcome = result?;
    if outcome == Outcome::Stored && config.override_existing {
        remove_other_formats(config, store, key).await;
    }
    Ok(outcome)
}

async fn upload(
    config: &Config,
    store: &Store,
    key: &str,
    mounts: &[Mount],
    target: &object_store::path::Path,
    started: Instant,
    claim: Option<&Claim>,
) -> anyhow::Result<Outcome> {
    info!(
        "rebuild: archiving {} with {} level {} into '{target}' in {} {}",
        names(mounts),
        config.compression,
        config.level,
        store.backend,
        store.location
    );
    let (tx, rx) = mpsc::channel(8);
    let options = WriteOptions {
        skip_symlinks: config.skip_symlinks,
    };
    let (compression, level) = (config.compression, config.level);
    let owned_mounts = mounts.to_vec();
    let producer = tokio::task::spawn_blocking(move || {
        let (packed, writer) = archive::pack(
            &owned_mounts,
            &options,
            compression,
            level,
            ChunkWriter::new(tx),
        )
        .context("cannot archive the mounts")?;
        writer
            .finish()
            .context("cannot hand the archive to the upload")?;
        Ok(packed)
    });
    let (packed, pending) = transfer::upload(store, target, rx, producer).await?;
    let ours = match claim {
        Some(claim) => claim.still_ours().await,
        None => Ok(true),
    };
    match ours {
        Ok(true) => {}
        Ok(false) => {
            pending.discard().await;
            info!(
                "rebuild: skipped: another rebuild took over the key while this one uploaded; \
                 its entry stands and this upload was discarded"
            );
            return Ok(Outcome::Skipped);
        }
        Err(e) => {
            pending.discard().await;
            return Err(e);
        }
    }
    let sent = pending.bytes;
    pending.publish().await?;
    let elapsed = started.elapsed();
    let stats = packed.stats;
    info!(
        "rebuild: stored key '{key}' as '{target}': {}; {} -> {} {} ({}) in {}, {}",
        report::contents(&stats),
        report::bytes(packed.tar_bytes),
        report::bytes(sent),
        config.compression,
        report::ratio(sent, packed.tar_bytes),
        report::seconds(elapsed),
        report::rate(packed.tar_bytes, elapsed)
    );
    if stats.skipped > 0 {
        warn!(
            "rebuild: left out {} sockets, FIFOs or device files",
            report::count(stats.skipped)
        );
    }
    Ok(Outcome::Stored)
}

/// The mounts that exist, warning about each one that does not.
fn existing_mounts(mounts: &[Mount]) -> Vec<Mount> {
    mounts
        .iter()
        .filter(|m| match m.path.symlink_metadata() {
            Ok(meta) => {
                if meta.file_type().is_symlink() {
                    warn!(
                        "rebuild: mount {} is a symbolic link; only the link is cached, not what it points to",
                        m.name
                    );
                }
                true
            }
            Err(_) => {
                warn!("rebuild: mount {} does not exist ({}); it is left out", m.name, m.path.display());
                false
            }
        })
        .cloned()
        .collect()
}

/// With `override`, an entry stored earlier in another format would linger
/// beside the new one; remove it so the key has one entry.
async fn remove_other_formats(config: &Config, store: &Store, key: &str) {
    for compression in archive::Compression::ALL {
        if compression == config.compression {
            continue;
        }
        let path = entry::path(&config.remote_root, key, compression);
        match store.inner().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => warn!("{}", store.error("removal of the replaced", &path, e)),
        }
    }
}

/// What to do about an existing key, depending on how the key is built.
fn immutability_hint(config: &Config) -> &'static str {
    let source = &config.key.source;
    if source.contains("checksum") || source.contains("hashFiles") {
        "; the entry matches these inputs (set override: true to replace entries)"
    } else {
        ". Put a lockfile checksum in cache_key, e.g. {{ checksum \"go.sum\" }}, so changed \
         dependencies get a new key, or set override: true to replace entries"
    }
}

fn names(mounts: &[Mount]) -> String {
    mounts
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Who holds a claim, for the log of a rebuild that has to wait.
fn holder(config: &Config) -> String {
    let build = config
        .metadata
        .get_path(".Build.Number")
        .map(|n| format!("build {n}"))
        .unwrap_or_else(|| "a rebuild".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("{build} (host {host}, pid {})", std::process::id())
}
