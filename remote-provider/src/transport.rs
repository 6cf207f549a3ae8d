//! HTTP, on the caller's runtime or on one the provider owns.
//!
//! hyper's pooled connections are driven by tasks spawned on whichever tokio
//! runtime first polled the request. DrasiLib's bridge for dynamically loaded
//! plugins polls every state store call on a brand-new current-thread runtime
//! and drops it afterwards, which would kill those tasks and leave the pool
//! full of dead connections ("dispatch task is gone"). So the provider owns a
//! small multi-thread runtime: requests from callers that cannot host them
//! run there, and those callers only await its `JoinHandle`, which works
//! from any runtime (or none). Callers on a long-lived multi-thread runtime
//! send their requests themselves, over connections of their own runtime
//! (see [`crate::runtimes`]).
//!
//! That runtime lives on its own std thread: dropping a `Runtime` inside an
//! async context panics, and the last clone of the provider may well be
//! dropped inside one. Dropping the provider only disconnects a channel; the
//! holder thread notices and shuts the runtime down itself.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use drasi_lib::StateStoreError;
use drasi_store_protocol::endpoints::{self, Endpoint, Query};
use drasi_store_protocol::{Durability, ErrorBody, ServerInfo, encode_query, routes};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode, Url};
use tokio::runtime::Handle;

use crate::answer;
use crate::batcher::{self, Batcher, Call, CallResult};
use crate::error::{CallContext, Failure, Op};
use crate::retry::RetryPolicy;
use crate::runtimes::Clients;
use crate::token::TokenSource;

/// Two workers keep up with a few hundred concurrent requests: they only
/// shuffle bytes between sockets.
const WORKER_THREADS: usize = 2;
/// Enough idle keep-alive connections for 64+ concurrent callers, so a burst
/// does not end in a wave of reconnects.
const POOL_MAX_IDLE_PER_HOST: usize = 256;
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// How long in-flight blocking work (DNS lookups) may delay runtime shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Everything a request needs, shared with the tasks on the owned runtime.
pub(crate) struct Shared {
    clients: Clients,
    token: TokenSource,
    /// One per configured URL: scheme, authority and path prefix, without
    /// a trailing slash. Several when the store is replicated; each node
    /// accepts every request, so any of them will do.
    bases: Vec<String>,
    /// Index into `bases` of the node requests go to: the one that last
    /// answered, until it fails in a way another node may not (see
    /// [`RetryPolicy::moves_on`]).
    current: AtomicUsize,
    /// `bases` without credentials, for messages.
    pub(crate) server: String,
    retry: RetryPolicy,
    /// The server's durability mode as last seen (see [`DurabilityCache`]).
    durability: DurabilityCache,
    /// Bounds a blocking `/v1/info` lookup.
    timeout: Duration,
    pub(crate) batcher: Batcher,
}

/// What the server said about its durability: from the `x-drasi-durability`
/// header of any answer, or from `/v1/info`. Unknown (0) until the first
/// answer.
#[derive(Default)]
struct DurabilityCache(AtomicU8);

impl DurabilityCache {
    const IMMEDIATE: u8 = 1;
    const EVENTUAL: u8 = 2;

    fn set(&self, durability: Durability) {
        let v = match durability {
            Durability::Immediate => Self::IMMEDIATE,
            Durability::Eventual => Self::EVENTUAL,
        };
        self.0.store(v, Ordering::Relaxed);
    }

    fn get(&self) -> Option<Durability> {
        match self.0.load(Ordering::Relaxed) {
            Self::IMMEDIATE => Some(Durability::Immediate),
            Self::EVENTUAL => Some(Durability::Eventual),
            _ => None,
        }
    }
}

pub(crate) struct TransportConfig {
    pub(crate) bases: Vec<String>,
    pub(crate) server: String,
    pub(crate) token: TokenSource,
    pub(crate) ca_certs: Vec<reqwest::Certificate>,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) failover_timeout: Duration,
    pub(crate) batching: bool,
    pub(crate) batch_always: bool,
    /// Whether callers on a multi-thread runtime send their own requests.
    pub(crate) caller_runtime: bool,
}

pub(crate) struct Transport {
    shared: Arc<Shared>,
    handle: Handle,
    _runtime: RuntimeThread,
}

