use thiserror::Error;

/// Why a snapshot stream was rejected. `offset` is the byte position in the
/// stream where the problem was found.
#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("snapshot I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a drasi-store snapshot (the first 8 bytes are not the snapshot magic)")]
    BadMagic,
    #[error(
        "snapshot format version {found} is not supported: this build reads version {supported} only"
    )]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("snapshot is truncated: the stream ended at byte {offset} inside the {inside}")]
    Truncated { offset: u64, inside: &'static str },
    #[error("snapshot header is {len} bytes, more than the limit of {max}")]
    HeaderTooLarge { len: u32, max: u32 },
    #[error("snapshot header is corrupt: {0}")]
    BadHeader(String),
    #[error("snapshot header checksum mismatch (the header is corrupt)")]
    HeaderChecksum,
    #[error("record #{index} at byte {offset} is corrupt: its checksum does not match")]
    RecordChecksum { index: u64, offset: u64 },
    #[error("unknown record tag {tag:#04x} at byte {offset} (corrupt stream)")]
    UnknownTag { tag: u8, offset: u64 },
    #[error("record #{index} at byte {offset}: the {field} is not valid UTF-8")]
    InvalidUtf8 {
        index: u64,
        offset: u64,
        field: &'static str,
    },
    #[error(
        "record #{index} at byte {offset} is out of order: records must be in strictly ascending (store_id, key) order"
    )]
    OutOfOrder { index: u64, offset: u64 },
    #[error("snapshot trailer says {trailer} records but the stream holds {read}")]
    CountMismatch { trailer: u64, read: u64 },
    #[error("snapshot checksum mismatch: trailer says {expected}, the stream hashes to {actual}")]
    StreamChecksum { expected: String, actual: String },
    #[error("snapshot has trailing bytes after its trailer (at byte {offset})")]
    TrailingBytes { offset: u64 },
    #[error("{field} is {len} bytes; a snapshot field holds at most 4 GiB - 1")]
    FieldTooLarge { field: &'static str, len: usize },
}
