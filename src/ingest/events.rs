//! What the analyzer listeners, their handler and the LIMS spool report: each struct writes its
//! log line and its metrics. Labels: analyzer names, ACK codes, outcomes, sources; log fields:
//! control ids, document names, connection numbers — never donor data or result values.

use crate::core::telemetry::{InternalEvent, Metric};
use tracing::{debug, info, warn};

pub const MESSAGES: Metric = Metric::counter(
    "custodian_messages_total",
    "messages",
    "HL7 messages answered, by analyzer and ACK code (AA, AE, AR, CA, CE, CR)",
);
pub const MESSAGES_DUPLICATE: Metric = Metric::counter(
    "custodian_messages_duplicate_total",
    "messages",
    "messages already stored from the same analyzer and MSH-10, acknowledged again",
);
pub const MESSAGES_NOT_DURABLE: Metric = Metric::counter(
    "custodian_messages_not_durable_total",
    "messages",
    "messages answered AE because the store could not make them durable",
);
pub const MESSAGES_REUSED_CONTROL_ID: Metric = Metric::counter(
    "custodian_messages_reused_control_id_total",
    "messages",
    "messages refused (AE, quarantined) because the analyzer reused an MSH-10 for different results; not a storage failure",
);
pub const ANALYZER_CONNECTIONS: Metric = Metric::gauge(
    "custodian_analyzer_connections",
    "connections",
    "open MLLP connections per analyzer",
);
pub const ANALYZER_LAST_MESSAGE: Metric = Metric::gauge(
    "custodian_analyzer_last_message_timestamp_seconds",
    "seconds",
    "Unix time of the last message from each analyzer",
);
pub const ANALYZER_CONNECTIONS_REFUSED: Metric = Metric::counter(
    "custodian_analyzer_connections_refused_total",
    "connections",
    "connections refused because the per-analyzer cap was reached",
);
pub const ANALYZER_TLS_REFUSED: Metric = Metric::counter(
    "custodian_analyzer_tls_refused_total",
    "connections",
    "TLS handshakes refused (e.g. no or untrusted client certificate)",
);
pub const MLLP_FRAMING_ERRORS: Metric = Metric::counter(
    "custodian_mllp_framing_errors_total",
    "frames",
    "frames that could not be read (too large, broken framing)",
);
pub const MLLP_DISCARDED_BYTES: Metric = Metric::counter(
    "custodian_mllp_discarded_bytes_total",
    "bytes",
    "bytes received outside an MLLP frame and discarded",
);
pub const QUARANTINED: Metric = Metric::counter(
    "custodian_quarantined_total",
    "messages",
    "refused inputs kept in quarantine with their reason, by source",
);
pub const PANEL_GUARD_REFUSALS: Metric = Metric::counter(
    "custodian_panel_guard_refusals_total",
    "messages",
    "results refused because the analyte is outside the specimen's DOT panel (40.13(c), 40.85)",
);
pub const SPLIT_RESULTS_REFUSED: Metric = Metric::counter(
    "custodian_split_results_refused_total",
    "messages",
    "results for bottle B refused by the first laboratory (40.175(c))",
);
pub const LIMS_DOCUMENTS: Metric = Metric::counter(
    "custodian_lims_documents_total",
    "documents",
    "LIMS documents settled, by outcome (stored, rejected, not_durable)",
);
pub const RESULTS_AFTER_RELEASE: Metric = Metric::counter(
    "custodian_results_after_release_total",
    "messages",
    "results refused (AE, quarantined) because their specimen's result was already released: a released verdict never changes",
);
pub const QC_SAMPLE_CONFLICTS: Metric = Metric::counter(
    "custodian_qc_sample_conflicts_total",
    "messages",
    "QC results refused (AE, quarantined) because the control's or calibrator's sample ID is an accessioned specimen's",
);

/// Every metric of this layer.
pub const METRICS: &[Metric] = &[
    MESSAGES,
    MESSAGES_DUPLICATE,
    MESSAGES_NOT_DURABLE,
    MESSAGES_REUSED_CONTROL_ID,
    ANALYZER_CONNECTIONS,
    ANALYZER_LAST_MESSAGE,
    ANALYZER_CONNECTIONS_REFUSED,
    ANALYZER_TLS_REFUSED,
    MLLP_FRAMING_ERRORS,
    MLLP_DISCARDED_BYTES,
    QUARANTINED,
    PANEL_GUARD_REFUSALS,
    SPLIT_RESULTS_REFUSED,
    LIMS_DOCUMENTS,
    RESULTS_AFTER_RELEASE,
    QC_SAMPLE_CONFLICTS,
];

