//! The two things larder does: restore an entry, or rebuild one.

pub mod rebuild;
pub mod restore;

use crate::settings::{Config, Mode};
use crate::storage::Store;

/// How a run ended, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Restore found the key and unpacked it.
    Hit,
    /// Restore found nothing for the key.
    Miss,
    /// Rebuild uploaded a new entry.
    Stored,
    /// Rebuild found the key already stored, or being stored, and left it.
    Skipped,
    /// Rebuild had nothing to archive.
    Empty,
}

/// Runs the configured mode for an already rendered key.
pub async fn run(config: &Config, store: &Store, key: &str) -> anyhow::Result<Outcome> {
    match config.mode {
        Mode::Restore => restore::restore(config, store, key).await,
        Mode::Rebuild => rebuild::rebuild(config, store, key).await,
    }
}
