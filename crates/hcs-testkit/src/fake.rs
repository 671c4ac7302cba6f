//! The scripted fake driver: [`FakeDriver`], its [`Answer`]s, [`Gate`]s and call log.
//!
//! See the [crate documentation](crate) for an overview and a complete example.

/// Names one method of the driver contract (the contract's own [`hcs::Method`]).
pub use hcs::Method;
use hcs::{
    ApiGeneration, CallbackHandle, Driver, DriverResult, Failure, HResult, NotificationKind, NotifyContext,
    PipeReader, PipeWriter, ProcessHandle, ProcessInfo, Reply, SystemHandle,
};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Cursor, Write};
use std::num::NonZeroU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// First raw value handed out for system handles.
const FIRST_SYSTEM: u64 = 0x1000;
/// First raw value handed out for process handles.
const FIRST_PROCESS: u64 = 0x2000;
/// First raw value handed out for callback handles.
const FIRST_CALLBACK: u64 = 0x3000;
/// First pid handed out by `create_process`.
const FIRST_PID: u32 = 100;

/// Locks a mutex, recovering the data if a panicking thread poisoned it: the fake never panics
/// on a driver call, even after a test thread panicked while holding a lock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits on a condvar, recovering from poisoning like [`lock`].
fn wait_timeout<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>, timeout: Duration) -> MutexGuard<'a, T> {
    match cv.wait_timeout(guard, timeout) {
        Ok((g, _)) => g,
        Err(p) => p.into_inner().0,
    }
}

/// Waits on a condvar without a timeout, recovering from poisoning like [`lock`].
fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(|p| p.into_inner())
}

fn nz(raw: u64) -> NonZeroU64 {
    NonZeroU64::new(raw).unwrap_or(NonZeroU64::MAX)
}

fn invalid_handle() -> Failure {
    Failure::new(HResult::ERROR_INVALID_HANDLE)
}

/// A barrier a scripted call blocks on (see [`Answer::blocking`]): the call enters the gate,
/// stays "inside the driver" until [`Gate::open`] is called, and then completes normally.
///
/// Clones share the same gate. Once opened, a gate stays open: later calls pass straight
/// through (but still count as having entered).
///
/// ```
/// use hcs_testkit::Gate;
/// use std::time::Duration;
///
/// let gate = Gate::new();
/// assert!(!gate.wait_entered(Duration::from_millis(1))); // nobody inside yet
/// gate.open();
/// assert!(gate.is_open());
/// ```
#[derive(Clone, Default)]
pub struct Gate {
    inner: Arc<GateInner>,
}

#[derive(Default)]
struct GateInner {
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Default)]
struct GateState {
    open: bool,
    entered: usize,
}

impl Gate {
    /// A new, closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the gate: every call blocked on it proceeds, and later calls pass through.
    pub fn open(&self) {
        let mut st = lock(&self.inner.state);
        st.open = true;
        self.inner.cv.notify_all();
    }

    /// Whether [`Gate::open`] has been called.
    pub fn is_open(&self) -> bool {
        lock(&self.inner.state).open
    }

    /// How many calls have reached this gate so far (blocked or passed).
    pub fn entered(&self) -> usize {
        lock(&self.inner.state).entered
    }

    /// Waits until at least one call has reached the gate; `false` if none did within
    /// `timeout`.
    pub fn wait_entered(&self, timeout: Duration) -> bool {
        self.wait_entered_count(1, timeout)
    }

    /// Waits until at least `count` calls have reached the gate; `false` on timeout.
    pub fn wait_entered_count(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.inner.state);
        while st.entered < count {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = wait_timeout(&self.inner.cv, st, deadline - now);
        }
        true
    }

    /// Called by the fake on the calling thread: announce entry, then block until open.
    fn pass(&self) {
        let mut st = lock(&self.inner.state);
        st.entered += 1;
        self.inner.cv.notify_all();
        while !st.open {
            st = wait(&self.inner.cv, st);
        }
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.inner.state);
        f.debug_struct("Gate")
            .field("open", &st.open)
            .field("entered", &st.entered)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Pending,
    Fail(HResult),
}

#[derive(Debug, Clone)]
struct Completion {
    kind: NotificationKind,
    status: HResult,
    payload: Option<String>,
    after: Duration,
}

#[derive(Debug)]
struct ScriptedStdio {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// One scripted answer for a driver call: what the call reports, plus optional side effects
/// (a later notification, blocking on a [`Gate`]).
///
/// Build one with [`Answer::ok`], [`Answer::ok_with`], [`Answer::ok_with_stdio`],
/// [`Answer::pending`], [`Answer::fail`] or [`Answer::fail_with_document`], refine it with the
/// `with_*`/`then_*` builders, and hand it to [`FakeDriver::script`] or
/// [`FakeDriver::set_default`].
///
/// What an answer means per method:
///
/// * **Success** returns the method's natural value: a fresh handle for create/open calls, a
///   fresh pid (or [`Answer::with_pid`]) for `create_process`, and for the methods that return
///   a document (enumerate, both properties calls, service properties) the value given to
///   [`Answer::ok_with`] or a realistic default (see [`FakeDriver`]). The value is ignored by
///   other methods.
/// * **Pending** is [`Reply::pending`] with the same value (a pending create still returns its
///   new handle). Methods whose return type cannot say "pending" (close, register,
///   unregister) report it as a failure with the generation's pending HRESULT.
/// * **Failure** returns [`Failure`] with the code and the optional result document, and has
///   no other effect: no handle is issued, a close leaves the handle open, an unregister leaves
///   the registration active.
#[derive(Debug, Clone)]
pub struct Answer {
    outcome: Outcome,
    value: Option<String>,
    document: Option<String>,
    pid: Option<u32>,
    stdio: Option<Arc<ScriptedStdio>>,
    completions: Vec<Completion>,
    gate: Option<Gate>,
}

impl Answer {
    fn new(outcome: Outcome) -> Self {
        Answer {
            outcome,
            value: None,
            document: None,
            pid: None,
            stdio: None,
            completions: Vec::new(),
            gate: None,
        }
    }

