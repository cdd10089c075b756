//! Unit tests of the pure state machine: every accepted command and every rejection.

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::state::*;
use crate::domain::{EquipmentId, Line, ReasonCode, Site, Source, Status, Version};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 8, 0, 0).unwrap()
}

fn id() -> EquipmentId {
    EquipmentId::parse("press-1").unwrap()
}

fn command(action: Action) -> Command {
    Command {
        equipment_id: id(),
        action,
        command_id: None,
        expected_version: None,
        updated_by: "alice".into(),
        source: Source::Api,
        ingest: None,
        scope: None,
    }
}

fn register() -> Command {
    command(Action::Register(Registration {
        name: "Press 1".into(),
        description: String::new(),
        site: Site::parse("plant-a").unwrap(),
        line: Line::parse("line-1").unwrap(),
        tags: vec!["press".into()],
        status: Status::Yellow,
    }))
}

fn set_status(status: Status) -> Command {
    command(Action::SetStatus(StatusChange {
        status,
        reason: None,
        note: None,
        occurred_at: None,
    }))
}

/// Decides and applies, panicking on a rejection.
fn step(state: EquipmentState, cmd: &Command, at: DateTime<Utc>) -> EquipmentState {
    match decide(&state, cmd, at, &Rules::default()).expect("accepted") {
        Decision::Append(event) => apply(state, &event, event.version.0 * 10),
        Decision::Duplicate { .. } | Decision::AlreadyApplied | Decision::Unchanged => state,
    }
}

fn registered() -> EquipmentState {
    step(EquipmentState::default(), &register(), now())
}

fn rejection(state: &EquipmentState, cmd: &Command, rules: &Rules) -> Rejection {
    decide(state, cmd, now(), rules).expect_err("must be refused")
}

#[test]
fn register_creates_version_one_with_initial_status() {
    let state = registered();
    let e = state.equipment.unwrap();
    assert_eq!(e.version, Version(1));
    assert_eq!(e.status, Status::Yellow);
    assert_eq!(e.id, id());
    assert_eq!(e.registered_at, now());
}

#[test]
fn each_status_change_grows_the_version_by_one() {
    let mut state = registered();
    for (i, status) in [Status::Green, Status::Red, Status::Green]
        .into_iter()
        .enumerate()
    {
        state = step(
            state,
            &set_status(status),
            now() + Duration::seconds(i as i64 + 1),
        );
        assert_eq!(
            state.equipment.as_ref().unwrap().version,
            Version(i as u64 + 2)
        );
        assert_eq!(state.equipment.as_ref().unwrap().status, status);
    }
}

#[test]
fn status_since_only_moves_when_the_status_changes() {
    let state = step(
        registered(),
        &set_status(Status::Green),
        now() + Duration::seconds(10),
    );
    let since = state.equipment.as_ref().unwrap().status_since;
    let state = step(
        state,
        &set_status(Status::Green),
        now() + Duration::seconds(20),
    );
    assert_eq!(state.equipment.as_ref().unwrap().status_since, since);
    let state = step(
        state,
        &set_status(Status::Red),
        now() + Duration::seconds(30),
    );
    assert_eq!(
        state.equipment.as_ref().unwrap().status_since,
        now() + Duration::seconds(30)
    );
}

#[test]
fn status_change_event_records_previous_status() {
    let state = registered();
    let Decision::Append(event) =
        decide(&state, &set_status(Status::Red), now(), &Rules::default()).unwrap()
    else {
        panic!("expected an event")
    };
    assert_eq!(event.kind, EventKind::StatusChanged);
    assert_eq!(event.previous_status, Some(Status::Yellow));
    assert_eq!(event.state.version, event.version);
}

#[test]
fn metadata_update_changes_only_given_fields() {
    let patch = MetadataPatch {
        name: Some("Press One".into()),
        line: Some(Line::parse("line-2").unwrap()),
        ..Default::default()
    };
    let state = step(registered(), &command(Action::UpdateMetadata(patch)), now());
    let e = state.equipment.unwrap();
    assert_eq!(e.name, "Press One");
    assert_eq!(e.line.as_str(), "line-2");
    assert_eq!(e.site.as_str(), "plant-a");
    assert_eq!(e.tags, vec!["press".to_string()]);
    assert_eq!(e.version, Version(2));
}

#[test]
fn clock_suspect_is_flagged_for_far_past_and_future() {
    for (offset, suspect) in [
        (Duration::days(-365 * 27), true),
        (Duration::days(365), true),
        (Duration::minutes(-3), false),
        (Duration::minutes(2), false),
    ] {
        let mut cmd = set_status(Status::Red);
        if let Action::SetStatus(change) = &mut cmd.action {
            change.occurred_at = Some(now() + offset);
        }
        let state = step(registered(), &cmd, now());
        assert_eq!(
            state.equipment.unwrap().clock_suspect,
            suspect,
            "offset {offset}"
        );
    }
}

