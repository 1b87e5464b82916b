//! The wiring: the one module that knows every stage. It loads the configuration, opens the
//! store, starts the group committer, the analyzer listeners, the LIMS spool and the admin API,
//! reports readiness (systemd notify, `/readyz`, a runtime file), feeds the watchdog, reloads
//! what can change safely on SIGHUP, and shuts down cleanly on SIGTERM/SIGINT: stop accepting,
//! settle what is in flight, flush, exit 0.

use crate::admin::{self, AdminState, Api, auth::Users};
use crate::app::config::{self, Config, LogFormat};
use crate::core::clock::{Clock, SystemClock};
use crate::custody::Custody;
use crate::domain::rules::ProfileSet;
use crate::domain::specimen::{SpecimenRecord, State};
use crate::ingest::spool_dir::Spool;
use crate::ingest::{
    analyzer::AnalyzerHandler,
    listener::{self, ListenerSettings},
    spool::{self, SpoolSettings},
};
use crate::store::{GroupCommitter, GroupConfig, Keyspace, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Sets up logging once. Log lines never carry donor data: only components and ids.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal: journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A panic (a supervised task's, say) is logged with its place only: its message may quote the
/// value being processed (a slice of a frame, a field of a record), and nothing of that may
/// reach the logs. The supervisor restarts the task; the place is enough to find the bug.
fn log_panics_without_payload() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_else(|| "unknown".into());
        error!(component = "daemon", place = %place, "a task panicked (its message is not logged: it may quote data)");
    }));
}

/// Where a running daemon says what it bound (tests and the CLI read it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub pid: u32,
    pub admin: SocketAddr,
    /// The admin listener's certificate when it speaks TLS (`[admin.tls]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_tls_cert: Option<PathBuf>,
    pub analyzers: BTreeMap<String, SocketAddr>,
}

impl RuntimeInfo {
    /// Where the CLI reaches the admin API.
    pub fn admin_endpoint(&self) -> admin::client::Endpoint {
        admin::client::Endpoint {
            addr: self.admin,
            tls_cert: self.admin_tls_cert.clone(),
        }
    }
}

/// The runtime file of a store: `<store path>.runtime.json`, beside the store directory.
pub fn runtime_file(store_path: &Path) -> PathBuf {
    let mut p = store_path.as_os_str().to_owned();
    p.push(".runtime.json");
    PathBuf::from(p)
}

/// `custodian run`.
pub fn main(config_path: &Path) -> ExitCode {
    // No transparent huge pages for the daemon, before it allocates much: a 2 MiB page stays
    // resident whole while most of it is free, and the allocator's arenas churn (the RSS was
    // 120 MiB with them and 64 MiB without, at the same store and load; `store_economy`).
    // mimalloc is built not to ask for them (`no_thp`); this keeps a host whose THP mode is
    // `always` from giving them anyway. The flag is the process's, inherited by no one else.
    let thp = rustix::thread::disable_transparent_huge_pages(true);
    let (cfg, profiles) = match config::load(config_path) {
        Ok(x) => x,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg.log.level, cfg.log.format);
    log_panics_without_payload();
    if let Err(e) = thp {
        warn!(
            component = "daemon",
            error = %e,
            "transparent huge pages stay enabled: the daemon's RSS may be up to twice its heap"
        );
    }
    crate::trust::tls::install_provider();
    let prometheus = match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()
    {
        Ok(h) => {
            crate::app::monitoring::describe();
            Some(h)
        }
        Err(e) => {
            warn!(component = "daemon", error = %e, "metrics recorder not installed");
            None
        }
    };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.ingest.workers(cpus))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(component = "daemon", error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let (store_path, store_options) = (cfg.store.path.clone(), cfg.store.options());
    let outcome = rt.block_on(run(
        cfg,
        profiles,
        prometheus,
        config_path.to_path_buf(),
        Hooks::default(),
    ));
    // Every task ends with the runtime, and with them the last handles on the store.
    rt.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(()) => {
            settle_store(&store_path, &store_options);
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(component = "daemon", error = %e, "custodian stopped");
            eprintln!("custodian: {e}");
            ExitCode::FAILURE
        }
    }
}

/// After a clean stop: rewrites sled's file if it grew (see the store's `rewrite`: the next
/// start then opens a small one), then opens the store once more and closes it. sled replays
/// its log from its last snapshot at every open and then writes a new snapshot, so replaying
/// here, at the stop, spares the next start the replay (after a crash the next start replays
/// instead). Failing is harmless: the store is left as it was, and the next start replays.
fn settle_store(path: &Path, options: &crate::store::StoreOptions) {
    use crate::store::EngineRewrite;
    match crate::store::rewrite_at_stop(path, options) {
        Ok(EngineRewrite::Rewritten {
            before,
            after,
            keys,
            took,
        }) => info!(
            component = "daemon",
            bytes_before = before,
            bytes_after = after,
            keys,
            took_ms = took.as_millis() as u64,
            "store's engine file rewritten for a quick next start"
        ),
        Ok(EngineRewrite::Small { .. }) => {}
        Ok(EngineRewrite::Full { bytes }) => info!(
            component = "daemon",
            bytes,
            "store's engine file left as it is (it holds too much to be copied at each stop)"
        ),
        Err(e) => warn!(
            component = "daemon",
            error = %e,
            "store's engine file not rewritten at the stop (left as it was)"
        ),
    }
    let started = std::time::Instant::now();
    match Store::open_with(path, options) {
        Ok(store) => {
            drop(store);
            info!(
                component = "daemon",
                took_ms = started.elapsed().as_millis() as u64,
                "store snapshot written for a quick next start"
            );
        }
        Err(e) => warn!(
            component = "daemon",
            error = %e,
            "store not settled at the stop (the next start replays its log)"
        ),
    }
}

/// Called once with the freshly opened store.
pub type OnStoreOpen = Box<dyn FnOnce(&Store) + Send>;

/// What a test running the daemon in process may reach into. Production passes the default.
#[derive(Default)]
pub struct Hooks {
    /// Called once with the store, right after it is opened (a test arms its fault injector).
    pub on_store_open: Option<OnStoreOpen>,
}

/// Runs the daemon in this process until SIGTERM/SIGINT (`Ok`) or until it stops because the
/// store lost durability (`Err`, as `custodian run` then exits non-zero). For tests: no metrics
/// recorder is installed and logging is left as the caller set it up.
pub async fn run_in_process(
    cfg: Config,
    profiles: ProfileSet,
    config_path: PathBuf,
    hooks: Hooks,
) -> Result<(), String> {
    crate::trust::tls::install_provider();
    run(cfg, profiles, None, config_path, hooks).await
}

/// Why the main loop ended.
enum Stop {
    /// SIGTERM or SIGINT: a clean shutdown, exit 0.
    Signal,
    /// The store refuses durability (a failed fsync): shut down and exit non-zero so the
    /// service manager restarts the daemon and sled recovers the log from what reached disk.
    DurabilityLost(String),
}

/// `/readyz`'s reason while the store cannot make writes durable.
fn durability_reason(lost: &str) -> String {
    format!(
        "store: writes cannot be made durable ({lost}); every message is answered AE until the \
         daemon exits and is restarted"
    )
}

/// What SIGHUP may change while running.
struct Reloadable {
    users: Arc<std::sync::RwLock<Arc<Users>>>,
    analyzers: BTreeMap<String, Arc<AnalyzerHandler>>,
    astm: BTreeMap<String, Arc<crate::ingest::astm::AstmHandler>>,
}

