//! HTTP on a runtime the provider owns.
//!
//! hyper's pooled connections are driven by tasks spawned on whichever tokio
//! runtime first polled the request. DrasiLib's bridge for dynamically loaded
//! plugins polls every state store call on a brand-new current-thread runtime
//! and drops it afterwards, which would kill those tasks and leave the pool
//! full of dead connections ("dispatch task is gone"). So every request runs
//! on a small multi-thread runtime owned by the provider, and callers only
//! await its `JoinHandle`, which works from any runtime (or none).
//!
//! That runtime lives on its own std thread: dropping a `Runtime` inside an
//! async context panics, and the last clone of the provider may well be
//! dropped inside one. Dropping the provider only disconnects a channel; the
//! holder thread notices and shuts the runtime down itself.

use std::future::Future;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use drasi_lib::StateStoreError;
use drasi_store_protocol::endpoints::{self, Endpoint, Query};
use drasi_store_protocol::{ErrorBody, encode_query, routes};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode, Url};
use tokio::runtime::Handle;

use crate::error::{CallContext, Failure, Op};
use crate::retry::RetryPolicy;
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
    client: reqwest::Client,
    token: TokenSource,
    /// Scheme, authority and path prefix, without a trailing slash.
    base: String,
    /// `base` without credentials, for messages.
    pub(crate) server: String,
    retry: RetryPolicy,
}

pub(crate) struct TransportConfig {
    pub(crate) base: String,
    pub(crate) server: String,
    pub(crate) token: TokenSource,
    pub(crate) ca_certs: Vec<reqwest::Certificate>,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_retries: u32,
}

pub(crate) struct Transport {
    shared: Arc<Shared>,
    handle: Handle,
    _runtime: RuntimeThread,
}

impl Transport {
    pub(crate) fn new(config: TransportConfig) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
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
        if !config.ca_certs.is_empty() {
            // Like `curl --cacert`: a configured CA replaces the public
            // roots, so only the operator-issued certificate is trusted.
            builder = builder.tls_built_in_root_certs(false);
            for cert in config.ca_certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let (handle, runtime) = RuntimeThread::start()?;
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                token: config.token,
                base: config.base,
                server: config.server,
                retry: RetryPolicy {
                    max_retries: config.max_retries,
                },
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

    /// `<base><path>[?store=..[&key=..]]`.
    fn url(&self, endpoint: &Endpoint, store: Option<&str>, key: Option<&str>) -> String {
        let base = &self.shared.base;
        let Some(store) = store else {
            return format!("{base}{}", endpoint.path);
        };
        let query = encode_query(store, key);
        let mut url = String::with_capacity(base.len() + endpoint.path.len() + 1 + query.len());
        url.push_str(base);
        url.push_str(endpoint.path);
        url.push('?');
        url.push_str(&query);
        url
    }

    /// `<base><path>?<query>` for an endpoint whose query the caller
    /// encoded (the WAL routes).
    pub(crate) fn url_with_query(&self, endpoint: &Endpoint, query: &str) -> String {
        format!("{}{}?{query}", self.shared.base, endpoint.path)
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
                Query::Source(_) => (false, false),
            },
            "{} takes other query parameters",
            endpoint.operation.as_str()
        );
        let url = self.url(endpoint, store, key);
        self.call_raw(op, endpoint, url, body, decode)
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

    /// Sends `endpoint`'s request to `url` (with its retries) on the owned
    /// runtime and hands back the last failure and the number of attempts,
    /// for callers with their own error type.
    pub(crate) async fn call_raw<T, D, Fut>(
        &self,
        op: Op,
        endpoint: &'static Endpoint,
        url: String,
        body: Option<Bytes>,
        decode: D,
    ) -> Result<T, (Failure, u32)>
    where
        T: Send + 'static,
        D: Fn(Response) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, Failure>> + Send + 'static,
    {
        let method = match endpoint.method {
            endpoints::Method::Get => Method::GET,
            endpoints::Method::Head => Method::HEAD,
            endpoints::Method::Put => Method::PUT,
            endpoints::Method::Post => Method::POST,
            endpoints::Method::Delete => Method::DELETE,
        };
        let shared = Arc::clone(&self.shared);
        let task = self.handle.spawn(async move {
            shared
                .execute(op, method, &url, body.as_ref(), &decode)
                .await
        });
        match task.await {
            Ok(outcome) => outcome,
            Err(join) if join.is_panic() => {
                Err((Failure::Local("the request task panicked".to_string()), 1))
            }
            Err(_) => Err((
                Failure::Local("the provider's I/O runtime has shut down".to_string()),
                1,
            )),
        }
    }
}

impl Shared {
    async fn execute<T, D, Fut>(
        &self,
        op: Op,
        method: Method,
        url: &str,
        body: Option<&Bytes>,
        decode: &D,
    ) -> Result<T, (Failure, u32)>
    where
        D: Fn(Response) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let url = Url::parse(url).map_err(|e| (Failure::Local(format!("bad URL: {e}")), 1))?;
        let mut attempts = 0;
        let mut token_reloaded = false;
        loop {
            attempts += 1;
            let failure = match self.attempt(&method, &url, body, decode).await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
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
            if attempts > self.retry.max_retries || !RetryPolicy::is_retryable(op, &failure) {
                return Err((failure, attempts));
            }
            let delay = RetryPolicy::backoff(attempts - 1);
            tracing::debug!(op = op.name(), server = %self.server, attempt = attempts, ?delay, "retrying state store request");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt<T, D, Fut>(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Bytes>,
        decode: &D,
    ) -> Result<T, Failure>
    where
        D: Fn(Response) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut request = self.client.request(method.clone(), url.clone());
        if let Some(auth) = self.token.header() {
            request = request.header(AUTHORIZATION, auth);
        }
        if let Some(body) = body {
            // Bytes clones share the buffer, so a retry does not copy values.
            request = request
                .header(CONTENT_TYPE, routes::OCTET_STREAM)
                .body(body.clone());
        }
        let response = request.send().await.map_err(Failure::from_reqwest)?;
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
