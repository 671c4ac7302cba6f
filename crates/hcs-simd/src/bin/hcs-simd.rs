//! `hcs-simd`: the simulated Host Compute Service daemon (see the `hcs_simd` crate and
//! `docs/hcs-simd-protocol.md`). `hcs-simd [--socket PATH] [--generation v1|v2] [--sync]
//! [--fault-plan FILE]` serves until `SIGTERM`; `hcs-simd ping` checks that one answers.

#[cfg(unix)]
mod imp {
    use clap::{Parser, Subcommand, ValueEnum};
    use hcs::ApiGeneration;
    use hcs_sim::{SimConfig, SupervisorProgram};
    use hcs_simd::{server, ClientDriver, ConnectError, ServerConfig};
    use std::path::PathBuf;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, ValueEnum)]
    enum Gen {
        V1,
        V2,
    }

    /// The simulated Host Compute Service on a Unix socket.
    #[derive(Debug, Parser)]
    #[command(name = "hcs-simd", version)]
    struct Args {
        /// The socket (default: $HCS_SIM_SOCKET, else $XDG_RUNTIME_DIR/hcs-sim/hcs.sock, else
        /// /run/hcs-sim/hcs.sock for root).
        #[arg(long, global = true)]
        socket: Option<PathBuf>,
        /// The HCS API generation to simulate.
        #[arg(long, value_enum, default_value = "v1")]
        generation: Gen,
        /// Answer every pending-capable call synchronously (as computecore.dll does).
        #[arg(long)]
        sync: bool,
        /// Notification latency of the simulator, in milliseconds.
        #[arg(long)]
        latency_ms: Option<u64>,
        /// A fault plan (hcs_sim::FaultPlan JSON) in force from the start.
        #[arg(long)]
        fault_plan: Option<PathBuf>,
        /// Worker threads for calls into the simulator (fixed; not per client).
        #[arg(long, default_value_t = server::DEFAULT_WORKERS)]
        workers: usize,
        /// Run every process directly, without a supervisor per system (processes then
        /// survive a `kill -9` of the service).
        #[arg(long)]
        no_supervisor: bool,
        #[command(subcommand)]
        command: Option<Command>,
    }

    #[derive(Debug, Subcommand)]
    enum Command {
        /// Connects, runs the handshake and prints the service's accounting (exit status 0),
        /// 3 when the service refuses this client, 1 when none answers.
        Ping,
    }

    pub fn main() -> i32 {
        if std::env::args_os()
            .nth(1)
            .is_some_and(|a| a == hcs_simd::SUPERVISOR_ARG)
        {
            return hcs_sim::supervisor::main();
        }
        let args = Args::parse();
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .init();
        let socket = args.socket.clone().unwrap_or_else(hcs_simd::default_socket_path);
        if let Some(Command::Ping) = args.command {
            return match ClientDriver::connect(&socket) {
                Ok(d) => match d.stats() {
                    Ok(s) => {
                        println!("hcs-simd pid {} at {}: {s:?}", d.server_pid(), socket.display());
                        0
                    }
                    Err(e) => {
                        eprintln!("hcs-simd ping: {e}");
                        1
                    }
                },
                Err(ConnectError::Refused(r)) => {
                    eprintln!("hcs-simd ping: refused: {r}");
                    3
                }
                Err(e) => {
                    eprintln!("hcs-simd ping: {e}");
                    1
                }
            };
        }
        let mut sim = SimConfig::default();
        if let Gen::V2 = args.generation {
            sim = sim.generation(ApiGeneration::V2);
        }
        if args.sync {
            sim = sim.all_sync();
        }
        if let Some(ms) = args.latency_ms {
            sim = sim.latency(Duration::from_millis(ms));
        }
        if !args.no_supervisor {
            sim = sim.supervisor(
                SupervisorProgram::new("/proc/self/exe")
                    .arg(hcs_simd::SUPERVISOR_ARG)
                    .arg(socket.as_os_str()),
            );
        }
        let sim = match server::with_fault_plan(sim, args.fault_plan.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("hcs-simd: invalid fault plan: {e}");
                return 2;
            }
        };
        let server = match hcs_simd::Server::bind(ServerConfig {
            socket,
            sim,
            workers: args.workers,
        }) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("hcs-simd: {e}");
                return 1;
            }
        };
        match server.run() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("hcs-simd: {e}");
                1
            }
        }
    }
}

#[cfg(unix)]
fn main() {
    std::process::exit(imp::main());
}

#[cfg(not(unix))]
fn main() {
    eprintln!("hcs-simd: not supported on this platform (it serves a Unix socket)");
    std::process::exit(1);
}
