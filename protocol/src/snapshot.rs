//! The snapshot stream: a logical, self-checking copy of a store database.
//!
//! A snapshot is what `GET /v1/admin/snapshot` streams, what `backup`
//! stores, what `restore` and `import` read back, and what a replica can be
//! rebuilt from. It carries records `(store_id, key, value)` rather than the
//! server's internal partition layout, so any subset of store_ids can be
//! exported or imported and a restore builds a fresh, compact database.
//!
//! Layout (all integers big-endian; docs/backup.md has the byte-by-byte
//! description):
//!
//! ```text
//! magic "\x89DSSNAP\n" | version u16 | header_len u32 | header fields | header crc32
//! record*:  0x01 | store_len u32 | key_len u32 | value_len u32 | store | key | value | crc32
//! trailer:  0xFF | record_count u64 | sha256 of every byte before it
//! ```
//!
//! Records are in strictly ascending `(store_id, key)` byte order, which
//! rules out duplicates and lets a reader count stores without a set.
//! Truncation anywhere, a flipped byte anywhere, and trailing bytes after the
//! trailer are all detected: the whole-stream SHA-256 covers every byte
//! before it, and the reader insists on end-of-stream right after it.
//!
//! [`SnapshotWriter`] and [`SnapshotReader`] work on `std::io` streams and
//! hold one record at a time, so memory does not depend on the snapshot size.

mod error;
mod header;
mod reader;
mod selection;
mod writer;

pub use error::SnapshotError;
pub use header::SnapshotHeader;
pub use reader::{Record, SnapshotReader};
pub use selection::{encode_selection, parse_selection};
pub use writer::SnapshotWriter;

/// First bytes of every snapshot. The high first byte catches transfers
/// that mangle binary data as text, the trailing newline catches CRLF
/// conversion (the same trick as PNG).
pub const MAGIC: [u8; 8] = *b"\x89DSSNAP\n";

/// The layout version this code writes and the only one it reads.
pub const FORMAT_VERSION: u16 = 1;

/// `GET`: streams a snapshot (bearer token required); optional repeated
/// `store=` parameters select store_ids (see [`encode_selection`]).
pub const SNAPSHOT_PATH: &str = "/v1/admin/snapshot";

/// `POST` a snapshot (bearer token required) to replace exactly the
/// store_ids it holds, in one commit.
pub const IMPORT_PATH: &str = "/v1/admin/import";

/// HTTP media type of a snapshot body.
pub const CONTENT_TYPE: &str = "application/vnd.drasi.store-snapshot";

/// Largest header a reader accepts: a selective header lists store_ids, and
/// a corrupt length must not make a reader buffer gigabytes.
pub const MAX_HEADER_BYTES: u32 = 16 * 1024 * 1024;

pub(crate) const RECORD_TAG: u8 = 0x01;
pub(crate) const TRAILER_TAG: u8 = 0xFF;

/// What a complete, verified snapshot contained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub records: u64,
    /// Distinct store_ids among the records.
    pub stores: u64,
    /// Length of the whole stream, trailer included.
    pub bytes: u64,
    /// The trailer's SHA-256 over every byte before the checksum itself.
    pub sha256: [u8; 32],
}

impl SnapshotSummary {
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests;
