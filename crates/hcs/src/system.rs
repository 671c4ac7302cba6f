//! [`System`]: one compute system (container or VM) driven through a [`Driver`].
//!
//! Implements design §4 with the improvements of §0.3: handle guards (C1), the
//! handle-use guard (C2), pending operations completed by their armed notification (C3, I3),
//! exit and disconnect latched for every waiter (I1), deterministic wait-after-close (I4),
//! stop idempotent over both encodings (C7, I11), and a close that never waits for a
//! notification (I10).

use crate::call::Target;
use crate::driver::{ApiGeneration, Driver, Failure, NotificationKind, NotifyContext};
use crate::error::{Cause, Error, Result};
use crate::hresult::{sets, CodePair, HResult};
use crate::notifier::Outcome;
use crate::process::Process;
use crate::sync::lock;
use crate::system_inner::{map_system_outcome, SystemInner, OP_CREATE, OP_WAIT};
use crate::timeouts::{CallOptions, Timeouts};
use hcs_schema::{ComputeSystemQuery, ContainerProperties, ExitType, PropertyType, SystemExitStatus};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime};

/// How a System exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemExit {
    /// The exit status: the `SystemExited` notification's status when it is a failure (V1),
    /// else the payload's `Status` (V2 notifications carry `S_OK` and put the status in the
    /// payload); 0 for a normal exit.
    pub status: HResult,
    /// The exit type from the notification payload, when the driver provides one.
    pub exit_type: Option<ExitType>,
    /// `true` for an unexpected exit: a crash status ([`sets::UNEXPECTED_EXIT`], as V1 reports
    /// it) or `ExitType: UnexpectedExit` in the payload (as V2 reports it).
    pub unexpected: bool,
}

/// A compute system. Not `Clone`: share it with `Arc<System>`. Dropping it closes it.
///
/// # Pending operations and the "owed completion" rule (design §3.6.1)
///
/// `start`, `pause`, `resume` and `save` (and `create`) wait for their `*Completed`
/// notification when the driver answers pending. When such a wait gives up (its timeout, or a
/// [`crate::CancelToken`]), the operation is still running inside HCS and its completion will
/// still arrive. V1 completions carry no operation id, so the System records the completion as
/// *owed* and drops the next completion of that kind when it arrives, instead of letting it
/// satisfy the next operation of that kind. This assumes HCS completes operations of one kind
/// in order (it does: it serialises them per system). The cost: if HCS never delivers the
/// abandoned operation's completion, the next operation of that kind times out as well. V2
/// drivers also get [`Driver::cancel_pending`] so they can cancel the HCS operation.
///
/// # Timeouts
///
/// Each pending operation waits at most the System's timeout for it ([`System::timeouts`],
/// from [`System::create_with`] / [`System::open_with`], or the environment). A per-call
/// [`CallOptions::timeout`] narrows that limit for one call and never extends it: nested
/// deadlines, the shortest wins. A timeout error names the limit that applied, e.g.
/// `hcs::System::Start c1: hcsshim: timeout waiting for notification (timed out after 200ms
/// waiting for SystemStartCompleted)`.
pub struct System {
    inner: Arc<SystemInner>,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("id", &self.inner.id)
            .field("driver", &self.inner.driver.name())
            .finish()
    }
}

impl System {
    /// The shared core (for the migration sessions, which outlive a borrow of the System).
    pub(crate) fn inner_arc(&self) -> Arc<SystemInner> {
        self.inner.clone()
    }

    /// Creates a compute system from a configuration document, passed to HCS verbatim, with
    /// timeouts from the environment ([`Timeouts::from_env`]).
    pub fn create(driver: Arc<dyn Driver>, id: &str, configuration: &str) -> Result<System> {
        Self::create_with(driver, id, configuration, Timeouts::from_env())
    }

    /// Creates a compute system from any serialisable document (e.g. an `hcs-schema` type).
    pub fn create_from<T: serde::Serialize>(
        driver: Arc<dyn Driver>,
        id: &str,
        document: &T,
    ) -> Result<System> {
        let json = serde_json::to_string(document).map_err(|e| Error::bare(Cause::Json(e.to_string())))?;
        Self::create(driver, id, &json)
    }

