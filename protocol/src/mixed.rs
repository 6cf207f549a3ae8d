//! Mixed batches: many independent single-key calls in one request
//! (`POST /v1/batch`), each with its own result.
//!
//! The client sends one when calls queue up while an earlier request is in
//! flight, so many concurrent calls share one HTTP round trip and their
//! writes one durable commit. The calls are independent: one call's bad
//! input fails that call alone and changes nothing for it, while the others
//! go ahead. Integers are unsigned 32-bit big-endian, as in [`crate::batch`]:
//!
//! ```text
//! request:  count, then count x (op u8, store_len, store, key_len, key
//!                                [, value_len, value   when op = set])
//!           op: 1 get, 2 set, 3 delete, 4 contains_key
//! response: count (= request count), then count x (result u8 [, payload]):
//!           0 done      set applied (durably, with --durability immediate)
//!           1 value     value_len, value: get found the key
//!           2 absent    get: no such key; contains_key: false;
//!                       delete: the key did not exist
//!           3 present   contains_key: true; delete: the key existed
//!           4 error     code_len, code (an ErrorCode name, e.g.
//!                       "key_too_large"), message_len, message (UTF-8)
//! ```
//!
//! A request that is not well-formed (truncated, trailing bytes, unknown op,
//! more than `max_batch_entries` calls) is rejected whole with `400`/`413`
//! and nothing in it is applied.

use crate::batch::{BatchError, Reader, put_bytes, put_u32};
use crate::{ErrorBody, ErrorCode, Limits};

const OP_GET: u8 = 1;
const OP_SET: u8 = 2;
const OP_DELETE: u8 = 3;
const OP_CONTAINS_KEY: u8 = 4;

const RESULT_DONE: u8 = 0;
const RESULT_VALUE: u8 = 1;
const RESULT_ABSENT: u8 = 2;
const RESULT_PRESENT: u8 = 3;
const RESULT_ERROR: u8 = 4;

/// What one call in a mixed batch does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixedKind {
    Get,
    Set,
    Delete,
    ContainsKey,
}

impl MixedKind {
    fn tag(self) -> u8 {
        match self {
            MixedKind::Get => OP_GET,
            MixedKind::Set => OP_SET,
            MixedKind::Delete => OP_DELETE,
            MixedKind::ContainsKey => OP_CONTAINS_KEY,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            OP_GET => MixedKind::Get,
            OP_SET => MixedKind::Set,
            OP_DELETE => MixedKind::Delete,
            OP_CONTAINS_KEY => MixedKind::ContainsKey,
            _ => return None,
        })
    }

    pub fn is_write(self) -> bool {
        matches!(self, MixedKind::Set | MixedKind::Delete)
    }
}

/// One call, borrowed from the caller (encoding) or the frame (decoding).
/// `value` is empty except for [`MixedKind::Set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixedOp<'a> {
    pub kind: MixedKind,
    pub store: &'a str,
    pub key: &'a str,
    pub value: &'a [u8],
}

/// The answer to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MixedResult {
    Done,
    Value(Vec<u8>),
    Absent,
    Present,
    Error(ErrorBody),
}

/// Errors that reject a whole mixed batch (nothing in it is applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixedError {
    #[error(transparent)]
    Frame(#[from] BatchError),
    #[error("call #{index} has unknown operation {tag}")]
    UnknownOp { index: usize, tag: u8 },
    #[error("result #{index} has unknown kind {tag}")]
    UnknownResult { index: usize, tag: u8 },
}

impl MixedError {
    pub fn code(&self) -> ErrorCode {
        match self {
            MixedError::Frame(BatchError::TooManyEntries { .. }) => ErrorCode::BatchTooLarge,
            _ => ErrorCode::MalformedBody,
        }
    }
}

/// Encodes a mixed batch request.
pub fn encode_mixed_ops(ops: &[MixedOp<'_>]) -> Vec<u8> {
    let len = 4 + ops
        .iter()
        .map(|op| 9 + op.store.len() + op.key.len() + set_value_len(op))
        .sum::<usize>();
    let mut out = Vec::with_capacity(len);
    put_u32(&mut out, ops.len());
    for op in ops {
        out.push(op.kind.tag());
        put_bytes(&mut out, op.store.as_bytes());
        put_bytes(&mut out, op.key.as_bytes());
        if op.kind == MixedKind::Set {
            put_bytes(&mut out, op.value);
        }
    }
    out
}

fn set_value_len(op: &MixedOp<'_>) -> usize {
    if op.kind == MixedKind::Set {
        4 + op.value.len()
    } else {
        0
    }
}

/// Decodes a mixed batch request. The outer error rejects the whole batch;
/// an inner error is that one call's answer (a store_id, key or value over
/// the limits, or not UTF-8), and the call must not be applied.
#[allow(clippy::type_complexity)]
pub fn decode_mixed_ops<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Vec<Result<MixedOp<'a>, ErrorBody>>, MixedError> {
    let mut r = Reader { buf };
    let count = r.u32()?;
    if count > limits.max_batch_entries {
        return Err(BatchError::TooManyEntries {
            count,
            max: limits.max_batch_entries,
        }
        .into());
    }
    // Every call takes at least 9 bytes: reject absurd counts before
    // allocating for them.
    if count > r.buf.len() / 9 {
        return Err(BatchError::Truncated.into());
    }
    let mut ops = Vec::with_capacity(count);
    for index in 0..count {
        let tag = r.take(1)?[0];
        let kind = MixedKind::from_tag(tag).ok_or(MixedError::UnknownOp { index, tag })?;
        let store = r.bytes()?;
        let key = r.bytes()?;
        let value = if kind == MixedKind::Set {
            r.bytes()?
        } else {
            &[]
        };
        ops.push(check_op(kind, store, key, value, limits));
    }
    match r.buf.len() {
        0 => Ok(ops),
        n => Err(BatchError::TrailingBytes(n).into()),
    }
}

