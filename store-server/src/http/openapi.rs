//! The OpenAPI 3.1 document served at `GET /v1/openapi.json`, generated
//! from the endpoint table in `drasi_store_protocol::endpoints` and the
//! `ToSchema` derives on the protocol's JSON types, so it lists exactly the
//! routes the router serves. Binary bodies (raw values and batch frames)
//! are described as octet strings, since no schema language captures the
//! framing; docs/protocol.md defines it.

use drasi_store_protocol::endpoints::{self, Body, Endpoint, Method, Query};
use drasi_store_protocol::routes::{JSON, KEY_NOT_FOUND_HEADER, OCTET_STREAM};
use drasi_store_protocol::snapshot::CONTENT_TYPE as SNAPSHOT;
use drasi_store_protocol::wal::{self, AppendResponse, WalCapacityPolicy, WalConfig, WalInfo};
use drasi_store_protocol::{
    ClusterInfo, ClusterMember, ClusterRole, CountResponse, DeleteResponse, Durability, ErrorBody,
    ErrorCode, ImportResponse, KeyList, ServerInfo, StepDownResponse, StoreInfo,
};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::info::{InfoBuilder, LicenseBuilder};
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, OpenApi, OpenApiBuilder, Ref, RefOr, Required};

const BEARER: &str = "bearer";

/// The document as JSON, built once at startup.
pub fn document_json() -> String {
    // Serialising plain structs of strings and maps cannot fail.
    document()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}

pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for e in endpoints::ALL {
        // `path` merges the operations of endpoints that share a path.
        paths = paths.path(e.path, PathItem::new(http_method(e.method), operation(e)));
    }
    let components = ComponentsBuilder::new()
        .schema_from::<ErrorBody>()
        .schema_from::<ErrorCode>()
        .schema_from::<DeleteResponse>()
        .schema_from::<CountResponse>()
        .schema_from::<StoreInfo>()
        .schema_from::<KeyList>()
        .schema_from::<ImportResponse>()
        .schema_from::<Durability>()
        .schema_from::<ServerInfo>()
        .schema_from::<ClusterInfo>()
        .schema_from::<ClusterMember>()
        .schema_from::<ClusterRole>()
        .schema_from::<StepDownResponse>()
        .schema("ProbeBody", probe_body())
        .schema("KeysFrame", octets(KEYS_FRAME))
        .schema("EntriesFrame", octets(ENTRIES_FRAME))
        .schema("Snapshot", snapshot_stream())
        .schema("MixedBatchFrame", octets(MIXED_BATCH_FRAME))
        .schema("MixedResultsFrame", octets(MIXED_RESULTS_FRAME))
        .schema_from::<WalConfig>()
        .schema_from::<WalCapacityPolicy>()
        .schema_from::<AppendResponse>()
        .schema_from::<WalInfo>()
        .schema("EventsFrame", octets(EVENTS_FRAME))
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token from the server's --auth-token-file."))
                    .build(),
            ),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Drasi State Store API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(DESCRIPTION))
                .license(Some(
                    LicenseBuilder::new()
                        .name("Apache-2.0")
                        .identifier(Some("Apache-2.0"))
                        .build(),
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build()
}

const DESCRIPTION: &str = "The StateStoreProvider contract of DrasiLib over HTTP. \
store_id and key travel as percent-encoded query parameters (`store`, `key`): every byte \
outside RFC 3986 unreserved characters is escaped, `+` decodes to a space so a literal `+` \
is sent as `%2B`, and invalid UTF-8 or malformed escapes are rejected. Single values are raw \
bytes; batches use the binary KeysFrame and EntriesFrame. See docs/protocol.md.";

const KEYS_FRAME: &str = "Big-endian u32 count, then per key: u32 length and the key's UTF-8 \
bytes. At most --max-batch-entries keys; no trailing bytes.";

const ENTRIES_FRAME: &str = "Big-endian u32 count, then per entry: u32 key length, the key's \
UTF-8 bytes, u32 value length, the value bytes. At most --max-batch-entries entries; no \
trailing bytes.";

const MIXED_BATCH_FRAME: &str = "Big-endian u32 count, then per call: u8 operation (1 get, \
2 set, 3 delete, 4 contains_key), u32 store_id length, the store_id's UTF-8 bytes, u32 key \
length, the key's UTF-8 bytes, and for set only u32 value length and the value bytes. At most \
--max-batch-entries calls; no trailing bytes.";

const MIXED_RESULTS_FRAME: &str = "Big-endian u32 count (the request's), then per call in \
request order: u8 result: 0 done (set applied), 1 value (u32 length, bytes: get found the \
key), 2 absent (get: no key; contains_key: false; delete: did not exist), 3 present \
(contains_key: true; delete: existed), 4 error (u32 length, an ErrorCode name, u32 length, a \
UTF-8 message; that call was not applied).";

fn http_method(m: Method) -> HttpMethod {
    match m {
        Method::Get => HttpMethod::Get,
        Method::Head => HttpMethod::Head,
        Method::Put => HttpMethod::Put,
        Method::Post => HttpMethod::Post,
        Method::Delete => HttpMethod::Delete,
    }
}

fn operation(e: &Endpoint) -> utoipa::openapi::path::Operation {
    let mut op = OperationBuilder::new()
        .operation_id(Some(e.operation.as_str()))
        .summary(Some(e.summary));
    let params: &[(&str, &str)] = match e.query {
        Query::None | Query::StoreSelection | Query::Source(_) => &[],
        Query::Store => &[("store", "store_id")],
        Query::StoreAndKey => &[("store", "store_id"), ("key", "key")],
    };
    if let Query::Source(extra) = e.query {
        op = wal_parameters(op, extra);
    }
    for (name, what) in params {
        op = op.parameter(
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Query)
                .required(Required::True)
                .description(Some(format!(
                    "{what}: any UTF-8 up to --max-key-bytes bytes (empty too), percent-encoded."
                )))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
        );
    }
    if e.query == Query::StoreSelection {
        op = op.parameter(
            ParameterBuilder::new()
                .name("store")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .explode(Some(true))
                .description(Some(
                    "A store_id to include, repeated for several, each percent-encoded like \
                     the single-store routes; none means every store.",
                ))
                .schema(Some(
                    ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)),
                )),
        );
    }
    if let Some((mime, schema)) = content(e.request) {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(mime, ContentBuilder::new().schema(Some(schema)).build())
                .required(Some(Required::True))
                .build(),
        ));
    }
    let mut success = ResponseBuilder::new().description(match e.status {
        204 => "Done; no body.",
        _ => "Success.",
    });
    if let Some((mime, schema)) = content(e.response) {
        success = success.content(mime, ContentBuilder::new().schema(Some(schema)).build());
    }
    let mut responses = ResponsesBuilder::new().response(e.status.to_string(), success.build());
    if e.path == drasi_store_protocol::routes::KV && e.request == Body::Empty {
        responses = responses.response("404", key_not_found(e.method));
    }
    responses = responses.response(
        "default",
        ResponseBuilder::new()
            .description("An error; `code` says which (see docs/protocol.md for the statuses).")
            .content(
                JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    );
    op = op.responses(responses.build());
    op = op.security(if e.auth {
        SecurityRequirement::new(BEARER, Vec::<String>::new())
    } else {
        // An empty requirement: no token needed.
        SecurityRequirement::default()
    });
    op.build()
}

