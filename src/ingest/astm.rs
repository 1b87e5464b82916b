//! ASTM analyzer links: the transports (a TCP server the analyzer connects to, a TCP client
//! that connects to the analyzer) around the sans-I/O link of `codec::astm::frame`, and the
//! handler that settles each message.
//!
//! Results go through the HL7 path's own result step ([`AnalyzerHandler::store`]): the same
//! custody call, panel guard, bottle B refusal, quarantine and events, so everything downstream
//! behaves the same whatever the protocol. The frame that completes a message is acknowledged
//! only after that step returned: ACK once every specimen of the message is durably stored (or
//! a refused message durably kept in quarantine), NAK when something could not be stored — the
//! analyzer retransmits the frame, and what was stored before is recognised by its content
//! (the header's timestamp left out) and not stored twice.
//!
//! Serial (RS-232) lines are not served: see the README ("ASTM analyzers").

use crate::codec::astm::frame::{Event, Incomplete, Link};
use crate::codec::astm::{AstmMapping, query, records, results};
use crate::codec::hl7::Outcome;
use crate::core::telemetry::emit;
use crate::custody::Custody;
use crate::ingest::analyzer::AnalyzerHandler;
use crate::ingest::events::{
    AstmAnswerUndelivered, AstmBytesDiscarded, AstmConnectFailed, AstmFrameRefused, AstmHostQuery,
    AstmIncomplete, AstmMessageSettled, ConnectionChanged, ConnectionRefusedAtCap, ListenerStarted,
    MessageArrived,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// What settling one message gave: whether to acknowledge it, and the messages to send back
/// (host query answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub stored: bool,
    pub answers: Vec<Vec<u8>>,
}

/// Settles the messages of one ASTM analyzer.
pub struct AstmHandler {
    name: Arc<str>,
    /// Replaced as a whole on reload; a message uses the mapping it started with.
    mapping: std::sync::RwLock<Arc<AstmMapping>>,
    /// The HL7 path's result step, with the same tests.
    results: AnalyzerHandler,
    custody: Custody,
}

