//! The engine: the simulator's shared state (the state table of [`crate::model`], the fault
//! plan, the gates, the timer queue, the host children and the service thread) and every model
//! transition and notification — the part the in-process driver ([`crate::driver`]), the
//! control API ([`crate::Simulator`]) and the service thread ([`crate::service`]) share. The
//! service thread reaches it only through the [`Work`] interface its module defines.

use crate::codes::{self, ForGeneration};
use crate::config::{Backend, SimConfig};
use crate::fault::{Action, ActivePlan, NotifyTarget, Release};
use crate::host::{HostChild, Params, Reaper, Spawned};
use crate::model::{CbTarget, HeldSignal, ProcKind, SignalQueue, State, StopKind, SystemState};
use crate::record::{Event, Recorder, SignalEvent};
use crate::sched::{Delivery, Scheduler, Target, Task};
use crate::service::{Service, Work};
use crate::signal;
use crate::sync::lock;
use hcs::{
    ApiGeneration, Failure, HResult, Method, NotificationKind, NotifyContext, ProcessHandle, SystemHandle,
};
use hcs_schema::{ProcessStatus, SystemExitStatus};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

thread_local! {
    /// How many simulator calls with inline deliveries this thread is inside (see
    /// [`Engine::inline_scope`]).
    static INLINE_CALLS: Cell<u32> = const { Cell::new(0) };
}

/// A call in progress on this thread, for [`SimConfig::inline_deliveries`]: dropping the
/// outermost one runs the tasks the call made due.
pub(crate) struct InlineScope<'a>(Option<&'a Arc<Engine>>);

impl Drop for InlineScope<'_> {
    fn drop(&mut self) {
        let Some(engine) = self.0 else { return };
        let depth = INLINE_CALLS.with(|c| {
            let d = c.get().saturating_sub(1);
            c.set(d);
            d
        });
        if depth == 0 {
            engine.run_due_here();
        }
    }
}

/// A `block` gate of the fault plan: released or not, and how many calls wait on it.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// Released: calls blocked on it (now or later) proceed.
    pub(crate) released: bool,
    /// Calls blocked on it now.
    pub(crate) waiting: usize,
}

thread_local! {
    /// The failure a `fail` rule with `performed` set for the call running on this thread:
    /// written by [`Engine::begin`], taken by the driver wrapper once the call's work is done.
    static PERFORMED: RefCell<Option<Failure>> = const { RefCell::new(None) };
}

/// Takes the failure a `fail … performed` rule left for the call that just ran on this thread.
pub(crate) fn take_performed_failure() -> Option<Failure> {
    PERFORMED.with(|p| p.borrow_mut().take())
}

/// An extra notification a `notify` rule asked for.
#[derive(Debug, Clone)]
pub(crate) struct Inject {
    pub(crate) kind: NotificationKind,
    pub(crate) status: HResult,
    pub(crate) payload: Option<String>,
    pub(crate) after: Duration,
    pub(crate) to: NotifyTarget,
}

/// What the fault plan decided for one call (besides delays and failures, applied in `begin`).
#[derive(Debug, Default)]
pub(crate) struct Fired {
    /// A `fail … performed` rule fired: the work is done, then this failure is returned.
    pub(crate) performed: bool,
    /// Extra notifications to send after the call.
    pub(crate) notify: Vec<Inject>,
    /// A signal or terminate is held (per-handle queue).
    pub(crate) hold: Option<Release>,
    /// Answer pending: completion delay (`None`: never), status and a different kind.
    pub(crate) pending: Option<(Option<Duration>, HResult, Option<NotificationKind>)>,
    /// Crash the system after this delay.
    pub(crate) crash: Option<Duration>,
    /// Disconnect the service after this delay.
    pub(crate) disconnect: Option<Duration>,
    /// Late callbacks to deliver after an unregister: kind and delay.
    pub(crate) late: Vec<(NotificationKind, Duration)>,
}

