//! Which tokio runtime runs a request, and the HTTP client bound to it.
//!
//! hyper drives each pooled connection with a task spawned on the runtime
//! that opened it, so a connection lives and dies with that runtime. The
//! provider owns a runtime for callers that cannot host requests (see
//! [`crate::transport`]), but sending every call there costs two
//! cross-runtime hand-offs per call (caller -> I/O runtime -> caller): on a
//! small VM each wakes a sleeping thread, which was a third of a `get`'s
//! latency and half the client's CPU per call.
//!
//! So a call made on a multi-thread runtime that has I/O and timers enabled
//! (what `#[tokio::main]` builds, and what DrasiLib apps run on) is sent
//! right there, with a client of that runtime's own: its connections'
//! tasks run on the runtime whose callers use them, and die with it. A
//! runtime's clients are never shared with another runtime, so a runtime
//! that shuts down takes only its own connections along. Current-thread
//! runtimes (DrasiLib polls dynamically loaded plugins on a fresh one per
//! call and drops it afterwards), runtimes without I/O or timers, calls
//! from outside tokio, and providers built with
//! `requests_on_caller_runtime(false)` keep using the provider's runtime.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::runtime::{Handle, Id, RuntimeFlavor};

/// Builds a client with the provider's settings (TLS roots, timeouts, pool).
pub(crate) type MakeClient = Box<dyn Fn() -> Result<reqwest::Client, String> + Send + Sync>;

pub(crate) struct Clients {
    make: MakeClient,
    /// The provider's own runtime and its client.
    own: (Id, reqwest::Client),
    /// Whether callers' runtimes may run requests at all.
    enabled: bool,
    /// One entry per caller runtime seen; entries of runtimes that shut
    /// down are dropped when the next new runtime is added.
    callers: RwLock<Vec<CallerRuntime>>,
}

struct CallerRuntime {
    id: Id,
    /// Held by a task on that runtime that never finishes: it is dropped,
    /// and this turns dead, when the runtime shuts down. Runtime ids are
    /// reused after a runtime ends, so the id alone could name a stranger.
    alive: Weak<()>,
    /// `None`: the runtime cannot run requests (no I/O or timer driver).
    client: Option<reqwest::Client>,
}

impl Clients {
    pub(crate) fn new(
        own_runtime: &Handle,
        make: MakeClient,
        enabled: bool,
    ) -> Result<Self, String> {
        let own = (own_runtime.id(), make()?);
        Ok(Self {
            make,
            own,
            enabled,
            callers: RwLock::new(Vec::new()),
        })
    }

    /// The client for a request sent from the current runtime, or `None`
    /// when the call must go to the provider's runtime instead.
    pub(crate) fn here(&self) -> Option<reqwest::Client> {
        let handle = Handle::try_current().ok()?;
        let id = handle.id();
        if id == self.own.0 {
            return Some(self.own.1.clone());
        }
        if !self.enabled || handle.runtime_flavor() != RuntimeFlavor::MultiThread {
            return None;
        }
        {
            let callers = self.callers.read().unwrap_or_else(|p| p.into_inner());
            if let Some(known) = callers
                .iter()
                .find(|c| c.id == id && c.alive.strong_count() > 0)
            {
                return known.client.clone();
            }
        }
        self.add(&handle)
    }

    /// The client for a request already running on some runtime: that
    /// runtime's, or the provider's own when the caller's cannot host it.
    pub(crate) fn current(&self) -> reqwest::Client {
        self.here().unwrap_or_else(|| self.own.1.clone())
    }

