//! larder: a build cache for Drone and Woodpecker CI.
//!
//! The layout follows the flow of one run:
//! `app` (the process: environment, signals, exit code) → `settings` (what
//! the pipeline wrote) → `job` (what to do, checked, keys rendered by `key`)
//! → `mode` (restore, rebuild or flush) → `archive` (the tar stream),
//! `chunked` (the stream as deduplicated chunks and an index), `storage`
//! (where entries live) and `staging` (all-or-nothing restores).
//! Leaves that everything may use: `secret`, `cancel`, `human` (numbers
//! for people), `pool`, `progress` (progress lines).

pub mod app;
pub mod archive;
pub mod cancel;
pub mod chunked;
pub(crate) mod describe;
pub mod golang;
pub(crate) mod human;
pub mod job;
pub mod key;
pub(crate) mod logging;
pub(crate) mod mode;
pub mod mount;
pub(crate) mod pipe;
pub(crate) mod pool;
pub mod progress;
pub mod secret;
pub mod settings;
pub mod staging;
pub mod storage;
pub(crate) mod summary;
#[cfg(test)]
pub(crate) mod testing;
