//! [`ComputeCoreDriver`]: the V2 [`hcs::Driver`] over a [`ComputeCoreTable`].

use crate::table::{ComputeCoreTable, SystemOperationFn, HCS_EVENT};
use hcs::{
    ApiGeneration, CallbackHandle, Driver, DriverResult, Failure, HResult, MigrationTransport,
    NotificationKind, NotifyContext, ProcessHandle, ProcessInfo, Reply, SystemHandle,
};
use hcs_ffi::{
    self as ffi, invalid_utf16, opt_ptr, wide_opt, HandleGuard, OutString, StdioMapper, SystemStdio,
    WideCString, HCS_OPERATION, HCS_PROCESS, HCS_PROCESS_INFORMATION, HCS_SYSTEM, HRESULT, INFINITE,
    NULL_HANDLE,
};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

const DLL: &str = "computecore.dll";
/// `GENERIC_ALL`, the access hcsshim requests when opening systems and processes.
pub const GENERIC_ALL: u32 = 0x1000_0000;
/// `HcsEventOptionEnableLiveMigrationEvents` (not in windows-sys).
pub const EVENT_OPTION_ENABLE_LIVE_MIGRATION_EVENTS: i32 = 4;
/// `HcsEventOptionNone`.
pub const EVENT_OPTION_NONE: i32 = 0;

/// The V2 driver.
///
/// * **Asynchronous calls** (create, start, pause, resume, save): an operation is created with a
///   completion callback whose context is an internal operation id (never a pointer), the call is
///   made, and the driver replies [`Reply::pending`]. When HCS completes the operation, the
///   completion callback reads `HcsGetOperationResult` and dispatches the completion kind the
///   lifecycle expects (`SystemCreateCompleted`, `SystemStartCompleted`, ...) to the
///   [`NotifyContext`] of the call, with status = the operation's HRESULT and payload = its result
///   document. Shutdown and terminate are submitted the same way without a completion kind
///   (hcsshim's `submitOperation`): they reply pending and the exit arrives as `SystemExited`.
/// * **Synchronous calls** (properties, modify, enumerate, process calls, live-migration steps)
///   wait inside the driver call with `HcsWaitForOperationResult(INFINITE)`; that is the one HCS
///   call of the V2 driver. A failing call is reported with `HcsGetOperationResult`'s document.
/// * **Operation handles** are owned by the driver and closed exactly once, after HCS is done
///   with them: synchronous ones when the wait returned; asynchronous ones by their completion
///   callback, from within the callback (documented as allowed), once no
///   [`Driver::cancel_pending`] call is still using them. No other thread ever closes a started
///   asynchronous operation, so no close runs concurrently with its callback; the call's input
///   strings live until that close. Completion callbacks hold copies of the few function
///   pointers they need, never the table, and the DLL is never unloaded (design FFI §6).
/// * **Notifications**: `HcsSetComputeSystemCallback`/`HcsSetProcessCallback` with an event
///   callback translating V2 events with [`NotificationKind::from_v2`] and passing `EventData` as
///   the payload (exit code and exit type live there in V2). The context handed to HCS is the
///   registration's id (the [`CallbackHandle`]'s value, process-wide unique, never a pointer);
///   the event callback looks the registration up and dispatches to its [`NotifyContext`].
/// * **Unregistration**: V2 has no unregister call (closing the handle unregisters), so each
///   registration has a gate: the event callback counts itself in while it dispatches, and
///   `unregister_*_callback` marks the registration dead and waits until no callback for it is
///   dispatching any more (a callback of the same registration running on the calling thread
///   is not waited for). Events HCS still delivers for a dead registration are dropped. The
///   handle itself is still closed only by `close_*`, which also forgets registrations that
///   were never unregistered.
/// * **Create-process recovery (F32)**: when the create-process *wait* fails but HCS produced a
///   process handle, the driver recovers the process information with `HcsGetProcessInfo`; if
///   that fails too, it closes the process and reports the original failure. It never re-queries
///   after a successful wait.
pub struct ComputeCoreDriver {
    table: Table,
    stdio: Box<dyn StdioMapper>,
}

/// The driver's table. Dropping it on a thread inside an HCS callback is counted
/// ([`tables_dropped_in_callbacks`]): a callback must never hold the last reference.
struct Table(ComputeCoreTable);

static TABLES_DROPPED_IN_CALLBACKS: AtomicU64 = AtomicU64::new(0);

