//! A fake `computecore.dll` (the V2 HCS API, design FFI §3.2) for Windows-target tests
//! under Wine (design FFI §7.3): the exports the V2 driver binds, with their exact names and signatures,
//! implemented on ONE process-global [`hcs_sim::Simulator`] (V2 encodings, scripted backend
//! with the vocabulary of [`fake_hcs_common::script`]).
//!
//! * **Operations** (`HcsCreateOperation` … `HcsCloseOperation`): every call records its
//!   outcome in the operation. Asynchronous simulator replies (pending create/start/pause/
//!   resume/save) complete when the simulator's `*Completed` notification arrives on its
//!   scheduler thread, which then calls the operation's `HCS_OPERATION_COMPLETION`;
//!   synchronous outcomes with a completion callback are completed from a fresh DLL thread.
//!   `HcsCancelOperation` returns `E_NOTIMPL` (as documented). Open operations are counted
//!   (`FakeHcsOpenOperations`).
//! * **Rule checks** (`FakeHcsViolations`, issue 13 items 7 and 9): a completion from a DLL
//!   thread stays "running" for 50 ms after the client's callback returned (HCS's own work after
//!   the callback), and closing the operation from another thread meanwhile is a violation; so is
//!   an input string (id, configuration, options) that no longer reads as it did during the call
//!   when the operation completes.
//! * **Events**: `HcsSetComputeSystemCallback`/`HcsSetProcessCallback` register an
//!   `hcs::notify::Subscription` (in this DLL's own `hcs` registry) whose closure calls the
//!   client's `HCS_EVENT_CALLBACK` with an `HCS_EVENT` from the simulator's thread.
//! * **Live migration**: `HcsAddResourceToOperation` (type 4, the migration socket URI) keeps
//!   the socket on the operation; the migration exports and a destination's
//!   `HcsStartComputeSystem` (an operation with a socket) forward to the simulator's migration
//!   (design §10.3) with a duplicate of the socket; option 4 of `HcsSetComputeSystemCallback`
//!   enables the migration events.
//! * **Result strings** are `LocalAlloc`'d (the V2 driver frees with `LocalFree`) and counted.
//! * **Stdio** handles are real anonymous pipes fed by DLL relay threads.
#![allow(unsafe_code)]
// The exports mirror the HCS API one to one (design FFI §2.2, §3.2); their names and
// safety contracts are HCS's.
#![allow(
    non_snake_case,
    missing_docs,
    clippy::missing_safety_doc,
    clippy::upper_case_acronyms
)]

use fake_hcs_common::{
    self as common, hr, lock, Extra, RawStdio, Strings, E_INVALIDARG, E_NOTIMPL, E_POINTER,
};
use hcs::notify::Subscription;
use hcs::{ApiGeneration, Driver, Failure, HResult, NotificationKind, ProcessHandle, SystemHandle};
use hcs_ffi::{
    EventCallback, OperationCompletion, HANDLE, HCS_EVENT, HCS_OPERATION, HCS_PROCESS_INFORMATION, HRESULT,
    PCWSTR, PWSTR,
};
use hcs_sim::Simulator;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

const HCS_E_OPERATION_NOT_STARTED: i32 = HResult::HCS_E_OPERATION_NOT_STARTED.as_i32();
const HCS_E_OPERATION_ALREADY_STARTED: i32 = HResult::HCS_E_OPERATION_ALREADY_STARTED.as_i32();
const HCS_E_OPERATION_PENDING: i32 = HResult::HCS_E_OPERATION_PENDING.as_i32();
const HCS_E_OPERATION_TIMEOUT: i32 = HResult::HCS_E_OPERATION_TIMEOUT.as_i32();
const HCS_E_CALLBACK_ALREADY_SET: i32 = HResult::HCS_E_OPERATION_SYSTEM_CALLBACK_ALREADY_SET.as_i32();

/// The client frees them with `LocalFree`.
static STRINGS: Strings = Strings::new(common::local_alloc);

fn sim() -> &'static Arc<Simulator> {
    common::sim(ApiGeneration::V2)
}

// ------------------------------------------------------------------------------------------
// Operations

#[derive(Default)]
struct OpState {
    started: bool,
    done: bool,
    hr: HRESULT,
    doc: Option<String>,
    pid: u32,
    stdio: Option<RawStdio>,
    closed: bool,
    context: usize,
    /// Keeps the simulator's completion context alive until the operation completes.
    sub: Option<Subscription>,
    /// The thread running the completion callback right now.
    completing_on: Option<std::thread::ThreadId>,
    /// The call's input strings: (pointer, units as read during the call).
    inputs: Vec<(usize, Vec<u16>)>,
    /// The live-migration socket attached with `HcsAddResourceToOperation`.
    socket: Option<usize>,
}