async fn run(
    cfg: Config,
    profiles: ProfileSet,
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    config_path: PathBuf,
    hooks: Hooks,
) -> Result<(), String> {
    // First of all: a SIGHUP or SIGTERM that comes once we say ready must find its handler.
    // A SIGTERM right after readiness must be a clean shutdown, not the default disposition's
    // kill; a signal that comes during start waits in its stream.
    let signals = Signals::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let started = std::time::Instant::now();
    let mut w = Wiring::open(&cfg, profiles, hooks)?;
    let store_opened_ms = started.elapsed().as_millis() as u64;
    let desk = Desk::of(&cfg);
    let custody = w.custody(&cfg, &desk);
    w.publish_analyzer_series(&cfg).await;
    let spool = open_spool(&cfg)?;
    let users = Users::from_config(&cfg.admin.users).map_err(|e| format!("admin.user: {e:?}"))?;
    let users = Arc::new(std::sync::RwLock::new(Arc::new(users)));

    // Bind everything before saying ready.
    let admin_listener = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .map_err(|e| format!("admin.listen {}: {e}", cfg.admin.listen))?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;
    let admin_tls = match &cfg.admin.tls {
        Some(t) => Some(
            crate::trust::tls::server_config(&t.server()).map_err(|e| format!("admin.tls: {e}"))?,
        ),
        None => None,
    };
    let (mut analyzers, handlers) = w.bind_analyzers(&cfg, &custody).await?;
    let astm = w.bind_astm(&cfg, &custody, &mut analyzers).await?;
    let runtime = RuntimeInfo {
        pid: std::process::id(),
        admin: admin_addr,
        admin_tls_cert: cfg.admin.tls.as_ref().map(|t| t.cert.clone()),
        analyzers,
    };
    let health = w.start_senders(&cfg, &desk)?;
    let admin_state = w.admin_state(
        &cfg,
        &desk,
        &custody,
        users.clone(),
        health.clone(),
        prometheus,
    );
    w.serve_admin(&cfg, admin_listener, admin_tls, admin_state);
    w.spawn_background(&cfg, spool, custody, health);

    write_runtime(&cfg.store.path, &runtime)?;
    w.ready.store(true, Ordering::SeqCst);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    info!(
        component = "daemon",
        admin = %admin_addr,
        analyzers = runtime.analyzers.len(),
        profiles = w.profiles.len(),
        default_profile = %cfg.rules.default_profile,
        store_opened_ms,
        took_ms = started.elapsed().as_millis() as u64,
        "ready"
    );
    let reloadable = Reloadable {
        users,
        analyzers: handlers,
        astm,
    };
    let stop = w
        .until_stopped(&cfg, signals, &config_path, &reloadable)
        .await;
    w.shut_down(&cfg, stop).await
}

/// The signing key, the MRO directory and each MRO sender's wake-up: shared by releases and by
/// the reports that answer written requests.
struct Desk {
    signer: Option<Arc<dyn crate::trust::signing::Signer>>,
    wakes: Arc<BTreeMap<String, Arc<tokio::sync::Notify>>>,
    mros: Arc<BTreeMap<String, crate::domain::parties::Mro>>,
}

impl Desk {
    fn of(cfg: &Config) -> Desk {
        Desk {
            signer: load_signer(cfg),
            wakes: Arc::new(
                cfg.mros
                    .iter()
                    .map(|m| (m.id.clone(), Arc::new(tokio::sync::Notify::new())))
                    .collect(),
            ),
            mros: Arc::new(cfg.mros.iter().map(|m| (m.id.clone(), m.party())).collect()),
        }
    }

    fn notices(&self, cfg: &Config) -> crate::custody::notices::NoticeDesk {
        crate::custody::notices::NoticeDesk {
            signer: self.signer.clone(),
            laboratory: cfg.laboratory.identity(),
            mros: self.mros.clone(),
            wake: self.wakes.clone(),
        }
    }
}

