//! Factory analytics as pure functions over state spans (the `state_interval` rows): time
//! in each status, availability, stops, MTTR, MTBF and downtime by reason, for one machine,
//! per machine and per line. SQL only selects the spans that overlap a window; every figure
//! is computed here, where it is unit- and property-tested without a database.
//!
//! Definitions (also in the API docs):
//! - *planned time*: the in-service time inside the window (and, where a site has a shift
//!   calendar, inside its shifts), less planned downtime (red with a reason the catalogue
//!   marks planned); time outside any shift is not counted at all;
//! - *availability* = green time / planned time;
//! - a *stop* begins where a span turns red after a status that was not red; it counts in
//!   the window (and shift) where it begins; planned stops are not failures;
//! - *MTTR* = unplanned red time / stops; *MTBF* = (planned time − unplanned red) / stops;
//! - *downtime by reason*: red time and stops per reason code (planned ones included),
//!   `unqualified` when red has no reason.

use std::collections::{BTreeMap, BTreeSet};

use eq_actors::Status;

/// Reason key for red time without a reason code.
pub const UNQUALIFIED: &str = "unqualified";

/// One span `[start_ms, end_ms)` of a machine's state (`end_ms` `None`: still current).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub equipment_id: String,
    /// The version of the event that began the span.
    pub version: u64,
    pub site: String,
    pub line: String,
    pub status: Status,
    pub reason: Option<String>,
    pub in_service: bool,
    pub starts_stop: bool,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

/// What a report counts: a window, the present (where open spans end) and the reason codes
/// of planned downtime.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub window: Window,
    pub now_ms: i64,
    pub planned_reasons: &'a BTreeSet<String>,
}

/// A time window `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl Window {
    fn clip(&self, start: i64, end: i64) -> Option<(i64, i64)> {
        let (s, e) = (start.max(self.from_ms), end.min(self.to_ms));
        (s < e).then_some((s, e))
    }
}

/// When a site works: all the time, or these disjoint, sorted `[start, end)` windows.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    Always,
    Shifts(Vec<(i64, i64)>),
}

impl Planned {
    /// Milliseconds of `[start, end)` that are planned.
    fn overlap(&self, start: i64, end: i64) -> i64 {
        match self {
            Planned::Always => (end - start).max(0),
            Planned::Shifts(windows) => windows
                .iter()
                .map(|&(s, e)| (end.min(e) - start.max(s)).max(0))
                .sum(),
        }
    }

    fn contains(&self, at: i64) -> bool {
        match self {
            Planned::Always => true,
            Planned::Shifts(windows) => windows.iter().any(|&(s, e)| s <= at && at < e),
        }
    }
}

/// Downtime of one reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReasonTotals {
    pub red_ms: i64,
    pub stops: u64,
}

/// Sums over some spans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub green_ms: i64,
    pub yellow_ms: i64,
    /// Red without a planned reason.
    pub red_ms: i64,
    /// Red with a planned reason (maintenance, changeover): not planned production time.
    pub planned_stop_ms: i64,
    /// Unplanned stops (failures).
    pub stops: u64,
    pub by_reason: BTreeMap<String, ReasonTotals>,
}

impl Totals {
    /// In-service time within the window and the shifts, less planned downtime.
    pub fn planned_ms(&self) -> i64 {
        self.green_ms + self.yellow_ms + self.red_ms
    }

    /// Green time / planned time (`None` without planned time).
    pub fn availability(&self) -> Option<f64> {
        let planned = self.planned_ms();
        (planned > 0).then(|| self.green_ms as f64 / planned as f64)
    }

    /// Mean time to repair: red time per stop.
    pub fn mttr_ms(&self) -> Option<f64> {
        (self.stops > 0).then(|| self.red_ms as f64 / self.stops as f64)
    }

    /// Mean time between failures: time not red per stop.
    pub fn mtbf_ms(&self) -> Option<f64> {
        (self.stops > 0).then(|| (self.planned_ms() - self.red_ms) as f64 / self.stops as f64)
    }

