//! The state table of the simulated HCS: systems, processes, handles and callback
//! registrations as plain data, and the checked state machine of a compute system (which call
//! is valid in which state, and the HRESULT of a refusal). No threads, locks or notifications
//! here: the engine holds the table under its lock and acts on the transitions.

use crate::codes::{self, ForGeneration};
use crate::config::ScriptedProcess;
use hcs::{ApiGeneration, HResult, NotifyContext};
use hcs_schema::ExitType;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant, SystemTime};

/// The state of a simulated compute system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Paused (its processes are stopped).
    Paused,
    /// Saved (its processes are stopped; only shutdown/terminate are valid).
    Saved,
    /// Stopped (exited); only property queries and closing handles remain valid.
    Stopped,
}

impl SystemState {
    /// The `State` string of HCS properties.
    pub fn as_str(self) -> &'static str {
        match self {
            SystemState::Created => "Created",
            SystemState::Running => "Running",
            SystemState::Paused => "Paused",
            SystemState::Saved => "Saved",
            SystemState::Stopped => "Stopped",
        }
    }
}

/// A call whose validity the state of a compute system decides (see [`SystemState::transition`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SystemOp {
    Start,
    Pause,
    Resume,
    Save,
    Shutdown,
    Terminate,
    /// A crash injected through [`crate::Simulator::crash`].
    Crash,
    Modify,
    CreateProcess,
}

impl SystemOp {
    #[cfg(test)]
    pub(crate) const ALL: [SystemOp; 9] = [
        SystemOp::Start,
        SystemOp::Pause,
        SystemOp::Resume,
        SystemOp::Save,
        SystemOp::Shutdown,
        SystemOp::Terminate,
        SystemOp::Crash,
        SystemOp::Modify,
        SystemOp::CreateProcess,
    ];

    /// The name used in "the `<name>` options is not valid JSON".
    pub(crate) fn name(self) -> &'static str {
        match self {
            SystemOp::Start => "start",
            SystemOp::Pause => "pause",
            SystemOp::Resume => "resume",
            SystemOp::Save => "save",
            SystemOp::Shutdown => "shutdown",
            SystemOp::Terminate => "terminate",
            SystemOp::Crash => "crash",
            SystemOp::Modify => "modify",
            SystemOp::CreateProcess => "create process",
        }
    }

    /// The end of "The compute system is `<state>` and cannot `<phrase>`."
    fn refusal(self) -> &'static str {
        match self {
            SystemOp::Start => "be started",
            SystemOp::Pause => "be paused",
            SystemOp::Resume => "be resumed",
            SystemOp::Save => "be saved",
            SystemOp::Shutdown => "be shut down",
            SystemOp::Terminate => "be terminated",
            SystemOp::Crash => "crash",
            SystemOp::Modify => "be modified",
            SystemOp::CreateProcess => "create processes",
        }
    }

    fn stops(self) -> bool {
        matches!(self, SystemOp::Shutdown | SystemOp::Terminate | SystemOp::Crash)
    }
}

/// Why [`SystemState::transition`] refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TransitionError {
    /// The call is not valid in this state (or while a stop is in progress).
    #[error("The compute system is {} and cannot {}.", state.as_str(), op.refusal())]
    InvalidState { state: SystemState, op: SystemOp },
    /// Shutdown, terminate or crash of a stopped system.
    #[error("The compute system has already stopped.")]
    AlreadyStopped,
}

impl TransitionError {
    /// The HRESULT HCS returns for it, in the encoding of generation `g`.
    pub(crate) fn code(self, g: ApiGeneration) -> HResult {
        match self {
            TransitionError::InvalidState { .. } => codes::INVALID_STATE.of(g),
            TransitionError::AlreadyStopped => codes::ALREADY_STOPPED.of(g),
        }
    }
}

