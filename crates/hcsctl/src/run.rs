//! `hcsctl run`: run one command in a fresh compute system, attached to the terminal.
//!
//! 1. Every input is checked before anything is created: the command line, the configuration
//!    (default: a process-isolated container, schema 2.1, owner `hcsctl`,
//!    `ShouldTerminateOnLastHandleClosed: true`), the fault plan and the driver.
//! 2. The system is created and started (Ctrl-C during start cancels it), and the process is
//!    created with stdin, stdout and stderr pipes. Our stdin is copied to the process (its stdin
//!    is closed at our EOF, at once when our stdin is `/dev/null`), and its stdout and stderr to
//!    ours, unbuffered (see [`crate::io`]: on Unix one thread handles the interrupts and every
//!    stream). The exit is noticed through the process's wait future, without a thread.
//! 3. While it runs: the first interrupt is forwarded as the same signal — Ctrl-C as
//!    `{"Signal":2}`, SIGTERM as `{"Signal":15}`, SIGHUP as `{"Signal":1}` (a Windows guest gets
//!    0 = CtrlC for Ctrl-C and 1 = CtrlBreak otherwise; a system shutdown when the driver cannot
//!    signal); a second one, or the end of the grace period (`--grace`, default 10 s), kills it.
//!    When `--timeout` expires (it bounds the whole run, create and start included) the process
//!    is killed and `hcsctl` exits 124. After a second interrupt or a SIGTERM, a driver call that
//!    stays blocked is abandoned and `hcsctl` exits `128 + signal`.
//! 4. After the exit the output relays are drained (bounded, in case a background descendant
//!    keeps a pipe open), the system is shut down (terminated if it does not stop within 5 s)
//!    and closed, and `hcsctl` exits with the command's exit code (see [`crate::exit`]). When
//!    the system itself exited unexpectedly (crash), that is reported on stderr and the exit
//!    code is still the command's (the simulator reports its killed process as 137).
//!
//! With `--json` one JSON object is printed on stdout as the **last line**, after all of the
//! command's relayed output: `{"system_id","pid","exit_code","exit_type","started_at",
//! "stopped_at","duration_ms","timed_out","interrupted","error"}` — times in RFC 3339 (UTC),
//! `exit_code` the full 32-bit code or `null` when unknown, `exit_type` the system's exit type,
//! `error` the failure message or `null`. It is printed on every path (failures included) and
//! always on a line of its own. When our own stdout or stderr fails, the command's end of that
//! stream is closed (it sees `EPIPE`); see [`crate::exit`] for the resulting exit code.

use crate::config::{default_document, load_config, load_fault_plan};
use crate::driver::{self, DriverArgs};
use crate::exit::{self, CliError};
use crate::io::{Event, Interrupts, Io, Streams};
use hcs::{CallOptions, CancelToken, ExitCode, HResult, Process, ProcessWait, System, Timeouts};
use hcs_schema::cmdline::join_command_line;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// How long a system gets to stop after a shutdown (and again after a terminate).
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How long to wait for the exit after a kill before giving up on the process.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long to wait for the output relays to drain after the process exited.
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// Durations beyond this (about 100 years) mean "no limit": an `Instant` cannot hold much more.
const NO_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses `--timeout`: a humantime duration; `0` and anything beyond [`NO_LIMIT`] mean no limit
/// (`None`), as `0` does for coreutils `timeout`.
pub(crate) fn parse_timeout(s: &str) -> Result<Limit, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    Ok(Limit(Some(d).filter(|d| !d.is_zero() && *d <= NO_LIMIT)))
}

/// A time limit; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<Duration>);

/// Parses `--grace`: a humantime duration; anything beyond [`NO_LIMIT`] means no limit (`None`:
/// the command is only killed by a second interrupt).
pub(crate) fn parse_grace(s: &str) -> Result<Limit, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    Ok(Limit(Some(d).filter(|d| *d <= NO_LIMIT)))
}

/// Parses `--id`: not empty, no control characters (it ends up in messages and HCS's logs).
pub(crate) fn parse_id(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the compute-system id must not be empty".into());
    }
    if s.chars().any(char::is_control) {
        return Err(format!("the compute-system id {s:?} contains control characters"));
    }
    Ok(s.to_owned())
}

