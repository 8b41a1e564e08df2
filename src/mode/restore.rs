//! Restore: find the entry for the key (or, failing that, the newest entry
//! under each restore key in turn), stream it down, unpack it beside the
//! mounts and swap it in only once the whole archive checked out.

use std::time::Instant;

use anyhow::{anyhow, bail};
use object_store::ObjectMeta;
use object_store::path::Path as ObjectPath;
use tracing::{info, warn};

use crate::archive::extract::{self, Extracted, Failed, extract};
use crate::archive::manifest::{Manifest, Totals};
use crate::cancel::Cancel;
use crate::chunked::read::Counters;
use crate::chunked::{self, Index};
use crate::golang;
use crate::human;
use crate::job::Mode;
use crate::job::{Job, Restore};
use crate::mount::{self, Mount, MountSpec};
use crate::pipe::Waited;
use crate::staging::{Placed, Staging};
use crate::storage::entry::Format;
use crate::storage::transfer::Head;
use crate::storage::{Store, damage, entry, transfer};
use crate::summary::{Outcome, Summary};

/// Which entry a lookup found.
struct Found {
    entry: ObjectMeta,
    key: String,
    /// The restore key (prefix) that found it; `None` for the exact key.
    restore_key: Option<String>,
}

pub async fn restore(
    job: &Job,
    task: &Restore,
    store: &Store,
    cancel: &Cancel,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let key = &task.key;
    let Some((found, head)) = lookup(task, store).await? else {
        if let Some(summary) = migrate(job, task, store, cancel, started).await? {
            return Ok(summary);
        }
        let tried = match task.prefixes.as_slice() {
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
            store.root, store.backend, store.location
        );
        return Ok(Summary::new(Mode::Restore, Outcome::Miss).key(key));
    };
    let (index, head) = match entry::format_of(&found.entry) {
        Some(Format::Chunked) => (
            Some(index_of(job, store, &found, head).await?),
            Head::none(),
        ),
        _ => (None, head),
    };
    let size = index
        .as_ref()
        .map_or(found.entry.size, |index| index.stored_bytes());
    let what = match &index {
        Some(index) => format!(
            "{} in {}",
            human::bytes(size),
            human::plural(index.chunks.len() as u64, "chunk")
        ),
        None => human::bytes(size),
    };
    match &found.restore_key {
        None => info!(
            "restore: found key '{key}' as '{}' ({what}); downloading and unpacking",
            store.full(&found.entry.location),
        ),
        Some(prefix) => info!(
            "restore: no entry for key '{key}'; restore key '{prefix}' found '{}' as '{}' \
             ({what}); downloading and unpacking",
            found.key,
            store.full(&found.entry.location),
        ),
    }
    let lookup = started.elapsed();
    let (extracted, placed, counters, waited) = unpack(
        job,
        task,
        store,
        &found,
        match &index {
            Some(index) => Stored::Chunked(index),
            None => Stored::Archive(head),
        },
        &task.mounts,
        cancel,
    )
    .await?;
    let format = match &index {
        Some(_) => "chunked".to_string(),
        None => extracted.compression.to_string(),
    };
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
        stats,
        human::bytes(size),
        format,
        human::bytes(extracted.tar_bytes),
        human::seconds(elapsed),
        human::rate(extracted.tar_bytes, elapsed)
    );
    // The lookup and the index read waited for storage too.
    let waited = waited.map(|w| w.total() + lookup);
    if let Some(waited) = waited {
        let causes = match index {
            Some(_) => "network, storage, or checking the chunks",
            None => "network or storage",
        };
        let line = super::pace(("unpacking", "download", causes), waited, elapsed);
        info!("restore: {line}");
    }
    if stats.skipped > 0 {
        warn!(
            "restore: skipped {} device or FIFO entries",
            human::count(stats.skipped)
        );
    }
    let mut report = Summary::new(Mode::Restore, outcome).key(key);
    report.matched_key = Some(found.key.clone());
    report.restore_key = found.restore_key.clone();
    report.object = Some(store.full(&found.entry.location));
    report.files = stats.files;
    report.bytes = extracted.tar_bytes;
    report.stored_bytes = size;
    report.seconds = elapsed.as_secs_f64();
    report.download_wait_seconds = waited.map(|w| w.as_secs_f64());
    if let Some(index) = &index {
        let cached = counters.cached.load(std::sync::atomic::Ordering::Relaxed);
        let requests = counters.requests.load(std::sync::atomic::Ordering::Relaxed);
        report.chunks = Some(index.chunks.len() as u64);
        report.chunks_cached = task.cache.as_ref().map(|_| cached);
        report.requests = Some(requests);
        info!(
            "restore: read {} with {} from storage",
            human::plural(index.chunks.len() as u64, "chunk"),
            human::plural(requests, "request")
        );
        if let Some(cache) = &task.cache {
            info!(
                "restore: {} of {} came from the chunk cache",
                human::count(cached),
                human::plural(index.chunks.len() as u64, "chunk")
            );
            cache.clone().trim_and_log().await;
        }
    }
    Ok(report)
}

