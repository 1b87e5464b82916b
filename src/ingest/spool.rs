//! The LIMS spool: claims each dropped file, parses it (pure parsers in [`crate::codec::lims`]), hands
//! it to custody, and only then moves it to `done/`. A file that cannot be used goes to
//! `rejected/` with a `.reason` file naming the line and element. If the store cannot make it
//! durable, the file stays claimed and is tried again; after a crash, files left in
//! `processing/` are returned to `incoming/` and replayed (custody's dedupe by document hash
//! makes the replay harmless).

use crate::codec::lims::{self, LimsDocument};
use crate::core::telemetry::emit;
use crate::custody::runs::{Placed, Refusal, RunSettings, RunsError};
use crate::custody::{Applied, Custody, IngestError};
use crate::domain::runs::{QcResult, QcValue, SampleRole};
use crate::domain::specimen::{
    self, Bottle, Ccf, CorrectionEntry, Party, ResultEntry, ResultKind, Source,
};
use crate::ingest::events::{
    LimsDocumentNotDurable, LimsDocumentSettled, QcSampleConflict, ResultsAfterRelease,
};
use crate::ingest::spool_dir::{self, Spool};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How the spool loop behaves.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    pub poll_interval: Duration,
    pub max_document_bytes: usize,
    /// The LIMS's confirmation batches as runs: their kind and the QC rules of their analytes
    /// (`[[lims.qc]]`).
    pub runs: RunSettings,
}

/// The run settings of LIMS confirmation batches with the QC rules `qc`: confirmation runs,
/// never accepted automatically.
pub fn lims_runs(qc: Vec<crate::domain::runs::QcRule>) -> RunSettings {
    RunSettings {
        source: "lims".into(),
        kind: crate::domain::runs::RunKind::Confirmation,
        by_run_id: true,
        auto_accept: false,
        rules: std::sync::Arc::new(qc),
    }
}

/// The outcome of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentOutcome {
    Stored,
    Duplicate,
    Rejected(String),
}

/// Runs until `shutdown`: recovers what a crash left in `processing/`, then polls `incoming/`.
pub async fn run(
    spool: Arc<Spool>,
    custody: Custody,
    settings: SpoolSettings,
    shutdown: CancellationToken,
) {
    let s = spool.clone();
    match tokio::task::spawn_blocking(move || s.recover()).await {
        Ok(Ok(names)) if !names.is_empty() => {
            info!(
                component = "lims",
                files = names.len(),
                "returned files left in processing after a restart"
            );
        }
        Ok(Err(e)) => {
            warn!(component = "lims", error = %e, "could not recover the processing directory")
        }
        _ => {}
    }
    loop {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let s = spool.clone();
            let claim = match tokio::task::spawn_blocking(move || s.claim_next()).await {
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    warn!(component = "lims", error = %e, "could not claim a spool file");
                    break;
                }
                Err(_) => break,
            };
            process(&spool, &custody, &settings, claim, &shutdown).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.poll_interval) => {}
        }
    }
}

