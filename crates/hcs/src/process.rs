//! [`Process`]: one process inside a compute system, driven through its System's driver.
//!
//! Implements design §5: stdio handed out once, Signal and Kill result semantics
//! (C8, I12, I13), exit code captured at exit (through a properties query on V1 — run on a
//! shared worker, never on HCS's callback thread — or from the `ProcessExited` payload on V2),
//! and the same guard, latch and close rules as [`crate::System`].

use crate::call::Target;
use crate::driver::{ApiGeneration, Driver, Failure, ProcessHandle};
use crate::error::{Cause, Error, Result};
use crate::guard::HandleCell;
use crate::hresult::{sets, HResult};
use crate::notifier::{Arrival, Follow, Notifier, Outcome};
use crate::notify::{NotificationKind, Sink};
use crate::object::{self, Registration};
use crate::stdio::{PipeReader, PipeWriter, Stdio};
use crate::sync::lock;
use crate::system_inner::SystemInner;
use hcs_schema::{ProcessModifyRequest, ProcessStatus};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

const OP_WAIT: &str = "hcs::Process::waitBackground";

/// The exact "process already gone" set of Signal/Kill (§5.5, I12), compared after the
/// FACILITY_WIN32 conversion. Not a classifier call: widening a classifier must not widen it.
const GONE: &[HResult] = sets::PROCESS_GONE;

/// Delay before Signal's force-unblock of a gone process's wait.
pub const SIGNAL_FORCE_UNBLOCK: Duration = Duration::from_secs(1);

/// A process's exit code: known, or explicitly unknown (never rendered as 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitCode {
    /// The code HCS reported (an unsigned 32-bit value, e.g. `0xC000013A`).
    Code(u32),
    /// HCS could not tell (`LastWaitResult ≠ 0`, no payload, closed, disconnected, ...).
    Unknown,
}

impl ExitCode {
    /// hcsshim's representation: the code, or -1 when unknown.
    pub fn as_i64(self) -> i64 {
        match self {
            ExitCode::Code(c) => i64::from(c),
            ExitCode::Unknown => -1,
        }
    }
}

struct StdioCache {
    cached: Stdio,
    has_cached: bool,
    /// An earlier `stdio()` call handed out at least one stream.
    handed_out: bool,
}

pub(crate) struct ProcessInner {
    me: Weak<ProcessInner>,
    pid: u32,
    system_id: String,
    system: Weak<SystemInner>,
    driver: Arc<dyn Driver>,
    generation: ApiGeneration,
    handle: HandleCell<ProcessHandle>,
    notifier: Arc<Notifier>,
    reg: Registration,
    stdio: Mutex<StdioCache>,
    kill_delivered: AtomicBool,
    resolving: AtomicBool,
}

struct ProcessSink(Weak<ProcessInner>);

impl ProcessSink {
    fn deliver(&self, kind: NotificationKind, status: HResult, payload: Option<&str>, arrival: Arrival) {
        let Some(p) = self.0.upgrade() else { return };
        let exit_outcome = |sig: &crate::notifier::ExitSignal| {
            if sig.status.is_failure() {
                let e = Error::process(
                    OP_WAIT,
                    &p.system_id,
                    p.pid,
                    Cause::Hcs(sig.status.to_win32_form()),
                );
                Some(Outcome::ProcessExit {
                    code: -1,
                    error: Some(e),
                })
            } else if p.generation == ApiGeneration::V2 {
                let (code, error) = p.exit_from_status_doc(sig.payload.as_deref(), true);
                Some(Outcome::ProcessExit { code, error })
            } else {
                None // V1: one driver call is needed; never on HCS's thread (I6).
            }
        };
        if let Follow::ResolveExit(_) = p.notifier.on_notification(
            NotificationKind::ProcessExited,
            kind,
            status,
            payload,
            arrival,
            &exit_outcome,
        ) {
            let weak = self.0.clone();
            crate::worker::spawn(move || {
                if let Some(p) = weak.upgrade() {
                    p.resolve_v1_exit(None);
                }
            });
        }
    }
}

