//! The simulator: the HCS model behind the [`hcs::Driver`] contract.

use crate::codes;
use crate::config::{Backend, Op, SimConfig, SimNotification};
use crate::fault::{Action, ActivePlan, FaultPlan, PlanError};
use crate::host::{self, Params, Reaper};
use crate::model::{
    CallbackRec, CbTarget, MappedDirectory, ProcKind, ProcRec, ScriptedRun, State, StopKind, SystemOp,
    SystemRec, SystemState, TransitionError,
};
use crate::sched::{Delivery, Scheduler, Target, Task};
use crate::service::Service;
use crate::signal;
use crate::sync::lock;
use hcs::{
    ApiGeneration, CallbackHandle, Driver, DriverResult, Failure, HResult, NotificationKind, NotifyContext,
    PipeReader, PipeWriter, ProcessHandle, ProcessInfo, Reply, SystemHandle,
};
use hcs_schema::{ExitType, ProcessStatus, SystemExitStatus};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

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
}

/// One live process, for the properties answer.
struct ProcRow {
    pid: u32,
    image: String,
    /// The host pid to read `/proc` of (host backend only).
    host_pid: Option<u32>,
    created: SystemTime,
}

#[derive(Debug, Default)]
struct Gate {
    released: bool,
    waiting: usize,
}

/// What the fault plan decided for one call (besides delays and failures, applied in `begin`).
#[derive(Debug, Default)]
struct Fired {
    pending: Option<(Option<Duration>, HResult, Option<SimNotification>)>,
    crash: Option<Duration>,
    disconnect: Option<Duration>,
    late: Vec<(SimNotification, Duration)>,
}

/// State shared by the simulator and its service thread.
pub(crate) struct Shared {
    generation: ApiGeneration,
    latency: Duration,
    sync_ops: HashSet<Op>,
    shutdown_grace: Duration,
    pub(crate) reap_interval: Duration,
    backend: Backend,
    state: Mutex<State>,
    drained: Condvar,
    faults: Mutex<ActivePlan>,
    gates: Mutex<HashMap<String, Gate>>,
    gate_cv: Condvar,
    pub(crate) sched: Scheduler,
    pub(crate) reaper: Reaper,
    pub(crate) service: Service,
    pub(crate) shutdown: AtomicBool,
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
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("generation", &self.shared.generation)
            .field("counts", &self.handle_counts())
            .finish_non_exhaustive()
    }
}

fn unavailable() -> Failure {
    Failure::with_document(
        codes::SERVER_UNAVAILABLE,
        codes::result_document(codes::SERVER_UNAVAILABLE, "The RPC server is unavailable."),
    )
}

fn bad_handle() -> Failure {
    Failure::new(codes::INVALID_HANDLE)
}

fn fail(code: HResult, message: impl AsRef<str>) -> Failure {
    Failure::with_document(code, codes::result_document(code, message.as_ref()))
}

/// The record of process `proc` of system `sys`; `E_HANDLE` when it is gone.
fn process_rec(st: &State, sys: u64, proc: u64) -> Result<&ProcRec, Failure> {
    st.systems
        .get(&sys)
        .and_then(|s| s.processes.get(&proc))
        .ok_or_else(bad_handle)
}

fn transition_failure(e: TransitionError, generation: ApiGeneration) -> Failure {
    fail(e.code(generation), e.to_string())
}

fn reply<T>(value: T, pending: bool) -> Reply<T> {
    if pending {
        Reply::pending(value)
    } else {
        Reply::done(value)
    }
}

