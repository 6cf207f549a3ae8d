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
//! anything is applied, so a bad batch changes nothing. [`KeysFrame`] and
//! [`EntriesFrame`] are the owned forms: a frame decoded and validated once,
//! which the server hands from its HTTP layer to its writer thread.

use std::ops::Range;

use bytes::Bytes;
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
        entries.push(r.entry(index, limits)?);
    }
    r.finish()?;
    Ok(entries)
}

/// A keys frame that has been decoded and checked against the limits. It
/// owns the frame; iterating borrows the keys from it without copying.
#[derive(Debug, Clone)]
pub struct KeysFrame {
    frame: Bytes,
    /// Where each key lies in `frame`; every span holds valid UTF-8.
    keys: Vec<Range<usize>>,
}

impl KeysFrame {
    /// Decodes `frame`, enforcing `max_batch_entries` and `max_key_bytes`.
    pub fn decode(frame: Bytes, limits: &Limits) -> Result<Self, BatchError> {
        let mut r = Reader { buf: &frame };
        let count = r.count(limits)?;
        let mut keys = Vec::with_capacity(count);
        for index in 0..count {
            keys.push(span(&frame, r.key(index, limits)?.as_bytes()));
        }
        r.finish()?;
        Ok(KeysFrame { frame, keys })
    }

    /// Encodes `keys`; for callers that hold keys rather than a frame.
    pub fn encode(keys: &[&str]) -> Self {
        let frame = Bytes::from(encode_keys(keys));
        let mut at = 4;
        let keys = keys
            .iter()
            .map(|k| {
                let start = at + 4;
                at = start + k.len();
                start..at
            })
            .collect();
        KeysFrame { frame, keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Size of the encoded frame.
    pub fn frame_bytes(&self) -> usize {
        self.frame.len()
    }

    /// The encoded frame, as `decode` took it or `encode` made it.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The keys in frame order, duplicates included.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.keys.iter().map(|k| utf8(&self.frame, k))
    }
}

/// An entries frame that has been decoded and checked against every limit.
/// It owns the frame; iterating borrows keys and values from it without
/// copying.
#[derive(Debug, Clone)]
pub struct EntriesFrame {
    frame: Bytes,
    /// Where each key (valid UTF-8) and value lies in `frame`.
    entries: Vec<(Range<usize>, Range<usize>)>,
}

impl EntriesFrame {
    /// Decodes `frame`, enforcing every limit.
    pub fn decode(frame: Bytes, limits: &Limits) -> Result<Self, BatchError> {
        let mut r = Reader { buf: &frame };
        let count = r.count(limits)?;
        let mut entries = Vec::with_capacity(count);
        for index in 0..count {
            let (key, value) = r.entry(index, limits)?;
            entries.push((span(&frame, key.as_bytes()), span(&frame, value)));
        }
        r.finish()?;
        Ok(EntriesFrame { frame, entries })
    }

