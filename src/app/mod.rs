//! The application: configuration loading and checking, the daemon's wiring (the only module
//! that knows every stage), the operator CLI, `custodian evaluate`, the demo, monitoring and
//! task supervision. May import everything below it.

pub mod archiving;
pub mod config;
pub mod console;
pub mod daemon;
pub mod demo;
pub mod evaluate;
pub mod events;
pub mod monitoring;
pub mod operator;
pub mod output;
pub mod supervise;