/// Results for a specimen already released were refused.
pub struct ResultsAfterRelease<'a> {
    pub source: &'a str,
    pub reference: &'a str,
}

impl InternalEvent for ResultsAfterRelease<'_> {
    fn emit(self) {
        metrics::counter!(RESULTS_AFTER_RELEASE.name, "source" => self.source.to_string())
            .increment(1);
        warn!(component = "ingest", source = %self.source, reference = %self.reference, "results for a released specimen refused and quarantined (a released verdict never changes)");
    }
}

/// QC results whose sample ID is an accessioned specimen's were refused.
pub struct QcSampleConflict<'a> {
    pub source: &'a str,
    pub reference: &'a str,
}

impl InternalEvent for QcSampleConflict<'_> {
    fn emit(self) {
        metrics::counter!(QC_SAMPLE_CONFLICTS.name, "source" => self.source.to_string())
            .increment(1);
        warn!(component = "ingest", source = %self.source, reference = %self.reference, "QC sample ID equals an accessioned specimen's: refused and quarantined");
    }
}

/// A listener starts: its analyzer has no connection yet.
pub struct ListenerStarted<'a> {
    pub analyzer: &'a str,
}

impl InternalEvent for ListenerStarted<'_> {
    fn emit(self) {
        metrics::gauge!(ANALYZER_CONNECTIONS.name, "analyzer" => self.analyzer.to_string())
            .set(0.0);
    }
}

/// A connection was refused because the analyzer's connection cap was reached.
pub struct ConnectionRefusedAtCap<'a> {
    pub analyzer: &'a str,
    pub connection: u64,
}

impl InternalEvent for ConnectionRefusedAtCap<'_> {
    fn emit(self) {
        metrics::counter!(ANALYZER_CONNECTIONS_REFUSED.name, "analyzer" => self.analyzer.to_string())
            .increment(1);
        warn!(component = "mllp", analyzer = %self.analyzer, connection = self.connection, "connection refused: connection cap reached");
    }
}

/// A connection of an analyzer opened (`open`) or closed.
pub struct ConnectionChanged<'a> {
    pub analyzer: &'a str,
    pub connection: u64,
    pub open: bool,
}

impl InternalEvent for ConnectionChanged<'_> {
    fn emit(self) {
        let gauge =
            metrics::gauge!(ANALYZER_CONNECTIONS.name, "analyzer" => self.analyzer.to_string());
        if self.open {
            gauge.increment(1.0);
            debug!(component = "mllp", analyzer = %self.analyzer, connection = self.connection, "connection opened");
        } else {
            gauge.decrement(1.0);
            debug!(component = "mllp", analyzer = %self.analyzer, connection = self.connection, "connection closed");
        }
    }
}

/// A TLS handshake was refused (no, untrusted or another analyzer's client certificate).
pub struct TlsRefused<'a> {
    pub analyzer: &'a str,
    pub connection: u64,
    pub error: &'a str,
}

impl InternalEvent for TlsRefused<'_> {
    fn emit(self) {
        metrics::counter!(ANALYZER_TLS_REFUSED.name, "analyzer" => self.analyzer.to_string())
            .increment(1);
        warn!(component = "mllp", analyzer = %self.analyzer, connection = self.connection, error = %self.error, "TLS handshake refused");
    }
}

/// Bytes outside any MLLP frame were discarded.
pub struct BytesDiscarded<'a> {
    pub analyzer: &'a str,
    pub bytes: u64,
}

impl InternalEvent for BytesDiscarded<'_> {
    fn emit(self) {
        metrics::counter!(MLLP_DISCARDED_BYTES.name, "analyzer" => self.analyzer.to_string())
            .increment(self.bytes);
    }
}

/// A LIMS document could not be made durable; it is tried again.
pub struct LimsDocumentNotDurable<'a> {
    pub document: &'a str,
    pub error: &'a str,
}

impl InternalEvent for LimsDocumentNotDurable<'_> {
    fn emit(self) {
        metrics::counter!(LIMS_DOCUMENTS.name, "outcome" => "not_durable").increment(1);
        warn!(component = "lims", document = %self.document, error = %self.error, "not stored durably; will retry");
    }
}

/// A LIMS document was settled: moved to `done/` (`stored`) or `rejected/` with its reason.
pub struct LimsDocumentSettled<'a> {
    pub document: &'a str,
    pub outcome: &'static str,
}

impl InternalEvent for LimsDocumentSettled<'_> {
    fn emit(self) {
        metrics::counter!(LIMS_DOCUMENTS.name, "outcome" => self.outcome).increment(1);
        info!(component = "lims", document = %self.document, outcome = self.outcome, "LIMS document settled");
    }
}

