//! The V1 driver against a fake `vmcompute.dll`: a table of Rust `unsafe extern "system"`
//! functions backed by a small state machine. Runs natively on any platform (on x86_64 Linux
//! `extern "system"` is the C ABI) and under Wine for the Windows target.
#![allow(unsafe_code)]

use hcs::{Driver, Failure, HResult, NotificationKind, NotifyContext};
use hcs_ffi::test_support::fake_table::{collector, lookup, wide, wide_nul, Core, FakeStdio, Global};
use hcs_vmcompute::ffi::{
    self, HANDLE, HCS_CALLBACK, HCS_PROCESS, HCS_PROCESS_INFORMATION, HCS_SYSTEM, HRESULT, PCWSTR, PWSTR,
};
use hcs_vmcompute::table::NotificationCallback;
use hcs_vmcompute::{LoadError, VmComputeDriver, VmComputeTable};
use std::collections::HashMap;
use std::ffi::c_void;
use std::io::{Read, Write};
use std::sync::MutexGuard;
use std::time::Duration;

const PENDING: HRESULT = 0xC037_0103_u32 as i32;
const E_ACCESSDENIED: HRESULT = 0x8007_0005_u32 as i32;
const NOT_FOUND: HRESULT = 0xC037_010E_u32 as i32;

// ----------------------------------------------------------------------------- fake state

#[derive(Default)]
struct State {
    core: Core,
    closed_systems: Vec<usize>,
    closed_processes: Vec<usize>,
    callbacks: HashMap<usize, (NotificationCallback, usize, bool)>,
    /// (hr, result document units) returned by the next calls that consult it
    script: HashMap<&'static str, (HRESULT, Option<Vec<u16>>)>,
    /// whether a pending start also completes via the callback
    complete_async: bool,
}

static FAKE: Global<State> = Global::new();

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    FAKE.with(f)
}

/// Serialises the tests (the fake's state is global) and resets the fake.
fn begin() -> MutexGuard<'static, ()> {
    FAKE.begin(State {
        core: Core::new(0x1000),
        ..State::default()
    })
}

fn script(op: &'static str, hr: HRESULT, doc: Option<&str>) {
    with(|s| s.script.insert(op, (hr, doc.map(wide))));
}

fn script_raw(op: &'static str, hr: HRESULT, doc: Vec<u16>) {
    with(|s| s.script.insert(op, (hr, Some(doc))));
}

fn calls(op: &str) -> usize {
    with(|s| s.core.calls(op))
}

unsafe extern "system" fn fake_free(p: *mut c_void) {
    with(|s| s.core.free(p))
}

/// Records a call and applies its script (default S_OK, no document) to `result`.
unsafe fn scripted(op: &'static str, result: *mut PWSTR) -> HRESULT {
    with(|s| {
        s.core.call(op);
        let (hr, doc) = s.script.get(op).cloned().unwrap_or((0, None));
        if let Some(doc) = doc {
            let p = s.core.alloc(&doc);
            // SAFETY: the driver passes a valid out-slot.
            unsafe { *result = p };
        }
        hr
    })
}

fn read(p: PCWSTR) -> String {
    // SAFETY: the driver passes NUL-terminated strings.
    String::from_utf16(unsafe { ffi::wide_units(p) }).unwrap()
}

// ----------------------------------------------------------------------------- fake exports

