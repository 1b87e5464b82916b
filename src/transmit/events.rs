//! What the senders report: each struct writes its log line and its metrics. Labels: the MRO's
//! directory id and an outcome; log fields: report ids, statuses, attempts — never content.

use crate::core::telemetry::{InternalEvent, Metric};
use std::time::Duration;
use tracing::{error, info, warn};

pub const DELIVERIES: Metric = Metric::counter(
    "custodian_deliveries_total",
    "attempts",
    "delivery attempts to MROs, by MRO and outcome (delivered, dead_letter, retry, not_durable)",
);
pub const DELIVERY_LATENCY: Metric = Metric::summary(
    "custodian_delivery_latency_seconds",
    "seconds",
    "time from release to the MRO's receipt",
);
pub const DELIVERY_REQUEST: Metric = Metric::summary(
    "custodian_delivery_request_seconds",
    "seconds",
    "duration of the successful HTTPS POST to the MRO",
);
pub const OUTBOX_READ_ERRORS: Metric = Metric::counter(
    "custodian_outbox_read_errors_total",
    "reads",
    "outbox entries that could not be read or decoded, by MRO (the entry is kept; the sender backs off)",
);

/// Every metric of this layer.
pub const METRICS: &[Metric] = &[
    DELIVERIES,
    DELIVERY_LATENCY,
    DELIVERY_REQUEST,
    OUTBOX_READ_ERRORS,
];

fn delivery(mro: &str, outcome: &'static str) {
    metrics::counter!(DELIVERIES.name, "mro" => mro.to_string(), "outcome" => outcome).increment(1);
}

/// The MRO's system took the report (2xx or 409) and the receipt is stored.
pub struct Delivered<'a> {
    pub mro: &'a str,
    pub report_id: &'a str,
    pub status: u16,
    pub attempts: u32,
    pub since_release: Duration,
    pub request: Duration,
}

impl InternalEvent for Delivered<'_> {
    fn emit(self) {
        metrics::histogram!(DELIVERY_LATENCY.name, "mro" => self.mro.to_string())
            .record(self.since_release.as_secs_f64());
        metrics::histogram!(DELIVERY_REQUEST.name, "mro" => self.mro.to_string())
            .record(self.request.as_secs_f64());
        delivery(self.mro, "delivered");
        info!(component = "transmit", mro = %self.mro, report_id = %self.report_id, status = self.status, attempts = self.attempts, "report delivered to the MRO");
    }
}

/// The MRO refused the report permanently (4xx other than 408/409/425/429): a dead letter.
pub struct DeadLettered<'a> {
    pub mro: &'a str,
    pub report_id: &'a str,
    pub status: u16,
}

impl InternalEvent for DeadLettered<'_> {
    fn emit(self) {
        delivery(self.mro, "dead_letter");
        warn!(component = "transmit", mro = %self.mro, report_id = %self.report_id, status = self.status, "MRO refused the report permanently: dead letter, waiting for an operator");
    }
}

/// An attempt failed; the next waits `delay`.
pub struct RetryScheduled<'a> {
    pub mro: &'a str,
    pub report_id: &'a str,
    pub attempt: u32,
    pub error: &'a str,
    pub delay: Duration,
}

impl InternalEvent for RetryScheduled<'_> {
    fn emit(self) {
        delivery(self.mro, "retry");
        warn!(component = "transmit", mro = %self.mro, report_id = %self.report_id, attempt = self.attempt, error = %self.error, delay_ms = self.delay.as_millis() as u64, "delivery failed; will retry");
    }
}

/// The store could not make the queued report durable, so it was not sent.
pub struct NotDurableBeforeSend<'a> {
    pub mro: &'a str,
}

impl InternalEvent for NotDurableBeforeSend<'_> {
    fn emit(self) {
        delivery(self.mro, "not_durable");
    }
}

/// The head of an MRO's queue could not be read; the entry is kept.
pub struct OutboxReadFailed<'a> {
    pub mro: &'a str,
    pub error: &'a str,
    pub attempt: u32,
    pub delay: Duration,
}

impl InternalEvent for OutboxReadFailed<'_> {
    fn emit(self) {
        metrics::counter!(OUTBOX_READ_ERRORS.name, "mro" => self.mro.to_string()).increment(1);
        error!(component = "transmit", mro = %self.mro, error = %self.error, attempt = self.attempt, delay_ms = self.delay.as_millis() as u64, "cannot read the head of the outbox; the entry is kept and the sender waits");
    }
}

/// The answer was received but its record could not be stored; the report stays queued.
pub struct OutcomeNotRecorded<'a> {
    pub mro: &'a str,
    pub report_id: &'a str,
    pub error: &'a str,
}

impl InternalEvent for OutcomeNotRecorded<'_> {
    fn emit(self) {
        warn!(component = "transmit", mro = %self.mro, report_id = %self.report_id, error = %self.error, "could not record the delivery outcome; the report stays queued");
    }
}