/// A message arrived from an analyzer (its last-message time).
pub struct MessageArrived<'a> {
    pub analyzer: &'a str,
    pub at_ms: u64,
}

impl InternalEvent for MessageArrived<'_> {
    fn emit(self) {
        metrics::gauge!(ANALYZER_LAST_MESSAGE.name, "analyzer" => self.analyzer.to_string())
            .set(self.at_ms as f64 / 1000.0);
    }
}

/// A message was answered with ACK `code`.
pub struct MessageAnswered<'a> {
    pub analyzer: &'a str,
    pub code: &'a str,
}

impl InternalEvent for MessageAnswered<'_> {
    fn emit(self) {
        metrics::counter!(MESSAGES.name, "analyzer" => self.analyzer.to_string(), "ack" => self.code.to_string())
            .increment(1);
    }
}

/// A result for Bottle B reached the first laboratory and was refused (40.175(c)).
pub struct SplitResultRefused<'a> {
    pub analyzer: &'a str,
    pub control_id: &'a str,
}

impl InternalEvent for SplitResultRefused<'_> {
    fn emit(self) {
        metrics::counter!(SPLIT_RESULTS_REFUSED.name, "analyzer" => self.analyzer.to_string())
            .increment(1);
        warn!(component = "hl7", analyzer = %self.analyzer, control_id = %self.control_id, "result for bottle B refused (40.175(c))");
    }
}

/// A message already stored (same analyzer and MSH-10, same results) was acknowledged again.
pub struct MessageDuplicate<'a> {
    pub analyzer: &'a str,
    pub control_id: &'a str,
}

impl InternalEvent for MessageDuplicate<'_> {
    fn emit(self) {
        metrics::counter!(MESSAGES_DUPLICATE.name, "analyzer" => self.analyzer.to_string())
            .increment(1);
        info!(component = "ingest", analyzer = %self.analyzer, control_id = %self.control_id, "message already stored; acknowledged again");
    }
}

/// A result outside the panel of the specimen's edition was refused (40.13(c)): the edition,
/// the kind and the mapping target only.
pub struct PanelGuardRefused<'a> {
    pub analyzer: &'a str,
    pub control_id: &'a str,
    pub edition: &'a str,
    pub kind: &'a str,
    pub target: &'a str,
}

impl InternalEvent for PanelGuardRefused<'_> {
    fn emit(self) {
        metrics::counter!(PANEL_GUARD_REFUSALS.name, "analyzer" => self.analyzer.to_string())
            .increment(1);
        warn!(component = "ingest", analyzer = %self.analyzer, control_id = %self.control_id, panel_guard = true, edition = %self.edition, kind = self.kind, target = %self.target, "result outside the specimen's edition panel refused");
    }
}

/// An analyzer reused an MSH-10 for different results: refused, not a storage failure.
pub struct ControlIdReused<'a> {
    pub analyzer: &'a str,
    pub control_id: &'a str,
}

impl InternalEvent for ControlIdReused<'_> {
    fn emit(self) {
        metrics::counter!(MESSAGES_REUSED_CONTROL_ID.name, "analyzer" => self.analyzer.to_string())
            .increment(1);
        warn!(component = "ingest", analyzer = %self.analyzer, control_id = %self.control_id, "message control id reused for different results; refused");
    }
}

/// The store could not make a message durable: answered AE, the analyzer may resend.
pub struct MessageNotDurable<'a> {
    pub analyzer: &'a str,
    pub control_id: &'a str,
    pub error: &'a str,
}

impl InternalEvent for MessageNotDurable<'_> {
    fn emit(self) {
        metrics::counter!(MESSAGES_NOT_DURABLE.name, "analyzer" => self.analyzer.to_string())
            .increment(1);
        warn!(component = "ingest", analyzer = %self.analyzer, control_id = %self.control_id, error = %self.error, "not stored durably; answered AE");
    }
}

/// A refused input was kept in quarantine with its reason.
pub struct Quarantined<'a> {
    pub source: &'a str,
}

impl InternalEvent for Quarantined<'_> {
    fn emit(self) {
        metrics::counter!(QUARANTINED.name, "source" => self.source.to_string()).increment(1);
    }
}

/// A frame could not be read (too large, broken framing); the connection was closed.
pub struct FramingError<'a> {
    pub analyzer: &'a str,
    pub connection: u64,
    pub error: &'a str,
}

impl InternalEvent for FramingError<'_> {
    fn emit(self) {
        metrics::counter!(MLLP_FRAMING_ERRORS.name, "analyzer" => self.analyzer.to_string())
            .increment(1);
        warn!(component = "mllp", analyzer = %self.analyzer, connection = self.connection, error = %self.error, "frame could not be read; connection closed");
    }
}