impl AstmHandler {
    pub fn new(name: &str, mapping: AstmMapping, custody: Custody) -> AstmHandler {
        AstmHandler {
            name: Arc::from(name),
            results: AnalyzerHandler::new(name, mapping.hl7_view(), custody.clone()),
            mapping: std::sync::RwLock::new(Arc::new(mapping)),
            custody,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces the mapping (SIGHUP reload).
    pub fn replace_mapping(&self, mapping: AstmMapping) {
        self.results.replace_mapping(mapping.hl7_view());
        match self.mapping.write() {
            Ok(mut m) => *m = Arc::new(mapping),
            Err(p) => *p.into_inner() = Arc::new(mapping),
        }
    }

    fn mapping(&self) -> Arc<AstmMapping> {
        match self.mapping.read() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn settled(&self, reference: &str, outcome: &'static str) {
        emit(AstmMessageSettled {
            analyzer: &self.name,
            reference,
            outcome,
        });
    }

    /// Settles one complete message (records H to L).
    pub async fn settle(&self, raw: &[u8]) -> Settled {
        emit(MessageArrived {
            analyzer: &self.name,
            at_ms: self.custody.now_ms(),
        });
        let mapping = self.mapping();
        let msg = match records::parse(raw) {
            Ok(m) => m,
            Err(e) => return self.refuse(None, e.to_string(), raw).await,
        };
        let reference = results::content_id(&msg);
        if msg.of_kind('Q').next().is_some() {
            return self.query(&msg, &reference, &mapping, raw).await;
        }
        let groups = match results::extract(&msg, &mapping) {
            Ok(g) => g,
            Err(e) => return self.refuse(Some(reference), e.to_string(), raw).await,
        };
        if groups.is_empty() {
            self.settled(&reference, "no_results");
            return Settled {
                stored: true,
                answers: Vec::new(),
            };
        }
        let mut refused = false;
        for (i, group) in groups.iter().enumerate() {
            // One specimen per order record: each its own control id, so a message stored in
            // part before a failure is completed, never doubled, by its retransmission.
            let control_id = if groups.len() == 1 {
                reference.clone()
            } else {
                format!("{reference}-{}", i + 1)
            };
            let (outcome, _) = self.results.store(group, &control_id, raw).await;
            match outcome {
                Outcome::Accepted => {}
                Outcome::Error | Outcome::Rejected => refused = true,
                Outcome::StorageFailed => {
                    self.settled(&control_id, "not_stored");
                    return Settled {
                        stored: false,
                        answers: Vec::new(),
                    };
                }
            }
        }
        self.settled(&reference, if refused { "refused" } else { "stored" });
        Settled {
            stored: true,
            answers: Vec::new(),
        }
    }

    /// A message that cannot be used: kept in quarantine with its reason (then acknowledged:
    /// a retransmission would not help), or NAK when even that could not be stored.
    async fn refuse(&self, reference: Option<String>, reason: String, raw: &[u8]) -> Settled {
        warn!(component = "astm", analyzer = %self.name, reference = reference.as_deref().unwrap_or("-"), error = %reason, "ASTM message cannot be used; kept in quarantine");
        let kept = self.results.keep(reference.clone(), reason, raw).await;
        self.settled(
            reference.as_deref().unwrap_or("-"),
            if kept { "refused" } else { "not_stored" },
        );
        Settled {
            stored: kept,
            answers: Vec::new(),
        }
    }

    async fn query(
        &self,
        msg: &records::Message,
        reference: &str,
        mapping: &Arc<AstmMapping>,
        raw: &[u8],
    ) -> Settled {
        let queries = match query::queries(msg, mapping) {
            Ok(q) => q,
            Err(e) => {
                return self
                    .refuse(Some(reference.to_string()), e.to_string(), raw)
                    .await;
            }
        };
        let mut answers = Vec::new();
        for q in queries {
            let m = mapping.clone();
            let looked = crate::custody::host_query::lookup(
                &self.custody,
                &self.name,
                &q.specimen_id,
                move |rec, profiles| {
                    let answer = query::decide(rec, profiles, &m);
                    let summary = match &answer {
                        query::Answer::Orders(codes) => {
                            format!("answered orders: {}", codes.join(" "))
                        }
                        query::Answer::NoInformation(why) => {
                            format!("answered no information ({})", why.key())
                        }
                    };
                    (answer, summary)
                },
            )
            .await;
            match looked {
                Ok(answer) => {
                    emit(AstmHostQuery {
                        analyzer: &self.name,
                        answer: answer.key(),
                    });
                    answers.push(query::answer_message(
                        &q.specimen_id,
                        &answer,
                        mapping,
                        self.custody.now_ms(),
                    ));
                }
                Err(e) => {
                    warn!(component = "astm", analyzer = %self.name, reference = %reference, error = %e, "host query could not be answered durably; NAK");
                    self.settled(reference, "not_stored");
                    return Settled {
                        stored: false,
                        answers: Vec::new(),
                    };
                }
            }
        }
        self.settled(reference, "query");
        Settled {
            stored: true,
            answers,
        }
    }

    /// A transfer ended inside a message: kept in quarantine with the reason.
    pub async fn incomplete(&self, text: &[u8], why: Incomplete, connection: u64) {
        emit(AstmIncomplete {
            analyzer: &self.name,
            connection,
            reason: why.key(),
        });
        let _ = self.results.keep(None, why.reason().into(), text).await;
    }
}

/// How one ASTM connection behaves.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Most bytes of record text in one message.
    pub max_message_bytes: usize,
    /// A connection that moves no byte for this long is closed (when no transfer is open).
    pub idle_timeout: Duration,
}

/// Drives one connection (or serial line) until it closes or `shutdown` is cancelled. A
/// message being settled is always settled and answered first.
pub async fn session<S>(
    stream: S,
    handler: &AstmHandler,
    connection: u64,
    settings: &SessionSettings,
    shutdown: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let origin = tokio::time::Instant::now();
    let now = || origin.elapsed().as_millis() as u64;
    let mut link = Link::new(settings.max_message_bytes);
    let mut buf = vec![0u8; 8192];
    loop {
        drive(&mut link, handler, connection, &now).await;
        let out = link.take_transmit();
        if !out.is_empty() {
            if let Err(e) = wr.write_all(&out).await {
                debug!(component = "astm", analyzer = %handler.name, connection, error = %e, "write failed; closing");
                break;
            }
            let _ = wr.flush().await;
        }
        if link.has_events() {
            continue;
        }
        let deadline = link
            .next_timeout()
            .map(|t| origin + Duration::from_millis(t));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = tokio::time::timeout(settings.idle_timeout, rd.read(&mut buf)) => match r {
                Err(_) => {
                    debug!(component = "astm", analyzer = %handler.name, connection, "idle timeout; closing");
                    break;
                }
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => link.receive(&buf[..n], now()),
            },
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => link.on_timeout(now()),
        }
    }
    link.close();
    drive(&mut link, handler, connection, &now).await;
}

/// Acts on every pending event of the link.
async fn drive(link: &mut Link, handler: &AstmHandler, connection: u64, now: &impl Fn() -> u64) {
    while let Some(ev) = link.next_event() {
        match ev {
            Event::Messages(messages) => {
                let mut stored = true;
                for m in &messages {
                    let s = handler.settle(m).await;
                    for a in &s.answers {
                        link.send(a, now());
                    }
                    if !s.stored {
                        stored = false;
                        break;
                    }
                }
                link.settle(stored, now());
            }
            Event::Incomplete { text, why } => handler.incomplete(&text, why, connection).await,
            Event::FrameRefused(e) => emit(AstmFrameRefused {
                analyzer: &handler.name,
                connection,
                reason: e.key(),
            }),
            Event::FrameRepeated => {
                debug!(component = "astm", analyzer = %handler.name, connection, "frame repeated (its ACK was lost); acknowledged again");
            }
            Event::Delivered => {
                debug!(component = "astm", analyzer = %handler.name, connection, "answer delivered");
            }
            Event::SendAborted(why) => emit(AstmAnswerUndelivered {
                analyzer: &handler.name,
                reason: why.key(),
            }),
        }
    }
    let discarded = link.take_discarded();
    if discarded > 0 {
        emit(AstmBytesDiscarded {
            analyzer: &handler.name,
            bytes: discarded,
        });
    }
}

/// Accepts analyzer connections until `shutdown`; at most `max_connections` at once (more are
/// refused). Returns when every connection is closed.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<AstmHandler>,
    settings: SessionSettings,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    let tracker = tokio_util::task::TaskTracker::new();
    let name: Arc<str> = handler.name.clone();
    emit(ListenerStarted { analyzer: &name });
    let mut seq: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, _addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(component = "astm", analyzer = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        seq += 1;
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            emit(ConnectionRefusedAtCap {
                analyzer: &name,
                connection: seq,
            });
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        let connection = seq;
        tracker.spawn(async move {
            let _permit = permit;
            with_connection(&handler, connection, || {
                session(stream, &handler, connection, &settings, &shutdown)
            })
            .await;
        });
    }
    info!(component = "astm", analyzer = %name, "listener stopped accepting; finishing open connections");
    tracker.close();
    tracker.wait().await;
}