/// The help text of `hcsctl run` about limits, after the exit codes.
pub const RUN_HELP: &str = "\
Time limits:
  --timeout bounds the whole run: creating and starting the compute system as well as the
  command. Without it, creating and starting each wait at most 4 minutes, or what the
  environment variables HCSSHIM_TIMEOUT_SYSTEMCREATE and HCSSHIM_TIMEOUT_SYSTEMSTART say
  (whole seconds); the shortest limit wins.";

/// Options of `hcsctl run` (parsed by clap directly: one type, no field-by-field copy).
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// Compute-system configuration (JSON, at most 1 MiB; `-` reads stdin); default: a
    /// process-isolated container (see --print-default-config).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Compute-system id (default: generated; not empty, no control characters).
    #[arg(long, value_parser = parse_id)]
    pub id: Option<String>,
    /// Limit the whole run (create, start and the command) to this long (e.g. 500ms, 10s, 2m):
    /// the command is killed and hcsctl exits 124. 0 means no limit.
    #[arg(long, value_name = "DUR", value_parser = parse_timeout)]
    pub timeout: Option<Limit>,
    /// Time between the forwarded interrupt and the kill.
    #[arg(long, value_name = "DUR", value_parser = parse_grace, default_value = "10s")]
    pub grace: Limit,
    /// Simulator fault plan (JSON, at most 1 MiB; `-` reads stdin) to inject.
    #[arg(long, value_name = "FILE")]
    pub faults: Option<PathBuf>,
    /// Print the default compute-system configuration and exit.
    #[arg(long, exclusive = true)]
    pub print_default_config: bool,
    /// The driver.
    #[command(flatten)]
    pub driver: DriverArgs,
    /// Print a JSON summary as the last line of stdout, after the command's output.
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments.
    #[arg(
        required_unless_present = "print_default_config",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

/// Sends [`Event::Exited`] (once) when woken; runs on the driver's notification thread, so it
/// only does a non-blocking channel send.
struct ExitWaker(Mutex<Option<Sender<Event>>>);

impl Wake for ExitWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let tx = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(Event::Exited);
        }
    }
}

/// Arranges for [`Event::Exited`] on `tx` when `process` exits (at once if it has). The
/// returned future must be kept alive until then.
fn arm_exit_event(process: &Process, tx: &Sender<Event>) -> Pin<Box<ProcessWait>> {
    let mut wait = Box::pin(process.wait_async());
    let waker = Waker::from(Arc::new(ExitWaker(Mutex::new(Some(tx.clone())))));
    if wait.as_mut().poll(&mut Context::from_waker(&waker)).is_ready() {
        waker.wake();
    }
    wait
}

/// Where the supervisor's events come from: every [`Event`] arrives on `rx`; interrupts (caught
/// by `io`, which also relays the streams) cancel `cancel`, the token of a start in progress.
struct Events {
    tx: Sender<Event>,
    rx: Receiver<Event>,
    cancel: CancelToken,
    io: Io,
}

impl Events {
    /// Installs the interrupt handling.
    fn start() -> Events {
        let (tx, rx) = mpsc::channel();
        let cancel = CancelToken::new();
        let io = Io::start(Interrupts::new(tx.clone(), cancel.clone()));
        Events { tx, rx, cancel, io }
    }
}

/// Runs the command; returns `hcsctl`'s exit code, or an error with its own exit code. With
/// `--json` a summary is printed on every path, failures included (`"error"`).
pub fn run(opts: RunOptions) -> Result<i32, CliError> {
    if opts.print_default_config {
        let mut out = std::io::stdout().lock();
        let text = crate::config::default_document_pretty();
        return match writeln!(out, "{text}").and_then(|()| out.flush()) {
            Ok(()) => Ok(0),
            Err(e) => Err(write_error("stdout", &e)),
        };
    }
    let started = Instant::now();
    let id = opts.id.clone().unwrap_or_else(default_id);
    let mut summary = Summary::new(&id);
    let result = run_checked(&opts, &id, started, &mut summary);
    if opts.json {
        if let Err(e) = &result {
            summary.error = Some(e.message.clone());
        }
        summary.print();
    }
    result
}

