//! The daemon's configuration: `config/custodian.toml`, overridden by environment variables
//! `CUSTODIAN__SECTION__KEY`, checked whole.
//!
//! Loading never stops at the first problem: every unknown key, every bad value and every
//! broken rule profile is reported with its key, so `custodian check-config` can list them all.
//! Relative paths are taken relative to the directory of the config file.

use crate::domain::rules::{Profile, ProfileSet};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// The environment prefix: `CUSTODIAN__RULES__DEFAULT_PROFILE=part40-2023`.
pub const ENV_PREFIX: &str = "CUSTODIAN";

/// The configuration file used when none is named.
pub const DEFAULT_PATH: &str = "config/custodian.toml";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this was loaded from.
    pub source: PathBuf,
    pub laboratory: Laboratory,
    pub rules: Rules,
    pub store: Store,
    pub log: Log,
    pub ingest: Ingest,
    pub lims: Lims,
    pub admin: Admin,
    pub signing: Signing,
    pub calendar: Calendar,
    pub lifecycle: Lifecycle,
    pub quarantine: Quarantine,
    pub analyzers: Vec<Analyzer>,
    /// `[[astm_analyzer]]`: analyzers that speak ASTM E1381/E1394.
    pub astm_analyzers: Vec<AstmAnalyzer>,
    pub mros: Vec<MroEntry>,
    pub transmit: Transmit,
    pub split_laboratory: SplitLaboratory,
    pub summaries: Summaries,
}

/// The 40.111 statistical summaries (see `custody::summaries`): the directory the laboratory
/// sends them from and the first period produced, both or neither (then nothing is produced;
/// an employer's request under 40.111(b) is still answered), and the C/TPAs of employers
/// (Appendix D, "C/TPA Identification, where applicable"). The section is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summaries {
    /// Where the summary files are written (one JSON file per employer and specimen type, one
    /// per specimen type to DOT).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The first day of the first period produced (January 1 or July 1, laboratory date).
    #[serde(default)]
    pub since: Option<crate::domain::calendar::Date>,
    /// How often the daemon looks for closed periods to produce, in seconds (also at start).
    #[serde(default = "default_summaries_sweep")]
    pub sweep_interval_secs: u64,
    /// The C/TPAs that administer employers' testing.
    #[serde(default)]
    pub ctpa: Vec<Ctpa>,
}

fn default_summaries_sweep() -> u64 {
    3600
}

impl Default for Summaries {
    fn default() -> Self {
        Summaries {
            dir: None,
            since: None,
            sweep_interval_secs: default_summaries_sweep(),
            ctpa: Vec::new(),
        }
    }
}

/// A C/TPA and the employers (IDs as on the CCF) whose summaries name it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ctpa {
    pub name: String,
    pub address: String,
    pub employers: Vec<String>,
}

/// This laboratory as the second laboratory of split specimens it receives (40.177): whether it
/// takes them in, and its methods' limits of detection per analyte (ng/mL), the threshold of
/// reconfirmation (40.177(b)). The section is optional; disabled by default.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitLaboratory {
    #[serde(default)]
    pub enabled: bool,
    /// Analyte key (as in the rule profiles) → limit of detection, ng/mL.
    #[serde(default)]
    pub lod: std::collections::BTreeMap<String, rust_decimal::Decimal>,
}

/// One MRO of the directory: the only kind of destination a report can have (40.97(b)).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MroEntry {
    /// The MRO directory id written on CCFs (the LIMS sends it with the accession).
    pub id: String,
    pub name: String,
    pub address: String,
    /// `https://` endpoint of the MRO's system.
    pub endpoint: String,
    /// PEM CA that signs the MRO's server certificate (verification cannot be turned off).
    pub ca: PathBuf,
    /// The laboratory's client certificate and key presented to this MRO (key mode 0600).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// The MRO's general written request for quantitative values (40.97(e), 2001 edition):
    /// the reference of the document on file.
    #[serde(default)]
    pub quantitation_request: Option<String>,
}

impl MroEntry {
    /// The MRO as the domain names it (no endpoint, no certificates).
    pub fn party(&self) -> crate::domain::parties::Mro {
        crate::domain::parties::Mro {
            id: self.id.clone(),
            name: self.name.clone(),
            address: self.address.clone(),
            quantitation_request: self.quantitation_request.clone(),
        }
    }
}

/// Delivery tuning.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transmit {
    /// One POST may take this long, in seconds.
    #[serde(default = "default_post_timeout")]
    pub timeout_secs: u64,
    /// First retry delay after a 5xx or network error, in milliseconds (doubles, with jitter).
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    /// Longest retry delay, in seconds.
    #[serde(default = "default_backoff_max")]
    pub backoff_max_secs: u64,
}

fn default_post_timeout() -> u64 {
    30
}
fn default_backoff_initial() -> u64 {
    500
}
fn default_backoff_max() -> u64 {
    300
}

impl Default for Transmit {
    fn default() -> Self {
        Transmit {
            timeout_secs: default_post_timeout(),
            backoff_initial_ms: default_backoff_initial(),
            backoff_max_secs: default_backoff_max(),
        }
    }
}

/// Words that name a destination the law forbids for laboratory results (40.97(b)): the
/// employer, its DER, or a service agent such as a C/TPA.
const FORBIDDEN_DESTINATION_WORDS: [&str; 6] = [
    "der",
    "employer",
    "tpa",
    "ctpa",
    "consortium",
    "administrator",
];

/// Why a directory entry is not an MRO destination, if it is not.
pub fn forbidden_destination(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    for forbidden in FORBIDDEN_DESTINATION_WORDS {
        if words.contains(&forbidden) {
            return Some(forbidden);
        }
    }
    if lower.contains("c/tpa") || lower.contains("third party") || lower.contains("third-party") {
        return Some("third-party administrator");
    }
    None
}

/// Business days (40.83(e)-(g)): federal holidays are computed; the laboratory adds the days it
/// is closed. The section is optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calendar {
    /// Dates (`YYYY-MM-DD`) the laboratory is closed besides weekends and federal holidays.
    #[serde(default)]
    pub closures: Vec<crate::domain::calendar::Date>,
    /// The laboratory's offset from UTC in minutes, standard time (e.g. -300 for Eastern): the
    /// day a specimen was received and the close of a business day are in laboratory time.
    #[serde(default)]
    pub utc_offset_minutes: i32,
}

/// The lifecycle clocks (correction windows, retention) and what may be discarded. The section
/// is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// How often the daemon fires the clocks that came due, in seconds (it also does at start).
    #[serde(default = "default_sweep_interval")]
    pub sweep_interval_secs: u64,
    /// A negative or rejected specimen may be discarded this many days after it was reported
    /// (positive, adulterated, substituted and invalid ones are kept a year, 40.99(a)).
    #[serde(default = "default_discard_after_days")]
    pub discard_after_report_days: u64,
}

fn default_sweep_interval() -> u64 {
    60
}
fn default_discard_after_days() -> u64 {
    7
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            sweep_interval_secs: default_sweep_interval(),
            discard_after_report_days: default_discard_after_days(),
        }
    }
}

/// The bounds of the quarantine of refused inputs (see `custody::quarantine`). Optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quarantine {
    /// Most records kept; the oldest beyond it are dropped at the next sweep.
    #[serde(default = "default_quarantine_max_records")]
    pub max_records: u64,
    /// Records older than this many days are dropped.
    #[serde(default = "default_quarantine_max_age_days")]
    pub max_age_days: u64,
    /// Most raw bytes kept; the oldest records beyond it are dropped.
    #[serde(default = "default_quarantine_max_bytes")]
    pub max_bytes: u64,
    /// How often the bounds are enforced, in seconds (also once at start).
    #[serde(default = "default_quarantine_sweep")]
    pub sweep_interval_secs: u64,
}

fn default_quarantine_max_records() -> u64 {
    100_000
}
fn default_quarantine_max_age_days() -> u64 {
    90
}
fn default_quarantine_max_bytes() -> u64 {
    1 << 30
}
fn default_quarantine_sweep() -> u64 {
    60
}

impl Default for Quarantine {
    fn default() -> Self {
        Quarantine {
            max_records: default_quarantine_max_records(),
            max_age_days: default_quarantine_max_age_days(),
            max_bytes: default_quarantine_max_bytes(),
            sweep_interval_secs: default_quarantine_sweep(),
        }
    }
}

impl Quarantine {
    pub fn limits(&self) -> crate::custody::quarantine::Limits {
        crate::custody::quarantine::Limits {
            max_records: self.max_records,
            max_age_ms: self.max_age_days.saturating_mul(86_400_000),
            max_bytes: self.max_bytes,
        }
    }
}

impl Calendar {
    /// The business-day calendar: federal holidays plus these closures.
    pub fn business_days(&self) -> crate::domain::calendar::Calendar {
        crate::domain::calendar::Calendar::with_closures(self.closures.iter().copied())
    }
}

/// Tuning of the analyzer listeners and of the group commit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ingest {
    /// Largest MLLP frame accepted, in bytes.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// A connection silent this long is closed, in seconds.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_secs: u64,
    /// TLS handshakes must finish within this, in seconds.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// Most open connections per analyzer listener.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most jobs (messages) per group-commit batch: one commit into the engine; a flush covers
    /// the batches committed before it. 16 lets half of 32 connections' messages run while the
    /// other half's batch is flushed (see the README's Performance).
    #[serde(default = "default_commit_max_batch")]
    pub commit_max_batch: usize,
    /// Longest a write waits for others to share its flush, in microseconds.
    #[serde(default = "default_commit_max_wait_us")]
    pub commit_max_wait_us: u64,
    /// Threads that run the connections (analyzers, LIMS spool, admin and console); 0: the
    /// CPUs less one, at least one ([`Ingest::workers`]).
    #[serde(default)]
    pub worker_threads: usize,
}

/// Most `ingest.worker_threads`.
pub const MAX_WORKER_THREADS: usize = 256;

impl Ingest {
    /// The connection threads to run on a machine of `cpus` CPUs: `worker_threads`, or when 0
    /// the CPUs less one (at least one). Every durable write runs on the store's writer thread,
    /// and its flush on another: a runtime thread per CPU left them contending with it for a
    /// CPU (measured on 2 CPUs, `store_economy`: 8,450 msg/s with two runtime threads, 9,000
    /// with one).
    pub fn workers(&self, cpus: usize) -> usize {
        match self.worker_threads {
            0 => cpus.saturating_sub(1).max(1),
            n => n,
        }
    }
}

