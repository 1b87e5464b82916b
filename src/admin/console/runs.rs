//! The console's Runs page: analytical runs by state with their QC, and a certifying
//! scientist's acceptance or rejection of a run, signed with the password like a release. It
//! reads and decides only through the API's [`RunsApi`](crate::admin::RunsApi), so a decision
//! in the console is recorded (and audited) exactly as one through `POST /api/runs/{key}/...`.

use super::views::{Cell, Nav, Page, Table};
use super::{
    Form, Who, audit, check_csrf, check_role, error_page, html, rfc3339, signature, text_of, who,
};
use crate::admin::AdminState;
use crate::admin::auth::Permission;
use crate::store::AuditEntry;
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

const STATES: [(&str, &str); 4] = [
    ("pending", "Waiting for acceptance"),
    ("open", "Open (closing QC not yet received)"),
    ("accepted", "Accepted"),
    ("rejected", "Rejected"),
];

/// A path segment for a run key (keys carry `:`).
pub fn segment(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn unavailable(w: &Who) -> Response {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(w.nav()),
        "Not available",
        "runs are not available",
    )
}

pub async fn list(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(runs) = &s.runs else {
        return unavailable(&w);
    };
    let q = Form::parse(q.unwrap_or_default().as_bytes());
    let state = match q.get("state") {
        "" => "pending",
        other => other,
    };
    let Some((_, caption)) = STATES.iter().find(|(k, _)| *k == state) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            Some(w.nav()),
            "Unknown state",
            "Choose one of the listed states.",
        );
    };
    let list = match runs.list(state) {
        Ok(v) => v,
        Err((code, msg)) => {
            return error_page(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                Some(w.nav()),
                "Error",
                msg,
            );
        }
    };
    let mut p = Page::new("Analytical runs", Some(w.nav())).para(
        "A run's results count once its QC passed and it was accepted: runs with a confirmation are accepted by a certifying scientist, the others automatically when every QC result passed.",
    );
    for (k, label) in STATES {
        p = p.link(format!("/console/runs?state={k}"), format!("Show: {label}"));
    }
    p.tables.push(Table {
        caption: (*caption).to_string(),
        headers: vec![
            "Run",
            "Source",
            "Kind",
            "Opened",
            "Closed",
            "QC",
            "Specimens",
        ],
        rows: list
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let key = text_of(&r["key"]);
                vec![
                    Cell::link(key.clone(), format!("/console/runs/{}", segment(&key))),
                    Cell::text(text_of(&r["source"])),
                    Cell::text(text_of(&r["kind"])),
                    Cell::text(text_of(&r["opened_at"])),
                    Cell::text(text_of(&r["closed_at"])),
                    Cell::text(text_of(&r["qc"])),
                    Cell::text(text_of(&r["specimens"])),
                ]
            })
            .collect(),
        empty: "No run in this state.".into(),
    });
    html(StatusCode::OK, p)
}

/// One run: its QC checks and results, its specimens, and the decision forms.
#[derive(Template)]
#[template(path = "run.html", config = "src/admin/console/askama.toml")]
pub struct RunPage {
    pub title: String,
    pub nav: Option<Nav>,
    pub csrf: String,
    pub key: String,
    pub action: String,
    pub summary: Vec<String>,
    pub decision: Option<String>,
    pub content_sha256: String,
    pub tables: Vec<Table>,
    pub can_decide: bool,
}

