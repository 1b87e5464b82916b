//! Pure Part 40: the rules engine and its profiles, the calendar of business days, retention,
//! the split specimen, analytical runs and their QC, the result history, the specimen record,
//! the report of 40.97(b), the 40.111 summary. No clock reads, no store, no network, no tokio.
//! May import: core.

pub mod calendar;
pub mod copy1;
pub mod lifecycle;
pub mod parties;
pub mod report;
pub mod results;
pub mod retention;
pub mod rules;
pub mod runs;
pub mod specimen;
pub mod split;
pub mod split_request;
pub mod summary;