    /// A synchronous success with the method's default value.
    pub fn ok() -> Self {
        Self::new(Outcome::Ok)
    }

    /// A synchronous success returning `value`: the JSON document of enumerate, the properties
    /// calls and the service-properties call. Ignored by methods that return no document.
    pub fn ok_with(value: impl Into<String>) -> Self {
        Self::ok().with_value(value)
    }

    /// A synchronous success whose process information carries in-memory standard streams
    /// (for `create_process` and `get_process_info`): stdout and stderr read the given bytes,
    /// stdin records what is written, readable through [`FakeDriver::stdin_written`].
    pub fn ok_with_stdio(stdout: impl Into<Vec<u8>>, stderr: impl Into<Vec<u8>>) -> Self {
        Self::ok().with_stdio(stdout, stderr)
    }

    /// An accepted call that completes later: [`Reply::pending`]. Combine with
    /// [`Answer::then_complete`] to deliver the completion, or fire it by hand with
    /// [`FakeDriver::fire`] and [`FakeDriver::pending_context`].
    pub fn pending() -> Self {
        Self::new(Outcome::Pending)
    }

    /// A failure with `code` and no result document.
    pub fn fail(code: impl Into<HResult>) -> Self {
        Self::new(Outcome::Fail(code.into()))
    }

    /// A failure with `code` and a result document (typically `{"ErrorEvents":[...]}`).
    pub fn fail_with_document(code: impl Into<HResult>, document: impl Into<String>) -> Self {
        Self::fail(code).with_document(document)
    }

    /// Sets the result document returned alongside the outcome (success, pending or failure).
    pub fn with_document(mut self, document: impl Into<String>) -> Self {
        self.document = Some(document.into());
        self
    }

    /// Sets the document/value a success or pending reply returns (see [`Answer::ok_with`]).
    pub fn with_value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Sets the pid `create_process` or `open_process` reports (instead of the next fresh pid
    /// or the requested pid).
    pub fn with_pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// Gives the process information in-memory streams; see [`Answer::ok_with_stdio`].
    pub fn with_stdio(mut self, stdout: impl Into<Vec<u8>>, stderr: impl Into<Vec<u8>>) -> Self {
        self.stdio = Some(Arc::new(ScriptedStdio {
            stdout: stdout.into(),
            stderr: stderr.into(),
        }));
        self
    }

    /// After the call returns, delivers the notification `kind` with `status` and `payload`
    /// from another thread once `after` has elapsed, through [`hcs::dispatch`] exactly like
    /// HCS would.
    ///
    /// The target context is the call's `ctx` parameter for the pending-capable calls (create,
    /// start, pause, resume, save); for every other call it is the context registered for the
    /// call's handle when the delay elapses (for `open_compute_system`, `create_process` and
    /// `open_process`, the handle the call returned). If no such context is known, or its
    /// registrations have all been unregistered by then, the notification is dropped: the
    /// fake honours the driver contract that nothing arrives after unregister returns. Use
    /// [`FakeDriver::fire`] for deliberate late callbacks.
    ///
    /// May be called several times to schedule several notifications.
    pub fn then_complete(
        mut self,
        kind: NotificationKind,
        status: impl Into<HResult>,
        payload: Option<String>,
        after: Duration,
    ) -> Self {
        self.completions.push(Completion {
            kind,
            status: status.into(),
            payload,
            after,
        });
        self
    }

    /// Makes the call block inside the driver until `gate` is opened. The call is already in
    /// the call log while it blocks; [`Gate::wait_entered`] tells a test that it got there.
    /// The outcome is computed after the gate opens (a blocked close releases the handle only
    /// then).
    pub fn blocking(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }
}

/// One driver call, as recorded in the call log ([`FakeDriver::calls`]). Calls are logged when
/// they enter the driver, including calls that then fail or block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The method called.
    pub method: Method,
    /// The raw handle passed in (system, process or callback handle), if the method takes one.
    pub handle: Option<u64>,
    /// The compute-system id: the id passed to create/open, or the id the system behind the
    /// handle was created or opened with.
    pub id: Option<String>,
    /// The string argument: configuration, options, query, settings or parameters JSON; the
    /// pid for `open_process`; the context id for the register calls; `""` otherwise.
    pub arg: String,
    /// The notification context passed in (pending-capable and register calls).
    pub ctx: Option<NotifyContext>,
}

pub use hcs::HandleCounts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallbackKind {
    System,
    Process,
}

struct SystemEntry {
    id: String,
    open: bool,
}

struct ProcessEntry {
    pid: u32,
    system: u64,
    open: bool,
}

struct CallbackEntry {
    kind: CallbackKind,
    target: u64,
    ctx: NotifyContext,
    active: bool,
}

/// What a driver call names, for validation and the call log.
#[derive(Clone, Copy)]
enum Subject {
    None,
    System(u64),
    Process(u64),
    Callback(CallbackKind, u64),
}

/// Where a scripted completion goes.
#[derive(Clone, Copy, Debug)]
enum Target {
    Ctx(NotifyContext),
    System(u64),
    Process(u64),
    Nowhere,
}

struct State {
    calls: Vec<Call>,
    scripts: HashMap<Method, VecDeque<Answer>>,
    defaults: HashMap<Method, Answer>,
    next_system: u64,
    next_process: u64,
    next_callback: u64,
    next_pid: u32,
    systems: HashMap<u64, SystemEntry>,
    processes: HashMap<u64, ProcessEntry>,
    callbacks: HashMap<u64, CallbackEntry>,
    system_ctx: HashMap<u64, NotifyContext>,
    process_ctx: HashMap<u64, NotifyContext>,
    last_system_ctx: Option<NotifyContext>,
    last_process_ctx: Option<NotifyContext>,
    pending_ctx: HashMap<Method, NotifyContext>,
    known_ids: Vec<String>,
    /// Active registrations per context id; an entry at 0 means "registered, then fully
    /// unregistered" (the fake delivers nothing more to it on its own).
    ctx_active: HashMap<u64, usize>,
    /// Deliveries currently inside `hcs::dispatch`, per context id.
    inflight: HashMap<u64, usize>,
    /// Scripted completions not yet finished (sleeping or delivering).
    scheduled: usize,
    stdin: HashMap<u32, Arc<Mutex<Vec<u8>>>>,
}

impl State {
    fn new() -> Self {
        State {
            calls: Vec::new(),
            scripts: HashMap::new(),
            defaults: HashMap::new(),
            next_system: FIRST_SYSTEM,
            next_process: FIRST_PROCESS,
            next_callback: FIRST_CALLBACK,
            next_pid: FIRST_PID,
            systems: HashMap::new(),
            processes: HashMap::new(),
            callbacks: HashMap::new(),
            system_ctx: HashMap::new(),
            process_ctx: HashMap::new(),
            last_system_ctx: None,
            last_process_ctx: None,
            pending_ctx: HashMap::new(),
            known_ids: Vec::new(),
            ctx_active: HashMap::new(),
            inflight: HashMap::new(),
            scheduled: 0,
            stdin: HashMap::new(),
        }
    }

