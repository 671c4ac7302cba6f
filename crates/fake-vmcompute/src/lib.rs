//! A fake `vmcompute.dll` (the undocumented V1 HCS API, design FFI §2.2) for
//! Windows-target tests under Wine (design FFI §7.3): the 26 exports with their exact names and
//! signatures, implemented on ONE process-global [`hcs_sim::Simulator`] (V1 encodings, scripted
//! backend with the vocabulary of [`fake_hcs_common::script`]).
//!
//! * **Notifications** are delivered by calling the client's registered
//!   `HCS_NOTIFICATION_CALLBACK` with `(type, context, status, data)` from the simulator's
//!   scheduler thread, which this DLL owns. Each registration is an `hcs::notify::Subscription`
//!   in *this DLL's* copy of the `hcs` registry (separate from the client's).
//! * **Completions** of pending calls (`HResult::ERROR_VMCOMPUTE_OPERATION_PENDING`) go, as in
//!   V1, to the callbacks registered on the system handle: every system handle has a router
//!   context handed to the simulator's pending calls; completions that arrive before any registration are held and delivered
//!   (from a DLL thread) on the first registration.
//! * **Result strings** are `CoTaskMemAlloc`'d (the V1 driver frees with `CoTaskMemFree`) and
//!   counted: `FakeHcsOutstandingStrings` / `FakeHcsNoteStringFreed`.
//! * **Stdio** handles are real anonymous pipes fed by DLL relay threads.
//! * Extra exports for tests: `FakeHcsOutstandingStrings`, `FakeHcsNoteStringFreed`,
//!   `FakeHcsHandleCounts`, `FakeHcsLiveSubscriptions`, `FakeHcsScriptedStdin`.
#![allow(unsafe_code)]
// The exports mirror the HCS API one to one (design FFI §2.2, §3.2); their names and
// safety contracts are HCS's.
#![allow(
    non_snake_case,
    missing_docs,
    clippy::missing_safety_doc,
    clippy::upper_case_acronyms
)]

use fake_hcs_common::{self as common, hr, lock, Extra, Strings, E_INVALIDARG, E_POINTER};
use hcs::notify::Subscription;
use hcs::{ApiGeneration, CallbackHandle, Driver, NotificationKind, SystemHandle};
use hcs_ffi::{NotificationCallback, HANDLE, HCS_PROCESS_INFORMATION, HRESULT, PCWSTR, PWSTR};
use hcs_sim::Simulator;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

/// The client frees them with `CoTaskMemFree`.
static STRINGS: Strings = Strings::new(common::co_task_mem_alloc);

/// A foreign callback: the client's function and its context.
#[derive(Clone, Copy)]
struct Foreign {
    cb: NotificationCallback,
    ctx: usize,
}

impl Foreign {
    fn call(&self, kind: NotificationKind, status: HRESULT, data: Option<&str>) {
        let w = data.map(common::to_wide);
        let p = w.as_ref().map_or(std::ptr::null(), |w| w.as_ptr());
        // SAFETY: the client registered `cb` with this signature and context; `p` is null or a
        // NUL-terminated string valid for the call (the client copies it).
        unsafe { (self.cb)(kind.v1_value(), self.ctx as *const c_void, status, p) }
    }
}

/// Routes the completions of a system handle's pending calls to its registered callbacks.
#[derive(Default)]
struct RouterState {
    foreign: Vec<(u64, Foreign)>,
    held: Vec<(NotificationKind, HRESULT, Option<String>)>,
}

struct Router {
    state: Arc<Mutex<RouterState>>,
    sub: Subscription,
}

impl Router {
    fn new() -> Arc<Router> {
        let state = Arc::new(Mutex::new(RouterState::default()));
        let s2 = Arc::clone(&state);
        let sub = Subscription::new(move |kind, status, data| {
            let targets: Vec<Foreign> = {
                let mut st = lock(&s2);
                if st.foreign.is_empty() {
                    st.held.push((kind, hr(status), data.map(str::to_string)));
                    return;
                }
                st.foreign.iter().map(|(_, f)| *f).collect()
            };
            for f in targets {
                f.call(kind, hr(status), data);
            }
        });
        Arc::new(Router { state, sub })
    }
}

/// A registration: the subscription the simulator delivers to, and the handle it was made on.
struct Registration {
    _sub: Subscription,
    owner: u64,
}

#[derive(Default)]
struct Fake {
    routers: Mutex<HashMap<u64, Arc<Router>>>,
    registrations: Mutex<HashMap<u64, Registration>>,
}

fn fake() -> &'static Fake {
    static F: OnceLock<Fake> = OnceLock::new();
    F.get_or_init(Fake::default)
}

fn sim() -> &'static Arc<Simulator> {
    common::sim(ApiGeneration::V1)
}

