//! The V2 driver against a fake `computecore.dll`: Rust `unsafe extern "system"` functions with a
//! small operation state machine (operations complete from their own threads, results carry
//! documents allocated by the fake and counted on free). Runs natively and under Wine.
#![allow(unsafe_code)]

use hcs::notify::Subscription;
use hcs::{Driver, Failure, HResult, NotificationKind, NotifyContext};
use hcs_computecore::ffi::{
    self, HANDLE, HCS_OPERATION, HCS_PROCESS, HCS_PROCESS_INFORMATION, HCS_SYSTEM, HRESULT, PCWSTR, PWSTR,
};
use hcs_computecore::table::{EventCallback, OperationCompletion, HCS_EVENT};
use hcs_computecore::{ComputeCoreDriver, ComputeCoreTable, LoadError};
use hcs_ffi::test_support::fake_table::{
    collector, lookup, wide, wide_nul, Core, FakeStdio, Global, Latch, PoisonOnFree,
};
use std::collections::HashMap;
use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// Freed memory reads as `0xDDDD` units: a fake reading an input string the driver already
/// freed sees garbage, not the old text.
#[global_allocator]
static ALLOC: PoisonOnFree = PoisonOnFree;

const E_ACCESSDENIED: HRESULT = 0x8007_0005_u32 as i32;
const E_INVALIDARG: HRESULT = 0x8007_0057_u32 as i32;
const E_NOTIMPL: HRESULT = 0x8000_4001_u32 as i32;
const NOT_STARTED: HRESULT = 0x8037_0115_u32 as i32;

#[derive(Clone, Default)]
struct Script {
    /// HRESULT of the API call itself (a synchronous failure when negative)
    call: HRESULT,
    /// the operation's result
    result: HRESULT,
    doc: Option<Vec<u16>>,
    /// do not complete the operation by itself (tests trigger it)
    hold: bool,
    /// complete the operation before the call returns, on another thread, and keep that
    /// completion "running" (HCS's own work after the callback) until the call has returned
    early: bool,
}

#[derive(Default)]
struct Op {
    ctx: usize,
    cb: Option<OperationCompletion>,
    result: Option<(HRESULT, Option<Vec<u16>>, [usize; 3])>,
    closes: usize,
    name: &'static str,
    /// The input strings the call received: (pointer, units as read during the call).
    inputs: Vec<(usize, Vec<u16>)>,
    /// The thread running the operation's completion callback right now.
    completing_on: Option<ThreadId>,
}

#[derive(Default)]
struct State {
    core: Core,
    ops: HashMap<usize, Op>,
    closed_processes: usize,
    scripts: HashMap<&'static str, Script>,
    callbacks: Vec<(usize, i32, EventCallback, usize)>,
    cancels: usize,
    /// create-process hands out a process handle even when its operation fails
    process_handle_on_failure: bool,
    /// HcsCancelOperation completes the operation from another thread before it returns and
    /// keeps that completion "running" until it has returned
    complete_on_cancel: bool,
    /// runs (outside the fake's lock) inside HcsCloseComputeSystem, after the handle is closed
    on_close_system: Option<Box<dyn FnOnce() + Send>>,
    /// rule violations the fake saw (checked by `assert_all_closed_and_freed`)
    violations: Vec<String>,
    /// `HcsAddResourceToOperation` calls: (operation, type, uri, handle)
    resources: Vec<(usize, i32, String, usize)>,
}

static FAKE: Global<State> = Global::new();

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    FAKE.with(f)
}

/// Serialises the tests (the fake's state is global) and resets the fake.
fn begin() -> MutexGuard<'static, ()> {
    FAKE.begin(State {
        core: Core::new(0x4000),
        ..State::default()
    })
}

fn script(name: &'static str, s: Script) {
    with(|st| st.scripts.insert(name, s));
}

fn ok_doc(doc: &str) -> Script {
    Script {
        doc: Some(wide(doc)),
        ..Script::default()
    }
}

fn calls(name: &str) -> usize {
    with(|s| s.core.calls(name))
}

unsafe extern "system" fn fake_free(p: *mut c_void) {
    with(|s| s.core.free(p))
}

/// Records an API call on `op` (with the input strings it received) and applies its script.
/// Returns the call's HRESULT.
fn start_op(name: &'static str, op: HCS_OPERATION, inputs: &[PCWSTR]) -> HRESULT {
    let inputs: Vec<(usize, Vec<u16>)> = inputs
        .iter()
        .filter(|p| !p.is_null())
        // SAFETY: the driver passes NUL-terminated strings valid for the call.
        .map(|&p| (p as usize, unsafe { ffi::wide_units(p) }.to_vec()))
        .collect();
    let (call, cb, ctx, sc) = with(|s| {
        s.core.call(name);
        let sc = s.scripts.get(name).cloned().unwrap_or_default();
        let stdio = s.core.stdio;
        let o = s
            .ops
            .get_mut(&(op as usize))
            .expect("call with an unknown operation");
        assert_eq!(o.closes, 0, "{name}: operation used after close");
        o.name = name;
        o.inputs = inputs;
        if sc.call >= 0 {
            o.result = Some((sc.result, sc.doc.clone(), stdio));
        }
        (sc.call, o.cb, o.ctx, sc)
    });
    if call >= 0 && !sc.hold {
        if let Some(cb) = cb {
            let op = op as usize;
            if sc.early {
                // Completed before the call returns; the completion stays "running" until
                // 100 ms after the call returned, so a close from the submitting thread in that
                // window is seen as concurrent with the callback.
                let returned = Latch::new();
                let callback_returned = Latch::new();
                let (r, cr) = (returned.clone(), callback_returned.clone());
                std::thread::spawn(move || {
                    run_completion(op, cb, ctx, || {
                        cr.set();
                        r.wait(Duration::from_secs(5));
                        std::thread::sleep(Duration::from_millis(100));
                    })
                });
                callback_returned.wait(Duration::from_secs(5));
                returned.set();
            } else {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(10));
                    run_completion(op, cb, ctx, || {});
                });
            }
        }
    }
    call
}

