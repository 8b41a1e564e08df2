//! Damage reports: how a damaged entry gets replaced.
//!
//! Keys are immutable, so a rebuild skips a key that is stored, and a
//! truncated or corrupt entry would otherwise fail every restore until
//! someone deleted it by hand. A restore that finds an entry damaged writes
//! `<key>.damaged` beside it, naming the exact object version it read; the
//! next rebuild of the key that finds a report for the entry stored now
//! replaces it (claiming the key first, as every rebuild does) and removes
//! the report. A report about an older version of the entry is ignored.

use object_store::path::Path;
use object_store::{ObjectMeta, PutMode};
use serde::{Deserialize, Serialize};

use super::Store;

/// What a restore found wrong with which version of an entry.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// The object read, e.g. `octocat/hello/gomod-1.tar.gz`.
    pub object: String,
    pub e_tag: Option<String>,
    pub size: u64,
    /// Unix seconds of the object's last modification.
    pub modified: i64,
    /// The restore's error, for the rebuild's log.
    pub reason: String,
}

impl Report {
    pub fn new(meta: &ObjectMeta, reason: &str) -> Report {
        Report {
            object: meta.location.to_string(),
            e_tag: meta.e_tag.clone(),
            size: meta.size,
            modified: meta.last_modified.timestamp(),
            reason: reason.to_string(),
        }
    }

    /// Whether the report is about this version of the entry.
    pub fn describes(&self, meta: &ObjectMeta) -> bool {
        let same_version = match (&self.e_tag, &meta.e_tag) {
            (Some(ours), Some(theirs)) => ours == theirs,
            _ => self.modified == meta.last_modified.timestamp(),
        };
        self.object == meta.location.as_ref() && self.size == meta.size && same_version
    }
}

/// `<key>.damaged`
pub fn path(key: &str) -> Path {
    Path::from(format!("{key}.damaged"))
}

/// Writes (or replaces) the report for `key`.
pub async fn write(store: &Store, key: &str, report: &Report) -> anyhow::Result<()> {
    let body = serde_json::to_vec(report).unwrap_or_default();
    store
        .write(&path(key), body, PutMode::Overwrite)
        .await
        .map(drop)
}

/// The report for `key` if it describes `entry` as stored now.
pub async fn find(store: &Store, key: &str, entry: &ObjectMeta) -> anyhow::Result<Option<Report>> {
    let Some((bytes, _)) = store.read(&path(key)).await? else {
        return Ok(None);
    };
    let report: Option<Report> = serde_json::from_slice(&bytes).ok();
    Ok(report.filter(|r| r.describes(entry)))
}

/// Removes the report for `key`, if there is one.
pub async fn clear(store: &Store, key: &str) {
    if let Err(e) = store.delete(&path(key)).await {
        tracing::warn!("{e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(e_tag: Option<&str>, size: u64, secs: i64) -> ObjectMeta {
        ObjectMeta {
            location: Path::from("r/k.tar.gz"),
            last_modified: chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default(),
            size,
            e_tag: e_tag.map(str::to_string),
            version: None,
        }
    }

    #[test]
    fn a_report_describes_only_the_version_it_was_made_for() {
        let damaged = meta(Some("a"), 10, 100);
        let report = Report::new(&damaged, "truncated");
        assert!(report.describes(&damaged));
        assert!(!report.describes(&meta(Some("b"), 10, 100)));
        assert!(!report.describes(&meta(Some("a"), 11, 100)));
        let no_tag = Report::new(&meta(None, 10, 100), "x");
        assert!(no_tag.describes(&meta(None, 10, 100)));
        assert!(!no_tag.describes(&meta(None, 10, 101)));
    }
}