fn router(h: u64) -> Arc<Router> {
    Arc::clone(lock(&fake().routers).entry(h).or_insert_with(Router::new))
}

use common::{process_handle as proc_, system_handle as sys};

/// Reports a driver reply: pending → `ERROR_VMCOMPUTE_OPERATION_PENDING`, else `S_OK`; the
/// document goes to `result`.
unsafe fn reply<T>(r: hcs::DriverResult<T>, result: *mut PWSTR, value: impl FnOnce(T)) -> HRESULT {
    match r {
        Ok(rep) => {
            // SAFETY: `result` is null or a writable slot (caller's contract).
            unsafe { STRINGS.put(result, rep.document.as_deref()) };
            let pending = rep.pending;
            value(rep.value);
            if pending {
                common::V1_PENDING
            } else {
                0
            }
        }
        // SAFETY: as above.
        Err(f) => unsafe { common::fail(&STRINGS, result, f) },
    }
}

/// Drops the registrations made through `h` (the simulator removed them on close).
fn forget_handle(h: u64) {
    let regs: Vec<Registration> = {
        let mut m = lock(&fake().registrations);
        let ids: Vec<u64> = m.iter().filter(|(_, r)| r.owner == h).map(|(k, _)| *k).collect();
        ids.into_iter().filter_map(|k| m.remove(&k)).collect()
    };
    drop(regs);
    lock(&fake().routers).remove(&h);
}

// ------------------------------------------------------------------------------------------
// Compute systems