/// What every stage of the daemon shares while it is wired: the clock, the store and its
/// group committer, the rule profiles, the shutdown token, readiness and the running tasks.
struct Wiring {
    clock: Arc<dyn Clock>,
    store: Store,
    committer: GroupCommitter,
    profiles: Arc<ProfileSet>,
    lifecycle: Option<Arc<crate::custody::lifecycle::Settings>>,
    /// Wakes the 40.111 production sweep (after a summary is marked sent: the gauges follow).
    summaries_wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
    ready: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Wiring {
    /// Opens the store (creating its parent) and starts the group committer.
    fn open(cfg: &Config, profiles: ProfileSet, hooks: Hooks) -> Result<Wiring, String> {
        if let Some(parent) = cfg.store.path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("store.path: cannot create {}: {e}", parent.display()))?;
        }
        let store = Store::open_with(&cfg.store.path, &cfg.store.options())
            .map_err(|e| format!("store.path: {e}"))?;
        if let Some(f) = hooks.on_store_open {
            f(&store);
        }
        // A store of the previous format moves its specimens' results into keys of their own,
        // in place, before anything else touches it.
        let moved = crate::custody::records::migrate_layout(&store, SystemClock.now_ms())
            .map_err(|e| format!("store: migrating the record layout: {e}"))?;
        if moved > 0 {
            info!(
                component = "daemon",
                records = moved,
                "store migrated in place: each specimen's results now in keys of their own"
            );
        }
        // The specimens in each state, counted once for a store written before the counters
        // (before any writer starts: the count and the counters see the same index).
        if crate::custody::records::ensure_state_counts(&store)
            .map_err(|e| format!("store: counting the specimens by state: {e}"))?
        {
            info!(component = "daemon", "store counted its specimens by state");
        }
        let committer = GroupCommitter::start(
            store.clone(),
            GroupConfig {
                max_batch: cfg.ingest.commit_max_batch,
                max_wait: Duration::from_micros(cfg.ingest.commit_max_wait_us),
                ..GroupConfig::default()
            },
        )
        .map_err(|e| format!("store: {e}"))?;
        Ok(Wiring {
            clock: Arc::new(SystemClock),
            store,
            committer,
            profiles: Arc::new(profiles),
            lifecycle: None,
            summaries_wake: Arc::new(tokio::sync::Notify::new()),
            shutdown: CancellationToken::new(),
            ready: Arc::new(AtomicBool::new(false)),
            tasks: tokio::task::JoinSet::new(),
        })
    }

    /// Custody with the lifecycle's settings (calendar, retention, the notice desk).
    fn custody(&mut self, cfg: &Config, desk: &Desk) -> Custody {
        let settings = crate::custody::lifecycle::Settings {
            calendar: cfg.calendar.business_days(),
            utc_offset_minutes: cfg.calendar.utc_offset_minutes,
            retention: crate::domain::retention::RetentionPolicy {
                after_report_ms: cfg
                    .lifecycle
                    .discard_after_report_days
                    .saturating_mul(86_400_000),
                utc_offset_minutes: cfg.calendar.utc_offset_minutes,
            },
            laboratory: cfg.laboratory.name.clone(),
            profiles: self.profiles.clone(),
            default_profile: cfg.rules.default_profile.clone(),
            notices: Some(desk.notices(cfg)),
        };
        let custody = Custody::new(
            self.committer.clone(),
            self.profiles.clone(),
            &cfg.rules.default_profile,
            self.clock.clone(),
        )
        .with_lifecycle(settings)
        .with_certified_specimen_types(&cfg.laboratory.certified_specimen_types);
        self.lifecycle = Some(custody.lifecycle().clone());
        custody
    }

    fn lifecycle(&self) -> Arc<crate::custody::lifecycle::Settings> {
        self.lifecycle
            .clone()
            .expect("custody is wired before what uses its lifecycle")
    }

    /// Every analyzer's series exists from the start (a silent analyzer alerts after a restart
    /// too), published before any listener can set them: the last message the store knows, or
    /// now.
    async fn publish_analyzer_series(&self, cfg: &Config) {
        let store = self.store.clone();
        let names: Vec<String> = cfg
            .analyzers
            .iter()
            .map(|a| a.name.clone())
            .chain(cfg.astm_analyzers.iter().map(|a| a.name.clone()))
            .collect();
        let now = self.clock.now_ms();
        let _ = tokio::task::spawn_blocking(move || {
            crate::app::monitoring::publish_analyzers(&store, &names, now)
        })
        .await;
    }

    /// Binds each analyzer's MLLP listener (with TLS when configured) and starts serving it.
    #[allow(clippy::type_complexity)]
    async fn bind_analyzers(
        &mut self,
        cfg: &Config,
        custody: &Custody,
    ) -> Result<
        (
            BTreeMap<String, SocketAddr>,
            BTreeMap<String, Arc<AnalyzerHandler>>,
        ),
        String,
    > {
        let mut bound = BTreeMap::new();
        let mut handlers = BTreeMap::new();
        for (i, a) in cfg.analyzers.iter().enumerate() {
            let tls = match &a.tls {
                Some(t) => Some(
                    crate::trust::tls::server_config(t)
                        .map_err(|e| format!("analyzer[{i}].tls: {e}"))?,
                ),
                None => None,
            };
            let listener = tokio::net::TcpListener::bind(a.listen)
                .await
                .map_err(|e| format!("analyzer[{i}].listen {}: {e}", a.listen))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            bound.insert(a.name.clone(), addr);
            let handler = Arc::new(AnalyzerHandler::new(
                &a.name,
                a.mapping.clone(),
                custody.clone(),
            ));
            handlers.insert(a.name.clone(), handler.clone());
            let settings = ListenerSettings {
                analyzer: Arc::from(a.name.as_str()),
                max_frame_bytes: cfg.ingest.max_frame_bytes,
                read_timeout: Duration::from_secs(cfg.ingest.read_timeout_secs),
                max_connections: cfg.ingest.max_connections,
                handshake_timeout: Duration::from_secs(cfg.ingest.handshake_timeout_secs),
                tls,
            };
            let token = self.shutdown.clone();
            self.tasks
                .spawn(async move { listener::serve(listener, settings, handler, token).await });
            info!(component = "daemon", analyzer = %a.name, listen = %addr, tls = a.tls.is_some(), "analyzer listener bound");
        }
        Ok((bound, handlers))
    }

    /// Starts each ASTM analyzer's link: a bound TCP listener (its address added to `bound`) or
    /// a client that connects to the analyzer.
    async fn bind_astm(
        &mut self,
        cfg: &Config,
        custody: &Custody,
        bound: &mut BTreeMap<String, SocketAddr>,
    ) -> Result<BTreeMap<String, Arc<crate::ingest::astm::AstmHandler>>, String> {
        use crate::ingest::astm;
        let mut handlers = BTreeMap::new();
        let settings = astm::SessionSettings {
            max_message_bytes: cfg.ingest.max_frame_bytes,
            idle_timeout: Duration::from_secs(cfg.ingest.read_timeout_secs),
        };
        for (i, a) in cfg.astm_analyzers.iter().enumerate() {
            let handler = Arc::new(astm::AstmHandler::new(
                &a.name,
                a.mapping.clone(),
                custody.clone(),
            ));
            handlers.insert(a.name.clone(), handler.clone());
            let token = self.shutdown.clone();
            let settings = settings.clone();
            match (a.listen, a.connect) {
                (Some(listen), _) => {
                    let listener = tokio::net::TcpListener::bind(listen)
                        .await
                        .map_err(|e| format!("astm_analyzer[{i}].listen {listen}: {e}"))?;
                    let addr = listener.local_addr().map_err(|e| e.to_string())?;
                    bound.insert(a.name.clone(), addr);
                    let max = cfg.ingest.max_connections;
                    self.tasks.spawn(async move {
                        astm::serve(listener, handler, settings, max, token).await
                    });
                    info!(component = "daemon", analyzer = %a.name, listen = %addr, "ASTM analyzer listener bound");
                }
                (None, Some(connect)) => {
                    let retry = Duration::from_secs(a.reconnect_secs);
                    self.tasks.spawn(async move {
                        astm::connect_loop(connect, handler, settings, retry, token).await
                    });
                    info!(component = "daemon", analyzer = %a.name, connect = %connect, "ASTM analyzer client started");
                }
                (None, None) => return Err(format!("astm_analyzer[{i}]: no listen or connect")),
            }
        }
        Ok(handlers)
    }

    /// One supervised sender per MRO of the directory; the outbox gauges.
    fn start_senders(
        &mut self,
        cfg: &Config,
        desk: &Desk,
    ) -> Result<Arc<crate::core::health::Health>, String> {
        let health = crate::core::health::Health::new();
        for m in &cfg.mros {
            let client = crate::transmit::client::MroClient::new(
                &m.endpoint,
                &m.ca,
                &m.client_cert,
                &m.client_key,
                Duration::from_secs(cfg.transmit.timeout_secs),
            )
            .map_err(|e| format!("mro `{}`: {e}", m.id))?;
            let sender = crate::transmit::sender::Sender {
                mro_id: m.id.clone(),
                client,
                committer: self.committer.clone(),
                clock: self.clock.clone(),
                backoff: crate::transmit::sender::Backoff {
                    initial: Duration::from_millis(cfg.transmit.backoff_initial_ms),
                    max: Duration::from_secs(cfg.transmit.backoff_max_secs),
                },
                wake: desk.wakes[&m.id].clone(),
            };
            let token = self.shutdown.clone();
            let health = health.clone();
            let id = m.id.clone();
            self.tasks.spawn(async move {
                crate::app::supervise::supervise(
                    "mro_sender",
                    id,
                    health,
                    token.clone(),
                    move || sender.clone().run(token.clone()),
                )
                .await
            });
        }
        let mro_ids: Vec<String> = cfg.mros.iter().map(|m| m.id.clone()).collect();
        let (token, store, clock) = (
            self.shutdown.clone(),
            self.store.clone(),
            self.clock.clone(),
        );
        self.tasks
            .spawn(async move { outbox_gauges(store, clock, mro_ids, token).await });
        Ok(health)
    }

    /// The refusal audit of authenticated callers (one entry each).
    fn refusal_audit(&self) -> admin::RefusalAudit {
        let committer = self.committer.clone();
        let clock = self.clock.clone();
        Arc::new(move |user: Option<&str>, path: &str, why: &'static str| {
            let actor: String = match user {
                Some(u) => format!("user:{u}"),
                None => "unauthenticated".into(),
            }
            .chars()
            .take(64)
            .collect();
            let subject: String = path.chars().filter(|c| !c.is_control()).take(256).collect();
            let now = clock.now_ms();
            let committer = committer.clone();
            tokio::spawn(async move {
                let _ = committer
                    .submit(move |tx: &mut crate::store::Tx<'_>| -> Result<(), crate::store::Abort<String>> {
                        tx.audit(
                            crate::store::AuditEntry::new(now, actor.clone(), "refused", subject.clone())
                                .after(why),
                        )?;
                        Ok(())
                    })
                    .await;
            });
        })
    }

    /// Unknown callers' refusals: counted per source and minute, audited as a first entry and a
    /// summary; the closed windows are written every few seconds, the open one at shutdown.
    fn unknown_callers(&mut self) -> admin::UnknownCallers {
        let aggregator = Arc::new(admin::refusals::Aggregator::new(
            self.clock.clone(),
            admin::refusals::WINDOW_MS,
            admin::refusals::MAX_SOURCES,
        ));
        {
            let token = self.shutdown.clone();
            let committer = self.committer.clone();
            let aggregator = aggregator.clone();
            self.tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = token.cancelled() => {
                            audit_unknown_callers(&committer, aggregator.drain()).await;
                            return;
                        }
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {
                            audit_unknown_callers(&committer, aggregator.closed()).await;
                        }
                    }
                }
            });
        }
        let committer = self.committer.clone();
        admin::UnknownCallers {
            aggregator,
            audit: Arc::new(move |entries| {
                let committer = committer.clone();
                tokio::spawn(async move { audit_unknown_callers(&committer, entries).await });
            }),
        }
    }

    /// What the admin API serves: the store's views, review and release, the lifecycle, the
    /// quarantine, health and readiness.
    fn admin_state(
        &mut self,
        cfg: &Config,
        desk: &Desk,
        custody: &Custody,
        users: Arc<std::sync::RwLock<Arc<Users>>>,
        health: Arc<crate::core::health::Health>,
        prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> AdminState {
        let lifecycle = custody.lifecycle().clone();
        let releaser = crate::custody::release::Releaser {
            committer: self.committer.clone(),
            laboratory: cfg.laboratory.identity(),
            mros: desk.mros.clone(),
            signer: desk.signer.clone(),
            clock: self.clock.clone(),
            wake: desk.wakes.clone(),
            lifecycle: lifecycle.clone(),
            copy1_source: cfg.laboratory.certified_copy1,
        };
        let runs = crate::custody::runs::Desk::of(custody, self.clock.clone());
        let review: Arc<dyn admin::ReviewApi> = Arc::new(ReviewService {
            releaser: releaser.clone(),
            runs: runs.clone(),
            profiles: self.profiles.clone(),
            default_profile: cfg.rules.default_profile.clone(),
        });
        let not_ready: admin::NotReady = {
            let store = self.store.clone();
            Arc::new(move || store.durability_lost().map(|lost| durability_reason(&lost)))
        };
        let unknown_callers = self.unknown_callers();
        AdminState {
            users,
            ready: self.ready.clone(),
            not_ready: Some(not_ready),
            health,
            prometheus,
            api: Some(Arc::new(StoreApi {
                store: self.store.clone(),
            })),
            review: Some(review),
            lifecycle: Some(Arc::new(LifecycleService {
                committer: self.committer.clone(),
                custody: custody.clone(),
                settings: lifecycle,
                clock: self.clock.clone(),
                releaser,
                split_lab: cfg.split_laboratory.enabled.then(|| {
                    Arc::new(crate::custody::split_lab::SplitLab {
                        lods: cfg.split_laboratory.lod.clone(),
                        profiles: self.profiles.clone(),
                        default_profile: cfg.rules.default_profile.clone(),
                    })
                }),
            })),
            quarantine: Some(Arc::new(QuarantineService {
                committer: self.committer.clone(),
                clock: self.clock.clone(),
            })),
            summaries: Some(Arc::new(SummariesService {
                committer: self.committer.clone(),
                desk: summaries_desk(cfg),
                clock: self.clock.clone(),
                wake: self.summaries_wake.clone(),
            })),
            runs: Some(Arc::new(RunsService {
                desk: runs,
                store: self.store.clone(),
            })),
            on_refusal: Some(self.refusal_audit()),
            unknown_callers: Some(unknown_callers),
            audit: Some(crate::app::console::audit_sink(self.committer.clone())),
            console: Some(Arc::new(crate::admin::console::Console {
                sessions: crate::admin::console::session::Sessions::new(
                    self.clock.clone(),
                    cfg.admin.session_idle_timeout_secs * 1000,
                    crate::admin::console::session::LockoutPolicy {
                        max_failures: cfg.admin.lockout_failures,
                        base_ms: cfg.admin.lockout_secs * 1000,
                        max_lock_ms: 3_600_000,
                    },
                ),
                data: Arc::new(crate::app::console::ConsoleStore {
                    store: self.store.clone(),
                    profiles: self.profiles.clone(),
                    default_profile: cfg.rules.default_profile.clone(),
                }),
            })),
            clock: self.clock.clone(),
        }
    }

    /// Serves the admin API until shutdown, within the configured connection limits.
    fn serve_admin(
        &mut self,
        cfg: &Config,
        listener: tokio::net::TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        state: AdminState,
    ) {
        let token = self.shutdown.clone();
        let limits = cfg.admin.limits();
        self.tasks.spawn(async move {
            if let Err(e) = admin::serve(listener, state, limits, tls, async move {
                token.cancelled().await
            })
            .await
            {
                error!(component = "admin", error = %e, "admin API stopped");
            }
        });
    }

    /// The LIMS spool loop, the lifecycle clocks, the quarantine's bounds, the 40.111
    /// summaries' production (supervised) and the gauges.
    fn spawn_background(
        &mut self,
        cfg: &Config,
        spool: Arc<Spool>,
        custody: Custody,
        health: Arc<crate::core::health::Health>,
    ) {
        let token = self.shutdown.clone();
        let settings = SpoolSettings {
            poll_interval: Duration::from_millis(cfg.lims.poll_interval_ms),
            max_document_bytes: cfg.lims.max_document_bytes,
            runs: spool::lims_runs(cfg.lims.qc.clone()),
        };
        self.tasks
            .spawn(async move { spool::run(spool, custody, settings, token).await });
        // The lifecycle clocks: the first sweep at once fires what came due while stopped.
        let (token, committer, clock) = (
            self.shutdown.clone(),
            self.committer.clone(),
            self.clock.clone(),
        );
        let settings = self.lifecycle();
        let interval = Duration::from_secs(cfg.lifecycle.sweep_interval_secs);
        self.tasks.spawn(async move {
            crate::custody::lifecycle::run(committer, settings, clock, interval, token).await
        });
        // The quarantine's bounds: enforced at once and every sweep interval.
        let (token, committer, clock) = (
            self.shutdown.clone(),
            self.committer.clone(),
            self.clock.clone(),
        );
        let limits = cfg.quarantine.limits();
        let interval = Duration::from_secs(cfg.quarantine.sweep_interval_secs);
        self.tasks.spawn(async move {
            crate::custody::quarantine::run(committer, limits, clock, interval, token).await
        });
        // The 40.111 summaries: at once (what closed while stopped) and every sweep interval.
        if let Some(settings) = summaries_settings(cfg) {
            let (token, committer, clock, wake) = (
                self.shutdown.clone(),
                self.committer.clone(),
                self.clock.clone(),
                self.summaries_wake.clone(),
            );
            let settings = Arc::new(settings);
            let interval = Duration::from_secs(cfg.summaries.sweep_interval_secs);
            self.tasks.spawn(async move {
                crate::app::supervise::supervise(
                    "summaries",
                    "production".into(),
                    health,
                    token.clone(),
                    move || {
                        crate::custody::summaries::run(
                            committer.clone(),
                            settings.clone(),
                            clock.clone(),
                            interval,
                            wake.clone(),
                            token.clone(),
                        )
                    },
                )
                .await
            });
        }
        let (token, store, clock) = (
            self.shutdown.clone(),
            self.store.clone(),
            self.clock.clone(),
        );
        let offset = cfg.calendar.utc_offset_minutes;
        self.tasks.spawn(async move {
            crate::app::monitoring::run(store, clock, offset, Duration::from_secs(10), token).await
        });
        // The store's archive: spills when due, merges segments (checked five times a second).
        let (token, store) = (self.shutdown.clone(), self.store.clone());
        self.tasks.spawn(async move {
            crate::app::archiving::run(store, Duration::from_millis(200), token).await
        });
    }

    /// Runs the signal loop (reload, watchdog, durability watch) until it says stop.
    async fn until_stopped(
        &self,
        cfg: &Config,
        signals: Signals,
        config_path: &Path,
        reloadable: &Reloadable,
    ) -> Stop {
        let watchdog_interval = sd_notify::watchdog_enabled();
        let watchdog = watchdog_interval.is_some();
        let tick = watchdog_interval
            .map(|d| (d / 2).max(Duration::from_millis(100)))
            .unwrap_or(Duration::from_secs(5));
        signals_loop(
            signals,
            config_path,
            reloadable,
            watchdog,
            tick,
            &self.committer,
            Duration::from_secs(cfg.store.exit_after_durability_lost_secs),
        )
        .await
    }

    /// Stops accepting, settles what is in flight, flushes and removes the runtime file.
    async fn shut_down(mut self, cfg: &Config, stop: Stop) -> Result<(), String> {
        match &stop {
            Stop::Signal => info!(
                component = "daemon",
                "shutdown requested: no new connections; settling what is in flight"
            ),
            Stop::DurabilityLost(_) => error!(
                component = "daemon",
                "stopping because the store cannot make writes durable: no new connections; \
                 settling what is in flight (answered AE); exiting non-zero for a restart"
            ),
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        self.ready.store(false, Ordering::SeqCst);
        self.shutdown.cancel();
        let tasks = &mut self.tasks;
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(20), drain)
            .await
            .is_err()
        {
            warn!(component = "daemon", "some tasks did not finish in 20 s");
        }
        self.committer.shutdown().await;
        if matches!(stop, Stop::Signal) {
            crate::app::archiving::spill_at_stop(&self.store).await;
        }
        let _ = std::fs::remove_file(runtime_file(&cfg.store.path));
        match stop {
            Stop::Signal => {
                info!(component = "daemon", "stopped cleanly");
                Ok(())
            }
            // Nothing was acknowledged since the failure (every flush was refused), and what
            // was acknowledged before it was fsynced: a restart recovers the log from the disk.
            Stop::DurabilityLost(lost) => Err(format!(
                "the store lost durability ({lost}); exiting so that the service manager \
                 restarts custodian and the store recovers from what reached the disk"
            )),
        }
    }
}

