//! One sender per MRO: takes the oldest queued report of that MRO, POSTs it with its report id
//! as `Idempotency-Key`, and records the outcome in one transaction with an audit entry (report
//! id, MRO, time, outcome — never the content). 2xx and 409 are delivered; another 4xx is a dead
//! letter (alert, no retry until an operator acts); 5xx, timeouts and connection errors are
//! retried with exponential backoff and jitter, without limit of time, in order.

use super::client::{Answer, MroClient, SendError};
use super::outbox::{self, Delivery, StoredReport};
use crate::clock::Clock;
use crate::store::{Abort, AuditEntry, GroupCommitter, Keyspace, Store, Tx};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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

/// How an MRO's answer is classified (the delivery contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    DeadLetter,
    Retry,
}

pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 | 409 => Verdict::Delivered,
        400..=499 => Verdict::DeadLetter,
        _ => Verdict::Retry,
    }
}

/// The sender of one MRO.
pub struct Sender {
    pub mro_id: String,
    pub client: MroClient,
    pub committer: GroupCommitter,
    pub clock: Arc<dyn Clock>,
    pub backoff: Backoff,
    /// Woken when a report is released to this MRO.
    pub wake: Arc<Notify>,
}

impl Sender {
    fn store(&self) -> &Store {
        self.committer.store()
    }

    /// The oldest queued report of this MRO.
    fn next(&self) -> Option<(Vec<u8>, String)> {
        self.store()
            .scan_prefix::<String>(Keyspace::Outbox, &outbox::queue_prefix(&self.mro_id))
            .next()
            .and_then(|r| r.ok())
    }

    /// Runs until `shutdown`. A POST in flight when shutdown comes is abandoned at once, so
    /// stopping never waits for a slow MRO; the report stays queued unless its answer was
    /// recorded, and goes again after a restart with the same Idempotency-Key.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut attempt: u32 = 0;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let Some((key, report_id)) = self.next() else {
                attempt = 0;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                continue;
            };
            let report: Option<StoredReport> = self
                .store()
                .get(Keyspace::Reports, report_id.as_bytes())
                .ok()
                .flatten();
            let Some(report) = report else {
                warn!(component = "transmit", mro = %self.mro_id, report_id = %report_id, "queued report missing; dropping the queue entry");
                let k = key.clone();
                let _ = self
                    .committer
                    .submit(move |tx: &mut Tx<'_>| -> Result<(), Abort<String>> {
                        tx.remove(Keyspace::Outbox, &k)?;
                        Ok(())
                    })
                    .await;
                continue;
            };
            attempt += 1;
            // Nothing leaves before it is on disk: the release's commit answered only after its
            // flush, but the queue scan can see a write whose flush failed. Flush (and fsync)
            // again; if that fails, the report waits.
            let store = self.store().clone();
            let durable = tokio::task::spawn_blocking(move || store.flush_durable()).await;
            if !matches!(durable, Ok(Ok(_))) {
                metrics::counter!("custodian_deliveries_total", "mro" => self.mro_id.clone(), "outcome" => "not_durable").increment(1);
                self.wait_retry(
                    &report,
                    attempt,
                    "the store cannot make the report durable",
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
                            let latency = self.clock.now_ms().saturating_sub(report.released_at_ms)
                                as f64
                                / 1000.0;
                            metrics::histogram!("custodian_delivery_latency_seconds", "mro" => self.mro_id.clone()).record(latency);
                            metrics::histogram!("custodian_delivery_request_seconds", "mro" => self.mro_id.clone()).record(elapsed.as_secs_f64());
                            metrics::counter!("custodian_deliveries_total", "mro" => self.mro_id.clone(), "outcome" => "delivered").increment(1);
                            info!(component = "transmit", mro = %self.mro_id, report_id = %report.report_id, status = answer.status, attempts = attempt, "report delivered to the MRO");
                            attempt = 0;
                        }
                    }
                    Verdict::DeadLetter => {
                        if self.record(&key, &report, &answer, false).await {
                            metrics::counter!("custodian_deliveries_total", "mro" => self.mro_id.clone(), "outcome" => "dead_letter").increment(1);
                            warn!(component = "transmit", mro = %self.mro_id, report_id = %report.report_id, status = answer.status, "MRO refused the report permanently: dead letter, waiting for an operator");
                            attempt = 0;
                        }
                    }
                    Verdict::Retry => {
                        self.wait_retry(
                            &report,
                            attempt,
                            &format!("HTTP {}", answer.status),
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
                    self.wait_retry(&report, attempt, &why, &shutdown).await
                }
            }
        }
    }

    async fn wait_retry(
        &self,
        report: &StoredReport,
        attempt: u32,
        why: &str,
        shutdown: &CancellationToken,
    ) {
        metrics::counter!("custodian_deliveries_total", "mro" => self.mro_id.clone(), "outcome" => "retry").increment(1);
        let seed = report.released_at_ms ^ self.clock.now_ms();
        let delay = self.backoff.delay(attempt, seed);
        warn!(component = "transmit", mro = %self.mro_id, report_id = %report.report_id, attempt, error = %why, delay_ms = delay.as_millis() as u64, "delivery failed; will retry");
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
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
                        reason: format!("HTTP {status}"),
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
                warn!(component = "transmit", mro = %self.mro_id, report_id = %report.report_id, error = %e, "could not record the delivery outcome; the report stays queued");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queued report whose store cannot be flushed to disk is never sent; once the store is
    /// healthy it is.
    #[test]
    fn nothing_is_sent_that_is_not_durable() {
        use crate::store::{Abort, Store};
        use std::sync::atomic::{AtomicUsize, Ordering};
        crate::tls::install_provider();
        let d = tempfile::tempdir().unwrap();
        // Certificates only so the client can be built; the peer below just counts connections.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (ca, cert_path, key_path) = (
            d.path().join("ca.pem"),
            d.path().join("c.pem"),
            d.path().join("c.key"),
        );
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

        let run = |store: Store, for_ms: u64| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let committer =
                    crate::store::GroupCommitter::start(store, Default::default()).unwrap();
                let sender = Sender {
                    mro_id: "MRO-1".into(),
                    client: client.clone(),
                    committer: committer.clone(),
                    clock: Arc::new(crate::clock::SystemClock),
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
        };

        let store = Store::open(&d.path().join("s")).unwrap();
        store
            .transact(|tx| -> Result<(), Abort<&str>> {
                outbox::enqueue(
                    tx,
                    outbox::Signed {
                        report_id: "R-1".into(),
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
        store.fault_injector().fail_next_fsync();
        run(store.clone(), 400);
        assert_eq!(
            connections.load(Ordering::SeqCst),
            0,
            "sent while the store could not make it durable"
        );
        drop(store);

        // A healthy store (reopened): the report goes out (here the peer hangs up, so it is retried).
        let store = Store::open(&d.path().join("s")).unwrap();
        run(store, 400);
        assert!(
            connections.load(Ordering::SeqCst) >= 1,
            "a durable report is sent"
        );
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(classify(200), Verdict::Delivered);
        assert_eq!(classify(201), Verdict::Delivered);
        assert_eq!(classify(409), Verdict::Delivered);
        assert_eq!(classify(400), Verdict::DeadLetter);
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
