//! Five-field cron schedules (`spec.backup.schedule`), evaluated in UTC.
//!
//! `minute hour day-of-month month day-of-week`, each field `*`, a number, a range `a-b`, a
//! step `*/n` or `a-b/n`, or a comma-separated list of those; day-of-week 0 to 7 (0 and 7
//! are Sunday). As in Vixie cron, when both day fields are restricted a day matches either.
//! Names (`MON`, `JAN`) and the `@daily` macros are not accepted: the CRD's pattern admits
//! five fields, and a parse error is reported in the cluster's status.
//!
//! Evaluation is a pure function of the schedule, the last time handled and the time now
//! ([`Schedule::latest_due`]), so tests drive it with any clock. A run missed while the
//! operator was down is made up once (the latest missed time), never once per miss.

use k8s_openapi::jiff::civil::{Date, DateTime, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, ToSpan};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: Vec<u8>,
    hours: Vec<u8>,
    days: Vec<u8>,
    months: Vec<u8>,
    weekdays: Vec<u8>,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// How far [`Schedule::next_after`] looks: past it, a schedule that names a day that never
/// comes (`0 0 30 2 *`) has no next time.
const HORIZON_DAYS: i64 = 366 * 8;

fn field(text: &str, name: &str, min: u8, max: u8) -> Result<(Vec<u8>, bool), String> {
    let mut values = Vec::new();
    let bad = |why: &str| format!("{name} field {text:?}: {why}");
    let number = |s: &str| -> Result<u8, String> {
        let n: u8 = s
            .parse()
            .map_err(|_| bad(&format!("{s:?} is not a number")))?;
        if n < min || n > max {
            return Err(bad(&format!("{n} is outside {min}-{max}")));
        }
        Ok(n)
    };
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u8 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad(&format!("step {step:?} must be a positive number")))?;
                (range, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = match range {
            "*" => (min, max),
            _ => match range.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None if step > 1 => (number(range)?, max),
                None => {
                    let n = number(range)?;
                    (n, n)
                }
            },
        };
        if lo > hi {
            return Err(bad(&format!("range {lo}-{hi} is empty")));
        }
        values.extend((lo..=hi).step_by(usize::from(step)));
    }
    values.sort_unstable();
    values.dedup();
    Ok((values, text != "*"))
}

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "schedule {text:?} has {} fields: it needs five (minute hour day-of-month month day-of-week)",
                fields.len()
            ));
        };
        let (minutes, _) = field(minute, "minute", 0, 59)?;
        let (hours, _) = field(hour, "hour", 0, 23)?;
        let (days, days_restricted) = field(day, "day-of-month", 1, 31)?;
        let (months, _) = field(month, "month", 1, 12)?;
        let (mut weekdays, weekdays_restricted) = field(weekday, "day-of-week", 0, 7)?;
        if weekdays.contains(&7) {
            weekdays.retain(|d| *d != 7);
            if !weekdays.contains(&0) {
                weekdays.insert(0, 0);
            }
        }
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_restricted,
            weekdays_restricted,
        })
    }
}

