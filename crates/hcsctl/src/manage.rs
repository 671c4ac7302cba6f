//! The commands that manage compute systems living in a long-lived HCS, one call per
//! invocation: `create`, `start`, `exec`, `list`, `inspect`, `ps`, `kill`, `pause`, `resume`,
//! `stop`, `rm`, `wait` and `events`. On Linux and macOS that HCS is the simulated service
//! `hcs-simd` (see [`crate::driver`]); on Windows it is HCS itself through the V2 or V1 driver.
//! Every command opens the system by id, does its work and closes its handle: as with HCS, a
//! system outlives the process that created it unless its configuration says
//! `ShouldTerminateOnLastHandleClosed` (the default configuration of `create` does not).
//!
//! Errors name the id (and the pid); the exit codes are listed in [`crate::exit`]: 3 no such
//! compute system or process, 4 the system is in the wrong state for the request, 69 the service
//! is unreachable or went away, 124 a wait timed out, 125 any other HCS failure.

use crate::driver::{Selected, ServiceArgs};
use crate::exit::{self, CliError};
use crate::run::{escape, parse_grace, parse_id, parse_timeout, rfc3339, Limit, Shape};
use hcs::notify::Subscription;
use hcs::schema::{ContainerProperties, PropertyType};
use hcs::{NotificationKind, System};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `hcsctl create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Compute-system configuration (JSON, at most 1 MiB; `-` reads stdin); default: a
    /// process-isolated container that outlives hcsctl (see `hcsctl run --print-default-config`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Start the system once it is created.
    #[arg(long)]
    pub start: bool,
    /// Print `{"id": ...}` instead of the bare id.
    #[arg(long)]
    pub json: bool,
    /// The driver.
    #[command(flatten)]
    pub driver: ServiceArgs,
    /// Compute-system id (default: generated).
    #[arg(value_parser = parse_id)]
    pub id: Option<String>,
}

/// The commands that take one compute-system id and nothing else (`start`, `pause`, `resume`).
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// The driver.
    #[command(flatten)]
    pub driver: ServiceArgs,
    /// Compute-system id.
    #[arg(value_parser = parse_id)]
    pub id: String,
}

/// `hcsctl exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Keep stdin open and relay ours to the process (without it the process's stdin is closed).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a console (`EmulateConsole`) the size of our terminal, resized with
    /// it; our terminal is put in raw mode while it runs. There is no separate stderr.
    #[arg(short, long)]
    pub tty: bool,
    /// Kill the process after this long (e.g. 500ms, 10s); hcsctl then exits 124. 0: no limit.
    #[arg(long, value_name = "DUR", value_parser = parse_timeout)]
    pub timeout: Option<Limit>,
    /// Time between the forwarded interrupt and the kill.
    #[arg(long, value_name = "DUR", value_parser = parse_grace, default_value = "10s")]
    pub grace: Limit,
    /// The driver.
    #[command(flatten)]
    pub driver: ServiceArgs,
    /// Compute-system id.
    #[arg(value_parser = parse_id)]
    pub id: String,
    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

/// `hcsctl list`: id, type, state, owner, runtime OS and uptime (the uptime of the first 64
/// running systems only: each takes a statistics query).
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The driver.
    #[command(flatten)]
    pub driver: ServiceArgs,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// `hcsctl inspect` and `hcsctl ps`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The driver.
    #[command(flatten)]
    pub driver: ServiceArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Compute-system id.
    #[arg(value_parser = parse_id)]
    pub id: String,
}

/// `hcsctl kill`.
#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// Send this signal (`SignalProcess` with `{"Signal": N}`; a Windows guest takes 0 = CtrlC,
    /// 1 = CtrlBreak) instead of terminating the process.
    #[arg(long, short = 's', value_name = "N")]
    pub signal: Option<u32>,
    /// The driver.
    #[command(flatten)]
    pub driver: ServiceArgs,
    /// Compute-system id.
    #[arg(value_parser = parse_id)]
    pub id: String,
    /// Process id inside the system.
    pub pid: u32,
}

