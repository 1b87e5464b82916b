//! Refusals of unknown callers (no or no valid bearer token), counted instead of audited one by
//! one: a flood of unauthenticated requests must not grow the store without bound.
//!
//! Per source (peer IP) and fixed window (a minute): the first refusal is audited at once with
//! its path; the rest are counted and one summary per source is audited when the window closes
//! ("N more refused"). At most `max_sources` sources are tracked per window; refusals from
//! others are counted together and summarised as overflow. What an authenticated user did or was
//! refused is not counted here: it stays audited one by one.

use crate::core::clock::Clock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The length of a counting window.
pub const WINDOW_MS: u64 = 60_000;
/// Most sources tracked in one window.
pub const MAX_SOURCES: usize = 1024;

/// What to write to the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The first refusal of a source in a window.
    First {
        at_ms: u64,
        source: Option<IpAddr>,
        path: String,
    },
    /// The refusals of a source after its first, in the window starting at `window_start_ms`.
    Summary {
        window_start_ms: u64,
        at_ms: u64,
        source: Option<IpAddr>,
        more: u64,
    },
    /// Refusals from sources beyond the tracked ones in that window.
    Overflow {
        window_start_ms: u64,
        at_ms: u64,
        count: u64,
    },
}

/// A source as written in the audit log and the logs: its IP, or `unknown`.
pub fn source_text(source: &Option<IpAddr>) -> String {
    match source {
        Some(ip) => ip.to_string(),
        None => "unknown".into(),
    }
}

#[derive(Debug, Default)]
struct Window {
    start_ms: u64,
    counts: HashMap<Option<IpAddr>, u64>,
    overflow: u64,
}

/// Counts refusals of unknown callers per source and window (bounded memory).
#[derive(Debug)]
pub struct Aggregator {
    clock: Arc<dyn Clock>,
    window_ms: u64,
    max_sources: usize,
    window: Mutex<Window>,
}

impl Aggregator {
    pub fn new(clock: Arc<dyn Clock>, window_ms: u64, max_sources: usize) -> Aggregator {
        let window_ms = window_ms.max(1);
        let now = clock.now_ms();
        Aggregator {
            clock,
            window_ms,
            max_sources: max_sources.max(1),
            window: Mutex::new(Window {
                start_ms: now - now % window_ms,
                ..Window::default()
            }),
        }
    }

    /// Counts one refusal from `source`; returns what to audit now: the summaries of a window
    /// that has closed, and this refusal if it is its source's first in the window.
    pub fn refused(&self, source: Option<IpAddr>, path: &str) -> Vec<Entry> {
        let now = self.clock.now_ms();
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = self.roll(&mut w, now);
        let tracked = w.counts.len();
        match w.counts.get_mut(&source) {
            Some(c) => *c += 1,
            None if tracked < self.max_sources => {
                w.counts.insert(source, 1);
                out.push(Entry::First {
                    at_ms: now,
                    source,
                    path: path.to_string(),
                });
            }
            None => {
                w.overflow += 1;
                if w.overflow == 1 {
                    tracing::warn!(
                        component = "admin",
                        tracked = self.max_sources,
                        "unauthenticated requests from more sources than are tracked: the rest are counted together"
                    );
                }
            }
        }
        out
    }

    /// The summaries of windows that have closed by now (the daemon asks every few seconds).
    pub fn closed(&self) -> Vec<Entry> {
        let now = self.clock.now_ms();
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        self.roll(&mut w, now)
    }

    /// Everything counted and not yet summarised, the open window included (at shutdown).
    pub fn drain(&self) -> Vec<Entry> {
        let now = self.clock.now_ms();
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let out = summarise(&mut w, now);
        w.start_ms = now - now % self.window_ms;
        out
    }

    /// Closes the current window if `now` is past it.
    fn roll(&self, w: &mut Window, now: u64) -> Vec<Entry> {
        let start = now - now % self.window_ms;
        if start == w.start_ms {
            return Vec::new();
        }
        let out = summarise(w, (w.start_ms + self.window_ms).min(now));
        w.start_ms = start;
        out
    }
}