fn parse_json(text: &str, generation: ApiGeneration, what: &str) -> Result<Value, Failure> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(text).map_err(|e| {
        fail(
            codes::invalid_json(generation),
            format!("the {what} is not valid JSON: {e}"),
        )
    })
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    // ---------------------------------------------------------------- calls and faults

    /// The common prologue of every call: connectivity, then the fault plan (delays, blocks and
    /// failures are applied here; the rest is returned).
    fn begin(self: &Arc<Self>, op: Op, system: Option<&str>) -> Result<Fired, Failure> {
        if !self.lock().connected {
            return Err(unavailable());
        }
        let actions = lock(&self.faults).on_call(op, system);
        let mut fired = Fired::default();
        let mut failure = None;
        for action in actions {
            match action {
                Action::Delay(d) => std::thread::sleep(d),
                Action::Block { gate } => self.wait_gate(&gate),
                Action::Fail { code, document } => {
                    failure.get_or_insert(Failure {
                        code,
                        document,
                        source: None,
                    });
                }
                Action::Pending {
                    complete_after,
                    status,
                    kind,
                } => {
                    fired.pending.get_or_insert((complete_after, status, kind));
                }
                Action::Crash { after } => {
                    fired.crash.get_or_insert(after);
                }
                Action::Disconnect { after } => {
                    fired.disconnect.get_or_insert(after);
                }
                Action::LateCallback { kind, after } => fired.late.push((kind, after)),
                Action::DelayNotification(_)
                | Action::DuplicateNotification { .. }
                | Action::DropNotification => {}
            }
        }
        if let Some(f) = failure {
            tracing::debug!(%op, system, code = %f.code, "hcs-sim: injected failure");
            return Err(f);
        }
        if !self.lock().connected {
            return Err(unavailable());
        }
        if let Some(after) = fired.disconnect {
            if !op.can_pend() {
                let mut st = self.lock();
                self.disconnect_after(&mut st, after);
                return Err(unavailable());
            }
        }
        Ok(fired)
    }

    /// The common epilogue of a call on a system: injected crash and disconnect.
    fn after(self: &Arc<Self>, st: &mut State, sys: Option<u64>, fired: &Fired) {
        if let (Some(after), Some(sys)) = (fired.crash, sys) {
            self.sched.schedule(self, after, Task::Crash { sys });
        }
        if let Some(after) = fired.disconnect {
            self.disconnect_after(st, after);
        }
    }

    fn disconnect_after(self: &Arc<Self>, st: &mut State, after: Duration) {
        if after.is_zero() {
            self.do_disconnect(st);
        } else {
            self.sched.schedule(self, after, Task::Disconnect);
        }
    }

    fn wait_gate(&self, gate: &str) {
        let mut gates = lock(&self.gates);
        gates.entry(gate.to_string()).or_default().waiting += 1;
        loop {
            if self.shutdown.load(Ordering::Acquire) || gates.get(gate).is_some_and(|g| g.released) {
                break;
            }
            gates = self.gate_cv.wait(gates).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(g) = gates.get_mut(gate) {
            g.waiting -= 1;
        }
    }

    /// Resolves a system handle to the system's id (checking connectivity first).
    fn system_id(&self, h: SystemHandle) -> Result<String, Failure> {
        let st = self.lock();
        if !st.connected {
            return Err(unavailable());
        }
        let sys = st.system_handles.get(&h.raw()).ok_or_else(bad_handle)?;
        Ok(st.systems[sys].id.clone())
    }

    fn process_system_id(&self, h: ProcessHandle) -> Result<String, Failure> {
        let st = self.lock();
        if !st.connected {
            return Err(unavailable());
        }
        let (sys, _) = st.process_handles.get(&h.raw()).ok_or_else(bad_handle)?;
        Ok(st.systems[sys].id.clone())
    }

    /// Runs `f` on the system behind `h` under the state lock, after the prologue, then the
    /// epilogue.
    fn with_system<T>(
        self: &Arc<Self>,
        op: Op,
        h: SystemHandle,
        f: impl FnOnce(&mut State, u64, &Fired) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let _span = tracing::debug_span!("hcs_sim", op = %op, handle = h.raw()).entered();
        let id = self.system_id(h)?;
        let fired = self.begin(op, Some(&id))?;
        let mut st = self.lock();
        let sys = *st.system_handles.get(&h.raw()).ok_or_else(bad_handle)?;
        let result = f(&mut st, sys, &fired);
        self.after(&mut st, Some(sys), &fired);
        if let Err(e) = &result {
            tracing::debug!(%op, system = %id, code = %e.code, "hcs-sim: call failed");
        }
        result
    }

    /// Runs `f` on the process behind `h` under the state lock, after the prologue.
    fn with_process<T>(
        self: &Arc<Self>,
        op: Op,
        h: ProcessHandle,
        f: impl FnOnce(&mut State, u64, u64) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let _span = tracing::debug_span!("hcs_sim", op = %op, handle = h.raw()).entered();
        let id = self.process_system_id(h)?;
        let fired = self.begin(op, Some(&id))?;
        let mut st = self.lock();
        let (sys, proc) = *st.process_handles.get(&h.raw()).ok_or_else(bad_handle)?;
        let result = f(&mut st, sys, proc);
        self.after(&mut st, Some(sys), &fired);
        result
    }

    /// Decides whether a pending-capable call answers pending, and queues its completion.
    fn complete(
        self: &Arc<Self>,
        st: &mut State,
        op: Op,
        sys: u64,
        ctx: Option<NotifyContext>,
        fired: &Fired,
    ) -> bool {
        let id = st.systems.get(&sys).map(|s| s.id.clone());
        if let Some((after, status, kind)) = fired.pending {
            if let (Some(after), Some(ctx)) = (after, ctx) {
                let kind = kind.map(SimNotification::kind).or(op.completion());
                if let Some(kind) = kind {
                    self.emit(
                        st,
                        kind,
                        id.as_deref(),
                        vec![Target::Context(ctx)],
                        status,
                        None,
                        after,
                    );
                }
            }
            return true;
        }
        if fired.crash.is_some() || fired.disconnect.is_some() {
            // Accepted; the completion never comes (the system or the service goes away).
            return true;
        }
        if self.sync_ops.contains(&op) {
            return false;
        }
        if let (Some(kind), Some(ctx)) = (op.completion(), ctx) {
            self.emit(
                st,
                kind,
                id.as_deref(),
                vec![Target::Context(ctx)],
                HResult::S_OK,
                None,
                Duration::ZERO,
            );
        }
        true
    }

    // ---------------------------------------------------------------- notifications

    /// Queues one notification event to `targets`, after latency plus `extra`, subject to the
    /// notification faults. Nothing but `ServiceDisconnect` is sent while disconnected.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        self: &Arc<Self>,
        st: &mut State,
        kind: NotificationKind,
        system: Option<&str>,
        targets: Vec<Target>,
        status: HResult,
        payload: Option<String>,
        extra: Duration,
    ) {
        if !st.connected && kind != NotificationKind::ServiceDisconnect {
            return;
        }
        let mut delay = self.latency + extra;
        let mut copies = 0u32;
        if let Some(k) = SimNotification::from_kind(kind) {
            for action in lock(&self.faults).on_notification(k, system) {
                match action {
                    Action::DropNotification => {
                        tracing::debug!(%kind, system, "hcs-sim: notification dropped by fault plan");
                        return;
                    }
                    Action::DelayNotification(d) => delay += d,
                    Action::DuplicateNotification { copies: c } => copies = copies.saturating_add(c),
                    _ => {}
                }
            }
        }
        for target in targets {
            for _ in 0..=copies {
                self.sched.schedule(
                    self,
                    delay,
                    Task::Deliver(Delivery {
                        target,
                        kind,
                        status,
                        payload: payload.clone(),
                        epoch: st.epoch,
                    }),
                );
            }
        }
    }

    fn live_callbacks(st: &State, ids: &[u64]) -> Vec<Target> {
        ids.iter()
            .filter(|id| st.callbacks.get(id).is_some_and(|c| c.live))
            .map(|id| Target::Registration(*id))
            .collect()
    }

    fn exit_payload(&self, kind: StopKind) -> (HResult, String) {
        let status = match kind {
            StopKind::Unexpected => codes::unexpected_exit(self.generation),
            StopKind::Graceful | StopKind::Forced => HResult::S_OK,
        };
        let doc = SystemExitStatus {
            status: status.as_i32(),
            exit_type: Some(kind.exit_type()),
        };
        (status, serde_json::to_string(&doc).unwrap_or_default())
    }

    fn process_status(pid: u32, exit_code: Option<u32>) -> String {
        let doc = ProcessStatus {
            process_id: pid,
            exited: exit_code.is_some(),
            exit_code: exit_code.unwrap_or(0),
            last_wait_result: 0,
        };
        serde_json::to_string(&doc).unwrap_or_default()
    }

    /// Runs one scheduler task (on the service thread).
    pub(crate) fn run_task(self: &Arc<Self>, task: Task) {
        match task {
            Task::Deliver(d) => self.deliver(d),
            Task::ScriptedExit {
                sys,
                proc,
                generation,
            } => {
                let mut st = self.lock();
                let code = st
                    .systems
                    .get(&sys)
                    .and_then(|s| s.processes.get(&proc))
                    .and_then(|p| match &p.kind {
                        ProcKind::Scripted(run)
                            if run.generation == generation && !run.frozen && p.exit_code.is_none() =>
                        {
                            Some(run.behaviour.exit_code)
                        }
                        _ => None,
                    });
                if let Some(code) = code {
                    self.process_exit(&mut st, sys, proc, code);
                }
            }
            Task::Escalate { sys, stop_gen } => {
                let mut st = self.lock();
                let due = st
                    .systems
                    .get(&sys)
                    .is_some_and(|s| s.stopping.is_some() && s.stop_gen == stop_gen);
                if due {
                    tracing::debug!(sys, "hcs-sim: grace period over; sending SIGKILL");
                    self.kill_processes(&mut st, sys, signal::SIGKILL);
                }
            }
            Task::Crash { sys } => {
                let mut st = self.lock();
                self.begin_stop(&mut st, sys, StopKind::Unexpected);
            }
            Task::Disconnect => {
                let mut st = self.lock();
                self.do_disconnect(&mut st);
            }
        }
    }

    fn deliver(&self, d: Delivery) {
        let ctx = match d.target {
            Target::Registration(cb) => {
                let mut st = self.lock();
                if st.epoch != d.epoch {
                    return;
                }
                match st.callbacks.get_mut(&cb) {
                    Some(rec) if rec.live => {
                        rec.in_flight += 1;
                        rec.delivering = Some(std::thread::current().id());
                        rec.ctx
                    }
                    _ => return,
                }
            }
            Target::Context(ctx) => {
                if self.lock().epoch != d.epoch {
                    return;
                }
                ctx
            }
            Target::Late(ctx) => ctx,
        };
        hcs::dispatch(ctx.raw(), d.kind, d.status, d.payload.as_deref());
        if let Target::Registration(cb) = d.target {
            let mut st = self.lock();
            if let Some(rec) = st.callbacks.get_mut(&cb) {
                rec.in_flight -= 1;
                if rec.in_flight == 0 {
                    rec.delivering = None;
                }
            }
            drop(st);
            self.drained.notify_all();
        }
    }

    /// Removes a registration, waiting for a delivery of it that is running on another thread
    /// (the issue #50 semantics of real HCS unregister).
    fn remove_callback<'a>(&'a self, mut st: MutexGuard<'a, State>, cb: u64) -> MutexGuard<'a, State> {
        match st.callbacks.get_mut(&cb) {
            Some(rec) => rec.live = false,
            None => return st,
        }
        let me = std::thread::current().id();
        while st
            .callbacks
            .get(&cb)
            .is_some_and(|rec| rec.in_flight > 0 && rec.delivering != Some(me))
        {
            st = self.drained.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(rec) = st.callbacks.remove(&cb) {
            match rec.target {
                CbTarget::System(sys) => {
                    if let Some(s) = st.systems.get_mut(&sys) {
                        s.callbacks.retain(|c| *c != cb);
                    }
                }
                CbTarget::Process(sys, proc) => {
                    if let Some(p) = st.systems.get_mut(&sys).and_then(|s| s.processes.get_mut(&proc)) {
                        p.callbacks.retain(|c| *c != cb);
                    }
                }
            }
        }
        st
    }

    fn do_disconnect(self: &Arc<Self>, st: &mut State) {
        if !st.connected {
            return;
        }
        tracing::info!("hcs-sim: service disconnected");
        st.connected = false;
        st.epoch += 1;
        let mut ids: Vec<u64> = st
            .callbacks
            .iter()
            .filter(|(_, c)| c.live)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        let targets = ids.into_iter().map(Target::Registration).collect();
        self.emit(
            st,
            NotificationKind::ServiceDisconnect,
            None,
            targets,
            HResult::S_OK,
            None,
            Duration::ZERO,
        );
    }

    // ---------------------------------------------------------------- model transitions

    /// Records a process exit, notifies its registrations and completes a stop in progress.
    fn process_exit(self: &Arc<Self>, st: &mut State, sys: u64, proc: u64, code: u32) {
        let Some(s) = st.systems.get_mut(&sys) else { return };
        let id = s.id.clone();
        let Some(p) = s.processes.get_mut(&proc) else {
            return;
        };
        if p.exit_code.is_some() {
            return;
        }
        p.exit_code = Some(code);
        if let ProcKind::Scripted(run) = &mut p.kind {
            run.generation += 1;
        }
        let payload = Self::process_status(p.pid, Some(code));
        let callbacks = p.callbacks.clone();
        if p.handles.is_empty() {
            s.processes.remove(&proc);
        }
        let targets = Self::live_callbacks(st, &callbacks);
        self.emit(
            st,
            NotificationKind::ProcessExited,
            Some(&id),
            targets,
            HResult::S_OK,
            Some(payload),
            Duration::ZERO,
        );
        self.check_stop_done(st, sys);
    }

    /// Reports the exit of host process `proc` (called by the service thread).
    pub(crate) fn host_exited(self: &Arc<Self>, sys: u64, proc: u64, code: u32) {
        let mut st = self.lock();
        self.process_exit(&mut st, sys, proc, code);
    }

    /// Sends `sig` to every live process of a system (scripted ones react as documented on
    /// [`crate::ScriptedProcess`]).
    fn kill_processes(self: &Arc<Self>, st: &mut State, sys: u64, sig: i32) {
        let Some(s) = st.systems.get(&sys) else { return };
        let live: Vec<(u64, bool)> = s
            .live_processes()
            .map(|(k, p)| (*k, matches!(p.kind, ProcKind::Host)))
            .collect();
        for (proc, is_host) in live {
            if is_host {
                self.reaper.signal(proc, sig);
                if sig != signal::SIGKILL {
                    // A stopped (paused) process only acts on the signal once continued.
                    self.reaper.signal(proc, signal::SIGCONT);
                }
            } else {
                self.scripted_signal(st, sys, proc, sig);
            }
        }
    }

    /// Sends `sig` to one process (a host process's group, or a scripted process as
    /// [`Shared::scripted_signal`] describes).
    fn signal_one(self: &Arc<Self>, st: &mut State, sys: u64, proc: u64, sig: i32) {
        let Some(p) = st.systems.get(&sys).and_then(|s| s.processes.get(&proc)) else {
            return;
        };
        match p.kind {
            ProcKind::Host => {
                self.reaper.signal(proc, sig);
            }
            ProcKind::Scripted(_) => self.scripted_signal(st, sys, proc, sig),
        }
    }

    /// A signal to a scripted process: SIGKILL always ends it; other signals end it (exit
    /// code 128 + signal) unless it ignores signals or the signal's default action is not to
    /// terminate (SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGWINCH).
    fn scripted_signal(self: &Arc<Self>, st: &mut State, sys: u64, proc: u64, sig: i32) {
        let Some(p) = st.systems.get(&sys).and_then(|s| s.processes.get(&proc)) else {
            return;
        };
        let ProcKind::Scripted(run) = &p.kind else { return };
        let harmless = matches!(sig, 17..=23 | 28);
        if sig != signal::SIGKILL && (harmless || run.behaviour.ignore_signals) {
            return;
        }
        self.process_exit(st, sys, proc, 128 + sig as u32);
    }

    /// Starts stopping a system: graceful (SIGTERM, SIGKILL after the grace period), forced or
    /// unexpected (SIGKILL). The exit is reported once every process has exited.
    fn begin_stop(self: &Arc<Self>, st: &mut State, sys: u64, kind: StopKind) {
        let Some(s) = st.systems.get_mut(&sys) else { return };
        if s.state == SystemState::Stopped {
            return;
        }
        let kind = s.stopping.map_or(kind, |k| k.max(kind));
        s.stopping = Some(kind);
        s.stop_gen += 1;
        let stop_gen = s.stop_gen;
        match kind {
            StopKind::Graceful => {
                self.kill_processes(st, sys, signal::SIGTERM);
                self.sched
                    .schedule(self, self.shutdown_grace, Task::Escalate { sys, stop_gen });
            }
            StopKind::Forced | StopKind::Unexpected => {
                self.kill_processes(st, sys, signal::SIGKILL);
            }
        }
        self.check_stop_done(st, sys);
    }

    fn check_stop_done(self: &Arc<Self>, st: &mut State, sys: u64) {
        let Some(s) = st.systems.get_mut(&sys) else { return };
        let Some(kind) = s.stopping else { return };
        if s.has_live_processes() {
            return;
        }
        s.stopping = None;
        s.state = SystemState::Stopped;
        s.exit = Some(kind);
        let id = s.id.clone();
        let callbacks = s.callbacks.clone();
        tracing::debug!(system = %id, ?kind, "hcs-sim: system stopped");
        let (status, payload) = self.exit_payload(kind);
        let targets = Self::live_callbacks(st, &callbacks);
        self.emit(
            st,
            NotificationKind::SystemExited,
            Some(&id),
            targets,
            status,
            Some(payload),
            Duration::ZERO,
        );
        self.maybe_remove(st, sys);
    }

    /// Forgets a stopped system once no handle refers to it.
    fn maybe_remove(&self, st: &mut State, sys: u64) {
        let Some(s) = st.systems.get(&sys) else { return };
        if s.state != SystemState::Stopped || !s.handles.is_empty() || s.has_process_handles() {
            return;
        }
        if let Some(s) = st.systems.remove(&sys) {
            if st.by_id.get(&s.id) == Some(&sys) {
                st.by_id.remove(&s.id);
            }
            for cb in s.callbacks {
                st.callbacks.remove(&cb);
            }
        }
    }

    fn freeze(self: &Arc<Self>, st: &mut State, sys: u64) {
        let Some(s) = st.systems.get_mut(&sys) else { return };
        for (key, p) in s.processes.iter_mut().filter(|(_, p)| p.exit_code.is_none()) {
            match &mut p.kind {
                ProcKind::Host => {
                    self.reaper.signal(*key, signal::SIGSTOP);
                }
                ProcKind::Scripted(run) if !run.frozen => {
                    run.frozen = true;
                    run.generation += 1;
                    run.remaining = run.remaining.map(|r| r.saturating_sub(run.resumed_at.elapsed()));
                }
                ProcKind::Scripted(_) => {}
            }
        }
    }

    fn thaw(self: &Arc<Self>, st: &mut State, sys: u64) {
        let Some(s) = st.systems.get_mut(&sys) else { return };
        let mut timers = Vec::new();
        for (key, p) in s.processes.iter_mut().filter(|(_, p)| p.exit_code.is_none()) {
            match &mut p.kind {
                ProcKind::Host => {
                    self.reaper.signal(*key, signal::SIGCONT);
                }
                ProcKind::Scripted(run) if run.frozen => {
                    run.frozen = false;
                    run.resumed_at = Instant::now();
                    if let Some(r) = run.remaining {
                        timers.push((*key, run.generation, r));
                    }
                }
                ProcKind::Scripted(_) => {}
            }
        }
        for (proc, generation, after) in timers {
            self.sched.schedule(
                self,
                after,
                Task::ScriptedExit {
                    sys,
                    proc,
                    generation,
                },
            );
        }
    }

    /// Closes a system or process handle's registrations (as `HcsClose*` does), draining
    /// deliveries in progress.
    fn drop_registrations_via<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        handle: u64,
    ) -> MutexGuard<'a, State> {
        let mut cbs: Vec<u64> = st
            .callbacks
            .iter()
            .filter(|(_, c)| c.via == handle)
            .map(|(id, _)| *id)
            .collect();
        cbs.sort_unstable();
        for cb in cbs {
            st = self.remove_callback(st, cb);
        }
        st
    }

    fn process_rows(&self, st: &State, sys: u64) -> Vec<ProcRow> {
        st.systems
            .get(&sys)
            .map(|s| {
                s.live_processes()
                    .map(|(k, p)| ProcRow {
                        pid: p.pid,
                        image: p.image.clone(),
                        host_pid: match p.kind {
                            ProcKind::Host => self.reaper.pid(*k),
                            ProcKind::Scripted(_) => None,
                        },
                        created: p.created,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:07}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_nanos() / 100
    )
}

fn to_100ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos() / 100).unwrap_or(u64::MAX)
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
        Ok(Arc::new(Simulator {
            shared: Arc::new(Shared {
                generation: config.generation,
                latency: config.latency,
                sync_ops: config.sync_ops,
                shutdown_grace: config.shutdown_grace,
                reap_interval: config.reap_interval,
                backend: config.backend,
                state: Mutex::new(State::new()),
                drained: Condvar::new(),
                faults: Mutex::new(ActivePlan::new(config.faults)),
                gates: Mutex::new(HashMap::new()),
                gate_cv: Condvar::new(),
                sched: Scheduler::default(),
                reaper: Reaper::default(),
                service: Service::default(),
                shutdown: AtomicBool::new(false),
            }),
        }))
    }

    /// Replaces the fault plan (rule counters start from zero).
    pub fn set_fault_plan(&self, plan: FaultPlan) -> Result<(), PlanError> {
        plan.validate()?;
        *lock(&self.shared.faults) = ActivePlan::new(plan);
        Ok(())
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        *lock(&self.shared.faults) = ActivePlan::default();
    }

    /// Releases a `block` gate: calls blocked on it (now or later) proceed.
    pub fn release(&self, gate: &str) {
        lock(&self.shared.gates)
            .entry(gate.to_string())
            .or_default()
            .released = true;
        self.shared.gate_cv.notify_all();
    }

    /// Number of calls currently blocked on `gate`.
    pub fn blocked_on(&self, gate: &str) -> usize {
        lock(&self.shared.gates).get(gate).map_or(0, |g| g.waiting)
    }

    /// Crashes a system now: its processes are killed and `SystemExited` arrives with the
    /// unexpected-exit status (`0xC0370106` V1 / `0x80370106` V2) and `UnexpectedExit`.
    pub fn crash(&self, id: &str) -> Result<(), SimError> {
        let mut st = self.shared.lock();
        let sys = *st
            .by_id
            .get(id)
            .ok_or_else(|| SimError::UnknownSystem(id.to_string()))?;
        // The only refusal of a crash is `TransitionError::AlreadyStopped`.
        if st.systems[&sys].check(SystemOp::Crash).is_err() {
            return Err(SimError::AlreadyStopped(id.to_string()));
        }
        self.shared.begin_stop(&mut st, sys, StopKind::Unexpected);
        Ok(())
    }

    /// Disconnects the service: every live registration gets `ServiceDisconnect`, queued
    /// notifications are dropped, and every call fails with `RPC_S_SERVER_UNAVAILABLE`
    /// (`0x800706BA`) until [`Simulator::restart_service`]. Systems, processes and handles are
    /// kept (the model's simplification of a service restart).
    pub fn disconnect(&self) {
        let mut st = self.shared.lock();
        self.shared.do_disconnect(&mut st);
    }

    /// Reconnects the service after [`Simulator::disconnect`]; existing handles work again.
    pub fn restart_service(&self) {
        self.shared.lock().connected = true;
    }

    /// Whether the service is connected.
    pub fn is_connected(&self) -> bool {
        self.shared.lock().connected
    }

    /// Reboots the host: kills every host process, forgets every system, handle and
    /// registration, drops queued notifications (none is sent), releases blocked calls and
    /// reconnects the service. Handle values are never reused afterwards.
    pub fn reboot(&self) {
        self.shared.reaper.kill_all();
        self.shared.sched.clear();
        self.shared.lock().clear();
        self.shared.drained.notify_all();
        let mut gates = lock(&self.shared.gates);
        for g in gates.values_mut() {
            g.released = true;
        }
        drop(gates);
        self.shared.gate_cv.notify_all();
    }

    /// Open handles and live registrations.
    pub fn handle_counts(&self) -> HandleCounts {
        let st = self.shared.lock();
        HandleCounts {
            systems: st.system_handles.len(),
            processes: st.process_handles.len(),
            callbacks: st.callbacks.len(),
        }
    }

    /// Host processes started by this simulator that have not been reaped.
    pub fn running_host_processes(&self) -> usize {
        self.shared.reaper.running()
    }

    /// Ids of every system the model holds (any state), in creation order. A stopped system is
    /// forgotten once its last handle is closed.
    pub fn live_systems(&self) -> Vec<String> {
        self.shared
            .lock()
            .systems
            .values()
            .map(|s| s.id.clone())
            .collect()
    }

    /// A snapshot of one system.
    pub fn system_info(&self, id: &str) -> Option<SystemInfo> {
        let st = self.shared.lock();
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
        let st = self.shared.lock();
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
        usize::from(self.shared.service.started())
    }

    /// Everything still open or running: handles, registrations, systems and host processes.
    /// Empty when nothing leaked.
    pub fn leaks(&self) -> Vec<String> {
        let mut out = Vec::new();
        let st = self.shared.lock();
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
        for pid in self.shared.reaper.pids() {
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
            let leaks = self.leaks();
            if leaks.is_empty() {
                return;
            }
            let settling = self.shared.reaper.running() > 0
                || self.shared.lock().systems.values().any(|s| s.stopping.is_some());
            if !settling || Instant::now() >= deadline {
                panic!("hcs-sim: {} leak(s):\n  {}", leaks.len(), leaks.join("\n  "));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.reaper.kill_all();
        self.shared.service.wake();
        let _gates = lock(&self.shared.gates);
        self.shared.gate_cv.notify_all();
    }
}

// -------------------------------------------------------------------- configuration parsing

struct SystemConfig {
    system_type: String,
    name: String,
    owner: String,
    os: String,
    terminate_on_last_close: bool,
    memory_mb: Option<u64>,
}

fn parse_system_config(v: &Value) -> SystemConfig {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let system_type = if v.get("VirtualMachine").is_some_and(|x| !x.is_null()) {
        "VirtualMachine".to_string()
    } else if v.get("Container").is_some_and(|x| !x.is_null()) {
        "Container".to_string()
    } else {
        match s("SystemType") {
            t if t.eq_ignore_ascii_case("virtualmachine") => "VirtualMachine".to_string(),
            _ => "Container".to_string(),
        }
    };
    let memory_mb = v
        .pointer("/VirtualMachine/ComputeTopology/Memory/SizeInMB")
        .or_else(|| v.pointer("/Container/Memory/SizeInMB"))
        .or_else(|| v.get("MemoryMaximumInMB"))
        .and_then(Value::as_u64);
    let os = match s("RuntimeOsType") {
        os if !os.is_empty() => os,
        _ => "windows".to_string(),
    };
    SystemConfig {
        system_type,
        name: s("Name"),
        owner: s("Owner"),
        os,
        terminate_on_last_close: v
            .get("ShouldTerminateOnLastHandleClosed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        memory_mb,
    }
}

fn parse_params(text: &str, generation: ApiGeneration) -> Result<Params, Failure> {
    let v = parse_json(text, generation, "process parameters document")?;
    let Some(obj) = v.as_object() else {
        return Err(fail(
            codes::INVALID_ARG,
            "process parameters must be a JSON object",
        ));
    };
    let command_line = obj
        .get("CommandLine")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let args: Vec<String> = match obj.get("CommandArgs") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| fail(codes::INVALID_ARG, "CommandArgs must be an array of strings"))?,
        _ => Vec::new(),
    };
    let argv = if args.is_empty() {
        crate::cmdline::split_command_line(&command_line)
    } else {
        args
    };
    if argv.is_empty() {
        return Err(fail(
            codes::INVALID_ARG,
            "the process parameters have no CommandLine",
        ));
    }
    let mut environment = Vec::new();
    match obj.get("Environment") {
        None | Some(Value::Null) => {}
        Some(Value::Object(env)) => {
            for (k, val) in env {
                let val = val.as_str().ok_or_else(|| {
                    fail(
                        codes::INVALID_ARG,
                        format!("Environment value of `{k}` is not a string"),
                    )
                })?;
                environment.push((k.clone(), val.to_string()));
            }
        }
        Some(_) => return Err(fail(codes::INVALID_ARG, "Environment must be an object")),
    }
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
    Ok(Params {
        command_line: if command_line.is_empty() {
            argv.join(" ")
        } else {
            command_line
        },
        working_directory: obj
            .get("WorkingDirectory")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        environment,
        stdin: flag("CreateStdInPipe"),
        stdout: flag("CreateStdOutPipe"),
        stderr: flag("CreateStdErrPipe"),
        argv,
    })
}