    fn next_answer(&mut self, method: Method) -> Answer {
        self.scripts
            .get_mut(&method)
            .and_then(VecDeque::pop_front)
            .or_else(|| self.defaults.get(&method).cloned())
            .unwrap_or_else(Answer::ok)
    }

    fn valid(&self, subject: Subject) -> bool {
        match subject {
            Subject::None => true,
            Subject::System(h) => self.systems.get(&h).is_some_and(|e| e.open),
            Subject::Process(h) => self.processes.get(&h).is_some_and(|e| e.open),
            Subject::Callback(kind, h) => self.callbacks.get(&h).is_some_and(|e| e.active && e.kind == kind),
        }
    }

    fn check(&self, subject: Subject) -> Result<(), Failure> {
        if self.valid(subject) {
            Ok(())
        } else {
            Err(invalid_handle())
        }
    }

    fn system_id_of(&self, subject: Subject) -> Option<String> {
        let system = match subject {
            Subject::None => return None,
            Subject::System(h) => h,
            Subject::Process(h) => self.processes.get(&h)?.system,
            Subject::Callback(_, h) => {
                let cb = self.callbacks.get(&h)?;
                match cb.kind {
                    CallbackKind::System => cb.target,
                    CallbackKind::Process => self.processes.get(&cb.target)?.system,
                }
            }
        };
        self.systems.get(&system).map(|e| e.id.clone())
    }

    fn new_system(&mut self, id: &str) -> SystemHandle {
        let raw = self.next_system;
        self.next_system += 1;
        self.systems.insert(
            raw,
            SystemEntry {
                id: id.to_owned(),
                open: true,
            },
        );
        if !self.known_ids.iter().any(|k| k == id) {
            self.known_ids.push(id.to_owned());
        }
        SystemHandle(nz(raw))
    }

    fn new_process(&mut self, pid: u32, system: u64) -> ProcessHandle {
        let raw = self.next_process;
        self.next_process += 1;
        self.processes.insert(
            raw,
            ProcessEntry {
                pid,
                system,
                open: true,
            },
        );
        ProcessHandle(nz(raw))
    }

    fn new_callback(&mut self, kind: CallbackKind, target: u64, ctx: NotifyContext) -> CallbackHandle {
        let raw = self.next_callback;
        self.next_callback += 1;
        self.callbacks.insert(
            raw,
            CallbackEntry {
                kind,
                target,
                ctx,
                active: true,
            },
        );
        *self.ctx_active.entry(ctx.raw()).or_default() += 1;
        match kind {
            CallbackKind::System => {
                self.system_ctx.insert(target, ctx);
                self.last_system_ctx = Some(ctx);
            }
            CallbackKind::Process => {
                self.process_ctx.insert(target, ctx);
                self.last_process_ctx = Some(ctx);
            }
        }
        CallbackHandle(nz(raw))
    }

    /// Whether the fake must not deliver to `ctx` on its own any more: it was registered and
    /// every registration with it has been unregistered.
    fn retired(&self, ctx: NotifyContext) -> bool {
        self.ctx_active.get(&ctx.raw()) == Some(&0)
    }