/// The LIMS spool directory (its parent created).
fn open_spool(cfg: &Config) -> Result<Arc<Spool>, String> {
    if let Some(parent) = cfg.lims.spool_dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("lims.spool_dir: {e}"))?;
    }
    Ok(Arc::new(
        Spool::open(&cfg.lims.spool_dir).map_err(|e| format!("lims.spool_dir: {e}"))?,
    ))
}

/// Writes the audit entries of unknown callers' refusals (firsts of a source and minute, the
/// summaries of the rest) in one transaction.
async fn audit_unknown_callers(committer: &GroupCommitter, entries: Vec<admin::refusals::Entry>) {
    use crate::store::AuditEntry;
    use admin::refusals::{Entry, source_text};
    if entries.is_empty() {
        return;
    }
    let audit: Vec<AuditEntry> = entries
        .into_iter()
        .map(|e| match e {
            Entry::First { at_ms, source, path } => {
                let subject: String = path.chars().filter(|c| !c.is_control()).take(256).collect();
                AuditEntry::new(at_ms, "unauthenticated", "refused", subject)
                    .after(format!("unauthenticated from {}", source_text(&source)))
            }
            Entry::Summary {
                window_start_ms,
                at_ms,
                source,
                more,
            } => {
                info!(component = "admin", source = %source_text(&source), refused = more + 1, "unauthenticated requests refused from one source in a minute");
                AuditEntry::new(
                    at_ms,
                    "unauthenticated",
                    "refused_summary",
                    format!("source {}", source_text(&source)),
                )
                .before(format!(
                    "minute from {}",
                    crate::core::clock::rfc3339(window_start_ms)
                ))
                .after(format!("{more} more refused (unauthenticated)"))
            }
            Entry::Overflow {
                window_start_ms,
                at_ms,
                count,
            } => {
                warn!(component = "admin", refused = count, "unauthenticated requests refused from sources beyond the tracked ones in a minute");
                AuditEntry::new(
                    at_ms,
                    "unauthenticated",
                    "refused_summary",
                    format!(
                        "sources beyond the {} tracked",
                        admin::refusals::MAX_SOURCES
                    ),
                )
                .before(format!(
                    "minute from {}",
                    crate::core::clock::rfc3339(window_start_ms)
                ))
                .after(format!("{count} more refused (unauthenticated)"))
            }
        })
        .collect();
    let r = committer
        .submit(
            move |tx: &mut crate::store::Tx<'_>| -> Result<(), crate::store::Abort<String>> {
                for e in &audit {
                    tx.audit(e.clone())?;
                }
                Ok(())
            },
        )
        .await;
    if r.is_err() {
        warn!(
            component = "admin",
            "refusals of unknown callers could not be audited"
        );
    }
}

