//! Live migration on a [`System`] (V2 only; design §10): a source-side or destination-side
//! [`Migration`] session that runs the HCS steps in order, the lossy [`MigrationEvents`] stream
//! of `LiveMigration` notifications, and the latched terminal outcome.
//!
//! # The steps
//!
//! | Side | Steps (each one driver call) |
//! |---|---|
//! | source | [`System::migration_source`] → [`Migration::initialize`] → ([`Migration::compatibility_info`]) → [`Migration::start`] (transport) → [`Migration::transfer`] → [`Migration::finalize`] (`Stop` on success, `Resume` to roll back) |
//! | destination | [`Migration::create_destination`] (create with `MigrationOptions`) → [`Migration::start`] (transport) → [`Migration::transfer`] → [`Migration::finalize`] (`Resume` on success, `Stop` to discard) |
//!
//! [`Migration::cancel`] may come at any point from any thread, on either side.
//!
//! # Events and the outcome
//!
//! Events arrive on HCS's callback thread. The System's event hub keeps the last
//! [`EVENT_BUFFER`] of them in a ring: a notification never waits for a reader, and a reader that
//! falls behind loses the oldest events (it can see how many through
//! [`MigrationEvents::missed`] and the gaps in [`MigrationNotification::seq`]). A new subscriber
//! starts at the latest event. The first terminal event (`MigrationDone`, `MigrationFailed`,
//! `MigrationRecoveryDone`) is latched apart from the ring and is never lost
//! ([`Migration::terminal_event`]); the authoritative outcome of the copy is what
//! [`Migration::transfer`] returned ([`Migration::state`]).
//!
//! # Cancel and close (better than hcsshim)
//!
//! hcsshim holds an exclusive per-system lock across the transfer and lets Cancel take no lock,
//! which races with Close. Here no lock is held across a driver call: every step, Cancel
//! included, takes a *use* of the handle (design C2), so Cancel runs while the transfer runs, and
//! a Cancel that comes after Close began gets an already-closed error instead of a closed handle.
//! A host without `HcsCancelLiveMigration` gets the transport shut down instead, which ends a
//! running transfer.

use crate::call::Target;
use crate::driver::{ApiGeneration, MigrationTransport};
use crate::error::{Cause, Error};
use crate::hresult::{sets, HResult};
use crate::sync::lock;
use crate::system::System;
use crate::system_inner::SystemInner;
use crate::timeouts::Timeouts;
use hcs_schema::migration::{
    decode_compatibility_info, CompatibilityInfo, MigrationFinalOperation, MigrationFinalizedOptions,
    MigrationInitializeOptions, MigrationOrigin, MigrationStartOptions, MigrationTransferOptions,
    StartOptions, COMPATIBILITY_INFO_QUERY,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::migration_events::{MigrationEvents, MigrationNotification, NextEvent, EVENT_BUFFER};

/// Errors of the migration API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MigrationError {
    /// Live migration is not available: a V1 driver, a driver without the capability, a host
    /// without the export, or a system that cannot migrate (a container).
    #[error("live migration is not supported: {0}")]
    NotSupported(String),
    /// The step is not valid in the session's current state.
    #[error("live migration step `{step}` is not valid in state {state:?}")]
    InvalidState {
        /// The step that was refused.
        step: &'static str,
        /// The state of the session at the time.
        state: MigrationState,
    },
    /// The migration was cancelled (by [`Migration::cancel`], or HCS reported it cancelled).
    #[error("live migration cancelled")]
    Cancelled,
    /// The system was closed.
    #[error("the compute system has been closed")]
    Closed,
    /// An HCS call failed (the error keeps the HRESULT and result document).
    #[error(transparent)]
    Hcs(#[from] Error),
    /// An I/O error on the transport.
    #[error("migration transport: {0}")]
    Transport(String),
}

impl MigrationError {
    fn from_call(e: Error) -> Self {
        if e.is_already_closed() {
            MigrationError::Closed
        } else if e.hresult().is_some_and(|c| c == HResult::E_NOTIMPL) || e.is_not_supported() {
            MigrationError::NotSupported(e.to_string())
        } else {
            MigrationError::Hcs(e)
        }
    }
}

/// Result of the migration API.
pub type MigrationResultT<T> = std::result::Result<T, MigrationError>;

/// The state of a [`Migration`] session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationState {
    /// Source: nothing done yet. Destination: created with migration options.
    Idle,
    /// Source: `HcsInitializeLiveMigrationOnSource` succeeded.
    Initialized,
    /// The transport is attached (source start, or destination start).
    Started,
    /// A transfer is running.
    Transferring,
    /// The transfer returned success: memory is copied.
    TransferCompleted,
    /// A cancel is in progress.
    Cancelling,
    /// Cancelled (HCS accepted the cancel, answered "invalid state" to it, or the transport was
    /// shut down on a host without the cancel export).
    Cancelled,
    /// A step failed.
    Failed,
    /// Finalized with the given operation; the session is over.
    Finalized(FinalOperation),
}

