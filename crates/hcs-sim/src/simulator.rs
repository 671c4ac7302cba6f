//! The [`Simulator`]: the public handle of one simulated HCS service and its control API
//! (faults, gates, crash, disconnect, reboot) and accounting (handle counts, snapshots, leak
//! checks). Its calls of the driver contract are in [`crate::driver`]; the state they share
//! is the [`Engine`](crate::engine::Engine).

use crate::config::SimConfig;
use crate::driver::Model;
use crate::engine::Engine;
use crate::fault::{ActivePlan, FaultPlan, PlanError};
use crate::model::{MappedDirectory, ProcKind, StopKind, SystemOp, SystemState};
use crate::record::Record;
use crate::sync::lock;
use hcs::{HResult, NotificationKind};
use hcs_schema::ExitType;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Open handles and live registrations (the lifecycle's own type).
pub use hcs::HandleCounts;

/// A snapshot of one simulated process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSnapshot {
    /// Process id.
    pub pid: u32,
    /// The command line it was created with.
    pub command_line: String,
    /// Exit code, once it has exited.
    pub exit_code: Option<u32>,
    /// Every `modify_process` request it accepted, verbatim, in order.
    pub modify_requests: Vec<String>,
    /// Open handles to it.
    pub open_handles: usize,
}

/// A snapshot of one simulated compute system.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemInfo {
    /// Id.
    pub id: String,
    /// `Container` or `VirtualMachine`.
    pub system_type: String,
    /// Owner from the configuration.
    pub owner: String,
    /// State.
    pub state: SystemState,
    /// `true` while a shutdown/terminate/crash is waiting for processes to exit.
    pub stopping: bool,
    /// How it exited, once stopped.
    pub exit_type: Option<ExitType>,
    /// Memory size (from the configuration or a modify request).
    pub memory_mb: Option<u64>,
    /// Mapped directories added by modify requests.
    pub mapped_directories: Vec<MappedDirectory>,
    /// Its processes (exited ones are kept while a handle is open).
    pub processes: Vec<ProcessSnapshot>,
    /// Open system handles.
    pub open_handles: usize,
    /// Live system callback registrations.
    pub callbacks: usize,
}

/// Errors of the simulator's direct controls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No system has that id.
    #[error("no compute system with id `{0}`")]
    UnknownSystem(String),
    /// The system has already stopped.
    #[error("compute system `{0}` has already stopped")]
    AlreadyStopped(String),
    /// The system has no process with that pid.
    #[error("compute system `{0}` has no process {1}")]
    UnknownProcess(String, u32),
}

/// A simulated HCS service implementing [`hcs::Driver`].
///
/// Create it with [`Simulator::new`], hand it to the lifecycle layer as `Arc<dyn Driver>` (or
/// call the driver methods directly), and use the controls ([`Simulator::crash`],
/// [`Simulator::disconnect`], [`Simulator::set_fault_plan`], ...) and the accounting
/// ([`Simulator::handle_counts`], [`Simulator::assert_no_leaks`]) from tests.
///
/// Dropping the simulator kills every host process it started and stops its threads.
pub struct Simulator {
    pub(crate) engine: Arc<Engine>,
    /// The model's side of the driver calls (same engine).
    pub(crate) model: Model,
    /// Live migration (design §10.3).
    pub(crate) migration: crate::migration::MigrationHost,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("generation", &self.engine.generation)
            .field("counts", &self.handle_counts())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Creates a simulator. Its one service thread starts lazily.
    ///
    /// # Panics
    ///
    /// If `config.faults` is invalid (see [`FaultPlan::validate`]); use
    /// [`Simulator::try_new`] to get the error instead.
    pub fn new(config: SimConfig) -> Arc<Simulator> {
        match Self::try_new(config) {
            Ok(sim) => sim,
            Err(e) => panic!("invalid fault plan in SimConfig: {e}"),
        }
    }

