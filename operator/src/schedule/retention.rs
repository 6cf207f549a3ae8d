//! Which backups of a schedule retention deletes. Pure: the backups and the
//! clock go in, the names to delete come out.
//!
//! - Only finished backups (`Completed` or `Failed`) are candidates and
//!   count; `Pending`, `Running` and not yet started backups are never
//!   deleted, nor are backups already being deleted counted.
//! - `keepLast: N` keeps the N newest finished backups.
//! - `maxAge` deletes finished backups created longer ago than that.
//! - The newest `Completed` backup is always kept, whatever the limits
//!   say: retention never leaves a schedule without a restorable backup.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::BackupPhase;

/// One backup of the schedule, reduced to what retention looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub created: Timestamp,
    pub phase: Option<BackupPhase>,
    /// Already has a deletionTimestamp.
    pub deleting: bool,
}

/// `spec.keepLast` and `spec.maxAge`; neither set keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: Option<usize>,
    pub max_age: Option<Duration>,
}

/// Parses `spec.maxAge`: one or more `<number><unit>`, unit `m` (minutes),
/// `h`, `d` (24 h) or `w` (7 d); e.g. `30d`, `12h`, `1w3d`. Zero is refused:
/// it would delete every backup but the newest Completed one on sight.
pub fn parse_max_age(raw: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("spec.maxAge {raw:?} {why}; use e.g. 30d, 12h or 1w3d");
    if raw.is_empty() {
        return Err(bad("is empty"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in raw.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            'm' => 60,
            'h' => 60 * 60,
            'd' => 24 * 60 * 60,
            'w' => 7 * 24 * 60 * 60,
            _ => return Err(bad(&format!("has the unknown unit {c:?}"))),
        };
        if digits.is_empty() {
            return Err(bad("has a unit without a number"));
        }
        let n: u64 = digits.parse().map_err(|_| bad("is too large"))?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| bad("is too large"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad("ends with a number without a unit"));
    }
    // Far beyond any sensible retention, and keeps `now - maxAge` in range.
    if total > 100 * 365 * 24 * 60 * 60 {
        return Err(bad("is longer than 100 years"));
    }
    if total == 0 {
        return Err(bad("is zero"));
    }
    Ok(Duration::from_secs(total))
}

/// The names of the backups to delete now, oldest first.
pub fn select(backups: &[Candidate], retention: &Retention, now: Timestamp) -> Vec<String> {
    let mut finished: Vec<&Candidate> = backups
        .iter()
        .filter(|b| !b.deleting && b.phase.is_some_and(BackupPhase::is_finished))
        .collect();
    // Newest first; names break ties (slot names sort by time).
    finished.sort_by(|a, b| b.created.cmp(&a.created).then(b.name.cmp(&a.name)));
    let newest_completed = finished
        .iter()
        .find(|b| b.phase == Some(BackupPhase::Completed))
        .map(|b| b.name.clone());
    let cutoff = retention.max_age.map(|age| {
        let age = SignedDuration::try_from(age).unwrap_or(SignedDuration::MAX);
        now.checked_sub(age).unwrap_or(Timestamp::MIN)
    });
    let mut doomed: Vec<String> = finished
        .iter()
        .enumerate()
        .filter(|(index, backup)| {
            let beyond_count = retention.keep_last.is_some_and(|keep| *index >= keep);
            let too_old = cutoff.is_some_and(|cutoff| backup.created < cutoff);
            (beyond_count || too_old) && Some(&backup.name) != newest_completed.as_ref()
        })
        .map(|(_, backup)| backup.name.clone())
        .collect();
    doomed.reverse();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackupPhase::*;

    const NOW: &str = "2024-06-30T00:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    /// A backup created `days_ago` days before [`NOW`].
    fn backup(name: &str, days_ago: i64, phase: Option<BackupPhase>) -> Candidate {
        Candidate {
            name: name.into(),
            created: now() - SignedDuration::from_hours(24 * days_ago),
            phase,
            deleting: false,
        }
    }

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * 24 * 3600)
    }

    fn keep(n: usize) -> Retention {
        Retention {
            keep_last: Some(n),
            max_age: None,
        }
    }

    fn age(d: Duration) -> Retention {
        Retention {
            keep_last: None,
            max_age: Some(d),
        }
    }

    /// Five Completed backups, b0 (today) .. b4 (4 days ago), shuffled.
    fn five_completed() -> Vec<Candidate> {
        vec![
            backup("b2", 2, Some(Completed)),
            backup("b0", 0, Some(Completed)),
            backup("b4", 4, Some(Completed)),
            backup("b1", 1, Some(Completed)),
            backup("b3", 3, Some(Completed)),
        ]
    }

    #[test]
    fn without_limits_nothing_is_deleted() {
        assert!(select(&five_completed(), &Retention::default(), now()).is_empty());
    }

    #[test]
    fn keep_last_only() {
        assert_eq!(
            select(&five_completed(), &keep(2), now()),
            ["b4", "b3", "b2"]
        );
        assert_eq!(
            select(&five_completed(), &keep(1), now()),
            ["b4", "b3", "b2", "b1"]
        );
        assert!(select(&five_completed(), &keep(5), now()).is_empty());
        assert!(select(&five_completed(), &keep(50), now()).is_empty());
    }

    #[test]
    fn max_age_only() {
        // Strictly older than 2 days: b3 and b4; b2 is exactly 2 days old.
        assert_eq!(
            select(&five_completed(), &age(days(2)), now()),
            ["b4", "b3"]
        );
        assert!(select(&five_completed(), &age(days(30)), now()).is_empty());
    }

    #[test]
    fn both_limits_delete_what_either_one_deletes() {
        let both = Retention {
            keep_last: Some(4),
            max_age: Some(days(2)),
        };
        assert_eq!(select(&five_completed(), &both, now()), ["b4", "b3"]);
        let both = Retention {
            keep_last: Some(2),
            max_age: Some(days(30)),
        };
        assert_eq!(select(&five_completed(), &both, now()), ["b4", "b3", "b2"]);
    }

    #[test]
    fn the_newest_completed_backup_is_kept_even_when_expired() {
        let old = vec![
            backup("old-1", 40, Some(Completed)),
            backup("old-2", 50, Some(Completed)),
            backup("failed", 1, Some(Failed)),
            backup("failed-old", 45, Some(Failed)),
        ];
        let both = Retention {
            keep_last: Some(1),
            max_age: Some(days(30)),
        };
        // keepLast 1 keeps only "failed" by count, but old-1 is the newest
        // Completed one: it stays even though it is beyond both limits.
        assert_eq!(select(&old, &both, now()), ["old-2", "failed-old"]);
        assert_eq!(select(&old, &age(days(30)), now()), ["old-2", "failed-old"]);
    }

    #[test]
    fn failed_backups_count_and_expire_like_completed_ones() {
        let backups = vec![
            backup("f0", 0, Some(Failed)),
            backup("f1", 1, Some(Failed)),
            backup("c2", 2, Some(Completed)),
            backup("c3", 3, Some(Completed)),
            backup("f4", 4, Some(Failed)),
        ];
        // The two newest are failures; c2 survives as the newest Completed.
        assert_eq!(select(&backups, &keep(2), now()), ["f4", "c3"]);
        assert_eq!(select(&backups, &age(days(1)), now()), ["f4", "c3"]);
        // Only failures: no Completed backup to protect.
        let failures = vec![backup("f0", 0, Some(Failed)), backup("f1", 1, Some(Failed))];
        assert_eq!(select(&failures, &keep(1), now()), ["f1"]);
    }

    #[test]
    fn running_pending_and_unstarted_backups_are_never_deleted_nor_counted() {
        let backups = vec![
            backup("running", 10, Some(Running)),
            backup("pending", 9, Some(Pending)),
            backup("new", 8, None),
            backup("c0", 0, Some(Completed)),
            backup("c1", 1, Some(Completed)),
        ];
        assert_eq!(select(&backups, &keep(1), now()), ["c1"]);
        assert_eq!(select(&backups, &age(days(1)), now()), Vec::<String>::new());
        assert_eq!(
            select(
                &backups,
                &Retention {
                    keep_last: Some(1),
                    max_age: Some(days(0) + Duration::from_secs(60))
                },
                now()
            ),
            ["c1"]
        );
    }

    #[test]
    fn backups_already_being_deleted_are_neither_selected_nor_counted() {
        let mut backups = five_completed();
        for b in &mut backups {
            if b.name == "b0" || b.name == "b1" {
                b.deleting = true;
            }
        }
        // b2 is now the newest Completed (kept), b3 the second.
        assert_eq!(select(&backups, &keep(2), now()), ["b4"]);
    }

    #[test]
    fn ties_on_creation_time_are_broken_by_name() {
        let backups = vec![
            backup("s-202406300000", 0, Some(Completed)),
            backup("s-202406300001", 0, Some(Completed)),
        ];
        assert_eq!(select(&backups, &keep(1), now()), ["s-202406300000"]);
    }

    #[test]
    fn max_age_syntax() {
        assert_eq!(parse_max_age("30d"), Ok(days(30)));
        assert_eq!(parse_max_age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_max_age("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse_max_age("1w3d"), Ok(days(10)));
        assert_eq!(parse_max_age("1d12h"), Ok(Duration::from_secs(36 * 3600)));
        for bad in [
            "",
            "30",
            "d",
            "30s",
            "1.5d",
            "-1d",
            "0d",
            "0h0m",
            "1d 2h",
            "99999999999999999999d",
            "36501w",
        ] {
            let err = parse_max_age(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
