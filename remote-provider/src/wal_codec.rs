//! The encoding of a `SourceChange` in the remote write-ahead log.
//!
//! The server stores events as opaque bytes; this module owns their format.
//! It is a small, explicit binary layout (specified in docs/wal.md) rather
//! than serde output, for the same reason DrasiLib's own redb WAL uses
//! DTOs: the stored bytes must not change when a core type gains a derive
//! or reorders a field. Integers are big-endian.
//!
//! The first byte is the format version. A reader that meets a version it
//! does not know fails with a `SerializationError` naming both versions —
//! it never guesses. Timestamps are stored as seconds + nanoseconds (+ the
//! UTC offset for zoned values), so they round-trip exactly.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use drasi_core::models::{
    Element, ElementMetadata, ElementPropertyMap, ElementReference, ElementValue, SourceChange,
};
use ordered_float::OrderedFloat;

/// The version this client writes, and the only one it reads.
pub const WAL_EVENT_FORMAT_VERSION: u8 = 1;

/// Lists and objects nested deeper than this are refused on decode, so a
/// damaged or hostile record cannot overflow the stack.
const MAX_DEPTH: usize = 128;

mod tag {
    pub const INSERT: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const DELETE: u8 = 3;

    pub const NODE: u8 = 1;
    pub const RELATION: u8 = 2;

    pub const NULL: u8 = 0;
    pub const BOOL: u8 = 1;
    pub const FLOAT: u8 = 2;
    pub const INTEGER: u8 = 3;
    pub const STRING: u8 = 4;
    pub const LIST: u8 = 5;
    pub const OBJECT: u8 = 6;
    pub const LOCAL_DATE_TIME: u8 = 7;
    pub const ZONED_DATE_TIME: u8 = 8;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("SourceChange::Future events cannot be persisted to WAL")]
    FutureEvent,
    #[error(
        "WAL event encoding version {found} is not supported (this client reads version {WAL_EVENT_FORMAT_VERSION})"
    )]
    UnknownVersion { found: u8 },
    #[error("WAL event is empty")]
    Empty,
    #[error("WAL event is damaged: {0}")]
    Damaged(String),
}

/// Encodes a change; `Future` changes are refused (the WAL contract keeps
/// them out).
pub fn encode(change: &SourceChange) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(128);
    out.push(WAL_EVENT_FORMAT_VERSION);
    match change {
        SourceChange::Insert { element } => {
            out.push(tag::INSERT);
            put_element(&mut out, element);
        }
        SourceChange::Update { element } => {
            out.push(tag::UPDATE);
            put_element(&mut out, element);
        }
        SourceChange::Delete { metadata } => {
            out.push(tag::DELETE);
            put_metadata(&mut out, metadata);
        }
        SourceChange::Future { .. } => return Err(CodecError::FutureEvent),
    }
    Ok(out)
}

/// Decodes a change written by [`encode`], checking the version first.
pub fn decode(bytes: &[u8]) -> Result<SourceChange, CodecError> {
    let (&version, rest) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != WAL_EVENT_FORMAT_VERSION {
        return Err(CodecError::UnknownVersion { found: version });
    }
    let mut r = Reader { buf: rest };
    let change = match r.u8("change tag")? {
        tag::INSERT => SourceChange::Insert {
            element: r.element()?,
        },
        tag::UPDATE => SourceChange::Update {
            element: r.element()?,
        },
        tag::DELETE => SourceChange::Delete {
            metadata: r.metadata()?,
        },
        other => return Err(damaged(format!("unknown change tag {other}"))),
    };
    if !r.buf.is_empty() {
        return Err(damaged(format!("{} trailing bytes", r.buf.len())));
    }
    Ok(change)
}

fn damaged(what: impl Into<String>) -> CodecError {
    CodecError::Damaged(what.into())
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    // Strings and collections of one event are far below 4 GiB: the server
    // limits an event's size.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn put_reference(out: &mut Vec<u8>, r: &ElementReference) {
    put_str(out, &r.source_id);
    put_str(out, &r.element_id);
}

