//! The factory's calendar: shifts per site (in the site's time zone, daylight-saving changes
//! included) and the catalogue of downtime reasons (planned or unplanned, in a small tree).
//! Read from a JSON file (`--calendar-file`); without one, every hour is planned time and
//! every reason is unplanned.
//!
//! ```json
//! {
//!   "sites": {
//!     "brickworks": {
//!       "time_zone": "Europe/Berlin",
//!       "shifts": [
//!         {"name": "early", "days": ["mon","tue","wed","thu","fri"], "start": "06:00", "end": "14:00"},
//!         {"name": "night", "days": ["mon","tue","wed","thu"], "start": "22:00", "end": "06:00"}
//!       ]
//!     }
//!   },
//!   "reasons": [
//!     {"code": "mechanical", "name": "Mechanical"},
//!     {"code": "jam", "name": "Material jam", "parent": "mechanical"},
//!     {"code": "maintenance", "name": "Planned maintenance", "planned": true}
//!   ]
//! }
//! ```
//! A shift whose end is not after its start ends the next day. `days` are the days on which
//! a shift *starts*.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use chrono::{Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;

use super::analytics::{Planned, Window};

/// One shift of a site's week.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shift {
    pub name: String,
    /// Days on which the shift starts (`mon` … `sun`); all days if empty.
    #[serde(default)]
    pub days: Vec<Weekday>,
    pub start: NaiveTime,
    pub end: NaiveTime,
}

/// A site's shifts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteCalendar {
    pub time_zone: Tz,
    pub shifts: Vec<Shift>,
}

/// A downtime reason of the catalogue.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub code: String,
    #[serde(default)]
    pub name: String,
    /// Planned downtime (maintenance, changeover): not counted against availability.
    #[serde(default)]
    pub planned: bool,
    /// The reason's group in the tree.
    #[serde(default)]
    pub parent: Option<String>,
}

/// Shifts per site and the reason catalogue.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calendar {
    #[serde(default)]
    pub sites: BTreeMap<String, SiteCalendar>,
    #[serde(default)]
    pub reasons: Vec<Reason>,
}

impl Calendar {
    /// Reads and checks a calendar file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the calendar {}", path.display()))?;
        let calendar: Calendar = serde_json::from_str(&text)
            .with_context(|| format!("parsing the calendar {}", path.display()))?;
        calendar.check()?;
        Ok(calendar)
    }

    fn check(&self) -> anyhow::Result<()> {
        let codes: BTreeSet<&str> = self.reasons.iter().map(|r| r.code.as_str()).collect();
        anyhow::ensure!(
            codes.len() == self.reasons.len(),
            "a reason code appears twice in the catalogue"
        );
        for reason in &self.reasons {
            if let Some(parent) = &reason.parent {
                anyhow::ensure!(
                    codes.contains(parent.as_str()),
                    "reason {:?} has an unknown parent {parent:?}",
                    reason.code
                );
            }
        }
        Ok(())
    }

    /// The codes of planned downtime.
    pub fn planned_reasons(&self) -> BTreeSet<String> {
        self.reasons
            .iter()
            .filter(|r| r.planned)
            .map(|r| r.code.clone())
            .collect()
    }

    /// A reason of the catalogue.
    pub fn reason(&self, code: &str) -> Option<&Reason> {
        self.reasons.iter().find(|r| r.code == code)
    }

    /// The top of a reason's tree (itself if it has no parent or is not in the catalogue).
    pub fn root_of(&self, code: &str) -> String {
        let mut current = code;
        // Bounded: a cycle in a hand-written file must not hang a report.
        for _ in 0..self.reasons.len() {
            match self.reason(current).and_then(|r| r.parent.as_deref()) {
                Some(parent) => current = parent,
                None => break,
            }
        }
        current.to_string()
    }

    /// The planned time of `site` within `window` (only shift `only`, if given).
    pub fn planned(&self, site: &str, window: Window, only: Option<&str>) -> Planned {
        match self.sites.get(site) {
            None if only.is_none() => Planned::Always,
            None => Planned::Shifts(Vec::new()),
            Some(calendar) => Planned::Shifts(merge(
                calendar
                    .windows(window)
                    .into_iter()
                    .filter(|(_, _, name)| only.is_none_or(|o| o == *name))
                    .map(|(s, e, _)| (s, e))
                    .collect(),
            )),
        }
    }

    /// Every shift name of every site, sorted.
    pub fn shift_names(&self) -> BTreeSet<String> {
        self.sites
            .values()
            .flat_map(|s| s.shifts.iter().map(|sh| sh.name.clone()))
            .collect()
    }
}

