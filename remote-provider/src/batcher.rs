//! Opportunistic batching of single-key calls.
//!
//! Each lane (reads: `get`, `contains_key`; writes: `set`, `delete`) lets
//! [`MAX_IN_FLIGHT`] requests run at once. A call that finds a free slot goes
//! out at once, alone, on the ordinary single-key route: at concurrency 1
//! nothing waits and nothing changes. A call that finds every slot taken
//! joins the lane's queue; whoever finishes a request next sends the whole
//! queue as one `POST /v1/batch` (up to [`MAX_BATCH_CALLS`] calls and
//! [`MAX_BATCH_BYTES`]) instead of giving the slot back. So under
//! concurrency many calls share one round trip and their writes one durable
//! commit, and no call ever waits for a timer.
//!
//! Each call keeps its own answer and its own guarantee: the server answers
//! a batched write only after the commit that holds it, and a call with bad
//! input gets its own error while the others go ahead. Reads and writes use
//! separate lanes so a read never waits for a write's fsync.
//!
//! Calls are only queued while they are all in flight together, so any
//! order among them is one a caller could have observed anyway; the server
//! applies a batch's writes in queue order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use drasi_lib::StateStoreError;
use drasi_store_protocol::endpoints::{self, Endpoint};
use drasi_store_protocol::{
    DeleteResponse, ErrorCode, MixedKind, MixedOp, MixedResult, encode_mixed_ops, encode_query,
};
use reqwest::StatusCode;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::answer;
use crate::error::{CallContext, Failure, Op};
use crate::transport::{Lost, Shared, method_of};

/// Requests in flight per lane. Two keep one batch on the wire while the
/// previous one waits for its commit; more would only split the queue into
/// smaller batches and more commits.
const MAX_IN_FLIGHT: usize = 2;
/// Most calls in one batch request (far below the server's default
/// `--max-batch-entries`).
const MAX_BATCH_CALLS: usize = 512;
/// Most encoded bytes in one batch request (far below the server's default
/// `--max-body-bytes`); a batch always takes at least one call.
const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Calls whose store_id, key and value add up to more than this are never
/// queued: they go out alone, so one large value cannot hold up a batch of
/// checkpoints.
const MAX_BATCHED_CALL_BYTES: usize = 64 * 1024;

/// One single-key call.
pub(crate) struct Call {
    pub(crate) kind: MixedKind,
    pub(crate) store: String,
    pub(crate) key: String,
    /// The value for `set`, empty otherwise.
    pub(crate) value: Bytes,
}

impl Call {
    fn op(&self) -> Op {
        match self.kind {
            MixedKind::Get => Op::Get,
            MixedKind::Set => Op::Set,
            MixedKind::Delete => Op::Delete,
            MixedKind::ContainsKey => Op::ContainsKey,
        }
    }

    fn endpoint(&self) -> &'static Endpoint {
        match self.kind {
            MixedKind::Get => &endpoints::GET,
            MixedKind::Set => &endpoints::SET,
            MixedKind::Delete => &endpoints::DELETE,
            MixedKind::ContainsKey => &endpoints::CONTAINS_KEY,
        }
    }

    fn lane(&self) -> usize {
        usize::from(self.kind.is_write())
    }

    /// Size of this call in a batch frame.
    fn encoded_bytes(&self) -> usize {
        13 + self.store.len() + self.key.len() + self.value.len()
    }

    fn context<'a>(&'a self, server: &'a str, attempts: u32) -> CallContext<'a> {
        CallContext {
            op: self.op(),
            store: Some(&self.store),
            server,
            attempts,
        }
    }
}

pub(crate) type CallResult = Result<MixedResult, StateStoreError>;
type Reply = oneshot::Sender<CallResult>;

#[derive(Default)]
struct LaneState {
    in_flight: usize,
    queue: Vec<(Call, Reply)>,
    queued_bytes: usize,
}

/// The queues of one provider (shared by its clones).
pub(crate) struct Batcher {
    lanes: [Mutex<LaneState>; 2],
    /// Set when batching is turned off, or when the server does not know
    /// `/v1/batch` (an older version): from then on every call goes out
    /// alone.
    off: AtomicBool,
    /// Every call goes through the batch route, even alone (for tests).
    always: bool,
}

enum Admission {
    /// A slot was free: send the call now, then hand the slot on.
    Go(Call),
    /// Queued behind the requests in flight.
    Queued(oneshot::Receiver<CallResult>),
    /// Not batchable: send it alone, outside the lanes.
    Alone(Call),
}