impl Transport {
    pub(crate) fn new(config: TransportConfig) -> Result<Self, String> {
        let (timeout, connect_timeout) = (config.timeout, config.connect_timeout);
        let ca_certs = config.ca_certs;
        let make_client = move || {
            let mut builder = reqwest::Client::builder()
                .use_rustls_tls()
                .timeout(timeout)
                .connect_timeout(connect_timeout)
                .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .tcp_nodelay(true)
                .tcp_keepalive(TCP_KEEPALIVE)
                // A redirect would silently drop the Authorization header.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!(
                    "drasi-state-store-remote/",
                    env!("CARGO_PKG_VERSION")
                ));
            if !ca_certs.is_empty() {
                // Like `curl --cacert`: a configured CA replaces the public
                // roots, so only the operator-issued certificate is trusted.
                builder = builder.tls_built_in_root_certs(false);
                for cert in &ca_certs {
                    builder = builder.add_root_certificate(cert.clone());
                }
            }
            builder
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        };
        let (handle, runtime) = RuntimeThread::start()?;
        let clients = Clients::new(&handle, Box::new(make_client), config.caller_runtime)?;
        let failover_budget = (config.bases.len() > 1).then_some(config.failover_timeout);
        Ok(Self {
            shared: Arc::new(Shared {
                clients,
                token: config.token,
                bases: config.bases,
                current: AtomicUsize::new(0),
                server: config.server,
                retry: RetryPolicy {
                    max_retries: config.max_retries,
                    failover_budget,
                },
                durability: DurabilityCache::default(),
                timeout: config.timeout,
                batcher: Batcher::new(config.batching, config.batch_always),
            }),
            handle,
            _runtime: runtime,
        })
    }

    pub(crate) fn server(&self) -> &str {
        &self.shared.server
    }

    pub(crate) fn token_description(&self) -> String {
        self.shared.token.describe()
    }

    pub(crate) fn max_retries(&self) -> u32 {
        self.shared.retry.max_retries
    }

    /// Starts learning the server's durability in the background, so that
    /// [`Transport::durability`] rarely has to wait.
    pub(crate) fn prefetch_durability(&self) {
        let shared = Arc::clone(&self.shared);
        self.handle.spawn(async move {
            let _ = shared.fetch_durability().await;
        });
    }

    /// The server's durability: cached from any earlier answer, otherwise
    /// asked from `/v1/info`, waiting at most about the request timeout
    /// (blocking the calling thread, never the provider's runtime). `None`
    /// when the server cannot be reached; the next call asks again.
    pub(crate) fn durability(&self) -> Option<Durability> {
        if let Some(known) = self.shared.durability.get() {
            return Some(known);
        }
        let (tx, rx) = mpsc::channel();
        let shared = Arc::clone(&self.shared);
        self.handle.spawn(async move {
            let _ = tx.send(shared.fetch_durability().await);
        });
        let wait = self.shared.timeout + Duration::from_secs(1);
        rx.recv_timeout(wait).ok().flatten()
    }

    /// A single-key call (get, set, delete, contains_key), batched with
    /// concurrent ones when they pile up (see [`crate::batcher`]).
    pub(crate) async fn single_key(&self, call: Call) -> CallResult {
        batcher::call(&self.shared, &self.handle, call).await
    }

    /// Calls `endpoint` for trait method `op`; `store` and `key` are the
    /// query parameters the endpoint takes.
    #[allow(clippy::too_many_arguments)] // one argument per part of a request
    pub(crate) async fn call<T, D, Fut>(
        &self,
        op: Op,
        endpoint: &'static Endpoint,
        store: Option<&str>,
        key: Option<&str>,
        body: Option<Bytes>,
        decode: D,
    ) -> Result<T, StateStoreError>
    where
        T: Send + 'static,
        D: Fn(Response) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, Failure>> + Send + 'static,
    {
        debug_assert_eq!(
            (store.is_some(), key.is_some()),
            match endpoint.query {
                Query::None => (false, false),
                Query::Store => (true, false),
                Query::StoreAndKey => (true, true),
                // The admin snapshot route; the provider never calls it.
                Query::StoreSelection => (store.is_some(), false),
                // The WAL routes go through `call_with_query`.
                Query::Source(_) => (false, false),
            },
            "{} takes other query parameters",
            endpoint.operation.as_str()
        );
        let query = store.map(|store| encode_query(store, key));
        self.call_with_query(op, endpoint, query, body, decode)
            .await
            .map_err(|(failure, attempts)| {
                CallContext {
                    op,
                    store,
                    server: &self.shared.server,
                    attempts,
                }
                .into_error(failure)
            })
    }

    /// Sends `endpoint`'s request with an already encoded `query` (in the
    /// URI, or in the target header when long) on the owned runtime, with
    /// the usual retries, and hands back the last failure and the number of
    /// attempts, for callers with their own error type (the WAL).
    pub(crate) async fn call_with_query<T, D, Fut>(
        &self,
        op: Op,
        endpoint: &'static Endpoint,
        query: Option<String>,
        body: Option<Bytes>,
        decode: D,
    ) -> Result<T, (Failure, u32)>
    where
        T: Send + 'static,
        D: Fn(Response) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, Failure>> + Send + 'static,
    {
        let (path, target) = self.shared.path(endpoint, query);
        let method = method_of(endpoint);
        let shared = Arc::clone(&self.shared);
        let request = async move {
            shared
                .execute(op, method, &path, target.as_deref(), body.as_ref(), &decode)
                .await
        };
        match self.shared.run(&self.handle, request).await {
            Ok(outcome) => outcome,
            Err(Lost::Panicked) => {
                Err((Failure::Local("the request task panicked".to_string()), 1))
            }
            Err(Lost::RuntimeGone) => Err((
                Failure::Local("the provider's I/O runtime has shut down".to_string()),
                1,
            )),
        }
    }
}