    /// Creates a simulator, rejecting an invalid fault plan.
    pub fn try_new(config: SimConfig) -> Result<Arc<Simulator>, PlanError> {
        config.faults.validate()?;
        let engine = Arc::new(Engine::new(config));
        engine.started();
        Ok(Arc::new(Simulator {
            model: Model {
                engine: Arc::clone(&engine),
            },
            engine,
            migration: Default::default(),
        }))
    }

    /// Replaces the fault plan (rule counters start from zero).
    pub fn set_fault_plan(&self, plan: FaultPlan) -> Result<(), PlanError> {
        plan.validate()?;
        *lock(&self.engine.faults) = ActivePlan::new(plan);
        Ok(())
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        *lock(&self.engine.faults) = ActivePlan::default();
    }

    /// Releases a gate: calls blocked on it (`block`, now or later) proceed, and signals held
    /// on it (`hold`) take effect, followed by the signals queued behind them.
    pub fn release(&self, gate: &str) {
        lock(&self.engine.gates)
            .entry(gate.to_string())
            .or_default()
            .released = true;
        self.engine.gate_cv.notify_all();
        self.engine.release_signal_gate(gate);
    }

    /// Number of calls currently blocked on `gate`.
    pub fn blocked_on(&self, gate: &str) -> usize {
        lock(&self.engine.gates).get(gate).map_or(0, |g| g.waiting)
    }

    /// Crashes a system now: its processes are killed and `SystemExited` arrives with
    /// `ExitType` `UnexpectedExit` and the unexpected-exit code
    /// ([`hcs::hresult::CodePair::UNEXPECTED_EXIT`]): on V1 as the notification's status and
    /// the payload's `Status`; on V2 only as the payload's `Status`, the notification's status
    /// being `S_OK` (as `computecore.dll` sends it).
    pub fn crash(&self, id: &str) -> Result<(), SimError> {
        let mut st = self.engine.lock();
        let sys = *st
            .by_id
            .get(id)
            .ok_or_else(|| SimError::UnknownSystem(id.to_string()))?;
        // The only refusal of a crash is `TransitionError::AlreadyStopped`.
        if st.systems[&sys].check(SystemOp::Crash).is_err() {
            return Err(SimError::AlreadyStopped(id.to_string()));
        }
        self.engine.begin_stop(&mut st, sys, StopKind::Unexpected);
        Ok(())
    }

    /// Disconnects the service: every live registration gets `ServiceDisconnect`, queued
    /// notifications are dropped, and every call fails with `RPC_S_SERVER_UNAVAILABLE`
    /// (`0x800706BA`) until [`Simulator::restart_service`]. Systems, processes and handles are
    /// kept (the model's simplification of a service restart).
    pub fn disconnect(&self) {
        let mut st = self.engine.lock();
        self.engine.do_disconnect(&mut st);
    }

    /// Reconnects the service after [`Simulator::disconnect`]; existing handles work again.
    pub fn restart_service(&self) {
        self.engine.lock().connected = true;
    }

    /// Restarts the service the way a real `vmcompute` restart does: **systems and processes
    /// survive, every handle dies**. Queued notifications are dropped and every live callback
    /// registration gets `ServiceDisconnect` (the client's connection broke); then every system,
    /// process and callback handle issued before is forgotten — later calls with one fail with
    /// `E_HANDLE`, and the registrations count as released in [`Simulator::handle_counts`].
    /// Running systems and processes keep running and can be opened again by id and pid.
    /// Works whether or not the service was disconnected first; afterwards it is connected.
    /// (Compare [`Simulator::restart_service`], which keeps the handles, and
    /// [`Simulator::reboot`], which forgets the systems too.)
    pub fn restart_service_invalidating_handles(&self) {
        self.engine.restart_dropping_handles();
    }