impl Batcher {
    pub(crate) fn new(enabled: bool, always: bool) -> Self {
        Self {
            lanes: Default::default(),
            off: AtomicBool::new(!enabled),
            always: enabled && always,
        }
    }

    fn admit(&self, call: Call) -> Admission {
        if call.encoded_bytes() > MAX_BATCHED_CALL_BYTES || self.off.load(Ordering::Relaxed) {
            return Admission::Alone(call);
        }
        let mut lane = lock(&self.lanes[call.lane()]);
        if lane.in_flight < MAX_IN_FLIGHT {
            lane.in_flight += 1;
            return Admission::Go(call);
        }
        let (tx, rx) = oneshot::channel();
        lane.queued_bytes += call.encoded_bytes();
        lane.queue.push((call, tx));
        Admission::Queued(rx)
    }

    /// Takes the next batch off `lane`'s queue, or gives the caller's slot
    /// back when the queue is empty.
    fn next_batch(&self, lane: usize) -> Option<Vec<(Call, Reply)>> {
        let mut state = lock(&self.lanes[lane]);
        if state.queue.is_empty() {
            state.in_flight -= 1;
            return None;
        }
        if state.queue.len() <= MAX_BATCH_CALLS && state.queued_bytes <= MAX_BATCH_BYTES {
            state.queued_bytes = 0;
            return Some(std::mem::take(&mut state.queue));
        }
        let mut bytes = 0;
        let mut take = 0;
        for (call, _) in &state.queue {
            let next = call.encoded_bytes();
            if take > 0 && (take == MAX_BATCH_CALLS || bytes + next > MAX_BATCH_BYTES) {
                break;
            }
            bytes += next;
            take += 1;
        }
        state.queued_bytes -= bytes;
        Some(state.queue.drain(..take).collect())
    }
}

/// A poisoned lane only means another thread panicked while holding it;
/// its plain counters and queue are still consistent.
fn lock(lane: &Mutex<LaneState>) -> std::sync::MutexGuard<'_, LaneState> {
    lane.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs one single-key call, batched with others when they pile up.
pub(crate) async fn call(shared: &Arc<Shared>, handle: &Handle, call: Call) -> CallResult {
    match shared.batcher.admit(call) {
        Admission::Queued(rx) => rx.await.unwrap_or_else(|_| Err(batch_lost())),
        Admission::Alone(call) => {
            let on = Arc::clone(shared);
            run_on(shared, handle, async move { on.single(&call).await }).await
        }
        Admission::Go(call) => {
            let slot = Slot {
                shared: Arc::clone(shared),
                lane: call.lane(),
            };
            run_on(shared, handle, async move {
                let shared = &slot.shared;
                if shared.batcher.always {
                    let (tx, rx) = oneshot::channel();
                    shared.send_batch(vec![(call, tx)]).await;
                    rx.await.unwrap_or_else(|_| Err(batch_lost()))
                } else {
                    shared.single(&call).await
                }
                // `slot` drops here and hands the lane on.
            })
            .await
        }
    }
}

/// Runs `task` where [`Shared::run`] puts it (see [`crate::runtimes`]).
async fn run_on(
    shared: &Shared,
    handle: &Handle,
    task: impl std::future::Future<Output = CallResult> + Send + 'static,
) -> CallResult {
    match shared.run(handle, task).await {
        Ok(result) => result,
        Err(Lost::Panicked) => Err(StateStoreError::Other(
            "remote state store: the request task panicked".to_string(),
        )),
        Err(Lost::RuntimeGone) => Err(runtime_gone()),
    }
}

/// A queued call whose batch was dropped unanswered: the runtime sending it
/// shut down (a caller's, or the provider's own at drop).
fn batch_lost() -> StateStoreError {
    StateStoreError::Other(
        "remote state store: the runtime that sent this call's batch shut down before the answer came; the call may or may not have been applied".into(),
    )
}

fn runtime_gone() -> StateStoreError {
    StateStoreError::Other("remote state store: the provider's I/O runtime has shut down".into())
}

/// A lane slot held by a call that went out alone. Dropping it, when the
/// request finished (or its task panicked or was cancelled), sends what
/// queued up meanwhile, in a task of its own so the finished call's answer
/// is not held up, or frees the slot: queued calls are never stranded.
struct Slot {
    shared: Arc<Shared>,
    lane: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(first) = self.shared.batcher.next_batch(self.lane) else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let lane = self.lane;
        let drain = async move {
            let mut batch = Some(first);
            while let Some(calls) = batch {
                shared.send_batch(calls).await;
                batch = shared.batcher.next_batch(lane);
            }
        };
        // Outside a runtime (the provider's is shutting down) the queued
        // calls' replies drop and their callers get a clear error.
        if let Ok(runtime) = Handle::try_current() {
            runtime.spawn(drain);
        }
    }
}