    /// Creates a compute system with explicit timeouts (design §4.3): create, register,
    /// wait for `SystemCreateCompleted` if pending (terminating on timeout), load cached
    /// properties. Every failure path releases the handle and the registration.
    pub fn create_with(
        driver: Arc<dyn Driver>,
        id: &str,
        configuration: &str,
        timeouts: Timeouts,
    ) -> Result<System> {
        let inner = SystemInner::new(driver, id, timeouts);
        let kind = NotificationKind::SystemCreateCompleted;
        let seq = inner.notifier.arm(kind);
        let deadline = inner.deadline(&CallOptions::default(), timeouts.create);
        let r = Target::system(id).traced("create_compute_system", || {
            inner
                .driver
                .create_compute_system(id, configuration, inner.reg.ctx())
        });
        let reply = match r {
            Ok(r) => r,
            Err(e) => {
                inner.notifier.disarm(seq);
                inner.reg.remove_entry();
                return Err(Error::system(OP_CREATE, id, &e));
            }
        };
        inner.handle.set(reply.value);
        let system = System { inner };
        // From here on HCS has the system: every failure terminates it (unless the failure
        // says it is gone), so a retry under the same id does not meet "already exists". The
        // half-built object is then released by its Drop.
        if let Err(e) = system.inner.register(reply.value) {
            system.inner.notifier.disarm(seq);
            let _ = system.inner.terminate();
            return Err(Error::system(OP_CREATE, id, Failure::new(e.code)));
        }
        if reply.pending {
            if let Err(e) = system
                .inner
                .wait_armed(OP_CREATE, kind, seq, deadline, &CallOptions::default())
            {
                system.inner.terminate_unless_gone(&e);
                return Err(e);
            }
        } else {
            system.inner.notifier.disarm(seq);
        }
        if let Err(e) = system.inner.load_cached() {
            system.inner.terminate_unless_gone(&e);
            return Err(e);
        }
        Ok(system)
    }

    /// Opens an existing compute system by id (open → register → properties), with timeouts
    /// from the environment ([`Timeouts::from_env`]).
    pub fn open(driver: Arc<dyn Driver>, id: &str) -> Result<System> {
        Self::open_with(driver, id, Timeouts::from_env())
    }

    /// [`System::open`] with explicit completion-wait timeouts (used by every pending operation
    /// of the opened object, and by [`Process::kill`]'s second handle to it).
    pub fn open_with(driver: Arc<dyn Driver>, id: &str, timeouts: Timeouts) -> Result<System> {
        Ok(System {
            inner: SystemInner::open(driver, id, timeouts)?,
        })
    }

    /// The callback context this object handed to the driver (its id in the notification
    /// registry), or `None` once the object is closed and its registry entry removed. Tests
    /// use it to check registry hygiene per object and to fire notifications at it.
    pub fn notify_context(&self) -> Option<NotifyContext> {
        self.inner.reg.live_context()
    }

