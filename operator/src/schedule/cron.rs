//! The schedule of a `DrasiStateStoreScheduledBackup`: a standard 5-field
//! cron expression evaluated in a time zone (UTC by default), the slot that
//! is due, and the name of the backup taken for a slot. Pure: the clock is
//! a parameter.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Characters a slot adds to the schedule's name: `-yyyymmddhhmm`.
pub const SLOT_SUFFIX_LEN: usize = 13;

// The longest schedule name the CRD admits still gives backup names within
// 63 characters (a backup's name is its Job's).
const _: () = assert!(crate::crd::MAX_SCHEDULE_NAME + SLOT_SUFFIX_LEN <= 63);

/// A parsed, valid schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: TimeZone,
}

/// Why `spec.schedule` cannot be used; the message names the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSchedule {
    #[error("spec.schedule {expression:?} is not a valid 5-field cron expression: {reason}")]
    Invalid { expression: String, reason: String },
    #[error("spec.schedule {expression:?} never fires (e.g. February 30th)")]
    NeverFires { expression: String },
    #[error(
        "spec.timeZone {zone:?} is not a time zone the operator knows ({reason}); use an IANA \
         name such as Europe/Berlin, or leave it unset for UTC"
    )]
    UnknownTimeZone { zone: String, reason: String },
}

impl Schedule {
    /// Parses a standard 5-field expression (minute, hour, day of month,
    /// month, day of week) or an `@hourly`/`@daily`/`@weekly`/`@monthly`/
    /// `@yearly` macro. Seconds and years fields are refused: the schedule
    /// has minute resolution, which is what slot names encode. An
    /// expression that parses but matches no instant (February 30th) is
    /// refused too, so a valid schedule always has a next slot. `zone` is
    /// an IANA time zone name (from the system's zoneinfo); UTC when `None`.
    pub fn parse(
        expression: &str,
        zone: Option<&str>,
        now: Timestamp,
    ) -> Result<Self, InvalidSchedule> {
        let invalid = |reason: String| InvalidSchedule::Invalid {
            expression: expression.to_owned(),
            reason,
        };
        if expression.trim_start().starts_with('@') {
            // croner passes unknown macros through as an expression; name
            // the accepted ones instead of a confusing field-count error.
            let known = [
                "@yearly",
                "@annually",
                "@monthly",
                "@weekly",
                "@daily",
                "@hourly",
            ];
            if !known
                .iter()
                .any(|k| k.eq_ignore_ascii_case(expression.trim()))
            {
                return Err(invalid(format!(
                    "unknown macro; use one of {}",
                    known.join(", ")
                )));
            }
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| invalid(e.to_string()))?;
        let zone = match zone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|e| InvalidSchedule::UnknownTimeZone {
                zone: name.to_owned(),
                reason: e.to_string(),
            })?,
        };
        let schedule = Self { cron, zone };
        if schedule.next_after(now).is_none() {
            return Err(InvalidSchedule::NeverFires {
                expression: expression.to_owned(),
            });
        }
        Ok(schedule)
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&t.to_zoned(self.zone.clone()), false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The last slot at or before `t`.
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_previous_occurrence(&t.to_zoned(self.zone.clone()), true)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The slot to take a backup for now: the most recent slot after
    /// `last` (the previous backup's slot, or the schedule's creation) that
    /// is not in the future. Slots missed in between (the operator was
    /// down, the schedule suspended) are skipped: at most one catch-up
    /// backup, for the newest of them.
    pub fn due(&self, last: Timestamp, now: Timestamp) -> Option<Timestamp> {
        self.last_at_or_before(now).filter(|slot| *slot > last)
    }
}

/// The backup taken for `slot`: `<schedule>-<yyyymmddhhmm>` (always UTC,
/// whatever the schedule's time zone: an instant has one name), so the
/// same slot always gives the same name and a repeated reconcile or an
/// operator restart cannot create a second backup for it.
pub fn slot_name(schedule: &str, slot: Timestamp) -> String {
    format!("{schedule}-{}", slot.strftime("%Y%m%d%H%M"))
}

