//! The shared core of one compute-system object: its handle, notifier, callback registration,
//! timeouts and cached properties, and the operations every public [`crate::System`] method
//! and [`crate::Process::kill`]'s second handle are built from (stop with the swallow set, the
//! pending-operation path, properties, open). It sits below both `system.rs` and `process.rs`,
//! so neither has to import the other's internals.

use crate::call::Target;
use crate::driver::{Driver, DriverResult, Failure, NotificationKind, NotifyContext, SystemHandle};
use crate::error::{Cause, Error, Result};
use crate::guard::HandleCell;
use crate::hresult::{sets, HResult};
use crate::migration_events::EventHub;
use crate::notifier::{Arrival, Notifier, Outcome, PendingEnd};
use crate::notify::Sink;
use crate::object::{self, Registration};
use crate::sync::lock;
use crate::timeouts::{CallOptions, Timeouts};
use hcs_schema::{ContainerProperties, PropertyQuery, PropertyType};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Default, Clone)]
pub(crate) struct Cached {
    pub(crate) os: String,
    pub(crate) typ: String,
    pub(crate) owner: String,
}

/// When a pending operation's wait gives up, and the limit that produced it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    /// The instant the wait gives up.
    pub at: Instant,
    /// The effective timeout (the shortest of the nested limits).
    pub limit: Duration,
}

/// The shared state of one compute-system object.
pub(crate) struct SystemInner {
    pub(crate) id: String,
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) handle: HandleCell<SystemHandle>,
    pub(crate) notifier: Arc<Notifier>,
    pub(crate) reg: Registration,
    pub(crate) timeouts: Mutex<Timeouts>,
    pub(crate) cached: Mutex<Cached>,
    pub(crate) started_at: Mutex<Option<SystemTime>>,
    /// Live-migration events (design §10), fed by the sink.
    pub(crate) migration: Arc<EventHub>,
}

struct SystemSink(Arc<Notifier>, Arc<EventHub>);

impl SystemSink {
    fn deliver(&self, kind: NotificationKind, status: HResult, payload: Option<&str>, arrival: Arrival) {
        if kind == NotificationKind::LiveMigration {
            self.1.push(payload);
            return;
        }
        self.0.on_notification(
            NotificationKind::SystemExited,
            kind,
            status,
            payload,
            arrival,
            &|sig| Some(Outcome::SystemExit(sig.clone())),
        );
    }
}

impl Sink for SystemSink {
    fn notify(&self, kind: NotificationKind, status: HResult, payload: Option<&str>) {
        self.deliver(kind, status, payload, Arrival::Live)
    }
    fn replay(&self, kind: NotificationKind, status: HResult, payload: Option<&str>) {
        self.deliver(kind, status, payload, Arrival::Replayed)
    }
}

pub(crate) const OP_CREATE: &str = "hcs::CreateComputeSystem";
pub(crate) const OP_OPEN: &str = "hcs::OpenComputeSystem";
pub(crate) const OP_WAIT: &str = "hcs::System::waitBackground";

