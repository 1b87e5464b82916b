//! What the lifecycle keeps on a specimen record: its clocks (the correction window of
//! 40.83(e)-(g), retention of 40.99/40.109), the written requests, the split request and its
//! disposition, and, as the split laboratory, the Bottle B received. Data only: custody's
//! `lifecycle` and `split_lab` schedule, fire and change it inside store transactions.

use crate::domain::calendar::CorrectionWindow;
use crate::domain::retention::Retention;
use crate::domain::split::{self, Copy1, Manifest, Received, SplitDisposition, SplitRequest};
use serde::{Deserialize, Serialize};

/// What a clock is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockKind {
    /// The correction window of a correctable flaw (40.83(e)-(g)).
    Correction,
    /// The end of a retention period (40.99, 40.109).
    Retention,
}

impl ClockKind {
    pub const ALL: [ClockKind; 2] = [ClockKind::Correction, ClockKind::Retention];
    pub fn key(self) -> &'static str {
        match self {
            ClockKind::Correction => "correction",
            ClockKind::Retention => "retention",
        }
    }
}

/// The correction clock of a held specimen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectionClock {
    pub window: CorrectionWindow,
    /// The instant the window closes (a correction received at or after it is late).
    pub closes_at_ms: u64,
    /// The due entry in force; `None` once it fired or the hold was released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at_ms: Option<u64>,
    /// When the expiry was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at_ms: Option<u64>,
}

/// A written request as recorded with the specimen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub document_ref: String,
    /// `retention_extension`, `retention_release`, `quantitation`, `split_test`,
    /// `adulterant_retest`.
    pub kind: String,
    pub received_at_ms: u64,
    pub recorded_by: String,
    /// `lims` (with the LIMS document's name) or `admin`.
    pub via: String,
}

/// The split request and what answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRecord {
    pub request: SplitRequest,
    pub disposition: SplitDisposition,
}

/// Everything the lifecycle keeps on a specimen record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LifecycleRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<CorrectionClock>,
    /// Created when the result is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// The retention clock's due entry in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_due_ms: Option<u64>,
    /// Something of the specimen may be discarded now: it is in the discardable list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub discardable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RecordedRequest>,
    /// The MRO's request of 40.187(f)(4) that the primary be tested for the adulterant found
    /// in the split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adulterant_retest: Option<split::PrimaryRetestRequest>,
    /// The certifying scientist's release of the primary-retest result to the MRO
    /// (40.187(f)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adulterant_retest_released: Option<SplitRelease>,
    /// This laboratory as the split laboratory: the Bottle B received for reconfirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_lab: Option<Intake>,
}

impl LifecycleRecord {
    pub fn is_empty(&self) -> bool {
        self == &LifecycleRecord::default()
    }
}

/// A received Bottle B as recorded with its specimen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intake {
    pub copy1: Copy1,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    pub received: Received,
    pub received_at_ms: u64,
    pub recorded_by: String,
    /// The edition the split is judged by, chosen once at intake from Copy 1's collection date
    /// (absent on intakes recorded before editions were chosen: they keep the laboratory's
    /// default profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Set when a certifying scientist released the split result to the MRO (40.183(c)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<SplitRelease>,
}

/// The certifying scientist's release of a split result, kept with the intake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRelease {
    pub report_id: String,
    pub released_at_ms: u64,
    pub scientist: String,
    pub meaning: String,
    pub content_sha256: String,
}
