//! The writer thread: grouping queued writes, choosing durability,
//! committing, and running garbage collection between groups.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use redb::{Durability, WriteTransaction};

use super::appender::Appender;
use super::{Msg, Reply, ReplyTx, WriteOp};
use crate::config::DurabilityMode;
use crate::engine::database::{self, DbSlot};
use crate::engine::journal::{self, AppendError, Journal};
use crate::engine::schema::META;
use crate::engine::tables::Tables;
use crate::engine::{EngineError, EngineResult, Health, StorageContext as _, gc};
use crate::metrics::Metrics;

/// Most requests committed together. Bounds the latency one group adds.
pub(crate) const MAX_GROUP_OPS: usize = 2048;
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
/// While writes keep arriving, journaled groups share one redb transaction
/// (see [`Kept`]) until one of these is reached; they bound the
/// transaction's dirty pages, the ops kept to apply again, and how long a
/// reader can wait.
const PENDING_MAX_OPS: usize = 4 * MAX_GROUP_OPS;
const PENDING_MAX_BYTES: usize = 16 * 1024 * 1024;
const PENDING_MAX_AGE: Duration = Duration::from_millis(5);

/// The ops of acknowledged groups that the open transaction holds but has
/// not committed: if the transaction has to be abandoned (a later group
/// failed in it, or its commit failed), they are applied again in a fresh
/// one, since their answers are already out (see `engine::visibility`).
#[derive(Default)]
struct Kept {
    ops: Vec<WriteOp>,
    groups: u32,
    /// The journal record of the last of them.
    seq: u64,
    bytes: usize,
    /// When the first of them was acknowledged.
    since: Option<Instant>,
}

/// A group applied to the open transaction whose journal record is being
/// appended (see [`appender`](super::appender)); it is answered when the
/// append returns.
struct InFlight {
    group: Vec<(WriteOp, ReplyTx)>,
    replies: Vec<Reply>,
    seq: u64,
    started: Instant,
}

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
    /// see [`journal`]. `None` while an append is in flight (the appender
    /// holds it) or without a journal.
    journal: Option<Journal>,
    /// Whether the server runs with a journal at all.
    journaled: bool,
    appender: Option<Appender>,
    in_flight: Option<InFlight>,
    /// A failed append could not be invalidated on disk: until the next
    /// checkpoint (which makes every older record invalid) every group is
    /// committed durably instead.
    journal_suspect: bool,
    /// The open transaction: acknowledged groups not committed yet
    /// ([`Kept`]), the group in flight, and the group being applied.
    txn: Option<WriteTransaction>,
    kept: Kept,
}

impl Writer {
    pub(super) fn new(
        db: Arc<DbSlot>,
        mode: DurabilityMode,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        journal: Option<Journal>,
    ) -> std::io::Result<Self> {
        let appender = journal.as_ref().map(|_| Appender::spawn()).transpose()?;
        Ok(Writer {
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
            journaled: journal.is_some(),
            journal,
            appender,
            in_flight: None,
            journal_suspect: false,
            txn: None,
            kept: Kept::default(),
        })
    }