fn default_max_frame() -> usize {
    1 << 20
}
fn default_read_timeout() -> u64 {
    300
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_max_connections() -> usize {
    64
}
fn default_commit_max_batch() -> usize {
    16
}
fn default_commit_max_wait_us() -> u64 {
    2000
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest {
            max_frame_bytes: default_max_frame(),
            read_timeout_secs: default_read_timeout(),
            handshake_timeout_secs: default_handshake_timeout(),
            max_connections: default_max_connections(),
            commit_max_batch: default_commit_max_batch(),
            commit_max_wait_us: default_commit_max_wait_us(),
            worker_threads: 0,
        }
    }
}

/// The LIMS spool directory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lims {
    /// The LIMS drops files into `<spool_dir>/incoming`; custodian keeps `processing/`,
    /// `done/` and `rejected/` beside it.
    pub spool_dir: PathBuf,
    /// How often the spool is looked at, in milliseconds.
    #[serde(default = "default_poll")]
    pub poll_interval_ms: u64,
    /// Largest document accepted, in bytes.
    #[serde(default = "default_max_document")]
    pub max_document_bytes: usize,
    /// The QC rules of the LIMS's confirmation batches (each batch is a run): per analyte
    /// (`code` = the analyte key), sample, level and expectation, each citing its source.
    #[serde(default)]
    pub qc: Vec<crate::domain::runs::QcRule>,
}

fn default_poll() -> u64 {
    250
}
fn default_max_document() -> usize {
    12 << 20
}

/// The admin interface (HTTP on a local address) and its users.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Address to listen on; keep it on loopback or a management network.
    pub listen: std::net::SocketAddr,
    /// Most open admin connections; beyond it the longest-waiting idle one is closed, or the
    /// new one refused when every one is busy answering.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: usize,
    /// A request head (line and headers) must arrive within this, in seconds, from the
    /// connection's start or from its first byte after a keep-alive pause.
    #[serde(default = "default_admin_header_timeout")]
    pub header_timeout_secs: u64,
    /// A keep-alive connection with no request, or one with no I/O, is closed after this, in
    /// seconds.
    #[serde(default = "default_admin_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// TLS for the console and the API (the laboratory's certificate). Required when `listen`
    /// is not a loopback address.
    #[serde(default)]
    pub tls: Option<AdminTls>,
    /// A console session with no request for this long, in seconds, is ended (default 900).
    #[serde(default = "default_session_idle")]
    pub session_idle_timeout_secs: u64,
    /// Consecutive failed sign-ins or signatures that lock a user name (default 5).
    #[serde(default = "default_lockout_failures")]
    pub lockout_failures: u32,
    /// The first lockout, in seconds (default 30); each further failure doubles it, up to an
    /// hour.
    #[serde(default = "default_lockout_secs")]
    pub lockout_secs: u64,
    #[serde(default, rename = "user")]
    pub users: Vec<crate::admin::auth::UserConfig>,
}

/// The admin listener's TLS: the laboratory's certificate chain and key (PEM).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTls {
    pub cert: PathBuf,
    /// Mode 0600 or stricter.
    pub key: PathBuf,
}

impl AdminTls {
    pub fn server(&self) -> crate::trust::tls::ServerTls {
        crate::trust::tls::ServerTls {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: None,
            client_name: None,
        }
    }
}

fn default_session_idle() -> u64 {
    900
}
fn default_lockout_failures() -> u32 {
    5
}
fn default_lockout_secs() -> u64 {
    30
}

fn default_admin_max_connections() -> usize {
    64
}
fn default_admin_header_timeout() -> u64 {
    10
}
fn default_admin_idle_timeout() -> u64 {
    60
}

impl Admin {
    /// The connection limits of the admin listener.
    pub fn limits(&self) -> crate::admin::server::Limits {
        crate::admin::server::Limits {
            max_connections: self.max_connections,
            header_timeout: std::time::Duration::from_secs(self.header_timeout_secs),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
        }
    }
}

/// The keys that sign reports (see [`crate::trust::signing`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signing {
    /// Directory of private keys `<kid>.pk8` (mode 0600) and the `active` pointer; created
    /// 0700 by `custodian keys generate`.
    pub keys_dir: PathBuf,
}

/// One analyzer: its MLLP listener and how its messages map onto the rule profile.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analyzer {
    /// A short name (letters, digits, `-`, `_`): appears in logs, metrics and the audit log.
    pub name: String,
    /// Address of its MLLP listener (`127.0.0.1:0` picks a free port).
    pub listen: std::net::SocketAddr,
    /// TLS for the listener; with `client_ca`, analyzers must present a certificate.
    #[serde(default)]
    pub tls: Option<crate::trust::tls::ServerTls>,
    /// Plain MLLP (no TLS) on an address other than loopback carries donor data in clear:
    /// refused unless this says so explicitly.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Where the specimen ID is and what each test code means.
    pub mapping: crate::codec::hl7::Mapping,
}

/// One ASTM analyzer (E1381 / LIS1-A low-level protocol, E1394 / LIS2-A2 records): a TCP
/// server the analyzer connects to (`listen`) or a TCP client custodian connects from
/// (`connect`), exactly one; and how its records map onto the rule profile.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AstmAnalyzer {
    /// A short name (letters, digits, `-`, `_`), unique among every analyzer.
    pub name: String,
    /// TCP server: the analyzer connects to this address (`127.0.0.1:0` picks a free port).
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// TCP client: custodian connects to the analyzer at this address and reconnects when the
    /// connection drops.
    #[serde(default)]
    pub connect: Option<std::net::SocketAddr>,
    /// Seconds between connection attempts of a TCP client (default 5).
    #[serde(default = "default_reconnect_secs")]
    pub reconnect_secs: u64,
    /// ASTM carries donor data in clear: on an address other than loopback, refused unless
    /// this says so explicitly (an isolated instrument segment).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Where the specimen ID, test codes and statuses are, and what each test code means.
    pub mapping: crate::codec::astm::AstmMapping,
}