async fn process(
    spool: &Arc<Spool>,
    custody: &Custody,
    settings: &SpoolSettings,
    claim: spool_dir::Claim,
    shutdown: &CancellationToken,
) {
    let name = claim.name().to_string();
    let s = spool.clone();
    let max = settings.max_document_bytes;
    let claim = Arc::new(claim);
    let c2 = claim.clone();
    let bytes = match tokio::task::spawn_blocking(move || s.read(&c2, max)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            finish(spool, claim, Err(e.to_string()), &name).await;
            return;
        }
        Err(_) => return,
    };
    let mut delay = Duration::from_millis(100);
    loop {
        let outcome = apply(custody, &name, &bytes, max, &settings.runs).await;
        match outcome {
            Ok(o) => {
                let result = match o {
                    DocumentOutcome::Stored | DocumentOutcome::Duplicate => Ok(()),
                    DocumentOutcome::Rejected(r) => Err(r),
                };
                finish(spool, claim, result, &name).await;
                return;
            }
            Err(why) => {
                emit(LimsDocumentNotDurable {
                    document: &name,
                    error: &why,
                });
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn finish(
    spool: &Arc<Spool>,
    claim: Arc<spool_dir::Claim>,
    result: Result<(), String>,
    name: &str,
) {
    let Ok(claim) = Arc::try_unwrap(claim) else {
        return;
    };
    let s = spool.clone();
    let outcome = match &result {
        Ok(()) => "stored",
        Err(_) => "rejected",
    };
    let moved = tokio::task::spawn_blocking(move || match result {
        Ok(()) => s.commit(claim).map(|_| ()),
        Err(reason) => s.reject(claim, &reason).map(|_| ()),
    })
    .await;
    emit(LimsDocumentSettled {
        document: name,
        outcome,
    });
    match moved {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(component = "lims", document = %name, error = %e, "could not move the settled document")
        }
        Err(_) => {}
    }
}

/// Parses one document and applies it. `Err` only when the store could not make it durable.
pub async fn apply(
    custody: &Custody,
    name: &str,
    bytes: &[u8],
    max_bytes: usize,
    runs: &RunSettings,
) -> Result<DocumentOutcome, String> {
    let doc = match lims::parse_document(bytes, max_bytes) {
        Ok(d) => d,
        Err(e) => return Ok(DocumentOutcome::Rejected(e.to_string())),
    };
    let now = custody.now_ms();
    let result = match doc {
        LimsDocument::Request(r) => return apply_request(custody, name, bytes, r, now).await,
        LimsDocument::Accession(a) => {
            let id = a.specimen_id.as_str().to_string();
            let acc = accession_record(&a, name, now);
            let image = a.ccf_image.as_ref().map(|i| (i.media_type, i.data.clone()));
            custody
                .accession(name, bytes.to_vec(), &id, acc, image)
                .await
        }
        LimsDocument::ConfirmationBatch(b) => {
            let specimens = b
                .specimens
                .iter()
                .map(|s| {
                    let bottle = match s.bottle {
                        lims::BottleLabel::A => Bottle::A,
                        lims::BottleLabel::B => Bottle::B,
                    };
                    let results = s
                        .results
                        .iter()
                        .map(|q| ResultEntry {
                            kind: ResultKind::Confirmation,
                            target: q.analyte.clone(),
                            value: Some(q.value),
                            unit: "ng/mL".into(),
                            bottle,
                            source: Source::Lims {
                                document: name.to_string(),
                            },
                            received_at_ms: now,
                            code: Some(q.analyte.clone()),
                            acceptable: q.acceptable,
                            ..ResultEntry::default()
                        })
                        .collect();
                    (s.specimen_id.as_str().to_string(), results)
                })
                .collect();
            let qc =
                b.qc.iter()
                    .flat_map(|s| {
                        let role = match s.role {
                            lims::QcRole::Control => SampleRole::Control,
                            lims::QcRole::Calibrator => SampleRole::Calibrator,
                        };
                        s.results.iter().map(move |q| QcResult {
                            sample: s.sample_id.as_str().to_string(),
                            role,
                            code: q.analyte.clone(),
                            value: QcValue::Number(q.value),
                            reference: name.to_string(),
                            received_at_ms: now,
                            event: 0,
                        })
                    })
                    .collect();
            return match crate::custody::runs::batch(
                custody,
                runs,
                name,
                bytes.to_vec(),
                &b.batch_id,
                specimens,
                qc,
            )
            .await
            {
                Ok(Placed::Stored { closed, .. }) => {
                    for (key, state) in &closed {
                        info!(component = "runs", run = %key, state = %state.key(), "LIMS confirmation batch stored as a run; its QC evaluated");
                    }
                    Ok(DocumentOutcome::Stored)
                }
                Ok(Placed::Duplicate) => Ok(DocumentOutcome::Duplicate),
                Err(RunsError::Refused(r)) => {
                    if r == Refusal::AfterRelease {
                        emit(ResultsAfterRelease {
                            source: "lims",
                            reference: name,
                        });
                    } else if r == Refusal::QcSampleIsSpecimen {
                        emit(QcSampleConflict {
                            source: "lims",
                            reference: name,
                        });
                    }
                    Ok(DocumentOutcome::Rejected(r.to_string()))
                }
                Err(RunsError::NotDurable(e)) => Err(e),
            };
        }
        LimsDocument::CertifiedCopy(c) => {
            custody
                .certified_copy(
                    name,
                    bytes.to_vec(),
                    c.specimen_id.as_str(),
                    c.results.clone(),
                    c.certifying_scientist.clone(),
                    (c.image.media_type, c.image.data.clone()),
                )
                .await
        }
        LimsDocument::Correction(c) => {
            let (secs, _) = c.received_at.unix();
            let entry = CorrectionEntry {
                flaw: c.flaw.key().to_string(),
                document: c.document_ref.clone(),
                recorded_by: c.recorded_by.clone(),
                received_at_ms: (secs.max(0) as u64) * 1000,
            };
            custody
                .correction(name, bytes.to_vec(), c.specimen_id.as_str(), entry)
                .await
        }
    };
    match result {
        Ok(Applied::Stored(_)) => Ok(DocumentOutcome::Stored),
        Ok(Applied::Duplicate) => Ok(DocumentOutcome::Duplicate),
        Err(IngestError::Refused(e)) => Ok(DocumentOutcome::Rejected(e.to_string())),
        Err(IngestError::UnknownSpecimen) => Ok(DocumentOutcome::Rejected(
            "no accession is stored for the specimen this document names".into(),
        )),
        Err(IngestError::ReusedControlId) => Ok(DocumentOutcome::Rejected(
            "a document with the same content hash was stored with different meaning".into(),
        )),
        Err(IngestError::NotDurable(e)) => Err(e),
    }
}

/// A written request from the LIMS: recorded by the lifecycle (deduplicated by the document's
/// hash like every LIMS document).
async fn apply_request(
    custody: &Custody,
    name: &str,
    bytes: &[u8],
    r: lims::RequestDoc,
    now: u64,
) -> Result<DocumentOutcome, String> {
    use crate::custody::lifecycle::{self, Channel, LifecycleError, RequestKind, RequestOutcome};
    use crate::domain::retention::Until;
    let (secs, _) = r.received_at.unix();
    let kind = match r.ask {
        lims::RequestAsk::RetentionExtension {
            requester,
            subject,
            until,
        } => RequestKind::RetentionExtension {
            requester,
            subject,
            until: match until {
                lims::RequestUntil::Date(d) => Until::Date(d.into()),
                lims::RequestUntil::Released => Until::Released,
            },
        },
        lims::RequestAsk::RetentionRelease {
            requester,
            request_ref,
        } => RequestKind::RetentionRelease {
            requester,
            request_ref,
        },
        lims::RequestAsk::Quantitation => RequestKind::Quantitation,
        lims::RequestAsk::SplitTest { second_laboratory } => {
            RequestKind::SplitTest { second_laboratory }
        }
        lims::RequestAsk::AdulterantRetest {
            cite,
            remark,
            substance,
        } => RequestKind::AdulterantRetest {
            cite,
            remark,
            substances: substance.into_iter().collect(),
        },
    };
    let req = lifecycle::WrittenRequest {
        specimen_id: r.specimen_id.as_str().to_string(),
        document_ref: r.document_ref,
        received_at_ms: (secs.max(0) as u64) * 1000,
        recorded_by: r.recorded_by,
        kind,
    };
    let channel = Channel::Lims {
        document: name.to_string(),
        raw: Arc::new(bytes.to_vec()),
    };
    match lifecycle::apply_request(custody.committer(), custody.lifecycle(), req, channel, now)
        .await
    {
        Ok(RequestOutcome::Recorded(_)) => Ok(DocumentOutcome::Stored),
        Ok(RequestOutcome::Duplicate) => Ok(DocumentOutcome::Duplicate),
        Err(LifecycleError::UnknownSpecimen) => Ok(DocumentOutcome::Rejected(
            "no accession is stored for the specimen this document names".into(),
        )),
        Err(LifecycleError::Refused(why)) => Ok(DocumentOutcome::Rejected(why)),
        Err(LifecycleError::NotDurable(e)) => Err(e),
    }
}

/// The CCF data and findings of an accession document.
pub fn accession_record(
    a: &lims::AccessionDoc,
    document: &str,
    now_ms: u64,
) -> specimen::Accession {
    let mut storage = BTreeMap::new();
    if let Some(l) = &a.bottle_a.freezer_location {
        storage.insert("A".to_string(), l.clone());
    }
    if let Some(l) = &a.bottle_b.freezer_location {
        storage.insert("B".to_string(), l.clone());
    }
    specimen::Accession {
        ccf: Ccf {
            employer: Party {
                name: a.employer.name.clone(),
                id: Some(a.employer.id.clone()),
                ..Party::default()
            },
            mro: Party {
                name: a.mro.name.clone(),
                id: Some(a.mro.directory_id.clone()),
                address: Some(a.mro.address.clone()),
                phone: None,
            },
            donor_id: a.donor.as_ref().map(|d| match d {
                lims::DonorId::Ssn(s) => s.expose().to_string(),
                lims::DonorId::EmployeeId(e) => e.expose().to_string(),
            }),
            reason_for_test: a.reason.map(|r| r.key().to_string()),
            dot_agency: a.dot_agency.map(|g| g.key().to_string()),
            collector: Party {
                name: a.collector.name.clone(),
                phone: Some(a.collector.phone.clone()),
                ..Party::default()
            },
            collected_on: a.collection_date.to_string(),
            received_on: a.receipt_date.to_string(),
            split_collected: a.split_collected,
            observed: a.observed,
            remarks: a.remarks.as_ref().map(|r| r.expose().to_string()),
            storage,
        },
        findings: a.findings(),
        profile: a.tests.profile.clone(),
        program: a.tests.program(),
        specimen_type: a.tests.specimen_type,
        document: document.to_string(),
        received_at_ms: now_ms,
        correction_initiated_on: a.correction_initiated_on.map(Into::into),
    }
}
