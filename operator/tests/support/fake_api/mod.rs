//! A SIMULATED Kubernetes API server for reconcile tests: no cluster involved.
//!
//! kube's `Client` accepts any tower service; `tower_test::mock::pair` gives
//! one whose requests arrive on a handle, and a background task answers them
//! from an in-memory map of objects keyed by their API path:
//! - [`store`]: objects and the semantics of each verb, including
//!   server-side apply for one field manager ("replace the fields this
//!   manager owns": a field it applied before and leaves out is removed);
//! - [`watch`]: watch streams replayed from the requested resourceVersion,
//!   so kube-runtime's `Controller` can run against it;
//! - [`http`]: request decoding, failure injection and recording.
//!
//! Every request is recorded so tests can assert on what the reconciler
//! sent and check each call against the operator's RBAC rules.
//!
//! It is deliberately stateful rather than a scripted request/response
//! sequence: the reconciler makes a dozen calls per pass and a script would
//! pin their exact order, making tests fail on harmless reorderings.

mod http;
mod store;
mod watch;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ::http::{Request, Response};
use kube::client::Body;
use serde_json::Value;

use drasi_store_operator::rbac::RequestAttributes;

pub use self::http::FakeBody;
pub use store::object_path;

/// One request the simulated API server received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
    /// RBAC verbs the real API server would check: a server-side apply that
    /// creates its object needs `create` besides `patch`.
    pub rbac: Vec<RequestAttributes>,
}

impl RecordedRequest {
    pub fn query_param(&self, key: &str) -> Option<String> {
        self::http::query_params(&self.query).remove(key)
    }
}

struct Failure {
    method: String,
    path: String,
    status: u16,
    remaining: usize,
}

#[derive(Default)]
struct State {
    store: store::Store,
    requests: Vec<RecordedRequest>,
    failures: Vec<Failure>,
}

/// Handle to the simulated API server; cheap to clone.
#[derive(Clone)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
}

impl FakeApiServer {
    /// Starts the simulated server and returns it with a client talking to it.
    pub fn start() -> (Self, kube::Client) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<FakeBody>>();
        let server = Self {
            state: Arc::new(Mutex::new(State::default())),
        };
        let task_server = server.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let response = task_server.handle(request).await;
                send.send_response(response);
            }
        });
        (server, kube::Client::new(service, "default"))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `object` at its API path (derived from apiVersion, kind plural,
    /// namespace and name), filling in server-side metadata.
    pub fn put(&self, plural: &str, object: Value) {
        let path = object_path(&object, plural);
        self.lock().store.put(path, object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.lock().store.get(path)
    }

    /// Changes a stored object in place, as another controller (the kubelet,
    /// the StatefulSet controller) would.
    pub fn update(&self, path: &str, change: impl FnOnce(&mut Value)) {
        self.lock().store.update(path, change);
    }

    /// Deletes a stored object, as another client (a user's `kubectl
    /// delete`) would.
    pub fn delete(&self, path: &str) {
        self.lock().store.delete(path);
    }

    /// Open watch streams (a test waits for the controller's watches before
    /// changing objects only to keep its timing simple; events are replayed
    /// from the requested resourceVersion anyway).
    pub fn open_watches(&self) -> usize {
        self.lock().store.watches.open_count()
    }

    /// Sets the log the kubelet serves for the pod at `pod_path`.
    #[allow(dead_code)] // not every test binary reads logs
    pub fn set_log(&self, pod_path: &str, log: &str) {
        self.lock()
            .store
            .logs
            .insert(pod_path.to_string(), log.to_string());
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// How many requests were received since the last
    /// [`Self::clear_requests`], by the RBAC verb the API server would check
    /// (`get`, `list`, `watch`, `create`, `patch`, `delete`, ...).
    pub fn request_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for request in &self.lock().requests {
            let verb = request
                .rbac
                .first()
                .map_or_else(|| request.method.to_lowercase(), |a| a.verb.clone());
            *counts.entry(verb).or_default() += 1;
        }
        counts
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Makes the next `times` requests with this method on exactly this path
    /// fail with `status`.
    pub fn fail(&self, method: &str, path: &str, status: u16, times: usize) {
        self.lock().failures.push(Failure {
            method: method.to_string(),
            path: path.to_string(),
            status,
            remaining: times,
        });
    }
}