/// Why a request handed to the provider's runtime gave no answer.
pub(crate) enum Lost {
    Panicked,
    RuntimeGone,
}

/// The reqwest method of an endpoint.
pub(crate) fn method_of(endpoint: &Endpoint) -> Method {
    match endpoint.method {
        endpoints::Method::Get => Method::GET,
        endpoints::Method::Head => Method::HEAD,
        endpoints::Method::Put => Method::PUT,
        endpoints::Method::Post => Method::POST,
        endpoints::Method::Delete => Method::DELETE,
    }
}

impl Shared {
    /// Whether a request may be sent from the current runtime rather than
    /// handed to the provider's (see [`crate::runtimes`]).
    fn runs_here(&self) -> bool {
        self.clients.here().is_some()
    }

    /// Runs `task` right here when the caller's runtime can host requests,
    /// otherwise on the provider's runtime (`handle`), waiting for it from
    /// whatever runtime (or none) the caller is on.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        handle: &Handle,
        task: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, Lost> {
        if self.runs_here() {
            return Ok(task.await);
        }
        handle.spawn(task).await.map_err(|join| {
            if join.is_panic() {
                Lost::Panicked
            } else {
                Lost::RuntimeGone
            }
        })
    }

    async fn fetch_durability(&self) -> Option<Durability> {
        match self
            .execute(
                Op::ServerInfo,
                Method::GET,
                endpoints::INFO.path,
                None,
                None,
                &answer::json::<ServerInfo>,
            )
            .await
        {
            Ok(info) => {
                self.durability.set(info.durability);
                Some(info.durability)
            }
            Err((failure, attempts)) => {
                let err = CallContext {
                    op: Op::ServerInfo,
                    store: None,
                    server: &self.server,
                    attempts,
                }
                .into_error(failure);
                tracing::debug!(error = %err, "cannot learn the server's durability");
                None
            }
        }
    }

    /// `<path>[?<query>]` (appended to a node's base URL per attempt), or,
    /// when the query would be longer than [`routes::MAX_TARGET_IN_URI`],
    /// `<path>` and the query for the target header: every store id, key
    /// and source id within the server's limit stays reachable, however
    /// long it is once encoded.
    pub(crate) fn path(
        &self,
        endpoint: &Endpoint,
        query: Option<String>,
    ) -> (String, Option<String>) {
        let Some(query) = query else {
            return (endpoint.path.to_string(), None);
        };
        if query.len() > routes::MAX_TARGET_IN_URI {
            return (endpoint.path.to_string(), Some(query));
        }
        (format!("{}?{query}", endpoint.path), None)
    }

    /// The node to send the next attempt to.
    fn node(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.bases.len()
    }

