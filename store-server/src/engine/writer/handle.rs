//! The async side of the writer: the channel into the writer thread, one
//! reply channel per write, and the thread's lifecycle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::group::Writer;
use super::{Msg, Reply, WriteOp};
use crate::config::DurabilityMode;
use crate::engine::database::DbSlot;
use crate::engine::{EngineError, EngineResult, Health};
use crate::metrics::Metrics;

/// Whether the writer thread is doing its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriterState {
    Running,
    /// Stopped on purpose by [`WriterHandle::shutdown`].
    Stopped,
    /// Exited without being asked to (a panic): no write can succeed until
    /// the process restarts.
    Dead,
}

/// Most writes waiting for the writer. Their bodies are already bounded by
/// the in-flight body budget; this bounds their number (tiny deletes), so
/// a flood gets quick `503`s instead of an ever longer queue.
pub(crate) const QUEUE_CAPACITY: usize = 8192;

pub(crate) struct WriterHandle {
    tx: SyncSender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stopping: AtomicBool,
}

/// Starts the writer thread.
pub(crate) fn spawn(
    db: Arc<DbSlot>,
    mode: DurabilityMode,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    journal: Option<crate::engine::journal::Journal>,
) -> anyhow::Result<WriterHandle> {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
    let mut writer = Writer::new(db, mode, health, metrics, journal);
    let thread = std::thread::Builder::new()
        .name("drasi-store-writer".into())
        .spawn(move || {
            let _guard = ExitGuard;
            writer.run(rx)
        })?;
    Ok(WriterHandle {
        tx,
        thread: Mutex::new(Some(thread)),
        stopping: AtomicBool::new(false),
    })
}

impl WriterHandle {
    /// Queues one write and waits for the commit that contains it.
    pub async fn write(&self, op: WriteOp) -> EngineResult<Reply> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(EngineError::Unavailable);
        }
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Msg::Write(op, reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(EngineError::Busy {
                    capacity: QUEUE_CAPACITY,
                });
            }
            Err(TrySendError::Disconnected(_)) => return Err(EngineError::Unavailable),
        }
        // If this future is dropped (the client went away or timed out),
        // `rx` goes with it and the writer skips the write unless it has
        // already started the commit that holds it.
        match rx.await {
            Ok(result) => result,
            // The writer dropped the reply: it died mid-group.
            Err(oneshot::error::RecvError { .. }) => Err(EngineError::Unavailable),
        }
    }

    /// Queues several writes as one message, so they are applied in order
    /// and share a commit (unless a group limit splits them), and waits for
    /// each; every write gets its own result.
    pub async fn write_many(&self, ops: Vec<WriteOp>) -> Vec<EngineResult<Reply>> {
        let count = ops.len();
        if self.stopping.load(Ordering::Acquire) {
            return vec![Err(EngineError::Unavailable); count];
        }
        let mut receivers = Vec::with_capacity(count);
        let mut batch = Vec::with_capacity(count);
        for op in ops {
            let (reply, rx) = oneshot::channel();
            batch.push((op, reply));
            receivers.push(rx);
        }
        if self.tx.send(Msg::WriteMany(batch)).is_err() {
            return vec![Err(EngineError::Unavailable); count];
        }
        let mut results = Vec::with_capacity(count);
        for rx in receivers {
            results.push(match rx.await {
                Ok(result) => result,
                // The writer dropped the reply: it died mid-group.
                Err(oneshot::error::RecvError { .. }) => Err(EngineError::Unavailable),
            });
        }
        results
    }

    /// Tells the writer that partitions were detached behind its back (by
    /// the replication state machine), so its garbage collection runs. A
    /// full queue drops the hint: the writer is busy and will be told by
    /// the next one, or collects at its next start.
    pub fn collect_garbage(&self) {
        let _ = self.tx.try_send(Msg::CollectGarbage);
    }

    pub fn state(&self) -> WriterState {
        let guard = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(thread) if !thread.is_finished() => WriterState::Running,
            // `shutdown` sets `stopping` before the thread can end, and is
            // the only place that takes the handle.
            _ if self.stopping.load(Ordering::Acquire) => WriterState::Stopped,
            _ => WriterState::Dead,
        }
    }

    /// Makes the writer thread panic and waits until it is gone.
    #[cfg(test)]
    pub fn crash(&self) {
        use std::time::{Duration, Instant};
        let _ = self.tx.send(Msg::Crash);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state() == WriterState::Running {
            assert!(Instant::now() < deadline, "writer did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Blocks the writer until the returned sender is dropped.
    #[cfg(test)]
    pub fn hold(&self) -> std::sync::mpsc::Sender<()> {
        let (tx, release) = std::sync::mpsc::channel();
        let (held, is_held) = std::sync::mpsc::channel();
        self.tx
            .send(Msg::Hold { held, release })
            .expect("writer running");
        is_held.recv().expect("writer holds");
        tx
    }

    /// Stops the writer after it has committed everything queued, with a
    /// final durable commit.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        self.stopping.store(true, Ordering::Release);
        let (done, rx) = oneshot::channel();
        // A full queue makes `send` wait for the writer: off the executor.
        let tx = self.tx.clone();
        let sent = tokio::task::spawn_blocking(move || tx.send(Msg::Shutdown(done)).is_ok())
            .await
            .unwrap_or(false);
        let result = if sent {
            rx.await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("writer thread died during shutdown")))
        } else {
            Ok(())
        };
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await?
                .map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
        }
        result
    }
}

/// Logs, through tracing rather than only the panic hook's stderr line,
/// that the writer died: it is the event an operator needs to find.
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                "the group-commit writer thread panicked; every write now fails \
                 and /healthz reports 503 so that the pod is restarted"
            );
        }
    }
}
