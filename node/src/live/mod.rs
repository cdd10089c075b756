//! Live views of the floor: every accepted change goes out on the `eq.live.<site>.<line>.<id>`
//! subjects ([`publisher`]) and into each node's [`hub`], which serves `GET /v1/live`
//! (Server-Sent Events) and the floor board.

pub mod hub;
pub mod publisher;

pub use hub::{LiveHub, LiveItem};
pub use publisher::LivePublisher;