impl Sink for ProcessSink {
    fn notify(&self, kind: NotificationKind, status: HResult, payload: Option<&str>) {
        self.deliver(kind, status, payload, Arrival::Live)
    }
    fn replay(&self, kind: NotificationKind, status: HResult, payload: Option<&str>) {
        self.deliver(kind, status, payload, Arrival::Replayed)
    }
}

/// A process in a compute system. Not `Clone`: share with `Arc<Process>`. Dropping closes it.
pub struct Process {
    inner: Arc<ProcessInner>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("system_id", &self.inner.system_id)
            .field("pid", &self.inner.pid)
            .finish()
    }
}

impl ProcessInner {
    fn new(
        system: &Arc<SystemInner>,
        pid: u32,
        handle: ProcessHandle,
        stdio: Stdio,
        has_cached: bool,
    ) -> Arc<Self> {
        let generation = system.driver.generation();
        Arc::new_cyclic(|me: &Weak<ProcessInner>| {
            let notifier = Arc::new(Notifier::new());
            let reg = Registration::new(Arc::new(ProcessSink(me.clone())));
            ProcessInner {
                me: me.clone(),
                pid,
                system_id: system.id.clone(),
                system: Arc::downgrade(system),
                driver: system.driver.clone(),
                generation,
                handle: HandleCell::new(Some(handle)),
                notifier,
                reg,
                stdio: Mutex::new(StdioCache {
                    cached: stdio,
                    has_cached,
                    handed_out: false,
                }),
                kill_delivered: AtomicBool::new(false),
                resolving: AtomicBool::new(false),
            }
        })
    }

