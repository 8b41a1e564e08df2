//! The result file: a small JSON summary of the run for later pipeline steps
//! (Drone and Woodpecker have no step outputs), e.g.
//! `jq -r .result .cache-result.json` is `exact`, `partial` or `miss`.

use std::io;
use std::path::Path;

use serde::Serialize;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Restore found the exact key.
    Exact,
    /// Restore found no exact entry but one under a restore key.
    Partial,
    /// Restore found nothing.
    Miss,
    /// Rebuild uploaded a new entry.
    Stored,
    /// Rebuild or flush left storage alone (key stored, being stored, pull request).
    Skipped,
    /// Rebuild had nothing to archive.
    Empty,
    /// Flush ran (or, with dry_run, listed).
    Flushed,
    /// The run failed; `error` says why.
    Failed,
}

/// Everything worth knowing about one run. Fields that do not apply are left out.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub mode: String,
    pub result: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The entry's key when restore found one (differs from `key` on a partial hit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_key: Option<String>,
    /// The restore key (a prefix) that produced a partial hit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub files: u64,
    /// Size of the tar stream (the files, before compression).
    pub bytes: u64,
    /// Size of the entry in storage.
    pub stored_bytes: u64,
    pub seconds: f64,
    /// Bytes a rebuild of a chunked entry uploaded (its new chunks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_bytes: Option<u64>,
    /// Objects written to storage (new packs, their catalogs, the index).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects_written: Option<u64>,
    /// Chunks a restore read, and how many of them came from the runner's
    /// chunk cache instead of storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks_cached: Option<u64>,
    /// Requests a restore of a chunked entry made for its chunks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Seconds a restore's unpacking waited for the download (left out
    /// where the entry is a file read in place): near `seconds`, the
    /// network or storage set the pace; near 0, unpacking did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_wait_seconds: Option<f64>,
    /// Seconds a rebuild waited for its upload (a free upload slot, the
    /// last parts, the completion): near `seconds`, the network or storage
    /// set the pace; near 0, archiving did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_wait_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Summary {
    pub fn new(mode: impl ToString, result: Outcome) -> Self {
        Summary {
            mode: mode.to_string(),
            result,
            key: None,
            matched_key: None,
            restore_key: None,
            object: None,
            files: 0,
            bytes: 0,
            stored_bytes: 0,
            seconds: 0.0,
            uploaded_bytes: None,
            objects_written: None,
            chunks: None,
            chunks_cached: None,
            requests: None,
            download_wait_seconds: None,
            upload_wait_seconds: None,
            deleted: None,
            kept: None,
            reason: None,
            error: None,
        }
    }

    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Writes the report next to its final name and renames it into place, so a
/// later step never reads half a file.
pub fn write(path: &Path, report: &Summary) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(report).map_err(io::Error::other)?;
    json.push(b'\n');
    let temp = path.with_extension("larder-tmp");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&temp, json)?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_only_what_applies() {
        let mut report = Summary::new("restore", Outcome::Partial).key("gomod-b");
        report.matched_key = Some("gomod-a".into());
        report.restore_key = Some("gomod-".into());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["result"], "partial");
        assert_eq!(json["matched_key"], "gomod-a");
        assert!(json.get("error").is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/result.json");
        write(&path, &report).unwrap();
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, json);
    }
}
