//! Rebuild: archive the mounts and upload them under the key, unless the
//! key is already stored (keys are immutable unless `override` is set) or
//! the build is a pull request.

use std::time::Instant;

use anyhow::Context;
use object_store::ObjectMeta;
use object_store::path::Path;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::archive::{self, write::WriteOptions};
use crate::cancel::Cancel;
use crate::human;
use crate::job::{Job, Mode, Rebuild};
use crate::mount::{self, Mount};
use crate::pipe::ChunkWriter;
use crate::progress::{self, Progress};
use crate::storage::claim::{self, Claim, Claimed};
use crate::storage::{Store, damage, entry, transfer};
use crate::summary::{Outcome, Summary};

pub async fn rebuild(
    job: &Job,
    task: &Rebuild,
    store: &Store,
    cancel: &Cancel,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let key = &task.key;
    if let Some(reason) = &job.writes_blocked {
        return Ok(skipped(key, reason.clone()));
    }
    let (mounts, notes) = mount::for_rebuild(&task.mounts, &job.workspace);
    for note in notes {
        warn!("rebuild: {note}");
    }
    if mounts.is_empty() {
        let reason = "none of the mounts exist, so there is nothing to cache";
        info!("rebuild: skipped: {reason}");
        return Ok(Summary::new(Mode::Rebuild, Outcome::Empty)
            .key(key)
            .reason(reason));
    }
    let (held, damaged) = if task.replace {
        (None, None)
    } else {
        match take_key(task, store).await? {
            Taken::Skip(reason) => return Ok(skipped(key, reason)),
            Taken::Ours { claim, damaged } => (Some(claim), damaged),
        }
    };
    remove_leftovers(store, key).await;

    let target = entry::path(key, task.compression);
    let result = upload(
        task,
        store,
        &mounts,
        &target,
        started,
        held.as_ref(),
        cancel,
    )
    .await;
    if let Some(claim) = held {
        claim.release().await;
    }
    let report = result?;
    if report.result == Outcome::Stored && (task.replace || damaged.is_some()) {
        remove_other_formats(task, store).await;
    }
    if report.result == Outcome::Stored && damaged.is_some() {
        damage::clear(store, key).await;
        info!("rebuild: the damaged entry of key '{key}' was replaced");
    }
    Ok(report)
}

fn skipped(key: &str, reason: String) -> Summary {
    info!("rebuild: skipped: {reason}");
    Summary::new(Mode::Rebuild, Outcome::Skipped)
        .key(key)
        .reason(reason)
}

/// What claiming the key came to.
enum Taken {
    /// Someone else stores it, or has: nothing to upload.
    Skip(String),
    /// This rebuild stores the key; `damaged` when it replaces an entry a
    /// restore found damaged.
    Ours {
        claim: Claim,
        damaged: Option<Box<damage::Report>>,
    },
}

/// Keys are immutable: a stored key is skipped, unless a restore reported
/// that very entry damaged. Otherwise the key is claimed (first writer wins)
/// and looked up once more, in case another rebuild finished in between.
async fn take_key(task: &Rebuild, store: &Store) -> anyhow::Result<Taken> {
    let key = &task.key;
    let mut damaged = None;
    if let Some(existing) = entry::find(store, key).await? {
        let Some(report) = damage::find(store, key, &existing).await? else {
            return Ok(Taken::Skip(format!(
                "key '{key}' is already stored ('{}', {}). Keys are immutable, so nothing was \
                 uploaded{}",
                store.full(&existing.location),
                human::bytes(existing.size),
                task.stored_hint
            )));
        };
        info!(
            "rebuild: key '{key}' is stored as '{}', but a restore found that entry damaged \
             ({}); storing it again",
            store.full(&existing.location),
            report.reason
        );
        damaged = Some(Box::new(report));
    }
    let claim = match claim::claim(store, &entry::claim_path(key), &task.holder).await? {
        Claimed::Won(claim) => claim,
        Claimed::Held(by) => {
            return Ok(Taken::Skip(format!(
                "key '{key}' is being stored right now by {by}"
            )));
        }
    };
    let now = match entry::find(store, key).await {
        Ok(now) => now,
        Err(e) => {
            claim.release().await;
            return Err(e);
        }
    };
    let still_damaged = |e: &ObjectMeta| damaged.as_ref().is_some_and(|r| r.describes(e));
    if now.as_ref().is_some_and(|e| !still_damaged(e)) {
        claim.release().await;
        return Ok(Taken::Skip(format!(
            "key '{key}' was stored by another rebuild a moment ago"
        )));
    }
    Ok(Taken::Ours { claim, damaged })
}

