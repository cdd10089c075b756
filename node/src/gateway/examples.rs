//! The examples the spec shows for each response body: one brick press's morning, told
//! consistently (an 8-hour shift, two jams, one changeover), so that a tablet developer
//! reading the docs sees figures that add up.

use chrono::{DateTime, Utc};
use poem_openapi::types::Example;

use super::analytics::{
    AvailabilityReport, CategoryDowntime, DowntimeReport, Figures, LineFigures, MachineFigures,
    ReasonDowntime, ShiftFigures, StopList, StopView, TimeInState,
};
use super::cluster::{ClusterNode, ClusterStatus, ShardOwner};
use super::models::{
    EquipmentPage, EquipmentView, EventKind, HistoryEntry, HistoryPage, LiveEvent, Source, Status,
};
use super::problem::Problem;

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// 06:00–14:00: 24,600 s green, 1,800 s yellow, 2,400 s red in two jams.
fn shift_figures() -> Figures {
    Figures {
        green_seconds: 24_600.0,
        yellow_seconds: 1_800.0,
        red_seconds: 2_400.0,
        planned_stop_seconds: 0.0,
        planned_seconds: 28_800.0,
        availability: Some(0.854),
        stops: 2,
        mttr_seconds: Some(1_200.0),
        mtbf_seconds: Some(13_200.0),
    }
}

fn jam_downtime() -> ReasonDowntime {
    ReasonDowntime {
        reason: "jam".into(),
        name: Some("Material jam".into()),
        parent: Some("mechanical".into()),
        planned: false,
        seconds: 2_400.0,
        stops: 2,
        share: 1.0,
    }
}

impl Example for Problem {
    fn example() -> Self {
        Problem::new(
            412,
            "version_mismatch",
            "version mismatch: expected 11, current 12",
        )
    }
}

impl Example for EquipmentPage {
    fn example() -> Self {
        EquipmentPage {
            items: vec![EquipmentView::example()],
            next_cursor: Some("brick-press-1".into()),
        }
    }
}

impl Example for HistoryEntry {
    fn example() -> Self {
        HistoryEntry {
            version: 12,
            kind: EventKind::StatusChanged,
            status: Status::Red,
            previous_status: Some(Status::Green),
            reason: Some("jam".into()),
            note: Some("clay jammed in the mould".into()),
            updated_by: "operator-7".into(),
            source: Source::Api,
            site: "brickworks".into(),
            line: "line-1".into(),
            occurred_at: Some(at("2026-11-30T08:00:00Z")),
            recorded_at: at("2026-11-30T08:00:00.120Z"),
            clock_suspect: false,
            command_id: Some("tablet7-0001".into()),
        }
    }
}

impl Example for HistoryPage {
    fn example() -> Self {
        HistoryPage {
            items: vec![HistoryEntry::example()],
            next_cursor: None,
        }
    }
}

impl Example for LiveEvent {
    fn example() -> Self {
        LiveEvent {
            seq: 4711,
            kind: Some(EventKind::StatusChanged),
            equipment: Some(EquipmentView::example()),
            previous_status: Some(Status::Green),
        }
    }
}

impl Example for ClusterStatus {
    fn example() -> Self {
        let node = |id: &str, shards| ClusterNode {
            id: id.into(),
            hosts_shards: true,
            gateway: true,
            history: true,
            draining: false,
            http_addr: format!("{id}:8080"),
            version: env!("CARGO_PKG_VERSION").into(),
            shards,
        };
        ClusterStatus {
            node: "node-a".into(),
            leader: Some("node-a".into()),
            epoch: 7,
            nodes: vec![node("node-a", 2), node("node-b", 2)],
            owners: ["node-a", "node-b", "node-a", "node-b"]
                .iter()
                .map(|n| ShardOwner(Some((*n).into())))
                .collect(),
        }
    }
}

impl Example for TimeInState {
    fn example() -> Self {
        TimeInState {
            equipment_id: "brick-press-1".into(),
            from: at("2026-11-30T06:00:00Z"),
            to: at("2026-11-30T14:00:00Z"),
            figures: shift_figures(),
            downtime: vec![jam_downtime()],
        }
    }
}

impl Example for StopList {
    fn example() -> Self {
        StopList {
            equipment_id: "brick-press-1".into(),
            from: at("2026-11-30T06:00:00Z"),
            to: at("2026-11-30T14:00:00Z"),
            stops: vec![StopView {
                version: 12,
                start: at("2026-11-30T08:00:00Z"),
                end: Some(at("2026-11-30T08:25:00Z")),
                seconds: 1_500.0,
                reason: Some("jam".into()),
                planned: false,
            }],
        }
    }
}

impl Example for AvailabilityReport {
    fn example() -> Self {
        AvailabilityReport {
            from: at("2026-11-30T06:00:00Z"),
            to: at("2026-11-30T14:00:00Z"),
            total: shift_figures(),
            lines: vec![LineFigures {
                site: "brickworks".into(),
                line: "line-1".into(),
                figures: shift_figures(),
            }],
            machines: vec![MachineFigures {
                id: "brick-press-1".into(),
                site: "brickworks".into(),
                line: "line-1".into(),
                figures: shift_figures(),
            }],
            shifts: vec![ShiftFigures {
                shift: "early".into(),
                figures: shift_figures(),
            }],
        }
    }
}

impl Example for DowntimeReport {
    fn example() -> Self {
        DowntimeReport {
            from: at("2026-11-30T06:00:00Z"),
            to: at("2026-11-30T14:00:00Z"),
            reasons: vec![jam_downtime()],
            categories: vec![CategoryDowntime {
                category: "mechanical".into(),
                name: Some("Mechanical".into()),
                seconds: 2_400.0,
                stops: 2,
                share: 1.0,
            }],
        }
    }
}