/// The index of the chunked entry `found`; one that cannot be read as an
/// index makes the entry damaged, reported for the next rebuild.
async fn index_of(job: &Job, store: &Store, found: &Found, head: Head) -> anyhow::Result<Index> {
    match chunked::read::read_index_after(store, &found.entry, head).await? {
        Ok(index) => Ok(index),
        Err(why) => {
            let object = store.full(&found.entry.location);
            let error = anyhow!(
                "entry '{object}' could not be restored: {why}; the workspace was left as it was"
            );
            report_damage(job, store, found, &error).await;
            Err(error)
        }
    }
}

/// How the entry a restore unpacks is stored.
enum Stored<'a> {
    /// One archive, with its first bytes if the lookup asked for them.
    Archive(Head),
    /// A chunked entry, by its index.
    Chunked(&'a Index),
}

/// The exact key first; then each restore key as a prefix, newest first.
/// With the entry, its first bytes if the lookup asked for them.
async fn lookup(task: &Restore, store: &Store) -> anyhow::Result<Option<(Found, Head)>> {
    if let Some(opened) = entry::open(store, &task.key).await? {
        let found = Found {
            entry: opened.meta,
            key: task.key.clone(),
            restore_key: None,
        };
        return Ok(Some((found, opened.head)));
    }
    for prefix in &task.prefixes {
        if let Some((key, entry)) = entry::newest_with_prefix(store, prefix).await? {
            let found = Found {
                entry,
                key,
                restore_key: Some(prefix.clone()),
            };
            return Ok(Some((found, Head::none())));
        }
    }
    Ok(None)
}

/// Downloads and unpacks `found`, then swaps it into the workspace. An
/// entry found damaged is reported in storage, so the next rebuild replaces it.
async fn unpack(
    job: &Job,
    task: &Restore,
    store: &Store,
    found: &Found,
    stored: Stored<'_>,
    specs: &[MountSpec],
    cancel: &Cancel,
) -> anyhow::Result<(Extracted, Placed, Counters, Option<Waited>)> {
    let (download, counters) = match stored {
        Stored::Chunked(index) => {
            chunked::read::download(store.clone(), index, task.cache.clone(), cancel.clone())
        }
        Stored::Archive(head) => (
            transfer::download(store.clone(), found.entry.clone(), head, cancel.clone()).await?,
            Counters::default(),
        ),
    };
    let failure = download.failure_handle();
    let damaged = download.damage_handle();
    let waited = download.waited_handle();
    let specs = specs.to_vec();
    let workspace = job.workspace.clone();
    let max_bytes = task.max_bytes;
    let go_build_cache = task.go_build_cache;
    // drone-cache's entries name files by absolute path in the workspace.
    let from_drone_cache = found.restore_key.as_deref() == Some(DRONE_CACHE);
    let options = extract::Options {
        max_bytes,
        owners: task.owners,
        cancel: cancel.clone(),
        strip_prefix: from_drone_cache.then(|| workspace.clone()),
    };
    let unpacked = tokio::task::spawn_blocking(move || -> Result<(Extracted, Placed), Failed> {
        let plan = |manifest: Option<&Manifest>| {
            let held = manifest.map(|m| m.mounts.as_slice());
            let (mounts, notes) = mount::for_restore(&specs, held, &workspace);
            for note in notes {
                warn!("restore: {note}");
            }
            if let Some(manifest) = manifest {
                check_room(&mounts, manifest, max_bytes)?;
            }
            Ok(Staging::prepare(&mounts, &workspace)?)
        };
        let (extracted, staging) = extract(download.into_reader(), &plan, &options)?;
        let local = |error: anyhow::Error| Failed {
            error,
            damaged: false,
        };
        options.cancel.check().map_err(|e| local(e.into()))?;
        let missing: Vec<String> = staging
            .mounts
            .iter()
            .filter(|s| !s.has_tree())
            .map(|s| s.mount.name.clone())
            .collect();
        let restored: Vec<Mount> = staging
            .mounts
            .iter()
            .filter(|s| s.has_tree())
            .map(|s| s.mount.clone())
            .collect();
        let placed = staging.commit().map_err(|e| local(e.into()))?;
        go_caches(&restored, go_build_cache);
        for name in missing {
            warn!("restore: the entry holds nothing for mount {name}; it was left as it was");
        }
        Ok((extracted, placed))
    })
    .await
    .map_err(|e| anyhow!("unpacking stopped unexpectedly: {e}"))?;
    let failed = match unpacked {
        Ok((extracted, placed)) => return Ok((extracted, placed, counters, waited)),
        Err(failed) => failed,
    };
    if let Some(cause) = failure.get() {
        let error = anyhow!("{cause}; the workspace was left as it was");
        if damaged.load(std::sync::atomic::Ordering::SeqCst) && !cancel.is_cancelled() {
            report_damage(job, store, found, &error).await;
        }
        return Err(error);
    }
    let object = store.full(&found.entry.location);
    let error = failed.error.context(format!(
        "entry '{object}' could not be restored; the workspace was left as it was"
    ));
    if failed.damaged && !cancel.is_cancelled() {
        report_damage(job, store, found, &error).await;
    }
    Err(error)
}

