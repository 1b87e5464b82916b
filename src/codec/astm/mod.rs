//! ASTM analyzer links, sans I/O: the low-level protocol of ASTM E1381 / CLSI LIS1-A
//! ([`frame`]: establishment, frames, checksums, acknowledgements, timers) and the records of
//! ASTM E1394 / CLSI LIS2-A2 ([`records`]: H, P, O, R, C, Q, L with the delimiters the header
//! declares), the mapping of result records onto the same results the HL7 path hands to custody
//! ([`results`]), and the host query's answer ([`query`]).
//!
//! Errors name positions (record index, record type, field), never content: messages carry
//! donor data.

pub mod frame;
#[doc(hidden)]
pub mod fuzz;
pub mod query;
pub mod records;
pub mod results;

pub use frame::{Event, FrameError, Incomplete, Link};
pub use records::{Delimiters, Message, Record, RecordError};
pub use results::{AstmMapping, AstmPath, UseError};
