//! The writer thread: grouping queued writes, choosing durability,
//! committing, and running garbage collection between groups.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use redb::{Database, Durability, WriteTransaction};

use super::{Msg, Reply, ReplyTx, WriteOp};
use crate::config::DurabilityMode;
use crate::engine::tables::Tables;
use crate::engine::{EngineResult, Health, StorageContext as _, gc};
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

pub(super) struct Writer {
    db: Arc<Database>,
    mode: DurabilityMode,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// When the oldest commit that is not yet durable happened.
    dirty_since: Option<Instant>,
    gc_pending: bool,
    groups_since_gc: u32,
}

impl Writer {
    pub(super) fn new(
        db: Arc<Database>,
        mode: DurabilityMode,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Writer {
            db,
            mode,
            health,
            metrics,
            dirty_since: None,
            // Garbage left by a previous run is collected after restart.
            gc_pending: true,
            groups_since_gc: 0,
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
                Msg::Shutdown(done) => shutdown = Some(done),
                #[cfg(test)]
                Msg::Crash => panic!("writer crash requested by a test"),
            }
            if shutdown.is_none() {
                let mut bytes = group[0].0.payload_bytes();
                while group.len() < MAX_GROUP_OPS && bytes < MAX_GROUP_BYTES {
                    match rx.try_recv() {
                        Ok(Msg::Write(op, reply)) => {
                            bytes += op.payload_bytes();
                            group.push((op, reply));
                        }
                        Ok(Msg::Shutdown(done)) => {
                            shutdown = Some(done);
                            break;
                        }
                        #[cfg(test)]
                        Ok(Msg::Crash) => panic!("writer crash requested by a test"),
                        Err(_) => break,
                    }
                }
            }
            if !group.is_empty() {
                self.commit_group(&mut group);
                self.groups_since_gc += 1;
                if self.gc_pending && self.groups_since_gc >= GC_EVERY_GROUPS {
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
        if self.gc_pending {
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
        if let Some(since) = self.dirty_since {
            let wait = (since + FLUSH_INTERVAL).saturating_duration_since(Instant::now());
            return match rx.recv_timeout(wait) {
                Ok(m) => Next::Msg(m),
                Err(RecvTimeoutError::Disconnected) => Next::Closed,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.flush("periodic");
                    Next::Idle
                }
            };
        }
        match rx.recv() {
            Ok(m) => Next::Msg(m),
            Err(_) => Next::Closed,
        }
    }

    fn must_be_durable(&self, group: &[(WriteOp, ReplyTx)]) -> bool {
        self.mode == DurabilityMode::Immediate
            || self
                .dirty_since
                .is_some_and(|since| since.elapsed() >= FLUSH_INTERVAL)
            || group.iter().any(|(op, _)| matches!(op, WriteOp::Sync))
    }

    fn begin(&self, durable: bool) -> EngineResult<WriteTransaction> {
        let mut txn = self.db.begin_write().ctx("begin write")?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .ctx("set durability")?;
        Ok(txn)
    }

    fn commit_group(&mut self, group: &mut Vec<(WriteOp, ReplyTx)>) {
        let durable = self.must_be_durable(group);
        let started = Instant::now();
        let result = self.apply_group(group, durable);
        let elapsed = started.elapsed();
        self.metrics.observe_commit(group.len(), elapsed);
        match result {
            Ok(replies) => {
                self.committed(durable);
                for ((op, reply), answer) in group.drain(..).zip(replies) {
                    if matches!(op, WriteOp::Clear { .. }) {
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

    fn apply_group(&self, group: &[(WriteOp, ReplyTx)], durable: bool) -> EngineResult<Vec<Reply>> {
        let txn = self.begin(durable)?;
        let replies = {
            let mut tables = Tables::open(&txn)?;
            let replies = group
                .iter()
                .map(|(op, _)| tables.apply(op))
                .collect::<EngineResult<Vec<_>>>()?;
            tables.save_counters()?;
            replies
        };
        txn.commit().ctx("commit")?;
        Ok(replies)
    }

    /// Makes every earlier non-durable commit durable.
    fn flush(&mut self, why: &'static str) -> anyhow::Result<()> {
        if self.dirty_since.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let result = self.begin(true).and_then(|txn| txn.commit().ctx("flush"));
        match result {
            Ok(()) => {
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
                Err(err.into())
            }
        }
    }

    /// Deletes one bounded chunk of a cleared partition in its own
    /// (non-durable) transaction: the writer is never held for long, and a
    /// chunk lost in a crash is simply collected again.
    fn gc_step(&mut self) {
        self.groups_since_gc = 0;
        let result = self.begin(false).and_then(|txn| {
            let progress = gc::collect_chunk(&txn, gc::CHUNK_ENTRIES)?;
            txn.commit().ctx("gc commit")?;
            Ok(progress)
        });
        match result {
            Ok(gc::Progress::Idle) => self.gc_pending = false,
            Ok(gc::Progress::Removed {
                pid,
                removed,
                finished,
            }) => {
                self.committed(false);
                self.metrics.gc_entries_deleted.inc_by(removed);
                if finished {
                    tracing::debug!(partition = pid, "cleared partition fully collected");
                }
            }
            Err(err) => {
                // Retried on the next idle turn; client writes are unaffected.
                tracing::warn!(error = %err, "garbage collection step failed");
                self.gc_pending = false;
            }
        }
    }
}

enum Next {
    Msg(Msg),
    /// Background work was done; look for messages again.
    Idle,
    Closed,
}