/// `hcsctl stop`.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// How long the system gets to shut down before it is terminated.
    #[arg(long, value_name = "DUR", value_parser = parse_grace, default_value = "10s")]
    pub grace: Limit,
    /// The driver.
    #[command(flatten)]
    pub driver: ServiceArgs,
    /// Compute-system id.
    #[arg(value_parser = parse_id)]
    pub id: String,
}

/// `hcsctl rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Terminate the system first if it is still running.
    #[arg(short, long)]
    pub force: bool,
    /// The driver.
    #[command(flatten)]
    pub driver: ServiceArgs,
    /// Compute-system id.
    #[arg(value_parser = parse_id)]
    pub id: String,
}

/// `hcsctl wait`.
#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Give up after this long (exit 124). 0: no limit.
    #[arg(long, value_name = "DUR", value_parser = parse_timeout)]
    pub timeout: Option<Limit>,
    /// Print the exit as JSON.
    #[arg(long)]
    pub json: bool,
    /// The driver.
    #[command(flatten)]
    pub driver: ServiceArgs,
    /// Compute-system id.
    #[arg(value_parser = parse_id)]
    pub id: String,
}

/// `hcsctl events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// The driver.
    #[command(flatten)]
    pub driver: ServiceArgs,
    /// Only this compute system (the stream then ends when it exits); default: every system,
    /// including those created later.
    #[arg(value_parser = parse_id)]
    pub id: Option<String>,
}

use exit::{NO_SUCH, WRONG_STATE};

/// Maps a library error of `what` (e.g. `start compute system "x"`) to a CLI error with the
/// exit code of its class.
fn failed(what: &str, e: &hcs::Error) -> CliError {
    let code = if e.is_service_disconnected() {
        exit::UNAVAILABLE
    } else if e.is_not_found() {
        NO_SUCH
    } else if e.is_invalid_state() || e.is_already_stopped() || e.is_already_exists() {
        WRONG_STATE
    } else if e.is_timeout() {
        exit::TIMED_OUT
    } else {
        exit::HCS_FAILED
    };
    CliError::new(code, format!("cannot {what}: {}", escape(&e.to_string())))
}

fn open(sel: &Selected, id: &str) -> Result<System, CliError> {
    System::open(sel.driver.clone(), id).map_err(|e| failed(&format!("open compute system {id:?}"), &e))
}

/// `create`: prints the new system's id.
pub fn create(args: &CreateArgs) -> Result<i32, CliError> {
    let config = match &args.config {
        Some(path) => {
            let (text, warning) = crate::config::load_config(path)?;
            if let Some(w) = warning {
                eprintln!("hcsctl: {}", escape(&w));
            }
            text
        }
        None => crate::config::persistent_document(),
    };
    if terminates_on_last_handle(&config) {
        eprintln!(
            "hcsctl: warning: the configuration sets ShouldTerminateOnLastHandleClosed: the system is terminated when this hcsctl exits"
        );
    }
    let sel = args.driver.select()?;
    let id = args.id.clone().unwrap_or_else(crate::run::default_id);
    let system = System::create(sel.driver.clone(), &id, &config)
        .map_err(|e| failed(&format!("create compute system {id:?}"), &e))?;
    if args.start {
        system
            .start()
            .map_err(|e| failed(&format!("start compute system {id:?}"), &e))?;
    }
    close(&system);
    let mut out = std::io::stdout().lock();
    let line = if args.json {
        serde_json::json!({ "id": id }).to_string()
    } else {
        id
    };
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| CliError::new(1, format!("write error on standard output: {e}")))?;
    Ok(0)
}

/// Whether a configuration asks HCS to terminate the system when its last handle closes.
fn terminates_on_last_handle(config: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(config)
        .ok()
        .and_then(|v| {
            v.get("ShouldTerminateOnLastHandleClosed")
                .and_then(|b| b.as_bool())
        })
        .unwrap_or(false)
}