impl SystemState {
    /// The one checked transition of the system state machine: the state a system in `self`
    /// is in once `op` is accepted, or why `op` is refused. `stopping` is `true` while a
    /// shutdown, terminate or crash waits for the processes to exit; only another stop (which
    /// may escalate it) is accepted then.
    ///
    /// A stop leaves the state as it is; the system becomes [`SystemState::Stopped`] when its
    /// last process has exited (`Engine::check_stop_done`). Modify and create-process do not
    /// change the state.
    pub(crate) fn transition(self, op: SystemOp, stopping: bool) -> Result<SystemState, TransitionError> {
        use SystemState::{Created, Paused, Running, Saved, Stopped};
        let next = match (op, self) {
            (op, Stopped) if op.stops() => return Err(TransitionError::AlreadyStopped),
            (op, state) if op.stops() => Some(state),
            _ if stopping => None,
            (SystemOp::Start, Created) => Some(Running),
            (SystemOp::Pause, Running) => Some(Paused),
            (SystemOp::Resume, Paused) => Some(Running),
            (SystemOp::Save, Running | Paused) => Some(Saved),
            (SystemOp::Modify, state @ (Created | Running | Paused)) => Some(state),
            (SystemOp::CreateProcess, Running) => Some(Running),
            _ => None,
        };
        next.ok_or(TransitionError::InvalidState { state: self, op })
    }
}

/// How a stop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopKind {
    Graceful,
    Forced,
    Unexpected,
}

