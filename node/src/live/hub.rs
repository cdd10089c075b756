//! The node's live hub: the last event of every machine and a broadcast of every new one,
//! read from `EQ_EVENTS` itself with one ordered consumer (last event per subject first,
//! then every event in stream order). Reading the log rather than the live subjects means
//! the hub sees every change made anywhere in the cluster, with no gap, in order.
//!
//! A live client subscribes under the same lock that applies each event, so the snapshot it
//! gets and the changes it receives meet exactly: nothing missed, nothing twice. Positions
//! are `EQ_EVENTS` stream sequences, which is what SSE `Last-Event-ID` carries; a client
//! that comes back after a short break is served from a ring of recent events, one away for
//! longer from the stream itself.
//!
//! The hub follows the log only while someone watches (and for a while after the last
//! client left, `--live-linger-secs`): a node without dashboards pays nothing for it. A client that comes first
//! waits until the hub has caught up.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use eq_actors::Status;
use eq_actors::equipment::EventKind;
use eq_actors::subjects::Subjects;
use futures::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use serde::Deserialize;
use serde_json::value::RawValue;

/// Recent events kept for clients that resume (`Last-Event-ID`).
const RING: usize = 65_536;
/// Events a slow live client may fall behind before it is cut off (it then resumes).
const CLIENT_BACKLOG: usize = 8_192;
/// A replay of stored events that delivers nothing for this long has delivered them all.
const REPLAY_QUIET: Duration = Duration::from_secs(2);

/// One event as live clients see it, serialized once for all of them.
#[derive(Debug)]
pub struct LiveItem {
    /// `EQ_EVENTS` stream sequence: the SSE id.
    pub seq: u64,
    pub id: String,
    pub site: String,
    pub line: String,
    /// Where the machine was before this event (a move between lines shows up on both).
    pub previous_site: String,
    pub previous_line: String,
    pub version: u64,
    pub decommissioned: bool,
    /// The SSE `data`: a `LiveEvent` (see the gateway's models) as JSON.
    pub json: String,
}

/// Which machines a client wants.
#[derive(Debug, Clone, Default)]
pub struct LiveFilter {
    pub site: Option<String>,
    pub line: Option<String>,
    pub id: Option<String>,
}

impl LiveFilter {
    pub fn matches(&self, item: &LiveItem) -> bool {
        let at = |site: &str, line: &str| {
            self.site.as_deref().is_none_or(|s| s == site)
                && self.line.as_deref().is_none_or(|l| l == line)
        };
        self.id.as_deref().is_none_or(|id| id == item.id)
            && (at(&item.site, &item.line) || at(&item.previous_site, &item.previous_line))
    }
}

/// Where a new live client starts.
pub enum Start {
    /// The current state of every matching machine, then changes after `position`.
    Snapshot {
        items: Vec<Arc<LiveItem>>,
        position: u64,
    },
    /// Every matching change after the client's last id, then changes after `position`.
    Resume {
        items: Vec<Arc<LiveItem>>,
        position: u64,
    },
    /// The client's last id is older than the ring: replay `(from, position]` from the
    /// stream, then changes after `position`.
    Replay { from: u64, position: u64 },
}

#[derive(Default)]
struct HubState {
    latest: HashMap<String, Arc<LiveItem>>,
    recent: VecDeque<Arc<LiveItem>>,
    position: u64,
    /// The ring holds every event after this position (while loading, it holds only the
    /// last event of each machine, so a resume from before must be replayed).
    complete_after: Option<u64>,
}

/// See the module documentation.
pub struct LiveHub {
    state: Mutex<HubState>,
    changes: broadcast::Sender<Arc<LiveItem>>,
    caught_up: watch::Sender<bool>,
    /// Set by clients that want the hub to follow the log.
    wanted: watch::Sender<bool>,
    /// How long the hub keeps following the log after its last client left.
    linger: Duration,
    stream: jetstream::stream::Stream,
    subjects: Subjects,
}

impl LiveHub {
    /// Starts following `EQ_EVENTS` until `shutdown`.
    pub fn start(
        stream: jetstream::stream::Stream,
        subjects: Subjects,
        linger: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (changes, _) = broadcast::channel(CLIENT_BACKLOG);
        let hub = Arc::new(Self {
            state: Mutex::new(HubState::default()),
            changes,
            caught_up: watch::Sender::new(false),
            wanted: watch::Sender::new(false),
            linger,
            stream,
            subjects,
        });
        tokio::spawn(hub.clone().follow(shutdown));
        hub
    }

