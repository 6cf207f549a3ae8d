//! Size limits enforced by the server (each a `--max-*` flag) and checked
//! early by the client so that an oversize request fails without a round trip.

pub const DEFAULT_MAX_KEY_BYTES: usize = 4096;
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_MAX_BATCH_ENTRIES: usize = 10_000;
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Limits that bound every request. `max_key_bytes` applies to `store_id`s
/// as well as keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_batch_entries: usize,
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_batch_entries: DEFAULT_MAX_BATCH_ENTRIES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}
