//! Stopping cleanly when the runner cancels the step.
//!
//! The process's signal handler (`listen`, started by the app) cancels a
//! `Cancel`, which the modes hand down: the archive writer and the extractor
//! check it between entries, and downloads stop waiting. They then fail, and
//! the normal error path aborts the upload, releases the claim or removes
//! the staging. A second signal does not cut that short: a step killed
//! halfway through cleaning up would leave the debris the cleanup exists to
//! remove. (The runner sends SIGKILL after its grace period anyway; what
//! that leaves, the next run removes.)

use std::io;

use tokio_util::sync::CancellationToken;

/// Whether the step was asked to stop; cheap to clone and check.
#[derive(Clone, Debug, Default)]
pub struct Cancel(CancellationToken);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    pub fn cancel(&self) {
        self.0.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }

    /// An error to return from a loop when the step was cancelled.
    pub fn check(&self) -> io::Result<()> {
        if self.is_cancelled() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "interrupted by a signal; cleaning up",
            ));
        }
        Ok(())
    }

    /// A `Cancel` cancelled with this one, or on its own: for work begun
    /// in case it is needed, stopped when it turns out not to be.
    pub fn child(&self) -> Cancel {
        Cancel(self.0.child_token())
    }

    /// Cancels this `Cancel` when the guard is dropped: for work that must
    /// stop if whatever began it goes away.
    pub fn drop_guard(self) -> tokio_util::sync::DropGuard {
        self.0.drop_guard()
    }

    /// Completes when the step is cancelled.
    pub async fn cancelled(&self) {
        self.0.cancelled().await;
    }
}

/// Cancels `cancel` on SIGTERM or SIGINT. Must run inside the runtime.
pub fn listen(cancel: Cancel) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::debug!("cannot install signal handlers; cancellation will not clean up");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if cancel.is_cancelled() {
                tracing::warn!("received another stop signal: still cleaning up");
                continue;
            }
            cancel.cancel();
            tracing::warn!("received a stop signal: stopping and cleaning up");
        }
    });
}