/// The state shared by the simulator's control API, its driver calls and its service thread.
pub(crate) struct Engine {
    /// The API generation whose encodings and notification shapes are used.
    pub(crate) generation: ApiGeneration,
    /// `SystemExited`'s status and payload per [`StopKind`].
    exit_payloads: ExitPayloads,
    /// Delay between a model event and its notification.
    pub(crate) latency: Duration,
    /// Pending-capable calls that answer synchronously.
    sync_ops: HashSet<Method>,
    /// Grace period of a graceful shutdown before `SIGKILL`.
    shutdown_grace: Duration,
    /// Sweep interval of host children that cannot be waited for.
    reap_interval: Duration,
    /// What runs processes.
    pub(crate) backend: Backend,
    /// The state table; take it with [`Engine::lock`].
    state: Mutex<State>,
    /// Signalled when a delivery to a registration finishes (unregister waits on it).
    pub(crate) drained: Condvar,
    /// The fault plan and its rule counters.
    pub(crate) faults: Mutex<ActivePlan>,
    /// The `block` gates, by name.
    pub(crate) gates: Mutex<HashMap<String, Gate>>,
    /// Signalled when a gate is released (or at shutdown).
    pub(crate) gate_cv: Condvar,
    /// The timer queue the service thread runs.
    pub(crate) sched: Scheduler,
    /// Held by whoever runs queued tasks (the service thread, or a caller running its own due
    /// tasks with `inline`), so that tasks run one at a time in queue order.
    run_lock: Mutex<()>,
    /// `SimConfig::inline_deliveries`: zero-delay tasks queued during a call run on the
    /// calling thread when the call ends.
    inline: bool,
    /// The host children the service thread reaps.
    pub(crate) reaper: Reaper,
    /// The service thread's start and wake-up.
    pub(crate) service: Service,
    /// Set when the simulator is dropped: the service thread ends, blocked calls proceed.
    shutdown: AtomicBool,
    /// The record of calls, deliveries and signals (off by default).
    pub(crate) recorder: Recorder,
}

/// The failure of every call while the service is disconnected: `RPC_S_SERVER_UNAVAILABLE`.
pub(crate) fn unavailable() -> Failure {
    Failure::with_document(
        codes::SERVER_UNAVAILABLE,
        codes::result_document(codes::SERVER_UNAVAILABLE, "The RPC server is unavailable."),
    )
}

/// The failure of an unknown, closed or wrong-kind handle: `E_HANDLE`.
pub(crate) fn bad_handle() -> Failure {
    Failure::new(codes::INVALID_HANDLE)
}

/// `SystemExited`'s status and payload after each kind of stop, as one generation sends them
/// (see [`Engine::exit_payload`]): made once per engine, the generation being fixed.
struct ExitPayloads {
    graceful: (HResult, String),
    forced: (HResult, String),
    unexpected: (HResult, String),
}

impl ExitPayloads {
    fn new(generation: ApiGeneration) -> Self {
        let make = |kind: StopKind| {
            let exit_status = match kind {
                StopKind::Unexpected => codes::UNEXPECTED_EXIT.of(generation),
                StopKind::Graceful | StopKind::Forced => HResult::S_OK,
            };
            let doc = SystemExitStatus {
                status: exit_status.as_i32(),
                exit_type: Some(kind.exit_type()),
            };
            let status = match generation {
                ApiGeneration::V1 => exit_status,
                ApiGeneration::V2 => HResult::S_OK,
            };
            (status, serde_json::to_string(&doc).unwrap_or_default())
        };
        ExitPayloads {
            graceful: make(StopKind::Graceful),
            forced: make(StopKind::Forced),
            unexpected: make(StopKind::Unexpected),
        }
    }

    fn get(&self, kind: StopKind) -> &(HResult, String) {
        match kind {
            StopKind::Graceful => &self.graceful,
            StopKind::Forced => &self.forced,
            StopKind::Unexpected => &self.unexpected,
        }
    }
}

impl Engine {
    /// The engine of a simulator configured by `config` (whose fault plan is valid). Its
    /// service thread starts on first need.
    pub(crate) fn new(config: SimConfig) -> Engine {
        Engine {
            generation: config.generation,
            exit_payloads: ExitPayloads::new(config.generation),
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
            run_lock: Mutex::new(()),
            inline: config.inline_deliveries,
            reaper: Reaper::new(config.supervisor),
            service: Service::default(),
            shutdown: AtomicBool::new(false),
            recorder: Recorder::new(),
        }
    }

    /// Queues `task` to run `delay` from now on the service thread (starting or waking it),
    /// or, with `inline` and no delay inside a call, when that call ends ([`InlineScope`]).
    pub(crate) fn schedule(self: &Arc<Self>, delay: Duration, task: Task) {
        self.sched.push(delay, task);
        if self.inline && delay.is_zero() && INLINE_CALLS.with(Cell::get) > 0 {
            return;
        }
        self.service.poke(self);
    }