#[no_mangle]
pub unsafe extern "system" fn HcsEnumerateComputeSystems(
    query: PCWSTR,
    compute_systems: *mut PWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    // SAFETY: HCS contract: `query` is null or a valid string.
    let q = unsafe { common::from_wide(query) }.unwrap_or_default();
    // SAFETY: out-slots are null or writable (HCS contract).
    unsafe {
        reply(sim().enumerate_compute_systems(&q), result, |doc| {
            STRINGS.put(compute_systems, Some(&doc))
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsCreateComputeSystem(
    id: PCWSTR,
    configuration: PCWSTR,
    _identity: HANDLE,
    compute_system: *mut HANDLE,
    result: *mut PWSTR,
) -> HRESULT {
    if compute_system.is_null() {
        return E_POINTER;
    }
    // SAFETY: HCS contract: valid strings or null.
    let (Some(id), Some(cfg)) = (unsafe { common::from_wide(id) }, unsafe {
        common::from_wide(configuration)
    }) else {
        return E_INVALIDARG;
    };
    let r = Router::new();
    let res = sim().create_compute_system(&id, &cfg, r.sub.context());
    // SAFETY: `compute_system` is writable (checked non-null); `result` per HCS contract.
    unsafe {
        reply(res, result, |h| {
            lock(&fake().routers).insert(h.raw(), r);
            *compute_system = h.raw() as usize as HANDLE;
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsOpenComputeSystem(
    id: PCWSTR,
    compute_system: *mut HANDLE,
    result: *mut PWSTR,
) -> HRESULT {
    if compute_system.is_null() {
        return E_POINTER;
    }
    // SAFETY: HCS contract.
    let Some(id) = (unsafe { common::from_wide(id) }) else {
        return E_INVALIDARG;
    };
    // SAFETY: `compute_system` is writable (checked); `result` per HCS contract.
    unsafe {
        reply(sim().open_compute_system(&id), result, |h| {
            *compute_system = h.raw() as usize as HANDLE
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsCloseComputeSystem(compute_system: HANDLE) -> HRESULT {
    let Some(h) = sys(compute_system) else {
        return common::E_HANDLE;
    };
    match sim().close_compute_system(h) {
        Ok(()) => {
            forget_handle(h.raw());
            0
        }
        Err(f) => hr(f.code),
    }
}

type Control = fn(&Simulator, SystemHandle, &str, hcs::NotifyContext) -> hcs::DriverResult<()>;

unsafe fn control(cs: HANDLE, options: PCWSTR, result: *mut PWSTR, f: Control) -> HRESULT {
    let Some(h) = sys(cs) else {
        return common::E_HANDLE;
    };
    // SAFETY: HCS contract.
    let opts = unsafe { common::from_wide(options) }.unwrap_or_default();
    let ctx = router(h.raw()).sub.context();
    // SAFETY: `result` per HCS contract.
    unsafe { reply(f(sim(), h, &opts, ctx), result, |_| {}) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsStartComputeSystem(
    cs: HANDLE,
    options: PCWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { control(cs, options, result, |s, h, o, c| s.start_compute_system(h, o, c)) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsShutdownComputeSystem(
    cs: HANDLE,
    options: PCWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { control(cs, options, result, |s, h, o, _| s.shutdown_compute_system(h, o)) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsTerminateComputeSystem(
    cs: HANDLE,
    options: PCWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { control(cs, options, result, |s, h, o, _| s.terminate_compute_system(h, o)) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsPauseComputeSystem(
    cs: HANDLE,
    options: PCWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { control(cs, options, result, |s, h, o, c| s.pause_compute_system(h, o, c)) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsResumeComputeSystem(
    cs: HANDLE,
    options: PCWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { control(cs, options, result, |s, h, o, c| s.resume_compute_system(h, o, c)) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsSaveComputeSystem(
    cs: HANDLE,
    options: PCWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { control(cs, options, result, |s, h, o, c| s.save_compute_system(h, o, c)) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsGetComputeSystemProperties(
    cs: HANDLE,
    property_query: PCWSTR,
    properties: *mut PWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    let Some(h) = sys(cs) else {
        return common::E_HANDLE;
    };
    // SAFETY: HCS contract.
    let q = unsafe { common::from_wide(property_query) }.unwrap_or_default();
    // SAFETY: out-slots per HCS contract.
    unsafe {
        reply(sim().get_compute_system_properties(h, &q), result, |doc| {
            STRINGS.put(properties, Some(&doc))
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsModifyComputeSystem(
    cs: HANDLE,
    configuration: PCWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    let Some(h) = sys(cs) else {
        return common::E_HANDLE;
    };
    // SAFETY: HCS contract.
    let c = unsafe { common::from_wide(configuration) }.unwrap_or_default();
    // SAFETY: out-slot per HCS contract.
    unsafe { reply(sim().modify_compute_system(h, &c), result, |_| {}) }
}

/// Registers `foreign` with the simulator for handle `h` through `register`.
unsafe fn register(
    h: u64,
    callback: Option<NotificationCallback>,
    context: *const c_void,
    callback_handle: *mut HANDLE,
    is_system: bool,
) -> HRESULT {
    let Some(cb) = callback else {
        return E_INVALIDARG;
    };
    if callback_handle.is_null() {
        return E_POINTER;
    }
    let foreign = Foreign {
        cb,
        ctx: context as usize,
    };
    let sub = Subscription::new(move |kind, status, data| foreign.call(kind, hr(status), data));
    let c = match common::register_callback(sim(), h, is_system, sub.context()) {
        Ok(c) => c,
        Err(e) => return e,
    };
    lock(&fake().registrations).insert(c.raw(), Registration { _sub: sub, owner: h });
    if is_system {
        let router = router(h);
        let held = {
            let mut st = lock(&router.state);
            st.foreign.push((c.raw(), foreign));
            std::mem::take(&mut st.held)
        };
        if !held.is_empty() {
            // Completions that arrived before this registration, delivered from a DLL thread.
            let _ = std::thread::Builder::new()
                .name("fake-vmcompute-held".into())
                .spawn(move || {
                    for (kind, status, data) in held {
                        foreign.call(kind, status, data.as_deref());
                    }
                });
        }
    }
    // SAFETY: checked non-null; HCS contract says writable.
    unsafe { *callback_handle = c.raw() as usize as HANDLE };
    0
}

unsafe fn unregister(callback_handle: HANDLE, is_system: bool) -> HRESULT {
    let Some(c) = CallbackHandle::new(callback_handle as usize as u64) else {
        return common::E_HANDLE;
    };
    let r = if is_system {
        sim().unregister_compute_system_callback(c)
    } else {
        sim().unregister_process_callback(c)
    };
    if let Err(f) = r {
        return hr(f.code);
    }
    let reg = lock(&fake().registrations).remove(&c.raw());
    if let Some(reg) = &reg {
        if let Some(router) = lock(&fake().routers).get(&reg.owner) {
            lock(&router.state).foreign.retain(|(id, _)| *id != c.raw());
        }
    }
    drop(reg);
    0
}

#[no_mangle]
pub unsafe extern "system" fn HcsRegisterComputeSystemCallback(
    cs: HANDLE,
    callback: Option<NotificationCallback>,
    context: *const c_void,
    callback_handle: *mut HANDLE,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { register(cs as usize as u64, callback, context, callback_handle, true) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsUnregisterComputeSystemCallback(callback_handle: HANDLE) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { unregister(callback_handle, true) }
}

// ------------------------------------------------------------------------------------------
// Processes

#[no_mangle]
pub unsafe extern "system" fn HcsCreateProcess(
    cs: HANDLE,
    process_parameters: PCWSTR,
    process_information: *mut HCS_PROCESS_INFORMATION,
    process: *mut HANDLE,
    result: *mut PWSTR,
) -> HRESULT {
    let Some(h) = sys(cs) else {
        return common::E_HANDLE;
    };
    if process.is_null() {
        return E_POINTER;
    }
    // SAFETY: HCS contract.
    let Some(params) = (unsafe { common::from_wide(process_parameters) }) else {
        return E_INVALIDARG;
    };
    let (params, extra): (String, Extra) = common::command(&params);
    // SAFETY: out-slots per HCS contract (`process` checked non-null).
    unsafe {
        reply(sim().create_process(h, &params), result, |(ph, info)| {
            let pid = info.pid;
            let raw = common::stdio(info, &extra);
            common::write_process_info(process_information, pid, raw);
            *process = ph.raw() as usize as HANDLE;
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsOpenProcess(
    cs: HANDLE,
    pid: u32,
    process: *mut HANDLE,
    result: *mut PWSTR,
) -> HRESULT {
    let Some(h) = sys(cs) else {
        return common::E_HANDLE;
    };
    if process.is_null() {
        return E_POINTER;
    }
    // SAFETY: out-slots per HCS contract (`process` checked non-null).
    unsafe {
        reply(sim().open_process(h, pid), result, |p| {
            *process = p.raw() as usize as HANDLE
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsCloseProcess(process: HANDLE) -> HRESULT {
    let Some(p) = proc_(process) else {
        return common::E_HANDLE;
    };
    match sim().close_process(p) {
        Ok(()) => {
            forget_handle(p.raw());
            0
        }
        Err(f) => hr(f.code),
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsTerminateProcess(process: HANDLE, result: *mut PWSTR) -> HRESULT {
    let Some(p) = proc_(process) else {
        return common::E_HANDLE;
    };
    // SAFETY: out-slot per HCS contract.
    unsafe { reply(sim().terminate_process(p), result, |_| {}) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsSignalProcess(
    process: HANDLE,
    options: PCWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    let Some(p) = proc_(process) else {
        return common::E_HANDLE;
    };
    // SAFETY: HCS contract.
    let o = unsafe { common::from_wide(options) }.unwrap_or_default();
    // SAFETY: out-slot per HCS contract.
    unsafe { reply(sim().signal_process(p, &o), result, |_| {}) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsGetProcessInfo(
    process: HANDLE,
    process_information: *mut HCS_PROCESS_INFORMATION,
    result: *mut PWSTR,
) -> HRESULT {
    let Some(p) = proc_(process) else {
        return common::E_HANDLE;
    };
    // SAFETY: out-slots per HCS contract.
    unsafe {
        reply(sim().get_process_info(p), result, |info| {
            let pid = info.pid;
            let raw = common::stdio(info, &Extra::default());
            common::write_process_info(process_information, pid, raw);
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsGetProcessProperties(
    process: HANDLE,
    process_properties: *mut PWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    let Some(p) = proc_(process) else {
        return common::E_HANDLE;
    };
    // SAFETY: out-slots per HCS contract.
    unsafe {
        reply(sim().get_process_properties(p), result, |doc| {
            STRINGS.put(process_properties, Some(&doc))
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsModifyProcess(
    process: HANDLE,
    settings: PCWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    let Some(p) = proc_(process) else {
        return common::E_HANDLE;
    };
    // SAFETY: HCS contract.
    let s = unsafe { common::from_wide(settings) }.unwrap_or_default();
    // SAFETY: out-slot per HCS contract.
    unsafe { reply(sim().modify_process(p, &s), result, |_| {}) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsRegisterProcessCallback(
    process: HANDLE,
    callback: Option<NotificationCallback>,
    context: *const c_void,
    callback_handle: *mut HANDLE,
) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { register(process as usize as u64, callback, context, callback_handle, false) }
}

#[no_mangle]
pub unsafe extern "system" fn HcsUnregisterProcessCallback(callback_handle: HANDLE) -> HRESULT {
    // SAFETY: forwarded HCS contract.
    unsafe { unregister(callback_handle, false) }
}

// ------------------------------------------------------------------------------------------
// Service

#[no_mangle]
pub unsafe extern "system" fn HcsGetServiceProperties(
    property_query: PCWSTR,
    properties: *mut PWSTR,
    result: *mut PWSTR,
) -> HRESULT {
    // SAFETY: HCS contract.
    let q = unsafe { common::from_wide(property_query) }.unwrap_or_default();
    // SAFETY: out-slots per HCS contract.
    unsafe {
        reply(sim().get_service_properties(&q), result, |doc| {
            STRINGS.put(properties, Some(&doc))
        })
    }
}

#[no_mangle]
pub unsafe extern "system" fn HcsModifyServiceSettings(settings: PCWSTR, result: *mut PWSTR) -> HRESULT {
    // SAFETY: HCS contract.
    let s = unsafe { common::from_wide(settings) }.unwrap_or_default();
    // SAFETY: out-slot per HCS contract.
    unsafe { reply(sim().modify_service_settings(&s), result, |_| {}) }
}

// ------------------------------------------------------------------------------------------
// Test-only exports

common::test_exports!(
    strings: STRINGS,
    sim: sim(),
    subscriptions: lock(&fake().registrations).len(),
);
