//! The object store of the simulated API server and the semantics of each
//! verb: GET (object, label-selected list), POST, PATCH (server-side apply,
//! JSON merge patch, JSON patch; the status subresource) and DELETE
//! (honouring finalizers). Like a real API server it keeps the
//! resourceVersion and emits no watch event when a write changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use drasi_store_operator::rbac::RequestAttributes;
use hyper::body::Bytes;

use super::watch::Watches;

/// What the store answers; the HTTP layer encodes it.
pub enum Reply {
    Json(u16, Value),
    /// A plain-text body, e.g. a pod's log.
    Text(u16, String),
    Watch(mpsc::UnboundedReceiver<Bytes>),
}

/// A field of an object, as the keys leading to it.
type FieldPath = Vec<String>;

#[derive(Default)]
pub struct Store {
    objects: BTreeMap<String, Value>,
    resource_version: u64,
    /// Fields each field manager set with its last server-side apply, per
    /// object path (`.../status` for the status subresource). The API
    /// server keeps this in `metadata.managedFields`.
    managed: BTreeMap<(String, String), BTreeSet<FieldPath>>,
    /// Container logs by pod path, as the kubelet would serve them
    /// (`GET .../pods/<name>/log`).
    pub logs: BTreeMap<String, String>,
    pub watches: Watches,
}

