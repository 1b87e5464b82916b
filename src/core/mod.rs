//! Below everything: the clock and civil time, and the health registry of supervised tasks.
//! Imports nothing of ours; no tokio, no store.

pub mod clock;
pub mod health;