struct Operation {
    handle: usize,
    callback: Mutex<Option<OperationCompletion>>,
    state: Mutex<OpState>,
    cv: Condvar,
}

impl Operation {
    /// Records the outcome and calls the completion callback on this (DLL-owned) thread; with
    /// `linger`, the completion stays marked running for a while after the callback returned.
    fn complete(
        self: &Arc<Self>,
        hr: HRESULT,
        doc: Option<String>,
        pid: u32,
        stdio: Option<RawStdio>,
        linger: bool,
    ) {
        let (ctx, sub, inputs) = {
            let mut st = lock(&self.state);
            if st.done {
                return;
            }
            st.done = true;
            st.hr = hr;
            st.doc = doc;
            st.pid = pid;
            st.stdio = stdio;
            if st.closed {
                return;
            }
            (st.context, st.sub.take(), std::mem::take(&mut st.inputs))
        };
        self.cv.notify_all();
        drop(sub);
        let cb = *lock(&self.callback);
        if let Some(cb) = cb {
            for (p, units) in inputs {
                // SAFETY: the client must keep its input strings alive until the operation
                // completes (HCS may read them until then); a client that does not is what this
                // check reports (the read may see freed memory).
                let now = unsafe { std::slice::from_raw_parts(p as *const u16, units.len() + 1) };
                if now[..units.len()] != units[..] || now[units.len()] != 0 {
                    violation("an input string changed before its operation completed");
                }
            }
            lock(&self.state).completing_on = Some(std::thread::current().id());
            // SAFETY: the client registered `cb` with this signature and context; the operation
            // handle stays valid until the client closes it.
            unsafe { cb(self.handle as HCS_OPERATION, ctx as *const c_void) };
            if linger {
                std::thread::sleep(Duration::from_millis(50));
            }
            lock(&self.state).completing_on = None;
        }
    }

    /// Remembers the input strings of the call starting this operation.
    fn record_inputs(&self, inputs: &[PCWSTR]) {
        let copies = inputs
            .iter()
            .filter(|p| !p.is_null())
            // SAFETY: HCS contract: valid NUL-terminated strings for the call.
            .map(|&p| (p as usize, unsafe { hcs_ffi::wide_units(p) }.to_vec()))
            .collect();
        lock(&self.state).inputs = copies;
    }

    /// Records the outcome of a call that failed: HCS never calls the completion callback of an
    /// operation whose call failed.
    fn record_failure(&self, hr: HRESULT, doc: Option<String>) {
        let sub = {
            let mut st = lock(&self.state);
            st.done = true;
            st.hr = hr;
            st.doc = doc;
            st.sub.take()
        };
        self.cv.notify_all();
        drop(sub);
    }

    /// Completes a synchronous outcome: inline without a callback, else from a DLL thread.
    fn complete_now(self: &Arc<Self>, hr: HRESULT, doc: Option<String>, pid: u32, stdio: Option<RawStdio>) {
        if lock(&self.callback).is_none() {
            self.complete(hr, doc, pid, stdio, false);
        } else {
            // Usually completes before the client's call returns; lingers so that a client
            // closing the operation from the submitting thread is caught.
            let me = Arc::clone(self);
            let _ = std::thread::Builder::new()
                .name("fake-computecore-op".into())
                .spawn(move || me.complete(hr, doc, pid, stdio, true));
        }
    }

    /// A subscription completing this operation on the simulator's `*Completed` notification.
    fn completion_context(self: &Arc<Self>) -> hcs::NotifyContext {
        let weak = Arc::downgrade(self);
        let sub = Subscription::new(move |kind, status, data| {
            if let (true, Some(op)) = (kind.is_completion(), weak.upgrade()) {
                op.complete(hr(status), data.map(str::to_string), 0, None, false);
            }
        });
        let ctx = sub.context();
        lock(&self.state).sub = Some(sub);
        ctx
    }
}

#[derive(Default)]
struct Fake {
    ops: Mutex<HashMap<usize, Arc<Operation>>>,
    next_op: AtomicUsize,
    /// Event registrations by handle (one per handle in V2).
    events: Mutex<HashMap<u64, Subscription>>,
    /// Rule violations seen (`FakeHcsViolations`).
    violations: AtomicUsize,
}

