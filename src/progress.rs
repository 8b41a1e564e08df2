//! Progress lines for long transfers. Every interval (5 s unless the process
//! says otherwise) a restore logs what it has received of the entry, and a
//! rebuild what it has archived of the mounts and uploaded so far, with the
//! percentage and the average rate. A transfer that ends within the first
//! interval logs no progress at all.
//!
//! The counters are plain atomics that the transfer code bumps as it goes
//! (cheap enough for every chunk or entry); a task of the async runtime
//! reads them at each tick. The lines are ordinary `info` events with the
//! numbers as fields too, so `log_format: json` carries them as numbers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio_util::task::AbortOnDropHandle;

use crate::human;

/// The interval when the process sets none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The tracing target of progress events.
pub const TARGET: &str = "larder::progress";

static INTERVAL: OnceLock<Option<Duration>> = OnceLock::new();

/// Sets how often progress is logged for the rest of the process; `None`
/// turns progress lines off. The process's boundary (`app`) calls it once,
/// before any transfer; later calls change nothing.
pub fn set_interval(interval: Option<Duration>) {
    let _ = INTERVAL.set(interval);
}

fn interval() -> Option<Duration> {
    *INTERVAL.get().unwrap_or(&Some(DEFAULT_INTERVAL))
}

/// What is being reported on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Bytes of the entry received (downloaded, or read from the volume).
    Restore,
    /// Bytes of file contents archived of those measured, entries archived,
    /// and bytes whose upload completed.
    Rebuild,
}

/// Counters of one transfer, cheap to clone and to bump. The default is
/// inert: it counts nothing and reports nothing.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<Shared>>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(shared) => write!(f, "{:?}", shared.snapshot()),
            None => f.write_str("no progress"),
        }
    }
}

struct Shared {
    kind: Kind,
    started: Instant,
    /// Bytes expected in all; 0 while unknown.
    total: AtomicU64,
    done: AtomicU64,
    /// Files, directories and links expected (rebuild); 0 while unknown.
    entries_total: AtomicU64,
    entries_done: AtomicU64,
    /// Bytes handed to the upload, and those whose upload completed (rebuild).
    sent: AtomicU64,
    uploaded: AtomicU64,
    /// Set once the transfer is over; checked under the lock before each
    /// line, so no line follows `finish`.
    finished: Mutex<bool>,
    reporter: OnceLock<AbortOnDropHandle<()>>,
}

impl Progress {
    /// Starts counting, and reporting every interval if the process wants
    /// progress lines and this runs inside the async runtime.
    pub fn start(kind: Kind) -> Progress {
        Progress::start_every(kind, interval())
    }

    fn start_every(kind: Kind, interval: Option<Duration>) -> Progress {
        let shared = Arc::new(Shared {
            kind,
            started: Instant::now(),
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            entries_total: AtomicU64::new(0),
            entries_done: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            finished: Mutex::new(false),
            reporter: OnceLock::new(),
        });
        if let (Some(every), Ok(runtime)) = (interval, tokio::runtime::Handle::try_current()) {
            let task = runtime.spawn(report(Arc::downgrade(&shared), every));
            let _ = shared.reporter.set(AbortOnDropHandle::new(task));
        }
        Progress(Some(shared))
    }

    /// Sets the totals: bytes, and entries where they are counted.
    pub fn expect(&self, bytes: u64, entries: u64) {
        if let Some(s) = &self.0 {
            s.total.store(bytes, Relaxed);
            s.entries_total.store(entries, Relaxed);
        }
    }

    /// Adds bytes done. A restore's reports end once the whole entry is
    /// received (what is left is unpacking the last few megabytes).
    pub fn add(&self, bytes: u64) {
        if let Some(s) = &self.0 {
            let done = s.done.fetch_add(bytes, Relaxed) + bytes;
            let total = s.total.load(Relaxed);
            if s.kind == Kind::Restore && total > 0 && done >= total {
                self.finish();
            }
        }
    }

    /// Sets what is archived so far: bytes of file contents and entries.
    pub fn archived(&self, bytes: u64, entries: u64) {
        if let Some(s) = &self.0 {
            s.done.store(bytes, Relaxed);
            s.entries_done.store(entries, Relaxed);
        }
    }

    /// Adds bytes handed to the upload.
    pub fn sent(&self, bytes: u64) {
        if let Some(s) = &self.0 {
            s.sent.fetch_add(bytes, Relaxed);
        }
    }

    /// Adds bytes whose upload completed.
    pub fn uploaded(&self, bytes: u64) {
        if let Some(s) = &self.0 {
            s.uploaded.fetch_add(bytes, Relaxed);
        }
    }

    /// Ends the reports: no progress line is logged after this returns.
    pub fn finish(&self) {
        if let Some(s) = &self.0 {
            *s.finished.lock().unwrap_or_else(|e| e.into_inner()) = true;
        }
    }
}

async fn report(shared: Weak<Shared>, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let finished = shared.finished.lock().unwrap_or_else(|e| e.into_inner());
        if *finished {
            return;
        }
        log(&shared.snapshot());
    }
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    kind: Kind,
    elapsed: Duration,
    total: u64,
    done: u64,
    entries_total: u64,
    entries_done: u64,
    sent: u64,
    uploaded: u64,
}

impl Shared {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            kind: self.kind,
            elapsed: self.started.elapsed(),
            total: self.total.load(Relaxed),
            done: self.done.load(Relaxed),
            entries_total: self.entries_total.load(Relaxed),
            entries_done: self.entries_done.load(Relaxed),
            sent: self.sent.load(Relaxed),
            uploaded: self.uploaded.load(Relaxed),
        }
    }
}

