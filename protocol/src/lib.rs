//! The wire contract between `drasi-store-server` and
//! `drasi-state-store-remote`.
//!
//! Both sides import everything that crosses the network from here — the
//! endpoint table, paths, the query-string codec, the binary batch framing,
//! JSON bodies, error codes and default limits — so the client and the
//! server cannot drift apart.
//! `docs/protocol.md` describes the same contract for humans.

pub mod batch;
pub mod endpoints;
pub mod env;
pub mod error;
pub mod limits;
pub mod mixed;
pub mod query;
pub mod routes;
pub mod snapshot;
pub mod types;
pub mod wal;

pub use batch::{
    BatchError, EntriesFrame, KeysFrame, decode_entries, decode_keys, encode_entries, encode_keys,
};
pub use endpoints::{Endpoint, Operation};
pub use error::{ErrorBody, ErrorCode};
pub use limits::Limits;
pub use mixed::{
    MixedError, MixedKind, MixedOp, MixedResult, decode_mixed_ops, decode_mixed_results,
    encode_mixed_ops, encode_mixed_results,
};
pub use query::{QueryError, RequestTarget, encode_query, parse_query};
pub use types::{
    ClusterInfo, ClusterMember, ClusterRole, CountResponse, DeleteResponse, Durability,
    ImportResponse, KeyList, ServerInfo, StepDownResponse, StoreInfo,
};