    /// Makes the hub follow the log (if it did not) and waits until it has read the last
    /// event of every machine (or the timeout).
    pub async fn wait_caught_up(&self, timeout: Duration) -> bool {
        self.wanted.send_replace(true);
        let mut rx = self.caught_up.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Live clients connected to this node.
    pub fn subscribers(&self) -> usize {
        self.changes.receiver_count()
    }

    /// Registers a client: where it starts and its feed of later changes, taken together.
    pub fn subscribe(
        &self,
        filter: &LiveFilter,
        last_event_id: Option<u64>,
    ) -> (Start, broadcast::Receiver<Arc<LiveItem>>) {
        let state = self.state.lock().expect("hub lock");
        let receiver = self.changes.subscribe();
        let position = state.position;
        let start = match last_event_id {
            None => {
                let mut items: Vec<Arc<LiveItem>> = state
                    .latest
                    .values()
                    .filter(|i| !i.decommissioned && filter.matches(i))
                    .cloned()
                    .collect();
                items.sort_by(|a, b| a.id.cmp(&b.id));
                Start::Snapshot { items, position }
            }
            // A client ahead of this hub (it came from another node): nothing to resend,
            // and nothing up to its own position either.
            Some(last) if last >= position => Start::Resume {
                items: Vec::new(),
                position: last,
            },
            Some(last) => {
                let oldest = state.recent.front().map_or(u64::MAX, |i| i.seq);
                let complete = state.complete_after.is_some_and(|from| last >= from);
                if complete && oldest <= last + 1 {
                    let items = state
                        .recent
                        .iter()
                        .filter(|i| i.seq > last && filter.matches(i))
                        .cloned()
                        .collect();
                    Start::Resume { items, position }
                } else {
                    Start::Replay {
                        from: last,
                        position,
                    }
                }
            }
        };
        (start, receiver)
    }

    /// Reads the events in `(from, to]` from the stream, for a client that resumes after a
    /// long break; sends every matching one to `out`, in order.
    pub async fn replay(
        &self,
        filter: &LiveFilter,
        from: u64,
        to: u64,
        out: tokio::sync::mpsc::Sender<Arc<LiveItem>>,
    ) -> anyhow::Result<()> {
        if from >= to {
            return Ok(());
        }
        let filter_subject = match &filter.id {
            Some(id) => format!("{}{id}", self.subjects.events_all().trim_end_matches('>')),
            None => self.subjects.events_all(),
        };
        let consumer = self
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject,
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from + 1,
                },
                ..Default::default()
            })
            .await?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(());
        }
        let mut messages = consumer.messages().await?;
        // The previous location of each machine, for moves between lines.
        let mut located: HashMap<String, (String, String)> = HashMap::new();
        // Everything up to `to` is stored already: once the stream goes quiet, it is done
        // (a filter that matches nothing more must not wait for the next change).
        while let Ok(Some(message)) = tokio::time::timeout(REPLAY_QUIET, messages.next()).await {
            let message = message?;
            let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
            let seq = info.stream_sequence;
            if seq > to {
                break;
            }
            let item = to_item(seq, &message.payload, |id| located.get(id).cloned())?;
            located.insert(item.id.clone(), (item.site.clone(), item.line.clone()));
            if filter.matches(&item) && out.send(Arc::new(item)).await.is_err() {
                break;
            }
            if seq >= to || info.pending == 0 {
                break;
            }
        }
        Ok(())
    }

    async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let mut wanted = self.wanted.subscribe();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wanted.wait_for(|w| *w) => {}
            }
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.until_unwatched() => {
                    info!("live hub idle: no clients; it stops following the event log");
                    self.forget();
                    continue;
                }
                r = self.follow_once() => r,
            };
            if let Err(error) = result {
                warn!(%error, "live hub lost the event stream; following it again");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Returns once no client has been connected for the linger time.
    async fn until_unwatched(&self) {
        let mut idle_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if self.changes.receiver_count() > 0 {
                idle_since = None;
                continue;
            }
            let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= self.linger {
                return;
            }
        }
    }

    /// Drops what the hub knows; the next client starts it from the log's present again.
    fn forget(&self) {
        self.wanted.send_replace(false);
        self.caught_up.send_replace(false);
        *self.state.lock().expect("hub lock") = HubState::default();
    }

    async fn follow_once(&self) -> anyhow::Result<()> {
        let position = self.state.lock().expect("hub lock").position;
        // First time: the last event of each machine. After a failure: on from where we were
        // (the ordered consumer itself also resumes after its own hiccups).
        let deliver_policy = if position == 0 {
            DeliverPolicy::LastPerSubject
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: position + 1,
            }
        };
        let mut stream = self.stream.clone();
        if stream.info().await?.state.messages == 0 {
            self.state
                .lock()
                .expect("hub lock")
                .complete_after
                .get_or_insert(0);
            self.caught_up.send_replace(true);
        }
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: self.subjects.events_all(),
                deliver_policy,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            if let Err(error) = self.apply(seq, &message.payload) {
                warn!(seq, %error, "undecodable event skipped by the live hub");
            }
            if pending == 0 && !*self.caught_up.borrow() {
                info!(position = seq, "live hub caught up");
                let mut state = self.state.lock().expect("hub lock");
                let position = state.position;
                state.complete_after.get_or_insert(position);
                drop(state);
                self.caught_up.send_replace(true);
            }
        }
        anyhow::bail!("event stream ended")
    }

    fn apply(&self, seq: u64, payload: &[u8]) -> anyhow::Result<()> {
        let mut state = self.state.lock().expect("hub lock");
        if seq <= state.position {
            return Ok(());
        }
        let item = Arc::new(to_item(seq, payload, |id| {
            state
                .latest
                .get(id)
                .map(|i| (i.site.clone(), i.line.clone()))
        })?);
        state.latest.insert(item.id.clone(), item.clone());
        state.recent.push_back(item.clone());
        if state.recent.len() > RING {
            state.recent.pop_front();
        }
        state.position = seq;
        // Sent under the lock: a client subscribing now gets either this event in its
        // snapshot or in its feed, never both, never neither.
        let _ = self.changes.send(item);
        metrics::gauge!("eq_live_position").set(seq as f64);
        Ok(())
    }
}