impl Snapshot {
    /// Percent done, one decimal; `None` while the total is unknown.
    fn percent(&self) -> Option<f64> {
        (self.total > 0).then(|| {
            let p = self.done.min(self.total) as f64 * 100.0 / self.total as f64;
            (p * 10.0).floor() / 10.0
        })
    }

    /// Whether a rebuild has archived everything and only uploads.
    fn uploading(&self) -> bool {
        self.kind == Kind::Rebuild
            && self.entries_total > 0
            && self.entries_done >= self.entries_total
            && self.sent > 0
    }

    /// The rate of what is moving now: archiving, or once that is done,
    /// the upload; the average since the start.
    fn bytes_per_second(&self) -> u64 {
        let moved = if self.uploading() {
            self.uploaded
        } else {
            self.done
        };
        (moved as f64 / self.elapsed.as_secs_f64().max(0.001)) as u64
    }

    /// `restore: received 312.5 MB of 1.2 GB (26.0%), 45.1 MB/s`.
    fn line(&self) -> String {
        let of = |done: u64, total: u64| {
            let percent = done.min(total) as f64 * 100.0 / total.max(1) as f64;
            format!(
                "{} of {} ({:.1}%)",
                human::bytes(done),
                human::bytes(total),
                (percent * 10.0).floor() / 10.0
            )
        };
        let rate = format!("{}/s", human::bytes(self.bytes_per_second()));
        let archived = || {
            format!(
                "archived {}, {} of {} entries",
                of(self.done, self.total),
                human::count(self.entries_done),
                human::count(self.entries_total)
            )
        };
        match self.kind {
            Kind::Restore if self.total == 0 => {
                format!("restore: received {}, {rate}", human::bytes(self.done))
            }
            Kind::Restore => format!("restore: received {}, {rate}", of(self.done, self.total)),
            Kind::Rebuild if self.entries_total == 0 => format!(
                "rebuild: measuring the mounts ({} so far)",
                human::seconds(self.elapsed)
            ),
            Kind::Rebuild if self.uploading() => format!(
                "rebuild: {}; uploaded {}, {rate}",
                archived(),
                of(self.uploaded, self.sent)
            ),
            Kind::Rebuild => format!(
                "rebuild: {}, {rate}; uploaded {}",
                archived(),
                human::bytes(self.uploaded)
            ),
        }
    }
}

fn log(s: &Snapshot) {
    let line = s.line();
    let percent = s.percent().unwrap_or(0.0);
    let seconds = (s.elapsed.as_secs_f64() * 100.0).round() / 100.0;
    match s.kind {
        Kind::Restore => tracing::info!(
            target: TARGET,
            event = "progress",
            bytes_done = s.done,
            bytes_total = s.total,
            percent,
            bytes_per_second = s.bytes_per_second(),
            seconds,
            "{line}"
        ),
        Kind::Rebuild => tracing::info!(
            target: TARGET,
            event = "progress",
            bytes_done = s.done,
            bytes_total = s.total,
            percent,
            entries_done = s.entries_done,
            entries_total = s.entries_total,
            sent_bytes = s.sent,
            uploaded_bytes = s.uploaded,
            bytes_per_second = s.bytes_per_second(),
            seconds,
            "{line}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(kind: Kind, done: u64, total: u64) -> Snapshot {
        Snapshot {
            kind,
            elapsed: Duration::from_secs(10),
            total,
            done,
            entries_total: 15_000,
            entries_done: 1_234,
            sent: 400_000_000,
            uploaded: 300_000_000,
        }
    }

    #[test]
    fn lines_say_done_of_total_percent_and_rate() {
        assert_eq!(
            snapshot(Kind::Restore, 312_500_000, 1_200_000_000).line(),
            "restore: received 312.5 MB of 1.2 GB (26.0%), 31.2 MB/s"
        );
        assert_eq!(
            snapshot(Kind::Rebuild, 1_200_000_000, 3_400_000_000).line(),
            "rebuild: archived 1.2 GB of 3.4 GB (35.2%), 1,234 of 15,000 entries, \
             120.0 MB/s; uploaded 300.0 MB"
        );
        let mut uploading = snapshot(Kind::Rebuild, 3_400_000_000, 3_400_000_000);
        uploading.entries_done = 15_000;
        assert_eq!(
            uploading.line(),
            "rebuild: archived 3.4 GB of 3.4 GB (100.0%), 15,000 of 15,000 entries; \
             uploaded 300.0 MB of 400.0 MB (75.0%), 30.0 MB/s"
        );
        let mut measuring = snapshot(Kind::Rebuild, 0, 0);
        measuring.entries_total = 0;
        assert_eq!(
            measuring.line(),
            "rebuild: measuring the mounts (10.00 s so far)"
        );
        // A file that grew past its measured size never shows over 100%.
        assert_eq!(snapshot(Kind::Restore, 11, 10).percent(), Some(100.0));
        assert_eq!(snapshot(Kind::Restore, 5, 0).percent(), None);
    }

    #[test]
    fn the_default_counts_nothing() {
        let inert = Progress::default();
        inert.add(5);
        inert.expect(10, 1);
        inert.finish();
        assert!(inert.0.is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_reporter_ends_with_finish_or_with_the_counters() {
        let every = Some(Duration::from_millis(5));
        let progress = Progress::start_every(Kind::Restore, every);
        progress.expect(100, 0);
        progress.add(50);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let shared = Arc::clone(progress.0.as_ref().unwrap());
        assert!(!shared.reporter.get().unwrap().is_finished());
        progress.finish();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(shared.reporter.get().unwrap().is_finished());

        // Dropping the last handle stops the reporter too.
        let progress = Progress::start_every(Kind::Restore, every);
        let weak = Arc::downgrade(progress.0.as_ref().unwrap());
        drop(progress);
        assert!(weak.upgrade().is_none());
    }
}