/// What finalize does with the VM on this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalOperation {
    /// Keep the VM running here (destination after success, source roll-back).
    Resume,
    /// Stop the VM here (source after success, destination discard).
    Stop,
}

impl FinalOperation {
    fn schema(self) -> MigrationFinalOperation {
        match self {
            FinalOperation::Resume => MigrationFinalOperation::Resume,
            FinalOperation::Stop => MigrationFinalOperation::Stop,
        }
    }
}

/// How a cancel took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelPath {
    /// `HcsCancelLiveMigration` succeeded.
    Hcs,
    /// HCS answered "invalid state": the transfer had already finished, nothing was left to
    /// abort (counts as cancelled, as in hcsshim).
    AlreadyFinished,
    /// The host has no cancel export: the transport was shut down instead.
    TransportShutdown,
    /// The session was already cancelled, finalized, or never started anything to cancel.
    NoOp,
}

struct Session {
    state: MigrationState,
    transport: Option<Arc<MigrationTransport>>,
}

/// A live-migration session on one side (design §10). `Send + Sync`: share it in an `Arc` to
/// [`Migration::cancel`] from another thread while [`Migration::transfer`] runs.
pub struct Migration {
    inner: Arc<SystemInner>,
    origin: MigrationOrigin,
    session: Mutex<Session>,
}

impl std::fmt::Debug for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migration")
            .field("id", &self.inner.id)
            .field("origin", &self.origin)
            .field("state", &self.state())
            .finish()
    }
}

