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
    /// With several URLs: how long retryable failures keep being retried
    /// (across the URLs) after the first attempt, beyond `max_retries`, so
    /// that a leader election reads as a slow call. `None` with one URL.
    pub(crate) failover_budget: Option<Duration>,
}

impl RetryPolicy {
    /// Whether to send attempt number `attempts + 1` after `failure`, the
    /// first attempt having started `elapsed` ago; `Some(delay)` to wait
    /// first. Retries within `max_retries` are always allowed; beyond them
    /// only while the failover budget lasts, and the wait never runs past
    /// its end.
    pub(crate) fn next_delay(
        &self,
        op: Op,
        failure: &Failure,
        attempts: u32,
        elapsed: Duration,
    ) -> Option<Duration> {
        if !Self::is_retryable(op, failure) {
            return None;
        }
        let delay = Self::backoff(attempts.saturating_sub(1));
        if attempts <= self.max_retries {
            return Some(delay);
        }
        let budget = self.failover_budget?;
        let left = budget.checked_sub(elapsed).filter(|d| !d.is_zero())?;
        Some(delay.min(left))
    }

    /// Whether the next attempt should go to another URL: the node could
    /// not be reached, the exchange broke off, or it answered 503 (it has
    /// no leader, is not caught up, or lost its leader mid-write). Other
    /// answers are the cluster's answer and another node would give the
    /// same one.
    pub(crate) fn moves_on(failure: &Failure) -> bool {
        match failure {
            Failure::Connect(_) | Failure::Transport(_) => true,
            Failure::Status { status, .. } => status.as_u16() == 503,
            Failure::Decode(_) | Failure::Local(_) => false,
        }
    }

    /// Whether a request that failed with `failure` may be sent again.
    ///
    /// * Connect errors: the server never saw the request, so any operation
    ///   is safe to repeat.
    /// * 503 `unavailable`: the server promises it applied nothing.
    /// * Anything else whose outcome is unknown (timeouts, resets, 503
    ///   `indeterminate` from a node that lost its leader mid-write, other
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
    fn indeterminate_is_retried_only_when_idempotent() {
        let indeterminate = status(503, Some(ErrorCode::Indeterminate));
        for op in [Op::Set, Op::SetMany, Op::Get, Op::WalAppend, Op::Sync] {
            assert!(RetryPolicy::is_retryable(op, &indeterminate), "{op}");
        }
        for op in [Op::Delete, Op::DeleteMany, Op::ClearStore, Op::WalPruneUpTo] {
            assert!(!RetryPolicy::is_retryable(op, &indeterminate), "{op}");
        }
    }

    fn connect_failure() -> Failure {
        // A port nobody listens on: a real connect error from reqwest.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(reqwest::Client::new().get("http://127.0.0.1:1/").send())
            .expect_err("nothing listens on port 1");
        let failure = Failure::from_reqwest(err);
        assert!(matches!(failure, Failure::Connect(_)), "{failure:?}");
        failure
    }

    #[test]
    fn one_url_keeps_the_retry_count() {
        let policy = RetryPolicy {
            max_retries: 3,
            failover_budget: None,
        };
        let unavailable = status(503, Some(ErrorCode::Unavailable));
        for attempts in 1..=3 {
            assert!(
                policy
                    .next_delay(Op::Delete, &unavailable, attempts, Duration::ZERO)
                    .is_some()
            );
        }
        assert_eq!(
            policy.next_delay(Op::Delete, &unavailable, 4, Duration::ZERO),
            None
        );
    }

    #[test]
    fn several_urls_retry_until_the_budget_is_spent() {
        let budget = Duration::from_secs(5);
        let policy = RetryPolicy {
            max_retries: 3,
            failover_budget: Some(budget),
        };
        let unavailable = status(503, Some(ErrorCode::Unavailable));
        let connect = connect_failure();
        for failure in [&unavailable, &connect] {
            // Past the retry count, within the budget: retried, and the
            // wait never overshoots the budget.
            let delay = policy
                .next_delay(Op::Delete, failure, 10, Duration::from_millis(4_900))
                .expect("within the budget");
            assert!(delay <= Duration::from_millis(100), "{delay:?}");
            assert_eq!(policy.next_delay(Op::Delete, failure, 10, budget), None);
            // Within the retry count, even with the budget spent (e.g. after
            // one long timeout): retried.
            assert!(
                policy
                    .next_delay(Op::Delete, failure, 2, Duration::from_secs(31))
                    .is_some()
            );
        }
        // The budget never makes an unsafe retry safe.
        let indeterminate = status(503, Some(ErrorCode::Indeterminate));
        assert_eq!(
            policy.next_delay(Op::Delete, &indeterminate, 1, Duration::ZERO),
            None
        );
        assert!(
            policy
                .next_delay(Op::Set, &indeterminate, 7, Duration::from_secs(1))
                .is_some()
        );
        assert_eq!(
            policy.next_delay(
                Op::Get,
                &status(500, Some(ErrorCode::StorageError)),
                1,
                Duration::ZERO
            ),
            None
        );
    }

    #[test]
    fn only_unreachable_or_leaderless_nodes_are_left() {
        assert!(RetryPolicy::moves_on(&connect_failure()));
        assert!(RetryPolicy::moves_on(&status(
            503,
            Some(ErrorCode::Unavailable)
        )));
        assert!(RetryPolicy::moves_on(&status(
            503,
            Some(ErrorCode::Indeterminate)
        )));
        assert!(RetryPolicy::moves_on(&status(503, None)));
        for (code, body) in [
            (400, ErrorCode::MalformedBody),
            (401, ErrorCode::Unauthorized),
            (404, ErrorCode::RouteNotFound),
            (500, ErrorCode::StorageError),
        ] {
            assert!(!RetryPolicy::moves_on(&status(code, Some(body))));
        }
        assert!(!RetryPolicy::moves_on(&Failure::Decode(String::new())));
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