    /// The object calls are about.
    fn target(&self) -> Target<'_> {
        Target::process(&self.system_id, self.pid)
    }

    fn err(&self, op: &'static str, cause: impl Into<Error>) -> Error {
        self.target().err(op, cause)
    }

    fn register(&self) -> Result<(), Failure> {
        let h = self
            .handle
            .acquire()
            .map(|u| u.handle())
            .ok_or_else(|| Failure::new(HResult::ERROR_INVALID_HANDLE))?;
        self.reg.register(|ctx| {
            self.target().traced_plain("register_process_callback", || {
                self.driver.register_process_callback(h, ctx)
            })
        })
    }

    /// Parses a `ProcessStatus` document into (exit code, wait error) per §5.3 / §9.8.
    fn exit_from_status_doc(&self, doc: Option<&str>, empty_is_unknown: bool) -> (i64, Option<Error>) {
        let text = doc.unwrap_or("");
        if text.trim().is_empty() {
            if empty_is_unknown {
                return (-1, None);
            }
            return (-1, Some(self.err(OP_WAIT, Cause::UnexpectedValue)));
        }
        match serde_json::from_str::<ProcessStatus>(text) {
            Err(e) => (-1, Some(self.err(OP_WAIT, Cause::Json(e.to_string())))),
            Ok(s) if s.last_wait_result != 0 => {
                tracing::warn!(
                    system_id = %self.system_id, pid = self.pid, last_wait_result = s.last_wait_result,
                    "process exit code unknown"
                );
                (-1, None)
            }
            Ok(_) if says_not_exited(text) => {
                // A stray exit notification for a process HCS says is still running: never
                // synthesise a clean exit; the code is unknown.
                tracing::warn!(
                    system_id = %self.system_id, pid = self.pid,
                    "process status says Exited: false after an exit notification; exit code unknown"
                );
                (-1, None)
            }
            Ok(s) => (i64::from(s.exit_code), None),
        }
    }

    /// V1: reads the exit code through a properties query and publishes the exit. `closing`
    /// carries the handle when Close itself resolves (it already owns the handle).
    fn resolve_v1_exit(&self, closing: Option<ProcessHandle>) {
        if self.notifier.outcome().is_some() {
            return;
        }
        // The worker takes a handle use *before* claiming the resolution: Close waits for that
        // use to end, so either the worker resolves (and Close then sees the outcome), or the
        // worker could not get the handle and Close resolves with the handle it owns.
        let guard = match closing {
            Some(_) => None,
            None => match self.handle.acquire() {
                Some(u) => Some(u),
                None => return, // Close is in progress and resolves it itself.
            },
        };
        let Some(h) = closing.or_else(|| guard.as_ref().map(|u| u.handle())) else {
            return;
        };
        if self.resolving.swap(true, Ordering::SeqCst) {
            return;
        }
        let (code, error) = self.query_exit(h);
        self.notifier.publish(Outcome::ProcessExit { code, error });
        drop(guard);
    }

    fn query_exit(&self, h: ProcessHandle) -> (i64, Option<Error>) {
        match self
            .target()
            .traced("get_process_properties", || self.driver.get_process_properties(h))
        {
            Err(e) => (-1, Some(self.err(OP_WAIT, &e))),
            Ok(r) => self.exit_from_status_doc(Some(&r.value), false),
        }
    }

    fn is_stopped(&self) -> bool {
        self.notifier.is_done()
    }

    /// The process is gone but its exit notification may never come: unless an exit arrives
    /// within [`SIGNAL_FORCE_UNBLOCK`], its waits end with `code` as the wait error and an
    /// unknown exit code.
    fn force_unblock_later(&self, code: HResult) {
        if self.is_stopped() {
            return;
        }
        let weak = self.me.clone();
        crate::worker::spawn_after(SIGNAL_FORCE_UNBLOCK, move || {
            if let Some(p) = weak.upgrade() {
                // KEEP (Q19): the raw, unwrapped code becomes the wait error.
                p.notifier.publish(Outcome::ProcessExit {
                    code: -1,
                    error: Some(Error::bare(Cause::Hcs(code))),
                });
            }
        });
    }

    /// Maps a Signal/terminate failure: `Ok(false)` for the gone family (scheduling the
    /// force-unblock when `force_unblock`), else an error of `op`.
    fn signal_result(
        &self,
        op: &'static str,
        r: std::result::Result<(), Failure>,
        force_unblock: bool,
    ) -> Result<bool> {
        let f = match r {
            Ok(()) => return Ok(true),
            Err(f) => f,
        };
        let code = f.code.to_win32_form();
        if !code.is_in(GONE) {
            return Err(self.err(op, &f));
        }
        if force_unblock {
            self.force_unblock_later(code);
        }
        Ok(false)
    }

    /// Releases this object when nobody else can reach it (see [`object::release`]).
    fn release(&self) {
        let what = format!("process {} in {}", self.pid, self.system_id);
        object::release(&self.handle, &self.notifier, &self.reg, &what, || self.close());
    }

    fn close(&self) -> Result<()> {
        {
            let mut s = lock(&self.stdio);
            s.cached = Stdio::default();
            s.has_cached = false;
        }
        object::close(
            &self.handle,
            &self.notifier,
            &self.reg,
            |h| {
                // The exit code must survive Close: resolve an observed-but-unread V1 exit first.
                if self.generation == ApiGeneration::V1
                    && self.notifier.exit_signal().is_some_and(|s| s.status.is_success())
                {
                    self.resolve_v1_exit(Some(h));
                }
            },
            |cb| {
                self.target().traced_plain("unregister_process_callback", || {
                    self.driver.unregister_process_callback(cb)
                })
            },
            |h| {
                self.target()
                    .traced_plain("close_process", || self.driver.close_process(h))
            },
            |h, ctx| {
                self.target().traced_plain("register_process_callback", || {
                    self.driver.register_process_callback(h, ctx)
                })
            },
        )
        .map_err(|e| self.err("hcs::Process::Close", &e))
    }
}