    pub(super) fn run(&mut self, rx: Receiver<Msg>) {
        let mut group: Vec<(WriteOp, ReplyTx)> = Vec::new();
        // A message taken off the queue to see whether more writes follow.
        let mut stashed = None;
        loop {
            let first = match stashed.take() {
                Some(m) => m,
                None => match self.next_message(&rx) {
                    Next::Msg(m) => m,
                    Next::Idle => continue,
                    Next::Closed => {
                        let _ = self.flush("final");
                        return;
                    }
                },
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
                            self.commit_open();
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
            }
            if self.txn.is_some() && shutdown.is_none() {
                // More writes already queued join the open transaction
                // while the last group's record is appended; anything else
                // (or nothing, once the append is done) commits it first,
                // so the writer never waits for messages with a
                // transaction open.
                stashed = self.more_writes(&rx);
                if stashed.is_none() {
                    self.settle();
                    stashed = self.more_writes(&rx);
                }
                if !matches!(stashed, Some(Msg::Write(..) | Msg::WriteMany(_))) {
                    self.commit_open();
                }
            }
            if self.txn.is_none()
                && self.gc_pending
                && self.gc_retry.due()
                && self.groups_since_gc >= GC_EVERY_GROUPS
            {
                self.gc_step();
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
        if self.txn.is_some() {
            // Not after a failure: the transaction would wait for itself.
            return;
        }
        let Ok(db) = self.db.get() else { return };
        if !database::is_wedged(&db) {
            return;
        }
        drop(db);
        tracing::error!(
            path = %self.db.path().display(),
            "the database refuses writes after an I/O error; closing it to reopen it"
        );
        self.close_to_reopen();
    }

    /// Closes the database so that [`Writer::recover`] reopens it and
    /// replays the journal.
    fn close_to_reopen(&mut self) {
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
                    // The replay brought back every acknowledged group.
                    self.db.visibility().all_committed();
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
        (self.mode == DurabilityMode::Immediate && !self.journaled)
            || self.journal_suspect
            || self
                .dirty_since
                .is_some_and(|since| since.elapsed() >= FLUSH_INTERVAL)
            || group.iter().any(|(op, _)| matches!(op, WriteOp::Sync))
    }

    fn begin(&self, durable: bool) -> EngineResult<WriteTransaction> {
        // redb allows one write transaction at a time: a second one from
        // this thread would wait for itself.
        debug_assert!(self.txn.is_none(), "a transaction is already open");
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
        let record = if self.journaled && !wants_durable {
            journal::encode(group.iter().map(|(op, _)| op))
        } else {
            None
        };
        let Some(record) = record else {
            self.settle();
            self.commit_now(group, wants_durable || self.journaled);
            return;
        };
        let started = Instant::now();
        let seq = self.next_seq();
        let replies = match self.apply_to_txn(group, Some(seq), None) {
            Ok(replies) => replies,
            Err(err) => {
                // The transaction held the acknowledged groups and the one
                // in flight: settle that one, then apply them again.
                self.txn = None;
                self.settle();
                self.restore();
                self.reject(group, err);
                return;
            }
        };
        // This group's record follows the one in flight: wait for it.
        let had_in_flight = self.in_flight.is_some();
        self.settle();
        if had_in_flight && self.txn.is_none() {
            // That append failed and took the transaction, with this group
            // in it, down; this group has not been answered: start over.
            return self.commit_group(group);
        }
        self.start_append(std::mem::take(group), replies, record, seq, started);
    }

    /// Answers `group` with `err` (nothing of it was applied).
    fn reject(&mut self, group: &mut Vec<(WriteOp, ReplyTx)>, err: EngineError) {
        self.health.last_commit_ok.store(false, Ordering::Relaxed);
        tracing::error!(error = %err, ops = group.len(), "commit failed; every write in the group was rejected");
        for (_, reply) in group.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
        self.check_wedged();
    }

    fn committed(&mut self, durable: bool) {
        self.health.last_commit_ok.store(true, Ordering::Relaxed);
        if durable {
            self.dirty_since = None;
        } else if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
    }

    /// The next queued message if it is a write that may join the open
    /// transaction; any other message is taken too (the caller commits
    /// before handling it).
    fn more_writes(&mut self, rx: &Receiver<Msg>) -> Option<Msg> {
        let next = rx.try_recv().ok()?;
        if matches!(next, Msg::Write(..) | Msg::WriteMany(_)) && self.txn_full() {
            self.commit_open();
        }
        Some(next)
    }

    /// The sequence number the next journal record gets.
    fn next_seq(&self) -> u64 {
        match (&self.in_flight, &self.journal) {
            (Some(f), _) => f.seq + 1,
            (None, Some(journal)) => journal.next_seq(),
            (None, None) => unreachable!("a journaled group without a journal"),
        }
    }

    /// Applies the group to the open transaction (opening one if needed).
    /// `seq` is its journal record's; `checkpoint` is saved with it. On an
    /// error the transaction is left to the caller to abandon.
    fn apply_to_txn(
        &mut self,
        group: &[(WriteOp, ReplyTx)],
        seq: Option<u64>,
        checkpoint: Option<journal::Checkpoint>,
    ) -> EngineResult<Vec<Reply>> {
        if self.txn.is_none() {
            self.txn = Some(self.begin(false)?);
        }
        let txn = self.txn.as_ref().expect("opened above");
        let mut tables = Tables::open(txn)?;
        let replies = group
            .iter()
            .map(|(op, _)| tables.apply(op))
            .collect::<EngineResult<Vec<_>>>()?;
        tables.save_counters()?;
        if let Some(cp) = checkpoint {
            tables.save_checkpoint(cp)?;
        }
        if let Some(seq) = seq {
            tables.save_journal_seq(seq)?;
        }
        Ok(replies)
    }

    /// Hands the group's record to the appender; the group is answered by
    /// [`Writer::settle`]. A record that does not fit before the next
    /// checkpoint makes the checkpoint now instead.
    fn start_append(
        &mut self,
        group: Vec<(WriteOp, ReplyTx)>,
        replies: Vec<Reply>,
        record: Vec<u8>,
        seq: u64,
        started: Instant,
    ) {
        let journal = self.journal.take().expect("no append in flight");
        if !journal.fits(record.len()) {
            self.journal = Some(journal);
            let mut group = group;
            // The flush commits the group with the acknowledged ones.
            match self.flush("the journal is full") {
                Ok(()) => {
                    self.metrics.observe_commit(group.len(), started.elapsed());
                    self.db.visibility().acknowledged();
                    self.db.visibility().all_committed();
                    self.answer(group, replies);
                }
                Err(err) => self.reject(
                    &mut group,
                    EngineError::Storage {
                        op: "checkpoint",
                        detail: format!("{err:#}"),
                    },
                ),
            }
            return;
        }
        self.appender
            .as_ref()
            .expect("a journal implies an appender")
            .start(journal, record);
        self.in_flight = Some(InFlight {
            group,
            replies,
            seq,
            started,
        });
    }

    /// Waits for the append in flight, if any, and answers its group: once
    /// its record is on disk, or with the error (then the open transaction,
    /// which holds it, is abandoned and the acknowledged groups in it are
    /// applied again).
    fn settle(&mut self) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        #[cfg(test)]
        std::thread::sleep(Duration::from_millis(
            self.health.inject_append_delay_ms.load(Ordering::Relaxed),
        ));
        let appender = self
            .appender
            .as_ref()
            .expect("a journal implies an appender");
        let (journal, appended) = appender.finish();
        self.journal = Some(journal);
        #[cfg(test)]
        let appended = appended.and_then(|()| {
            if !take_one(&self.health.inject_append_skips)
                && take_one(&self.health.inject_append_failures)
            {
                // The record is on disk, as after a failed fsync whose
                // write went through: the worst case for discarding it.
                let journal = self.journal.as_mut().expect("returned above");
                journal.forget_last();
                Err(AppendError::Io(std::io::Error::other("injected by a test")))
            } else {
                Ok(())
            }
        });
        self.metrics
            .observe_commit(f.group.len(), f.started.elapsed());
        match appended {
            Ok(()) => {
                // Durable: answered now, visible at the next commit.
                self.db.visibility().acknowledged();
                self.committed(false);
                let kept = &mut self.kept;
                kept.groups += 1;
                kept.seq = f.seq;
                kept.bytes += f
                    .group
                    .iter()
                    .map(|(op, _)| op.payload_bytes())
                    .sum::<usize>();
                kept.since.get_or_insert_with(Instant::now);
                self.answer_kept(f.group, f.replies);
            }
            Err(err) => {
                self.txn = None;
                // Before the record is discarded: discarding may
                // checkpoint, which must not cover journaled groups
                // missing from redb.
                self.restore();
                self.discard_journal_record(false);
                let detail = match err {
                    AppendError::Full => "the journal is full".to_string(),
                    AppendError::Io(e) => e.to_string(),
                };
                let mut group = f.group;
                self.reject(
                    &mut group,
                    EngineError::Storage {
                        op: "journal append",
                        detail,
                    },
                );
            }
        }
    }

    /// Answers an acknowledged group whose ops stay in [`Kept`] until the
    /// open transaction commits.
    fn answer_kept(&mut self, group: Vec<(WriteOp, ReplyTx)>, replies: Vec<Reply>) {
        for ((op, reply), answer) in group.into_iter().zip(replies) {
            // Both detach partitions for the GC to collect.
            if matches!(op, WriteOp::Clear { .. } | WriteOp::Import(_)) {
                self.gc_pending = true;
            }
            let _ = reply.send(Ok(answer));
            self.kept.ops.push(op);
        }
    }

    /// Answers a group that is committed already.
    fn answer(&mut self, group: Vec<(WriteOp, ReplyTx)>, replies: Vec<Reply>) {
        for ((op, reply), answer) in group.into_iter().zip(replies) {
            if matches!(op, WriteOp::Clear { .. } | WriteOp::Import(_)) {
                self.gc_pending = true;
            }
            let _ = reply.send(Ok(answer));
        }
    }

    /// Applies and commits a group that is not journaled, with the open
    /// transaction's acknowledged groups: durably (a checkpoint, with a
    /// journal), or without fsync under `--durability eventual`.
    fn commit_now(&mut self, group: &mut Vec<(WriteOp, ReplyTx)>, durable: bool) {
        let started = Instant::now();
        let checkpoint = self
            .journal
            .as_ref()
            .filter(|_| durable)
            .map(Journal::next_checkpoint);
        let result = self
            .apply_to_txn(group, None, checkpoint)
            .and_then(|replies| {
                let mut txn = self.txn.take().expect("opened by apply_to_txn");
                if durable {
                    txn.set_durability(Durability::Immediate).map_err(|e| {
                        EngineError::Storage {
                            op: "set durability",
                            detail: e.to_string(),
                        }
                    })?;
                }
                txn.commit().ctx("commit")?;
                Ok(replies)
            });
        self.metrics.observe_commit(group.len(), started.elapsed());
        match result {
            Ok(replies) => {
                let kept = std::mem::take(&mut self.kept);
                self.count_commit(kept.groups + 1);
                self.checkpointed(checkpoint);
                self.committed(durable);
                self.db.visibility().acknowledged();
                self.db.visibility().all_committed();
                self.answer(std::mem::take(group), replies);
            }
            Err(err) => {
                self.txn = None;
                self.restore();
                self.reject(group, err);
            }
        }
    }

    /// Whether the open transaction should be committed even though more
    /// writes are queued: it is big or old enough, or a reader waits.
    fn txn_full(&self) -> bool {
        let kept = &self.kept;
        kept.ops.len() >= PENDING_MAX_OPS
            || kept.bytes >= PENDING_MAX_BYTES
            || kept.since.is_some_and(|t| t.elapsed() >= PENDING_MAX_AGE)
            || self.db.visibility().is_wanted()
    }

    /// Settles the append in flight and commits the open transaction
    /// (without fsync: its groups are in the journal), making its groups
    /// visible to readers.
    fn commit_open(&mut self) {
        self.settle();
        let Some(txn) = self.txn.take() else {
            return;
        };
        #[cfg(test)]
        if take_one(&self.health.inject_pending_commit_failures) {
            drop(txn);
            tracing::error!("commit failure injected by a test; applying the groups again");
            self.restore();
            return;
        }
        match txn.commit() {
            Ok(()) => {
                let kept = std::mem::take(&mut self.kept);
                self.count_commit(kept.groups);
                self.committed(false);
                self.db.visibility().all_committed();
            }
            Err(err) => {
                tracing::error!(
                    error = %err,
                    groups = self.kept.groups,
                    "committing acknowledged groups failed; applying them again"
                );
                self.restore();
            }
        }
    }

    /// Applies the acknowledged groups of an abandoned transaction again
    /// and commits them. If even that fails, the database is closed so that
    /// reopening it replays them from the journal; until then readers are
    /// told the store is recovering rather than shown a state without
    /// writes that were acknowledged.
    fn restore(&mut self) {
        debug_assert!(self.txn.is_none(), "the transaction was abandoned");
        let kept = std::mem::take(&mut self.kept);
        if kept.groups == 0 {
            return;
        }
        let result = self.begin(false).and_then(|txn| {
            {
                let mut tables = Tables::open(&txn)?;
                for op in &kept.ops {
                    tables.apply(op)?;
                }
                tables.save_counters()?;
                tables.save_journal_seq(kept.seq)?;
            }
            txn.commit().ctx("commit")
        });
        match result {
            Ok(()) => {
                self.count_commit(kept.groups);
                self.committed(false);
                self.db.visibility().all_committed();
            }
            Err(err) => {
                self.health.last_commit_ok.store(false, Ordering::Relaxed);
                tracing::error!(
                    error = %err,
                    groups = kept.groups,
                    "could not apply acknowledged groups again; reopening the database to replay them from the journal"
                );
                if self.db.is_open() {
                    self.close_to_reopen();
                }
            }
        }
    }

    fn count_commit(&self, groups: u32) {
        if groups == 0 {
            return;
        }
        self.metrics.database_commits.inc();
        self.metrics
            .groups_per_database_commit
            .observe(f64::from(groups));
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

    /// Makes every earlier non-durable commit, and the open transaction,
    /// durable (with a journal: a checkpoint).
    fn flush(&mut self, why: &'static str) -> anyhow::Result<()> {
        self.settle();
        if self.dirty_since.is_none() && !self.journal_suspect && self.txn.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let checkpoint = self.journal.as_ref().map(Journal::next_checkpoint);
        let txn = match self.txn.take() {
            Some(txn) => Ok(txn),
            None => self.begin(true),
        };
        let result = txn.and_then(|mut txn| {
            txn.set_durability(Durability::Immediate)
                .map_err(|e| EngineError::Storage {
                    op: "flush",
                    detail: e.to_string(),
                })?;
            if let Some(cp) = checkpoint {
                let mut meta = txn.open_table(META).ctx("flush")?;
                cp.save(&mut meta)?;
            }
            txn.commit().ctx("flush")
        });
        match result {
            Ok(()) => {
                let kept = std::mem::take(&mut self.kept);
                self.count_commit(kept.groups);
                self.checkpointed(checkpoint);
                self.committed(true);
                self.db.visibility().all_committed();
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
                self.restore();
                self.check_wedged();
                Err(err.into())
            }
        }
    }

    /// Deletes one bounded chunk of a cleared partition in its own
    /// (non-durable) transaction: the writer is never held for long, and a
    /// chunk lost in a crash is simply collected again.
    fn gc_step(&mut self) {
        self.commit_open();
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