/// The window's summaries (sources with more than one refusal, then overflow); empties it.
fn summarise(w: &mut Window, at_ms: u64) -> Vec<Entry> {
    let mut counts: Vec<_> = w.counts.drain().collect();
    counts.sort();
    let mut out: Vec<Entry> = counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(source, n)| Entry::Summary {
            window_start_ms: w.start_ms,
            at_ms,
            source,
            more: n - 1,
        })
        .collect();
    if w.overflow > 0 {
        out.push(Entry::Overflow {
            window_start_ms: w.start_ms,
            at_ms,
            count: w.overflow,
        });
        w.overflow = 0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::ManualClock;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn agg(clock: &ManualClock, max: usize) -> Aggregator {
        Aggregator::new(Arc::new(clock.clone()), WINDOW_MS, max)
    }

    #[test]
    fn a_flood_from_one_source_is_one_entry_and_one_summary_per_window() {
        let clock = ManualClock::new(1_800_000_000_000); // a window start
        let a = agg(&clock, MAX_SOURCES);
        let first = a.refused(ip("10.1.2.3"), "/api/review");
        assert_eq!(
            first,
            vec![Entry::First {
                at_ms: 1_800_000_000_000,
                source: ip("10.1.2.3"),
                path: "/api/review".into()
            }]
        );
        for i in 1..500 {
            clock.advance_ms(100);
            assert!(
                a.refused(ip("10.1.2.3"), "/api/x").is_empty(),
                "refusal {i}"
            );
            if i == 300 {
                // 30 s in: still the same window.
                assert!(a.closed().is_empty());
            }
        }
        // 49.9 s in: the window is open.
        assert!(a.closed().is_empty());
        clock.advance_ms(10_100);
        assert_eq!(
            a.closed(),
            vec![Entry::Summary {
                window_start_ms: 1_800_000_000_000,
                at_ms: 1_800_000_060_000,
                source: ip("10.1.2.3"),
                more: 499
            }]
        );
        assert!(a.closed().is_empty(), "summarised once");
        // The next window starts afresh: its first refusal is audited again.
        assert_eq!(a.refused(ip("10.1.2.3"), "/api/y").len(), 1);
    }

    #[test]
    fn sources_are_counted_apart_and_a_lone_refusal_has_no_summary() {
        let clock = ManualClock::new(1_800_000_000_000);
        let a = agg(&clock, MAX_SOURCES);
        assert_eq!(a.refused(ip("10.0.0.1"), "/a").len(), 1);
        assert_eq!(a.refused(ip("10.0.0.2"), "/a").len(), 1);
        assert_eq!(a.refused(None, "/a").len(), 1);
        assert!(a.refused(ip("10.0.0.2"), "/a").is_empty());
        assert!(a.refused(ip("10.0.0.2"), "/a").is_empty());
        // The first refusal of the next window brings the last window's summaries along.
        clock.advance_ms(WINDOW_MS);
        let out = a.refused(ip("10.0.0.1"), "/b");
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(
            &out[0],
            Entry::Summary { source, more: 2, .. } if *source == ip("10.0.0.2")
        ));
        assert!(matches!(&out[1], Entry::First { path, .. } if path == "/b"));
    }

    #[test]
    fn tracked_sources_are_capped_and_the_rest_counted_as_overflow() {
        let clock = ManualClock::new(1_800_000_000_000);
        let a = agg(&clock, 2);
        assert_eq!(a.refused(ip("10.0.0.1"), "/a").len(), 1);
        assert_eq!(a.refused(ip("10.0.0.2"), "/a").len(), 1);
        for n in 3..=100u8 {
            assert!(a.refused(ip(&format!("10.0.1.{n}")), "/a").is_empty());
        }
        assert_eq!(a.window.lock().unwrap().counts.len(), 2, "memory bounded");
        clock.advance_ms(WINDOW_MS);
        assert_eq!(
            a.closed(),
            vec![Entry::Overflow {
                window_start_ms: 1_800_000_000_000,
                at_ms: 1_800_000_060_000,
                count: 98
            }]
        );
    }

    #[test]
    fn drain_summarises_the_open_window() {
        let clock = ManualClock::new(1_800_000_030_000);
        let a = agg(&clock, MAX_SOURCES);
        a.refused(ip("::1"), "/a");
        a.refused(ip("::1"), "/a");
        clock.advance_ms(5_000);
        assert_eq!(
            a.drain(),
            vec![Entry::Summary {
                window_start_ms: 1_800_000_000_000,
                at_ms: 1_800_000_035_000,
                source: ip("::1"),
                more: 1
            }]
        );
        assert!(a.drain().is_empty());
        assert!(a.closed().is_empty());
        // After a drain the source's next refusal is its first again.
        assert_eq!(a.refused(ip("::1"), "/a").len(), 1);
    }
}