fn key_not_found(method: Method) -> utoipa::openapi::Response {
    let header = HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some("`true` when the key is absent (not a missing route)."))
        .build();
    let response = ResponseBuilder::new()
        .description("No such key in this store.")
        .header(KEY_NOT_FOUND_HEADER, header);
    if method == Method::Head {
        return response.build();
    }
    response
        .content(
            JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

fn content(body: Body) -> Option<(&'static str, RefOr<Schema>)> {
    match body {
        Body::Empty => None,
        Body::Value => Some((OCTET_STREAM, octets("The value, as raw bytes.").into())),
        Body::KeysFrame => Some((OCTET_STREAM, Ref::from_schema_name("KeysFrame").into())),
        Body::EntriesFrame => Some((OCTET_STREAM, Ref::from_schema_name("EntriesFrame").into())),
        Body::MixedBatchFrame => Some((
            OCTET_STREAM,
            Ref::from_schema_name("MixedBatchFrame").into(),
        )),
        Body::MixedResultsFrame => Some((
            OCTET_STREAM,
            Ref::from_schema_name("MixedResultsFrame").into(),
        )),
        Body::Json(name) => Some((JSON, Ref::from_schema_name(name).into())),
        Body::Snapshot => Some((SNAPSHOT, Ref::from_schema_name("Snapshot").into())),
        Body::OpenApiDocument => Some((JSON, ObjectBuilder::new().into())),
        Body::MetricsText => Some((
            "application/openmetrics-text",
            ObjectBuilder::new().schema_type(Type::String).into(),
        )),
        Body::WalEvent => Some((
            OCTET_STREAM,
            octets("One encoded SourceChange (see docs/wal.md).").into(),
        )),
        Body::WalEventsFrame => Some((OCTET_STREAM, Ref::from_schema_name("EventsFrame").into())),
    }
}

/// `source` and the extra parameters of a WAL endpoint (docs/wal.md).
fn wal_parameters(mut op: OperationBuilder, extra: &[&str]) -> OperationBuilder {
    let param = |name: &str, required: bool, schema: ObjectBuilder, what: &str| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Query)
            .required(if required {
                Required::True
            } else {
                Required::False
            })
            .description(Some(what))
            .schema(Some(schema))
    };
    op = op.parameter(param(
        wal::SOURCE_PARAM,
        true,
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[A-Za-z0-9_-]+$")),
        "The DrasiLib source id: ASCII letters, digits, '_' and '-', not starting with '.'.",
    ));
    for name in extra {
        let number = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)));
        op = op.parameter(match *name {
            wal::FROM_PARAM => param(name, true, number, "First sequence number wanted."),
            wal::UP_TO_PARAM => param(name, true, number, "Highest sequence number to remove."),
            _ => param(
                name,
                false,
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9a-fA-F]{32}$")),
                "Client-chosen id; a repeated append with it returns the first sequence number.",
            ),
        });
    }
    op
}

const EVENTS_FRAME: &str = "One page of read_from, at most --max-response-bytes. Big-endian: \
the oldest retained sequence (u64, 0 when the log is empty), the `from` of the next page (u64, \
0 when this page reaches the end of the log), a u32 count, then per event: u64 sequence, u32 \
length and the encoded event. No events when `from` is older than the oldest retained \
sequence. See docs/wal.md.";

fn octets(description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .content_media_type(OCTET_STREAM)
        .description(Some(description))
        .into()
}

const SNAPSHOT_STREAM: &str = "A self-checking snapshot stream (magic, header, records sorted by \
store_id and key, each with a CRC32, and a trailer with the record count and the SHA-256 of \
the whole stream); see docs/backup.md for the layout byte by byte.";

fn snapshot_stream() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .content_media_type(SNAPSHOT)
        .description(Some(SNAPSHOT_STREAM))
        .into()
}

fn probe_body() -> Schema {
    let string = |values: &[&str], description: Option<&str>| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(values.iter().copied()))
            .description(description)
    };
    ObjectBuilder::new()
        .property("status", string(&["ok", "unavailable"], None))
        .required("status")
        .property(
            "reason",
            string(
                &super::handlers::PROBE_REASONS,
                Some("Present when status is unavailable."),
            ),
        )
        .property(
            "message",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("Present when status is unavailable; for people.")),
        )
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> serde_json::Value {
        serde_json::from_str(&document_json()).unwrap()
    }

    #[test]
    fn is_openapi_3_1() {
        let d = doc();
        assert!(d["openapi"].as_str().unwrap().starts_with("3.1."), "{d}");
        assert_eq!(d["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn documents_every_error_code() {
        let d = doc();
        let schema = &d["components"]["schemas"]["ErrorCode"];
        let codes: Vec<&str> = schema["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("ErrorCode enum missing: {schema}"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(codes, all);
    }

    #[test]
    fn marks_public_and_protected_operations() {
        let d = doc();
        for e in endpoints::ALL {
            let op = &d["paths"][e.path][e.method.as_str().to_ascii_lowercase()];
            let security = op["security"].as_array().unwrap();
            assert_eq!(security.len(), 1);
            assert_eq!(
                security[0].get(BEARER).is_some(),
                e.auth,
                "{} {}",
                e.method.as_str(),
                e.path
            );
        }
    }
}
