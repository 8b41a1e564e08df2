//! What larder does: restore an entry, rebuild one, flush old ones, or
//! export one to a file. Each takes its part of the job and returns a `Summary` for the
//! log and the result file.

pub mod export;
pub mod flush;
pub mod rebuild;
pub mod restore;

use std::time::Duration;

use crate::cancel::Cancel;
use crate::job::{Job, Task};
use crate::storage::Store;
use crate::summary::Summary;

/// Where a run's time went: `worker` (unpacking, archiving) waited
/// `waited` of `elapsed` for the `transfer` (download, upload), whose
/// pace `causes` set (network or storage; a chunked download also checks
/// every chunk before unpacking sees it). More than half the time
/// waiting: the transfer set the pace, and more bandwidth would help;
/// less: the worker did, and a faster runner would.
fn pace(
    (worker, transfer, causes): (&str, &str, &str),
    waited: Duration,
    elapsed: Duration,
) -> String {
    let pace = match waited * 2 > elapsed {
        true => format!("the {transfer} ({causes}) set the pace"),
        false => format!("{worker} (CPU and disk) set the pace"),
    };
    format!(
        "{worker} waited {} of the {} for the {transfer}: {pace}",
        crate::human::seconds(waited),
        crate::human::seconds(elapsed)
    )
}

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
