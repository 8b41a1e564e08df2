//! Restore: find the entry for the key (or, failing that, the newest entry
//! under each restore key in turn), stream it down, unpack it beside the
//! mounts and swap it in only once the whole archive checked out.

use std::time::Instant;

use anyhow::anyhow;
use tracing::{info, warn};

use super::Keys;
use crate::archive::extract::{Extracted, extract};
use crate::mount;
use crate::report;
use crate::result::{Outcome, Report};
use crate::settings::Config;
use crate::staging::{Placed, Staging};
use crate::storage::{Store, entry, transfer};

/// Which entry a lookup found.
struct Found {
    entry: entry::Entry,
    key: String,
    /// The restore key (prefix) that found it; `None` for the exact key.
    restore_key: Option<String>,
}

pub async fn restore(config: &Config, store: &Store, keys: &Keys) -> anyhow::Result<Report> {
    let started = Instant::now();
    let key = &keys.key;
    let Some(found) = lookup(config, store, keys).await? else {
        let tried = match keys.restore_prefixes.as_slice() {
            [] => String::new(),
            prefixes => format!(
                " (nor for the restore keys {})",
                prefixes
                    .iter()
                    .map(|p| format!("'{p}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        info!(
            "restore: miss for key '{key}': no entry{tried} under '{}' in {} {}; nothing was restored",
            config.remote_root, store.backend, store.location
        );
        return Ok(Report::new("restore", Outcome::Miss).key(key));
    };
    let size = found.entry.meta.size;
    match &found.restore_key {
        None => info!(
            "restore: found key '{key}' as '{}' ({}); downloading and unpacking",
            found.entry.meta.location,
            report::bytes(size)
        ),
        Some(prefix) => info!(
            "restore: no entry for key '{key}'; restore key '{prefix}' found '{}' as '{}' ({}); \
             downloading and unpacking",
            found.key,
            found.entry.meta.location,
            report::bytes(size)
        ),
    }
    let (extracted, placed) = unpack(config, store, &found).await?;
    let elapsed = started.elapsed();
    let stats = extracted.stats;
    let (outcome, hit) = match &found.restore_key {
        None => (Outcome::Exact, format!("hit for key '{key}'")),
        Some(_) => (
            Outcome::Partial,
            format!("partial hit for key '{key}' (restored '{}')", found.key),
        ),
    };
    info!(
        "restore: {hit}: restored {}: {}; {} {} -> {} in {}, {}",
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
    let mut report = Report::new("restore", outcome).key(key);
    report.matched_key = Some(found.key.clone());
    report.restore_key = found.restore_key.clone();
    report.object = Some(found.entry.meta.location.to_string());
    report.files = stats.files;
    report.bytes = extracted.tar_bytes;
    report.stored_bytes = size;
    report.seconds = elapsed.as_secs_f64();
    Ok(report)
}

/// The exact key first; then each restore key as a prefix, newest first.
async fn lookup(config: &Config, store: &Store, keys: &Keys) -> anyhow::Result<Option<Found>> {
    let root = &config.remote_root;
    if let Some(entry) = entry::find(store, root, &keys.key).await? {
        return Ok(Some(Found {
            entry,
            key: keys.key.clone(),
            restore_key: None,
        }));
    }
    for prefix in &keys.restore_prefixes {
        if let Some((key, entry)) = entry::newest_with_prefix(store, root, prefix).await? {
            return Ok(Some(Found {
                entry,
                key,
                restore_key: Some(prefix.clone()),
            }));
        }
    }
    Ok(None)
}

/// Downloads and unpacks `found`, then swaps it into the workspace.
async fn unpack(
    config: &Config,
    store: &Store,
    found: &Found,
) -> anyhow::Result<(Extracted, Placed)> {
    let download = transfer::download(store.clone(), found.entry.meta.clone()).await?;
    let failure = download.failure_handle();
    let specs = config.mounts.clone();
    let workspace = config.workspace.clone();
    let unpacked = tokio::task::spawn_blocking(move || -> anyhow::Result<(Extracted, Placed)> {
        let plan = |manifest: Option<&crate::archive::manifest::Manifest>| {
            let held = manifest.map(|m| m.mounts.as_slice());
            let (mounts, notes) = mount::for_restore(&specs, held, &workspace);
            for note in notes {
                warn!("restore: {note}");
            }
            Ok(Staging::prepare(&mounts)?)
        };
        let (extracted, staging) = extract(download.into_reader(), &plan)?;
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
    unpacked.map_err(|e| match failure.get() {
        Some(cause) => anyhow!("{cause}; the workspace was left as it was"),
        None => e.context(format!(
            "entry '{}' could not be restored; the workspace was left as it was",
            found.entry.meta.location
        )),
    })
}

fn placed_names(placed: &Placed) -> String {
    let mut parts: Vec<String> = placed.created.clone();
    parts.extend(placed.replaced.iter().map(|n| format!("{n} (replaced)")));
    if parts.is_empty() {
        return "nothing".into();
    }
    parts.join(", ")
}