    /// The system id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }
    /// The driver this system is driven through.
    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.inner.driver
    }
    /// Lower-cased runtime OS (`windows`, `linux`), as cached at create/open.
    pub fn os(&self) -> String {
        lock(&self.inner.cached).os.clone()
    }
    /// Lower-cased system type (`container`, `virtualmachine`), as cached at create/open.
    pub fn system_type(&self) -> String {
        lock(&self.inner.cached).typ.clone()
    }
    /// Lower-cased owner, as cached at create/open.
    pub fn owner(&self) -> String {
        lock(&self.inner.cached).owner.clone()
    }
    /// `true` for a Linux container (`os == "linux"` and `type == "container"`).
    pub fn is_oci(&self) -> bool {
        let c = lock(&self.inner.cached);
        c.os == "linux" && c.typ == "container"
    }
    /// The completion-wait timeouts of this system.
    pub fn timeouts(&self) -> Timeouts {
        *lock(&self.inner.timeouts)
    }
    /// Replaces the completion-wait timeouts of this system.
    pub fn set_timeouts(&self, t: Timeouts) {
        *lock(&self.inner.timeouts) = t;
    }

    /// Starts the system, waiting for `SystemStartCompleted` when HCS answers pending.
    pub fn start(&self) -> Result<()> {
        self.start_with(&CallOptions::default())
    }
    /// [`System::start`] with a per-call timeout and/or cancellation.
    pub fn start_with(&self, opts: &CallOptions) -> Result<()> {
        let t = self.timeouts().start;
        self.inner.run_pending(
            "hcs::System::Start",
            "start_compute_system",
            NotificationKind::SystemStartCompleted,
            t,
            opts,
            |d, h, c| d.start_compute_system(h, "", c),
        )?;
        *lock(&self.inner.started_at) = Some(SystemTime::now());
        Ok(())
    }

    /// Asks the system to shut down gracefully. Returns without waiting for the exit; already
    /// stopped, not found and pending (both encodings) are success, as is a closed or exited
    /// object.
    pub fn shutdown(&self) -> Result<()> {
        self.shutdown_with_options("")
    }
    /// [`System::shutdown`] with a `ShutdownOptions` document.
    pub fn shutdown_with_options(&self, options: &str) -> Result<()> {
        self.inner
            .stop("hcs::System::Shutdown", "shutdown_compute_system", |d, h| {
                d.shutdown_compute_system(h, options)
            })
    }
    /// Forcibly terminates the system, with the same idempotence as [`System::shutdown`].
    pub fn terminate(&self) -> Result<()> {
        self.inner.terminate()
    }

    /// Pauses the system (waits for `SystemPauseCompleted` when pending).
    pub fn pause(&self) -> Result<()> {
        self.pause_with(&CallOptions::default())
    }
    /// [`System::pause`] with per-call options.
    pub fn pause_with(&self, opts: &CallOptions) -> Result<()> {
        let t = self.timeouts().pause;
        self.inner.run_pending(
            "hcs::System::Pause",
            "pause_compute_system",
            NotificationKind::SystemPauseCompleted,
            t,
            opts,
            |d, h, c| d.pause_compute_system(h, "", c),
        )
    }
    /// Resumes a paused system (waits for `SystemResumeCompleted` when pending).
    pub fn resume(&self) -> Result<()> {
        self.resume_with(&CallOptions::default())
    }
    /// [`System::resume`] with per-call options.
    pub fn resume_with(&self, opts: &CallOptions) -> Result<()> {
        let t = self.timeouts().resume;
        self.inner.run_pending(
            "hcs::System::Resume",
            "resume_compute_system",
            NotificationKind::SystemResumeCompleted,
            t,
            opts,
            |d, h, c| d.resume_compute_system(h, "", c),
        )
    }
    /// Saves the system; `options` (a `SaveOptions` document) is passed through verbatim.
    pub fn save(&self, options: &str) -> Result<()> {
        self.save_with(options, &CallOptions::default())
    }
    /// [`System::save`] with per-call options.
    pub fn save_with(&self, options: &str, opts: &CallOptions) -> Result<()> {
        let t = self.timeouts().save;
        self.inner.run_pending(
            "hcs::System::Save",
            "save_compute_system",
            NotificationKind::SystemSaveCompleted,
            t,
            opts,
            |d, h, c| d.save_compute_system(h, options, c),
        )
    }

    /// Applies a modify request (passed verbatim). A pending answer is an error (Q10).
    pub fn modify(&self, configuration: &str) -> Result<()> {
        self.inner.target().call_done(
            &self.inner.handle,
            "hcs::System::Modify",
            "modify_compute_system",
            |h| self.inner.driver.modify_compute_system(h, configuration),
        )
    }

    /// V1 property query (`{"PropertyTypes":[...]}`, or `{}` with no types).
    pub fn properties(&self, types: &[PropertyType]) -> Result<ContainerProperties> {
        self.inner.properties("hcs::System::Properties", types)
    }
    /// V2 property query with the given types (plain HCS query for every system type).
    pub fn properties_v2(&self, types: &[PropertyType]) -> Result<ContainerProperties> {
        self.inner.properties("hcs::System::PropertiesV2", types)
    }
    /// A full V2 property query document (with `Queries`), passed verbatim; returns the raw
    /// response JSON.
    pub fn properties_v3(&self, query: &str) -> Result<String> {
        self.inner.properties_raw("hcs::System::PropertiesV3", query)
    }

    /// Starts a process from a `ProcessParameters` (V2) or `ProcessConfig` (V1) document,
    /// passed verbatim. [`System::create_process_from`] takes the typed document instead.
    pub fn create_process(&self, parameters: &str) -> Result<Process> {
        Process::create(&self.inner, parameters)
    }

    /// Starts a process from any serialisable parameters document, typically
    /// [`crate::schema::ProcessParameters`]:
    ///
    /// ```no_run
    /// # fn demo(system: &hcs::System) -> hcs::Result<()> {
    /// use hcs::schema::ProcessParameters;
    /// let params = ProcessParameters {
    ///     command_line: Some("cmd /c echo hello".into()),
    ///     create_std_out_pipe: Some(true),
    ///     ..Default::default()
    /// };
    /// let process = system.create_process_from(&params)?;
    /// process.wait()?;
    /// # Ok(()) }
    /// ```
    pub fn create_process_from<T: serde::Serialize>(&self, parameters: &T) -> Result<Process> {
        let json = serde_json::to_string(parameters).map_err(|e| Error::bare(Cause::Json(e.to_string())))?;
        self.create_process(&json)
    }
    /// Opens an existing process by pid.
    pub fn open_process(&self, pid: u32) -> Result<Process> {
        Process::open(&self.inner, pid)
    }

    /// Blocks until the system exits, the service disconnects, or the object is closed.
    /// A normal or unexpected exit is `Ok` (see [`System::exit_status`]); other failure
    /// statuses and a disconnect are errors; after `close` it is an already-closed error.
    pub fn wait(&self) -> Result<()> {
        let o = self
            .inner
            .notifier
            .wait_outcome(None)
            .expect("unbounded wait yields an outcome");
        self.map_outcome(&o)
    }
    /// [`System::wait`] bounded by `timeout`; a timeout is an error for which `is_timeout()`
    /// holds and leaves the system untouched. A timeout too large to represent as an instant
    /// (e.g. `Duration::MAX`) is no limit.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now().checked_add(timeout);
        match self.inner.notifier.wait_outcome(deadline) {
            Some(o) => self.map_outcome(&o),
            None => Err(Error::system("hcs::System::Wait", &self.inner.id, Cause::Timeout)),
        }
    }
    /// A runtime-agnostic `Future` resolving like [`System::wait`].
    pub fn wait_async(&self) -> SystemWait {
        SystemWait {
            sys: self.inner.clone(),
            listener: None,
        }
    }

    fn map_outcome(&self, o: &Outcome) -> Result<()> {
        map_system_outcome(&self.inner.id, o)
    }

    /// How the system exited, once it has (`None` before, and after a close or disconnect
    /// without an exit).
    pub fn exit_status(&self) -> Option<SystemExit> {
        let sig = self.inner.notifier.exit_signal()?;
        let parsed: Option<SystemExitStatus> =
            sig.payload.as_deref().and_then(|p| serde_json::from_str(p).ok());
        let exit_type = parsed.as_ref().and_then(|p| p.exit_type);
        let status = match &parsed {
            Some(p) if sig.status.is_success() => HResult::from_i32(p.status),
            _ => sig.status,
        };
        let unexpected = status.is_in(sets::UNEXPECTED_EXIT) || exit_type == Some(ExitType::UnexpectedExit);
        Some(SystemExit {
            status,
            exit_type,
            unexpected,
        })
    }

    /// The exit error: "container not exited" before the system stopped; afterwards the wait
    /// error if any, else the unexpected-exit error if the exit was unexpected, else `None`.
    pub fn exit_error(&self) -> Option<Error> {
        let o = match self.inner.notifier.outcome() {
            None => return Some(Error::bare(Cause::NotExited)),
            Some(o) => o,
        };
        if let Err(e) = self.map_outcome(&o) {
            return Some(e);
        }
        match self.exit_status() {
            Some(x) if x.unexpected => {
                // V2 reports a crash as `S_OK` plus `ExitType: UnexpectedExit`: the error wraps
                // the payload's failing status, else the generation's unexpected-exit code.
                let code = if x.status.is_failure() {
                    x.status
                } else {
                    CodePair::UNEXPECTED_EXIT.pick(self.inner.driver.generation() == ApiGeneration::V2)
                };
                Some(Error::system(OP_WAIT, &self.inner.id, Cause::Hcs(code)))
            }
            _ => None,
        }
    }

    /// When `start` last succeeded.
    pub fn started_at(&self) -> Option<SystemTime> {
        *lock(&self.inner.started_at)
    }
    /// When the system stopped (exit, disconnect or close).
    pub fn stopped_at(&self) -> Option<SystemTime> {
        self.inner.notifier.stopped_at()
    }
    /// `true` once the object has been closed.
    pub fn is_closed(&self) -> bool {
        self.inner.handle.is_closed()
    }

    /// Closes the system: pending operations end promptly with an already-closed error, calls
    /// in progress finish, the callback is unregistered and the handle closed. Idempotent; on
    /// failure the object stays open and close can be retried.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