    /// Moves on from node `failed` to the next one, unless a concurrent
    /// call already did (then its choice stands, so a burst of failures on
    /// one node skips it once, not once per call).
    fn leave(&self, failed: usize) {
        if self.bases.len() > 1 {
            let next = (failed + 1) % self.bases.len();
            let _ =
                self.current
                    .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Sends the request for `path` (see [`Shared::path`]) with retries,
    /// failing over between the configured URLs.
    pub(crate) async fn execute<T, D, Fut>(
        &self,
        op: Op,
        method: Method,
        path: &str,
        target: Option<&str>,
        body: Option<&Bytes>,
        decode: &D,
    ) -> Result<T, (Failure, u32)>
    where
        D: Fn(Response) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let started = Instant::now();
        // The runtime that runs this request stays the same across retries.
        let client = self.clients.current();
        let mut attempts = 0;
        let mut token_reloaded = false;
        loop {
            attempts += 1;
            let node = self.node();
            let url = format!("{}{path}", self.bases[node]);
            let url = Url::parse(&url)
                .map_err(|e| (Failure::Local(format!("bad URL: {e}")), attempts))?;
            let failure = match self
                .attempt(&client, &method, &url, target, body, decode)
                .await
            {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            if RetryPolicy::moves_on(&failure) {
                self.leave(node);
            }
            // A rotated Secret: the server already knows the new token and we
            // are still sending the old one. One immediate retry is enough;
            // a 401 means nothing was applied.
            let unauthorized = matches!(
                &failure,
                Failure::Status { status, .. } if *status == StatusCode::UNAUTHORIZED
            );
            if unauthorized && !token_reloaded && self.token.reload() {
                token_reloaded = true;
                continue;
            }
            let Some(delay) = self
                .retry
                .next_delay(op, &failure, attempts, started.elapsed())
            else {
                return Err((failure, attempts));
            };
            tracing::debug!(op = op.name(), server = %self.bases[node], attempt = attempts, ?delay, "retrying state store request");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt<T, D, Fut>(
        &self,
        client: &reqwest::Client,
        method: &Method,
        url: &Url,
        target: Option<&str>,
        body: Option<&Bytes>,
        decode: &D,
    ) -> Result<T, Failure>
    where
        D: Fn(Response) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut request = client.request(method.clone(), url.clone());
        if let Some(auth) = self.token.header() {
            request = request.header(AUTHORIZATION, auth);
        }
        if let Some(target) = target {
            request = request.header(routes::TARGET_HEADER, target);
        }
        if let Some(body) = body {
            // Bytes clones share the buffer, so a retry does not copy values.
            request = request
                .header(CONTENT_TYPE, routes::OCTET_STREAM)
                .body(body.clone());
        }
        let response = request.send().await.map_err(Failure::from_reqwest)?;
        if let Some(durability) = response
            .headers()
            .get(routes::DURABILITY_HEADER)
            .and_then(|v| Durability::from_header(v.as_bytes()))
        {
            self.durability.set(durability);
        }
        let status = response.status();
        let key_not_found = status == StatusCode::NOT_FOUND
            && response
                .headers()
                .contains_key(routes::KEY_NOT_FOUND_HEADER);
        if status.is_success() || key_not_found {
            return decode(response).await;
        }
        Err(error_answer(response).await)
    }
}

/// An error answer, with the server's JSON [`ErrorBody`] when it sent one
/// (a proxy in between may answer with HTML).
async fn error_answer(response: Response) -> Failure {
    let status = response.status();
    let body = response
        .bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<ErrorBody>(&b).ok());
    Failure::Status { status, body }
}

/// Owns the runtime's holder thread; dropping it stops the runtime.
struct RuntimeThread {
    // Never sent on: dropping it disconnects the channel, which is the stop
    // signal the holder thread waits for.
    _stop: mpsc::Sender<()>,
}

impl RuntimeThread {
    fn start() -> Result<(Handle, Self), String> {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("drasi-state-store-remote".to_string())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(WORKER_THREADS)
                    .thread_name("drasi-state-store-remote-io")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(runtime.handle().clone()));
                // Blocks until every clone of the provider is gone.
                let _ = stop_rx.recv();
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
            })
            .map_err(|e| format!("cannot start the I/O thread: {e}"))?;
        let handle = ready_rx
            .recv()
            .map_err(|_| "the I/O thread exited during startup".to_string())?
            .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
        Ok((handle, Self { _stop: stop_tx }))
    }
}