impl StopKind {
    pub(crate) fn exit_type(self) -> ExitType {
        match self {
            StopKind::Graceful => ExitType::GracefulExit,
            StopKind::Forced => ExitType::ForcedExit,
            StopKind::Unexpected => ExitType::UnexpectedExit,
        }
    }
    fn rank(self) -> u8 {
        match self {
            StopKind::Graceful => 0,
            StopKind::Forced => 1,
            StopKind::Unexpected => 2,
        }
    }
    /// The stronger of two stop kinds (a terminate during a shutdown makes it forced).
    pub(crate) fn max(self, other: StopKind) -> StopKind {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// A mapped directory added by a modify request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedDirectory {
    /// Host path.
    pub host_path: String,
    /// Path inside the container.
    pub container_path: String,
    /// Read-only mapping.
    pub read_only: bool,
}

#[derive(Debug)]
pub(crate) struct SystemRec {
    pub(crate) id: String,
    pub(crate) system_type: String,
    pub(crate) name: String,
    pub(crate) owner: String,
    pub(crate) os: String,
    pub(crate) terminate_on_last_close: bool,
    pub(crate) state: SystemState,
    pub(crate) stopping: Option<StopKind>,
    pub(crate) stop_gen: u64,
    pub(crate) exit: Option<StopKind>,
    pub(crate) memory_mb: Option<u64>,
    pub(crate) mapped_directories: Vec<MappedDirectory>,
    pub(crate) handles: HashSet<u64>,
    pub(crate) callbacks: Vec<u64>,
    pub(crate) processes: BTreeMap<u64, ProcRec>,
    pub(crate) started: Option<(Instant, SystemTime)>,
}

impl SystemRec {
    /// Whether `op` is valid now ([`SystemState::transition`]), without applying it.
    pub(crate) fn check(&self, op: SystemOp) -> Result<SystemState, TransitionError> {
        self.state.transition(op, self.stopping.is_some())
    }
    /// Checks `op` ([`SystemState::transition`]) and enters the next state.
    pub(crate) fn transition(&mut self, op: SystemOp) -> Result<(), TransitionError> {
        self.state = self.check(op)?;
        Ok(())
    }
    pub(crate) fn live_processes(&self) -> impl Iterator<Item = (&u64, &ProcRec)> {
        self.processes.iter().filter(|(_, p)| p.exit_code.is_none())
    }
    pub(crate) fn has_live_processes(&self) -> bool {
        self.live_processes().next().is_some()
    }
    pub(crate) fn has_process_handles(&self) -> bool {
        self.processes.values().any(|p| !p.handles.is_empty())
    }
}

#[derive(Debug)]
pub(crate) enum ProcKind {
    /// A host child, owned by the reaper under the process key.
    Host,
    Scripted(ScriptedRun),
}

#[derive(Debug)]
pub(crate) struct ScriptedRun {
    pub(crate) behaviour: ScriptedProcess,
    /// Bumped whenever the scheduled exit is cancelled (pause, kill).
    pub(crate) generation: u64,
    /// Runtime left when it was last (re)started; `None` runs forever.
    pub(crate) remaining: Option<Duration>,
    pub(crate) resumed_at: Instant,
    pub(crate) frozen: bool,
    pub(crate) stdin: Arc<Mutex<Vec<u8>>>,
}

#[derive(Debug)]
pub(crate) struct ProcRec {
    pub(crate) pid: u32,
    pub(crate) command_line: String,
    pub(crate) image: String,
    pub(crate) handles: HashSet<u64>,
    pub(crate) callbacks: Vec<u64>,
    pub(crate) exit_code: Option<u32>,
    pub(crate) kind: ProcKind,
    pub(crate) modify_requests: Vec<String>,
    pub(crate) created: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CbTarget {
    System(u64),
    Process(u64, u64),
}

#[derive(Debug)]
pub(crate) struct CallbackRec {
    pub(crate) ctx: NotifyContext,
    pub(crate) target: CbTarget,
    /// The handle it was registered through (closing that handle unregisters it).
    pub(crate) via: u64,
    pub(crate) live: bool,
    pub(crate) in_flight: u32,
    pub(crate) delivering: Option<ThreadId>,
}

/// A signal waiting in a process handle's queue: its number and whether it is held itself.
#[derive(Debug)]
pub(crate) struct HeldSignal {
    pub(crate) sig: i32,
    pub(crate) hold: Option<crate::fault::Release>,
}

/// The signal queue of one process handle while a held signal heads it (HCS serialises the
/// signals sent through one handle): the head waits for its release (a timer or `gate`), the
/// others wait behind it in order.
#[derive(Debug)]
pub(crate) struct SignalQueue {
    pub(crate) sys: u64,
    pub(crate) proc: u64,
    pub(crate) head: i32,
    pub(crate) gate: Option<String>,
    /// Identifies this hold (a timer of an earlier hold of the same handle is ignored).
    pub(crate) queue_gen: u64,
    pub(crate) waiting: std::collections::VecDeque<HeldSignal>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) connected: bool,
    pub(crate) epoch: u64,
    pub(crate) next_handle: u64,
    pub(crate) next_key: u64,
    pub(crate) next_scripted_pid: u32,
    pub(crate) systems: BTreeMap<u64, SystemRec>,
    pub(crate) by_id: HashMap<String, u64>,
    pub(crate) system_handles: HashMap<u64, u64>,
    pub(crate) process_handles: HashMap<u64, (u64, u64)>,
    pub(crate) callbacks: HashMap<u64, CallbackRec>,
    /// Busy per-handle signal queues, by process handle.
    pub(crate) signal_queues: HashMap<u64, SignalQueue>,
    pub(crate) next_queue_gen: u64,
    /// Threads blocked on the engine's `drained` condvar (unregisters waiting for a delivery
    /// on another thread to end): a delivery wakes them only when there are some.
    pub(crate) drain_waiters: usize,
}

impl State {
    pub(crate) fn new() -> Self {
        State {
            connected: true,
            epoch: 0,
            next_handle: 0x100,
            next_key: 1,
            next_scripted_pid: 1000,
            systems: BTreeMap::new(),
            by_id: HashMap::new(),
            system_handles: HashMap::new(),
            process_handles: HashMap::new(),
            callbacks: HashMap::new(),
            signal_queues: HashMap::new(),
            next_queue_gen: 0,
            drain_waiters: 0,
        }
    }
    /// A fresh handle value (unique across all kinds, never reused).
    pub(crate) fn handle(&mut self) -> u64 {
        self.next_handle += 4;
        self.next_handle
    }
    /// A fresh internal key.
    pub(crate) fn key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }
    /// Clears everything except the counters (so values are never reused).
    pub(crate) fn clear(&mut self) {
        self.systems.clear();
        self.by_id.clear();
        self.system_handles.clear();
        self.process_handles.clear();
        self.callbacks.clear();
        self.signal_queues.clear();
        self.connected = true;
        self.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::SystemOp::{self, *};
    use super::SystemState::{self, *};
    use super::TransitionError;
    use hcs::{ApiGeneration, HResult};

    /// What a call does in one state.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Expect {
        /// Accepted; the system is in this state afterwards.
        To(SystemState),
        /// `ERROR_VMCOMPUTE_INVALID_STATE` / `HCS_E_INVALID_STATE`.
        Invalid,
        /// `ERROR_VMCOMPUTE_SYSTEM_ALREADY_STOPPED` / `HCS_E_SYSTEM_ALREADY_STOPPED`.
        AlreadyStopped,
    }
    use Expect::{AlreadyStopped as Gone, Invalid as No, To};

    const STATES: [SystemState; 5] = [Created, Running, Paused, Saved, Stopped];