unsafe extern "system" fn enumerate(query: PCWSTR, systems: *mut PWSTR, result: *mut PWSTR) -> HRESULT {
    assert!(read(query).starts_with('{'));
    // SAFETY: valid out-slots from the driver.
    let hr = unsafe { scripted("enumerate", result) };
    if hr >= 0 {
        // SAFETY: as above.
        with(|s| unsafe { *systems = s.core.alloc_str(r#"[{"Id":"a"}]"#) });
    }
    hr
}

unsafe extern "system" fn create(
    id: PCWSTR,
    _config: PCWSTR,
    identity: HANDLE,
    system: *mut HCS_SYSTEM,
    result: *mut PWSTR,
) -> HRESULT {
    assert!(identity.is_null());
    let _ = read(id);
    // SAFETY: valid out-slots.
    let hr = unsafe { scripted("create", result) };
    if hr >= 0 || hr == PENDING || calls("create_returns_handle_on_failure") > 0 {
        let h = with(|s| s.core.open_system());
        // SAFETY: valid out-slot.
        unsafe { *system = h as HCS_SYSTEM };
    }
    hr
}

unsafe extern "system" fn open(_id: PCWSTR, system: *mut HCS_SYSTEM, result: *mut PWSTR) -> HRESULT {
    // SAFETY: valid out-slots.
    let hr = unsafe { scripted("open", result) };
    if hr >= 0 {
        let h = with(|s| s.core.open_system());
        // SAFETY: valid out-slot.
        unsafe { *system = h as HCS_SYSTEM };
    }
    hr
}

unsafe extern "system" fn close_system(system: HCS_SYSTEM) -> HRESULT {
    with(|s| {
        assert!(
            s.core.systems.remove(&(system as usize)),
            "close of unknown system {system:?}"
        );
        s.closed_systems.push(system as usize);
    });
    0
}

unsafe extern "system" fn start(system: HCS_SYSTEM, options: PCWSTR, result: *mut PWSTR) -> HRESULT {
    let _ = read(options);
    // SAFETY: valid out-slot.
    let hr = unsafe { scripted("start", result) };
    if hr == PENDING && with(|s| s.complete_async) {
        let (cb, ctx) = with(|s| {
            s.callbacks
                .values()
                .find(|(_, _, gone)| !gone)
                .map(|(cb, ctx, _)| (*cb, *ctx))
                .expect("start before register")
        });
        let _ = system;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let data = wide_nul(r#"{"Completed":true}"#);
            // SAFETY: the driver's trampoline with its own context; `data` outlives the call.
            unsafe { cb(3, ctx as *const c_void, 0, data.as_ptr()) };
        });
    }
    hr
}

unsafe extern "system" fn control(_system: HCS_SYSTEM, _options: PCWSTR, result: *mut PWSTR) -> HRESULT {
    // SAFETY: valid out-slot.
    unsafe { scripted("control", result) }
}

unsafe extern "system" fn properties(
    _system: HCS_SYSTEM,
    query: PCWSTR,
    props: *mut PWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    let _ = read(query);
    // SAFETY: valid out-slots.
    let hr = unsafe { scripted("properties", result) };
    let out = with(|s| s.script.get("properties_out").cloned());
    if let Some((_, Some(units))) = out {
        // SAFETY: valid out-slot.
        with(|s| unsafe { *props = s.core.alloc(&units) });
    }
    hr
}

unsafe extern "system" fn modify(_system: HCS_SYSTEM, config: PCWSTR, result: *mut PWSTR) -> HRESULT {
    let _ = read(config);
    // SAFETY: valid out-slot.
    unsafe { scripted("modify", result) }
}

unsafe extern "system" fn register(
    _handle: *mut c_void,
    cb: Option<NotificationCallback>,
    ctx: *const c_void,
    out: *mut HCS_CALLBACK,
) -> HRESULT {
    let h = with(|s| {
        s.core.call("register");
        let h = s.core.handle();
        s.callbacks
            .insert(h, (cb.expect("callback"), ctx as usize, false));
        h
    });
    // SAFETY: valid out-slot.
    unsafe { *out = h as HCS_CALLBACK };
    0
}

unsafe extern "system" fn unregister(cb: HCS_CALLBACK) -> HRESULT {
    with(|s| match s.callbacks.get_mut(&(cb as usize)) {
        Some(e) if !e.2 => {
            e.2 = true;
            0
        }
        _ => E_ACCESSDENIED,
    })
}

unsafe extern "system" fn create_process(
    _system: HCS_SYSTEM,
    params: PCWSTR,
    info: *mut HCS_PROCESS_INFORMATION,
    process: *mut HCS_PROCESS,
    result: *mut PWSTR,
) -> HRESULT {
    let _ = read(params);
    // SAFETY: valid out-slots.
    let hr = unsafe { scripted("create_process", result) };
    if hr >= 0 {
        let (h, stdio) = with(|s| (s.core.open_process(), s.core.stdio));
        // SAFETY: valid out-slots.
        unsafe {
            *process = h as HCS_PROCESS;
            *info = HCS_PROCESS_INFORMATION {
                ProcessId: 42,
                Reserved: 0,
                StdInput: stdio[0] as HANDLE,
                StdOutput: stdio[1] as HANDLE,
                StdError: stdio[2] as HANDLE,
            };
        }
    }
    hr
}

unsafe extern "system" fn open_process(
    _system: HCS_SYSTEM,
    _pid: u32,
    process: *mut HCS_PROCESS,
    result: *mut PWSTR,
) -> HRESULT {
    // SAFETY: valid out-slot.
    let hr = unsafe { scripted("open_process", result) };
    if hr >= 0 {
        let h = with(|s| s.core.open_process());
        // SAFETY: valid out-slot.
        unsafe { *process = h as HCS_PROCESS };
    }
    hr
}

unsafe extern "system" fn close_process(process: HCS_PROCESS) -> HRESULT {
    with(|s| {
        assert!(s.core.processes.remove(&(process as usize)));
        s.closed_processes.push(process as usize);
    });
    0
}

unsafe extern "system" fn terminate_process(_p: HCS_PROCESS, result: *mut PWSTR) -> HRESULT {
    // SAFETY: valid out-slot.
    unsafe { scripted("terminate_process", result) }
}

unsafe extern "system" fn process_control(_p: HCS_PROCESS, _o: PCWSTR, result: *mut PWSTR) -> HRESULT {
    // SAFETY: valid out-slot.
    unsafe { scripted("process_control", result) }
}

unsafe extern "system" fn process_info(
    _p: HCS_PROCESS,
    info: *mut HCS_PROCESS_INFORMATION,
    result: *mut PWSTR,
) -> HRESULT {
    // SAFETY: valid out-slots.
    unsafe {
        (*info).ProcessId = 42;
        scripted("process_info", result)
    }
}

unsafe extern "system" fn process_properties(
    _p: HCS_PROCESS,
    props: *mut PWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    // SAFETY: valid out-slots.
    let hr = unsafe { scripted("process_properties", result) };
    // SAFETY: valid out-slot.
    with(|s| unsafe { *props = s.core.alloc_str(r#"{"ExitCode":3}"#) });
    hr
}

fn table() -> VmComputeTable {
    VmComputeTable {
        enumerate_compute_systems: enumerate,
        create_compute_system: create,
        open_compute_system: open,
        close_compute_system: close_system,
        start_compute_system: start,
        shutdown_compute_system: control,
        terminate_compute_system: control,
        pause_compute_system: control,
        resume_compute_system: control,
        save_compute_system: control,
        get_compute_system_properties: properties,
        modify_compute_system: modify,
        register_compute_system_callback: register,
        unregister_compute_system_callback: unregister,
        create_process,
        open_process,
        close_process,
        terminate_process,
        signal_process: process_control,
        get_process_info: process_info,
        get_process_properties: process_properties,
        modify_process: process_control,
        register_process_callback: register,
        unregister_process_callback: unregister,
        get_service_properties: None,
        modify_service_settings: None,
        free_string: fake_free,
        library: None,
    }
}

fn assert_no_leaks() {
    with(|s| s.core.assert_no_leaks());
}

fn sys_handle(d: &VmComputeDriver, ctx: NotifyContext) -> hcs::SystemHandle {
    d.create_compute_system("sys", "{}", ctx).unwrap().value
}

// ----------------------------------------------------------------------------- tests

#[test]
fn pending_start_completes_through_the_callback_from_another_thread() {
    let _g = begin();
    let d = VmComputeDriver::new(table());
    let (sub, rx) = collector();
    let sys = sys_handle(&d, sub.context());
    let cb = d.register_compute_system_callback(sys, sub.context()).unwrap();
    with(|s| s.complete_async = true);
    script("start", PENDING, None);

    let reply = d.start_compute_system(sys, "", sub.context()).unwrap();
    assert!(
        reply.pending,
        "0xC0370103 is reported as pending, not as a failure"
    );
    let (kind, status, payload, thread) = rx.recv_timeout(Duration::from_secs(5)).expect("completion");
    assert_eq!(kind, NotificationKind::SystemStartCompleted);
    assert_eq!(status, HResult::S_OK);
    assert_eq!(payload.as_deref(), Some(r#"{"Completed":true}"#));
    assert_ne!(thread, std::thread::current().id());

    d.unregister_compute_system_callback(cb).unwrap();
    d.close_compute_system(sys).unwrap();
    assert_no_leaks();
}

#[test]
fn pending_create_returns_its_handle_and_other_pending_capable_calls_report_pending() {
    let _g = begin();
    let d = VmComputeDriver::new(table());
    let ctx = NotifyContext::new(7).unwrap();
    script("create", PENDING, None);
    let reply = d.create_compute_system("sys", "{}", ctx).unwrap();
    assert!(reply.pending);
    let sys = reply.value;
    script("control", PENDING, None);
    assert!(d.shutdown_compute_system(sys, "").unwrap().pending);
    assert!(d.terminate_compute_system(sys, "").unwrap().pending);
    assert!(d.pause_compute_system(sys, "", ctx).unwrap().pending);
    assert!(d.resume_compute_system(sys, "", ctx).unwrap().pending);
    assert!(d.save_compute_system(sys, "{}", ctx).unwrap().pending);
    script("control", 0, None);
    assert!(!d.pause_compute_system(sys, "", ctx).unwrap().pending);
    d.close_compute_system(sys).unwrap();
    assert!(with(|s| s.core.systems.is_empty()));
}

#[test]
fn pending_code_from_a_call_that_cannot_pend_is_an_ordinary_failure() {
    let _g = begin();
    let d = VmComputeDriver::new(table());
    let sys = sys_handle(&d, NotifyContext::new(1).unwrap());
    script("modify", PENDING, None);
    let err = d.modify_compute_system(sys, "{}").unwrap_err();
    assert_eq!(err.code, HResult::ERROR_VMCOMPUTE_OPERATION_PENDING);
    d.close_compute_system(sys).unwrap();
}

#[test]
fn synchronous_failure_carries_the_result_document_which_is_freed_exactly_once() {
    let _g = begin();
    let d = VmComputeDriver::new(table());
    let doc = r#"{"Error":-2147024891,"ErrorMessage":"Access is denied."}"#;
    script("create", E_ACCESSDENIED, Some(doc));
    let err = d
        .create_compute_system("sys", "{}", NotifyContext::new(1).unwrap())
        .unwrap_err();
    assert_eq!(err, Failure::with_document(HResult::E_ACCESSDENIED, doc));
    with(|s| {
        assert_eq!(s.core.allocated, 1);
        assert_eq!(s.core.freed, 1);
    });
    assert_no_leaks();
}

#[test]
fn failed_create_that_still_produced_a_handle_closes_it() {
    let _g = begin();
    let d = VmComputeDriver::new(table());
    with(|s| s.core.calls.insert("create_returns_handle_on_failure", 1));
    script("create", NOT_FOUND, None);
    let err = d
        .create_compute_system("sys", "{}", NotifyContext::new(1).unwrap())
        .unwrap_err();
    assert_eq!(err.code, HResult::ERROR_VMCOMPUTE_SYSTEM_NOT_FOUND);
    with(|s| {
        assert!(s.core.systems.is_empty(), "the stray handle was closed");
        assert_eq!(s.closed_systems.len(), 1);
    });
}

#[test]
fn result_strings_are_freed_exactly_once_on_success_and_failure_paths() {
    let _g = begin();
    let d = VmComputeDriver::new(table());
    let sys = sys_handle(&d, NotifyContext::new(1).unwrap());
    // success with output and a result document
    with(|s| {
        s.script
            .insert("properties_out", (0, Some(wide(r#"{"State":"Running"}"#))))
    });
    script("properties", 0, Some(r#"{"Info":1}"#));
    let reply = d.get_compute_system_properties(sys, "{}").unwrap();
    assert_eq!(reply.value, r#"{"State":"Running"}"#);
    assert_eq!(reply.document.as_deref(), Some(r#"{"Info":1}"#));
    // failure with output and a result document: both freed, the failure carries the document
    script("properties", E_ACCESSDENIED, Some(r#"{"Error":5}"#));
    let err = d.get_compute_system_properties(sys, "{}").unwrap_err();
    assert_eq!(err.document.as_deref(), Some(r#"{"Error":5}"#));
    // enumerate: output only
    assert_eq!(
        d.enumerate_compute_systems("{}").unwrap().value,
        r#"[{"Id":"a"}]"#
    );
    // null output reads as ""
    with(|s| s.script.remove("properties_out"));
    script("properties", 0, None);
    assert_eq!(d.get_compute_system_properties(sys, "{}").unwrap().value, "");
    // process properties
    let p = d.create_process(sys, "{}").unwrap().value.0;
    assert_eq!(d.get_process_properties(p).unwrap().value, r#"{"ExitCode":3}"#);
    d.close_process(p).unwrap();
    d.close_compute_system(sys).unwrap();
    with(|s| assert_eq!(s.core.allocated, 6)); // 2 + 2 + 1 + 0 + 1
    assert_no_leaks();
}

#[test]
fn invalid_utf16_from_the_dll_is_a_clear_failure_and_nothing_leaks() {
    let _g = begin();
    let d = VmComputeDriver::new(table());
    let sys = sys_handle(&d, NotifyContext::new(1).unwrap());
    script_raw("modify", 0, vec![0x007B, 0xD800, 0x007D]); // lone surrogate
    let err = d.modify_compute_system(sys, "{}").unwrap_err();
    assert_eq!(err.code, ffi::INVALID_UTF16);
    // a create whose document is unreadable does not leak its handle either
    script_raw("create", 0, vec![0xDC00]);
    let err = d
        .create_compute_system("x", "{}", NotifyContext::new(1).unwrap())
        .unwrap_err();
    assert_eq!(err.code, HResult(0x8007_000D));
    d.close_compute_system(sys).unwrap();
    with(|s| assert!(s.core.systems.is_empty()));
    assert_no_leaks();
}

#[test]
fn interior_nul_is_rejected_before_the_call() {
    let _g = begin();
    let d = VmComputeDriver::new(table());
    let err = d
        .create_compute_system("a\0b", "{}", NotifyContext::new(1).unwrap())
        .unwrap_err();
    assert_eq!(err.code, HResult::E_INVALIDARG);
    assert_eq!(err.code.to_win32_form(), HResult::ERROR_INVALID_PARAMETER);
    assert_eq!(calls("create"), 0);
    assert_eq!(
        d.enumerate_compute_systems("{\0}").unwrap_err().code,
        HResult::E_INVALIDARG
    );
    assert_eq!(calls("enumerate"), 0);
}

#[test]
fn late_callback_after_unregister_is_a_noop() {
    let _g = begin();
    let d = VmComputeDriver::new(table());
    let (sub, rx) = collector();
    let ctx = sub.context();
    let sys = sys_handle(&d, ctx);
    let cb = d.register_compute_system_callback(sys, ctx).unwrap();
    let (f, raw_ctx, _) = with(|s| s.callbacks[&(cb.raw() as usize)]);
    assert_eq!(
        raw_ctx as u64,
        ctx.raw(),
        "the context handed to HCS is the registry id"
    );
    // a callback while registered arrives
    // SAFETY: the driver's trampoline, null data allowed.
    unsafe { f(1, raw_ctx as *const c_void, 0, std::ptr::null()) };
    let (k, _, payload, _) = rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!((k, payload), (NotificationKind::SystemExited, None));

    d.unregister_compute_system_callback(cb).unwrap();
    drop(sub); // the lifecycle removes the registry entry
    let t = std::thread::spawn(move || {
        // SAFETY: as above; HCS calling late, from its own thread.
        unsafe { f(0x0100_0000, raw_ctx as *const c_void, PENDING, std::ptr::null()) };
    });
    t.join().expect("late callback did not panic");
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "nothing delivered"
    );
    // unregistering twice is reported, not swallowed
    assert_eq!(
        d.unregister_compute_system_callback(cb).unwrap_err().code,
        HResult::E_ACCESSDENIED
    );
    d.close_compute_system(sys).unwrap();
}

#[test]
fn callbacks_from_many_threads_all_arrive() {
    let _g = begin();
    let d = VmComputeDriver::new(table());
    let (sub, rx) = collector();
    let sys = sys_handle(&d, sub.context());
    let p = d.create_process(sys, "{}").unwrap().value.0;
    let cb = d.register_process_callback(p, sub.context()).unwrap();
    let (f, raw_ctx, _) = with(|s| s.callbacks[&(cb.raw() as usize)]);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let data = wide_nul(&format!(r#"{{"n":{i}}}"#));
                // SAFETY: the trampoline with its context; `data` outlives the call.
                unsafe { f(0x1_0000, raw_ctx as *const c_void, 0, data.as_ptr()) };
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let got: Vec<_> = (0..8)
        .map(|_| rx.recv_timeout(Duration::from_secs(1)).unwrap())
        .collect();
    assert!(got.iter().all(|(k, ..)| *k == NotificationKind::ProcessExited));
    d.unregister_process_callback(cb).unwrap();
    d.close_process(p).unwrap();
    d.close_compute_system(sys).unwrap();
}

#[test]
fn stdio_handles_become_pipes_and_absent_ones_stay_absent() {
    let _g = begin();
    let stdio = FakeStdio::default();
    let d = VmComputeDriver::with_stdio(table(), stdio.clone());
    let sys = sys_handle(&d, NotifyContext::new(1).unwrap());
    with(|s| s.core.stdio = [0x51, 0x52, usize::MAX]); // stderr = INVALID_HANDLE_VALUE
    let (p, mut info) = d.create_process(sys, r#"{"CommandLine":"cmd"}"#).unwrap().value;
    assert_eq!(info.pid, 42);
    assert!(info.stderr.is_none());
    let mut out = String::new();
    info.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(out, "out52");
    info.stdin.take().unwrap().write_all(b"x").unwrap();
    assert_eq!(stdio.seen(), vec![("writer", 0x51), ("reader", 0x52)]);
    d.close_process(p).unwrap();
    d.close_compute_system(sys).unwrap();
}

#[test]
fn stdio_conversion_failure_closes_everything_and_reports_the_failure() {
    let _g = begin();
    let stdio = FakeStdio {
        fail_on: 0x52,
        ..FakeStdio::default()
    };
    let d = VmComputeDriver::with_stdio(table(), stdio.clone());
    let sys = sys_handle(&d, NotifyContext::new(1).unwrap());
    with(|s| s.core.stdio = [0x51, 0x52, 0x53]);
    let err = d.create_process(sys, "{}").unwrap_err();
    assert_eq!(err.code, HResult::E_FAIL);
    assert_eq!(
        stdio.seen(),
        vec![("writer", 0x51), ("failed", 0x52), ("discard", 0x53)]
    );
    with(|s| {
        assert!(s.core.processes.is_empty(), "the process handle was closed again");
        assert_eq!(s.closed_processes.len(), 1);
    });
    d.close_compute_system(sys).unwrap();
}

#[cfg(not(windows))]
#[test]
fn default_stdio_mapping_rejects_windows_handles_off_windows() {
    let _g = begin();
    let d = VmComputeDriver::new(table());
    let sys = sys_handle(&d, NotifyContext::new(1).unwrap());
    with(|s| s.core.stdio = [0x51, 0, 0]);
    let err = d.create_process(sys, "{}").unwrap_err();
    assert_eq!(err.code, ffi::STDIO_UNSUPPORTED);
    with(|s| assert!(s.core.processes.is_empty()));
    // without handles the same call works
    with(|s| s.core.stdio = [0, 0, 0]);
    let (p, info) = d.create_process(sys, "{}").unwrap().value;
    assert!(info.stdin.is_none() && info.stdout.is_none() && info.stderr.is_none());
    d.close_process(p).unwrap();
    d.close_compute_system(sys).unwrap();
}

#[test]
fn process_calls_report_hcs_results() {
    let _g = begin();
    let d = VmComputeDriver::new(table());
    let sys = sys_handle(&d, NotifyContext::new(1).unwrap());
    let p = d.open_process(sys, 42).unwrap().value;
    script("process_control", E_ACCESSDENIED, Some("{}"));
    assert_eq!(
        d.signal_process(p, "{}").unwrap_err(),
        Failure::with_document(HResult::E_ACCESSDENIED, "{}")
    );
    assert_eq!(
        d.modify_process(p, "{}").unwrap_err().code,
        HResult::E_ACCESSDENIED
    );
    assert!(d.terminate_process(p).is_ok());
    assert_eq!(d.get_process_info(p).unwrap().value.pid, 42);
    d.close_process(p).unwrap();
    d.close_compute_system(sys).unwrap();
    assert_no_leaks();
}

#[test]
fn missing_optional_service_exports_are_unsupported() {
    let _g = begin();
    let d = VmComputeDriver::new(table());
    assert_eq!(
        d.get_service_properties("{}").unwrap_err(),
        Failure::unsupported()
    );
    assert_eq!(
        d.modify_service_settings("{}").unwrap_err(),
        Failure::unsupported()
    );
    assert_eq!(d.name(), "vmcompute");
    assert_eq!(d.generation(), hcs::ApiGeneration::V1);
}

#[test]
fn present_service_exports_are_called() {
    unsafe extern "system" fn svc_props(_q: PCWSTR, props: *mut PWSTR, _r: *mut PWSTR) -> HRESULT {
        // SAFETY: valid out-slot.
        with(|s| unsafe { *props = s.core.alloc_str(r#"{"Version":1}"#) });
        0
    }
    unsafe extern "system" fn svc_modify(_s: PCWSTR, _r: *mut PWSTR) -> HRESULT {
        E_ACCESSDENIED
    }
    let _g = begin();
    let mut t = table();
    t.get_service_properties = Some(svc_props);
    t.modify_service_settings = Some(svc_modify);
    let d = VmComputeDriver::new(t);
    assert_eq!(d.get_service_properties("{}").unwrap().value, r#"{"Version":1}"#);
    assert_eq!(
        d.modify_service_settings("{}").unwrap_err().code,
        HResult::E_ACCESSDENIED
    );
    assert_no_leaks();
}

#[test]
fn table_lookup_names_the_missing_required_export_and_tolerates_missing_optional_ones() {
    let _g = begin();
    let full = table();
    // resolve everything from a name → address map built from the fake table
    let mut exports: HashMap<&str, usize> = HashMap::new();
    exports.insert(
        "HcsEnumerateComputeSystems",
        full.enumerate_compute_systems as usize,
    );
    let err = {
        // SAFETY: every address returned has the field's signature (only the enumerate export).
        unsafe { VmComputeTable::from_lookup(lookup(&exports), fake_free, None) }
    }
    .unwrap_err();
    assert_eq!(
        err,
        LoadError::MissingExport {
            dll: "vmcompute.dll",
            export: "HcsCreateComputeSystem"
        }
    );
    assert!(err.to_string().contains("driver unavailable"));
    assert!(err.to_string().contains("HcsCreateComputeSystem"));
    assert_eq!(err.code(), HResult(0x8007_007F));
}

#[cfg(not(windows))]
#[test]
fn loading_off_windows_reports_driver_unavailable() {
    let err = VmComputeTable::load().unwrap_err();
    assert_eq!(err, LoadError::NotWindows { dll: "vmcompute.dll" });
    assert!(err.to_string().starts_with("driver unavailable: vmcompute.dll"));
    assert!(VmComputeDriver::load().is_err());
}

#[cfg(windows)]
#[test]
fn loading_a_missing_dll_or_a_dll_without_the_exports_reports_driver_unavailable() {
    use hcs_vmcompute::DllSource;
    let err = VmComputeTable::load_from(&DllSource::Path("no-such-vmcompute.dll".into())).unwrap_err();
    assert!(matches!(err, LoadError::MissingDll { .. }), "{err}");
    let err = VmComputeTable::load_from(&DllSource::Path("kernel32.dll".into())).unwrap_err();
    assert_eq!(
        err,
        LoadError::MissingExport {
            dll: "vmcompute.dll",
            export: "HcsEnumerateComputeSystems"
        }
    );
}
