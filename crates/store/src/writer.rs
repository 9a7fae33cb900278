//! The group-commit writer: one thread owns the write connection; the jobs that arrive
//! while it waits, or within the batch window after the first, share one transaction,
//! each inside a savepoint of its own unless it undoes its own writes when it fails (a
//! job that fails undoes only its own writes); every job is answered once the transaction
//! has committed.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::{StoreError, StoreStats};

/// What a job leaves to do once its transaction has committed (or failed): answer its
/// caller.
pub(crate) type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A job's work: runs on the writer's connection, inside the batch's transaction; says
/// whether its writes are to be kept (a job that failed has them undone) and what to do
/// once the transaction is over.
type Work = Box<dyn FnOnce(&Connection) -> (bool, Done) + Send>;

/// A write job.
pub(crate) struct Job {
    /// Whether the job undoes its own writes when it fails (then it runs without a
    /// savepoint of its own).
    atomic: bool,
    run: Work,
}

/// The handle the store keeps: where jobs go.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: SyncSender<Job>,
    stats: Arc<StoreStats>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    ///
    /// # Errors
    ///
    /// The thread could not be started.
    pub(crate) fn start(
        conn: Connection,
        batch_max: usize,
        window: Duration,
        queue: usize,
        stats: Arc<StoreStats>,
    ) -> std::io::Result<Writer> {
        let (jobs, rx) = std::sync::mpsc::sync_channel(queue.max(1));
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("herald-store-writer".to_owned())
            .spawn(move || run(conn, rx, batch_max.max(1), window, &thread_stats))?;
        Ok(Writer { jobs, stats })
    }

    /// Runs `f` in the writer's next transaction; resolves with its result once that
    /// transaction has committed (or with [`StoreError::Unavailable`] if it did not).
    /// Never blocks the caller: a full queue refuses the job at once.
    pub(crate) fn submit<T, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.queue(false, f)
    }

    /// As [`Writer::submit`], for a job that writes nothing when it fails (one statement,
    /// say): it runs without a savepoint.
    pub(crate) fn submit_atomic<T, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.queue(true, f)
    }

    fn queue<T, F>(
        &self,
        atomic: bool,
        f: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op = crate::stats::operation();
        let run: Work = Box::new(move |conn| {
            let result = crate::stats::in_job(op, || f(conn));
            let keep = result.is_ok();
            let done: Done = Box::new(move |committed: Result<(), StoreError>| {
                let _ = tx.send(committed.and(result));
            });
            (keep, done)
        });
        let job = Job { atomic, run };
        let queued = match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                StoreStats::add(&self.stats.refused, 1);
                Err(StoreError::Unavailable(
                    "the store's write queue is full".to_owned(),
                ))
            }
            Err(TrySendError::Disconnected(_)) => {
                Err(StoreError::Unavailable("the store is closed".to_owned()))
            }
        };
        async move {
            queued?;
            rx.await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the store's writer stopped".to_owned(),
                ))
            })
        }
    }
}

/// The writer thread: until every handle is gone, take a batch, run it, commit, answer.
fn run(
    mut conn: Connection,
    rx: Receiver<Job>,
    batch_max: usize,
    window: Duration,
    stats: &StoreStats,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(batch_max);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        // Time through tokio's clock (it falls back to the system's outside a runtime).
        let deadline = tokio::time::Instant::now() + window;
        while batch.len() < batch_max {
            // What is already queued joins without waiting; then the window's rest.
            match rx.try_recv() {
                Ok(job) => {
                    batch.push(job);
                    continue;
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        commit(&mut conn, &mut batch, stats);
    }
}

/// Runs `batch` in one transaction, each job but the atomic ones in a savepoint, and
/// answers every job.
fn commit(conn: &mut Connection, batch: &mut Vec<Job>, stats: &StoreStats) {
    let jobs = batch.len() as u64;
    let mut done: Vec<Done> = Vec::with_capacity(batch.len());
    let outcome = (|| -> Result<(), rusqlite::Error> {
        let tx = conn.transaction()?;
        for job in batch.drain(..) {
            if job.atomic {
                done.push((job.run)(&tx).1);
                continue;
            }
            crate::sqlite::run(&tx, "SAVEPOINT job")?;
            let (keep, finish) = (job.run)(&tx);
            if !keep {
                crate::sqlite::run(&tx, "ROLLBACK TO job")?;
            }
            crate::sqlite::run(&tx, "RELEASE job")?;
            done.push(finish);
        }
        tx.commit()
    })();
    match outcome {
        Ok(()) => {
            StoreStats::add(&stats.commits, 1);
            StoreStats::add(&stats.jobs, jobs);
            for d in done {
                d(Ok(()));
            }
        }
        Err(e) => {
            StoreStats::add(&stats.failed_commits, 1);
            tracing::error!(error = %e, jobs, "store: a write transaction failed");
            batch.clear();
            for d in done {
                d(Err(StoreError::Unavailable(e.to_string())));
            }
        }
    }
}