/// Prepares restored Go build caches for trimming (see `golang`), with
/// `trim_go_build_cache`. A failure costs only the trim.
fn go_caches(mounts: &[Mount], build_cache: bool) {
    for mount in mounts {
        if build_cache && golang::is_build_cache(&mount.path) {
            match golang::stamp_restored(&mount.path, std::time::SystemTime::now()) {
                Ok(stamped) => info!(
                    "restore: {} is a Go build cache: its {} entries count as unused until \
                     the build uses them; the rebuild keeps only those (trim_go_build_cache)",
                    mount.name,
                    human::count(stamped.entries)
                ),
                Err(e) => warn!(
                    "restore: cannot prepare the Go build cache {} for trimming ({e}); the \
                     rebuild keeps it whole",
                    mount.name
                ),
            }
        }
    }
}

/// Tells the next rebuild of the entry's key to replace it, unless this
/// build may not write to the cache.
async fn report_damage(job: &Job, store: &Store, found: &Found, error: &anyhow::Error) {
    let key = &found.key;
    if job.writes_blocked.is_some() {
        warn!(
            "restore: entry for key '{key}' is damaged; a rebuild on a branch will replace it \
             once a build there finds it damaged (pull requests do not write to the cache)"
        );
        return;
    }
    let report = damage::Report::new(&found.entry, &format!("{error:#}"));
    match damage::write(store, key, &report).await {
        Ok(()) => warn!(
            "restore: entry for key '{key}' is damaged; the next rebuild of '{key}' will \
             replace it"
        ),
        Err(e) => warn!(
            "restore: entry for key '{key}' is damaged, and this could not be recorded for \
             the next rebuild ({e:#}); delete '{}' to have it rebuilt",
            store.full(&found.entry.location)
        ),
    }
}

/// Refuses, before anything is written, an entry that declares more than
/// `max_restore_size` or more than the disk under a mount has room for.
fn check_room(mounts: &[Mount], manifest: &Manifest, max_bytes: u64) -> anyhow::Result<()> {
    let mut needs: Vec<(u64, Totals, String, rustix::fs::StatVfs)> = Vec::new();
    let mut total = Totals::default();
    for mount in mounts {
        let Some(totals) = manifest.totals_of(&mount.name) else {
            continue;
        };
        total.add(totals);
        let Some(existing) = mount.path.ancestors().find(|a| a.is_dir()) else {
            continue;
        };
        let (Ok(meta), Ok(fs)) = (existing.metadata(), rustix::fs::statvfs(existing)) else {
            continue;
        };
        use std::os::unix::fs::MetadataExt;
        match needs.iter_mut().find(|(dev, ..)| *dev == meta.dev()) {
            Some((_, sum, names, _)) => {
                sum.add(totals);
                names.push_str(&format!(", {}", mount.name));
            }
            None => needs.push((meta.dev(), totals, mount.name.clone(), fs)),
        }
    }
    if total.bytes > max_bytes {
        bail!(
            "the entry unpacks to {} for the mounts being restored, more than max_restore_size \
             ({}); nothing was restored. Raise max_restore_size if the cache really is this large",
            human::bytes(total.bytes),
            human::bytes(max_bytes)
        );
    }
    for (_, totals, names, fs) in needs {
        // Each file and directory takes at least part of a block.
        let needed = totals.bytes + totals.entries * fs.f_frsize;
        let free = fs.f_bavail * fs.f_frsize;
        if needed > free {
            bail!(
                "not enough disk space to restore {names}: it needs about {} ({} in {} files and \
                 directories) and the disk has {} free; nothing was restored. Free some space on \
                 the runner, or delete the cache entry",
                human::bytes(needed),
                human::bytes(totals.bytes),
                human::count(totals.entries),
                human::bytes(free)
            );
        }
        if fs.f_files > 0 && totals.entries > fs.f_favail {
            bail!(
                "not enough free inodes to restore {names}: it holds {} files and directories \
                 and the disk has {} inodes free; nothing was restored",
                human::count(totals.entries),
                human::count(fs.f_favail)
            );
        }
    }
    Ok(())
}