/// Unfinished uploads of this key left by killed rebuilds (on a volume or
/// SFTP; object stores hide them), idle for longer than a claim lives.
async fn remove_leftovers(store: &Store, key: &str) {
    let ours = key.to_string();
    let of_this_key = move |object: &str| entry::key_of(object).is_some_and(|(k, _)| k == ours);
    let leftovers = store.remove_temporaries(of_this_key, claim::LEASE).await;
    if !leftovers.is_empty() {
        info!(
            "rebuild: removed {} unfinished upload(s) of key '{key}' left by killed rebuilds: {}",
            leftovers.len(),
            leftovers.join(", ")
        );
    }
}

async fn upload(
    task: &Rebuild,
    store: &Store,
    mounts: &[Mount],
    target: &Path,
    started: Instant,
    claim: Option<&Claim>,
    cancel: &Cancel,
) -> anyhow::Result<Summary> {
    let key = &task.key;
    info!(
        "rebuild: archiving {} with {} level {} into '{}' in {} {}",
        mount::names(mounts),
        task.compression,
        task.level,
        store.full(target),
        store.backend,
        store.location
    );
    let (tx, rx) = mpsc::channel(8);
    let progress = Progress::start(progress::Kind::Rebuild);
    let options = WriteOptions {
        skip_symlinks: task.skip_symlinks,
        cancel: cancel.clone(),
        progress: progress.clone(),
    };
    let (compression, level) = (task.compression, task.level);
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
    let (packed, pending) = transfer::upload(store, target, rx, producer, &progress).await?;
    let ours = match claim {
        Some(claim) => claim.still_ours().await,
        None => Ok(true),
    };
    match ours {
        Ok(true) => {}
        Ok(false) => {
            pending.discard().await;
            return Ok(skipped(
                key,
                "another rebuild took over the key while this one uploaded; its entry stands \
                 and this upload was discarded"
                    .into(),
            ));
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
        "rebuild: stored key '{key}' as '{}': {}; {} -> {} {} ({}) in {}, {}",
        store.full(target),
        stats,
        human::bytes(packed.tar_bytes),
        human::bytes(sent),
        task.compression,
        human::ratio(sent, packed.tar_bytes),
        human::seconds(elapsed),
        human::rate(packed.tar_bytes, elapsed)
    );
    if stats.skipped > 0 {
        warn!(
            "rebuild: left out {} sockets, FIFOs or device files",
            human::count(stats.skipped)
        );
    }
    let mut report = Summary::new(Mode::Rebuild, Outcome::Stored).key(key);
    report.object = Some(store.full(target));
    report.files = stats.files;
    report.bytes = packed.tar_bytes;
    report.stored_bytes = sent;
    report.seconds = elapsed.as_secs_f64();
    Ok(report)
}

/// An entry stored earlier in another format would linger beside the one
/// just stored; remove it so the key has one entry.
async fn remove_other_formats(task: &Rebuild, store: &Store) {
    for compression in archive::Compression::ALL {
        if compression == task.compression {
            continue;
        }
        if let Err(e) = store.delete(&entry::path(&task.key, compression)).await {
            warn!("{e:#}");
        }
    }
}