#[test]
fn rejects_commands_to_unknown_equipment() {
    let empty = EquipmentState::default();
    for cmd in [
        set_status(Status::Green),
        command(Action::Decommission),
        command(Action::UpdateMetadata(MetadataPatch {
            name: Some("x".into()),
            ..Default::default()
        })),
    ] {
        assert_eq!(
            rejection(&empty, &cmd, &Rules::default()),
            Rejection::NotFound
        );
    }
}

#[test]
fn rejects_a_second_registration() {
    assert_eq!(
        rejection(&registered(), &register(), &Rules::default()),
        Rejection::AlreadyExists
    );
}

#[test]
fn rejects_everything_after_decommission() {
    let state = step(registered(), &command(Action::Decommission), now());
    assert!(state.equipment.as_ref().unwrap().decommissioned);
    for cmd in [set_status(Status::Green), command(Action::Decommission)] {
        assert_eq!(
            rejection(&state, &cmd, &Rules::default()),
            Rejection::Decommissioned
        );
    }
    assert_eq!(
        rejection(&state, &register(), &Rules::default()),
        Rejection::AlreadyExists
    );
}

#[test]
fn rejects_a_stale_expected_version() {
    let mut cmd = set_status(Status::Green);
    cmd.expected_version = Some(Version(7));
    assert_eq!(
        rejection(&registered(), &cmd, &Rules::default()),
        Rejection::VersionMismatch {
            expected: Version(7),
            current: Version(1)
        }
    );
    cmd.expected_version = Some(Version(1));
    assert!(decide(&registered(), &cmd, now(), &Rules::default()).is_ok());
}

#[test]
fn rejects_red_without_reason_where_the_site_requires_one() {
    let rules = Rules {
        sites_requiring_red_reason: vec!["plant-a".into()],
        ..Rules::default()
    };
    assert_eq!(
        rejection(&registered(), &set_status(Status::Red), &rules),
        Rejection::ReasonRequired
    );
    let mut with_reason = set_status(Status::Red);
    if let Action::SetStatus(change) = &mut with_reason.action {
        change.reason = Some(ReasonCode::parse("jam").unwrap());
    }
    assert!(decide(&registered(), &with_reason, now(), &rules).is_ok());
    // Other sites, and other statuses, need no reason.
    assert!(decide(&registered(), &set_status(Status::Yellow), now(), &rules).is_ok());
}

#[test]
fn an_empty_metadata_update_changes_nothing() {
    assert!(matches!(
        decide(
            &registered(),
            &command(Action::UpdateMetadata(MetadataPatch::default())),
            now(),
            &Rules::default()
        ),
        Ok(Decision::Unchanged)
    ));
}