fn image_name(argv0: &str) -> String {
    argv0.rsplit(['/', '\\']).next().unwrap_or(argv0).to_string()
}

fn basic_properties(s: &SystemRec) -> Value {
    let props = hcs_schema::ContainerProperties {
        id: s.id.clone(),
        state: s.state.as_str().to_string(),
        name: s.name.clone(),
        system_type: s.system_type.clone(),
        runtime_os_type: s.os.clone(),
        owner: s.owner.clone(),
        stopped: s.state == SystemState::Stopped,
        exit_type: s
            .exit
            .map(|k| k.exit_type().as_str().to_string())
            .unwrap_or_default(),
        ..Default::default()
    };
    serde_json::to_value(props).unwrap_or(Value::Null)
}

// -------------------------------------------------------------------- the driver

impl Driver for Simulator {
    fn name(&self) -> &str {
        "sim"
    }

    fn generation(&self) -> ApiGeneration {
        self.shared.generation
    }

    fn enumerate_compute_systems(&self, query: &str) -> DriverResult<String> {
        let sh = &self.shared;
        sh.begin(Op::EnumerateComputeSystems, None)?;
        let v = parse_json(query, sh.generation, "query")?;
        let q: hcs_schema::ComputeSystemQuery = serde_json::from_value(v)
            .map_err(|e| fail(codes::INVALID_ARG, format!("invalid ComputeSystemQuery: {e}")))?;
        let st = sh.lock();
        let list: Vec<Value> = st
            .systems
            .values()
            .filter(|s| q.ids.is_empty() || q.ids.contains(&s.id))
            .filter(|s| q.types.is_empty() || q.types.iter().any(|t| t.eq_ignore_ascii_case(&s.system_type)))
            .filter(|s| q.names.is_empty() || q.names.contains(&s.name))
            .filter(|s| q.owners.is_empty() || q.owners.contains(&s.owner))
            .map(basic_properties)
            .collect();
        Ok(Reply::done(Value::Array(list).to_string()))
    }