fn put_metadata(out: &mut Vec<u8>, m: &ElementMetadata) {
    put_reference(out, &m.reference);
    put_len(out, m.labels.len());
    for label in m.labels.iter() {
        put_str(out, label);
    }
    out.extend_from_slice(&m.effective_from.to_be_bytes());
}

fn put_properties(out: &mut Vec<u8>, map: &ElementPropertyMap) {
    // `map_iter` cannot lend references out of its closure; cloning the
    // key `Arc`s and looking each value up avoids deep-copying values.
    let keys: Vec<Arc<str>> = map.map_iter(|k, _| Arc::clone(k)).collect();
    put_len(out, keys.len());
    for key in keys {
        put_str(out, &key);
        put_value(out, map.get(&key).unwrap_or(&ElementValue::Null));
    }
}

fn put_element(out: &mut Vec<u8>, e: &Element) {
    match e {
        Element::Node {
            metadata,
            properties,
        } => {
            out.push(tag::NODE);
            put_metadata(out, metadata);
            put_properties(out, properties);
        }
        Element::Relation {
            metadata,
            in_node,
            out_node,
            properties,
        } => {
            out.push(tag::RELATION);
            put_metadata(out, metadata);
            put_reference(out, in_node);
            put_reference(out, out_node);
            put_properties(out, properties);
        }
    }
}

