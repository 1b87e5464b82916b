//! One sender per MRO: takes the oldest queued report of that MRO, POSTs it with its report id
//! as `Idempotency-Key`, and records the outcome in one transaction with an audit entry (report
//! id, MRO, time, outcome — never the content). 2xx and 409 are delivered; another 4xx is a dead
//! letter (alert, no retry until an operator acts); 5xx, timeouts and connection errors are
//! retried with exponential backoff and jitter, without limit of time, in order.

use super::client::{Answer, MroClient, SendError};
use super::events::{
    DeadLettered, Delivered, NotDurableBeforeSend, OutboxReadFailed, OutcomeNotRecorded,
    RetryScheduled,
};
use crate::core::clock::Clock;
use crate::core::telemetry::emit;
use crate::custody::outbox::{self, Delivery, StoredReport};
use crate::store::{Abort, AuditEntry, GroupCommitter, Keyspace, Store, Tx};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Retry timing.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before attempt `n` (1-based), doubled each time, with ±25 % jitter drawn from
    /// `seed` so that several senders do not retry in step.
    pub fn delay(&self, n: u32, seed: u64) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(self.max);
        let mut x = seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        let frac = (x % 1000) as f64 / 1000.0; // 0..1
        base.mul_f64(0.75 + 0.5 * frac).min(self.max)
    }
}

impl Backoff {
    /// The wait before retry `attempt`: the backoff's delay, or longer when the MRO asked for
    /// it (`Retry-After`), never beyond the backoff's maximum.
    pub fn retry_delay(&self, attempt: u32, seed: u64, asked: Option<Duration>) -> Duration {
        self.delay(attempt, seed)
            .max(asked.unwrap_or_default())
            .min(self.max)
    }
}

/// How an MRO's answer is classified (the delivery contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    DeadLetter,
    Retry,
}

/// 2xx and 409 are delivered; 408 (request timeout), 425 (too early) and 429 (too many
/// requests) say "not now", like 5xx, and are retried; every other 4xx is permanent.
pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 | 409 => Verdict::Delivered,
        408 | 425 | 429 => Verdict::Retry,
        400..=499 => Verdict::DeadLetter,
        _ => Verdict::Retry,
    }
}

/// The wait a `Retry-After` value asks for (RFC 9110 10.2.3: delay-seconds or an HTTP date),
/// from `now_ms` (Unix milliseconds); None when it is neither.
pub fn retry_after(value: &str, now_ms: u64) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis()
        .min(u128::from(u64::MAX)) as u64;
    Some(Duration::from_millis(at_ms.saturating_sub(now_ms)))
}

/// The dead letter's reason: the status and the start of the body (control characters
/// dropped), so an operator sees what the MRO said without opening the receipt.
pub fn dead_letter_reason(status: u16, body: &str) -> String {
    let start: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    let start = start.trim();
    if start.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {start}")
    }
}

/// The sender of one MRO. Cloned to restart it after a panic (see [`crate::core::health`]).
#[derive(Clone)]
pub struct Sender {
    pub mro_id: String,
    pub client: MroClient,
    pub committer: GroupCommitter,
    pub clock: Arc<dyn Clock>,
    pub backoff: Backoff,
    /// Woken when a report is released to this MRO.
    pub wake: Arc<Notify>,
}

/// What the head of an MRO's queue holds.
enum Head {
    Empty,
    Report(Vec<u8>, Box<StoredReport>),
}

impl Sender {
    fn store(&self) -> &Store {
        self.committer.store()
    }

    /// The oldest queued report of this MRO. A read or decode error is an error, never
    /// "empty": the entry stays queued and the sender backs off.
    fn head(&self) -> Result<Head, String> {
        let first = self
            .store()
            .scan_prefix::<String>(Keyspace::Outbox, &outbox::queue_prefix(&self.mro_id))
            .next();
        let (key, report_id) = match first {
            None => return Ok(Head::Empty),
            Some(Ok(entry)) => entry,
            Some(Err(e)) => return Err(format!("reading the head of the queue: {e}")),
        };
        match self
            .store()
            .get::<StoredReport>(Keyspace::Reports, report_id.as_bytes())
        {
            Ok(Some(report)) => Ok(Head::Report(key, Box::new(report))),
            Ok(None) => Err(format!(
                "queued report {report_id} is not in the reports keyspace"
            )),
            Err(e) => Err(format!("reading queued report {report_id}: {e}")),
        }
    }