    /// Sends notification `kind` (any kind, e.g. `NotificationKind::Other(0x6)`, the V1
    /// `SystemCrashReport`) with `status` and `payload` to the registrations of system `id`,
    /// or of its process `pid`, after `after` (plus the latency). Subject to the notification
    /// rules of the fault plan.
    pub fn inject_notification(
        &self,
        id: &str,
        pid: Option<u32>,
        kind: NotificationKind,
        status: impl Into<HResult>,
        payload: Option<&str>,
        after: Duration,
    ) -> Result<(), SimError> {
        self.engine
            .inject(id, pid, kind, status.into(), payload.map(str::to_string), after)
    }

    /// Starts recording (or changes the bound of a running record): every driver call, every
    /// notification delivered and every signal that takes effect, in order, keeping at most
    /// `capacity` entries (the oldest are dropped and counted in [`Record::dropped`]).
    /// Recording is off by default; while off it costs one atomic load per event.
    pub fn start_recording(&self, capacity: usize) {
        self.engine.recorder.start(capacity);
    }

    /// Stops recording (the record is kept until taken).
    pub fn stop_recording(&self) {
        self.engine.recorder.stop();
    }

    /// A copy of the record so far.
    pub fn record(&self) -> Record {
        self.engine.recorder.snapshot()
    }

    /// The record so far, emptying it (recording goes on if it was on).
    pub fn take_record(&self) -> Record {
        self.engine.recorder.take()
    }

    /// Whether the service is connected.
    pub fn is_connected(&self) -> bool {
        self.engine.lock().connected
    }

    /// Reboots the host: kills every host process, forgets every system, handle and
    /// registration, drops queued notifications (none is sent), releases blocked calls and
    /// reconnects the service. Handle values are never reused afterwards.
    pub fn reboot(&self) {
        self.engine.reaper.kill_all();
        self.engine.sched.clear();
        self.engine.lock().clear();
        self.engine.drained.notify_all();
        let mut gates = lock(&self.engine.gates);
        for g in gates.values_mut() {
            g.released = true;
        }
        drop(gates);
        self.engine.gate_cv.notify_all();
    }

    /// Open handles and live registrations.
    pub fn handle_counts(&self) -> HandleCounts {
        let st = self.engine.lock();
        HandleCounts {
            systems: st.system_handles.len(),
            processes: st.process_handles.len(),
            callbacks: st.callbacks.len(),
        }
    }

    /// The raw values of every open system and process handle and live callback registration,
    /// sorted (what [`Simulator::handle_counts`] counts; compare with [`Simulator::record`] to
    /// see which calls made them).
    pub fn open_handles(&self) -> Vec<u64> {
        let st = self.engine.lock();
        let mut out: Vec<u64> = st
            .system_handles
            .keys()
            .chain(st.process_handles.keys())
            .chain(st.callbacks.keys())
            .copied()
            .collect();
        out.sort_unstable();
        out
    }

    /// Host processes started by this simulator that have not been reaped.
    pub fn running_host_processes(&self) -> usize {
        self.engine.reaper.running()
    }

    /// Starts a supervisor ([`crate::supervisor`]) ahead of need, when one is configured and
    /// none is waiting yet: the next system whose first host process is created takes it, so
    /// that the supervisor's start-up overlaps the caller's own work instead of delaying that
    /// first process. Without it, a system's supervisor starts with its first host process.
    /// A spare that is never used goes with the simulator.
    pub fn prepare_supervisor(&self) {
        if matches!(self.engine.backend, crate::Backend::Host) {
            self.engine.reaper.prepare();
        }
    }

    /// The host pid of the supervisor running system `id`'s processes (see
    /// [`crate::supervisor`]), once its first host process was created and until it stops;
    /// `None` without a configured supervisor.
    pub fn supervisor_pid(&self, id: &str) -> Option<u32> {
        let sys = *self.engine.lock().by_id.get(id)?;
        self.engine.reaper.supervisor_pid(sys)
    }

    /// Ids of every system the model holds (any state), in creation order. A stopped system is
    /// forgotten once its last handle is closed.
    pub fn live_systems(&self) -> Vec<String> {
        self.engine
            .lock()
            .systems
            .values()
            .map(|s| s.id.clone())
            .collect()
    }

