//! The OpenAPI 3.1 document served at `GET /v1/openapi.json`. It is
//! hand-written (the API is small and its binary bodies are not something
//! derive-based generators describe well); a test keeps it in step with
//! `drasi_store_protocol::routes` and the error codes.

pub const OPENAPI_JSON: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use super::*;
    use drasi_store_protocol::{ErrorCode, routes};

    fn doc() -> serde_json::Value {
        serde_json::from_str(OPENAPI_JSON).expect("openapi.json is valid JSON")
    }

    #[test]
    fn is_openapi_3_1() {
        let d = doc();
        assert!(d["openapi"].as_str().unwrap().starts_with("3.1."));
        assert_eq!(d["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn lists_every_route_with_its_methods() {
        let d = doc();
        let paths = d["paths"].as_object().unwrap();
        let expected: &[(&str, &[&str])] = &[
            (routes::KV, &["get", "head", "put", "delete"]),
            (routes::GET_MANY, &["post"]),
            (routes::SET_MANY, &["post"]),
            (routes::DELETE_MANY, &["post"]),
            (routes::STORE, &["get", "delete"]),
            (routes::STORE_KEYS, &["get"]),
            (routes::SYNC, &["post"]),
            (routes::WAL_REGISTER, &["put"]),
            (routes::WAL_APPEND, &["post"]),
            (routes::WAL_EVENTS, &["get"]),
            (routes::WAL_PRUNE, &["post"]),
            (routes::WAL_INFO, &["get"]),
            (routes::WAL, &["delete"]),
            (routes::OPENAPI, &["get"]),
            (routes::HEALTHZ, &["get"]),
            (routes::READYZ, &["get"]),
            (routes::METRICS, &["get"]),
        ];
        for (path, methods) in expected {
            let item = paths
                .get(*path)
                .unwrap_or_else(|| panic!("{path} missing from openapi.json"));
            for m in *methods {
                assert!(
                    item.get(*m).is_some(),
                    "{m} {path} missing from openapi.json"
                );
            }
        }
        assert_eq!(
            paths.len(),
            expected.len(),
            "openapi.json lists unknown paths"
        );
    }

    #[test]
    fn documents_every_error_code() {
        let d = doc();
        let codes: Vec<&str> =
            d["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
        for code in ErrorCode::ALL {
            assert!(codes.contains(&code.as_str()), "{code} missing");
        }
        assert_eq!(codes.len(), ErrorCode::ALL.len());
    }
}
