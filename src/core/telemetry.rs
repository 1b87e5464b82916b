//! Internal events: one struct per thing that happened, which writes both its log line and its
//! metric (the habit of vector's `internal_events`), so a log line and its counter can never
//! drift apart, and the documented metric list is built from the same declarations.
//!
//! Each layer keeps its events in an `events` module: the structs, their `emit`, and a
//! `METRICS` list of the [`Metric`]s they feed. `app::monitoring::metrics()` joins those lists;
//! the README's metrics table is checked against it, and a test refuses a metric name used in
//! the code that no list declares.
//!
//! Labels carry only analyzer names, MRO directory ids, states, outcomes and codes: never donor
//! data, result values or free text.

/// The Prometheus type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// A histogram as recorded, exported as a summary.
    Summary,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
        }
    }
}

/// One exported metric: name, type, unit and help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: &'static str,
    pub help: &'static str,
}

impl Metric {
    pub const fn counter(name: &'static str, unit: &'static str, help: &'static str) -> Metric {
        Metric {
            name,
            kind: Kind::Counter,
            unit,
            help,
        }
    }

    pub const fn gauge(name: &'static str, unit: &'static str, help: &'static str) -> Metric {
        Metric {
            name,
            kind: Kind::Gauge,
            unit,
            help,
        }
    }

    pub const fn summary(name: &'static str, unit: &'static str, help: &'static str) -> Metric {
        Metric {
            name,
            kind: Kind::Summary,
            unit,
            help,
        }
    }

    /// Registers the help text with the installed recorder.
    pub fn describe(&self) {
        match self.kind {
            Kind::Counter => metrics::describe_counter!(self.name, self.help),
            Kind::Gauge => metrics::describe_gauge!(self.name, self.help),
            Kind::Summary => metrics::describe_histogram!(self.name, self.help),
        }
    }
}

/// Something that happened inside the daemon: `emit` writes its log line (if it has one) and
/// updates its metrics.
pub trait InternalEvent {
    fn emit(self);
}

/// Emits an event (`emit(Delivered { .. })` reads as what happened).
pub fn emit(event: impl InternalEvent) {
    event.emit();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_name_their_prometheus_type() {
        assert_eq!(Kind::Counter.as_str(), "counter");
        assert_eq!(Kind::Gauge.as_str(), "gauge");
        assert_eq!(Kind::Summary.as_str(), "summary");
        let m = Metric::counter("custodian_x_total", "things", "things that happened");
        assert_eq!((m.kind, m.unit), (Kind::Counter, "things"));
    }
}
