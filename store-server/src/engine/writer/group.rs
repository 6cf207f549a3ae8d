//! The writer thread: grouping queued writes, choosing durability,
//! committing, and running garbage collection between groups.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use redb::{Durability, WriteTransaction};

use super::{Msg, Reply, ReplyTx, WriteOp};
use crate::config::DurabilityMode;
use crate::engine::database::{self, DbSlot};
use crate::engine::journal::{self, AppendError, Journal};
use crate::engine::schema::META;
use crate::engine::tables::Tables;
use crate::engine::{EngineError, EngineResult, Health, StorageContext as _, gc};
use crate::metrics::Metrics;

/// Most requests committed together. Bounds the latency one group adds.
pub(super) const MAX_GROUP_OPS: usize = 2048;
/// Most payload bytes committed together, so a burst of MB-scale values
/// does not build one huge transaction.
pub(super) const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;
/// With `--durability eventual`, the longest a non-durable commit waits
/// for the fsync that makes it durable. Also bounds how long GC progress
/// stays non-durable.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// While garbage is pending and clients keep the queue busy, run one GC
/// chunk after this many client groups so that collection still advances.
const GC_EVERY_GROUPS: u32 = 8;
/// First and longest wait before retrying a failed GC step or reopening
/// the database: quick when the cause was a blip, gentle on a disk that
/// stays broken.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Exponential backoff between [`RETRY_FIRST`] and [`RETRY_MAX`].
#[derive(Debug, Default)]
struct Backoff {
    /// When the next attempt is due; `None` when the last one succeeded.
    next_at: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    fn failed(&mut self) {
        self.delay = if self.delay.is_zero() {
            RETRY_FIRST
        } else {
            (self.delay * 2).min(RETRY_MAX)
        };
        self.next_at = Some(Instant::now() + self.delay);
    }

    fn succeeded(&mut self) {
        *self = Backoff::default();
    }

    fn due(&self) -> bool {
        self.next_at.is_none_or(|at| Instant::now() >= at)
    }
}

pub(super) struct Writer {
    db: Arc<DbSlot>,
    mode: DurabilityMode,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// When the oldest commit that is not yet durable happened.
    dirty_since: Option<Instant>,
    gc_pending: bool,
    /// Backoff after a failed GC step: the step is retried, never dropped.
    gc_retry: Backoff,
    groups_since_gc: u32,
    /// Backoff between attempts to reopen a wedged database.
    reopen_retry: Backoff,
    /// With `--durability immediate` (unless turned off): groups are
    /// fsynced as journal records and committed to redb without fsync,
    /// see [`journal`].
    journal: Option<Journal>,
    /// A failed append could not be invalidated on disk: until the next
    /// checkpoint (which makes every older record invalid) every group is
    /// committed durably instead.
    journal_suspect: bool,
}

impl Writer {
    pub(super) fn new(
        db: Arc<DbSlot>,
        mode: DurabilityMode,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        journal: Option<Journal>,
    ) -> Self {
        Writer {
            db,
            mode,
            health,
            metrics,
            dirty_since: None,
            // Garbage left by a previous run is collected after restart.
            gc_pending: true,
            gc_retry: Backoff::default(),
            groups_since_gc: 0,
            reopen_retry: Backoff::default(),
            journal,
            journal_suspect: false,
        }
    }

