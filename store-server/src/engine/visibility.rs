//! Which acknowledged writes a reader is guaranteed to see.
//!
//! With the commit journal, a group is durable once its journal record is on
//! disk; the redb commit that makes it visible to read transactions is only
//! bookkeeping. So the writer answers a journaled group as soon as its record
//! is synced and commits the redb transaction afterwards: straight away when
//! nothing else is queued (the commit then overlaps the answer's trip back to
//! the client), or, while more writes keep coming, after a few more groups
//! joined the same transaction (one commit for several groups). See
//! `writer::group` for when exactly.
//!
//! That opens a window in which a write is acknowledged but not yet visible.
//! Readers close it: a reader that finds acknowledged groups not yet
//! committed asks the writer to commit now and waits for it, so every write
//! acknowledged before a read began is visible to that read (reads stay
//! linearizable). Only the writer thread moves the two counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{EngineError, EngineResult};

/// Longest a reader waits for the writer's commit. The writer commits right
/// after the group it is working on, so this is only reached when the writer
/// is stuck (a disk that stopped answering); the reader then gets a
/// retryable error instead of hanging.
const WAIT_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(crate) struct Visibility {
    /// Groups acknowledged so far.
    acked: AtomicU64,
    /// Of those, how many a new read transaction sees.
    visible: AtomicU64,
    /// A reader is waiting: the writer commits after its current group.
    wanted: AtomicBool,
    /// The writer thread is gone with acknowledged groups not committed;
    /// they come back from the journal when the process restarts.
    broken: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
}

impl Visibility {
    /// Writer: a group is acknowledged (called before its answers go out).
    pub(crate) fn acknowledged(&self) {
        self.acked.fetch_add(1, SeqCst);
    }

    /// Writer: every acknowledged group is in the database's latest commit.
    pub(crate) fn all_committed(&self) {
        self.visible.store(self.acked.load(SeqCst), SeqCst);
        if self.wanted.swap(false, SeqCst) {
            self.wake();
        }
    }

    /// Writer: whether a reader waits for the next commit.
    pub(crate) fn is_wanted(&self) -> bool {
        self.wanted.load(SeqCst)
    }

    /// The writer thread died: waiting readers give up.
    pub(crate) fn writer_gone(&self) {
        self.broken.store(true, SeqCst);
        self.wake();
    }

    /// Wakes waiting readers so that they look again (e.g. because the
    /// database was closed under them).
    pub(crate) fn wake(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.cond.notify_all();
    }

    /// Reader: returns once every group acknowledged before this call is
    /// visible; gives up when `still_open` says the database was closed
    /// (it is being reopened) or the writer is gone.
    pub(crate) fn wait(&self, still_open: impl Fn() -> bool) -> EngineResult<()> {
        let want = self.acked.load(SeqCst);
        if self.visible.load(SeqCst) >= want {
            return Ok(());
        }
        let deadline = Instant::now() + WAIT_MAX;
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Set under the lock and before looking, so that a commit in
            // between either is seen here or notifies this waiter.
            self.wanted.store(true, SeqCst);
            if self.visible.load(SeqCst) >= want {
                return Ok(());
            }
            if self.broken.load(SeqCst) {
                return Err(EngineError::Unavailable);
            }
            if !still_open() {
                return Err(EngineError::Recovering);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(EngineError::Unavailable);
            }
            guard = self
                .cond
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_reader_waits_only_for_groups_acknowledged_before_it() {
        let v = Visibility::default();
        v.wait(|| true).unwrap();
        v.acknowledged();
        v.all_committed();
        v.wait(|| true).unwrap();
        assert!(!v.is_wanted(), "nothing was waited for");
    }

    #[test]
    fn a_reader_waits_for_the_commit_and_asks_for_it() {
        let v = Arc::new(Visibility::default());
        v.acknowledged();
        let reader = std::thread::spawn({
            let v = v.clone();
            move || v.wait(|| true)
        });
        let started = Instant::now();
        while !v.is_wanted() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "reader never asked"
            );
            std::thread::yield_now();
        }
        assert!(
            !reader.is_finished(),
            "the reader returned before the commit"
        );
        // A group acknowledged after the reader began is not waited for.
        v.all_committed();
        v.acknowledged();
        reader.join().unwrap().unwrap();
    }

    #[test]
    fn a_reader_gives_up_when_the_writer_dies_or_the_database_closes() {
        let v = Arc::new(Visibility::default());
        v.acknowledged();
        assert!(matches!(v.wait(|| false), Err(EngineError::Recovering)));
        let reader = std::thread::spawn({
            let v = v.clone();
            move || v.wait(|| true)
        });
        while !v.is_wanted() {
            std::thread::yield_now();
        }
        v.writer_gone();
        assert!(matches!(
            reader.join().unwrap(),
            Err(EngineError::Unavailable)
        ));
    }
}
