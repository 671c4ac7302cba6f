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
//! 3. While it runs: the first Ctrl-C (or SIGTERM/SIGHUP) sends the process `{"Signal":2}`
//!    (SIGINT; a system shutdown when the driver cannot signal); a second one, or the end of the
//!    grace period (`--grace`, default 10 s), kills it. When `--timeout` expires the process is
//!    killed and `hcsctl` exits 124.
//! 4. After the exit the output relays are drained (bounded, in case a background descendant
//!    keeps a pipe open), the system is shut down (terminated if it does not stop within 5 s)
//!    and closed, and `hcsctl` exits with the command's exit code (see [`crate::exit`]). When
//!    the system itself exited unexpectedly (crash), that is reported on stderr and the exit
//!    code is still the command's (the simulator reports its killed process as 137).
//!
//! With `--json` one JSON object is printed on stdout as the **last line**, after all of the
//! command's relayed output: `{"system_id","pid","exit_code","exit_type","started_at",
//! "stopped_at","duration_ms","timed_out","interrupted"}` — times in RFC 3339 (UTC),
//! `exit_code` the full 32-bit code or `null` when unknown, `exit_type` the system's exit type.

use crate::cmdline::join_command_line;
use crate::config::{default_document, load_config, load_fault_plan};
use crate::driver::{self, DriverArgs};
use crate::exit::{self, CliError};
use crate::io::{Event, Interrupts, Io, Streams};
use hcs::{CallOptions, CancelToken, ExitCode, HResult, Process, ProcessWait, System, Timeouts};
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
/// The graceful signal sent on the first interrupt.
const INTERRUPT_SIGNAL: &str = r#"{"Signal":2}"#;

/// Options of `hcsctl run` (parsed by clap directly: one type, no field-by-field copy).
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// Compute-system configuration (JSON); default: a process-isolated container.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Compute-system id (default: generated).
    #[arg(long)]
    pub id: Option<String>,
    /// Kill the command after this long (e.g. 500ms, 10s, 2m) and exit 124.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Time between the forwarded Ctrl-C and the kill.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "10s")]
    pub grace: Duration,
    /// Simulator fault plan (JSON) to inject.
    #[arg(long, value_name = "FILE")]
    pub faults: Option<PathBuf>,
    /// The driver.
    #[command(flatten)]
    pub driver: DriverArgs,
    /// Print a JSON summary as the last line of stdout, after the command's output.
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments.
    #[arg(
        required = true,
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

/// Runs the command; returns `hcsctl`'s exit code, or an error with its own exit code.
pub fn run(opts: RunOptions) -> Result<i32, CliError> {
    let command_line = join_command_line(&opts.command).map_err(|e| CliError::new(2, e.to_string()))?;
    let config = match &opts.config {
        Some(path) => load_config(path)?,
        None => default_document(),
    };
    let faults = opts.faults.as_deref().map(load_fault_plan).transpose()?;
    let selected = driver::select(opts.driver.driver, faults)?;
    let id = opts.id.clone().unwrap_or_else(default_id);
    let result = run_with_driver(&selected, &opts, &id, &config, &command_line);
    if let Some(sim) = &selected.sim {
        report_leaks(sim);
    }
    result
}

fn run_with_driver(
    selected: &driver::Selected,
    opts: &RunOptions,
    id: &str,
    config: &str,
    command_line: &str,
) -> Result<i32, CliError> {
    let events = Events::start();

    tracing::debug!(%id, command_line, "creating compute system");
    let system =
        System::create_with(selected.driver.clone(), id, config, Timeouts::from_env()).map_err(|e| {
            CliError::new(
                exit::HCS_FAILED,
                format!("cannot create compute system {id}: {e}"),
            )
        })?;

    let mut process: Option<Arc<Process>> = None;
    let outcome = run_in_system(&system, opts, command_line, &events, &mut process);
    teardown(&system, process.as_deref());
    let outcome = outcome?;
    let _ = std::io::stdout().flush();
    if let Some(x) = system.exit_status().filter(|x| x.unexpected) {
        eprintln!(
            "hcsctl: compute system {} exited unexpectedly ({})",
            system.id(),
            x.status
        );
    }
    let _ = std::io::stderr().flush();
    if opts.json {
        print_summary(&system, &outcome);
    }
    Ok(outcome.exit_status())
}

/// Warns about anything the simulator still holds (handles, systems, host processes) after the
/// teardown; stops in progress get up to 2 s to finish.
fn report_leaks(sim: &hcs_sim::Simulator) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let leaks = sim.leaks();
        if leaks.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "hcsctl: warning: left behind in the simulator: {}",
                leaks.join("; ")
            );
            return;
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
}

impl Outcome {
    fn exit_status(&self) -> i32 {
        if self.timed_out {
            exit::TIMED_OUT
        } else if self.code.is_none() && self.interrupted {
            exit::INTERRUPTED
        } else {
            exit::process_exit_code(self.code)
        }
    }
}

fn default_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("hcsctl-{}-{nanos:08x}", std::process::id())
}

fn interrupted_before_start() -> CliError {
    CliError::new(exit::INTERRUPTED, "interrupted before the command started")
}

fn create_process_error(program: &str, e: &hcs::Error) -> CliError {
    tracing::debug!(error = %e, "create process failed");
    let code = e.hresult().map(|h| h.to_win32_form());
    match code {
        Some(HResult(2 | 3)) => CliError::new(exit::NOT_FOUND, format!("{program}: command not found")),
        Some(HResult(5)) => CliError::new(exit::CANNOT_EXECUTE, format!("{program}: permission denied")),
        _ => CliError::new(
            exit::HCS_FAILED,
            format!("cannot create process `{program}`: {e}"),
        ),
    }
}