    fn process_info(&mut self, pid: u32, stdio: Option<&Arc<ScriptedStdio>>) -> ProcessInfo {
        let Some(stdio) = stdio else {
            return ProcessInfo {
                pid,
                ..ProcessInfo::default()
            };
        };
        let buffer = self.stdin.entry(pid).or_default().clone();
        ProcessInfo {
            pid,
            stdin: Some(PipeWriter::new(Recorder(buffer))),
            stdout: Some(PipeReader::new(Cursor::new(stdio.stdout.clone()))),
            stderr: Some(PipeReader::new(Cursor::new(stdio.stderr.clone()))),
        }
    }

    fn counts(&self) -> HandleCounts {
        HandleCounts {
            systems: self.systems.values().filter(|e| e.open).count(),
            processes: self.processes.values().filter(|e| e.open).count(),
            callbacks: self.callbacks.values().filter(|e| e.active).count(),
        }
    }
}

/// The stdin end of a scripted process: records everything written.
struct Recorder(Arc<Mutex<Vec<u8>>>);

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn system_properties(id: &str) -> String {
    format!(
        r#"{{"Id":{},"SystemType":"Container","RuntimeOsType":"windows","Owner":"fake"}}"#,
        serde_json::Value::String(id.to_owned())
    )
}

fn process_properties(pid: u32) -> String {
    format!(r#"{{"ProcessId":{pid},"Exited":true,"ExitCode":0,"LastWaitResult":0}}"#)
}

const SERVICE_PROPERTIES: &str =
    r#"{"Properties":[{"SupportedSchemaVersions":[{"Major":1,"Minor":0},{"Major":2,"Minor":1}]}]}"#;

struct Inner {
    state: Mutex<State>,
    /// Signalled whenever an in-flight delivery or a scheduled completion finishes.
    changed: Condvar,
    generation: ApiGeneration,
}

impl Inner {
    /// Runs one delivery through `hcs::dispatch`, counted as in flight for `ctx` so that
    /// unregistering waits for it.
    fn deliver(
        &self,
        ctx: NotifyContext,
        kind: NotificationKind,
        status: HResult,
        payload: Option<&str>,
    ) -> bool {
        let delivered = hcs::dispatch(ctx.raw(), kind, status, payload);
        let mut st = lock(&self.state);
        if let Some(n) = st.inflight.get_mut(&ctx.raw()) {
            *n -= 1;
            if *n == 0 {
                st.inflight.remove(&ctx.raw());
            }
        }
        self.changed.notify_all();
        delivered
    }

    fn run_completion(&self, target: Target, completion: &Completion) {
        thread::sleep(completion.after);
        let ctx = {
            let mut st = lock(&self.state);
            let ctx = match target {
                Target::Ctx(c) => Some(c),
                Target::System(h) => st.system_ctx.get(&h).copied(),
                Target::Process(h) => st.process_ctx.get(&h).copied(),
                Target::Nowhere => None,
            };
            match ctx {
                Some(c) if !st.retired(c) => {
                    *st.inflight.entry(c.raw()).or_default() += 1;
                    Some(c)
                }
                _ => None,
            }
        };
        match ctx {
            Some(c) => {
                let delivered = self.deliver(
                    c,
                    completion.kind,
                    completion.status,
                    completion.payload.as_deref(),
                );
                tracing::debug!(driver = "fake", ctx = c.raw(), kind = %completion.kind, delivered, "scripted notification");
            }
            None => {
                tracing::debug!(driver = "fake", ?target, kind = %completion.kind, "scripted notification dropped: no live registration");
            }
        }
        let mut st = lock(&self.state);
        st.scheduled -= 1;
        self.changed.notify_all();
    }
}

/// A scripted, in-memory [`hcs::Driver`] (see the [crate documentation](crate)).
///
/// Every call is logged ([`FakeDriver::calls`]) and answered from a per-method FIFO of scripted
/// [`Answer`]s ([`FakeDriver::script`]); when that is empty, from the method's default
/// ([`FakeDriver::set_default`]); and otherwise with a realistic success:
///
/// | Method | Default success |
/// |---|---|
/// | create/open compute system | a fresh system handle (`0x1000`, `0x1001`, …) |
/// | create_process | a fresh process handle (`0x2000`, …) and pid (`100`, `101`, …), no stdio |
/// | open_process | a fresh process handle for the requested pid |
/// | register callbacks | a fresh callback handle (`0x3000`, …) |
/// | get_compute_system_properties | `{"Id":"<id>","SystemType":"Container","RuntimeOsType":"windows","Owner":"fake"}` |
/// | get_process_properties | `{"ProcessId":<pid>,"Exited":true,"ExitCode":0,"LastWaitResult":0}` |
/// | enumerate_compute_systems | a JSON array with the properties above for every id ever created or opened |
/// | get_service_properties | `{"Properties":[{"SupportedSchemaVersions":[…1.0, 2.1…]}]}` |
/// | everything else | `Ok` with no document |
///
/// To give every process in-memory stdio, set a default:
/// `fake.set_default(Method::CreateProcess, Answer::ok_with_stdio(stdout, stderr))`.
///
/// Handles are unique and never reused. A call naming an unknown, closed or unregistered
/// handle fails with [`HResult::ERROR_INVALID_HANDLE`] (it is logged, and consumes no scripted
/// answer). The fake never panics inside a driver call; only the `assert_*` helpers panic.
pub struct FakeDriver {
    inner: Arc<Inner>,
}

impl fmt::Debug for FakeDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.inner.state);
        f.debug_struct("FakeDriver")
            .field("generation", &self.inner.generation)
            .field("calls", &st.calls.len())
            .field("open", &st.counts())
            .finish()
    }
}

impl FakeDriver {
    /// A fake speaking [`ApiGeneration::V1`].
    pub fn new() -> Arc<FakeDriver> {
        Self::with_generation(ApiGeneration::V1)
    }

