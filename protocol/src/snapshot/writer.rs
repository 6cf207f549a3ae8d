use std::io::Write;

use sha2::{Digest, Sha256};

use super::{
    FORMAT_VERSION, MAGIC, RECORD_TAG, SnapshotError, SnapshotHeader, SnapshotSummary, TRAILER_TAG,
};

/// Writes a snapshot to any `std::io::Write`, one record at a time.
///
/// Records must come in strictly ascending `(store_id, key)` order; the
/// writer checks it so that it never produces a stream its reader refuses.
/// Nothing is complete until [`SnapshotWriter::finish`] has written the
/// trailer; a stream cut short before that fails verification.
pub struct SnapshotWriter<W: Write> {
    out: W,
    hash: Sha256,
    bytes: u64,
    records: u64,
    stores: u64,
    last: Option<(String, String)>,
}

impl<W: Write> SnapshotWriter<W> {
    /// Writes the magic, version and header.
    pub fn new(out: W, header: &SnapshotHeader) -> Result<Self, SnapshotError> {
        let fields = header.encode()?;
        let mut start = Vec::with_capacity(MAGIC.len() + 2 + 4 + fields.len() + 4);
        start.extend_from_slice(&MAGIC);
        start.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        start.extend_from_slice(&(fields.len() as u32).to_be_bytes());
        start.extend_from_slice(&fields);
        let crc = crc32fast::hash(&start);
        start.extend_from_slice(&crc.to_be_bytes());
        let mut writer = SnapshotWriter {
            out,
            hash: Sha256::new(),
            bytes: 0,
            records: 0,
            stores: 0,
            last: None,
        };
        writer.emit(&start)?;
        Ok(writer)
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.out.write_all(bytes)?;
        self.hash.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Appends one record.
    pub fn write_record(
        &mut self,
        store_id: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), SnapshotError> {
        let new_store = match &self.last {
            None => true,
            Some((s, k)) => {
                if (s.as_str(), k.as_str()) >= (store_id, key) {
                    return Err(SnapshotError::OutOfOrder {
                        index: self.records,
                        offset: self.bytes,
                    });
                }
                s != store_id
            }
        };
        for (field, len) in [
            ("store_id", store_id.len()),
            ("key", key.len()),
            ("value", value.len()),
        ] {
            if len > u32::MAX as usize {
                return Err(SnapshotError::FieldTooLarge { field, len });
            }
        }
        let mut head = [0u8; 13];
        head[0] = RECORD_TAG;
        head[1..5].copy_from_slice(&(store_id.len() as u32).to_be_bytes());
        head[5..9].copy_from_slice(&(key.len() as u32).to_be_bytes());
        head[9..13].copy_from_slice(&(value.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(store_id.as_bytes());
        crc.update(key.as_bytes());
        crc.update(value);
        self.emit(&head)?;
        self.emit(store_id.as_bytes())?;
        self.emit(key.as_bytes())?;
        self.emit(value)?;
        self.emit(&crc.finalize().to_be_bytes())?;
        self.records += 1;
        if new_store {
            self.stores += 1;
            self.last = Some((store_id.to_owned(), key.to_owned()));
        } else if let Some((_, k)) = &mut self.last {
            k.clear();
            k.push_str(key);
        }
        Ok(())
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Writes the trailer, flushes, and returns the summary and the inner
    /// writer (for the caller to fsync or close).
    pub fn finish(mut self) -> Result<(SnapshotSummary, W), SnapshotError> {
        let mut trailer = [0u8; 9];
        trailer[0] = TRAILER_TAG;
        trailer[1..].copy_from_slice(&self.records.to_be_bytes());
        self.emit(&trailer)?;
        let sha256: [u8; 32] = self.hash.clone().finalize().into();
        self.out.write_all(&sha256)?;
        self.out.flush()?;
        let summary = SnapshotSummary {
            records: self.records,
            stores: self.stores,
            bytes: self.bytes + 32,
            sha256,
        };
        Ok((summary, self.out))
    }
}
