//! `POST /v1/batch`: many independent single-key calls in one request (see
//! `drasi_store_protocol::mixed`). The client sends one when calls pile up
//! behind a request in flight, so they share a round trip and their writes
//! share one commit.
//!
//! Every call in a batch was in flight at the same time on the client, so
//! any order among them is a valid linearization: reads answer from one
//! snapshot of the state committed when the batch arrives (one read
//! transaction for all of them), and the writes then go to the
//! writer together, in request order, and are answered after the commit
//! that holds them (durable with `--durability immediate`). A call with bad
//! input gets its own error and is not applied; the others go ahead.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use drasi_store_protocol::routes::OCTET_STREAM;
use drasi_store_protocol::{
    ErrorBody, ErrorCode, MixedKind, MixedResult, decode_mixed_ops, encode_mixed_results,
};

use super::SharedState;
use super::errors::ApiError;
use super::limits::{BodyLimit, Held, read_body};
use crate::engine::{EngineError, WriteOp};

pub async fn batch(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(
        body,
        &headers,
        BodyLimit::batch(&state.limits),
        state.body_timeout,
        &state.body_budget,
    )
    .await?;
    let frame = &body.bytes;
    let ops = decode_mixed_ops(frame, &state.limits)
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;

    let mut results: Vec<Option<MixedResult>> = vec![None; ops.len()];
    // Values read for the answer: charged to the memory budget and, all
    // together, bounded by --max-response-bytes, as a get_many answer is.
    let mut held = Held::default();
    let mut answer_bytes = 0usize;
    let mut writes = Vec::new();
    let mut write_slots = Vec::new();
    let mut reads = state.engine.batch_reads();
    for (slot, op) in ops.iter().enumerate() {
        let op = match op {
            Ok(op) => op,
            Err(body) => {
                results[slot] = Some(MixedResult::Error(body.clone()));
                continue;
            }
        };
        let answer = match op.kind {
            MixedKind::Get => {
                let admit = |len: usize| {
                    answer_bytes += len;
                    if answer_bytes > state.max_response_bytes {
                        return Err(ApiError::from(EngineError::AnswerTooLarge {
                            max: state.max_response_bytes,
                        }));
                    }
                    held.take(&state.body_budget, len)
                };
                results[slot] = Some(match reads.get_admitted(op.store, op.key, admit) {
                    Ok(Some(v)) => MixedResult::Value(v),
                    Ok(None) => MixedResult::Absent,
                    Err(api) => api_error(api),
                });
                continue;
            }
            MixedKind::ContainsKey => reads.contains_key(op.store, op.key).map(present_or_absent),
            MixedKind::Set => {
                writes.push(WriteOp::Set {
                    store: op.store.into(),
                    key: op.key.into(),
                    // Shares the request buffer: no copy of the value.
                    value: frame.slice_ref(op.value),
                });
                write_slots.push((slot, op.kind));
                continue;
            }
            MixedKind::Delete => {
                writes.push(WriteOp::Delete {
                    store: op.store.into(),
                    key: op.key.into(),
                });
                write_slots.push((slot, op.kind));
                continue;
            }
        };
        results[slot] = Some(answer.unwrap_or_else(engine_error));
    }

    // The snapshot is not held while the writes wait for their commit.
    drop(reads);
    if !writes.is_empty() {
        let outcomes = state.engine.write_many(writes).await;
        for ((slot, kind), outcome) in write_slots.into_iter().zip(outcomes) {
            results[slot] = Some(match outcome {
                Ok(_) if kind == MixedKind::Set => MixedResult::Done,
                Ok(out) => present_or_absent(out.count > 0),
                Err(err) => engine_error(err),
            });
        }
    }

    // Every slot is filled above: each call is an error, a read, or a write
    // with an outcome.
    let results: Vec<MixedResult> = results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                MixedResult::Error(ErrorBody {
                    code: ErrorCode::Internal,
                    message: "the server left this call unanswered".into(),
                })
            })
        })
        .collect();
    let encoded = encode_mixed_results(&results);
    drop(results);
    Ok(([(header::CONTENT_TYPE, OCTET_STREAM)], held.body(encoded)).into_response())
}

fn present_or_absent(present: bool) -> MixedResult {
    if present {
        MixedResult::Present
    } else {
        MixedResult::Absent
    }
}

/// The same code and message the single-key route would answer with.
fn engine_error(err: EngineError) -> MixedResult {
    api_error(ApiError::from(err))
}

fn api_error(api: ApiError) -> MixedResult {
    MixedResult::Error(ErrorBody {
        code: api.code,
        message: api.message,
    })
}
