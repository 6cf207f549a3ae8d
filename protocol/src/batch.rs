//! Binary framing of batch bodies.
//!
//! Values are arbitrary bytes and may be megabytes long, so batches do not
//! use JSON (base64 would cost a third more bytes and a copy). All integers
//! are unsigned 32-bit big-endian:
//!
//! ```text
//! keys frame:    count, then count x (key_len, key UTF-8 bytes)
//! entries frame: count, then count x (key_len, key UTF-8 bytes, value_len, value bytes)
//! ```
//!
//! Decoding borrows from the input (no copies) and checks every limit before
//! anything is applied, so a bad batch changes nothing.

use thiserror::Error;

use crate::Limits;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("batch frame is truncated")]
    Truncated,
    #[error("batch frame has {0} trailing bytes after the last entry")]
    TrailingBytes(usize),
    #[error("batch has {count} entries, more than the limit of {max}")]
    TooManyEntries { count: usize, max: usize },
    #[error("key #{index} is {len} bytes, more than the limit of {max}")]
    KeyTooLarge {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("value #{index} is {len} bytes, more than the limit of {max}")]
    ValueTooLarge {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("key #{index} is not valid UTF-8")]
    InvalidUtf8 { index: usize },
}

/// Encodes a keys frame (for get-many and delete-many).
pub fn encode_keys(keys: &[&str]) -> Vec<u8> {
    let len = 4 + keys.iter().map(|k| 4 + k.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    put_u32(&mut out, keys.len());
    for key in keys {
        put_bytes(&mut out, key.as_bytes());
    }
    out
}

/// Encodes an entries frame (for set-many requests and get-many answers).
pub fn encode_entries<'a, I>(entries: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
    I::IntoIter: Clone,
{
    let iter = entries.into_iter();
    let (count, len) = iter.clone().fold((0usize, 4usize), |(n, l), (k, v)| {
        (n + 1, l + 8 + k.len() + v.len())
    });
    let mut out = Vec::with_capacity(len);
    put_u32(&mut out, count);
    for (key, value) in iter {
        put_bytes(&mut out, key.as_bytes());
        put_bytes(&mut out, value);
    }
    out
}

/// Decodes a keys frame, enforcing `max_batch_entries` and `max_key_bytes`.
pub fn decode_keys<'a>(buf: &'a [u8], limits: &Limits) -> Result<Vec<&'a str>, BatchError> {
    let mut r = Reader { buf };
    let count = r.count(limits)?;
    let mut keys = Vec::with_capacity(count);
    for index in 0..count {
        keys.push(r.key(index, limits)?);
    }
    r.finish()?;
    Ok(keys)
}

/// Decodes an entries frame, enforcing every limit.
pub fn decode_entries<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Vec<(&'a str, &'a [u8])>, BatchError> {
    let mut r = Reader { buf };
    let count = r.count(limits)?;
    let mut entries = Vec::with_capacity(count);
    for index in 0..count {
        let key = r.key(index, limits)?;
        let len = r.u32()?;
        if len > limits.max_value_bytes {
            return Err(BatchError::ValueTooLarge {
                index,
                len,
                max: limits.max_value_bytes,
            });
        }
        entries.push((key, r.take(len)?));
    }
    r.finish()?;
    Ok(entries)
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).expect("batch frame lengths fit in u32");
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        if self.buf.len() < n {
            return Err(BatchError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<usize, BatchError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn count(&mut self, limits: &Limits) -> Result<usize, BatchError> {
        let count = self.u32()?;
        if count > limits.max_batch_entries {
            return Err(BatchError::TooManyEntries {
                count,
                max: limits.max_batch_entries,
            });
        }
        // Every entry needs at least 4 bytes: reject absurd counts before
        // allocating for them.
        if count > self.buf.len() / 4 {
            return Err(BatchError::Truncated);
        }
        Ok(count)
    }

    fn key(&mut self, index: usize, limits: &Limits) -> Result<&'a str, BatchError> {
        let len = self.u32()?;
        if len > limits.max_key_bytes {
            return Err(BatchError::KeyTooLarge {
                index,
                len,
                max: limits.max_key_bytes,
            });
        }
        std::str::from_utf8(self.take(len)?).map_err(|_| BatchError::InvalidUtf8 { index })
    }

    fn finish(self) -> Result<(), BatchError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(BatchError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits {
            max_key_bytes: 8,
            max_value_bytes: 16,
            max_batch_entries: 3,
            max_body_bytes: 1024,
        }
    }

    #[test]
    fn round_trip_with_tricky_keys() {
        let entries: Vec<(&str, &[u8])> = vec![("", b""), ("a/b", b"\0\xff"), ("ключ", b"v")];
        let buf = encode_entries(entries.iter().copied());
        assert_eq!(decode_entries(&buf, &limits()).unwrap(), entries);
        let keys = ["", "%", "🔑"];
        assert_eq!(decode_keys(&encode_keys(&keys), &limits()).unwrap(), keys);
    }

    #[test]
    fn enforces_limits() {
        let l = limits();
        let too_many = encode_keys(&["a", "b", "c", "d"]);
        assert_eq!(
            decode_keys(&too_many, &l),
            Err(BatchError::TooManyEntries { count: 4, max: 3 })
        );
        let long_key = encode_keys(&["123456789"]);
        assert_eq!(
            decode_keys(&long_key, &l),
            Err(BatchError::KeyTooLarge {
                index: 0,
                len: 9,
                max: 8
            })
        );
        let big_value = encode_entries([("k", &[0u8; 17][..])]);
        assert_eq!(
            decode_entries(&big_value, &l),
            Err(BatchError::ValueTooLarge {
                index: 0,
                len: 17,
                max: 16
            })
        );
    }

    #[test]
    fn rejects_malformed_frames() {
        let l = limits();
        let mut buf = encode_keys(&["ab"]);
        assert_eq!(
            decode_keys(&buf[..buf.len() - 1], &l),
            Err(BatchError::Truncated)
        );
        buf.push(0);
        assert_eq!(decode_keys(&buf, &l), Err(BatchError::TrailingBytes(1)));
        assert_eq!(decode_keys(&[], &l), Err(BatchError::Truncated));
        let bad_utf8 = [0, 0, 0, 1, 0, 0, 0, 1, 0xff];
        assert_eq!(
            decode_keys(&bad_utf8, &l),
            Err(BatchError::InvalidUtf8 { index: 0 })
        );
        let huge_count = [0, 0, 0, 3, 0, 0, 0, 0];
        assert_eq!(decode_keys(&huge_count, &l), Err(BatchError::Truncated));
    }

    proptest! {
        #[test]
        fn decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_entries(&buf, &limits());
            let _ = decode_keys(&buf, &limits());
        }

        #[test]
        fn entries_round_trip(entries in proptest::collection::vec((".{0,8}", proptest::collection::vec(any::<u8>(), 0..16)), 0..3)) {
            let l = Limits { max_key_bytes: 64, ..limits() };
            let borrowed: Vec<(&str, &[u8])> = entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            let buf = encode_entries(borrowed.iter().copied());
            prop_assert_eq!(decode_entries(&buf, &l).unwrap(), borrowed);
        }
    }
}
