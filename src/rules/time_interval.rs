//! Time windows in Alertmanager's own syntax (`time_intervals`).
//!
//! Operators already describe "business hours" and "the weekend" for Alertmanager; the
//! same YAML names when a rule may act (`active_time_intervals`) and when it must not
//! (`mute_time_intervals`), and policy sees each named interval as
//! `input.time_intervals.<name>.active`. The semantics are Alertmanager's: a named
//! interval is active when any of its intervals matches; an interval matches when every
//! field it gives matches (a field left out matches always); `times` are `HH:MM` with the
//! end excluded (`24:00` allowed as an end); weekday, day-of-month (negative counts from
//! the month's end), month and year ranges include both ends; all are read in the
//! interval's `location` (IANA name, `Local`, default UTC).

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use serde::Deserialize;

/// A named set of intervals, as under Alertmanager's `time_intervals:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeInterval {
    pub name: String,
    pub time_intervals: Vec<Interval>,
}

impl TimeInterval {
    /// Whether any of its intervals matches `at`.
    pub fn active(&self, at: DateTime<Utc>) -> bool {
        self.time_intervals.iter().any(|i| i.matches(at))
    }
}

/// One interval: every field it gives must match.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawInterval")]
pub struct Interval {
    /// Minutes of the day, `[start, end)`.
    times: Vec<(u32, u32)>,
    /// 0 = Sunday, inclusive ranges.
    weekdays: Vec<(u32, u32)>,
    /// Inclusive; negative counts from the month's end (-1 is its last day).
    days_of_month: Vec<(i32, i32)>,
    /// 1 = January, inclusive.
    months: Vec<(u32, u32)>,
    years: Vec<(i32, i32)>,
    location: Location,
}

