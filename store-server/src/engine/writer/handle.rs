//! The async side of the writer: the channel into the writer thread, one
//! reply channel per write, and the thread's lifecycle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redb::Database;
use tokio::sync::oneshot;

use super::group::Writer;
use super::{Msg, Reply, WriteOp};
use crate::config::DurabilityMode;
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

pub(crate) struct WriterHandle {
    tx: Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stopping: AtomicBool,
}

/// Starts the writer thread.
pub(crate) fn spawn(
    db: Arc<Database>,
    mode: DurabilityMode,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<WriterHandle> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut writer = Writer::new(db, mode, health, metrics);
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
        self.tx
            .send(Msg::Write(op, reply))
            .map_err(|_| EngineError::Unavailable)?;
        match rx.await {
            Ok(result) => result,
            // The writer dropped the reply: it died mid-group.
            Err(oneshot::error::RecvError { .. }) => Err(EngineError::Unavailable),
        }
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

    /// Stops the writer after it has committed everything queued, with a
    /// final durable commit.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        self.stopping.store(true, Ordering::Release);
        let (done, rx) = oneshot::channel();
        let sent = self.tx.send(Msg::Shutdown(done)).is_ok();
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