    pub(super) fn run(&mut self, rx: Receiver<Msg>) {
        let mut group: Vec<(WriteOp, ReplyTx)> = Vec::new();
        loop {
            let first = match self.next_message(&rx) {
                Next::Msg(m) => m,
                Next::Idle => continue,
                Next::Closed => {
                    let _ = self.flush("final");
                    return;
                }
            };
            let mut shutdown = None;
            match first {
                Msg::Write(op, reply) => group.push((op, reply)),
                Msg::WriteMany(ops) => group.extend(ops),
                Msg::Shutdown(done) => shutdown = Some(done),
                Msg::CollectGarbage => self.gc_pending = true,
                #[cfg(test)]
                Msg::Crash => panic!("writer crash requested by a test"),
                #[cfg(test)]
                Msg::Hold { held, release } => {
                    let _ = held.send(());
                    let _ = release.recv();
                    continue;
                }
            }
            if shutdown.is_none() {
                let mut bytes: usize = group.iter().map(|(op, _)| op.payload_bytes()).sum();
                while group.len() < MAX_GROUP_OPS && bytes < MAX_GROUP_BYTES {
                    match rx.try_recv() {
                        Ok(Msg::Write(op, reply)) => {
                            bytes += op.payload_bytes();
                            group.push((op, reply));
                        }
                        Ok(Msg::WriteMany(ops)) => {
                            bytes += ops.iter().map(|(op, _)| op.payload_bytes()).sum::<usize>();
                            group.extend(ops);
                        }
                        Ok(Msg::Shutdown(done)) => {
                            shutdown = Some(done);
                            break;
                        }
                        Ok(Msg::CollectGarbage) => self.gc_pending = true,
                        #[cfg(test)]
                        Ok(Msg::Crash) => panic!("writer crash requested by a test"),
                        #[cfg(test)]
                        Ok(Msg::Hold { held, release }) => {
                            let _ = held.send(());
                            let _ = release.recv();
                        }
                        Err(_) => break,
                    }
                }
            }
            if !group.is_empty() {
                self.commit_group(&mut group);
                self.groups_since_gc += 1;
                if self.gc_pending && self.gc_retry.due() && self.groups_since_gc >= GC_EVERY_GROUPS
                {
                    self.gc_step();
                }
            }
            if let Some(done) = shutdown {
                let result = self.flush("final");
                if result.is_ok() {
                    tracing::info!("writer stopped after a final durable commit");
                }
                let _ = done.send(result);
                return;
            }
        }
    }

    fn next_message(&mut self, rx: &Receiver<Msg>) -> Next {
        if !self.db.is_open() {
            return self.recover(rx);
        }
        if self.gc_pending && self.gc_retry.due() {
            match rx.try_recv() {
                Ok(m) => return Next::Msg(m),
                Err(TryRecvError::Disconnected) => return Next::Closed,
                Err(TryRecvError::Empty) => {
                    if self
                        .dirty_since
                        .is_some_and(|since| since.elapsed() >= FLUSH_INTERVAL)
                    {
                        let _ = self.flush("periodic");
                    }
                    self.gc_step();
                    return Next::Idle;
                }
            }
        }
        // Sleep until a message comes or the next background job is due.
        let flush_at = self.dirty_since.map(|since| since + FLUSH_INTERVAL);
        let gc_at = self.gc_retry.next_at.filter(|_| self.gc_pending);
        if let Some(wake) = flush_at.into_iter().chain(gc_at).min() {
            let wait = wake.saturating_duration_since(Instant::now());
            return match rx.recv_timeout(wait) {
                Ok(m) => Next::Msg(m),
                Err(RecvTimeoutError::Disconnected) => Next::Closed,
                Err(RecvTimeoutError::Timeout) => {
                    if flush_at.is_some_and(|at| Instant::now() >= at) {
                        let _ = self.flush("periodic");
                    }
                    Next::Idle
                }
            };
        }
        match rx.recv() {
            Ok(m) => Next::Msg(m),
            Err(_) => Next::Closed,
        }
    }

    /// After a failure: if redb's sticky I/O flag wedged the database, close
    /// it so that [`Writer::recover`] reopens it.
    fn check_wedged(&mut self) {
        let Ok(db) = self.db.get() else { return };
        if !database::is_wedged(&db) {
            return;
        }
        drop(db);
        tracing::error!(
            path = %self.db.path().display(),
            "the database refuses writes after an I/O error; closing it to reopen it"
        );
        self.health.set_recovering(Some(Instant::now()));
        self.db.close();
        // Commits made without fsync (`--durability eventual`) cannot be
        // flushed any more: reopening returns to the last durable commit,
        // the documented window of loss of that mode.
        self.dirty_since = None;
        self.reopen_retry.succeeded();
    }

