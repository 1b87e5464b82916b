//! What the admin listener reports: refusals and connections over the cap. Labels: reasons only;
//! log fields: paths, staff user names and roles — never donor data.

use crate::core::telemetry::{InternalEvent, Metric};

pub const ADMIN_REFUSALS: Metric = Metric::counter(
    "custodian_admin_refusals_total",
    "requests",
    "admin API requests refused, by reason (unauthenticated, forbidden)",
);
pub const ADMIN_CONNECTIONS_REFUSED: Metric = Metric::counter(
    "custodian_admin_connections_refused_total",
    "connections",
    "admin connections over the cap, by reason (idle_closed: the longest-waiting idle one was closed to make room; busy: every one was answering, the new one got 503)",
);

pub const CONSOLE_SIGN_INS: Metric = Metric::counter(
    "custodian_console_sign_ins_total",
    "attempts",
    "console sign-in attempts, by outcome (ok, failed: a configured user's wrong password, locked: refused while locked out, unknown: no such user)",
);
pub const CONSOLE_REFUSALS: Metric = Metric::counter(
    "custodian_console_refusals_total",
    "requests",
    "console forms refused, by reason (csrf: missing or wrong token, signature_password: wrong password at a signature)",
);

/// Every metric of this layer.
pub const METRICS: &[Metric] = &[
    ADMIN_REFUSALS,
    ADMIN_CONNECTIONS_REFUSED,
    CONSOLE_SIGN_INS,
    CONSOLE_REFUSALS,
];

/// A console sign-in attempt and how it ended.
pub struct ConsoleSignIn {
    pub outcome: &'static str,
}

impl InternalEvent for ConsoleSignIn {
    fn emit(self) {
        metrics::counter!(CONSOLE_SIGN_INS.name, "outcome" => self.outcome).increment(1);
        match self.outcome {
            "ok" => tracing::info!(component = "console", "signed in"),
            o => tracing::warn!(component = "console", outcome = o, "sign-in refused"),
        }
    }
}

/// A console form refused (CSRF token, signature password).
pub struct ConsoleRefused {
    pub reason: &'static str,
}

impl InternalEvent for ConsoleRefused {
    fn emit(self) {
        metrics::counter!(CONSOLE_REFUSALS.name, "reason" => self.reason).increment(1);
        tracing::warn!(
            component = "console",
            reason = self.reason,
            "console form refused"
        );
    }
}

/// A request without valid credentials was refused (its audit is aggregated per source).
pub struct Unauthenticated;

impl InternalEvent for Unauthenticated {
    fn emit(self) {
        metrics::counter!(ADMIN_REFUSALS.name, "reason" => "unauthenticated").increment(1);
    }
}

/// An authenticated request its role does not allow was refused.
pub struct Forbidden<'a> {
    pub user: &'a str,
    pub role: &'a str,
    pub path: &'a str,
}

impl InternalEvent for Forbidden<'_> {
    fn emit(self) {
        metrics::counter!(ADMIN_REFUSALS.name, "reason" => "forbidden").increment(1);
        tracing::warn!(component = "admin", user = %self.user, role = self.role, path = %self.path, "request refused: role lacks permission");
    }
}

/// A connection over the cap: the longest-waiting idle one was closed (`idle_closed`) or the
/// new one got 503 (`busy`).
pub struct ConnectionOverCap {
    pub reason: &'static str,
}

impl InternalEvent for ConnectionOverCap {
    fn emit(self) {
        metrics::counter!(ADMIN_CONNECTIONS_REFUSED.name, "reason" => self.reason).increment(1);
        if self.reason == "idle_closed" {
            tracing::debug!(
                component = "admin",
                "connection cap reached: the longest-waiting idle connection closed"
            );
        }
    }
}