/// Closes our handle; a failure is only logged (the service releases a client's handles when
/// it disconnects).
fn close(system: &System) {
    if let Err(e) = system.close() {
        tracing::debug!(error = %e, "close compute system");
    }
}

/// A state change that takes nothing but the system: `start`, `pause`, `resume`.
#[derive(Debug, Clone, Copy)]
pub enum Transition {
    /// `hcsctl start`.
    Start,
    /// `hcsctl pause`.
    Pause,
    /// `hcsctl resume`.
    Resume,
}

impl Transition {
    fn verb(self) -> &'static str {
        match self {
            Transition::Start => "start",
            Transition::Pause => "pause",
            Transition::Resume => "resume",
        }
    }
}

/// `start`, `pause` and `resume`.
pub fn transition(what: Transition, args: &IdArgs) -> Result<i32, CliError> {
    let sel = args.driver.select()?;
    let system = open(&sel, &args.id)?;
    let r = match what {
        Transition::Start => system.start(),
        Transition::Pause => system.pause(),
        Transition::Resume => system.resume(),
    };
    close(&system);
    r.map_err(|e| failed(&format!("{} compute system {:?}", what.verb(), args.id), &e))?;
    Ok(0)
}

/// `exec`: the command's exit code, as for `run`.
pub fn exec(args: ExecArgs) -> Result<i32, CliError> {
    let sel = args.driver.select()?;
    let system = open(&sel, &args.id)?;
    let console = if args.tty {
        Some(crate::run::terminal_size())
    } else {
        None
    };
    let shape = Shape {
        owns_system: false,
        stdin: args.interactive,
        console,
    };
    // The simulator's processes are host processes and take POSIX signal numbers whatever the
    // document says; HCS's guests take their own OS's.
    let signal_os = if cfg!(windows) {
        system.os()
    } else {
        "linux".to_owned()
    };
    let opts = crate::run::RunOptions {
        config: None,
        id: Some(args.id.clone()),
        timeout: args.timeout,
        grace: args.grace,
        faults: None,
        print_default_config: false,
        driver: crate::driver::DriverArgs {
            driver: args.driver.driver,
            socket: args.driver.socket.clone(),
        },
        json: false,
        command: args.command,
    };
    let raw = if args.tty { RawMode::enter() } else { None };
    let r = crate::run::exec_in(&system, &signal_os, &opts, shape);
    drop(raw);
    close(&system);
    r
}

/// Our stdin in raw mode while a console process runs (restored on drop).
struct RawMode {
    #[cfg(unix)]
    saved: rustix::termios::Termios,
}

impl RawMode {
    #[cfg(unix)]
    fn enter() -> Option<RawMode> {
        use rustix::termios::{tcgetattr, tcsetattr, OptionalActions};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
    #[cfg(not(unix))]
    fn enter() -> Option<RawMode> {
        None
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            use rustix::termios::{tcsetattr, OptionalActions};
            let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
        }
    }
}

/// Uptime from a properties document's statistics (`Uptime100ns`), when present.
fn uptime(p: &ContainerProperties) -> Option<Duration> {
    let ticks = p.statistics.as_ref()?.get("Uptime100ns")?.as_u64()?;
    (ticks > 0).then(|| Duration::from_nanos(ticks.saturating_mul(100)))
}

/// A duration the way `ps` shows it: `45s`, `12m03s`, `3h07m`, `2d04h`.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// How many running systems `list` queries for their uptime.
const UPTIME_QUERIES: usize = 64;

/// One row of `list --json` (serialised directly: no intermediate `Value` maps per row).
#[derive(serde::Serialize)]
struct ListRow<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    system_type: &'a str,
    state: &'a str,
    owner: &'a str,
    runtime_os_type: &'a str,
    stopped: bool,
    uptime_s: Option<f64>,
}

/// How many threads `list` spreads its statistics queries over (calls to the service are
/// independent; in flight together they do not wait for each other's round trips).
const UPTIME_THREADS: usize = 4;

