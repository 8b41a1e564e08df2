//! Rebuild: archive the mounts and upload them under the key, unless the
//! key is already stored (keys are immutable unless `override` is set) or
//! the build is a pull request.

use std::time::Instant;

use anyhow::Context;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectMeta;
use object_store::path::Path;
use tokio::sync::mpsc;
use tokio_util::sync::DropGuard;
use tracing::{info, warn};

use crate::archive;
use crate::archive::manifest::Manifest;
use crate::archive::write::{Survey, WriteOptions};
use crate::cancel::Cancel;
use crate::chunked;
use crate::golang;
use crate::human;
use crate::job::{Chunking, Job, Mode, Rebuild, Stored};
use crate::mount::{self, Mount};
use crate::pipe::ChunkWriter;
use crate::progress::{self, Progress};
use crate::storage::claim::{self, Claim, Claimed};
use crate::storage::entry::Format;
use crate::storage::{Store, damage, entry, transfer};
use crate::summary::{Outcome, Summary};

mod chunks;

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
    if task.go_build_cache {
        trim_go_build_caches(&mounts);
    }
    if mounts.is_empty() {
        let reason = "none of the mounts exist, so there is nothing to cache";
        info!("rebuild: skipped: {reason}");
        return Ok(Summary::new(Mode::Rebuild, Outcome::Empty)
            .key(key)
            .reason(reason));
    }
    let options = WriteOptions {
        skip_symlinks: task.skip_symlinks,
        cancel: cancel.clone(),
        progress: Progress::start(progress::Kind::Rebuild),
    };
    let (claim, replacing, work) = match task.stored {
        Stored::Replace => {
            let work = groundwork(task, store, (&mounts, &options), None, Replacing::Any).await?;
            (None, Replacing::Any, work)
        }
        _ => match take_key(task, store, &mounts, &options).await? {
            Taken::Skip(reason) => return Ok(skipped(key, reason)),
            Taken::Ours {
                claim,
                replacing,
                work,
            } => (claim, replacing, *work),
        },
    };
    remove_leftovers(store, key).await;

    let work_on = (mounts.as_slice(), work.survey, options);
    let result = match work.entry {
        Entry::Chunked(chunking, holdings) => {
            let target = entry::path_in(key, Format::Chunked);
            let upload = chunks::Upload {
                task,
                chunking,
                store,
                target: &target,
            };
            chunks::upload(upload, work_on, holdings, started, claim.as_ref()).await
        }
        Entry::Archive => {
            let target = entry::path(key, task.compression);
            upload(task, store, work_on, &target, started, claim.as_ref()).await
        }
    };
    if let Some(claim) = claim {
        claim.release().await;
    }
    let report = result?;
    if report.result == Outcome::Stored && replacing != Replacing::Nothing {
        remove_other_formats(task, store).await;
    }
    if report.result == Outcome::Stored && replacing == Replacing::Damaged {
        damage::clear(store, key).await;
        info!("rebuild: the damaged entry of key '{key}' was replaced");
    }
    Ok(report)
}

/// Removes what this build did not use from the Go build caches larder
/// restored (see `golang`), before anything measures the mounts.
fn trim_go_build_caches(mounts: &[Mount]) {
    for mount in mounts.iter().filter(|m| golang::is_build_cache(&m.path)) {
        match golang::trim_unused(&mount.path) {
            Ok(Some(trimmed)) => info!(
                "rebuild: {} is a Go build cache: removed the {} entries ({}) this build did \
                 not use, kept the {} it used",
                mount.name,
                human::count(trimmed.removed),
                human::bytes(trimmed.removed_bytes),
                human::count(trimmed.used)
            ),
            Ok(None) => info!(
                "rebuild: {} is a Go build cache, stored whole: larder did not restore it in \
                 this build, or the build used none of its entries",
                mount.name
            ),
            Err(e) => warn!(
                "rebuild: cannot trim the Go build cache {} ({e}); it is stored whole",
                mount.name
            ),
        }
    }
}