#[test]
fn a_retried_command_is_a_duplicate_with_the_original_version() {
    let mut cmd = set_status(Status::Red);
    cmd.command_id = Some("k-1".into());
    let state = step(registered(), &cmd, now());
    let state = step(state, &set_status(Status::Green), now());
    match decide(&state, &cmd, now(), &Rules::default()).unwrap() {
        Decision::Duplicate { version, seq } => {
            assert_eq!(version, Version(2));
            assert_eq!(seq, 20, "the sequence of the original event is remembered");
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
}

#[test]
fn a_reused_key_with_another_request_is_refused() {
    let mut cmd = set_status(Status::Red);
    cmd.command_id = Some("k-1".into());
    let state = step(registered(), &cmd, now());
    let mut other = set_status(Status::Green);
    other.command_id = Some("k-1".into());
    assert_eq!(
        rejection(&state, &other, &Rules::default()),
        Rejection::IdempotencyKeyReused
    );
}

#[test]
fn recent_keys_are_bounded_and_survive_a_reload_from_the_last_event() {
    let mut state = registered();
    let mut last_event = None;
    for i in 0..(RECENT_COMMANDS + 3) {
        let mut cmd = set_status(Status::Green);
        cmd.command_id = Some(format!("k-{i}"));
        let Decision::Append(event) = decide(&state, &cmd, now(), &Rules::default()).unwrap()
        else {
            panic!()
        };
        state = apply(state, &event, 100 + i as u64);
        last_event = Some(event);
    }
    assert_eq!(state.recent.len(), RECENT_COMMANDS);
    // A fresh actor reads back only the last event and still knows the recent keys.
    let event = last_event.unwrap();
    let reloaded = apply(
        EquipmentState::default(),
        &event,
        100 + RECENT_COMMANDS as u64 + 2,
    );
    assert_eq!(reloaded.recent, state.recent);
    let mut retry = set_status(Status::Green);
    retry.command_id = Some(format!("k-{}", RECENT_COMMANDS + 1));
    assert!(matches!(
        decide(&reloaded, &retry, now(), &Rules::default()).unwrap(),
        Decision::Duplicate { .. }
    ));
}

#[test]
fn a_redelivered_ingest_message_is_applied_once() {
    let ingest = |epoch: i64, seq: u64, status: Status| Command {
        ingest: Some(IngestMark {
            epoch,
            seq,
            stored_at: now() - Duration::seconds(30),
        }),
        source: Source::Device,
        ..set_status(status)
    };
    let state = step(registered(), &ingest(7, 40, Status::Red), now());
    assert_eq!((state.ingest_epoch, state.ingest_high), (7, 40));
    let e = state.equipment.as_ref().unwrap();
    assert_eq!(
        e.device_seen_at,
        Some(now() - Duration::seconds(30)),
        "heard when stored, not when applied"
    );
    let version = e.version;
    // The same message again (its ack was lost), and an older one: both already applied.
    for seq in [40, 12] {
        assert_eq!(
            decide(
                &state,
                &ingest(7, seq, Status::Red),
                now(),
                &Rules::default()
            ),
            Ok(Decision::AlreadyApplied)
        );
    }
    // An API change in between keeps the mark (it travels in every event).
    let state = step(state, &set_status(Status::Green), now());
    assert_eq!(state.ingest_high, 40);
    let state = step(state, &ingest(7, 41, Status::Yellow), now());
    assert_eq!(state.ingest_high, 41);
    assert_eq!(state.equipment.unwrap().version, Version(version.0 + 2));
}

#[test]
fn a_recreated_ingest_stream_starts_its_sequences_over() {
    let ingest = |epoch: i64, seq: u64| Command {
        ingest: Some(IngestMark {
            epoch,
            seq,
            stored_at: now(),
        }),
        source: Source::Device,
        ..set_status(Status::Red)
    };
    let state = step(registered(), &ingest(1, 500), now());
    // Sequence 3 of a new stream is a new message, not an old one.
    let state = step(state, &ingest(2, 3), now());
    assert_eq!((state.ingest_epoch, state.ingest_high), (2, 3));
    assert_eq!(
        decide(&state, &ingest(2, 3), now(), &Rules::default()),
        Ok(Decision::AlreadyApplied)
    );
}

#[test]
fn events_round_trip_through_json() {
    let state = registered();
    let Decision::Append(event) =
        decide(&state, &set_status(Status::Red), now(), &Rules::default()).unwrap()
    else {
        panic!()
    };
    let json = serde_json::to_vec(&event).unwrap();
    let back: Event = serde_json::from_slice(&json).unwrap();
    assert_eq!(&back, event.as_ref());
}

#[test]
fn a_red_machine_is_alerted_once_per_red_period() {
    let rules = Rules::default();
    let red_too_long = command(Action::RaiseAlert(AlertKind::RedTooLong {
        after_secs: 600,
    }));
    let state = step(registered(), &set_status(Status::Red), now());
    // Not yet due.
    assert_eq!(
        decide(
            &state,
            &red_too_long,
            now() + Duration::seconds(599),
            &rules
        ),
        Err(Rejection::AlertNotDue)
    );
    let later = now() + Duration::seconds(600);
    let Ok(Decision::Append(event)) = decide(&state, &red_too_long, later, &rules) else {
        panic!("due");
    };
    assert_eq!(event.kind, EventKind::AlertRaised);
    assert_eq!(event.alert.as_ref().unwrap().since, now());
    assert_eq!(event.state.status, Status::Red, "the state is as it was");
    let state = apply(state, &event, 30);
    // The same red period: never again, however late (also after a reload from the event).
    let reloaded = apply(EquipmentState::default(), &event, 30);
    for s in [&state, &reloaded] {
        assert_eq!(
            decide(s, &red_too_long, later + Duration::hours(5), &rules),
            Err(Rejection::AlertNotDue)
        );
    }
    // A new red period may be alerted again.
    let state = step(state, &set_status(Status::Green), later);
    let state = step(
        state,
        &set_status(Status::Red),
        later + Duration::seconds(1),
    );
    assert!(matches!(
        decide(
            &state,
            &red_too_long,
            later + Duration::seconds(700),
            &rules
        ),
        Ok(Decision::Append(_))
    ));
}

#[test]
fn a_silent_device_is_alerted_once_per_silence() {
    let rules = Rules::default();
    let silent = command(Action::RaiseAlert(AlertKind::DeviceSilent {
        after_secs: 60,
    }));
    // No device ever reported: nothing to watch.
    assert_eq!(
        decide(&registered(), &silent, now() + Duration::hours(1), &rules),
        Err(Rejection::AlertNotDue)
    );
    let from_device = Command {
        source: Source::Device,
        ..set_status(Status::Green)
    };
    let state = step(registered(), &from_device, now());
    assert_eq!(
        state.equipment.as_ref().unwrap().device_seen_at,
        Some(now())
    );
    let at = now() + Duration::seconds(60);
    let Ok(Decision::Append(event)) = decide(&state, &silent, at, &rules) else {
        panic!("due");
    };
    let state = apply(state, &event, 40);
    assert_eq!(
        decide(&state, &silent, at + Duration::hours(1), &rules),
        Err(Rejection::AlertNotDue)
    );
    // The device speaks again, then falls silent again: a new occurrence.
    let state = step(state, &from_device, at + Duration::seconds(1));
    assert!(matches!(
        decide(&state, &silent, at + Duration::seconds(61), &rules),
        Ok(Decision::Append(_))
    ));
}

fn scoped(cmd: Command, areas: &[&str]) -> Command {
    let areas = areas
        .iter()
        .map(|a| crate::scope::Area::parse(a).unwrap())
        .collect();
    Command {
        scope: Some(crate::scope::Scope(areas)),
        ..cmd
    }
}

#[test]
fn a_scoped_caller_changes_only_machines_in_its_area() {
    let state = registered(); // plant-a / line-1
    let rules = Rules::default();
    for areas in [
        &["*"][..],
        &["plant-a"],
        &["plant-a/line-1"],
        &["x/y", "plant-a"],
    ] {
        let cmd = scoped(set_status(Status::Red), areas);
        assert!(decide(&state, &cmd, now(), &rules).is_ok(), "{areas:?}");
    }
    for areas in [
        &[][..],
        &["plant-b"],
        &["plant-a/line-2"],
        &["plant-b/line-1"],
    ] {
        let cmd = scoped(set_status(Status::Red), areas);
        assert_eq!(
            rejection(&state, &cmd, &rules),
            Rejection::OutOfScope,
            "{areas:?}"
        );
    }
}

#[test]
fn registering_or_moving_needs_the_scope_of_both_places() {
    let rules = Rules::default();
    let empty = EquipmentState::default();
    assert!(
        decide(
            &empty,
            &scoped(register(), &["plant-a/line-1"]),
            now(),
            &rules
        )
        .is_ok()
    );
    assert_eq!(
        rejection(&empty, &scoped(register(), &["plant-a/line-2"]), &rules),
        Rejection::OutOfScope
    );
    let state = registered();
    let move_to_line_2 = command(Action::UpdateMetadata(MetadataPatch {
        line: Some(Line::parse("line-2").unwrap()),
        ..MetadataPatch::default()
    }));
    assert_eq!(
        rejection(
            &state,
            &scoped(move_to_line_2.clone(), &["plant-a/line-1"]),
            &rules
        ),
        Rejection::OutOfScope,
        "may not move a machine out of its scope"
    );
    assert_eq!(
        rejection(
            &state,
            &scoped(move_to_line_2.clone(), &["plant-a/line-2"]),
            &rules
        ),
        Rejection::OutOfScope,
        "may not pull a machine into its scope"
    );
    let both = scoped(move_to_line_2, &["plant-a/line-1", "plant-a/line-2"]);
    assert!(decide(&state, &both, now(), &rules).is_ok());
}

#[test]
fn an_idempotent_replay_is_not_shown_to_an_out_of_scope_caller() {
    let mut first = set_status(Status::Red);
    first.command_id = Some("k-1".into());
    let state = step(registered(), &first, now());
    let replay = scoped(first, &["plant-b"]);
    assert_eq!(
        rejection(&state, &replay, &Rules::default()),
        Rejection::OutOfScope
    );
}

#[test]
fn another_caller_cannot_replay_a_key_it_did_not_use() {
    let mut first = set_status(Status::Red);
    first.command_id = Some("k-1".into());
    let state = step(registered(), &first, now());
    let same_caller = first.clone();
    assert!(matches!(
        decide(&state, &same_caller, now(), &Rules::default()).unwrap(),
        Decision::Duplicate { .. }
    ));
    let other = Command {
        updated_by: "mallory".into(),
        ..first
    };
    assert_eq!(
        rejection(&state, &other, &Rules::default()),
        Rejection::IdempotencyKeyReused
    );
}