fn run_checked(
    opts: &RunOptions,
    id: &str,
    started: Instant,
    summary: &mut Summary,
) -> Result<i32, CliError> {
    let command_line = join_command_line(&opts.command).map_err(|e| CliError::new(2, e.to_string()))?;
    let config = match &opts.config {
        Some(path) => {
            let (text, warning) = load_config(path)?;
            if let Some(w) = warning {
                eprintln!("hcsctl: {}", escape(&w));
            }
            text
        }
        None => default_document(),
    };
    let faults = opts.faults.as_deref().map(load_fault_plan).transpose()?;
    let selected = driver::select(&opts.driver, faults)?;
    if let Some(sim) = &selected.sim {
        // The system's supervisor starts now, alongside our own set-up (signals, I/O thread,
        // create, start), rather than when the process is created.
        sim.prepare_supervisor();
    }
    let deadline = opts
        .timeout
        .and_then(|l| l.0)
        .and_then(|t| started.checked_add(t));
    let mut result = run_with_driver(&selected, opts, id, &config, &command_line, deadline, summary);
    if let Some(sim) = &selected.sim {
        if let Some(note) = report_leaks(sim) {
            match &mut result {
                Err(e) => e.notes.push(note),
                Ok(_) => eprintln!("hcsctl: {}", escape(&note)),
            }
        }
    }
    result
}

/// The `--json` summary, filled in as the run gets along.
struct Summary {
    system_id: String,
    pid: Option<u32>,
    exit_code: Option<u32>,
    exit_type: Option<&'static str>,
    started_at: Option<SystemTime>,
    stopped_at: Option<SystemTime>,
    timed_out: bool,
    interrupted: bool,
    error: Option<String>,
}

impl Summary {
    fn new(id: &str) -> Summary {
        Summary {
            system_id: id.to_owned(),
            pid: None,
            exit_code: None,
            exit_type: None,
            started_at: None,
            stopped_at: None,
            timed_out: false,
            interrupted: false,
            error: None,
        }
    }

    fn record_system(&mut self, system: &System) {
        self.started_at = system.started_at();
        self.stopped_at = system.stopped_at();
        self.exit_type = system.exit_status().and_then(|x| x.exit_type).map(|t| t.as_str());
    }

    /// Prints the summary as the last line of stdout, on a line of its own.
    fn print(&self) {
        let duration_ms = match (self.started_at, self.stopped_at) {
            (Some(a), Some(b)) => b.duration_since(a).map(|d| d.as_millis() as u64).ok(),
            _ => None,
        };
        let summary = serde_json::json!({
            "system_id": self.system_id,
            "pid": self.pid,
            "exit_code": self.exit_code,
            "exit_type": self.exit_type,
            "started_at": rfc3339(self.started_at),
            "stopped_at": rfc3339(self.stopped_at),
            "duration_ms": duration_ms,
            "timed_out": self.timed_out,
            "interrupted": self.interrupted,
            "error": self.error,
        });
        let mut out = std::io::stdout().lock();
        let newline = if crate::io::stdout_mid_line() { "\n" } else { "" };
        let _ = writeln!(out, "{newline}{summary}");
        let _ = out.flush();
    }
}

/// Escapes control characters (other than newlines) in a message for the terminal.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The error for a failed write to our stream `name`.
fn write_error(name: &str, e: &std::io::Error) -> CliError {
    let what = if name == "stdout" {
        "standard output"
    } else {
        "standard error"
    };
    let mut msg = e.to_string();
    if let Some(i) = msg.find(" (os error") {
        msg.truncate(i);
    }
    CliError::new(1, format!("write error on {what}: {msg}"))
}

