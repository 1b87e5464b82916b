//! The `custodian` command.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use custodian::calendar::{self, Date};
use custodian::{config, daemon, evaluate::Evaluator, operator};
use std::io::{self, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Read a token on standard input and print the SHA-256 to put in `admin.user.token_sha256`.
    HashToken,
    /// Business days (40.83(e)-(g)): weekends, US federal holidays and the lab's closures.
    Calendar {
        #[command(subcommand)]
        command: CalendarCommand,
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
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the audit hash chain and report the first broken link (exit 1 if broken).
    Verify,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => daemon::main(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Evaluate {
            profile,
            config,
            file,
        } => evaluate(&config, profile.as_deref(), &file),
        Command::Specimen { command, access } => {
            let path = match &command {
                SpecimenCommand::Show { id } => format!("/api/specimens/{}", url_segment(id)),
                SpecimenCommand::List { state } => {
                    format!("/api/specimens?state={}", url_segment(state))
                }
            };
            operator::query(
                &access.config,
                access.token_file.as_deref(),
                &path,
                |store| match &command {
                    SpecimenCommand::Show { id } => operator::show_specimen(store, id),
                    SpecimenCommand::List { state } => operator::list_specimens(store, state),
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
        Command::HashToken => {
            let mut token = String::new();
            if io::stdin().read_line(&mut token).is_err() || token.trim().is_empty() {
                eprintln!("custodian hash-token: give the token on standard input");
                return ExitCode::from(2);
            }
            println!(
                "{}",
                custodian::admin::auth::hash_token(token.trim_end_matches(['\n', '\r']))
            );
            ExitCode::SUCCESS
        }
        Command::Calendar {
            command: CalendarCommand::AddBusinessDays { date, n, closures },
        } => add_business_days(date, n, closures.as_deref()),
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
            println!("{d}");
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
            println!("configuration {} is valid", path.display());
            println!("  laboratory: {}", cfg.laboratory.name);
            println!(
                "  rule profiles: {} (default {})",
                profiles.names().collect::<Vec<_>>().join(", "),
                cfg.rules.default_profile
            );
            println!("  store: {}", cfg.store.path.display());
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
    let default = profile.unwrap_or(&cfg.rules.default_profile);
    let ev = match Evaluator::new(&profiles, default) {
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
        Err(e) => {
            eprintln!("custodian evaluate: {e}");
            ExitCode::from(2)
        }
    }
}
