//! Rebuild into a chunked entry: the same tar stream, cut into chunks of
//! which only the new ones are compressed and uploaded, in packs; the index
//! is published once every pack it names is stored.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use anyhow::anyhow;
use object_store::PutMode;
use object_store::path::Path;
use tracing::{info, warn};

use super::skipped;
use crate::archive::Compression;
use crate::archive::manifest::Manifest;
use crate::archive::write::{Survey, WriteOptions};
use crate::chunked::pack::Known;
use crate::chunked::write::{self, Context as ChunkContext};
use crate::chunked::{Index, gc, pack, sparse};
use crate::human;
use crate::job::{Chunking, Mode, Rebuild};
use crate::mount::{self, Mount};
use crate::storage::Store;
use crate::storage::claim::Claim;
use crate::summary::{Outcome, Summary};

/// Where and how a chunked entry is stored.
pub(super) struct Upload<'a> {
    pub task: &'a Rebuild,
    pub chunking: &'a Chunking,
    pub store: &'a Store,
    pub target: &'a Path,
}

/// What the repository's folder holds as a rebuild starts: the chunks it
/// may take as stored.
pub(super) struct Holdings {
    /// When the flushes' lists were read: the rebuild's start, as
    /// `gc::may_publish` counts it.
    since: chrono::DateTime<chrono::Utc>,
    /// Still being read from the packs' catalogs while the rebuild archives.
    known: Known,
}

/// Reads what the folder holds: the flushes' lists and the packs' listing
/// at once, then, on a task of its own, the catalogs (see `Known`).
/// Chunks found only in condemned or retired packs are stored again. (The
/// packs are listed meanwhile: what is avoided is decided by the lists,
/// and a pack swept after the listing is caught before publishing.) Not
/// `trusted` (replacing an entry a restore found damaged), no stored chunk
/// is taken as it is: all are written again.
pub(super) async fn holdings(store: &Store, trusted: bool) -> anyhow::Result<Holdings> {
    let since = chrono::Utc::now();
    let (pending, retired, listing) = tokio::join!(
        gc::pending(store),
        sparse::retired(store),
        pack::list(store)
    );
    let pending = pending?;
    let retired_packs = retired.len();
    let mut avoided: HashSet<String> = pending.into_iter().flat_map(|l| l.objects).collect();
    avoided.extend(retired);
    let known = match trusted {
        true => {
            let (store, listing) = (store.clone(), listing?);
            Known::reading(async move {
                let known = pack::known(&store, &listing, &avoided).await?;
                info!(
                    "rebuild: the repository's folder holds {}{}",
                    human::plural(known.len() as u64, "chunk"),
                    match retired_packs {
                        0 => String::new(),
                        n => format!(
                            ", leaving out {} flush retired as mostly unused (chunks only \
                             they hold are stored again)",
                            human::plural(n as u64, "pack")
                        ),
                    }
                );
                Ok(known)
            })
        }
        false => Known::ready(HashMap::new()),
    };
    Ok(Holdings { since, known })
}

