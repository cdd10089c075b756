//! Property test of the analytics: random event sequences per machine (status changes with
//! and without reasons, re-sent statuses, line moves, reason corrections of past stops,
//! decommissioning, several events in the same second, late device messages whose clocks
//! are days off), written by the consumer's own batch writer in random batches and in random
//! order (as several nodes pulling from one consumer would), must give the same figures as a
//! brute-force count over the raw events, second by second.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use eq_actors::domain::{EquipmentId, Line, ReasonCode, Site, Source, Status, Version};
use eq_actors::equipment::{
    Action, Command, Decision, EquipmentState, Event, EventKind, MetadataPatch, ReasonCorrection,
    Registration, Rules, StatusChange, apply, decide,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::analytics::{self, Planned, Scope, Totals, UNQUALIFIED, Window};
use super::consumer::{Decoded, write_batch};
use super::queries::{SpanFilter, spans};

const REASONS: [Option<&str>; 4] = [None, Some("jam"), Some("power"), Some("tool")];
const STATUSES: [Status; 3] = [Status::Green, Status::Yellow, Status::Red];

fn at(second: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000 + second, 0).unwrap()
}

fn command(id: &EquipmentId, action: Action) -> Command {
    Command {
        equipment_id: id.clone(),
        action,
        command_id: None,
        expected_version: None,
        updated_by: "prop".into(),
        source: Source::Api,
        ingest: None,
        scope: None,
    }
}

/// A random life of one machine: its events, made by the real state machine.
fn random_life(rng: &mut StdRng, id: &str) -> Vec<Event> {
    let id = EquipmentId::parse(id).unwrap();
    let mut state = EquipmentState::default();
    let mut events = Vec::new();
    let mut second = rng.random_range(0..600);
    let step = |events: &mut Vec<Event>, state: &mut EquipmentState, action, second| {
        // Device messages carry the device's clock; only the server's orders the history.
        let source = match &action {
            Action::SetStatus(StatusChange {
                occurred_at: Some(_),
                ..
            }) => Source::Device,
            _ => Source::Api,
        };
        let command = Command {
            source,
            ..command(&id, action)
        };
        if let Ok(Decision::Append(event)) = decide(state, &command, at(second), &Rules::default())
        {
            *state = apply(std::mem::take(state), &event, event.version.0);
            events.push(*event);
        }
    };
    let registration = Registration {
        name: "m".into(),
        description: String::new(),
        site: Site::parse("plant").unwrap(),
        line: Line::parse("line-1").unwrap(),
        tags: vec![],
        status: STATUSES[rng.random_range(0..3)],
    };
    step(
        &mut events,
        &mut state,
        Action::Register(registration),
        second,
    );
    for _ in 0..rng.random_range(5..40) {
        // Several events in one second happen (a burst from a device).
        second += [0, 1, 7, 60, 300, 900][rng.random_range(0..6)];
        let roll = rng.random_range(0..100);
        let stops: Vec<u64> = (0..events.len())
            .filter(|&i| starts_stop(&events, i))
            .map(|i| events[i].version.0)
            .collect();
        let action = if roll < 8 && !stops.is_empty() {
            Action::CorrectReason(ReasonCorrection {
                stop_version: Version(stops[rng.random_range(0..stops.len())]),
                reason: REASONS[rng.random_range(0..4)].map(|r| ReasonCode::parse(r).unwrap()),
            })
        } else if roll < 80 {
            Action::SetStatus(StatusChange {
                status: STATUSES[rng.random_range(0..3)],
                reason: REASONS[rng.random_range(0..4)].map(|r| ReasonCode::parse(r).unwrap()),
                note: None,
                // A late device message: its clock says hours or days ago (or 1999).
                occurred_at: rng
                    .random_bool(0.3)
                    .then(|| at(second - rng.random_range(0..30 * 86_400))),
            })
        } else if roll < 95 {
            Action::UpdateMetadata(MetadataPatch {
                line: Some(Line::parse(["line-1", "line-2"][rng.random_range(0..2)]).unwrap()),
                ..MetadataPatch::default()
            })
        } else {
            Action::Decommission
        };
        step(&mut events, &mut state, action, second);
    }
    events
}

