//! A SIMULATED Kubernetes API server for reconcile tests: no cluster involved.
//!
//! kube's `Client` accepts any tower service; `tower_test::mock::pair` gives
//! one whose requests arrive on a handle, and a background task answers them
//! from an in-memory map of objects keyed by their API path. It supports
//! what the reconciler uses: GET (object or list with equality label
//! selectors), POST, PATCH (server-side apply, merge patch, JSON patch, the
//! status subresource), and DELETE (honouring finalizers on the custom
//! resource), and WATCH (a streaming body fed from an event log, replayed
//! from the requested resourceVersion, so kube-runtime's `Controller` can
//! run against it). Like a real API server it emits no event and keeps the
//! resourceVersion when a write changes nothing. Every request is recorded
//! so tests can assert on what the reconciler sent and check each call
//! against the operator's RBAC rules.
//!
//! It is deliberately stateful rather than a scripted request/response
//! sequence: the reconciler makes a dozen calls per pass and a script would
//! pin their exact order, making tests fail on harmless reorderings.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use drasi_store_operator::rbac::RequestAttributes;

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
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == key).then(|| v.to_string())
        })
    }
}

struct Failure {
    method: String,
    path: String,
    status: u16,
    remaining: usize,
}

/// Response body: whole JSON documents, or an endless watch stream.
pub type FakeBody = UnsyncBoxBody<Bytes, std::convert::Infallible>;

struct Watch {
    collection: String,
    selector: Option<String>,
    events: mpsc::UnboundedSender<Bytes>,
}

