//! custodian: the laboratory-side daemon that turns analyzer and LIMS data into
//! 49 CFR Part 40 results, keeps them durably, and releases them only to the MRO.
//!
//! The layers, in the order data flows; each imports only from the layers above it in this list:
//! - [`core`]: the clock and civil time, the health registry. Imports nothing of ours.
//! - [`domain`]: pure Part 40 — the rules engine and profiles, calendar, retention, split, the
//!   specimen record, the report, the 40.111 summary.
//! - [`codec`]: pure bytes <-> typed: MLLP framing, HL7 v2 behind our guard, LIMS XML.
//! - [`trust`]: TLS configurations and the report-signing keys.
//! - [`store`]: the only module that touches sled; durable commits with group fsync, the audit chain.
//! - [`custody`]: transactions over the store — intake, lifecycle clocks and written requests,
//!   review and release, the split laboratory, the outbox.
//! - [`ingest`]: adapters in — analyzer listeners and the LIMS spool.
//! - [`transmit`]: adapters out — the per-MRO HTTPS senders.
//! - [`admin`]: the HTTP API.
//! - [`app`]: configuration, the daemon's wiring, the operator CLI, evaluate, demo, monitoring.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod codec;
pub mod core;
pub mod custody;
pub mod domain;
pub mod ingest;
pub mod store;
pub mod transmit;
pub mod trust;
