//! Wire types of the write-ahead log API (`/v1/wal/...`), which keeps the
//! per-source logs of DrasiLib's transient sources (see `docs/wal.md`).
//!
//! Events are opaque bytes to the server: the client encodes DrasiLib's
//! `SourceChange` (with its own versioned encoding) and the server only
//! stores, counts, evicts and returns them.
//!
//! Query parameters are plain ASCII: a source id is restricted to
//! `[A-Za-z0-9_-]` (the rule of DrasiLib's file-backed WAL, kept so that a
//! source works the same on either provider), numbers are decimal `u64` and
//! the append id is 32 hex digits. Anything else is rejected, never guessed.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Smallest accepted `max_events`; the same bound as DrasiLib's
/// `MIN_MAX_EVENTS`, below which eviction would churn on every append.
pub const MIN_MAX_EVENTS: u64 = 16;

pub const SOURCE_PARAM: &str = "source";
pub const FROM_PARAM: &str = "from";
pub const UP_TO_PARAM: &str = "upTo";
pub const APPEND_ID_PARAM: &str = "appendId";

/// What the log does when an append finds it holding `max_events` events.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WalCapacityPolicy {
    /// The append fails with `wal_capacity_exhausted` and changes nothing.
    RejectIncoming,
    /// The oldest events are evicted to make room.
    OverwriteOldest,
}

/// Body of `PUT /v1/wal/register`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WalConfig {
    pub max_events: u64,
    pub capacity_policy: WalCapacityPolicy,
}

impl WalConfig {
    /// The same rule, and the same message, as DrasiLib's
    /// `WriteAheadLogConfig::validate`.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_events < MIN_MAX_EVENTS {
            return Err(format!(
                "max_events must be at least {MIN_MAX_EVENTS}, got {}",
                self.max_events
            ));
        }
        Ok(())
    }
}

/// Answer to `POST /v1/wal/append`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResponse {
    pub sequence: u64,
}

/// Answer to `GET /v1/wal/info`: what `head_sequence`, `oldest_sequence`
/// and `event_count` return, read in one transaction.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalInfo {
    /// Highest sequence number ever assigned (0 before the first append).
    pub head_sequence: u64,
    /// Oldest retained sequence number, `null` when the log is empty.
    pub oldest_sequence: Option<u64>,
    pub event_count: u64,
}

/// Why a source id is refused; the messages match DrasiLib's file-backed
/// provider word for word.
pub fn validate_source_id(source_id: &str) -> Result<(), String> {
    if source_id.is_empty() {
        return Err("source_id must not be empty".to_string());
    }
    if source_id.starts_with('.') {
        return Err("source_id must not start with '.'".to_string());
    }
    if let Some(ch) = source_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "source_id may contain only ASCII alphanumerics, '_', or '-' (found '{ch}')"
        ));
    }
    Ok(())
}

/// A client-chosen 128-bit id that makes an append idempotent: the server
/// remembers it with the event, and a retried append carrying it gets the
/// first attempt's sequence number instead of a second copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppendId(pub u128);

impl AppendId {
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(AppendId)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WalQueryError {
    #[error("missing query parameter `{0}`")]
    Missing(&'static str),
    #[error("query parameter `{0}` given more than once")]
    Duplicate(String),
    #[error("unknown query parameter `{0}`")]
    Unknown(String),
    #[error("query parameter `{name}` is not {expected}")]
    BadValue {
        name: &'static str,
        expected: &'static str,
    },
    #[error("invalid source_id: {0}")]
    InvalidSource(String),
}

/// The decoded query of a WAL request. Which optional parameters a route
/// accepts is given to [`parse_wal_query`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WalQuery {
    pub source: String,
    pub from: Option<u64>,
    pub up_to: Option<u64>,
    pub append_id: Option<AppendId>,
}

/// Parses `source=<id>` plus the parameters named in `allowed`; a parameter
/// in `required` must be present. The source id is validated here, so a
/// handler never sees one the provider contract would refuse.
pub fn parse_wal_query(
    raw: Option<&str>,
    allowed: &[&'static str],
    required: &[&'static str],
) -> Result<WalQuery, WalQueryError> {
    let mut source = None;
    let mut query = WalQuery::default();
    let mut seen: Vec<&str> = Vec::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(known) = std::iter::once(SOURCE_PARAM)
            .chain(allowed.iter().copied())
            .find(|n| *n == name)
        else {
            return Err(WalQueryError::Unknown(name.chars().take(64).collect()));
        };
        if seen.contains(&known) {
            return Err(WalQueryError::Duplicate(known.to_string()));
        }
        seen.push(known);
        match known {
            SOURCE_PARAM => {
                validate_source_id(value).map_err(WalQueryError::InvalidSource)?;
                source = Some(value.to_string());
            }
            FROM_PARAM => query.from = Some(number(FROM_PARAM, value)?),
            UP_TO_PARAM => query.up_to = Some(number(UP_TO_PARAM, value)?),
            APPEND_ID_PARAM => {
                query.append_id =
                    Some(AppendId::from_hex(value).ok_or(WalQueryError::BadValue {
                        name: APPEND_ID_PARAM,
                        expected: "32 hexadecimal digits",
                    })?)
            }
            _ => unreachable!("every allowed name has an arm"),
        }
    }
    query.source = source.ok_or(WalQueryError::Missing(SOURCE_PARAM))?;
    if let Some(missing) = required.iter().find(|r| !seen.contains(*r)) {
        return Err(WalQueryError::Missing(missing));
    }
    Ok(query)
}

fn number(name: &'static str, value: &str) -> Result<u64, WalQueryError> {
    // `u64::from_str` accepts a leading '+'; the protocol does not.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WalQueryError::BadValue {
            name,
            expected: "a decimal unsigned 64-bit integer",
        });
    }
    value.parse().map_err(|_| WalQueryError::BadValue {
        name,
        expected: "a decimal unsigned 64-bit integer",
    })
}

