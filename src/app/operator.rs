//! Operator commands of the CLI (`specimen show|list`, `audit verify`). While the daemon runs it
//! holds the store, so they ask its admin API (address from the runtime file beside the store,
//! token from `--token-file` or `CUSTODIAN_TOKEN`); when it is stopped they open the store.

use crate::admin::client;
use crate::app::config;
use crate::app::daemon::{RuntimeInfo, audit_json, runtime_file, specimen_json};
use crate::domain::specimen::State;
use crate::store::Store;
use std::path::Path;
use std::process::ExitCode;

/// What a local query printed: the JSON and whether it reports a failure.
pub struct Answer {
    pub json: serde_json::Value,
    pub failed: bool,
}

/// Runs a query through the daemon if it runs, else against the store directly.
pub fn query(
    config_path: &Path,
    token_file: Option<&Path>,
    api_path: &str,
    local: impl FnOnce(&Store) -> Result<Answer, String>,
) -> ExitCode {
    let (cfg, runtime) = match running(config_path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Some(rt) = runtime {
        {
            let token = token(token_file);
            return match client::get(rt.admin_endpoint(), api_path, token.as_deref()) {
                Ok(r) if r.status == 200 => {
                    crate::outln!("{}", r.body.trim_end());
                    let v = serde_json::from_str::<serde_json::Value>(&r.body).ok();
                    let failed = v
                        .as_ref()
                        .and_then(|v| v.get("ok").and_then(|o| o.as_bool()))
                        == Some(false)
                        || v.as_ref()
                            .and_then(|v| v.get("kind").and_then(|k| k.as_str()))
                            == Some("not_enough_testing");
                    if failed {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Ok(r) => {
                    eprintln!(
                        "custodian: the daemon answered {}: {}",
                        r.status,
                        r.body.trim_end()
                    );
                    ExitCode::from(if r.status == 404 { 1 } else { 2 })
                }
                Err(e) => {
                    eprintln!(
                        "custodian: cannot reach the daemon's admin API at {}: {e}",
                        rt.admin
                    );
                    ExitCode::from(2)
                }
            };
        }
    }
    let store = match Store::open_with(&cfg.store.path, &cfg.store.options()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("custodian: cannot open the store: {e}");
            return ExitCode::from(2);
        }
    };
    match local(&store) {
        Ok(a) => {
            crate::outln!(
                "{}",
                serde_json::to_string_pretty(&a.json).unwrap_or_default()
            );
            if a.failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("custodian: {e}");
            ExitCode::from(1)
        }
    }
}

/// The configuration, and the running daemon's runtime information if it runs.
fn running(config_path: &Path) -> Result<(config::Config, Option<RuntimeInfo>), ExitCode> {
    let (cfg, _) = config::load(config_path).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })?;
    let runtime: Option<RuntimeInfo> = std::fs::read_to_string(runtime_file(&cfg.store.path))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(|rt: &RuntimeInfo| alive(rt.pid));
    Ok((cfg, runtime))
}

