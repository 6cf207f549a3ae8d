//! The journal's appends, on a thread of their own.
//!
//! An append is one direct write that returns when the disk has the record
//! (`O_DSYNC`), a few hundred microseconds on a virtual disk that must be
//! flushed, during which the writer thread would otherwise sit idle. The
//! writer hands the journal over with the record, applies the next queued
//! group to its open transaction meanwhile, and takes the journal back
//! (with the append's result) before anything else touches it. Only one
//! append is ever in flight, so records stay in order.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::engine::journal::{AppendError, Journal};

type Done = (Journal, Result<(), AppendError>);

pub(super) struct Appender {
    jobs: SyncSender<(Journal, Vec<u8>)>,
    done: Receiver<Done>,
}

impl Appender {
    /// Starts the thread; it ends when the appender is dropped.
    pub(super) fn spawn() -> std::io::Result<Appender> {
        let (jobs, job_rx) = sync_channel::<(Journal, Vec<u8>)>(1);
        let (done_tx, done) = sync_channel::<Done>(1);
        std::thread::Builder::new()
            .name("drasi-store-journal".into())
            .spawn(move || {
                while let Ok((mut journal, record)) = job_rx.recv() {
                    let result = journal.append(&record);
                    if done_tx.send((journal, result)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Appender { jobs, done })
    }

    /// Starts appending `record`; [`Appender::finish`] returns the journal.
    pub(super) fn start(&self, journal: Journal, record: Vec<u8>) {
        // The thread lives as long as `done` does, which we hold; a send
        // fails only if it panicked, and then `finish` reports it.
        let _ = self.jobs.send((journal, record));
    }

    /// Waits for the append in flight.
    ///
    /// # Panics
    /// If the appender thread died (a panic in the journal): the journal
    /// is gone with it, so the writer cannot go on; its own panic makes the
    /// liveness probe fail and the restart replays the journal from disk.
    pub(super) fn finish(&self) -> Done {
        self.done
            .recv()
            .expect("the journal appender thread died with the journal")
    }
}
