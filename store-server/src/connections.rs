//! One connection's life: deadlines, idleness and the connection cap.
//!
//! Anyone who can reach the port can open connections, token or not, so
//! nothing here may wait on a client forever:
//!
//! - **First request deadline.** TLS handshake, HTTP/1-vs-HTTP/2 detection
//!   and the first request's headers share one deadline
//!   (`--request-body-timeout-ms`) that starts at `accept`. A silent socket
//!   or one that only sent the HTTP/2 preface is closed when it passes.
//! - **Idle limit** (`--idle-timeout-ms`). A connection with no request in
//!   flight for that long is shut down gracefully, for HTTP/1 keep-alive and
//!   HTTP/2 alike; HTTP/2 keep-alive pings also close half-open peers.
//! - **Connection cap** (`--max-connections`). Over the cap, a small
//!   reserve of further connections is still accepted so that the kubelet's
//!   probes get through: they are served `/healthz` and `/readyz` and get a
//!   quick `503 unavailable` for anything else, then closed. Beyond the
//!   reserve, connections are closed at once.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse, Response};
use drasi_store_protocol::{ErrorCode, routes};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::http::errors::ApiError;

/// Connections accepted beyond `--max-connections`, for probes only.
pub const PROBE_RESERVE: usize = 32;
/// How long an over-cap connection may take to send its one request.
pub const RESERVE_DEADLINE: Duration = Duration::from_secs(2);
/// HTTP/2 PING interval and how long an answer may take before the
/// connection counts as dead.
pub const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// File descriptors kept for the database, the token and TLS files and
/// logging when the cap is derived from the open-file limit.
const RESERVED_FDS: libc::rlim_t = 64;

/// `--max-connections`, lowered when the open-file limit could not hold
/// that many sockets (plus the probe reserve): `EMFILE` would otherwise
/// refuse the probes before the cap does.
pub fn effective_cap(requested: usize) -> usize {
    let Some(nofile) = open_file_limit() else {
        return requested;
    };
    let room = usize::try_from(nofile.saturating_sub(RESERVED_FDS + PROBE_RESERVE as libc::rlim_t))
        .unwrap_or(usize::MAX);
    if room < requested {
        tracing::warn!(
            requested,
            open_file_limit = nofile,
            cap = room.max(1),
            "--max-connections is above what the open-file limit allows; lowering it"
        );
        room.max(1)
    } else {
        requested
    }
}

fn open_file_limit() -> Option<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// How a connection was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Normal,
    /// Over the cap: probes only, one request.
    ProbesOnly,
}

/// Request activity of one connection, shared with its service.
struct Activity {
    started: Instant,
    seen_request: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when the last request finished.
    last_done_ms: AtomicU64,
    /// Wakes [`serve`] when a request starts or ends, so that it moves its
    /// deadline; a notification without a waiter is kept for the next wait.
    changed: tokio::sync::Notify,
}

impl Activity {
    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_done_ms.store(ms, Ordering::Relaxed);
    }
}

/// The router, recording activity; over the cap, only the probes.
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
    admission: Admission,
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn call(&self, req: hyper::Request<Incoming>) -> BoxFuture {
        self.activity.seen_request.store(true, Ordering::Relaxed);
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        self.activity.changed.notify_one();
        let guard = InFlight(self.activity.clone());
        let probe = matches!(req.uri().path(), routes::HEALTHZ | routes::READYZ);
        if self.admission == Admission::ProbesOnly && !probe {
            drop(guard);
            return Box::pin(async {
                let mut response = ApiError::new(
                    ErrorCode::Unavailable,
                    "the server is at its connection limit (--max-connections); retry later",
                )
                .into_response();
                response.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
                Ok(response)
            });
        }
        let fut = hyper::service::Service::call(&self.inner, req);
        Box::pin(async move {
            let _guard = guard;
            fut.await
        })
    }
}

/// Deadlines of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// When the first request must have arrived (from `accept`).
    pub first_request: Instant,
    pub idle: Duration,
}

/// Serves one connection until the client closes it, a deadline passes,
/// or shutdown (`stop`) drains it.
pub async fn serve<IO>(
    builder: &auto::Builder<hyper_util::rt::TokioExecutor>,
    io: IO,
    app: Router,
    admission: Admission,
    deadlines: Deadlines,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        started: Instant::now(),
        seen_request: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        last_done_ms: AtomicU64::new(0),
        changed: tokio::sync::Notify::new(),
    });
    let service = Tracked {
        inner: TowerToHyperService::new(app),
        activity: activity.clone(),
        admission,
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = *stop.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    // When the connection counts as idle if nothing happens until then.
    let idle_at = || {
        let last = Duration::from_millis(activity.last_done_ms.load(Ordering::Relaxed));
        activity.started + last + deadlines.idle
    };
    loop {
        let wake = if !activity.seen_request.load(Ordering::Relaxed) {
            deadlines.first_request
        } else if activity.in_flight.load(Ordering::Relaxed) == 0 {
            idle_at()
        } else {
            // Busy: look again after one idle period.
            Instant::now() + deadlines.idle
        };
        tokio::select! {
            result = conn.as_mut() => return result,
            // A request started or ended: recompute the deadline.
            () = activity.changed.notified(), if !closing => {}
            changed = stop.changed(), if !closing => {
                if changed.is_err() || *stop.borrow() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep_until(wake), if !closing => {
                if !activity.seen_request.load(Ordering::Relaxed) {
                    // Nothing useful arrived in time: drop the socket.
                    return Err("no request before the deadline".into());
                }
                // Recomputed: a request may have come and gone meanwhile.
                if activity.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() >= idle_at() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