/// `true` when a status document says `"Exited": false` explicitly (an absent flag is not a
/// denial: drivers and older HCS builds omit it).
fn says_not_exited(doc: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Flag {
        #[serde(rename = "Exited")]
        exited: Option<bool>,
    }
    serde_json::from_str::<Flag>(doc).is_ok_and(|f| f.exited == Some(false))
}

fn map_process_outcome(p: &ProcessInner, o: &Outcome) -> Result<()> {
    match o {
        Outcome::ProcessExit { error: Some(e), .. } => Err(e.clone()),
        Outcome::ProcessExit { error: None, .. } | Outcome::SystemExit(_) => Ok(()),
        Outcome::Disconnected => Err(p.err(OP_WAIT, Cause::ServiceDisconnected)),
        Outcome::Closed => Err(Error::bare(Cause::AlreadyClosed)),
    }
}

fn command_line(parameters: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(parameters).ok()?;
    v.get("CommandLine")?.as_str().map(str::to_owned)
}

impl Process {
    pub(crate) fn create(system: &Arc<SystemInner>, parameters: &str) -> Result<Process> {
        const OP: &str = "hcs::System::CreateProcess";
        let r = system.target().call(&system.handle, OP, "create_process", |h| {
            system.driver.create_process(h, parameters)
        });
        let reply = match r {
            Ok(r) => r,
            Err(e) if e.is_already_closed() => return Err(e),
            Err(e) => {
                // The error names the command line that failed, quoted, in its own field (as
                // hcsshim's "extra info"), apart from the operation and the system id.
                return Err(match command_line(parameters) {
                    Some(cl) => e.with_detail_prefix(format!("command line {cl:?}")),
                    None => e,
                });
            }
        };
        let (handle, info) = reply.value;
        let pid = info.pid;
        let stdio = Stdio {
            stdin: info.stdin,
            stdout: info.stdout,
            stderr: info.stderr,
        };
        let inner = ProcessInner::new(system, pid, handle, stdio, true);
        let process = Process { inner };
        if reply.pending {
            let e = Error::system(
                OP,
                &system.id,
                Cause::Hcs(HResult::ERROR_VMCOMPUTE_OPERATION_PENDING),
            );
            return Err(e); // Drop closes the handle
        }
        if let Err(e) = process.inner.register() {
            return Err(Error::system(OP, &system.id, Failure::new(e.code)));
        }
        Ok(process)
    }

    pub(crate) fn open(system: &Arc<SystemInner>, pid: u32) -> Result<Process> {
        const OP: &str = "hcs::System::OpenProcess";
        let reply = system.target().call(&system.handle, OP, "open_process", |h| {
            system.driver.open_process(h, pid)
        })?;
        let process = Process {
            inner: ProcessInner::new(system, pid, reply.value, Stdio::default(), false),
        };
        if let Err(e) = process.inner.register() {
            // I8: the handle is closed on this path (Drop).
            return Err(Error::system(OP, &system.id, Failure::new(e.code)));
        }
        Ok(process)
    }

    /// The process id inside the compute system.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }
    /// The id of the owning compute system.
    pub fn system_id(&self) -> &str {
        &self.inner.system_id
    }
    /// The callback context this object handed to the driver (its id in the notification
    /// registry), or `None` once the object is closed and its registry entry removed.
    pub fn notify_context(&self) -> Option<crate::driver::NotifyContext> {
        self.inner.reg.live_context()
    }