/// The mounts being measured (walked, on a blocking thread), begun as soon
/// as the rebuild knows it will need them; dropped unfinished, the walk
/// stops.
struct Walk {
    survey: BoxFuture<'static, anyhow::Result<Survey>>,
    _stop: Option<DropGuard>,
}

impl Walk {
    fn start(mounts: &[Mount], options: &WriteOptions) -> Walk {
        let stop = options.cancel.child();
        let options = WriteOptions {
            cancel: stop.clone(),
            ..options.clone()
        };
        let mounts = mounts.to_vec();
        let walking =
            tokio::task::spawn_blocking(move || archive::write::survey(&mounts, &options));
        let survey = async move {
            walking
                .await
                .map_err(|e| anyhow::anyhow!("measuring the mounts stopped unexpectedly: {e}"))?
                .context("cannot read the mounts")
        };
        Walk {
            survey: survey.boxed(),
            _stop: Some(stop.drop_guard()),
        }
    }

    /// A walk already finished.
    fn done(survey: Survey) -> Walk {
        Walk {
            survey: futures::future::ready(Ok(survey)).boxed(),
            _stop: None,
        }
    }

    async fn finish(self) -> anyhow::Result<Survey> {
        self.survey.await
    }
}

fn skipped(key: &str, reason: String) -> Summary {
    info!("rebuild: skipped: {reason}");
    Summary::new(Mode::Rebuild, Outcome::Skipped)
        .key(key)
        .reason(reason)
}

/// What claiming the key came to.
enum Taken<'a> {
    /// Someone else stores it, or has, or nothing changed: nothing to upload.
    Skip(String),
    /// This rebuild stores the key (holding its claim), and has its
    /// groundwork done.
    Ours {
        claim: Option<Claim>,
        replacing: Replacing,
        work: Box<Groundwork<'a>>,
    },
}

/// What an upload needs before it starts: the mounts measured and, for a
/// chunked entry, what the repository's folder holds.
struct Groundwork<'a> {
    survey: Survey,
    entry: Entry<'a>,
}

/// The kind of entry the rebuild writes, with what writing it needs.
enum Entry<'a> {
    Archive,
    Chunked(&'a Chunking, chunks::Holdings),
}

/// Finishes the mounts' `walk` (or walks them) and, for a chunked entry,
/// reads what the folder holds, at once. Stops when `options`' cancel
/// fires.
async fn groundwork<'a>(
    task: &'a Rebuild,
    store: &Store,
    (mounts, options): (&[Mount], &WriteOptions),
    walk: Option<Walk>,
    replacing: Replacing,
) -> anyhow::Result<Groundwork<'a>> {
    let surveyed = walk
        .unwrap_or_else(|| Walk::start(mounts, options))
        .finish();
    let held = async {
        let Some(chunking) = &task.chunking else {
            return Ok(Entry::Archive);
        };
        let trusted = replacing != Replacing::Damaged;
        tokio::select! {
            held = chunks::holdings(store, trusted) => held.map(|h| Entry::Chunked(chunking, h)),
            () = options.cancel.cancelled() => Err(anyhow::anyhow!("the rebuild was stopped")),
        }
    };
    let (survey, entry) = tokio::join!(surveyed, held);
    Ok(Groundwork {
        survey: survey?,
        entry: entry?,
    })
}

/// What the upload replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replacing {
    /// The key was not stored.
    Nothing,
    /// Whatever is stored (`override: true`).
    Any,
    /// An entry whose mounts have changed since.
    Changed,
    /// An entry a restore reported damaged.
    Damaged,
}

