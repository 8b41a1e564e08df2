//! The three things larder does: restore an entry, rebuild one, or flush
//! old ones. Each returns a `Report` for the log and the result file.

pub mod flush;
pub mod rebuild;
pub mod restore;

use crate::result::Report;
use crate::settings::{Config, Mode};
use crate::storage::Store;

/// The rendered keys of a run: the exact key, and the restore-key prefixes.
#[derive(Clone, Debug)]
pub struct Keys {
    pub key: String,
    pub restore_prefixes: Vec<String>,
}

pub async fn run(config: &Config, store: &Store, keys: &Keys) -> anyhow::Result<Report> {
    match config.mode {
        Mode::Restore => restore::restore(config, store, keys).await,
        Mode::Rebuild => rebuild::rebuild(config, store, &keys.key).await,
        Mode::Flush => flush::flush(config, store).await,
    }
}

/// Why writes are refused for this build, if they are: pull requests may
/// read the cache but not write it, so a pull request from anyone cannot
/// plant an entry that trusted builds then restore (cache poisoning, as in
/// CVE-2025-36852), unless `allow_pull_request_writes` is set.
pub fn pull_request_block(config: &Config) -> Option<String> {
    if config.allow_pull_request_writes {
        return None;
    }
    let field = crate::key::metadata::field(".Build.Event")?;
    let event = config.metadata.get(field)?;
    event.starts_with("pull_request").then(|| {
        format!(
            "this is a pull request build ({} is '{event}'), and pull requests do not write to \
             the cache, so one cannot plant entries that other builds restore. Set \
             allow_pull_request_writes: true to allow it",
            field.sources_text()
        )
    })
}