    /// While the database is closed: reopen it when the backoff allows, and
    /// meanwhile answer every write with [`EngineError::Recovering`] so that
    /// clients retry instead of waiting.
    fn recover(&mut self, rx: &Receiver<Msg>) -> Next {
        if self.reopen_retry.due() {
            // Reopening returns to the last durable commit: the journal's
            // records since then are replayed before anyone reads.
            let journal = &mut self.journal;
            let metrics = &self.metrics;
            let replay = |db: &redb::Database| match journal {
                Some(journal) => {
                    let replayed = journal.recover(db)?;
                    metrics.journal_replayed_records.inc_by(replayed);
                    if replayed > 0 {
                        tracing::info!(records = replayed, "replayed the commit journal");
                    }
                    Ok(())
                }
                None => Ok(()),
            };
            match self.db.reopen(replay) {
                Ok(()) => {
                    tracing::info!(
                        path = %self.db.path().display(),
                        "database reopened after an I/O error; serving writes again"
                    );
                    self.reopen_retry.succeeded();
                    self.health.set_recovering(None);
                    self.health.last_commit_ok.store(true, Ordering::Relaxed);
                    // Opening made the last durable commit current (plus
                    // the journal's records); what `--durability eventual`
                    // committed without fsync since then is gone.
                    self.dirty_since = None;
                    self.journal_suspect = false;
                    self.gc_pending = true;
                    self.gc_retry.succeeded();
                    return Next::Idle;
                }
                Err(err) => {
                    self.reopen_retry.failed();
                    tracing::error!(
                        error = format!("{err:#}"),
                        retry_in_ms = self.reopen_retry.delay.as_millis() as u64,
                        "reopening the database failed"
                    );
                }
            }
        }
        let wake = self.reopen_retry.next_at.unwrap_or_else(Instant::now);
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(Msg::Write(_, reply)) => {
                let _ = reply.send(Err(EngineError::Recovering));
                Next::Idle
            }
            Ok(other) => Next::Msg(other),
            Err(RecvTimeoutError::Timeout) => Next::Idle,
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }

    fn must_be_durable(&self, group: &[(WriteOp, ReplyTx)]) -> bool {
        (self.mode == DurabilityMode::Immediate && self.journal.is_none())
            || self.journal_suspect
            || self
                .dirty_since
                .is_some_and(|since| since.elapsed() >= FLUSH_INTERVAL)
            || group.iter().any(|(op, _)| matches!(op, WriteOp::Sync))
    }

    fn begin(&self, durable: bool) -> EngineResult<WriteTransaction> {
        let mut txn = self.db.get()?.begin_write().ctx("begin write")?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .ctx("set durability")?;
        Ok(txn)
    }

