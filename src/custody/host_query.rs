//! An analyzer's host query reads one specimen: in one transaction the record is read and the
//! read is audited (`host_query`: the analyzer, the specimen, the answer given), durable before
//! the analyzer gets its answer — a query for a specimen rejected for testing can be traced in
//! the audit log, since logs never name specimens.

use crate::custody::{ChangeErrorOrUnknown, Custody, IngestError};
use crate::domain::rules::ProfileSet;
use crate::domain::specimen::SpecimenRecord;
use crate::store::{Abort, AuditEntry, Tx};

/// Reads `specimen_id`, lets `decide` choose the answer from the record (if any) and the loaded
/// editions, and audits the read with the summary `decide` returns. `decide` may run more than
/// once (the transaction may be retried): it must be pure.
pub async fn lookup<T, F>(
    custody: &Custody,
    analyzer: &str,
    specimen_id: &str,
    decide: F,
) -> Result<T, IngestError>
where
    F: Fn(Option<&SpecimenRecord>, &ProfileSet) -> (T, String) + Send + Sync + 'static,
    T: Send + 'static,
{
    let now = custody.now_ms();
    let actor: String = format!("analyzer:{analyzer}").chars().take(64).collect();
    let id = specimen_id.to_string();
    let view = custody.clone();
    let r = custody
        .committer()
        .submit(
            move |tx: &mut Tx<'_>| -> Result<T, Abort<ChangeErrorOrUnknown>> {
                // With its results (they live in keys of their own): the confirmations ordered
                // depend on the screen's.
                let rec: Option<SpecimenRecord> = crate::custody::records::get_specimen(tx, &id)?;
                let (answer, summary) = decide(rec.as_ref(), view.profiles());
                tx.audit(
                    AuditEntry::new(now, actor.clone(), "host_query", id.as_str()).after(summary),
                )?;
                Ok(answer)
            },
        )
        .await;
    r.map_err(IngestError::from)
}
