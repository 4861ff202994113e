//! The adtally domain: what an event is, which events count, what they cost and what
//! the numbers mean. Everything here is pure — no I/O, no clock reads, no randomness
//! that the caller does not pass in — so every rule is tested deterministically.
//!
//! The server crate feeds requests into these rules; the store crate persists what
//! they decide.

pub mod attribution;
pub mod auction;
pub mod catalog;
pub mod clock;
pub mod counting;
pub mod delivery;
pub mod event;
pub mod fasthash;
pub mod insights;
pub mod metrics;
pub mod money;
pub mod report;
pub mod sketch;
pub mod token;
pub mod traffic;
pub mod weekly;

pub use event::{Device, EventKind, Verdict};
/// Re-exported so that every crate uses the same time-zone database.
pub use jiff;
