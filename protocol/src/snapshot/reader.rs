use std::io::{BufReader, Read};

use sha2::{Digest, Sha256};

use super::{
    FORMAT_VERSION, MAGIC, MAX_HEADER_BYTES, RECORD_TAG, SnapshotError, SnapshotHeader,
    SnapshotSummary, TRAILER_TAG, hex,
};

/// One `(store_id, key, value)` entry of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub store_id: String,
    pub key: String,
    pub value: Vec<u8>,
}

/// Reads and verifies a snapshot from any `std::io::Read`, one record at a
/// time.
///
/// [`SnapshotReader::next_record`] returns `Ok(None)` only after the trailer
/// has been read, its record count and SHA-256 match the stream, and the
/// stream has ended. A consumer that applies records as they come (restore,
/// import) must therefore treat everything it applied as provisional until
/// that `Ok(None)`.
pub struct SnapshotReader<R: Read> {
    input: Hashing<R>,
    header: SnapshotHeader,
    records: u64,
    stores: u64,
    last: Option<(String, String)>,
    summary: Option<SnapshotSummary>,
}

/// Hashes and counts every byte read through it.
struct Hashing<R: Read> {
    inner: BufReader<R>,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<R: Read> Hashing<R> {
    /// Fills `buf` completely or reports where the stream ended.
    fn exact(&mut self, buf: &mut [u8], inside: &'static str) -> Result<(), SnapshotError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(SnapshotError::Truncated {
                        offset: self.bytes,
                        inside,
                    });
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads `len` bytes without trusting `len` for the allocation: a
    /// corrupt length must end in "truncated", not in a huge allocation.
    fn vec(&mut self, len: u32, inside: &'static str) -> Result<Vec<u8>, SnapshotError> {
        let mut out = Vec::with_capacity((len as usize).min(64 * 1024));
        let got = self.take(u64::from(len)).read_to_end(&mut out)?;
        if got < len as usize {
            return Err(SnapshotError::Truncated {
                offset: self.bytes,
                inside,
            });
        }
        Ok(out)
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the magic, the version and the header.
    pub fn new(input: R) -> Result<Self, SnapshotError> {
        let mut input = Hashing {
            inner: BufReader::with_capacity(256 * 1024, input),
            hash: Sha256::new(),
            bytes: 0,
        };
        let mut start = [0u8; 14];
        input.exact(&mut start[..8], "magic")?;
        if start[..8] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        input.exact(&mut start[8..], "format version and header length")?;
        let version = u16::from_be_bytes([start[8], start[9]]);
        if version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let len = be32(&start[10..]);
        if len > MAX_HEADER_BYTES {
            return Err(SnapshotError::HeaderTooLarge {
                len,
                max: MAX_HEADER_BYTES,
            });
        }
        let fields = input.vec(len, "header")?;
        let mut crc = [0u8; 4];
        input.exact(&mut crc, "header checksum")?;
        let mut expected = crc32fast::Hasher::new();
        expected.update(&start);
        expected.update(&fields);
        if expected.finalize() != u32::from_be_bytes(crc) {
            return Err(SnapshotError::HeaderChecksum);
        }
        let header = SnapshotHeader::decode(&fields)?;
        Ok(SnapshotReader {
            input,
            header,
            records: 0,
            stores: 0,
            last: None,
            summary: None,
        })
    }

    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// Records returned so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.input.bytes
    }

    /// Set once [`Self::next_record`] has returned `Ok(None)`.
    pub fn summary(&self) -> Option<&SnapshotSummary> {
        self.summary.as_ref()
    }

    /// The next record, or `Ok(None)` once the whole stream is verified.
    pub fn next_record(&mut self) -> Result<Option<Record>, SnapshotError> {
        if self.summary.is_some() {
            return Ok(None);
        }
        let offset = self.input.bytes;
        let mut tag = [0u8; 1];
        self.input
            .exact(&mut tag, "record list (the trailer is missing)")?;
        match tag[0] {
            RECORD_TAG => self.record(offset).map(Some),
            TRAILER_TAG => self.trailer().map(|()| None),
            tag => Err(SnapshotError::UnknownTag { tag, offset }),
        }
    }

    fn record(&mut self, offset: u64) -> Result<Record, SnapshotError> {
        let index = self.records;
        let mut head = [0u8; 13];
        head[0] = RECORD_TAG;
        self.input.exact(&mut head[1..], "record lengths")?;
        let store = self.input.vec(be32(&head[1..5]), "record store_id")?;
        let key = self.input.vec(be32(&head[5..9]), "record key")?;
        let value = self.input.vec(be32(&head[9..13]), "record value")?;
        let mut crc = [0u8; 4];
        self.input.exact(&mut crc, "record checksum")?;
        let mut expected = crc32fast::Hasher::new();
        expected.update(&head);
        expected.update(&store);
        expected.update(&key);
        expected.update(&value);
        if expected.finalize() != u32::from_be_bytes(crc) {
            return Err(SnapshotError::RecordChecksum { index, offset });
        }
        let utf8 = |bytes: Vec<u8>, field| {
            String::from_utf8(bytes).map_err(|_| SnapshotError::InvalidUtf8 {
                index,
                offset,
                field,
            })
        };
        let store_id = utf8(store, "store_id")?;
        let key = utf8(key, "key")?;
        let new_store = match &mut self.last {
            None => true,
            Some((s, k)) => {
                if (s.as_str(), k.as_str()) >= (store_id.as_str(), key.as_str()) {
                    return Err(SnapshotError::OutOfOrder { index, offset });
                }
                if *s == store_id {
                    k.clone_from(&key);
                    false
                } else {
                    true
                }
            }
        };
        if new_store {
            self.stores += 1;
            self.last = Some((store_id.clone(), key.clone()));
        }
        self.records += 1;
        Ok(Record {
            store_id,
            key,
            value,
        })
    }

    fn trailer(&mut self) -> Result<(), SnapshotError> {
        let mut count = [0u8; 8];
        self.input.exact(&mut count, "trailer record count")?;
        let actual: [u8; 32] = self.input.hash.clone().finalize().into();
        let mut expected = [0u8; 32];
        self.input.exact(&mut expected, "trailer checksum")?;
        if expected != actual {
            return Err(SnapshotError::StreamChecksum {
                expected: hex(&expected),
                actual: hex(&actual),
            });
        }
        let trailer = u64::from_be_bytes(count);
        if trailer != self.records {
            return Err(SnapshotError::CountMismatch {
                trailer,
                read: self.records,
            });
        }
        let end = self.input.bytes;
        let mut extra = [0u8; 1];
        loop {
            match self.input.read(&mut extra) {
                Ok(0) => break,
                Ok(_) => return Err(SnapshotError::TrailingBytes { offset: end }),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.summary = Some(SnapshotSummary {
            records: self.records,
            stores: self.stores,
            bytes: end,
            sha256: actual,
        });
        Ok(())
    }

    /// Reads the rest of the stream, checking every record, and returns the
    /// summary of an intact snapshot.
    pub fn verify_to_end(mut self) -> Result<(SnapshotHeader, SnapshotSummary), SnapshotError> {
        while self.next_record()?.is_some() {}
        let summary = self
            .summary
            .take()
            .expect("set when next_record returns None");
        Ok((self.header, summary))
    }
}