/// The active report-signing key, if there is one (releases are refused without it).
fn load_signer(cfg: &Config) -> Option<Arc<dyn crate::trust::signing::Signer>> {
    match crate::trust::signing::KeyStore::new(&cfg.signing.keys_dir).active() {
        Ok(k) => {
            info!(component = "daemon", kid = %k.kid(), "report signing key loaded");
            Some(Arc::new(k))
        }
        Err(e) => {
            warn!(component = "daemon", error = %e, "no active signing key: releases are refused until `custodian keys generate` is run");
            None
        }
    }
}

fn write_runtime(store_path: &Path, info: &RuntimeInfo) -> Result<(), String> {
    let path = runtime_file(store_path);
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(info).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, text).map_err(|e| format!("runtime file: {e}"))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("runtime file: {e}"))?;
    Ok(())
}

/// The signals the daemon answers. Installing them replaces the default dispositions (which
/// kill the process), so it must happen before readiness is announced; a signal arriving
/// between installation and the first `recv` is kept for it.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Waits for SIGTERM/SIGINT, answering SIGHUP with a reload and feeding the watchdog from the
/// main loop (so a hung loop is noticed by systemd). Checks the store's durability every
/// 250 ms: once lost, `/readyz` already says 503 with the reason; the loop keeps answering
/// signals for `exit_after` (monitoring sees why) and then ends with [`Stop::DurabilityLost`].
async fn signals_loop(
    signals: Signals,
    config_path: &Path,
    reloadable: &Reloadable,
    watchdog: bool,
    tick: Duration,
    committer: &GroupCommitter,
    exit_after: Duration,
) -> Stop {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    let mut ticker = tokio::time::interval(tick);
    let mut durability = tokio::time::interval(Duration::from_millis(250));
    durability.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lost: Option<(String, tokio::time::Instant)> = None;
    loop {
        if let Some((why, at)) = &lost
            && tokio::time::Instant::now() >= *at
        {
            return Stop::DurabilityLost(why.clone());
        }
        let stop = || match &lost {
            Some((why, _)) => Stop::DurabilityLost(why.clone()),
            None => Stop::Signal,
        };
        tokio::select! {
            _ = term.recv() => return stop(),
            _ = int.recv() => return stop(),
            _ = hup.recv() => reload(config_path, reloadable),
            _ = durability.tick() => {
                if lost.is_none()
                    && let Some(why) = committer.store().durability_lost()
                {
                    error!(
                        component = "daemon",
                        exit_in_secs = exit_after.as_secs(),
                        "store lost durability: not ready, answering AE; exiting for a restart"
                    );
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(
                        "store lost durability; exiting for a restart",
                    )]);
                    lost = Some((why, tokio::time::Instant::now() + exit_after));
                }
            }
            _ = ticker.tick() => {
                // Alive only if the store still answers: a hung writer must not be hidden.
                let healthy = committer.store().durability_lost().is_none();
                if watchdog && healthy {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
                if !healthy {
                    warn!(component = "daemon", "store reports lost durability; watchdog not fed");
                }
            }
        }
    }
}

/// SIGHUP: re-reads the configuration; a valid one replaces the users and the analyzer
/// mappings (listeners, store and profiles need a restart); an invalid one is refused and the
/// running configuration kept.
fn reload(config_path: &Path, r: &Reloadable) {
    let (cfg, _) = match config::load(config_path) {
        Ok(x) => x,
        Err(e) => {
            crate::core::telemetry::emit(crate::app::events::ConfigReloaded {
                applied: false,
                problems: e.problems.len(),
                why: &e.to_string().replace('\n', " "),
            });
            return;
        }
    };
    let users = match Users::from_config(&cfg.admin.users) {
        Ok(u) => u,
        Err(_) => {
            warn!(component = "daemon", "reload refused: admin users");
            return;
        }
    };
    for a in &cfg.analyzers {
        if let Some(h) = r.analyzers.get(&a.name) {
            h.replace_mapping(a.mapping.clone());
        } else {
            warn!(component = "daemon", analyzer = %a.name, "new analyzer in the configuration: needs a restart to listen");
        }
    }
    for a in &cfg.astm_analyzers {
        if let Some(h) = r.astm.get(&a.name) {
            h.replace_mapping(a.mapping.clone());
        } else {
            warn!(component = "daemon", analyzer = %a.name, "new ASTM analyzer in the configuration: needs a restart");
        }
    }
    if let Ok(mut u) = r.users.write() {
        *u = Arc::new(users);
    }
    crate::core::telemetry::emit(crate::app::events::ConfigReloaded {
        applied: true,
        problems: 0,
        why: "",
    });
}

