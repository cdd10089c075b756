//! Shards: each is a ractor supervisor of the equipment actors whose ids hash to it. It
//! activates actors on first use, passivates idle ones, and restarts one that panicked (its
//! state comes back from its last event). [`ShardHost`] is a node's set of hosted shards and
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
use crate::equipment::actor::{CommandError, EquipmentActor, EquipmentArgs, EquipmentMsg, Outcome};
use crate::equipment::state::{Command, Equipment, Event, Rules};
use crate::store::EventStore;

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
    /// Passivate actors idle for longer than the idle timeout.
    Sweep,
    /// How many actors are active.
    ActiveCount(RpcReplyPort<usize>),
}

/// The shard supervisor actor.
pub struct Shard;

/// What a shard is started with.
pub struct ShardArgs {
    pub shard: ShardId,
    pub ctx: Arc<ShardContext>,
    pub idle_timeout: Duration,
}

struct Active {
    actor: ActorRef<EquipmentMsg>,
    last_used: Instant,
}

/// A shard's state: its active actors.
pub struct ShardState {
    shard: ShardId,
    ctx: Arc<ShardContext>,
    idle_timeout: Duration,
    active: HashMap<EquipmentId, Active>,
    ids: HashMap<ActorId, EquipmentId>,
}

impl ShardState {
    async fn activate(
        &mut self,
        supervisor: ActorCell,
        id: &EquipmentId,
    ) -> Result<ActorRef<EquipmentMsg>, ActorProcessingErr> {
        let args = EquipmentArgs {
            id: id.clone(),
            ctx: self.ctx.clone(),
        };
        let (actor, _handle) = Actor::spawn_linked(None, EquipmentActor, args, supervisor).await?;
        self.ids.insert(actor.get_id(), id.clone());
        self.active.insert(
            id.clone(),
            Active {
                actor: actor.clone(),
                last_used: Instant::now(),
            },
        );
        metrics::gauge!("eq_active_actors").increment(1.0);
        Ok(actor)
    }

    fn forget(&mut self, actor_id: ActorId) -> Option<EquipmentId> {
        let id = self.ids.remove(&actor_id)?;
        self.active.remove(&id);
        metrics::gauge!("eq_active_actors").decrement(1.0);
        Some(id)
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
        let sweep_every = (args.idle_timeout / 4).max(Duration::from_millis(250));
        myself.send_interval(sweep_every, || ShardMsg::Sweep);
        Ok(ShardState {
            shard: args.shard,
            ctx: args.ctx,
            idle_timeout: args.idle_timeout,
            active: HashMap::new(),
            ids: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Route(id, msg) => {
                let actor = match state.active.get_mut(&id) {
                    Some(active) => {
                        active.last_used = Instant::now();
                        active.actor.clone()
                    }
                    None => state.activate(myself.get_cell(), &id).await?,
                };
                if let Err(MessagingErr::SendErr(msg)) = actor.send_message(msg) {
                    // The actor stopped between lookup and send: start a fresh one.
                    state.forget(actor.get_id());
                    let actor = state.activate(myself.get_cell(), &id).await?;
                    let _ = actor.send_message(msg);
                }
            }
            ShardMsg::Sweep => {
                let now = Instant::now();
                let idle: Vec<ActorId> = state
                    .active
                    .values()
                    .filter(|a| now.duration_since(a.last_used) >= state.idle_timeout)
                    .map(|a| a.actor.get_id())
                    .collect();
                for actor_id in idle {
                    if let Some(id) = state.ids.get(&actor_id).cloned()
                        && let Some(active) = state.active.get(&id)
                    {
                        // Drain: anything already in its mailbox is still processed.
                        let _ = active.actor.drain();
                        state.forget(actor_id);
                        metrics::counter!("eq_actor_passivations_total").increment(1);
                    }
                }
            }
            ShardMsg::ActiveCount(reply) => {
                let _ = reply.send(state.active.len());
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
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(id) = state.forget(cell.get_id()) {
                    warn!(equipment_id = %id, shard = %state.shard, %error, "equipment actor failed; restarting");
                    metrics::counter!("eq_actor_restarts_total").increment(1);
                    // The new actor reads its state back from its last event.
                    state.activate(myself.get_cell(), &id).await?;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.forget(cell.get_id());
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
        metrics::gauge!("eq_active_actors").decrement(state.active.len() as f64);
        state.active.clear();
        state.ids.clear();
        Ok(())
    }
}

/// Settings of a node's shard host.
#[derive(Debug, Clone)]
pub struct ShardHostConfig {
    /// Number of shards in the cluster (fixed when the cluster is created).
    pub shard_count: u32,
    /// Actors idle this long are passivated.
    pub idle_timeout: Duration,
    /// How long a command may take, including retries after fencing or a restart.
    pub command_deadline: Duration,
}

impl Default for ShardHostConfig {
    fn default() -> Self {
        Self {
            shard_count: 64,
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

    /// Runs a command on its equipment's actor. A fenced append or an actor that stopped
    /// mid-command is retried (the actor reloads first) until the command deadline.
    pub async fn execute(&self, command: Command) -> Result<Outcome, CommandError> {
        let deadline = Instant::now() + self.config.command_deadline;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = self.execute_once(command.clone(), deadline).await;
            match &result {
                Err(CommandError::Fenced | CommandError::ActorStopped)
                    if attempt < 5 && Instant::now() < deadline =>
                {
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
                EquipmentMsg::Execute(Box::new(command), tx.into()),
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

    /// How many equipment actors are active on this node.
    pub async fn active_actors(&self) -> usize {
        let shards: Vec<ActorRef<ShardMsg>> = self
            .shards
            .read()
            .expect("lock")
            .values()
            .cloned()
            .collect();
        let mut total = 0;
        for shard in shards {
            let (tx, rx) = concurrency::oneshot();
            if shard.send_message(ShardMsg::ActiveCount(tx.into())).is_ok()
                && let Ok(n) = rx.await
            {
                total += n;
            }
        }
        total
    }
}