    /// Adds a span's share of the scope's window (clipped to the planned time; an open span
    /// lasts until `now_ms`).
    pub fn add_span(&mut self, span: &Span, scope: Scope, planned: &Planned) {
        if !span.in_service {
            return;
        }
        let window = scope.window;
        let end = span.end_ms.unwrap_or(scope.now_ms.max(span.start_ms));
        // A stop counts where it begins, even if its first span took no time (red, then a
        // second red with a reason in the same instant).
        let begins_stop = span.starts_stop
            && window.from_ms <= span.start_ms
            && span.start_ms < window.to_ms
            && planned.contains(span.start_ms);
        let ms = window
            .clip(span.start_ms, end)
            .map_or(0, |(start, end)| planned.overlap(start, end));
        if ms == 0 && !begins_stop {
            return;
        }
        match span.status {
            Status::Green => self.green_ms += ms,
            Status::Yellow => self.yellow_ms += ms,
            Status::Red => {
                let reason = span.reason.clone().unwrap_or_else(|| UNQUALIFIED.into());
                if scope.planned_reasons.contains(&reason) {
                    self.planned_stop_ms += ms;
                } else {
                    self.red_ms += ms;
                    self.stops += u64::from(begins_stop);
                }
                let entry = self.by_reason.entry(reason).or_default();
                entry.red_ms += ms;
                entry.stops += u64::from(begins_stop);
            }
        }
    }

    /// Adds another total (e.g. machines into their line).
    pub fn merge(&mut self, other: &Totals) {
        self.green_ms += other.green_ms;
        self.yellow_ms += other.yellow_ms;
        self.red_ms += other.red_ms;
        self.planned_stop_ms += other.planned_stop_ms;
        self.stops += other.stops;
        for (reason, t) in &other.by_reason {
            let entry = self.by_reason.entry(reason.clone()).or_default();
            entry.red_ms += t.red_ms;
            entry.stops += t.stops;
        }
    }

    /// Downtime reasons, largest first (a Pareto), ties by name.
    pub fn pareto(&self) -> Vec<(String, ReasonTotals)> {
        let mut reasons: Vec<(String, ReasonTotals)> = self
            .by_reason
            .iter()
            .map(|(r, t)| (r.clone(), t.clone()))
            .collect();
        reasons.sort_by(|a, b| b.1.red_ms.cmp(&a.1.red_ms).then_with(|| a.0.cmp(&b.0)));
        reasons
    }
}

/// One stop of a machine: red from the span `version` on, until it left red.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub equipment_id: String,
    /// The version that began it: the stop's id for corrections.
    pub version: u64,
    pub start_ms: i64,
    /// `None` while the machine is still red.
    pub end_ms: Option<i64>,
    /// The reason in effect when the stop began (after corrections).
    pub reason: Option<String>,
}

/// The stops that begin in `spans` (one machine's, ordered by version): consecutive red
/// spans from one that begins a stop.
pub fn stops(spans: &[Span]) -> Vec<Stop> {
    let mut out: Vec<Stop> = Vec::new();
    let mut open = false;
    for span in spans {
        let red = span.status == Status::Red && span.in_service;
        if red && span.starts_stop {
            out.push(Stop {
                equipment_id: span.equipment_id.clone(),
                version: span.version,
                start_ms: span.start_ms,
                end_ms: span.end_ms,
                reason: span.reason.clone(),
            });
            open = true;
        } else if red && open {
            if let Some(stop) = out.last_mut() {
                stop.end_ms = span.end_ms;
            }
        } else {
            open = false;
        }
    }
    out
}

/// Totals per machine and per (site, line) over `spans` (a span counts for the line it was
/// on at the time).
#[derive(Debug, Default, PartialEq)]
pub struct FleetTotals {
    pub machines: BTreeMap<String, (String, String, Totals)>,
    pub lines: BTreeMap<(String, String), Totals>,
    pub all: Totals,
}