/// The same checks, and the same messages, as the single-key routes.
fn check_op<'a>(
    kind: MixedKind,
    store: &'a [u8],
    key: &'a [u8],
    value: &'a [u8],
    limits: &Limits,
) -> Result<MixedOp<'a>, ErrorBody> {
    let max = limits.max_key_bytes;
    let error = |code, message| ErrorBody { code, message };
    if store.len() > max {
        return Err(error(
            ErrorCode::KeyTooLarge,
            format!(
                "store_id is {} bytes, more than the limit of {max}",
                store.len()
            ),
        ));
    }
    if key.len() > max {
        return Err(error(
            ErrorCode::KeyTooLarge,
            format!("key is {} bytes, more than the limit of {max}", key.len()),
        ));
    }
    let value_max = limits.max_value_bytes.min(limits.max_body_bytes);
    if value.len() > value_max {
        return Err(error(
            ErrorCode::ValueTooLarge,
            format!(
                "value is {} bytes, more than the limit of {value_max}",
                value.len()
            ),
        ));
    }
    let utf8 = |bytes: &'a [u8], what: &str| {
        std::str::from_utf8(bytes)
            .map_err(|_| error(ErrorCode::InvalidUtf8, format!("{what} is not valid UTF-8")))
    };
    Ok(MixedOp {
        kind,
        store: utf8(store, "store_id")?,
        key: utf8(key, "key")?,
        value,
    })
}

/// Encodes the answers, one per call, in request order.
pub fn encode_mixed_results(results: &[MixedResult]) -> Vec<u8> {
    let len = 4 + results
        .iter()
        .map(|r| match r {
            MixedResult::Value(v) => 5 + v.len(),
            MixedResult::Error(e) => 9 + e.code.as_str().len() + e.message.len(),
            _ => 1,
        })
        .sum::<usize>();
    let mut out = Vec::with_capacity(len);
    put_u32(&mut out, results.len());
    for result in results {
        match result {
            MixedResult::Done => out.push(RESULT_DONE),
            MixedResult::Value(v) => {
                out.push(RESULT_VALUE);
                put_bytes(&mut out, v);
            }
            MixedResult::Absent => out.push(RESULT_ABSENT),
            MixedResult::Present => out.push(RESULT_PRESENT),
            MixedResult::Error(e) => {
                out.push(RESULT_ERROR);
                put_bytes(&mut out, e.code.as_str().as_bytes());
                put_bytes(&mut out, e.message.as_bytes());
            }
        }
    }
    out
}

