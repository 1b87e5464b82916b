//! What custody reports: releases, corrected reports, lifecycle clocks, rejected runs, the
//! 40.111 summaries. Each struct writes its metrics (and log line, where it has one). Labels:
//! clock kinds, recipients (employer, dot) and outcomes only.

use crate::core::telemetry::{InternalEvent, Metric};
use tracing::info;

pub const RELEASES: Metric = Metric::counter(
    "custodian_releases_total",
    "reports",
    "results released by a certifying scientist",
);
pub const CORRECTED_REPORTS: Metric = Metric::counter(
    "custodian_corrected_reports_total",
    "reports",
    "corrected reports released (a new signed report replacing one with wrong CCF data)",
);
pub const CLOCKS_DUE: Metric = Metric::gauge(
    "custodian_clocks_due",
    "clocks",
    "lifecycle clocks past their due time and not yet applied, by kind (correction: 40.83 correction windows; retention: 40.99/40.109 periods), after each sweep",
);
pub const CLOCKS_FIRED: Metric = Metric::counter(
    "custodian_clocks_fired_total",
    "clocks",
    "lifecycle clocks applied by the sweep, by kind (correction, retention)",
);

pub const QUARANTINE_DROPPED: Metric = Metric::counter(
    "custodian_quarantine_dropped_total",
    "records",
    "quarantined records dropped by the sweep, by reason (age, records, bytes: the bound exceeded)",
);

pub const SUMMARIES_RECORDED: Metric = Metric::counter(
    "custodian_summaries_recorded_total",
    "summaries",
    "40.111 summaries recorded by the production sweep, by recipient (employer, dot) and outcome (produced: written to summaries.dir; suppressed: fewer than five results, 40.111(a)(2))",
);
pub const SUMMARIES_OVERDUE: Metric = Metric::gauge(
    "custodian_summaries_overdue",
    "summaries",
    "40.111 summaries past their due date (employer: Jan 20 / Jul 20; dot: Jan 31 / Jul 31), by recipient and state (unsent: produced, not marked sent; not_produced: the period's results are not all released), after each sweep",
);
pub const RUNS_REJECTED: Metric = Metric::counter(
    "custodian_runs_rejected_total",
    "runs",
    "analytical runs rejected by a certifying scientist (their specimens are retested)",
);

/// Every metric of this layer.
pub const METRICS: &[Metric] = &[
    RELEASES,
    CORRECTED_REPORTS,
    CLOCKS_DUE,
    CLOCKS_FIRED,
    QUARANTINE_DROPPED,
    SUMMARIES_RECORDED,
    SUMMARIES_OVERDUE,
    RUNS_REJECTED,
];

/// A certifying scientist rejected an analytical run.
pub struct RunRejected<'a> {
    pub run: &'a str,
}

impl InternalEvent for RunRejected<'_> {
    fn emit(self) {
        metrics::counter!(RUNS_REJECTED.name).increment(1);
        info!(component = "runs", run = %self.run, "analytical run rejected; its specimens wait for a retest");
    }
}

/// A signed report (a result, or a split result) was stored and queued to its MRO.
pub struct ReportReleased<'a> {
    pub report_id: &'a str,
    pub mro: &'a str,
}

impl InternalEvent for ReportReleased<'_> {
    fn emit(self) {
        metrics::counter!(RELEASES.name).increment(1);
        info!(component = "release", report_id = %self.report_id, mro = %self.mro, "report released and queued to its MRO");
    }
}

/// A corrected report replacing an earlier one was stored and queued.
pub struct CorrectedReportReleased<'a> {
    pub report_id: &'a str,
    pub replaces: &'a str,
    pub mro: &'a str,
}

impl InternalEvent for CorrectedReportReleased<'_> {
    fn emit(self) {
        metrics::counter!(CORRECTED_REPORTS.name).increment(1);
        info!(component = "release", report_id = %self.report_id, replaces = %self.replaces, mro = %self.mro, "corrected report released and queued to its MRO");
    }
}

/// A lifecycle clock of `kind` (`correction`, `retention`) was applied by the sweep.
pub struct ClockFired {
    pub kind: &'static str,
}

impl InternalEvent for ClockFired {
    fn emit(self) {
        metrics::counter!(CLOCKS_FIRED.name, "kind" => self.kind).increment(1);
    }
}

/// After a sweep: the clocks of `kind` still past due.
pub struct ClocksWaiting {
    pub kind: &'static str,
    pub count: usize,
}

impl InternalEvent for ClocksWaiting {
    fn emit(self) {
        metrics::gauge!(CLOCKS_DUE.name, "kind" => self.kind).set(self.count as f64);
    }
}

/// The quarantine sweep dropped `count` records for `reason` (age, records, bytes).
pub struct QuarantineDropped {
    pub reason: &'static str,
    pub count: u64,
}

impl InternalEvent for QuarantineDropped {
    fn emit(self) {
        metrics::counter!(QUARANTINE_DROPPED.name, "reason" => self.reason).increment(self.count);
    }
}

/// A 40.111 summary was recorded durably: `outcome` produced or suppressed.
pub struct SummaryRecorded {
    pub recipient: &'static str,
    pub outcome: &'static str,
}

impl InternalEvent for SummaryRecorded {
    fn emit(self) {
        metrics::counter!(SUMMARIES_RECORDED.name, "recipient" => self.recipient, "outcome" => self.outcome)
            .increment(1);
    }
}

/// After a production sweep: the summaries of `recipient` past their due date.
pub struct SummariesOverdue {
    pub recipient: &'static str,
    pub unsent: u64,
    pub not_produced: u64,
}

impl InternalEvent for SummariesOverdue {
    fn emit(self) {
        metrics::gauge!(SUMMARIES_OVERDUE.name, "recipient" => self.recipient, "state" => "unsent")
            .set(self.unsent as f64);
        metrics::gauge!(SUMMARIES_OVERDUE.name, "recipient" => self.recipient, "state" => "not_produced")
            .set(self.not_produced as f64);
    }
}