async fn with_connection<F, Fut>(handler: &AstmHandler, connection: u64, f: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    emit(ConnectionChanged {
        analyzer: &handler.name,
        connection,
        open: true,
    });
    f().await;
    emit(ConnectionChanged {
        analyzer: &handler.name,
        connection,
        open: false,
    });
}

/// Connects to an analyzer that expects the LIS to connect, and keeps doing so: after a failed
/// attempt or a closed connection it waits `retry` and connects again, until `shutdown`.
pub async fn connect_loop(
    addr: SocketAddr,
    handler: Arc<AstmHandler>,
    settings: SessionSettings,
    retry: Duration,
    shutdown: CancellationToken,
) {
    emit(ListenerStarted {
        analyzer: &handler.name,
    });
    let mut connection: u64 = 0;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)) => r,
        };
        match attempt {
            Ok(Ok(stream)) => {
                connection += 1;
                let _ = stream.set_nodelay(true);
                info!(component = "astm", analyzer = %handler.name, connection, "connected to the analyzer");
                with_connection(&handler, connection, || {
                    session(stream, &handler, connection, &settings, &shutdown)
                })
                .await;
            }
            Ok(Err(e)) => emit(AstmConnectFailed {
                analyzer: &handler.name,
                error: &e.to_string(),
            }),
            Err(_) => emit(AstmConnectFailed {
                analyzer: &handler.name,
                error: "timed out",
            }),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::astm::frame::{ACK, ENQ, EOT, NAK, frames_for};
    use crate::core::clock::ManualClock;
    use crate::domain::rules::{Profile, ProfileSet};
    use crate::domain::specimen::SpecimenRecord;
    use crate::store::{GroupCommitter, GroupConfig, Keyspace, Store};

    fn profiles() -> ProfileSet {
        let mut set = ProfileSet::new();
        set.insert(
            Profile::parse(
                include_str!("../../config/profiles/part40-2001.toml"),
                Some("part40-2001"),
            )
            .unwrap(),
        );
        set
    }

    fn mapping() -> AstmMapping {
        toml::from_str(
            "[[test]]\ncode = \"THC50\"\nkind = \"initial\"\ntarget = \"marijuana\"\nunit = \"ng/mL\"\n\
             [runs]\nkind = \"initial\"\nrole = { field = \"O-12\", control = [\"Q\"] }\n\
             qc = [{ code = \"THC50\", sample = \"QC-NEG\", level = \"negative\", expect = \"below\", value = 50 }]\n",
        )
        .unwrap()
    }

    fn custody(store: &Store) -> Custody {
        let committer = GroupCommitter::start(store.clone(), GroupConfig::default()).unwrap();
        Custody::new(
            committer,
            Arc::new(profiles()),
            "part40-2001",
            Arc::new(ManualClock::new(1_000)),
        )
    }

    const MESSAGE: &[u8] =
        b"H|\\^&|||cobas|||||||P|1|20261123101500\rP|1\rO|1|S1\rR|1|^^^THC50|12|ng/mL||||F\rL|1|N\r";

    fn stored(store: &Store, id: &str) -> Option<SpecimenRecord> {
        crate::custody::records::read_specimen(store, id).unwrap()
    }

    fn quarantined(store: &Store) -> usize {
        crate::custody::quarantine::list(store, None).unwrap().len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn results_are_stored_once_and_a_released_specimen_refuses_them_into_quarantine() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let c = custody(&store);
        let h = AstmHandler::new("cobas", mapping(), c.clone());
        assert_eq!(
            h.settle(MESSAGE).await,
            Settled {
                stored: true,
                answers: vec![]
            }
        );
        assert_eq!(stored(&store, "S1").unwrap().results.len(), 1);
        // The same content with another header timestamp: a duplicate.
        let again = String::from_utf8_lossy(MESSAGE).replace("20261123101500", "20261123111111");
        assert!(h.settle(again.as_bytes()).await.stored);
        assert_eq!(stored(&store, "S1").unwrap().results.len(), 1);
        assert_eq!(quarantined(&store), 0);

        // Release the specimen, then send new results: refused and kept in quarantine.
        let mut rec = stored(&store, "S1").unwrap();
        rec.release = Some(crate::domain::specimen::Release {
            report_id: "R1".into(),
            released_at_ms: 5,
            scientist: "Dr. Test".into(),
            meaning: "reviewed and released".into(),
            content_sha256: String::new(),
        });
        c.committer()
            .submit(move |tx| -> Result<(), crate::store::Abort<String>> {
                tx.put(Keyspace::Specimens, b"S1", &rec)?;
                Ok(())
            })
            .await
            .unwrap();
        let late = String::from_utf8_lossy(MESSAGE).replace("|12|", "|99|");
        assert!(h.settle(late.as_bytes()).await.stored, "kept: acknowledged");
        assert_eq!(stored(&store, "S1").unwrap().results.len(), 1);
        assert_eq!(quarantined(&store), 1);
        // What does not parse is kept too.
        assert!(h.settle(b"P|1\rL|1\r").await.stored);
        assert_eq!(quarantined(&store), 2);
    }

    async fn read_reply(s: &mut tokio::io::DuplexStream) -> u8 {
        let mut b = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut b))
            .await
            .expect("a reply")
            .expect("read");
        b[0]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_acknowledges_the_last_frame_after_the_store_and_answers_a_query() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let h = Arc::new(AstmHandler::new("cobas", mapping(), custody(&store)));
        let (mut analyzer, lis) = tokio::io::duplex(4096);
        let shutdown = CancellationToken::new();
        let settings = SessionSettings {
            max_message_bytes: 1 << 16,
            idle_timeout: Duration::from_secs(30),
        };
        let task = {
            let (h, shutdown) = (h.clone(), shutdown.clone());
            tokio::spawn(async move { session(lis, &h, 1, &settings, &shutdown).await })
        };
        analyzer.write_all(&[ENQ]).await.unwrap();
        assert_eq!(read_reply(&mut analyzer).await, ACK);
        let frames = frames_for(MESSAGE);
        let mut wrong = frames[0].clone();
        let n = wrong.len();
        wrong[n - 3] ^= 1;
        analyzer.write_all(&wrong).await.unwrap();
        assert_eq!(read_reply(&mut analyzer).await, NAK);
        for (i, f) in frames.iter().enumerate() {
            analyzer.write_all(f).await.unwrap();
            assert_eq!(read_reply(&mut analyzer).await, ACK, "frame {i}");
            if i + 1 == frames.len() {
                assert!(stored(&store, "S1").is_some(), "stored before the last ACK");
            }
        }
        analyzer.write_all(&[EOT]).await.unwrap();
        // A host query for S1 (not accessioned): answered "no information".
        analyzer.write_all(&[ENQ]).await.unwrap();
        assert_eq!(read_reply(&mut analyzer).await, ACK);
        for f in frames_for(b"H|\\^&\rQ|1|^S1\rL|1|N\r") {
            analyzer.write_all(&f).await.unwrap();
            assert_eq!(read_reply(&mut analyzer).await, ACK);
        }
        analyzer.write_all(&[EOT]).await.unwrap();
        assert_eq!(
            read_reply(&mut analyzer).await,
            ENQ,
            "custodian sends its answer"
        );
        analyzer.write_all(&[ACK]).await.unwrap();
        let mut answer = Vec::new();
        loop {
            let b = read_reply(&mut analyzer).await;
            if b == EOT {
                break;
            }
            answer.push(b);
            if answer.ends_with(b"\r\n") {
                analyzer.write_all(&[ACK]).await.unwrap();
            }
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.contains("L|1|I\r"), "{text:?}");
        shutdown.cancel();
        task.await.unwrap();
    }
}