fn token(token_file: Option<&Path>) -> Option<String> {
    match token_file {
        Some(f) => std::fs::read_to_string(f)
            .ok()
            .map(|t| t.trim().to_string()),
        None => std::env::var("CUSTODIAN_TOKEN").ok(),
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

pub fn show_specimen(store: &Store, id: &str) -> Result<Answer, String> {
    let rec = crate::custody::records::read_specimen(store, id).map_err(|e| e.to_string())?;
    match rec {
        Some(r) => Ok(Answer {
            json: specimen_json(&r),
            failed: false,
        }),
        None => Err("no such specimen".into()),
    }
}

pub fn list_specimens(store: &Store, state: &str) -> Result<Answer, String> {
    let s = State::from_key(state).ok_or_else(|| {
        format!(
            "unknown state `{state}` (one of: {})",
            State::ALL.map(|s| s.key()).join(", ")
        )
    })?;
    let ids = store.ids_in_state(s.key()).map_err(|e| e.to_string())?;
    Ok(Answer {
        json: serde_json::json!(ids),
        failed: false,
    })
}

/// `summary` on a stopped daemon's store: an employer's request (40.111(b)), audited as asked
/// from this machine's command line (`cli:USER`).
pub fn summary(
    store: &Store,
    desk: &crate::custody::summaries::Desk,
    employer: &str,
    from: &str,
    to: &str,
) -> Result<Answer, String> {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let now = crate::core::clock::Clock::now_ms(&crate::core::clock::SystemClock);
    let v = crate::custody::summaries::request_offline(
        store,
        desk,
        employer,
        from,
        to,
        &format!("cli:{user}"),
        now,
    )
    .map_err(|e| e.to_string())?;
    let failed = v.get("kind").and_then(|k| k.as_str()) == Some("not_enough_testing");
    Ok(Answer { json: v, failed })
}

/// `summaries list` on a stopped daemon's store.
pub fn list_summaries(
    store: &Store,
    period: Option<&str>,
    utc_offset_minutes: i32,
) -> Result<Answer, String> {
    let now = crate::core::clock::Clock::now_ms(&crate::core::clock::SystemClock);
    let list = crate::custody::summaries::list(store, period, utc_offset_minutes, now)
        .map_err(|e| e.to_string())?;
    Ok(Answer {
        json: serde_json::to_value(list).map_err(|e| e.to_string())?,
        failed: false,
    })
}

/// `summaries show ID` on a stopped daemon's store.
pub fn show_summary(store: &Store, id: &str, utc_offset_minutes: i32) -> Result<Answer, String> {
    let now = crate::core::clock::Clock::now_ms(&crate::core::clock::SystemClock);
    match crate::custody::summaries::show(store, id, utc_offset_minutes, now)? {
        Some(v) => Ok(Answer {
            json: v,
            failed: false,
        }),
        None => Err("no such summary".into()),
    }
}

pub fn verify_audit(store: &Store) -> Result<Answer, String> {
    let v = audit_json(store)?;
    let failed = v.get("ok").and_then(|o| o.as_bool()) == Some(false);
    Ok(Answer { json: v, failed })
}

/// `audit show SPECIMEN_ID` on a stopped daemon's store.
pub fn specimen_audit(store: &Store, id: &str) -> Result<Answer, String> {
    Ok(Answer {
        json: crate::app::daemon::specimen_audit_json(store, id)?,
        failed: false,
    })
}

/// `reports export REPORT_ID [--out FILE]`: the signed compact JWS through the admin API
/// (audited there), to `out` (mode 0600, written then renamed) or standard output.
pub fn export_report(
    config_path: &Path,
    token_file: Option<&Path>,
    report_id: &str,
    api_path: &str,
    out: Option<&Path>,
) -> ExitCode {
    let (_, runtime) = match running(config_path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(rt) = runtime else {
        eprintln!("custodian: the daemon is not running; start it first (custodian run)");
        return ExitCode::from(2);
    };
    let token = token(token_file);
    match client::get(rt.admin_endpoint(), api_path, token.as_deref()) {
        Ok(r) if r.status == 200 => {
            let jws = r.body.trim();
            match out {
                None => {
                    crate::outln!("{jws}");
                    ExitCode::SUCCESS
                }
                Some(path) => {
                    use std::io::Write;
                    use std::os::unix::fs::OpenOptionsExt;
                    let tmp = path.with_extension("tmp");
                    let written = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&tmp)
                        .and_then(|mut f| {
                            f.write_all(jws.as_bytes())?;
                            f.write_all(b"\n")?;
                            f.sync_all()
                        })
                        .and_then(|()| std::fs::rename(&tmp, path));
                    match written {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            let _ = std::fs::remove_file(&tmp);
                            eprintln!("custodian: {}: {e}", path.display());
                            ExitCode::from(2)
                        }
                    }
                }
            }
        }
        Ok(r) => {
            eprintln!(
                "custodian: the daemon answered {} for report {report_id}: {}",
                r.status,
                r.body.trim_end()
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!(
                "custodian: cannot reach the daemon's admin API at {}: {e}",
                rt.admin
            );
            ExitCode::from(2)
        }
    }
}

/// Runs an admin API action (the daemon must be running: releases go through its committer).
pub fn action(
    config_path: &Path,
    token_file: Option<&Path>,
    method: &str,
    api_path: &str,
    body: Option<serde_json::Value>,
) -> ExitCode {
    let (_, runtime) = match running(config_path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(rt) = runtime else {
        eprintln!("custodian: the daemon is not running; start it first (custodian run)");
        return ExitCode::from(2);
    };
    let token = token(token_file);
    let r = match (method, body) {
        ("POST", Some(b)) => client::post(rt.admin_endpoint(), api_path, token.as_deref(), &b),
        ("POST", None) => client::post(
            rt.admin_endpoint(),
            api_path,
            token.as_deref(),
            &serde_json::json!({}),
        ),
        _ => client::get(rt.admin_endpoint(), api_path, token.as_deref()),
    };
    match r {
        Ok(r) if r.status == 200 => {
            crate::outln!("{}", r.body.trim_end());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!(
                "custodian: the daemon answered {}: {}",
                r.status,
                r.body.trim_end()
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!(
                "custodian: cannot reach the daemon's admin API at {}: {e}",
                rt.admin
            );
            ExitCode::from(2)
        }
    }
}