    /// A fake reporting `generation` from [`Driver::generation`].
    pub fn with_generation(generation: ApiGeneration) -> Arc<FakeDriver> {
        Arc::new(FakeDriver {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new()),
                changed: Condvar::new(),
                generation,
            }),
        })
    }

    // ---- scripting -------------------------------------------------------------------------

    /// Queues `answer` for the next call of `method` (answers are used first in, first out).
    pub fn script(&self, method: Method, answer: Answer) {
        lock(&self.inner.state)
            .scripts
            .entry(method)
            .or_default()
            .push_back(answer);
    }

    /// Sets the answer `method` uses whenever its queue is empty (replacing the built-in
    /// default).
    pub fn set_default(&self, method: Method, answer: Answer) {
        lock(&self.inner.state).defaults.insert(method, answer);
    }

    /// Removes a default set with [`FakeDriver::set_default`]; the built-in default applies
    /// again.
    pub fn clear_default(&self, method: Method) {
        lock(&self.inner.state).defaults.remove(&method);
    }

    /// How many scripted answers for `method` have not been used yet.
    pub fn scripted_remaining(&self, method: Method) -> usize {
        lock(&self.inner.state)
            .scripts
            .get(&method)
            .map_or(0, VecDeque::len)
    }

    // ---- call log --------------------------------------------------------------------------

    /// Every call so far, in the order they entered the driver.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.inner.state).calls.clone()
    }

    /// The calls of one method, in order.
    pub fn calls_of(&self, method: Method) -> Vec<Call> {
        lock(&self.inner.state)
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// How many times `method` was called.
    pub fn count(&self, method: Method) -> usize {
        lock(&self.inner.state)
            .calls
            .iter()
            .filter(|c| c.method == method)
            .count()
    }

    /// Forgets the call log (handles, registrations and scripts are kept).
    pub fn clear_calls(&self) {
        lock(&self.inner.state).calls.clear();
    }

    // ---- notifications ---------------------------------------------------------------------

    /// Delivers a notification to `ctx` on the calling thread exactly as HCS would, by calling
    /// [`hcs::dispatch`], whether or not `ctx` is (still) registered: firing after
    /// unregistration simulates a late callback. Returns what `dispatch` returned (`false`
    /// when no live object holds `ctx`).
    ///
    /// The delivery counts as in flight for `ctx`: an unregister of a registration with `ctx`
    /// that starts meanwhile waits for it to return (so do not unregister from inside the
    /// callback, exactly as with real HCS).
    pub fn fire(
        &self,
        ctx: NotifyContext,
        kind: NotificationKind,
        status: impl Into<HResult>,
        payload: Option<&str>,
    ) -> bool {
        *lock(&self.inner.state).inflight.entry(ctx.raw()).or_default() += 1;
        self.inner.deliver(ctx, kind, status.into(), payload)
    }

    /// The context last registered for the system handle `handle` (kept after unregistration,
    /// so tests can fire late callbacks).
    pub fn system_context(&self, handle: u64) -> Option<NotifyContext> {
        lock(&self.inner.state).system_ctx.get(&handle).copied()
    }

    /// The context last registered for the process handle `handle` (kept after
    /// unregistration).
    pub fn process_context(&self, handle: u64) -> Option<NotifyContext> {
        lock(&self.inner.state).process_ctx.get(&handle).copied()
    }

    /// The context of the most recent `register_compute_system_callback`.
    pub fn last_system_context(&self) -> Option<NotifyContext> {
        lock(&self.inner.state).last_system_ctx
    }

    /// The context of the most recent `register_process_callback`.
    pub fn last_process_context(&self) -> Option<NotifyContext> {
        lock(&self.inner.state).last_process_ctx
    }

    /// The context passed to the most recent call of the pending-capable `method` (create,
    /// start, pause, resume, save), whatever its answer; `None` for other methods or if it was
    /// never called.
    pub fn pending_context(&self, method: Method) -> Option<NotifyContext> {
        lock(&self.inner.state).pending_ctx.get(&method).copied()
    }

    /// Waits until every notification scheduled with [`Answer::then_complete`] has been
    /// delivered or dropped; `false` if some are still outstanding after `timeout`.
    pub fn wait_for_deliveries(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.inner.state);
        while st.scheduled > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = wait_timeout(&self.inner.changed, st, deadline - now);
        }
        true
    }

    // ---- processes -------------------------------------------------------------------------

    /// Everything written so far to the stdin of the process `pid` through pipes from
    /// [`Answer::ok_with_stdio`] / [`Answer::with_stdio`] (empty if none).
    pub fn stdin_written(&self, pid: u32) -> Vec<u8> {
        let buffer = lock(&self.inner.state).stdin.get(&pid).cloned();
        buffer.map(|b| lock(&b).clone()).unwrap_or_default()
    }

    // ---- accounting ------------------------------------------------------------------------

    /// Handles and registrations currently open.
    pub fn open_handles(&self) -> HandleCounts {
        lock(&self.inner.state).counts()
    }

    /// Panics, listing every leaked handle and registration, unless every system and process
    /// handle has been closed and every callback unregistered.
    #[track_caller]
    pub fn assert_no_leaks(&self) {
        let report = {
            let st = lock(&self.inner.state);
            let mut lines = Vec::new();
            let mut systems: Vec<_> = st.systems.iter().filter(|(_, e)| e.open).collect();
            systems.sort_by_key(|(h, _)| **h);
            for (h, e) in systems {
                lines.push(format!("  system handle {h:#x} (id {:?})", e.id));
            }
            let mut processes: Vec<_> = st.processes.iter().filter(|(_, e)| e.open).collect();
            processes.sort_by_key(|(h, _)| **h);
            for (h, e) in processes {
                let id = st.systems.get(&e.system).map_or("?", |s| s.id.as_str());
                lines.push(format!("  process handle {h:#x} (pid {}, system {id:?})", e.pid));
            }
            let mut callbacks: Vec<_> = st.callbacks.iter().filter(|(_, e)| e.active).collect();
            callbacks.sort_by_key(|(h, _)| **h);
            for (h, e) in callbacks {
                let kind = match e.kind {
                    CallbackKind::System => "system",
                    CallbackKind::Process => "process",
                };
                lines.push(format!(
                    "  {kind} callback {h:#x} (for handle {:#x}, context {})",
                    e.target,
                    e.ctx.raw()
                ));
            }
            if lines.is_empty() {
                None
            } else {
                let c = st.counts();
                Some(format!(
                    "fake driver leaked {} system handle(s), {} process handle(s), {} callback registration(s):\n{}",
                    c.systems,
                    c.processes,
                    c.callbacks,
                    lines.join("\n")
                ))
            }
        };
        if let Some(report) = report {
            panic!("{report}");
        }
    }

    // ---- internals -------------------------------------------------------------------------

    fn pending_code(&self) -> HResult {
        match self.inner.generation {
            ApiGeneration::V1 => HResult::ERROR_VMCOMPUTE_OPERATION_PENDING,
            ApiGeneration::V2 => HResult::HCS_E_OPERATION_PENDING,
        }
    }

    /// Logs the call, validates its handle, takes its answer and passes the answer's gate.
    fn begin(
        &self,
        method: Method,
        subject: Subject,
        id: Option<&str>,
        arg: String,
        ctx: Option<NotifyContext>,
    ) -> Result<Answer, Failure> {
        let answer = {
            let mut st = lock(&self.inner.state);
            let handle = match subject {
                Subject::None => None,
                Subject::System(h) | Subject::Process(h) | Subject::Callback(_, h) => Some(h),
            };
            let id = id.map(str::to_owned).or_else(|| st.system_id_of(subject));
            tracing::debug!(driver = "fake", %method, handle, id = id.as_deref(), "driver call");
            st.calls.push(Call {
                method,
                handle,
                id,
                arg,
                ctx,
            });
            if let Some(ctx) = ctx {
                if method.is_pending_capable() {
                    st.pending_ctx.insert(method, ctx);
                }
            }
            if !st.valid(subject) {
                tracing::debug!(driver = "fake", %method, handle, "invalid handle");
                return Err(invalid_handle());
            }
            st.next_answer(method)
        };
        if let Some(gate) = &answer.gate {
            gate.pass();
        }
        Ok(answer)
    }

    /// Turns an answer into a reply, computing the value (under the state lock) only when the
    /// answer is not a failure.
    fn settle<T>(
        &self,
        answer: &Answer,
        make: impl FnOnce(&mut State) -> Result<T, Failure>,
    ) -> DriverResult<T> {
        if let Outcome::Fail(code) = answer.outcome {
            return Err(Failure {
                code,
                document: answer.document.clone(),
                source: None,
            });
        }
        let value = make(&mut lock(&self.inner.state))?;
        let mut reply = match answer.outcome {
            Outcome::Pending => Reply::pending(value),
            _ => Reply::done(value),
        };
        reply.document = answer.document.clone();
        Ok(reply)
    }

    /// Like [`Self::settle`] for methods that cannot report pending (close, register,
    /// unregister): pending becomes a failure with the generation's pending code.
    fn settle_plain<T>(
        &self,
        answer: &Answer,
        make: impl FnOnce(&mut State) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        match answer.outcome {
            Outcome::Fail(code) => Err(Failure {
                code,
                document: answer.document.clone(),
                source: None,
            }),
            Outcome::Pending => Err(Failure {
                code: self.pending_code(),
                document: answer.document.clone(),
                source: None,
            }),
            Outcome::Ok => make(&mut lock(&self.inner.state)),
        }
    }

    /// Starts one thread per scripted completion of `answer`.
    fn schedule(&self, answer: &Answer, target: Target) {
        for completion in &answer.completions {
            lock(&self.inner.state).scheduled += 1;
            let inner = Arc::clone(&self.inner);
            let completion = completion.clone();
            let spawned = thread::Builder::new()
                .name("hcs-fake-notify".into())
                .spawn(move || inner.run_completion(target, &completion));
            if let Err(err) = spawned {
                tracing::warn!(driver = "fake", %err, "could not start a notification thread");
                let mut st = lock(&self.inner.state);
                st.scheduled -= 1;
                self.inner.changed.notify_all();
            }
        }
    }

    /// A system operation with no value: start, shutdown, terminate, pause, resume, save,
    /// modify.
    fn system_op(
        &self,
        method: Method,
        system: SystemHandle,
        arg: &str,
        ctx: Option<NotifyContext>,
    ) -> DriverResult<()> {
        let subject = Subject::System(system.raw());
        let answer = self.begin(method, subject, None, arg.to_owned(), ctx)?;
        let result = self.settle(&answer, |st| st.check(subject));
        self.schedule(&answer, ctx.map_or(Target::System(system.raw()), Target::Ctx));
        result
    }

    /// A process operation with no value: terminate, signal, modify.
    fn process_op(&self, method: Method, process: ProcessHandle, arg: &str) -> DriverResult<()> {
        let subject = Subject::Process(process.raw());
        let answer = self.begin(method, subject, None, arg.to_owned(), None)?;
        let result = self.settle(&answer, |st| st.check(subject));
        self.schedule(&answer, Target::Process(process.raw()));
        result
    }

    fn register(
        &self,
        method: Method,
        kind: CallbackKind,
        target: u64,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        let subject = match kind {
            CallbackKind::System => Subject::System(target),
            CallbackKind::Process => Subject::Process(target),
        };
        let answer = self.begin(method, subject, None, ctx.raw().to_string(), Some(ctx))?;
        let result = self.settle_plain(&answer, |st| {
            st.check(subject)?;
            Ok(st.new_callback(kind, target, ctx))
        });
        self.schedule(
            &answer,
            match kind {
                CallbackKind::System => Target::System(target),
                CallbackKind::Process => Target::Process(target),
            },
        );
        result
    }

    fn unregister(
        &self,
        method: Method,
        kind: CallbackKind,
        callback: CallbackHandle,
    ) -> Result<(), Failure> {
        let subject = Subject::Callback(kind, callback.raw());
        let answer = self.begin(method, subject, None, String::new(), None)?;
        let target = {
            let st = lock(&self.inner.state);
            match st.callbacks.get(&callback.raw()) {
                Some(e) if e.kind == CallbackKind::System => Target::System(e.target),
                Some(e) => Target::Process(e.target),
                None => Target::Nowhere,
            }
        };
        let result = self.settle_plain(&answer, |st| {
            st.check(subject)?;
            let entry = st.callbacks.get_mut(&callback.raw()).ok_or_else(invalid_handle)?;
            entry.active = false;
            let ctx = entry.ctx;
            if let Some(n) = st.ctx_active.get_mut(&ctx.raw()) {
                *n = n.saturating_sub(1);
            }
            Ok(ctx)
        });
        let result = result.map(|ctx| {
            // The contract: return only after deliveries already running for this
            // registration have returned.
            let mut st = lock(&self.inner.state);
            while st.inflight.get(&ctx.raw()).is_some_and(|n| *n > 0) {
                st = wait(&self.inner.changed, st);
            }
        });
        self.schedule(&answer, target);
        result
    }

    fn close(&self, method: Method, subject: Subject) -> Result<(), Failure> {
        let answer = self.begin(method, subject, None, String::new(), None)?;
        let result = self.settle_plain(&answer, |st| {
            st.check(subject)?;
            match subject {
                Subject::System(h) => {
                    if let Some(e) = st.systems.get_mut(&h) {
                        e.open = false;
                    }
                }
                Subject::Process(h) => {
                    if let Some(e) = st.processes.get_mut(&h) {
                        e.open = false;
                    }
                }
                Subject::None | Subject::Callback(..) => {}
            }
            Ok(())
        });
        let target = match subject {
            Subject::System(h) => Target::System(h),
            Subject::Process(h) => Target::Process(h),
            Subject::None | Subject::Callback(..) => Target::Nowhere,
        };
        self.schedule(&answer, target);
        result
    }
}

