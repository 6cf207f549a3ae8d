//! When a failed attempt may be repeated, and how long to wait first.

use std::time::Duration;

use drasi_store_protocol::ErrorCode;
use rand::Rng;

use crate::error::{Failure, Op};

/// First backoff step; doubles per retry up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub(crate) max_retries: u32,
}

impl RetryPolicy {
    /// Whether a request that failed with `failure` may be sent again.
    ///
    /// * Connect errors: the server never saw the request, so any operation
    ///   is safe to repeat.
    /// * 503 `unavailable`: the server promises it applied nothing.
    /// * Anything else whose outcome is unknown (timeouts, resets, other
    ///   503s from proxies, 408): only idempotent operations, because a
    ///   repeated delete would report the wrong count.
    pub(crate) fn is_retryable(op: Op, failure: &Failure) -> bool {
        match failure {
            Failure::Connect(_) => true,
            Failure::Status { status, .. } if status.as_u16() == 503 => {
                failure.code() == Some(ErrorCode::Unavailable) || op.is_idempotent()
            }
            Failure::Status { status, .. } if status.as_u16() == 408 => op.is_idempotent(),
            Failure::Status { .. } => false,
            Failure::Transport(_) => op.is_idempotent(),
            Failure::Decode(_) | Failure::Local(_) => false,
        }
    }

    /// Exponential backoff with jitter for retry number `retry` (0-based):
    /// a random point in the upper half of the step, so concurrent clients
    /// that failed together do not retry together.
    pub(crate) fn backoff(retry: u32) -> Duration {
        let step = BASE_BACKOFF
            .saturating_mul(1u32 << retry.min(16))
            .min(MAX_BACKOFF);
        let half = step / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drasi_store_protocol::ErrorBody;
    use reqwest::StatusCode;

    fn status(code: u16, body: Option<ErrorCode>) -> Failure {
        Failure::Status {
            status: StatusCode::from_u16(code).unwrap(),
            body: body.map(|code| ErrorBody {
                code,
                message: String::new(),
            }),
        }
    }

    #[test]
    fn unavailable_is_retried_for_every_operation() {
        for op in [Op::Delete, Op::DeleteMany, Op::ClearStore, Op::Set, Op::Get] {
            assert!(RetryPolicy::is_retryable(
                op,
                &status(503, Some(ErrorCode::Unavailable))
            ));
        }
    }

    #[test]
    fn unknown_outcomes_are_retried_only_when_idempotent() {
        let proxy_503 = status(503, None);
        let timeout = status(408, Some(ErrorCode::RequestTimeout));
        for failure in [&proxy_503, &timeout] {
            assert!(RetryPolicy::is_retryable(Op::Set, failure));
            assert!(RetryPolicy::is_retryable(Op::GetMany, failure));
            assert!(!RetryPolicy::is_retryable(Op::Delete, failure));
            assert!(!RetryPolicy::is_retryable(Op::ClearStore, failure));
        }
    }

    #[test]
    fn client_errors_are_final() {
        for (code, body) in [
            (400, ErrorCode::MalformedBody),
            (401, ErrorCode::Unauthorized),
            (413, ErrorCode::KeyTooLarge),
            (500, ErrorCode::StorageError),
        ] {
            assert!(!RetryPolicy::is_retryable(
                Op::Get,
                &status(code, Some(body))
            ));
        }
        assert!(!RetryPolicy::is_retryable(
            Op::Get,
            &Failure::Decode(String::new())
        ));
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let ms = Duration::from_millis;
        // 50 ms doubling per retry, jittered within the upper half of the
        // step, capped at 2 s from the sixth retry on.
        let bounds = [
            (0, ms(25), ms(50)),
            (1, ms(50), ms(100)),
            (2, ms(100), ms(200)),
            (3, ms(200), ms(400)),
            (4, ms(400), ms(800)),
            (5, ms(800), ms(1600)),
            (6, ms(1000), ms(2000)),
            (7, ms(1000), ms(2000)),
            (16, ms(1000), ms(2000)),
            (39, ms(1000), ms(2000)),
            (u32::MAX, ms(1000), ms(2000)),
        ];
        for (retry, low, high) in bounds {
            for _ in 0..50 {
                let d = RetryPolicy::backoff(retry);
                assert!(low <= d && d <= high, "retry {retry}: {d:?}");
            }
        }
        // Jittered: 50 draws of a continuous range are not all equal.
        let draws: std::collections::HashSet<_> =
            (0..50).map(|_| RetryPolicy::backoff(3)).collect();
        assert!(draws.len() > 1, "no jitter: {draws:?}");
    }
}
