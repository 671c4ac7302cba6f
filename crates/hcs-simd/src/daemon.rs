//! The daemon's command line, shared by the `hcs-simd` binary and `hcsctl daemon`: the options
//! ([`DaemonArgs`]), serving in the foreground until `SIGTERM`/`SIGINT` ([`serve`]) and the
//! handshake check ([`ping`]). Each host binary names itself as the per-system supervisor (it
//! re-executes `/proc/self/exe` with its own hidden first argument), so the caller passes the
//! arguments that select the supervisor in that binary.

use crate::{server, ClientDriver, ConnectError, ServerConfig};
use clap::ValueEnum;
use hcs::ApiGeneration;
use hcs_sim::{SimConfig, SupervisorProgram};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// The HCS API generation the service simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generation {
    /// `vmcompute.dll`: pending operations completed by notifications.
    V1,
    /// `computecore.dll`.
    V2,
}

/// The options of the service.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// The socket (default: $HCS_SIM_SOCKET, else $XDG_RUNTIME_DIR/hcs-sim/hcs.sock, else
    /// /run/hcs-sim/hcs.sock for root).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// The HCS API generation to simulate.
    #[arg(long, value_enum, default_value = "v1")]
    pub generation: Generation,
    /// Answer every pending-capable call synchronously (as computecore.dll does).
    #[arg(long)]
    pub sync: bool,
    /// Notification latency of the simulator, in milliseconds.
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// A fault plan (hcs_sim::FaultPlan JSON) in force from the start.
    #[arg(long)]
    pub fault_plan: Option<PathBuf>,
    /// Worker threads for calls into the simulator (fixed; not per client).
    #[arg(long, default_value_t = server::DEFAULT_WORKERS)]
    pub workers: usize,
    /// Run every process directly, without a supervisor per system (processes then
    /// survive a `kill -9` of the service).
    #[arg(long)]
    pub no_supervisor: bool,
}

impl DaemonArgs {
    /// The socket these options name.
    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(crate::default_socket_path)
    }
}

/// Logs to stderr (`RUST_LOG` filter, default `info`).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}

/// Connects, runs the handshake and prints the service's accounting: exit status 0, 3 when the
/// service refuses this client, 1 when none answers. `name` prefixes messages.
pub fn ping(name: &str, args: &DaemonArgs) -> i32 {
    let socket = args.socket_path();
    match ClientDriver::connect(&socket) {
        Ok(d) => match d.stats() {
            Ok(s) => {
                println!("hcs-simd pid {} at {}: {s:?}", d.server_pid(), socket.display());
                0
            }
            Err(e) => {
                eprintln!("{name} ping: {e}");
                1
            }
        },
        Err(ConnectError::Refused(r)) => {
            eprintln!("{name} ping: refused: {r}");
            3
        }
        Err(e) => {
            eprintln!("{name} ping: {e}");
            1
        }
    }
}

/// Serves in the foreground until `SIGTERM` or `SIGINT`; returns the exit status (0 after a
/// clean shutdown, 1 when the socket cannot be claimed or the loop fails, 2 for an invalid
/// fault plan). `supervisor_args` select the per-system supervisor in this executable
/// (re-executed as `/proc/self/exe`); the socket path is appended so that a system's
/// supervisor names its service in `ps`.
pub fn serve(name: &str, args: &DaemonArgs, supervisor_args: &[&str]) -> i32 {
    let socket = args.socket_path();
    // The service forwards notifications to its clients' sockets: zero-latency ones are written
    // by the thread whose call made them (before its reply), not handed to the engine's
    // service thread first.
    let mut sim = SimConfig::default().inline_deliveries(true);
    if args.generation == Generation::V2 {
        sim = sim.generation(ApiGeneration::V2);
    }
    if args.sync {
        sim = sim.all_sync();
    }
    if let Some(ms) = args.latency_ms {
        sim = sim.latency(Duration::from_millis(ms));
    }
    if !args.no_supervisor {
        let mut program = SupervisorProgram::new("/proc/self/exe");
        for a in supervisor_args {
            program = program.arg(OsString::from(a));
        }
        sim = sim.supervisor(program.arg(socket.as_os_str()));
    }
    let sim = match server::with_fault_plan(sim, args.fault_plan.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: invalid fault plan: {e}");
            return 2;
        }
    };
    let server = match crate::Server::bind(ServerConfig {
        socket,
        sim,
        workers: args.workers,
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: {e}");
            return 1;
        }
    };
    match server.run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: {e}");
            1
        }
    }
}
