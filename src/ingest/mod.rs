//! Adapters in: the analyzer listeners (MLLP, optionally TLS), their message handler, the LIMS
//! spool directory and its loop. Each answers its sender only after custody made the input
//! durable. May import: core, domain, codec, store, custody.

pub mod analyzer;
pub mod events;
pub mod listener;
pub mod spool;
pub mod spool_dir;
