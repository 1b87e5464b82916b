//! Unauthenticated requests do not grow the store without bound: 500 of them from one source
//! leave a handful of audit entries (the first of the minute and a summary with the count),
//! while a request of an authenticated user that their role forbids is still audited on its own.

mod common;
use common::*;

#[test]
fn a_flood_of_unauthenticated_requests_is_counted_not_audited_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "");
    let mut d = Daemon::start(dir.path());

    for i in 0..500 {
        let token = if i % 2 == 0 {
            None
        } else {
            Some("not-a-token")
        };
        let (status, _) = d.get("/api/review", token);
        assert_eq!(status, 401, "request {i}");
    }
    // An authenticated viewer may read but not release: that refusal is audited by name.
    let r = custodian::admin::client::post(
        d.admin,
        "/api/review/SPEC-R1/release",
        Some(VIEWER_TOKEN),
        &serde_json::json!({}),
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(d.get("/api/review", Some(VIEWER_TOKEN)).0, 200);
    let (_, metrics) = d.get("/metrics", None);
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("custodian_admin_refusals_total")
                && l.contains("unauthenticated")
                && l.ends_with(" 500")),
        "every refusal is still counted:\n{metrics}"
    );
    assert_eq!(d.term(), Some(0));

    let store = custodian::store::Store::open(&dir.path().join("store")).unwrap();
    assert!(store.verify_audit().is_ok());
    let entries: Vec<_> = store
        .audit_entries(1)
        .flatten()
        .map(|(_, r)| r.entry)
        .collect();
    let unknown: Vec<_> = entries
        .iter()
        .filter(|e| e.actor == "unauthenticated")
        .collect();
    assert!(
        !unknown.is_empty() && unknown.len() <= 6,
        "{} audit entries for 500 unauthenticated requests: {unknown:#?}",
        unknown.len()
    );
    let firsts = unknown.iter().filter(|e| e.action == "refused").count() as u64;
    let more: u64 = unknown
        .iter()
        .filter(|e| e.action == "refused_summary")
        .map(|e| {
            e.after
                .as_deref()
                .and_then(|a| a.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("a summary names its count: {e:?}"))
        })
        .sum();
    assert_eq!(
        firsts + more,
        500,
        "the entries account for every refusal: {unknown:#?}"
    );
    assert!(
        unknown
            .iter()
            .filter(|e| e.action == "refused_summary")
            .all(|e| e.subject == "source 127.0.0.1"),
        "{unknown:#?}"
    );

    let forbidden: Vec<_> = entries
        .iter()
        .filter(|e| e.actor == "user:Viewer")
        .collect();
    assert_eq!(forbidden.len(), 1, "{forbidden:#?}");
    assert_eq!(forbidden[0].action, "refused");
    assert_eq!(forbidden[0].subject, "/api/review/SPEC-R1/release");
    assert_eq!(forbidden[0].after.as_deref(), Some("forbidden"));
}