/// Counts a rule violation of the client (reported through `FakeHcsViolations`).
fn violation(what: &str) {
    fake().violations.fetch_add(1, Ordering::SeqCst);
    eprintln!("fake computecore.dll: rule violation: {what}");
}

fn fake() -> &'static Fake {
    static F: OnceLock<Fake> = OnceLock::new();
    F.get_or_init(Fake::default)
}

fn op(h: HCS_OPERATION) -> Option<Arc<Operation>> {
    lock(&fake().ops).get(&(h as usize)).cloned()
}

/// Marks `h` as started by a call; `Err` with the HRESULT to return otherwise.
fn begin(h: HCS_OPERATION) -> Result<Arc<Operation>, HRESULT> {
    let o = op(h).ok_or(common::E_HANDLE)?;
    let mut st = lock(&o.state);
    if st.started {
        return Err(HCS_E_OPERATION_ALREADY_STARTED);
    }
    st.started = true;
    drop(st);
    Ok(o)
}

/// Finishes a call on operation `o`: failures are returned from the call and recorded; success
/// completes now, unless the simulator answered pending with a completion still to come.
fn finish<T>(
    o: &Arc<Operation>,
    r: hcs::DriverResult<T>,
    value: impl FnOnce(T) -> (Option<String>, u32, Option<RawStdio>),
    async_completion: bool,
) -> HRESULT {
    match r {
        Err(Failure { code, document, .. }) => {
            o.record_failure(hr(code), document);
            hr(code)
        }
        Ok(rep) => {
            let pending = rep.pending;
            let doc0 = rep.document;
            let (doc, pid, stdio) = value(rep.value);
            if !(pending && async_completion) {
                lock(&o.state).sub = None;
                o.complete_now(0, doc.or(doc0), pid, stdio);
            }
            0
        }
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsCreateOperation(
    context: *const c_void,
    callback: Option<OperationCompletion>,
) -> HCS_OPERATION {
    let f = fake();
    let handle = 0x1000 + 8 * f.next_op.fetch_add(1, Ordering::Relaxed);
    let o = Arc::new(Operation {
        handle,
        callback: Mutex::new(callback),
        state: Mutex::new(OpState {
            context: context as usize,
            ..OpState::default()
        }),
        cv: Condvar::new(),
    });
    lock(&f.ops).insert(handle, o);
    handle as HCS_OPERATION
}

#[no_mangle]
pub unsafe extern "system" fn HcsCloseOperation(operation: HCS_OPERATION) {
    let Some(o) = lock(&fake().ops).remove(&(operation as usize)) else {
        return;
    };
    let (sub, stdio) = {
        let mut st = lock(&o.state);
        st.closed = true;
        if st.completing_on.is_some_and(|t| t != std::thread::current().id()) {
            violation("operation closed on another thread while its completion callback ran");
        }
        (st.sub.take(), st.stdio.take())
    };
    drop(sub);
    if let Some(s) = stdio {
        for h in [s.stdin, s.stdout, s.stderr] {
            common::close_raw(h);
        }
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsGetOperationContext(operation: HCS_OPERATION) -> *mut c_void {
    op(operation).map_or(std::ptr::null_mut(), |o| lock(&o.state).context as *mut c_void)
}

#[no_mangle]
pub unsafe extern "system" fn HcsSetOperationContext(
    operation: HCS_OPERATION,
    context: *const c_void,
) -> HRESULT {
    let Some(o) = op(operation) else {
        return common::E_HANDLE;
    };
    lock(&o.state).context = context as usize;
    0
}

#[no_mangle]
pub unsafe extern "system" fn HcsSetOperationCallback(
    operation: HCS_OPERATION,
    context: *const c_void,
    callback: Option<OperationCompletion>,
) -> HRESULT {
    let Some(o) = op(operation) else {
        return common::E_HANDLE;
    };
    lock(&o.state).context = context as usize;
    *lock(&o.callback) = callback;
    0
}

#[no_mangle]
pub unsafe extern "system" fn HcsGetOperationId(operation: HCS_OPERATION) -> u64 {
    operation as usize as u64
}

/// Waits for `o` up to `timeout_ms`; returns its HRESULT (or a wait error) and writes the doc.
unsafe fn wait(
    o: &Operation,
    timeout_ms: Option<u32>,
    info: *mut HCS_PROCESS_INFORMATION,
    doc: *mut PWSTR,
) -> HRESULT {
    let mut st = lock(&o.state);
    if !st.started {
        return HCS_E_OPERATION_NOT_STARTED;
    }
    if let Some(ms) = timeout_ms {
        let deadline = (ms != u32::MAX).then(|| Instant::now() + Duration::from_millis(ms.into()));
        while !st.done {
            st = match deadline {
                None => o.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return HCS_E_OPERATION_TIMEOUT;
                    }
                    o.cv.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    } else if !st.done {
        return HCS_E_OPERATION_PENDING;
    }
    // SAFETY: out-slots are null or writable (HCS contract).
    unsafe { STRINGS.put(doc, st.doc.as_deref()) };
    if !info.is_null() {
        // The stdio handles are handed out once; later queries report absent streams.
        let s = st.stdio.take().unwrap_or_default();
        // SAFETY: non-null and writable (HCS contract).
        unsafe { common::write_process_info(info, st.pid, s) };
    }
    st.hr
}

#[no_mangle]
pub unsafe extern "system" fn HcsGetOperationResult(
    operation: HCS_OPERATION,
    result_document: *mut PWSTR,
) -> HRESULT {
    let Some(o) = op(operation) else {
        return common::E_HANDLE;
    };
    // SAFETY: forwarded HCS contract.
    unsafe { wait(&o, None, std::ptr::null_mut(), result_document) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsGetOperationResultAndProcessInfo(
    operation: HCS_OPERATION,
    process_information: *mut HCS_PROCESS_INFORMATION,
    result_document: *mut PWSTR,
) -> HRESULT {
    let Some(o) = op(operation) else {
        return common::E_HANDLE;
    };
    // SAFETY: forwarded HCS contract.
    unsafe { wait(&o, None, process_information, result_document) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsWaitForOperationResult(
    operation: HCS_OPERATION,
    timeout_ms: u32,
    result_document: *mut PWSTR,
) -> HRESULT {
    let Some(o) = op(operation) else {
        return common::E_HANDLE;
    };
    // SAFETY: forwarded HCS contract.
    unsafe { wait(&o, Some(timeout_ms), std::ptr::null_mut(), result_document) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsWaitForOperationResultAndProcessInfo(
    operation: HCS_OPERATION,
    timeout_ms: u32,
    process_information: *mut HCS_PROCESS_INFORMATION,
    result_document: *mut PWSTR,
) -> HRESULT {
    let Some(o) = op(operation) else {
        return common::E_HANDLE;
    };
    // SAFETY: forwarded HCS contract.
    unsafe { wait(&o, Some(timeout_ms), process_information, result_document) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsCancelOperation(_operation: HCS_OPERATION) -> HRESULT {
    E_NOTIMPL
}

// ------------------------------------------------------------------------------------------
// Compute systems

use common::{process_handle as proc_, system_handle as sys};

/// Reads an optional string argument.
unsafe fn s(p: PCWSTR) -> String {
    // SAFETY: HCS contract: null or a valid string.
    unsafe { common::from_wide(p) }.unwrap_or_default()
}

#[no_mangle]
pub unsafe extern "system" fn HcsEnumerateComputeSystems(query: PCWSTR, operation: HCS_OPERATION) -> HRESULT {
    let o = match begin(operation) {
        Ok(o) => o,
        Err(e) => return e,
    };
    // SAFETY: HCS contract.
    let q = unsafe { s(query) };
    finish(
        &o,
        sim().enumerate_compute_systems(&q),
        |d| (Some(d), 0, None),
        false,
    )
}

#[no_mangle]
pub unsafe extern "system" fn HcsCreateComputeSystem(
    id: PCWSTR,
    configuration: PCWSTR,
    operation: HCS_OPERATION,
    _security_descriptor: *const c_void,
    compute_system: *mut HANDLE,
) -> HRESULT {
    if compute_system.is_null() {
        return E_POINTER;
    }
    let o = match begin(operation) {
        Ok(o) => o,
        Err(e) => return e,
    };
    o.record_inputs(&[id, configuration]);
    // SAFETY: HCS contract.
    let (id, cfg) = unsafe { (s(id), s(configuration)) };
    let ctx = o.completion_context();
    let r = sim().create_compute_system(&id, &cfg, ctx);
    finish(
        &o,
        r,
        |h| {
            // SAFETY: checked non-null; writable per HCS contract.
            unsafe { *compute_system = h.raw() as usize as HANDLE };
            (None, 0, None)
        },
        true,
    )
}

#[no_mangle]
pub unsafe extern "system" fn HcsOpenComputeSystem(
    id: PCWSTR,
    _requested_access: u32,
    compute_system: *mut HANDLE,
) -> HRESULT {
    if compute_system.is_null() {
        return E_POINTER;
    }
    // SAFETY: HCS contract.
    let id = unsafe { s(id) };
    match sim().open_compute_system(&id) {
        Ok(r) => {
            // SAFETY: checked non-null.
            unsafe { *compute_system = r.value.raw() as usize as HANDLE };
            0
        }
        Err(f) => hr(f.code),
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsCloseComputeSystem(compute_system: HANDLE) {
    if let Some(h) = sys(compute_system) {
        if sim().close_compute_system(h).is_ok() {
            lock(&fake().events).remove(&h.raw());
        }
    }
}

type Control = fn(&Simulator, SystemHandle, &str, hcs::NotifyContext) -> hcs::DriverResult<()>;

unsafe fn control(
    cs: HANDLE,
    operation: HCS_OPERATION,
    options: PCWSTR,
    f: Control,
    has_completion: bool,
) -> HRESULT {
    let Some(h) = sys(cs) else {
        return common::E_HANDLE;
    };
    let o = match begin(operation) {
        Ok(o) => o,
        Err(e) => return e,
    };
    o.record_inputs(&[options]);
    // SAFETY: HCS contract.
    let opts = unsafe { s(options) };
    let ctx = o.completion_context();
    let r = f(sim(), h, &opts, ctx);
    // Pending shutdown/terminate have no completion notification: their operation completes
    // once the simulator accepted the request (the exit arrives as a SystemExited event).
    finish(&o, r, |_| (None, 0, None), has_completion)
}

fn start(s: &Simulator, h: SystemHandle, o: &str, c: hcs::NotifyContext) -> hcs::DriverResult<()> {
    s.start_compute_system(h, o, c)
}
fn shutdown(s: &Simulator, h: SystemHandle, o: &str, _c: hcs::NotifyContext) -> hcs::DriverResult<()> {
    s.shutdown_compute_system(h, o)
}
fn terminate(s: &Simulator, h: SystemHandle, o: &str, _c: hcs::NotifyContext) -> hcs::DriverResult<()> {
    s.terminate_compute_system(h, o)
}
fn pause(s: &Simulator, h: SystemHandle, o: &str, c: hcs::NotifyContext) -> hcs::DriverResult<()> {
    s.pause_compute_system(h, o, c)
}
fn resume(s: &Simulator, h: SystemHandle, o: &str, c: hcs::NotifyContext) -> hcs::DriverResult<()> {
    s.resume_compute_system(h, o, c)
}
fn save(s: &Simulator, h: SystemHandle, o: &str, c: hcs::NotifyContext) -> hcs::DriverResult<()> {
    s.save_compute_system(h, o, c)
}

#[no_mangle]
pub unsafe extern "system" fn HcsStartComputeSystem(
    cs: HANDLE,
    operation: HCS_OPERATION,
    options: PCWSTR,
) -> HRESULT {
    // A socket on the operation makes it a migration destination's start.
    if op(operation).is_some_and(|o| lock(&o.state).socket.is_some()) {
        // SAFETY: forwarded HCS contract.
        return unsafe { with_socket(cs, operation, options, true) };
    }
    // SAFETY: forwarded HCS contract.
    unsafe { control(cs, operation, options, start, true) }
}

// ------------------------------------------------------------------------------------------
// Live migration (design §10): the exports forward to the simulator; the socket comes from
// `HcsAddResourceToOperation`.

/// `HcsResourceTypeSocket`.
const RESOURCE_TYPE_SOCKET: i32 = 4;
const LIVE_MIGRATION_SOCKET_URI: &str = "hcs:/VirtualMachine/LiveMigrationSocket";

#[no_mangle]
pub unsafe extern "system" fn HcsAddResourceToOperation(
    operation: HCS_OPERATION,
    resource_type: i32,
    uri: PCWSTR,
    handle: HANDLE,
) -> HRESULT {
    let Some(o) = op(operation) else {
        return common::E_HANDLE;
    };
    // SAFETY: HCS contract.
    let uri = unsafe { s(uri) };
    if resource_type != RESOURCE_TYPE_SOCKET || uri != LIVE_MIGRATION_SOCKET_URI || handle.is_null() {
        return E_INVALIDARG;
    }
    lock(&o.state).socket = Some(handle as usize);
    0
}

/// A duplicate of the client's socket, as a transport (the client keeps its own).
fn transport_of(raw: usize) -> std::io::Result<hcs::MigrationTransport> {
    #[cfg(windows)]
    let stream = {
        use std::os::windows::io::FromRawSocket;
        // SAFETY: the client's open socket, borrowed for the call: wrapped without taking
        // ownership (ManuallyDrop) and duplicated.
        let borrowed =
            std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_socket(raw as u64) });
        borrowed.try_clone()?
    };
    #[cfg(unix)]
    let stream = {
        use std::os::fd::FromRawFd;
        // SAFETY: as above, a descriptor.
        let borrowed = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(raw as i32) });
        borrowed.try_clone()?
    };
    #[cfg(not(any(windows, unix)))]
    let stream: std::net::TcpStream = {
        let _ = raw;
        return Err(std::io::ErrorKind::Unsupported.into());
    };
    hcs::MigrationTransport::new(stream)
}

/// Source start or destination start: the operation's socket handed to the simulator.
unsafe fn with_socket(cs: HANDLE, operation: HCS_OPERATION, options: PCWSTR, destination: bool) -> HRESULT {
    let Some(h) = sys(cs) else {
        return common::E_HANDLE;
    };
    let o = match begin(operation) {
        Ok(o) => o,
        Err(e) => return e,
    };
    o.record_inputs(&[options]);
    // SAFETY: HCS contract.
    let opts = unsafe { s(options) };
    let socket = lock(&o.state).socket;
    let r = match socket.map(transport_of) {
        None => Err(Failure::new(E_INVALIDARG)),
        Some(Err(_)) => Err(Failure::new(HResult::HCS_E_CONNECTION_CLOSED)),
        Some(Ok(t)) if destination => sim().start_compute_system_as_migration_destination(h, &opts, &t),
        Some(Ok(t)) => sim().start_live_migration_on_source(h, &opts, &t),
    };
    finish(&o, r, |_| (None, 0, None), false)
}

type Migrate = fn(&Simulator, SystemHandle, &str) -> hcs::DriverResult<()>;

/// A migration step without a socket, completed when the simulator's call returns.
unsafe fn migrate(cs: HANDLE, operation: HCS_OPERATION, options: PCWSTR, f: Migrate) -> HRESULT {
    let Some(h) = sys(cs) else {
        return common::E_HANDLE;
    };
    let o = match begin(operation) {
        Ok(o) => o,
        Err(e) => return e,
    };
    o.record_inputs(&[options]);
    // SAFETY: HCS contract.
    let opts = unsafe { s(options) };
    finish(&o, f(sim(), h, &opts), |_| (None, 0, None), false)
}

#[no_mangle]
pub unsafe extern "system" fn HcsInitializeLiveMigrationOnSource(
    cs: HANDLE,
    operation: HCS_OPERATION,
    options: PCWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe {
        migrate(cs, operation, options, |s, h, o| {
            s.initialize_live_migration_on_source(h, o)
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsStartLiveMigrationOnSource(
    cs: HANDLE,
    operation: HCS_OPERATION,
    options: PCWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { with_socket(cs, operation, options, false) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsStartLiveMigrationTransfer(
    cs: HANDLE,
    operation: HCS_OPERATION,
    options: PCWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe {
        migrate(cs, operation, options, |s, h, o| {
            s.start_live_migration_transfer(h, o)
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsFinalizeLiveMigration(
    cs: HANDLE,
    operation: HCS_OPERATION,
    options: PCWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { migrate(cs, operation, options, |s, h, o| s.finalize_live_migration(h, o)) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsCancelLiveMigration(
    cs: HANDLE,
    operation: HCS_OPERATION,
    options: PCWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { migrate(cs, operation, options, |s, h, o| s.cancel_live_migration(h, o)) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsShutDownComputeSystem(
    cs: HANDLE,
    operation: HCS_OPERATION,
    options: PCWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { control(cs, operation, options, shutdown, false) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsTerminateComputeSystem(
    cs: HANDLE,
    operation: HCS_OPERATION,
    options: PCWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { control(cs, operation, options, terminate, false) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsPauseComputeSystem(
    cs: HANDLE,
    operation: HCS_OPERATION,
    options: PCWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { control(cs, operation, options, pause, true) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsResumeComputeSystem(
    cs: HANDLE,
    operation: HCS_OPERATION,
    options: PCWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { control(cs, operation, options, resume, true) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsSaveComputeSystem(
    cs: HANDLE,
    operation: HCS_OPERATION,
    options: PCWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { control(cs, operation, options, save, true) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsGetComputeSystemProperties(
    cs: HANDLE,
    operation: HCS_OPERATION,
    property_query: PCWSTR,
) -> HRESULT {
    let Some(h) = sys(cs) else {
        return common::E_HANDLE;
    };
    let o = match begin(operation) {
        Ok(o) => o,
        Err(e) => return e,
    };
    // SAFETY: HCS contract.
    let q = unsafe { s(property_query) };
    finish(
        &o,
        sim().get_compute_system_properties(h, &q),
        |d| (Some(d), 0, None),
        false,
    )
}

#[no_mangle]
pub unsafe extern "system" fn HcsModifyComputeSystem(
    cs: HANDLE,
    operation: HCS_OPERATION,
    configuration: PCWSTR,
    _identity: HANDLE,
) -> HRESULT {
    let Some(h) = sys(cs) else {
        return common::E_HANDLE;
    };
    let o = match begin(operation) {
        Ok(o) => o,
        Err(e) => return e,
    };
    // SAFETY: HCS contract.
    let c = unsafe { s(configuration) };
    finish(&o, sim().modify_compute_system(h, &c), |_| (None, 0, None), false)
}

/// The V2 event type of a simulator notification (`None`: not an event in V2).
fn event_type(kind: NotificationKind) -> Option<i32> {
    match kind {
        NotificationKind::SystemExited => Some(1),
        NotificationKind::ProcessExited => Some(0x1_0000),
        NotificationKind::ServiceDisconnect => Some(0x200_0000),
        NotificationKind::LiveMigration => Some(0x8000_0003_u32 as i32),
        _ => None,
    }
}

unsafe fn set_callback(
    h: u64,
    context: *const c_void,
    callback: Option<EventCallback>,
    is_system: bool,
) -> HRESULT {
    let Some(cb) = callback else {
        return E_INVALIDARG;
    };
    let mut events = lock(&fake().events);
    if events.contains_key(&h) {
        return HCS_E_CALLBACK_ALREADY_SET;
    }
    let ctx = context as usize;
    let sub = Subscription::new(move |kind, _status, data| {
        let Some(t) = event_type(kind) else { return };
        let w = data.map(common::to_wide);
        let ev = HCS_EVENT {
            Type: t,
            EventData: w.as_ref().map_or(std::ptr::null(), |w| w.as_ptr()),
            Operation: std::ptr::null_mut(),
        };
        // SAFETY: the client registered `cb` with this signature and context; `ev` and its
        // data are valid for the call (the client copies them).
        unsafe { cb(&ev, ctx as *const c_void) };
    });
    match common::register_callback(sim(), h, is_system, sub.context()) {
        Ok(_) => {
            events.insert(h, sub);
            0
        }
        Err(e) => e,
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsSetComputeSystemCallback(
    cs: HANDLE,
    callback_options: i32,
    context: *const c_void,
    callback: Option<EventCallback>,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    let r = unsafe { set_callback(cs as usize as u64, context, callback, true) };
    // HcsEventOptionEnableLiveMigrationEvents.
    if r == 0 && callback_options & 4 != 0 {
        if let Some(h) = sys(cs) {
            let _ = sim().enable_live_migration_events(h);
        }
    }
    r
}

// ------------------------------------------------------------------------------------------
// Processes

#[no_mangle]
pub unsafe extern "system" fn HcsCreateProcess(
    cs: HANDLE,
    process_parameters: PCWSTR,
    operation: HCS_OPERATION,
    _security_descriptor: *const c_void,
    process: *mut HANDLE,
) -> HRESULT {
    let Some(h) = sys(cs) else {
        return common::E_HANDLE;
    };
    if process.is_null() {
        return E_POINTER;
    }
    let o = match begin(operation) {
        Ok(o) => o,
        Err(e) => return e,
    };
    // SAFETY: HCS contract.
    let (params, extra): (String, Extra) = common::command(&unsafe { s(process_parameters) });
    finish(
        &o,
        sim().create_process(h, &params),
        |(ph, info)| {
            // SAFETY: checked non-null; writable per HCS contract.
            unsafe { *process = ph.raw() as usize as HANDLE };
            let pid = info.pid;
            (None, pid, Some(common::stdio(info, &extra)))
        },
        false,
    )
}

#[no_mangle]
pub unsafe extern "system" fn HcsOpenProcess(
    cs: HANDLE,
    pid: u32,
    _requested_access: u32,
    process: *mut HANDLE,
) -> HRESULT {
    let Some(h) = sys(cs) else {
        return common::E_HANDLE;
    };
    if process.is_null() {
        return E_POINTER;
    }
    match sim().open_process(h, pid) {
        Ok(r) => {
            // SAFETY: checked non-null.
            unsafe { *process = r.value.raw() as usize as HANDLE };
            0
        }
        Err(f) => hr(f.code),
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsCloseProcess(process: HANDLE) {
    if let Some(p) = proc_(process) {
        if sim().close_process(p).is_ok() {
            lock(&fake().events).remove(&p.raw());
        }
    }
}

type ProcOp = fn(&Simulator, ProcessHandle, &str) -> hcs::DriverResult<String>;

unsafe fn process_op(process: HANDLE, operation: HCS_OPERATION, options: PCWSTR, f: ProcOp) -> HRESULT {
    let Some(p) = proc_(process) else {
        return common::E_HANDLE;
    };
    let o = match begin(operation) {
        Ok(o) => o,
        Err(e) => return e,
    };
    // SAFETY: HCS contract.
    let opts = unsafe { s(options) };
    finish(
        &o,
        f(sim(), p, &opts),
        |d| ((!d.is_empty()).then_some(d), 0, None),
        false,
    )
}

fn unit(r: hcs::DriverResult<()>) -> hcs::DriverResult<String> {
    r.map(|rep| hcs::Reply {
        value: String::new(),
        document: rep.document,
        pending: rep.pending,
    })
}

#[no_mangle]
pub unsafe extern "system" fn HcsTerminateProcess(
    process: HANDLE,
    operation: HCS_OPERATION,
    options: PCWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe {
        process_op(process, operation, options, |s, p, _| {
            unit(s.terminate_process(p))
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsSignalProcess(
    process: HANDLE,
    operation: HCS_OPERATION,
    options: PCWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe {
        process_op(process, operation, options, |s, p, o| {
            unit(s.signal_process(p, o))
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsModifyProcess(
    process: HANDLE,
    operation: HCS_OPERATION,
    settings: PCWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe {
        process_op(process, operation, settings, |s, p, o| {
            unit(s.modify_process(p, o))
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsGetProcessProperties(
    process: HANDLE,
    operation: HCS_OPERATION,
    _query: PCWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe {
        process_op(process, operation, std::ptr::null(), |s, p, _| {
            s.get_process_properties(p)
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsGetProcessInfo(process: HANDLE, operation: HCS_OPERATION) -> HRESULT {
    let Some(p) = proc_(process) else {
        return common::E_HANDLE;
    };
    let o = match begin(operation) {
        Ok(o) => o,
        Err(e) => return e,
    };
    finish(
        &o,
        sim().get_process_info(p),
        |info| {
            let pid = info.pid;
            (None, pid, Some(common::stdio(info, &Extra::default())))
        },
        false,
    )
}

#[no_mangle]
pub unsafe extern "system" fn HcsSetProcessCallback(
    process: HANDLE,
    _callback_options: i32,
    context: *const c_void,
    callback: Option<EventCallback>,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { set_callback(process as usize as u64, context, callback, false) }
}

// ------------------------------------------------------------------------------------------
// Service

#[no_mangle]
pub unsafe extern "system" fn HcsGetServiceProperties(property_query: PCWSTR, result: *mut PWSTR) -> HRESULT {
    // SAFETY: HCS contract.
    let q = unsafe { s(property_query) };
    match sim().get_service_properties(&q) {
        Ok(r) => {
            // SAFETY: out-slot per HCS contract.
            unsafe { STRINGS.put(result, Some(&r.value)) };
            0
        }
        // SAFETY: out-slot per HCS contract.
        Err(f) => unsafe { common::fail(&STRINGS, result, f) },
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsModifyServiceSettings(settings: PCWSTR, result: *mut PWSTR) -> HRESULT {
    // SAFETY: HCS contract.
    let q = unsafe { s(settings) };
    match sim().modify_service_settings(&q) {
        Ok(r) => {
            // SAFETY: out-slot per HCS contract.
            unsafe { STRINGS.put(result, r.document.as_deref()) };
            0
        }
        // SAFETY: out-slot per HCS contract.
        Err(f) => unsafe { common::fail(&STRINGS, result, f) },
    }
}

// ------------------------------------------------------------------------------------------
// Test-only exports

/// Operations created and not yet closed.
#[no_mangle]
pub extern "system" fn FakeHcsOpenOperations() -> i64 {
    lock(&fake().ops).len() as i64
}

/// Rule violations of the client seen so far (see the crate doc).
#[no_mangle]
pub extern "system" fn FakeHcsViolations() -> i64 {
    fake().violations.load(Ordering::SeqCst) as i64
}

common::test_exports!(
    strings: STRINGS,
    sim: sim(),
    subscriptions: lock(&fake().events).len(),
);
