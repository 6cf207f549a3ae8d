//! The endpoint table: every route of the API, written once.
//!
//! The server builds its router and its metric labels from [`ALL`], the
//! client issues its calls through the same constants, and the server
//! generates its OpenAPI document from it, so a route cannot exist in one
//! place and be missing or different in another.

use crate::{routes, snapshot, wal};

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
}

impl Method {
    /// Upper case, as on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// What an endpoint serves. Its [`Operation::as_str`] is the metric label
/// and the OpenAPI `operationId`, named after the `StateStoreProvider`
/// method where there is one, so dashboards read like the trait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Get,
    ContainsKey,
    Set,
    Delete,
    GetMany,
    SetMany,
    DeleteMany,
    /// `store_exists` and `key_count` in one answer.
    StoreInfo,
    ClearStore,
    ListKeys,
    Sync,
    /// `GET /v1/admin/snapshot`: stream a snapshot (docs/backup.md).
    Snapshot,
    /// `POST /v1/admin/import`: replace whole stores from a snapshot.
    Import,
    /// The server's durability mode and version.
    Info,
    /// `GET /v1/cluster`: roles, term, indexes and members of a replicated
    /// store (docs/replication.md).
    Cluster,
    /// `POST /v1/cluster/step-down`: a leader hands leadership to its most
    /// caught-up peer (before a planned restart).
    StepDown,
    /// Many independent get/set/delete/contains_key calls in one request
    /// (see [`crate::mixed`]).
    Batch,
    OpenApi,
    Healthz,
    Readyz,
    Metrics,
    WalRegister,
    WalAppend,
    WalReadFrom,
    WalPruneUpTo,
    /// `head_sequence`, `oldest_sequence` and `event_count` in one answer.
    WalInfo,
    WalDelete,
}

impl Operation {
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::ContainsKey => "contains_key",
            Operation::Set => "set",
            Operation::Delete => "delete",
            Operation::GetMany => "get_many",
            Operation::SetMany => "set_many",
            Operation::DeleteMany => "delete_many",
            Operation::StoreInfo => "store_info",
            Operation::ClearStore => "clear_store",
            Operation::ListKeys => "list_keys",
            Operation::Sync => "sync",
            Operation::Snapshot => "snapshot",
            Operation::Import => "import",
            Operation::Info => "info",
            Operation::Cluster => "cluster",
            Operation::StepDown => "step_down",
            Operation::Batch => "batch",
            Operation::OpenApi => "openapi",
            Operation::Healthz => "healthz",
            Operation::Readyz => "readyz",
            Operation::Metrics => "metrics",
            Operation::WalRegister => "wal_register",
            Operation::WalAppend => "wal_append",
            Operation::WalReadFrom => "wal_read_from",
            Operation::WalPruneUpTo => "wal_prune_up_to",
            Operation::WalInfo => "wal_info",
            Operation::WalDelete => "wal_delete",
        }
    }
}

/// Which query parameters an endpoint takes (see [`crate::query`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    None,
    Store,
    StoreAndKey,
    /// `source` plus the optional or required parameters named here (see
    /// [`crate::wal`]).
    Source(&'static [&'static str]),
    /// `store` repeated any number of times, none meaning every store
    /// ([`snapshot::encode_selection`]).
    StoreSelection,
}

/// The shape of a request or response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Empty,
    /// One value as raw bytes ([`routes::OCTET_STREAM`]).
    Value,
    /// A keys frame ([`crate::batch`]).
    KeysFrame,
    /// An entries frame ([`crate::batch`]).
    EntriesFrame,
    /// A mixed batch request frame ([`crate::mixed`]).
    MixedBatchFrame,
    /// A mixed batch answer frame: one result per call ([`crate::mixed`]).
    MixedResultsFrame,
    /// JSON described by the named schema: one of this crate's types, or
    /// `ProbeBody` for the health probes.
    Json(&'static str),
    /// A snapshot stream ([`snapshot::CONTENT_TYPE`], see [`crate::snapshot`]).
    Snapshot,
    /// The OpenAPI document itself.
    OpenApiDocument,
    /// Prometheus/OpenMetrics text.
    MetricsText,
    /// One encoded WAL event as raw bytes (see docs/wal.md).
    WalEvent,
    /// A WAL events frame ([`crate::wal::EventsFrame`]).
    WalEventsFrame,
}

/// One route: method and path, what it serves, and its bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub operation: Operation,
    /// Whether the bearer token is required.
    pub auth: bool,
    pub query: Query,
    pub request: Body,
    /// Status of the success answer.
    pub status: u16,
    pub response: Body,
    pub summary: &'static str,
}

impl Endpoint {
    /// The endpoint serving `method` (upper case) on `path`.
    pub fn find(method: &str, path: &str) -> Option<&'static Endpoint> {
        ALL.iter()
            .copied()
            .find(|e| e.path == path && e.method.as_str() == method)
    }
}

