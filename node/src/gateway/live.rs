//! `Live` operations: `GET /v1/live`, the floor's changes as Server-Sent Events, and the
//! floor board page at `/` that shows them.
//!
//! A client first gets the current state of every matching machine (`snapshot` events),
//! then `ready`, then every change (`change` events), with no gap and no duplicate between
//! the two (the hub hands both out under one lock). Every `change` and `ready` carries its
//! `EQ_EVENTS` sequence as the SSE id, so a client that reconnects with `Last-Event-ID`
//! gets exactly the changes it missed and no snapshot.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use poem::web::Data;
use poem::web::sse::Event as SseEvent;
use poem_openapi::payload::{EventStream, Html};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{OpenApi, param::Header, param::Query};
use tokio::sync::{broadcast, mpsc};

use super::auth::StreamCaller;
use super::models::LiveEvent;
use super::problem::ApiError;
use super::token::{LastEventId, Token};
use super::{ApiTags, AppState};
use crate::auth::{Operation, Principal};
use crate::live::hub::{LiveFilter, LiveItem, Start};

/// How long a new client waits for a node that just started to read the floor's state.
const CATCH_UP: Duration = Duration::from_secs(10);
/// Frames buffered per client between the hub and the socket.
const CLIENT_BUFFER: usize = 256;

/// The floor board: one page, no external resources (it works without internet).
const BOARD: &str = include_str!("board/index.html");

/// One SSE frame: the event type, its id, and the [`LiveEvent`] JSON that the hub
/// serialized once for every client (the spec documents it as a `LiveEvent`).
pub struct LiveFrame {
    event_type: &'static str,
    id: Option<u64>,
    json: Arc<str>,
}

impl LiveFrame {
    fn of(event_type: &'static str, item: &LiveItem, with_id: bool) -> Self {
        LiveFrame {
            event_type,
            id: with_id.then_some(item.seq),
            json: Arc::from(item.json.as_str()),
        }
    }

    fn ready(position: u64) -> Self {
        LiveFrame {
            event_type: "ready",
            id: Some(position),
            json: Arc::from(LiveEvent::ready(position).to_json_string()),
        }
    }

    fn into_sse(self) -> SseEvent {
        let event = SseEvent::message(self.json.as_ref()).event_type(self.event_type);
        match self.id {
            Some(id) => event.id(id.to_string()),
            None => event,
        }
    }
}

impl Type for LiveFrame {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        LiveEvent::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        LiveEvent::schema_ref()
    }

    fn register(registry: &mut Registry) {
        LiveEvent::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ToJSON for LiveFrame {
    fn to_json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.json).ok()
    }
}

/// Operations of this tag.
#[derive(Default)]
pub struct LiveApi;

#[OpenApi(tag = "ApiTags::Live")]
impl LiveApi {
    /// Watch the floor live (Server-Sent Events)
    ///
    /// First a `snapshot` event per matching machine (its current state), then `ready`, then
    /// a `change` event per accepted change, as soon as it is persisted. Filters combine.
    /// Reconnect with `Last-Event-ID` (browsers do it by themselves) to get exactly the
    /// changes missed, without a new snapshot, then `ready` once caught up. Keep-alive
    /// comments every 15 seconds (`--sse-heartbeat-secs`). Browsers' `EventSource` cannot
    /// send headers: it may pass the token as `access_token` instead.
    #[oai(path = "/v1/live", method = "get", operation_id = "watchLive")]
    async fn live(
        &self,
        state: Data<&Arc<AppState>>,
        caller: StreamCaller,
        /// Only machines of this site.
        site: Query<Option<Token>>,
        /// Only machines of this line.
        line: Query<Option<Token>>,
        /// Only this machine.
        id: Query<Option<Token>>,
        /// The last SSE id received: resume after it.
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<LastEventId>>,
    ) -> Result<EventStream<BoxStream<'static, LiveFrame>>, ApiError> {
        let who = caller.caller().require(Operation::Read)?.clone();
        let resume = match last_event_id.0.as_ref().map(|id| id.as_str().trim()) {
            None | Some("") => None,
            Some(raw) => Some(super::parse_digits(raw).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_last_event_id",
                    "Last-Event-ID must be a sequence number sent by this stream",
                )
            })?),
        };
        let filter = LiveFilter {
            site: site.0.map(Token::into_inner),
            line: line.0.map(Token::into_inner),
            id: id.0.map(Token::into_inner),
        };
        let hub = state.live.clone();
        if !hub.wait_caught_up(CATCH_UP).await {
            return Err(ApiError::unavailable("the live view is still loading"));
        }
        let (start, feed) = hub.subscribe(&filter, resume);
        let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
        tokio::spawn(async move {
            metrics::gauge!("eq_sse_subscribers").increment(1.0);
            stream_to(tx, &hub, &filter, start, feed).await;
            metrics::gauge!("eq_sse_subscribers").decrement(1.0);
        });
        let frames = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        })
        // The token was checked when the stream opened; a wall screen stays connected for
        // days. Once it is revoked or expires the stream ends, and the client's reconnect
        // gets the 401.
        .take_until(token_lapses(state.clone(), who));
        Ok(EventStream::new(frames.boxed())
            // Keep-alive comments: proxies and clients see that a quiet stream is alive, and
            // a client that vanished is noticed when one cannot be written.
            .keep_alive(state.sse_heartbeat)
            .to_event(LiveFrame::into_sse))
    }

    /// The live floor board (a page for browsers and wall screens; not part of the API).
    #[oai(path = "/", method = "get", hidden)]
    async fn board(&self) -> Html<&'static str> {
        Html(BOARD)
    }
}

