//! The one worker pool: numbered jobs in, numbered results out, in any
//! order. The gzip writer and reader compress and inflate members on it; a
//! restore writes its small files on it. Callers bound how many jobs they
//! keep in flight (the job queue holds one per thread; results are
//! unbounded so a worker never blocks on a slow caller).

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What a pool reports: a finished job, or (from a feeder) the end.
pub enum Msg<T> {
    Done(u64, io::Result<T>),
    /// A feeder's last word: how many jobs it submitted, or why it stopped.
    End(io::Result<u64>),
}

pub struct Pool<J, T> {
    jobs: Option<SyncSender<(u64, J)>>,
    results: Receiver<Msg<T>>,
    workers: Vec<JoinHandle<()>>,
    /// Queued jobs are skipped once set (their results are errors).
    cancelled: Arc<AtomicBool>,
}

/// As many workers as cores.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl<J: Send + 'static, T: Send + 'static> Pool<J, T> {
    /// Starts `threads` workers, each with its own `state()`, running
    /// `work` on each job. Also returns a sender of results for a feeder;
    /// the pool keeps none itself, so `next` fails instead of blocking
    /// forever once every worker and feeder is gone.
    pub fn new<S: 'static>(
        threads: usize,
        state: impl Fn() -> S + Send + Sync + Clone + 'static,
        work: fn(&mut S, J) -> io::Result<T>,
    ) -> (Pool<J, T>, Sender<Msg<T>>) {
        let (jobs, job_rx) = sync_channel::<(u64, J)>(threads);
        let (results_tx, results) = channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let cancelled = Arc::new(AtomicBool::new(false));
        let workers = (0..threads)
            .map(|_| {
                let job_rx = Arc::clone(&job_rx);
                let results = results_tx.clone();
                let state = state.clone();
                let cancelled = Arc::clone(&cancelled);
                std::thread::spawn(move || {
                    let mut state = state();
                    loop {
                        let job = match job_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, job)) = job else { return };
                        if cancelled.load(Ordering::Relaxed) {
                            let skipped = io::Error::new(io::ErrorKind::Interrupted, "cancelled");
                            let _ = results.send(Msg::Done(seq, Err(skipped)));
                            continue;
                        }
                        // A panic is reported as this job's error, so no
                        // caller waits for a result that will never come.
                        let result = catch_unwind(AssertUnwindSafe(|| work(&mut state, job)));
                        let panicked = result.is_err();
                        let result = result
                            .unwrap_or_else(|_| Err(io::Error::other("a worker thread panicked")));
                        if results.send(Msg::Done(seq, result)).is_err() || panicked {
                            return;
                        }
                    }
                })
            })
            .collect();
        let pool = Pool {
            jobs: Some(jobs),
            results,
            workers,
            cancelled,
        };
        (pool, results_tx)
    }

    /// Queues a job; waits while every worker is busy and the queue is full.
    pub fn submit(&self, seq: u64, job: J) -> io::Result<()> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send((seq, job)).ok())
            .ok_or_else(stopped)
    }

    /// A sender of jobs, for a feeder thread.
    pub fn jobs(&self) -> Option<SyncSender<(u64, J)>> {
        self.jobs.clone()
    }

    /// The next result; waits for one.
    pub fn next(&self) -> io::Result<Msg<T>> {
        self.results.recv().map_err(|_| stopped())
    }

    /// The next result if one is there already.
    pub fn try_next(&self) -> io::Result<Option<Msg<T>>> {
        match self.results.try_recv() {
            Ok(msg) => Ok(Some(msg)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(stopped()),
        }
    }

    /// Skips the jobs still queued.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Lets the workers finish on their own when the pool is dropped,
    /// instead of waiting for them (a feeder may be stuck on a stalled
    /// download, and the caller is on its way to report an error).
    pub fn detach(&mut self) {
        self.workers.clear();
    }
}

impl<J, T> Drop for Pool<J, T> {
    /// Waits for the jobs being worked on, so nothing a job does happens
    /// after the pool is gone.
    fn drop(&mut self) {
        self.jobs.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("the worker threads stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_numbered_and_a_panic_is_an_error() {
        let (pool, _) = Pool::<u64, u64>::new(
            2,
            || 0u64,
            |count, n| {
                *count += 1;
                if n == 3 {
                    panic!("job 3");
                }
                Ok(n * 10)
            },
        );
        for n in 0..5 {
            pool.submit(n, n).unwrap();
        }
        let mut results = Vec::new();
        for _ in 0..5 {
            match pool.next().unwrap() {
                Msg::Done(seq, result) => results.push((seq, result.map_err(|e| e.to_string()))),
                Msg::End(_) => panic!("no feeder"),
            }
        }
        results.sort_by_key(|(seq, _)| *seq);
        assert_eq!(results[2], (2, Ok(20)));
        assert_eq!(results[3], (3, Err("a worker thread panicked".to_string())));
        assert_eq!(results[4].0, 4);
    }

    #[test]
    fn cancelled_jobs_are_skipped() {
        let (pool, _) = Pool::<u64, u64>::new(1, || (), |_, n| Ok(n));
        pool.cancel();
        pool.submit(1, 1).unwrap();
        let Msg::Done(1, Err(e)) = pool.next().unwrap() else {
            panic!("expected a skipped job")
        };
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
    }
}