/// The statistics of each system in `ids` (in order; `None` where a query fails), each by one
/// open, one properties query and one close straight through the driver, spread over
/// [`UPTIME_THREADS`] threads. (`System::open` would add a callback registration, a properties
/// query for its cache and their undoing: twice the calls.)
fn statistics_of(driver: &dyn hcs::Driver, ids: &[&str]) -> Vec<Option<serde_json::Value>> {
    let query = serde_json::to_string(&hcs::schema::PropertyQuery {
        property_types: vec![PropertyType::Statistics],
    })
    .unwrap_or_default();
    let one = |id: &str| -> Option<serde_json::Value> {
        let h = driver.open_compute_system(id).ok()?.value;
        let text = driver.get_compute_system_properties(h, &query);
        if let Err(e) = driver.close_compute_system(h) {
            tracing::debug!(error = %e, "close compute system");
        }
        let reply = text.ok().filter(|r| !r.pending)?;
        serde_json::from_str::<ContainerProperties>(&reply.value)
            .ok()?
            .statistics
    };
    if ids.len() < 2 * UPTIME_THREADS {
        return ids.iter().map(|id| one(id)).collect();
    }
    let chunk = ids.len().div_ceil(UPTIME_THREADS);
    std::thread::scope(|s| {
        let parts: Vec<_> = ids
            .chunks(chunk)
            .map(|part| {
                let h = s.spawn(move || part.iter().map(|id| one(id)).collect::<Vec<_>>());
                (part.len(), h)
            })
            .collect();
        // A chunk whose thread failed keeps its place (no uptime for its systems), so every
        // later result stays with its own system.
        parts
            .into_iter()
            .flat_map(|(n, h)| h.join().unwrap_or_else(|_| vec![None; n]))
            .collect()
    })
}

/// `list`.
pub fn list(args: &ListArgs) -> Result<i32, CliError> {
    let sel = args.driver.select()?;
    let mut systems = hcs::enumerate(&*sel.driver, &hcs_schema::ComputeSystemQuery::default())
        .map_err(|e| failed("list compute systems", &e))?;
    // HCS's enumeration has no start times: the uptime takes one statistics query per running
    // system, so it is shown for the first [`UPTIME_QUERIES`] of them only (a list of thousands
    // stays one call).
    let wanted: Vec<usize> = systems
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.stopped && s.statistics.is_none())
        .map(|(i, _)| i)
        .take(UPTIME_QUERIES)
        .collect();
    let ids: Vec<&str> = wanted.iter().map(|&i| systems[i].id.as_str()).collect();
    let stats = statistics_of(&*sel.driver, &ids);
    for (i, st) in wanted.into_iter().zip(stats) {
        systems[i].statistics = st;
    }
    let mut text = String::new();
    if args.json {
        let rows: Vec<ListRow<'_>> = systems
            .iter()
            .map(|s| ListRow {
                id: &s.id,
                system_type: &s.system_type,
                state: &s.state,
                owner: &s.owner,
                runtime_os_type: &s.runtime_os_type,
                stopped: s.stopped,
                uptime_s: uptime(s).map(|d| d.as_secs_f64()),
            })
            .collect();
        text = serde_json::to_string(&rows)
            .map_err(|e| CliError::new(1, format!("cannot write the list: {e}")))?;
        text.push('\n');
    } else {
        use std::fmt::Write as _;
        let _ = writeln!(
            text,
            "{:<40} {:<16} {:<10} {:<12} {:<8} UPTIME",
            "ID", "TYPE", "STATE", "OWNER", "RUNTIME"
        );
        for s in &systems {
            let up = uptime(s).map_or_else(|| "-".to_owned(), short_duration);
            let _ = writeln!(
                text,
                "{:<40} {:<16} {:<10} {:<12} {:<8} {up}",
                escape(&s.id),
                escape(&s.system_type),
                escape(&s.state),
                escape(&s.owner),
                if s.runtime_os_type.is_empty() {
                    "-"
                } else {
                    &s.runtime_os_type
                }
            );
        }
    }
    print_out(&text)
}

