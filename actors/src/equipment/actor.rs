//! The equipment actor: owns one machine's state, decides each command with the pure state
//! machine and appends the event to JetStream before it answers. All I/O lives here; all
//! rules live in [`super::state`].

use std::sync::Arc;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{Instrument, debug, warn};

use super::state::{Command, Decision, Equipment, Rejection, apply, decide};
use crate::domain::EquipmentId;
use crate::shard::ShardContext;
use crate::store::{Loaded, StoreError};

/// The answer to a command that was accepted (or recognised as a retry).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// The resulting state (for a retry: the state the original command produced).
    pub equipment: Equipment,
    /// This was a retry of a command already applied; no event was written.
    pub duplicate: bool,
}

/// Why a command got no outcome.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CommandError {
    /// The state machine refused it; nothing was written.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// JetStream refused the append because someone else wrote first: this actor's view was
    /// stale. Nothing was written; it is safe to retry (the actor reloads first).
    #[error("stale writer fenced off; retry")]
    Fenced,
    /// The event store did not answer in time; the command may or may not have been
    /// applied (a retry with the same idempotency key is safe).
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// The actor stopped before it answered (a panic, or passivation racing the command).
    #[error("equipment actor stopped before answering")]
    ActorStopped,
    /// No shard on this node owns the equipment (cluster hand-off in progress).
    #[error("shard not hosted here")]
    NotHosted,
    /// The command did not get an answer before its deadline.
    #[error("timed out")]
    TimedOut,
}

impl CommandError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::Rejected(r) => r.code(),
            CommandError::Fenced => "fenced",
            CommandError::Unavailable(_) => "unavailable",
            CommandError::ActorStopped => "actor_stopped",
            CommandError::NotHosted => "not_hosted",
            CommandError::TimedOut => "timed_out",
        }
    }

    /// Whether a retry may succeed without the client changing anything.
    pub fn is_transient(&self) -> bool {
        !matches!(self, CommandError::Rejected(_))
    }
}

/// A metric label for a command's result: `accepted`, `duplicate` or the error code.
pub fn outcome_label(result: &Result<Outcome, CommandError>) -> &'static str {
    match result {
        Ok(o) if o.duplicate => "duplicate",
        Ok(_) => "accepted",
        Err(e) => e.code(),
    }
}

/// Replies to a command.
pub type CommandReply = RpcReplyPort<Result<Outcome, CommandError>>;

/// Messages an equipment actor handles.
pub enum EquipmentMsg {
    /// Decide and persist a command, as part of the caller's trace (the span it was sent
    /// from: an HTTP request, a device message, a routed request from another node).
    Execute(Box<Command>, CommandReply, tracing::Span),
    /// The current state (`None`: never registered).
    Get(RpcReplyPort<Result<Option<Equipment>, CommandError>>),
    /// Panics inside the handler: lets tests prove that the supervisor restarts the actor
    /// with its state intact. Not reachable from any public interface (HTTP or NATS).
    Crash,
}

/// The equipment actor (state lives in [`EquipmentActorState`]).
pub struct EquipmentActor;

/// What the actor is started with.
pub struct EquipmentArgs {
    pub id: EquipmentId,
    pub ctx: Arc<ShardContext>,
    /// The state a previous actor of this machine handed back (no JetStream read needed).
    pub preloaded: Option<Loaded>,
}

/// The actor's state: the machine's state is read lazily, on the first message, so that
/// activation never blocks the shard supervisor on I/O.
pub struct EquipmentActorState {
    id: EquipmentId,
    ctx: Arc<ShardContext>,
    loaded: Option<Loaded>,
}