/// Decides whether the key is stored again, and claims it if so (first
/// writer wins). A stored key is kept with `override: false`; without
/// `override` it is replaced only when the mounts changed since (the
/// stored manifest's tree fingerprint differs from this rebuild's); a
/// stored entry a restore reported damaged is always replaced. After the
/// claim the key is looked up once more, in case another rebuild stored or
/// replaced it in between.
async fn take_key<'a>(
    task: &'a Rebuild,
    store: &Store,
    mounts: &[Mount],
    options: &WriteOptions,
) -> anyhow::Result<Taken<'a>> {
    let key = &task.key;
    // Work begun in case the key is ours to store, stopped if it is not.
    let walking = WriteOptions {
        cancel: options.cancel.child(),
        ..options.clone()
    };
    // Every outcome but one needs the mounts walked: a key not stored, a
    // damaged entry, and without `override` a stored key too (its
    // fingerprint is compared with the mounts'). Only `override: false`
    // with the key stored does without, so only there does the walk wait
    // for the lookup. Begun with the lookup, the walk no longer holds up
    // the archiving: over a 20 ms link, archiving began 103-122 ms after
    // the rebuild did instead of 128-144 ms (the walk, 80-100 ms, had
    // waited for the lookup's round trips and ended after the claim).
    let mut walk = (task.stored != Stored::Keep).then(|| Walk::start(mounts, &walking));
    let existing = entry::find(store, key).await?;
    let mut replacing = Replacing::Nothing;
    if let Some(existing) = &existing {
        let stored = format!(
            "'{}', {}",
            store.full(&existing.location),
            human::bytes(existing.size)
        );
        if let Some(report) = damage::find(store, key, existing).await? {
            info!(
                "rebuild: key '{key}' is stored as {stored}, but a restore found that entry \
                 damaged ({}); storing it again",
                report.reason
            );
            replacing = Replacing::Damaged;
        } else if task.stored == Stored::Keep {
            return Ok(Taken::Skip(format!(
                "key '{key}' is already stored ({stored}) and override is false, so stored \
                 keys are kept as they are; nothing was uploaded"
            )));
        } else {
            let (now, manifest) = tokio::join!(
                walk.take()
                    .unwrap_or_else(|| Walk::start(mounts, &walking))
                    .finish(),
                stored_manifest(store, existing)
            );
            let now = now?;
            let unchanged = manifest?.and_then(|m| m.tree).map(|tree| tree == now.tree);
            walk = Some(Walk::done(now));
            match unchanged {
                Some(true) => {
                    return Ok(Taken::Skip(format!(
                        "key '{key}' is already stored ({stored}) and the mounts have not \
                         changed since; nothing was uploaded"
                    )));
                }
                Some(false) => info!(
                    "rebuild: key '{key}' is stored ({stored}), but the mounts changed since; \
                     replacing it (override is not set, so a stored key is refreshed when \
                     its mounts change; override: false keeps it)"
                ),
                None => info!(
                    "rebuild: key '{key}' is stored ({stored}) without a fingerprint of its \
                     mounts (an older larder wrote it); replacing it"
                ),
            }
            replacing = Replacing::Changed;
        }
    }
    // The groundwork (the mounts walked, what the folder holds) is done
    // while the claim makes its round trips, which over a link saves as
    // many. It stops if the key turns out to be someone else's.
    let (claimed, prepared) = tokio::join!(
        async {
            let claimed = claim_again(store, key, &task.holder, &existing).await;
            if !matches!(claimed, Ok(Ok(_))) {
                walking.cancel.cancel();
            }
            claimed
        },
        groundwork(task, store, (mounts, &walking), walk, replacing)
    );
    let claim = match claimed? {
        Ok(claim) => claim,
        Err(reason) => return Ok(Taken::Skip(reason)),
    };
    match prepared {
        Ok(work) => Ok(Taken::Ours {
            claim: Some(claim),
            replacing,
            work: Box::new(work),
        }),
        Err(e) => {
            claim.release().await;
            Err(e)
        }
    }
}

