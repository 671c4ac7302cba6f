//! Choosing the driver behind a command.
//!
//! * `auto` (the default): on Linux and macOS the simulator (`hcs-sim`) with its host-process
//!   backend, which really runs the command lines; on Windows the native driver chosen by
//!   `hcs-native` (V2 when `computecore.dll` loads with its exports, else V1).
//! * `sim`: the in-process simulator (its host-process backend needs a Unix host); what it runs
//!   lives as long as this `hcsctl`.
//! * `service`: the simulated HCS service `hcs-simd` over its Unix socket (`--socket`,
//!   `HCS_SIM_SOCKET`, else `$XDG_RUNTIME_DIR/hcs-sim/hcs.sock`, else `/run/hcs-sim/hcs.sock`).
//!   For the commands that manage systems across invocations (`create`, `exec`, `list`, …) it is
//!   what `auto` means on Linux and macOS; `run` uses it only when asked (`--driver service`).
//! * `vmcompute` / `computecore`: the V1 / V2 FFI drivers, which load their DLL at run time; on
//!   a host without the DLL (every non-Windows host) they are reported as unavailable (exit 69)
//!   with the loader's reason.

use crate::exit::{CliError, UNAVAILABLE};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `--driver` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverChoice {
    /// The simulator on Linux/macOS; the native driver on Windows.
    Auto,
    /// The in-process simulator with the host-process backend.
    Sim,
    /// The simulated HCS service (`hcs-simd`) over its Unix socket.
    Service,
    /// The V1 driver over `vmcompute.dll`.
    Vmcompute,
    /// The V2 driver over `computecore.dll`.
    Computecore,
}

impl DriverChoice {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DriverChoice::Auto => "auto",
            DriverChoice::Sim => "sim",
            DriverChoice::Service => "service",
            DriverChoice::Vmcompute => "vmcompute",
            DriverChoice::Computecore => "computecore",
        }
    }
}