    fn create_compute_system(
        &self,
        id: &str,
        configuration: &str,
        ctx: NotifyContext,
    ) -> DriverResult<SystemHandle> {
        let sh = &self.shared;
        let _span = tracing::debug_span!("hcs_sim", op = "CreateComputeSystem", system = id).entered();
        let fired = sh.begin(Op::CreateComputeSystem, Some(id))?;
        if id.is_empty() {
            return Err(fail(codes::INVALID_ARG, "the compute system id is empty"));
        }
        let v = parse_json(configuration, sh.generation, "compute system configuration")?;
        if !v.is_object() {
            return Err(fail(
                codes::invalid_json(sh.generation),
                "the compute system configuration must be a JSON object",
            ));
        }
        let cfg = parse_system_config(&v);
        let mut st = sh.lock();
        if st.by_id.contains_key(id) {
            let code = codes::already_exists(sh.generation);
            return Err(fail(
                code,
                format!("A compute system with id `{id}` already exists."),
            ));
        }
        let sys = st.key();
        let handle = st.handle();
        st.systems.insert(
            sys,
            SystemRec {
                id: id.to_string(),
                system_type: cfg.system_type,
                name: cfg.name,
                owner: cfg.owner,
                os: cfg.os,
                terminate_on_last_close: cfg.terminate_on_last_close,
                state: SystemState::Created,
                stopping: None,
                stop_gen: 0,
                exit: None,
                memory_mb: cfg.memory_mb,
                mapped_directories: Vec::new(),
                handles: HashSet::from([handle]),
                callbacks: Vec::new(),
                processes: Default::default(),
                started: None,
            },
        );
        st.by_id.insert(id.to_string(), sys);
        st.system_handles.insert(handle, sys);
        let pending = sh.complete(&mut st, Op::CreateComputeSystem, sys, Some(ctx), &fired);
        sh.after(&mut st, Some(sys), &fired);
        let h = SystemHandle::new(handle).ok_or_else(bad_handle)?;
        Ok(reply(h, pending))
    }