// One positional row per endpoint reads like the table it is.
#[allow(clippy::too_many_arguments)]
const fn data(
    method: Method,
    path: &'static str,
    operation: Operation,
    query: Query,
    request: Body,
    status: u16,
    response: Body,
    summary: &'static str,
) -> Endpoint {
    Endpoint {
        method,
        path,
        operation,
        auth: true,
        query,
        request,
        status,
        response,
        summary,
    }
}

const fn public(
    path: &'static str,
    operation: Operation,
    response: Body,
    summary: &'static str,
) -> Endpoint {
    Endpoint {
        method: Method::Get,
        path,
        operation,
        auth: false,
        query: Query::None,
        request: Body::Empty,
        status: 200,
        response,
        summary,
    }
}

pub const GET: Endpoint = data(
    Method::Get,
    routes::KV,
    Operation::Get,
    Query::StoreAndKey,
    Body::Empty,
    200,
    Body::Value,
    "Read one value; 404 with x-drasi-key-not-found when absent",
);
pub const CONTAINS_KEY: Endpoint = data(
    Method::Head,
    routes::KV,
    Operation::ContainsKey,
    Query::StoreAndKey,
    Body::Empty,
    200,
    Body::Empty,
    "Whether a key exists; 404 with x-drasi-key-not-found when absent",
);
pub const SET: Endpoint = data(
    Method::Put,
    routes::KV,
    Operation::Set,
    Query::StoreAndKey,
    Body::Value,
    204,
    Body::Empty,
    "Write one value, answered after its commit",
);
pub const DELETE: Endpoint = data(
    Method::Delete,
    routes::KV,
    Operation::Delete,
    Query::StoreAndKey,
    Body::Empty,
    200,
    Body::Json("DeleteResponse"),
    "Delete one key",
);
pub const GET_MANY: Endpoint = data(
    Method::Post,
    routes::GET_MANY,
    Operation::GetMany,
    Query::Store,
    Body::KeysFrame,
    200,
    Body::EntriesFrame,
    "Read many keys; the answer holds the present ones, each once",
);
pub const SET_MANY: Endpoint = data(
    Method::Post,
    routes::SET_MANY,
    Operation::SetMany,
    Query::Store,
    Body::EntriesFrame,
    204,
    Body::Empty,
    "Write many entries atomically; a later duplicate key wins",
);
pub const DELETE_MANY: Endpoint = data(
    Method::Post,
    routes::DELETE_MANY,
    Operation::DeleteMany,
    Query::Store,
    Body::KeysFrame,
    200,
    Body::Json("CountResponse"),
    "Delete many keys atomically",
);
pub const STORE_INFO: Endpoint = data(
    Method::Get,
    routes::STORE,
    Operation::StoreInfo,
    Query::Store,
    Body::Empty,
    200,
    Body::Json("StoreInfo"),
    "store_exists and key_count",
);
pub const CLEAR_STORE: Endpoint = data(
    Method::Delete,
    routes::STORE,
    Operation::ClearStore,
    Query::Store,
    Body::Empty,
    200,
    Body::Json("CountResponse"),
    "Remove every key of a store; answers how many it held",
);
pub const LIST_KEYS: Endpoint = data(
    Method::Get,
    routes::STORE_KEYS,
    Operation::ListKeys,
    Query::Store,
    Body::Empty,
    200,
    Body::Json("KeyList"),
    "Every key of a store, in no particular order",
);
pub const SYNC: Endpoint = data(
    Method::Post,
    routes::SYNC,
    Operation::Sync,
    Query::None,
    Body::Empty,
    204,
    Body::Empty,
    "Answers once everything acknowledged so far is durable",
);
pub const SNAPSHOT: Endpoint = data(
    Method::Get,
    snapshot::SNAPSHOT_PATH,
    Operation::Snapshot,
    Query::StoreSelection,
    Body::Empty,
    200,
    Body::Snapshot,
    "Stream a consistent snapshot of every store, or of the selected store_ids",
);
pub const IMPORT: Endpoint = data(
    Method::Post,
    snapshot::IMPORT_PATH,
    Operation::Import,
    Query::None,
    Body::Snapshot,
    200,
    Body::Json("ImportResponse"),
    "Replace exactly the stores a snapshot holds (and those it selects), in one commit",
);
pub const INFO: Endpoint = data(
    Method::Get,
    routes::INFO,
    Operation::Info,
    Query::None,
    Body::Empty,
    200,
    Body::Json("ServerInfo"),
    "The server's durability mode and version",
);
pub const CLUSTER: Endpoint = data(
    Method::Get,
    routes::CLUSTER,
    Operation::Cluster,
    Query::None,
    Body::Empty,
    200,
    Body::Json("ClusterInfo"),
    "This node's view of the cluster: its role, the leader, the term, commit and applied \
     indexes, and the members (a single node answers as the leader of a cluster of one)",
);
pub const STEP_DOWN: Endpoint = data(
    Method::Post,
    routes::CLUSTER_STEP_DOWN,
    Operation::StepDown,
    Query::None,
    Body::Empty,
    200,
    Body::Json("StepDownResponse"),
    "Hand leadership of a replicated store to the most caught-up other voter before a planned \
     restart of this node; a node that is not the leader answers who is",
);
pub const BATCH: Endpoint = data(
    Method::Post,
    routes::BATCH,
    Operation::Batch,
    Query::None,
    Body::MixedBatchFrame,
    200,
    Body::MixedResultsFrame,
    "Many independent get/set/delete/contains_key calls, each with its own result; \
     writes answered after the commit that holds them; a call with bad input fails alone",
);
pub const OPENAPI: Endpoint = public(
    routes::OPENAPI,
    Operation::OpenApi,
    Body::OpenApiDocument,
    "This OpenAPI document",
);
pub const HEALTHZ: Endpoint = public(
    routes::HEALTHZ,
    Operation::Healthz,
    Body::Json("ProbeBody"),
    "Liveness: fails only when the writer thread died",
);
pub const READYZ: Endpoint = public(
    routes::READYZ,
    Operation::Readyz,
    Body::Json("ProbeBody"),
    "Readiness: the server can serve writes right now",
);
pub const METRICS: Endpoint = public(
    routes::METRICS,
    Operation::Metrics,
    Body::MetricsText,
    "Prometheus metrics in the OpenMetrics text format",
);