    /// A snapshot of one system.
    pub fn system_info(&self, id: &str) -> Option<SystemInfo> {
        let st = self.engine.lock();
        let s = &st.systems[st.by_id.get(id)?];
        Some(SystemInfo {
            id: s.id.clone(),
            system_type: s.system_type.clone(),
            owner: s.owner.clone(),
            state: s.state,
            stopping: s.stopping.is_some(),
            exit_type: s.exit.map(StopKind::exit_type),
            memory_mb: s.memory_mb,
            mapped_directories: s.mapped_directories.clone(),
            processes: s
                .processes
                .values()
                .map(|p| ProcessSnapshot {
                    pid: p.pid,
                    command_line: p.command_line.clone(),
                    exit_code: p.exit_code,
                    modify_requests: p.modify_requests.clone(),
                    open_handles: p.handles.len(),
                })
                .collect(),
            open_handles: s.handles.len(),
            callbacks: s.callbacks.len(),
        })
    }

    /// What was written to a scripted process's stdin so far.
    pub fn scripted_stdin(&self, id: &str, pid: u32) -> Option<Vec<u8>> {
        let st = self.engine.lock();
        let s = &st.systems[st.by_id.get(id)?];
        s.processes
            .values()
            .rev()
            .find(|p| p.pid == pid)
            .and_then(|p| match &p.kind {
                ProcKind::Scripted(run) => Some(lock(&run.stdin).clone()),
                ProcKind::Host => None,
            })
    }

    /// How many service threads the simulator has started: 0 until the first scheduled task
    /// (a notification, a scripted exit, ...) or the first host process, then 1, the one thread
    /// that runs timed tasks and reaps host processes, however many systems there are.
    pub fn service_threads(&self) -> usize {
        usize::from(self.engine.service.started())
    }

    /// Everything still open or running: handles, registrations, systems and host processes.
    /// Empty when nothing leaked.
    pub fn leaks(&self) -> Vec<String> {
        let mut out = Vec::new();
        let st = self.engine.lock();
        let mut handles: Vec<_> = st.system_handles.iter().collect();
        handles.sort();
        for (h, sys) in handles {
            out.push(format!("system handle {h:#x} to `{}`", st.systems[sys].id));
        }
        let mut handles: Vec<_> = st.process_handles.iter().collect();
        handles.sort();
        for (h, (sys, proc)) in handles {
            let s = &st.systems[sys];
            let pid = s.processes.get(proc).map_or(0, |p| p.pid);
            out.push(format!("process handle {h:#x} to pid {pid} in `{}`", s.id));
        }
        let mut cbs: Vec<_> = st.callbacks.iter().collect();
        cbs.sort_by_key(|(id, _)| **id);
        for (id, c) in cbs {
            out.push(format!("callback registration {id:#x} (context {})", c.ctx.raw()));
        }
        for s in st.systems.values() {
            out.push(format!(
                "system `{}` still exists in state {}",
                s.id,
                s.state.as_str()
            ));
        }
        drop(st);
        out.extend(self.migration.leaks(&self.engine));
        for pid in self.engine.reaper.pids() {
            out.push(format!("host process {pid} still running"));
        }
        out
    }

    /// Panics, listing every leak, unless all handles and registrations are closed, no system
    /// remains and no host process is running. While a stop is in progress or a host process
    /// is still running (being killed or reaped), it waits up to 2 s for things to settle first.
    pub fn assert_no_leaks(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            // Settling first, then the leaks: a stop that completes in between must not leave a
            // stale list with "not settling".
            let settling = self.engine.reaper.running() > 0
                || self.engine.lock().systems.values().any(|s| s.stopping.is_some());
            let leaks = self.leaks();
            if leaks.is_empty() {
                return;
            }
            if !settling || Instant::now() >= deadline {
                panic!("hcs-sim: {} leak(s):\n  {}", leaks.len(), leaks.join("\n  "));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.engine.shut_down();
    }
}