/// A dropped System is reachable by nobody: the library releases it (bounded retries of the
/// close, then the handle is forgotten and the registry entry removed, with a log line).
impl Drop for System {
    fn drop(&mut self) {
        self.inner.release();
    }
}

/// The future returned by [`System::wait_async`].
pub struct SystemWait {
    /// Two words in all: with 100,000 futures waiting on one exit, their size (memory streamed
    /// at the wake-up) costs more than the one pointer hop to the shared, cache-hot notifier.
    sys: Arc<SystemInner>,
    listener: Option<event_listener::EventListener>,
}

impl Future for SystemWait {
    type Output = Result<()>;
    /// The common re-poll (the system exited cleanly) is one load and inlines into the
    /// executor; everything else is `poll_slow`, out of line.
    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.sys.notifier.done_ok() {
            return Poll::Ready(Ok(()));
        }
        self.poll_slow(cx)
    }
}

impl SystemWait {
    #[inline(never)]
    fn poll_slow(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self;
        let notifier = &this.sys.notifier;
        if ready!(notifier.poll_done(&mut this.listener, cx)) {
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(notifier.with_outcome(|o| match o {
            Some(o) => map_system_outcome(&this.sys.id, o),
            None => unreachable!("ready only once an outcome is published"),
        }))
    }
}

impl std::fmt::Debug for SystemWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemWait").field("id", &self.sys.id).finish()
    }
}