pub const WAL_REGISTER: Endpoint = data(
    Method::Put,
    routes::WAL_REGISTER,
    Operation::WalRegister,
    Query::Source(&[]),
    Body::Json("WalConfig"),
    204,
    Body::Empty,
    "WAL register: create a source's log, or set the config of an existing one (events and counter are kept)",
);
pub const WAL_APPEND: Endpoint = data(
    Method::Post,
    routes::WAL_APPEND,
    Operation::WalAppend,
    Query::Source(&[wal::APPEND_ID_PARAM]),
    Body::WalEvent,
    200,
    Body::Json("AppendResponse"),
    "WAL append: add one encoded event; a repeated appendId returns the first sequence",
);
pub const WAL_READ_FROM: Endpoint = data(
    Method::Get,
    routes::WAL_EVENTS,
    Operation::WalReadFrom,
    Query::Source(&[wal::FROM_PARAM]),
    Body::Empty,
    200,
    Body::WalEventsFrame,
    "WAL read_from: the retained events with sequence >= from, in order",
);
pub const WAL_PRUNE_UP_TO: Endpoint = data(
    Method::Post,
    routes::WAL_PRUNE,
    Operation::WalPruneUpTo,
    Query::Source(&[wal::UP_TO_PARAM]),
    Body::Empty,
    200,
    Body::Json("CountResponse"),
    "WAL prune_up_to: remove every event with sequence <= upTo",
);
pub const WAL_INFO: Endpoint = data(
    Method::Get,
    routes::WAL_INFO,
    Operation::WalInfo,
    Query::Source(&[]),
    Body::Empty,
    200,
    Body::Json("WalInfo"),
    "WAL head_sequence, oldest_sequence and event_count from one snapshot",
);
pub const WAL_DELETE: Endpoint = data(
    Method::Delete,
    routes::WAL,
    Operation::WalDelete,
    Query::Source(&[]),
    Body::Empty,
    204,
    Body::Empty,
    "WAL delete_wal: remove a source's log, events and counter (no error when absent)",
);

/// Every endpoint the server serves.
pub const ALL: [&Endpoint; 27] = [
    &GET,
    &CONTAINS_KEY,
    &SET,
    &DELETE,
    &GET_MANY,
    &SET_MANY,
    &DELETE_MANY,
    &STORE_INFO,
    &CLEAR_STORE,
    &LIST_KEYS,
    &SYNC,
    &SNAPSHOT,
    &IMPORT,
    &INFO,
    &CLUSTER,
    &STEP_DOWN,
    &BATCH,
    &OPENAPI,
    &HEALTHZ,
    &READYZ,
    &METRICS,
    &WAL_REGISTER,
    &WAL_APPEND,
    &WAL_READ_FROM,
    &WAL_PRUNE_UP_TO,
    &WAL_INFO,
    &WAL_DELETE,
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn methods_paths_and_operations_are_unique() {
        let routes: HashSet<_> = ALL.iter().map(|e| (e.method, e.path)).collect();
        assert_eq!(routes.len(), ALL.len());
        let ops: HashSet<_> = ALL.iter().map(|e| e.operation).collect();
        assert_eq!(ops.len(), ALL.len());
    }

    /// The server layers auth per path, so a path is either all public or
    /// all protected.
    #[test]
    fn every_path_is_uniformly_authenticated() {
        for e in ALL {
            for other in ALL.iter().filter(|o| o.path == e.path) {
                assert_eq!(e.auth, other.auth, "{} {}", e.method.as_str(), e.path);
            }
        }
    }

    #[test]
    fn find_matches_method_and_path() {
        assert_eq!(Endpoint::find("HEAD", routes::KV), Some(&CONTAINS_KEY));
        assert_eq!(Endpoint::find("DELETE", routes::STORE), Some(&CLEAR_STORE));
        assert_eq!(Endpoint::find("PATCH", routes::KV), None);
        assert_eq!(Endpoint::find("GET", "/v1/nope"), None);
    }
}
