//! The `custodian` command.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use custodian::app::{config, daemon, evaluate::Evaluator, operator};
use custodian::domain::calendar::{self, Date};
use custodian::trust::signing;
use std::io::{self, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of the system allocator: HL7 parsing (hl7-parser allocates per field),
/// JSON and the store's B-tree allocate per message, and glibc's malloc took a quarter of the
/// daemon's CPU per durable message (perf, `cargo bench --bench store_economy`). Built with
/// `no_thp`: mimalloc would otherwise ask for transparent huge pages on its arenas
/// (`madvise(MADV_HUGEPAGE)`), and a 2 MiB page stays resident whole while most of it is free:
/// the daemon's RSS was 120 MiB with THP and 64 MiB without, at the same store and load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// custodian: keeps a drug-testing laboratory's results under 49 CFR Part 40.
///
/// It takes results from the analyzers and the LIMS, applies the Part 40 rules, stores every
/// result durably, and releases reports only to the MRO after a certifying scientist approved
/// them.
#[derive(Parser)]
#[command(name = "custodian", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the daemon (normally under systemd).
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = config::DEFAULT_PATH, env = "CUSTODIAN_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration and its rule profiles; list every problem (exit 2) or summarise (exit 0).
    CheckConfig {
        /// Configuration file.
        #[arg(long, short, default_value = config::DEFAULT_PATH, env = "CUSTODIAN_CONFIG")]
        config: PathBuf,
    },
    /// Run the rules engine over specimen cases (JSON Lines) and print one verdict per line.
    ///
    /// This is the same engine the daemon uses. Use it to validate the system before it touches
    /// donor specimens and after every rule change. Exit 0 when every line was evaluated, 2 when
    /// any line could not be read (that line gets an "error" and the others are still evaluated).
    Evaluate {
        /// Rule profile for cases that name none (default: the configured default profile).
        #[arg(long)]
        profile: Option<String>,
        /// Configuration file (for the profile directory and the default profile).
        #[arg(long, short, default_value = config::DEFAULT_PATH, env = "CUSTODIAN_CONFIG")]
        config: PathBuf,
        /// JSON Lines file of cases; `-` reads standard input.
        file: PathBuf,
    },
    /// Look at stored specimens (through the admin API while the daemon runs, else the store).
    Specimen {
        #[command(subcommand)]
        command: SpecimenCommand,
        #[command(flatten)]
        access: Access,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        #[command(flatten)]
        access: Access,
    },
    /// An employer's request for its statistical summary (40.111(b)): the summary of each
    /// specimen type, or the "not enough testing" report (exit 1 when every type has fewer than
    /// five results). Audited.
    Summary {
        /// The employer's ID as on the CCF.
        #[arg(long)]
        employer: String,
        /// A semi-annual period, e.g. 2026-H1 (January-June) or 2026-H2 (July-December).
        #[arg(long, conflicts_with_all = ["from", "to"], required_unless_present_all = ["from", "to"])]
        period: Option<String>,
        /// First day (YYYY-MM-DD, laboratory date), e.g. 2026-01-01.
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// Last day (YYYY-MM-DD, laboratory date), e.g. 2026-06-30.
        #[arg(long, requires = "from")]
        to: Option<String>,
        #[command(flatten)]
        access: Access,
    },
    /// The semi-annual 40.111 summaries the daemon produced (employers: Appendix D; DOT:
    /// Appendix E): the list, one with its content, and marking one sent.
    Summaries {
        #[command(subcommand)]
        command: SummariesCommand,
        #[command(flatten)]
        access: Access,
    },
    /// Certifying-scientist review: the queue, release, send back for retest (daemon running).
    Review {
        #[command(subcommand)]
        command: ReviewCommand,
        #[command(flatten)]
        access: Access,
    },
    /// Reports waiting for their MRO, dead letters, and retrying one after its cause is fixed.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
        #[command(flatten)]
        access: Access,
    },
    /// Signed reports: export one as the compact JWS sent to the MRO (daemon running; audited).
    Reports {
        #[command(subcommand)]
        command: ReportsCommand,
        #[command(flatten)]
        access: Access,
    },
    /// Refused inputs kept with their reason: the list (never the bytes) and one record (raw
    /// bytes, base64, for the operator role only; every read is audited). Daemon running.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
        #[command(flatten)]
        access: Access,
    },
    /// Analytical runs and their QC: the runs in a state, one run, and a certifying scientist's
    /// acceptance or rejection (an electronic signature; daemon running).
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
        #[command(flatten)]
        access: Access,
    },
    /// Watch custodian work: a simulated LIMS, analyzers and MRO around the real daemon, with
    /// five specimens from accession to the MRO's signed reports.
    Demo {
        /// The example configuration to start from.
        #[arg(long, short, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Leave two specimens in the review queue and keep the daemon running (until Ctrl-C)
        /// to review and release them in the console.
        #[arg(long)]
        keep: bool,
    },
    /// Read a token on standard input and print the SHA-256 to put in `admin.user.token_sha256`.
    HashToken,
    /// Read a console password and print its Argon2id hash for `admin.user.password_argon2`.
    ///
    /// At a terminal the password is asked twice without echo; otherwise one line of standard
    /// input is read. It is never taken from the command line (which other users can see).
    HashPassword,
    /// The keys that sign reports (Ed25519; `signing.keys_dir`, or --dir).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        /// Keys directory (default: `signing.keys_dir` of the configuration).
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
        /// Configuration file (for `signing.keys_dir`).
        #[arg(long, short, global = true, default_value = config::DEFAULT_PATH, env = "CUSTODIAN_CONFIG")]
        config: PathBuf,
    },
    /// Verify a signed report (compact JWS): print its payload and exit 0, or say why not and
    /// exit 1.
    Verify {
        /// File holding the JWS; `-` reads standard input.
        file: PathBuf,
        /// File holding the laboratory's public key: a JWK or a JWK set.
        #[arg(long)]
        key: PathBuf,
    },
    /// Written requests (retention, quantitation, split specimen), retention, what may be
    /// discarded, and discard confirmations (daemon running).
    Lifecycle {
        #[command(subcommand)]
        command: LifecycleCommand,
        #[command(flatten)]
        access: Access,
    },
    /// Business days (40.83(e)-(g)): weekends, US federal holidays and the lab's closures.
    Calendar {
        #[command(subcommand)]
        command: CalendarCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new key (PKCS#8, mode 0600), make it the active one, and print its key id.
    Generate,
    /// Print the public keys as a JWK set (every key, so old reports stay verifiable).
    ExportPublic {
        /// Print only the active key, as a single JWK.
        #[arg(long)]
        active: bool,
    },
}

#[derive(Subcommand)]
enum CalendarCommand {
    /// Print the Nth business day after a date (the date itself is not counted) as YYYY-MM-DD.
    ///
    /// Business days are Monday to Friday except observed US federal holidays and the lab's
    /// closures. Exit 2 on bad input.
    AddBusinessDays {
        /// The start date, YYYY-MM-DD.
        #[arg(value_parser = parse_date)]
        date: Date,
        /// How many business days to add (0 prints the date itself).
        n: u32,
        /// Lab closures: the configuration file (its `[calendar] closures`) or a file of dates,
        /// one per line. Without it, only weekends and federal holidays are skipped.
        #[arg(long)]
        closures: Option<PathBuf>,
    },
}

fn parse_date(s: &str) -> Result<Date, String> {
    s.parse::<Date>().map_err(|e| e.to_string())
}

#[derive(clap::Args)]
struct Access {
    /// Configuration file.
    #[arg(long, short, global = true, default_value = config::DEFAULT_PATH, env = "CUSTODIAN_CONFIG")]
    config: PathBuf,
    /// File holding your admin API token (or set CUSTODIAN_TOKEN).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum SpecimenCommand {
    /// Print everything stored for one specimen as JSON.
    Show {
        /// The specimen ID.
        id: String,
    },
    /// List specimen IDs in a state (awaiting_accession, accessioned, screened, confirming,
    /// held, ready_for_review).
    List {
        #[arg(long)]
        state: String,
    },
    /// Re-assign the edition (rule profile) that judges a specimen, before release only
    /// (operator or certifying scientist; audited; daemon running).
    Edition {
        /// The specimen ID.
        id: String,
        /// The profile (edition) name, e.g. part40-2023.
        profile: String,
        /// Why (kept in the specimen record).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum ReviewCommand {
    /// Specimens ready for review, with results per analyte, cutoffs, validity, flaws and the
    /// draft report.
    List,
    /// One specimen as the review queue shows it.
    Show { id: String },
    /// Release one specimen's result to its MRO (your electronic signature: "reviewed and
    /// released").
    Release { id: String },
    /// Release a listed set of negative results under one signature.
    ReleaseBatch {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Send a specimen back for retest: it waits for a new counting result of each test named.
    Retest {
        id: String,
        #[arg(long)]
        reason: String,
        /// A test to repeat (a target such as `creatinine`, or a test code); repeatable; none:
        /// any new result.
        #[arg(long = "test")]
        tests: Vec<String>,
    },
    /// Mark one result of a specimen not reportable (your electronic signature, with the reason;
    /// the result stays in the history). RESULT is its position in `specimen show`'s
    /// result_history.
    NotReportable {
        id: String,
        result: usize,
        #[arg(long)]
        reason: String,
    },
    /// Correct CCF data that was wrong on a released report: a new report that names the one it
    /// replaces goes to the same MRO (your electronic signature: "corrected report reviewed and
    /// released"). Results cannot be changed this way.
    Correct(Box<CorrectArgs>),
}

// What `review correct` takes (boxed: the variant would dwarf the others).
#[derive(clap::Args)]
struct CorrectArgs {
    /// The report to correct (the latest of its specimen).
    report_id: String,
    /// Why the report is corrected.
    #[arg(long)]
    reason: String,
    /// The document that justifies the correction (e.g. the MRO's memorandum reference).
    #[arg(long)]
    document: String,
    #[arg(long)]
    employer_name: Option<String>,
    #[arg(long)]
    employer_id: Option<String>,
    /// The MRO's name as on the CCF (its directory id, the destination, never changes).
    #[arg(long)]
    mro_name: Option<String>,
    /// The donor's SSN or employee ID (empty: remove it).
    #[arg(long)]
    donor_id: Option<String>,
    /// The reason for test (empty: remove it).
    #[arg(long)]
    reason_for_test: Option<String>,
    #[arg(long)]
    collector_name: Option<String>,
    #[arg(long)]
    collector_phone: Option<String>,
    /// YYYY-MM-DD.
    #[arg(long)]
    collected_on: Option<String>,
    /// YYYY-MM-DD.
    #[arg(long)]
    received_on: Option<String>,
}

const REQUESTERS: [&str; 4] = ["mro", "employee", "employer", "dot_agency"];

#[derive(Subcommand)]
enum LifecycleCommand {
    /// Record a written request to keep the specimen (40.99(c)) or its records (40.109(c))
    /// longer; refused once the period in force has ended.
    Extend {
        id: String,
        /// The document that carries the request (letter reference).
        #[arg(long)]
        document: String,
        #[arg(long, value_parser = REQUESTERS)]
        requester: String,
        #[arg(long, default_value = "specimen", value_parser = ["specimen", "records"])]
        subject: String,
        /// Keep through this date (YYYY-MM-DD, laboratory time).
        #[arg(
            long,
            required_unless_present = "until_released",
            conflicts_with = "until_released"
        )]
        until: Option<String>,
        /// Keep until the requester releases it in writing.
        #[arg(long)]
        until_released: bool,
    },
    /// Record the written release of an earlier extension (by the party that asked for it).
    Release {
        id: String,
        #[arg(long)]
        document: String,
        #[arg(long, value_parser = REQUESTERS)]
        requester: String,
        /// The document reference of the extension it releases.
        #[arg(long)]
        request_ref: String,
    },
    /// Record the MRO's written request for quantitative values (40.97(e)); after release it
    /// sends a supplementary report with the values (2001 edition).
    Quantitation {
        id: String,
        #[arg(long)]
        document: String,
    },
    /// Record the MRO's written request to test the split (40.171(c)): prints the forwarding
    /// package for Bottle B (no donor identity) or the unavailable report for the MRO.
    Split {
        id: String,
        #[arg(long)]
        document: String,
        /// The HHS-certified laboratory that will test the split.
        #[arg(long)]
        second_laboratory: String,
    },
    /// The split request of a specimen and what answered it.
    SplitShow { id: String },
    /// Record the MRO's written request to test the primary for the adulterant the second
    /// laboratory found in the split (40.187(f)(4)): the 40.95 criterion as reported.
    AdulterantRetest {
        id: String,
        #[arg(long)]
        document: String,
        /// The criterion's citation as the split laboratory reported it.
        #[arg(long)]
        cite: String,
        /// The criterion as the split laboratory reported it (e.g. "nitrite 500 mcg/mL or more").
        #[arg(long)]
        remark: String,
        /// For an identified adulterant: the substance.
        #[arg(long)]
        substance: Option<String>,
    },
    /// The request of 40.187(f)(4) and its outcome on the primary's validity results.
    AdulterantRetestShow { id: String },
    /// As the split laboratory (`[split_laboratory] enabled`): record a received Bottle B from
    /// the first laboratory's forwarding package JSON (its `copy1`, optional `manifest`).
    SplitLabReceive {
        /// The forwarding package (or `{"copy1": ...}`) as JSON; `-` reads standard input.
        file: PathBuf,
        /// The bottle arrived unusable (leaked, seal broken, insufficient): what was found.
        #[arg(long)]
        not_available: Option<String>,
    },
    /// As the split laboratory: the reconfirmation of a received Bottle B ("Reconfirmed",
    /// "Failed to Reconfirm" with its reason, or what is still missing).
    SplitLabShow { id: String },
    /// As the split laboratory: release the complete split result to the MRO named in Copy 1
    /// (certifying scientist; signed and queued like a report; refused while pending).
    SplitLabRelease { id: String },
    /// Release the complete result of testing the primary for the split's adulterant
    /// (40.187(f)) to the MRO named on the CCF (certifying scientist; signed and queued like a
    /// report; refused while pending).
    AdulterantRetestRelease { id: String },
    /// The retention of a specimen: each item, requests, releases, discards.
    Retention { id: String },
    /// What the laboratory may discard now, with freezer locations.
    Discardable,
    /// Confirm that the laboratory discarded an item (audited).
    Discard {
        id: String,
        #[arg(long, value_parser = ["primary", "split", "records"])]
        item: String,
    },
}

#[derive(Subcommand)]
enum SummariesCommand {
    /// Every summary recorded (produced or suppressed), when it is due, whether it was sent.
    List {
        /// Only this period, e.g. 2026-H1.
        #[arg(long)]
        period: Option<String>,
    },
    /// One summary with its content as produced.
    Show { id: String },
    /// Record that a produced summary was sent (operator or certifying scientist; audited;
    /// daemon running).
    MarkSent {
        id: String,
        /// How it was sent or to whom (kept with the record, not in the audit log).
        #[arg(long)]
        note: Option<String>,
        /// The laboratory date it was sent (YYYY-MM-DD; default today).
        #[arg(long)]
        sent_on: Option<String>,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// The runs in a state: pending (closed, waiting for acceptance; the default), open
    /// (waiting for their closing QC), accepted, rejected.
    List {
        #[arg(long, default_value = "pending")]
        state: String,
    },
    /// One run: its QC results, the evaluation of each rule, its specimens and the decision.
    Show { key: String },
    /// Accept a run whose QC passed: its results count (your electronic signature).
    Accept {
        key: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Reject a run: its results never count and its specimens wait for a retest.
    Reject {
        key: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Queued reports and dead letters per MRO.
    List,
    /// Delivery status of one report.
    Show { report_id: String },
    /// Put a dead letter back in its MRO's queue (operator).
    Retry { report_id: String },
}

#[derive(Subcommand)]
enum ReportsCommand {
    /// Write a report's signed compact JWS (for `custodian verify` and the MRO's tools).
    Export {
        report_id: String,
        /// Write it to this file (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// Every record: id, source, time, reason, size (oldest first).
    List {
        /// Only this source (`lims`, an analyzer name or `analyzer:NAME`).
        #[arg(long)]
        source: Option<String>,
    },
    /// One record (audited); with the operator's token it includes the raw bytes (base64).
    Show { id: String },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the audit hash chain and report the first broken link (exit 1 if broken).
    Verify,
    /// The audit entries of one specimen, oldest first.
    Show { specimen_id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = command(cli);
    if custodian::app::output::failed() {
        ExitCode::FAILURE
    } else {
        code
    }
}

fn command(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run { config } => daemon::main(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Evaluate {
            profile,
            config,
            file,
        } => evaluate(&config, profile.as_deref(), &file),
        Command::Specimen {
            command:
                SpecimenCommand::Edition {
                    id,
                    profile,
                    reason,
                },
            access,
        } => operator::action(
            &access.config,
            access.token_file.as_deref(),
            "POST",
            &format!("/api/specimens/{}/edition", url_segment(&id)),
            Some(serde_json::json!({ "profile": profile, "reason": reason })),
        ),
        Command::Specimen { command, access } => {
            let path = match &command {
                SpecimenCommand::Show { id } => format!("/api/specimens/{}", url_segment(id)),
                SpecimenCommand::List { state } => {
                    format!("/api/specimens?state={}", url_segment(state))
                }
                SpecimenCommand::Edition { .. } => unreachable!("handled above"),
            };
            operator::query(
                &access.config,
                access.token_file.as_deref(),
                &path,
                |store| match &command {
                    SpecimenCommand::Show { id } => operator::show_specimen(store, id),
                    SpecimenCommand::List { state } => operator::list_specimens(store, state),
                    SpecimenCommand::Edition { .. } => unreachable!("handled above"),
                },
            )
        }
        Command::Audit {
            command: AuditCommand::Verify,
            access,
        } => operator::query(
            &access.config,
            access.token_file.as_deref(),
            "/api/audit/verify",
            operator::verify_audit,
        ),
        Command::Audit {
            command: AuditCommand::Show { specimen_id },
            access,
        } => operator::query(
            &access.config,
            access.token_file.as_deref(),
            &format!("/api/specimens/{}/audit", url_segment(&specimen_id)),
            |store| operator::specimen_audit(store, &specimen_id),
        ),
        Command::Reports { command, access } => match &command {
            ReportsCommand::Export { report_id, out } => operator::export_report(
                &access.config,
                access.token_file.as_deref(),
                report_id,
                &format!("/api/reports/{}/jws", url_segment(report_id)),
                out.as_deref(),
            ),
        },
        Command::Summary {
            employer,
            period,
            from,
            to,
            access,
        } => {
            let (from, to) = match (period, from, to) {
                (Some(p), _, _) => match custodian::domain::summary::Period::parse(&p) {
                    Some(p) => (
                        custodian::domain::summary::iso(p.first_day()),
                        custodian::domain::summary::iso(p.last_day()),
                    ),
                    None => {
                        eprintln!("custodian summary: --period `{p}` is not like 2026-H1");
                        return ExitCode::from(2);
                    }
                },
                (None, Some(f), Some(t)) => (f, t),
                _ => unreachable!("clap requires --period or --from and --to"),
            };
            let path = format!(
                "/api/summary?employer={}&from={}&to={}",
                url_segment(&employer),
                url_segment(&from),
                url_segment(&to)
            );
            // Counted by the laboratory's local date (a broken configuration is refused by
            // `query` itself).
            let desk = config::load(&access.config).map(|(c, _)| daemon::summaries_desk(&c));
            operator::query(
                &access.config,
                access.token_file.as_deref(),
                &path,
                |store| match &desk {
                    Ok(desk) => operator::summary(store, desk, &employer, &from, &to),
                    Err(e) => Err(e.to_string()),
                },
            )
        }
        Command::Summaries {
            command: SummariesCommand::MarkSent { id, note, sent_on },
            access,
        } => operator::action(
            &access.config,
            access.token_file.as_deref(),
            "POST",
            &format!("/api/summaries/{}/sent", url_segment(&id)),
            Some(serde_json::json!({ "note": note, "sent_on": sent_on })),
        ),
        Command::Summaries { command, access } => {
            let offset = config::load(&access.config)
                .map(|(c, _)| c.calendar.utc_offset_minutes)
                .unwrap_or(0);
            let path = match &command {
                SummariesCommand::List { period: Some(p) } => {
                    format!("/api/summaries?period={}", url_segment(p))
                }
                SummariesCommand::List { period: None } => "/api/summaries".to_string(),
                SummariesCommand::Show { id } => format!("/api/summaries/{}", url_segment(id)),
                SummariesCommand::MarkSent { .. } => unreachable!("handled above"),
            };
            operator::query(
                &access.config,
                access.token_file.as_deref(),
                &path,
                |store| match &command {
                    SummariesCommand::List { period } => {
                        operator::list_summaries(store, period.as_deref(), offset)
                    }
                    SummariesCommand::Show { id } => operator::show_summary(store, id, offset),
                    SummariesCommand::MarkSent { .. } => unreachable!("handled above"),
                },
            )
        }
        Command::Keys {
            command,
            dir,
            config,
        } => keys(&command, dir, &config),
        Command::Verify { file, key } => verify(&file, &key),
        Command::Review { command, access } => review_command(&command, &access),
        Command::Outbox { command, access } => outbox_command(&command, &access),
        Command::Quarantine { command, access } => quarantine_command(&command, &access),
        Command::Runs { command, access } => runs_command(&command, &access),
        Command::Demo { config, keep } => custodian::app::demo::run(&config, keep),
        Command::Lifecycle { command, access } => lifecycle_command(&command, &access),
        Command::HashToken => {
            let mut token = String::new();
            if io::stdin().read_line(&mut token).is_err() || token.trim().is_empty() {
                eprintln!("custodian hash-token: give the token on standard input");
                return ExitCode::from(2);
            }
            custodian::outln!(
                "{}",
                custodian::admin::auth::hash_token(token.trim_end_matches(['\n', '\r']))
            );
            ExitCode::SUCCESS
        }
        Command::HashPassword => hash_password(),
        Command::Calendar {
            command: CalendarCommand::AddBusinessDays { date, n, closures },
        } => add_business_days(date, n, closures.as_deref()),
    }
}

fn hash_password() -> ExitCode {
    use std::io::IsTerminal;
    let fail = |msg: &str| {
        eprintln!("custodian hash-password: {msg}");
        ExitCode::from(2)
    };
    let password = if io::stdin().is_terminal() {
        let first = match rpassword::prompt_password("Password: ") {
            Ok(p) => p,
            Err(e) => return fail(&format!("cannot read the password: {e}")),
        };
        match rpassword::prompt_password("Password again: ") {
            Ok(p) if p == first => first,
            Ok(_) => return fail("the two passwords differ"),
            Err(e) => return fail(&format!("cannot read the password: {e}")),
        }
    } else {
        let mut line = String::new();
        if io::stdin().read_line(&mut line).is_err() {
            return fail("cannot read standard input");
        }
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.chars().count() < 12 {
        return fail("use at least 12 characters");
    }
    match custodian::admin::auth::hash_password(&password) {
        Ok(h) => {
            custodian::outln!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn add_business_days(date: Date, n: u32, closures: Option<&std::path::Path>) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("custodian calendar add-business-days: {msg}");
        ExitCode::from(2)
    };
    let closed = match closures {
        None => Default::default(),
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => return fail(format!("cannot read {}: {e}", path.display())),
            };
            match calendar::closures_from_text(&text) {
                Ok(c) => c,
                Err(e) => return fail(format!("{}: {e}", path.display())),
            }
        }
    };
    match calendar::Calendar::with_closures(closed).add_business_days(date, n) {
        Some(d) => {
            custodian::outln!("{d}");
            ExitCode::SUCCESS
        }
        None => fail(format!(
            "{n} business days after {date} is after 9999-12-31"
        )),
    }
}

fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok((cfg, profiles)) => {
            custodian::outln!("configuration {} is valid", path.display());
            custodian::outln!("  laboratory: {}", cfg.laboratory.name);
            custodian::outln!(
                "  rule profiles: {} (default {})",
                profiles.names().collect::<Vec<_>>().join(", "),
                cfg.rules.default_profile
            );
            custodian::outln!("  store: {}", cfg.store.path.display());
            let keys = signing::KeyStore::new(&cfg.signing.keys_dir);
            match keys.active_kid() {
                Ok(kid) => custodian::outln!(
                    "  signing keys: {} (active {kid})",
                    cfg.signing.keys_dir.display()
                ),
                Err(e) => custodian::outln!("  signing keys: {e}"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::from(2)
        }
    }
}

fn evaluate(
    config_path: &std::path::Path,
    profile: Option<&str>,
    file: &std::path::Path,
) -> ExitCode {
    let (cfg, profiles) = match config::load(config_path) {
        Ok(x) => x,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    let ev = match Evaluator::with_profile(&profiles, profile, &cfg.rules.default_profile) {
        Ok(ev) => ev,
        Err(e) => {
            eprintln!("custodian evaluate: {e}");
            return ExitCode::from(2);
        }
    };
    let stdout = io::stdout().lock();
    let result = if file.as_os_str() == "-" {
        ev.run(io::stdin().lock(), stdout)
    } else {
        match std::fs::File::open(file) {
            Ok(f) => ev.run(BufReader::new(f), stdout),
            Err(e) => {
                eprintln!("custodian evaluate: cannot open {}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        // The reader went away (`| head -1`): stop quietly.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custodian evaluate: {e}");
            ExitCode::from(2)
        }
    }
}

fn keys(command: &KeysCommand, dir: Option<PathBuf>, config_path: &std::path::Path) -> ExitCode {
    let dir = match dir {
        Some(d) => d,
        None => match config::load(config_path) {
            Ok((cfg, _)) => cfg.signing.keys_dir,
            Err(e) => {
                eprint!("{e}");
                return ExitCode::from(2);
            }
        },
    };
    let store = signing::KeyStore::new(dir);
    let printed = match command {
        KeysCommand::Generate => store.generate().map(|kid| kid + "\n"),
        KeysCommand::ExportPublic { active: true } => store.active().map(|k| {
            serde_json::to_string_pretty(&k.public_jwk()).expect("a JWK serializes") + "\n"
        }),
        KeysCommand::ExportPublic { active: false } => store
            .public_set()
            .map(|s| serde_json::to_string_pretty(&s).expect("a JWK set serializes") + "\n"),
    };
    match printed {
        Ok(text) => {
            custodian::out!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("custodian keys: {e}");
            ExitCode::from(2)
        }
    }
}

fn verify(file: &std::path::Path, key: &std::path::Path) -> ExitCode {
    let fail = |why: String| {
        eprintln!("custodian verify: {why}");
        ExitCode::from(1)
    };
    let jws = if file.as_os_str() == "-" {
        let mut t = String::new();
        match io::Read::read_to_string(&mut io::stdin().lock(), &mut t) {
            Ok(_) => t,
            Err(e) => return fail(format!("cannot read standard input: {e}")),
        }
    } else {
        match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => return fail(format!("cannot read {}: {e}", file.display())),
        }
    };
    let jwks = match std::fs::read_to_string(key) {
        Ok(t) => match signing::JwkSet::parse(&t) {
            Ok(s) => s,
            Err(e) => return fail(format!("{}: {e}", key.display())),
        },
        Err(e) => return fail(format!("cannot read {}: {e}", key.display())),
    };
    let payload = match signing::verify(&jws, &jwks) {
        Ok(p) => p,
        Err(e) => return fail(format!("{}: not valid: {e}", file.display())),
    };
    match serde_json::from_slice::<serde_json::Value>(&payload) {
        Ok(v) if v.is_object() => {
            custodian::outln!("{}", String::from_utf8_lossy(&payload));
            ExitCode::SUCCESS
        }
        _ => fail(format!(
            "{}: the signature is valid but the payload is not a JSON object",
            file.display()
        )),
    }
}

/// `custodian review ...`: the review queue, release, batch release, retest, corrected reports.
fn review_command(command: &ReviewCommand, access: &Access) -> ExitCode {
    let (method, path, body) = match command {
        ReviewCommand::List => ("GET", "/api/review".to_string(), None),
        ReviewCommand::Show { id } => ("GET", format!("/api/review/{}", url_segment(id)), None),
        ReviewCommand::Release { id } => (
            "POST",
            format!("/api/review/{}/release", url_segment(id)),
            None,
        ),
        ReviewCommand::ReleaseBatch { ids } => (
            "POST",
            "/api/release-batch".to_string(),
            Some(serde_json::json!({ "specimens": ids })),
        ),
        ReviewCommand::Retest { id, reason, tests } => (
            "POST",
            format!("/api/review/{}/retest", url_segment(id)),
            Some(serde_json::json!({ "reason": reason, "tests": tests })),
        ),
        ReviewCommand::NotReportable { id, result, reason } => (
            "POST",
            format!(
                "/api/specimens/{}/results/{result}/not-reportable",
                url_segment(id)
            ),
            Some(serde_json::json!({ "reason": reason })),
        ),
        ReviewCommand::Correct(args) => {
            let CorrectArgs {
                report_id,
                reason,
                document,
                employer_name,
                employer_id,
                mro_name,
                donor_id,
                reason_for_test,
                collector_name,
                collector_phone,
                collected_on,
                received_on,
            } = args.as_ref();
            let ccf = custodian::domain::specimen::CcfAmendment {
                employer_name: employer_name.clone(),
                employer_id: employer_id.clone(),
                mro_name: mro_name.clone(),
                donor_id: donor_id.clone(),
                reason_for_test: reason_for_test.clone(),
                collector_name: collector_name.clone(),
                collector_phone: collector_phone.clone(),
                collected_on: collected_on.clone(),
                received_on: received_on.clone(),
            };
            if ccf == custodian::domain::specimen::CcfAmendment::default() {
                eprintln!("custodian: name at least one CCF field to correct (e.g. --donor-id)");
                return ExitCode::from(2);
            }
            let body = custodian::custody::release::CorrectionRequest {
                reason: reason.clone(),
                document_ref: document.clone(),
                ccf,
            };
            (
                "POST",
                format!("/api/reports/{}/correct", url_segment(report_id)),
                serde_json::to_value(&body).ok(),
            )
        }
    };
    operator::action(
        &access.config,
        access.token_file.as_deref(),
        method,
        &path,
        body,
    )
}

/// `custodian lifecycle ...`: written requests, retention, discards, the split and the split laboratory.
fn lifecycle_command(command: &LifecycleCommand, access: &Access) -> ExitCode {
    let request = |id: &str, body: serde_json::Value| {
        (
            "POST",
            format!("/api/specimens/{}/requests", url_segment(id)),
            Some(body),
        )
    };
    let (method, path, body) = match command {
        LifecycleCommand::Extend {
            id,
            document,
            requester,
            subject,
            until,
            until_released: _,
        } => request(
            id,
            serde_json::json!({
                "kind": "retention_extension",
                "document_ref": document,
                "requester": requester,
                "subject": subject,
                "until": match until {
                    Some(d) => serde_json::json!({ "date": d }),
                    None => serde_json::json!("released"),
                },
            }),
        ),
        LifecycleCommand::Release {
            id,
            document,
            requester,
            request_ref,
        } => request(
            id,
            serde_json::json!({
                "kind": "retention_release",
                "document_ref": document,
                "requester": requester,
                "request_ref": request_ref,
            }),
        ),
        LifecycleCommand::Quantitation { id, document } => request(
            id,
            serde_json::json!({ "kind": "quantitation", "document_ref": document }),
        ),
        LifecycleCommand::Split {
            id,
            document,
            second_laboratory,
        } => request(
            id,
            serde_json::json!({
                "kind": "split_test",
                "document_ref": document,
                "second_laboratory": second_laboratory,
            }),
        ),
        LifecycleCommand::AdulterantRetest {
            id,
            document,
            cite,
            remark,
            substance,
        } => request(
            id,
            serde_json::json!({
                "kind": "adulterant_retest",
                "document_ref": document,
                "cite": cite,
                "remark": remark,
                "substances": substance.iter().collect::<Vec<_>>(),
            }),
        ),
        LifecycleCommand::AdulterantRetestShow { id } => (
            "GET",
            format!("/api/specimens/{}/adulterant-retest", url_segment(id)),
            None,
        ),
        LifecycleCommand::SplitLabReceive {
            file,
            not_available,
        } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                io::Read::read_to_string(&mut io::stdin(), &mut s).map(|_| s)
            } else {
                std::fs::read_to_string(file)
            };
            let mut body: serde_json::Value = match text
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            {
                Ok(v) => v,
                Err(e) => {
                    eprintln!(
                        "custodian lifecycle split-lab-receive: {}: {e}",
                        file.display()
                    );
                    return ExitCode::from(2);
                }
            };
            if let (Some(why), Some(o)) = (not_available, body.as_object_mut()) {
                o.insert(
                    "received".into(),
                    serde_json::json!({"condition": "not_available", "detail": why}),
                );
            }
            ("POST", "/api/split-lab/received".to_string(), Some(body))
        }
        LifecycleCommand::SplitLabShow { id } => {
            ("GET", format!("/api/split-lab/{}", url_segment(id)), None)
        }
        LifecycleCommand::SplitLabRelease { id } => (
            "POST",
            format!("/api/split-lab/{}/release", url_segment(id)),
            Some(serde_json::json!({})),
        ),
        LifecycleCommand::AdulterantRetestRelease { id } => (
            "POST",
            format!(
                "/api/specimens/{}/adulterant-retest/release",
                url_segment(id)
            ),
            Some(serde_json::json!({})),
        ),
        LifecycleCommand::SplitShow { id } => (
            "GET",
            format!("/api/specimens/{}/split", url_segment(id)),
            None,
        ),
        LifecycleCommand::Retention { id } => (
            "GET",
            format!("/api/specimens/{}/retention", url_segment(id)),
            None,
        ),
        LifecycleCommand::Discardable => ("GET", "/api/discardable".to_string(), None),
        LifecycleCommand::Discard { id, item } => (
            "POST",
            format!("/api/specimens/{}/discard", url_segment(id)),
            Some(serde_json::json!({ "item": item })),
        ),
    };
    operator::action(
        &access.config,
        access.token_file.as_deref(),
        method,
        &path,
        body,
    )
}

/// `custodian outbox ...`: delivery status and retries.
fn outbox_command(command: &OutboxCommand, access: &Access) -> ExitCode {
    let (method, path) = match command {
        OutboxCommand::List => ("GET", "/api/outbox".to_string()),
        OutboxCommand::Show { report_id } => {
            ("GET", format!("/api/reports/{}", url_segment(report_id)))
        }
        OutboxCommand::Retry { report_id } => (
            "POST",
            format!("/api/outbox/{}/retry", url_segment(report_id)),
        ),
    };
    operator::action(
        &access.config,
        access.token_file.as_deref(),
        method,
        &path,
        None,
    )
}

/// `custodian runs ...`: analytical runs, their QC, acceptance and rejection.
fn runs_command(command: &RunsCommand, access: &Access) -> ExitCode {
    let (method, path, body) = match command {
        RunsCommand::List { state } => (
            "GET",
            format!("/api/runs?state={}", url_segment(state)),
            None,
        ),
        RunsCommand::Show { key } => ("GET", format!("/api/runs/{}", url_segment(key)), None),
        RunsCommand::Accept { key, reason } => (
            "POST",
            format!("/api/runs/{}/accept", url_segment(key)),
            Some(serde_json::json!({ "reason": reason })),
        ),
        RunsCommand::Reject { key, reason } => (
            "POST",
            format!("/api/runs/{}/reject", url_segment(key)),
            Some(serde_json::json!({ "reason": reason })),
        ),
    };
    operator::action(
        &access.config,
        access.token_file.as_deref(),
        method,
        &path,
        body,
    )
}

/// `custodian quarantine ...`: what was refused, with its reason.
fn quarantine_command(command: &QuarantineCommand, access: &Access) -> ExitCode {
    let path = match command {
        QuarantineCommand::List { source: None } => "/api/quarantine".to_string(),
        QuarantineCommand::List { source: Some(s) } => {
            format!("/api/quarantine?source={}", url_segment(s))
        }
        QuarantineCommand::Show { id } => {
            format!("/api/quarantine/{}", url_segment(id))
        }
    };
    operator::action(
        &access.config,
        access.token_file.as_deref(),
        "GET",
        &path,
        None,
    )
}
