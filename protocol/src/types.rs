//! Small JSON bodies. Values never travel as JSON: single values are raw
//! bytes and batches use the binary framing in [`crate::batch`].

use serde::{Deserialize, Serialize};

/// Answer to `DELETE /v1/kv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteResponse {
    pub existed: bool,
}

/// Answer to `POST /v1/kv/delete-many` and `DELETE /v1/store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CountResponse {
    pub count: u64,
}

/// Answer to `GET /v1/store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StoreInfo {
    /// True only when the partition holds at least one key.
    pub exists: bool,
    pub key_count: u64,
}

/// Answer to `GET /v1/store/keys`, in no particular order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyList {
    pub keys: Vec<String>,
}
