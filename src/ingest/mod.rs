//! Adapters in: the analyzer listeners (MLLP, optionally TLS; ASTM over TCP, server or client),
//! their message handlers, the LIMS
//! spool directory and its loop. Each answers its sender only after custody made the input
//! durable. May import: core, domain, codec, store, custody.

pub mod analyzer;
pub mod astm;
pub mod events;
pub mod listener;
pub mod spool;
pub mod spool_dir;