/// Whether event `i` begins a stop: red after a state that was not red.
fn starts_stop(events: &[Event], i: usize) -> bool {
    events[i].state.status == Status::Red && (i == 0 || events[i - 1].state.status != Status::Red)
}

/// The reason of event `i`'s state once corrections are applied: a correction of the stop
/// event `i` belongs to, made after event `i`, replaces it (the latest such wins).
fn effective_reason(events: &[Event], i: usize) -> Option<String> {
    let e = &events[i];
    let original = e.state.reason.as_ref().map(|r| r.to_string());
    if e.state.status != Status::Red {
        return original;
    }
    let mut start = i;
    while start > 0 && events[start - 1].state.status == Status::Red {
        start -= 1;
    }
    let stop_version = events[start].version;
    events[i + 1..]
        .iter()
        .rev()
        .filter(|c| c.kind == EventKind::ReasonCorrected)
        .filter_map(|c| c.correction.as_ref())
        .find(|c| c.stop_version == stop_version)
        .map_or(original, |c| c.reason.as_ref().map(|r| r.to_string()))
}

/// Brute force: the figures of one machine, one second at a time, from its raw events.
fn brute_force(
    events: &[Event],
    scope: Scope,
    planned: &Planned,
    per_line: &mut BTreeMap<(String, String), Totals>,
) -> Totals {
    let (window, now_ms) = (scope.window, scope.now_ms);
    let mut totals = Totals::default();
    let ms = |t: &DateTime<Utc>| t.timestamp_millis();
    let mut t = window.from_ms;
    while t < window.to_ms.min(now_ms) {
        // The state at t: the last event recorded at or before t.
        if let Some(i) = events.iter().rposition(|e| ms(&e.recorded_at) <= t)
            && !events[i].state.decommissioned
            && planned_at(planned, t)
        {
            let e = &events[i];
            let reason = effective_reason(events, i);
            let line = per_line
                .entry((e.state.site.to_string(), e.state.line.to_string()))
                .or_default();
            for total in [&mut totals, line] {
                match e.state.status {
                    Status::Green => total.green_ms += 1000,
                    Status::Yellow => total.yellow_ms += 1000,
                    Status::Red => {
                        let reason = reason.as_deref().unwrap_or(UNQUALIFIED);
                        if scope.planned_reasons.contains(reason) {
                            total.planned_stop_ms += 1000;
                        } else {
                            total.red_ms += 1000;
                        }
                        total.by_reason.entry(reason.into()).or_default().red_ms += 1000;
                    }
                }
            }
        }
        t += 1000;
    }
    // Stops: a red state after one that was not red, beginning inside the window and shifts.
    for (i, e) in events.iter().enumerate() {
        let start = ms(&e.recorded_at);
        if starts_stop(events, i)
            && !e.state.decommissioned
            && window.from_ms <= start
            && start < window.to_ms
            && planned_at(planned, start)
        {
            let reason = effective_reason(events, i);
            let reason = reason.as_deref().unwrap_or(UNQUALIFIED);
            let line = per_line
                .entry((e.state.site.to_string(), e.state.line.to_string()))
                .or_default();
            for total in [&mut totals, line] {
                if !scope.planned_reasons.contains(reason) {
                    total.stops += 1;
                }
                total.by_reason.entry(reason.into()).or_default().stops += 1;
            }
        }
    }
    totals
}

fn planned_at(planned: &Planned, t: i64) -> bool {
    match planned {
        Planned::Always => true,
        Planned::Shifts(windows) => windows.iter().any(|&(s, e)| s <= t && t < e),
    }
}

/// Random disjoint shift windows on whole seconds, or always planned.
fn random_planned(rng: &mut StdRng) -> Planned {
    if rng.random_bool(0.4) {
        return Planned::Always;
    }
    let mut windows = Vec::new();
    let mut t = at(0).timestamp_millis() + rng.random_range(0..3_600) * 1000;
    for _ in 0..rng.random_range(1..6) {
        let len = rng.random_range(600..7_200) * 1000;
        windows.push((t, t + len));
        t += len + rng.random_range(1..7_200) * 1000;
    }
    Planned::Shifts(windows)
}