impl SystemInner {
    /// The object calls are about.
    pub(crate) fn target(&self) -> Target<'_> {
        Target::system(&self.id)
    }

    pub(crate) fn new(driver: Arc<dyn Driver>, id: &str, timeouts: Timeouts) -> Arc<Self> {
        let notifier = Arc::new(Notifier::new());
        let migration = Arc::new(EventHub::default());
        let reg = Registration::new(Arc::new(SystemSink(notifier.clone(), migration.clone())));
        Arc::new(SystemInner {
            id: id.to_owned(),
            driver,
            handle: HandleCell::new(None),
            notifier,
            reg,
            timeouts: Mutex::new(timeouts),
            cached: Mutex::new(Cached::default()),
            started_at: Mutex::new(None),
            migration,
        })
    }

    pub(crate) fn register(&self, h: SystemHandle) -> Result<(), Failure> {
        self.reg.register(|ctx| {
            self.target()
                .traced_plain("register_compute_system_callback", || {
                    self.driver.register_compute_system_callback(h, ctx)
                })
        })
    }

    /// Close: stop new uses, wait for calls in progress, unregister, close the handle, latch.
    pub(crate) fn close(&self) -> Result<()> {
        let r = self.close_handle();
        if r.is_ok() {
            self.migration.close();
        }
        r
    }

    fn close_handle(&self) -> Result<()> {
        object::close(
            &self.handle,
            &self.notifier,
            &self.reg,
            |_| {},
            |cb| {
                self.target()
                    .traced_plain("unregister_compute_system_callback", || {
                        self.driver.unregister_compute_system_callback(cb)
                    })
            },
            |h| {
                self.target()
                    .traced_plain("close_compute_system", || self.driver.close_compute_system(h))
            },
            |h, ctx| {
                self.target()
                    .traced_plain("register_compute_system_callback", || {
                        self.driver.register_compute_system_callback(h, ctx)
                    })
            },
        )
        .map_err(|e| Error::system("hcs::System::Close", &self.id, e))
    }

    /// Releases this object when nobody else can reach it (see [`object::release`]).
    pub(crate) fn release(&self) {
        let what = format!("compute system {}", self.id);
        object::release(&self.handle, &self.notifier, &self.reg, &what, || self.close());
        self.migration.close();
    }

    /// After a failed create: terminates the system HCS made, unless the failure says it is
    /// gone already (not found, already stopped, exited during the create).
    pub(crate) fn terminate_unless_gone(&self, e: &Error) {
        let gone = e.is_not_found() || e.is_already_stopped() || e.cause() == &Cause::UnexpectedContainerExit;
        if !gone {
            if let Err(t) = self.terminate() {
                tracing::warn!(id = %self.id, error = %t, "could not terminate a system whose create failed");
            }
        }
    }

    /// Terminates through this object, treating the stop allow-list as success.
    pub(crate) fn terminate(&self) -> Result<()> {
        self.stop("hcs::System::Terminate", "terminate_compute_system", |d, h| {
            d.terminate_compute_system(h, "")
        })
    }

    pub(crate) fn stop(
        &self,
        op: &'static str,
        call: &'static str,
        f: impl FnOnce(&dyn Driver, SystemHandle) -> DriverResult<()>,
    ) -> Result<()> {
        if self.notifier.outcome().is_some() {
            return Ok(());
        }
        match self
            .target()
            .call(&self.handle, op, call, |h| f(&*self.driver, h))
        {
            Ok(_) => Ok(()),
            // A closed object is stopped as far as its owner is concerned.
            Err(e) if e.is_already_closed() => Ok(()),
            Err(e) if e.hresult().is_some_and(|c| c.is_in(sets::STOP_SWALLOW)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The wait limit of one pending operation: nested deadlines, the shortest wins. A per-call
    /// timeout narrows the System's timeout for the operation; it never extends it.
    pub(crate) fn deadline(&self, opts: &CallOptions, default: Duration) -> Deadline {
        let limit = opts.timeout.map_or(default, |t| t.min(default));
        let at = Instant::now()
            .checked_add(limit)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        Deadline { at, limit }
    }

    /// The pending-operation path shared by Start, Pause, Resume and Save (and the completion
    /// wait of Create).
    pub(crate) fn wait_armed(
        &self,
        op: &'static str,
        kind: NotificationKind,
        seq: u64,
        deadline: Deadline,
        opts: &CallOptions,
    ) -> Result<()> {
        if let Some(t) = &opts.cancel {
            let w: Arc<dyn crate::timeouts::Wake> = self.notifier.clone();
            t.watch(Arc::downgrade(&w));
        }
        let cancelled = || opts.cancel.as_ref().is_some_and(|t| t.is_cancelled());
        let mut end = self.notifier.wait_pending(seq, true, deadline.at, &cancelled);
        let gave_up = matches!(end, PendingEnd::TimedOut | PendingEnd::Cancelled);
        if let Some((status, payload)) = self.notifier.finish(seq, gave_up) {
            end = PendingEnd::Completed(status, payload); // the completion won the race
        }
        let cause = match end {
            PendingEnd::Completed(status, payload) => {
                if status.is_success() {
                    return Ok(());
                }
                let e = Error::bare(Cause::Hcs(status.to_win32_form()))
                    .with_events(crate::error::events_from_document(payload.as_deref()));
                return Err(Error::system(op, &self.id, e));
            }
            PendingEnd::Exited => Cause::UnexpectedContainerExit,
            PendingEnd::Disconnected => Cause::ServiceDisconnected,
            PendingEnd::Closed => Cause::AlreadyClosed,
            PendingEnd::TimedOut => Cause::Timeout,
            PendingEnd::Cancelled => Cause::Cancelled,
        };
        if matches!(cause, Cause::Timeout | Cause::Cancelled) {
            if let Err(f) = self.driver.cancel_pending(self.reg.ctx(), kind) {
                tracing::debug!(id = %self.id, %kind, hresult = %f.code, "driver could not cancel the pending operation");
            }
        }
        let timed_out = cause == Cause::Timeout;
        let e = Error::system(op, &self.id, cause);
        if timed_out {
            // The error names the limit that applied (design §7).
            return Err(e.with_detail(format!("timed out after {:?} waiting for {kind}", deadline.limit)));
        }
        Err(e)
    }

    pub(crate) fn run_pending(
        &self,
        op: &'static str,
        call: &'static str,
        kind: NotificationKind,
        timeout: Duration,
        opts: &CallOptions,
        f: impl FnOnce(&dyn Driver, SystemHandle, NotifyContext) -> DriverResult<()>,
    ) -> Result<()> {
        let seq = self.notifier.arm(kind);
        let deadline = self.deadline(opts, timeout);
        let r = self
            .target()
            .call(&self.handle, op, call, |h| f(&*self.driver, h, self.reg.ctx()));
        match r {
            // Pending (design §2.3: only `Reply::pending` says it): the result document's
            // events are discarded (Q13) and the armed completion decides.
            Ok(reply) if reply.pending => self.wait_armed(op, kind, seq, deadline, opts),
            Ok(_) => {
                self.notifier.disarm(seq);
                Ok(())
            }
            Err(e) => {
                self.notifier.disarm(seq);
                Err(e)
            }
        }
    }

    pub(crate) fn properties_raw(&self, op: &'static str, query: &str) -> Result<String> {
        let value = self
            .target()
            .call_done(&self.handle, op, "get_compute_system_properties", |h| {
                self.driver.get_compute_system_properties(h, query)
            })?;
        if value.trim().is_empty() {
            return Err(Error::bare(Cause::UnexpectedValue));
        }
        Ok(value)
    }

    pub(crate) fn properties(&self, op: &'static str, types: &[PropertyType]) -> Result<ContainerProperties> {
        let query = serde_json::to_string(&PropertyQuery {
            property_types: types.to_vec(),
        })
        .map_err(|e| Error::bare(Cause::Json(e.to_string())))?;
        let json = self.properties_raw(op, &query)?;
        serde_json::from_str(&json).map_err(|e| Error::system(op, &self.id, Cause::Json(e.to_string())))
    }

    pub(crate) fn load_cached(&self) -> Result<()> {
        let p = self.properties("hcs::System::Properties", &[])?;
        let mut c = lock(&self.cached);
        c.typ = p.system_type.to_lowercase();
        c.os = p.runtime_os_type.to_lowercase();
        c.owner = p.owner.to_lowercase();
        if c.os.is_empty() && c.typ == "container" {
            c.os = "windows".into();
        }
        Ok(())
    }

    /// Open → register → properties, for `System::open` and `Process::kill`'s second handle.
    pub(crate) fn open(driver: Arc<dyn Driver>, id: &str, timeouts: Timeouts) -> Result<Arc<Self>> {
        let r = Target::system(id).traced("open_compute_system", || driver.open_compute_system(id));
        let reply = match r {
            Ok(r) => r,
            Err(e) => return Err(Error::system(OP_OPEN, id, &e)),
        };
        let inner = SystemInner::new(driver, id, timeouts);
        inner.handle.set(reply.value);
        if let Err(e) = inner.register(reply.value) {
            let err = Error::system(OP_OPEN, id, Failure::new(e.code));
            inner.release();
            return Err(err);
        }
        if let Err(e) = inner.load_cached() {
            inner.release();
            return Err(e);
        }
        Ok(inner)
    }
}

/// What a wait on a System reports for an outcome.
#[inline]
pub(crate) fn map_system_outcome(id: &str, o: &Outcome) -> Result<()> {
    match o {
        Outcome::SystemExit(sig) => {
            if o.waits_ok() {
                Ok(())
            } else {
                Err(Error::system(OP_WAIT, id, Cause::Hcs(sig.status.to_win32_form())))
            }
        }
        Outcome::Disconnected => Err(Error::system(OP_WAIT, id, Cause::ServiceDisconnected)),
        Outcome::Closed => Err(Error::bare(Cause::AlreadyClosed)),
        Outcome::ProcessExit { .. } => Ok(()),
    }
}