impl Drop for Table {
    fn drop(&mut self) {
        if ffi::callback::in_callback() {
            TABLES_DROPPED_IN_CALLBACKS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl std::ops::Deref for Table {
    type Target = ComputeCoreTable;
    fn deref(&self) -> &ComputeCoreTable {
        &self.0
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How many driver tables were dropped on a thread running an HCS callback (all drivers of the
/// process). Always 0 unless something a callback runs (a lifecycle notification handler) drops
/// the last driver: completion callbacks hold no table reference (issue 13 item 6).
pub fn tables_dropped_in_callbacks() -> u64 {
    TABLES_DROPPED_IN_CALLBACKS.load(Ordering::SeqCst)
}

impl std::fmt::Debug for ComputeCoreDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputeCoreDriver")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

// ------------------------------------------------------------------------------------------
// Pending operations (process-wide: the completion trampoline finds them by id)

/// The table entries a pending operation needs, copied out of the table: no pending operation
/// (and so no completion callback) holds a table reference, so the last one is never dropped on
/// an HCS thread. The addresses stay valid for the rest of the process because the DLL is never
/// unloaded (design FFI §6); tables of fake functions hold plain Rust functions.
#[derive(Clone, Copy)]
struct OpFns {
    get_operation_result: crate::table::GetOperationResultFn,
    close_operation: crate::table::CloseOperationFn,
    free_string: ffi::FreeStringFn,
}

/// How long a completion callback waits for `cancel_pending` calls still using its operation
/// before it gives up and leaks the operation handle rather than close it under them.
const CANCEL_DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// An asynchronous operation in flight.
///
/// Closing (issue 13 item 7): an operation whose call succeeded is closed by its completion
/// callback only, from within the callback (which HCS documents as allowed) and never
/// concurrently with it: the submitting thread and `cancel_pending` never close it. An
/// operation whose call failed is never completed by HCS; the submitter closes it. Either way
/// the close first waits until no `cancel_pending` call is using the operation ([`Self::users`]).
struct PendingOp {
    fns: OpFns,
    op: usize,
    target: Option<(NotifyContext, NotificationKind)>,
    name: &'static str,
    /// The call's input strings: HCS may read them until the operation completes (item 9).
    _inputs: Vec<WideCString>,
    /// `cancel_pending` calls using the operation right now.
    users: Mutex<usize>,
    idle: Condvar,
}

impl PendingOp {
    /// Counts a `cancel_pending` call in (only while the operation is in the pending map, whose
    /// lock the caller holds, so the completion has not taken it out yet).
    fn enter(self: &Arc<Self>) -> Arc<Self> {
        *self.users.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.clone()
    }

    fn leave(&self) {
        let mut u = self.users.lock().unwrap_or_else(|p| p.into_inner());
        *u -= 1;
        if *u == 0 {
            self.idle.notify_all();
        }
    }

    /// Closes the operation, exactly once: by its completion callback, or by the submitter when
    /// the call failed. Waits (bounded) until no cancel call uses it; if one still does after
    /// [`CANCEL_DRAIN_LIMIT`], the handle is leaked instead of closed under it.
    fn close(&self) {
        let u = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let (u, _) = self
            .idle
            .wait_timeout_while(u, CANCEL_DRAIN_LIMIT, |u| *u > 0)
            .unwrap_or_else(|p| p.into_inner());
        if *u > 0 {
            tracing::warn!(
                op = self.name,
                "operation still used by a cancel call; its handle is leaked"
            );
            return;
        }
        drop(u);
        // SAFETY: we created this operation and close it once (see the type's doc): HCS is
        // done with it (we are its completion callback, or the call that would have started
        // it failed) and no cancel call is using it any more.
        unsafe { (self.fns.close_operation)(self.op as HCS_OPERATION) };
    }
}

/// Closes a completed operation when dropped: at the end of its completion callback, also when
/// dispatching panicked (the panic is then contained by the trampoline).
struct CloseOnExit(Arc<PendingOp>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Counts a cancel call out when dropped.
struct Using(Arc<PendingOp>);

impl Drop for Using {
    fn drop(&mut self) {
        self.0.leave();
    }
}

static NEXT_OP: AtomicU64 = AtomicU64::new(1);

fn pending() -> MutexGuard<'static, HashMap<u64, Arc<PendingOp>>> {
    static PENDING: OnceLock<Mutex<HashMap<u64, Arc<PendingOp>>>> = OnceLock::new();
    let m = PENDING.get_or_init(|| Mutex::new(HashMap::new()));
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Number of asynchronous operations whose completion has not arrived yet (all drivers).
pub fn pending_operations() -> usize {
    pending().len()
}

/// The `HCS_OPERATION_COMPLETION` of every asynchronous operation. `context` is the internal
/// operation id; an unknown id is a no-op. Reads the result, dispatches it and closes the
/// operation (see [`ComputeCoreDriver`]). Does not unwind: everything, including the log of a
/// panic and the drop of its payload, runs inside [`ffi::callback::contain`].
///
/// # Safety
///
/// Called by HCS with an operation it completed; `context` is never dereferenced.
pub unsafe extern "system" fn operation_completion_trampoline(
    operation: HCS_OPERATION,
    context: *const c_void,
) {
    ffi::callback::contain("computecore operation completion", || {
        let id = context as usize as u64;
        let Some(entry) = pending().remove(&id) else {
            tracing::trace!(id, "completion for an unknown operation id ignored");
            return;
        };
        // Closed when this closure ends, within the callback, once no cancel call uses it
        // (never concurrently with the callback from another thread); the input strings go with
        // the entry.
        let entry = CloseOnExit(entry);
        let entry = &*entry.0;
        if entry.op != operation as usize {
            tracing::warn!(
                id,
                "completion carries a different operation handle than the one registered"
            );
        }
        let mut doc = OutString::new(entry.fns.free_string);
        // SAFETY: the operation is ours, still open (only this callback closes it), and
        // completed.
        let hr = unsafe { (entry.fns.get_operation_result)(entry.op as HCS_OPERATION, doc.as_out()) };
        let doc = doc.take().unwrap_or_else(Some);
        let hr = HResult::from_i32(hr);
        tracing::debug!(op = entry.name, dll = DLL, hresult = %hr, "HCS operation completed");
        match entry.target {
            Some((ctx, kind)) => {
                hcs::dispatch(ctx.raw(), kind, hr, doc.as_deref());
            }
            None if hr.is_failure() => {
                tracing::warn!(op = entry.name, hresult = %hr, "submitted HCS operation failed");
            }
            None => {}
        }
    });
}

// ------------------------------------------------------------------------------------------
// Event registrations (process-wide: the event trampoline finds them by id)

/// Which kind of handle a registration was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    System(u64),
    Process(u64),
}

/// In-flight bookkeeping of one registration.
#[derive(Default)]
struct GateState {
    /// `false` once unregistered (or its handle closed): events are dropped.
    dead: bool,
    /// Event callbacks of this registration dispatching right now.
    in_flight: usize,
}

/// One event registration: where its events go, and its gate.
struct Registration {
    ctx: NotifyContext,
    owner: Owner,
    gate: Mutex<GateState>,
    drained: Condvar,
}

impl Registration {
    fn gate(&self) -> MutexGuard<'_, GateState> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a callback in; `false` when the registration is dead (drop the event).
    fn enter(&self) -> bool {
        let mut g = self.gate();
        if g.dead {
            return false;
        }
        g.in_flight += 1;
        true
    }

    fn leave(&self) {
        let mut g = self.gate();
        g.in_flight -= 1;
        if g.in_flight == 0 {
            self.drained.notify_all();
        }
    }

    /// Marks the registration dead and waits until only `own` callbacks (those running on the
    /// calling thread, which cannot return first) are still dispatching.
    fn kill_and_drain(&self, own: usize) {
        let mut g = self.gate();
        g.dead = true;
        while g.in_flight > own {
            g = self.drained.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Counts a callback out when dropped (also on unwind).
struct InFlight<'a>(&'a Registration);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        DISPATCHING.with(|d| {
            let mut d = d.borrow_mut();
            if let Some(i) = d.iter().rposition(|&id| std::ptr::eq(id, self.0)) {
                d.swap_remove(i);
            }
        });
        self.0.leave();
    }
}

thread_local! {
    /// The registrations whose callbacks are dispatching on this thread (re-entrant unregister).
    static DISPATCHING: std::cell::RefCell<Vec<*const Registration>> = const { std::cell::RefCell::new(Vec::new()) };
}

static NEXT_REGISTRATION: AtomicU64 = AtomicU64::new(1);

fn registrations() -> MutexGuard<'static, HashMap<u64, Arc<Registration>>> {
    static REGISTRATIONS: OnceLock<Mutex<HashMap<u64, Arc<Registration>>>> = OnceLock::new();
    let m = REGISTRATIONS.get_or_init(|| Mutex::new(HashMap::new()));
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ends registration `id`: no event is dispatched for it any more once this returns, and the
/// callbacks already dispatching for it (on other threads) have returned. Unknown ids: no-op.
fn unregister_events(id: u64) {
    let Some(reg) = registrations().remove(&id) else {
        tracing::debug!(id, "unregister of an unknown computecore registration ignored");
        return;
    };
    let own = DISPATCHING.with(|d| {
        d.borrow()
            .iter()
            .filter(|&&r| std::ptr::eq(r, Arc::as_ptr(&reg)))
            .count()
    });
    reg.kill_and_drain(own);
}

/// Forgets the registrations made on `owner` (its handle was closed, which unregisters in V2).
fn forget_registrations(owner: Owner) {
    let gone: Vec<Arc<Registration>> = {
        let mut m = registrations();
        let ids: Vec<u64> = m
            .iter()
            .filter(|(_, r)| r.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        ids.iter().filter_map(|id| m.remove(id)).collect()
    };
    for reg in gone {
        reg.gate().dead = true;
    }
}

/// Number of live event registrations (all drivers).
pub fn live_registrations() -> usize {
    registrations().len()
}

/// The `HCS_EVENT_CALLBACK` of every system and process registration: finds the registration
/// by the id in `context` (an unknown or unregistered one drops the event), translates the V2
/// event with [`NotificationKind::from_v2`] and dispatches it to the registration's
/// [`NotifyContext`] with `EventData` as the payload. No lock is held while dispatching. Does
/// not unwind (the body runs inside [`ffi::callback::contain`]).
///
/// # Safety
///
/// `event` is null or points to an `HCS_EVENT` valid for the call (HCS's guarantee), whose
/// `EventData` is null or a valid string. `context` is never dereferenced.
pub unsafe extern "system" fn event_trampoline(event: *const HCS_EVENT, context: *const c_void) {
    ffi::callback::contain("computecore event", || {
        if event.is_null() {
            return;
        }
        let id = context as usize as u64;
        let Some(reg) = registrations().get(&id).cloned() else {
            tracing::trace!(id, "event for an unknown computecore registration dropped");
            return;
        };
        if !reg.enter() {
            tracing::trace!(id, "event for an unregistered computecore registration dropped");
            return;
        }
        DISPATCHING.with(|d| d.borrow_mut().push(Arc::as_ptr(&reg)));
        let _in_flight = InFlight(&reg);
        // SAFETY: non-null and valid for this call (caller's guarantee); we copy it out.
        let ev = unsafe { *event };
        // SAFETY: EventData is null or a valid NUL-terminated string owned by HCS.
        let payload = unsafe { ffi::copy_callback_str(ev.EventData) };
        hcs::dispatch(
            reg.ctx.raw(),
            NotificationKind::from_v2(ev.Type as u32),
            HResult::S_OK,
            payload.as_deref(),
        );
    });
}

// ------------------------------------------------------------------------------------------
// RAII

/// A synchronous operation (no callback), closed exactly once on drop.
struct OperationGuard<'a> {
    table: &'a ComputeCoreTable,
    op: HCS_OPERATION,
}

impl<'a> OperationGuard<'a> {
    fn new(table: &'a ComputeCoreTable) -> Result<Self, Failure> {
        // SAFETY: no context, no callback: HCS never calls back for this operation.
        let op = unsafe { (table.create_operation)(std::ptr::null(), None) };
        if op.is_null() {
            return Err(Failure::new(HResult::E_OUTOFMEMORY));
        }
        Ok(OperationGuard { table, op })
    }
}

impl Drop for OperationGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: our operation; the call using it has returned and any wait has finished.
        unsafe { (self.table.close_operation)(self.op) };
    }
}

/// A guard for a handle a call may produce, closed again with `close` (the table's close export
/// for that kind of handle) on any path that does not hand it out.
fn handle_guard(close: unsafe extern "system" fn(*mut c_void)) -> HandleGuard<impl FnMut(*mut c_void)> {
    HandleGuard::new(move |raw| {
        // SAFETY: `close` is the table's close export for this kind of handle; HCS handed us
        // `raw` during the call, nobody else has it, and the guard closes it once.
        unsafe { close(raw) }
    })
}

/// A process-information wait: its HRESULT, document and converted process information.
type ProcessOutcome = (HResult, Option<String>, Result<ProcessInfo, Failure>);

fn sys(h: SystemHandle) -> HCS_SYSTEM {
    h.raw() as usize as HCS_SYSTEM
}

fn proc_(h: ProcessHandle) -> HCS_PROCESS {
    h.raw() as usize as HCS_PROCESS
}

// ------------------------------------------------------------------------------------------

impl ComputeCoreDriver {
    /// A driver over `table` with the platform's stdio mapping.
    pub fn new(table: ComputeCoreTable) -> Arc<Self> {
        Self::with_stdio(table, SystemStdio)
    }

    /// A driver over `table` whose stdio handles are converted by `stdio`.
    pub fn with_stdio(table: ComputeCoreTable, stdio: impl StdioMapper) -> Arc<Self> {
        Arc::new(ComputeCoreDriver {
            table: Table(table),
            stdio: Box::new(stdio),
        })
    }

    /// Loads `computecore.dll` from System32 and builds the driver.
    pub fn load() -> Result<Arc<Self>, ffi::LoadError> {
        ComputeCoreTable::load().map(Self::new)
    }

    /// The function table.
    pub fn table(&self) -> &ComputeCoreTable {
        &self.table
    }

    fn out(&self) -> OutString {
        OutString::new(self.table.free_string)
    }

    fn trace(op: &'static str, start: Instant, hr: HResult) {
        tracing::debug!(op, dll = DLL, hresult = %hr, elapsed = ?start.elapsed(), "HCS call");
    }

    /// Best-effort result document of an operation whose call failed synchronously.
    fn failed_call(&self, op: &'static str, operation: HCS_OPERATION, hr: HResult) -> Failure {
        let mut doc = self.out();
        // SAFETY: our open operation; the call that used it has returned.
        let _ = unsafe { (self.table.get_operation_result)(operation, doc.as_out()) };
        let document = doc.take().unwrap_or_else(|lossy| {
            invalid_utf16(DLL, op, &lossy);
            None
        });
        Failure {
            code: hr,
            document,
            source: None,
        }
    }

    /// Starts an asynchronous operation: `call` receives the operation handle. On success the
    /// completion is dispatched to `target` later (or only logged for `None`). `inputs` are the
    /// strings `call` passes: they stay alive until the operation completes (HCS may read them
    /// until then), not just until `call` returns.
    fn submit(
        &self,
        op: &'static str,
        target: Option<(NotifyContext, NotificationKind)>,
        inputs: Vec<WideCString>,
        call: impl FnOnce(HCS_OPERATION) -> HRESULT,
    ) -> Result<(), Failure> {
        let id = NEXT_OP.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the context is an integer id (never dereferenced); the trampoline matches
        // HCS_OPERATION_COMPLETION and lives for the whole process.
        let operation = unsafe {
            (self.table.create_operation)(
                id as usize as *const c_void,
                Some(operation_completion_trampoline),
            )
        };
        if operation.is_null() {
            return Err(Failure::new(HResult::E_OUTOFMEMORY));
        }
        let entry = Arc::new(PendingOp {
            fns: OpFns {
                get_operation_result: self.table.get_operation_result,
                close_operation: self.table.close_operation,
                free_string: self.table.free_string,
            },
            op: operation as usize,
            target,
            name: op,
            _inputs: inputs,
            users: Mutex::new(0),
            idle: Condvar::new(),
        });
        // Registered before the call: the completion may arrive before the call returns. From
        // here on only the completion callback closes a started operation; this thread keeps
        // no reference to it.
        pending().insert(id, entry);
        let start = Instant::now();
        let hr = HResult::from_i32(call(operation));
        Self::trace(op, start, hr);
        if hr.is_failure() {
            // Never started, so HCS will not complete it: take it back, read its result
            // document and close it here.
            let removed = pending().remove(&id);
            let failure = self.failed_call(op, operation, hr);
            if let Some(entry) = removed {
                entry.close();
            }
            return Err(failure);
        }
        Ok(())
    }

    /// Makes a call on a fresh operation and waits for its result (`INFINITE`).
    fn run(
        &self,
        op: &'static str,
        call: impl FnOnce(HCS_OPERATION) -> HRESULT,
    ) -> Result<Option<String>, Failure> {
        let guard = OperationGuard::new(&self.table)?;
        let start = Instant::now();
        let hr = HResult::from_i32(call(guard.op));
        if hr.is_failure() {
            Self::trace(op, start, hr);
            return Err(self.failed_call(op, guard.op, hr));
        }
        let mut doc = self.out();
        // SAFETY: our open operation, started by `call`; the out-slot is valid.
        let hr = HResult::from_i32(unsafe {
            (self.table.wait_for_operation_result)(guard.op, INFINITE, doc.as_out())
        });
        Self::outcome(op, start, hr, doc)
    }

    /// Traces a finished call and turns its HRESULT and result document into the outcome: the
    /// document on success; a failure carrying it otherwise.
    fn outcome(
        op: &'static str,
        start: Instant,
        hr: HResult,
        doc: OutString,
    ) -> Result<Option<String>, Failure> {
        Self::trace(op, start, hr);
        let doc = doc.take().map_err(|lossy| invalid_utf16(DLL, op, &lossy));
        if hr.is_failure() {
            return Err(Failure {
                code: hr,
                document: doc?,
                source: None,
            });
        }
        doc
    }

    /// Like [`Self::run`] with the process-information variant of the wait. Returns the wait's
    /// HRESULT, document and (converted) process information; stdio handles are always taken
    /// over, so none leaks on any path.
    fn run_process(
        &self,
        op: &'static str,
        call: impl FnOnce(HCS_OPERATION) -> HRESULT,
    ) -> Result<ProcessOutcome, Failure> {
        let guard = OperationGuard::new(&self.table)?;
        let start = Instant::now();
        let hr = HResult::from_i32(call(guard.op));
        if hr.is_failure() {
            Self::trace(op, start, hr);
            return Err(self.failed_call(op, guard.op, hr));
        }
        let mut info = HCS_PROCESS_INFORMATION::default();
        let mut doc = self.out();
        // SAFETY: our open operation, started by `call`; `info` and the slot are valid.
        let hr = HResult::from_i32(unsafe {
            (self.table.wait_for_operation_result_and_process_info)(
                guard.op,
                INFINITE,
                &mut info,
                doc.as_out(),
            )
        });
        Self::trace(op, start, hr);
        let pinfo = ffi::process_info(&*self.stdio, &info);
        let doc = match doc.take() {
            Ok(d) => d,
            Err(lossy) => return Err(invalid_utf16(DLL, op, &lossy)),
        };
        Ok((hr, doc, pinfo))
    }

    fn system_op(
        &self,
        op: &'static str,
        f: SystemOperationFn,
        system: SystemHandle,
        options: &str,
        target: Option<(NotifyContext, NotificationKind)>,
    ) -> DriverResult<()> {
        let options = wide_opt(options)?;
        let ptr = opt_ptr(&options);
        // SAFETY: `system` is an open handle issued by this driver (lifecycle contract); the
        // options string is kept alive by the pending operation until it completes.
        self.submit(op, target, options.into_iter().collect(), |o| unsafe {
            f(sys(system), o, ptr)
        })?;
        Ok(Reply::pending(()))
    }

    fn process_info_of(&self, process: HCS_PROCESS) -> Result<ProcessInfo, Failure> {
        // SAFETY: an open process handle; the operation is fresh.
        let (hr, doc, pinfo) = self.run_process("HcsGetProcessInfo", |o| unsafe {
            (self.table.get_process_info)(process, o)
        })?;
        if hr.is_failure() {
            return Err(Failure {
                code: hr,
                document: doc,
                source: None,
            });
        }
        pinfo
    }

    /// A service call (no operation): `argument` in, the result document out; a failing call
    /// carries its document.
    fn service_call(
        &self,
        op: &'static str,
        f: crate::table::ServiceFn,
        argument: &str,
    ) -> Result<Option<String>, Failure> {
        let argument = WideCString::new(argument)?;
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: the argument outlives the call; the out-slot is valid.
        let hr = HResult::from_i32(unsafe { f(argument.as_ptr(), result.as_out()) });
        Self::outcome(op, start, hr, result)
    }

    fn set_callback(
        &self,
        op: &'static str,
        f: crate::table::SetCallbackFn,
        owner: Owner,
        options: i32,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        let id = NEXT_REGISTRATION.fetch_add(1, Ordering::Relaxed);
        let callback = CallbackHandle::new(id).ok_or_else(|| Failure::new(NULL_HANDLE))?;
        let handle = match owner {
            Owner::System(h) | Owner::Process(h) => h as usize as *mut c_void,
        };
        let reg = Arc::new(Registration {
            ctx,
            owner,
            gate: Mutex::new(GateState::default()),
            drained: Condvar::new(),
        });
        // Registered before the call: HCS may deliver an event before the call returns.
        registrations().insert(id, reg);
        let start = Instant::now();
        // SAFETY: `handle` is open and issued by this driver; the context is an integer id;
        // the trampoline matches HCS_EVENT_CALLBACK and lives for the whole process.
        let hr = HResult::from_i32(unsafe {
            f(
                handle,
                options,
                id as usize as *const c_void,
                Some(event_trampoline),
            )
        });
        Self::trace(op, start, hr);
        if hr.is_failure() {
            unregister_events(id);
            return Err(Failure::new(hr));
        }
        Ok(callback)
    }
}

impl Driver for ComputeCoreDriver {
    fn name(&self) -> &str {
        "computecore"
    }

    fn generation(&self) -> ApiGeneration {
        ApiGeneration::V2
    }

    fn enumerate_compute_systems(&self, query: &str) -> DriverResult<String> {
        let query = wide_opt(query)?;
        // SAFETY: the query outlives the call and the wait.
        let doc = self.run("HcsEnumerateComputeSystems", |o| unsafe {
            (self.table.enumerate_compute_systems)(opt_ptr(&query), o)
        })?;
        Ok(Reply::done(doc.unwrap_or_default()))
    }

    fn create_compute_system(
        &self,
        id: &str,
        configuration: &str,
        ctx: NotifyContext,
    ) -> DriverResult<SystemHandle> {
        let id = WideCString::new(id)?;
        let configuration = WideCString::new(configuration)?;
        let (id_ptr, configuration_ptr) = (id.as_ptr(), configuration.as_ptr());
        let mut guard = handle_guard(self.table.close_compute_system);
        let slot = guard.slot();
        self.submit(
            "HcsCreateComputeSystem",
            Some((ctx, NotificationKind::SystemCreateCompleted)),
            vec![id, configuration],
            |o| {
                // SAFETY: both strings are kept alive by the pending operation until it
                // completes (moving a WideCString does not move its buffer); no security
                // descriptor; `slot` points to the guard's handle slot, valid for the call.
                unsafe {
                    (self.table.create_compute_system)(id_ptr, configuration_ptr, o, std::ptr::null(), slot)
                }
            },
        )?;
        Ok(Reply::pending(guard.release(SystemHandle::new)?))
    }

    fn open_compute_system(&self, id: &str) -> DriverResult<SystemHandle> {
        let id = WideCString::new(id)?;
        let mut guard = handle_guard(self.table.close_compute_system);
        let start = Instant::now();
        // SAFETY: the id outlives the call; the out-slot is valid.
        let hr = HResult::from_i32(unsafe {
            (self.table.open_compute_system)(id.as_ptr(), GENERIC_ALL, guard.slot())
        });
        Self::trace("HcsOpenComputeSystem", start, hr);
        if hr.is_failure() {
            return Err(Failure::new(hr));
        }
        Ok(Reply::done(guard.release(SystemHandle::new)?))
    }

    fn close_compute_system(&self, system: SystemHandle) -> Result<(), Failure> {
        // Forgotten *before* the close (issue 13 item 8): once closed, HCS may hand the same
        // handle value to a system another thread opens, whose registration must survive.
        forget_registrations(Owner::System(system.raw()));
        // SAFETY: an open handle issued by this driver, closed once, with no call in flight on it
        // (lifecycle contract). In V2 this also unregisters the callback and drains it.
        unsafe { (self.table.close_compute_system)(sys(system)) };
        Ok(())
    }

    fn start_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        let target = Some((ctx, NotificationKind::SystemStartCompleted));
        self.system_op(
            "HcsStartComputeSystem",
            self.table.start_compute_system,
            system,
            options,
            target,
        )
    }

    fn shutdown_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.system_op(
            "HcsShutDownComputeSystem",
            self.table.shutdown_compute_system,
            system,
            options,
            None,
        )
    }

    fn terminate_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.system_op(
            "HcsTerminateComputeSystem",
            self.table.terminate_compute_system,
            system,
            options,
            None,
        )
    }

    fn pause_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        let target = Some((ctx, NotificationKind::SystemPauseCompleted));
        self.system_op(
            "HcsPauseComputeSystem",
            self.table.pause_compute_system,
            system,
            options,
            target,
        )
    }

