//! Removing chunk objects (packs, and version 1's one-chunk objects) that
//! no entry names, safely against rebuilds that are reusing their chunks at
//! that moment: condemn, wait, re-check, delete.
//!
//! Flush never deletes an object the moment it finds it unreferenced: a
//! rebuild may have found its chunks a second ago and be about to publish
//! an index naming them. Instead:
//!
//! 1. *Mark.* Objects that no index names and that are older than the
//!    longest a rebuild may take (`max_rebuild`, D) are written to a
//!    condemned list `gc/condemned-<id>.json`. Younger ones may belong to
//!    a rebuild still uploading, and are left alone.
//! 2. *Sweep*, by a later flush, once the list is older than `grace`
//!    (G > D): a marker `gc/sweeping-<id>` is written, every index is read
//!    again, and each condemned object that no index names now and that was
//!    not written again since it was condemned is deleted (a pack's
//!    catalog first, so no rebuild learns of a pack being deleted).
//!
//! Rebuilds take part: a rebuild reads the pending lists when it starts and
//! never relies on a chunk in a condemned pack; it stores such a chunk
//! again, in a new pack. Before publishing, it refuses (and says so) if it
//! ran longer than D, or if a list naming an object it uses is being swept
//! or is about to be (within `SKEW` of its grace). A rebuild that publishes before a sweep reads the indexes is
//! seen by it; one that would publish later started after the list was
//! written (G > D), so it read the list and uploaded its chunks afresh.
//! Restores must finish within G: an entry flush deleted keeps its chunks
//! until a sweep at least G later.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, PutMode};
use serde::{Deserialize, Serialize};

use super::pack::{PACKS, catalog_path, parse_name};
use super::{CHUNKS, chunk_path, is_chunk_id};
use crate::storage::Store;

/// The folder of the condemned lists and sweep markers.
pub const GC: &str = "gc";

/// Allowance for clocks: runners and storage do not agree to the second.
pub const SKEW: Duration = Duration::from_secs(5 * 60);

/// How long a rebuild may take (D), and how long a condemned chunk waits
/// before a sweep may delete it (G > D + SKEW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub max_rebuild: Duration,
    pub grace: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing::DEFAULT
    }
}

impl Timing {
    pub const DEFAULT: Timing = Timing {
        max_rebuild: Duration::from_secs(3600),
        grace: Duration::from_secs(3 * 3600),
    };
}

/// A condemned list, as a rebuild or flush reads it.
#[derive(Clone, Debug)]
pub struct Condemned {
    pub path: Path,
    /// When it was written (storage's clock).
    pub at: DateTime<Utc>,
    /// Object names, relative to the repository's folder.
    pub objects: HashSet<String>,
    /// Whether a sweep of it has started.
    pub sweeping: bool,
}

#[derive(Serialize, Deserialize)]
struct List {
    /// Version 1 lists named chunk ids, under `chunks`.
    #[serde(alias = "chunks")]
    objects: Vec<String>,
}

/// An object's name in a list: version 1 lists hold bare chunk ids.
fn object_name(name: String) -> String {
    match is_chunk_id(&name) {
        true => chunk_path(&name).to_string(),
        false => name,
    }
}

/// The condemned lists pending in the repository's folder.
pub async fn pending(store: &Store) -> anyhow::Result<Vec<Condemned>> {
    let listing = list(store, GC).await?;
    let sweeping: HashSet<String> = listing
        .iter()
        .filter_map(|m| {
            m.location
                .filename()?
                .strip_prefix("sweeping-")
                .map(str::to_string)
        })
        .collect();
    let mut lists = Vec::new();
    for meta in listing {
        let Some(id) = meta
            .location
            .filename()
            .and_then(|n| n.strip_prefix("condemned-"))
            .and_then(|n| n.strip_suffix(".json"))
            .map(str::to_string)
        else {
            continue;
        };
        let Some((bytes, _)) = store.read(&meta.location).await? else {
            continue;
        };
        let list: List = serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "the condemned list '{}' does not parse ({e}); delete it (its chunks are then \
                 kept) and run flush again",
                store.full(&meta.location)
            )
        })?;
        lists.push(Condemned {
            sweeping: sweeping.contains(&id),
            path: meta.location,
            at: meta.last_modified,
            objects: list.objects.into_iter().map(object_name).collect(),
        });
    }
    Ok(lists)
}

