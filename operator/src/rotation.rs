//! Zero-downtime rotation of the generated token `<name>-auth`.
//!
//! The server accepts every line of its token file, and two kinds of
//! consumers read the token handed out in `<name>-connection`: those with
//! `envFrom` read it once at start, those that mount the Secret and set
//! `DRASI_STATE_STORE_TOKEN_FILE` follow it live. The kubelet refreshes
//! each mounted Secret on its own schedule, so the server may see a change
//! after a consumer does. A rotation therefore runs in three passes, each
//! recorded on `<name>-auth` (token file lines, and annotations):
//!
//! | stage | token file | handed to clients | next, after |
//! |---|---|---|---|
//! | `Staged` | current, new | current | [`PROPAGATION`] |
//! | `Switched` | new, previous | new | `gracePeriodSeconds` |
//! | (done) | new | new | |
//!
//! `Staged` lets the server pick the new token up before any consumer can
//! send it; `Switched` keeps the previous token valid while consumers move.
//!
//! Pure: the clock and the token generator are parameters, so the
//! reconciler and the tests step the same function.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::builders::{TOKEN_KEY, token_lines};
use crate::crd::{DEFAULT_GRACE_PERIOD_SECONDS, DrasiStateStore};
use crate::validated::{SecretData, TokenSource};

/// The `spec.auth.rotation.trigger` value the operator last acted upon.
pub const TRIGGER_ANNOTATION: &str = "drasi.io/token-rotation-trigger";
/// `Staged` or `Switched` while a rotation is in flight.
pub const STAGE_ANNOTATION: &str = "drasi.io/token-rotation-stage";
/// When the current stage began (RFC 3339).
pub const SINCE_ANNOTATION: &str = "drasi.io/token-rotation-since";

/// How long the server accepts a new token before clients are handed it:
/// the kubelet refreshes a mounted Secret within its sync period (1 minute
/// by default) plus the time its Secret cache takes to see the change.
pub const PROPAGATION: Duration = Duration::from_secs(120);

/// A rotation in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString)]
pub enum Stage {
    /// The new token is accepted but not handed out yet.
    Staged,
    /// The new token is handed out; the previous one is still accepted.
    Switched,
}

/// The rotation bookkeeping of `<name>-auth`, kept in its annotations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RotationState {
    /// The trigger last acted upon (also the one a new Secret was created
    /// with, so creating a store never rotates).
    pub trigger: Option<String>,
    /// The stage in flight and when it began.
    pub stage: Option<(Stage, Timestamp)>,
}

impl RotationState {
    /// Reads the annotations of `<name>-auth`. A stage whose start time
    /// cannot be read (edited by hand) is restarted at `now`: that only
    /// keeps both tokens valid longer.
    pub fn from_annotations(
        annotations: Option<&BTreeMap<String, String>>,
        now: Timestamp,
    ) -> Self {
        let get = |key: &str| annotations.and_then(|a| a.get(key));
        let stage = get(STAGE_ANNOTATION)
            .and_then(|s| s.parse::<Stage>().ok())
            .map(|stage| {
                let since = get(SINCE_ANNOTATION)
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .unwrap_or(now);
                (stage, since)
            });
        Self {
            trigger: get(TRIGGER_ANNOTATION).cloned(),
            stage,
        }
    }

    /// The annotations that record this state (none for the default).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut annotations = BTreeMap::new();
        if let Some(trigger) = &self.trigger {
            annotations.insert(TRIGGER_ANNOTATION.to_owned(), trigger.clone());
        }
        if let Some((stage, since)) = &self.stage {
            annotations.insert(STAGE_ANNOTATION.to_owned(), stage.to_string());
            annotations.insert(SINCE_ANNOTATION.to_owned(), since.to_string());
        }
        annotations
    }
}

/// What the spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub trigger: Option<String>,
    pub grace_period: Duration,
}

impl Requested {
    pub fn of(store: &DrasiStateStore) -> Self {
        let rotation = store.spec.auth.as_ref().and_then(|a| a.rotation.as_ref());
        let seconds = rotation
            .and_then(|r| r.grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS);
        Self {
            trigger: rotation.and_then(|r| r.trigger.clone()),
            grace_period: Duration::from_secs(seconds.max(0).unsigned_abs()),
        }
    }
}