/// The `--driver` option, shared by every subcommand that talks to HCS.
#[derive(Debug, Clone, clap::Args)]
pub struct DriverArgs {
    /// Driver: auto (in-process simulator on Linux/macOS), sim, service (hcs-simd), vmcompute
    /// (V1), computecore (V2).
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    pub driver: DriverChoice,
    /// The hcs-simd socket for `--driver service` (default: $HCS_SIM_SOCKET, else
    /// $XDG_RUNTIME_DIR/hcs-sim/hcs.sock, else /run/hcs-sim/hcs.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// The driver options of the commands that manage systems living in a service (`create`,
/// `exec`, `list`, …): there `auto` is the `hcs-simd` service on Linux and macOS.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Driver: auto (the hcs-simd service on Linux/macOS, the native driver on Windows),
    /// service, sim (in-process: starts empty, forgets everything at exit), vmcompute (V1),
    /// computecore (V2).
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    pub driver: DriverChoice,
    /// The hcs-simd socket (default: $HCS_SIM_SOCKET, else $XDG_RUNTIME_DIR/hcs-sim/hcs.sock,
    /// else /run/hcs-sim/hcs.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

impl ServiceArgs {
    /// Resolves the driver: `auto` is the service off Windows.
    pub fn select(&self) -> Result<Selected, CliError> {
        let choice = match self.driver {
            DriverChoice::Auto if !cfg!(windows) => DriverChoice::Service,
            other => other,
        };
        select_with(choice, None, self.socket.as_deref())
    }
}

/// Connects to the `hcs-simd` service at `socket` (else the default path).
fn connect_service(socket: Option<&Path>) -> Result<Arc<dyn hcs::Driver>, CliError> {
    service_client(socket)
}

/// A driver ready for use.
pub struct Selected {
    /// The driver.
    pub driver: Arc<dyn hcs::Driver>,
    /// The simulator, when the driver is one (kept for its handle accounting).
    pub sim: Option<Arc<hcs_sim::Simulator>>,
}

fn unavailable_because(name: &str, why: &dyn std::fmt::Display) -> CliError {
    CliError::new(
        UNAVAILABLE,
        format!("driver '{name}' is unavailable on this platform ({why})"),
    )
}

/// Resolves `choice` into a driver; `faults` is installed into the simulator (and rejected
/// with exit 69 for a driver that cannot inject faults).
pub fn select(args: &DriverArgs, faults: Option<hcs_sim::FaultPlan>) -> Result<Selected, CliError> {
    select_with(args.driver, faults, args.socket.as_deref())
}

fn select_with(
    choice: DriverChoice,
    faults: Option<hcs_sim::FaultPlan>,
    socket: Option<&Path>,
) -> Result<Selected, CliError> {
    if choice == DriverChoice::Service {
        if faults.is_some() {
            return Err(CliError::new(
                UNAVAILABLE,
                "--faults needs the in-process simulator; give a fault plan to the service when it starts (hcsctl daemon --faults FILE)",
            ));
        }
        let driver = connect_service(socket)?;
        tracing::debug!(driver = "service", "driver selected");
        return Ok(Selected { driver, sim: None });
    }
    if choice == DriverChoice::Auto && cfg!(windows) {
        // The library's choice (hcs-native): V2 where computecore.dll loads, else V1.
        let driver = hcs_native::driver().map_err(|e| unavailable_because("auto", &e))?;
        if faults.is_some() {
            return Err(CliError::new(
                UNAVAILABLE,
                format!(
                    "--faults needs the simulator; driver '{}' cannot inject faults",
                    driver.name()
                ),
            ));
        }
        return Ok(Selected { driver, sim: None });
    }
    let resolved = match choice {
        DriverChoice::Auto => DriverChoice::Sim,
        other => other,
    };
    if resolved != DriverChoice::Sim {
        let driver: Arc<dyn hcs::Driver> = match resolved {
            DriverChoice::Vmcompute => hcs_vmcompute::VmComputeDriver::load()
                .map(|d| d as Arc<dyn hcs::Driver>)
                .map_err(|e| unavailable_because(resolved.name(), &e))?,
            _ => hcs_computecore::ComputeCoreDriver::load()
                .map(|d| d as Arc<dyn hcs::Driver>)
                .map_err(|e| unavailable_because(resolved.name(), &e))?,
        };
        if faults.is_some() {
            return Err(CliError::new(
                UNAVAILABLE,
                format!(
                    "--faults needs the simulator; driver '{}' cannot inject faults",
                    resolved.name()
                ),
            ));
        }
        tracing::debug!(driver = resolved.name(), "driver selected");
        return Ok(Selected { driver, sim: None });
    }
    // An interactive tool wants the command's exit as soon as it happens, and its own overhead
    // small: no modelled notification latency, and every pending-capable call answers
    // synchronously (no `*Completed` round trip through the simulator's thread; a fault plan's
    // "pending" rules still make a call pend). Exits still arrive as notifications from the
    // simulator's service thread. On Linux that thread waits on pidfds and sees an exit at once;
    // elsewhere it looks every 250 µs while a child runs.
    // The V2 generation: its `ProcessExited` notification carries the exit code, so no extra
    // query (and no worker thread) is needed to learn it.
    let mut config = hcs_sim::SimConfig::default()
        .generation(hcs::ApiGeneration::V2)
        .latency(std::time::Duration::ZERO)
        .all_sync()
        .reap_interval(std::time::Duration::from_micros(250));
    if let Some(plan) = faults {
        config = config.faults(plan);
    }
    // Containment (Linux): each compute system's processes run under a supervisor, this very
    // executable re-executed with the hidden first argument (`/proc/self/exe` names this
    // binary even if its file was replaced since). The whole process tree of the system, in a
    // session of its own without a terminal, dies when the system stops and when hcsctl dies.
    if cfg!(target_os = "linux") {
        config = config.supervisor(
            hcs_sim::SupervisorProgram::new("/proc/self/exe").arg(hcs_sim::supervisor::HCSCTL_ARG),
        );
    }
    let sim = hcs_sim::Simulator::try_new(config)
        .map_err(|e| CliError::new(crate::exit::DATA_ERR, format!("invalid fault plan: {e}")))?;
    tracing::debug!(driver = "sim", "driver selected");
    Ok(Selected {
        driver: sim.clone(),
        sim: Some(sim),
    })
}

/// The client of the `hcs-simd` service at `socket` (else its default path).
#[cfg(unix)]
fn service_client(socket: Option<&Path>) -> Result<Arc<dyn hcs::Driver>, CliError> {
    let path = socket.map_or_else(hcs_simd::default_socket_path, Path::to_path_buf);
    match hcs_simd::ClientDriver::connect(&path) {
        Ok(d) => Ok(d),
        Err(hcs_simd::ConnectError::Refused(why)) => Err(CliError::new(
            UNAVAILABLE,
            format!("the hcs-simd service at {} refused this client: {why}", path.display()),
        )),
        Err(e) => Err(CliError::new(
            UNAVAILABLE,
            format!("{e} (start the service with `hcsctl daemon`, or name its socket with --socket or HCS_SIM_SOCKET)"),
        )),
    }
}

/// Off Unix there is no simulated service.
#[cfg(not(unix))]
fn service_client(_socket: Option<&Path>) -> Result<Arc<dyn hcs::Driver>, CliError> {
    Err(CliError::new(
        UNAVAILABLE,
        "driver 'service' (the hcs-simd service) needs a Unix host",
    ))
}