/// `source=<id>` followed by `&name=value` for each extra parameter. The id
/// is sent as-is: [`validate_source_id`] only admits characters that need
/// no escaping.
pub fn encode_wal_query(source: &str, extra: &[(&str, String)]) -> String {
    let mut out = format!("{SOURCE_PARAM}={source}");
    for (name, value) in extra {
        out.push('&');
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Binary answer of `GET /v1/wal/events`: one page of a `read_from`.
/// Integers are big-endian:
///
/// ```text
/// oldest: u64        oldest retained sequence, 0 when the log is empty
/// next:   u64        0 when this page reaches the end of the log; else the
///                    `from` of the next page (the last sequence here + 1)
/// count:  u32        events that follow (0 when `from` < oldest)
/// count x (seq: u64, len: u32, len bytes of the encoded event)
/// ```
///
/// When `from` is older than `oldest` the server sends no events: the
/// position has been pruned, and the client reports that with `oldest`.
/// A page holds at most the server's `--max-response-bytes` (counted with
/// [`EVENTS_FRAME_HEADER_BYTES`] and [`EVENT_OVERHEAD_BYTES`]), so a long
/// log is read in several requests rather than as one unbounded answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsFrame<B> {
    pub oldest: Option<u64>,
    pub next: Option<u64>,
    pub events: Vec<(u64, B)>,
}

/// Bytes of an events frame before its first event.
pub const EVENTS_FRAME_HEADER_BYTES: usize = 20;
/// Bytes an event adds to an events frame on top of its own length.
pub const EVENT_OVERHEAD_BYTES: usize = 12;

impl<B: AsRef<[u8]>> EventsFrame<B> {
    /// Bytes of the encoded frame.
    pub fn encoded_len(&self) -> usize {
        EVENTS_FRAME_HEADER_BYTES
            + self
                .events
                .iter()
                .map(|(_, e)| EVENT_OVERHEAD_BYTES + e.as_ref().len())
                .sum::<usize>()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&self.oldest.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&self.next.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&frame_u32(self.events.len()).to_be_bytes());
        for (seq, event) in &self.events {
            let event = event.as_ref();
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&frame_u32(event.len()).to_be_bytes());
            out.extend_from_slice(event);
        }
        out
    }
}