/// Resolves once `who`'s token is revoked or expired (checked at every keep-alive).
async fn token_lapses(state: Arc<AppState>, who: Principal) {
    loop {
        tokio::time::sleep(state.sse_heartbeat).await;
        if who.expired() || state.auth.revocations.refuses(&who) {
            tracing::info!(subject = %who.subject, "live stream ended: token revoked or expired");
            return;
        }
    }
}

/// Feeds one client until it goes away (or falls too far behind: it then reconnects and
/// resumes from its last id).
async fn stream_to(
    tx: mpsc::Sender<LiveFrame>,
    hub: &crate::live::LiveHub,
    filter: &LiveFilter,
    start: Start,
    feed: broadcast::Receiver<Arc<LiveItem>>,
) {
    let position = match start {
        Start::Snapshot { items, position } => {
            for item in items {
                if tx
                    .send(LiveFrame::of("snapshot", &item, false))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if tx.send(LiveFrame::ready(position)).await.is_err() {
                return;
            }
            position
        }
        Start::Resume { items, position } => {
            for item in items {
                if tx.send(LiveFrame::of("change", &item, true)).await.is_err() {
                    return;
                }
            }
            // Caught up again: clients wait for this to know they missed nothing.
            if tx.send(LiveFrame::ready(position)).await.is_err() {
                return;
            }
            position
        }
        Start::Replay { from, position } => {
            let (replay_tx, mut replay_rx) = mpsc::channel::<Arc<LiveItem>>(CLIENT_BUFFER);
            // The receiver moves into `forward`: if the client goes away, it is dropped and
            // the reader's next send fails, so neither side waits for the other.
            let forward = async move {
                while let Some(item) = replay_rx.recv().await {
                    if tx.send(LiveFrame::of("change", &item, true)).await.is_err() {
                        return None;
                    }
                }
                Some(tx)
            };
            let read = hub.replay(filter, from, position, replay_tx);
            let (forwarded, read) = tokio::join!(forward, read);
            let Some(tx) = forwarded else { return };
            if let Err(error) = read {
                // Never claim to be caught up after a gap: end the stream, the client
                // reconnects and resumes from its last id.
                tracing::warn!(%error, "live replay failed; closing the stream");
                return;
            }
            if tx.send(LiveFrame::ready(position)).await.is_err() {
                return;
            }
            return follow(tx, filter, position, feed).await;
        }
    };
    follow(tx, filter, position, feed).await;
}

/// Sends every matching change after `position` until the client goes away.
async fn follow(
    tx: mpsc::Sender<LiveFrame>,
    filter: &LiveFilter,
    position: u64,
    mut feed: broadcast::Receiver<Arc<LiveItem>>,
) {
    loop {
        // A client that went away is noticed when its socket is next written (at the latest
        // the keep-alive), which drops the stream's receiver: stop then, even if no event
        // for this client ever comes again.
        let received = tokio::select! {
            _ = tx.closed() => return,
            received = feed.recv() => received,
        };
        match received {
            Ok(item) if item.seq > position && filter.matches(&item) => {
                if tx.send(LiveFrame::of("change", &item, true)).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                metrics::counter!("eq_sse_lagged_total").increment(1);
                tracing::debug!(
                    missed,
                    "live client fell behind; it resumes from its last id"
                );
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