/// A stage change, for the event the reconciler records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A new token was added; clients still get the current one.
    Started,
    /// Clients are handed the new token; the previous one is still valid.
    Switched,
    /// The previous token was removed.
    Finished,
}

/// One step of the rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The token file: one token per line, the one handed to clients first.
    pub file: String,
    pub state: RotationState,
    /// When the next step is due (`None`: nothing in flight).
    pub due_in: Option<Duration>,
    /// What this step changed, if anything.
    pub transition: Option<Transition>,
}

/// Advances the rotation recorded in `file` and `state` to `now`. A stage
/// whose time has come moves on; a new trigger starts a rotation once none
/// is in flight. `new_token` is called only when a rotation starts.
pub fn advance(
    file: &str,
    state: RotationState,
    requested: &Requested,
    now: Timestamp,
    new_token: impl FnOnce() -> String,
) -> Step {
    let tokens: Vec<&str> = token_lines(file).collect();
    let idle = |state: RotationState| Step {
        file: file.to_owned(),
        state,
        due_in: None,
        transition: None,
    };
    let Some(&current) = tokens.first() else {
        // Nothing to rotate: `validate` reports the empty token file.
        return idle(state);
    };
    match state.stage {
        None => match &requested.trigger {
            Some(trigger) if state.trigger.as_ref() != Some(trigger) => Step {
                file: join(&[current, &new_token()]),
                state: RotationState {
                    trigger: Some(trigger.clone()),
                    stage: Some((Stage::Staged, now)),
                },
                due_in: Some(PROPAGATION),
                transition: Some(Transition::Started),
            },
            _ => idle(state),
        },
        // A file edited by hand to a single token: nothing left to rotate.
        Some(_) if tokens.len() < 2 => idle(RotationState {
            stage: None,
            ..state
        }),
        Some((Stage::Staged, since)) => match remaining(since, PROPAGATION, now) {
            Some(left) => Step {
                due_in: Some(left),
                ..idle(state)
            },
            None => Step {
                file: join(&[tokens[1], tokens[0]]),
                state: RotationState {
                    stage: Some((Stage::Switched, now)),
                    ..state
                },
                due_in: Some(requested.grace_period),
                transition: Some(Transition::Switched),
            },
        },
        Some((Stage::Switched, since)) => match remaining(since, requested.grace_period, now) {
            Some(left) => Step {
                due_in: Some(left),
                ..idle(state)
            },
            None => {
                let done = RotationState {
                    stage: None,
                    ..state
                };
                let file = join(&[current]);
                // A trigger changed during the rotation starts the next one.
                let next = advance(&file, done.clone(), requested, now, new_token);
                if next.transition.is_some() {
                    next
                } else {
                    Step {
                        file,
                        state: done,
                        due_in: None,
                        transition: Some(Transition::Finished),
                    }
                }
            }
        },
    }
}

/// Time left until `since + period`; `None` once it has passed.
fn remaining(since: Timestamp, period: Duration, now: Timestamp) -> Option<Duration> {
    let period = SignedDuration::try_from(period).unwrap_or(SignedDuration::MAX);
    let left = now.duration_until(since.saturating_add(period).ok()?);
    (left > SignedDuration::ZERO).then(|| left.unsigned_abs())
}

fn join(tokens: &[&str]) -> String {
    tokens.join("\n")
}

/// What `dereference` hands `validate` for the generated `<name>-auth`.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedToken {
    pub source: TokenSource,
    pub rotation: RotationState,
    pub due_in: Option<Duration>,
    pub transition: Option<Transition>,
}

