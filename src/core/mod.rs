//! Below everything: the clock and civil time, the health registry of supervised tasks, and
//! the internal-event declarations every layer's telemetry uses.
//! Imports nothing of ours; no tokio, no store.

pub mod clock;
pub mod health;
pub mod telemetry;