impl Shared {
    /// One call on its own single-key route, as without batching.
    async fn single(&self, call: &Call) -> CallResult {
        let endpoint = call.endpoint();
        let (path, target) = self.path(endpoint, Some(encode_query(&call.store, Some(&call.key))));
        let target = target.as_deref();
        let method = method_of(endpoint);
        let op = call.op();
        let outcome = match call.kind {
            MixedKind::Get => {
                self.execute(op, method, &path, target, None, &|r| async move {
                    Ok(match answer::value(r).await? {
                        Some(v) => MixedResult::Value(v),
                        None => MixedResult::Absent,
                    })
                })
                .await
            }
            MixedKind::Set => {
                self.execute(
                    op,
                    method,
                    &path,
                    target,
                    Some(&call.value),
                    &|r| async move { answer::unit(r).await.map(|()| MixedResult::Done) },
                )
                .await
            }
            MixedKind::Delete => {
                self.execute(op, method, &path, target, None, &|r| async move {
                    let answer: DeleteResponse = answer::json(r).await?;
                    Ok(present(answer.existed))
                })
                .await
            }
            MixedKind::ContainsKey => {
                self.execute(op, method, &path, target, None, &|r| async move {
                    answer::exists(r).await.map(present)
                })
                .await
            }
        };
        outcome
            .map_err(|(failure, attempts)| call.context(&self.server, attempts).into_error(failure))
    }

    /// Sends `calls` as one `POST /v1/batch` and answers each caller.
    async fn send_batch(&self, calls: Vec<(Call, Reply)>) {
        let ops: Vec<MixedOp<'_>> = calls
            .iter()
            .map(|(c, _)| MixedOp {
                kind: c.kind,
                store: &c.store,
                key: &c.key,
                value: &c.value,
            })
            .collect();
        let body = Bytes::from(encode_mixed_ops(&ops));
        drop(ops);
        // A batch may be replayed after an unknown outcome only if every
        // call in it may be.
        let op = if calls.iter().any(|(c, _)| c.kind == MixedKind::Delete) {
            Op::Delete
        } else if calls.iter().any(|(c, _)| c.kind.is_write()) {
            Op::Set
        } else {
            Op::Get
        };
        let (path, _) = self.path(&endpoints::BATCH, None);
        let outcome = self
            .execute(
                op,
                method_of(&endpoints::BATCH),
                &path,
                None,
                Some(&body),
                &answer::mixed,
            )
            .await;
        match outcome {
            Ok(results) if results.len() == calls.len() => {
                for ((call, reply), result) in calls.into_iter().zip(results) {
                    let _ = reply.send(match result {
                        // The server applied nothing for this call (it is
                        // stopping or its writer is busy failing): give it
                        // the retries it would get on its own route.
                        MixedResult::Error(body) if body.code == ErrorCode::Unavailable => {
                            self.single(&call).await
                        }
                        // The node lost its leader while this write was in
                        // flight: like a lone call's indeterminate answer,
                        // resent (through the failover path) only when a
                        // replay gives the same answer.
                        MixedResult::Error(body)
                            if body.code == ErrorCode::Indeterminate
                                && call.op().is_idempotent() =>
                        {
                            self.single(&call).await
                        }
                        MixedResult::Error(body) => {
                            let failure = Failure::Status {
                                status: StatusCode::from_u16(body.code.http_status())
                                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                                body: Some(body),
                            };
                            Err(call.context(&self.server, 1).into_error(failure))
                        }
                        ok => Ok(ok),
                    });
                }
            }
            Ok(results) => {
                let failure = Failure::Decode(format!(
                    "the batch answer has {} results for {} calls",
                    results.len(),
                    calls.len()
                ));
                for (call, reply) in calls {
                    let _ = reply.send(Err(call.context(&self.server, 1).error_for(&failure)));
                }
            }
            Err((failure, _)) if self.batch_refused(&failure) => {
                // Nothing in the batch was applied: send every call alone.
                for (call, reply) in calls {
                    let single = self.single(&call).await;
                    let _ = reply.send(single);
                }
            }
            Err((failure, attempts)) => {
                for (call, reply) in calls {
                    let _ = reply.send(Err(call
                        .context(&self.server, attempts)
                        .error_for(&failure)));
                }
            }
        }
    }