    fn open_compute_system(&self, id: &str) -> DriverResult<SystemHandle> {
        let sh = &self.shared;
        let fired = sh.begin(Op::OpenComputeSystem, Some(id))?;
        let mut st = sh.lock();
        let Some(&sys) = st.by_id.get(id) else {
            let code = codes::not_found(sh.generation);
            return Err(fail(
                code,
                format!("A compute system with id `{id}` was not found."),
            ));
        };
        let handle = st.handle();
        st.system_handles.insert(handle, sys);
        if let Some(s) = st.systems.get_mut(&sys) {
            s.handles.insert(handle);
        }
        sh.after(&mut st, Some(sys), &fired);
        Ok(Reply::done(SystemHandle::new(handle).ok_or_else(bad_handle)?))
    }

    fn close_compute_system(&self, system: SystemHandle) -> Result<(), Failure> {
        let sh = &self.shared;
        let id = sh.system_id(system)?;
        sh.begin(Op::CloseComputeSystem, Some(&id))?;
        let st = sh.lock();
        if !st.system_handles.contains_key(&system.raw()) {
            return Err(bad_handle());
        }
        let mut st = sh.drop_registrations_via(st, system.raw());
        let Some(sys) = st.system_handles.remove(&system.raw()) else {
            return Err(bad_handle());
        };
        let Some(s) = st.systems.get_mut(&sys) else {
            return Ok(());
        };
        s.handles.remove(&system.raw());
        // Closing the last handle is an implicit terminate, where a terminate is valid.
        if s.handles.is_empty() && s.terminate_on_last_close && s.check(SystemOp::Terminate).is_ok() {
            tracing::debug!(system = %s.id, "hcs-sim: last handle closed; terminating");
            sh.begin_stop(&mut st, sys, StopKind::Forced);
        }
        sh.maybe_remove(&mut st, sys);
        Ok(())
    }

