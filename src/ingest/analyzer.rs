//! One analyzer's messages: HL7 behind our guard → mapping → custody → ACK.
//!
//! The ACK goes out only after custody settled the message: AA after the durable commit (or for
//! a message already stored from this analyzer), AE for a message that parsed but cannot be used
//! (kept in quarantine with its reason) or that could not be stored, AR for one that does not
//! parse or is not an ORU^R01 (kept in quarantine too). If even the quarantine cannot be stored,
//! nothing is answered: the analyzer times out and sends again, so nothing is lost.

use super::listener::{FrameHandler, Peer};
use crate::codec::hl7::{
    self, AckCode, ErrorCode, ErrorDetail, Mapping, Outcome, ResultValue, RunMapping,
};
use crate::codec::mllp::MllpError;
use crate::core::telemetry::emit;
use crate::custody::runs::{Placed, Refusal, RunSettings, RunsError, Sample};
use crate::custody::{Custody, QuarantineRecord};
use crate::domain::runs::{QcResult, QcValue};
use crate::domain::specimen::{Bottle, ChangeError, ResultEntry, ResultKind, ResultStatus, Source};
use crate::ingest::events::{
    ControlIdReused, FramingError, MessageAnswered, MessageArrived, MessageDuplicate,
    MessageNotDurable, PanelGuardRefused, QcSampleConflict, Quarantined, ResultsAfterRelease,
    SplitResultRefused,
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

    async fn store(
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
        let mapping = self.mapping();
        let Some(runs) = mapping.runs.as_ref() else {
            warn!(component = "ingest", analyzer = %analyzer, control_id = %control_id, "no run configuration for this analyzer; message refused");
            if !self
                .keep(
                    Some(control_id.to_string()),
                    Refusal::NoRunSettings.to_string(),
                    frame,
                )
                .await
            {
                return (Outcome::StorageFailed, None);
            }
            return (
                Outcome::Error,
                Some(ErrorDetail::new(
                    ErrorCode::ApplicationInternalError,
                    None,
                    "no run configuration for this analyzer; not stored",
                )),
            );
        };
        let settings = RunSettings {
            source: analyzer.clone(),
            kind: runs.kind,
            by_run_id: runs.run_id.is_some(),
            auto_accept: runs.auto_accept,
            rules: runs.qc.clone(),
        };
        let now = self.custody.now_ms();
        let (sample, items) = sample_of(oru, runs, &analyzer, control_id, now);
        let fp = crate::custody::runs::fingerprint(&oru.specimen_id, oru.run_id.as_deref(), items);
        let is_qc = matches!(sample, Sample::Qc { .. });
        let placed = crate::custody::runs::message(
            &self.custody,
            &settings,
            control_id,
            oru.run_id.as_deref(),
            frame.to_vec(),
            sample,
            fp,
        )
        .await;
        match placed {
            Ok(Placed::Stored { run, state, closed }) => {
                match state {
                    Some(state) => {
                        info!(component = "ingest", analyzer = %analyzer, control_id = %control_id, run = %run, state = %state, "results stored")
                    }
                    None => {
                        info!(component = "ingest", analyzer = %analyzer, control_id = %control_id, run = %run, qc = is_qc, "QC results stored with their run")
                    }
                }
                for (key, state) in &closed {
                    info!(component = "runs", analyzer = %analyzer, run = %key, state = %state.key(), "run closed and its QC evaluated");
                }
                (Outcome::Accepted, None)
            }
            Ok(Placed::Duplicate) => {
                emit(MessageDuplicate {
                    analyzer: &analyzer,
                    control_id,
                });
                (Outcome::Accepted, None)
            }
            Err(RunsError::Refused(Refusal::Change(e))) => {
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
            Err(RunsError::Refused(Refusal::ReusedControlId)) => {
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
            Err(RunsError::Refused(r)) => {
                let text = match &r {
                    Refusal::AfterRelease => {
                        emit(ResultsAfterRelease {
                            source: &analyzer,
                            reference: control_id,
                        });
                        "the specimen's result was already released: results after release are refused; not stored"
                    }
                    Refusal::QcSampleIsSpecimen => {
                        emit(QcSampleConflict {
                            source: &analyzer,
                            reference: control_id,
                        });
                        "the QC sample ID is an accessioned specimen's ID: refused, never guessed; not stored"
                    }
                    Refusal::RunClosed(_) => {
                        warn!(component = "ingest", analyzer = %analyzer, control_id = %control_id, "result for a closed run refused");
                        "the run is closed: a new result cannot join it; not stored"
                    }
                    _ => {
                        warn!(component = "ingest", analyzer = %analyzer, control_id = %control_id, "message refused");
                        "results cannot be stored; not stored"
                    }
                };
                if !self
                    .keep(Some(control_id.to_string()), r.to_string(), frame)
                    .await
                {
                    return (Outcome::StorageFailed, None);
                }
                (
                    Outcome::Error,
                    Some(ErrorDetail::new(ErrorCode::TableValueNotFound, None, text)),
                )
            }
            Err(RunsError::NotDurable(e)) => {
                emit(MessageNotDurable {
                    analyzer: &analyzer,
                    control_id,
                    error: &e,
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
    async fn keep(&self, reference: Option<String>, reason: String, frame: &[u8]) -> bool {
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

/// What a message carries, as custody takes it: a control's or calibrator's QC results, or a
/// specimen's results (every status kept: X as not done, C as a correction, "not identified"
/// as such); with the items of its fingerprint.
fn sample_of(
    oru: &hl7::OruResults,
    runs: &RunMapping,
    analyzer: &str,
    control_id: &str,
    now: u64,
) -> (Sample, Vec<String>) {
    let mut items = Vec::new();
    if let Some(role) = oru.role {
        let results: Vec<QcResult> = oru
            .results
            .iter()
            .map(|o| {
                let value = match o.value {
                    ResultValue::Number(v) => QcValue::Number(v),
                    ResultValue::Identified { identified, .. } => QcValue::Identified(identified),
                    ResultValue::NotObtained => QcValue::NotObtained,
                };
                // Recognised by a prefix, the sample's role is its rule's.
                let role = match &runs.role {
                    Some(_) => role,
                    None => runs
                        .qc
                        .iter()
                        .find(|r| r.code == o.code && r.sample == oru.specimen_id)
                        .map_or(role, |r| r.role),
                };
                items.push(format!("qc|{}|{}|{:?}", o.code, role.key(), value));
                QcResult {
                    sample: oru.specimen_id.clone(),
                    role,
                    code: o.code.clone(),
                    value,
                    reference: control_id.to_string(),
                    received_at_ms: now,
                    event: 0,
                }
            })
            .collect();
        return (
            Sample::Qc {
                sample_id: oru.specimen_id.clone(),
                results,
            },
            items,
        );
    }
    let mut entries = Vec::new();
    for o in &oru.results {
        let kind = match o.kind {
            hl7::oru::Kind::Initial => ResultKind::Initial,
            hl7::oru::Kind::Confirmation => ResultKind::Confirmation,
            hl7::oru::Kind::Validity => ResultKind::Validity,
            hl7::oru::Kind::Adulterant => ResultKind::Adulterant,
            hl7::oru::Kind::Interference => ResultKind::Interference,
        };
        let (value, identified) = match o.value {
            ResultValue::Number(v) => (Some(v), true),
            ResultValue::Identified {
                identified,
                measured,
            } => (measured, identified),
            ResultValue::NotObtained => (None, true),
        };
        let status = match o.status {
            hl7::oru::ResultStatus::Final => ResultStatus::Final,
            hl7::oru::ResultStatus::Corrected => ResultStatus::Corrected,
            hl7::oru::ResultStatus::CannotObtain => ResultStatus::NotDone,
        };
        let entry = ResultEntry {
            kind,
            target: o.target.clone(),
            value,
            unit: o.unit.clone(),
            bottle: Bottle::A,
            source: Source::Analyzer {
                analyzer: analyzer.to_string(),
                control_id: control_id.to_string(),
                observation: o
                    .set_id
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| o.location.path()),
            },
            received_at_ms: now,
            status,
            identified,
            tier: o.tier,
            aliquot: oru.aliquot.clone(),
            run: None,
            code: Some(o.code.clone()),
            acceptable: o.acceptable,
        };
        items.push(format!(
            "{}|{}|{}|{}|{}|{:?}|{}|{:?}|{}",
            kind.key(),
            entry.target,
            entry
                .value
                .map(|v| v.normalize().to_string())
                .unwrap_or_default(),
            entry.identified,
            status.key(),
            entry.tier,
            entry.aliquot,
            entry.acceptable,
            entry.unit,
        ));
        entries.push(entry);
    }
    (
        Sample::Specimen {
            specimen_id: oru.specimen_id.clone(),
            results: entries,
        },
        items,
    )
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