impl Store {
    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.get(path).cloned()
    }

    /// Stores `object` at `path` as another client would, filling in
    /// server-side metadata.
    pub fn put(&mut self, path: String, mut object: Value) {
        self.resource_version += 1;
        let rv = self.resource_version;
        let meta = object["metadata"]
            .as_object_mut()
            .expect("object has metadata");
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.entry("uid")
            .or_insert_with(|| json!(format!("uid-{rv}")));
        meta.entry("generation").or_insert(json!(1));
        meta.entry("creationTimestamp")
            .or_insert(json!("2024-01-01T00:00:00Z"));
        let event = if self.objects.contains_key(&path) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.watches.notify(rv, &path, event, &object);
        self.objects.insert(path, object);
    }

    /// Changes a stored object in place, as another controller would.
    pub fn update(&mut self, path: &str, change: impl FnOnce(&mut Value)) {
        let mut object = self
            .objects
            .get(path)
            .cloned()
            .unwrap_or_else(|| panic!("no object at {path}"));
        change(&mut object);
        self.stamp(&mut object, false);
        self.watches
            .notify(self.resource_version, path, "MODIFIED", &object);
        self.objects.insert(path.to_string(), object);
    }

    /// Removes an object at once, as another client's delete of an object
    /// without finalizers would.
    pub fn delete(&mut self, path: &str) {
        let object = self
            .objects
            .get(path)
            .cloned()
            .unwrap_or_else(|| panic!("no object at {path}"));
        self.resource_version += 1;
        self.watches
            .notify(self.resource_version, path, "DELETED", &object);
        self.remove(path);
    }

    /// The reply, and whether a server-side apply created the object.
    pub fn respond(
        &mut self,
        method: &str,
        path: &str,
        query: &BTreeMap<String, String>,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(Reply, bool), u16> {
        let (object_path, subresource) = split_subresource(path);
        match method {
            "GET"
                if is_collection(path)
                    && matches!(query.get("watch").map(String::as_str), Some("true" | "1")) =>
            {
                let since = query
                    .get("resourceVersion")
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or(0);
                let selector = query.get("labelSelector").cloned();
                Ok((
                    Reply::Watch(self.watches.open(path, selector, since)),
                    false,
                ))
            }
            "GET" if subresource.as_deref() == Some("log") => {
                if !self.objects.contains_key(&object_path) {
                    return Ok((not_found(path), false));
                }
                let log = self.logs.get(&object_path).cloned().unwrap_or_default();
                let log = match query
                    .get("limitBytes")
                    .and_then(|l| l.parse::<usize>().ok())
                {
                    Some(limit) if log.len() > limit => log[..limit].to_owned(),
                    _ => log,
                };
                Ok((Reply::Text(200, log), false))
            }
            "GET" => {
                if let Some(object) = self.objects.get(&object_path) {
                    return Ok((Reply::Json(200, object.clone()), false));
                }
                if subresource.is_none() && is_collection(path) {
                    let list = self.list(path, query.get("labelSelector").map(String::as_str));
                    return Ok((Reply::Json(200, list), false));
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
                    return Ok((status(409, "already exists"), false));
                }
                self.forget_managers(&full);
                self.stamp(&mut object, true);
                self.watches
                    .notify(self.resource_version, &full, "ADDED", &object);
                self.objects.insert(full, object.clone());
                Ok((Reply::Json(201, object), false))
            }
            "PATCH" => {
                let patch = body.ok_or(400u16)?;
                let content_type = content_type.unwrap_or_default();
                let apply_manager = content_type
                    .starts_with("application/apply-patch")
                    .then(|| query.get("fieldManager").cloned().ok_or(400u16))
                    .transpose()?;
                let existing = self.objects.get(&object_path).cloned();
                let created = existing.is_none();
                if created && (apply_manager.is_none() || subresource.is_some()) {
                    return Ok((not_found(path), false));
                }
                if created {
                    self.forget_managers(&object_path);
                }
                let mut object = existing.clone().unwrap_or_else(|| json!({}));
                let old_spec = object.get("spec").cloned();
                match (subresource.as_deref(), &apply_manager) {
                    // The status subresource only ever changes status.
                    (Some("status"), Some(manager)) => {
                        let applied = json!({ "status": patch.get("status").cloned() });
                        self.server_side_apply(path, manager, &mut object, &applied);
                    }
                    (Some("status"), None) => {
                        let status = patch.get("status").cloned().unwrap_or(Value::Null);
                        json_patch::merge(&mut object["status"], &status);
                    }
                    (Some(other), _) => panic!("unsupported subresource {other}"),
                    (None, Some(manager)) => {
                        // Status changes only through the subresource.
                        let mut applied = patch.clone();
                        if let Some(map) = applied.as_object_mut() {
                            map.remove("status");
                        }
                        self.server_side_apply(path, manager, &mut object, &applied);
                    }
                    (None, None) if content_type.starts_with("application/json-patch") => {
                        if let Err(code) = apply_json_patch(&mut object, patch) {
                            return Ok((status(code, "json patch failed"), false));
                        }
                    }
                    (None, None) => {
                        let mut patch = patch.clone();
                        if let Some(map) = patch.as_object_mut() {
                            map.remove("status");
                        }
                        json_patch::merge(&mut object, &patch);
                    }
                }
                if existing.as_ref() == Some(&object) {
                    // A no-op write: same resourceVersion, no watch event.
                    return Ok((Reply::Json(200, object), false));
                }
                if created {
                    self.stamp(&mut object, true);
                } else {
                    if object.get("spec") != old_spec.as_ref() {
                        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
                        object["metadata"]["generation"] = json!(generation + 1);
                    }
                    self.stamp(&mut object, false);
                }
                let rv = self.resource_version;
                if deletion_complete(&object) {
                    self.watches.notify(rv, &object_path, "DELETED", &object);
                    self.remove(&object_path);
                } else {
                    let event = if created { "ADDED" } else { "MODIFIED" };
                    self.watches.notify(rv, &object_path, event, &object);
                    self.objects.insert(object_path, object.clone());
                }
                Ok((Reply::Json(200, object), created))
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
                    self.watches
                        .notify(self.resource_version, &object_path, "MODIFIED", &object);
                    self.objects.insert(object_path, object.clone());
                } else {
                    self.stamp(&mut object, false);
                    self.watches
                        .notify(self.resource_version, &object_path, "DELETED", &object);
                    self.remove(&object_path);
                }
                Ok((Reply::Json(200, object), false))
            }
            other => panic!("unsupported method {other}"),
        }
    }

    /// Server-side apply for one field manager: the fields `manager` set
    /// with its previous apply to `path` and leaves out of `applied` are
    /// removed, then `applied` is merged in. Fields other clients set stay.
    /// Lists are atomic, as for a list without merge keys. Conflicts with
    /// other managers are not modelled: the operator always forces.
    fn server_side_apply(
        &mut self,
        path: &str,
        manager: &str,
        object: &mut Value,
        applied: &Value,
    ) {
        let mut now = BTreeSet::new();
        field_paths(applied, &mut Vec::new(), &mut now);
        let key = (path.to_string(), manager.to_string());
        let before = self.managed.remove(&key).unwrap_or_default();
        // Deepest first, so a map that only held dropped fields goes too.
        let mut dropped: Vec<&FieldPath> = before.difference(&now).collect();
        dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for field in dropped {
            remove_field(object, field);
        }
        json_patch::merge(object, applied);
        self.managed.insert(key, now);
    }

    fn remove(&mut self, path: &str) {
        self.objects.remove(path);
        self.forget_managers(path);
    }

    /// A new object starts with no field owned by anyone.
    fn forget_managers(&mut self, path: &str) {
        let status = format!("{path}/status");
        self.managed
            .retain(|(object, _), _| object != path && *object != status);
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

    fn list(&self, path: &str, selector: Option<&str>) -> Value {
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(p, _)| in_collection(p, path))
            .map(|(_, o)| o.clone())
            .filter(|o| selector.is_none_or(|s| matches_selector(o, s)))
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "List",
            "metadata": { "resourceVersion": self.resource_version.to_string() },
            "items": items,
        })
    }
}