    fn start_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.lifecycle(
            Op::StartComputeSystem,
            SystemOp::Start,
            system,
            options,
            Some(ctx),
            |_, st, sys| {
                if let Some(s) = st.systems.get_mut(&sys) {
                    s.started = Some((Instant::now(), SystemTime::now()));
                }
            },
        )
    }

    fn shutdown_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.lifecycle(
            Op::ShutdownComputeSystem,
            SystemOp::Shutdown,
            system,
            options,
            None,
            |sh, st, sys| sh.begin_stop(st, sys, StopKind::Graceful),
        )
    }

    fn terminate_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.lifecycle(
            Op::TerminateComputeSystem,
            SystemOp::Terminate,
            system,
            options,
            None,
            |sh, st, sys| sh.begin_stop(st, sys, StopKind::Forced),
        )
    }

    fn pause_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.lifecycle(
            Op::PauseComputeSystem,
            SystemOp::Pause,
            system,
            options,
            Some(ctx),
            |sh, st, sys| sh.freeze(st, sys),
        )
    }

    fn resume_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.lifecycle(
            Op::ResumeComputeSystem,
            SystemOp::Resume,
            system,
            options,
            Some(ctx),
            |sh, st, sys| sh.thaw(st, sys),
        )
    }

    fn save_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.lifecycle(
            Op::SaveComputeSystem,
            SystemOp::Save,
            system,
            options,
            Some(ctx),
            |sh, st, sys| sh.freeze(st, sys),
        )
    }

    fn get_compute_system_properties(&self, system: SystemHandle, query: &str) -> DriverResult<String> {
        let sh = &self.shared;
        let (mut doc, types, procs, started) = sh.with_system(Op::GetComputeSystemProperties, system, |st, sys, _| {
            let v = parse_json(query, sh.generation, "property query")?;
            let mut types = Vec::new();
            match v.get("PropertyTypes") {
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) => {
                    for t in a {
                        match t.as_str() {
                            Some(name @ ("Statistics" | "ProcessList" | "Memory")) => types.push(name.to_string()),
                            _ => {
                                return Err(fail(
                                    codes::INVALID_ARG,
                                    format!("unsupported property type {t}; the simulator answers Statistics, ProcessList and Memory"),
                                ))
                            }
                        }
                    }
                }
                Some(_) => return Err(fail(codes::INVALID_ARG, "PropertyTypes must be an array")),
            }
            let s = st.systems.get(&sys).ok_or_else(bad_handle)?;
            let mut doc = basic_properties(s);
            if types.iter().any(|t| t == "Memory") {
                doc["Memory"] = json!({ "SizeInMB": s.memory_mb });
            }
            let procs = sh.process_rows(st, sys);
            Ok((doc, types, procs, s.started))
        })?;
        // /proc is read outside the state lock.
        let stats: Vec<_> = procs
            .iter()
            .map(|row| row.host_pid.and_then(host::proc_stats).unwrap_or_default())
            .collect();
        if types.iter().any(|t| t == "ProcessList") {
            let list: Vec<Value> = procs
                .iter()
                .zip(&stats)
                .map(|(row, st)| {
                    serde_json::to_value(hcs_schema::ProcessDetails {
                        process_id: row.pid,
                        image_name: row.image.clone(),
                        create_timestamp: Some(rfc3339(row.created)),
                        user_time_100ns: st.user_100ns,
                        kernel_time_100ns: st.kernel_100ns,
                        memory_working_set_private_bytes: st.private_bytes,
                        memory_working_set_shared_bytes: st.shared_bytes,
                        memory_commit_bytes: st.rss_bytes,
                    })
                    .unwrap_or(Value::Null)
                })
                .collect();
            doc["ProcessList"] = Value::Array(list);
        }
        if types.iter().any(|t| t == "Statistics") {
            let user: u64 = stats.iter().map(|s| s.user_100ns).sum();
            let kernel: u64 = stats.iter().map(|s| s.kernel_100ns).sum();
            let now = SystemTime::now();
            doc["Statistics"] = json!({
                "Timestamp": rfc3339(now),
                "ContainerStartTime": started.map(|(_, t)| rfc3339(t)),
                "Uptime100ns": started.map_or(0, |(i, _)| to_100ns(i.elapsed())),
                "Processor": {
                    "TotalRuntime100ns": user + kernel,
                    "RuntimeUser100ns": user,
                    "RuntimeKernel100ns": kernel,
                },
                "Memory": {
                    "MemoryUsageCommitBytes": stats.iter().map(|s| s.rss_bytes).sum::<u64>(),
                    "MemoryUsageCommitPeakBytes": stats.iter().map(|s| s.peak_rss_bytes).sum::<u64>(),
                    "MemoryUsagePrivateWorkingSetBytes": stats.iter().map(|s| s.private_bytes).sum::<u64>(),
                },
                "Storage": { "ReadCountNormalized": 0, "ReadSizeBytes": 0, "WriteCountNormalized": 0, "WriteSizeBytes": 0 },
            });
        }
        Ok(Reply::done(doc.to_string()))
    }

    fn modify_compute_system(&self, system: SystemHandle, configuration: &str) -> DriverResult<()> {
        let sh = &self.shared;
        sh.with_system(Op::ModifyComputeSystem, system, |st, sys, fired| {
            let v = parse_json(configuration, sh.generation, "modify request")?;
            let s = st.systems.get_mut(&sys).ok_or_else(bad_handle)?;
            s.transition(SystemOp::Modify)
                .map_err(|e| transition_failure(e, sh.generation))?;
            let path = v.get("ResourcePath").and_then(Value::as_str).unwrap_or_default();
            let request = v.get("RequestType").and_then(Value::as_str).unwrap_or_default();
            let settings = v.get("Settings").cloned().unwrap_or(Value::Null);
            let unsupported = || {
                fail(
                    codes::INVALID_ARG,
                    format!("unsupported modify request: ResourcePath `{path}` RequestType `{request}`"),
                )
            };
            match (path, request, s.system_type.as_str()) {
                ("VirtualMachine/ComputeTopology/Memory/SizeInMB", "Update", "VirtualMachine") => {
                    let mb = settings
                        .as_u64()
                        .filter(|mb| *mb > 0)
                        .ok_or_else(|| fail(codes::INVALID_ARG, "Settings must be a positive size in MB"))?;
                    s.memory_mb = Some(mb);
                }
                ("Container/MappedDirectories", "Add", "Container") => {
                    let get = |k: &str| {
                        settings
                            .get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    let dir = MappedDirectory {
                        host_path: get("HostPath"),
                        container_path: get("ContainerPath"),
                        read_only: settings.get("ReadOnly").and_then(Value::as_bool).unwrap_or(false),
                    };
                    if dir.host_path.is_empty() || dir.container_path.is_empty() {
                        return Err(fail(
                            codes::INVALID_ARG,
                            "a mapped directory needs HostPath and ContainerPath",
                        ));
                    }
                    if s.mapped_directories
                        .iter()
                        .any(|d| d.container_path == dir.container_path)
                    {
                        return Err(fail(
                            codes::INVALID_ARG,
                            format!("`{}` is already mapped", dir.container_path),
                        ));
                    }
                    s.mapped_directories.push(dir);
                }
                ("Container/MappedDirectories", "Remove", "Container") => {
                    let target = settings
                        .get("ContainerPath")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let before = s.mapped_directories.len();
                    s.mapped_directories.retain(|d| d.container_path != target);
                    if s.mapped_directories.len() == before {
                        return Err(fail(codes::INVALID_ARG, format!("`{target}` is not mapped")));
                    }
                }
                _ => return Err(unsupported()),
            }
            Ok(reply((), fired.pending.is_some()))
        })
    }

    fn register_compute_system_callback(
        &self,
        system: SystemHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        let sh = &self.shared;
        let handle = sh.with_system(Op::RegisterComputeSystemCallback, system, |st, sys, _| {
            let handle = st.handle();
            st.callbacks.insert(
                handle,
                CallbackRec {
                    ctx,
                    target: CbTarget::System(sys),
                    via: system.raw(),
                    live: true,
                    in_flight: 0,
                    delivering: None,
                },
            );
            let s = st.systems.get_mut(&sys).ok_or_else(bad_handle)?;
            s.callbacks.push(handle);
            // Notifications are sticky (AsyncModel.md): a registration on a stopped system
            // still learns of the exit.
            let exited = s
                .exit
                .filter(|_| s.state == SystemState::Stopped)
                .map(|k| (k, s.id.clone()));
            if let Some((kind, id)) = exited {
                let (status, payload) = sh.exit_payload(kind);
                sh.emit(
                    st,
                    NotificationKind::SystemExited,
                    Some(&id),
                    vec![Target::Registration(handle)],
                    status,
                    Some(payload),
                    Duration::ZERO,
                );
            }
            Ok(handle)
        })?;
        CallbackHandle::new(handle).ok_or_else(bad_handle)
    }

    fn unregister_compute_system_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.unregister(Op::UnregisterComputeSystemCallback, callback, false)
    }

    fn create_process(
        &self,
        system: SystemHandle,
        parameters: &str,
    ) -> DriverResult<(ProcessHandle, ProcessInfo)> {
        let sh = &self.shared;
        let _span = tracing::debug_span!("hcs_sim", op = "CreateProcess", handle = system.raw()).entered();
        let id = sh.system_id(system)?;
        let fired = sh.begin(Op::CreateProcess, Some(&id))?;
        let params = parse_params(parameters, sh.generation)?;
        let check = |st: &State| -> Result<u64, Failure> {
            let sys = *st.system_handles.get(&system.raw()).ok_or_else(bad_handle)?;
            st.systems[&sys]
                .check(SystemOp::CreateProcess)
                .map_err(|e| transition_failure(e, sh.generation))?;
            Ok(sys)
        };
        check(&sh.lock())?;
        let image = image_name(&params.argv[0]);
        let (mut st, sys, proc, kind, pid, info) = match &sh.backend {
            Backend::Host => {
                // Spawn outside the lock, then re-check the system.
                let mut spawned = host::spawn(&params)?;
                let mut st = sh.lock();
                let sys = match check(&st) {
                    Ok(sys) => sys,
                    Err(e) => {
                        drop(st);
                        let _ = signal::kill_group(spawned.child.id(), signal::SIGKILL);
                        let _ = spawned.child.kill();
                        let _ = spawned.child.wait();
                        return Err(e);
                    }
                };
                let proc = st.key();
                let pid = spawned.child.id();
                let info = ProcessInfo {
                    pid,
                    stdin: spawned.stdin.take().map(PipeWriter::from_file),
                    stdout: spawned.stdout.take().map(PipeReader::from_file),
                    stderr: spawned.stderr.take().map(PipeReader::from_file),
                };
                sh.reaper.adopt(sh, sys, proc, spawned.child);
                (st, sys, proc, ProcKind::Host, pid, info)
            }
            Backend::Scripted(script) => {
                let Some(behaviour) = script.lookup(&params.command_line).cloned() else {
                    return Err(fail(
                        codes::FILE_NOT_FOUND,
                        format!(
                            "The system cannot find the file specified. (no script entry for `{}`)",
                            params.command_line
                        ),
                    ));
                };
                let mut st = sh.lock();
                let sys = check(&st)?;
                let proc = st.key();
                let pid = st.next_scripted_pid;
                st.next_scripted_pid = st.next_scripted_pid.wrapping_add(4);
                let stdin_buf = Arc::new(Mutex::new(Vec::new()));
                let info = ProcessInfo {
                    pid,
                    stdin: params
                        .stdin
                        .then(|| PipeWriter::new(CaptureWriter(Arc::clone(&stdin_buf)))),
                    stdout: params
                        .stdout
                        .then(|| PipeReader::new(std::io::Cursor::new(behaviour.stdout.clone()))),
                    stderr: params
                        .stderr
                        .then(|| PipeReader::new(std::io::Cursor::new(behaviour.stderr.clone()))),
                };
                if let Some(runtime) = behaviour.runtime {
                    sh.sched.schedule(
                        sh,
                        runtime,
                        Task::ScriptedExit {
                            sys,
                            proc,
                            generation: 0,
                        },
                    );
                }
                let run = ScriptedRun {
                    remaining: behaviour.runtime,
                    behaviour,
                    generation: 0,
                    resumed_at: Instant::now(),
                    frozen: false,
                    stdin: stdin_buf,
                };
                (st, sys, proc, ProcKind::Scripted(run), pid, info)
            }
        };
        let handle = st.handle();
        st.process_handles.insert(handle, (sys, proc));
        if let Some(s) = st.systems.get_mut(&sys) {
            s.processes.insert(
                proc,
                ProcRec {
                    pid,
                    command_line: params.command_line.clone(),
                    image,
                    handles: HashSet::from([handle]),
                    callbacks: Vec::new(),
                    exit_code: None,
                    kind,
                    modify_requests: Vec::new(),
                    created: SystemTime::now(),
                },
            );
        }
        sh.after(&mut st, Some(sys), &fired);
        drop(st);
        let h = ProcessHandle::new(handle).ok_or_else(bad_handle)?;
        Ok(Reply::done((h, info)))
    }

    fn open_process(&self, system: SystemHandle, pid: u32) -> DriverResult<ProcessHandle> {
        let sh = &self.shared;
        sh.with_system(Op::OpenProcess, system, |st, sys, _| {
            let s = st.systems.get(&sys).ok_or_else(bad_handle)?;
            let proc = s
                .processes
                .iter()
                .filter(|(_, p)| p.pid == pid)
                .max_by_key(|(k, p)| (p.exit_code.is_none(), **k))
                .map(|(k, _)| *k)
                .ok_or_else(|| {
                    fail(
                        codes::PROCESS_NOT_FOUND,
                        format!("Element not found. (no process {pid})"),
                    )
                })?;
            let handle = st.handle();
            st.process_handles.insert(handle, (sys, proc));
            if let Some(p) = st.systems.get_mut(&sys).and_then(|s| s.processes.get_mut(&proc)) {
                p.handles.insert(handle);
            }
            Ok(Reply::done(ProcessHandle::new(handle).ok_or_else(bad_handle)?))
        })
    }

    fn close_process(&self, process: ProcessHandle) -> Result<(), Failure> {
        let sh = &self.shared;
        let id = sh.process_system_id(process)?;
        sh.begin(Op::CloseProcess, Some(&id))?;
        let st = sh.lock();
        if !st.process_handles.contains_key(&process.raw()) {
            return Err(bad_handle());
        }
        let mut st = sh.drop_registrations_via(st, process.raw());
        let Some((sys, proc)) = st.process_handles.remove(&process.raw()) else {
            return Err(bad_handle());
        };
        if let Some(s) = st.systems.get_mut(&sys) {
            if let Some(p) = s.processes.get_mut(&proc) {
                p.handles.remove(&process.raw());
                if p.handles.is_empty() && p.exit_code.is_some() {
                    s.processes.remove(&proc);
                }
            }
        }
        sh.maybe_remove(&mut st, sys);
        Ok(())
    }

    fn terminate_process(&self, process: ProcessHandle) -> DriverResult<()> {
        let sh = &self.shared;
        sh.with_process(Op::TerminateProcess, process, |st, sys, proc| {
            let p = process_rec(st, sys, proc)?;
            if p.exit_code.is_some() {
                return Err(fail(
                    codes::terminate_gone(sh.generation),
                    "The process has already exited.",
                ));
            }
            sh.signal_one(st, sys, proc, signal::SIGKILL);
            Ok(Reply::done(()))
        })
    }

    /// `{"Signal": n}`: 0 (Windows CtrlC) is delivered as `SIGINT`; 1–64 are Linux signal
    /// numbers delivered as is (to the process group); anything else is `E_INVALIDARG`. An
    /// empty document or `{}` means signal 0.
    fn signal_process(&self, process: ProcessHandle, options: &str) -> DriverResult<()> {
        let sh = &self.shared;
        sh.with_process(Op::SignalProcess, process, |st, sys, proc| {
            let v = parse_json(options, sh.generation, "signal options")?;
            let sig = match v.get("Signal") {
                None | Some(Value::Null) => 0,
                Some(n) => n
                    .as_i64()
                    .ok_or_else(|| fail(codes::INVALID_ARG, "Signal must be an integer"))?,
            };
            let sig = match sig {
                0 => signal::SIGINT,
                1..=64 => sig as i32,
                _ => return Err(fail(codes::INVALID_ARG, format!("unsupported signal {sig}"))),
            };
            let p = process_rec(st, sys, proc)?;
            if p.exit_code.is_some() {
                return Err(fail(
                    codes::process_gone(sh.generation),
                    "The process has already exited.",
                ));
            }
            sh.signal_one(st, sys, proc, sig);
            Ok(Reply::done(()))
        })
    }

    /// The simulator hands each standard stream out once, from `create_process`; this call
    /// reports the pid with no streams (as HCS does for streams it did not create).
    fn get_process_info(&self, process: ProcessHandle) -> DriverResult<ProcessInfo> {
        let sh = &self.shared;
        sh.with_process(Op::GetProcessInfo, process, |st, sys, proc| {
            let p = process_rec(st, sys, proc)?;
            Ok(Reply::done(ProcessInfo {
                pid: p.pid,
                ..Default::default()
            }))
        })
    }

    fn get_process_properties(&self, process: ProcessHandle) -> DriverResult<String> {
        let sh = &self.shared;
        sh.with_process(Op::GetProcessProperties, process, |st, sys, proc| {
            let p = process_rec(st, sys, proc)?;
            Ok(Reply::done(Shared::process_status(p.pid, p.exit_code)))
        })
    }

    fn modify_process(&self, process: ProcessHandle, settings: &str) -> DriverResult<()> {
        let sh = &self.shared;
        sh.with_process(Op::ModifyProcess, process, |st, sys, proc| {
            let v = parse_json(settings, sh.generation, "process modify request")?;
            let request: hcs_schema::ProcessModifyRequest = serde_json::from_value(v).map_err(|e| {
                fail(
                    codes::INVALID_ARG,
                    format!("unsupported process modify request: {e}"),
                )
            })?;
            let p = st
                .systems
                .get_mut(&sys)
                .and_then(|s| s.processes.get_mut(&proc))
                .ok_or_else(bad_handle)?;
            if p.exit_code.is_some() {
                return Err(fail(
                    codes::process_gone(sh.generation),
                    "The process has already exited.",
                ));
            }
            match request.operation {
                hcs_schema::ProcessModifyOperation::ConsoleSize if request.console_size.is_none() => {
                    return Err(fail(
                        codes::INVALID_ARG,
                        "ConsoleSize request without ConsoleSize",
                    ))
                }
                hcs_schema::ProcessModifyOperation::CloseHandle if request.close_handle.is_none() => {
                    return Err(fail(
                        codes::INVALID_ARG,
                        "CloseHandle request without CloseHandle",
                    ))
                }
                _ => {}
            }
            p.modify_requests.push(settings.to_string());
            Ok(Reply::done(()))
        })
    }

    fn register_process_callback(
        &self,
        process: ProcessHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        let sh = &self.shared;
        let handle = sh.with_process(Op::RegisterProcessCallback, process, |st, sys, proc| {
            let handle = st.handle();
            st.callbacks.insert(
                handle,
                CallbackRec {
                    ctx,
                    target: CbTarget::Process(sys, proc),
                    via: process.raw(),
                    live: true,
                    in_flight: 0,
                    delivering: None,
                },
            );
            let s = st.systems.get_mut(&sys).ok_or_else(bad_handle)?;
            let id = s.id.clone();
            let p = s.processes.get_mut(&proc).ok_or_else(bad_handle)?;
            p.callbacks.push(handle);
            if let Some(code) = p.exit_code {
                // Sticky: a registration on an exited process still learns of the exit.
                let payload = Shared::process_status(p.pid, Some(code));
                sh.emit(
                    st,
                    NotificationKind::ProcessExited,
                    Some(&id),
                    vec![Target::Registration(handle)],
                    HResult::S_OK,
                    Some(payload),
                    Duration::ZERO,
                );
            }
            Ok(handle)
        })?;
        CallbackHandle::new(handle).ok_or_else(bad_handle)
    }

    fn unregister_process_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.unregister(Op::UnregisterProcessCallback, callback, true)
    }

    fn get_service_properties(&self, _query: &str) -> DriverResult<String> {
        self.shared.begin(Op::GetServiceProperties, None)?;
        Ok(Reply::done(
            json!({ "SupportedSchemaVersions": [{ "Major": 2, "Minor": 1 }] }).to_string(),
        ))
    }
}