#[allow(clippy::too_many_arguments)]
fn run_with_driver(
    selected: &driver::Selected,
    opts: &RunOptions,
    id: &str,
    config: &str,
    command_line: &str,
    deadline: Option<Instant>,
    summary: &mut Summary,
) -> Result<i32, CliError> {
    let events = Events::start();
    let timeouts = narrowed(Timeouts::from_env(), deadline);

    tracing::debug!(%id, command_line, "creating compute system");
    tracing::trace!(%id, document = config, "CreateComputeSystem configuration");
    let system = crate::io::busy("create compute system", || {
        System::create_with(selected.driver.clone(), id, config, timeouts)
    })
    .map_err(|e| {
        let code = if e.is_timeout() && deadline.is_some() {
            exit::TIMED_OUT
        } else {
            exit::HCS_FAILED
        };
        CliError::new(
            code,
            format!("cannot create compute system {id:?}: {}", escape(&e.to_string())),
        )
    })?;

    // The signal numbering of the guest: the simulator's host backend runs host (POSIX)
    // processes and takes POSIX numbers whatever the document's OS; otherwise the system's OS.
    let signal_os = if selected.sim.is_some() {
        "linux".to_owned()
    } else {
        system.os()
    };
    let mut process: Option<Arc<Process>> = None;
    let ctx = RunContext {
        events: &events,
        deadline,
        signal_os: &signal_os,
        shape: Shape::RUN,
    };
    let outcome = run_in_system(&system, opts, command_line, &ctx, &mut process);
    crate::log::defer();
    let notes = teardown(&system, process.as_deref());
    summary.record_system(&system);
    if let Ok(o) = &outcome {
        summary.pid = Some(o.pid);
        summary.exit_code = o.code;
        summary.timed_out = o.timed_out;
        summary.interrupted = o.interrupted;
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(mut e) => {
            e.notes.extend(notes);
            return Err(e);
        }
    };
    let _ = std::io::stdout().flush();
    for note in &notes {
        eprintln!("hcsctl: {}", escape(note));
    }
    crate::log::flush_deferred();
    if let Some(x) = system.exit_status().filter(|x| x.unexpected) {
        eprintln!(
            "hcsctl: compute system {:?} exited unexpectedly ({})",
            system.id(),
            x.status
        );
    }
    let _ = std::io::stderr().flush();
    final_status(&outcome)
}

