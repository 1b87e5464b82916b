//! HL7 v2 behind custodian's own guard.
//!
//! hl7-parser 0.3.0 truncates silently, accepts `\n` separators, panics in its escape decoder
//! and misreads the HL7 2.7 truncation character (`/work/shared/reference/crates.md`). This module
//! therefore splits and decodes messages itself, accounting for every input byte, and never
//! panics on any input (fuzzed by `tests/fuzz`, targets `hl7_parse` and `hl7_extract`).
//!
//! Names follow the HL7 hierarchy: [`Message`] → [`Segment`] → [`Field`] → [`Repetition`] →
//! [`Component`] → subcomponent (`&str`). Positions are 1-based as in HL7 (MSH-1 is the field
//! separator, MSH-2 the encoding characters). Errors ([`ParseError`], [`UseError`]) name
//! positions ([`Location`]) and never content: message content is donor data, and errors go to
//! logs and ERR segments.
//!
//! - [`parse`]: bytes → [`Message`] (pure).
//! - [`ack`]: ACK messages and the original/enhanced acknowledgment rules.
//! - [`oru`]: ORU^R01 result extraction with a per-analyzer [`Mapping`].

pub mod ack;
pub mod charset;
pub mod escape;
#[doc(hidden)]
pub mod fuzz;
pub mod header;
pub mod location;
pub mod message;
pub mod oru;
pub mod path;

pub use ack::{
    AckCode, AckPlan, ErrorCode, ErrorDetail, Outcome, build_ack, build_reject_for_unparsed, plan,
    scan_control_id,
};
pub use charset::Charset;
pub use escape::Delimiters;
pub use header::{AckCondition, AckMode, Hd, MessageHeader};
pub use location::{Location, SegmentId};
pub use message::{Component, Field, Message, ParseError, Repetition, Segment, parse};
pub use oru::{
    Bottle, BottleMapping, FlagMapping, Kind, Mapping, Observation, OruResults, ResultStatus,
    ResultValue, RoleMapping, RunMapping, TestMapping, UseError, extract,
};
pub use path::{Path, PathError};
