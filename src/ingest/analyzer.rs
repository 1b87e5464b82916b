//! One analyzer's messages: HL7 behind our guard → mapping → custody → ACK.
//!
//! The ACK goes out only after custody settled the message: AA after the durable commit (or for
//! a message already stored from this analyzer), AE for a message that parsed but cannot be used
//! (kept in quarantine with its reason) or that could not be stored, AR for one that does not
//! parse or is not an ORU^R01 (kept in quarantine too). If even the quarantine cannot be stored,
//! nothing is answered: the analyzer times out and sends again, so nothing is lost.

use super::listener::{FrameHandler, Peer};
use crate::codec::hl7::{self, AckCode, ErrorCode, ErrorDetail, Mapping, Outcome};
use crate::codec::mllp::MllpError;
use crate::core::telemetry::emit;
use crate::custody::{Applied, Custody, IngestError, QuarantineRecord};
use crate::domain::specimen::{Bottle, ChangeError, ResultEntry, ResultKind, Source};
use crate::ingest::events::{
    ControlIdReused, FramingError, MessageAnswered, MessageArrived, MessageDuplicate,
    MessageNotDurable, PanelGuardRefused, Quarantined, SplitResultRefused,
};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::{info, warn};

/// Settles the frames of one analyzer.
pub struct AnalyzerHandler {
    name: Arc<str>,
    /// Replaced as a whole on reload; a message uses the mapping it started with.
    mapping: std::sync::RwLock<Arc<Mapping>>,
    custody: Custody,
    seq: AtomicU64,
}

impl AnalyzerHandler {
    pub fn new(name: &str, mapping: Mapping, custody: Custody) -> AnalyzerHandler {
        AnalyzerHandler {
            name: Arc::from(name),
            mapping: std::sync::RwLock::new(Arc::new(mapping)),
            custody,
            seq: AtomicU64::new(0),
        }
    }

    /// Replaces the mapping (SIGHUP reload).
    pub fn replace_mapping(&self, mapping: Mapping) {
        match self.mapping.write() {
            Ok(mut m) => *m = Arc::new(mapping),
            Err(p) => *p.into_inner() = Arc::new(mapping),
        }
    }

