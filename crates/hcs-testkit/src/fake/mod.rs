//! The scripted fake driver: [`FakeDriver`] and its public API (scripting, the call log,
//! notifications, accounting), with the parts it is built from in submodules: [`Answer`]s and
//! exit notifications (`answers`), [`Gate`]s (`gate`), the handle tables and call log
//! (`state`) and the [`hcs::Driver`] implementation itself (`driver`).
//!
//! See the [crate documentation](crate) for an overview and a complete example.

mod answers;
mod driver;
mod gate;
mod state;
mod sync;

pub use answers::{system_exited, Answer, ExitKind};
pub use gate::Gate;
/// Open handles and registrations of a driver (the contract's own [`hcs::HandleCounts`]).
pub use hcs::HandleCounts;
/// Names one method of the driver contract (the contract's own [`hcs::Method`]).
pub use hcs::Method;
pub use state::Call;

use hcs::{ApiGeneration, HResult, NotificationKind, NotifyContext};
use state::{Inner, State};
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use sync::{lock, wait_timeout};

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
    ///
    /// [`Driver::generation`]: hcs::Driver::generation
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

    /// Fires `SystemExited` to `ctx` with the status and payload a driver of this fake's
    /// generation sends for `exit` ([`system_exited`]): on V2 a crash is `S_OK` plus
    /// `{"Status":<HCS_E_UNEXPECTED_EXIT>,"ExitType":"UnexpectedExit"}`, as `computecore.dll`
    /// sends it. Otherwise like [`FakeDriver::fire`].
    pub fn fire_exit(&self, ctx: NotifyContext, exit: ExitKind) -> bool {
        let (status, payload) = system_exited(self.inner.generation, exit);
        self.fire(ctx, NotificationKind::SystemExited, status, Some(&payload))
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
        let report = lock(&self.inner.state).leak_report();
        if let Some(report) = report {
            panic!("{report}");
        }
    }
}