/// Outbox depth, oldest age and dead letters per MRO, sampled every 10 s.
async fn outbox_gauges(
    store: Store,
    clock: Arc<dyn Clock>,
    mros: Vec<String>,
    shutdown: CancellationToken,
) {
    use crate::custody::outbox;
    loop {
        let now = clock.now_ms();
        for m in &mros {
            let mut depth = 0u64;
            let mut oldest = None;
            for (k, _) in store
                .scan_prefix::<String>(Keyspace::Outbox, &outbox::queue_prefix(m))
                .flatten()
            {
                depth += 1;
                if oldest.is_none() {
                    oldest = outbox::released_at(&k, m);
                }
            }
            let dead = store
                .count_prefix(Keyspace::Outbox, &outbox::dead_prefix(m))
                .unwrap_or(0);
            crate::core::telemetry::emit(crate::app::events::OutboxSampled {
                mro: m,
                depth,
                oldest_age_s: oldest
                    .map(|t| now.saturating_sub(t) as f64 / 1000.0)
                    .unwrap_or(0.0),
                dead_letters: dead,
            });
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

/// Review, release and delivery for the admin API.
struct ReviewService {
    releaser: crate::custody::release::Releaser,
    runs: crate::custody::runs::Desk,
    profiles: Arc<ProfileSet>,
    default_profile: String,
}

/// Analytical runs and result marks for the admin API.
struct RunsService {
    desk: crate::custody::runs::Desk,
    store: Store,
}

/// A run as the admin API shows it in a list.
fn run_summary_json(r: &crate::domain::runs::RunRecord) -> serde_json::Value {
    serde_json::json!({
        "key": r.key,
        "source": r.source,
        "run_id": r.local_id,
        "kind": r.status().kind,
        "state": r.state().key(),
        "delimited_by": r.delimited_by,
        "opened_at": crate::core::clock::rfc3339(r.opened_at_ms),
        "closed_at": r.closed_at_ms.map(crate::core::clock::rfc3339),
        "qc": r.evaluation.as_ref().map(|e| e.outcome.key()),
        "specimens": r.specimen_count(),
        "qc_results": r.qc.len(),
    })
}

impl admin::RunsApi for RunsService {
    fn list(&self, state: &str) -> Result<serde_json::Value, (u16, String)> {
        let st = crate::domain::runs::RunState::from_key(state).ok_or_else(|| {
            (
                400,
                format!("unknown run state `{state}` (one of: open, pending, accepted, rejected)"),
            )
        })?;
        let runs = crate::custody::runs::list(&self.store, st).map_err(|e| (500, e.to_string()))?;
        Ok(serde_json::Value::Array(
            runs.iter().map(run_summary_json).collect(),
        ))
    }

    fn show(&self, key: &str) -> Result<Option<serde_json::Value>, String> {
        let run = crate::custody::runs::show(&self.store, key).map_err(|e| e.to_string())?;
        Ok(run.map(|r| {
            let mut v = serde_json::to_value(&r).unwrap_or(serde_json::Value::Null);
            v["state"] = serde_json::json!(r.state().key());
            v["content_sha256"] = serde_json::json!(r.content_sha256());
            v
        }))
    }

    fn decide<'a>(
        &'a self,
        key: String,
        accept: bool,
        reason: String,
        scientist: &'a admin::auth::User,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            match self
                .desk
                .decide(&key, accept, &scientist.name, &reason)
                .await
            {
                Ok(r) => Ok(run_summary_json(&r)),
                Err(e) => Err((e.status(), e.to_string())),
            }
        })
    }

    fn not_reportable<'a>(
        &'a self,
        specimen_id: String,
        result: usize,
        reason: String,
        scientist: &'a admin::auth::User,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            match self
                .desk
                .mark_not_reportable(&specimen_id, result, &scientist.name, &reason)
                .await
            {
                Ok(state) => Ok(serde_json::json!({
                    "specimen_id": specimen_id,
                    "result": result,
                    "state": state,
                })),
                Err(e) => Err((e.status(), e.to_string())),
            }
        })
    }
}

impl ReviewService {
    fn store(&self) -> &Store {
        self.releaser.committer.store()
    }
}

fn release_status(e: &crate::custody::release::ReleaseError) -> u16 {
    use crate::custody::release::ReleaseError::*;
    match e {
        UnknownSpecimen => 404,
        UnknownReport => 404,
        NotReady(_)
        | MroNotInDirectory(_)
        | MroNameMismatch { .. }
        | NotNegative(_)
        | NoReason
        | NoDocument
        | Superseded(_)
        | NothingToCorrect
        | Copy1Missing(_)
        | Copy1Mismatch(_)
        | Changed
        | ReportIdInUse(_) => 409,
        Report(_) | BadCorrection(_) => 422,
        Signing(_) | NotDurable(_) => 503,
    }
}

impl admin::ReviewApi for ReviewService {
    fn report_jws<'a>(
        &'a self,
        report_id: String,
        reader: &'a admin::auth::User,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            let now = self.releaser.clock.now_ms();
            crate::custody::outbox::export_jws(
                &self.releaser.committer,
                &report_id,
                &reader.name,
                now,
            )
            .await
            .map(|jws| serde_json::json!({"report_id": report_id, "jws": jws}))
            .map_err(|e| (e.status(), e.to_string()))
        })
    }

    fn queue(&self) -> Result<serde_json::Value, String> {
        let ids = self
            .store()
            .ids_in_state(State::ReadyForReview.key())
            .map_err(|e| e.to_string())?;
        let mut items = Vec::new();
        for id in ids {
            if let Some(v) = self.item(&id)? {
                items.push(v);
            }
        }
        Ok(serde_json::Value::Array(items))
    }

    fn item(&self, specimen_id: &str) -> Result<Option<serde_json::Value>, String> {
        let rec = crate::custody::records::read_specimen(self.store(), specimen_id)
            .map_err(|e| e.to_string())?;
        Ok(rec.map(|r| {
            crate::custody::release::review_item(
                &r,
                &self.profiles,
                &self.default_profile,
                &self.releaser.laboratory,
                &self.releaser.mros,
                self.releaser.copy1_source,
            )
        }))
    }

    fn release<'a>(
        &'a self,
        ids: Vec<String>,
        scientist: &'a admin::auth::User,
        batch: bool,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            match self.releaser.release(ids, &scientist.name, batch).await {
                Ok(r) => Ok(serde_json::json!({"released": r})),
                Err(e) => Err((release_status(&e), e.to_string())),
            }
        })
    }

    fn send_back<'a>(
        &'a self,
        id: String,
        scientist: &'a admin::auth::User,
        reason: String,
        tests: Vec<String>,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            if reason.trim().is_empty() {
                return Err((409, "a reason is required".to_string()));
            }
            match self
                .runs
                .retest(&id, tests.clone(), &scientist.name, &reason)
                .await
            {
                Ok(state) => {
                    Ok(serde_json::json!({"specimen_id": id, "state": state, "tests": tests}))
                }
                Err(e) => Err((e.status(), e.to_string())),
            }
        })
    }

    fn correct<'a>(
        &'a self,
        report_id: String,
        request: crate::custody::release::CorrectionRequest,
        scientist: &'a admin::auth::User,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            match self
                .releaser
                .correct(&report_id, &scientist.name, request)
                .await
            {
                Ok(c) => Ok(serde_json::json!({ "corrected": c })),
                Err(e) => Err((release_status(&e), e.to_string())),
            }
        })
    }

    fn outbox(&self) -> Result<serde_json::Value, String> {
        use crate::custody::outbox::{self, StoredReport};
        let mut out = serde_json::Map::new();
        for m in self.releaser.mros.keys() {
            let list = |prefix: Vec<u8>| -> Vec<serde_json::Value> {
                self.store()
                    .scan_prefix::<String>(Keyspace::Outbox, &prefix)
                    .flatten()
                    .filter_map(|(_, rid)| {
                        self.store()
                            .get::<StoredReport>(Keyspace::Reports, rid.as_bytes())
                            .ok()
                            .flatten()
                    })
                    .map(|r| report_status_json(&r))
                    .collect()
            };
            out.insert(
                m.clone(),
                serde_json::json!({"queued": list(outbox::queue_prefix(m)), "dead_letters": list(outbox::dead_prefix(m))}),
            );
        }
        Ok(serde_json::Value::Object(out))
    }

    fn report(&self, report_id: &str) -> Result<Option<serde_json::Value>, String> {
        let r: Option<crate::custody::outbox::StoredReport> = self
            .store()
            .get(Keyspace::Reports, report_id.as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(r.map(|r| report_status_json(&r)))
    }

    fn retry<'a>(
        &'a self,
        report_id: String,
        operator: &'a admin::auth::User,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            match self
                .releaser
                .retry_dead_letter(&report_id, &operator.name)
                .await
            {
                Ok(()) => Ok(serde_json::json!({"report_id": report_id, "delivery": "pending"})),
                Err(e) => Err((409, e)),
            }
        })
    }
}

/// Written requests, discards, the split and retention for the admin API.
struct LifecycleService {
    committer: GroupCommitter,
    /// Re-assigns editions (the same custody as intake).
    custody: Custody,
    settings: Arc<crate::custody::lifecycle::Settings>,
    clock: Arc<dyn Clock>,
    /// Signs and queues released split results (the same signer and outbox as reports).
    releaser: crate::custody::release::Releaser,
    /// `Some` when `[split_laboratory] enabled = true`.
    split_lab: Option<Arc<crate::custody::split_lab::SplitLab>>,
}

