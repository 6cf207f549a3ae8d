//! The extensible header: a list of `(tag u16, len u32, value)` fields.
//!
//! Readers skip fields whose tag they do not know unless the tag has its
//! high bit set ([`CRITICAL`]): such a field changes how the stream must be
//! read, so an older reader refuses the snapshot instead of misreading it.

use super::SnapshotError;

const CREATED_AT_UNIX_MS: u16 = 1;
const SERVER_VERSION: u16 = 2;
const SELECTED_STORE: u16 = 3;
const LAST_APPLIED_INDEX: u16 = 4;
/// Tags at or above this must be understood by the reader.
pub(crate) const CRITICAL: u16 = 0x8000;

/// Metadata at the start of a snapshot. Every field is optional so that a
/// producer other than the server (a test, a migration tool) can write one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// When the read transaction behind the snapshot began.
    pub created_at_unix_ms: Option<u64>,
    /// Version of the software that wrote it.
    pub server_version: Option<String>,
    /// Non-empty for a selective export: the store_ids that were requested.
    /// Importing such a snapshot replaces exactly these stores (a listed
    /// store without records was empty or absent, and stays so).
    pub selected_stores: Vec<String>,
    /// The replication log index the snapshot corresponds to, for a
    /// replica rebuilt from it. Not set by a single-node server.
    pub last_applied_index: Option<u64>,
}

impl SnapshotHeader {
    pub fn is_selective(&self) -> bool {
        !self.selected_stores.is_empty()
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut out = Vec::new();
        if let Some(ms) = self.created_at_unix_ms {
            field(&mut out, CREATED_AT_UNIX_MS, &ms.to_be_bytes());
        }
        if let Some(v) = &self.server_version {
            field(&mut out, SERVER_VERSION, v.as_bytes());
        }
        for store in &self.selected_stores {
            if store.len() > u32::MAX as usize {
                return Err(SnapshotError::FieldTooLarge {
                    field: "selected store_id",
                    len: store.len(),
                });
            }
            field(&mut out, SELECTED_STORE, store.as_bytes());
        }
        if let Some(i) = self.last_applied_index {
            field(&mut out, LAST_APPLIED_INDEX, &i.to_be_bytes());
        }
        if out.len() > super::MAX_HEADER_BYTES as usize {
            return Err(SnapshotError::FieldTooLarge {
                field: "header",
                len: out.len(),
            });
        }
        Ok(out)
    }

    pub(crate) fn decode(mut bytes: &[u8]) -> Result<Self, SnapshotError> {
        let bad = |m: String| SnapshotError::BadHeader(m);
        let mut header = SnapshotHeader::default();
        while !bytes.is_empty() {
            if bytes.len() < 6 {
                return Err(bad("a field is cut short".into()));
            }
            let tag = u16::from_be_bytes([bytes[0], bytes[1]]);
            let len = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
            bytes = &bytes[6..];
            if bytes.len() < len {
                return Err(bad(format!("field {tag} claims {len} bytes")));
            }
            let (value, rest) = bytes.split_at(len);
            bytes = rest;
            let u64_of = |name: &str| -> Result<u64, SnapshotError> {
                <[u8; 8]>::try_from(value)
                    .map(u64::from_be_bytes)
                    .map_err(|_| bad(format!("{name} is {len} bytes, not 8")))
            };
            let text_of = |name: &str| -> Result<String, SnapshotError> {
                String::from_utf8(value.to_vec())
                    .map_err(|_| bad(format!("{name} is not valid UTF-8")))
            };
            match tag {
                CREATED_AT_UNIX_MS => header.created_at_unix_ms = Some(u64_of("created-at")?),
                SERVER_VERSION => header.server_version = Some(text_of("server version")?),
                SELECTED_STORE => header.selected_stores.push(text_of("selected store_id")?),
                LAST_APPLIED_INDEX => {
                    header.last_applied_index = Some(u64_of("last applied index")?)
                }
                t if t >= CRITICAL => {
                    return Err(bad(format!(
                        "field {t:#06x} is required to read this snapshot but unknown to this \
                         build (the snapshot was written by a newer version)"
                    )));
                }
                _ => {}
            }
        }
        Ok(header)
    }
}

fn field(out: &mut Vec<u8>, tag: u16, value: &[u8]) {
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}