/// Claims the key, then looks it up once more, in case another rebuild
/// stored or replaced it after `existing` was found. `Err` is why this
/// rebuild skips (the claim released).
async fn claim_again(
    store: &Store,
    key: &str,
    holder: &str,
    existing: &Option<ObjectMeta>,
) -> anyhow::Result<Result<Claim, String>> {
    let claim = match claim::claim(store, &entry::claim_path(key), holder).await? {
        Claimed::Won(claim) => claim,
        Claimed::Held(by) => {
            return Ok(Err(format!(
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
    let unchanged = match (&now, existing) {
        (None, _) => true,
        (Some(now), Some(before)) => same_version(now, before),
        (Some(_), None) => false,
    };
    if !unchanged {
        claim.release().await;
        return Ok(Err(format!(
            "key '{key}' was stored by another rebuild a moment ago"
        )));
    }
    Ok(Ok(claim))
}

/// The manifest of a stored entry: in a chunked entry's index, or at the
/// head of an archive.
async fn stored_manifest(store: &Store, meta: &ObjectMeta) -> anyhow::Result<Option<Manifest>> {
    if entry::format_of(meta) == Some(Format::Chunked) {
        let index = chunked::read::read_index(store, meta).await?;
        return Ok(index.ok().map(|index| index.manifest));
    }
    entry::manifest(store, meta).await
}

/// Whether two listings describe the same stored object.
fn same_version(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    a.location == b.location
        && a.size == b.size
        && a.e_tag == b.e_tag
        && a.last_modified == b.last_modified
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

/// About the size of the tar stream: the contents, and for each entry its
/// header, padding and room for a PAX header. What compression sends is
/// smaller, or for data that does not compress, larger by a hair.
fn tar_estimate(survey: &Survey) -> u64 {
    let total = survey.total();
    total
        .bytes
        .saturating_add(total.entries.saturating_mul(2048))
}

/// What a rebuild's pace line names: archiving, waiting for its upload.
const UPLOAD: (&str, &str, &str) = ("archiving", "upload", "network or storage");

async fn upload(
    task: &Rebuild,
    store: &Store,
    (mounts, survey, options): (&[Mount], Survey, WriteOptions),
    target: &Path,
    started: Instant,
    claim: Option<&Claim>,
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
    let progress = options.progress.clone();
    let expected = tar_estimate(&survey);
    let (producer, rx) = archiver(mounts, survey, options, (task.compression, task.level));
    let (packed, pending) =
        transfer::upload(store, target, expected, rx, producer, &progress).await?;
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
    let waited = pending.publish().await?;
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
    info!("rebuild: {}", super::pace(UPLOAD, waited, elapsed));
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
    report.upload_wait_seconds = Some(waited.as_secs_f64());
    Ok(report)
}

/// Archives the mounts on a blocking thread, handing the (compressed)
/// stream on in pieces of 1 MiB.
fn archiver(
    mounts: &[Mount],
    survey: Survey,
    options: WriteOptions,
    (compression, level): (archive::Compression, i32),
) -> (
    tokio::task::JoinHandle<anyhow::Result<archive::Packed>>,
    mpsc::Receiver<bytes::Bytes>,
) {
    let (tx, rx) = mpsc::channel(8);
    let mounts = mounts.to_vec();
    let producer = tokio::task::spawn_blocking(move || {
        let (packed, writer) = archive::pack(
            &mounts,
            &survey,
            &options,
            compression,
            level,
            ChunkWriter::new(tx),
        )
        .context("cannot archive the mounts")?;
        writer
            .finish()
            .context("cannot hand the archive on for storing")?;
        Ok(packed)
    });
    (producer, rx)
}

/// An entry stored earlier in another format would linger beside the one
/// just stored; remove it so the key has one entry.
async fn remove_other_formats(task: &Rebuild, store: &Store) {
    let stored = match task.chunking {
        Some(_) => Format::Chunked,
        None => Format::Archive(task.compression),
    };
    for format in Format::ALL {
        if format == stored {
            continue;
        }
        if let Err(e) = store.delete(&entry::path_in(&task.key, format)).await {
            warn!("{e:#}");
        }
    }
}
