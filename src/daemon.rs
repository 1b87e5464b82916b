//! The wiring: the one module that knows every stage. It loads the configuration, starts the
//! stages, reports readiness and shuts down on SIGTERM/SIGINT.

use crate::config::{self, LogFormat};
use std::path::Path;
use std::process::ExitCode;
use tracing::{error, info};

/// Sets up logging once. Log lines never carry donor data: only components and ids.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// `custodian run`.
pub fn main(config_path: &Path) -> ExitCode {
    let (cfg, profiles) = match config::load(config_path) {
        Ok(x) => x,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg.log.level, cfg.log.format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(component = "daemon", error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        info!(
            component = "daemon",
            profiles = profiles.len(),
            default_profile = %cfg.rules.default_profile,
            "configuration and rule profiles loaded; ready"
        );
        shutdown_signal().await;
        info!(component = "daemon", "shutdown requested; stopping");
    });
    ExitCode::SUCCESS
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