/// Every field `value` sets: each object key, at any depth; anything else
/// (including a list) is one field.
fn field_paths(value: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    if let Value::Object(map) = value {
        for (key, child) in map {
            prefix.push(key.clone());
            out.insert(prefix.clone());
            field_paths(child, prefix, out);
            prefix.pop();
        }
    }
}

/// Removes `field` from `object`; a map is removed only once empty, since
/// other clients may have set fields in it.
fn remove_field(object: &mut Value, field: &[String]) {
    let Some((last, parents)) = field.split_last() else {
        return;
    };
    let mut node = object;
    for key in parents {
        match node.get_mut(key) {
            Some(child) => node = child,
            None => return,
        }
    }
    let Some(map) = node.as_object_mut() else {
        return;
    };
    let keep = map
        .get(last)
        .is_some_and(|v| v.as_object().is_some_and(|m| !m.is_empty()));
    if !keep {
        map.remove(last);
    }
}

/// RFC 6902 JSON patch as the API server applies it. Its library treats a
/// `test` for `null` on a missing path as passing (kube-runtime's finalizer
/// helper relies on that); the `json-patch` crate follows the RFC, so such
/// tests are checked here and left out.
fn apply_json_patch(object: &mut Value, patch: &Value) -> Result<(), u16> {
    let patch: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|_| 400u16)?;
    let mut operations = Vec::new();
    for operation in patch.0 {
        match &operation {
            json_patch::PatchOperation::Test(test)
                if test.value.is_null() && object.pointer(test.path.as_str()).is_none() => {}
            _ => operations.push(operation),
        }
    }
    json_patch::patch(object, &operations).map_err(|_| 422u16)
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

fn is_collection(path: &str) -> bool {
    RequestAttributes::from_request("GET", path, "").is_some_and(|a| a.name.is_none())
}

/// Whether the object at `path` belongs to `collection`, either its own
/// namespace's (`.../namespaces/ns/secrets`) or the cluster-wide one
/// (`/api/v1/secrets`).
pub fn in_collection(path: &str, collection: &str) -> bool {
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

/// Equality (`k=v`) and existence (`k`, `!k`) terms, joined by commas.
pub fn matches_selector(object: &Value, selector: &str) -> bool {
    let labels = &object["metadata"]["labels"];
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        if let Some((key, value)) = term.split_once('=') {
            assert!(
                !key.ends_with('!') && !value.starts_with('='),
                "the simulated API server supports only k=v, k and !k selectors, got {term}"
            );
            return labels[key].as_str() == Some(value);
        }
        assert!(
            term.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./!".contains(c)),
            "the simulated API server supports only k=v, k and !k selectors, got {term}"
        );
        match term.strip_prefix('!') {
            Some(key) => labels.get(key).is_none(),
            None => labels.get(term).is_some(),
        }
    })
}

fn deletion_complete(object: &Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
        && object["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty())
}

/// A `Status` object, as the API server returns for failures.
pub fn status(code: u16, message: &str) -> Reply {
    let reason = match code {
        404 => "NotFound",
        409 => "AlreadyExists",
        422 => "Invalid",
        _ => "InternalError",
    };
    Reply::Json(
        code,
        json!({
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

fn not_found(path: &str) -> Reply {
    status(404, &format!("{path} not found"))
}