impl Actor for EquipmentActor {
    type Msg = EquipmentMsg;
    type State = EquipmentActorState;
    type Arguments = EquipmentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: EquipmentArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(EquipmentActorState {
            id: args.id,
            ctx: args.ctx,
            loaded: args.preloaded,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The I/O futures are boxed: an actor's task is allocated at the size of its largest
        // future, and the JetStream calls inline would make every idle actor several KiB.
        match message {
            EquipmentMsg::Execute(command, reply, caller) => {
                let span = tracing::info_span!(
                    parent: &caller,
                    "equipment.command",
                    equipment_id = %state.id,
                    version = tracing::field::Empty,
                    outcome = tracing::field::Empty,
                );
                let result = Box::pin(state.execute(*command))
                    .instrument(span.clone())
                    .await;
                span.record("outcome", outcome_label(&result));
                if let Ok(outcome) = &result {
                    span.record("version", outcome.equipment.version.0);
                }
                debug!(parent: &span, "command handled");
                let _ = reply.send(result);
            }
            EquipmentMsg::Get(reply) => {
                let result = Box::pin(state.ensure_loaded())
                    .await
                    .map(|l| l.state.equipment.clone());
                let _ = reply.send(result);
            }
            EquipmentMsg::Crash => panic!("crash requested for equipment {}", state.id),
        }
        Ok(())
    }
}

impl EquipmentActorState {
    /// The state to keep when the actor stops (None: not loaded or uncertain).
    pub fn into_loaded(self) -> Option<Loaded> {
        self.loaded
    }

    async fn ensure_loaded(&mut self) -> Result<&Loaded, CommandError> {
        if self.loaded.is_none() {
            let loaded = self
                .ctx
                .store
                .load(&self.id)
                .await
                .map_err(|e| CommandError::Unavailable(e.to_string()))?;
            debug!(equipment_id = %self.id, last_seq = loaded.last_seq, "state loaded");
            self.loaded = Some(loaded);
        }
        Ok(self.loaded.as_ref().expect("loaded just above"))
    }

    async fn execute(&mut self, command: Command) -> Result<Outcome, CommandError> {
        self.ensure_loaded().await?;
        let loaded = self.loaded.as_ref().expect("loaded just above");
        // Per-equipment server time never goes backwards, even if the host clock does.
        let now = match &loaded.state.equipment {
            Some(e) => Utc::now().max(e.updated_at),
            None => Utc::now(),
        };
        let decision = decide(&loaded.state, &command, now, &self.ctx.rules)?;
        let last_seq = loaded.last_seq;
        let current = loaded.state.equipment.clone();
        match decision {
            Decision::Duplicate { version, seq } => {
                let equipment = match current {
                    Some(e) if e.version == version => e,
                    _ => self.event_state_at(seq).await?,
                };
                Ok(Outcome {
                    equipment,
                    duplicate: true,
                })
            }
            // A redelivery is a replay; a change of nothing is a plain answer.
            Decision::AlreadyApplied => current_state(current, true),
            Decision::Unchanged => current_state(current, false),
            Decision::Append(event) => {
                match self.ctx.store.append(&event, last_seq).await {
                    Ok(appended) if !appended.duplicate => {
                        let previous = self.loaded.take().map(|l| l.state).unwrap_or_default();
                        self.loaded = Some(Loaded {
                            state: apply(previous, &event, appended.seq),
                            last_seq: appended.seq,
                        });
                        self.ctx.notify(&event, &appended.payload);
                        Ok(Outcome {
                            equipment: event.state,
                            duplicate: false,
                        })
                    }
                    Ok(appended) => {
                        // JetStream knew the message id although our state did not: our
                        // view is stale. Answer with the original event and reload next time.
                        self.loaded = None;
                        let equipment = self.event_state_at(appended.seq).await?;
                        Ok(Outcome {
                            equipment,
                            duplicate: true,
                        })
                    }
                    Err(StoreError::Fenced) => {
                        warn!(equipment_id = %self.id, last_seq, "append fenced: stale state dropped");
                        metrics::counter!("eq_fenced_appends_total").increment(1);
                        self.loaded = None;
                        Err(CommandError::Fenced)
                    }
                    Err(e) => {
                        // The append may have landed: forget what we think we know.
                        self.loaded = None;
                        Err(CommandError::Unavailable(e.to_string()))
                    }
                }
            }
        }
    }

    async fn event_state_at(&self, seq: u64) -> Result<Equipment, CommandError> {
        self.ctx
            .store
            .event_at(seq)
            .await
            .map(|e| e.state)
            .map_err(|e| CommandError::Unavailable(e.to_string()))
    }
}

/// The answer of a command that writes nothing: the machine as it is.
fn current_state(current: Option<Equipment>, duplicate: bool) -> Result<Outcome, CommandError> {
    match current {
        Some(equipment) => Ok(Outcome {
            equipment,
            duplicate,
        }),
        None => Err(CommandError::Rejected(Rejection::NotFound)),
    }
}