impl SiteCalendar {
    /// The shifts that overlap `window`, clipped to it: `(start_ms, end_ms, name)`.
    pub fn windows(&self, window: Window) -> Vec<(i64, i64, &str)> {
        let tz = self.time_zone;
        let day = |ms: i64| {
            Utc.timestamp_millis_opt(ms)
                .single()
                .map(|t| t.with_timezone(&tz).date_naive())
        };
        let (Some(first), Some(last)) = (day(window.from_ms), day(window.to_ms)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // From the day before: a night shift that started then may reach into the window.
        let mut date = first - Duration::days(1);
        while date <= last {
            for shift in &self.shifts {
                if !shift.days.is_empty() && !shift.days.contains(&date.weekday()) {
                    continue;
                }
                let end_date = if shift.end > shift.start {
                    date
                } else {
                    date + Duration::days(1)
                };
                let (Some(start), Some(end)) = (
                    local_ms(tz, date, shift.start, true),
                    local_ms(tz, end_date, shift.end, false),
                ) else {
                    continue;
                };
                let (s, e) = (start.max(window.from_ms), end.min(window.to_ms));
                if s < e {
                    out.push((s, e, shift.name.as_str()));
                }
            }
            date += Duration::days(1);
        }
        out.sort();
        out
    }
}

/// A local wall-clock time as UTC milliseconds. On the night the clocks go back, a start
/// takes the first occurrence and an end the second (the shift really lasts an hour more);
/// a time skipped when the clocks go forward moves to the first instant after the gap.
fn local_ms(tz: Tz, date: NaiveDate, time: NaiveTime, is_start: bool) -> Option<i64> {
    let naive = date.and_time(time);
    let resolved = tz.from_local_datetime(&naive);
    let instant = if is_start {
        resolved.earliest()
    } else {
        resolved.latest()
    };
    instant
        .or_else(|| {
            // In the spring gap: the first valid minute after it.
            (1..=180)
                .map(|m| naive + Duration::minutes(m))
                .find_map(|n| tz.from_local_datetime(&n).earliest())
        })
        .map(|t| t.timestamp_millis())
}

/// Sorts and merges overlapping windows.
fn merge(mut windows: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    windows.sort();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (s, e) in windows {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin(shifts: &str) -> Calendar {
        serde_json::from_str(&format!(
            r#"{{"sites": {{"b": {{"time_zone": "Europe/Berlin", "shifts": {shifts}}}}}}}"#
        ))
        .unwrap()
    }

    fn utc(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    fn planned_hours(calendar: &Calendar, from: &str, to: &str) -> f64 {
        let window = Window {
            from_ms: utc(from),
            to_ms: utc(to),
        };
        match calendar.planned("b", window, None) {
            Planned::Shifts(w) => w.iter().map(|(s, e)| e - s).sum::<i64>() as f64 / 3.6e6,
            Planned::Always => f64::INFINITY,
        }
    }

    #[test]
    fn a_day_shift_in_local_time() {
        let c = berlin(r#"[{"name": "early", "start": "06:00", "end": "14:00"}]"#);
        // Winter: UTC+1, so 06:00 local is 05:00Z.
        let w = c.sites["b"].windows(Window {
            from_ms: utc("2026-01-12T00:00:00Z"),
            to_ms: utc("2026-01-13T00:00:00Z"),
        });
        assert_eq!(
            w,
            vec![(
                utc("2026-01-12T05:00:00Z"),
                utc("2026-01-12T13:00:00Z"),
                "early"
            )]
        );
    }

    #[test]
    fn night_shifts_across_daylight_saving_changes() {
        let c = berlin(r#"[{"name": "night", "start": "22:00", "end": "06:00"}]"#);
        // Clocks go forward on 2026-03-29 at 02:00: that night shift lasts 7 hours.
        assert_eq!(
            planned_hours(&c, "2026-03-28T18:00:00Z", "2026-03-29T12:00:00Z"),
            7.0
        );
        // Clocks go back on 2026-10-25 at 03:00: that night shift lasts 9 hours.
        assert_eq!(
            planned_hours(&c, "2026-10-24T18:00:00Z", "2026-10-25T12:00:00Z"),
            9.0
        );
        // An ordinary night: 8 hours.
        assert_eq!(
            planned_hours(&c, "2026-06-10T18:00:00Z", "2026-06-11T12:00:00Z"),
            8.0
        );
    }

    #[test]
    fn weekdays_select_the_starting_day_and_windows_are_clipped() {
        let c = berlin(
            r#"[{"name": "early", "days": ["mon","tue","wed","thu","fri"], "start": "06:00", "end": "14:00"}]"#,
        );
        // 2026-06-13 is a Saturday, 2026-06-15 a Monday: one shift, from 04:00Z (summer).
        assert_eq!(
            planned_hours(&c, "2026-06-13T00:00:00Z", "2026-06-15T08:00:00Z"),
            4.0
        );
    }

    #[test]
    fn a_catalogue_with_an_unknown_parent_is_refused() {
        let bad: Calendar =
            serde_json::from_str(r#"{"reasons": [{"code": "jam", "parent": "nope"}]}"#).unwrap();
        assert!(bad.check().is_err());
        let good: Calendar = serde_json::from_str(
            r#"{"reasons": [{"code": "mech"}, {"code": "jam", "parent": "mech"}, {"code": "pm", "planned": true}]}"#,
        )
        .unwrap();
        good.check().unwrap();
        assert_eq!(good.planned_reasons(), BTreeSet::from(["pm".to_string()]));
        assert_eq!(good.root_of("jam"), "mech");
        assert_eq!(good.root_of("unqualified"), "unqualified");
    }
}
