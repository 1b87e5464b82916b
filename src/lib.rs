//! custodian: the laboratory-side daemon that turns analyzer and LIMS data into
//! 49 CFR Part 40 results, keeps them durably, and releases them only to the MRO.
//!
//! Module map (each named after the duty it carries):
//! - [`rules`]: the pure Part 40 rules engine (accessioning, validity, testing, reporting).
//! - [`retention`]: how long specimens and records are kept (40.99, 40.109), written requests.
//! - [`split`]: the split specimen (40.171-40.187): forwarding package, unavailable report,
//!   second-laboratory reconfirmation, the primary retested for the split's adulterant.
//! - [`lifecycle`]: the clocks of a specimen kept in the store (correction window, retention),
//!   the sweep that fires them, written requests and discard confirmations.
//! - [`calendar`]: business days of 40.83(e)-(g): federal holidays, lab closures, the correction window.
//! - [`evaluate`]: the `custodian evaluate` contract over the rules engine.
//! - [`config`]: the daemon's configuration, loaded and validated.
//! - [`store`]: the only module that touches sled; durable commits with group fsync.
//! - [`hl7`]: HL7 v2 parsing behind our own guard, and ACK building.
//! - [`mllp`]: the MLLP frame codec.
//! - [`lims`]: LIMS XML documents (accession, confirmation batch, correction, request).
//! - [`report`]: the laboratory results report sent to the MRO (40.97(b)).
//! - [`signing`]: Ed25519 JWS over reports, key generation and rotation, verification.
#![forbid(unsafe_code)]

pub mod admin;
pub mod calendar;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod evaluate;
pub mod health;
pub mod hl7;
pub mod ingest;
pub mod lifecycle;
pub mod lims;
pub mod mllp;
pub mod monitoring;
pub mod operator;
pub mod output;
pub mod release;
pub mod report;
pub mod retention;
pub mod rules;
pub mod signing;
pub mod specimen;
pub mod split;
pub mod split_lab;
pub mod store;
pub mod summary;
pub mod tls;
pub mod transmit;
