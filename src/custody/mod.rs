//! Custody: every change to what the laboratory holds, as one store transaction with its audit
//! entry: intake of analyzer and LIMS data, the lifecycle clocks and written requests, review
//! and release, analytical runs and their QC, the split laboratory, the outbox, the 40.111
//! summaries. May import: core, domain, codec, trust, store.

pub mod copy1;
pub mod events;
pub mod intake;
pub mod lifecycle;
pub mod notices;
pub mod outbox;
pub mod quarantine;
pub mod records;
pub mod release;
pub mod runs;
pub mod split_lab;
pub mod summaries;

pub use intake::{
    Applied, ChangeErrorOrUnknown, Custody, DedupeMark, IngestError, QuarantineRecord,
    document_key, results_fingerprint,
};