/// Completes operation `op` as HCS's completion thread does: first checks that the input
/// strings its call received are still intact (the driver must keep them alive until the
/// completion), then marks the completion running (a close from another thread meanwhile is a
/// violation), calls the callback, runs `after` (HCS's own work after the callback returned)
/// and only then marks it finished.
fn run_completion(op: usize, cb: OperationCompletion, ctx: usize, after: impl FnOnce()) {
    let inputs = with(|s| s.ops.get(&op).map(|o| o.inputs.clone()).unwrap_or_default());
    for (p, units) in inputs {
        // Reading a freed string is exactly the bug this looks for; the test binary's allocator
        // poisons freed blocks so such a read shows garbage rather than the old text.
        // SAFETY: the driver promised (issue 13 item 9) to keep the string alive until now.
        let now = unsafe { std::slice::from_raw_parts(p as *const u16, units.len() + 1) };
        if now[..units.len()] != units[..] || now[units.len()] != 0 {
            let msg = format!(
                "input string of operation {op:#x} changed before its completion: {:?} -> {:?}",
                String::from_utf16_lossy(&units),
                String::from_utf16_lossy(now)
            );
            with(|s| s.violations.push(msg));
        }
    }
    with(|s| {
        if let Some(o) = s.ops.get_mut(&op) {
            o.completing_on = Some(std::thread::current().id());
        }
    });
    // SAFETY: the driver's completion trampoline with its own context.
    unsafe { cb(op as HCS_OPERATION, ctx as *const c_void) };
    after();
    with(|s| {
        if let Some(o) = s.ops.get_mut(&op) {
            o.completing_on = None;
        }
    });
}

/// Completes a held operation now, from another thread.
fn complete_held(name: &str) {
    let (op, cb, ctx) = with(|s| {
        let (op, o) = s
            .ops
            .iter()
            .find(|(_, o)| o.name == name && o.closes == 0)
            .expect("held op");
        (*op, o.cb.expect("callback"), o.ctx)
    });
    std::thread::spawn(move || run_completion(op, cb, ctx, || {}))
        .join()
        .unwrap();
}

fn result_of(op: HCS_OPERATION, info: *mut HCS_PROCESS_INFORMATION, doc: *mut PWSTR) -> HRESULT {
    with(|s| {
        let o = s.ops.get(&(op as usize)).expect("unknown op");
        assert_eq!(o.closes, 0, "result of a closed operation");
        let Some((hr, d, stdio)) = o.result.clone() else {
            return NOT_STARTED;
        };
        if let Some(d) = d {
            // SAFETY: valid out-slot from the driver.
            unsafe { *doc = s.core.alloc(&d) };
        }
        if !info.is_null() && hr >= 0 {
            // SAFETY: valid out-parameter from the driver.
            unsafe {
                *info = HCS_PROCESS_INFORMATION {
                    ProcessId: 77,
                    Reserved: 0,
                    StdInput: stdio[0] as HANDLE,
                    StdOutput: stdio[1] as HANDLE,
                    StdError: stdio[2] as HANDLE,
                }
            };
        }
        hr
    })
}

// ----------------------------------------------------------------------------- exports

unsafe extern "system" fn create_operation(
    ctx: *const c_void,
    cb: Option<OperationCompletion>,
) -> HCS_OPERATION {
    with(|s| {
        let h = s.core.handle();
        s.ops.insert(
            h,
            Op {
                ctx: ctx as usize,
                cb,
                ..Op::default()
            },
        );
        h as HCS_OPERATION
    })
}

unsafe extern "system" fn close_operation(op: HCS_OPERATION) {
    with(|s| {
        let o = s.ops.get_mut(&(op as usize)).expect("close of unknown op");
        o.closes += 1;
        let here = std::thread::current().id();
        if o.completing_on.is_some_and(|t| t != here) {
            let msg = format!(
                "operation {:#x} ({}) closed on another thread while its completion callback ran",
                op as usize, o.name
            );
            s.violations.push(msg);
        }
    });
}

unsafe extern "system" fn get_result(op: HCS_OPERATION, doc: *mut PWSTR) -> HRESULT {
    result_of(op, std::ptr::null_mut(), doc)
}

unsafe extern "system" fn get_result_info(
    op: HCS_OPERATION,
    info: *mut HCS_PROCESS_INFORMATION,
    doc: *mut PWSTR,
) -> HRESULT {
    result_of(op, info, doc)
}

unsafe extern "system" fn wait_result(op: HCS_OPERATION, timeout: u32, doc: *mut PWSTR) -> HRESULT {
    assert_eq!(timeout, ffi::INFINITE);
    result_of(op, std::ptr::null_mut(), doc)
}

unsafe extern "system" fn wait_result_info(
    op: HCS_OPERATION,
    timeout: u32,
    info: *mut HCS_PROCESS_INFORMATION,
    doc: *mut PWSTR,
) -> HRESULT {
    assert_eq!(timeout, ffi::INFINITE);
    result_of(op, info, doc)
}

unsafe extern "system" fn cancel_operation(op: HCS_OPERATION) -> HRESULT {
    let complete = with(|s| {
        let o = &s.ops[&(op as usize)];
        assert_eq!(o.closes, 0, "cancel of a closed operation");
        s.cancels += 1;
        (s.complete_on_cancel && o.completing_on.is_none()).then(|| (o.cb.expect("callback"), o.ctx))
    });
    if let Some((cb, ctx)) = complete {
        // The operation completes (on another thread) while the cancel call runs; the
        // completion stays "running" until 100 ms after this call returned.
        let op = op as usize;
        let returned = Latch::new();
        let callback_returned = Latch::new();
        let (r, cr) = (returned.clone(), callback_returned.clone());
        std::thread::spawn(move || {
            run_completion(op, cb, ctx, || {
                cr.set();
                r.wait(Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(100));
            })
        });
        // A driver whose callback waits for this cancel call to finish never returns from it:
        // give up waiting after a while, as HCS would not wait at all.
        callback_returned.wait(Duration::from_millis(300));
        returned.set();
    }
    E_NOTIMPL
}

unsafe extern "system" fn enumerate(q: PCWSTR, op: HCS_OPERATION) -> HRESULT {
    start_op("enumerate", op, &[q])
}