/// Aggregates spans; `planned` gives each site's calendar over the window.
pub fn fleet(spans: &[Span], scope: Scope, planned: impl Fn(&str) -> Planned) -> FleetTotals {
    let mut calendars: BTreeMap<&str, Planned> = BTreeMap::new();
    let mut out = FleetTotals::default();
    for span in spans {
        let calendar = calendars
            .entry(span.site.as_str())
            .or_insert_with(|| planned(&span.site));
        let mut t = Totals::default();
        t.add_span(span, scope, calendar);
        // Keys are cloned only when first seen: a month of a fleet is millions of spans.
        match out.machines.get_mut(&span.equipment_id) {
            Some(machine) => {
                // A machine is listed under its latest location.
                if machine.0 != span.site || machine.1 != span.line {
                    (machine.0, machine.1) = (span.site.clone(), span.line.clone());
                }
                machine.2.merge(&t);
            }
            None => {
                out.machines.insert(
                    span.equipment_id.clone(),
                    (span.site.clone(), span.line.clone(), t.clone()),
                );
            }
        }
        let line_key = (span.site.clone(), span.line.clone());
        match out.lines.get_mut(&line_key) {
            Some(line) => line.merge(&t),
            None => {
                out.lines.insert(line_key, t.clone());
            }
        }
        out.all.merge(&t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(status: Status, start: i64, end: Option<i64>, stop: bool) -> Span {
        Span {
            equipment_id: "m".into(),
            version: start as u64,
            site: "s".into(),
            line: "l".into(),
            status,
            reason: None,
            in_service: true,
            starts_stop: stop,
            start_ms: start,
            end_ms: end,
        }
    }

    fn scope(from_ms: i64, to_ms: i64, now_ms: i64, planned: &BTreeSet<String>) -> Scope<'_> {
        Scope {
            window: Window { from_ms, to_ms },
            now_ms,
            planned_reasons: planned,
        }
    }

    #[test]
    fn clips_spans_to_the_window_and_open_spans_to_now() {
        let none = BTreeSet::new();
        let always = Planned::Always;
        let mut t = Totals::default();
        let green = span(Status::Green, 0, Some(400), false);
        t.add_span(&green, scope(100, 1_000, 2_000, &none), &always);
        let red = span(Status::Red, 400, Some(600), true);
        t.add_span(&red, scope(100, 1_000, 2_000, &none), &always);
        let yellow = span(Status::Yellow, 600, None, false);
        t.add_span(&yellow, scope(100, 1_000, 800, &none), &always);
        assert_eq!((t.green_ms, t.red_ms, t.yellow_ms), (300, 200, 200));
        assert_eq!(t.stops, 1);
        assert_eq!(t.availability(), Some(300.0 / 700.0));
        assert_eq!(t.mttr_ms(), Some(200.0));
        assert_eq!(t.mtbf_ms(), Some(500.0));
        assert_eq!(t.by_reason[UNQUALIFIED].red_ms, 200);
    }

    #[test]
    fn time_outside_shifts_and_out_of_service_counts_for_nothing() {
        let none = BTreeSet::new();
        let scope = scope(0, 1_000, 0, &none);
        let shifts = Planned::Shifts(vec![(0, 100), (500, 600)]);
        let mut t = Totals::default();
        t.add_span(&span(Status::Red, 50, Some(550), true), scope, &shifts);
        assert_eq!(t.red_ms, 100);
        // A stop that begins outside every shift is not counted.
        t.add_span(&span(Status::Red, 200, Some(300), true), scope, &shifts);
        assert_eq!(t.stops, 1);
        let mut off = span(Status::Green, 0, Some(1_000), false);
        off.in_service = false;
        t.add_span(&off, scope, &Planned::Always);
        assert_eq!(t.green_ms, 0);
    }

    #[test]
    fn planned_downtime_is_neither_planned_time_nor_a_failure() {
        let planned = BTreeSet::from(["maintenance".to_string()]);
        let scope = scope(0, 1_000, 1_000, &planned);
        let mut t = Totals::default();
        t.add_span(
            &span(Status::Green, 0, Some(600), false),
            scope,
            &Planned::Always,
        );
        let mut service = span(Status::Red, 600, Some(1_000), true);
        service.reason = Some("maintenance".into());
        t.add_span(&service, scope, &Planned::Always);
        assert_eq!((t.planned_ms(), t.planned_stop_ms, t.stops), (600, 400, 0));
        assert_eq!(t.availability(), Some(1.0));
        assert_eq!(
            t.by_reason["maintenance"],
            ReasonTotals {
                red_ms: 400,
                stops: 1
            }
        );
    }

    #[test]
    fn stops_run_from_the_red_span_that_begins_them_to_the_last_red_one() {
        let spans = vec![
            span(Status::Green, 0, Some(10), false),
            span(Status::Red, 10, Some(20), true),
            span(Status::Red, 20, Some(30), false),
            span(Status::Yellow, 30, Some(40), false),
            span(Status::Red, 40, None, true),
        ];
        let stops = stops(&spans);
        assert_eq!(
            stops
                .iter()
                .map(|s| (s.version, s.start_ms, s.end_ms))
                .collect::<Vec<_>>(),
            [(10, 10, Some(30)), (40, 40, None)]
        );
    }

    #[test]
    fn pareto_is_largest_first() {
        let mut t = Totals::default();
        for (reason, ms) in [("jam", 10), ("power", 30), ("tool", 20)] {
            t.by_reason.insert(
                reason.into(),
                ReasonTotals {
                    red_ms: ms,
                    stops: 1,
                },
            );
        }
        let order: Vec<String> = t.pareto().into_iter().map(|(r, _)| r).collect();
        assert_eq!(order, ["power", "tool", "jam"]);
    }
}
