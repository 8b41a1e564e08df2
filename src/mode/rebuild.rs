//! Rebuild: archive the mounts and upload them under the key, unless the
//! key is already stored (keys are immutable unless `override` is set) or
//! the build is a pull request.

use std::time::Instant;

use anyhow::Context;
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::archive::{self, write::WriteOptions};
use crate::mount::{self, Mount};
use crate::pipe::ChunkWriter;
use crate::report;
use crate::result::{Outcome, Report};
use crate::settings::Config;
use crate::storage::claim::{self, Claim, Claimed};
use crate::storage::{Store, damage, entry, transfer};

pub async fn rebuild(config: &Config, store: &Store, key: &str) -> anyhow::Result<Report> {
    let started = Instant::now();
    let skipped = |reason: String| {
        info!("rebuild: skipped: {reason}");
        Ok(Report::new("rebuild", Outcome::Skipped)
            .key(key)
            .reason(reason))
    };
    if let Some(reason) = super::pull_request_block(config) {
        return skipped(reason);
    }
    let (mounts, notes) = mount::for_rebuild(&config.mounts, &config.workspace);
    for note in notes {
        warn!("rebuild: {note}");
    }
    if mounts.is_empty() {
        let reason = "none of the mounts exist, so there is nothing to cache";
        info!("rebuild: skipped: {reason}");
        return Ok(Report::new("rebuild", Outcome::Empty)
            .key(key)
            .reason(reason));
    }
    let root = &config.remote_root;
    let target = entry::path(root, key, config.compression);

    let mut held = None;
    // A stored entry that a restore reported damaged is stored again.
    let mut damaged = None;
    if !config.override_existing {
        if let Some(existing) = entry::find(store, root, key).await? {
            match damage::find(store, root, key, &existing.meta).await? {
                Some(report) => {
                    info!(
                        "rebuild: key '{key}' is stored as '{}', but a restore found that entry \
                         damaged ({}); storing it again",
                        existing.meta.location, report.reason
                    );
                    damaged = Some(report);
                }
                None => {
                    return skipped(format!(
                        "key '{key}' is already stored ('{}', {}). Keys are immutable, so \
                         nothing was uploaded{}",
                        existing.meta.location,
                        report::bytes(existing.meta.size),
                        immutability_hint(config)
                    ));
                }
            }
        }
        match claim::claim(store, &entry::claim_path(root, key), &holder(config)).await? {
            Claimed::Won(claim) => held = Some(claim),
            Claimed::Held(by) => {
                return skipped(format!("key '{key}' is being stored right now by {by}"));
            }
        }
        // Another rebuild may have finished (or healed the entry) between
        // the lookup and the claim.
        let now = match entry::find(store, root, key).await {
            Ok(now) => now,
            Err(e) => {
                if let Some(claim) = held.take() {
                    claim.release().await;
                }
                return Err(e);
            }
        };
        let still_damaged =
            |e: &entry::Entry| damaged.as_ref().is_some_and(|r| r.describes(&e.meta));
        if now.as_ref().is_some_and(|e| !still_damaged(e)) {
            if let Some(claim) = held.take() {
                claim.release().await;
            }
            return skipped(format!(
                "key '{key}' was stored by another rebuild a moment ago"
            ));
        }
    }
    let ours = key.to_string();
    let of_this_key = move |object: &str| entry::key_of(object).is_some_and(|(k, _)| k == ours);
    let leftovers = store
        .remove_temporaries(root, of_this_key, claim::LEASE)
        .await;
    if !leftovers.is_empty() {
        info!(
            "rebuild: removed {} unfinished upload(s) of key '{key}' left by killed rebuilds: {}",
            leftovers.len(),
            leftovers.join(", ")
        );
    }

    let result = upload(config, store, key, &mounts, &target, started, held.as_ref()).await;
    if let Some(claim) = held {
        claim.release().await;
    }
    let report = result?;
    if report.result == Outcome::Stored && (config.override_existing || damaged.is_some()) {
        remove_other_formats(config, store, key).await;
    }
    if report.result == Outcome::Stored && damaged.is_some() {
        damage::clear(store, root, key).await;
        info!("rebuild: the damaged entry of key '{key}' was replaced");
    }
    Ok(report)
}

async fn upload(
    config: &Config,
    store: &Store,
    key: &str,
    mounts: &[Mount],
    target: &object_store::path::Path,
    started: Instant,
    claim: Option<&Claim>,
) -> anyhow::Result<Report> {
    info!(
        "rebuild: archiving {} with {} level {} into '{target}' in {} {}",
        mount::names(mounts),
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
            let reason = "another rebuild took over the key while this one uploaded; \
                          its entry stands and this upload was discarded";
            info!("rebuild: skipped: {reason}");
            return Ok(Report::new("rebuild", Outcome::Skipped)
                .key(key)
                .reason(reason));
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
    let mut report = Report::new("rebuild", Outcome::Stored).key(key);
    report.object = Some(target.to_string());
    report.files = stats.files;
    report.bytes = packed.tar_bytes;
    report.stored_bytes = sent;
    report.seconds = elapsed.as_secs_f64();
    Ok(report)
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
