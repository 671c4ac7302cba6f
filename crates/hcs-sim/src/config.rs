//! Simulator configuration: process backend, API generation, latency, which operations answer
//! synchronously, and the scripted-process table.

use crate::fault::FaultPlan;
use hcs::{ApiGeneration, Method};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// The program that runs a compute system's supervisor (see [`crate::supervisor`]): a binary
/// whose `main` calls [`crate::supervisor::main`] when started with these arguments, e.g. this
/// crate's `hcs-sim-supervisor`, or `/proc/self/exe` with [`crate::supervisor::HCSCTL_ARG`] in
/// `hcsctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorProgram {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

impl SupervisorProgram {
    /// The executable `program`, without arguments.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        SupervisorProgram {
            program: program.into(),
            args: Vec::new(),
        }
    }
    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }
}

/// What runs the processes created in simulated systems.
#[derive(Debug, Clone, Default)]
pub enum Backend {
    /// Really runs each command line on the host (split with the `CommandLineToArgvW` rules),
    /// with real pipes, exit codes, signals and `/proc` statistics.
    #[default]
    Host,
    /// Runs nothing: each command line is looked up in the script and behaves as scripted.
    Scripted(Script),
}

/// How one scripted process behaves: what it writes, how long it runs, and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedProcess {
    /// Exit code reported when the process finishes on its own.
    pub exit_code: u32,
    /// Bytes readable from its stdout pipe (when one was requested).
    pub stdout: Vec<u8>,
    /// Bytes readable from its stderr pipe (when one was requested).
    pub stderr: Vec<u8>,
    /// How long it runs before exiting; `None` runs until it is killed.
    pub runtime: Option<Duration>,
    /// When `true` the process survives every signal except `SIGKILL` (and terminate), e.g. to
    /// exercise the SIGKILL escalation of a graceful shutdown.
    pub ignore_signals: bool,
}

impl ScriptedProcess {
    /// A process that exits at once with `exit_code` and writes nothing.
    pub fn exits(exit_code: u32) -> Self {
        ScriptedProcess {
            exit_code,
            stdout: Vec::new(),
            stderr: Vec::new(),
            runtime: Some(Duration::ZERO),
            ignore_signals: false,
        }
    }
    /// A process that runs until it is signalled, terminated or its system stops.
    pub fn forever() -> Self {
        ScriptedProcess {
            runtime: None,
            ..Self::exits(0)
        }
    }
    /// Sets its stdout bytes.
    pub fn stdout(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdout = bytes.into();
        self
    }
    /// Sets its stderr bytes.
    pub fn stderr(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stderr = bytes.into();
        self
    }
    /// Sets how long it runs before exiting with its exit code.
    pub fn runtime(mut self, runtime: Duration) -> Self {
        self.runtime = Some(runtime);
        self
    }
    /// Makes it survive every signal except `SIGKILL`.
    pub fn ignoring_signals(mut self) -> Self {
        self.ignore_signals = true;
        self
    }
}

/// The scripted backend's table: command line → behaviour, plus an optional default. A command
/// line matches when it is equal after trimming leading and trailing blanks. A command line with
/// no entry and no default fails `create_process` like a missing program (`0x80070002`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    /// Exact command lines.
    pub commands: HashMap<String, ScriptedProcess>,
    /// Behaviour for every other command line.
    pub default: Option<ScriptedProcess>,
}

impl Script {
    /// An empty script (every command line is "not found").
    pub fn new() -> Self {
        Script::default()
    }
    /// Adds the behaviour of one exact command line.
    pub fn on(mut self, command_line: impl Into<String>, process: ScriptedProcess) -> Self {
        self.commands
            .insert(command_line.into().trim().to_string(), process);
        self
    }
    /// Sets the behaviour of every command line without an entry.
    pub fn otherwise(mut self, process: ScriptedProcess) -> Self {
        self.default = Some(process);
        self
    }
    pub(crate) fn lookup(&self, command_line: &str) -> Option<&ScriptedProcess> {
        self.commands.get(command_line.trim()).or(self.default.as_ref())
    }
}

