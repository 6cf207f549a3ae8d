//! HTTP paths, headers and media types.
//!
//! `store_id` and `key` never appear in the path: they travel as
//! percent-encoded query parameters (see [`crate::query`]) so that empty
//! strings, `/`, `..`, `?`, `#` and any other UTF-8 survive every proxy and
//! router unchanged. When that query would make the URI too long (HTTP/1
//! servers refuse URIs over 64 KiB, and a 64 KiB key of multi-byte UTF-8
//! is 192 KiB percent-encoded), the same encoded query travels in
//! [`TARGET_HEADER`] instead.

/// Server port, named `http` in Kubernetes objects.
pub const DEFAULT_PORT: u16 = 7070;

/// Single key: `GET` (get), `PUT` (set, raw body), `DELETE` (delete),
/// `HEAD` (contains_key). Query: `store`, `key`.
pub const KV: &str = "/v1/kv";
/// `POST`, body: keys frame; response: entries frame of the keys present.
pub const GET_MANY: &str = "/v1/kv/get-many";
/// `POST`, body: entries frame; applied atomically.
pub const SET_MANY: &str = "/v1/kv/set-many";
/// `POST`, body: keys frame; applied atomically; response [`crate::CountResponse`].
pub const DELETE_MANY: &str = "/v1/kv/delete-many";
/// `GET` -> [`crate::StoreInfo`] (store_exists + key_count);
/// `DELETE` -> [`crate::CountResponse`] (clear_store). Query: `store`.
pub const STORE: &str = "/v1/store";
/// `GET` -> [`crate::KeyList`]. Query: `store`.
pub const STORE_KEYS: &str = "/v1/store/keys";
/// `POST`, body: mixed batch of independent single-key calls (see
/// [`crate::mixed`]); response: one result per call.
pub const BATCH: &str = "/v1/batch";
/// `POST` -> 204 once everything acknowledged so far is durable.
pub const SYNC: &str = "/v1/sync";
/// Write-ahead logs of DrasiLib transient sources (see [`crate::wal`]);
/// every route takes `source=<id>`.
/// `PUT`, body: JSON [`crate::wal::WalConfig`] -> 204 (register).
pub const WAL_REGISTER: &str = "/v1/wal/register";
/// `POST`, body: the encoded event (raw bytes), query `appendId` optional
/// -> [`crate::wal::AppendResponse`].
pub const WAL_APPEND: &str = "/v1/wal/append";
/// `GET`, query `from` -> [`crate::wal::EventsFrame`] (read_from).
pub const WAL_EVENTS: &str = "/v1/wal/events";
/// `POST`, query `upTo` -> [`crate::CountResponse`] (prune_up_to).
pub const WAL_PRUNE: &str = "/v1/wal/prune";
/// `GET` -> [`crate::wal::WalInfo`] (head, oldest, count).
pub const WAL_INFO: &str = "/v1/wal/info";
/// `DELETE` -> 204 (delete_wal; also when there was no log).
pub const WAL: &str = "/v1/wal";
/// `GET` -> [`crate::ServerInfo`] (durability mode, version).
pub const INFO: &str = "/v1/info";
/// The replication state of the node answering (a single node answers too).
pub const CLUSTER: &str = "/v1/cluster";
/// `POST` -> [`crate::StepDownResponse`]: the leader hands leadership over.
pub const CLUSTER_STEP_DOWN: &str = "/v1/cluster/step-down";
/// `GET` -> OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = "/v1/openapi.json";

pub const HEALTHZ: &str = "/healthz";
pub const READYZ: &str = "/readyz";
pub const METRICS: &str = "/metrics";

/// Raw values and batch frames.
pub const OCTET_STREAM: &str = "application/octet-stream";
pub const JSON: &str = "application/json";

/// Set on `404` answers to `GET`/`HEAD /v1/kv` when the key is absent, so a
/// client can tell "no such key" from "no such route" even on `HEAD`, which
/// has no body.
pub const KEY_NOT_FOUND_HEADER: &str = "x-drasi-key-not-found";

/// On every answer: the server's durability mode, `immediate` or
/// `eventual` (see [`crate::Durability`]), so a client learns it from any
/// call without asking `/v1/info`.
pub const DURABILITY_HEADER: &str = "x-drasi-durability";

/// Carries the request's target (`store=..&key=..`, encoded exactly like
/// the query string, see [`crate::encode_query`]) instead of the query
/// string. A request carries its target in one place only: both is a
/// `400 invalid_query`.
pub const TARGET_HEADER: &str = "x-drasi-target";

/// Longest encoded target the client puts in the URI; longer ones go in
/// [`TARGET_HEADER`]. Far below every proxy's URI limit.
pub const MAX_TARGET_IN_URI: usize = 2048;