#[tokio::test]
async fn reports_equal_a_brute_force_count_over_the_raw_events() {
    let dir = std::env::temp_dir().join(format!("eq-prop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for case in 0..60u64 {
        let mut rng = StdRng::seed_from_u64(0x5eed + case);
        let path = dir.join(format!("case-{case}.db"));
        let _ = std::fs::remove_file(&path);
        let db = super::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
        let lives: BTreeMap<String, Vec<Event>> = (0..4)
            .map(|m| {
                let id = format!("m{m}");
                let life = random_life(&mut rng, &id);
                (id, life)
            })
            .collect();
        // Written as the consumer writes them, in random batches and random order.
        let mut all: Vec<Decoded> = lives
            .values()
            .flatten()
            .map(|e| Decoded {
                seq: e.version.0,
                event: e.clone(),
            })
            .collect();
        all.shuffle(&mut rng);
        let mut rest = all.as_slice();
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len().min(15));
            write_batch(&db, &rest[..n]).await.unwrap();
            // A redelivery now and then changes nothing.
            if rng.random_bool(0.2) {
                write_batch(&db, &rest[..n]).await.unwrap();
            }
            rest = &rest[n..];
        }
        let last = lives
            .values()
            .flatten()
            .map(|e| e.recorded_at.timestamp_millis())
            .max()
            .unwrap();
        for _ in 0..8 {
            let from = at(rng.random_range(-600..20_000)).timestamp_millis();
            let to = from + rng.random_range(1..40_000) * 1000;
            let window = Window {
                from_ms: from,
                to_ms: to,
            };
            let now_ms = last + rng.random_range(0..3_000) * 1000;
            let planned = random_planned(&mut rng);
            // Some reason codes are planned downtime in some cases.
            let planned_reasons: std::collections::BTreeSet<String> = ["tool", "power"]
                .into_iter()
                .filter(|_| rng.random_bool(0.5))
                .map(String::from)
                .collect();
            let scope = Scope {
                window,
                now_ms,
                planned_reasons: &planned_reasons,
            };
            let spans = spans(&db, &SpanFilter::default(), window).await.unwrap();
            let fleet = analytics::fleet(&spans, scope, |_| planned.clone());
            let mut lines = BTreeMap::new();
            let mut all = Totals::default();
            for (id, events) in &lives {
                let expected = brute_force(events, scope, &planned, &mut lines);
                let got = fleet
                    .machines
                    .get(id)
                    .map(|m| m.2.clone())
                    .unwrap_or_default();
                assert_eq!(
                    without_empty(got),
                    without_empty(expected.clone()),
                    "case {case}, machine {id}, {scope:?}, {planned:?}, events {:?}",
                    events
                        .iter()
                        .map(|e| (
                            e.version.0,
                            e.kind.as_str(),
                            e.state.status.as_str(),
                            e.state.reason.as_ref().map(|r| r.to_string()),
                            e.correction.as_ref().map(|c| (
                                c.stop_version.0,
                                c.reason.as_ref().map(|r| r.to_string())
                            )),
                            e.recorded_at.timestamp() - 1_790_000_000,
                        ))
                        .collect::<Vec<_>>()
                );
                all.merge(&expected);
            }
            assert_eq!(
                without_empty(fleet.all.clone()),
                without_empty(all),
                "case {case}"
            );
            let lines: BTreeMap<_, _> = lines
                .into_iter()
                .map(|(k, v)| (k, without_empty(v)))
                .filter(|(_, v)| *v != Totals::default())
                .collect();
            let got: BTreeMap<_, _> = fleet
                .lines
                .into_iter()
                .map(|(k, v)| (k, without_empty(v)))
                .filter(|(_, v)| *v != Totals::default())
                .collect();
            assert_eq!(got, lines, "case {case}: per line");
        }
        drop(db);
        let _ = std::fs::remove_file(&path);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reasons with neither time nor stops are noise (a red span fully outside the window).
fn without_empty(mut t: Totals) -> Totals {
    t.by_reason.retain(|_, r| r.red_ms > 0 || r.stops > 0);
    t
}