fn print_out(text: &str) -> Result<i32, CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(141),
        Err(e) => Err(CliError::new(1, format!("write error on standard output: {e}"))),
    }
}

/// `inspect`: the system's properties with statistics and the process list.
pub fn inspect(args: &InspectArgs) -> Result<i32, CliError> {
    let sel = args.driver.select()?;
    let system = open(&sel, &args.id)?;
    let props = system.properties(&[PropertyType::Statistics, PropertyType::ProcessList]);
    close(&system);
    let props = props.map_err(|e| failed(&format!("query compute system {:?}", args.id), &e))?;
    if args.json {
        let v = serde_json::to_value(&props).map_err(|e| CliError::new(exit::HCS_FAILED, e.to_string()))?;
        let mut text = serde_json::to_string_pretty(&v).unwrap_or_default();
        text.push('\n');
        return print_out(&text);
    }
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(text, "Id:        {}", escape(&props.id));
    let _ = writeln!(text, "Type:      {}", escape(&props.system_type));
    let _ = writeln!(text, "State:     {}", escape(&props.state));
    let _ = writeln!(text, "Owner:     {}", escape(&props.owner));
    if !props.runtime_os_type.is_empty() {
        let _ = writeln!(text, "Runtime:   {}", escape(&props.runtime_os_type));
    }
    if props.stopped {
        let _ = writeln!(text, "Exit type: {}", escape(&props.exit_type));
    }
    if let Some(up) = uptime(&props) {
        let _ = writeln!(text, "Uptime:    {}", short_duration(up));
    }
    if let Some(stats) = &props.statistics {
        let pick = |a: &str, b: &str| stats.get(a).and_then(|x| x.get(b)).and_then(|x| x.as_u64());
        if let Some(cpu) = pick("Processor", "TotalRuntime100ns") {
            let _ = writeln!(text, "CPU time:  {:.3}s", cpu as f64 / 1e7);
        }
        if let Some(mem) = pick("Memory", "MemoryUsageCommitBytes") {
            let _ = writeln!(text, "Memory:    {} KiB committed", mem / 1024);
        }
    }
    let _ = writeln!(text, "Processes: {}", props.process_list.len());
    push_process_table(&mut text, &props);
    print_out(&text)
}

fn push_process_table(text: &mut String, props: &ContainerProperties) {
    use std::fmt::Write as _;
    let _ = writeln!(text, "{:>8} {:>10} {:>12}  IMAGE", "PID", "CPU", "MEMORY");
    for p in &props.process_list {
        let cpu = (p.user_time_100ns + p.kernel_time_100ns) as f64 / 1e7;
        let _ = writeln!(
            text,
            "{:>8} {:>9.2}s {:>9} KiB  {}",
            p.process_id,
            cpu,
            p.memory_commit_bytes / 1024,
            escape(&p.image_name)
        );
    }
}

/// `ps`: the process list.
pub fn ps(args: &InspectArgs) -> Result<i32, CliError> {
    let sel = args.driver.select()?;
    let system = open(&sel, &args.id)?;
    let props = system.properties(&[PropertyType::ProcessList]);
    close(&system);
    let props = props.map_err(|e| failed(&format!("query compute system {:?}", args.id), &e))?;
    if args.json {
        let v = serde_json::to_value(&props.process_list)
            .map_err(|e| CliError::new(exit::HCS_FAILED, e.to_string()))?;
        return print_out(&format!("{v}\n"));
    }
    let mut text = String::new();
    push_process_table(&mut text, &props);
    print_out(&text)
}