/// Whether a rebuild that started at `started` and names the objects `used`
/// may publish its index now; `Err` says why not.
pub fn may_publish(
    used: &HashSet<&str>,
    pending: &[Condemned],
    started: DateTime<Utc>,
    now: DateTime<Utc>,
    timing: Timing,
) -> Result<(), String> {
    let took = (now - started).to_std().unwrap_or_default();
    if took > timing.max_rebuild {
        return Err(format!(
            "the rebuild took {}s, longer than the {}s a rebuild may take before a flush may \
             remove chunks it relies on",
            took.as_secs(),
            timing.max_rebuild.as_secs()
        ));
    }
    for list in pending {
        if !list.objects.iter().any(|c| used.contains(c.as_str())) {
            continue;
        }
        let due = list.at + timing.grace - SKEW;
        if list.sweeping || now >= due {
            return Err(format!(
                "a flush is removing chunks this entry uses ('{}', condemned at {}); the \
                 next rebuild stores the key",
                list.path, list.at
            ));
        }
    }
    Ok(())
}

/// Every object holding chunks in the folder (packs, and version 1's
/// chunks), with its metadata.
pub async fn objects(store: &Store) -> anyhow::Result<Vec<ObjectMeta>> {
    let v1 = list(store, CHUNKS)
        .await?
        .into_iter()
        .filter(|m| m.location.filename().is_some_and(is_chunk_id));
    let packs = list(store, PACKS)
        .await?
        .into_iter()
        .filter(|m| parse_name(&m.location).is_some_and(|(_, catalog)| !catalog));
    Ok(v1.chain(packs).collect())
}

/// Every object below `folder` of the repository's folder.
async fn list(store: &Store, folder: &str) -> anyhow::Result<Vec<ObjectMeta>> {
    let prefix = Path::from(folder);
    store
        .inner()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| store.error("listing of", &prefix, e))
}

/// What a mark or a sweep came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counted {
    pub objects: u64,
    pub bytes: u64,
}

/// Phase 1: condemns the objects no index names (`referenced`) that are
/// older than a rebuild may take and not condemned already.
pub async fn mark(
    store: &Store,
    all: &[ObjectMeta],
    referenced: &HashSet<String>,
    pending: &[Condemned],
    timing: Timing,
    dry_run: bool,
) -> anyhow::Result<Counted> {
    let old = Utc::now() - timing.max_rebuild;
    let already: HashSet<&str> = pending
        .iter()
        .flat_map(|l| l.objects.iter().map(String::as_str))
        .collect();
    let mut counted = Counted::default();
    let mut doomed = Vec::new();
    for meta in all {
        let name = meta.location.as_ref();
        if referenced.contains(name) || already.contains(name) || meta.last_modified > old {
            continue;
        }
        counted.objects += 1;
        counted.bytes += meta.size;
        doomed.push(name.to_string());
    }
    if doomed.is_empty() || dry_run {
        return Ok(counted);
    }
    let name = format!(
        "{GC}/condemned-{}-{}.json",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        uuid::Uuid::new_v4().simple()
    );
    let list = serde_json::to_vec(&List { objects: doomed }).unwrap_or_default();
    store
        .write(&Path::from(name), list, PutMode::Create)
        .await?;
    Ok(counted)
}

