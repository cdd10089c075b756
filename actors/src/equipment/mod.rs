//! One equipment: the pure state machine ([`state`]) and the actor that does its I/O
//! ([`actor`]).

pub mod actor;
pub mod state;

#[cfg(test)]
mod tests;

pub use actor::{CommandError, EquipmentActor, EquipmentMsg, Outcome, outcome_label};
pub use state::{
    Action, Alert, AlertKind, AlertMarks, Command, Decision, Equipment, EquipmentState, Event,
    EventKind, IngestMark, MetadataPatch, ReasonCorrection, Registration, Rejection, Rules,
    StatusChange, apply, decide,
};