fn run_in_system(
    system: &System,
    opts: &RunOptions,
    command_line: &str,
    events: &Events,
    slot: &mut Option<Arc<Process>>,
) -> Result<Outcome, CliError> {
    let cancel = &events.cancel;
    if let Err(e) = system.start_with(&CallOptions::cancellable(cancel.clone())) {
        if cancel.is_cancelled() {
            return Err(interrupted_before_start());
        }
        return Err(CliError::new(
            exit::HCS_FAILED,
            format!("cannot start compute system {}: {e}", system.id()),
        ));
    }
    if cancel.is_cancelled() {
        return Err(interrupted_before_start());
    }
    // Interrupts delivered so far only cancelled the start; drop them.
    while events.rx.try_recv().is_ok() {}

    let params = serde_json::json!({
        "CommandLine": command_line,
        "CreateStdInPipe": true,
        "CreateStdOutPipe": true,
        "CreateStdErrPipe": true,
    });
    let process = system
        .create_process(&params.to_string())
        .map_err(|e| create_process_error(&opts.command[0], &e))?;
    let process = Arc::new(process);
    *slot = Some(process.clone());
    tracing::debug!(pid = process.pid(), "process started");

    let stdio = process.stdio().map_err(|e| {
        CliError::new(
            exit::HCS_FAILED,
            format!("cannot get the process's standard streams: {e}"),
        )
    })?;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let stdin = match stdio.stdin {
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

    let outcome = supervise(system, &process, opts, events);

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

/// Waits for the process, handling interrupts and the timeout.
fn supervise(system: &System, process: &Process, opts: &RunOptions, events: &Events) -> Outcome {
    let (tx, rx) = (&events.tx, &events.rx);
    let started = Instant::now();
    let deadline = opts.timeout.map(|t| started + t);
    let tell = std::io::stderr().is_terminal();
    let mut grace_deadline: Option<Instant> = None;
    let mut kill_deadline: Option<Instant> = None;
    let mut timed_out = false;
    let mut interrupted = false;
    let mut exit_wait = arm_exit_event(process, tx);

    let kill = |why: &str| {
        tracing::debug!(why, "killing the process");
        match process.kill() {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "kill failed; terminating the system");
                if let Err(e) = system.terminate() {
                    eprintln!("hcsctl: cannot terminate compute system {}: {e}", system.id());
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
                    eprintln!("hcsctl: waiting for the process failed: {e}");
                    break;
                }
            },
            Ok(Event::Interrupt(n)) => {
                interrupted = true;
                if kill_deadline.is_some() {
                    continue;
                }
                if n == 1 {
                    if tell {
                        eprintln!("hcsctl: interrupt: stopping the command (Ctrl-C again to kill it)");
                    }
                    graceful_stop(system, process);
                    grace_deadline = Some(Instant::now() + opts.grace);
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
    }
}

/// Asks the process to stop: `{"Signal":2}`, or a system shutdown when signalling fails.
fn graceful_stop(system: &System, process: &Process) {
    match process.signal(INTERRUPT_SIGNAL) {
        Ok(delivered) => tracing::debug!(delivered, "interrupt forwarded"),
        Err(e) => {
            tracing::debug!(error = %e, "cannot signal the process; shutting the system down");
            if let Err(e) = system.shutdown() {
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
/// [`STOP_WAIT`]) and closes it.
fn teardown(system: &System, process: Option<&Process>) {
    if let Some(p) = process {
        if let Err(e) = p.close() {
            eprintln!("hcsctl: cannot close the process: {e}");
        }
    }
    if system.exit_status().is_none() {
        if let Err(e) = system.shutdown() {
            tracing::debug!(error = %e, "shutdown failed; terminating");
        }
        match system.wait_timeout(STOP_WAIT) {
            Err(e) if e.is_service_disconnected() => {
                eprintln!(
                    "hcsctl: lost communication with the compute service; compute system {} may still exist",
                    system.id()
                );
            }
            Err(e) if e.is_timeout() || system.exit_status().is_none() => {
                tracing::debug!(error = %e, "the system did not stop after shutdown; terminating");
                if let Err(e) = system.terminate() {
                    eprintln!("hcsctl: cannot terminate compute system {}: {e}", system.id());
                }
                if let Err(e) = system.wait_timeout(STOP_WAIT) {
                    eprintln!("hcsctl: compute system {} did not stop: {e}", system.id());
                }
            }
            _ => {}
        }
    }
    if let Err(e) = system.close() {
        eprintln!("hcsctl: cannot close compute system {}: {e}", system.id());
    }
}

fn rfc3339(t: Option<SystemTime>) -> serde_json::Value {
    match t {
        Some(t) => humantime::format_rfc3339_millis(t).to_string().into(),
        None => serde_json::Value::Null,
    }
}

fn print_summary(system: &System, outcome: &Outcome) {
    let started = system.started_at();
    let stopped = system.stopped_at();
    let duration_ms = match (started, stopped) {
        (Some(a), Some(b)) => b.duration_since(a).map(|d| d.as_millis() as u64).ok(),
        _ => None,
    };
    let exit_type = system.exit_status().and_then(|x| x.exit_type).map(|t| t.as_str());
    let summary = serde_json::json!({
        "system_id": system.id(),
        "pid": outcome.pid,
        "exit_code": outcome.code,
        "exit_type": exit_type,
        "started_at": rfc3339(started),
        "stopped_at": rfc3339(stopped),
        "duration_ms": duration_ms,
        "timed_out": outcome.timed_out,
        "interrupted": outcome.interrupted,
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{summary}");
    let _ = out.flush();
}
