//! Pure bytes <-> typed values: MLLP framing, HL7 v2 (our guard, escapes, ACKs, ORU mapping),
//! LIMS XML documents. No I/O, no store. May import: core, domain (the types a parse yields).

pub mod hl7;
pub mod lims;
pub mod mllp;