/// Simulator configuration. [`SimConfig::default()`] is: host backend, V1 generation, 1 ms
/// notification latency, every pending-capable call answers "pending", 3 s shutdown grace period,
/// no faults.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// What runs processes.
    pub backend: Backend,
    /// Which API generation's error encodings to use (`0xC037…` for V1, `0x8037…` for V2).
    pub generation: ApiGeneration,
    /// Delay between an event in the model and the delivery of its notification.
    pub latency: Duration,
    /// Pending-capable calls (see [`Method::can_pend`]) that answer synchronously instead of
    /// "pending"; a synchronous create/start/pause/resume/save sends no `*Completed`.
    pub sync_ops: HashSet<Method>,
    /// How long a graceful shutdown waits after `SIGTERM` before it sends `SIGKILL`.
    pub shutdown_grace: Duration,
    /// How often the service thread sweeps host children for exits (at least 100 µs) where it
    /// cannot wait for them (not Linux, or a child without a pidfd); on Linux, × 400 is the
    /// longest it sleeps in `poll` while children exist, a safety net.
    pub reap_interval: Duration,
    /// Faults injected from the start (replace later with [`crate::Simulator::set_fault_plan`]).
    pub faults: FaultPlan,
    /// The program of the per-system supervisor of host processes ([`crate::supervisor`];
    /// Linux only). `None` (the default): commands are spawned directly by the simulator, each
    /// the leader of a process group of its own, and only that group is contained (what it
    /// leaves in the group is killed when it exits; `setsid` or double-forked escapees survive,
    /// and the commands share the caller's session and terminal). With a supervisor, each
    /// system's whole process tree is contained in a session of its own and dies with the
    /// system, with the simulator, and with the process that owns the simulator. If the
    /// supervisor cannot be started, the simulator warns and falls back to direct spawns.
    pub supervisor: Option<SupervisorProgram>,
    /// Runs the tasks a call makes due at once (zero-latency notifications, with the fault
    /// plan's zero-delay extras) on the calling thread when the call ends, before it returns,
    /// instead of waking the service thread for them; order is kept (one runner at a time, in
    /// queue order), and when the service thread is running tasks already it gets them as
    /// before. Off by default: HCS never calls back on the thread of a call, and a lifecycle
    /// using this simulator in process is tested against that. A service that only forwards
    /// notifications (`hcs-simd`) turns it on to spare a thread hand-off per notification.
    pub inline_deliveries: bool,
}

impl Default for SimConfig {
    /// The **V1** generation with **pending operations**: host backend, 1 ms notification
    /// latency, every pending-capable call (create, start, pause, resume, save, shutdown,
    /// terminate) answers "pending" and completes later by notification, 3 s shutdown grace
    /// period, 2 ms reap interval, no faults. It is the shape that exercises the lifecycle's
    /// completion waits and the V1 (`vmcompute.dll`) codes, which is why tests start from it.
    ///
    /// `hcsctl` uses **V2 with every call synchronous** instead —
    /// `SimConfig::default().generation(ApiGeneration::V2).all_sync()` (plus zero latency and a
    /// short reap interval) — because that is how `computecore.dll` behaves for the V2 driver:
    /// a call returns once its operation is done, and only exits arrive as notifications. Pick
    /// it to mirror the V2 driver; pick the default to test pending completions.
    fn default() -> Self {
        SimConfig {
            backend: Backend::Host,
            generation: ApiGeneration::V1,
            latency: Duration::from_millis(1),
            sync_ops: HashSet::new(),
            shutdown_grace: Duration::from_secs(3),
            reap_interval: Duration::from_millis(2),
            faults: FaultPlan::default(),
            supervisor: None,
            inline_deliveries: false,
        }
    }
}

impl SimConfig {
    /// Uses the scripted backend.
    pub fn scripted(mut self, script: Script) -> Self {
        self.backend = Backend::Scripted(script);
        self
    }
    /// Sets the API generation.
    pub fn generation(mut self, generation: ApiGeneration) -> Self {
        self.generation = generation;
        self
    }
    /// Sets the notification latency.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
    /// Makes `op` answer synchronously.
    pub fn sync(mut self, op: Method) -> Self {
        self.sync_ops.insert(op);
        self
    }
    /// Makes every pending-capable call answer synchronously.
    pub fn all_sync(mut self) -> Self {
        self.sync_ops
            .extend(Method::ALL.into_iter().filter(|op| op.can_pend()));
        self
    }
    /// Sets how often host children are swept for exits where they cannot be waited for (at
    /// least 100 µs); see the `reap_interval` field.
    pub fn reap_interval(mut self, interval: Duration) -> Self {
        self.reap_interval = interval;
        self
    }
    /// Sets the graceful-shutdown grace period.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }
    /// Sets the initial fault plan.
    pub fn faults(mut self, plan: FaultPlan) -> Self {
        self.faults = plan;
        self
    }
    /// Delivers zero-latency notifications on the calling thread at the end of the call (see
    /// the `inline_deliveries` field).
    pub fn inline_deliveries(mut self, on: bool) -> Self {
        self.inline_deliveries = on;
        self
    }
    /// Runs each system's host processes under a supervisor started from `program` (see the
    /// `supervisor` field).
    pub fn supervisor(mut self, program: SupervisorProgram) -> Self {
        self.supervisor = Some(program);
        self
    }
}