unsafe extern "system" fn create_system(
    id: PCWSTR,
    config: PCWSTR,
    op: HCS_OPERATION,
    sd: *const c_void,
    out: *mut HCS_SYSTEM,
) -> HRESULT {
    assert!(sd.is_null());
    let hr = start_op("create", op, &[id, config]);
    if hr >= 0 {
        let h = with(|s| s.core.open_system());
        // SAFETY: valid out-slot.
        unsafe { *out = h as HCS_SYSTEM };
    }
    hr
}

unsafe extern "system" fn open_system(_id: PCWSTR, access: u32, out: *mut HCS_SYSTEM) -> HRESULT {
    assert_eq!(access, 0x1000_0000);
    let h = with(|s| s.core.open_system());
    // SAFETY: valid out-slot.
    unsafe { *out = h as HCS_SYSTEM };
    0
}

unsafe extern "system" fn close_system(sys: HCS_SYSTEM) {
    let hook = with(|s| {
        assert!(s.core.close_system(sys as usize), "close of unknown system");
        s.on_close_system.take()
    });
    if let Some(hook) = hook {
        hook();
    }
}

macro_rules! sys_op {
    ($name:ident, $label:literal) => {
        unsafe extern "system" fn $name(_sys: HCS_SYSTEM, op: HCS_OPERATION, options: PCWSTR) -> HRESULT {
            start_op($label, op, &[options])
        }
    };
}
sys_op!(start, "start");
sys_op!(shutdown, "shutdown");
sys_op!(terminate, "terminate");
sys_op!(pause, "pause");
sys_op!(resume, "resume");
sys_op!(save, "save");
sys_op!(properties, "properties");
sys_op!(lm_init, "lm_init");
sys_op!(lm_start, "lm_start");

unsafe extern "system" fn add_resource(op: HCS_OPERATION, kind: i32, uri: PCWSTR, handle: HANDLE) -> HRESULT {
    let mut units = Vec::new();
    let mut p = uri;
    // SAFETY: the driver passes a NUL-terminated string valid for the call.
    unsafe {
        while *p != 0 {
            units.push(*p);
            p = p.add(1);
        }
    }
    let uri = String::from_utf16_lossy(&units);
    with(|s| s.resources.push((op as usize, kind, uri, handle as usize)));
    0
}

unsafe extern "system" fn modify(
    _sys: HCS_SYSTEM,
    op: HCS_OPERATION,
    c: PCWSTR,
    identity: HANDLE,
) -> HRESULT {
    assert!(identity.is_null());
    start_op("modify", op, &[c])
}

unsafe extern "system" fn set_callback(
    h: *mut c_void,
    options: i32,
    ctx: *const c_void,
    cb: Option<EventCallback>,
) -> HRESULT {
    with(|s| {
        s.callbacks
            .push((h as usize, options, cb.expect("callback"), ctx as usize))
    });
    0
}

unsafe extern "system" fn create_process(
    _sys: HCS_SYSTEM,
    params: PCWSTR,
    op: HCS_OPERATION,
    _sd: *const c_void,
    out: *mut HCS_PROCESS,
) -> HRESULT {
    let hr = start_op("create_process", op, &[params]);
    let give = hr >= 0 || with(|s| s.process_handle_on_failure);
    if give {
        let h = with(|s| s.core.open_process());
        // SAFETY: valid out-slot.
        unsafe { *out = h as HCS_PROCESS };
    }
    hr
}

unsafe extern "system" fn open_process(
    _sys: HCS_SYSTEM,
    _pid: u32,
    access: u32,
    out: *mut HCS_PROCESS,
) -> HRESULT {
    assert_eq!(access, 0x1000_0000);
    let h = with(|s| s.core.open_process());
    // SAFETY: valid out-slot.
    unsafe { *out = h as HCS_PROCESS };
    0
}

unsafe extern "system" fn close_process(p: HCS_PROCESS) {
    with(|s| {
        assert!(s.core.close_process(p as usize), "close of unknown process");
        s.closed_processes += 1;
    });
}

macro_rules! proc_op {
    ($name:ident, $label:literal) => {
        unsafe extern "system" fn $name(_p: HCS_PROCESS, op: HCS_OPERATION, o: PCWSTR) -> HRESULT {
            start_op($label, op, &[o])
        }
    };
}
proc_op!(terminate_process, "terminate_process");
proc_op!(signal_process, "signal_process");
proc_op!(process_properties, "process_properties");
proc_op!(modify_process, "modify_process");

unsafe extern "system" fn get_process_info(_p: HCS_PROCESS, op: HCS_OPERATION) -> HRESULT {
    start_op("process_info", op, &[])
}