/// `hcsctl`'s exit code after the process ended: the command's (see [`Outcome::exit_status`]),
/// unless writing our own stdout or stderr failed.
fn final_status(outcome: &Outcome) -> Result<i32, CliError> {
    let status = outcome.exit_status();
    match crate::io::take_output_error() {
        // Our reader went away (`| head`): end as a command killed by SIGPIPE would.
        Some((_, e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(if status == 0 { 128 + 13 } else { status })
        }
        Some((name, e)) => Err(write_error(name, &e)),
        None => Ok(status),
    }
}

/// `hcsctl exec`: runs `opts.command` in the running system `system` (which is not ours: it is
/// neither stopped nor closed here), attached as `shape` says, with the same interrupt,
/// `--timeout` and exit-code rules as `run`. `signal_os` is the guest's signal numbering.
pub(crate) fn exec_in(
    system: &System,
    signal_os: &str,
    opts: &RunOptions,
    shape: Shape,
) -> Result<i32, CliError> {
    let command_line = join_command_line(&opts.command).map_err(|e| CliError::new(2, e.to_string()))?;
    let deadline = opts
        .timeout
        .and_then(|l| l.0)
        .and_then(|t| Instant::now().checked_add(t));
    let events = Events::start();
    let ctx = RunContext {
        events: &events,
        deadline,
        signal_os,
        shape,
    };
    let mut process: Option<Arc<Process>> = None;
    let outcome = run_process(system, &opts.command[0], &command_line, opts, &ctx, &mut process);
    if let Some(p) = &process {
        if let Err(e) = crate::io::busy("close process", || p.close()) {
            tracing::debug!(error = %e, "close process");
        }
    }
    let outcome = outcome?;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    final_status(&outcome)
}

/// The environment's timeouts, narrowed to what is left until `deadline` (the shortest wins).
fn narrowed(t: Timeouts, deadline: Option<Instant>) -> Timeouts {
    let Some(deadline) = deadline else { return t };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    Timeouts {
        create: t.create.min(left),
        start: t.start.min(left),
        pause: t.pause.min(left),
        resume: t.resume.min(left),
        save: t.save.min(left),
    }
}

/// Waits up to 2 s for what the simulator still holds (handles, systems, host processes)
/// after the teardown; returns a warning naming what is left.
fn report_leaks(sim: &hcs_sim::Simulator) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let leaks = sim.leaks();
        if leaks.is_empty() {
            return None;
        }
        if Instant::now() >= deadline {
            return Some(format!(
                "warning: left behind in the simulator: {}",
                leaks.join("; ")
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The result of a run that got as far as creating the process.
struct Outcome {
    pid: u32,
    code: Option<u32>,
    timed_out: bool,
    interrupted: bool,
    /// The signal of the first interrupt (`128 + it` when the exit code is unknown).
    first_signal: Option<i32>,
}

impl Outcome {
    fn exit_status(&self) -> i32 {
        if self.timed_out {
            exit::TIMED_OUT
        } else if self.code.is_none() && self.interrupted {
            128 + self.first_signal.unwrap_or(crate::io::SIGINT)
        } else {
            exit::process_exit_code(self.code)
        }
    }
}

pub(crate) fn default_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("hcsctl-{}-{nanos:08x}", std::process::id())
}

fn interrupted_before_start() -> CliError {
    CliError::new(exit::INTERRUPTED, "interrupted before the command started")
}

fn create_process_error(program: &str, command_line: &str, system_id: &str, e: &hcs::Error) -> CliError {
    tracing::debug!(error = %e, "create process failed");
    let code = e.hresult().map(|h| h.to_win32_form());
    let program = escape(program);
    match code {
        Some(HResult(2 | 3)) => CliError::new(exit::NOT_FOUND, format!("{program}: command not found")),
        Some(HResult(5)) => CliError::new(exit::CANNOT_EXECUTE, format!("{program}: permission denied")),
        _ => CliError::new(
            exit::HCS_FAILED,
            format!(
                "cannot create process {command_line:?} in compute system {system_id:?}: {}",
                escape(&e.to_string())
            ),
        ),
    }
}

/// What the supervision of a run needs besides the system and options.
struct RunContext<'a> {
    events: &'a Events,
    /// When `--timeout` expires (`None`: no limit).
    deadline: Option<Instant>,
    /// The OS whose signal numbering the process takes (see [`signal_options`]).
    signal_os: &'a str,
    /// How the process is created and attached.
    shape: Shape,
}

/// How the process of a run or an exec is created and attached.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// The system is ours (`run`): a kill that fails terminates it, and a signal that cannot be
    /// delivered shuts it down. For `exec` the system belongs to someone else and is left alone.
    pub owns_system: bool,
    /// Relay our stdin to the process (`exec` without `-i` closes the process's stdin at once).
    pub stdin: bool,
    /// A console (`EmulateConsole`) of this size (columns, rows) instead of pipes; no stderr.
    pub console: Option<(u16, u16)>,
}

impl Shape {
    /// `run`: our system, stdin relayed, pipes.
    const RUN: Shape = Shape {
        owns_system: true,
        stdin: true,
        console: None,
    };
}

fn run_in_system(
    system: &System,
    opts: &RunOptions,
    command_line: &str,
    ctx: &RunContext<'_>,
    slot: &mut Option<Arc<Process>>,
) -> Result<Outcome, CliError> {
    let (events, deadline) = (ctx.events, ctx.deadline);
    let cancel = &events.cancel;
    let start_opts = CallOptions {
        timeout: deadline.map(|d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        }),
        cancel: Some(cancel.clone()),
    };
    if let Err(e) = crate::io::busy("start compute system", || system.start_with(&start_opts)) {
        if cancel.is_cancelled() {
            return Err(interrupted_before_start());
        }
        let code = if e.is_timeout() && deadline.is_some() {
            exit::TIMED_OUT
        } else {
            exit::HCS_FAILED
        };
        return Err(CliError::new(
            code,
            format!(
                "cannot start compute system {:?}: {}",
                system.id(),
                escape(&e.to_string())
            ),
        ));
    }
    if cancel.is_cancelled() {
        return Err(interrupted_before_start());
    }
    // Interrupts delivered so far only cancelled the start; drop them.
    while events.rx.try_recv().is_ok() {}
    run_process(system, &opts.command[0], command_line, opts, ctx, slot)
}