/// `t` truncated to its minute: the slot of an immediate backup.
pub fn minute_of(t: Timestamp) -> Timestamp {
    let seconds = t.as_second();
    Timestamp::from_second(seconds - seconds.rem_euclid(60)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn parse(expression: &str) -> Result<Schedule, InvalidSchedule> {
        Schedule::parse(expression, None, ts("2024-01-01T00:00:00Z"))
    }

    #[test]
    fn next_slot_of_common_schedules() {
        let cases = [
            ("0 2 * * *", "2024-03-10T01:59:59Z", "2024-03-10T02:00:00Z"),
            ("0 2 * * *", "2024-03-10T02:00:00Z", "2024-03-11T02:00:00Z"),
            (
                "*/15 * * * *",
                "2024-03-10T10:07:30Z",
                "2024-03-10T10:15:00Z",
            ),
            ("30 4 1 * *", "2024-01-31T12:00:00Z", "2024-02-01T04:30:00Z"),
            // Sunday, as 0 and as 7; 2024-03-10 is a Sunday.
            ("0 0 * * 0", "2024-03-08T00:00:00Z", "2024-03-10T00:00:00Z"),
            ("0 0 * * 7", "2024-03-08T00:00:00Z", "2024-03-10T00:00:00Z"),
            (
                "0 0 * * MON-FRI",
                "2024-03-09T12:00:00Z",
                "2024-03-11T00:00:00Z",
            ),
            ("0 0 29 2 *", "2024-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            ("@daily", "2024-12-31T23:59:00Z", "2025-01-01T00:00:00Z"),
            ("@hourly", "2024-12-31T23:59:00Z", "2025-01-01T00:00:00Z"),
            ("@weekly", "2024-03-08T00:00:00Z", "2024-03-10T00:00:00Z"),
            ("@monthly", "2024-03-08T00:00:00Z", "2024-04-01T00:00:00Z"),
        ];
        for (expression, after, want) in cases {
            let schedule = parse(expression).unwrap();
            assert_eq!(
                schedule.next_after(ts(after)),
                Some(ts(want)),
                "{expression} after {after}"
            );
        }
    }

    #[test]
    fn day_of_month_and_day_of_week_are_either_or_as_in_standard_cron() {
        // The 13th OR any Friday (2024-09-06 is a Friday).
        let schedule = parse("0 0 13 * 5").unwrap();
        assert_eq!(
            schedule.next_after(ts("2024-09-01T00:00:00Z")),
            Some(ts("2024-09-06T00:00:00Z"))
        );
        assert_eq!(
            schedule.next_after(ts("2024-09-10T00:00:00Z")),
            Some(ts("2024-09-13T00:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_are_refused_with_the_expression_named() {
        for bad in [
            "",
            "* * * *",
            "0 0 * * * *",
            "0 0 0 * * * 2024",
            "60 * * * *",
            "* 24 * * *",
            "* * 32 * *",
            "* * * 13 *",
            "* * * * 8",
            "every day",
            "@reboot",
            "@midnight2",
            "5-1 * * * *",
        ] {
            match parse(bad) {
                Err(InvalidSchedule::Invalid { expression, .. }) => assert_eq!(expression, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let err = parse("0 0 30 2 *").unwrap_err();
        assert_eq!(
            err,
            InvalidSchedule::NeverFires {
                expression: "0 0 30 2 *".into()
            }
        );
        assert!(err.to_string().contains("never fires"));
    }

    #[test]
    fn the_due_slot_is_the_newest_missed_one_only() {
        let hourly = parse("0 * * * *").unwrap();
        let created = ts("2024-01-01T00:10:00Z");
        // Before the first slot: nothing due.
        assert_eq!(hourly.due(created, ts("2024-01-01T00:59:59Z")), None);
        // Exactly at the slot.
        assert_eq!(
            hourly.due(created, ts("2024-01-01T01:00:00Z")),
            Some(ts("2024-01-01T01:00:00Z"))
        );
        // Taken: not due again within the same hour.
        let last = ts("2024-01-01T01:00:00Z");
        assert_eq!(hourly.due(last, ts("2024-01-01T01:59:00Z")), None);
        // Down for five hours: one catch-up, for the newest slot.
        assert_eq!(
            hourly.due(last, ts("2024-01-01T06:30:00Z")),
            Some(ts("2024-01-01T06:00:00Z"))
        );
    }

    #[test]
    fn time_zones_move_the_slots_and_follow_daylight_saving_time() {
        let now = ts("2024-01-01T00:00:00Z");
        let berlin = Schedule::parse("0 2 * * *", Some("Europe/Berlin"), now).unwrap();
        // CET (UTC+1) in winter, CEST (UTC+2) in summer.
        assert_eq!(
            berlin.next_after(ts("2024-01-10T12:00:00Z")),
            Some(ts("2024-01-11T01:00:00Z"))
        );
        assert_eq!(
            berlin.next_after(ts("2024-07-10T12:00:00Z")),
            Some(ts("2024-07-11T00:00:00Z"))
        );
        // 2024-03-31 02:00 does not exist in Berlin: the slot still fires
        // once that day, and the next day is back at 02:00 local.
        let spring = berlin.next_after(ts("2024-03-30T12:00:00Z")).unwrap();
        assert!(
            spring >= ts("2024-03-31T00:00:00Z") && spring <= ts("2024-03-31T02:00:00Z"),
            "{spring}"
        );
        assert_eq!(berlin.next_after(spring), Some(ts("2024-04-01T00:00:00Z")));
        // 2024-10-27 02:30 happens twice in Berlin: one backup, not two.
        let autumn = Schedule::parse("30 2 * * *", Some("Europe/Berlin"), now).unwrap();
        let first = autumn.next_after(ts("2024-10-26T12:00:00Z")).unwrap();
        assert!(
            first == ts("2024-10-27T00:30:00Z") || first == ts("2024-10-27T01:30:00Z"),
            "{first}"
        );
        assert_eq!(autumn.next_after(first), Some(ts("2024-10-28T01:30:00Z")));
        let utc = Schedule::parse("0 2 * * *", Some("UTC"), now).unwrap();
        assert_eq!(
            utc.next_after(ts("2024-07-10T12:00:00Z")),
            Some(ts("2024-07-11T02:00:00Z"))
        );
        for bad in ["Mars/Olympus_Mons", "Europe/Berlinn", "../../etc/passwd"] {
            match Schedule::parse("0 2 * * *", Some(bad), now) {
                Err(InvalidSchedule::UnknownTimeZone { zone, .. }) => assert_eq!(zone, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn slot_names_are_deterministic_minutes_in_utc() {
        assert_eq!(
            slot_name("nightly", ts("2024-03-10T02:00:00Z")),
            "nightly-202403100200"
        );
        assert_eq!(
            slot_name("nightly", ts("2024-12-31T23:59:59.9Z")),
            "nightly-202412312359"
        );
        let name = slot_name(&"s".repeat(50), ts("2024-03-10T02:00:00Z"));
        assert_eq!(name.len(), 50 + SLOT_SUFFIX_LEN);
        assert!(name.len() <= 63);
        assert_eq!(
            minute_of(ts("2024-03-10T02:07:59.5Z")),
            ts("2024-03-10T02:07:00Z")
        );
    }
}
