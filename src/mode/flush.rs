//! Flush: delete this repository's entries that are older than `flush_age`,
//! then the oldest until the rest fit in `max_size`. Only the remote root's
//! own objects are looked at, never deeper folders or other repositories.
//! Stale claims (from killed rebuilds) are removed too.
//!
//! Chunked entries count the bytes of their chunks, each chunk once however
//! many entries name it; deleting an entry frees only the chunks no kept
//! entry names. Chunks no entry names are then removed by the protocol in
//! `chunked::gc` (condemned now, deleted by a flush after the grace).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use tracing::{info, warn};

use crate::chunked::{self, Index, gc, sparse};
use crate::human;
use crate::job::{Flush, Job, Mode};
use crate::storage::entry::Format;
use crate::storage::{Store, entry};
use crate::summary::{Outcome, Summary};

/// A claim untouched for this long belongs to a rebuild that died.
const STALE_CLAIM: Duration = Duration::from_secs(3600);

struct Candidate {
    key: String,
    meta: ObjectMeta,
    age: Duration,
    /// A chunked entry's index (`None` for an archive, or an index that
    /// cannot be read, which then counts as its object alone).
    index: Option<Index>,
}

impl Candidate {
    /// What the entry occupies, counting shared chunks in full.
    fn size(&self) -> u64 {
        self.index
            .as_ref()
            .map_or(self.meta.size, |i| i.stored_bytes() + self.meta.size)
    }
}

/// Bytes the kept entries occupy, each chunk counted once.
#[derive(Default)]
struct Usage {
    /// Chunk -> (entries naming it, stored bytes).
    chunks: HashMap<String, (u32, u64)>,
    total: u64,
}

impl Usage {
    fn add(&mut self, entry: &Candidate) {
        self.total += entry.meta.size;
        for chunk in entry.index.iter().flat_map(|i| &i.chunks) {
            let (count, _) = self
                .chunks
                .entry(chunk.id.clone())
                .or_insert((0, chunk.stored));
            if *count == 0 {
                self.total += chunk.stored;
            }
            *count += 1;
        }
    }

    fn remove(&mut self, entry: &Candidate) {
        self.total -= entry.meta.size;
        for chunk in entry.index.iter().flat_map(|i| &i.chunks) {
            if let Some((count, stored)) = self.chunks.get_mut(&chunk.id) {
                *count -= 1;
                if *count == 0 {
                    self.total -= *stored;
                }
            }
        }
    }
}