/// `kill`: terminates (or signals) one process of a system.
pub fn kill(args: &KillArgs) -> Result<i32, CliError> {
    let sel = args.driver.select()?;
    let system = open(&sel, &args.id)?;
    let what = format!("process {} in compute system {:?}", args.pid, args.id);
    let r = system
        .open_process(args.pid)
        .map_err(|e| failed(&format!("open {what}"), &e))
        .and_then(|p| {
            let r = match args.signal {
                Some(n) => p
                    .signal(&serde_json::json!({ "Signal": n }).to_string())
                    .map_err(|e| failed(&format!("signal {what}"), &e))
                    .and_then(|delivered| {
                        if delivered {
                            Ok(())
                        } else {
                            Err(CliError::new(
                                WRONG_STATE,
                                format!("cannot signal {what}: it has exited"),
                            ))
                        }
                    }),
                None => p.terminate().map_err(|e| failed(&format!("kill {what}"), &e)),
            };
            let _ = p.close();
            r
        });
    close(&system);
    r.map(|()| 0)
}

/// Shows progress on a terminal while a long wait runs (`stop`).
struct Progress {
    on: bool,
    shown: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            on: std::io::stderr().is_terminal(),
            shown: false,
        }
    }
    fn show(&mut self, msg: &str) {
        if self.on {
            eprint!("\r\x1b[2K{msg}");
            self.shown = true;
        }
    }
    fn done(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
            self.shown = false;
        }
    }
}

/// Waits for `system` to exit, up to `limit` (`None`: no limit), showing progress.
fn wait_with_progress(
    system: &System,
    limit: Option<Duration>,
    what: &str,
    progress: &mut Progress,
) -> hcs::Result<()> {
    let started = Instant::now();
    let tick = Duration::from_millis(250);
    loop {
        let left = limit.map(|l| l.saturating_sub(started.elapsed()));
        let step = left.map_or(tick, |l| l.min(tick));
        match system.wait_timeout(step) {
            Err(e) if e.is_timeout() && left.is_none_or(|l| l > step) => {
                progress.show(&format!("{what} ({:.0}s)", started.elapsed().as_secs_f64()));
            }
            r => return r,
        }
    }
}

/// How long `stop` waits for the exit after a terminate.
const TERMINATE_WAIT: Duration = Duration::from_secs(10);

/// `stop`: shutdown, wait `--grace`, then terminate.
pub fn stop(args: &StopArgs) -> Result<i32, CliError> {
    let sel = args.driver.select()?;
    let system = open(&sel, &args.id)?;
    let r = stop_system(&system, args.grace.0);
    close(&system);
    r.map(|()| 0)
}

fn stop_system(system: &System, grace: Option<Duration>) -> Result<(), CliError> {
    let id = system.id().to_owned();
    let mut progress = Progress::new();
    let shut = system.shutdown();
    let graceful = match shut {
        Ok(()) => match wait_with_progress(system, grace, &format!("stopping {id:?}"), &mut progress) {
            Ok(()) => true,
            Err(e) if e.is_timeout() => false,
            Err(e) if e.is_service_disconnected() => {
                progress.done();
                return Err(failed(&format!("stop compute system {id:?}"), &e));
            }
            Err(_) if system.exit_status().is_some() => true,
            Err(e) => {
                tracing::debug!(error = %e, "wait after shutdown");
                false
            }
        },
        Err(e) if e.is_service_disconnected() || e.is_not_found() => {
            return Err(failed(&format!("stop compute system {id:?}"), &e));
        }
        Err(e) => {
            tracing::debug!(error = %e, "shutdown failed; terminating");
            false
        }
    };
    if !graceful && system.exit_status().is_none() {
        if let Err(e) = system.terminate() {
            progress.done();
            return Err(failed(&format!("terminate compute system {id:?}"), &e));
        }
        if let Err(e) = wait_with_progress(
            system,
            Some(TERMINATE_WAIT),
            &format!("terminating {id:?}"),
            &mut progress,
        ) {
            progress.done();
            return Err(failed(&format!("wait for compute system {id:?} to stop"), &e));
        }
    }
    progress.done();
    Ok(())
}