/// What a summary says restored an entry stored by drone-cache.
const DRONE_CACHE: &str = "drone-cache";

/// The first run after switching from drone-cache: larder has no entry yet,
/// so each listed mount is restored from where drone-cache kept it, if it
/// is there (`<namespace>/<key>/<mount>`, or `<key>/<mount>` as its fork
/// stored it). The next rebuild stores a larder entry.
async fn migrate(
    job: &Job,
    task: &Restore,
    store: &Store,
    cancel: &Cancel,
    started: Instant,
) -> anyhow::Result<Option<Summary>> {
    let Some(legacy) = &task.drone_cache else {
        return Ok(None);
    };
    let bucket = store.rooted("");
    let mut restored = Vec::new();
    let (mut files, mut tar_bytes, mut stored_bytes) = (0, 0, 0);
    for spec in &task.mounts {
        let MountSpec::Path(mount) = spec else {
            continue;
        };
        let object = mount.name.trim_start_matches('/');
        let places = [
            format!("{}/{}/{object}", legacy.namespace, legacy.key),
            format!("{}/{object}", legacy.key),
        ];
        let mut found = None;
        for place in places.iter().filter(|p| !p.starts_with('/')) {
            if let Some(meta) = bucket.head(&ObjectPath::from(place.as_str())).await? {
                found = Some(meta);
                break;
            }
        }
        let Some(entry) = found else { continue };
        info!(
            "restore: no larder entry for key '{}'; restoring drone-cache's entry '{}' ({}) \
             into {} (the first run after switching; the next rebuild stores a larder entry)",
            task.key,
            entry.location,
            human::bytes(entry.size),
            mount.name
        );
        let found = Found {
            entry,
            key: legacy.key.clone(),
            restore_key: Some(DRONE_CACHE.into()),
        };
        let (extracted, _, _, _) = unpack(
            job,
            task,
            &bucket,
            &found,
            Stored::Archive(Head::none()),
            std::slice::from_ref(spec),
            cancel,
        )
        .await?;
        files += extracted.stats.files;
        tar_bytes += extracted.tar_bytes;
        stored_bytes += found.entry.size;
        restored.push(found.entry.location.to_string());
    }
    if restored.is_empty() {
        return Ok(None);
    }
    let elapsed = started.elapsed();
    info!(
        "restore: partial hit for key '{}' (restored drone-cache's {}): {} files, {} in {}",
        task.key,
        restored.join(", "),
        files,
        human::bytes(tar_bytes),
        human::seconds(elapsed)
    );
    let mut summary = Summary::new(Mode::Restore, Outcome::Partial).key(&task.key);
    summary.matched_key = Some(legacy.key.clone());
    summary.restore_key = Some(DRONE_CACHE.into());
    summary.object = Some(restored.join(", "));
    summary.files = files;
    summary.bytes = tar_bytes;
    summary.stored_bytes = stored_bytes;
    summary.seconds = elapsed.as_secs_f64();
    Ok(Some(summary))
}

fn placed_names(placed: &Placed) -> String {
    let mut parts: Vec<String> = placed.created.clone();
    parts.extend(placed.replaced.iter().map(|n| format!("{n} (replaced)")));
    if parts.is_empty() {
        return "nothing".into();
    }
    parts.join(", ")
}