    /// Runs until `shutdown`. A POST in flight when shutdown comes is abandoned at once, so
    /// stopping never waits for a slow MRO; the report stays queued unless its answer was
    /// recorded, and goes again after a restart with the same Idempotency-Key.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut attempt: u32 = 0;
        let mut read_errors: u32 = 0;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let (key, report) = match self.head() {
                Ok(Head::Empty) => {
                    attempt = 0;
                    read_errors = 0;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                    continue;
                }
                Ok(Head::Report(key, report)) => {
                    read_errors = 0;
                    (key, report)
                }
                Err(why) => {
                    // Never dropped: the entry stays, the sender backs off and lab IT is told.
                    read_errors += 1;
                    let delay = self.backoff.delay(read_errors, self.clock.now_ms());
                    emit(OutboxReadFailed {
                        mro: &self.mro_id,
                        error: &why,
                        attempt: read_errors,
                        delay,
                    });
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            };
            attempt += 1;
            // Nothing leaves before it is on disk: the release's commit answered only after its
            // flush, but the queue scan can see a write whose flush failed. Flush (and fsync)
            // again; if that fails, the report waits.
            let store = self.store().clone();
            let durable = tokio::task::spawn_blocking(move || store.flush_durable()).await;
            if !matches!(durable, Ok(Ok(_))) {
                emit(NotDurableBeforeSend { mro: &self.mro_id });
                self.wait_retry(
                    &report,
                    attempt,
                    "the store cannot make the report durable",
                    None,
                    &shutdown,
                )
                .await;
                continue;
            }
            let started = std::time::Instant::now();
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.client.post(&report.jws, &report.report_id) => r,
            };
            let elapsed = started.elapsed();
            match outcome {
                Ok(answer) => match classify(answer.status) {
                    Verdict::Delivered => {
                        if self.record(&key, &report, &answer, true).await {
                            emit(Delivered {
                                mro: &self.mro_id,
                                report_id: &report.report_id,
                                status: answer.status,
                                attempts: attempt,
                                since_release: Duration::from_millis(
                                    self.clock.now_ms().saturating_sub(report.released_at_ms),
                                ),
                                request: elapsed,
                            });
                            attempt = 0;
                        }
                    }
                    Verdict::DeadLetter => {
                        if self.record(&key, &report, &answer, false).await {
                            emit(DeadLettered {
                                mro: &self.mro_id,
                                report_id: &report.report_id,
                                status: answer.status,
                            });
                            attempt = 0;
                        }
                    }
                    Verdict::Retry => {
                        let asked = answer
                            .retry_after
                            .as_deref()
                            .and_then(|v| retry_after(v, self.clock.now_ms()));
                        self.wait_retry(
                            &report,
                            attempt,
                            &format!("HTTP {}", answer.status),
                            asked,
                            &shutdown,
                        )
                        .await
                    }
                },
                Err(e) => {
                    let why = match &e {
                        SendError::Timeout(_) => "timeout".to_string(),
                        other => other.to_string(),
                    };
                    self.wait_retry(&report, attempt, &why, None, &shutdown)
                        .await
                }
            }
        }
    }

    /// Waits before the next attempt: the backoff's delay, or longer when the MRO asked for it
    /// (`Retry-After`), never beyond the backoff's maximum. The attempt and its error are noted
    /// on the stored report for `outbox list`.
    async fn wait_retry(
        &self,
        report: &StoredReport,
        attempt: u32,
        why: &str,
        asked: Option<Duration>,
        shutdown: &CancellationToken,
    ) {
        let seed = report.released_at_ms ^ self.clock.now_ms();
        let delay = self.backoff.retry_delay(attempt, seed, asked);
        self.note_failure(&report.report_id, why).await;
        emit(RetryScheduled {
            mro: &self.mro_id,
            report_id: &report.report_id,
            attempt,
            error: why,
            delay,
        });
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }

    /// Counts a failed attempt and keeps its error on the stored report (not audited: the
    /// report's state did not change). A store that cannot take it is no reason to stop.
    async fn note_failure(&self, report_id: &str, why: &str) {
        let report_id = report_id.to_string();
        let why: String = why.chars().take(300).collect();
        let _ = self
            .committer
            .submit(move |tx: &mut Tx<'_>| -> Result<(), Abort<String>> {
                if let Some(mut rep) =
                    tx.get::<StoredReport>(Keyspace::Reports, report_id.as_bytes())?
                    && rep.delivery == Delivery::Pending
                {
                    rep.attempts += 1;
                    rep.last_error = Some(why.clone());
                    tx.put(Keyspace::Reports, report_id.as_bytes(), &rep)?;
                }
                Ok(())
            })
            .await;
    }

    /// Records a delivery or a dead letter; false if the store could not make it durable (the
    /// report stays queued and is sent again: the idempotency key makes that harmless).
    async fn record(
        &self,
        key: &[u8],
        report: &StoredReport,
        answer: &Answer,
        delivered: bool,
    ) -> bool {
        let now = self.clock.now_ms();
        let key = key.to_vec();
        let report_id = report.report_id.clone();
        let mro = self.mro_id.clone();
        let released_at = report.released_at_ms;
        let status = answer.status;
        let body = answer.body.clone();
        let r = self
            .committer
            .submit(move |tx: &mut Tx<'_>| -> Result<(), Abort<String>> {
                let Some(mut rep) =
                    tx.get::<StoredReport>(Keyspace::Reports, report_id.as_bytes())?
                else {
                    return Err(Abort::Domain("report vanished".into()));
                };
                tx.remove(Keyspace::Outbox, &key)?;
                let action;
                if delivered {
                    rep.delivery = Delivery::Delivered {
                        at_ms: now,
                        http_status: status,
                        receipt: body.clone(),
                    };
                    action = "delivered";
                } else {
                    rep.delivery = Delivery::DeadLetter {
                        at_ms: now,
                        http_status: status,
                        reason: dead_letter_reason(status, &body),
                    };
                    tx.put(
                        Keyspace::Outbox,
                        &outbox::dead_key(&mro, released_at, &report_id),
                        &report_id,
                    )?;
                    action = "dead_letter";
                }
                rep.attempts += 1;
                tx.put(Keyspace::Reports, report_id.as_bytes(), &rep)?;
                tx.audit(
                    AuditEntry::new(now, "system:transmit", action, report_id.as_str())
                        .before("pending")
                        .after(format!("mro {mro}; HTTP {status}")),
                )?;
                Ok(())
            })
            .await;
        match r {
            Ok(()) => true,
            Err(e) => {
                emit(OutcomeNotRecorded {
                    mro: &self.mro_id,
                    report_id: &report.report_id,
                    error: &e.to_string(),
                });
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::{Abort, Store};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A peer that counts TCP connections (and hangs up), and a client for it.
    fn counting_peer(d: &std::path::Path) -> (MroClient, Arc<AtomicUsize>) {
        crate::trust::tls::install_provider();
        // Certificates only so the client can be built; the peer below just counts connections.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (ca, cert_path, key_path) = (d.join("ca.pem"), d.join("c.pem"), d.join("c.key"));
        std::fs::write(&ca, cert.pem()).unwrap();
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = peer.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        std::thread::spawn(move || {
            for c in peer.incoming().flatten() {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(c);
            }
        });
        let client = MroClient::new(
            &format!("https://127.0.0.1:{port}/r"),
            &ca,
            &cert_path,
            &key_path,
            Duration::from_secs(2),
        )
        .unwrap();
        (client, connections)
    }

    /// Runs one sender for `MRO-1` over `store` for `for_ms`, then stops it.
    fn run_sender(client: &MroClient, store: Store, for_ms: u64) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let committer = crate::store::GroupCommitter::start(store, Default::default()).unwrap();
            let sender = Sender {
                mro_id: "MRO-1".into(),
                client: client.clone(),
                committer: committer.clone(),
                clock: Arc::new(crate::core::clock::SystemClock),
                backoff: Backoff {
                    initial: Duration::from_millis(20),
                    max: Duration::from_millis(50),
                },
                wake: Arc::new(Notify::new()),
            };
            let stop = CancellationToken::new();
            let task = tokio::spawn(sender.run(stop.clone()));
            tokio::time::sleep(Duration::from_millis(for_ms)).await;
            stop.cancel();
            let _ = task.await;
            committer.shutdown().await;
        });
    }

    fn queue_one(store: &Store) {
        store
            .transact(|tx| -> Result<(), Abort<&str>> {
                outbox::enqueue(
                    tx,
                    outbox::Signed {
                        report_id: "R-S-1-1".into(),
                        specimen_id: "S-1".into(),
                        mro_id: "MRO-1".into(),
                        jws: "a.b.c".into(),
                        kid: "k".into(),
                        content_sha256: "0".repeat(64),
                        released_at_ms: 1,
                        released_by: "Dr. S".into(),
                        replaces: None,
                    },
                )?;
                Ok(())
            })
            .unwrap();
    }

    fn queued(store: &Store) -> usize {
        store
            .scan_prefix::<String>(Keyspace::Outbox, &outbox::queue_prefix("MRO-1"))
            .count()
    }

    /// A queued report whose store cannot be flushed to disk is never sent; once the store is
    /// healthy it is.
    #[test]
    fn nothing_is_sent_that_is_not_durable() {
        let d = tempfile::tempdir().unwrap();
        let (client, connections) = counting_peer(d.path());
        let store = Store::open(&d.path().join("s")).unwrap();
        queue_one(&store);
        store.fault_injector().fail_next_fsync();
        run_sender(&client, store.clone(), 400);
        assert_eq!(
            connections.load(Ordering::SeqCst),
            0,
            "sent while the store could not make it durable"
        );
        drop(store);

        // A healthy store (reopened): the report goes out (here the peer hangs up, so it is retried).
        let store = Store::open(&d.path().join("s")).unwrap();
        run_sender(&client, store.clone(), 400);
        assert!(
            connections.load(Ordering::SeqCst) >= 1,
            "a durable report is sent"
        );
        // Each failed attempt is counted on the report, with its error.
        let rep: StoredReport = store.get(Keyspace::Reports, b"R-S-1-1").unwrap().unwrap();
        assert!(rep.attempts >= 1, "{rep:?}");
        assert!(rep.last_error.is_some(), "{rep:?}");
        assert_eq!(rep.delivery, Delivery::Pending);
    }

    /// A queued report that cannot be read or decoded is never taken for "missing": its queue
    /// entry stays, nothing is sent, and once it reads again it goes out.
    #[test]
    fn an_unreadable_report_keeps_its_queue_entry() {
        let d = tempfile::tempdir().unwrap();
        let (client, connections) = counting_peer(d.path());
        let store = Store::open(&d.path().join("s")).unwrap();
        queue_one(&store);
        let good: StoredReport = store.get(Keyspace::Reports, b"R-S-1-1").unwrap().unwrap();
        store
            .transact(|tx| -> Result<(), Abort<&str>> {
                tx.put_raw_bytes(Keyspace::Reports, b"R-S-1-1", b"not json")?;
                Ok(())
            })
            .unwrap();
        assert!(
            store
                .get::<StoredReport>(Keyspace::Reports, b"R-S-1-1")
                .is_err()
        );
        run_sender(&client, store.clone(), 300);
        assert_eq!(
            queued(&store),
            1,
            "the queue entry of an unreadable report was dropped"
        );
        assert_eq!(connections.load(Ordering::SeqCst), 0);

        // The report missing altogether: still kept (an operator must look), never deleted.
        store
            .transact(|tx| -> Result<(), Abort<&str>> {
                tx.remove(Keyspace::Reports, b"R-S-1-1")?;
                Ok(())
            })
            .unwrap();
        run_sender(&client, store.clone(), 200);
        assert_eq!(
            queued(&store),
            1,
            "the queue entry of a missing report was dropped"
        );

        // Readable again: it is sent.
        store
            .transact(|tx| -> Result<(), Abort<&str>> {
                tx.put(Keyspace::Reports, b"R-S-1-1", &good)?;
                Ok(())
            })
            .unwrap();
        run_sender(&client, store.clone(), 300);
        assert!(connections.load(Ordering::SeqCst) >= 1);
    }

    /// An undecodable queue entry at the head is not an empty queue either.
    #[test]
    fn an_undecodable_head_entry_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let (client, connections) = counting_peer(d.path());
        let store = Store::open(&d.path().join("s")).unwrap();
        queue_one(&store);
        let key = outbox::queue_key("MRO-1", 0, "R-0");
        store
            .transact(|tx| -> Result<(), Abort<&str>> {
                tx.put_raw_bytes(Keyspace::Outbox, &key, b"\xff")?;
                Ok(())
            })
            .unwrap();
        run_sender(&client, store.clone(), 300);
        assert_eq!(queued(&store), 2);
        assert!(store.contains_key(Keyspace::Outbox, &key).unwrap());
        assert_eq!(connections.load(Ordering::SeqCst), 0);
    }

    /// Retry-After lengthens the wait up to the backoff's maximum, never beyond it, and a
    /// shorter one never shortens the backoff.
    #[test]
    fn retry_after_is_honoured_within_the_maximum() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        };
        let base = b.delay(1, 7);
        assert_eq!(b.retry_delay(1, 7, None), base);
        assert_eq!(b.retry_delay(1, 7, Some(Duration::ZERO)), base);
        assert_eq!(
            b.retry_delay(1, 7, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            b.retry_delay(1, 7, Some(Duration::from_millis(9_999))),
            Duration::from_millis(9_999)
        );
        assert_eq!(
            b.retry_delay(1, 7, Some(Duration::from_secs(10))),
            Duration::from_secs(10)
        );
        assert_eq!(
            b.retry_delay(1, 7, Some(Duration::from_secs(11))),
            Duration::from_secs(10)
        );
        assert_eq!(
            b.retry_delay(1, 7, Some(Duration::from_secs(u64::MAX / 2))),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now_ms = 1_445_412_480_000; // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(retry_after("120", now_ms), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now_ms), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now_ms),
            Some(Duration::from_secs(30))
        );
        // A date in the past: no wait.
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now_ms),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now_ms), None);
        assert_eq!(retry_after("-5", now_ms), None);
        assert_eq!(retry_after("", now_ms), None);
    }

    #[test]
    fn dead_letter_reason_shows_the_start_of_the_body() {
        assert_eq!(dead_letter_reason(400, ""), "HTTP 400");
        assert_eq!(
            dead_letter_reason(422, "{\"error\":\"unknown specimen\"}\r\n"),
            "HTTP 422: {\"error\":\"unknown specimen\"}"
        );
        assert_eq!(
            dead_letter_reason(400, &"é".repeat(500)).chars().count(),
            "HTTP 400: ".len() + 200
        );
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(classify(200), Verdict::Delivered);
        assert_eq!(classify(201), Verdict::Delivered);
        assert_eq!(classify(409), Verdict::Delivered);
        assert_eq!(classify(400), Verdict::DeadLetter);
        assert_eq!(classify(404), Verdict::DeadLetter);
        assert_eq!(classify(408), Verdict::Retry);
        assert_eq!(classify(425), Verdict::Retry);
        assert_eq!(classify(429), Verdict::Retry);
        assert_eq!(classify(403), Verdict::DeadLetter);
        assert_eq!(classify(422), Verdict::DeadLetter);
        assert_eq!(classify(500), Verdict::Retry);
        assert_eq!(classify(503), Verdict::Retry);
        assert_eq!(classify(302), Verdict::Retry);
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        };
        for n in 1..8u32 {
            let base = 100.0 * f64::from(1u32 << (n - 1));
            for seed in [1u64, 99, 12345, u64::MAX] {
                let d = b.delay(n, seed).as_secs_f64() * 1000.0;
                assert!(
                    d >= base * 0.75 - 1e-6 && d <= (base * 1.25).min(10_000.0) + 1e-6,
                    "n={n} d={d}"
                );
            }
        }
        assert!(b.delay(40, 7) <= Duration::from_secs(10));
        assert_ne!(b.delay(3, 1), b.delay(3, 2), "jitter varies with the seed");
    }
}
