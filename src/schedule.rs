//! Schedules: crontab lines read exactly as crontab means them, in a time zone.
//!
//! A five-field line (`30 6 * * 1-5`) gets a seconds field, and day-of-week numbers are
//! translated from crontab's (0 or 7 = Sunday, 1 = Monday) to the cron crate's (1 = Sunday);
//! a six-field line has seconds first. Fire times are computed on the local wall clock: a time
//! inside a spring-forward gap runs at the next existing minute, and the repeated autumn hour
//! runs once. To support another syntax, translate it in [`CronSchedule::parse`].

use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub source: String,
    /// One schedule, or two when day of month and day of week are both restricted: crontab
    /// then fires when either matches.
    schedules: Vec<cron::Schedule>,
    tz: chrono_tz::Tz,
}

impl CronSchedule {
    /// Parses a 5-field crontab line or a 6-field line with seconds.
    pub fn parse(text: &str, tz: chrono_tz::Tz) -> Result<CronSchedule, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "`{text}` has {n} fields; write minute hour day-of-month month day-of-week \
                     (5 fields, as in crontab), or seconds first (6 fields)"
                ));
            }
        };
        let (minute, hour, dom, month, dow) =
            (rest[0], rest[1], rest[2], rest[3], crontab_days(rest[4])?);
        let restricted = |f: &str| f != "*" && f != "?";
        let lines = if restricted(dom) && restricted(&dow) {
            vec![
                format!("{seconds} {minute} {hour} {dom} {month} *"),
                format!("{seconds} {minute} {hour} * {month} {dow}"),
            ]
        } else {
            vec![format!("{seconds} {minute} {hour} {dom} {month} {dow}")]
        };
        let mut schedules = Vec::new();
        for line in lines {
            let schedule = cron::Schedule::from_str(&line).map_err(|err| {
                let reason = err.to_string();
                let reason = reason.lines().next().unwrap_or_default().to_string();
                format!("`{text}` is not a valid schedule ({reason})")
            })?;
            schedules.push(schedule);
        }
        if schedules.iter().all(|s| s.upcoming(Utc).next().is_none()) {
            return Err(format!("`{text}` never fires"));
        }
        Ok(CronSchedule {
            source: text.to_string(),
            schedules,
            tz,
        })
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedules
            .iter()
            .filter_map(|s| self.next_of(s, after))
            .min()
    }

    fn next_of(&self, schedule: &cron::Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.tz).naive_local();
        // walk the wall clock: the crate sees local times as if they were UTC; a local time
        // repeated in autumn maps to its first instant, which is then in the past and skipped
        let start = Utc.from_utc_datetime(&(local - TimeDelta::seconds(1)));
        for candidate in schedule.after(&start).take(10_000) {
            let Some(instant) = self.instant_of(candidate.naive_utc()) else {
                continue;
            };
            if instant > after {
                return Some(instant);
            }
        }
        None
    }

    /// The last fire time at or before `at`.
    pub fn previous_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        for span in [
            TimeDelta::minutes(2),
            TimeDelta::hours(2),
            TimeDelta::days(2),
            TimeDelta::days(40),
            TimeDelta::days(400),
        ] {
            let mut last = None;
            let mut cursor = at - span;
            for _ in 0..100_000 {
                match self.next_after(cursor) {
                    Some(t) if t <= at => {
                        last = Some(t);
                        cursor = t;
                    }
                    _ => break,
                }
            }
            if last.is_some() {
                return last;
            }
        }
        None
    }

    /// The instant of a local wall-clock time: the first of a repeated one, the next existing
    /// minute for one inside a gap.
    fn instant_of(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        for minutes in 0..=180 {
            let shifted = local + TimeDelta::minutes(minutes);
            match self.tz.from_local_datetime(&shifted) {
                LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
                LocalResult::Ambiguous(first, _) => return Some(first.with_timezone(&Utc)),
                LocalResult::None => continue,
            }
        }
        None
    }
}

