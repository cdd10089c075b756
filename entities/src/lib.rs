//! sea-orm entities of the history database (see `migration/` for the schema).
//! Times are integer milliseconds since the Unix epoch.

pub mod equipment;
pub mod equipment_event;
pub mod reason_correction;
pub mod state_interval;