    /// Whether the server refused the batch as such (and applied nothing):
    /// an older server without the route, or limits configured below the
    /// batch's size. Either way each call still deserves its own attempt.
    fn batch_refused(&self, failure: &Failure) -> bool {
        let Failure::Status { status, .. } = failure else {
            return false;
        };
        let unknown_route = matches!(status.as_u16(), 404 | 405)
            && matches!(
                failure.code(),
                None | Some(ErrorCode::RouteNotFound) | Some(ErrorCode::MethodNotAllowed)
            );
        if unknown_route {
            tracing::info!(server = %self.server, "the server has no batch route; sending every call alone");
            self.batcher.off.store(true, Ordering::Relaxed);
            return true;
        }
        matches!(
            failure.code(),
            Some(ErrorCode::BatchTooLarge | ErrorCode::BodyTooLarge)
        )
    }
}

fn present(yes: bool) -> MixedResult {
    if yes {
        MixedResult::Present
    } else {
        MixedResult::Absent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(kind: MixedKind, value_len: usize) -> Call {
        Call {
            kind,
            store: "s".into(),
            key: "k".into(),
            value: Bytes::from(vec![0u8; value_len]),
        }
    }

    fn in_flight(b: &Batcher, lane: usize) -> usize {
        lock(&b.lanes[lane]).in_flight
    }

    #[test]
    fn calls_go_alone_until_the_lane_is_full_then_queue() {
        let b = Batcher::new(true, false);
        for _ in 0..MAX_IN_FLIGHT {
            assert!(matches!(b.admit(call(MixedKind::Set, 8)), Admission::Go(_)));
        }
        let _rx1 = match b.admit(call(MixedKind::Set, 8)) {
            Admission::Queued(rx) => rx,
            _ => panic!("a full lane must queue"),
        };
        let _rx2 = match b.admit(call(MixedKind::Delete, 0)) {
            Admission::Queued(rx) => rx,
            _ => panic!("a full lane must queue"),
        };
        // Reads have a lane of their own: a busy write lane does not hold
        // them up.
        assert!(matches!(b.admit(call(MixedKind::Get, 0)), Admission::Go(_)));
        assert_eq!(in_flight(&b, 1), MAX_IN_FLIGHT);

        // A finished request takes the whole queue and keeps its slot...
        let batch = b.next_batch(1).expect("queued calls");
        assert_eq!(batch.len(), 2);
        assert_eq!(in_flight(&b, 1), MAX_IN_FLIGHT);
        // ...and gives the slot back once nothing is queued.
        assert!(b.next_batch(1).is_none());
        assert_eq!(in_flight(&b, 1), MAX_IN_FLIGHT - 1);
    }

    #[test]
    fn batches_are_bounded_by_calls_and_bytes() {
        let b = Batcher::new(true, false);
        for _ in 0..MAX_IN_FLIGHT {
            assert!(matches!(b.admit(call(MixedKind::Set, 8)), Admission::Go(_)));
        }
        let mut receivers = Vec::new();
        for _ in 0..MAX_BATCH_CALLS + 10 {
            match b.admit(call(MixedKind::Set, 8)) {
                Admission::Queued(rx) => receivers.push(rx),
                _ => panic!("a full lane must queue"),
            }
        }
        assert_eq!(b.next_batch(1).unwrap().len(), MAX_BATCH_CALLS);
        assert_eq!(b.next_batch(1).unwrap().len(), 10);
        assert!(b.next_batch(1).is_none());

        // 32 KiB values: a 1 MiB batch holds fewer than 32 of them.
        let big = 32 * 1024;
        for _ in 0..40 {
            match b.admit(call(MixedKind::Set, big)) {
                Admission::Queued(rx) => receivers.push(rx),
                Admission::Go(_) => {}
                Admission::Alone(_) => panic!("32 KiB calls are batchable"),
            }
        }
        let first = b.next_batch(1).unwrap();
        let bytes: usize = first.iter().map(|(c, _)| c.encoded_bytes()).sum();
        assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
        assert!(first.len() < 40);
        let rest = b.next_batch(1).unwrap();
        assert_eq!(first.len() + rest.len(), 40 - 1);
    }

    #[test]
    fn large_calls_and_disabled_batching_go_alone() {
        let b = Batcher::new(true, false);
        assert!(matches!(
            b.admit(call(MixedKind::Set, MAX_BATCHED_CALL_BYTES)),
            Admission::Alone(_)
        ));
        assert_eq!(in_flight(&b, 1), 0);
        let off = Batcher::new(false, true);
        for _ in 0..10 {
            assert!(matches!(
                off.admit(call(MixedKind::Set, 8)),
                Admission::Alone(_)
            ));
        }
        assert!(!off.always, "always needs batching on");
    }
}
