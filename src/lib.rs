//! larder: a build cache for Drone and Woodpecker CI.
//!
//! The layout follows the flow of one run:
//! `settings` (what the pipeline asked for) → `key` (which entry) →
//! `mode` (restore or rebuild) → `archive` (the tar stream) and `storage`
//! (where entries live), with `staging` making restores all-or-nothing.

pub mod app;
pub mod archive;
pub mod interrupt;
pub mod key;
pub mod logging;
pub mod mode;
pub mod mount;
pub mod pipe;
pub mod report;
pub mod result;
pub mod settings;
pub mod staging;
pub mod storage;