/// `rm`: removes a stopped system (with `-f`, terminates a running one first). HCS forgets a
/// stopped system when its last handle closes: `rm` waits for the stop and closes its handle.
pub fn rm(args: &RmArgs) -> Result<i32, CliError> {
    let sel = args.driver.select()?;
    let system = open(&sel, &args.id)?;
    let r = (|| {
        let props = system
            .properties(&[])
            .map_err(|e| failed(&format!("query compute system {:?}", args.id), &e))?;
        if !props.stopped && system.exit_status().is_none() {
            if !args.force {
                return Err(CliError::new(
                    WRONG_STATE,
                    format!(
                        "compute system {:?} is {}: stop it first or use rm -f",
                        args.id,
                        escape(&props.state)
                    ),
                ));
            }
            if let Err(e) = system.terminate() {
                return Err(failed(&format!("terminate compute system {:?}", args.id), &e));
            }
            system
                .wait_timeout(TERMINATE_WAIT)
                .map_err(|e| failed(&format!("wait for compute system {:?} to stop", args.id), &e))?;
        }
        Ok(())
    })();
    close(&system);
    r.map(|()| 0)
}

/// `wait`: until the system exits; 0 for a clean exit, 1 for an unexpected one (crash).
pub fn wait(args: &WaitArgs) -> Result<i32, CliError> {
    let sel = args.driver.select()?;
    let system = open(&sel, &args.id)?;
    let limit = args.timeout.and_then(|l| l.0);
    let r = match limit {
        Some(l) => system.wait_timeout(l),
        None => system.wait(),
    };
    let exit = system.exit_status();
    let stopped_at = system.stopped_at();
    close(&system);
    if let Err(e) = &r {
        if e.is_timeout() {
            return Err(CliError::new(
                exit::TIMED_OUT,
                format!("compute system {:?} did not exit in time", args.id),
            ));
        }
        if exit.is_none() {
            return Err(failed(&format!("wait for compute system {:?}", args.id), e));
        }
    }
    let unexpected = exit.as_ref().is_some_and(|x| x.unexpected);
    let exit_type = exit.as_ref().and_then(|x| x.exit_type).map(|t| t.as_str());
    let text = if args.json {
        serde_json::json!({
            "id": args.id,
            "exit_type": exit_type,
            "unexpected": unexpected,
            "status": exit.as_ref().map(|x| x.status.to_string()),
            "stopped_at": rfc3339(stopped_at),
        })
        .to_string()
            + "\n"
    } else {
        format!("{} {}\n", escape(&args.id), exit_type.unwrap_or("exited"))
    };
    print_out(&text)?;
    Ok(if unexpected { 1 } else { 0 })
}

/// One notification seen by `events`.
struct Seen {
    id: String,
    pid: Option<u32>,
    kind: NotificationKind,
    status: hcs::HResult,
    payload: Option<String>,
}

/// The watch on one system: its handle and callback registration (released on drop).
struct Watch {
    driver: std::sync::Arc<dyn hcs::Driver>,
    handle: hcs::SystemHandle,
    callback: Option<hcs::CallbackHandle>,
    /// The notification context the callback delivers to; kept until the watch ends.
    sub: Subscription,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(cb) = self.callback.take() {
            let _ = self.driver.unregister_compute_system_callback(cb);
        }
        let _ = self.driver.close_compute_system(self.handle);
    }
}

fn watch(sel: &Selected, id: &str, tx: &mpsc::Sender<Seen>) -> Result<Watch, hcs::Failure> {
    let handle = sel.driver.open_compute_system(id)?.value;
    let (tx, sid) = (tx.clone(), id.to_owned());
    // Runs on the driver's notification thread: only a channel send, which never blocks.
    let sub = Subscription::new(move |kind, status, payload| {
        let _ = tx.send(Seen {
            id: sid.clone(),
            pid: None,
            kind,
            status,
            payload: payload.map(str::to_owned),
        });
    });
    let mut w = Watch {
        driver: sel.driver.clone(),
        handle,
        callback: None,
        sub,
    };
    // Registered after the watch exists, so that its drop closes the handle if this fails.
    w.callback = Some(
        sel.driver
            .register_compute_system_callback(handle, w.sub.context())?,
    );
    Ok(w)
}

