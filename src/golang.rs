//! What larder knows about Go's caches, so that caching them works as a
//! user expects without scripts around it.
//!
//! **The build cache (`GOCACHE`).** Go marks an entry used by setting its
//! modification time, but only when that time is more than an hour old, and
//! removes entries unused for five days at most once a day (`trim.txt`). A
//! restored cache therefore grows without bound: every entry looks freshly
//! used, and nothing is ever trimmed. So, in a mount that holds a Go build
//! cache (Go's own `README` says so):
//! - after a restore, every entry's time is set two hours back and
//!   `trim.txt` to now (Go's own trim would delete what later commands of
//!   the same build need), and the restore time is noted;
//! - before the rebuild, entries whose time is still before the restore
//!   were not used by this build, and are removed, so the entry holds what
//!   the build used. If the build used none, nothing is removed. The kept
//!   entries get one fixed time (the next restore sets its own anyway), so
//!   a build that used the same entries stores the same tree: its rebuild
//!   finds the entry unchanged, and a chunked entry finds its chunks again.
//!
//! (The module cache needs nothing of larder; docs/go.md says how to keep
//! `go build ./...` out of one in the workspace.)

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first line of the `README` Go writes into every build cache.
const BUILD_CACHE_README: &str =
    "This directory holds cached build artifacts from the Go build system.";

/// Where larder notes when it restored a build cache (Unix seconds).
const RESTORED: &str = "larder-restored.txt";

/// The time kept entries are stored with: 2020-01-01T00:00:00Z.
const STORED_TIME: Duration = Duration::from_secs(1_577_836_800);

/// How far back restored entries are set: more than Go's one hour, so any
/// entry the build uses is stamped again.
const BACK: Duration = Duration::from_secs(2 * 3600);

/// Whether `dir` is a Go build cache.
pub fn is_build_cache(dir: &Path) -> bool {
    fs::read_to_string(dir.join("README"))
        .map(|text| text.lines().next() == Some(BUILD_CACHE_README))
        .unwrap_or(false)
}

/// What preparing a restored build cache did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stamped {
    pub entries: u64,
}

/// After a restore: sets every entry's time back, `trim.txt` to `now`, and
/// notes the restore time.
pub fn stamp_restored(dir: &Path, now: SystemTime) -> io::Result<Stamped> {
    let back = now - BACK;
    let mut stamped = Stamped::default();
    for entry in entries(dir)? {
        set_time(&entry, back)?;
        stamped.entries += 1;
    }
    let seconds = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    fs::write(dir.join("trim.txt"), seconds.to_string())?;
    fs::write(dir.join(RESTORED), seconds.to_string())?;
    Ok(stamped)
}

/// What trimming a build cache did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub used: u64,
    pub removed: u64,
    pub removed_bytes: u64,
}

/// Before a rebuild: removes the entries this build did not use since the
/// restore. `None` when larder did not restore this cache (nothing is known
/// about what was used) or the build used no entry (it did not run).
pub fn trim_unused(dir: &Path) -> io::Result<Option<Trimmed>> {
    let Ok(text) = fs::read_to_string(dir.join(RESTORED)) else {
        return Ok(None);
    };
    let Ok(seconds) = text.trim().parse::<u64>() else {
        return Ok(None);
    };
    let restored = UNIX_EPOCH + Duration::from_secs(seconds);
    let mut unused = Vec::new();
    let mut trimmed = Trimmed::default();
    for entry in entries(dir)? {
        let meta = fs::symlink_metadata(&entry)?;
        if meta.modified()? >= restored {
            trimmed.used += 1;
        } else {
            let bytes = size(&meta, &entry);
            unused.push((entry, bytes));
        }
    }
    fs::remove_file(dir.join(RESTORED))?;
    if trimmed.used == 0 {
        return Ok(None);
    }
    for (entry, bytes) in unused {
        match fs::symlink_metadata(&entry)?.is_dir() {
            true => fs::remove_dir_all(&entry)?,
            false => fs::remove_file(&entry)?,
        }
        trimmed.removed += 1;
        trimmed.removed_bytes += bytes;
    }
    let stored = UNIX_EPOCH + STORED_TIME;
    for entry in entries(dir)? {
        set_time(&entry, stored)?;
    }
    set_time(&dir.join("trim.txt"), stored)?;
    Ok(Some(trimmed))
}