impl Driver for FakeDriver {
    fn name(&self) -> &str {
        "fake"
    }

    fn generation(&self) -> ApiGeneration {
        self.inner.generation
    }

    fn enumerate_compute_systems(&self, query: &str) -> DriverResult<String> {
        let answer = self.begin(
            Method::EnumerateComputeSystems,
            Subject::None,
            None,
            query.to_owned(),
            None,
        )?;
        let result = self.settle(&answer, |st| {
            Ok(answer.value.clone().unwrap_or_else(|| {
                let items: Vec<String> = st.known_ids.iter().map(|id| system_properties(id)).collect();
                format!("[{}]", items.join(","))
            }))
        });
        self.schedule(&answer, Target::Nowhere);
        result
    }

    fn create_compute_system(
        &self,
        id: &str,
        configuration: &str,
        ctx: NotifyContext,
    ) -> DriverResult<SystemHandle> {
        let answer = self.begin(
            Method::CreateComputeSystem,
            Subject::None,
            Some(id),
            configuration.to_owned(),
            Some(ctx),
        )?;
        let result = self.settle(&answer, |st| Ok(st.new_system(id)));
        self.schedule(&answer, Target::Ctx(ctx));
        result
    }

    fn open_compute_system(&self, id: &str) -> DriverResult<SystemHandle> {
        let answer = self.begin(
            Method::OpenComputeSystem,
            Subject::None,
            Some(id),
            String::new(),
            None,
        )?;
        let result = self.settle(&answer, |st| Ok(st.new_system(id)));
        let target = result
            .as_ref()
            .map_or(Target::Nowhere, |r| Target::System(r.value.raw()));
        self.schedule(&answer, target);
        result
    }