    /// Encodes `entries`; for callers that hold entries rather than a frame.
    pub fn encode(entries: &[(&str, &[u8])]) -> Self {
        let frame = Bytes::from(encode_entries(entries.iter().copied()));
        let mut at = 4;
        let entries = entries
            .iter()
            .map(|(k, v)| {
                let key = at + 4..at + 4 + k.len();
                let value = key.end + 4..key.end + 4 + v.len();
                at = value.end;
                (key, value)
            })
            .collect();
        EntriesFrame { frame, entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Size of the encoded frame.
    pub fn frame_bytes(&self) -> usize {
        self.frame.len()
    }

    /// The encoded frame, as `decode` took it or `encode` made it.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The entries in frame order, duplicates included.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> + '_ {
        self.entries
            .iter()
            .map(|(k, v)| (utf8(&self.frame, k), &self.frame[v.clone()]))
    }
}

/// Where `part`, a slice of `whole`, lies in it.
fn span(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

fn utf8<'a>(frame: &'a Bytes, span: &Range<usize>) -> &'a str {
    let bytes = &frame[span.clone()];
    debug_assert!(std::str::from_utf8(bytes).is_ok());
    // SAFETY: spans are private, set only by `decode` after `Reader::key`
    // checked these very bytes, or by `encode` from `&str`s; `Bytes` is
    // immutable, so the bytes are still valid UTF-8. Skipping the second
    // check is what makes decoding happen once.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

// The framing primitives, shared with the mixed batch frame (`mixed.rs`).
pub(crate) fn put_u32(out: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).expect("batch frame lengths fit in u32");
    out.extend_from_slice(&n.to_be_bytes());
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        if self.buf.len() < n {
            return Err(BatchError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u32(&mut self) -> Result<usize, BatchError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// A length-prefixed byte string.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], BatchError> {
        let len = self.u32()?;
        self.take(len)
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

    fn entry(&mut self, index: usize, limits: &Limits) -> Result<(&'a str, &'a [u8]), BatchError> {
        let key = self.key(index, limits)?;
        let len = self.u32()?;
        if len > limits.max_value_bytes {
            return Err(BatchError::ValueTooLarge {
                index,
                len,
                max: limits.max_value_bytes,
            });
        }
        Ok((key, self.take(len)?))
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

    #[test]
    fn owned_frames_decode_once_and_borrow_from_the_frame() {
        let entries: Vec<(&str, &[u8])> = vec![("", b""), ("a/b", b"\0\xff"), ("ключ", b"v")];
        let frame = Bytes::from(encode_entries(entries.iter().copied()));
        let decoded = EntriesFrame::decode(frame.clone(), &limits()).unwrap();
        assert_eq!(decoded.iter().collect::<Vec<_>>(), entries);
        assert_eq!(decoded.frame_bytes(), frame.len());
        let encoded = EntriesFrame::encode(&entries);
        assert_eq!(encoded.iter().collect::<Vec<_>>(), entries);
        assert_eq!(encoded.frame, frame);

        let keys = ["", "%", "🔑"];
        let frame = Bytes::from(encode_keys(&keys));
        let decoded = KeysFrame::decode(frame.clone(), &limits()).unwrap();
        assert_eq!(decoded.iter().collect::<Vec<_>>(), keys);
        let encoded = KeysFrame::encode(&keys);
        assert_eq!(encoded.iter().collect::<Vec<_>>(), keys);
        assert_eq!(encoded.frame, frame);
    }

    #[test]
    fn owned_frames_enforce_the_same_limits() {
        let l = limits();
        let bad = Bytes::from(encode_keys(&["123456789"]));
        assert_eq!(
            KeysFrame::decode(bad, &l).unwrap_err(),
            BatchError::KeyTooLarge {
                index: 0,
                len: 9,
                max: 8
            }
        );
        let big = Bytes::from(encode_entries([("k", &[0u8; 17][..])]));
        assert!(matches!(
            EntriesFrame::decode(big, &l),
            Err(BatchError::ValueTooLarge { .. })
        ));
        let bad_utf8 = Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 1, 0xff]);
        assert_eq!(
            KeysFrame::decode(bad_utf8, &l).unwrap_err(),
            BatchError::InvalidUtf8 { index: 0 }
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_entries(&buf, &limits());
            let _ = decode_keys(&buf, &limits());
            let _ = EntriesFrame::decode(Bytes::from(buf.clone()), &limits());
            let _ = KeysFrame::decode(Bytes::from(buf), &limits());
        }

        #[test]
        fn entries_round_trip(entries in proptest::collection::vec((".{0,8}", proptest::collection::vec(any::<u8>(), 0..16)), 0..3)) {
            let l = Limits { max_key_bytes: 64, ..limits() };
            let borrowed: Vec<(&str, &[u8])> = entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            let buf = encode_entries(borrowed.iter().copied());
            prop_assert_eq!(&decode_entries(&buf, &l).unwrap(), &borrowed);
            let owned = EntriesFrame::decode(Bytes::from(buf), &l).unwrap();
            prop_assert_eq!(owned.iter().collect::<Vec<_>>(), borrowed);
        }
    }
}