/// `events`: a live stream of the notifications of one system or of all of them.
pub fn events(args: &EventsArgs) -> Result<i32, CliError> {
    let sel = args.driver.select()?;
    let (tx, rx) = mpsc::channel::<Seen>();
    let mut watches: std::collections::HashMap<String, Watch> = std::collections::HashMap::new();
    let refresh = |watches: &mut std::collections::HashMap<String, Watch>| -> Result<(), CliError> {
        match &args.id {
            Some(id) => {
                if watches.is_empty() {
                    let w = watch(&sel, id, &tx).map_err(|f| {
                        let e = hcs::Error::from_failure(&f);
                        failed(&format!("watch compute system {id:?}"), &e)
                    })?;
                    watches.insert(id.clone(), w);
                }
            }
            None => {
                let systems = hcs::enumerate(&*sel.driver, &hcs_schema::ComputeSystemQuery::default())
                    .map_err(|e| failed("list compute systems", &e))?;
                for s in systems {
                    if s.stopped || watches.contains_key(&s.id) {
                        continue;
                    }
                    // A system that went away between the list and the open is not an error.
                    if let Ok(w) = watch(&sel, &s.id, &tx) {
                        watches.insert(s.id.clone(), w);
                    }
                }
            }
        }
        Ok(())
    };
    refresh(&mut watches)?;
    let mut out = std::io::stdout().lock();
    let poll = Duration::from_millis(250);
    loop {
        let seen = match rx.recv_timeout(poll) {
            Ok(s) => s,
            Err(_) => {
                refresh(&mut watches)?;
                continue;
            }
        };
        let line = if args.json {
            let payload = seen
                .payload
                .as_deref()
                .map(|p| serde_json::from_str::<serde_json::Value>(p).unwrap_or_else(|_| p.into()));
            serde_json::json!({
                "time": rfc3339(Some(std::time::SystemTime::now())),
                "id": seen.id, "pid": seen.pid, "type": seen.kind.to_string(),
                "status": seen.status.to_string(), "payload": payload,
            })
            .to_string()
        } else {
            let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
            let mut l = format!("{time} {} {}", escape(&seen.id), seen.kind);
            if seen.status.is_failure() {
                l.push_str(&format!(" status={}", seen.status));
            }
            if let Some(p) = seen.payload.as_deref().filter(|p| !p.is_empty()) {
                l.push(' ');
                l.push_str(&escape(p));
            }
            l
        };
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            return if e.kind() == std::io::ErrorKind::BrokenPipe {
                Ok(141)
            } else {
                Err(CliError::new(1, format!("write error on standard output: {e}")))
            };
        }
        match seen.kind {
            NotificationKind::ServiceDisconnect => {
                return Err(CliError::new(
                    exit::UNAVAILABLE,
                    "lost the connection to the compute service",
                ));
            }
            NotificationKind::SystemExited => {
                watches.remove(&seen.id);
                if args.id.is_some() {
                    return Ok(0);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_ps() {
        assert_eq!(short_duration(Duration::from_secs(45)), "45s");
        assert_eq!(short_duration(Duration::from_secs(12 * 60 + 3)), "12m03s");
        assert_eq!(short_duration(Duration::from_secs(3 * 3600 + 7 * 60)), "3h07m");
        assert_eq!(
            short_duration(Duration::from_secs(2 * 86_400 + 4 * 3600)),
            "2d04h"
        );
    }

    #[test]
    fn terminate_on_last_handle_is_read_from_the_configuration() {
        assert!(terminates_on_last_handle(
            r#"{"ShouldTerminateOnLastHandleClosed":true}"#
        ));
        assert!(!terminates_on_last_handle(
            r#"{"ShouldTerminateOnLastHandleClosed":false}"#
        ));
        assert!(!terminates_on_last_handle("{}"));
        assert!(!terminates_on_last_handle(&crate::config::persistent_document()));
        assert!(terminates_on_last_handle(&crate::config::default_document()));
    }
}
