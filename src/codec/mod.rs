//! Pure bytes <-> typed values: MLLP framing, HL7 v2 (our guard, escapes, ACKs, ORU mapping),
//! ASTM E1381/E1394 (the low-level protocol as a state machine, records, result mapping, the
//! host query's answer),
//! LIMS XML documents, the certified Copy 1 of the CCF as a PDF. No I/O, no store. May import: core, domain (the types a parse yields).

pub mod astm;
pub mod copy1;
pub mod hl7;
pub mod lims;
pub mod mllp;