/// Decodes the answers. An error code this version does not know is kept
/// as [`ErrorCode::Internal`] with the server's name for it in the message.
pub fn decode_mixed_results(buf: &[u8]) -> Result<Vec<MixedResult>, MixedError> {
    let mut r = Reader { buf };
    let count = r.u32()?;
    if count > r.buf.len() {
        return Err(BatchError::Truncated.into());
    }
    let mut results = Vec::with_capacity(count);
    for index in 0..count {
        let tag = r.take(1)?[0];
        results.push(match tag {
            RESULT_DONE => MixedResult::Done,
            RESULT_VALUE => MixedResult::Value(r.bytes()?.to_vec()),
            RESULT_ABSENT => MixedResult::Absent,
            RESULT_PRESENT => MixedResult::Present,
            RESULT_ERROR => {
                let code = String::from_utf8_lossy(r.bytes()?).into_owned();
                let message = String::from_utf8_lossy(r.bytes()?).into_owned();
                match ErrorCode::ALL.iter().find(|c| c.as_str() == code) {
                    Some(code) => MixedResult::Error(ErrorBody {
                        code: *code,
                        message,
                    }),
                    None => MixedResult::Error(ErrorBody {
                        code: ErrorCode::Internal,
                        message: format!("{code}: {message}"),
                    }),
                }
            }
            tag => return Err(MixedError::UnknownResult { index, tag }),
        });
    }
    match r.buf.len() {
        0 => Ok(results),
        n => Err(BatchError::TrailingBytes(n).into()),
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
            max_batch_entries: 4,
            max_body_bytes: 1024,
        }
    }

    fn op<'a>(kind: MixedKind, store: &'a str, key: &'a str, value: &'a [u8]) -> MixedOp<'a> {
        MixedOp {
            kind,
            store,
            key,
            value,
        }
    }

    #[test]
    fn requests_round_trip_with_tricky_names() {
        let ops = [
            op(MixedKind::Set, "", "", b""),
            op(MixedKind::Get, "a/b", "%", b""),
            op(MixedKind::Delete, "ключ", "🔑", b""),
            op(MixedKind::ContainsKey, " ", "\0", b""),
        ];
        let frame = encode_mixed_ops(&ops);
        let decoded = decode_mixed_ops(&frame, &limits()).unwrap();
        let decoded: Vec<MixedOp<'_>> = decoded.into_iter().map(Result::unwrap).collect();
        assert_eq!(decoded, ops);
    }

    #[test]
    fn bad_calls_get_their_own_error_and_the_rest_decode() {
        let ops = [
            op(MixedKind::Set, "s", "123456789", b"v"),
            op(MixedKind::Set, "s", "k", &[0; 17]),
            op(MixedKind::Get, "123456789", "k", b""),
            op(MixedKind::Set, "s", "k", b"ok"),
        ];
        let frame = encode_mixed_ops(&ops);
        let decoded = decode_mixed_ops(&frame, &limits()).unwrap();
        let code = |i: usize| decoded[i].as_ref().unwrap_err().code;
        assert_eq!(code(0), ErrorCode::KeyTooLarge);
        assert!(
            decoded[0]
                .as_ref()
                .unwrap_err()
                .message
                .contains("key is 9 bytes")
        );
        assert_eq!(code(1), ErrorCode::ValueTooLarge);
        assert_eq!(code(2), ErrorCode::KeyTooLarge);
        assert!(
            decoded[2]
                .as_ref()
                .unwrap_err()
                .message
                .contains("store_id")
        );
        assert_eq!(decoded[3], Ok(ops[3]));

        // A key that is not UTF-8 cannot be built through the encoder.
        let mut raw = encode_mixed_ops(&[op(MixedKind::Get, "s", "k", b"")]);
        let last = raw.len() - 1;
        raw[last] = 0xff;
        let decoded = decode_mixed_ops(&raw, &limits()).unwrap();
        assert_eq!(
            decoded[0].as_ref().unwrap_err().code,
            ErrorCode::InvalidUtf8
        );
    }

    #[test]
    fn malformed_requests_are_rejected_whole() {
        let l = limits();
        let mut buf = encode_mixed_ops(&[op(MixedKind::Get, "s", "k", b"")]);
        assert_eq!(
            decode_mixed_ops(&buf[..buf.len() - 1], &l),
            Err(MixedError::Frame(BatchError::Truncated))
        );
        buf.push(0);
        assert_eq!(
            decode_mixed_ops(&buf, &l),
            Err(MixedError::Frame(BatchError::TrailingBytes(1)))
        );
        let mut unknown = encode_mixed_ops(&[op(MixedKind::Get, "s", "k", b"")]);
        unknown[4] = 9;
        assert_eq!(
            decode_mixed_ops(&unknown, &l),
            Err(MixedError::UnknownOp { index: 0, tag: 9 })
        );
        let five = [op(MixedKind::Get, "s", "k", b""); 5];
        let err = decode_mixed_ops(&encode_mixed_ops(&five), &l).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BatchTooLarge);
        assert_eq!(
            decode_mixed_ops(&[0, 0, 0, 200, 1], &l).unwrap_err().code(),
            ErrorCode::BatchTooLarge
        );
        assert_eq!(
            decode_mixed_ops(&[0, 0, 0, 2, 1], &l),
            Err(MixedError::Frame(BatchError::Truncated))
        );
    }

    #[test]
    fn results_round_trip() {
        let results = vec![
            MixedResult::Done,
            MixedResult::Value(b"\0v".to_vec()),
            MixedResult::Value(Vec::new()),
            MixedResult::Absent,
            MixedResult::Present,
            MixedResult::Error(ErrorBody {
                code: ErrorCode::ValueTooLarge,
                message: "value is 17 bytes".into(),
            }),
        ];
        assert_eq!(
            decode_mixed_results(&encode_mixed_results(&results)).unwrap(),
            results
        );
        let mut buf = encode_mixed_results(&[MixedResult::Done]);
        buf[4] = 7;
        assert_eq!(
            decode_mixed_results(&buf),
            Err(MixedError::UnknownResult { index: 0, tag: 7 })
        );
    }

    #[test]
    fn unknown_error_codes_survive_as_internal() {
        let mut buf = vec![0, 0, 0, 1, RESULT_ERROR];
        put_bytes(&mut buf, b"from_the_future");
        put_bytes(&mut buf, b"details");
        let results = decode_mixed_results(&buf).unwrap();
        assert_eq!(
            results,
            vec![MixedResult::Error(ErrorBody {
                code: ErrorCode::Internal,
                message: "from_the_future: details".into()
            })]
        );
    }

    proptest! {
        #[test]
        fn decoding_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = decode_mixed_ops(&buf, &limits());
            let _ = decode_mixed_results(&buf);
        }
    }
}