/// Day-of-week numbers from crontab's meaning (0-7, 0 and 7 Sunday) to the cron crate's (1-7,
/// 1 Sunday). Names (`MON-FRI`) mean the same in both and are left alone.
fn crontab_days(field: &str) -> Result<String, String> {
    let map = |n: &str| -> Result<String, String> {
        match n.parse::<u32>() {
            Ok(d) if d <= 7 => Ok(((d % 7) + 1).to_string()),
            Ok(d) => Err(format!("day of week {d} is out of range 0-7")),
            Err(_) => Ok(n.to_string()),
        }
    };
    let mut out = Vec::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let mapped = match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (map(a)?, map(b)?);
                // crontab's 5-7 (Friday to Sunday) becomes 6-1: split it around the week's end
                match (a.parse::<u32>(), b.parse::<u32>()) {
                    (Ok(x), Ok(y)) if x > y => format!("{x}-7,1-{y}"),
                    _ => format!("{a}-{b}"),
                }
            }
            None => map(range)?,
        };
        out.push(match step {
            Some(s) => format!("{mapped}/{s}"),
            None => mapped,
        });
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn tz(name: &str) -> chrono_tz::Tz {
        name.parse().unwrap()
    }

    #[test]
    fn crontab_weekdays_mean_monday_to_friday() {
        let s = CronSchedule::parse("30 6 * * 1-5", tz("UTC")).unwrap();

        // 2026-12-04 is a Friday: next runs are Fri 06:30, then Mon 06:30
        let fri = s.next_after(utc("2026-12-04T00:00:00Z")).unwrap();
        let mon = s.next_after(fri).unwrap();

        assert_eq!(fri, utc("2026-12-04T06:30:00Z"));
        assert_eq!(mon, utc("2026-12-07T06:30:00Z"));
    }

    #[test]
    fn sunday_is_zero_and_seven() {
        for line in ["0 9 * * 0", "0 9 * * 7", "0 9 * * SUN"] {
            let s = CronSchedule::parse(line, tz("UTC")).unwrap();

            assert_eq!(
                s.next_after(utc("2026-12-04T00:00:00Z")),
                Some(utc("2026-12-06T09:00:00Z")),
                "{line}"
            );
        }
        let weekend = CronSchedule::parse("0 9 * * 5-7", tz("UTC")).unwrap();
        let fri = weekend.next_after(utc("2026-12-03T12:00:00Z")).unwrap();
        let sat = weekend.next_after(fri).unwrap();
        let sun = weekend.next_after(sat).unwrap();
        assert_eq!(
            (fri, sun),
            (utc("2026-12-04T09:00:00Z"), utc("2026-12-06T09:00:00Z"))
        );
    }

    #[test]
    fn a_time_in_the_spring_gap_runs_at_the_next_existing_minute() {
        // Berlin skips 02:00-03:00 on 2024-03-31; 02:30 runs at 03:00 CEST = 01:00 UTC
        let s = CronSchedule::parse("30 2 * * *", tz("Europe/Berlin")).unwrap();

        let next = s.next_after(utc("2024-03-30T12:00:00Z")).unwrap();

        assert_eq!(next, utc("2024-03-31T01:00:00Z"));
        assert_eq!(s.next_after(next), Some(utc("2024-04-01T00:30:00Z")));
    }

    #[test]
    fn the_repeated_autumn_hour_runs_once() {
        // Berlin repeats 02:00-03:00 on 2024-10-27: 02:30 runs once, at 00:30 UTC (CEST)
        let s = CronSchedule::parse("30 2 * * *", tz("Europe/Berlin")).unwrap();

        let first = s.next_after(utc("2024-10-26T12:00:00Z")).unwrap();
        let second = s.next_after(first).unwrap();

        assert_eq!(first, utc("2024-10-27T00:30:00Z"));
        assert_eq!(second, utc("2024-10-28T01:30:00Z"));
    }

    #[test]
    fn day_of_month_or_day_of_week_as_in_crontab() {
        // the 4th or any Monday: from Friday 2026-12-04 10:00, Monday the 7th comes first
        let s = CronSchedule::parse("0 9 4 * 1", tz("UTC")).unwrap();

        let first = s.next_after(utc("2026-12-03T10:00:00Z")).unwrap();
        let second = s.next_after(first).unwrap();

        assert_eq!(first, utc("2026-12-04T09:00:00Z"));
        assert_eq!(second, utc("2026-12-07T09:00:00Z"));
    }

    #[test]
    fn the_previous_tick() {
        let s = CronSchedule::parse("0 3 * * *", tz("UTC")).unwrap();

        assert_eq!(
            s.previous_at_or_before(utc("2026-12-04T10:00:00Z")),
            Some(utc("2026-12-04T03:00:00Z"))
        );
        assert_eq!(
            s.previous_at_or_before(utc("2026-12-04T03:00:00Z")),
            Some(utc("2026-12-04T03:00:00Z"))
        );
        assert_eq!(
            s.previous_at_or_before(utc("2026-12-04T02:59:59Z")),
            Some(utc("2026-12-03T03:00:00Z"))
        );
    }

    #[test]
    fn seconds_and_bad_lines() {
        let s = CronSchedule::parse("*/2 * * * * *", tz("UTC")).unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-01-01T00:00:02Z"))
        );
        assert!(CronSchedule::parse("* * *", tz("UTC")).is_err());
        assert!(CronSchedule::parse("61 * * * *", tz("UTC")).is_err());
        assert!(CronSchedule::parse("0 9 * * 8", tz("UTC")).is_err());
    }
}