fn frame_u32(n: usize) -> u32 {
    // Events are bounded by the server's value limit and counts by
    // max_events, both far below 4 GiB / 4 billion.
    u32::try_from(n).expect("WAL frame field exceeds u32")
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventsFrameError {
    #[error("WAL events frame is truncated")]
    Truncated,
    #[error("WAL events frame has {0} trailing bytes")]
    TrailingBytes(usize),
    /// A client that followed it would read the same page forever.
    #[error("WAL events frame continues at sequence {next}, which is not after its last event")]
    NextNotAfterPage { next: u64 },
}

impl<'a> EventsFrame<&'a [u8]> {
    pub fn decode(mut buf: &'a [u8]) -> Result<Self, EventsFrameError> {
        let mut take = |n: usize| -> Result<&'a [u8], EventsFrameError> {
            if buf.len() < n {
                return Err(EventsFrameError::Truncated);
            }
            let (head, rest) = buf.split_at(n);
            buf = rest;
            Ok(head)
        };
        let u64_of = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
        let u32_of = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes"));
        let oldest = u64_of(take(8)?);
        let next = u64_of(take(8)?);
        let count = u32_of(take(4)?) as usize;
        // A lying count must not make us reserve gigabytes up front.
        let mut events = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let seq = u64_of(take(8)?);
            let len = u32_of(take(4)?) as usize;
            events.push((seq, take(len)?));
        }
        if !buf.is_empty() {
            return Err(EventsFrameError::TrailingBytes(buf.len()));
        }
        if next != 0 && events.last().is_none_or(|(last, _)| next <= *last) {
            return Err(EventsFrameError::NextNotAfterPage { next });
        }
        Ok(EventsFrame {
            oldest: (oldest != 0).then_some(oldest),
            next: (next != 0).then_some(next),
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ids_follow_the_file_backed_rule() {
        for ok in ["a", "orders-cdc", "A_9-z"] {
            assert!(validate_source_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "ü", "a%2F", "a.b"] {
            assert!(validate_source_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_round_trips_and_rejects_bad_input() {
        let id = AppendId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let raw = encode_wal_query(
            "src-1",
            &[(FROM_PARAM, "7".into()), (APPEND_ID_PARAM, id.to_hex())],
        );
        let q = parse_wal_query(Some(&raw), &[FROM_PARAM, APPEND_ID_PARAM], &[]).unwrap();
        assert_eq!(q.source, "src-1");
        assert_eq!(q.from, Some(7));
        assert_eq!(q.append_id, Some(id));

        let err = |raw: &str| parse_wal_query(Some(raw), &[FROM_PARAM], &[FROM_PARAM]);
        assert_eq!(err("from=1"), Err(WalQueryError::Missing(SOURCE_PARAM)));
        assert_eq!(err("source=a"), Err(WalQueryError::Missing(FROM_PARAM)));
        assert!(matches!(
            err("source=a&from=+1"),
            Err(WalQueryError::BadValue { .. })
        ));
        assert!(matches!(
            err("source=a&from=18446744073709551616"),
            Err(WalQueryError::BadValue { .. })
        ));
        assert!(matches!(
            err("source=a&source=b&from=1"),
            Err(WalQueryError::Duplicate(_))
        ));
        assert!(matches!(
            err("source=a&from=1&upTo=2"),
            Err(WalQueryError::Unknown(_))
        ));
        assert!(matches!(
            err("source=a%2Fb&from=1"),
            Err(WalQueryError::InvalidSource(_))
        ));
        assert!(AppendId::from_hex("xyz").is_none());
        assert!(AppendId::from_hex(&"f".repeat(33)).is_none());
    }

    #[test]
    fn config_validation_matches_drasi_lib_bound() {
        let c = |max_events| WalConfig {
            max_events,
            capacity_policy: WalCapacityPolicy::RejectIncoming,
        };
        assert!(c(16).validate().is_ok());
        assert_eq!(
            c(15).validate().unwrap_err(),
            "max_events must be at least 16, got 15"
        );
        let json = serde_json::to_string(&WalConfig {
            max_events: 32,
            capacity_policy: WalCapacityPolicy::OverwriteOldest,
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"maxEvents":32,"capacityPolicy":"overwriteOldest"}"#
        );
    }

    #[test]
    fn events_frame_round_trips_and_detects_damage() {
        let frame = EventsFrame {
            oldest: Some(3),
            next: Some(5),
            events: vec![(3u64, &b"abc"[..]), (4, &b""[..])],
        };
        let bytes = frame.encode();
        assert_eq!(bytes.len(), frame.encoded_len());
        assert_eq!(EventsFrame::decode(&bytes).unwrap(), frame);
        let looping = EventsFrame {
            next: Some(4),
            ..frame.clone()
        };
        assert_eq!(
            EventsFrame::decode(&looping.encode()),
            Err(EventsFrameError::NextNotAfterPage { next: 4 })
        );
        let empty_but_more = EventsFrame::<&[u8]> {
            oldest: Some(3),
            next: Some(9),
            events: vec![],
        };
        assert_eq!(
            EventsFrame::decode(&empty_but_more.encode()),
            Err(EventsFrameError::NextNotAfterPage { next: 9 })
        );
        for cut in 0..bytes.len() {
            assert_eq!(
                EventsFrame::decode(&bytes[..cut]),
                Err(EventsFrameError::Truncated),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            EventsFrame::decode(&longer),
            Err(EventsFrameError::TrailingBytes(1))
        );
        let empty = EventsFrame::<&[u8]> {
            oldest: None,
            next: None,
            events: vec![],
        };
        assert_eq!(EventsFrame::decode(&empty.encode()).unwrap(), empty);
    }
}