/// One watch event, kept so a watch can start from any resourceVersion.
struct LoggedEvent {
    resource_version: u64,
    path: String,
    line: Bytes,
    object: Value,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<RecordedRequest>,
    failures: Vec<Failure>,
    resource_version: u64,
    watches: Vec<Watch>,
    log: Vec<LoggedEvent>,
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
    pub fn put(&self, plural: &str, mut object: Value) {
        let path = object_path(&object, plural);
        let mut state = self.lock();
        state.resource_version += 1;
        let rv = state.resource_version;
        let meta = object["metadata"]
            .as_object_mut()
            .expect("object has metadata");
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.entry("uid")
            .or_insert_with(|| json!(format!("uid-{rv}")));
        meta.entry("generation").or_insert(json!(1));
        meta.entry("creationTimestamp")
            .or_insert(json!("2024-01-01T00:00:00Z"));
        let event = if state.objects.contains_key(&path) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.notify(&path, event, &object);
        state.objects.insert(path, object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// Changes a stored object in place, as another controller (the kubelet,
    /// the StatefulSet controller) would.
    pub fn update(&self, path: &str, change: impl FnOnce(&mut Value)) {
        let mut state = self.lock();
        let mut object = state
            .objects
            .get(path)
            .cloned()
            .unwrap_or_else(|| panic!("no object at {path}"));
        change(&mut object);
        state.stamp(&mut object, false);
        state.notify(path, "MODIFIED", &object);
        state.objects.insert(path.to_string(), object);
    }

    /// Open watch streams (a test waits for the controller's watches before
    /// changing objects only to keep its timing simple; events are replayed
    /// from the requested resourceVersion anyway).
    pub fn open_watches(&self) -> usize {
        let mut state = self.lock();
        state.watches.retain(|w| !w.events.is_closed());
        state.watches.len()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
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

    async fn handle(&self, request: Request<Body>) -> Response<FakeBody> {
        let (parts, body) = request.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            // Server-side apply bodies are JSON too (YAML is a superset).
            Some(serde_json::from_slice(&bytes).expect("request body is JSON"))
        };
        let method = parts.method.as_str().to_string();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);

        let mut state = self.lock();
        let mut rbac: Vec<RequestAttributes> =
            RequestAttributes::from_request(&method, &path, &query)
                .into_iter()
                .collect();
        let failure = state
            .failures
            .iter_mut()
            .find(|f| f.method == method && f.path == path && f.remaining > 0);
        let result = if let Some(failure) = failure {
            failure.remaining -= 1;
            Err(failure.status)
        } else {
            state.respond(
                &method,
                &path,
                &query,
                content_type.as_deref(),
                body.as_ref(),
            )
        };
        if let Ok((_, created_by_apply)) = &result
            && *created_by_apply
            && let Some(mut create) = rbac.first().cloned()
        {
            create.verb = "create".into();
            rbac.push(create);
        }
        state.requests.push(RecordedRequest {
            method,
            path: path.clone(),
            query,
            content_type,
            body,
            rbac,
        });
        match result {
            Ok((response, _)) => response,
            Err(code) => status_response(code, &format!("simulated failure on {path}")),
        }
    }
}

impl State {
    /// The response, and whether a server-side apply created the object.
    fn respond(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(Response<FakeBody>, bool), u16> {
        let (object_path, subresource) = split_subresource(path);
        match method {
            "GET"
                if is_collection(path)
                    && query_value(query, "watch").as_deref() == Some("true") =>
            {
                Ok((self.watch(path, query), false))
            }
            "GET" => {
                if let Some(object) = self.objects.get(&object_path) {
                    return Ok((json_response(200, object), false));
                }
                if subresource.is_none() && is_collection(path) {
                    return Ok((json_response(200, &self.list(path, query)), false));
                }
                Ok((not_found(path), false))
            }
            "POST" => {
                let mut object = body.cloned().ok_or(400u16)?;
                let name = object["metadata"]["name"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or(422u16)?;
                let full = format!("{}/{}", path.trim_end_matches('/'), name);
                if self.objects.contains_key(&full) {
                    return Ok((status_response(409, "already exists"), false));
                }
                self.stamp(&mut object, true);
                self.notify(&full, "ADDED", &object);
                self.objects.insert(full, object.clone());
                Ok((json_response(201, &object), false))
            }
            "PATCH" => {
                let patch = body.ok_or(400u16)?;
                let content_type = content_type.unwrap_or_default();
                let is_apply = content_type.starts_with("application/apply-patch");
                let existing = self.objects.get(&object_path).cloned();
                let created = existing.is_none();
                let mut object = match existing.clone() {
                    Some(object) => object,
                    None if is_apply && subresource.is_none() => json!({}),
                    None => return Ok((not_found(path), false)),
                };
                let old_spec = object.get("spec").cloned();
                match (content_type, subresource.as_deref()) {
                    (_, Some("status")) => {
                        // The status subresource only ever changes status.
                        let status = patch.get("status").cloned().unwrap_or(Value::Null);
                        if is_apply {
                            object["status"] = status;
                        } else {
                            merge(&mut object["status"], &status);
                        }
                    }
                    (ct, None) if ct.starts_with("application/json-patch") => {
                        if let Err(code) = json_patch(&mut object, patch) {
                            return Ok((status_response(code, "json patch test failed"), false));
                        }
                    }
                    (_, None) => {
                        let mut patch = patch.clone();
                        // Status changes only through the subresource.
                        if let Some(map) = patch.as_object_mut() {
                            map.remove("status");
                        }
                        merge(&mut object, &patch);
                    }
                    (_, Some(other)) => panic!("unsupported subresource {other}"),
                }
                if existing.as_ref() == Some(&object) {
                    // A no-op write: same resourceVersion, no watch event.
                    return Ok((json_response(200, &object), false));
                }
                if created && is_apply {
                    self.stamp(&mut object, true);
                } else {
                    if object.get("spec") != old_spec.as_ref() {
                        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
                        object["metadata"]["generation"] = json!(generation + 1);
                    }
                    self.stamp(&mut object, false);
                }
                if deletion_complete(&object) {
                    self.notify(&object_path, "DELETED", &object);
                    self.objects.remove(&object_path);
                } else {
                    let event = if created { "ADDED" } else { "MODIFIED" };
                    self.notify(&object_path, event, &object);
                    self.objects.insert(object_path, object.clone());
                }
                Ok((json_response(200, &object), created && is_apply))
            }
            "DELETE" => {
                let Some(mut object) = self.objects.get(&object_path).cloned() else {
                    return Ok((not_found(path), false));
                };
                let has_finalizers = object["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty());
                if has_finalizers {
                    object["metadata"]["deletionTimestamp"] = json!("2024-01-02T00:00:00Z");
                    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
                    object["metadata"]["generation"] = json!(generation + 1);
                    self.stamp(&mut object, false);
                    self.notify(&object_path, "MODIFIED", &object);
                    self.objects.insert(object_path, object.clone());
                } else {
                    self.stamp(&mut object, false);
                    self.notify(&object_path, "DELETED", &object);
                    self.objects.remove(&object_path);
                }
                Ok((json_response(200, &object), false))
            }
            other => panic!("unsupported method {other}"),
        }
    }

    fn stamp(&mut self, object: &mut Value, created: bool) {
        self.resource_version += 1;
        let rv = self.resource_version;
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let meta = object["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        if created {
            meta.insert("uid".into(), json!(format!("uid-{rv}")));
            meta.insert("generation".into(), json!(1));
            meta.insert("creationTimestamp".into(), json!("2024-01-01T00:00:00Z"));
        }
    }

    /// Opens a watch: replays logged events newer than `resourceVersion`,
    /// then streams live ones. The stream never ends on its own.
    fn watch(&mut self, collection: &str, query: &str) -> Response<FakeBody> {
        let selector = query_value(query, "labelSelector");
        let since: u64 = query_value(query, "resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        let (tx, rx) = mpsc::unbounded_channel();
        for event in self.log.iter().filter(|e| e.resource_version > since) {
            if in_collection(&event.path, collection)
                && selector
                    .as_deref()
                    .is_none_or(|s| matches_selector(&event.object, s))
            {
                let _ = tx.send(event.line.clone());
            }
        }
        self.watches.push(Watch {
            collection: collection.to_string(),
            selector,
            events: tx,
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let line = rx.recv().await?;
            Some((Ok(Frame::data(line)), rx))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(StreamBody::new(stream).boxed_unsync())
            .expect("response")
    }

    /// Logs a watch event and sends it to the open watches it matches.
    fn notify(&mut self, path: &str, event_type: &str, object: &Value) {
        let mut line =
            serde_json::to_vec(&json!({ "type": event_type, "object": object })).expect("JSON");
        line.push(b'\n');
        let line = Bytes::from(line);
        self.watches.retain(|watch| {
            let matches = in_collection(path, &watch.collection)
                && watch
                    .selector
                    .as_deref()
                    .is_none_or(|s| matches_selector(object, s));
            if matches {
                watch.events.send(line.clone()).is_ok()
            } else {
                !watch.events.is_closed()
            }
        });
        self.log.push(LoggedEvent {
            resource_version: self.resource_version,
            path: path.to_string(),
            line,
            object: object.clone(),
        });
    }

    fn list(&self, path: &str, query: &str) -> Value {
        let selector = query_value(query, "labelSelector");
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(p, _)| in_collection(p, path))
            .map(|(_, o)| o.clone())
            .filter(|o| selector.as_deref().is_none_or(|s| matches_selector(o, s)))
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "List",
            "metadata": { "resourceVersion": self.resource_version.to_string() },
            "items": items,
        })
    }
}

/// The API path of an object: `/api/v1/namespaces/ns/secrets/name` or
/// `/apis/apps/v1/namespaces/ns/statefulsets/name`, cluster-scoped without
/// the namespace part.
pub fn object_path(object: &Value, plural: &str) -> String {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let name = object["metadata"]["name"].as_str().expect("metadata.name");
    let root = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{root}/namespaces/{ns}/{plural}/{name}"),
        None => format!("{root}/{plural}/{name}"),
    }
}

fn split_subresource(path: &str) -> (String, Option<String>) {
    match RequestAttributes::from_request("GET", path, "") {
        Some(attrs) if attrs.resource.contains('/') => {
            let (base, sub) = path.rsplit_once('/').expect("subresource path");
            (base.to_string(), Some(sub.to_string()))
        }
        _ => (path.to_string(), None),
    }
}

/// Whether the object at `path` belongs to `collection`, either its own
/// namespace's (`.../namespaces/ns/secrets`) or the cluster-wide one
/// (`/api/v1/secrets`).
fn in_collection(path: &str, collection: &str) -> bool {
    let Some((parent, _name)) = path.rsplit_once('/') else {
        return false;
    };
    let collection = collection.trim_end_matches('/');
    if parent == collection {
        return true;
    }
    match parent.split_once("/namespaces/") {
        Some((root, rest)) => rest
            .split_once('/')
            .is_some_and(|(_ns, resource)| format!("{root}/{resource}") == collection),
        None => false,
    }
}

fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn is_collection(path: &str) -> bool {
    RequestAttributes::from_request("GET", path, "").is_some_and(|a| a.name.is_none())
}

fn deletion_complete(object: &Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
        && object["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty())
}

fn matches_selector(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let Some((key, value)) = term.split_once('=') else {
            panic!("the simulated API server supports only k=v selectors, got {term}");
        };
        object["metadata"]["labels"][key].as_str() == Some(value)
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("percent escape"));
            i += 3;
        } else if bytes[i] == b'+' {
            out.push(b' ');
            i += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8 selector")
}

/// JSON merge patch (RFC 7386); also the simulation of server-side apply for
/// the fields a single manager owns.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = json!({});
            }
            let map = target.as_object_mut().expect("object");
            for (key, value) in patch {
                if value.is_null() {
                    map.remove(key);
                } else {
                    merge(map.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The JSON patch operations kube-runtime's finalizer helper sends.
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), u16> {
    for op in patch.as_array().ok_or(400u16)? {
        let path = op["path"].as_str().ok_or(400u16)?;
        let (parent, last) = path.rsplit_once('/').ok_or(400u16)?;
        match op["op"].as_str() {
            Some("test") => {
                let actual = target.pointer(path).cloned().unwrap_or(Value::Null);
                if actual != op["value"] {
                    return Err(422);
                }
            }
            Some("add") => {
                let parent = pointer_mut_or_create(target, parent);
                match parent {
                    Value::Array(items) if last == "-" => items.push(op["value"].clone()),
                    Value::Array(items) => {
                        let index: usize = last.parse().map_err(|_| 400u16)?;
                        items.insert(index, op["value"].clone());
                    }
                    Value::Object(map) => {
                        map.insert(last.to_string(), op["value"].clone());
                    }
                    _ => return Err(422),
                }
            }
            Some("remove") => match target.pointer_mut(parent) {
                Some(Value::Array(items)) => {
                    let index: usize = last.parse().map_err(|_| 400u16)?;
                    if index >= items.len() {
                        return Err(422);
                    }
                    items.remove(index);
                }
                Some(Value::Object(map)) => {
                    map.remove(last).ok_or(422u16)?;
                }
                _ => return Err(422),
            },
            Some("replace") => {
                *target.pointer_mut(path).ok_or(422u16)? = op["value"].clone();
            }
            other => panic!("unsupported json patch op {other:?}"),
        }
    }
    Ok(())
}

fn pointer_mut_or_create<'a>(target: &'a mut Value, pointer: &str) -> &'a mut Value {
    let mut current = target;
    for token in pointer.split('/').skip(1) {
        if !current.is_object() {
            *current = json!({});
        }
        current = current
            .as_object_mut()
            .expect("object")
            .entry(token.to_string())
            .or_insert(json!({}));
    }
    current
}

fn json_response(code: u16, value: &Value) -> Response<FakeBody> {
    let body = Full::new(Bytes::from(serde_json::to_vec(value).expect("JSON")));
    Response::builder()
        .status(StatusCode::from_u16(code).expect("valid status"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.boxed_unsync())
        .expect("response")
}

fn status_response(code: u16, message: &str) -> Response<FakeBody> {
    let reason = match code {
        404 => "NotFound",
        409 => "AlreadyExists",
        422 => "Invalid",
        _ => "InternalError",
    };
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }),
    )
}

fn not_found(path: &str) -> Response<FakeBody> {
    status_response(404, &format!("{path} not found"))
}