fn default_reconnect_secs() -> u64 {
    5
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Laboratory {
    /// 40.97(b)(1)(i)(A): the laboratory's name on every report.
    pub name: String,
    /// 40.97(b)(1)(i)(A): the laboratory's address on every report.
    pub address: String,
    /// The specimen types the laboratory is HHS-certified to test (`urine`, `oral_fluid`);
    /// default urine only. A specimen of another type is held untested at accession.
    #[serde(default = "urine_only")]
    pub certified_specimen_types: Vec<crate::domain::rules::SpecimenType>,
    /// Where the certified Copy 1 of a non-negative report comes from (40.97(b)(2)): `render`
    /// (custodian renders it at release under the image as received, unless the LIMS supplied
    /// one) or `lims` (only the LIMS's `certified-copy` document; the result waits for it).
    #[serde(default)]
    pub certified_copy1: crate::domain::copy1::Copy1Source,
}

fn urine_only() -> Vec<crate::domain::rules::SpecimenType> {
    vec![crate::domain::rules::SpecimenType::Urine]
}

impl Laboratory {
    /// The laboratory as the domain names it.
    pub fn identity(&self) -> crate::domain::parties::Laboratory {
        crate::domain::parties::Laboratory {
            name: self.name.clone(),
            address: self.address.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Rules {
    /// The profile applied when a specimen or case names none.
    pub default_profile: String,
    /// Directory of `NAME.toml` rule profiles.
    pub profiles_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Store {
    /// Directory of the sled store (created 0700 if missing).
    pub path: PathBuf,
    /// After a failed fsync the store refuses durability until it is reopened: the daemon
    /// answers AE and `/readyz` 503 for this many seconds (so monitoring sees why), then exits
    /// non-zero for systemd to restart it. At most 25 (the unit's watchdog is 30 s).
    #[serde(default = "default_exit_after_durability_lost")]
    pub exit_after_durability_lost_secs: u64,
    /// MiB of decoded pages the store keeps in memory (sled's per-page bookkeeping comes on
    /// top and grows with the store). 8 to 65536; default 32.
    #[serde(default = "default_cache_mib")]
    pub cache_mib: u64,
    /// Keys written to sled after which the recent keys move into a new archive segment (the
    /// store's memory, start and disk then stay bounded whatever its size). 1000 to
    /// 100000000; default 10000.
    #[serde(default = "default_archive_after_keys")]
    pub archive_after_keys: u64,
}

fn default_archive_after_keys() -> u64 {
    crate::store::DEFAULT_ARCHIVE_AFTER_KEYS
}

/// Bounds of `store.archive_after_keys`.
pub const ARCHIVE_AFTER_KEYS_RANGE: std::ops::RangeInclusive<u64> = 1_000..=100_000_000;

fn default_cache_mib() -> u64 {
    crate::store::DEFAULT_CACHE_BYTES / (1024 * 1024)
}

/// Bounds of `store.cache_mib`.
pub const CACHE_MIB_RANGE: std::ops::RangeInclusive<u64> = 8..=65536;

impl Store {
    /// How the daemon and the operator commands open the store.
    pub fn options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            cache_bytes: self.cache_mib * 1024 * 1024,
            archive_after_keys: self.archive_after_keys,
        }
    }
}

fn default_exit_after_durability_lost() -> u64 {
    10
}

/// Longest `store.exit_after_durability_lost_secs`: below the unit's `WatchdogSec=30s`.
pub const MAX_EXIT_AFTER_DURABILITY_LOST_SECS: u64 = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Log {
    /// A tracing filter: `info`, `custodian=debug`, ...
    pub level: String,
    pub format: LogFormat,
}

/// The top-level sections, each deserialized on its own so one bad section hides no other.
const SECTIONS: [&str; 17] = [
    "astm_analyzer",
    "summaries",
    "split_laboratory",
    "quarantine",
    "mro",
    "transmit",
    "laboratory",
    "rules",
    "store",
    "log",
    "ingest",
    "lims",
    "admin",
    "signing",
    "calendar",
    "lifecycle",
    "analyzer",
];

struct RawConfig {
    laboratory: Laboratory,
    rules: Rules,
    store: Store,
    log: Log,
    ingest: Ingest,
    lims: Lims,
    admin: Admin,
    signing: Signing,
    calendar: Calendar,
    lifecycle: Lifecycle,
    quarantine: Quarantine,
    analyzers: Vec<Analyzer>,
    astm_analyzers: Vec<AstmAnalyzer>,
    mros: Vec<MroEntry>,
    transmit: Transmit,
    split_laboratory: SplitLaboratory,
    summaries: Summaries,
}

/// One problem with the configuration: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub problem: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

/// Every problem found while loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "configuration {} has {} problem(s):",
            self.source.display(),
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

fn problem(key: impl Into<String>, problem: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        problem: problem.into(),
    }
}

/// Loads the configuration and its rule profiles, reading the process environment.
pub fn load(path: &Path) -> Result<(Config, ProfileSet), ConfigError> {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();
    load_with_env(path, &env)
}

/// Loads with an explicit environment (tests pass their own).
pub fn load_with_env(
    path: &Path,
    env: &[(String, String)],
) -> Result<(Config, ProfileSet), ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        source: path.to_path_buf(),
        problems,
    };
    if !path.is_file() {
        return Err(fail(vec![problem(
            "(file)",
            format!("{} does not exist or is not a file", path.display()),
        )]));
    }
    let env_map: std::collections::HashMap<String, String> = env.iter().cloned().collect();
    let built = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env_map)),
        )
        .build()
        .map_err(|e| fail(vec![problem("(file)", e.to_string())]))?;
    let tree: serde_json::Value = built
        .try_deserialize()
        .map_err(|e| fail(vec![problem("(file)", e.to_string())]))?;

    let mut problems = Vec::new();
    let top = match &tree {
        serde_json::Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    for key in top.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            problems.push(unknown_key(key, env));
        }
    }
    let laboratory = section::<Laboratory>(&top, "laboratory", env, &mut problems);
    let rules = section::<Rules>(&top, "rules", env, &mut problems);
    let store = section::<Store>(&top, "store", env, &mut problems);
    let log = section::<Log>(&top, "log", env, &mut problems);
    let ingest = if top.contains_key("ingest") {
        section::<Ingest>(&top, "ingest", env, &mut problems)
    } else {
        Some(Ingest::default())
    };
    let lims = section::<Lims>(&top, "lims", env, &mut problems);
    let admin = section::<Admin>(&top, "admin", env, &mut problems);
    let signing = section::<Signing>(&top, "signing", env, &mut problems);
    let calendar = if top.contains_key("calendar") {
        section::<Calendar>(&top, "calendar", env, &mut problems)
    } else {
        Some(Calendar::default())
    };
    let lifecycle = if top.contains_key("lifecycle") {
        section::<Lifecycle>(&top, "lifecycle", env, &mut problems)
    } else {
        Some(Lifecycle::default())
    };
    let quarantine = if top.contains_key("quarantine") {
        section::<Quarantine>(&top, "quarantine", env, &mut problems)
    } else {
        Some(Quarantine::default())
    };
    let analyzers = if top.contains_key("analyzer") {
        section::<Vec<Analyzer>>(&top, "analyzer", env, &mut problems)
    } else {
        Some(Vec::new())
    };
    let astm_analyzers = if top.contains_key("astm_analyzer") {
        section::<Vec<AstmAnalyzer>>(&top, "astm_analyzer", env, &mut problems)
    } else {
        Some(Vec::new())
    };
    let mros = if top.contains_key("mro") {
        section::<Vec<MroEntry>>(&top, "mro", env, &mut problems)
    } else {
        Some(Vec::new())
    };
    let transmit = if top.contains_key("transmit") {
        section::<Transmit>(&top, "transmit", env, &mut problems)
    } else {
        Some(Transmit::default())
    };
    let split_laboratory = if top.contains_key("split_laboratory") {
        section::<SplitLaboratory>(&top, "split_laboratory", env, &mut problems)
    } else {
        Some(SplitLaboratory::default())
    };
    let summaries = if top.contains_key("summaries") {
        section::<Summaries>(&top, "summaries", env, &mut problems)
    } else {
        Some(Summaries::default())
    };
    let (
        Some(mros),
        Some(transmit),
        Some(lifecycle),
        Some(split_laboratory),
        Some(quarantine),
        Some(summaries),
        Some(astm_analyzers),
    ) = (
        mros,
        transmit,
        lifecycle,
        split_laboratory,
        quarantine,
        summaries,
        astm_analyzers,
    )
    else {
        return Err(fail(problems));
    };
    let (
        Some(laboratory),
        Some(rules),
        Some(store),
        Some(log),
        Some(ingest),
        Some(lims),
        Some(admin),
        Some(signing),
        Some(calendar),
        Some(analyzers),
    ) = (
        laboratory, rules, store, log, ingest, lims, admin, signing, calendar, analyzers,
    )
    else {
        return Err(fail(problems));
    };
    let raw = RawConfig {
        laboratory,
        rules,
        store,
        log,
        ingest,
        lims,
        admin,
        signing,
        calendar,
        lifecycle,
        quarantine,
        analyzers,
        astm_analyzers,
        mros,
        transmit,
        split_laboratory,
        summaries,
    };
    if !problems.is_empty() {
        return Err(fail(problems));
    }

    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let cfg = Config {
        source: path.to_path_buf(),
        laboratory: raw.laboratory,
        rules: Rules {
            default_profile: raw.rules.default_profile,
            profiles_dir: resolve(&raw.rules.profiles_dir),
        },
        store: Store {
            path: resolve(&raw.store.path),
            ..raw.store
        },
        log: raw.log,
        ingest: raw.ingest,
        lims: Lims {
            spool_dir: resolve(&raw.lims.spool_dir),
            ..raw.lims
        },
        admin: Admin {
            tls: raw.admin.tls.map(|t| AdminTls {
                cert: resolve(&t.cert),
                key: resolve(&t.key),
            }),
            ..raw.admin
        },
        signing: Signing {
            keys_dir: resolve(&raw.signing.keys_dir),
        },
        calendar: raw.calendar,
        lifecycle: raw.lifecycle,
        quarantine: raw.quarantine,
        analyzers: raw
            .analyzers
            .into_iter()
            .map(|mut a| {
                if let Some(t) = &mut a.tls {
                    t.cert = resolve(&t.cert);
                    t.key = resolve(&t.key);
                    t.client_ca = t.client_ca.as_deref().map(resolve);
                }
                a
            })
            .collect(),
        astm_analyzers: raw.astm_analyzers,
        mros: raw
            .mros
            .into_iter()
            .map(|mut m| {
                m.ca = resolve(&m.ca);
                m.client_cert = resolve(&m.client_cert);
                m.client_key = resolve(&m.client_key);
                m
            })
            .collect(),
        transmit: raw.transmit,
        split_laboratory: raw.split_laboratory,
        summaries: Summaries {
            dir: raw.summaries.dir.as_deref().map(resolve),
            ..raw.summaries
        },
    };
    validate(&cfg, &mut problems);
    validate_summaries(&cfg.summaries, &mut problems);
    validate_mros(&cfg, &mut problems);
    let profiles = load_profiles(&cfg.rules.profiles_dir, &mut problems);
    validate_analyzers(&cfg, &profiles, &mut problems);
    validate_astm_analyzers(&cfg, &profiles, &mut problems);
    validate_split_laboratory(&cfg.split_laboratory, &profiles, &mut problems);
    if !profiles.is_empty() && profiles.get(&cfg.rules.default_profile).is_none() {
        problems.push(problem(
            "rules.default_profile",
            format!(
                "`{}` is not among the loaded profiles ({})",
                cfg.rules.default_profile,
                profiles.names().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if problems.is_empty() {
        Ok((cfg, profiles))
    } else {
        Err(fail(problems))
    }
}

fn unknown_key(key: &str, env: &[(String, String)]) -> Problem {
    let from_env = env_key(key);
    let hint = if env.iter().any(|(k, _)| *k == from_env) {
        format!(" (set by environment variable {from_env}; unset it)")
    } else {
        String::new()
    };
    problem(key, format!("unknown key{hint}"))
}

/// Deserializes one section, reporting every unknown key and every bad value in it: after a bad
/// value the key is set aside and the section read again, so later problems still show.
fn section<T: serde::de::DeserializeOwned>(
    top: &serde_json::Map<String, serde_json::Value>,
    name: &str,
    env: &[(String, String)],
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let Some(mut tree) = top.get(name).cloned() else {
        problems.push(problem(name, "missing section"));
        return None;
    };
    let mut unknown = std::collections::BTreeSet::new();
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..32 {
        let mut track = serde_path_to_error::Track::new();
        let result: Result<T, _> = {
            let de = serde_path_to_error::Deserializer::new(&tree, &mut track);
            serde_ignored::deserialize(de, |p| {
                unknown.insert(format!("{name}.{p}"));
            })
        };
        let rel = track.path().to_string();
        match result {
            Ok(v) => {
                problems.extend(unknown.iter().map(|k| unknown_key(k, env)));
                return if removed.is_empty() { Some(v) } else { None };
            }
            Err(e) => {
                let key = if rel == "." || rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{name}.{rel}")
                };
                let msg = e.to_string();
                let missing_after_removal = msg.starts_with("missing field")
                    && removed
                        .iter()
                        .any(|r| msg.contains(&format!("`{}`", r.rsplit('.').next().unwrap_or(r))));
                if !missing_after_removal {
                    problems.push(problem(&key, msg));
                }
                if missing_after_removal || !remove_path(&mut tree, &rel) {
                    problems.extend(unknown.iter().map(|k| unknown_key(k, env)));
                    return None;
                }
                removed.push(key);
            }
        }
    }
    problems.extend(unknown.iter().map(|k| unknown_key(k, env)));
    None
}

/// Removes the value at a serde_path_to_error path (`a.b`, `list[2].c`); false when not found.
fn remove_path(tree: &mut serde_json::Value, path: &str) -> bool {
    if path.is_empty() || path == "." {
        return false;
    }
    let parts: Vec<&str> = path.split('.').collect();
    let mut cur = tree;
    for (i, part) in parts.iter().enumerate() {
        let (name, index) = match part.find('[') {
            Some(b) => (
                &part[..b],
                part[b + 1..].trim_end_matches(']').parse::<usize>().ok(),
            ),
            None => (*part, None),
        };
        let last = i + 1 == parts.len();
        let serde_json::Value::Object(m) = cur else {
            return false;
        };
        if last && index.is_none() {
            return m.remove(name).is_some();
        }
        let Some(next) = m.get_mut(name) else {
            return false;
        };
        cur = next;
        if let Some(ix) = index {
            let serde_json::Value::Array(a) = cur else {
                return false;
            };
            if ix >= a.len() {
                return false;
            }
            if last {
                a.remove(ix);
                return true;
            }
            cur = &mut a[ix];
        }
    }
    false
}

fn env_key(path: &str) -> String {
    format!(
        "{ENV_PREFIX}__{}",
        path.split('.')
            .map(|s| s.to_uppercase())
            .collect::<Vec<_>>()
            .join("__")
    )
}

fn validate(cfg: &Config, problems: &mut Vec<Problem>) {
    if cfg.laboratory.name.trim().is_empty() {
        problems.push(problem(
            "laboratory.name",
            "must not be empty (40.97(b)(1)(i)(A))",
        ));
    }
    if cfg.laboratory.address.trim().is_empty() {
        problems.push(problem(
            "laboratory.address",
            "must not be empty (40.97(b)(1)(i)(A))",
        ));
    }
    let certified = &cfg.laboratory.certified_specimen_types;
    if certified.is_empty() {
        problems.push(problem(
            "laboratory.certified_specimen_types",
            "must name at least one specimen type (urine, oral_fluid)",
        ));
    }
    for (i, t) in certified.iter().enumerate() {
        if certified[..i].contains(t) {
            problems.push(problem(
                "laboratory.certified_specimen_types",
                format!("`{}` is listed twice", t.key()),
            ));
        }
    }
    if cfg.rules.default_profile.trim().is_empty() {
        problems.push(problem("rules.default_profile", "must name a profile"));
    }
    for (key, v) in [
        ("quarantine.max_records", cfg.quarantine.max_records),
        ("quarantine.max_age_days", cfg.quarantine.max_age_days),
        ("quarantine.max_bytes", cfg.quarantine.max_bytes),
        (
            "quarantine.sweep_interval_secs",
            cfg.quarantine.sweep_interval_secs,
        ),
    ] {
        if v == 0 {
            problems.push(problem(key, "must be at least 1"));
        }
    }
    if cfg.store.exit_after_durability_lost_secs > MAX_EXIT_AFTER_DURABILITY_LOST_SECS {
        problems.push(problem(
            "store.exit_after_durability_lost_secs",
            format!(
                "must be at most {MAX_EXIT_AFTER_DURABILITY_LOST_SECS} (below the unit's 30 s watchdog)"
            ),
        ));
    }
    if !CACHE_MIB_RANGE.contains(&cfg.store.cache_mib) {
        problems.push(problem(
            "store.cache_mib",
            format!(
                "must be from {} to {} (MiB of the store's page cache)",
                CACHE_MIB_RANGE.start(),
                CACHE_MIB_RANGE.end()
            ),
        ));
    }
    if !ARCHIVE_AFTER_KEYS_RANGE.contains(&cfg.store.archive_after_keys) {
        problems.push(problem(
            "store.archive_after_keys",
            format!(
                "must be from {} to {} (keys written to sled between two moves to the archive)",
                ARCHIVE_AFTER_KEYS_RANGE.start(),
                ARCHIVE_AFTER_KEYS_RANGE.end()
            ),
        ));
    }
    if cfg.store.path.as_os_str().is_empty() {
        problems.push(problem("store.path", "must name a directory"));
    } else if cfg.store.path.exists() && !cfg.store.path.is_dir() {
        problems.push(problem("store.path", "exists but is not a directory"));
    }
    let keys = &cfg.signing.keys_dir;
    if keys.as_os_str().is_empty() {
        problems.push(problem("signing.keys_dir", "must name a directory"));
    } else if keys.exists() && !keys.is_dir() {
        problems.push(problem("signing.keys_dir", "exists but is not a directory"));
    } else {
        // A private key others may read is refused here, so neither `check-config` nor `run`
        // passes with one.
        let store = crate::trust::signing::KeyStore::new(keys);
        for e in store
            .check_dir_permissions()
            .into_iter()
            .chain(store.check_permissions())
        {
            problems.push(problem("signing.keys_dir", e.to_string()));
        }
    }
    if let Err(e) = check_log_filter(&cfg.log.level) {
        problems.push(problem("log.level", e));
    }
    if !(-720..=840).contains(&cfg.calendar.utc_offset_minutes) {
        problems.push(problem(
            "calendar.utc_offset_minutes",
            "must be between -720 and 840 (minutes from UTC)",
        ));
    }
    if cfg.lifecycle.sweep_interval_secs == 0 {
        problems.push(problem(
            "lifecycle.sweep_interval_secs",
            "must be at least 1",
        ));
    }
    if cfg.lifecycle.discard_after_report_days > 36_500 {
        problems.push(problem(
            "lifecycle.discard_after_report_days",
            "must be at most 36500",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, d) in cfg.calendar.closures.iter().enumerate() {
        if !seen.insert(*d) {
            problems.push(problem(
                format!("calendar.closures[{i}]"),
                format!("{d} appears twice"),
            ));
        }
    }
}

/// A `log.level` is a tracing filter (`info`, `warn,custodian=debug`, `custodian::admin=trace`)
/// that names a level in every directive. tracing's parser takes a bare word that is not a level
/// (`verbose`, `inf`) as a target to log at `trace` — for a typo that means no log at all — so
/// such a word is refused here: a target is written `target=level`.
pub fn check_log_filter(level: &str) -> Result<(), String> {
    use std::str::FromStr;
    const LEVELS: &str = "trace, debug, info, warn, error or off";
    if level.trim().is_empty() {
        return Err(format!("must name a level ({LEVELS})"));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(level) {
        return Err(format!("not a log filter: {e}"));
    }
    let is_level = |w: &str| {
        !w.is_empty() && tracing_subscriber::filter::LevelFilter::from_str(w.trim()).is_ok()
    };
    for d in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        // The level is what follows the last `=` outside a span's `[...]`.
        let outside = d.rfind(']').map(|i| i + 1).unwrap_or(0);
        match d[outside..].rfind('=') {
            Some(eq) => {
                let l = &d[outside + eq + 1..];
                if !is_level(l) {
                    return Err(format!("`{d}`: `{l}` is not a level ({LEVELS})"));
                }
            }
            None if is_level(d) => {}
            None => {
                return Err(format!(
                    "`{d}` is not a level ({LEVELS}); to name a target write `{d}=LEVEL`"
                ));
            }
        }
    }
    Ok(())
}

fn validate_mros(cfg: &Config, problems: &mut Vec<Problem>) {
    let mut ids = std::collections::BTreeSet::new();
    for (i, m) in cfg.mros.iter().enumerate() {
        let at = format!("mro[{i}]");
        if m.id.trim().is_empty() {
            problems.push(problem(format!("{at}.id"), "must not be empty"));
        }
        if !ids.insert(m.id.clone()) {
            problems.push(problem(
                format!("{at}.id"),
                format!("MRO `{}` appears twice", m.id),
            ));
        }
        for (key, text) in [("id", &m.id), ("name", &m.name), ("endpoint", &m.endpoint)] {
            if let Some(word) = forbidden_destination(text) {
                problems.push(problem(
                    format!("{at}.{key}"),
                    format!(
                        "names a `{word}`: laboratory results go directly and only to the MRO, never to or through the employer, its DER or a C/TPA (40.97(b))"
                    ),
                ));
            }
        }
        if let Err(e) = crate::transmit::client::parse_endpoint(&m.endpoint) {
            problems.push(problem(format!("{at}.endpoint"), e));
        }
        for (key, path) in [("ca", &m.ca), ("client_cert", &m.client_cert)] {
            if let Err(e) = crate::trust::tls::load_certs(path) {
                problems.push(problem(format!("{at}.{key}"), e.to_string()));
            }
        }
        if let Err(e) = crate::trust::tls::load_key(&m.client_key) {
            problems.push(problem(format!("{at}.client_key"), e.to_string()));
        }
        if let Some(doc) = &m.quantitation_request {
            let t = doc.trim();
            if t.is_empty() || t.chars().count() > 200 || t.chars().any(char::is_control) {
                problems.push(problem(
                    format!("{at}.quantitation_request"),
                    "must be the reference of the MRO's written request: 1-200 characters, no control characters",
                ));
            }
        }
    }
    if cfg.transmit.timeout_secs == 0 {
        problems.push(problem("transmit.timeout_secs", "must be at least 1"));
    }
    if cfg.transmit.backoff_initial_ms == 0 {
        problems.push(problem("transmit.backoff_initial_ms", "must be at least 1"));
    }
    if cfg.transmit.backoff_max_secs == 0 {
        problems.push(problem("transmit.backoff_max_secs", "must be at least 1"));
    }
}

fn validate_summaries(s: &Summaries, problems: &mut Vec<Problem>) {
    match (&s.dir, s.since) {
        (Some(_), None) => problems.push(problem(
            "summaries.since",
            "needed with summaries.dir: the first day of the first period to produce (e.g. \"2026-07-01\")",
        )),
        (None, Some(_)) => problems.push(problem(
            "summaries.dir",
            "needed with summaries.since: the directory the summaries are written to",
        )),
        _ => {}
    }
    if let Some(dir) = &s.dir {
        if dir.as_os_str().is_empty() {
            problems.push(problem("summaries.dir", "must name a directory"));
        } else if dir.exists() && !dir.is_dir() {
            problems.push(problem("summaries.dir", "exists but is not a directory"));
        }
    }
    if let Some(since) = s.since
        && crate::domain::summary::Period::starting_on(since.days_since_epoch()).is_none()
    {
        problems.push(problem(
            "summaries.since",
            format!("{since} is not the first day of a period (January 1 or July 1, 40.111(a))"),
        ));
    }
    if s.sweep_interval_secs == 0 {
        problems.push(problem(
            "summaries.sweep_interval_secs",
            "must be at least 1",
        ));
    }
    let mut owner: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for (i, c) in s.ctpa.iter().enumerate() {
        let at = format!("summaries.ctpa[{i}]");
        for (key, text, max) in [("name", &c.name, 100), ("address", &c.address, 300)] {
            if text.trim().is_empty() {
                problems.push(problem(format!("{at}.{key}"), "must not be empty"));
            } else if text.chars().count() > max
                || text.chars().any(|ch| ch.is_control() && ch != '\n')
            {
                problems.push(problem(
                    format!("{at}.{key}"),
                    format!("at most {max} characters, no control characters"),
                ));
            }
        }
        if c.employers.is_empty() {
            problems.push(problem(
                format!("{at}.employers"),
                "must list the employer IDs (as on the CCF) this C/TPA administers",
            ));
        }
        for e in &c.employers {
            let ok = e
                .chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_alphanumeric())
                && e.len() <= 64
                && e.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '/' | '-'));
            if !ok {
                problems.push(problem(
                    format!("{at}.employers"),
                    format!(
                        "`{e}` is not an employer ID (1-64 letters, digits, `.`, `_`, `/`, `-`)"
                    ),
                ));
            } else if let Some(first) = owner.insert(e, i)
                && first != i
            {
                problems.push(problem(
                    format!("{at}.employers"),
                    format!("employer `{e}` is also under summaries.ctpa[{first}]: one C/TPA per employer"),
                ));
            }
        }
    }
}

fn validate_split_laboratory(
    s: &SplitLaboratory,
    profiles: &ProfileSet,
    problems: &mut Vec<Problem>,
) {
    if s.enabled && s.lod.is_empty() {
        problems.push(problem(
            "split_laboratory.lod",
            "a split laboratory needs a limit of detection for each analyte it reconfirms",
        ));
    }
    for (analyte, lod) in &s.lod {
        let key = format!("split_laboratory.lod.{analyte}");
        if *lod <= rust_decimal::Decimal::ZERO {
            problems.push(problem(&key, "must be greater than 0"));
        }
        if !profiles.is_empty()
            && !profiles
                .names()
                .filter_map(|n| profiles.get(n))
                .any(|p| p.analyte(analyte).is_some())
        {
            problems.push(problem(
                &key,
                "is not an analyte of any loaded rule profile",
            ));
        }
    }
}

fn validate_analyzers(cfg: &Config, profiles: &ProfileSet, problems: &mut Vec<Problem>) {
    let i = &cfg.ingest;
    if i.max_frame_bytes < 1024 {
        problems.push(problem("ingest.max_frame_bytes", "must be at least 1024"));
    }
    if i.read_timeout_secs == 0 {
        problems.push(problem("ingest.read_timeout_secs", "must be at least 1"));
    }
    if i.handshake_timeout_secs == 0 {
        problems.push(problem(
            "ingest.handshake_timeout_secs",
            "must be at least 1",
        ));
    }
    if i.max_connections == 0 {
        problems.push(problem("ingest.max_connections", "must be at least 1"));
    }
    if i.commit_max_batch == 0 {
        problems.push(problem("ingest.commit_max_batch", "must be at least 1"));
    }
    if i.worker_threads > MAX_WORKER_THREADS {
        problems.push(problem(
            "ingest.worker_threads",
            format!("must be from 0 (the CPUs less one) to {MAX_WORKER_THREADS}"),
        ));
    }
    if cfg.lims.poll_interval_ms == 0 {
        problems.push(problem("lims.poll_interval_ms", "must be at least 1"));
    }
    if cfg.lims.max_document_bytes < 1024 {
        problems.push(problem("lims.max_document_bytes", "must be at least 1024"));
    }
    for (i, q) in cfg.lims.qc.iter().enumerate() {
        for (k, p) in q.problems() {
            problems.push(problem(format!("lims.qc[{i}].{k}"), p));
        }
        if !profiles.is_empty() && !profiles.iter().any(|p| p.analyte(&q.code).is_some()) {
            problems.push(problem(
                format!("lims.qc[{i}].code"),
                format!(
                    "`{}` is not an analyte of any loaded edition (a batch's QC names its analytes)",
                    q.code
                ),
            ));
        }
        if let Some(j) = cfg.lims.qc[..i]
            .iter()
            .position(|o| o.code == q.code && o.sample == q.sample)
        {
            problems.push(problem(
                format!("lims.qc[{i}]"),
                format!("the same code and sample as lims.qc[{j}]"),
            ));
        }
    }
    let a = &cfg.admin;
    if a.max_connections == 0 {
        problems.push(problem("admin.max_connections", "must be at least 1"));
    } else if a.max_connections > 10_000 {
        problems.push(problem("admin.max_connections", "must be at most 10000"));
    }
    if a.header_timeout_secs == 0 {
        problems.push(problem("admin.header_timeout_secs", "must be at least 1"));
    }
    if a.idle_timeout_secs == 0 {
        problems.push(problem("admin.idle_timeout_secs", "must be at least 1"));
    }
    if a.session_idle_timeout_secs == 0 {
        problems.push(problem(
            "admin.session_idle_timeout_secs",
            "must be at least 1",
        ));
    }
    if a.lockout_failures == 0 {
        problems.push(problem("admin.lockout_failures", "must be at least 1"));
    }
    if a.lockout_secs == 0 || a.lockout_secs > 3600 {
        problems.push(problem("admin.lockout_secs", "must be from 1 to 3600"));
    }
    match &a.tls {
        Some(t) => {
            for p in crate::trust::tls::check(&t.server()) {
                problems.push(problem("admin.tls", p));
            }
        }
        None if !a.listen.ip().is_loopback() => problems.push(problem(
            "admin.tls",
            format!(
                "required: admin.listen ({}) is not a loopback address, and the console and the \
                 API carry passwords, tokens and donor data; set [admin.tls] cert and key (the \
                 laboratory's certificate), or listen on 127.0.0.1",
                a.listen
            ),
        )),
        None => {}
    }
    if let Err(errs) = crate::admin::auth::Users::from_config(&cfg.admin.users) {
        for (k, p) in errs {
            problems.push(problem(k, p));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    let mut addrs = std::collections::BTreeSet::new();
    for (n, a) in cfg.analyzers.iter().enumerate() {
        let at = format!("analyzer[{n}]");
        let ok_name = !a.name.is_empty()
            && a.name.len() <= 32
            && a.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok_name {
            problems.push(problem(
                format!("{at}.name"),
                "1-32 letters, digits, `-` or `_`",
            ));
        }
        if !names.insert(a.name.clone()) {
            problems.push(problem(
                format!("{at}.name"),
                format!("analyzer `{}` appears twice", a.name),
            ));
        }
        if a.listen.port() != 0 && !addrs.insert(a.listen) {
            problems.push(problem(
                format!("{at}.listen"),
                "another analyzer listens there",
            ));
        }
        if let Some(t) = &a.tls {
            for p in crate::trust::tls::check(t) {
                problems.push(problem(format!("{at}.tls"), p));
            }
            if t.client_name.is_some() && t.client_ca.is_none() {
                problems.push(problem(
                    format!("{at}.tls.client_name"),
                    "needs tls.client_ca: a name is checked on a verified client certificate",
                ));
            }
            if let Some(n) = &t.client_name
                && rustls::pki_types::ServerName::try_from(n.as_str()).is_err()
            {
                problems.push(problem(
                    format!("{at}.tls.client_name"),
                    "must be a DNS name or an IP address (matched against the certificate's SAN)",
                ));
            }
        } else if !a.listen.ip().is_loopback() && !a.allow_plaintext {
            problems.push(problem(
                format!("{at}.allow_plaintext"),
                format!(
                    "plain MLLP on {} (not loopback) sends donor data in clear: configure \
                     [analyzer.tls], or set allow_plaintext = true for a trusted segment",
                    a.listen
                ),
            ));
        }
        // One mapping serves every edition: each initial or confirmation target must mean a
        // class (directly or through its `measured_as`) or an analyte in at least one loaded
        // edition. At ingest the panel guard checks each result against its own specimen's
        // edition, so a target an edition lacks is refused for that edition's specimens only.
        for (k, p) in a.mapping.validate_shape() {
            problems.push(problem(format!("{at}.mapping.{k}"), p));
        }
        // Only results of an accepted run count: every analyzer says how its runs are
        // delimited, how its QC samples are recognised and what QC its assays need.
        if a.mapping.runs.is_none() {
            problems.push(problem(
                format!("{at}.mapping.runs"),
                format!(
                    "analyzer `{}`: required: the run kind, how runs are delimited (run_id, or bracketing by QC sets), how controls and calibrators are recognised (role or qc_sample_prefixes) and the QC rules of its assays ([[analyzer.mapping.runs.qc]])",
                    a.name
                ),
            ));
        }
        if !profiles.is_empty() {
            let editions: Vec<&str> = profiles.names().collect();
            for (i, t) in a.mapping.tests.iter().enumerate() {
                let known = profiles
                    .iter()
                    .any(|p| crate::codec::hl7::Mapping::target_known(t.kind, &t.target, p));
                if !known {
                    problems.push(problem(
                        format!("{at}.mapping.test[{i}].target"),
                        format!(
                            "analyzer `{}` code `{}`: {} target `{}` is known to no loaded edition (checked {})",
                            a.name,
                            t.code,
                            t.kind.key(),
                            t.target,
                            editions.join(", ")
                        ),
                    ));
                }
            }
        }
    }
}

fn validate_astm_analyzers(cfg: &Config, profiles: &ProfileSet, problems: &mut Vec<Problem>) {
    let mut names: std::collections::BTreeSet<String> =
        cfg.analyzers.iter().map(|a| a.name.clone()).collect();
    let mut addrs: std::collections::BTreeSet<std::net::SocketAddr> = cfg
        .analyzers
        .iter()
        .map(|a| a.listen)
        .filter(|a| a.port() != 0)
        .collect();
    for (n, a) in cfg.astm_analyzers.iter().enumerate() {
        let at = format!("astm_analyzer[{n}]");
        let ok_name = !a.name.is_empty()
            && a.name.len() <= 32
            && a.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok_name {
            problems.push(problem(
                format!("{at}.name"),
                "1-32 letters, digits, `-` or `_`",
            ));
        }
        if !names.insert(a.name.clone()) {
            problems.push(problem(
                format!("{at}.name"),
                format!(
                    "analyzer `{}` appears twice (names are unique across [[analyzer]] and [[astm_analyzer]])",
                    a.name
                ),
            ));
        }
        let addr = match (a.listen, a.connect) {
            (Some(l), None) => {
                if l.port() != 0 && !addrs.insert(l) {
                    problems.push(problem(
                        format!("{at}.listen"),
                        "another analyzer listens there",
                    ));
                }
                Some(("listen", l))
            }
            (None, Some(c)) => {
                if c.port() == 0 {
                    problems.push(problem(
                        format!("{at}.connect"),
                        "needs the analyzer's port (not 0)",
                    ));
                }
                if a.reconnect_secs == 0 {
                    problems.push(problem(
                        format!("{at}.reconnect_secs"),
                        "must be at least 1",
                    ));
                }
                Some(("connect", c))
            }
            _ => {
                problems.push(problem(
                    at.clone(),
                    "set exactly one of listen (the analyzer connects: TCP server) and connect (custodian connects: TCP client)",
                ));
                None
            }
        };
        if let Some((key, addr)) = addr
            && !addr.ip().is_loopback()
            && !a.allow_plaintext
        {
            problems.push(problem(
                format!("{at}.allow_plaintext"),
                format!(
                    "ASTM over TCP has no TLS: {key} = {addr} (not loopback) sends donor data in \
                     clear; set allow_plaintext = true for an isolated instrument segment"
                ),
            ));
        }
        for (k, p) in a.mapping.validate_shape() {
            problems.push(problem(format!("{at}.mapping.{k}"), p));
        }
        // As for HL7: only results of an accepted run count.
        if a.mapping.runs.is_none() {
            problems.push(problem(
                format!("{at}.mapping.runs"),
                format!(
                    "analyzer `{}`: required: the run kind, how runs are delimited (run_id, or bracketing by QC sets), how controls and calibrators are recognised (role, e.g. O-12 \"Q\", or qc_sample_prefixes) and the QC rules of its assays ([[astm_analyzer.mapping.runs.qc]])",
                    a.name
                ),
            ));
        }
        if !profiles.is_empty() {
            let editions: Vec<&str> = profiles.names().collect();
            for (i, t) in a.mapping.tests.iter().enumerate() {
                let known = profiles
                    .iter()
                    .any(|p| crate::codec::hl7::Mapping::target_known(t.kind, &t.target, p));
                if !known {
                    problems.push(problem(
                        format!("{at}.mapping.test[{i}].target"),
                        format!(
                            "analyzer `{}` code `{}`: {} target `{}` is known to no loaded edition (checked {})",
                            a.name,
                            t.code,
                            t.kind.key(),
                            t.target,
                            editions.join(", ")
                        ),
                    ));
                }
            }
        }
    }
}

/// Loads every `*.toml` in `dir` as a rule profile named after its file.
pub fn load_profiles(dir: &Path, problems: &mut Vec<Problem>) -> ProfileSet {
    let mut set = ProfileSet::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(problem(
                "rules.profiles_dir",
                format!("cannot read {}: {e}", dir.display()),
            ));
            return set;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for file in files {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(problem(
                    format!("profile {stem}"),
                    format!("cannot read: {e}"),
                ));
                continue;
            }
        };
        match Profile::parse(&text, Some(&stem)) {
            Ok(p) => {
                set.insert(p);
            }
            Err(e) => {
                for p in e.problems {
                    problems.push(problem(format!("profile {stem}: {}", p.key), p.problem));
                }
            }
        }
    }
    // Two editions that could both claim a specimen make the choice ambiguous: refused,
    // naming both files.
    for c in crate::domain::rules::edition::conflicts(&set) {
        problems.push(problem(
            format!("profile {}: period", c.profiles.0),
            format!(
                "{}.toml and {}.toml: {}",
                c.profiles.0, c.profiles.1, c.problem
            ),
        ));
    }
    if set.is_empty() && problems.is_empty() {
        problems.push(problem(
            "rules.profiles_dir",
            format!("{} holds no *.toml rule profile", dir.display()),
        ));
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(dir: &Path, body: &str) -> PathBuf {
        let profiles = dir.join("profiles");
        std::fs::create_dir_all(&profiles).unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles");
        for f in ["part40-2001.toml", "part40-2023.toml"] {
            std::fs::copy(root.join(f), profiles.join(f)).unwrap();
        }
        let p = dir.join("custodian.toml");
        std::fs::write(&p, body).unwrap();
        p
    }

    const GOOD: &str = r#"
[laboratory]
name = "Lab"
address = "1 Main St"
[rules]
default_profile = "part40-2001"
profiles_dir = "profiles"
[store]
path = "store"
[log]
level = "info"
format = "text"
[lims]
spool_dir = "spool"
[admin]
listen = "127.0.0.1:0"
[signing]
keys_dir = "keys"
"#;

    #[test]
    fn example_config_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/custodian.toml");
        let (cfg, profiles) = load_with_env(&p, &[]).unwrap();
        assert_eq!(cfg.rules.default_profile, "part40-2001");
        assert!(profiles.get("part40-2001").is_some());
        assert!(profiles.get("part40-2023").is_some());
        // The example says what the embedded default is.
        assert_eq!(cfg.ingest.commit_max_batch, 16);
        assert_eq!(Ingest::default().commit_max_batch, 16);
        assert_eq!(
            cfg.ingest.commit_max_wait_us,
            Ingest::default().commit_max_wait_us
        );
    }

    /// One mapping serves every edition: `opiates` means codeine/morphine today (measured_as),
    /// `6am` exists today only; a target no loaded edition knows is refused, naming the
    /// analyzer, the code and the editions checked.
    #[test]
    fn mapping_targets_are_checked_against_every_edition() {
        let d = tempfile::tempdir().unwrap();
        let test = |code: &str, kind: &str, target: &str| {
            format!(
                "[[analyzer.mapping.test]]\ncode = \"{code}\"\nkind = \"{kind}\"\ntarget = \"{target}\"\nunit = \"ng/mL\"\n"
            )
        };
        let analyzer = |tests: &str| {
            let mut codes = vec!["OPI2000", "6AM10", "OXYC"];
            if tests.contains("FEN1") {
                codes.push("FEN1");
            }
            format!(
                "{GOOD}\n[[analyzer]]\nname = \"ia-1\"\nlisten = \"127.0.0.1:0\"\n[analyzer.mapping]\nspecimen_id = \"OBR-3.1\"\nprocessing_id = \"P\"\n{}{tests}",
                runs_for(&codes)
            )
        };
        let ok = format!(
            "{}{}{}",
            test("OPI2000", "initial", "opiates"),
            test("6AM10", "initial", "6am"),
            test("OXYC", "confirmation", "oxycodone")
        );
        let p = write_config(d.path(), &analyzer(&ok));
        load_with_env(&p, &[]).unwrap();

        let bad = format!("{ok}{}", test("FEN1", "initial", "fentanyl_class"));
        let p = write_config(d.path(), &analyzer(&bad));
        let e = load_with_env(&p, &[]).unwrap_err();
        let found = e
            .problems
            .iter()
            .find(|p| p.key == "analyzer[0].mapping.test[3].target")
            .unwrap_or_else(|| panic!("{e}"));
        assert_eq!(
            found.problem,
            "analyzer `ia-1` code `FEN1`: initial target `fentanyl_class` is known to no loaded edition (checked part40-2001, part40-2023)"
        );
        assert_eq!(e.problems.len(), 1, "{e}");
    }

    /// A runs section for an analyzer whose test codes are `codes`: QC samples by prefix, one
    /// negative-control rule per code.
    fn runs_for(codes: &[&str]) -> String {
        let rules: Vec<String> = codes
            .iter()
            .map(|c| {
                format!(
                    "{{ code = \"{c}\", sample = \"QC-NEG\", level = \"negative\", expect = \"below\", value = 1 }}"
                )
            })
            .collect();
        format!(
            "[analyzer.mapping.runs]\nkind = \"initial\"\nqc_sample_prefixes = [\"QC-\"]\nacceptable = {{ field = \"OBX-13.1\", acceptable = [\"Y\"] }}\nqc = [{}]\n",
            rules.join(", ")
        )
    }

    /// Every analyzer says how its runs are delimited and what QC its assays need; the runs
    /// section's problems are named by key.
    #[test]
    fn runs_and_qc_rules_are_required_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let mapping = "[analyzer.mapping]\nspecimen_id = \"OBR-3.1\"\n[[analyzer.mapping.test]]\ncode = \"COC300\"\nkind = \"initial\"\ntarget = \"cocaine\"\nunit = \"ng/mL\"\n[[analyzer.mapping.test]]\ncode = \"BZEC\"\nkind = \"confirmation\"\ntarget = \"benzoylecgonine\"\nunit = \"ng/mL\"\n";
        let with = |runs: &str| {
            format!(
                "{GOOD}\n[[analyzer]]\nname = \"ia-1\"\nlisten = \"127.0.0.1:0\"\n{mapping}{runs}"
            )
        };
        let keys = |text: &str| -> Vec<String> {
            let p = write_config(d.path(), text);
            match load_with_env(&p, &[]) {
                Ok(_) => Vec::new(),
                Err(e) => e.problems.into_iter().map(|p| p.key).collect(),
            }
        };
        assert_eq!(keys(&with("")), ["analyzer[0].mapping.runs"]);
        let bad = "[analyzer.mapping.runs]\nkind = \"confirmation\"\nauto_accept = true\nrun_id = \"OBR-21.1\"\nqc = [ { code = \"COC300\", sample = \"QC-NEG\", level = \"negative\", expect = \"within\", value = 300 }, { code = \"XYZ\", sample = \"QC-NEG\", level = \"negative\", expect = \"below\", value = 1 } ]\n";
        assert_eq!(
            keys(&with(bad)),
            [
                "analyzer[0].mapping.runs.role",
                "analyzer[0].mapping.runs.acceptable",
                "analyzer[0].mapping.runs.auto_accept",
                "analyzer[0].mapping.runs.qc[0].tolerance_percent",
                "analyzer[0].mapping.runs.qc[1].code",
                "analyzer[0].mapping.runs.qc",
            ]
        );
        let good = "[analyzer.mapping.runs]\nkind = \"confirmation\"\nrun_id = \"OBR-21.1\"\nrole = { field = \"SPM-11.1\", control = [\"Q\"], calibrator = [\"C\"] }\nacceptable = { field = \"OBX-13.1\", acceptable = [\"Y\"] }\nqc = [ { code = \"COC300\", sample = \"QC-NEG\", level = \"negative\", expect = \"below\", value = 300 }, { code = \"BZEC\", sample = \"CAL\", level = \"cutoff\", role = \"calibrator\", expect = \"within\", value = 100, tolerance_percent = 20 } ]\n";
        assert_eq!(keys(&with(good)), Vec::<String>::new());
    }

    #[test]
    fn certified_specimen_types_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = write_config(d.path(), GOOD);
        let (cfg, _) = load_with_env(&p, &[]).unwrap();
        assert_eq!(
            cfg.laboratory.certified_specimen_types,
            [crate::domain::rules::SpecimenType::Urine]
        );
        for (list, expect) in [
            ("[]", true),
            ("[\"urine\", \"urine\"]", true),
            ("[\"blood\"]", true),
            ("[\"urine\", \"oral_fluid\"]", false),
        ] {
            let body = GOOD.replace(
                "address = \"1 Main St\"",
                &format!("address = \"1 Main St\"\ncertified_specimen_types = {list}"),
            );
            let p = write_config(d.path(), &body);
            let r = load_with_env(&p, &[]);
            assert_eq!(r.is_err(), expect, "{list}: {r:?}");
            if let Err(e) = r {
                assert!(
                    e.problems
                        .iter()
                        .any(|p| p.key.starts_with("laboratory.certified_specimen_types")),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn the_summaries_section_is_checked_naming_each_key() {
        let d = tempfile::tempdir().unwrap();
        let p = write_config(d.path(), GOOD);
        let (cfg, _) = load_with_env(&p, &[]).unwrap();
        assert_eq!(cfg.summaries, Summaries::default());
        let good = format!(
            "{GOOD}\n[summaries]\ndir = \"out\"\nsince = \"2026-07-01\"\n[[summaries.ctpa]]\nname = \"Example C/TPA\"\naddress = \"1 Consortium Road\"\nemployers = [\"EMP-1\", \"EMP/2\"]\n"
        );
        let p = write_config(d.path(), &good);
        let (cfg, _) = load_with_env(&p, &[]).unwrap();
        assert_eq!(cfg.summaries.dir, Some(d.path().join("out")));
        assert_eq!(cfg.summaries.sweep_interval_secs, 3600);
        assert_eq!(cfg.summaries.ctpa[0].employers, ["EMP-1", "EMP/2"]);
        let keys_of = |body: &str| -> Vec<String> {
            let p = write_config(d.path(), body);
            let e = load_with_env(&p, &[]).unwrap_err();
            e.problems.iter().map(|p| p.key.clone()).collect()
        };
        assert_eq!(
            keys_of(&format!("{GOOD}\n[summaries]\ndir = \"out\"\n")),
            ["summaries.since"]
        );
        assert_eq!(
            keys_of(&format!("{GOOD}\n[summaries]\nsince = \"2026-07-01\"\n")),
            ["summaries.dir"]
        );
        assert_eq!(
            keys_of(&format!(
                "{GOOD}\n[summaries]\ndir = \"out\"\nsince = \"2026-07-02\"\nsweep_interval_secs = 0\n"
            )),
            ["summaries.since", "summaries.sweep_interval_secs"]
        );
        let twice = good.replace(
            "employers = [\"EMP-1\", \"EMP/2\"]",
            "employers = [\"EMP-1\", \"-bad\"]\n[[summaries.ctpa]]\nname = \"\"\naddress = \"2 Road\"\nemployers = [\"EMP-1\"]",
        );
        assert_eq!(
            keys_of(&twice),
            [
                "summaries.ctpa[0].employers",
                "summaries.ctpa[1].name",
                "summaries.ctpa[1].employers"
            ]
        );
        std::fs::write(d.path().join("afile"), "x").unwrap();
        assert_eq!(
            keys_of(&good.replace("dir = \"out\"", "dir = \"afile\"")),
            ["summaries.dir"]
        );
    }

    #[test]
    fn split_laboratory_lods_are_checked_against_the_profiles() {
        let d = tempfile::tempdir().unwrap();
        let p = write_config(d.path(), GOOD);
        let (cfg, _) = load_with_env(&p, &[]).unwrap();
        assert_eq!(cfg.split_laboratory, SplitLaboratory::default());
        assert!(!cfg.split_laboratory.enabled);
        let body = format!(
            "{GOOD}\n[split_laboratory]\nenabled = true\nlod = {{ thca = 2, benzoylecgonine = 5 }}\n"
        );
        let p = write_config(d.path(), &body);
        let (cfg, _) = load_with_env(&p, &[]).unwrap();
        assert!(cfg.split_laboratory.enabled);
        assert_eq!(
            cfg.split_laboratory.lod.get("benzoylecgonine"),
            Some(&rust_decimal::Decimal::from(5))
        );
        let body = format!(
            "{GOOD}\n[split_laboratory]\nenabled = true\nlod = {{ thca = 0, unobtainium = 5 }}\n"
        );
        let p = write_config(d.path(), &body);
        let e = load_with_env(&p, &[]).unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"split_laboratory.lod.thca"), "{e}");
        assert!(keys.contains(&"split_laboratory.lod.unobtainium"), "{e}");
        let body = format!("{GOOD}\n[split_laboratory]\nenabled = true\n");
        let p = write_config(d.path(), &body);
        let e = load_with_env(&p, &[]).unwrap_err();
        assert_eq!(e.problems[0].key, "split_laboratory.lod", "{e}");
    }

    #[test]
    fn good_config_resolves_paths() {
        let d = tempfile::tempdir().unwrap();
        let p = write_config(d.path(), GOOD);
        let (cfg, _) = load_with_env(&p, &[]).unwrap();
        assert_eq!(cfg.store.path, d.path().join("store"));
    }

    #[test]
    fn every_unknown_key_is_named() {
        let d = tempfile::tempdir().unwrap();
        let body = GOOD
            .replace("[store]", "colour = 1\n[store]\nsize = 3")
            .replace("[log]", "[logs]\nx=1\n[log]");
        let p = write_config(d.path(), &body);
        let e = load_with_env(&p, &[]).unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"rules.colour"), "{keys:?}");
        assert!(keys.contains(&"store.size"), "{keys:?}");
        assert!(keys.contains(&"logs"), "{keys:?}");
    }

    #[test]
    fn environment_overrides_and_strays_are_named() {
        let d = tempfile::tempdir().unwrap();
        let p = write_config(d.path(), GOOD);
        let env = vec![(
            "CUSTODIAN__RULES__DEFAULT_PROFILE".to_string(),
            "part40-2023".to_string(),
        )];
        let (cfg, _) = load_with_env(&p, &env).unwrap();
        assert_eq!(cfg.rules.default_profile, "part40-2023");

        let env = vec![("CUSTODIAN__STORE__PATHS".to_string(), "x".to_string())];
        let e = load_with_env(&p, &env).unwrap_err();
        assert_eq!(e.problems[0].key, "store.paths");
        assert!(
            e.problems[0].problem.contains("CUSTODIAN__STORE__PATHS"),
            "{e}"
        );
    }

    #[test]
    fn exit_after_durability_lost_has_a_default_and_a_bound() {
        let d = tempfile::tempdir().unwrap();
        let p = write_config(d.path(), GOOD);
        let (cfg, _) = load(&p).unwrap();
        assert_eq!(cfg.store.exit_after_durability_lost_secs, 10);
        let body = GOOD.replace(
            "[store]\npath = \"store\"\n",
            "[store]\npath = \"store\"\nexit_after_durability_lost_secs = 26\n",
        );
        assert_ne!(body, GOOD);
        let p = write_config(d.path(), &body);
        let e = load(&p).unwrap_err();
        assert!(
            e.problems
                .iter()
                .any(|p| p.key == "store.exit_after_durability_lost_secs"),
            "{e}"
        );
    }

    #[test]
    fn the_store_cache_has_a_modest_default_and_bounds() {
        let d = tempfile::tempdir().unwrap();
        let p = write_config(d.path(), GOOD);
        let (cfg, _) = load(&p).unwrap();
        assert_eq!(cfg.store.cache_mib, 32);
        assert_eq!(cfg.store.options().cache_bytes, 32 << 20);
        for (good, bytes) in [("8", 8u64 << 20), ("65536", 65536u64 << 20)] {
            let body = GOOD.replace(
                "[store]\npath = \"store\"\n",
                &format!("[store]\npath = \"store\"\ncache_mib = {good}\n"),
            );
            let (cfg, _) = load(&write_config(d.path(), &body)).unwrap();
            assert_eq!(cfg.store.options().cache_bytes, bytes);
        }
        assert_eq!(cfg.store.options().archive_after_keys, 10_000);
        for bad in ["0", "7", "65537"] {
            let body = GOOD.replace(
                "[store]\npath = \"store\"\n",
                &format!("[store]\npath = \"store\"\ncache_mib = {bad}\n"),
            );
            assert_ne!(body, GOOD);
            let p = write_config(d.path(), &body);
            let e = load(&p).unwrap_err();
            assert!(
                e.problems.iter().any(|p| p.key == "store.cache_mib"),
                "{bad}: {e}"
            );
        }
    }

    /// The connection threads: the CPUs less one by default (the store's writer has its own
    /// thread), at least one; a number as set; more than the bound is refused by name.
    #[test]
    fn worker_threads_default_to_the_cpus_less_one() {
        let d = tempfile::tempdir().unwrap();
        let (cfg, _) = load(&write_config(d.path(), GOOD)).unwrap();
        assert_eq!(cfg.ingest.worker_threads, 0);
        assert_eq!(
            [1, 2, 8].map(|cpus| cfg.ingest.workers(cpus)),
            [1, 1, 7],
            "the CPUs less one, at least one"
        );
        let with = |v: &str| format!("{GOOD}\n[ingest]\nworker_threads = {v}\n");
        let (cfg, _) = load(&write_config(d.path(), &with("3"))).unwrap();
        assert_eq!(cfg.ingest.workers(2), 3);
        let (cfg, _) = load(&write_config(d.path(), &with("256"))).unwrap();
        assert_eq!(
            cfg.ingest.workers(2),
            MAX_WORKER_THREADS,
            "the bound itself"
        );
        let e = load(&write_config(d.path(), &with("257"))).unwrap_err();
        assert!(
            e.problems.iter().any(|p| p.key == "ingest.worker_threads"),
            "{e}"
        );
    }

    #[test]
    fn the_archive_threshold_has_bounds() {
        let d = tempfile::tempdir().unwrap();
        let with = |v: &str| {
            GOOD.replace(
                "[store]\npath = \"store\"\n",
                &format!("[store]\npath = \"store\"\narchive_after_keys = {v}\n"),
            )
        };
        for (good, keys) in [
            ("1000", 1000u64),
            ("5000", 5000),
            ("100000000", 100_000_000),
        ] {
            let (cfg, _) = load(&write_config(d.path(), &with(good))).unwrap();
            assert_eq!(cfg.store.options().archive_after_keys, keys);
        }
        for bad in ["0", "999", "100000001"] {
            let e = load(&write_config(d.path(), &with(bad))).unwrap_err();
            assert!(
                e.problems
                    .iter()
                    .any(|p| p.key == "store.archive_after_keys"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn bad_values_are_named() {
        let d = tempfile::tempdir().unwrap();
        let body = GOOD.replace("format = \"text\"", "format = \"xml\"");
        let p = write_config(d.path(), &body);
        let e = load_with_env(&p, &[]).unwrap_err();
        assert_eq!(e.problems[0].key, "log.format", "{e}");

        let body = GOOD
            .replace(
                "default_profile = \"part40-2001\"",
                "default_profile = \"part40-1999\"",
            )
            .replace("name = \"Lab\"", "name = \"\"");
        let p = write_config(d.path(), &body);
        let e = load_with_env(&p, &[]).unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"rules.default_profile"), "{keys:?}");
        assert!(keys.contains(&"laboratory.name"), "{keys:?}");
    }

    #[test]
    fn admin_connection_limits_have_defaults_and_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = write_config(d.path(), GOOD);
        let (cfg, _) = load_with_env(&p, &[]).unwrap();
        assert_eq!(cfg.admin.max_connections, 64);
        assert_eq!(cfg.admin.header_timeout_secs, 10);
        assert_eq!(cfg.admin.idle_timeout_secs, 60);
        let body = GOOD.replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nmax_connections = 0\nheader_timeout_secs = 0\nidle_timeout_secs = 0",
        );
        let p = write_config(d.path(), &body);
        let e = load_with_env(&p, &[]).unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "admin.max_connections",
            "admin.header_timeout_secs",
            "admin.idle_timeout_secs",
        ] {
            assert!(keys.contains(&k), "{k} not named: {e}");
        }
        let body = GOOD.replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nmax_conns = 3",
        );
        let p = write_config(d.path(), &body);
        let e = load_with_env(&p, &[]).unwrap_err();
        assert_eq!(e.problems[0].key, "admin.max_conns", "{e}");
    }

    /// The console and the API carry passwords and donor data: off loopback they need TLS, and
    /// the error names the key. The session and lockout settings have defaults and are checked.
    #[test]
    fn admin_off_loopback_needs_tls_and_console_settings_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let (cfg, _) = load_with_env(&write_config(d.path(), GOOD), &[]).unwrap();
        assert_eq!(cfg.admin.session_idle_timeout_secs, 900);
        assert_eq!(cfg.admin.lockout_failures, 5);
        assert_eq!(cfg.admin.lockout_secs, 30);
        assert!(cfg.admin.tls.is_none());
        let off = GOOD.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
        let e = load_with_env(&write_config(d.path(), &off), &[]).unwrap_err();
        let p = e
            .problems
            .iter()
            .find(|p| p.key == "admin.tls")
            .expect("admin.tls named");
        assert!(p.problem.contains("not a loopback address"), "{e}");
        // With the laboratory's certificate it loads (paths relative to the configuration).
        let cert = rcgen::generate_simple_self_signed(vec!["lab.example".into()]).unwrap();
        std::fs::write(d.path().join("admin.crt"), cert.cert.pem()).unwrap();
        std::fs::write(d.path().join("admin.key"), cert.signing_key.serialize_pem()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            d.path().join("admin.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let tls = format!("{off}\n[admin.tls]\ncert = \"admin.crt\"\nkey = \"admin.key\"\n");
        let tls = tls.replace("[signing]\nkeys_dir = \"keys\"\n", "");
        let tls = format!("{tls}\n[signing]\nkeys_dir = \"keys\"\n");
        let (cfg, _) = load_with_env(&write_config(d.path(), &tls), &[]).unwrap();
        assert_eq!(cfg.admin.tls.unwrap().cert, d.path().join("admin.crt"));
        let bad = GOOD.replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nsession_idle_timeout_secs = 0\nlockout_failures = 0\nlockout_secs = 0",
        );
        let e = load_with_env(&write_config(d.path(), &bad), &[]).unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "admin.session_idle_timeout_secs",
            "admin.lockout_failures",
            "admin.lockout_secs",
        ] {
            assert!(keys.contains(&k), "{k} not named: {e}");
        }
    }

    #[test]
    fn log_levels_that_tracing_would_take_as_targets_are_refused() {
        for ok in [
            "info",
            "WARN",
            "off",
            "warn,custodian=debug",
            "custodian::admin=trace,info",
            "custodian[admin]=debug",
            "3",
        ] {
            assert_eq!(check_log_filter(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "verbose",
            "inf",
            "info,custodian",
            "custodian=verbose",
            "custodian=",
        ] {
            assert!(check_log_filter(bad).is_err(), "{bad} accepted");
        }
        let d = tempfile::tempdir().unwrap();
        let body = GOOD.replace("level = \"info\"", "level = \"verbose\"");
        let p = write_config(d.path(), &body);
        let e = load_with_env(&p, &[]).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].key, "log.level", "{e}");
        assert!(e.problems[0].problem.contains("verbose"), "{e}");
    }

    #[test]
    fn missing_section_is_named() {
        let d = tempfile::tempdir().unwrap();
        let body = GOOD.replace("[store]\npath = \"store\"\n", "");
        let p = write_config(d.path(), &body);
        let e = load_with_env(&p, &[]).unwrap_err();
        assert!(e.to_string().contains("store"), "{e}");
    }

    #[test]
    fn broken_profile_is_named() {
        let d = tempfile::tempdir().unwrap();
        let p = write_config(d.path(), GOOD);
        let prof = d.path().join("profiles/part40-2023.toml");
        let text = std::fs::read_to_string(&prof).unwrap().replacen(
            "initial_cutoff = 50",
            "initial_cutoff = -50",
            1,
        );
        std::fs::write(&prof, text).unwrap();
        let e = load_with_env(&p, &[]).unwrap_err();
        assert_eq!(
            e.problems[0].key, "profile part40-2023: class[0].initial_cutoff",
            "{e}"
        );
    }

    #[test]
    fn overlapping_editions_are_refused_naming_both_files() {
        let d = tempfile::tempdir().unwrap();
        let p = write_config(d.path(), GOOD);
        let src = d.path().join("profiles/part40-2023.toml");
        // A copy of today's table that claims collections from 2010 on as well.
        let text = std::fs::read_to_string(&src)
            .unwrap()
            .replace("name = \"part40-2023\"", "name = \"part40-2010\"")
            .replacen("from = \"2018-01-01\"", "from = \"2010-10-01\"", 1);
        std::fs::write(d.path().join("profiles/part40-2010.toml"), text).unwrap();
        let e = load_with_env(&p, &[]).unwrap_err();
        let all = e.to_string();
        assert!(
            all.contains("part40-2010.toml and part40-2023.toml"),
            "{all}"
        );
        assert!(all.contains("overlap"), "{all}");
    }

    #[test]
    fn destinations_other_than_an_mro_are_named() {
        assert_eq!(forbidden_destination("Acme DER office"), Some("der"));
        assert_eq!(forbidden_destination("employer-portal"), Some("employer"));
        assert_eq!(forbidden_destination("Example C/TPA Services"), Some("tpa"));
        assert_eq!(
            forbidden_destination("https://tpa.example/reports"),
            Some("tpa")
        );
        assert_eq!(forbidden_destination("Dr. Alexander Derwent, MD"), None);
        assert_eq!(forbidden_destination("MRO-0042"), None);
    }

    #[test]
    fn signing_keys_dir_is_resolved_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = write_config(d.path(), GOOD);
        let (cfg, _) = load_with_env(&p, &[]).unwrap();
        assert_eq!(cfg.signing.keys_dir, d.path().join("keys"));

        let store = crate::trust::signing::KeyStore::new(d.path().join("keys"));
        let kid = store.generate().unwrap();
        assert!(load_with_env(&p, &[]).is_ok());
        let file = d.path().join("keys").join(format!("{kid}.pk8"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_with_env(&p, &[]).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].key, "signing.keys_dir");
        assert!(
            e.problems[0].problem.contains(&file.display().to_string()),
            "{e}"
        );

        // The directory itself: group or others may not enter or list it.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_with_env(&p, &[]).is_ok());
        let dir = d.path().join("keys");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        let e = load_with_env(&p, &[]).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].key, "signing.keys_dir");
        assert!(
            e.problems[0].problem.contains(&dir.display().to_string())
                && e.problems[0].problem.contains("directory"),
            "{e}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();

        let body = GOOD.replace("[signing]\nkeys_dir = \"keys\"\n", "");
        let p = write_config(d.path(), &body);
        let e = load_with_env(&p, &[]).unwrap_err();
        assert!(e.problems.iter().any(|p| p.key == "signing"), "{e}");
        let body = GOOD.replace("keys_dir = \"keys\"", "keys_dir = \"keys\"\nkey = \"x\"");
        let p = write_config(d.path(), &body);
        let e = load_with_env(&p, &[]).unwrap_err();
        assert!(e.problems.iter().any(|p| p.key == "signing.key"), "{e}");
    }

    #[test]
    fn calendar_section_is_optional() {
        let d = tempfile::tempdir().unwrap();
        let p = write_config(d.path(), GOOD);
        let (cfg, _) = load_with_env(&p, &[]).unwrap();
        assert!(cfg.calendar.closures.is_empty());
        assert!(
            cfg.calendar
                .business_days()
                .is_business_day("2026-12-24".parse().unwrap())
        );
    }

    #[test]
    fn calendar_closures_are_read() {
        let d = tempfile::tempdir().unwrap();
        let body = format!("{GOOD}[calendar]\nclosures = [\"2026-12-24\", \"2026-11-27\"]\n");
        let p = write_config(d.path(), &body);
        let (cfg, _) = load_with_env(&p, &[]).unwrap();
        let cal = cfg.calendar.business_days();
        assert_eq!(cal.closures().count(), 2);
        assert!(!cal.is_business_day("2026-12-24".parse().unwrap()));
        assert!(!cal.is_business_day("2026-11-27".parse().unwrap()));
        assert!(cal.is_business_day("2026-12-23".parse().unwrap()));
    }

    #[test]
    fn calendar_problems_are_named() {
        let d = tempfile::tempdir().unwrap();
        let body = format!(
            "{GOOD}[calendar]\nclosures = [\"2026-12-24\", \"2026-02-30\", \"2026-12-24\", \"soon\"]\nholidays = 1\n"
        );
        let p = write_config(d.path(), &body);
        let e = load_with_env(&p, &[]).unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"calendar.closures[1]"), "{e}");
        assert!(keys.contains(&"calendar.holidays"), "{e}");
        assert!(e.to_string().contains("`2026-02-30` is not a date"), "{e}");
        assert!(e.to_string().contains("`soon` is not a date"), "{e}");

        let body = format!(
            "{GOOD}[calendar]\nclosures = [\"2026-12-24\", \"2026-12-31\", \"2026-12-24\"]\n"
        );
        let p = write_config(d.path(), &body);
        let e = load_with_env(&p, &[]).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].key, "calendar.closures[2]", "{e}");
        assert!(e.problems[0].problem.contains("appears twice"), "{e}");
    }

    #[test]
    fn missing_file_is_named() {
        let e = load_with_env(Path::new("/nonexistent/custodian.toml"), &[]).unwrap_err();
        assert_eq!(e.problems[0].key, "(file)");
    }
}