/// Enumerates compute systems matching `query` (`hcs::GetComputeSystems`).
pub fn enumerate(driver: &dyn Driver, query: &ComputeSystemQuery) -> Result<Vec<ContainerProperties>> {
    const OP: &str = "hcs::GetComputeSystems";
    let q = serde_json::to_string(query).map_err(|e| Error::bare(Cause::Json(e.to_string())))?;
    let r = Target::system("").traced("enumerate_compute_systems", || {
        driver.enumerate_compute_systems(&q)
    });
    match r {
        Err(e) => Err(Error::op(OP, Cause::Hcs(e.code.to_win32_form()))
            .with_events(crate::error::events_from_document(e.document.as_deref()))),
        Ok(reply) if reply.value.trim().is_empty() => Err(Error::bare(Cause::UnexpectedValue)),
        Ok(reply) => serde_json::from_str(&reply.value).map_err(|e| Error::bare(Cause::Json(e.to_string()))),
    }
}

/// `HcsGetServiceProperties(query)`: the raw properties document.
pub fn service_properties(driver: &dyn Driver, query: &str) -> Result<String> {
    const OP: &str = "hcs::GetServiceProperties";
    match Target::system("").traced("get_service_properties", || driver.get_service_properties(query)) {
        Err(e) => Err(Error::op(OP, Cause::Hcs(e.code.to_win32_form()))
            .with_events(crate::error::events_from_document(e.document.as_deref()))),
        Ok(reply) if reply.value.trim().is_empty() => Err(Error::bare(Cause::UnexpectedValue)),
        Ok(reply) => Ok(reply.value),
    }
}

/// `HcsModifyServiceSettings(settings)`.
pub fn modify_service_settings(driver: &dyn Driver, settings: &str) -> Result<()> {
    const OP: &str = "hcs::ModifyServiceSettings";
    match Target::system("").traced("modify_service_settings", || {
        driver.modify_service_settings(settings)
    }) {
        Err(e) => Err(Error::op(OP, Cause::Hcs(e.code.to_win32_form()))
            .with_events(crate::error::events_from_document(e.document.as_deref()))),
        Ok(_) => Ok(()),
    }
}