    fn resume_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        let target = Some((ctx, NotificationKind::SystemResumeCompleted));
        self.system_op(
            "HcsResumeComputeSystem",
            self.table.resume_compute_system,
            system,
            options,
            target,
        )
    }

    fn save_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        let target = Some((ctx, NotificationKind::SystemSaveCompleted));
        self.system_op(
            "HcsSaveComputeSystem",
            self.table.save_compute_system,
            system,
            options,
            target,
        )
    }

    fn get_compute_system_properties(&self, system: SystemHandle, query: &str) -> DriverResult<String> {
        let query = wide_opt(query)?;
        // SAFETY: open handle issued by this driver; the query outlives the call and the wait.
        let doc = self.run("HcsGetComputeSystemProperties", |o| unsafe {
            (self.table.get_compute_system_properties)(sys(system), o, opt_ptr(&query))
        })?;
        Ok(Reply::done(doc.unwrap_or_default()))
    }

    fn modify_compute_system(&self, system: SystemHandle, configuration: &str) -> DriverResult<()> {
        let configuration = WideCString::new(configuration)?;
        // SAFETY: open handle issued by this driver; the string outlives the call; identity 0.
        let doc = self.run("HcsModifyComputeSystem", |o| unsafe {
            (self.table.modify_compute_system)(sys(system), o, configuration.as_ptr(), std::ptr::null_mut())
        })?;
        Ok(with_doc(Reply::done(()), doc))
    }

    fn register_compute_system_callback(
        &self,
        system: SystemHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        let options = if self.table.has_live_migration() {
            EVENT_OPTION_ENABLE_LIVE_MIGRATION_EVENTS
        } else {
            EVENT_OPTION_NONE
        };
        self.set_callback(
            "HcsSetComputeSystemCallback",
            self.table.set_compute_system_callback,
            Owner::System(system.raw()),
            options,
            ctx,
        )
    }

    fn unregister_compute_system_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        // V2 has no unregister call (HcsCloseComputeSystem unregisters): close the gate.
        unregister_events(callback.raw());
        Ok(())
    }

    fn create_process(
        &self,
        system: SystemHandle,
        parameters: &str,
    ) -> DriverResult<(ProcessHandle, ProcessInfo)> {
        let parameters = WideCString::new(parameters)?;
        let mut guard = handle_guard(self.table.close_process);
        let slot = guard.slot();
        let (hr, doc, pinfo) = self.run_process("HcsCreateProcess", |o| {
            // SAFETY: open system handle; parameters outlive the call; `slot` is the guard's
            // handle slot, valid for the call.
            unsafe {
                (self.table.create_process)(sys(system), parameters.as_ptr(), o, std::ptr::null(), slot)
            }
        })?;
        if hr.is_failure() {
            let original = Failure {
                code: hr,
                document: doc,
                source: None,
            };
            drop(pinfo);
            if guard.raw().is_null() {
                return Err(original);
            }
            // F32: the wait failed spuriously although HCS created the process: recover its
            // information. On failure the guard closes the process; report the original error.
            tracing::warn!(hresult = %hr, "create-process wait failed with a process handle; recovering with HcsGetProcessInfo");
            return match self.process_info_of(guard.raw()) {
                Ok(info) => Ok(Reply::done((guard.release(ProcessHandle::new)?, info))),
                Err(_) => Err(original),
            };
        }
        let info = pinfo?;
        Ok(with_doc(
            Reply::done((guard.release(ProcessHandle::new)?, info)),
            doc,
        ))
    }

    fn open_process(&self, system: SystemHandle, pid: u32) -> DriverResult<ProcessHandle> {
        let mut guard = handle_guard(self.table.close_process);
        let start = Instant::now();
        // SAFETY: open system handle; the out-slot is valid.
        let hr = HResult::from_i32(unsafe {
            (self.table.open_process)(sys(system), pid, GENERIC_ALL, guard.slot())
        });
        Self::trace("HcsOpenProcess", start, hr);
        if hr.is_failure() {
            return Err(Failure::new(hr));
        }
        Ok(Reply::done(guard.release(ProcessHandle::new)?))
    }

    fn close_process(&self, process: ProcessHandle) -> Result<(), Failure> {
        // Forgotten before the close, as for systems: the value may be reused once closed.
        forget_registrations(Owner::Process(process.raw()));
        // SAFETY: open process handle issued by this driver, closed once with no call in flight.
        unsafe { (self.table.close_process)(proc_(process)) };
        Ok(())
    }

    fn terminate_process(&self, process: ProcessHandle) -> DriverResult<()> {
        // SAFETY: open process handle; no options.
        let doc = self.run("HcsTerminateProcess", |o| unsafe {
            (self.table.terminate_process)(proc_(process), o, std::ptr::null())
        })?;
        Ok(with_doc(Reply::done(()), doc))
    }

    fn signal_process(&self, process: ProcessHandle, options: &str) -> DriverResult<()> {
        let options = wide_opt(options)?;
        // SAFETY: open process handle; the options outlive the call and the wait.
        let doc = self.run("HcsSignalProcess", |o| unsafe {
            (self.table.signal_process)(proc_(process), o, opt_ptr(&options))
        })?;
        Ok(with_doc(Reply::done(()), doc))
    }

    fn get_process_info(&self, process: ProcessHandle) -> DriverResult<ProcessInfo> {
        self.process_info_of(proc_(process)).map(Reply::done)
    }

    fn get_process_properties(&self, process: ProcessHandle) -> DriverResult<String> {
        // SAFETY: open process handle; no query (null).
        let doc = self.run("HcsGetProcessProperties", |o| unsafe {
            (self.table.get_process_properties)(proc_(process), o, std::ptr::null())
        })?;
        Ok(Reply::done(doc.unwrap_or_default()))
    }

    fn modify_process(&self, process: ProcessHandle, settings: &str) -> DriverResult<()> {
        let settings = WideCString::new(settings)?;
        // SAFETY: open process handle; the settings outlive the call and the wait.
        let doc = self.run("HcsModifyProcess", |o| unsafe {
            (self.table.modify_process)(proc_(process), o, settings.as_ptr())
        })?;
        Ok(with_doc(Reply::done(()), doc))
    }

    fn register_process_callback(
        &self,
        process: ProcessHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        self.set_callback(
            "HcsSetProcessCallback",
            self.table.set_process_callback,
            Owner::Process(process.raw()),
            EVENT_OPTION_NONE,
            ctx,
        )
    }

    fn unregister_process_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        // V2 has no unregister call (HcsCloseProcess unregisters): close the gate.
        unregister_events(callback.raw());
        Ok(())
    }

    fn get_service_properties(&self, query: &str) -> DriverResult<String> {
        let doc = self.service_call(
            "HcsGetServiceProperties",
            self.table.get_service_properties,
            query,
        )?;
        Ok(Reply::done(doc.unwrap_or_default()))
    }

    fn modify_service_settings(&self, settings: &str) -> DriverResult<()> {
        let doc = self.service_call(
            "HcsModifyServiceSettings",
            self.table.modify_service_settings,
            settings,
        )?;
        Ok(with_doc(Reply::done(()), doc))
    }

    fn cancel_pending(&self, ctx: NotifyContext, kind: NotificationKind) -> Result<(), Failure> {
        // Count ourselves in as users under the registry lock (so no completion has taken the
        // operations out yet), then call without it: the completion callback takes it. The
        // callback closes its operation only once we counted ourselves out; we never close one.
        let ops: Vec<Using> = pending()
            .values()
            .filter(|e| e.target == Some((ctx, kind)))
            .map(|e| Using(e.enter()))
            .collect();
        let mut result = Ok(());
        for Using(entry) in &ops {
            // SAFETY: the operation is open: it is closed only once no cancel call uses it.
            let hr = HResult::from_i32(unsafe { (self.table.cancel_operation)(entry.op as HCS_OPERATION) });
            tracing::debug!(op = entry.name, hresult = %hr, "HcsCancelOperation");
            let tolerated = hr.is_success()
                || hr == HResult::E_NOTIMPL
                || hr == HResult::HCS_E_OPERATION_ALREADY_CANCELLED;
            if !tolerated && result.is_ok() {
                result = Err(Failure::new(hr));
            }
        }
        result
    }

    fn initialize_live_migration_on_source(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.migration_call(
            "HcsInitializeLiveMigrationOnSource",
            self.table.initialize_live_migration_on_source,
            system,
            options,
        )
    }

    fn start_live_migration_transfer(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.migration_call(
            "HcsStartLiveMigrationTransfer",
            self.table.start_live_migration_transfer,
            system,
            options,
        )
    }

    fn finalize_live_migration(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.migration_call(
            "HcsFinalizeLiveMigration",
            self.table.finalize_live_migration,
            system,
            options,
        )
    }

    fn cancel_live_migration(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.migration_call(
            "HcsCancelLiveMigration",
            self.table.cancel_live_migration,
            system,
            options,
        )
    }

    fn start_live_migration_on_source(
        &self,
        system: SystemHandle,
        options: &str,
        transport: &MigrationTransport,
    ) -> DriverResult<()> {
        self.migration_socket_call(
            "HcsStartLiveMigrationOnSource",
            self.table.start_live_migration_on_source,
            system,
            options,
            transport,
        )
    }

    fn start_compute_system_as_migration_destination(
        &self,
        system: SystemHandle,
        options: &str,
        transport: &MigrationTransport,
    ) -> DriverResult<()> {
        self.migration_socket_call(
            "HcsStartComputeSystem",
            Some(self.table.start_compute_system),
            system,
            options,
            transport,
        )
    }

    /// V2 enables migration events per registration (event option 4, set by
    /// `register_compute_system_callback` when the host has the migration exports): nothing to
    /// call here; unsupported on a host without them.
    fn enable_live_migration_events(&self, _system: SystemHandle) -> Result<(), Failure> {
        if self.table.has_live_migration() {
            Ok(())
        } else {
            Err(Failure::unsupported())
        }
    }
}