impl Simulator {
    /// The lifecycle calls (start, pause, resume, save, shutdown, terminate): parse the options,
    /// take the checked state transition `sys_op`, run `effect` on the system, answer (pending
    /// or done, completing to `ctx`).
    fn lifecycle(
        &self,
        op: Op,
        sys_op: SystemOp,
        system: SystemHandle,
        options: &str,
        ctx: Option<NotifyContext>,
        effect: impl FnOnce(&Arc<Shared>, &mut State, u64),
    ) -> DriverResult<()> {
        let sh = &self.shared;
        sh.with_system(op, system, |st, sys, fired| {
            parse_json(options, sh.generation, &format!("{} options", sys_op.name()))?;
            let s = st.systems.get_mut(&sys).ok_or_else(bad_handle)?;
            s.transition(sys_op)
                .map_err(|e| transition_failure(e, sh.generation))?;
            effect(sh, st, sys);
            let pending = sh.complete(st, op, sys, ctx, fired);
            Ok(reply((), pending))
        })
    }

    fn unregister(&self, op: Op, callback: CallbackHandle, process: bool) -> Result<(), Failure> {
        let sh = &self.shared;
        let _span = tracing::debug_span!("hcs_sim", op = %op, handle = callback.raw()).entered();
        let id = {
            let st = sh.lock();
            if !st.connected {
                return Err(unavailable());
            }
            let rec = st
                .callbacks
                .get(&callback.raw())
                .filter(|c| c.live)
                .ok_or_else(bad_handle)?;
            let (sys, is_process) = match rec.target {
                CbTarget::System(sys) => (sys, false),
                CbTarget::Process(sys, _) => (sys, true),
            };
            if is_process != process {
                return Err(bad_handle());
            }
            st.systems.get(&sys).map(|s| s.id.clone())
        };
        let fired = sh.begin(op, id.as_deref())?;
        let st = sh.lock();
        let ctx = match st.callbacks.get(&callback.raw()) {
            Some(rec) if rec.live => rec.ctx,
            _ => return Err(bad_handle()),
        };
        let mut st = sh.remove_callback(st, callback.raw());
        for (kind, after) in &fired.late {
            let payload = match kind {
                SimNotification::SystemExited => Some(sh.exit_payload(StopKind::Graceful).1),
                SimNotification::ProcessExited => Some(Shared::process_status(0, Some(0))),
                _ => None,
            };
            tracing::debug!(
                ctx = ctx.raw(),
                kind = kind.name(),
                "hcs-sim: late callback scheduled"
            );
            sh.sched.schedule(
                sh,
                sh.latency + *after,
                Task::Deliver(Delivery {
                    target: Target::Late(ctx),
                    kind: kind.kind(),
                    status: HResult::S_OK,
                    payload,
                    epoch: st.epoch,
                }),
            );
        }
        sh.after(&mut st, None, &fired);
        Ok(())
    }
}
