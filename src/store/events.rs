//! What the store reports: batch sizes, flush times, failed flushes, the audit index built.

use crate::core::telemetry::{InternalEvent, Metric};
use std::time::Duration;

pub const STORE_COMMIT_BATCH_SIZE: Metric = Metric::summary(
    "custodian_store_commit_batch_size",
    "writes",
    "writes made durable by one flush",
);
pub const STORE_FLUSH_SECONDS: Metric = Metric::summary(
    "custodian_store_flush_seconds",
    "seconds",
    "time of one durable flush (sled flush + fsync)",
);
pub const STORE_FLUSH_FAILURES: Metric = Metric::counter(
    "custodian_store_flush_failures_total",
    "flushes",
    "durable flushes that failed (writes answered AE)",
);

pub const STORE_ARCHIVE_SPILLS: Metric = Metric::counter(
    "custodian_store_archive_spills_total",
    "spills",
    "spills of sled's recent keys into a new archive segment",
);
pub const STORE_ARCHIVE_COMPACTIONS: Metric = Metric::counter(
    "custodian_store_archive_compactions_total",
    "compactions",
    "archive segments of one size class merged into one",
);
pub const STORE_ARCHIVE_FAILURES: Metric = Metric::counter(
    "custodian_store_archive_failures_total",
    "steps",
    "archive steps that failed (retried at the next check; nothing is lost: sled keeps what a spill has not moved)",
);
pub const STORE_ARCHIVE_SECONDS: Metric = Metric::summary(
    "custodian_store_archive_seconds",
    "seconds",
    "time of one archive step (a spill or a compaction, in the background)",
);

/// Every metric of this layer.
pub const METRICS: &[Metric] = &[
    STORE_COMMIT_BATCH_SIZE,
    STORE_FLUSH_SECONDS,
    STORE_FLUSH_FAILURES,
    STORE_ARCHIVE_SPILLS,
    STORE_ARCHIVE_COMPACTIONS,
    STORE_ARCHIVE_FAILURES,
    STORE_ARCHIVE_SECONDS,
];

/// An archive step failed (the error names no content).
pub struct ArchiveFailed<'a> {
    pub error: &'a str,
}

impl InternalEvent for ArchiveFailed<'_> {
    fn emit(self) {
        metrics::counter!(STORE_ARCHIVE_FAILURES.name).increment(1);
        tracing::error!(component = "store", error = %self.error, "archive step failed; retried at the next check");
    }
}

/// A spill moved `keys` keys from sled into a segment of `bytes` bytes.
pub struct ArchiveSpilled {
    pub keys: u64,
    pub bytes: u64,
    pub took: Duration,
}

impl InternalEvent for ArchiveSpilled {
    fn emit(self) {
        metrics::counter!(STORE_ARCHIVE_SPILLS.name).increment(1);
        metrics::histogram!(STORE_ARCHIVE_SECONDS.name).record(self.took.as_secs_f64());
        tracing::info!(
            component = "store",
            keys = self.keys,
            bytes = self.bytes,
            took_ms = self.took.as_millis() as u64,
            "recent keys moved from sled into an archive segment"
        );
    }
}

/// A compaction merged segments.
pub struct ArchiveCompacted {
    pub report: super::CompactReport,
    pub took: Duration,
}

impl InternalEvent for ArchiveCompacted {
    fn emit(self) {
        metrics::counter!(STORE_ARCHIVE_COMPACTIONS.name).increment(1);
        metrics::histogram!(STORE_ARCHIVE_SECONDS.name).record(self.took.as_secs_f64());
        tracing::info!(
            component = "store",
            segments = self.report.inputs,
            entries_in = self.report.entries_in,
            entries_out = self.report.entries_out,
            bytes_in = self.report.bytes_in,
            bytes_out = self.report.bytes_out,
            took_ms = self.took.as_millis() as u64,
            "archive segments merged"
        );
    }
}

/// A batch of `size` writes is committed (made durable by one flush).
pub struct BatchCommitted {
    pub size: usize,
}

impl InternalEvent for BatchCommitted {
    fn emit(self) {
        metrics::histogram!(STORE_COMMIT_BATCH_SIZE.name).record(self.size as f64);
    }
}

/// One durable flush took `took`.
pub struct FlushTimed {
    pub took: Duration,
}

impl InternalEvent for FlushTimed {
    fn emit(self) {
        metrics::histogram!(STORE_FLUSH_SECONDS.name).record(self.took.as_secs_f64());
    }
}

/// A durable flush failed: the `batch` writes are not acknowledged (0: the final flush).
pub struct FlushFailed<'a> {
    pub error: &'a str,
    pub batch: usize,
}

impl InternalEvent for FlushFailed<'_> {
    fn emit(self) {
        metrics::counter!(STORE_FLUSH_FAILURES.name).increment(1);
        if self.batch == 0 {
            tracing::error!(error = %self.error, "final durable flush of the store writer failed");
        } else {
            tracing::error!(error = %self.error, batch = self.batch, "durable flush failed; batch not acknowledged");
        }
    }
}

/// The audit log's index by subject was built for `entries` entries written before it existed.
pub struct AuditIndexBuilt {
    pub entries: u64,
    pub took: Duration,
}

impl InternalEvent for AuditIndexBuilt {
    fn emit(self) {
        tracing::info!(
            component = "store",
            entries = self.entries,
            took_ms = self.took.as_millis() as u64,
            "audit log indexed by subject (once, for entries written before the index existed)"
        );
    }
}
