//! Reloading values parsed from files (auth tokens, the TLS certificate)
//! when the files' content changes.
//!
//! Kubernetes updates Secret volumes by swapping a symlink, which file-watch
//! APIs miss, so the files are polled: read every [`RELOAD_INTERVAL`],
//! compared with the previous read, and parsed only when they changed. New
//! content that does not parse, or files that cannot be read, keep the
//! current value: a half-written Secret must not lock clients out or take
//! TLS down.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

/// How often the files are re-read.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// A value backed by files.
pub(crate) trait Reload: Send + Sync + 'static {
    /// The raw content of the files, compared to notice changes cheaply.
    type Content: PartialEq + Send + 'static;

    /// What is reloaded, for log messages.
    const WHAT: &'static str;

    /// Reads the files (blocking I/O); the error names the file.
    fn read(&self) -> anyhow::Result<Self::Content>;

    /// Parses `content` and makes it current; on error the current value
    /// stays. The error names files and causes, never secrets.
    fn install(&self, content: &Self::Content) -> anyhow::Result<()>;
}

/// Polls one [`Reload`] source, remembering the last content it read.
pub(crate) struct Poller<T: Reload> {
    source: Arc<T>,
    /// What the previous poll read, good or bad, so that a broken file is
    /// reported once rather than every second; `None` after a failed read.
    last: Option<T::Content>,
}

impl<T: Reload> Poller<T> {
    /// Starts from the files as they are now: the caller has just loaded
    /// them, so the first poll reloads nothing.
    pub(crate) fn new(source: Arc<T>) -> Self {
        let last = source.read().ok();
        Poller { source, last }
    }

    /// Re-reads the files and installs their content when it changed.
    pub(crate) async fn poll(&mut self) {
        let source = self.source.clone();
        let content = match tokio::task::spawn_blocking(move || source.read()).await {
            Ok(Ok(content)) => content,
            Ok(Err(err)) => {
                if self.last.is_some() {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "cannot re-read the {}; keeping the current one",
                        T::WHAT
                    );
                    self.last = None;
                }
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "reloading the {} failed", T::WHAT);
                return;
            }
        };
        if self.last.as_ref() == Some(&content) {
            return;
        }
        // A failure here is also what a poll that reads one file of a pair
        // before and the other after a swap sees: the next poll reads the
        // whole new pair, which differs from this content, and loads it.
        if let Err(err) = self.source.install(&content) {
            tracing::warn!(
                error = format!("{err:#}"),
                "the changed {} does not load; keeping the current one",
                T::WHAT
            );
        }
        self.last = Some(content);
    }
}

/// Polls `source` every [`RELOAD_INTERVAL`] until the task is aborted.
pub(crate) fn spawn<T: Reload>(source: Arc<T>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut poller = Poller::new(source);
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            poller.poll().await;
        }
    })
}