    fn mapping(&self) -> Arc<Mapping> {
        match self.mapping.read() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn ack_ids(&self) -> (String, String) {
        let now = self.custody.now_ms();
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        (format!("C{now}{n:06}"), hl7_timestamp(now))
    }

    /// Settles one message and returns the ACK to send (None: answer nothing).
    pub async fn settle(&self, frame: &[u8]) -> Option<Vec<u8>> {
        let analyzer = self.name.to_string();
        emit(MessageArrived {
            analyzer: &analyzer,
            at_ms: self.custody.now_ms(),
        });
        let (ack_id, ts) = self.ack_ids();
        let msg = match hl7::parse(frame) {
            Ok(m) => m,
            Err(e) => {
                let reference = hl7::ack::scan_control_id(frame);
                warn!(component = "hl7", analyzer = %analyzer, control_id = reference.as_deref().unwrap_or("-"), error = %e, "message does not parse; rejected");
                if !self.keep(reference, e.to_string(), frame).await {
                    return None;
                }
                count(&analyzer, "AR");
                return Some(hl7::ack::build_reject_for_unparsed(frame, &e, &ack_id, &ts));
            }
        };
        let header = msg.header().clone();
        let control_id = header.control_id.clone();
        let (outcome, error) = match hl7::extract(&msg, &self.mapping()) {
            Err(e) => {
                warn!(component = "hl7", analyzer = %analyzer, control_id = %control_id, error = %e, "message cannot be used");
                if !self
                    .keep(Some(control_id.clone()), e.to_string(), frame)
                    .await
                {
                    return None;
                }
                let outcome = if e.ack_code() == AckCode::AR {
                    Outcome::Rejected
                } else {
                    Outcome::Error
                };
                (outcome, Some(ErrorDetail::from(&e)))
            }
            Ok(oru) => self.store(&oru, &control_id, frame).await,
        };
        let plan = hl7::ack::plan(&header, outcome);
        // One reply per frame on this connection: the accept ACK when enhanced mode asks for
        // it, else the application ACK.
        let code = plan.accept.or(plan.application)?;
        count(&analyzer, code.as_str());
        Some(hl7::ack::build_ack(
            &header,
            code,
            error.as_ref(),
            &ack_id,
            &ts,
        ))
    }

    /// The shared result path: results of one specimen → custody, and what to answer. The
    /// ASTM handler settles its messages through it too.
    pub(crate) async fn store(
        &self,
        oru: &hl7::OruResults,
        control_id: &str,
        frame: &[u8],
    ) -> (Outcome, Option<ErrorDetail>) {
        let analyzer = self.name.to_string();
        if oru.bottle == hl7::oru::Bottle::Split {
            // 40.175(c): the laboratory that tested the primary does not open the split.
            emit(SplitResultRefused {
                analyzer: &analyzer,
                control_id,
            });
            let kept = self
                .keep(
                    Some(control_id.to_string()),
                    "result for bottle B: the laboratory that tested the primary does not open the split (40.175(c))".into(),
                    frame,
                )
                .await;
            if !kept {
                return (Outcome::StorageFailed, None);
            }
            return (
                Outcome::Error,
                Some(ErrorDetail::new(
                    ErrorCode::TableValueNotFound,
                    None,
                    "result for bottle B refused: the split is not opened by this laboratory (40.175(c))",
                )),
            );
        }
        let now = self.custody.now_ms();
        let mut entries = Vec::new();
        for o in &oru.results {
            let (kind, value) = match (o.kind, o.value) {
                (hl7::oru::Kind::Initial, hl7::oru::ResultValue::Number(v)) => {
                    (ResultKind::Initial, Some(v))
                }
                (hl7::oru::Kind::Confirmation, hl7::oru::ResultValue::Number(v)) => {
                    (ResultKind::Confirmation, Some(v))
                }
                (hl7::oru::Kind::Validity, hl7::oru::ResultValue::Number(v)) => {
                    (ResultKind::Validity, Some(v))
                }
                (
                    hl7::oru::Kind::Adulterant,
                    hl7::oru::ResultValue::Identified {
                        identified: true,
                        measured,
                    },
                ) => (ResultKind::Adulterant, measured),
                (
                    hl7::oru::Kind::Interference,
                    hl7::oru::ResultValue::Identified {
                        identified: true,
                        measured,
                    },
                ) => (ResultKind::Interference, measured),
                (_, hl7::oru::ResultValue::NotObtained) => (ResultKind::Interference, None),
                _ => continue,
            };
            entries.push(ResultEntry {
                kind,
                target: o.target.clone(),
                value,
                unit: o.unit.clone(),
                bottle: Bottle::A,
                source: Source::Analyzer {
                    analyzer: analyzer.clone(),
                    control_id: control_id.to_string(),
                    observation: o
                        .set_id
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| o.location.path()),
                },
                received_at_ms: now,
            });
        }
        match self
            .custody
            .results(
                &analyzer,
                control_id,
                frame.to_vec(),
                &oru.specimen_id,
                entries,
            )
            .await
        {
            Ok(Applied::Stored(touched)) => {
                for (_, state) in &touched {
                    info!(component = "ingest", analyzer = %analyzer, control_id = %control_id, state = %state, "results stored");
                }
                (Outcome::Accepted, None)
            }
            Ok(Applied::Duplicate) => {
                emit(MessageDuplicate {
                    analyzer: &analyzer,
                    control_id,
                });
                (Outcome::Accepted, None)
            }
            Err(IngestError::Refused(e)) => {
                if let ChangeError::OutsidePanel {
                    kind,
                    target,
                    profile,
                } = &e
                {
                    // The edition and the mapping target only: never donor data.
                    emit(PanelGuardRefused {
                        analyzer: &analyzer,
                        control_id,
                        edition: profile,
                        kind: kind.key(),
                        target,
                    });
                } else {
                    warn!(component = "ingest", analyzer = %analyzer, control_id = %control_id, panel_guard = false, "results refused");
                }
                if !self
                    .keep(Some(control_id.to_string()), e.to_string(), frame)
                    .await
                {
                    return (Outcome::StorageFailed, None);
                }
                let detail = match &e {
                    ChangeError::OutsidePanel {
                        kind,
                        target,
                        profile,
                    } => ErrorDetail::from_display(
                        ErrorCode::TableValueNotFound,
                        None,
                        &format!(
                            "{} target `{target}` is outside the panel of edition {profile}; refused (40.13(c), 40.82)",
                            kind.key()
                        ),
                    ),
                    ChangeError::Untested(_) => ErrorDetail::new(
                        ErrorCode::TableValueNotFound,
                        None,
                        "the specimen is held untested; results cannot be attached",
                    ),
                    _ => ErrorDetail::new(
                        ErrorCode::TableValueNotFound,
                        None,
                        "results cannot be attached to the specimen",
                    ),
                };
                (Outcome::Error, Some(detail))
            }
            Err(IngestError::ReusedControlId) => {
                emit(ControlIdReused {
                    analyzer: &analyzer,
                    control_id,
                });
                if !self
                    .keep(
                        Some(control_id.to_string()),
                        "message control id (MSH-10) already used by this analyzer for a message with different results".into(),
                        frame,
                    )
                    .await
                {
                    return (Outcome::StorageFailed, None);
                }
                (
                    Outcome::Error,
                    Some(ErrorDetail::new(
                        ErrorCode::DuplicateKeyIdentifier,
                        None,
                        "message control id already used for different results; not stored; do not resend",
                    )),
                )
            }
            Err(IngestError::UnknownSpecimen) => (
                Outcome::Error,
                Some(ErrorDetail::new(
                    ErrorCode::UnknownKeyIdentifier,
                    None,
                    "unknown specimen",
                )),
            ),
            Err(IngestError::NotDurable(e)) => {
                emit(MessageNotDurable {
                    analyzer: &analyzer,
                    control_id,
                    error: &e.to_string(),
                });
                (
                    Outcome::StorageFailed,
                    Some(ErrorDetail::new(
                        ErrorCode::ApplicationInternalError,
                        None,
                        "not stored durably; send again",
                    )),
                )
            }
        }
    }