/// Phase 2: for each list older than the grace, deletes its objects that
/// no index names now (`referenced`, read after the marker was written:
/// the caller passes a function that reads them) and that nobody wrote
/// again since.
pub async fn sweep<F, Fut>(
    store: &Store,
    pending: &[Condemned],
    timing: Timing,
    referenced_now: F,
    dry_run: bool,
) -> anyhow::Result<Counted>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<HashSet<String>>>,
{
    let now = Utc::now();
    let due: Vec<&Condemned> = pending
        .iter()
        .filter(|l| now >= l.at + timing.grace)
        .collect();
    let mut counted = Counted::default();
    if due.is_empty() {
        return Ok(counted);
    }
    if !dry_run {
        for list in &due {
            let marker = sweeping_path(list);
            store.write(&marker, Vec::new(), PutMode::Overwrite).await?;
        }
    }
    // Read after the markers exist: a rebuild that publishes later saw them.
    let referenced = referenced_now().await?;
    let current: std::collections::HashMap<String, ObjectMeta> = objects(store)
        .await?
        .into_iter()
        .map(|m| (m.location.to_string(), m))
        .collect();
    for list in due {
        let deletable: Vec<&ObjectMeta> = list
            .objects
            .iter()
            .filter(|id| !referenced.contains(*id))
            .filter_map(|id| current.get(id))
            .filter(|meta| meta.last_modified < list.at)
            .collect();
        counted.objects += deletable.len() as u64;
        counted.bytes += deletable.iter().map(|m| m.size).sum::<u64>();
        if dry_run {
            continue;
        }
        futures::stream::iter(deletable)
            .map(|meta| delete(store, &meta.location))
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        store.delete(&list.path).await?;
        store.delete(&sweeping_path(list)).await?;
    }
    Ok(counted)
}

/// Deletes an object; a pack's catalog first, so that no rebuild relies on
/// the pack meanwhile.
async fn delete(store: &Store, object: &Path) -> anyhow::Result<()> {
    if let Some((id, false)) = parse_name(object) {
        store.delete(&catalog_path(id)).await?;
    }
    store.delete(object).await
}

fn sweeping_path(list: &Condemned) -> Path {
    let id = list
        .path
        .filename()
        .and_then(|n| n.strip_prefix("condemned-"))
        .and_then(|n| n.strip_suffix(".json"))
        .unwrap_or("unknown");
    Path::from(format!("{GC}/sweeping-{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(at: DateTime<Utc>, chunks: &[&str], sweeping: bool) -> Condemned {
        Condemned {
            path: Path::from("gc/condemned-x.json"),
            at,
            objects: chunks.iter().map(|c| c.to_string()).collect(),
            sweeping,
        }
    }

    /// The rebuild's last check, in each order a rebuild and a flush can
    /// interleave (times in minutes; D = 60, G = 180).
    #[test]
    fn a_rebuild_publishes_only_when_no_sweep_can_miss_its_index() {
        let t0 = Utc::now();
        let min = |m: i64| t0 + chrono::Duration::minutes(m);
        let timing = Timing::DEFAULT;
        let used: HashSet<&str> = ["x", "y"].into_iter().collect();
        // Nothing condemned: publish.
        assert!(may_publish(&used, &[], min(0), min(10), timing).is_ok());
        // Too long a rebuild: a flush may have condemned and swept since.
        let late = may_publish(&used, &[], min(0), min(61), timing).unwrap_err();
        assert!(late.contains("longer than"), "{late}");
        // X condemned while the rebuild ran (it reused X): publishing well
        // before the sweep may start is safe, the sweep will see the index.
        let condemned = [list(min(5), &["x"], false)];
        assert!(may_publish(&used, &condemned, min(0), min(30), timing).is_ok());
        // ...but not once the sweep may have read the indexes.
        assert!(may_publish(&used, &condemned, min(0), min(5 + 180 - 4), timing).is_err());
        let sweeping = [list(min(5), &["x"], true)];
        let swept = may_publish(&used, &sweeping, min(0), min(30), timing).unwrap_err();
        assert!(swept.contains("removing chunks"), "{swept}");
        // A list naming none of its chunks does not matter.
        let other = [list(min(5), &["z"], true)];
        assert!(may_publish(&used, &other, min(0), min(30), timing).is_ok());
    }
}
