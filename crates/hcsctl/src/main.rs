//! `hcsctl`: a command-line tool for the Windows Host Compute Service, built on the `hcs` library.
//!
//! # Commands
//!
//! * `hcsctl run [OPTIONS] -- CMD [ARGS...]` — create a compute system, start it, run `CMD` in
//!   it attached to the terminal, forward Ctrl-C, stop the system and exit with the command's
//!   exit code. See [`run`] for the details and the `--json` summary.
//! * `hcsctl migrate ID --to HOST:PORT` / `hcsctl migrate --receive --listen HOST:PORT` — live
//!   migration of a VM between two hosts; see [`migrate`].
//! * `hcsctl list [--json]` — enumerate compute systems on the chosen driver.
//! * `hcsctl version` — print the version and the default driver.
//!
//! On Linux and macOS the default driver is the simulator (`hcs-sim`) with its host-process
//! backend, so `hcsctl run -- echo hello` really runs `echo` (see [`driver`]).
//!
//! # Exit codes
//!
//! See [`exit`]; the same table is printed by `hcsctl --help`. In short: the command's own code
//! for `run`, 2 usage, 65 bad configuration or fault plan, 66 unreadable file, 69 driver
//! unavailable, 124 timeout, 125 HCS operation failed, 126 not executable, 127 command not found,
//! 130 interrupted.
//!
//! # Logging
//!
//! `-v` logs the library's HCS calls (debug) to stderr, `-vv` everything (trace), including the
//! JSON documents exchanged with HCS (configuration, process parameters, signal options); without `-v`,
//! `RUST_LOG` (a `tracing-subscriber` filter) is honoured, else only errors are logged.

mod cmdline;
mod config;
mod driver;
mod exit;
mod io;
mod log;
mod migrate;
mod run;

use clap::{Args, Parser, Subcommand};
use exit::CliError;
use std::io::Write;

#[derive(Debug, Parser)]
#[command(name = "hcsctl", version, about = "Run commands in Windows Host Compute Service compute systems", after_help = exit::HELP)]
struct Cli {
    /// Log HCS calls to stderr (-v: debug, -vv: trace); RUST_LOG works too.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command in a new compute system and exit with its exit code.
    #[command(after_help = run_help())]
    Run(run::RunOptions),
    /// Live-migrate a VM: `migrate ID --to HOST:PORT` (source) or `migrate --receive --listen
    /// HOST:PORT` (destination).
    Migrate(migrate::MigrateOptions),
    /// List compute systems.
    List(ListArgs),
    /// Print the version.
    Version,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    driver: driver::DriverArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The help after `hcsctl run --help`: the exit codes and the time limits.
fn run_help() -> String {
    format!("{}\n\n{}", exit::HELP, run::RUN_HELP)
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match verbose {
        0 => match std::env::var_os("RUST_LOG") {
            Some(_) => EnvFilter::from_default_env(),
            None => {
                // The common case: errors only, through our own minimal subscriber (see
                // [`log`]); start-up is most of a short `hcsctl run`'s own cost.
                let _ = tracing::subscriber::set_global_default(log::ErrorsToStderr);
                return;
            }
        },
        1 => EnvFilter::new("info,hcs=debug,hcs_sim=debug,hcsctl=debug"),
        _ => EnvFilter::new("trace"),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

fn list(args: &ListArgs) -> Result<i32, CliError> {
    let selected = driver::select(args.driver.driver, None)?;
    let systems = hcs::enumerate(&*selected.driver, &hcs_schema::ComputeSystemQuery::default())
        .map_err(|e| CliError::new(exit::HCS_FAILED, format!("cannot list compute systems: {e}")))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let rows: Vec<_> = systems
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id, "state": s.state, "type": s.system_type, "owner": s.owner,
                    "runtime_os_type": s.runtime_os_type, "stopped": s.stopped,
                })
            })
            .collect();
        let _ = writeln!(out, "{}", serde_json::Value::Array(rows));
    } else {
        let _ = writeln!(out, "{:<40} {:<16} {:<12} OWNER", "ID", "TYPE", "STATE");
        for s in &systems {
            let _ = writeln!(
                out,
                "{:<40} {:<16} {:<12} {}",
                s.id, s.system_type, s.state, s.owner
            );
        }
    }
    let _ = out.flush();
    Ok(0)
}

fn version() -> i32 {
    let default = if cfg!(windows) {
        "computecore when computecore.dll is present, else vmcompute"
    } else {
        "sim"
    };
    println!("hcsctl {}", env!("CARGO_PKG_VERSION"));
    println!("default driver: {default}");
    0
}

fn main() {
    // The hidden entry of the per-system supervisor of the simulator's processes (hcsctl
    // re-executes itself as it, see `driver`): checked before anything else is set up.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == hcs_sim::supervisor::HCSCTL_ARG)
    {
        std::process::exit(hcs_sim::supervisor::main());
    }
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Run(opts) => run::run(opts),
        Command::Migrate(opts) => migrate::migrate(opts),
        Command::List(a) => list(&a),
        Command::Version => Ok(version()),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("hcsctl: {}", run::escape(&e.message));
            for note in &e.notes {
                eprintln!("hcsctl: {}", run::escape(note));
            }
            log::flush_deferred();
            e.code
        }
    };
    log::flush_deferred();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code);
}