    /// Hands out the process's standard streams. The first call returns the streams HCS gave at
    /// creation (exactly once); later calls query HCS for fresh handles (`HcsGetProcessInfo`).
    /// When an earlier call handed out streams and the driver has none to give again (the
    /// simulator hands its pipes over once, as HCS does for anonymous pipes), a later call is
    /// an error for which `is_not_supported()` holds, never a silent empty set.
    pub fn stdio(&self) -> Result<Stdio> {
        const OP: &str = "hcs::Process::StdioLegacy";
        if self.inner.handle.is_closed() {
            return Err(self.inner.err(OP, Cause::AlreadyClosed));
        }
        let handed_out = {
            let mut s = lock(&self.inner.stdio);
            if s.has_cached {
                s.has_cached = false;
                let streams = std::mem::take(&mut s.cached);
                s.handed_out |=
                    streams.stdin.is_some() || streams.stdout.is_some() || streams.stderr.is_some();
                return Ok(streams);
            }
            s.handed_out
        };
        let info = self
            .inner
            .target()
            .call_done(&self.inner.handle, OP, "get_process_info", |h| {
                self.inner.driver.get_process_info(h)
            })?;
        let streams = Stdio {
            stdin: info.stdin,
            stdout: info.stdout,
            stderr: info.stderr,
        };
        if handed_out && streams.stdin.is_none() && streams.stdout.is_none() && streams.stderr.is_none() {
            return Err(self.inner.err(
                OP,
                Cause::Unsupported(
                    "the process's standard streams were taken by an earlier stdio() call and the driver cannot hand them out again"
                        .into(),
                ),
            ));
        }
        Ok(streams)
    }
    /// Takes only the cached stdin writer, if still cached.
    pub fn take_stdin(&self) -> Option<PipeWriter> {
        lock(&self.inner.stdio).cached.stdin.take()
    }
    /// Takes only the cached stdout reader, if still cached.
    pub fn take_stdout(&self) -> Option<PipeReader> {
        lock(&self.inner.stdio).cached.stdout.take()
    }
    /// Takes only the cached stderr reader, if still cached.
    pub fn take_stderr(&self) -> Option<PipeReader> {
        lock(&self.inner.stdio).cached.stderr.take()
    }

    /// Sends a signal (`SignalProcessOptions`, passed verbatim, e.g. `{"Signal":15}`).
    /// `Ok(true)`: delivered. `Ok(false)`: the process is already gone (its wait is force-
    /// completed after one second if no exit arrives). Any other failure is an error (I12).
    pub fn signal(&self, options: &str) -> Result<bool> {
        const OP: &str = "hcs::Process::Signal";
        let r = self
            .inner
            .target()
            .call_raw(&self.inner.handle, OP, "signal_process", |h| {
                self.inner.driver.signal_process(h, options)
            })?;
        self.inner.signal_result(OP, r.map(|_| ()), true)
    }

