//! The HCS model: systems, processes, handles and registrations.

use crate::config::ScriptedProcess;
use hcs::NotifyContext;
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
        self.connected = true;
        self.epoch += 1;
    }
}