    fn commit_group(&mut self, group: &mut Vec<(WriteOp, ReplyTx)>) {
        // A caller that gave up (client timeout, dropped connection) no
        // longer waits for its answer: its write has not started, so it is
        // dropped rather than applied behind the client's back.
        let before = group.len();
        group.retain(|(_, reply)| !reply.is_closed());
        if group.len() < before {
            tracing::debug!(
                cancelled = before - group.len(),
                "skipped writes whose callers went away"
            );
        }
        if group.is_empty() {
            return;
        }
        // A group the journal cannot take (an import, a sync, a record that
        // does not fit before the next checkpoint) is committed durably.
        let wants_durable = self.must_be_durable(group);
        let record = match &self.journal {
            Some(j) if !wants_durable => {
                journal::encode(group.iter().map(|(op, _)| op)).filter(|r| j.fits(r.len()))
            }
            _ => None,
        };
        let durable = wants_durable || (self.journal.is_some() && record.is_none());
        let started = Instant::now();
        let result = self.apply_group(group, durable, record.as_deref());
        let elapsed = started.elapsed();
        self.metrics.observe_commit(group.len(), elapsed);
        match result {
            Ok(replies) => {
                self.committed(durable);
                for ((op, reply), answer) in group.drain(..).zip(replies) {
                    // Both detach partitions for the GC to collect.
                    if matches!(op, WriteOp::Clear { .. } | WriteOp::Import(_)) {
                        self.gc_pending = true;
                    }
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(err) => {
                self.health.last_commit_ok.store(false, Ordering::Relaxed);
                tracing::error!(error = %err, ops = group.len(), "commit failed; every write in the group was rejected");
                for (_, reply) in group.drain(..) {
                    let _ = reply.send(Err(err.clone()));
                }
                self.check_wedged();
            }
        }
    }

    fn committed(&mut self, durable: bool) {
        self.health.last_commit_ok.store(true, Ordering::Relaxed);
        if durable {
            self.dirty_since = None;
        } else if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
    }

    /// Applies the group in one transaction. With a journal `record`, the
    /// record is appended and synced before the (non-durable) commit makes
    /// the group visible; a durable commit with a journal is a checkpoint.
    fn apply_group(
        &mut self,
        group: &[(WriteOp, ReplyTx)],
        durable: bool,
        record: Option<&[u8]>,
    ) -> EngineResult<Vec<Reply>> {
        let txn = self.begin(durable)?;
        let checkpoint = self
            .journal
            .as_ref()
            .filter(|_| durable)
            .map(Journal::next_checkpoint);
        let replies = {
            let mut tables = Tables::open(&txn)?;
            let replies = group
                .iter()
                .map(|(op, _)| tables.apply(op))
                .collect::<EngineResult<Vec<_>>>()?;
            tables.save_counters()?;
            if let Some(cp) = checkpoint {
                tables.save_checkpoint(cp)?;
            }
            if let (Some(_), Some(journal)) = (record, &self.journal) {
                tables.save_journal_seq(journal.next_seq())?;
            }
            replies
        };
        let Some(record) = record else {
            txn.commit().ctx("commit")?;
            self.checkpointed(checkpoint);
            return Ok(replies);
        };
        let journal = self.journal.as_mut().expect("a record implies a journal");
        let appended = journal.append(record);
        #[cfg(test)]
        let appended = appended.and_then(|()| {
            if take_one(&self.health.inject_append_failures) {
                // The record is on disk, as after a failed fsync whose
                // write went through: the worst case for discarding it.
                let journal = self.journal.as_mut().expect("a record implies a journal");
                journal.forget_last();
                Err(AppendError::Io(std::io::Error::other("injected by a test")))
            } else {
                Ok(())
            }
        });
        if let Err(err) = appended {
            let _ = txn.abort();
            let detail = match err {
                AppendError::Full => "the journal is full".to_string(),
                AppendError::Io(e) => e.to_string(),
            };
            self.discard_journal_record(false);
            return Err(EngineError::Storage {
                op: "journal append",
                detail,
            });
        }
        if let Err(err) = txn.commit() {
            self.discard_journal_record(true);
            return Err(EngineError::Storage {
                op: "commit",
                detail: err.to_string(),
            });
        }
        Ok(replies)
    }

    /// After the durable commit that saved `checkpoint` (none without a
    /// journal): the journal starts over and is trusted again.
    fn checkpointed(&mut self, checkpoint: Option<journal::Checkpoint>) {
        if let (Some(cp), Some(journal)) = (checkpoint, self.journal.as_mut()) {
            journal.checkpointed(cp);
            self.metrics.journal_checkpoints.inc();
            self.journal_suspect = false;
        }
    }

    /// After a group failed around its journal append: invalidates its
    /// record (whole or partial) so that no recovery applies a group that
    /// was answered with an error. If even that fails, the journal is not
    /// trusted until the next checkpoint.
    fn discard_journal_record(&mut self, appended: bool) {
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        #[cfg(test)]
        let injected = take_one(&self.health.inject_discard_failures);
        #[cfg(not(test))]
        let injected = false;
        let discarded = if injected {
            // The record stays valid on disk, as when zeroing it fails.
            Err(std::io::Error::other("injected by a test"))
        } else {
            journal.discard(appended)
        };
        if let Err(err) = discarded {
            tracing::error!(
                error = %err,
                path = %journal.path().display(),
                "could not invalidate a failed journal record; checkpointing to retire it"
            );
            // A checkpoint changes the key, which retires the record as
            // surely as zeroing it; until one succeeds, groups are
            // committed durably.
            self.journal_suspect = true;
            let _ = self.flush("retire a failed journal record");
        }
    }

    /// Makes every earlier non-durable commit durable (with a journal: a
    /// checkpoint).
    fn flush(&mut self, why: &'static str) -> anyhow::Result<()> {
        if self.dirty_since.is_none() && !self.journal_suspect {
            return Ok(());
        }
        let started = Instant::now();
        let checkpoint = self.journal.as_ref().map(Journal::next_checkpoint);
        let result = self.begin(true).and_then(|txn| {
            if let Some(cp) = checkpoint {
                let mut meta = txn.open_table(META).ctx("flush")?;
                cp.save(&mut meta)?;
            }
            txn.commit().ctx("flush")
        });
        match result {
            Ok(()) => {
                self.checkpointed(checkpoint);
                self.committed(true);
                tracing::debug!(
                    reason = why,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "flushed to disk"
                );
                Ok(())
            }
            Err(err) => {
                self.health.last_commit_ok.store(false, Ordering::Relaxed);
                tracing::error!(error = %err, reason = why, "durable flush failed");
                self.check_wedged();
                Err(err.into())
            }
        }
    }

    /// Deletes one bounded chunk of a cleared partition in its own
    /// (non-durable) transaction: the writer is never held for long, and a
    /// chunk lost in a crash is simply collected again.
    fn gc_step(&mut self) {
        self.groups_since_gc = 0;
        #[cfg(test)]
        if self
            .health
            .inject_gc_failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            self.gc_failed(EngineError::Storage {
                op: "gc",
                detail: "injected by a test".into(),
            });
            return;
        }
        let result = self.begin(false).and_then(|txn| {
            let progress = gc::collect_chunk(&txn, gc::CHUNK_ENTRIES)?;
            txn.commit().ctx("gc commit")?;
            Ok(progress)
        });
        match result {
            Ok(gc::Progress::Idle) => {
                self.gc_pending = false;
                self.gc_retry.succeeded();
            }
            Ok(gc::Progress::Removed {
                pid,
                removed,
                finished,
            }) => {
                self.committed(false);
                self.gc_retry.succeeded();
                self.metrics.gc_entries_deleted.inc_by(removed);
                if finished {
                    tracing::debug!(partition = pid, "cleared partition fully collected");
                }
            }
            Err(err) => self.gc_failed(err),
        }
    }

    /// The step is retried after a backoff (`gc_pending` stays set), so a
    /// transient failure delays collection but never ends it.
    fn gc_failed(&mut self, err: EngineError) {
        self.gc_retry.failed();
        tracing::warn!(
            error = %err,
            retry_in_ms = self.gc_retry.delay.as_millis() as u64,
            "garbage collection step failed; retrying later"
        );
        self.check_wedged();
    }
}

/// Takes one injected failure from `counter`, if any is left.
#[cfg(test)]
fn take_one(counter: &std::sync::atomic::AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

enum Next {
    Msg(Msg),
    /// Background work was done; look for messages again.
    Idle,
    Closed,
}