const NOT_A_SPLIT_LAB: &str =
    "this laboratory is not configured as a split laboratory ([split_laboratory] enabled = false)";

/// The admin API's body of a written request.
#[derive(Deserialize)]
struct RequestBody {
    document_ref: String,
    /// When the laboratory received the document (default: now).
    #[serde(default)]
    received_at_ms: Option<u64>,
    #[serde(flatten)]
    kind: crate::custody::lifecycle::RequestKind,
}

impl LifecycleService {
    fn record(&self, specimen_id: &str) -> Result<Option<SpecimenRecord>, String> {
        crate::custody::records::read_specimen(self.committer.store(), specimen_id)
            .map_err(|e| e.to_string())
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EditionBody {
    profile: String,
    reason: String,
}

impl admin::LifecycleApi for LifecycleService {
    fn edition<'a>(
        &'a self,
        specimen_id: String,
        body: serde_json::Value,
        user: &'a admin::auth::User,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            let body: EditionBody = serde_json::from_value(body).map_err(|e| {
                (
                    400,
                    format!("not an edition re-assignment ({{\"profile\", \"reason\"}}): {e}"),
                )
            })?;
            let reason = body.reason.trim();
            if reason.is_empty()
                || reason.chars().count() > 500
                || reason.chars().any(char::is_control)
            {
                return Err((
                    422,
                    "reason: required, at most 500 characters, no control characters".into(),
                ));
            }
            use crate::custody::IngestError;
            use crate::domain::specimen::ChangeError;
            match self
                .custody
                .reassign_edition(&specimen_id, &body.profile, reason, &user.name)
                .await
            {
                Ok(state) => {
                    tracing::info!(component = "custody", user = %user.name, edition = %body.profile, "edition re-assigned");
                    Ok(
                        serde_json::json!({"specimen_id": specimen_id, "profile": body.profile, "state": state}),
                    )
                }
                Err(IngestError::UnknownSpecimen) => Err((404, "no such specimen".into())),
                Err(IngestError::Refused(e @ ChangeError::UnknownProfile(_))) => {
                    Err((422, e.to_string()))
                }
                Err(IngestError::Refused(e)) => Err((409, e.to_string())),
                Err(e) => Err((503, e.to_string())),
            }
        })
    }

    fn request<'a>(
        &'a self,
        specimen_id: String,
        body: serde_json::Value,
        user: &'a admin::auth::User,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            let body: RequestBody = serde_json::from_value(body)
                .map_err(|e| (400, format!("not a written request: {e}")))?;
            let now = self.clock.now_ms();
            let req = crate::custody::lifecycle::WrittenRequest {
                specimen_id,
                document_ref: body.document_ref,
                received_at_ms: body.received_at_ms.unwrap_or(now),
                recorded_by: user.name.clone(),
                kind: body.kind,
            };
            let channel = crate::custody::lifecycle::Channel::Admin {
                user: user.name.clone(),
            };
            match crate::custody::lifecycle::apply_request(
                &self.committer,
                &self.settings,
                req,
                channel,
                now,
            )
            .await
            {
                Ok(crate::custody::lifecycle::RequestOutcome::Recorded(v)) => Ok(v),
                Ok(crate::custody::lifecycle::RequestOutcome::Duplicate) => {
                    Ok(serde_json::json!({"duplicate": true}))
                }
                Err(e) => Err((e.status(), e.to_string())),
            }
        })
    }

    fn discard<'a>(
        &'a self,
        specimen_id: String,
        item: String,
        user: &'a admin::auth::User,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            let item = match item.as_str() {
                "primary" => crate::domain::retention::Item::Primary,
                "split" => crate::domain::retention::Item::Split,
                "records" => crate::domain::retention::Item::Records,
                _ => return Err((400, "item must be primary, split or records".to_string())),
            };
            let now = self.clock.now_ms();
            crate::custody::lifecycle::confirm_discard(
                &self.committer,
                &self.settings,
                &specimen_id,
                item,
                &user.name,
                now,
            )
            .await
            .map_err(|e| (e.status(), e.to_string()))
        })
    }

    fn split(&self, specimen_id: &str) -> Result<Option<serde_json::Value>, String> {
        Ok(self
            .record(specimen_id)?
            .and_then(|r| r.lifecycle.split)
            .map(|s| serde_json::to_value(s).unwrap_or_default()))
    }

    fn adulterant_retest(&self, specimen_id: &str) -> Result<Option<serde_json::Value>, String> {
        match self.record(specimen_id)? {
            Some(r) => crate::custody::lifecycle::adulterant_retest_view(&r, &self.settings),
            None => Ok(None),
        }
    }

    fn split_lab_receive<'a>(
        &'a self,
        body: serde_json::Value,
        user: &'a admin::auth::User,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            let lab = self
                .split_lab
                .as_ref()
                .ok_or_else(|| (404, NOT_A_SPLIT_LAB.to_string()))?;
            let body: crate::custody::split_lab::IntakeBody = serde_json::from_value(body)
                .map_err(|e| (400, format!("not a received split specimen: {e}")))?;
            crate::custody::split_lab::receive(
                &self.committer,
                lab,
                body,
                &user.name,
                self.clock.now_ms(),
            )
            .await
            .map_err(|e| (e.status(), e.to_string()))
        })
    }

    fn split_lab(&self, specimen_id: &str) -> Result<Option<serde_json::Value>, (u16, String)> {
        let lab = self
            .split_lab
            .as_ref()
            .ok_or_else(|| (404, NOT_A_SPLIT_LAB.to_string()))?;
        match self.record(specimen_id).map_err(|e| (500, e))? {
            Some(r) => crate::custody::split_lab::view(lab, &r).map_err(|e| (500, e)),
            None => Ok(None),
        }
    }

    fn split_lab_release<'a>(
        &'a self,
        specimen_id: String,
        scientist: &'a admin::auth::User,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            let lab = self
                .split_lab
                .as_ref()
                .ok_or_else(|| (404, NOT_A_SPLIT_LAB.to_string()))?;
            crate::custody::split_lab::release(&self.releaser, lab, &specimen_id, &scientist.name)
                .await
                .map_err(|e| (e.status(), e.to_string()))
        })
    }

    fn adulterant_retest_release<'a>(
        &'a self,
        specimen_id: String,
        scientist: &'a admin::auth::User,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            crate::custody::lifecycle::release_primary_retest(
                &self.committer,
                &self.settings,
                &specimen_id,
                &scientist.name,
                self.clock.now_ms(),
            )
            .await
            .map_err(|e| (e.status(), e.to_string()))
        })
    }

    fn retention(&self, specimen_id: &str) -> Result<Option<serde_json::Value>, String> {
        Ok(self
            .record(specimen_id)?
            .and_then(|r| crate::custody::lifecycle::retention_view(&r, &self.settings)))
    }

    fn discardable(&self) -> Result<serde_json::Value, String> {
        let list = crate::custody::lifecycle::discardable(
            self.committer.store(),
            &self.settings,
            self.clock.now_ms(),
        )?;
        serde_json::to_value(list).map_err(|e| e.to_string())
    }
}

/// The quarantine for the admin API.
struct QuarantineService {
    committer: GroupCommitter,
    clock: Arc<dyn Clock>,
}

impl admin::QuarantineApi for QuarantineService {
    fn list(&self, source: Option<&str>) -> Result<serde_json::Value, String> {
        let list = crate::custody::quarantine::list(self.committer.store(), source)?;
        serde_json::to_value(list).map_err(|e| e.to_string())
    }

    fn show<'a>(
        &'a self,
        id: String,
        user: &'a admin::auth::User,
        with_raw: bool,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            crate::custody::quarantine::show(
                &self.committer,
                &id,
                &user.name,
                with_raw,
                self.clock.now_ms(),
            )
            .await
            .map_err(|e| (e.status(), e.to_string()))
        })
    }
}

