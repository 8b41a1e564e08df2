//! Flush: delete this repository's entries that are older than `flush_age`,
//! then the oldest until the rest fit in `max_size`. Only the remote root's
//! own objects are looked at, never deeper folders or other repositories.
//! Stale claims (from killed rebuilds) are removed too.

use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::Utc;
use object_store::ObjectMeta;
use tracing::{info, warn};

use crate::human;
use crate::job::{Flush, Job, Mode};
use crate::storage::{Store, entry};
use crate::summary::{Outcome, Summary};

/// A claim untouched for this long belongs to a rebuild that died.
const STALE_CLAIM: Duration = Duration::from_secs(3600);

struct Candidate {
    key: String,
    meta: ObjectMeta,
    age: Duration,
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
            });
        } else if name.ends_with(".claim") && age_of(&meta) > STALE_CLAIM {
            stale_claims.push(meta);
        } else if let Some(key) = name.strip_suffix(".damaged") {
            reports.push((key.to_string(), meta));
        }
    }
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
    if let Some(max_size) = options.max_size {
        let mut total: u64 = kept.iter().map(|c| c.meta.size).sum();
        while total > max_size && !kept.is_empty() {
            let oldest = kept.remove(0);
            total -= oldest.meta.size;
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
            human::bytes(candidate.meta.size),
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
            human::bytes(candidate.meta.size),
            age(candidate.age)
        );
    }
    let deleted_bytes: u64 = doomed.iter().map(|(c, _)| c.meta.size).sum();
    let kept_bytes: u64 = kept.iter().map(|c| c.meta.size).sum();
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
    let mut report = Summary::new(Mode::Flush, Outcome::Flushed);
    report.deleted = Some(doomed.len() as u64);
    report.kept = Some(kept.len() as u64);
    report.stored_bytes = kept_bytes;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
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