/// Creates the process in a running `system`, relays its streams and supervises it to its end.
fn run_process(
    system: &System,
    program: &str,
    command_line: &str,
    opts: &RunOptions,
    ctx: &RunContext<'_>,
    slot: &mut Option<Arc<Process>>,
) -> Result<Outcome, CliError> {
    let events = ctx.events;

    let mut params = serde_json::json!({
        "CommandLine": command_line,
        "CreateStdInPipe": true,
        "CreateStdOutPipe": true,
        "CreateStdErrPipe": ctx.shape.console.is_none(),
    });
    if let Some((columns, rows)) = ctx.shape.console {
        params["EmulateConsole"] = true.into();
        // HCS's order: height, then width.
        params["ConsoleSize"] = serde_json::json!([rows, columns]);
    }
    let params = params.to_string();
    tracing::trace!(document = %params, "CreateProcess parameters");
    let process = crate::io::busy("create process", || system.create_process(&params))
        .map_err(|e| create_process_error(program, command_line, system.id(), &e))?;
    let process = Arc::new(process);
    *slot = Some(process.clone());
    tracing::debug!(pid = process.pid(), "process started");

    let stdio = process.stdio().map_err(|e| {
        CliError::new(
            exit::HCS_FAILED,
            format!(
                "cannot get the process's standard streams: {}",
                escape(&e.to_string())
            ),
        )
    })?;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let stdin = match stdio.stdin {
        // `exec` without `-i`: the process gets no input.
        Some(stdin) if !ctx.shape.stdin => {
            drop(stdin);
            if let Err(e) = process.close_stdin() {
                tracing::debug!(error = %e, "close_stdin (no -i)");
            }
            None
        }
        // Our stdin is `/dev/null`: the relay would read EOF at once; close the process's
        // stdin here instead.
        Some(stdin) if stdin_is_dev_null() => {
            drop(stdin);
            if let Err(e) = process.close_stdin() {
                tracing::debug!(error = %e, "close_stdin (stdin is /dev/null)");
            }
            None
        }
        Some(stdin) => Some((stdin, process.clone())),
        None => {
            let _ = process.close_stdin();
            None
        }
    };
    let streams = Streams {
        stdin,
        stdout: stdio.stdout,
        stderr: stdio.stderr,
    };
    let relays = events.io.attach(streams, &done_tx);
    drop(done_tx);

    let outcome = supervise(system, &process, opts, ctx);

    // Drain the output relays: they end at EOF once every holder of the pipes has exited.
    let drain_deadline = Instant::now() + DRAIN_WAIT;
    for _ in 0..relays {
        if done_rx
            .recv_timeout(drain_deadline.saturating_duration_since(Instant::now()))
            .is_err()
        {
            tracing::warn!(
                "output still open after the process exited (a background child?); not waiting for it"
            );
            break;
        }
    }
    Ok(outcome)
}

/// Our terminal's size (columns, rows), 80×24 when stdout is not a terminal.
pub(crate) fn terminal_size() -> (u16, u16) {
    #[cfg(unix)]
    {
        if let Ok(ws) = rustix::termios::tcgetwinsize(std::io::stdout()) {
            if ws.ws_col > 0 && ws.ws_row > 0 {
                return (ws.ws_col, ws.ws_row);
            }
        }
    }
    (80, 24)
}

