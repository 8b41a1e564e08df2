//! What larder does: restore an entry, rebuild one, flush old ones, or
//! export one to a file. Each takes its part of the job and returns a `Summary` for the
//! log and the result file.

pub mod export;
pub mod flush;
pub mod rebuild;
pub mod restore;

use crate::cancel::Cancel;
use crate::job::{Job, Task};
use crate::storage::Store;
use crate::summary::Summary;

pub async fn run(job: &Job, store: &Store, cancel: &Cancel) -> anyhow::Result<Summary> {
    match &job.task {
        Task::Restore(task) => restore::restore(job, task, store, cancel).await,
        Task::Rebuild(task) => rebuild::rebuild(job, task, store, cancel).await,
        Task::Flush(task) => flush::flush(job, task, store).await,
        Task::Export(task) => export::export(task, store, cancel).await,
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_chunked;
#[cfg(test)]
mod tests_requests;
