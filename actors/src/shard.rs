//! Shards: each is a ractor supervisor of the equipment actors whose ids hash to it. It
//! activates actors on first use, stops idle ones (keeping their state compactly), and
//! restarts one that panicked (its state comes back from its last event). [`ShardHost`] is a node's set of hosted shards and
//! the only way commands reach actors.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort,
    SupervisionEvent, concurrency,
};
use tracing::{info, warn};

use crate::domain::{EquipmentId, ShardId, shard_of};
use crate::equipment::actor::{
    CommandError, EquipmentActor, EquipmentActorState, EquipmentArgs, EquipmentMsg, Outcome,
};
use crate::equipment::state::{Command, Equipment, Event, Rules};
use crate::store::{EventStore, Loaded};

/// Called with every event (and its JSON, as stored) once JetStream acknowledged it; live
/// fan-out hooks in here.
pub type EventListener = Arc<dyn Fn(&Event, &Bytes) + Send + Sync>;

/// What every actor of a node shares.
pub struct ShardContext {
    pub store: EventStore,
    pub rules: Rules,
    pub listener: Option<EventListener>,
}

impl ShardContext {
    pub(crate) fn notify(&self, event: &Event, payload: &Bytes) {
        if let Some(listener) = &self.listener {
            listener(event, payload);
        }
    }
}

/// Messages a shard supervisor handles.
pub enum ShardMsg {
    /// Deliver a message to an equipment's actor, activating it if needed.
    Route(EquipmentId, EquipmentMsg),
    /// Stop actors idle past `actor_idle`; forget states idle past `idle_timeout`.
    Sweep,
    /// How many actors are running, and how many machines have their state in memory.
    Counts(RpcReplyPort<(usize, usize)>),
}

/// The shard supervisor actor.
pub struct Shard;

/// What a shard is started with.
pub struct ShardArgs {
    pub shard: ShardId,
    pub ctx: Arc<ShardContext>,
    pub actor_idle: Duration,
    pub idle_timeout: Duration,
}

/// A machine this shard holds in memory.
///
/// A ractor actor costs ~7 KB however small its state (two channels and a task), so a
/// machine only has one while it is busy. When its actor has been idle for `actor_idle`, the
/// actor drains and hands its state back (ractor returns it in `ActorTerminated`); the
/// shard keeps that compact state and starts a new actor from it on the next command, with
/// no JetStream read. Messages that arrive while an actor is draining wait in `Stopping`
/// and go to its successor, in order.
enum Resident {
    Active {
        actor: ActorRef<EquipmentMsg>,
        last_used: Instant,
    },
    Stopping {
        pending: Vec<EquipmentMsg>,
        last_used: Instant,
    },
    Idle {
        state: Box<Loaded>,
        last_used: Instant,
    },
}

impl Resident {
    fn last_used(&self) -> Instant {
        match self {
            Resident::Active { last_used, .. }
            | Resident::Stopping { last_used, .. }
            | Resident::Idle { last_used, .. } => *last_used,
        }
    }
}

/// A shard's state: the machines it holds and which actor serves which machine.
pub struct ShardState {
    shard: ShardId,
    ctx: Arc<ShardContext>,
    actor_idle: Duration,
    idle_timeout: Duration,
    resident: HashMap<EquipmentId, Resident>,
    actors: HashMap<ActorId, EquipmentId>,
    running: usize,
}

impl ShardState {
    /// Starts an actor for `id` (from a handed-back state if there is one), delivers
    /// `messages` to it in order and records it as active.
    async fn activate(
        &mut self,
        supervisor: ActorCell,
        id: EquipmentId,
        preloaded: Option<Loaded>,
        messages: Vec<EquipmentMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let args = EquipmentArgs {
            id: id.clone(),
            ctx: self.ctx.clone(),
            preloaded,
        };
        let (actor, _handle) = Actor::spawn_linked(None, EquipmentActor, args, supervisor).await?;
        for message in messages {
            // A fresh actor accepts messages; if it died already, the caller's reply port
            // is dropped and the command is retried by `ShardHost::execute`.
            let _ = actor.send_message(message);
        }
        self.actors.insert(actor.get_id(), id.clone());
        self.resident.insert(
            id,
            Resident::Active {
                actor,
                last_used: Instant::now(),
            },
        );
        self.running += 1;
        metrics::gauge!("eq_active_actors").increment(1.0);
        Ok(())
    }

    /// An actor ended: keep its state (if any) or start its successor for waiting messages.
    async fn on_actor_end(
        &mut self,
        supervisor: ActorCell,
        actor_id: ActorId,
        state: Option<Loaded>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(id) = self.actors.remove(&actor_id) else {
            return Ok(());
        };
        self.running -= 1;
        metrics::gauge!("eq_active_actors").decrement(1.0);
        let (pending, last_used) = match self.resident.remove(&id) {
            Some(Resident::Stopping { pending, last_used }) => (pending, last_used),
            Some(other) => (Vec::new(), other.last_used()),
            None => (Vec::new(), Instant::now()),
        };
        if !pending.is_empty() {
            return self.activate(supervisor, id, state, pending).await;
        }
        if let Some(state) = state {
            self.resident.insert(
                id,
                Resident::Idle {
                    state: Box::new(state),
                    last_used,
                },
            );
        }
        Ok(())
    }
}