    #[cold]
    fn add(&self, handle: &Handle) -> Option<reqwest::Client> {
        let client = if has_io_and_timers(handle) {
            match (self.make)() {
                Ok(client) => Some(client),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot build an HTTP client for the caller's runtime; using the provider's");
                    None
                }
            }
        } else {
            tracing::debug!(
                "the caller's runtime has no I/O or timer driver; requests go to the provider's runtime"
            );
            None
        };
        let alive = Arc::new(());
        let entry = CallerRuntime {
            id: handle.id(),
            alive: Arc::downgrade(&alive),
            client: client.clone(),
        };
        handle.spawn(async move {
            let _alive = alive;
            std::future::pending::<()>().await;
        });
        let mut callers = self.callers.write().unwrap_or_else(|p| p.into_inner());
        callers.retain(|c| c.alive.strong_count() > 0 && c.id != entry.id);
        callers.push(entry);
        client
    }

    #[cfg(test)]
    pub(crate) fn caller_runtimes(&self) -> usize {
        let callers = self.callers.read().unwrap_or_else(|p| p.into_inner());
        callers
            .iter()
            .filter(|c| c.alive.strong_count() > 0)
            .count()
    }
}

/// Whether `handle`'s runtime was built with I/O and timers, which hyper
/// and the retry delays need. tokio has no query for it, only a panic on
/// first use, so this checks once per runtime with the panic caught (its
/// message may still be printed by the panic hook).
fn has_io_and_timers(handle: &Handle) -> bool {
    let _inside = handle.enter();
    std::panic::catch_unwind(|| {
        drop(tokio::time::sleep(Duration::ZERO));
        let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).ok()?;
        socket.set_nonblocking(true).ok()?;
        tokio::net::UdpSocket::from_std(socket).ok()
    })
    .ok()
    .flatten()
    .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(multi: bool, drivers: bool) -> tokio::runtime::Runtime {
        let mut builder = if multi {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        if drivers {
            builder.enable_all();
        }
        builder.build().unwrap()
    }

    fn clients(own: &tokio::runtime::Runtime, enabled: bool) -> Clients {
        let make: MakeClient = Box::new(|| {
            reqwest::Client::builder()
                .build()
                .map_err(|e| e.to_string())
        });
        Clients::new(own.handle(), make, enabled).unwrap()
    }

    #[test]
    fn only_live_multi_thread_runtimes_with_drivers_send_their_own_requests() {
        let own = runtime(true, true);
        let c = clients(&own, true);
        assert!(c.here().is_none(), "outside any runtime");
        assert!(
            own.block_on(async { c.here() }).is_some(),
            "the provider's own runtime"
        );
        assert_eq!(c.caller_runtimes(), 0, "the own runtime is not a caller's");

        let current = runtime(false, true);
        assert!(
            current.block_on(async { c.here() }).is_none(),
            "current-thread"
        );
        let no_drivers = runtime(true, false);
        assert!(
            no_drivers.block_on(async { c.here() }).is_none(),
            "no I/O or timers"
        );

        let app = runtime(true, true);
        assert!(app.block_on(async { c.here() }).is_some());
        assert!(
            app.block_on(async { c.here() }).is_some(),
            "looked up again"
        );
        // `no_drivers` is remembered (as unable), `app` as able.
        assert_eq!(c.caller_runtimes(), 2);

        drop(app);
        drop(no_drivers);
        // Their sentinels died with them; the next runtime (which may get a
        // reused id) is checked afresh.
        assert_eq!(c.caller_runtimes(), 0);
        let next = runtime(true, true);
        assert!(next.block_on(async { c.here() }).is_some());
        assert_eq!(c.caller_runtimes(), 1);
        // From within, `current()` picks that runtime's client too; from a
        // current-thread runtime, the provider's.
        next.block_on(async { drop(c.current()) });
        current.block_on(async { drop(c.current()) });
    }

    #[test]
    fn turned_off_every_caller_uses_the_providers_runtime() {
        let own = runtime(true, true);
        let c = clients(&own, false);
        let app = runtime(true, true);
        assert!(app.block_on(async { c.here() }).is_none());
        assert!(own.block_on(async { c.here() }).is_some());
        assert_eq!(c.caller_runtimes(), 0);
    }
}