fn put_instant(out: &mut Vec<u8>, secs: i64, nanos: u32) {
    out.extend_from_slice(&secs.to_be_bytes());
    out.extend_from_slice(&nanos.to_be_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &ElementValue) {
    match v {
        ElementValue::Null => out.push(tag::NULL),
        ElementValue::Bool(b) => {
            out.push(tag::BOOL);
            out.push(u8::from(*b));
        }
        ElementValue::Float(f) => {
            out.push(tag::FLOAT);
            out.extend_from_slice(&f.into_inner().to_bits().to_be_bytes());
        }
        ElementValue::Integer(i) => {
            out.push(tag::INTEGER);
            out.extend_from_slice(&i.to_be_bytes());
        }
        ElementValue::String(s) => {
            out.push(tag::STRING);
            put_str(out, s);
        }
        ElementValue::List(items) => {
            out.push(tag::LIST);
            put_len(out, items.len());
            for item in items {
                put_value(out, item);
            }
        }
        ElementValue::Object(map) => {
            out.push(tag::OBJECT);
            put_properties(out, map);
        }
        ElementValue::LocalDateTime(dt) => {
            out.push(tag::LOCAL_DATE_TIME);
            let utc = dt.and_utc();
            put_instant(out, utc.timestamp(), utc.timestamp_subsec_nanos());
        }
        ElementValue::ZonedDateTime(dt) => {
            out.push(tag::ZONED_DATE_TIME);
            put_instant(out, dt.timestamp(), dt.timestamp_subsec_nanos());
            out.extend_from_slice(&dt.offset().local_minus_utc().to_be_bytes());
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(damaged(format!("truncated in {what}")));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CodecError> {
        Ok(self
            .take(N, what)?
            .try_into()
            .expect("take returns N bytes"))
    }

    fn u8(&mut self, what: &str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn len(&mut self, what: &str) -> Result<usize, CodecError> {
        Ok(u32::from_be_bytes(self.array(what)?) as usize)
    }

    fn u64(&mut self, what: &str) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &str) -> Result<i64, CodecError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn str(&mut self, what: &str) -> Result<&'a str, CodecError> {
        let len = self.len(what)?;
        std::str::from_utf8(self.take(len, what)?)
            .map_err(|_| damaged(format!("{what} is not UTF-8")))
    }

    /// A collection length, checked against what could possibly follow
    /// (every item takes at least one byte) before anything is reserved.
    fn count(&mut self, what: &str) -> Result<usize, CodecError> {
        let n = self.len(what)?;
        if n > self.buf.len() {
            return Err(damaged(format!("{what} count {n} exceeds the record")));
        }
        Ok(n)
    }

    fn reference(&mut self) -> Result<ElementReference, CodecError> {
        let source = self.str("reference source_id")?;
        let element = self.str("reference element_id")?;
        Ok(ElementReference::new(source, element))
    }

    fn metadata(&mut self) -> Result<ElementMetadata, CodecError> {
        let reference = self.reference()?;
        let n = self.count("labels")?;
        let mut labels: Vec<Arc<str>> = Vec::with_capacity(n);
        for _ in 0..n {
            labels.push(Arc::from(self.str("label")?));
        }
        Ok(ElementMetadata {
            reference,
            labels: Arc::from(labels),
            effective_from: self.u64("effective_from")?,
        })
    }

    fn properties(&mut self, depth: usize) -> Result<ElementPropertyMap, CodecError> {
        let n = self.count("properties")?;
        let mut map = ElementPropertyMap::new();
        for _ in 0..n {
            let key = self.str("property name")?;
            let value = self.value(depth)?;
            map.insert(key, value);
        }
        Ok(map)
    }

    fn element(&mut self) -> Result<Element, CodecError> {
        match self.u8("element tag")? {
            tag::NODE => Ok(Element::Node {
                metadata: self.metadata()?,
                properties: self.properties(0)?,
            }),
            tag::RELATION => Ok(Element::Relation {
                metadata: self.metadata()?,
                in_node: self.reference()?,
                out_node: self.reference()?,
                properties: self.properties(0)?,
            }),
            other => Err(damaged(format!("unknown element tag {other}"))),
        }
    }

    fn instant(&mut self, what: &str) -> Result<DateTime<chrono::Utc>, CodecError> {
        let secs = self.i64(what)?;
        let nanos = u32::from_be_bytes(self.array(what)?);
        DateTime::from_timestamp(secs, nanos)
            .ok_or_else(|| damaged(format!("{what} is out of range")))
    }

    fn value(&mut self, depth: usize) -> Result<ElementValue, CodecError> {
        if depth >= MAX_DEPTH {
            return Err(damaged(format!("values nested deeper than {MAX_DEPTH}")));
        }
        Ok(match self.u8("value tag")? {
            tag::NULL => ElementValue::Null,
            tag::BOOL => match self.u8("bool")? {
                0 => ElementValue::Bool(false),
                1 => ElementValue::Bool(true),
                other => return Err(damaged(format!("bool byte {other}"))),
            },
            tag::FLOAT => ElementValue::Float(OrderedFloat(f64::from_bits(self.u64("float")?))),
            tag::INTEGER => ElementValue::Integer(self.i64("integer")?),
            tag::STRING => ElementValue::String(Arc::from(self.str("string")?)),
            tag::LIST => {
                let n = self.count("list")?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                ElementValue::List(items)
            }
            tag::OBJECT => ElementValue::Object(self.properties(depth + 1)?),
            tag::LOCAL_DATE_TIME => {
                let dt: NaiveDateTime = self.instant("local date-time")?.naive_utc();
                ElementValue::LocalDateTime(dt)
            }
            tag::ZONED_DATE_TIME => {
                let instant = self.instant("zoned date-time")?;
                let offset = i32::from_be_bytes(self.array("zoned date-time offset")?);
                let offset = FixedOffset::east_opt(offset)
                    .ok_or_else(|| damaged(format!("UTC offset {offset}s is out of range")))?;
                ElementValue::ZonedDateTime(instant.with_timezone(&offset))
            }
            other => return Err(damaged(format!("unknown value tag {other}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn metadata(id: &str) -> ElementMetadata {
        ElementMetadata {
            reference: ElementReference::new("src", id),
            labels: Arc::from(vec![Arc::from("Order"), Arc::from("Ünïcode")]),
            effective_from: 1_700_000_000_123,
        }
    }

    fn rich_properties() -> ElementPropertyMap {
        let mut inner = ElementPropertyMap::new();
        inner.insert("deep", ElementValue::List(vec![ElementValue::Null]));
        let mut p = ElementPropertyMap::new();
        p.insert("null", ElementValue::Null);
        p.insert("yes", ElementValue::Bool(true));
        p.insert(
            "pi",
            ElementValue::Float(OrderedFloat(std::f64::consts::PI)),
        );
        p.insert("nan", ElementValue::Float(OrderedFloat(f64::NAN)));
        p.insert("neg", ElementValue::Integer(i64::MIN));
        p.insert("s", ElementValue::String(Arc::from("a\0b ✓")));
        p.insert(
            "list",
            ElementValue::List(vec![ElementValue::Integer(1), ElementValue::Object(inner)]),
        );
        let local = NaiveDate::from_ymd_opt(2026, 11, 30)
            .unwrap()
            .and_hms_nano_opt(9, 41, 7, 123_456_789)
            .unwrap();
        p.insert("local", ElementValue::LocalDateTime(local));
        let zoned = local
            .and_local_timezone(FixedOffset::east_opt(-5 * 3600 - 30 * 60).unwrap())
            .unwrap();
        p.insert("zoned", ElementValue::ZonedDateTime(zoned));
        p
    }

    fn samples() -> Vec<SourceChange> {
        vec![
            SourceChange::Insert {
                element: Element::Node {
                    metadata: metadata("n1"),
                    properties: rich_properties(),
                },
            },
            SourceChange::Update {
                element: Element::Relation {
                    metadata: metadata("r1"),
                    in_node: ElementReference::new("src", "n1"),
                    out_node: ElementReference::new("other", ""),
                    properties: ElementPropertyMap::new(),
                },
            },
            SourceChange::Delete {
                metadata: metadata("n1"),
            },
        ]
    }

    #[test]
    fn every_shape_round_trips_exactly() {
        for change in samples() {
            let bytes = encode(&change).unwrap();
            assert_eq!(bytes[0], WAL_EVENT_FORMAT_VERSION);
            assert_eq!(decode(&bytes).unwrap(), change);
        }
    }

    #[test]
    fn unknown_version_is_a_clear_error_not_a_misread() {
        let mut bytes = encode(&samples()[0]).unwrap();
        for version in [0u8, 2, 255] {
            bytes[0] = version;
            let err = decode(&bytes).unwrap_err();
            assert_eq!(err, CodecError::UnknownVersion { found: version });
            let text = err.to_string();
            assert!(text.contains(&format!("version {version}")), "{text}");
            assert!(text.contains("reads version 1"), "{text}");
        }
        assert_eq!(decode(&[]), Err(CodecError::Empty));
    }

    #[test]
    fn truncation_and_trailing_bytes_are_detected() {
        for change in samples() {
            let bytes = encode(&change).unwrap();
            for cut in 1..bytes.len() {
                assert!(
                    matches!(decode(&bytes[..cut]), Err(CodecError::Damaged(_))),
                    "cut at {cut} of {}",
                    bytes.len()
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(matches!(decode(&longer), Err(CodecError::Damaged(_))));
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing() {
        let mut bytes = vec![WAL_EVENT_FORMAT_VERSION, tag::INSERT, tag::NODE];
        let mut m = Vec::new();
        put_metadata(&mut m, &metadata("n"));
        bytes.extend(m);
        bytes.extend(1u32.to_be_bytes());
        put_str(&mut bytes, "k");
        for _ in 0..10_000 {
            bytes.push(tag::LIST);
            bytes.extend(1u32.to_be_bytes());
        }
        bytes.push(tag::NULL);
        let err = decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }

    #[test]
    fn future_changes_are_refused() {
        use drasi_core::interface::FutureElementRef;
        let change = SourceChange::Future {
            future_ref: FutureElementRef {
                element_ref: ElementReference::new("s", "e"),
                original_time: 1,
                due_time: 2,
                group_signature: 3,
            },
        };
        assert_eq!(encode(&change), Err(CodecError::FutureEvent));
    }
}