/// The parts of a stored event the hub needs; `state` is kept as the raw JSON it was
/// written as, so each event is parsed once and never re-encoded field by field.
#[derive(Deserialize)]
struct EventHead<'a> {
    kind: EventKind,
    equipment_id: String,
    #[serde(default)]
    previous_status: Option<Status>,
    #[serde(borrow)]
    state: &'a RawValue,
}

#[derive(Deserialize)]
struct StateHead {
    site: String,
    line: String,
    version: u64,
    #[serde(default)]
    decommissioned: bool,
}

/// Builds the live item of a stored event: the SSE data is
/// `{"seq", "kind", "equipment": <the event's state, as stored>, "previous_status"}`.
/// `previous` gives a machine's location before this event, if known (parsed once).
fn to_item(
    seq: u64,
    payload: &[u8],
    previous: impl FnOnce(&str) -> Option<(String, String)>,
) -> anyhow::Result<LiveItem> {
    let head: EventHead = serde_json::from_slice(payload)?;
    let state: StateHead = serde_json::from_str(head.state.get())?;
    let (previous_site, previous_line) =
        previous(&head.equipment_id).unwrap_or_else(|| (state.site.clone(), state.line.clone()));
    let json = format!(
        r#"{{"seq":{seq},"kind":{},"equipment":{},"previous_status":{}}}"#,
        serde_json::to_string(&head.kind)?,
        head.state.get(),
        serde_json::to_string(&head.previous_status)?,
    );
    Ok(LiveItem {
        seq,
        id: head.equipment_id,
        site: state.site,
        line: state.line,
        previous_site,
        previous_line,
        version: state.version,
        decommissioned: state.decommissioned,
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, site: &str, line: &str, previous: (&str, &str)) -> LiveItem {
        LiveItem {
            seq: 1,
            id: id.into(),
            site: site.into(),
            line: line.into(),
            previous_site: previous.0.into(),
            previous_line: previous.1.into(),
            version: 1,
            decommissioned: false,
            json: String::new(),
        }
    }

    #[test]
    fn an_item_carries_the_stored_state_without_re_encoding_it() {
        let payload = br#"{"kind":"status_changed","equipment_id":"press-1","version":4,"recorded_at":"2026-11-30T08:00:00Z","previous_status":"green","state":{"id":"press-1","site":"a","line":"l1","status":"red","version":4,"name":"P"},"recent_commands":[{"key":"k","fingerprint":1,"version":4}]}"#;
        let item = to_item(9, payload, |_| Some(("a".into(), "l0".into()))).unwrap();
        assert_eq!(
            (item.id.as_str(), item.version, item.seq),
            ("press-1", 4, 9)
        );
        assert_eq!(
            (item.previous_line.as_str(), item.line.as_str()),
            ("l0", "l1")
        );
        let data: serde_json::Value = serde_json::from_str(&item.json).unwrap();
        assert_eq!(
            data,
            serde_json::json!({"seq": 9, "kind": "status_changed", "previous_status": "green",
                "equipment": {"id":"press-1","site":"a","line":"l1","status":"red","version":4,"name":"P"}})
        );
        assert!(to_item(1, b"{not json", |_| None).is_err());
    }

    #[test]
    fn filters_by_site_line_and_id_and_see_moves_out() {
        let line_1 = LiveFilter {
            site: Some("a".into()),
            line: Some("l1".into()),
            id: None,
        };
        assert!(line_1.matches(&item("m", "a", "l1", ("a", "l1"))));
        assert!(!line_1.matches(&item("m", "a", "l2", ("a", "l2"))));
        assert!(!line_1.matches(&item("m", "b", "l1", ("b", "l1"))));
        // A machine moved from line 1 to line 2: line 1's watchers see it leave.
        assert!(line_1.matches(&item("m", "a", "l2", ("a", "l1"))));
        let one = LiveFilter {
            id: Some("m".into()),
            ..LiveFilter::default()
        };
        assert!(one.matches(&item("m", "x", "y", ("x", "y"))));
        assert!(!one.matches(&item("n", "x", "y", ("x", "y"))));
    }
}