pub(super) async fn upload(
    upload: Upload<'_>,
    (mounts, survey, options): (&[Mount], Survey, WriteOptions),
    holdings: Holdings,
    started: Instant,
    claim: Option<&Claim>,
) -> anyhow::Result<Summary> {
    let Upload {
        task,
        chunking,
        store,
        target,
    } = upload;
    let key = &task.key;
    let Holdings { since, known } = holdings;
    info!(
        "rebuild: archiving {} into chunks of about {} (zstd level {}) for '{}' in {} {}",
        mount::names(mounts),
        human::bytes(chunking.params.avg as u64),
        chunking.level,
        store.full(target),
        store.backend,
        store.location,
    );
    let manifest = Manifest::for_mounts(mounts, &survey.totals, &survey.tree);
    let progress = options.progress.clone();
    let expected = super::tar_estimate(&survey);
    let (producer, rx) = super::archiver(mounts, survey, options, (Compression::None, 0));
    let context = ChunkContext {
        store: store.clone(),
        known,
        params: chunking.params,
        level: chunking.level,
        pack_size: chunking.pack_size,
        expected,
        cache: task.cache.clone(),
        progress: progress.clone(),
    };
    let streamed = write::store_stream(&context, rx).await;
    // The archiver's own failure explains a stopped stream best.
    let packed = producer
        .await
        .map_err(|e| anyhow!("archiving stopped unexpectedly: {e}"))
        .and_then(|packed| packed);
    // Whether the key is still ours and which sweeps are under way, asked
    // while the last packs go up, and again after them if they took long:
    // the index must be published soon after the check (see `gc`).
    let last_packs = Instant::now();
    let ready = async {
        let (packed, (mut stored, mut uploads)) = (packed?, streamed?);
        let chunks = std::mem::take(&mut stored.chunks);
        let index = Index::new(chunking.params, manifest, chunks);
        if index.tar_bytes != packed.tar_bytes {
            return Err(anyhow!(
                "the chunks add up to {} bytes and the archive was {}; nothing was published",
                index.tar_bytes,
                packed.tar_bytes
            ));
        }
        let (checked, packs) = tokio::join!(check(store, claim), uploads.packs_stored());
        packs?;
        let checked = match last_packs.elapsed() > RECHECK_AFTER {
            true => check(store, claim).await?,
            false => checked?,
        };
        Ok((packed, stored, index, uploads, checked))
    };
    let ready = ready.await;
    progress.finish();
    let (packed, stored, index, uploads, checked) = ready?;
    let uploads_waited = last_packs.elapsed();
    let objects: HashSet<String> = index
        .chunks
        .iter()
        .map(|c| c.object().to_string())
        .collect();
    let used: HashSet<&str> = objects.iter().map(String::as_str).collect();
    if !checked.ours {
        uploads.finish_quietly().await;
        return Ok(skipped(
            key,
            "another rebuild took over the key while this one uploaded; its entry stands \
             and this rebuild's index was not published (its new chunks stay for the \
             other entries that name them, or for flush)"
                .into(),
        ));
    }
    if let Err(why) = gc::may_publish(&used, &checked.pending, since, checked.at, chunking.timing) {
        warn!("rebuild: the index of key '{key}' was not published: {why}");
        uploads.finish_quietly().await;
        return Ok(skipped(key, why));
    }
    let publishing = Instant::now();
    let (published, catalogs) = tokio::join!(
        store.write(target, index.to_json(), PutMode::Overwrite),
        uploads.finish()
    );
    published?;
    if let Err(e) = catalogs {
        warn!(
            "rebuild: the entry is stored, but a pack's catalog is not ({e:#}); later rebuilds \
             do not rely on that pack's chunks and store them again"
        );
    }
    let waited = stored.waited + uploads_waited + publishing.elapsed();
    let elapsed = started.elapsed();
    let entry_bytes = index.stored_bytes();
    info!(
        "rebuild: stored key '{key}' as '{}': {}; {} tar in {} ({} stored): {} new \
         uploaded ({}), the rest already stored; in {}, {}",
        store.full(target),
        packed.stats,
        human::bytes(packed.tar_bytes),
        human::plural(index.chunks.len() as u64, "chunk"),
        human::bytes(entry_bytes),
        human::count(stored.uploaded),
        human::bytes(stored.uploaded_bytes),
        human::seconds(elapsed),
        human::rate(packed.tar_bytes, elapsed)
    );
    info!(
        "rebuild: {}",
        super::super::pace(super::UPLOAD, waited, elapsed)
    );
    if packed.stats.skipped > 0 {
        warn!(
            "rebuild: left out {} sockets, FIFOs or device files",
            human::count(packed.stats.skipped)
        );
    }
    if let Some(cache) = &task.cache {
        cache.clone().trim_and_log().await;
    }
    let mut report = Summary::new(Mode::Rebuild, Outcome::Stored).key(key);
    report.object = Some(store.full(target));
    report.files = packed.stats.files;
    report.bytes = packed.tar_bytes;
    report.stored_bytes = entry_bytes;
    report.uploaded_bytes = Some(stored.uploaded_bytes);
    report.objects_written = Some(stored.objects + 1);
    report.seconds = elapsed.as_secs_f64();
    report.upload_wait_seconds = Some(waited.as_secs_f64());
    Ok(report)
}

/// How long the last packs may take after the check before publishing: the
/// check is made again if they took longer, so the index lands well inside
/// the 5 minutes' margin a flush's sweep leaves (`gc::may_publish`).
const RECHECK_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// What the check before publishing found.
struct Checked {
    /// Whether the key's claim is still this rebuild's (`true` without one).
    ours: bool,
    /// The flushes' condemned lists.
    pending: Vec<gc::Condemned>,
    /// When it was asked.
    at: chrono::DateTime<chrono::Utc>,
}

/// Whether the key is still ours, and which sweeps are under way, asked
/// at once: one round trip.
async fn check(store: &Store, claim: Option<&Claim>) -> anyhow::Result<Checked> {
    let at = chrono::Utc::now();
    let still_ours = async {
        match claim {
            Some(claim) => claim.still_ours().await,
            None => Ok(true),
        }
    };
    let (ours, pending) = tokio::join!(still_ours, gc::pending(store));
    Ok(Checked {
        ours: ours?,
        pending: pending?,
        at,
    })
}
