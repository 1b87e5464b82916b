//! What the application's wiring reports: reloads, the outbox gauges, task restarts.

use crate::core::telemetry::{InternalEvent, Metric};
use std::time::Duration;

pub const CONFIG_RELOADS: Metric = Metric::counter(
    "custodian_config_reloads_total",
    "reloads",
    "SIGHUP reloads, by outcome (applied, refused)",
);
pub const OUTBOX_DEPTH: Metric = Metric::gauge(
    "custodian_outbox_depth",
    "reports",
    "released reports waiting for their MRO",
);
pub const OUTBOX_OLDEST_AGE_SECONDS: Metric = Metric::gauge(
    "custodian_outbox_oldest_age_seconds",
    "seconds",
    "age of the oldest report waiting for its MRO",
);
pub const OUTBOX_DEAD_LETTERS: Metric = Metric::gauge(
    "custodian_outbox_dead_letters",
    "reports",
    "reports refused permanently by their MRO, waiting for an operator",
);
pub const TASK_RESTARTS: Metric = Metric::counter(
    "custodian_task_restarts_total",
    "restarts",
    "supervised tasks restarted after a panic, by task kind and id (e.g. mro_sender, MRO id)",
);

/// Every metric of this layer.
pub const METRICS: &[Metric] = &[
    CONFIG_RELOADS,
    OUTBOX_DEPTH,
    OUTBOX_OLDEST_AGE_SECONDS,
    OUTBOX_DEAD_LETTERS,
    TASK_RESTARTS,
];

/// SIGHUP re-read the configuration: applied, or refused with `problems` problems.
pub struct ConfigReloaded<'a> {
    pub applied: bool,
    pub problems: usize,
    pub why: &'a str,
}

impl InternalEvent for ConfigReloaded<'_> {
    fn emit(self) {
        let outcome = if self.applied { "applied" } else { "refused" };
        metrics::counter!(CONFIG_RELOADS.name, "outcome" => outcome).increment(1);
        if self.applied {
            tracing::info!(
                component = "daemon",
                "configuration reloaded (users, analyzer mappings)"
            );
        } else {
            tracing::warn!(
                component = "daemon",
                problems = self.problems,
                "reload refused; keeping the running configuration: {}",
                self.why
            );
        }
    }
}

/// One sample of an MRO's outbox.
pub struct OutboxSampled<'a> {
    pub mro: &'a str,
    pub depth: u64,
    pub oldest_age_s: f64,
    pub dead_letters: usize,
}

impl InternalEvent for OutboxSampled<'_> {
    fn emit(self) {
        metrics::gauge!(OUTBOX_DEPTH.name, "mro" => self.mro.to_string()).set(self.depth as f64);
        metrics::gauge!(OUTBOX_OLDEST_AGE_SECONDS.name, "mro" => self.mro.to_string())
            .set(self.oldest_age_s);
        metrics::gauge!(OUTBOX_DEAD_LETTERS.name, "mro" => self.mro.to_string())
            .set(self.dead_letters as f64);
    }
}

/// A supervised task panicked and is restarted after `delay`.
pub struct TaskRestarted<'a> {
    pub kind: &'static str,
    pub id: &'a str,
    pub name: &'a str,
    pub restarts: u64,
    pub delay: Duration,
}

impl InternalEvent for TaskRestarted<'_> {
    fn emit(self) {
        metrics::counter!(TASK_RESTARTS.name, "task" => self.kind, "id" => self.id.to_string())
            .increment(1);
        tracing::error!(component = "health", task = %self.name, restarts = self.restarts, delay_ms = self.delay.as_millis() as u64, "task panicked; restarting it");
    }
}
