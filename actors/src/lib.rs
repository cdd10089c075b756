//! Equipment Live's domain and actors: validated ids ([`domain`]), the pure equipment state
//! machine and its ractor actor ([`equipment`]), shard supervisors ([`shard`]), the
//! JetStream event store ([`store`]) and every NATS name ([`subjects`]).

pub mod appender;
pub mod domain;
pub mod equipment;
pub mod scope;
pub mod shard;
pub mod store;
pub mod subjects;
pub mod trace;

pub use domain::{EquipmentId, Line, ReasonCode, ShardId, Site, Source, Status, Version};