/// The cache's entries: `<2 hex>/<id>-a` and `<id>-d` (files, or since Go
/// 1.24 directories for cached executables).
fn entries(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let mut found = Vec::new();
    for sub in fs::read_dir(dir)? {
        let sub = sub?;
        let name = sub.file_name();
        let name = name.to_string_lossy();
        if name.len() != 2 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        if !sub.file_type()?.is_dir() {
            continue;
        }
        for entry in fs::read_dir(sub.path())? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with("-a") || name.ends_with("-d") {
                found.push(entry.path());
            }
        }
    }
    Ok(found)
}

fn set_time(path: &Path, time: SystemTime) -> io::Result<()> {
    let time = filetime::FileTime::from_system_time(time);
    filetime::set_symlink_file_times(path, time, time)
}

fn size(meta: &fs::Metadata, path: &Path) -> u64 {
    if !meta.is_dir() {
        return meta.len();
    }
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(dir: &Path) {
        fs::write(
            dir.join("README"),
            format!("{BUILD_CACHE_README}\nRun \"go clean -cache\"\n"),
        )
        .unwrap();
        for (sub, name) in [
            ("0a", "0a11-a"),
            ("0a", "0a22-d"),
            ("ff", "ff33-a"),
            ("ff", "ff44-d"),
        ] {
            fs::create_dir_all(dir.join(sub)).unwrap();
            fs::write(dir.join(sub).join(name), name).unwrap();
        }
        fs::create_dir_all(dir.join("fuzz/x")).unwrap();
    }

    #[test]
    fn only_what_the_build_used_since_the_restore_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        cache(d);
        assert!(is_build_cache(d));
        let now = SystemTime::now();
        assert_eq!(stamp_restored(d, now).unwrap().entries, 4);
        assert_eq!(
            fs::read_to_string(d.join("trim.txt")).unwrap(),
            fs::read_to_string(d.join(RESTORED)).unwrap()
        );
        let old = fs::metadata(d.join("0a/0a11-a"))
            .unwrap()
            .modified()
            .unwrap();
        assert!(old <= now - BACK + Duration::from_secs(1));
        // The build used one pair and added one entry, as Go stamps them.
        for used in ["0a/0a11-a", "0a/0a22-d"] {
            set_time(&d.join(used), now + Duration::from_secs(5)).unwrap();
        }
        fs::write(d.join("ff/ff55-a"), "new").unwrap();
        let trimmed = trim_unused(d).unwrap().unwrap();
        assert_eq!(
            (trimmed.used, trimmed.removed, trimmed.removed_bytes),
            (3, 2, 12)
        );
        assert!(d.join("0a/0a11-a").exists() && d.join("ff/ff55-a").exists());
        assert!(!d.join("ff/ff33-a").exists() && !d.join("ff/ff44-d").exists());
        assert!(d.join("fuzz/x").is_dir() && d.join("README").exists());
        assert!(!d.join(RESTORED).exists());
        // Kept entries are stored with one fixed time.
        for kept in ["0a/0a11-a", "ff/ff55-a", "trim.txt"] {
            let time = fs::metadata(d.join(kept)).unwrap().modified().unwrap();
            assert_eq!(time, UNIX_EPOCH + STORED_TIME, "{kept}");
        }
    }

    #[test]
    fn nothing_is_trimmed_when_the_build_used_nothing_or_larder_did_not_restore() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        cache(d);
        assert_eq!(trim_unused(d).unwrap(), None, "not restored by larder");
        stamp_restored(d, SystemTime::now()).unwrap();
        assert_eq!(trim_unused(d).unwrap(), None, "nothing used");
        assert!(d.join("ff/ff33-a").exists());
    }
}