/// The generated token of `store` at `now`: a new one when `found` (the
/// current `<name>-auth`) does not exist, else its token file with the
/// rotation advanced.
pub fn generated_token(
    store: &DrasiStateStore,
    found: Option<&Secret>,
    now: Timestamp,
    new_token: impl FnOnce() -> String,
) -> GeneratedToken {
    let requested = Requested::of(store);
    let Some(secret) = found else {
        return GeneratedToken {
            source: TokenSource::New(new_token()),
            rotation: RotationState {
                trigger: requested.trigger,
                stage: None,
            },
            due_in: None,
            transition: None,
        };
    };
    let mut data: SecretData = secret.data.clone().unwrap_or_default();
    let state = RotationState::from_annotations(secret.metadata.annotations.as_ref(), now);
    let file = data
        .get(TOKEN_KEY)
        .and_then(|v| String::from_utf8(v.0.clone()).ok());
    let Some(file) = file else {
        // `validate` reports the damaged Secret; nothing is rotated.
        return GeneratedToken {
            source: TokenSource::Stored(Some(data)),
            rotation: state,
            due_in: None,
            transition: None,
        };
    };
    let step = advance(&file, state, &requested, now, new_token);
    data.insert(
        TOKEN_KEY.to_owned(),
        k8s_openapi::ByteString(step.file.into_bytes()),
    );
    GeneratedToken {
        source: TokenSource::Stored(Some(data)),
        rotation: step.state,
        due_in: step.due_in,
        transition: step.transition,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccc";

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn requested(trigger: Option<&str>) -> Requested {
        Requested {
            trigger: trigger.map(str::to_owned),
            grace_period: Duration::from_secs(600),
        }
    }

    fn no_token() -> String {
        panic!("no new token expected")
    }

    #[test]
    fn a_new_trigger_stages_then_switches_then_drops_the_previous_token() {
        let idle = RotationState {
            trigger: Some("1".into()),
            stage: None,
        };
        let want = requested(Some("2"));

        let staged = advance(A, idle, &want, t(0), || B.to_owned());
        assert_eq!(
            staged.file,
            format!("{A}\n{B}"),
            "current first: clients keep A"
        );
        assert_eq!(staged.state.trigger.as_deref(), Some("2"));
        assert_eq!(staged.state.stage, Some((Stage::Staged, t(0))));
        assert_eq!(staged.due_in, Some(PROPAGATION));
        assert_eq!(staged.transition, Some(Transition::Started));

        // Before the propagation delay: nothing moves, the wait shrinks.
        let early = advance(&staged.file, staged.state.clone(), &want, t(100), no_token);
        assert_eq!(early.file, staged.file);
        assert_eq!(early.state, staged.state);
        assert_eq!(early.due_in, Some(Duration::from_secs(20)));
        assert_eq!(early.transition, None);

        let switched = advance(&staged.file, staged.state, &want, t(120), no_token);
        assert_eq!(
            switched.file,
            format!("{B}\n{A}"),
            "new first: clients get B"
        );
        assert_eq!(switched.state.stage, Some((Stage::Switched, t(120))));
        assert_eq!(switched.due_in, Some(Duration::from_secs(600)));
        assert_eq!(switched.transition, Some(Transition::Switched));

        let waiting = advance(
            &switched.file,
            switched.state.clone(),
            &want,
            t(719),
            no_token,
        );
        assert_eq!(
            waiting.file, switched.file,
            "A is valid for the whole grace period"
        );
        assert_eq!(waiting.due_in, Some(Duration::from_secs(1)));

        let done = advance(&switched.file, switched.state, &want, t(720), no_token);
        assert_eq!(done.file, B);
        assert_eq!(
            done.state,
            RotationState {
                trigger: Some("2".into()),
                stage: None
            }
        );
        assert_eq!(done.due_in, None);
        assert_eq!(done.transition, Some(Transition::Finished));

        // The same trigger never rotates twice.
        let again = advance(&done.file, done.state.clone(), &want, t(9999), no_token);
        assert_eq!((again.file.as_str(), again.transition), (B, None));
    }

    #[test]
    fn no_trigger_or_the_recorded_one_changes_nothing() {
        for (recorded, wanted) in [(None, None), (Some("x"), None), (Some("x"), Some("x"))] {
            let state = RotationState {
                trigger: recorded.map(str::to_owned),
                stage: None,
            };
            let step = advance(A, state.clone(), &requested(wanted), t(0), no_token);
            assert_eq!(
                step,
                Step {
                    file: A.to_owned(),
                    state,
                    due_in: None,
                    transition: None
                }
            );
        }
    }

    #[test]
    fn a_trigger_changed_mid_rotation_starts_the_next_rotation_afterwards() {
        let switched = RotationState {
            trigger: Some("2".into()),
            stage: Some((Stage::Switched, t(0))),
        };
        let file = format!("{B}\n{A}");
        let want = requested(Some("3"));
        let during = advance(&file, switched.clone(), &want, t(10), no_token);
        assert_eq!(during.file, file, "a rotation in flight is finished first");
        let after = advance(&file, switched, &want, t(600), || C.to_owned());
        assert_eq!(after.file, format!("{B}\n{C}"), "A dropped, C staged");
        assert_eq!(after.state.trigger.as_deref(), Some("3"));
        assert_eq!(after.transition, Some(Transition::Started));
    }

    #[test]
    fn annotations_round_trip_and_damaged_ones_are_safe() {
        let state = RotationState {
            trigger: Some("2026-11-30".into()),
            stage: Some((Stage::Switched, t(5))),
        };
        let annotations = state.annotations();
        assert_eq!(annotations[STAGE_ANNOTATION], "Switched");
        assert_eq!(
            RotationState::from_annotations(Some(&annotations), t(99)),
            state
        );
        assert!(RotationState::default().annotations().is_empty());

        // An unreadable start time restarts the stage: both tokens stay
        // valid longer, never shorter.
        let mut damaged = annotations.clone();
        damaged.insert(SINCE_ANNOTATION.into(), "yesterday".into());
        let read = RotationState::from_annotations(Some(&damaged), t(99));
        assert_eq!(read.stage, Some((Stage::Switched, t(99))));
        // A stage left on a single-token file (edited by hand) is dropped.
        let step = advance(A, state, &requested(Some("2026-11-30")), t(1000), no_token);
        assert_eq!((step.file.as_str(), step.state.stage), (A, None));
    }

    #[test]
    fn generated_token_creates_reads_and_advances_the_secret() {
        let store: DrasiStateStore = serde_json::from_value(serde_json::json!({
            "apiVersion": "drasi.io/v1alpha1",
            "kind": "DrasiStateStore",
            "metadata": { "name": "s", "namespace": "ns" },
            "spec": { "auth": { "rotation": { "trigger": "r1", "gracePeriodSeconds": 300 } } },
        }))
        .unwrap();
        // No Secret yet: a new token, recorded with the current trigger so
        // that creating a store never starts a rotation.
        let created = generated_token(&store, None, t(0), || A.to_owned());
        assert_eq!(created.source, TokenSource::New(A.to_owned()));
        assert_eq!(created.rotation.trigger.as_deref(), Some("r1"));
        assert_eq!(created.rotation.stage, None);

        // An existing Secret without the annotation: the trigger is new.
        let secret = Secret {
            data: Some(BTreeMap::from([(
                TOKEN_KEY.to_owned(),
                k8s_openapi::ByteString(A.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        let started = generated_token(&store, Some(&secret), t(0), || B.to_owned());
        let TokenSource::Stored(Some(data)) = &started.source else {
            panic!("{:?}", started.source)
        };
        assert_eq!(data[TOKEN_KEY].0, format!("{A}\n{B}").into_bytes());
        assert_eq!(started.transition, Some(Transition::Started));
        assert_eq!(started.due_in, Some(PROPAGATION));

        // The grace period comes from the spec.
        let mut switched = secret.clone();
        switched.data = Some(BTreeMap::from([(
            TOKEN_KEY.to_owned(),
            k8s_openapi::ByteString(format!("{B}\n{A}").into_bytes()),
        )]));
        switched.metadata.annotations = Some(
            RotationState {
                trigger: Some("r1".into()),
                stage: Some((Stage::Switched, t(0))),
            }
            .annotations(),
        );
        let waiting = generated_token(&store, Some(&switched), t(100), no_token);
        assert_eq!(waiting.due_in, Some(Duration::from_secs(200)));
        let done = generated_token(&store, Some(&switched), t(300), no_token);
        let TokenSource::Stored(Some(data)) = &done.source else {
            panic!("{:?}", done.source)
        };
        assert_eq!(data[TOKEN_KEY].0, B.as_bytes());
        assert_eq!(done.transition, Some(Transition::Finished));

        // A Secret that lost its token is passed through for `validate`.
        let lost = Secret::default();
        let passed = generated_token(&store, Some(&lost), t(0), no_token);
        assert_eq!(passed.source, TokenSource::Stored(Some(SecretData::new())));
        assert_eq!(passed.transition, None);
    }
}
