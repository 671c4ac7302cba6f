//! `hcsctl`: a command-line tool for the Windows Host Compute Service, built on the `hcs` library.
//!
//! # Commands
//!
//! * `hcsctl run [OPTIONS] -- CMD [ARGS...]` — create a compute system, start it, run `CMD` in
//!   it attached to the terminal, forward Ctrl-C, stop the system and exit with the command's
//!   exit code. See [`run`] for the details and the `--json` summary.
//! * `hcsctl migrate ID --to HOST:PORT` / `hcsctl migrate --receive --listen HOST:PORT` — live
//!   migration of a VM between two hosts; see [`migrate`].
//! * `hcsctl create|start|exec|list|inspect|ps|kill|pause|resume|stop|rm|wait|events` — manage
//!   compute systems that outlive one invocation: on Linux and macOS in the simulated HCS service
//!   (`hcs-simd`), on Windows in HCS itself; see [`manage`].
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

mod config;
mod driver;
mod exit;
mod io;
mod log;
mod manage;
mod migrate;
mod run;

use clap::{Parser, Subcommand};
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
    /// Create a compute system that outlives this command; print its id.
    Create(manage::CreateArgs),
    /// Start a created compute system.
    Start(manage::IdArgs),
    /// Run a command in a running compute system and exit with its exit code.
    Exec(manage::ExecArgs),
    /// List compute systems (id, type, state, owner, runtime, uptime).
    List(manage::ListArgs),
    /// Show a compute system's properties, statistics and processes.
    Inspect(manage::InspectArgs),
    /// List the processes of a compute system.
    Ps(manage::InspectArgs),
    /// Terminate (or, with --signal, signal) a process of a compute system.
    Kill(manage::KillArgs),
    /// Pause a running compute system.
    Pause(manage::IdArgs),
    /// Resume a paused compute system.
    Resume(manage::IdArgs),
    /// Stop a compute system: shut it down, terminate it after --grace.
    Stop(manage::StopArgs),
    /// Remove a stopped compute system (-f: terminate a running one first).
    Rm(manage::RmArgs),
    /// Wait until a compute system exits (0: clean exit, 1: unexpected exit).
    Wait(manage::WaitArgs),
    /// Stream the notifications of one compute system or of all of them.
    Events(manage::EventsArgs),
    /// Run the simulated HCS service (hcs-simd) in the foreground until SIGTERM or Ctrl-C.
    Daemon(DaemonCmd),
    /// Print the version.
    Version,
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

/// `hcsctl daemon`: the options of `hcs-simd` (Unix only).
#[derive(Debug, clap::Args)]
struct DaemonCmd {
    #[cfg(unix)]
    #[command(flatten)]
    daemon: hcs_simd::daemon::DaemonArgs,
}

fn daemon(args: &DaemonCmd) -> Result<i32, exit::CliError> {
    #[cfg(unix)]
    {
        Ok(hcs_simd::daemon::serve(
            "hcsctl daemon",
            &args.daemon,
            &[hcs_sim::supervisor::HCSCTL_ARG],
        ))
    }
    #[cfg(not(unix))]
    {
        let _ = args;
        Err(exit::CliError::new(
            exit::UNAVAILABLE,
            "hcsctl daemon (the simulated HCS service) needs a Unix host; on Windows HCS itself is the service",
        ))
    }
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
    match cli.command {
        // The service logs at info (connections, refusals, bad frames; RUST_LOG overrides).
        #[cfg(unix)]
        Command::Daemon(_) if cli.verbose == 0 => hcs_simd::daemon::init_logging(),
        _ => init_tracing(cli.verbose),
    }
    let result = match cli.command {
        Command::Run(opts) => run::run(opts),
        Command::Migrate(opts) => migrate::migrate(opts),
        Command::Create(a) => manage::create(&a),
        Command::Start(a) => manage::transition(manage::Transition::Start, &a),
        Command::Exec(a) => manage::exec(a),
        Command::List(a) => manage::list(&a),
        Command::Inspect(a) => manage::inspect(&a),
        Command::Ps(a) => manage::ps(&a),
        Command::Kill(a) => manage::kill(&a),
        Command::Pause(a) => manage::transition(manage::Transition::Pause, &a),
        Command::Resume(a) => manage::transition(manage::Transition::Resume, &a),
        Command::Stop(a) => manage::stop(&a),
        Command::Rm(a) => manage::rm(&a),
        Command::Wait(a) => manage::wait(&a),
        Command::Events(a) => manage::events(&a),
        Command::Daemon(a) => daemon(&a),
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

#[cfg(test)]
mod tests {
    /// clap's own consistency checks over every subcommand (unique argument and group ids,
    /// valid defaults), which otherwise run only when that subcommand is parsed.
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