/// A report's delivery status as operators see it: never the content.
fn report_status_json(r: &crate::custody::outbox::StoredReport) -> serde_json::Value {
    serde_json::json!({
        "report_id": r.report_id,
        "specimen_id": r.specimen_id,
        "mro_id": r.mro_id,
        "kid": r.kid,
        "content_sha256": r.content_sha256,
        "released_at_ms": r.released_at_ms,
        "released_by": r.released_by,
        "delivery": r.delivery,
        "attempts": r.attempts,
        "last_error": r.last_error,
        "replaces": r.replaces,
        "superseded_by": r.superseded_by,
    })
}

/// Who the 40.111 summaries come from and whom they name, from the configuration.
pub fn summaries_desk(cfg: &Config) -> crate::custody::summaries::Desk {
    let mut ctpa = BTreeMap::new();
    for c in &cfg.summaries.ctpa {
        for e in &c.employers {
            ctpa.insert(
                e.clone(),
                crate::domain::summary::Identity {
                    name: c.name.clone(),
                    address: c.address.clone(),
                },
            );
        }
    }
    crate::custody::summaries::Desk {
        laboratory: crate::domain::summary::Identity {
            name: cfg.laboratory.name.clone(),
            address: cfg.laboratory.address.clone(),
        },
        ctpa,
        certified: cfg.laboratory.certified_specimen_types.clone(),
        utc_offset_minutes: cfg.calendar.utc_offset_minutes,
    }
}

/// The production of the 40.111 summaries, when `[summaries]` names a directory and a start.
pub fn summaries_settings(cfg: &Config) -> Option<crate::custody::summaries::Settings> {
    let (Some(dir), Some(since)) = (&cfg.summaries.dir, cfg.summaries.since) else {
        return None;
    };
    Some(crate::custody::summaries::Settings {
        desk: summaries_desk(cfg),
        dir: dir.clone(),
        since: crate::domain::summary::Period::starting_on(since.days_since_epoch())?,
    })
}

/// The 40.111 summaries for the admin API.
struct SummariesService {
    committer: GroupCommitter,
    desk: crate::custody::summaries::Desk,
    clock: Arc<dyn Clock>,
    wake: Arc<tokio::sync::Notify>,
}

impl admin::SummariesApi for SummariesService {
    fn list(&self, period: Option<&str>) -> Result<serde_json::Value, (u16, String)> {
        let list = crate::custody::summaries::list(
            self.committer.store(),
            period,
            self.desk.utc_offset_minutes,
            self.clock.now_ms(),
        )
        .map_err(|e| (e.status(), e.to_string()))?;
        serde_json::to_value(list).map_err(|e| (500, e.to_string()))
    }

    fn show(&self, id: &str) -> Result<Option<serde_json::Value>, String> {
        crate::custody::summaries::show(
            self.committer.store(),
            id,
            self.desk.utc_offset_minutes,
            self.clock.now_ms(),
        )
    }

    fn mark_sent<'a>(
        &'a self,
        id: String,
        body: serde_json::Value,
        user: &'a admin::auth::User,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            let request: crate::custody::summaries::MarkSent =
                serde_json::from_value(body).map_err(|e| (400, format!("body: {e}")))?;
            let r = crate::custody::summaries::mark_sent(
                &self.committer,
                &id,
                &user.name,
                request,
                self.desk.utc_offset_minutes,
                self.clock.now_ms(),
            )
            .await
            .map_err(|e| (e.status(), e.to_string()))?;
            self.wake.notify_one();
            serde_json::to_value(r).map_err(|e| (500, e.to_string()))
        })
    }

    fn request<'a>(
        &'a self,
        employer: String,
        from: String,
        to: String,
        user: &'a admin::auth::User,
    ) -> admin::ActionFuture<'a> {
        Box::pin(async move {
            crate::custody::summaries::request(
                &self.committer,
                &self.desk,
                &employer,
                &from,
                &to,
                &format!("user:{}", user.name),
                self.clock.now_ms(),
            )
            .await
            .map_err(|e| (e.status(), e.to_string()))
        })
    }
}

/// The admin API's read access to the store.
struct StoreApi {
    store: Store,
}

impl Api for StoreApi {
    fn specimen(&self, id: &str) -> Result<Option<serde_json::Value>, String> {
        let rec =
            crate::custody::records::read_specimen(&self.store, id).map_err(|e| e.to_string())?;
        Ok(rec.map(|r| specimen_json(&r)))
    }

    fn specimens_in_state(&self, state: &str) -> Result<Vec<String>, String> {
        let s = State::from_key(state).ok_or_else(|| {
            format!(
                "unknown state `{state}` (one of: {})",
                State::ALL.map(|s| s.key()).join(", ")
            )
        })?;
        self.store.ids_in_state(s.key()).map_err(|e| e.to_string())
    }

    fn verify_audit(&self) -> Result<serde_json::Value, String> {
        audit_json(&self.store)
    }

    fn specimen_audit(&self, specimen_id: &str) -> Result<serde_json::Value, String> {
        specimen_audit_json(&self.store, specimen_id)
    }
}

/// The audit entries of a specimen, oldest first: those whose subject is `specimen_id` or one
/// of its reports (delivery), i.e. what happened to it and by whom; the entries hold no result
/// values or donor data.
pub fn specimen_audit_json(store: &Store, specimen_id: &str) -> Result<serde_json::Value, String> {
    // Both reads go through indexes (the audit log by subject, the reports by ID prefix): the
    // cost is the specimen's own, not the store's size.
    let mut subjects = vec![specimen_id.to_string()];
    for r in crate::custody::outbox::reports_of(store, specimen_id).map_err(|e| e.to_string())? {
        if !subjects.contains(&r.report_id) {
            subjects.push(r.report_id);
        }
    }
    let mut records = Vec::new();
    for subject in &subjects {
        records.extend(store.audit_of(subject).map_err(|e| e.to_string())?);
    }
    records.sort_by_key(|r| r.seq);
    records.dedup_by_key(|r| r.seq);
    let out: Vec<serde_json::Value> = records
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "seq": r.seq,
                "at": crate::core::clock::rfc3339(r.entry.at_millis),
                "actor": r.entry.actor,
                "action": r.entry.action,
                "subject": r.entry.subject,
                "before": r.entry.before,
                "after": r.entry.after,
            })
        })
        .collect();
    Ok(serde_json::json!({"specimen_id": specimen_id, "entries": out}))
}

/// A specimen record as operators see it, with its result history: each result with its run,
/// the run's QC state and whether it counts (and why not), and what holds or awaits it.
pub fn specimen_json(r: &SpecimenRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
    let history = r.analysis(None);
    v["result_history"] = serde_json::to_value(&history.views).unwrap_or_default();
    v["result_conflicts"] = serde_json::to_value(&history.conflicts).unwrap_or_default();
    v["retests_open"] = serde_json::to_value(r.open_retests()).unwrap_or_default();
    v["held_because"] = serde_json::to_value(r.held_because(None)).unwrap_or_default();
    v
}

/// The audit chain check as JSON: `{"ok":true,"entries":N}` or the first broken link.
pub fn audit_json(store: &Store) -> Result<serde_json::Value, String> {
    Ok(match store.verify_audit() {
        Ok(r) => serde_json::json!({"ok": true, "entries": r.entries}),
        Err(b) => serde_json::json!({"ok": false, "broken_at": b.seq, "reason": b.reason}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SIGTERM that arrives after the handlers are installed but before the main loop waits
    /// for it (the moment readiness is announced) is delivered to the loop, not fatal.
    #[test]
    fn sigterm_after_install_before_the_loop_waits_is_kept() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut signals = Signals::install().unwrap();
            let sent = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(std::process::id().to_string())
                .status()
                .unwrap();
            assert!(sent.success());
            tokio::time::timeout(Duration::from_secs(10), signals.term.recv())
                .await
                .expect("the SIGTERM reaches the loop")
                .expect("the signal stream is open");
        });
    }

    /// Once installed, a SIGHUP is a message on the stream, not the default action (which
    /// would end the process). `run` installs them before it announces readiness.
    #[tokio::test]
    async fn installed_signals_turn_a_sighup_into_a_message() {
        let mut signals = Signals::install().unwrap();
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(10), signals.hup.recv())
            .await
            .expect("SIGHUP delivered to the stream")
            .expect("stream open");
    }
}
