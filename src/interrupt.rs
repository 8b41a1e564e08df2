//! Stopping cleanly when the runner cancels the step.
//!
//! SIGTERM or SIGINT sets a flag that the archive writer and the extractor
//! check between entries; they then fail, and the normal error path aborts
//! the upload, releases the claim or removes the staging. A second signal
//! exits at once.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

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
                std::process::exit(130);
            }
            tracing::warn!(
                "received a stop signal: stopping and cleaning up (send it again to exit at once)"
            );
        }
    });
}