impl Schedule {
    fn day_matches(&self, date: Date) -> bool {
        let Ok(month) = u8::try_from(date.month()) else {
            return false;
        };
        let Ok(day) = u8::try_from(date.day()) else {
            return false;
        };
        let Ok(weekday) = u8::try_from(date.weekday().to_sunday_zero_offset()) else {
            return false;
        };
        if !self.months.contains(&month) {
            return false;
        }
        let by_day = self.days.contains(&day);
        let by_weekday = self.weekdays.contains(&weekday);
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => by_day || by_weekday,
            (true, false) => by_day,
            (false, true) => by_weekday,
            (false, false) => true,
        }
    }

    /// The first scheduled time strictly after `after` (`None`: none within eight years).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let start = after.to_zoned(TimeZone::UTC).datetime();
        let mut date = start.date();
        for _ in 0..HORIZON_DAYS {
            if self.day_matches(date) {
                for &hour in &self.hours {
                    for &minute in &self.minutes {
                        let time =
                            Time::new(i8::try_from(hour).ok()?, i8::try_from(minute).ok()?, 0, 0)
                                .ok()?;
                        let at = DateTime::from_parts(date, time);
                        if at > start {
                            return at.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp());
                        }
                    }
                }
            }
            date = date.checked_add(1.day()).ok()?;
        }
        None
    }

    /// The latest scheduled time in `(since, now]`: the run due now, if any. Runs missed
    /// before it are not made up one by one.
    pub fn latest_due(&self, since: Timestamp, now: Timestamp) -> Option<Timestamp> {
        self.previous_at_most(now, since)
    }

    /// The latest scheduled time `<= now` and `> since`, found day by day backwards.
    fn previous_at_most(&self, now: Timestamp, since: Timestamp) -> Option<Timestamp> {
        let end = now.to_zoned(TimeZone::UTC).datetime();
        let mut date = end.date();
        for _ in 0..HORIZON_DAYS {
            if self.day_matches(date) {
                for &hour in self.hours.iter().rev() {
                    for &minute in self.minutes.iter().rev() {
                        let time =
                            Time::new(i8::try_from(hour).ok()?, i8::try_from(minute).ok()?, 0, 0)
                                .ok()?;
                        let at = DateTime::from_parts(date, time);
                        if at <= end {
                            let ts = at.to_zoned(TimeZone::UTC).ok()?.timestamp();
                            return (ts > since).then_some(ts);
                        }
                    }
                }
            }
            date = date.checked_sub(1.day()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn s(text: &str) -> Schedule {
        text.parse().unwrap()
    }

    #[test]
    fn fields_parse_lists_ranges_and_steps() {
        let daily = s("0 3 * * *");
        assert_eq!(
            (daily.minutes.clone(), daily.hours.clone()),
            (vec![0], vec![3])
        );
        let every = s("*/15 0-6/2 1,15 * 1-5");
        assert_eq!(every.minutes, [0, 15, 30, 45]);
        assert_eq!(every.hours, [0, 2, 4, 6]);
        assert_eq!(every.days, [1, 15]);
        assert_eq!(every.weekdays, [1, 2, 3, 4, 5]);
        assert_eq!(s("0 0 * * 7").weekdays, [0]);
        assert_eq!(s("5/20 * * * *").minutes, [5, 25, 45]);
        for bad in [
            "0 3 * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "5-1 * * * *",
            "MON * * * *",
            "0 3 * * * *",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
        let error = "0 3 * *".parse::<Schedule>().unwrap_err();
        assert!(error.contains("five"), "{error}");
    }

    #[test]
    fn next_after_walks_a_fake_clock() {
        let daily = s("0 3 * * *");
        assert_eq!(
            daily.next_after(at("2026-12-01T02:59:59Z")),
            Some(at("2026-12-01T03:00:00Z"))
        );
        // Strictly after: the run at 03:00 is not due again at 03:00.
        assert_eq!(
            daily.next_after(at("2026-12-01T03:00:00Z")),
            Some(at("2026-12-02T03:00:00Z"))
        );
        // Month and year ends.
        assert_eq!(
            daily.next_after(at("2026-12-31T04:00:00Z")),
            Some(at("2027-01-01T03:00:00Z"))
        );
        // Leap day.
        assert_eq!(
            s("30 12 29 2 *").next_after(at("2026-03-01T00:00:00Z")),
            Some(at("2028-02-29T12:30:00Z"))
        );
        // Day of month or day of week (both restricted): the 13th, or any Friday.
        let either = s("0 0 13 * 5");
        assert_eq!(
            either.next_after(at("2026-12-01T00:00:00Z")),
            Some(at("2026-12-04T00:00:00Z")),
            "Friday the 4th"
        );
        assert_eq!(
            either.next_after(at("2026-12-11T00:00:00Z")),
            Some(at("2026-12-13T00:00:00Z")),
            "Sunday the 13th"
        );
        // A day that never comes.
        assert_eq!(s("0 0 30 2 *").next_after(at("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn latest_due_makes_up_a_missed_run_once() {
        let hourly = s("0 * * * *");
        let since = at("2026-12-01T10:00:00Z");
        assert_eq!(hourly.latest_due(since, at("2026-12-01T10:59:00Z")), None);
        assert_eq!(
            hourly.latest_due(since, at("2026-12-01T11:00:00Z")),
            Some(at("2026-12-01T11:00:00Z"))
        );
        // Down for three hours: one run, the latest.
        assert_eq!(
            hourly.latest_due(since, at("2026-12-01T13:30:00Z")),
            Some(at("2026-12-01T13:00:00Z"))
        );
        // A long gap gives the latest run too.
        let minutely = s("* * * * *");
        assert_eq!(
            minutely.latest_due(at("2026-01-01T00:00:00Z"), at("2026-12-01T13:30:30Z")),
            Some(at("2026-12-01T13:30:00Z"))
        );
    }
}