/// Waits for the process, handling interrupts, the timeout and (for a console) our terminal's
/// size.
fn supervise(system: &System, process: &Process, opts: &RunOptions, ctx: &RunContext<'_>) -> Outcome {
    let deadline = ctx.deadline;
    let (tx, rx) = (&ctx.events.tx, &ctx.events.rx);
    let tell = std::io::stderr().is_terminal();
    let mut grace_deadline: Option<Instant> = None;
    let mut kill_deadline: Option<Instant> = None;
    let mut timed_out = false;
    let mut interrupted = false;
    let mut first_signal = None;
    let mut exit_wait = arm_exit_event(process, tx);

    let kill = |why: &str| {
        tracing::debug!(why, "killing the process");
        match crate::io::busy("kill process", || process.kill()) {
            Ok(_) => {}
            Err(e) if !ctx.shape.owns_system => {
                eprintln!("hcsctl: cannot kill the process: {}", escape(&e.to_string()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "kill failed; terminating the system");
                if let Err(e) = crate::io::busy("terminate compute system", || system.terminate()) {
                    eprintln!(
                        "hcsctl: cannot terminate compute system {:?}: {}",
                        system.id(),
                        escape(&e.to_string())
                    );
                }
            }
        }
        Some(Instant::now() + KILL_WAIT)
    };

    loop {
        let next = [
            deadline.filter(|_| !timed_out),
            grace_deadline.filter(|_| kill_deadline.is_none()),
            kill_deadline,
        ]
        .into_iter()
        .flatten()
        .min();
        let event = match next {
            Some(t) => rx.recv_timeout(t.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match event {
            Ok(Event::Exited) => match process.wait_timeout(Duration::ZERO) {
                Ok(()) => break,
                // Woken before the exit was published (a spurious wake): wait again.
                Err(e) if e.is_timeout() => exit_wait = arm_exit_event(process, tx),
                Err(e) => {
                    eprintln!(
                        "hcsctl: waiting for the process failed: {}",
                        escape(&e.to_string())
                    );
                    break;
                }
            },
            Ok(Event::Resize) => {
                if ctx.shape.console.is_some() {
                    let (columns, rows) = terminal_size();
                    if let Err(e) =
                        crate::io::busy("resize console", || process.resize_console(columns, rows))
                    {
                        // The process may just have exited; its exit arrives as an event.
                        tracing::debug!(error = %e, columns, rows, "resize console");
                    }
                }
            }
            Ok(Event::Interrupt(n, sig)) => {
                interrupted = true;
                first_signal.get_or_insert(sig);
                if kill_deadline.is_some() {
                    continue;
                }
                if n == 1 {
                    if tell {
                        eprintln!("hcsctl: interrupt: stopping the command (Ctrl-C again to kill it)");
                    }
                    graceful_stop(system, process, ctx, sig);
                    grace_deadline = opts.grace.0.and_then(|g| Instant::now().checked_add(g));
                } else {
                    kill_deadline = kill("second interrupt");
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if kill_deadline.is_some_and(|k| now >= k) {
                    eprintln!("hcsctl: the process did not exit after being killed; giving up on it");
                    break;
                }
                if !timed_out && deadline.is_some_and(|d| now >= d) {
                    timed_out = true;
                    if kill_deadline.is_none() {
                        kill_deadline = kill("timeout");
                    }
                } else if kill_deadline.is_none() && grace_deadline.is_some_and(|g| now >= g) {
                    kill_deadline = kill("grace period over");
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }

    drop(exit_wait);
    let code = match process.exit() {
        Some(ExitCode::Code(c)) => Some(c),
        _ => None,
    };
    Outcome {
        pid: process.pid(),
        code,
        timed_out,
        interrupted,
        first_signal,
    }
}

/// The `SignalProcess` options forwarding signal `sig` to a process of a guest running `os`:
/// a Linux guest takes the POSIX number (`SIGINT` 2, `SIGTERM` 15, `SIGHUP` 1); a Windows guest
/// takes HCS's console events, 0 = CtrlC for `SIGINT` and 1 = CtrlBreak otherwise.
pub fn signal_options(os: &str, sig: i32) -> String {
    let value = if os.eq_ignore_ascii_case("windows") {
        if sig == crate::io::SIGINT {
            0
        } else {
            1
        }
    } else {
        sig
    };
    serde_json::json!({ "Signal": value }).to_string()
}

/// Asks the process to stop with the signal that interrupted us (see [`signal_options`]), or a
/// system shutdown when signalling fails.
fn graceful_stop(system: &System, process: &Process, ctx: &RunContext<'_>, sig: i32) {
    let options = signal_options(ctx.signal_os, sig);
    tracing::trace!(document = %options, "SignalProcess options");
    match crate::io::busy("signal process", || process.signal(&options)) {
        Ok(delivered) => tracing::debug!(delivered, "interrupt forwarded"),
        Err(e) if !ctx.shape.owns_system => {
            eprintln!(
                "hcsctl: cannot forward the interrupt to the process: {} (Ctrl-C again kills it)",
                escape(&e.to_string())
            );
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot signal the process; shutting the system down");
            if let Err(e) = crate::io::busy("shut down compute system", || system.shutdown()) {
                tracing::warn!(error = %e, "shutdown failed");
            }
        }
    }
}

/// Whether our stdin is the `/dev/null` character device (EOF on the first read).
#[cfg(unix)]
fn stdin_is_dev_null() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return false;
    };
    let (Ok(ours), Ok(null)) = (std::fs::File::from(fd).metadata(), std::fs::metadata("/dev/null")) else {
        return false;
    };
    ours.file_type().is_char_device() && null.file_type().is_char_device() && ours.rdev() == null.rdev()
}

/// Off Unix the stdin relay always runs.
#[cfg(not(unix))]
fn stdin_is_dev_null() -> bool {
    false
}

/// Closes the process, stops the system (shutdown, then terminate if it does not stop within
/// [`STOP_WAIT`]) and closes it. Returns the problems met, to print after the main error.
fn teardown(system: &System, process: Option<&Process>) -> Vec<String> {
    let mut notes = Vec::new();
    let id = system.id();
    if let Some(p) = process {
        if let Err(e) = crate::io::busy("close process", || p.close()) {
            notes.push(format!("cannot close the process: {e}"));
        }
    }
    if system.exit_status().is_none() {
        if let Err(e) = crate::io::busy("shut down compute system", || system.shutdown()) {
            tracing::debug!(error = %e, "shutdown failed; terminating");
        }
        match system.wait_timeout(STOP_WAIT) {
            Err(e) if e.is_service_disconnected() => {
                notes.push(format!(
                    "lost communication with the compute service; compute system {id:?} may still exist"
                ));
            }
            Err(e) if e.is_timeout() || system.exit_status().is_none() => {
                tracing::debug!(error = %e, "the system did not stop after shutdown; terminating");
                if let Err(e) = crate::io::busy("terminate compute system", || system.terminate()) {
                    notes.push(format!("cannot terminate compute system {id:?}: {e}"));
                }
                if let Err(e) = system.wait_timeout(STOP_WAIT) {
                    notes.push(format!("compute system {id:?} did not stop: {e}"));
                }
            }
            _ => {}
        }
    }
    if let Err(e) = crate::io::busy("close compute system", || system.close()) {
        notes.push(format!("cannot close compute system {id:?}: {e}"));
    }
    notes
}

pub(crate) fn rfc3339(t: Option<SystemTime>) -> serde_json::Value {
    match t {
        Some(t) => humantime::format_rfc3339_millis(t).to_string().into(),
        None => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_posix_numbers_for_linux_and_console_events_for_windows() {
        assert_eq!(signal_options("linux", 2), r#"{"Signal":2}"#);
        assert_eq!(signal_options("linux", 15), r#"{"Signal":15}"#);
        assert_eq!(signal_options("windows", 2), r#"{"Signal":0}"#);
        assert_eq!(signal_options("Windows", 15), r#"{"Signal":1}"#);
        assert_eq!(signal_options("windows", 1), r#"{"Signal":1}"#);
    }

    #[test]
    fn huge_or_zero_timeouts_mean_no_limit() {
        assert_eq!(parse_timeout("0").unwrap(), Limit(None));
        assert_eq!(parse_timeout("3000000000000000h").unwrap(), Limit(None));
        assert_eq!(parse_timeout("2s").unwrap(), Limit(Some(Duration::from_secs(2))));
        assert_eq!(parse_grace("5000000000000000h").unwrap(), Limit(None));
        assert!(parse_timeout("soon").is_err());
    }

    #[test]
    fn empty_ids_and_ids_with_control_characters_are_rejected() {
        assert!(parse_id("").is_err());
        assert!(parse_id("a\nb").is_err());
        assert_eq!(parse_id("c1").unwrap(), "c1");
    }

    #[test]
    fn narrowing_keeps_the_shorter_limit() {
        let t = narrowed(Timeouts::default(), Some(Instant::now() + Duration::from_secs(1)));
        assert!(t.create <= Duration::from_secs(1) && t.start <= Duration::from_secs(1));
        assert_eq!(narrowed(Timeouts::default(), None), Timeouts::default());
    }

    #[test]
    fn control_characters_are_escaped_but_newlines_kept() {
        assert_eq!(escape("a\u{1b}[31mb\nc"), "a\\u{1b}[31mb\nc");
    }
}
