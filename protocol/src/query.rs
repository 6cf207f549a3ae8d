//! The strict query-string codec for `store` and `key`.
//!
//! Generic form decoders (`serde_urlencoded`, `form_urlencoded`) replace
//! invalid UTF-8 with U+FFFD, which would silently write to a different key.
//! This codec rejects it instead, and also rejects malformed `%` escapes,
//! unknown and duplicate parameters.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};
use thiserror::Error;

/// Everything except RFC 3986 unreserved characters is escaped, so `+`, `&`,
/// `=`, `#`, `?`, `/` and `%` are always sent as `%XX`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub const STORE_PARAM: &str = "store";
pub const KEY_PARAM: &str = "key";

/// The decoded target of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget {
    pub store: String,
    pub key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueryError {
    #[error("missing query parameter `{0}`")]
    Missing(&'static str),
    #[error("query parameter `{0}` given more than once")]
    Duplicate(String),
    #[error("unknown query parameter `{0}`")]
    Unknown(String),
    #[error("query parameter `{0}` has a malformed percent-escape")]
    BadEscape(String),
    #[error("query parameter `{0}` is not valid UTF-8 after percent-decoding")]
    InvalidUtf8(String),
}

/// `store=<s>` or `store=<s>&key=<k>`, percent-encoded.
pub fn encode_query(store: &str, key: Option<&str>) -> String {
    let mut out = String::with_capacity(store.len() + key.map_or(0, str::len) + 12);
    out.push_str(STORE_PARAM);
    out.push('=');
    out.extend(utf8_percent_encode(store, COMPONENT));
    if let Some(key) = key {
        out.push('&');
        out.push_str(KEY_PARAM);
        out.push('=');
        out.extend(utf8_percent_encode(key, COMPONENT));
    }
    out
}

/// Parses a raw query string (without `?`). `+` decodes to a space, as in
/// HTML forms, so a literal `+` must be sent as `%2B` (which
/// [`encode_query`] always does). `key_required` says whether this route
/// addresses a single key.
pub fn parse_query(raw: Option<&str>, key_required: bool) -> Result<RequestTarget, QueryError> {
    let mut store = None;
    let mut key = None;
    for pair in raw.unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            STORE_PARAM => &mut store,
            KEY_PARAM if key_required => &mut key,
            other => return Err(QueryError::Unknown(truncate(other))),
        };
        if slot.is_some() {
            return Err(QueryError::Duplicate(name.to_string()));
        }
        *slot = Some(decode_component(name, value)?);
    }
    let store = store.ok_or(QueryError::Missing(STORE_PARAM))?;
    if key_required && key.is_none() {
        return Err(QueryError::Missing(KEY_PARAM));
    }
    Ok(RequestTarget { store, key })
}

fn decode_component(name: &str, value: &str) -> Result<String, QueryError> {
    let bytes = value.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit())
        {
            return Err(QueryError::BadEscape(name.to_string()));
        }
    }
    let plus_as_space: std::borrow::Cow<'_, [u8]> = if bytes.contains(&b'+') {
        bytes
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect::<Vec<u8>>()
            .into()
    } else {
        bytes.into()
    };
    percent_decode(&plus_as_space)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| QueryError::InvalidUtf8(name.to_string()))
}

/// Parameter names come from the caller; keep error messages bounded.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tricky_strings_round_trip() {
        for s in [
            "", " ", "/", "%", "%2F", "?", "#", "&", "=", "+", "..", "a/b/../c", "ключ", "🔑",
            "a b+c",
        ] {
            let q = encode_query(s, Some(s));
            assert!(!q.contains('+') && !q.contains('#') && !q.contains('?') && !q.contains('/'));
            let t = parse_query(Some(&q), true).unwrap();
            assert_eq!(t.store, s);
            assert_eq!(t.key.as_deref(), Some(s));
        }
    }

    #[test]
    fn plus_is_space_like_forms() {
        let t = parse_query(Some("store=a+b"), false).unwrap();
        assert_eq!(t.store, "a b");
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse_query(None, false), Err(QueryError::Missing("store")));
        assert_eq!(
            parse_query(Some("store=a"), true),
            Err(QueryError::Missing("key"))
        );
        assert_eq!(
            parse_query(Some("store=a&store=b"), false),
            Err(QueryError::Duplicate("store".into()))
        );
        assert_eq!(
            parse_query(Some("store=a&x=1"), false),
            Err(QueryError::Unknown("x".into()))
        );
        assert_eq!(
            parse_query(Some("store=a&key=b"), false),
            Err(QueryError::Unknown("key".into()))
        );
        assert_eq!(
            parse_query(Some("store=%zz"), false),
            Err(QueryError::BadEscape("store".into()))
        );
        assert_eq!(
            parse_query(Some("store=%4"), false),
            Err(QueryError::BadEscape("store".into()))
        );
        assert_eq!(
            parse_query(Some("store=%ff"), false),
            Err(QueryError::InvalidUtf8("store".into()))
        );
        assert_eq!(
            parse_query(Some("store=a&key=%C3%28"), true),
            Err(QueryError::InvalidUtf8("key".into()))
        );
    }

    #[test]
    fn empty_values_are_present() {
        let t = parse_query(Some("store=&key="), true).unwrap();
        assert_eq!(
            t,
            RequestTarget {
                store: String::new(),
                key: Some(String::new())
            }
        );
        let t = parse_query(Some("store"), false).unwrap();
        assert_eq!(t.store, "");
    }

    proptest! {
        #[test]
        fn any_utf8_round_trips(store in any::<String>(), key in any::<String>()) {
            let q = encode_query(&store, Some(&key));
            let t = parse_query(Some(&q), true).unwrap();
            prop_assert_eq!(t.store, store);
            prop_assert_eq!(t.key, Some(key));
        }
    }
}