    /// Every op × every state: (op, state, not stopping, while a stop is in progress).
    #[rustfmt::skip]
    const TABLE: [(SystemOp, SystemState, Expect, Expect); 45] = [
        (Start, Created, To(Running), No),
        (Start, Running, No, No),
        (Start, Paused, No, No),
        (Start, Saved, No, No),
        (Start, Stopped, No, No),
        (Pause, Created, No, No),
        (Pause, Running, To(Paused), No),
        (Pause, Paused, No, No),
        (Pause, Saved, No, No),
        (Pause, Stopped, No, No),
        (Resume, Created, No, No),
        (Resume, Running, No, No),
        (Resume, Paused, To(Running), No),
        (Resume, Saved, No, No),
        (Resume, Stopped, No, No),
        (Save, Created, No, No),
        (Save, Running, To(Saved), No),
        (Save, Paused, To(Saved), No),
        (Save, Saved, No, No),
        (Save, Stopped, No, No),
        (Shutdown, Created, To(Created), To(Created)),
        (Shutdown, Running, To(Running), To(Running)),
        (Shutdown, Paused, To(Paused), To(Paused)),
        (Shutdown, Saved, To(Saved), To(Saved)),
        (Shutdown, Stopped, Gone, Gone),
        (Terminate, Created, To(Created), To(Created)),
        (Terminate, Running, To(Running), To(Running)),
        (Terminate, Paused, To(Paused), To(Paused)),
        (Terminate, Saved, To(Saved), To(Saved)),
        (Terminate, Stopped, Gone, Gone),
        (Crash, Created, To(Created), To(Created)),
        (Crash, Running, To(Running), To(Running)),
        (Crash, Paused, To(Paused), To(Paused)),
        (Crash, Saved, To(Saved), To(Saved)),
        (Crash, Stopped, Gone, Gone),
        (Modify, Created, To(Created), No),
        (Modify, Running, To(Running), No),
        (Modify, Paused, To(Paused), No),
        (Modify, Saved, No, No),
        (Modify, Stopped, No, No),
        (CreateProcess, Created, No, No),
        (CreateProcess, Running, To(Running), No),
        (CreateProcess, Paused, No, No),
        (CreateProcess, Saved, No, No),
        (CreateProcess, Stopped, No, No),
    ];

    /// The exact refusal message of each op (as the simulator has always worded it).
    fn refusal(op: SystemOp, state: SystemState) -> String {
        let tail = match op {
            Start => "be started",
            Pause => "be paused",
            Resume => "be resumed",
            Save => "be saved",
            Modify => "be modified",
            CreateProcess => "create processes",
            Shutdown | Terminate | Crash => unreachable!("a stop is never refused as invalid"),
        };
        format!("The compute system is {} and cannot {tail}.", state.as_str())
    }

    #[test]
    fn transition_table_is_complete() {
        for op in SystemOp::ALL {
            for state in STATES {
                let rows = TABLE.iter().filter(|r| r.0 == op && r.1 == state).count();
                assert_eq!(rows, 1, "{op:?} in {state:?} has {rows} rows");
            }
        }
    }

    #[test]
    fn transition_table_v1_and_v2() {
        let generations = [
            (
                ApiGeneration::V1,
                HResult::ERROR_VMCOMPUTE_INVALID_STATE,
                HResult::ERROR_VMCOMPUTE_SYSTEM_ALREADY_STOPPED,
            ),
            (
                ApiGeneration::V2,
                HResult::HCS_E_INVALID_STATE,
                HResult::HCS_E_SYSTEM_ALREADY_STOPPED,
            ),
        ];
        for (g, invalid_state, already_stopped) in generations {
            for (op, state, idle, stopping) in TABLE {
                for (is_stopping, expect) in [(false, idle), (true, stopping)] {
                    let got = state.transition(op, is_stopping);
                    let ctx = format!("{g:?} {op:?} in {state:?} (stopping: {is_stopping})");
                    match expect {
                        To(next) => assert_eq!(got, Ok(next), "{ctx}"),
                        No => {
                            let e = got.expect_err(&ctx);
                            assert_eq!(e, TransitionError::InvalidState { state, op }, "{ctx}");
                            assert_eq!(e.code(g), invalid_state, "{ctx}");
                            assert_eq!(e.to_string(), refusal(op, state), "{ctx}");
                        }
                        Gone => {
                            let e = got.expect_err(&ctx);
                            assert_eq!(e, TransitionError::AlreadyStopped, "{ctx}");
                            assert_eq!(e.code(g), already_stopped, "{ctx}");
                            assert_eq!(e.to_string(), "The compute system has already stopped.", "{ctx}");
                        }
                    }
                }
            }
        }
    }
}