impl ComputeCoreDriver {
    /// One live-migration export `(system, operation, options)`, waited for: unsupported when
    /// the host lacks the export.
    fn migration_call(
        &self,
        name: &'static str,
        f: Option<SystemOperationFn>,
        system: SystemHandle,
        options: &str,
    ) -> DriverResult<()> {
        let Some(f) = f else {
            tracing::debug!(export = name, "live-migration export not present on this host");
            return Err(Failure::unsupported());
        };
        let options = WideCString::new(if options.is_empty() { "{}" } else { options })?;
        // SAFETY: open system handle; the options outlive the call and the wait.
        let doc = self.run(name, |o| unsafe { f(sys(system), o, options.as_ptr()) })?;
        Ok(with_doc(Reply::done(()), doc))
    }

    /// A migration start with the transport attached to its operation:
    /// `HcsAddResourceToOperation(op, 4 /*Socket*/, "hcs:/VirtualMachine/LiveMigrationSocket",
    /// socket)` then the export, waited for. Unsupported when either export is missing.
    fn migration_socket_call(
        &self,
        name: &'static str,
        f: Option<SystemOperationFn>,
        system: SystemHandle,
        options: &str,
        transport: &MigrationTransport,
    ) -> DriverResult<()> {
        let (Some(f), Some(add)) = (f, self.table.add_resource_to_operation) else {
            tracing::debug!(
                export = name,
                "live-migration export or HcsAddResourceToOperation not present"
            );
            return Err(Failure::unsupported());
        };
        let options = WideCString::new(if options.is_empty() { "{}" } else { options })?;
        let uri = WideCString::new(LIVE_MIGRATION_SOCKET_URI)?;
        let socket = socket_handle(transport);
        let doc = self.run(name, |o| {
            // SAFETY: our open operation; the URI outlives the call; the socket stays open while
            // `transport` is borrowed, which outlives the call and the wait.
            let hr = unsafe { add(o, RESOURCE_TYPE_SOCKET, uri.as_ptr(), socket) };
            if hr < 0 {
                tracing::debug!(hresult = %HResult::from_i32(hr), "HcsAddResourceToOperation failed");
                return hr;
            }
            // SAFETY: open system handle; the options outlive the call and the wait.
            unsafe { f(sys(system), o, options.as_ptr()) }
        })?;
        Ok(with_doc(Reply::done(()), doc))
    }
}