impl Actor for Shard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ShardArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let sweep_every = (args.actor_idle.min(args.idle_timeout) / 4)
            .clamp(Duration::from_millis(20), Duration::from_secs(5));
        myself.send_interval(sweep_every, || ShardMsg::Sweep);
        Ok(ShardState {
            shard: args.shard,
            ctx: args.ctx,
            actor_idle: args.actor_idle,
            idle_timeout: args.idle_timeout,
            resident: HashMap::new(),
            actors: HashMap::new(),
            running: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Route(id, msg) => match state.resident.get_mut(&id) {
                Some(Resident::Active { actor, last_used }) => {
                    *last_used = Instant::now();
                    if let Err(MessagingErr::SendErr(msg)) = actor.send_message(msg) {
                        // It is stopping on its own: wait for its state, then hand over.
                        let last_used = *last_used;
                        state.resident.insert(
                            id,
                            Resident::Stopping {
                                pending: vec![msg],
                                last_used,
                            },
                        );
                    }
                }
                Some(Resident::Stopping { pending, last_used }) => {
                    *last_used = Instant::now();
                    pending.push(msg);
                }
                Some(Resident::Idle { .. }) | None => {
                    let preloaded = match state.resident.remove(&id) {
                        Some(Resident::Idle { state, .. }) => Some(*state),
                        _ => None,
                    };
                    state
                        .activate(myself.get_cell(), id, preloaded, vec![msg])
                        .await?;
                }
            },
            ShardMsg::Sweep => {
                let now = Instant::now();
                let (actor_idle, idle_timeout) = (state.actor_idle, state.idle_timeout);
                let mut forget = Vec::new();
                for (id, resident) in state.resident.iter_mut() {
                    let idle_for = now.duration_since(resident.last_used());
                    match resident {
                        Resident::Active { actor, last_used } if idle_for >= actor_idle => {
                            // Drain: what is in its mailbox is still processed first.
                            let _ = actor.drain();
                            *resident = Resident::Stopping {
                                pending: Vec::new(),
                                last_used: *last_used,
                            };
                            metrics::counter!("eq_actor_passivations_total").increment(1);
                        }
                        Resident::Idle { .. } if idle_for >= idle_timeout => {
                            forget.push(id.clone())
                        }
                        _ => {}
                    }
                }
                for id in forget {
                    state.resident.remove(&id);
                }
                metrics::gauge!("eq_resident_machines", "shard" => state.shard.to_string())
                    .set(state.resident.len() as f64);
            }
            ShardMsg::Counts(reply) => {
                let _ = reply.send((state.running, state.resident.len()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, final_state, _) => {
                let loaded = final_state
                    .and_then(|mut boxed| boxed.take::<EquipmentActorState>().ok())
                    .and_then(EquipmentActorState::into_loaded);
                state
                    .on_actor_end(myself.get_cell(), cell.get_id(), loaded)
                    .await?;
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(id) = state.actors.get(&cell.get_id()) {
                    warn!(equipment_id = %id, shard = %state.shard, %error, "equipment actor failed; restarting");
                    metrics::counter!("eq_actor_restarts_total").increment(1);
                }
                // No state is trusted after a panic: the successor reads its last event.
                state
                    .on_actor_end(myself.get_cell(), cell.get_id(), None)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        metrics::gauge!("eq_active_actors").decrement(state.running as f64);
        state.resident.clear();
        state.actors.clear();
        Ok(())
    }
}

/// Settings of a node's shard host.
#[derive(Debug, Clone)]
pub struct ShardHostConfig {
    /// Number of shards in the cluster (fixed when the cluster is created).
    pub shard_count: u32,
    /// An actor idle this long stops and hands its state back to the shard.
    pub actor_idle: Duration,
    /// A machine idle this long is forgotten (read back from JetStream when used again).
    pub idle_timeout: Duration,
    /// How long a command may take, including retries after fencing or a restart.
    pub command_deadline: Duration,
}

impl Default for ShardHostConfig {
    fn default() -> Self {
        Self {
            shard_count: 64,
            actor_idle: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            command_deadline: Duration::from_secs(10),
        }
    }
}

/// The shards a node hosts, and the entry point for commands to their actors.
pub struct ShardHost {
    config: ShardHostConfig,
    ctx: Arc<ShardContext>,
    shards: RwLock<HashMap<ShardId, ActorRef<ShardMsg>>>,
}

impl ShardHost {
    pub fn new(config: ShardHostConfig, ctx: Arc<ShardContext>) -> Arc<Self> {
        Arc::new(Self {
            config,
            ctx,
            shards: RwLock::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &ShardHostConfig {
        &self.config
    }

    pub fn context(&self) -> &Arc<ShardContext> {
        &self.ctx
    }

    /// The shard an equipment belongs to.
    pub fn shard_of(&self, id: &EquipmentId) -> ShardId {
        shard_of(id, self.config.shard_count)
    }

    /// Starts hosting a shard (no-op if hosted already).
    pub async fn host(&self, shard: ShardId) -> Result<(), ActorProcessingErr> {
        if self.shards.read().expect("lock").contains_key(&shard) {
            return Ok(());
        }
        let args = ShardArgs {
            shard,
            ctx: self.ctx.clone(),
            actor_idle: self.config.actor_idle,
            idle_timeout: self.config.idle_timeout,
        };
        let (actor, _) = Actor::spawn(None, Shard, args).await?;
        let previous = self.shards.write().expect("lock").insert(shard, actor);
        if let Some(previous) = previous {
            previous.stop(None);
        }
        metrics::gauge!("eq_shards_owned").set(self.hosted().len() as f64);
        info!(shard = %shard, "hosting shard");
        Ok(())
    }

    /// Hosts every shard (single-node mode).
    pub async fn host_all(&self) -> Result<(), ActorProcessingErr> {
        for n in 0..self.config.shard_count {
            self.host(ShardId(n)).await?;
        }
        Ok(())
    }

    /// Stops hosting a shard; its actors finish what is in their mailboxes.
    pub fn release(&self, shard: ShardId) {
        if let Some(actor) = self.shards.write().expect("lock").remove(&shard) {
            let _ = actor.drain();
            info!(shard = %shard, "released shard");
        }
        metrics::gauge!("eq_shards_owned").set(self.hosted().len() as f64);
    }

    /// Stops every shard.
    pub fn release_all(&self) {
        for shard in self.hosted() {
            self.release(shard);
        }
    }

    /// Whether this node hosts a shard.
    pub fn hosted_contains(&self, shard: ShardId) -> bool {
        self.shards.read().expect("lock").contains_key(&shard)
    }

    /// The shards hosted here.
    pub fn hosted(&self) -> Vec<ShardId> {
        let mut shards: Vec<ShardId> = self.shards.read().expect("lock").keys().copied().collect();
        shards.sort();
        shards
    }

    fn shard_ref(&self, id: &EquipmentId) -> Option<ActorRef<ShardMsg>> {
        self.shards
            .read()
            .expect("lock")
            .get(&self.shard_of(id))
            .cloned()
    }

    /// Runs a command on its equipment's actor. An actor that stopped mid-command is retried
    /// until the command deadline; a fenced append is returned as `Fenced` (safe to retry:
    /// nothing was written, and the actor reloads its state first).
    pub async fn execute(&self, command: Command) -> Result<Outcome, CommandError> {
        let deadline = Instant::now() + self.config.command_deadline;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = self.execute_once(command.clone(), deadline).await;
            // A fenced append is not retried here: the caller (the router) first checks that
            // this node still owns the shard, so that a stale owner stops writing.
            match &result {
                Err(CommandError::ActorStopped) if attempt < 5 && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                }
                _ => return result,
            }
        }
    }

    async fn execute_once(
        &self,
        command: Command,
        deadline: Instant,
    ) -> Result<Outcome, CommandError> {
        let shard = self
            .shard_ref(&command.equipment_id)
            .ok_or(CommandError::NotHosted)?;
        let (tx, rx) = concurrency::oneshot();
        let id = command.equipment_id.clone();
        shard
            .send_message(ShardMsg::Route(
                id,
                EquipmentMsg::Execute(Box::new(command), tx.into(), tracing::Span::current()),
            ))
            .map_err(|_| CommandError::NotHosted)?;
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CommandError::ActorStopped),
            Err(_) => Err(CommandError::TimedOut),
        }
    }

    /// Sends a raw message to an equipment's actor (tests, diagnostics).
    pub fn send(&self, id: &EquipmentId, msg: EquipmentMsg) -> Result<(), CommandError> {
        let shard = self.shard_ref(id).ok_or(CommandError::NotHosted)?;
        shard
            .send_message(ShardMsg::Route(id.clone(), msg))
            .map_err(|_| CommandError::NotHosted)
    }

    /// The current state of an equipment, through its actor.
    pub async fn get(&self, id: &EquipmentId) -> Result<Option<Equipment>, CommandError> {
        let (tx, rx) = concurrency::oneshot();
        self.send(id, EquipmentMsg::Get(tx.into()))?;
        match tokio::time::timeout(self.config.command_deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CommandError::ActorStopped),
            Err(_) => Err(CommandError::TimedOut),
        }
    }

    /// How many equipment actors are running on this node.
    pub async fn active_actors(&self) -> usize {
        self.counts().await.0
    }

    /// How many machines have their state in memory on this node (running or idle).
    pub async fn resident_machines(&self) -> usize {
        self.counts().await.1
    }

    async fn counts(&self) -> (usize, usize) {
        let shards: Vec<ActorRef<ShardMsg>> = self
            .shards
            .read()
            .expect("lock")
            .values()
            .cloned()
            .collect();
        let (mut running, mut resident) = (0, 0);
        for shard in shards {
            let (tx, rx) = concurrency::oneshot();
            if shard.send_message(ShardMsg::Counts(tx.into())).is_ok()
                && let Ok((r, m)) = rx.await
            {
                running += r;
                resident += m;
            }
        }
        (running, resident)
    }
}