pub async fn flush(job: &Job, options: &Flush, store: &Store) -> anyhow::Result<Summary> {
    let started = Instant::now();
    if let Some(reason) = &job.writes_blocked {
        info!("flush: skipped: {reason}");
        return Ok(Summary::new(Mode::Flush, Outcome::Skipped).reason(reason.clone()));
    }
    let root = &store.root;
    let listing = store.list().await?;
    let now = Utc::now();
    let age_of = |meta: &ObjectMeta| (now - meta.last_modified).to_std().unwrap_or_default();
    let mut entries = Vec::new();
    let mut stale_claims = Vec::new();
    // Damage reports, by key: kept while their entry is.
    let mut reports = Vec::new();
    for meta in listing {
        let Some(name) = meta.location.filename().map(str::to_string) else {
            continue;
        };
        if let Some((key, _)) = entry::key_of(&name) {
            let age = age_of(&meta);
            entries.push(Candidate {
                key: key.to_string(),
                meta,
                age,
                index: None,
            });
        } else if name.ends_with(".claim") && age_of(&meta) > STALE_CLAIM {
            stale_claims.push(meta);
        } else if let Some(key) = name.strip_suffix(".damaged") {
            reports.push((key.to_string(), meta));
        }
    }
    read_indexes(store, &mut entries).await?;
    entries.sort_by_key(|c| c.meta.last_modified);

    let (mut doomed, mut kept): (Vec<(Candidate, String)>, Vec<Candidate>) =
        (Vec::new(), Vec::new());
    for candidate in entries {
        match options.max_age {
            Some(max_age) if candidate.age > max_age => {
                let why = format!("older than {}", age(max_age));
                doomed.push((candidate, why));
            }
            _ => kept.push(candidate),
        }
    }
    let mut usage = Usage::default();
    kept.iter().for_each(|c| usage.add(c));
    if let Some(max_size) = options.max_size {
        while usage.total > max_size && !kept.is_empty() {
            let oldest = kept.remove(0);
            usage.remove(&oldest);
            let why = format!("the rest must fit in max_size {}", human::bytes(max_size));
            doomed.push((oldest, why));
        }
    }

    let verb = if options.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let mut failures = 0;
    for (candidate, why) in &doomed {
        let deleted = match options.dry_run {
            true => Ok(()),
            false => store.delete(&candidate.meta.location).await,
        };
        if let Err(e) = deleted {
            warn!("flush: {e:#}");
            failures += 1;
            continue;
        }
        info!(
            "flush: {verb} '{}' ({}, {} old, {why})",
            candidate.key,
            human::bytes(candidate.size()),
            age(candidate.age)
        );
    }
    for claim in &stale_claims {
        if !options.dry_run && store.delete(&claim.location).await.is_ok() {
            info!(
                "flush: removed the abandoned claim '{}'",
                store.full(&claim.location)
            );
        }
    }
    for (key, report) in &reports {
        if options.dry_run || kept.iter().any(|c| &c.key == key) {
            continue;
        }
        if store.delete(&report.location).await.is_ok() {
            info!("flush: removed the damage report of the deleted key '{key}'");
        }
    }
    if !options.dry_run {
        for name in store.remove_temporaries(|_| true, STALE_CLAIM).await {
            info!("flush: removed the unfinished upload '{name}' of a killed rebuild");
        }
    }
    for candidate in &kept {
        info!(
            "flush: kept '{}' ({}, {} old)",
            candidate.key,
            human::bytes(candidate.size()),
            age(candidate.age)
        );
    }
    let chunks_failed = match collect_chunks(store, options, &kept).await {
        Ok(()) => false,
        Err(e) => {
            warn!("flush: removing unused chunks failed: {e:#}");
            true
        }
    };
    let mut before = Usage::default();
    kept.iter()
        .chain(doomed.iter().map(|(c, _)| c))
        .for_each(|c| before.add(c));
    let deleted_bytes = before.total - usage.total;
    let kept_bytes = usage.total;
    info!(
        "flush: {verb} {} ({}) and kept {} ({}) under '{root}' in {} {}{}",
        plural_entries(doomed.len()),
        human::bytes(deleted_bytes),
        plural_entries(kept.len()),
        human::bytes(kept_bytes),
        store.backend,
        store.location,
        if options.dry_run {
            "; dry run, nothing was deleted"
        } else {
            ""
        }
    );
    if failures > 0 {
        bail!(
            "flush could not delete {failures} of {} entries",
            doomed.len()
        );
    }
    if chunks_failed {
        bail!("flush deleted the entries, but removing unused chunks failed (see above)");
    }
    let mut report = Summary::new(Mode::Flush, Outcome::Flushed);
    report.deleted = Some(doomed.len() as u64);
    report.kept = Some(kept.len() as u64);
    report.stored_bytes = kept_bytes;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Reads the index of every chunked entry (a few at a time). An index that
/// cannot be read counts as its object alone; its chunks, named by no
/// readable index, go the way of unused chunks.
async fn read_indexes(store: &Store, entries: &mut [Candidate]) -> anyhow::Result<()> {
    let reads = entries.iter().map(|c| async move {
        match entry::format_of(&c.meta) {
            Some(Format::Chunked) => chunked::read::read_index(store, &c.meta).await,
            _ => Ok(Err(String::new())),
        }
    });
    let indexes: Vec<_> = futures::stream::iter(reads)
        .buffered(8)
        .try_collect()
        .await?;
    for (candidate, index) in entries.iter_mut().zip(indexes) {
        match index {
            Ok(index) => candidate.index = Some(index),
            Err(why) if !why.is_empty() => {
                warn!(
                    "flush: the index of '{}' cannot be read: {why}",
                    candidate.key
                )
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// Every object holding chunks (a pack, or a version 1 chunk) that the
/// folder's indexes name now.
async fn referenced(store: &Store) -> anyhow::Result<HashSet<String>> {
    let mut entries: Vec<Candidate> = store
        .list()
        .await?
        .into_iter()
        .filter(|meta| entry::format_of(meta) == Some(Format::Chunked))
        .map(|meta| Candidate {
            key: meta.location.to_string(),
            meta,
            age: Duration::ZERO,
            index: None,
        })
        .collect();
    read_indexes(store, &mut entries).await?;
    Ok(entries
        .into_iter()
        .flat_map(|c| c.index.map(|i| i.chunks).unwrap_or_default())
        .map(|c| c.object().to_string())
        .collect())
}

/// Sweeps the condemned lists that are due, then condemns the packs no
/// index names (see `chunked::gc`) and retires those the `kept` entries use
/// less than half of (see `chunked::sparse`).
async fn collect_chunks(store: &Store, options: &Flush, kept: &[Candidate]) -> anyhow::Result<()> {
    let pending = gc::pending(store).await?;
    let all = gc::objects(store).await?;
    if all.is_empty() && pending.is_empty() {
        return Ok(());
    }
    let timing = options.timing;
    let swept = gc::sweep(
        store,
        &pending,
        timing,
        || referenced(store),
        options.dry_run,
    )
    .await?;
    let pending = match swept.objects > 0 && !options.dry_run {
        true => gc::pending(store).await?,
        false => pending,
    };
    let (verb, condemn) = match options.dry_run {
        true => ("would delete", "would condemn"),
        false => ("deleted", "condemned"),
    };
    if swept.objects > 0 {
        info!(
            "flush: {verb} {} of chunks no entry uses ({}), condemned at least {} ago",
            human::plural(swept.objects, "pack"),
            human::bytes(swept.bytes),
            age(timing.grace)
        );
    }
    let all = gc::objects(store).await?;
    let marked = gc::mark(
        store,
        &all,
        &referenced(store).await?,
        &pending,
        timing,
        options.dry_run,
    )
    .await?;
    if marked.objects > 0 {
        info!(
            "flush: {condemn} {} of chunks ({}) that no entry uses; a flush after {} \
             deletes them unless an entry uses them again",
            human::plural(marked.objects, "pack"),
            human::bytes(marked.bytes),
            age(timing.grace)
        );
    }
    retire_sparse(store, options, &all, kept).await;
    let waiting: usize = pending.iter().map(|l| l.objects.len()).sum();
    if waiting > 0 && swept.objects == 0 {
        info!(
            "flush: {} condemned packs wait for their grace of {} to end",
            human::count(waiting as u64),
            age(timing.grace)
        );
    }
    Ok(())
}

/// Retires the packs (of `all`) that the `kept` entries use less than half
/// of, and says how much they hold.
async fn retire_sparse(store: &Store, options: &Flush, all: &[ObjectMeta], kept: &[Candidate]) {
    let used = sparse::used_bytes(kept.iter().filter_map(|c| c.index.as_ref()));
    let retired = sparse::sparse(all, &used, options.timing);
    // Only advice to rebuilds: failing to write it fails nothing else.
    if !options.dry_run
        && let Err(e) = sparse::retire(store, &retired).await
    {
        warn!("flush: the list of retired packs was not updated: {e:#}");
    }
    // What storage bills: whole packs, not just the chunks in use.
    info!(
        "flush: the packs of chunks hold {}, of which the kept entries use {}",
        human::bytes(all.iter().map(|m| m.size).sum()),
        human::bytes(used.values().sum())
    );
    if retired.is_empty() {
        return;
    }
    let bytes: u64 = retired.iter().map(|m| m.size).sum();
    let in_use: u64 = retired
        .iter()
        .filter_map(|m| used.get(m.location.as_ref()))
        .sum();
    info!(
        "flush: {} {} of chunks ({}) that the kept entries use less than half of ({} \
         in all): rebuilds store those chunks again, in new packs, and the old packs go once \
         no entry names them",
        match options.dry_run {
            true => "would retire",
            false => "retired",
        },
        human::plural(retired.len() as u64, "pack"),
        human::bytes(bytes),
        human::bytes(in_use)
    );
}

fn plural_entries(n: usize) -> String {
    human::plural(n as u64, "entry").replace("entrys", "entries")
}

/// `3d 4h`, `5h 12m`, `40s`: an age, to the two largest units.
fn age(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, hours, minutes) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(Duration::from_secs(40)), "40s");
        assert_eq!(age(Duration::from_secs(5 * 3600 + 12 * 60)), "5h 12m");
        assert_eq!(age(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
        assert_eq!(plural_entries(1), "1 entry");
        assert_eq!(plural_entries(3), "3 entries");
    }
}
