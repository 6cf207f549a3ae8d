//! The query string of a selective export: `store=<id>` repeated, each
//! percent-encoded exactly like the single-store routes (see
//! [`crate::query`]), so every store_id, including "" and "a&b", survives.

use crate::query::{QueryError, STORE_PARAM, encode_query, parse_query};

/// `store=a&store=b`; empty for a whole-database snapshot.
pub fn encode_selection<S: AsRef<str>>(stores: &[S]) -> String {
    stores
        .iter()
        .map(|s| encode_query(s.as_ref(), None))
        .collect::<Vec<_>>()
        .join("&")
}

/// The store_ids of a snapshot request, sorted and without duplicates;
/// empty means the whole database. Any parameter other than `store` is
/// refused.
pub fn parse_selection(raw: Option<&str>) -> Result<Vec<String>, QueryError> {
    let mut stores = Vec::new();
    for pair in raw.unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        if name != STORE_PARAM {
            return Err(QueryError::Unknown(name.chars().take(64).collect()));
        }
        stores.push(parse_query(Some(pair), false)?.store);
    }
    stores.sort();
    stores.dedup();
    Ok(stores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_tricky_store_ids() {
        let ids = ["", "a&b", "x=y", "ключ", "+", "%2F"];
        let q = encode_selection(&ids);
        let mut expected: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(parse_selection(Some(&q)).unwrap(), expected);
        assert_eq!(parse_selection(None).unwrap(), Vec::<String>::new());
        assert_eq!(parse_selection(Some("store=a&store=a")).unwrap(), ["a"]);
    }

    #[test]
    fn refuses_other_parameters_and_bad_escapes() {
        assert!(matches!(
            parse_selection(Some("store=a&key=b")),
            Err(QueryError::Unknown(_))
        ));
        assert!(matches!(
            parse_selection(Some("store=%zz")),
            Err(QueryError::BadEscape(_))
        ));
    }
}