fn check_v2(driver: &dyn crate::Driver) -> MigrationResultT<()> {
    if driver.generation() != ApiGeneration::V2 {
        return Err(MigrationError::NotSupported(format!(
            "driver `{}` speaks the V1 API (vmcompute.dll); live migration needs V2 (computecore.dll)",
            driver.name()
        )));
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(v: &T) -> MigrationResultT<String> {
    serde_json::to_string(v).map_err(|e| MigrationError::Hcs(Error::bare(Cause::Json(e.to_string()))))
}

impl System {
    /// Starts a source-side migration session for this (running VM) system. V2 only: a V1
    /// driver gets [`MigrationError::NotSupported`] and no driver call. Enables the migration
    /// events of the system (a driver without that call is tolerated: V2 registrations may
    /// carry the option already).
    pub fn migration_source(&self) -> MigrationResultT<Migration> {
        Migration::new(self.inner_arc(), MigrationOrigin::Source)
    }

    /// A subscription to this system's migration events (see [`MigrationEvents`]).
    pub fn migration_events(&self) -> MigrationEvents {
        self.inner_arc().migration.subscribe()
    }
}

impl Migration {
    fn new(inner: Arc<SystemInner>, origin: MigrationOrigin) -> MigrationResultT<Migration> {
        check_v2(&*inner.driver)?;
        let m = Migration {
            inner,
            origin,
            session: Mutex::new(Session {
                state: MigrationState::Idle,
                transport: None,
            }),
        };
        match m.call("enable_events", "enable_live_migration_events", |d, h| {
            d.enable_live_migration_events(h).map(crate::Reply::done)
        }) {
            Ok(()) => {}
            Err(MigrationError::NotSupported(_)) => {
                tracing::debug!(id = %m.inner.id, "driver has no separate migration-event enablement")
            }
            Err(e) => return Err(e),
        }
        Ok(m)
    }

    /// Creates the destination VM of a migration: `configuration` (the source's compute system
    /// document) is stamped with `VirtualMachine.MigrationOptions =
    /// {Origin:"Destination", MemoryTransport:"TCP", CompatibilityData}` and created (not
    /// started). V2 only, checked before any driver call. Returns the System and its session.
    pub fn create_destination(
        driver: Arc<dyn crate::Driver>,
        id: &str,
        configuration: &str,
        compatibility: CompatibilityInfo,
        timeouts: Timeouts,
    ) -> MigrationResultT<(System, Migration)> {
        check_v2(&*driver)?;
        let span = tracing::info_span!("hcs_migration", id, origin = "Destination", step = "create");
        let _e = span.enter();
        let mut doc: serde_json::Value = serde_json::from_str(configuration)
            .map_err(|e| MigrationError::Hcs(Error::bare(Cause::Json(e.to_string()))))?;
        let Some(vm) = doc.get_mut("VirtualMachine").filter(|v| v.is_object()) else {
            return Err(MigrationError::NotSupported(
                "only a VirtualMachine can migrate (the document has no VirtualMachine)".into(),
            ));
        };
        let options = MigrationInitializeOptions {
            compatibility_data: Some(compatibility),
            ..MigrationInitializeOptions::new(MigrationOrigin::Destination)
        };
        let options = serde_json::to_value(&options)
            .map_err(|e| MigrationError::Hcs(Error::bare(Cause::Json(e.to_string()))))?;
        if let Some(obj) = vm.as_object_mut() {
            obj.insert("MigrationOptions".into(), options);
        }
        let system = System::create_with(driver, id, &doc.to_string(), timeouts)?;
        let m = Migration::new(system.inner_arc(), MigrationOrigin::Destination)?;
        Ok((system, m))
    }

    /// Which side this session is.
    pub fn origin(&self) -> &MigrationOrigin {
        &self.origin
    }

    /// The current state.
    pub fn state(&self) -> MigrationState {
        lock(&self.session).state
    }

    /// The first terminal event HCS reported for this system, latched (never lost to the ring).
    pub fn terminal_event(&self) -> Option<Arc<MigrationNotification>> {
        self.inner.migration.terminal()
    }

    /// Waits up to `timeout` for a terminal event.
    pub fn wait_terminal_event(&self, timeout: Duration) -> Option<Arc<MigrationNotification>> {
        self.inner.migration.wait_terminal(timeout)
    }

    /// A subscription to this system's migration events.
    pub fn events(&self) -> MigrationEvents {
        self.inner.migration.subscribe()
    }

    /// One driver call with a handle use, in a span; `E_NOTIMPL` becomes `NotSupported`.
    fn call(
        &self,
        step: &'static str,
        call: &'static str,
        f: impl FnOnce(&dyn crate::Driver, crate::SystemHandle) -> crate::DriverResult<()>,
    ) -> MigrationResultT<()> {
        let span = tracing::info_span!("hcs_migration", id = %self.inner.id, origin = ?self.origin, step);
        let _e = span.enter();
        let op = "hcs::System::Migrate";
        let r = Target::system(&self.inner.id)
            .call_done(&self.inner.handle, op, call, |h| f(&*self.inner.driver, h));
        r.map_err(MigrationError::from_call)
    }

    /// Moves `from` → `to` if the state is one of `from`; a cancelled session is
    /// [`MigrationError::Cancelled`], any other state an invalid-state error.
    fn enter(&self, step: &'static str, from: &[MigrationState], to: MigrationState) -> MigrationResultT<()> {
        let mut s = lock(&self.session);
        if matches!(s.state, MigrationState::Cancelling | MigrationState::Cancelled) {
            return Err(MigrationError::Cancelled);
        }
        if !from.contains(&s.state) {
            return Err(MigrationError::InvalidState { step, state: s.state });
        }
        s.state = to;
        Ok(())
    }

    /// Settles a step: success → `ok`; failure → `Failed`, unless a cancel got there first
    /// (then the error is [`MigrationError::Cancelled`]).
    fn settle(
        &self,
        r: MigrationResultT<()>,
        ok: MigrationState,
        back: Option<MigrationState>,
    ) -> MigrationResultT<()> {
        let mut s = lock(&self.session);
        let cancelled = matches!(s.state, MigrationState::Cancelling | MigrationState::Cancelled);
        match r {
            Ok(()) if !cancelled => {
                s.state = ok;
                Ok(())
            }
            // The step finished although a cancel was in flight: the cancel decides the state.
            Ok(()) => Err(MigrationError::Cancelled),
            Err(_) if cancelled => Err(MigrationError::Cancelled),
            Err(MigrationError::NotSupported(m)) => {
                if let Some(b) = back {
                    s.state = b;
                }
                Err(MigrationError::NotSupported(m))
            }
            Err(e) => {
                s.state = MigrationState::Failed;
                Err(e)
            }
        }
    }

    /// Source: `HcsInitializeLiveMigrationOnSource` with `options` (its `Origin` is set to
    /// `Source`). Valid in `Idle`.
    pub fn initialize(&self, options: &MigrationInitializeOptions) -> MigrationResultT<()> {
        if self.origin != MigrationOrigin::Source {
            return Err(MigrationError::InvalidState {
                step: "initialize",
                state: self.state(),
            });
        }
        let mut options = options.clone();
        options.origin = Some(MigrationOrigin::Source);
        let json = to_json(&options)?;
        self.enter("initialize", &[MigrationState::Idle], MigrationState::Idle)?;
        let r = self.call("initialize", "initialize_live_migration_on_source", |d, h| {
            d.initialize_live_migration_on_source(h, &json)
        });
        self.settle(r, MigrationState::Initialized, Some(MigrationState::Idle))
    }

    /// Source: the compatibility data the destination needs (a PropertiesV3 query).
    pub fn compatibility_info(&self) -> MigrationResultT<CompatibilityInfo> {
        let text = self
            .inner
            .properties_raw("hcs::System::Migrate", COMPATIBILITY_INFO_QUERY)
            .map_err(MigrationError::from_call)?;
        decode_compatibility_info(&text).map_err(|e| {
            MigrationError::Hcs(Error::system(
                "hcs::System::Migrate",
                &self.inner.id,
                Cause::Json(e.to_string()),
            ))
        })
    }

    /// Attaches the transport: source `HcsStartLiveMigrationOnSource` (valid in `Initialized`),
    /// destination `HcsStartComputeSystem` with destination options (valid in `Idle`). The
    /// session keeps the transport until it ends (it is shut down by a cancel on a host without
    /// the cancel export, and dropped with the session).
    pub fn start(&self, transport: MigrationTransport, session_id: u32) -> MigrationResultT<()> {
        let transport = Arc::new(transport);
        let source = self.origin == MigrationOrigin::Source;
        let from = if source {
            MigrationState::Initialized
        } else {
            MigrationState::Idle
        };
        self.enter("start", &[from], from)?;
        lock(&self.session).transport = Some(transport.clone());
        let r = if source {
            let json = to_json(&MigrationStartOptions::session(session_id))?;
            self.call("start", "start_live_migration_on_source", |d, h| {
                d.start_live_migration_on_source(h, &json, &transport)
            })
        } else {
            let json = to_json(&StartOptions::migration_destination(session_id))?;
            self.call(
                "start",
                "start_compute_system_as_migration_destination",
                |d, h| d.start_compute_system_as_migration_destination(h, &json, &transport),
            )
        };
        self.settle(r, MigrationState::Started, Some(from))
    }

    /// `HcsStartLiveMigrationTransfer`: returns when the memory has been copied. Valid in
    /// `Started`. A [`Migration::cancel`] from another thread interrupts it; the transfer then
    /// returns [`MigrationError::Cancelled`].
    pub fn transfer(&self) -> MigrationResultT<()> {
        let json = to_json(&MigrationTransferOptions::new(self.origin.clone()))?;
        self.enter(
            "transfer",
            &[MigrationState::Started],
            MigrationState::Transferring,
        )?;
        let r = self.call("transfer", "start_live_migration_transfer", |d, h| {
            d.start_live_migration_transfer(h, &json)
        });
        self.settle(
            r,
            MigrationState::TransferCompleted,
            Some(MigrationState::Started),
        )
    }

    /// `HcsFinalizeLiveMigration` with `op`. Valid after the transfer completed, was cancelled or
    /// failed. Retries reconcile (as hcsshim does): finalizing again with the same operation is a
    /// no-op; `Stop` on a system that already exited is a no-op, `Resume` on one is an error;
    /// a failed finalize leaves the state as it was, so it can be retried.
    pub fn finalize(&self, op: FinalOperation) -> MigrationResultT<()> {
        let before = {
            let mut s = lock(&self.session);
            match s.state {
                MigrationState::Finalized(done) if done == op => return Ok(()),
                MigrationState::TransferCompleted | MigrationState::Cancelled | MigrationState::Failed => {}
                state => {
                    return Err(MigrationError::InvalidState {
                        step: "finalize",
                        state,
                    })
                }
            }
            if self.inner.notifier.exit_signal().is_some() {
                return match op {
                    FinalOperation::Stop => {
                        s.state = MigrationState::Finalized(op);
                        Ok(())
                    }
                    FinalOperation::Resume => Err(MigrationError::InvalidState {
                        step: "finalize(Resume) of a system that exited",
                        state: s.state,
                    }),
                };
            }
            s.state
        };
        let json = to_json(&MigrationFinalizedOptions::new(self.origin.clone(), op.schema()))?;
        let r = self.call("finalize", "finalize_live_migration", |d, h| {
            d.finalize_live_migration(h, &json)
        });
        let mut s = lock(&self.session);
        match r {
            Ok(()) => {
                s.state = MigrationState::Finalized(op);
                s.transport = None;
                Ok(())
            }
            Err(e) => {
                s.state = before;
                Err(e)
            }
        }
    }

    /// Cancels the migration, from any thread, at any point; idempotent. A running transfer is
    /// interrupted (it returns [`MigrationError::Cancelled`]). "Invalid state" from HCS (the
    /// transfer had finished) counts as cancelled. On a host without `HcsCancelLiveMigration`
    /// the transport is shut down instead, which ends a running transfer. Never uses a closed
    /// handle: after Close began, the answer is [`MigrationError::Closed`].
    pub fn cancel(&self) -> MigrationResultT<CancelPath> {
        let (previous, transport) = {
            let mut s = lock(&self.session);
            match s.state {
                MigrationState::Cancelled
                | MigrationState::Cancelling
                | MigrationState::Finalized(_)
                | MigrationState::Idle => return Ok(CancelPath::NoOp),
                state => {
                    s.state = MigrationState::Cancelling;
                    (state, s.transport.clone())
                }
            }
        };
        let json = to_json(&MigrationTransferOptions::new(self.origin.clone()))?;
        let r = self.call("cancel", "cancel_live_migration", |d, h| {
            d.cancel_live_migration(h, &json)
        });
        let mut s = lock(&self.session);
        match r {
            Ok(()) => {
                s.state = MigrationState::Cancelled;
                Ok(CancelPath::Hcs)
            }
            Err(MigrationError::Hcs(e))
                if e.hresult()
                    .is_some_and(|c| c.to_win32_form().is_in(sets::INVALID_STATE)) =>
            {
                s.state = MigrationState::Cancelled;
                Ok(CancelPath::AlreadyFinished)
            }
            Err(MigrationError::NotSupported(m)) => {
                tracing::debug!(id = %self.inner.id, reason = %m, "no HcsCancelLiveMigration: shutting the transport down");
                match transport {
                    Some(t) => {
                        t.shutdown();
                        s.state = MigrationState::Cancelled;
                        Ok(CancelPath::TransportShutdown)
                    }
                    None => {
                        s.state = previous;
                        Err(MigrationError::NotSupported(m))
                    }
                }
            }
            Err(e) => {
                s.state = if matches!(e, MigrationError::Closed) {
                    previous
                } else {
                    MigrationState::Failed
                };
                Err(e)
            }
        }
    }
}

impl Drop for Migration {
    /// A session dropped before it was finalized leaves the migration to HCS as it is (cancel and
    /// finalize are owed on both sides, as in hcsshim): logged, nothing is called.
    fn drop(&mut self) {
        let state = lock(&self.session).state;
        if !matches!(state, MigrationState::Idle | MigrationState::Finalized(_))
            && !self.inner.handle.is_closed()
        {
            tracing::warn!(id = %self.inner.id, ?state, "live-migration session dropped before finalize");
        }
    }
}