/// `HcsResourceTypeSocket` (computedefs.h; not in windows-sys).
pub const RESOURCE_TYPE_SOCKET: i32 = 4;
/// The resource URI of the live-migration socket (hcsshim `LiveMigrationSocketURI`).
pub const LIVE_MIGRATION_SOCKET_URI: &str = "hcs:/VirtualMachine/LiveMigrationSocket";

/// The transport's socket as the `HANDLE` HCS takes (the `SOCKET` on Windows; the descriptor
/// elsewhere, where only fake tables see it).
fn socket_handle(transport: &MigrationTransport) -> hcs_ffi::HANDLE {
    #[cfg(windows)]
    let raw = transport.raw_socket() as usize;
    #[cfg(unix)]
    let raw = std::os::fd::AsRawFd::as_raw_fd(transport.stream()) as usize;
    #[cfg(not(any(windows, unix)))]
    let raw = {
        let _ = transport;
        0usize
    };
    raw as hcs_ffi::HANDLE
}

fn with_doc<T>(mut r: Reply<T>, doc: Option<String>) -> Reply<T> {
    r.document = doc;
    r
}

#[cfg(all(test, windows))]
mod windows_typedefs {
    use super::*;
    use windows_sys::Win32::System::HostComputeSystem as ws;

    #[test]
    fn trampolines_and_event_layout_match_windows_sys() {
        let a: ws::HCS_EVENT_CALLBACK = Some(unsafe_cast_event);
        let b: ws::HCS_OPERATION_COMPLETION = Some(operation_completion_trampoline);
        assert!(a.is_some() && b.is_some());
        assert_eq!(
            std::mem::size_of::<HCS_EVENT>(),
            std::mem::size_of::<ws::HCS_EVENT>()
        );
        assert_eq!(
            std::mem::offset_of!(HCS_EVENT, EventData),
            std::mem::offset_of!(ws::HCS_EVENT, EventData)
        );
    }

    /// `event_trampoline` with windows-sys's pointer type (same layout, checked above).
    unsafe extern "system" fn unsafe_cast_event(event: *const ws::HCS_EVENT, context: *const c_void) {
        // SAFETY: HCS_EVENT and ws::HCS_EVENT have the same layout.
        unsafe { event_trampoline(event.cast(), context) }
    }
}
