//! Transmission of released reports: directly, and only, to the MRO named on the CCF
//! (40.97(b)), protected in transit (40.97(c)), as soon as released (40.97(d)). The outbox
//! they read is custody's (`custody::outbox`). May import: core, trust, store, custody.

pub mod client;
pub mod events;
pub mod sender;
