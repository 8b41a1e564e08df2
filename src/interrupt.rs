//! Stopping cleanly when the runner cancels the step.
//!
//! SIGTERM or SIGINT sets a flag that the archive writer and the extractor
//! check between entries, and cancels downloads; they then fail, and the
//! normal error path aborts the upload, releases the claim or removes the
//! staging. A second signal does not cut that short: a step killed halfway
//! through cleaning up would leave the debris the cleanup exists to remove.
//! (The runner sends SIGKILL after its grace period anyway; what that
//! leaves, the next run removes.)

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static TOKEN: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();

/// Cancelled when the step is asked to stop, for tasks waiting on the network.
pub fn token() -> CancellationToken {
    TOKEN.get_or_init(CancellationToken::new).clone()
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// An error to return from a loop when the step was cancelled.
pub fn check() -> io::Result<()> {
    if requested() {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "interrupted by a signal; cleaning up",
        ));
    }
    Ok(())
}

/// Starts listening for SIGTERM and SIGINT. Must run inside the runtime.
pub fn listen() {
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
            if REQUESTED.swap(true, Ordering::Relaxed) {
                tracing::warn!("received another stop signal: still cleaning up");
                continue;
            }
            token().cancel();
            tracing::warn!("received a stop signal: stopping and cleaning up");
        }
    });
}
