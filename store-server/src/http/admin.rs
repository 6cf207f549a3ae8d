//! Admin routes: `GET /v1/admin/snapshot` and `POST /v1/admin/import`
//! (see docs/backup.md).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use drasi_store_protocol::snapshot::{CONTENT_TYPE, SnapshotError, parse_selection};
use drasi_store_protocol::{ErrorCode, ImportResponse};
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use super::SharedState;
use super::errors::ApiError;
use crate::bridge;
use crate::engine::EngineError;
use crate::engine::import::{ImportError, ImportPlan};

/// Streams a consistent snapshot. The read transaction is opened before the
/// answer starts, so every write acknowledged before the request arrived is
/// in it; writes go on meanwhile. The body is produced on a blocking thread
/// into a bounded channel: a slow client slows the producer down instead of
/// making the server buffer the database. If producing fails midway the
/// body ends without a trailer, which every reader detects.
pub async fn snapshot(State(state): State<SharedState>, uri: Uri) -> Result<Response, ApiError> {
    let selected = parse_selection(uri.query())?;
    for store in &selected {
        if store.len() > state.limits.max_key_bytes {
            return Err(ApiError::new(
                ErrorCode::KeyTooLarge,
                format!(
                    "store_id of {} bytes exceeds the limit of {}",
                    store.len(),
                    state.limits.max_key_bytes
                ),
            ));
        }
    }
    let source = state.engine.begin_snapshot(selected)?;
    let selective = source.header().selected_stores.len();
    let (tx, rx) = bridge::channel();
    let errors = tx.clone();
    tokio::task::spawn_blocking(
        move || match source.write_to(bridge::ChannelWriter::new(tx)) {
            Ok((summary, _)) => tracing::info!(
                records = summary.records,
                stores = summary.stores,
                bytes = summary.bytes,
                selected_stores = selective,
                sha256 = %summary.sha256_hex(),
                "snapshot streamed"
            ),
            Err(err) => {
                tracing::warn!(error = format!("{err:#}"), "snapshot aborted");
                let _ = errors.blocking_send(Err(std::io::Error::other(format!("{err:#}"))));
            }
        },
    );
    Ok((
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        Body::from_stream(bridge::into_stream(rx)),
    )
        .into_response())
}

/// Largest snapshot `POST /v1/admin/import` accepts. The import is one
/// write transaction that holds the writer while it runs, so it is meant
/// for one application's stores, not for a whole database (use restore).
pub const MAX_IMPORT_BYTES: u64 = 1024 * 1024 * 1024;

static SPOOL_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Receives a snapshot and replaces exactly the stores it holds (plus the
/// store_ids a selective snapshot lists) in one commit. The body is spooled
/// to a file in the data dir (bounded memory, at most
/// [`MAX_IMPORT_BYTES`]), verified completely, and only then applied;
/// anything wrong changes nothing.
pub async fn import(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != CONTENT_TYPE {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("an import body must be {CONTENT_TYPE}, not {content_type:?}"),
        ));
    }
    // Refused before the upload is spooled (it may be as large as the
    // database), not after: the replicated write path takes no imports.
    if state.engine.replica().is_some() {
        return Err(EngineError::NotReplicated {
            what: "importing a snapshot into a running replicated store",
        }
        .into());
    }
    let spool = state.spool_dir.join(format!(
        "import-{}-{}.spool",
        std::process::id(),
        SPOOL_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    if let Err(err) = spool_body(body, &spool, state.body_timeout).await {
        let _ = tokio::fs::remove_file(&spool).await;
        return Err(err);
    }
    let limits = state.limits;
    let plan = tokio::task::spawn_blocking(move || ImportPlan::prepare(spool, &limits))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("import task failed: {e}")))?
        .map_err(import_error)?;
    let summary = plan.summary.clone();
    let stores = plan.stores.clone();
    let records = state.engine.import(plan).await?;
    tracing::info!(
        records,
        stores = stores.len(),
        sha256 = %summary.sha256_hex(),
        "snapshot imported"
    );
    let body = ImportResponse {
        records,
        stores,
        bytes: summary.bytes,
        sha256: summary.sha256_hex(),
    };
    Ok(super::handlers::json(&body))
}

/// A snapshot that fails verification or the limits is the client's
/// fault; failing to read back the spool file is the server's.
fn import_error(err: ImportError) -> ApiError {
    let code = match &err {
        ImportError::Snapshot(SnapshotError::Io(_)) => ErrorCode::StorageError,
        ImportError::Snapshot(_) | ImportError::TooLarge { .. } => ErrorCode::MalformedBody,
    };
    ApiError::new(code, err.to_string())
}

/// Copies the body to `path`, at most [`MAX_IMPORT_BYTES`], failing if
/// the client pauses longer than `idle` between chunks.
async fn spool_body(body: Body, path: &Path, idle: Duration) -> Result<(), ApiError> {
    let io = |e: std::io::Error| {
        ApiError::new(
            ErrorCode::StorageError,
            format!("spooling the import to {}: {e}", path.display()),
        )
    };
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    loop {
        let next = tokio::time::timeout(idle, stream.next())
            .await
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::RequestTimeout,
                    format!("no import data received for {} ms", idle.as_millis()),
                )
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::MalformedBody,
                format!("import body could not be read: {e}"),
            )
        })?;
        total += chunk.len() as u64;
        if total > MAX_IMPORT_BYTES {
            return Err(ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("import body is more than the limit of {MAX_IMPORT_BYTES} bytes"),
            ));
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    Ok(())
}