unsafe extern "system" fn service_props(_q: PCWSTR, result: *mut PWSTR) -> HRESULT {
    // SAFETY: valid out-slot.
    with(|s| unsafe { *result = s.core.alloc_str(r#"{"SupportedSchemaVersions":[]}"#) });
    0
}

unsafe extern "system" fn service_modify(_q: PCWSTR, result: *mut PWSTR) -> HRESULT {
    // SAFETY: valid out-slot.
    with(|s| unsafe { *result = s.core.alloc_str(r#"{"Error":5}"#) });
    E_ACCESSDENIED
}

fn table() -> ComputeCoreTable {
    ComputeCoreTable {
        create_operation,
        close_operation,
        get_operation_result: get_result,
        get_operation_result_and_process_info: get_result_info,
        wait_for_operation_result: wait_result,
        wait_for_operation_result_and_process_info: wait_result_info,
        cancel_operation,
        enumerate_compute_systems: enumerate,
        create_compute_system: create_system,
        open_compute_system: open_system,
        close_compute_system: close_system,
        start_compute_system: start,
        shutdown_compute_system: shutdown,
        terminate_compute_system: terminate,
        pause_compute_system: pause,
        resume_compute_system: resume,
        save_compute_system: save,
        get_compute_system_properties: properties,
        modify_compute_system: modify,
        set_compute_system_callback: set_callback,
        create_process,
        open_process,
        close_process,
        terminate_process,
        signal_process,
        get_process_info,
        get_process_properties: process_properties,
        modify_process,
        set_process_callback: set_callback,
        get_service_properties: service_props,
        modify_service_settings: service_modify,
        crash_compute_system: None,
        wait_for_compute_system_exit: None,
        wait_for_process_exit: None,
        add_resource_to_operation: None,
        get_operation_properties: None,
        initialize_live_migration_on_source: None,
        start_live_migration_on_source: None,
        start_live_migration_transfer: None,
        finalize_live_migration: None,
        cancel_live_migration: None,
        free_string: fake_free,
        library: None,
    }
}

/// Waits (bounded) until every operation has been closed, then checks each was closed once and
/// every returned string was freed once.
fn assert_all_closed_and_freed() {
    let deadline = Instant::now() + Duration::from_secs(5);
    while with(|s| s.ops.values().any(|o| o.closes == 0)) {
        assert!(Instant::now() < deadline, "an operation was never closed");
        std::thread::sleep(Duration::from_millis(2));
    }
    with(|s| {
        for (h, o) in &s.ops {
            assert_eq!(
                o.closes, 1,
                "operation {h:#x} ({}) closed {} times",
                o.name, o.closes
            );
        }
        s.core.assert_no_leaks();
        assert!(s.violations.is_empty(), "{:#?}", s.violations);
    });
}

fn open_sys(d: &ComputeCoreDriver) -> hcs::SystemHandle {
    d.open_compute_system("sys").unwrap().value
}

// ----------------------------------------------------------------------------- tests

#[test]
fn pending_start_completes_through_the_operation_callback_from_another_thread() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let (sub, rx) = collector();
    let sys = open_sys(&d);
    script("start", ok_doc(r#"{"Started":true}"#));
    let reply = d.start_compute_system(sys, "", sub.context()).unwrap();
    assert!(reply.pending);
    let (kind, status, payload, thread) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(kind, NotificationKind::SystemStartCompleted);
    assert_eq!(status, HResult::S_OK);
    assert_eq!(payload.as_deref(), Some(r#"{"Started":true}"#));
    assert_ne!(thread, std::thread::current().id());
    d.close_compute_system(sys).unwrap();
    assert_all_closed_and_freed();
}

#[test]
fn asynchronous_failure_is_dispatched_with_its_hresult_and_result_document() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let (sub, rx) = collector();
    let sys = open_sys(&d);
    let doc = r#"{"Error":-2147024809,"ErrorEvents":[{"Message":"bad"}]}"#;
    for (name, kind) in [
        ("pause", NotificationKind::SystemPauseCompleted),
        ("resume", NotificationKind::SystemResumeCompleted),
        ("save", NotificationKind::SystemSaveCompleted),
    ] {
        script(
            name,
            Script {
                result: E_INVALIDARG,
                doc: Some(wide(doc)),
                ..Script::default()
            },
        );
        let r = match name {
            "pause" => d.pause_compute_system(sys, "", sub.context()),
            "resume" => d.resume_compute_system(sys, "", sub.context()),
            _ => d.save_compute_system(sys, r#"{"SaveType":"ToFile"}"#, sub.context()),
        };
        assert!(r.unwrap().pending);
        let (k, status, payload, _) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            (k, status, payload.as_deref()),
            (kind, HResult::E_INVALIDARG, Some(doc))
        );
    }
    d.close_compute_system(sys).unwrap();
    assert_all_closed_and_freed();
}

#[test]
fn pending_create_returns_its_handle_and_completes_with_system_create_completed() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let (sub, rx) = collector();
    let reply = d.create_compute_system("vm", "{}", sub.context()).unwrap();
    assert!(reply.pending);
    let (k, st, _, _) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((k, st), (NotificationKind::SystemCreateCompleted, HResult::S_OK));
    d.close_compute_system(reply.value).unwrap();
    with(|s| assert!(s.core.systems.is_empty()));
    assert_all_closed_and_freed();
}

#[test]
fn shutdown_and_terminate_are_submitted_and_report_pending_without_a_completion() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let (sub, rx) = collector();
    let sys = open_sys(&d);
    let _keep = sub;
    assert!(d.shutdown_compute_system(sys, "").unwrap().pending);
    script(
        "terminate",
        Script {
            result: E_ACCESSDENIED,
            ..Script::default()
        },
    );
    assert!(d.terminate_compute_system(sys, "").unwrap().pending);
    assert_all_closed_and_freed();
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "no completion kind for shutdown/terminate"
    );
    d.close_compute_system(sys).unwrap();
}

#[test]
fn synchronous_call_failure_reports_the_operation_result_document_freed_once() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let sys = open_sys(&d);
    // the call itself fails: the driver reads the operation's result document
    script(
        "modify",
        Script {
            call: E_ACCESSDENIED,
            ..Script::default()
        },
    );
    let err = d.modify_compute_system(sys, "{}").unwrap_err();
    assert_eq!(err, Failure::new(HResult::E_ACCESSDENIED)); // not started: no document
                                                            // the wait fails with a document
    script(
        "properties",
        Script {
            result: E_ACCESSDENIED,
            doc: Some(wide(r#"{"Error":5}"#)),
            ..Script::default()
        },
    );
    let err = d.get_compute_system_properties(sys, "{}").unwrap_err();
    assert_eq!(
        err,
        Failure::with_document(HResult::E_ACCESSDENIED, r#"{"Error":5}"#)
    );
    // an asynchronous call that fails synchronously is reported, not pending
    let (sub, rx) = collector();
    script(
        "start",
        Script {
            call: E_ACCESSDENIED,
            ..Script::default()
        },
    );
    assert_eq!(
        d.start_compute_system(sys, "", sub.context()).unwrap_err().code,
        HResult::E_ACCESSDENIED
    );
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    assert_eq!(hcs_computecore::pending_operations(), 0);
    d.close_compute_system(sys).unwrap();
    assert_all_closed_and_freed();
}

#[test]
fn synchronous_calls_wait_and_return_the_result_document_as_their_output() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let sys = open_sys(&d);
    script("properties", ok_doc(r#"{"State":"Running"}"#));
    assert_eq!(
        d.get_compute_system_properties(sys, "{}").unwrap().value,
        r#"{"State":"Running"}"#
    );
    script("enumerate", ok_doc(r#"[{"Id":"vm"}]"#));
    assert_eq!(d.enumerate_compute_systems("").unwrap().value, r#"[{"Id":"vm"}]"#);
    assert_eq!(
        d.enumerate_compute_systems("{}").unwrap().value,
        r#"[{"Id":"vm"}]"#
    );
    assert!(d.modify_compute_system(sys, "{}").unwrap().document.is_none());
    let p = d.open_process(sys, 9).unwrap().value;
    script("process_properties", ok_doc(r#"{"ExitCode":0}"#));
    assert_eq!(d.get_process_properties(p).unwrap().value, r#"{"ExitCode":0}"#);
    assert!(d.signal_process(p, "{}").is_ok());
    assert!(d.modify_process(p, "{}").is_ok());
    assert!(d.terminate_process(p).is_ok());
    assert_eq!(d.get_process_info(p).unwrap().value.pid, 77);
    d.close_process(p).unwrap();
    d.close_compute_system(sys).unwrap();
    assert_eq!(
        d.get_service_properties("{}").unwrap().value,
        r#"{"SupportedSchemaVersions":[]}"#
    );
    assert_eq!(
        d.modify_service_settings("{}").unwrap_err(),
        Failure::with_document(HResult::E_ACCESSDENIED, r#"{"Error":5}"#)
    );
    assert_all_closed_and_freed();
}

#[test]
fn cancel_is_tolerated_and_the_operation_stays_open_until_its_completion() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let (sub, rx) = collector();
    let sys = open_sys(&d);
    script(
        "start",
        Script {
            hold: true,
            ..Script::default()
        },
    );
    assert!(d.start_compute_system(sys, "", sub.context()).unwrap().pending);
    d.cancel_pending(sub.context(), NotificationKind::SystemStartCompleted)
        .unwrap(); // E_NOTIMPL tolerated
    with(|s| {
        assert_eq!(s.cancels, 1);
        assert!(
            s.ops.values().all(|o| o.closes == 0),
            "not closed before the completion"
        );
    });
    // a cancel for another kind touches nothing
    d.cancel_pending(sub.context(), NotificationKind::SystemPauseCompleted)
        .unwrap();
    assert_eq!(with(|s| s.cancels), 1);
    complete_held("start");
    let (k, ..) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(k, NotificationKind::SystemStartCompleted);
    d.close_compute_system(sys).unwrap();
    assert_all_closed_and_freed();
}

#[test]
fn completion_for_an_unknown_operation_id_is_a_noop() {
    let _g = begin();
    // SAFETY: the trampoline with an id that was never issued; the handle is never used.
    unsafe {
        hcs_computecore::operation_completion_trampoline(
            0x1234 as HCS_OPERATION,
            u64::MAX as usize as *const c_void,
        )
    };
    with(|s| assert!(s.ops.is_empty()));
}

#[test]
fn missing_live_migration_exports_are_unsupported_and_present_ones_are_waited_on() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let sys = open_sys(&d);
    type Step = fn(&ComputeCoreDriver, hcs::SystemHandle) -> hcs::DriverResult<()>;
    let steps: [Step; 4] = [
        |d, s| d.initialize_live_migration_on_source(s, "{}"),
        |d, s| d.start_live_migration_transfer(s, "{}"),
        |d, s| d.finalize_live_migration(s, "{}"),
        |d, s| d.cancel_live_migration(s, "{}"),
    ];
    for step in steps {
        assert_eq!(step(&d, sys).unwrap_err(), Failure::unsupported());
    }
    let mut t = table();
    t.initialize_live_migration_on_source = Some(lm_init);
    let d2 = ComputeCoreDriver::new(t);
    script(
        "lm_init",
        Script {
            result: E_ACCESSDENIED,
            ..Script::default()
        },
    );
    assert_eq!(
        d2.initialize_live_migration_on_source(sys, "").unwrap_err().code,
        HResult::E_ACCESSDENIED
    );
    assert_eq!(
        d2.finalize_live_migration(sys, "").unwrap_err(),
        Failure::unsupported()
    );
    d.close_compute_system(sys).unwrap();
    assert_all_closed_and_freed();
}

/// A connected loopback stream pair.
fn transport() -> (hcs::MigrationTransport, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (hcs::MigrationTransport::new(a).unwrap(), b)
}

#[test]
fn migration_starts_attach_the_socket_to_their_operation_and_need_add_resource() {
    let _g = begin();
    let (t, _peer) = transport();
    #[cfg(unix)]
    let fd = std::os::fd::AsRawFd::as_raw_fd(t.stream()) as usize;
    #[cfg(windows)]
    let fd = t.raw_socket() as usize;
    // Without HcsAddResourceToOperation (or the export) neither start can attach the socket.
    let mut partial = table();
    partial.start_live_migration_on_source = Some(lm_start);
    let d = ComputeCoreDriver::new(partial);
    let sys = open_sys(&d);
    assert_eq!(
        d.start_live_migration_on_source(sys, "{}", &t).unwrap_err(),
        Failure::unsupported()
    );
    assert_eq!(
        d.start_compute_system_as_migration_destination(sys, "{}", &t)
            .unwrap_err(),
        Failure::unsupported()
    );
    assert_eq!(d.enable_live_migration_events(sys), Err(Failure::unsupported()));
    assert_eq!(calls("lm_start"), 0);

    let mut full = table();
    full.add_resource_to_operation = Some(add_resource);
    full.initialize_live_migration_on_source = Some(lm_init);
    full.start_live_migration_on_source = Some(lm_start);
    full.start_live_migration_transfer = Some(lm_init);
    full.finalize_live_migration = Some(lm_init);
    // No HcsCancelLiveMigration: still a migration host, events enabled at registration.
    let d2 = ComputeCoreDriver::new(full);
    d2.start_live_migration_on_source(sys, r#"{"NetworkSettings":{"SessionId":3}}"#, &t)
        .unwrap();
    d2.start_compute_system_as_migration_destination(sys, "", &t)
        .unwrap();
    assert_eq!(d2.enable_live_migration_events(sys), Ok(()));
    assert_eq!(
        d2.cancel_live_migration(sys, "{}").unwrap_err(),
        Failure::unsupported()
    );
    d2.register_compute_system_callback(sys, NotifyContext::new(9).unwrap())
        .unwrap();
    let (resources, ops, options) = with(|s| {
        let ops: HashMap<&str, usize> = s.ops.iter().map(|(k, o)| (o.name, *k)).collect();
        let options = s.callbacks.last().map(|c| c.1);
        (s.resources.clone(), ops, options)
    });
    assert_eq!(resources.len(), 2);
    for (op, kind, uri, handle) in &resources {
        assert_eq!(
            (*kind, uri.as_str(), *handle),
            (4, "hcs:/VirtualMachine/LiveMigrationSocket", fd)
        );
        assert!(*op != 0);
    }
    assert_eq!(
        resources[0].0, ops["lm_start"],
        "the socket rides on the start-on-source operation"
    );
    assert_eq!(
        resources[1].0, ops["start"],
        "and on the destination's HcsStartComputeSystem"
    );
    assert_eq!(
        options,
        Some(4),
        "registration carries HcsEventOptionEnableLiveMigrationEvents"
    );
    d.close_compute_system(sys).unwrap();
    assert_all_closed_and_freed();
}

#[test]
fn create_process_recovers_through_get_process_info_when_the_wait_fails_with_a_handle() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let sys = open_sys(&d);
    with(|s| s.process_handle_on_failure = true);
    script(
        "create_process",
        Script {
            result: E_INVALIDARG,
            ..Script::default()
        },
    );
    let (p, info) = d.create_process(sys, r#"{"CommandLine":"cmd"}"#).unwrap().value;
    assert_eq!(info.pid, 77);
    assert_eq!(calls("process_info"), 1);
    d.close_process(p).unwrap();

    // recovery fails too: the original error, and the process handle is closed
    script(
        "process_info",
        Script {
            result: 0x8037_011F_u32 as i32,
            ..Script::default()
        },
    );
    let err = d.create_process(sys, "{}").unwrap_err();
    assert_eq!(err.code, HResult::E_INVALIDARG);
    with(|s| assert!(s.core.processes.is_empty()));

    // no handle: no recovery
    with(|s| s.process_handle_on_failure = false);
    script(
        "create_process",
        Script {
            call: E_ACCESSDENIED,
            ..Script::default()
        },
    );
    assert_eq!(
        d.create_process(sys, "{}").unwrap_err().code,
        HResult::E_ACCESSDENIED
    );
    assert_eq!(calls("process_info"), 2);
    d.close_compute_system(sys).unwrap();
    assert_all_closed_and_freed();
}

#[test]
fn create_process_never_requeries_after_a_successful_wait() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let sys = open_sys(&d);
    let (p, info) = d.create_process(sys, "{}").unwrap().value;
    assert_eq!(info.pid, 77);
    assert_eq!(calls("process_info"), 0);
    d.close_process(p).unwrap();
    d.close_compute_system(sys).unwrap();
    assert_all_closed_and_freed();
}

#[test]
fn process_stdio_handles_are_mapped_and_invalid_handle_value_is_absent() {
    let _g = begin();
    let d = ComputeCoreDriver::with_stdio(table(), FakeStdio::default());
    let sys = open_sys(&d);
    with(|s| s.core.stdio = [usize::MAX, 0x21, 0]);
    let (p, info) = d.create_process(sys, "{}").unwrap().value;
    assert!(info.stdin.is_none() && info.stderr.is_none());
    let mut b = Vec::new();
    io::Read::read_to_end(&mut info.stdout.unwrap(), &mut b).unwrap();
    assert_eq!(b, b"out21");
    d.close_process(p).unwrap();
    d.close_compute_system(sys).unwrap();
    assert_all_closed_and_freed();
}

#[test]
fn events_are_translated_from_v2_numbering_with_event_data_as_payload() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let (sub, rx) = collector();
    let sys = open_sys(&d);
    let scb = d.register_compute_system_callback(sys, sub.context()).unwrap();
    let p = d.open_process(sys, 1).unwrap().value;
    let pcb = d.register_process_callback(p, sub.context()).unwrap();
    let regs = with(|s| s.callbacks.clone());
    assert_eq!(regs.len(), 2);
    assert_eq!(regs[0].1, 0, "no live-migration events without the exports");
    assert_eq!(
        (regs[0].3 as u64, regs[1].3 as u64),
        (scb.raw(), pcb.raw()),
        "the context handed to HCS is the registration id (events go to the registry id)"
    );
    let (cb, ctx) = (regs[1].2, regs[1].3);
    let data = wide_nul(r#"{"ExitCode":3}"#);
    std::thread::spawn(move || {
        let ev = HCS_EVENT {
            Type: 0x1_0000,
            EventData: data.as_ptr(),
            Operation: std::ptr::null_mut(),
        };
        // SAFETY: the driver's event trampoline; `ev` and `data` outlive the call.
        unsafe {
            cb(&ev, ctx as *const c_void);
            cb(std::ptr::null(), ctx as *const c_void); // null event: ignored
            let disc = HCS_EVENT {
                Type: 0x200_0000,
                EventData: std::ptr::null(),
                Operation: std::ptr::null_mut(),
            };
            cb(&disc, ctx as *const c_void);
        }
    })
    .join()
    .unwrap();
    let (k, st, payload, _) = rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(
        (k, st, payload.as_deref()),
        (
            NotificationKind::ProcessExited,
            HResult::S_OK,
            Some(r#"{"ExitCode":3}"#)
        )
    );
    let (k, _, payload, _) = rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!((k, payload), (NotificationKind::ServiceDisconnect, None));
    // a late event after unregister is dropped by the driver (the registry entry is still live)
    d.unregister_process_callback(pcb).unwrap();
    let ev = HCS_EVENT {
        Type: 1,
        EventData: std::ptr::null(),
        Operation: std::ptr::null_mut(),
    };
    // SAFETY: as above.
    unsafe { cb(&ev, ctx as *const c_void) };
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    // closing without unregistering forgets the registration as well
    d.close_process(p).unwrap();
    d.close_compute_system(sys).unwrap();
    // SAFETY: as above.
    unsafe { (regs[0].2)(&ev, regs[0].3 as *const c_void) };
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    drop(sub);

    // with the live-migration exports the system callback asks for migration events
    let mut t = table();
    t.initialize_live_migration_on_source = Some(lm_init);
    t.start_live_migration_on_source = Some(lm_init);
    t.start_live_migration_transfer = Some(lm_init);
    t.finalize_live_migration = Some(lm_init);
    t.cancel_live_migration = Some(lm_init);
    let d = ComputeCoreDriver::new(t);
    let sys = open_sys(&d);
    d.register_compute_system_callback(sys, NotifyContext::new(5).unwrap())
        .unwrap();
    assert_eq!(with(|s| s.callbacks.last().unwrap().1), 4);
    d.close_compute_system(sys).unwrap();
}

/// Fires a `SystemExited` event at the last registration the fake saw, from a new thread.
fn fire_last_registration() -> std::thread::JoinHandle<()> {
    let (cb, ctx) = with(|s| {
        let r = s.callbacks.last().expect("a registration");
        (r.2, r.3)
    });
    std::thread::spawn(move || {
        let ev = HCS_EVENT {
            Type: 1,
            EventData: std::ptr::null(),
            Operation: std::ptr::null_mut(),
        };
        // SAFETY: the driver's event trampoline with its own context; `ev` outlives the call.
        unsafe { cb(&ev, ctx as *const c_void) };
    })
}

#[test]
fn unregister_waits_for_a_running_callback_and_drops_later_events() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (entered_tx, release_rx) = (Mutex::new(entered_tx), Mutex::new(release_rx));
    let delivered = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let (delivered2, finished2) = (delivered.clone(), finished.clone());
    let sub = Subscription::new(move |_, _, _| {
        delivered2.fetch_add(1, Ordering::SeqCst);
        let _ = entered_tx.lock().unwrap().send(());
        let _ = release_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
        finished2.store(true, Ordering::SeqCst);
    });
    let sys = open_sys(&d);
    let cb = d.register_compute_system_callback(sys, sub.context()).unwrap();

    // A callback is running on an "HCS" thread while another thread unregisters.
    let hcs_thread = fire_last_registration();
    entered_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the callback is dispatching");
    let (done_tx, done_rx) = mpsc::channel();
    let d2 = d.clone();
    let finished3 = finished.clone();
    let unregistering = std::thread::spawn(move || {
        d2.unregister_compute_system_callback(cb).unwrap();
        let _ = done_tx.send(finished3.load(Ordering::SeqCst));
    });
    assert!(
        done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "unregister returned while a callback for the registration was still running"
    );
    release_tx.send(()).unwrap();
    let callback_had_returned = done_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("unregister returns once the running callback returned");
    assert!(callback_had_returned);
    hcs_thread.join().unwrap();
    unregistering.join().unwrap();
    assert_eq!(delivered.load(Ordering::SeqCst), 1);

    // After unregister returned, an event HCS still delivers is dropped: the subscription is
    // alive, so only the driver can have kept it from being dispatched.
    fire_last_registration().join().unwrap();
    assert_eq!(
        delivered.load(Ordering::SeqCst),
        1,
        "an event was dispatched after unregister returned"
    );
    d.close_compute_system(sys).unwrap();
    drop(sub);
}

#[test]
fn unregister_from_inside_its_own_callback_does_not_wait_for_itself() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let slot: Arc<OnceLock<(Arc<ComputeCoreDriver>, hcs::CallbackHandle)>> = Arc::new(OnceLock::new());
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let slot2 = slot.clone();
    let sub = Subscription::new(move |_, _, _| {
        let (d, cb) = slot2.get().expect("registered");
        d.unregister_compute_system_callback(*cb).unwrap();
        let _ = tx.lock().unwrap().send(());
    });
    let sys = open_sys(&d);
    let cb = d.register_compute_system_callback(sys, sub.context()).unwrap();
    let _ = slot.set((d.clone(), cb));
    fire_last_registration().join().unwrap();
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the callback unregistered itself and returned");
    fire_last_registration().join().unwrap();
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    d.close_compute_system(sys).unwrap();
    drop(sub);
}

// ----------------------------------------------------------------------------- issue 13, items 6-9

/// Item 6: the lifecycle drops the last driver while an operation is pending; HCS then
/// completes it. The completion callback must not hold (and so drop) the last table reference.
#[test]
fn dropping_the_driver_with_an_operation_pending_never_drops_its_table_on_the_callback_thread() {
    let _g = begin();
    let before = hcs_computecore::tables_dropped_in_callbacks();
    let d = ComputeCoreDriver::new(table());
    let (sub, rx) = collector();
    let sys = open_sys(&d);
    script(
        "start",
        Script {
            hold: true,
            ..Script::default()
        },
    );
    assert!(d.start_compute_system(sys, "", sub.context()).unwrap().pending);
    d.close_compute_system(sys).unwrap();
    drop(d);
    complete_held("start");
    let (k, st, ..) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((k, st), (NotificationKind::SystemStartCompleted, HResult::S_OK));
    assert_all_closed_and_freed();
    assert_eq!(
        hcs_computecore::tables_dropped_in_callbacks(),
        before,
        "the completion callback dropped the last reference to the driver's table"
    );
}

/// Item 7: the operation completes on another thread before the submitting call returns, and
/// HCS's completion is still running when the call returns: only the callback may close it.
#[test]
fn an_operation_completed_before_its_call_returns_is_never_closed_during_its_callback() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let (sub, rx) = collector();
    let sys = open_sys(&d);
    for name in ["start", "pause", "shutdown", "create"] {
        script(
            name,
            Script {
                early: true,
                ..Script::default()
            },
        );
    }
    assert!(d.start_compute_system(sys, "{}", sub.context()).unwrap().pending);
    let (k, ..) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(k, NotificationKind::SystemStartCompleted);
    assert!(d.pause_compute_system(sys, "", sub.context()).unwrap().pending);
    assert!(d.shutdown_compute_system(sys, "").unwrap().pending);
    let created = d.create_compute_system("early", "{}", sub.context()).unwrap();
    assert!(created.pending);
    assert_all_closed_and_freed();
    d.close_compute_system(created.value).unwrap();
    d.close_compute_system(sys).unwrap();
    assert_eq!(hcs_computecore::pending_operations(), 0);
}

/// Item 7: the operation completes (on another thread) while `cancel_pending` is using it; the
/// cancel call must not close it while the callback runs.
#[test]
fn cancel_racing_the_completion_never_closes_the_operation_during_its_callback() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let (sub, rx) = collector();
    let sys = open_sys(&d);
    script(
        "start",
        Script {
            hold: true,
            ..Script::default()
        },
    );
    with(|s| s.complete_on_cancel = true);
    assert!(d.start_compute_system(sys, "", sub.context()).unwrap().pending);
    d.cancel_pending(sub.context(), NotificationKind::SystemStartCompleted)
        .unwrap();
    let (k, ..) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(k, NotificationKind::SystemStartCompleted);
    assert_all_closed_and_freed();
    assert_eq!(with(|s| s.cancels), 1);
    d.close_compute_system(sys).unwrap();
}

/// Item 8: HCS reuses the handle value of a closed system for a system another thread opens
/// while the close is still in progress; that system's registration must survive the close.
#[test]
fn a_handle_value_reused_during_close_keeps_the_new_systems_registration() {
    let _g = begin();
    with(|s| s.core.reuse_handles = true);
    let d = ComputeCoreDriver::new(table());
    let (old_sub, old_rx) = collector();
    let (new_sub, new_rx) = collector();
    let a = open_sys(&d);
    d.register_compute_system_callback(a, old_sub.context()).unwrap();
    let reopened = Arc::new(Mutex::new(None));
    let (d2, r2, ctx2) = (d.clone(), reopened.clone(), new_sub.context());
    with(|s| {
        s.on_close_system = Some(Box::new(move || {
            std::thread::spawn(move || {
                let b = d2.open_compute_system("other").unwrap().value;
                let cb = d2.register_compute_system_callback(b, ctx2).unwrap();
                *r2.lock().unwrap() = Some((b, cb));
            })
            .join()
            .unwrap();
        }))
    });
    d.close_compute_system(a).unwrap();
    let (b, _cb) = reopened.lock().unwrap().take().expect("the hook ran");
    assert_eq!(b.raw(), a.raw(), "the fake reused the handle value");
    fire_last_registration().join().unwrap();
    let (k, ..) = new_rx
        .recv_timeout(Duration::from_secs(1))
        .expect("the new system's exit event is delivered");
    assert_eq!(k, NotificationKind::SystemExited);
    assert!(old_rx.try_recv().is_err());
    d.close_compute_system(b).unwrap();
    assert_eq!(hcs_computecore::live_registrations(), 0);
}

/// Item 9: HCS may read the input strings of an asynchronous call until the operation
/// completes; the fake re-reads them from the completion thread, after the call returned.
#[test]
fn input_strings_of_a_pending_call_stay_alive_until_its_completion() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let (sub, rx) = collector();
    let long = |tag: &str| format!(r#"{{"{tag}":"{}"}}"#, "x".repeat(200));
    let created = d
        .create_compute_system(&format!("vm-{}", "y".repeat(100)), &long("Config"), sub.context())
        .unwrap();
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let sys = created.value;
    for (name, kind) in [
        ("start", NotificationKind::SystemStartCompleted),
        ("pause", NotificationKind::SystemPauseCompleted),
        ("resume", NotificationKind::SystemResumeCompleted),
        ("save", NotificationKind::SystemSaveCompleted),
    ] {
        let options = long(name);
        let r = match name {
            "start" => d.start_compute_system(sys, &options, sub.context()),
            "pause" => d.pause_compute_system(sys, &options, sub.context()),
            "resume" => d.resume_compute_system(sys, &options, sub.context()),
            _ => d.save_compute_system(sys, &options, sub.context()),
        };
        assert!(r.unwrap().pending);
        let (k, ..) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(k, kind);
    }
    assert!(
        d.terminate_compute_system(sys, &long("Terminate"))
            .unwrap()
            .pending
    );
    assert_all_closed_and_freed();
    d.close_compute_system(sys).unwrap();
}

#[test]
fn interior_nul_is_rejected_before_any_operation_is_created() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let err = d
        .create_compute_system("a\0", "{}", NotifyContext::new(1).unwrap())
        .unwrap_err();
    assert_eq!(err.code, HResult::E_INVALIDARG);
    assert_eq!(
        d.enumerate_compute_systems("{\0").unwrap_err().code,
        HResult::E_INVALIDARG
    );
    with(|s| assert!(s.ops.is_empty()));
}

#[test]
fn invalid_utf16_in_a_result_document_is_a_clear_failure_and_is_freed() {
    let _g = begin();
    let d = ComputeCoreDriver::new(table());
    let sys = open_sys(&d);
    script(
        "properties",
        Script {
            doc: Some(vec![0xD800]),
            ..Script::default()
        },
    );
    assert_eq!(
        d.get_compute_system_properties(sys, "").unwrap_err().code,
        ffi::INVALID_UTF16
    );
    d.close_compute_system(sys).unwrap();
    assert_all_closed_and_freed();
}

#[test]
fn table_lookup_names_the_missing_required_export_and_leaves_optional_ones_empty() {
    let full = table();
    let mut exports: HashMap<&str, usize> = HashMap::new();
    exports.insert("HcsCreateOperation", full.create_operation as usize);
    // SAFETY: the one address returned has the field's signature.
    let err = unsafe { ComputeCoreTable::from_lookup(lookup(&exports), fake_free, None) }.unwrap_err();
    assert_eq!(
        err,
        LoadError::MissingExport {
            dll: "computecore.dll",
            export: "HcsCloseOperation"
        }
    );
    assert!(err.to_string().starts_with("driver unavailable"));
}

#[cfg(not(windows))]
#[test]
fn loading_off_windows_reports_driver_unavailable() {
    let err = ComputeCoreTable::load().unwrap_err();
    assert_eq!(
        err,
        LoadError::NotWindows {
            dll: "computecore.dll"
        }
    );
    assert!(ComputeCoreDriver::load().is_err());
}

#[cfg(windows)]
#[test]
fn loading_a_dll_without_the_exports_names_the_first_missing_one() {
    use hcs_computecore::DllSource;
    let err = ComputeCoreTable::load_from(&DllSource::Path("kernel32.dll".into())).unwrap_err();
    assert_eq!(
        err,
        LoadError::MissingExport {
            dll: "computecore.dll",
            export: "HcsCreateOperation"
        }
    );
    let err = ComputeCoreTable::load_from(&DllSource::Path("no-such-computecore.dll".into())).unwrap_err();
    assert!(matches!(err, LoadError::MissingDll { .. }), "{err}");
}