pub async fn show(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(runs) = &s.runs else {
        return unavailable(&w);
    };
    let run = match runs.show(&key) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                Some(w.nav()),
                "Not found",
                "No such run.",
            );
        }
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, Some(w.nav()), "Error", e),
    };
    let ms = |v: &serde_json::Value| v.as_u64().map(rfc3339).unwrap_or_else(|| "—".into());
    let state = text_of(&run["state"]);
    let mut summary = vec![format!(
        "{} run from {} (its run {}), delimited by {}; opened {}, closed {}{}.",
        text_of(&run["kind"]),
        text_of(&run["source"]),
        text_of(&run["local_id"]),
        text_of(&run["delimited_by"]).replace('_', " "),
        ms(&run["opened_at_ms"]),
        ms(&run["closed_at_ms"]),
        run["closed_because"]
            .as_str()
            .map(|b| format!(" ({b})"))
            .unwrap_or_default(),
    )];
    summary.push(format!(
        "State: {state}. QC: {}.{}",
        run["evaluation"]["outcome"]
            .as_str()
            .unwrap_or("not evaluated yet"),
        if run["has_confirmation"] == true {
            " It holds confirmation results: a certifying scientist accepts it by name."
        } else {
            ""
        }
    ));
    let unmatched: Vec<String> = run["evaluation"]["unmatched"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text_of)
        .collect();
    if !unmatched.is_empty() {
        summary.push(format!(
            "QC results no rule names (kept, never guessed): {}.",
            unmatched.join(", ")
        ));
    }
    let d = &run["decision"];
    let decision = match d["decision"].as_str() {
        Some("accepted") => Some(format!(
            "Accepted {} by {}{} ({}){}; content SHA-256 {}.",
            ms(&d["at_ms"]),
            text_of(&d["by"]),
            if d["auto"] == true {
                " automatically"
            } else {
                ""
            },
            text_of(&d["meaning"]),
            d["reason"]
                .as_str()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
            text_of(&d["content_sha256"]),
        )),
        Some("rejected") => Some(format!(
            "Rejected {} by {}: {}; content SHA-256 {}. Its specimens need a retest.",
            ms(&d["at_ms"]),
            text_of(&d["by"]),
            text_of(&d["reason"]),
            text_of(&d["content_sha256"]),
        )),
        _ => None,
    };
    let mut tables = vec![Table {
        caption: "QC checks".into(),
        headers: vec!["Assay", "Rule", "Needed", "Results", "Outcome"],
        rows: run["evaluation"]["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                vec![
                    Cell::text(text_of(&c["code"])),
                    Cell::text(text_of(&c["rule"])),
                    Cell::text(if c["required"] == true { "yes" } else { "no" }),
                    Cell::text(
                        c["results"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(text_of)
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    Cell::text(text_of(&c["outcome"])),
                ]
            })
            .collect(),
        empty: "Not evaluated yet: the closing QC has not arrived.".into(),
    }];
    tables.push(Table {
        caption: "QC results as received".into(),
        headers: vec!["Sample", "Role", "Assay", "Value", "Message", "Received"],
        rows: run["qc"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|q| {
                let v = &q["value"];
                let value = match (v["is"].as_str(), &v["value"]) {
                    (Some("number"), n) => text_of(n),
                    (Some("identified"), serde_json::Value::Bool(true)) => "identified".into(),
                    (Some("identified"), _) => "not identified".into(),
                    (Some(other), _) => other.replace('_', " "),
                    (None, _) => text_of(v),
                };
                vec![
                    Cell::text(text_of(&q["sample"])),
                    Cell::text(text_of(&q["role"])),
                    Cell::text(text_of(&q["code"])),
                    Cell::text(value),
                    Cell::text(text_of(&q["reference"])),
                    Cell::text(ms(&q["received_at_ms"])),
                ]
            })
            .collect(),
        empty: "No QC result yet.".into(),
    });
    tables.push(Table {
        caption: "Specimens in the run".into(),
        headers: vec!["Specimen", "Assays"],
        rows: run["specimens"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|sp| {
                let id = text_of(&sp["specimen_id"]);
                vec![
                    Cell::link(id.clone(), format!("/console/specimens/{id}")),
                    Cell::text(
                        sp["codes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(text_of)
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                ]
            })
            .collect(),
        empty: "No specimen.".into(),
    });
    html(
        StatusCode::OK,
        RunPage {
            title: format!("Run {key}"),
            nav: Some(w.nav()),
            csrf: w.csrf.clone(),
            action: format!("/console/runs/{}", segment(&key)),
            key,
            summary,
            decision,
            content_sha256: text_of(&run["content_sha256"]),
            tables,
            can_decide: state == "pending" && w.user.role.may(Permission::Release),
        },
    )
}

/// Accepts or rejects a run after the password of the signature.
pub async fn decide(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let form = Form::parse(&body);
    let path = format!("/console/runs/{}", segment(&key));
    if let Err(r) = check_csrf(&s, &w, &form, &path) {
        return r;
    }
    if let Err(r) = check_role(&s, &w, Permission::Release, &path) {
        return r;
    }
    let Some(runs) = &s.runs else {
        return unavailable(&w);
    };
    let accept = match form.get("decision") {
        "accept" => true,
        "reject" => false,
        _ => {
            return error_page(
                StatusCode::BAD_REQUEST,
                Some(w.nav()),
                "Refused",
                "The form says neither accept nor reject.",
            );
        }
    };
    let reason = form.get("reason").trim().to_string();
    if !accept && reason.is_empty() {
        return error_page(
            StatusCode::BAD_REQUEST,
            Some(w.nav()),
            "Not rejected",
            "Give the reason for the rejection.",
        );
    }
    if let Err(r) = signature(&s, &w, form.get("password"), &key).await {
        return r;
    }
    // What was shown must be what is signed.
    let now_sha = runs
        .show(&key)
        .ok()
        .flatten()
        .map(|r| text_of(&r["content_sha256"]));
    if now_sha.as_deref() != Some(form.get("sha")) {
        return error_page(
            StatusCode::CONFLICT,
            Some(w.nav()),
            "Not decided",
            "The run changed since you reviewed it: nothing was decided. Review it again.",
        );
    }
    let now = s.clock_ms();
    let meaning = if accept {
        "run accepted"
    } else {
        "run rejected"
    };
    if let Err(r) = audit(
        &s,
        Some(w.nav()),
        vec![
            AuditEntry::new(now, w.actor(), "signature_given", key.as_str()).after(format!(
                "console: password re-entered; {meaning}; run sha256 {}",
                form.get("sha")
            )),
        ],
    )
    .await
    {
        return r;
    }
    match runs.decide(key.clone(), accept, reason, &w.user).await {
        Ok(v) => html(
            StatusCode::OK,
            Page::new(
                format!("Run {key}: {}", text_of(&v["state"])),
                Some(w.nav()),
            )
            .para(format!("Signed by {} ({meaning}).", w.user.name))
            .link(
                format!("/console/runs/{}", segment(&key)),
                format!("Run {key}"),
            )
            .link("/console/runs", "Runs waiting for acceptance")
            .link("/console/queue", "Review queue"),
        ),
        Err((code, msg)) => error_page(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Some(w.nav()),
            "Not decided",
            msg,
        ),
    }
    .into_response()
}
