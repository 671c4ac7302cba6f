//! `hcs-simd`: the simulated Host Compute Service daemon (see the `hcs_simd` crate and
//! `docs/hcs-simd-protocol.md`). `hcs-simd [--socket PATH] [--generation v1|v2] [--sync]
//! [--fault-plan FILE]` serves until `SIGTERM`; `hcs-simd ping` checks that one answers.
//! `hcsctl daemon` takes the same options.

#[cfg(unix)]
mod imp {
    use clap::{Parser, Subcommand};
    use hcs_simd::daemon::{self, DaemonArgs};

    /// The simulated Host Compute Service on a Unix socket.
    #[derive(Debug, Parser)]
    #[command(name = "hcs-simd", version)]
    struct Args {
        #[command(flatten)]
        daemon: DaemonArgs,
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
        daemon::init_logging();
        match args.command {
            Some(Command::Ping) => daemon::ping("hcs-simd", &args.daemon),
            None => daemon::serve("hcs-simd", &args.daemon, &[hcs_simd::SUPERVISOR_ARG]),
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