    /// Quarantines a refused message; false when even that could not be stored.
    pub(crate) async fn keep(
        &self,
        reference: Option<String>,
        reason: String,
        frame: &[u8],
    ) -> bool {
        let record = QuarantineRecord {
            source: format!("analyzer:{}", self.name),
            reference,
            reason,
            received_at_ms: self.custody.now_ms(),
            raw: frame.to_vec(),
        };
        match self.custody.quarantine(record).await {
            Ok(()) => {
                emit(Quarantined { source: &self.name });
                true
            }
            Err(e) => {
                warn!(component = "ingest", analyzer = %self.name, error = %e, "could not quarantine a refused message; not answering so it is sent again");
                false
            }
        }
    }
}

fn count(analyzer: &str, code: &str) {
    emit(MessageAnswered { analyzer, code });
}

/// HL7 DTM `YYYYMMDDHHMMSS` (UTC) for epoch milliseconds.
pub fn hl7_timestamp(ms: u64) -> String {
    let t = crate::core::clock::rfc3339(ms);
    // 2026-11-23T11:54:08.123Z -> 20261123115408
    t.chars().filter(|c| c.is_ascii_digit()).take(14).collect()
}

impl FrameHandler for AnalyzerHandler {
    fn handle<'a>(
        &'a self,
        _peer: &'a Peer,
        frame: Bytes,
    ) -> Pin<Box<dyn Future<Output = Option<Bytes>> + Send + 'a>> {
        Box::pin(async move { self.settle(&frame).await.map(Bytes::from) })
    }

    fn framing_error(&self, peer: &Peer, error: MllpError) {
        emit(FramingError {
            analyzer: &peer.analyzer,
            connection: peer.connection,
            error: &error.to_string(),
        });
    }
}