#[derive(Debug, Clone, PartialEq)]
enum Location {
    Utc,
    Local,
    Zone(chrono_tz::Tz),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterval {
    #[serde(default)]
    times: Vec<RawTimes>,
    #[serde(default)]
    weekdays: Vec<String>,
    #[serde(default)]
    days_of_month: Vec<String>,
    #[serde(default)]
    months: Vec<String>,
    #[serde(default)]
    years: Vec<String>,
    #[serde(default)]
    location: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimes {
    start_time: String,
    end_time: String,
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn minutes(text: &str, end: bool) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a time of day HH:MM");
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h == 24 && m == 0 && end {
        return Ok(24 * 60);
    }
    if h > 23 || m > 59 || h.to_string().len() > 2 || m.to_string().len() > 2 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// `a:b` or `a`, each side read by `one`.
fn range<T: Copy + PartialOrd>(
    text: &str,
    what: &str,
    one: impl Fn(&str) -> Option<T>,
) -> Result<(T, T), String> {
    let bad = || format!("{text:?} is not a {what} or a range of them (a:b)");
    let (a, b) = match text.split_once(':') {
        Some((a, b)) => (
            one(a.trim()).ok_or_else(bad)?,
            one(b.trim()).ok_or_else(bad)?,
        ),
        None => {
            let v = one(text.trim()).ok_or_else(bad)?;
            (v, v)
        }
    };
    Ok((a, b))
}

fn named(names: &[&str], text: &str, first: u32) -> Option<u32> {
    let lower = text.to_ascii_lowercase();
    names
        .iter()
        .position(|n| *n == lower)
        .map(|i| i as u32 + first)
}

impl TryFrom<RawInterval> for Interval {
    type Error = String;

    fn try_from(raw: RawInterval) -> Result<Interval, String> {
        let times = raw
            .times
            .iter()
            .map(|t| {
                let (start, end) = (minutes(&t.start_time, false)?, minutes(&t.end_time, true)?);
                if start >= end {
                    return Err(format!(
                        "start_time {:?} must be before end_time {:?}",
                        t.start_time, t.end_time
                    ));
                }
                Ok((start, end))
            })
            .collect::<Result<_, String>>()?;
        let ordered = |(a, b): (u32, u32), text: &str| {
            if a <= b {
                Ok((a, b))
            } else {
                Err(format!("range {text:?} ends before it starts"))
            }
        };
        let weekdays = raw
            .weekdays
            .iter()
            .map(|w| ordered(range(w, "weekday", |s| named(&WEEKDAYS, s, 0))?, w))
            .collect::<Result<_, String>>()?;
        let months = raw
            .months
            .iter()
            .map(|m| {
                let month = |s: &str| {
                    named(&MONTHS, s, 1).or_else(|| s.parse().ok().filter(|n| (1..=12).contains(n)))
                };
                ordered(range(m, "month", month)?, m)
            })
            .collect::<Result<_, String>>()?;
        let days_of_month = raw
            .days_of_month
            .iter()
            .map(|d| {
                let day = |s: &str| {
                    s.parse::<i32>()
                        .ok()
                        .filter(|n| *n != 0 && (-31..=31).contains(n))
                };
                let (a, b) = range(d, "day of the month (1 to 31, or -1 to -31)", day)?;
                if (a > 0) == (b > 0) && a > b {
                    return Err(format!("range {d:?} ends before it starts"));
                }
                if a < 0 && b > 0 {
                    return Err(format!(
                        "range {d:?} starts from the month's end and ends from its start"
                    ));
                }
                Ok((a, b))
            })
            .collect::<Result<_, String>>()?;
        let years = raw
            .years
            .iter()
            .map(|y| {
                let (a, b) = range(y, "year", |s| s.parse::<i32>().ok().filter(|n| *n > 0))?;
                if a > b {
                    return Err(format!("range {y:?} ends before it starts"));
                }
                Ok((a, b))
            })
            .collect::<Result<_, String>>()?;
        let location = match raw.location.as_deref().map(str::trim) {
            None | Some("UTC") | Some("") => Location::Utc,
            Some("Local") => Location::Local,
            Some(name) => Location::Zone(
                name.parse()
                    .map_err(|_| format!("location {name:?} is not an IANA time zone"))?,
            ),
        };
        Ok(Interval {
            times,
            weekdays,
            days_of_month,
            months,
            years,
            location,
        })
    }
}

/// The local calendar facts an interval looks at.
struct Local {
    minute: u32,
    weekday: u32,
    day: u32,
    days_in_month: u32,
    month: u32,
    year: i32,
}

fn local<Tz: TimeZone>(at: DateTime<Tz>) -> Local {
    let date = at.date_naive();
    let next_month = if date.month() == 12 {
        chrono::NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)
    } else {
        chrono::NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    };
    let days_in_month = next_month
        .and_then(|n| n.pred_opt())
        .map_or(31, |last| last.day());
    Local {
        minute: at.hour() * 60 + at.minute(),
        weekday: at.weekday().num_days_from_sunday(),
        day: date.day(),
        days_in_month,
        month: date.month(),
        year: date.year(),
    }
}

impl Interval {
    /// Whether `at` (read in the interval's location) falls inside it.
    pub fn matches(&self, at: DateTime<Utc>) -> bool {
        let l = match &self.location {
            Location::Utc => local(at),
            Location::Local => local(at.with_timezone(&chrono::Local)),
            Location::Zone(tz) => local(at.with_timezone(tz)),
        };
        let within = |ranges: &[(u32, u32)], v: u32| {
            ranges.is_empty() || ranges.iter().any(|(a, b)| (*a..=*b).contains(&v))
        };
        let day = |d: i32| {
            if d > 0 {
                d
            } else {
                l.days_in_month as i32 + 1 + d
            }
        };
        (self.times.is_empty() || self.times.iter().any(|(a, b)| (*a..*b).contains(&l.minute)))
            && within(&self.weekdays, l.weekday)
            && within(&self.months, l.month)
            && (self.days_of_month.is_empty()
                || self
                    .days_of_month
                    .iter()
                    .any(|(a, b)| (day(*a)..=day(*b)).contains(&(l.day as i32))))
            && (self.years.is_empty()
                || self.years.iter().any(|(a, b)| (*a..=*b).contains(&l.year)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(yaml: &str) -> TimeInterval {
        serde_norway::from_str(yaml).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn business_hours_in_a_time_zone_as_alertmanager_reads_them() {
        let hours = interval(
            "name: business-hours\ntime_intervals:\n  - times: [{start_time: '09:00', end_time: '17:00'}]\n    weekdays: ['monday:friday']\n    location: Europe/Berlin\n",
        );
        // Tuesday 2026-12-01: 08:30 UTC is 09:30 in Berlin (CET, UTC+1).
        assert!(hours.active(at("2026-12-01T08:30:00Z")));
        assert!(!hours.active(at("2026-12-01T07:59:00Z")), "08:59 Berlin");
        assert!(
            !hours.active(at("2026-12-01T16:00:00Z")),
            "17:00 Berlin: the end is excluded"
        );
        assert!(!hours.active(at("2026-12-05T10:00:00Z")), "a Saturday");
    }

    #[test]
    fn days_months_years_and_the_months_end() {
        let end = interval(
            "name: month-end\ntime_intervals:\n  - days_of_month: ['-3:-1']\n    months: ['november:12']\n    years: ['2026']\n",
        );
        assert!(
            end.active(at("2026-11-28T00:00:00Z")),
            "Nov has 30 days: 28..30"
        );
        assert!(!end.active(at("2026-11-27T23:59:00Z")));
        assert!(end.active(at("2026-12-31T12:00:00Z")));
        assert!(!end.active(at("2027-12-31T12:00:00Z")), "another year");
        assert!(!end.active(at("2026-10-31T12:00:00Z")), "another month");
        let all_day = interval(
            "name: nights\ntime_intervals:\n  - times: [{start_time: '22:00', end_time: '24:00'}, {start_time: '00:00', end_time: '06:00'}]\n",
        );
        assert!(all_day.active(at("2026-12-01T23:59:00Z")));
        assert!(all_day.active(at("2026-12-01T05:59:00Z")));
        assert!(!all_day.active(at("2026-12-01T06:00:00Z")));
    }

    #[test]
    fn mistakes_are_refused_with_the_value() {
        let e = serde_norway::from_str::<TimeInterval>(
            "name: x\ntime_intervals:\n  - weekdays: ['friday:monday']\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("range \"friday:monday\" ends before it starts"),
            "{e}"
        );
        let e = serde_norway::from_str::<TimeInterval>(
            "name: x\ntime_intervals:\n  - times: [{start_time: '9am', end_time: '17:00'}]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"9am\" is not a time of day HH:MM"), "{e}");
        let e = serde_norway::from_str::<TimeInterval>(
            "name: x\ntime_intervals:\n  - location: Mars/Olympus\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not an IANA time zone"), "{e}");
    }
}