    /// Runs once the engine is in its `Arc`. With `inline` the service thread is started now:
    /// the callers run most due tasks themselves, so it would otherwise start at whatever moment
    /// first needs it (a task a caller could not take), and a service's thread count would
    /// change under load.
    pub(crate) fn started(self: &Arc<Self>) {
        if self.inline {
            self.service.poke(self);
        }
    }

    /// Marks the calling thread as inside a call until the scope is dropped; with `inline`,
    /// the drop of the outermost scope runs the tasks due by then (create it before the call
    /// takes any lock, so that it is dropped after all of them are released).
    pub(crate) fn inline_scope(self: &Arc<Self>) -> InlineScope<'_> {
        if !self.inline {
            return InlineScope(None);
        }
        INLINE_CALLS.with(|c| c.set(c.get() + 1));
        InlineScope(Some(self))
    }

    /// Runs the due tasks on this thread, unless another runner (the service thread) is at it:
    /// then it is poked, so that it looks at the queue again before it sleeps.
    fn run_due_here(self: &Arc<Self>) {
        let _runner = match self.run_lock.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                self.service.poke(self);
                return;
            }
        };
        while let Some(task) = self.sched.pop_due(Instant::now()) {
            self.run_task(task);
        }
    }

    /// Hands a spawned host child of process `proc` of system `sys` to the reaper (starting or
    /// waking the service thread, which reports its exit).
    pub(crate) fn adopt(
        self: &Arc<Self>,
        sys: u64,
        proc: u64,
        child: HostChild,
        console: Option<crate::host::ConsoleFd>,
    ) {
        self.reaper.adopt(sys, proc, child, console);
        self.service.poke(self);
    }

    /// Spawns a host process for system `sys` (through its supervisor when one is
    /// configured); wakes the service thread for exit reports read meanwhile, or a broken link.
    pub(crate) fn spawn_host(self: &Arc<Self>, sys: u64, params: &Params) -> Result<Spawned, Failure> {
        let spawned = self.reaper.spawn(sys, params);
        if self.reaper.needs_attention() {
            self.service.poke(self);
        }
        spawned
    }

    /// Stops the service thread and every host child, and releases blocked calls (the
    /// simulator is being dropped).
    pub(crate) fn shut_down(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.reaper.kill_all();
        self.service.wake();
        let _gates = lock(&self.gates);
        self.gate_cv.notify_all();
    }
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    // ---------------------------------------------------------------- calls and faults

    /// The common prologue of every call: connectivity, then the fault plan (delays, blocks and
    /// failures are applied here; the rest is returned).
    pub(crate) fn begin(
        self: &Arc<Self>,
        op: Method,
        system: Option<&str>,
        handle: Option<u64>,
    ) -> Result<Fired, Failure> {
        if !self.lock().connected {
            return Err(unavailable());
        }
        let actions = lock(&self.faults).on_call(op, system, handle);
        let mut fired = Fired::default();
        let mut failure = None;
        for action in actions {
            match action {
                Action::Delay(d) => std::thread::sleep(d),
                Action::Block { gate } => self.wait_gate(&gate),
                Action::Fail {
                    code,
                    document,
                    performed: false,
                } => {
                    failure.get_or_insert(Failure {
                        code,
                        document,
                        source: None,
                    });
                }
                Action::Fail {
                    code,
                    document,
                    performed: true,
                } => {
                    if !fired.performed {
                        fired.performed = true;
                        PERFORMED.with(|p| {
                            *p.borrow_mut() = Some(Failure {
                                code,
                                document,
                                source: None,
                            })
                        });
                    }
                }
                Action::Notify {
                    kind,
                    status,
                    payload,
                    after,
                    to,
                } => fired.notify.push(Inject {
                    kind,
                    status,
                    payload,
                    after,
                    to,
                }),
                Action::HoldSignal { release } => {
                    fired.hold.get_or_insert(release);
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
                | Action::DropNotification
                | Action::Rewrite { .. } => {}
            }
        }
        if let Some(f) = failure {
            PERFORMED.with(|p| p.borrow_mut().take());
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

    /// The common epilogue of a call on a system (and process `proc` of it, for process
    /// calls): injected notifications, crash and disconnect.
    pub(crate) fn after(
        self: &Arc<Self>,
        st: &mut State,
        sys: Option<u64>,
        proc: Option<u64>,
        fired: &Fired,
    ) {
        if let Some(sys) = sys {
            for n in &fired.notify {
                let proc = match n.to {
                    NotifyTarget::System => None,
                    NotifyTarget::Auto | NotifyTarget::Process => proc,
                };
                self.schedule(
                    n.after,
                    Task::Inject {
                        sys,
                        proc,
                        kind: n.kind,
                        status: n.status,
                        payload: n.payload.clone(),
                        epoch: st.epoch,
                    },
                );
            }
        }
        if let (Some(after), Some(sys)) = (fired.crash, sys) {
            self.schedule(after, Task::Crash { sys });
        }
        if let Some(after) = fired.disconnect {
            self.disconnect_after(st, after);
        }
    }

    pub(crate) fn disconnect_after(self: &Arc<Self>, st: &mut State, after: Duration) {
        if after.is_zero() {
            self.do_disconnect(st);
        } else {
            self.schedule(after, Task::Disconnect);
        }
    }

    pub(crate) fn wait_gate(&self, gate: &str) {
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
    pub(crate) fn system_id(&self, h: SystemHandle) -> Result<String, Failure> {
        let st = self.lock();
        if !st.connected {
            return Err(unavailable());
        }
        let sys = st.system_handles.get(&h.raw()).ok_or_else(bad_handle)?;
        Ok(st.systems[sys].id.clone())
    }

    pub(crate) fn process_system_id(&self, h: ProcessHandle) -> Result<String, Failure> {
        let st = self.lock();
        if !st.connected {
            return Err(unavailable());
        }
        let (sys, _) = st.process_handles.get(&h.raw()).ok_or_else(bad_handle)?;
        Ok(st.systems[sys].id.clone())
    }

    /// Runs `f` on the system behind `h` under the state lock, after the prologue, then the
    /// epilogue.
    pub(crate) fn with_system<T>(
        self: &Arc<Self>,
        op: Method,
        h: SystemHandle,
        f: impl FnOnce(&mut State, u64, &Fired) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let _span = tracing::debug_span!("hcs_sim", op = %op, handle = h.raw()).entered();
        let id = self.system_id(h)?;
        let fired = self.begin(op, Some(&id), Some(h.raw()))?;
        let mut st = self.lock();
        let sys = *st.system_handles.get(&h.raw()).ok_or_else(bad_handle)?;
        let result = f(&mut st, sys, &fired);
        self.after(&mut st, Some(sys), None, &fired);
        if let Err(e) = &result {
            tracing::debug!(%op, system = %id, code = %e.code, "hcs-sim: call failed");
        }
        result
    }

    /// Runs `f` on the process behind `h` under the state lock, after the prologue.
    pub(crate) fn with_process<T>(
        self: &Arc<Self>,
        op: Method,
        h: ProcessHandle,
        f: impl FnOnce(&mut State, u64, u64, &Fired) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let _span = tracing::debug_span!("hcs_sim", op = %op, handle = h.raw()).entered();
        let id = self.process_system_id(h)?;
        let fired = self.begin(op, Some(&id), Some(h.raw()))?;
        let mut st = self.lock();
        let (sys, proc) = *st.process_handles.get(&h.raw()).ok_or_else(bad_handle)?;
        let result = f(&mut st, sys, proc, &fired);
        self.after(&mut st, Some(sys), Some(proc), &fired);
        result
    }

    /// Decides whether a pending-capable call answers pending, and queues its completion.
    pub(crate) fn complete(
        self: &Arc<Self>,
        st: &mut State,
        op: Method,
        sys: u64,
        ctx: Option<NotifyContext>,
        fired: &Fired,
    ) -> bool {
        let id = st.systems.get(&sys).map(|s| s.id.clone());
        if fired.performed {
            // "Done but reported failure": synchronous, no completion is sent.
            return false;
        }
        if let Some((after, status, kind)) = fired.pending {
            if let (Some(after), Some(ctx)) = (after, ctx) {
                let kind = kind.or(op.completion());
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
    pub(crate) fn emit(
        self: &Arc<Self>,
        st: &mut State,
        kind: NotificationKind,
        system: Option<&str>,
        targets: Vec<Target>,
        mut status: HResult,
        mut payload: Option<String>,
        extra: Duration,
    ) {
        if !st.connected && kind != NotificationKind::ServiceDisconnect {
            return;
        }
        let mut delay = self.latency + extra;
        let mut copies = 0u32;
        for action in lock(&self.faults).on_notification(kind, system) {
            match action {
                Action::DropNotification => {
                    tracing::debug!(%kind, system, "hcs-sim: notification dropped by fault plan");
                    return;
                }
                Action::Rewrite {
                    status: new_status,
                    payload: edit,
                } => {
                    status = new_status.unwrap_or(status);
                    payload = edit.apply(payload);
                }
                Action::DelayNotification(d) => delay += d,
                Action::DuplicateNotification { copies: c } => copies = copies.saturating_add(c),
                _ => {}
            }
        }
        for target in targets {
            for _ in 0..=copies {
                self.schedule(
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

    pub(crate) fn live_callbacks(st: &State, ids: &[u64]) -> Vec<Target> {
        ids.iter()
            .filter(|id| st.callbacks.get(id).is_some_and(|c| c.live))
            .map(|id| Target::Registration(*id))
            .collect()
    }

    /// The status and payload of `SystemExited` after a stop of `kind`, as the configured
    /// generation sends them. V1 (`vmcompute.dll`) passes the exit status as the notification's
    /// status: the unexpected-exit code after a crash, else `S_OK`. V2 (`computecore.dll`)
    /// events carry no status: the event is dispatched with `S_OK` and only the payload's
    /// `Status` is the unexpected-exit code (as `i32`). The payload is
    /// `{"Status":<hresult as i32>,"ExitType":"GracefulExit"|"ForcedExit"|"UnexpectedExit"}`
    /// in both generations.
    pub(crate) fn exit_payload(&self, kind: StopKind) -> (HResult, String) {
        // Made once per engine (the generation is fixed): a system's exit is on the path of
        // every terminate, where serialising the document was a visible share of its cost.
        let (status, payload) = self.exit_payloads.get(kind);
        (*status, payload.clone())
    }

    /// The `ProcessStatus` document of a process: the payload of `ProcessExited` (dispatched
    /// with `S_OK` in both generations, as `vmcompute.dll` and `computecore.dll` send it) and
    /// the answer of `get_process_properties`.
    pub(crate) fn process_status(pid: u32, exit_code: Option<u32>) -> String {
        let doc = ProcessStatus {
            process_id: pid,
            exited: exit_code.is_some(),
            exit_code: exit_code.unwrap_or(0),
            last_wait_result: 0,
        };
        serde_json::to_string(&doc).unwrap_or_default()
    }

    /// Runs one scheduler task (on the service thread).
    fn run_task(self: &Arc<Self>, task: Task) {
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
            Task::Inject {
                sys,
                proc,
                kind,
                status,
                payload,
                epoch,
            } => {
                let mut st = self.lock();
                if st.epoch != epoch {
                    return;
                }
                let Some(s) = st.systems.get(&sys) else { return };
                let id = s.id.clone();
                let ids = match proc {
                    Some(proc) => s
                        .processes
                        .get(&proc)
                        .map(|p| p.callbacks.clone())
                        .unwrap_or_default(),
                    None => s.callbacks.clone(),
                };
                let targets = Self::live_callbacks(&st, &ids);
                self.emit(&mut st, kind, Some(&id), targets, status, payload, Duration::ZERO);
            }
            Task::SignalDue { handle, queue_gen } => {
                let mut st = self.lock();
                self.release_signal(&mut st, handle, queue_gen);
            }
        }
    }

    // ---------------------------------------------------------------- per-handle signal queue

    /// A signal (or `SIGKILL` for terminate) sent through process handle `handle` to process
    /// `proc` of `sys`: delivered now unless the handle's queue is busy (then it waits its turn)
    /// or `hold` holds it (then it heads the queue until released).
    pub(crate) fn send_signal(
        self: &Arc<Self>,
        st: &mut State,
        handle: u64,
        sys: u64,
        proc: u64,
        sig: i32,
        hold: Option<Release>,
    ) {
        // A gate released before the signal arrives holds nothing.
        let hold = hold.filter(|r| match r {
            Release::Gate(g) => !lock(&self.gates).get(g).is_some_and(|g| g.released),
            Release::After(_) => true,
        });
        if let Some(q) = st.signal_queues.get_mut(&handle) {
            q.waiting.push_back(HeldSignal { sig, hold });
            return;
        }
        match hold {
            None => self.deliver_signal(st, handle, sys, proc, sig),
            Some(release) => self.hold_head(st, handle, sys, proc, sig, release, Default::default()),
        }
    }

    /// Makes `sig` the held head of `handle`'s queue (keeping the signals behind it).
    #[allow(clippy::too_many_arguments)]
    fn hold_head(
        self: &Arc<Self>,
        st: &mut State,
        handle: u64,
        sys: u64,
        proc: u64,
        sig: i32,
        release: Release,
        waiting: std::collections::VecDeque<HeldSignal>,
    ) {
        st.next_queue_gen += 1;
        let queue_gen = st.next_queue_gen;
        if let Release::After(d) = &release {
            self.schedule(*d, Task::SignalDue { handle, queue_gen });
        }
        tracing::debug!(handle, sig, ?release, "hcs-sim: signal held");
        st.signal_queues.insert(
            handle,
            SignalQueue {
                sys,
                proc,
                head: sig,
                gate: match release {
                    Release::Gate(g) => Some(g),
                    Release::After(_) => None,
                },
                queue_gen,
                waiting,
            },
        );
    }

    /// The held head of `handle`'s queue takes effect, then the signals behind it, in order,
    /// up to the next held one.
    pub(crate) fn release_signal(self: &Arc<Self>, st: &mut State, handle: u64, queue_gen: u64) {
        if st
            .signal_queues
            .get(&handle)
            .is_none_or(|q| q.queue_gen != queue_gen)
        {
            return;
        }
        let Some(mut q) = st.signal_queues.remove(&handle) else {
            return;
        };
        self.deliver_signal(st, handle, q.sys, q.proc, q.head);
        while let Some(next) = q.waiting.pop_front() {
            match next.hold {
                None => self.deliver_signal(st, handle, q.sys, q.proc, next.sig),
                Some(release) => {
                    let waiting = std::mem::take(&mut q.waiting);
                    self.hold_head(st, handle, q.sys, q.proc, next.sig, release, waiting);
                    return;
                }
            }
        }
    }

    /// Releases every signal held on `gate`.
    pub(crate) fn release_signal_gate(self: &Arc<Self>, gate: &str) {
        let mut st = self.lock();
        let due: Vec<(u64, u64)> = st
            .signal_queues
            .iter()
            .filter(|(_, q)| q.gate.as_deref() == Some(gate))
            .map(|(h, q)| (*h, q.queue_gen))
            .collect();
        for (handle, queue_gen) in due {
            self.release_signal(&mut st, handle, queue_gen);
        }
    }

    /// A signal takes effect on a process that is still running (recorded).
    fn deliver_signal(self: &Arc<Self>, st: &mut State, handle: u64, sys: u64, proc: u64, sig: i32) {
        let Some(p) = st.systems.get(&sys).and_then(|s| s.processes.get(&proc)) else {
            return;
        };
        if p.exit_code.is_some() {
            return;
        }
        if self.recorder.on() {
            self.recorder.push(Event::Signal(SignalEvent {
                at: self.recorder.now(),
                handle,
                pid: p.pid,
                signal: sig,
            }));
        }
        self.signal_one(st, sys, proc, sig);
    }

    pub(crate) fn deliver(&self, d: Delivery) {
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
        let accepted = hcs::dispatch(ctx.raw(), d.kind, d.status, d.payload.as_deref());
        if self.recorder.on() {
            self.recorder.push(Event::Delivery(crate::record::DeliveryEvent {
                at: self.recorder.now(),
                context: ctx.raw(),
                kind: d.kind,
                status: d.status,
                payload: d.payload.clone(),
                accepted,
            }));
        }
        if let Target::Registration(cb) = d.target {
            let mut st = self.lock();
            if let Some(rec) = st.callbacks.get_mut(&cb) {
                rec.in_flight -= 1;
                if rec.in_flight == 0 {
                    rec.delivering = None;
                }
            }
            let waiters = st.drain_waiters > 0;
            drop(st);
            if waiters {
                self.drained.notify_all();
            }
        }
    }

    /// Removes a registration, waiting for a delivery of it that is running on another thread
    /// (the issue #50 semantics of real HCS unregister).
    pub(crate) fn remove_callback<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        cb: u64,
    ) -> MutexGuard<'a, State> {
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
            st.drain_waiters += 1;
            st = self.drained.wait(st).unwrap_or_else(|p| p.into_inner());
            st.drain_waiters -= 1;
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

    pub(crate) fn do_disconnect(self: &Arc<Self>, st: &mut State) {
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
    pub(crate) fn process_exit(self: &Arc<Self>, st: &mut State, sys: u64, proc: u64, code: u32) {
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

    /// Sends `sig` to every live process of a system (scripted ones react as documented on
    /// [`crate::ScriptedProcess`]).
    pub(crate) fn kill_processes(self: &Arc<Self>, st: &mut State, sys: u64, sig: i32) {
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
    /// [`Engine::scripted_signal`] describes).
    pub(crate) fn signal_one(self: &Arc<Self>, st: &mut State, sys: u64, proc: u64, sig: i32) {
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
    pub(crate) fn scripted_signal(self: &Arc<Self>, st: &mut State, sys: u64, proc: u64, sig: i32) {
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
    pub(crate) fn begin_stop(self: &Arc<Self>, st: &mut State, sys: u64, kind: StopKind) {
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
                self.schedule(self.shutdown_grace, Task::Escalate { sys, stop_gen });
            }
            StopKind::Forced | StopKind::Unexpected => {
                self.kill_processes(st, sys, signal::SIGKILL);
            }
        }
        self.check_stop_done(st, sys);
    }

    pub(crate) fn check_stop_done(self: &Arc<Self>, st: &mut State, sys: u64) {
        let Some(s) = st.systems.get_mut(&sys) else { return };
        let Some(kind) = s.stopping else { return };
        if s.has_live_processes() {
            return;
        }
        s.stopping = None;
        s.state = SystemState::Stopped;
        s.exit = Some(kind);
        // Whatever is left of its process tree dies with it (its supervisor kills it).
        if self.reaper.retire(sys) {
            self.service.wake();
        }
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
    pub(crate) fn maybe_remove(&self, st: &mut State, sys: u64) {
        let Some(s) = st.systems.get(&sys) else { return };
        if s.state != SystemState::Stopped || !s.handles.is_empty() || s.has_process_handles() {
            return;
        }
        if self.reaper.retire(sys) {
            self.service.wake();
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

    pub(crate) fn freeze(self: &Arc<Self>, st: &mut State, sys: u64) {
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

    pub(crate) fn thaw(self: &Arc<Self>, st: &mut State, sys: u64) {
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
            self.schedule(
                after,
                Task::ScriptedExit {
                    sys,
                    proc,
                    generation,
                },
            );
        }
    }

    /// The system id a system, process or callback handle refers to (for the record).
    pub(crate) fn system_of_handle(&self, h: u64) -> Option<String> {
        let st = self.lock();
        let sys = st
            .system_handles
            .get(&h)
            .copied()
            .or_else(|| st.process_handles.get(&h).map(|(sys, _)| *sys))
            .or_else(|| {
                st.callbacks.get(&h).map(|c| match c.target {
                    CbTarget::System(sys) | CbTarget::Process(sys, _) => sys,
                })
            })?;
        st.systems.get(&sys).map(|s| s.id.clone())
    }

    /// Releases a handle (or registration) a call made but reports as failed (`fail …
    /// performed`): as if closed, without the implicit terminate of the last handle.
    pub(crate) fn discard_handle(&self, h: u64) {
        let st = self.lock();
        if st.callbacks.contains_key(&h) {
            drop(self.remove_callback(st, h));
            return;
        }
        let mut st = self.drop_registrations_via(st, h);
        if let Some(sys) = st.system_handles.remove(&h) {
            if let Some(s) = st.systems.get_mut(&sys) {
                s.handles.remove(&h);
            }
            self.maybe_remove(&mut st, sys);
        } else if let Some((sys, proc)) = st.process_handles.remove(&h) {
            if let Some(s) = st.systems.get_mut(&sys) {
                if let Some(p) = s.processes.get_mut(&proc) {
                    p.handles.remove(&h);
                    if p.handles.is_empty() && p.exit_code.is_some() {
                        s.processes.remove(&proc);
                    }
                }
            }
            self.maybe_remove(&mut st, sys);
        }
    }

    /// A service restart in which the systems survive: queued notifications are dropped, every
    /// live registration gets `ServiceDisconnect` (its client connection broke), then every
    /// handle and registration is forgotten (released) and the service is connected again.
    /// Systems and processes keep running; exited processes and stopped systems nobody can
    /// reach any more are forgotten.
    pub(crate) fn restart_dropping_handles(self: &Arc<Self>) {
        let mut st = self.lock();
        st.epoch += 1;
        st.connected = true;
        let mut ctxs: Vec<(u64, NotifyContext)> = st
            .callbacks
            .iter()
            .filter(|(_, c)| c.live)
            .map(|(id, c)| (*id, c.ctx))
            .collect();
        ctxs.sort_unstable_by_key(|(id, _)| *id);
        st.callbacks.clear();
        st.system_handles.clear();
        st.process_handles.clear();
        st.signal_queues.clear();
        let keys: Vec<u64> = st.systems.keys().copied().collect();
        for sys in &keys {
            if let Some(s) = st.systems.get_mut(sys) {
                s.handles.clear();
                s.callbacks.clear();
                s.processes.retain(|_, p| p.exit_code.is_none());
                for p in s.processes.values_mut() {
                    p.handles.clear();
                    p.callbacks.clear();
                }
            }
        }
        for sys in keys {
            self.maybe_remove(&mut st, sys);
        }
        tracing::info!(
            registrations = ctxs.len(),
            "hcs-sim: service restarted; every handle is gone"
        );
        let targets = ctxs.into_iter().map(|(_, ctx)| Target::Context(ctx)).collect();
        self.emit(
            &mut st,
            NotificationKind::ServiceDisconnect,
            None,
            targets,
            HResult::S_OK,
            None,
            Duration::ZERO,
        );
        drop(st);
        self.drained.notify_all();
    }

    /// Sends notification `kind` to the registrations of system `id` (or of its process `pid`)
    /// live when it is due, after `after`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn inject(
        self: &Arc<Self>,
        id: &str,
        pid: Option<u32>,
        kind: NotificationKind,
        status: HResult,
        payload: Option<String>,
        after: Duration,
    ) -> Result<(), crate::SimError> {
        let st = self.lock();
        let sys = *st
            .by_id
            .get(id)
            .ok_or_else(|| crate::SimError::UnknownSystem(id.to_string()))?;
        let proc = match pid {
            None => None,
            Some(pid) => Some(
                st.systems[&sys]
                    .processes
                    .iter()
                    .filter(|(_, p)| p.pid == pid)
                    .max_by_key(|(k, p)| (p.exit_code.is_none(), **k))
                    .map(|(k, _)| *k)
                    .ok_or_else(|| crate::SimError::UnknownProcess(id.to_string(), pid))?,
            ),
        };
        let epoch = st.epoch;
        drop(st);
        self.schedule(
            after,
            Task::Inject {
                sys,
                proc,
                kind,
                status,
                payload,
                epoch,
            },
        );
        Ok(())
    }

    /// Closes a system or process handle's registrations (as `HcsClose*` does), draining
    /// deliveries in progress.
    pub(crate) fn drop_registrations_via<'a>(
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
}
/// The service thread's view of the engine: due tasks, host exits, shutdown.
impl Work for Engine {
    fn service(&self) -> &Service {
        &self.service
    }
    fn reaper(&self) -> &Reaper {
        &self.reaper
    }
    fn next_due(&self) -> Option<Instant> {
        self.sched.next_due()
    }
    fn run_due(self: &Arc<Self>, now: Instant) -> bool {
        let _runner = lock(&self.run_lock);
        match self.sched.pop_due(now) {
            Some(task) => {
                self.run_task(task);
                true
            }
            None => false,
        }
    }
    fn host_exited(self: &Arc<Self>, sys: u64, proc: u64, code: u32) {
        let mut st = self.lock();
        self.process_exit(&mut st, sys, proc, code);
    }
    fn system_lost(self: &Arc<Self>, sys: u64) {
        let mut st = self.lock();
        self.begin_stop(&mut st, sys, StopKind::Unexpected);
    }
    fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
    fn reap_interval(&self) -> Duration {
        self.reap_interval
    }
}