    fn close_compute_system(&self, system: SystemHandle) -> Result<(), Failure> {
        self.close(Method::CloseComputeSystem, Subject::System(system.raw()))
    }

    fn start_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.system_op(Method::StartComputeSystem, system, options, Some(ctx))
    }

    fn shutdown_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.system_op(Method::ShutdownComputeSystem, system, options, None)
    }

    fn terminate_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.system_op(Method::TerminateComputeSystem, system, options, None)
    }

    fn pause_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.system_op(Method::PauseComputeSystem, system, options, Some(ctx))
    }

    fn resume_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.system_op(Method::ResumeComputeSystem, system, options, Some(ctx))
    }

    fn save_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.system_op(Method::SaveComputeSystem, system, options, Some(ctx))
    }

    fn get_compute_system_properties(&self, system: SystemHandle, query: &str) -> DriverResult<String> {
        let subject = Subject::System(system.raw());
        let answer = self.begin(
            Method::GetComputeSystemProperties,
            subject,
            None,
            query.to_owned(),
            None,
        )?;
        let result = self.settle(&answer, |st| {
            st.check(subject)?;
            Ok(answer.value.clone().unwrap_or_else(|| {
                let id = st.systems.get(&system.raw()).map_or("", |e| e.id.as_str());
                system_properties(id)
            }))
        });
        self.schedule(&answer, Target::System(system.raw()));
        result
    }

    fn modify_compute_system(&self, system: SystemHandle, configuration: &str) -> DriverResult<()> {
        self.system_op(Method::ModifyComputeSystem, system, configuration, None)
    }

    fn register_compute_system_callback(
        &self,
        system: SystemHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        self.register(
            Method::RegisterComputeSystemCallback,
            CallbackKind::System,
            system.raw(),
            ctx,
        )
    }

    fn unregister_compute_system_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.unregister(
            Method::UnregisterComputeSystemCallback,
            CallbackKind::System,
            callback,
        )
    }

    fn create_process(
        &self,
        system: SystemHandle,
        parameters: &str,
    ) -> DriverResult<(ProcessHandle, ProcessInfo)> {
        let subject = Subject::System(system.raw());
        let answer = self.begin(Method::CreateProcess, subject, None, parameters.to_owned(), None)?;
        let result = self.settle(&answer, |st| {
            st.check(subject)?;
            let pid = answer.pid.unwrap_or_else(|| {
                let pid = st.next_pid;
                st.next_pid = st.next_pid.wrapping_add(1);
                pid
            });
            let handle = st.new_process(pid, system.raw());
            let info = st.process_info(pid, answer.stdio.as_ref());
            Ok((handle, info))
        });
        let target = result
            .as_ref()
            .map_or(Target::Nowhere, |r| Target::Process(r.value.0.raw()));
        self.schedule(&answer, target);
        result
    }

    fn open_process(&self, system: SystemHandle, pid: u32) -> DriverResult<ProcessHandle> {
        let subject = Subject::System(system.raw());
        let answer = self.begin(Method::OpenProcess, subject, None, pid.to_string(), None)?;
        let result = self.settle(&answer, |st| {
            st.check(subject)?;
            Ok(st.new_process(answer.pid.unwrap_or(pid), system.raw()))
        });
        let target = result
            .as_ref()
            .map_or(Target::Nowhere, |r| Target::Process(r.value.raw()));
        self.schedule(&answer, target);
        result
    }

    fn close_process(&self, process: ProcessHandle) -> Result<(), Failure> {
        self.close(Method::CloseProcess, Subject::Process(process.raw()))
    }

    fn terminate_process(&self, process: ProcessHandle) -> DriverResult<()> {
        self.process_op(Method::TerminateProcess, process, "")
    }

    fn signal_process(&self, process: ProcessHandle, options: &str) -> DriverResult<()> {
        self.process_op(Method::SignalProcess, process, options)
    }

    fn get_process_info(&self, process: ProcessHandle) -> DriverResult<ProcessInfo> {
        let subject = Subject::Process(process.raw());
        let answer = self.begin(Method::GetProcessInfo, subject, None, String::new(), None)?;
        let result = self.settle(&answer, |st| {
            st.check(subject)?;
            let pid = answer
                .pid
                .or_else(|| st.processes.get(&process.raw()).map(|e| e.pid))
                .unwrap_or_default();
            Ok(st.process_info(pid, answer.stdio.as_ref()))
        });
        self.schedule(&answer, Target::Process(process.raw()));
        result
    }

    fn get_process_properties(&self, process: ProcessHandle) -> DriverResult<String> {
        let subject = Subject::Process(process.raw());
        let answer = self.begin(Method::GetProcessProperties, subject, None, String::new(), None)?;
        let result = self.settle(&answer, |st| {
            st.check(subject)?;
            Ok(answer.value.clone().unwrap_or_else(|| {
                let pid = st.processes.get(&process.raw()).map_or(0, |e| e.pid);
                process_properties(pid)
            }))
        });
        self.schedule(&answer, Target::Process(process.raw()));
        result
    }

    fn modify_process(&self, process: ProcessHandle, settings: &str) -> DriverResult<()> {
        self.process_op(Method::ModifyProcess, process, settings)
    }

    fn register_process_callback(
        &self,
        process: ProcessHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        self.register(
            Method::RegisterProcessCallback,
            CallbackKind::Process,
            process.raw(),
            ctx,
        )
    }

    fn unregister_process_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.unregister(Method::UnregisterProcessCallback, CallbackKind::Process, callback)
    }

    fn get_service_properties(&self, query: &str) -> DriverResult<String> {
        let answer = self.begin(
            Method::GetServiceProperties,
            Subject::None,
            None,
            query.to_owned(),
            None,
        )?;
        let result = self.settle(&answer, |_| {
            Ok(answer
                .value
                .clone()
                .unwrap_or_else(|| SERVICE_PROPERTIES.to_owned()))
        });
        self.schedule(&answer, Target::Nowhere);
        result
    }

    fn modify_service_settings(&self, settings: &str) -> DriverResult<()> {
        let answer = self.begin(
            Method::ModifyServiceSettings,
            Subject::None,
            None,
            settings.to_owned(),
            None,
        )?;
        let result = self.settle(&answer, |_| Ok(()));
        self.schedule(&answer, Target::Nowhere);
        result
    }
}