    /// Kills the process through a second handle to its system on the same driver (§5.6):
    /// idempotent once delivered; access-denied and already-stopped count as delivered.
    pub fn kill(&self) -> Result<bool> {
        const OP: &str = "hcs::Process::Kill";
        if self.inner.handle.is_closed() {
            return Err(self.inner.err(OP, Cause::AlreadyClosed));
        }
        if self.inner.is_stopped() {
            return Err(self
                .inner
                .err(OP, Cause::Hcs(HResult::HCS_E_PROCESS_ALREADY_STOPPED)));
        }
        if self.inner.kill_delivered.load(Ordering::SeqCst) {
            return Ok(true);
        }
        // The second handle inherits the owning System's timeouts (the environment's only when
        // the System is already gone).
        let timeouts = match self.inner.system.upgrade() {
            Some(sys) => *lock(&sys.timeouts),
            None => crate::timeouts::Timeouts::from_env(),
        };
        let second = match SystemInner::open(self.inner.driver.clone(), &self.inner.system_id, timeouts) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(system_id = %self.inner.system_id, error = %e, "kill: could not open a second handle; terminating the system");
                // I13: terminate only; the caller's System stays open.
                if let Some(sys) = self.inner.system.upgrade() {
                    sys.terminate()?;
                }
                return Ok(true);
            }
        };
        let result = (|| {
            let temp = match Process::open(&second, self.inner.pid) {
                Ok(p) => p,
                Err(e) if e.is_already_stopped() => {
                    // Gone: if its exit never arrives, our waits must still end (as Signal's do).
                    if let Some(code) = e.hresult() {
                        self.inner.force_unblock_later(code);
                    }
                    return Ok(true);
                }
                Err(e) => return Err(e),
            };
            let h = temp.inner.handle.acquire().map(|u| u.handle());
            let Some(h) = h else {
                return Err(self.inner.err(OP, Cause::AlreadyClosed));
            };
            let r = self
                .inner
                .target()
                .traced("terminate_process", || self.inner.driver.terminate_process(h))
                .map(|_| ());
            if let Err(f) = &r {
                let e = Error::from_failure(f);
                if e.hresult() == Some(HResult::ERROR_ACCESS_DENIED) || e.is_already_stopped() {
                    // Delivered, but not remembered: the next Kill tries again. The process may
                    // already be gone with its exit never coming: our waits end anyway.
                    if let Some(code) = e.hresult() {
                        self.inner.force_unblock_later(code);
                    }
                    return Ok(true);
                }
            }
            // The force-unblock targets the caller's object, not the temporary one (Q19),
            // which closes now.
            let gone = r.as_ref().err().map(|f| f.code.to_win32_form());
            let delivered = temp.inner.signal_result(OP, r, false)?;
            if !delivered {
                if let Some(code) = gone {
                    self.inner.force_unblock_later(code);
                }
            }
            self.inner.kill_delivered.store(delivered, Ordering::SeqCst);
            Ok(delivered)
        })();
        second.release();
        result
    }

    /// Terminates the process through its own handle. The "already gone" family is success.
    pub fn terminate(&self) -> Result<()> {
        const OP: &str = "hcs::Process::Terminate";
        let r = self
            .inner
            .target()
            .call_raw(&self.inner.handle, OP, "terminate_process", |h| {
                self.inner.driver.terminate_process(h)
            })?;
        self.inner.signal_result(OP, r.map(|_| ()), false).map(|_| ())
    }

    fn modify(&self, op: &'static str, req: &ProcessModifyRequest) -> Result<()> {
        if self.inner.handle.is_closed() {
            return Err(self.inner.err(op, Cause::AlreadyClosed));
        }
        let json = serde_json::to_string(req).map_err(|e| Error::bare(Cause::Json(e.to_string())))?;
        self.inner
            .target()
            .call_done(&self.inner.handle, op, "modify_process", |h| {
                self.inner.driver.modify_process(h, &json)
            })
    }

    /// Resizes the process's console (a zero dimension is omitted from the request).
    pub fn resize_console(&self, width: u16, height: u16) -> Result<()> {
        self.modify(
            "hcs::Process::ResizeConsole",
            &ProcessModifyRequest::console_size(width, height),
        )
    }

    /// Closes the process's stdin: tells HCS while the process runs (even without a local
    /// pipe, so the guest sees EOF), then drops the local writer. Harmless to repeat. HCS saying
    /// the process is gone (it exited before its notification arrived) counts as done.
    pub fn close_stdin(&self) -> Result<()> {
        const OP: &str = "hcs::Process::CloseStdin";
        if self.inner.handle.is_closed() {
            return Err(self.inner.err(OP, Cause::AlreadyClosed));
        }
        if !self.inner.is_stopped() {
            match self.modify(OP, &ProcessModifyRequest::close_stdin()) {
                Ok(()) => {}
                // The process exited before its exit notification reached us (the stdin pipe
                // reached EOF and the process ended at once): its stdin is gone with it, which
                // is what was asked. Design §5.4.
                Err(e) if e.hresult().is_some_and(|h| h.is_in(GONE)) => {
                    tracing::debug!(error = %e, "close_stdin: the process is already gone");
                }
                Err(e) => return Err(e),
            }
        }
        lock(&self.inner.stdio).cached.stdin = None;
        Ok(())
    }
    /// Drops the local stdout reader. Always `Ok`, also after close (Q18).
    pub fn close_stdout(&self) -> Result<()> {
        lock(&self.inner.stdio).cached.stdout = None;
        Ok(())
    }
    /// Drops the local stderr reader. Always `Ok`, also after close (Q18).
    pub fn close_stderr(&self) -> Result<()> {
        lock(&self.inner.stdio).cached.stderr = None;
        Ok(())
    }

    /// Blocks until the process exits (exit code captured), the service disconnects, or the
    /// object is closed (then an already-closed error).
    pub fn wait(&self) -> Result<()> {
        let o = self
            .inner
            .notifier
            .wait_outcome(None)
            .expect("unbounded wait yields an outcome");
        map_process_outcome(&self.inner, &o)
    }
    /// [`Process::wait`] bounded by `timeout` (a timeout error leaves the process untouched). A
    /// timeout too large to represent as an instant (e.g. `Duration::MAX`) is no limit.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        match self
            .inner
            .notifier
            .wait_outcome(Instant::now().checked_add(timeout))
        {
            Some(o) => map_process_outcome(&self.inner, &o),
            None => Err(self.inner.err("hcs::Process::Wait", Cause::Timeout)),
        }
    }
    /// A runtime-agnostic `Future` resolving like [`Process::wait`].
    pub fn wait_async(&self) -> ProcessWait {
        ProcessWait {
            listener: None,
            inner: self.inner.clone(),
        }
    }

    /// The exit code: an error before the process stopped (`InvalidProcessState`) and when the
    /// wait failed; -1 when HCS could not tell.
    pub fn exit_code(&self) -> Result<i64> {
        match self.inner.notifier.outcome().as_deref() {
            None => Err(self
                .inner
                .err("hcs::Process::ExitCode", Cause::InvalidProcessState)),
            Some(Outcome::ProcessExit { code, error: None }) => Ok(*code),
            Some(o) => map_process_outcome(&self.inner, o).map(|_| -1),
        }
    }
    /// The exit code as [`ExitCode`], once the process has stopped (`None` before).
    pub fn exit(&self) -> Option<ExitCode> {
        match *self.inner.notifier.outcome()? {
            Outcome::ProcessExit { code, .. } if (0..=i64::from(u32::MAX)).contains(&code) => {
                Some(ExitCode::Code(code as u32))
            }
            _ => Some(ExitCode::Unknown),
        }
    }

    /// Closes the process: local stdio dropped, callback unregistered, handle closed. An exit
    /// already observed keeps its exit code. Idempotent; retryable on failure.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

/// A dropped Process is reachable by nobody: the library releases it (bounded retries of the
/// close, then the handle is forgotten and the registry entry removed, with a log line).
impl Drop for Process {
    fn drop(&mut self) {
        self.inner.release();
    }
}

/// The future returned by [`Process::wait_async`].
pub struct ProcessWait {
    inner: Arc<ProcessInner>,
    listener: Option<event_listener::EventListener>,
}

impl Future for ProcessWait {
    type Output = Result<()>;
    /// The common re-poll (the process exited and its status is known) is one load and inlines
    /// into the executor; everything else is `poll_slow`, out of line.
    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.inner.notifier.done_ok() {
            return Poll::Ready(Ok(()));
        }
        self.poll_slow(cx)
    }
}

impl ProcessWait {
    #[inline(never)]
    fn poll_slow(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self;
        if ready!(this.inner.notifier.poll_done(&mut this.listener, cx)) {
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(this.inner.notifier.with_outcome(|o| match o {
            Some(o) => map_process_outcome(&this.inner, o),
            None => unreachable!("ready only once an outcome is published"),
        }))
    }
}

impl std::fmt::Debug for ProcessWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessWait")
            .field("pid", &self.inner.pid)
            .finish()
    }
}
