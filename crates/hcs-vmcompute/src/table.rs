//! The `vmcompute.dll` function table (design FFI §2.2).
//!
//! The V1 API is undocumented; these signatures follow hcsshim's `internal/vmcompute`. The same
//! export names exist in `computecore.dll` with *different* signatures: never mix the tables.

use hcs_ffi::{
    DllSource, FreeStringFn, Library, LoadError, HANDLE, HCS_CALLBACK, HCS_PROCESS, HCS_PROCESS_INFORMATION,
    HCS_SYSTEM, HRESULT, PCWSTR, PWSTR,
};
use std::ffi::c_void;

/// `HCS_NOTIFICATION_CALLBACK` (declared in `hcs-ffi`, shared with the fake `vmcompute.dll`).
pub use hcs_ffi::NotificationCallback;

/// `HcsEnumerateComputeSystems(query, *compute_systems, *result)`.
pub type EnumerateComputeSystemsFn = unsafe extern "system" fn(PCWSTR, *mut PWSTR, *mut PWSTR) -> HRESULT;
/// `HcsCreateComputeSystem(id, configuration, identity, *system, *result)`; may return pending.
pub type CreateComputeSystemFn =
    unsafe extern "system" fn(PCWSTR, PCWSTR, HANDLE, *mut HCS_SYSTEM, *mut PWSTR) -> HRESULT;
/// `HcsOpenComputeSystem(id, *system, *result)`.
pub type OpenComputeSystemFn = unsafe extern "system" fn(PCWSTR, *mut HCS_SYSTEM, *mut PWSTR) -> HRESULT;
/// `HcsCloseComputeSystem(system)` (returns an HRESULT in V1).
pub type CloseComputeSystemFn = unsafe extern "system" fn(HCS_SYSTEM) -> HRESULT;
/// Start, Shutdown, Terminate, Pause, Resume, Save: `(system, options, *result)`; may be pending.
pub type SystemControlFn = unsafe extern "system" fn(HCS_SYSTEM, PCWSTR, *mut PWSTR) -> HRESULT;
/// `HcsGetComputeSystemProperties(system, query, *properties, *result)`.
pub type GetComputeSystemPropertiesFn =
    unsafe extern "system" fn(HCS_SYSTEM, PCWSTR, *mut PWSTR, *mut PWSTR) -> HRESULT;
/// `HcsModifyComputeSystem(system, configuration, *result)`.
pub type ModifyComputeSystemFn = unsafe extern "system" fn(HCS_SYSTEM, PCWSTR, *mut PWSTR) -> HRESULT;
/// `HcsRegisterComputeSystemCallback(system, callback, context, *callback_handle)`: the callback
/// comes **before** the context.
pub type RegisterComputeSystemCallbackFn = unsafe extern "system" fn(
    HCS_SYSTEM,
    Option<NotificationCallback>,
    *const c_void,
    *mut HCS_CALLBACK,
) -> HRESULT;
/// `HcsUnregisterComputeSystemCallback` / `HcsUnregisterProcessCallback`.
pub type UnregisterCallbackFn = unsafe extern "system" fn(HCS_CALLBACK) -> HRESULT;
/// `HcsCreateProcess(system, parameters, *process_information, *process, *result)`.
pub type CreateProcessFn = unsafe extern "system" fn(
    HCS_SYSTEM,
    PCWSTR,
    *mut HCS_PROCESS_INFORMATION,
    *mut HCS_PROCESS,
    *mut PWSTR,
) -> HRESULT;
/// `HcsOpenProcess(system, pid, *process, *result)`.
pub type OpenProcessFn = unsafe extern "system" fn(HCS_SYSTEM, u32, *mut HCS_PROCESS, *mut PWSTR) -> HRESULT;
/// `HcsCloseProcess(process)` (returns an HRESULT in V1).
pub type CloseProcessFn = unsafe extern "system" fn(HCS_PROCESS) -> HRESULT;
/// `HcsTerminateProcess(process, *result)` (no options in V1).
pub type TerminateProcessFn = unsafe extern "system" fn(HCS_PROCESS, *mut PWSTR) -> HRESULT;
/// `HcsSignalProcess(process, options, *result)`.
pub type SignalProcessFn = unsafe extern "system" fn(HCS_PROCESS, PCWSTR, *mut PWSTR) -> HRESULT;
/// `HcsGetProcessInfo(process, *process_information, *result)`.
pub type GetProcessInfoFn =
    unsafe extern "system" fn(HCS_PROCESS, *mut HCS_PROCESS_INFORMATION, *mut PWSTR) -> HRESULT;
/// `HcsGetProcessProperties(process, *properties, *result)`.
pub type GetProcessPropertiesFn = unsafe extern "system" fn(HCS_PROCESS, *mut PWSTR, *mut PWSTR) -> HRESULT;
/// `HcsModifyProcess(process, settings, *result)`.
pub type ModifyProcessFn = unsafe extern "system" fn(HCS_PROCESS, PCWSTR, *mut PWSTR) -> HRESULT;
/// `HcsRegisterProcessCallback(process, callback, context, *callback_handle)`.
pub type RegisterProcessCallbackFn = unsafe extern "system" fn(
    HCS_PROCESS,
    Option<NotificationCallback>,
    *const c_void,
    *mut HCS_CALLBACK,
) -> HRESULT;
/// `HcsGetServiceProperties(query, *properties, *result)`.
pub type GetServicePropertiesFn = unsafe extern "system" fn(PCWSTR, *mut PWSTR, *mut PWSTR) -> HRESULT;
/// `HcsModifyServiceSettings(settings, *result)`.
pub type ModifyServiceSettingsFn = unsafe extern "system" fn(PCWSTR, *mut PWSTR) -> HRESULT;

hcs_ffi::fn_table! {
    /// Every `vmcompute.dll` export the V1 driver uses, resolved at run time.
    ///
    /// Build it with [`VmComputeTable::load`] on Windows, or fill it with fake `extern "system"`
    /// functions in tests (any platform). The service exports are optional: without them the
    /// driver reports those calls as unsupported.
    pub struct VmComputeTable for "vmcompute.dll" {
        required {
            enumerate_compute_systems: EnumerateComputeSystemsFn = "HcsEnumerateComputeSystems",
            create_compute_system: CreateComputeSystemFn = "HcsCreateComputeSystem",
            open_compute_system: OpenComputeSystemFn = "HcsOpenComputeSystem",
            close_compute_system: CloseComputeSystemFn = "HcsCloseComputeSystem",
            start_compute_system: SystemControlFn = "HcsStartComputeSystem",
            shutdown_compute_system: SystemControlFn = "HcsShutdownComputeSystem",
            terminate_compute_system: SystemControlFn = "HcsTerminateComputeSystem",
            pause_compute_system: SystemControlFn = "HcsPauseComputeSystem",
            resume_compute_system: SystemControlFn = "HcsResumeComputeSystem",
            save_compute_system: SystemControlFn = "HcsSaveComputeSystem",
            get_compute_system_properties: GetComputeSystemPropertiesFn = "HcsGetComputeSystemProperties",
            modify_compute_system: ModifyComputeSystemFn = "HcsModifyComputeSystem",
            register_compute_system_callback: RegisterComputeSystemCallbackFn = "HcsRegisterComputeSystemCallback",
            unregister_compute_system_callback: UnregisterCallbackFn = "HcsUnregisterComputeSystemCallback",
            create_process: CreateProcessFn = "HcsCreateProcess",
            open_process: OpenProcessFn = "HcsOpenProcess",
            close_process: CloseProcessFn = "HcsCloseProcess",
            terminate_process: TerminateProcessFn = "HcsTerminateProcess",
            signal_process: SignalProcessFn = "HcsSignalProcess",
            get_process_info: GetProcessInfoFn = "HcsGetProcessInfo",
            get_process_properties: GetProcessPropertiesFn = "HcsGetProcessProperties",
            modify_process: ModifyProcessFn = "HcsModifyProcess",
            register_process_callback: RegisterProcessCallbackFn = "HcsRegisterProcessCallback",
            unregister_process_callback: UnregisterCallbackFn = "HcsUnregisterProcessCallback",
        }
        optional {
            get_service_properties: GetServicePropertiesFn = "HcsGetServiceProperties",
            modify_service_settings: ModifyServiceSettingsFn = "HcsModifyServiceSettings",
        }
    }
}

impl VmComputeTable {
    /// Loads `vmcompute.dll` from System32 and resolves every export. Fails with a
    /// "driver unavailable" [`LoadError`] naming the DLL or the first missing required export;
    /// off Windows it always fails with [`LoadError::NotWindows`].
    pub fn load() -> Result<Self, LoadError> {
        Self::load_from(&DllSource::System32)
    }

    /// Like [`Self::load`], from an explicit source (tests load fake DLLs with
    /// [`DllSource::DefaultSearchOrder`]). Strings are freed with `CoTaskMemFree`, following
    /// hcsshim for this undocumented API.
    pub fn load_from(source: &DllSource) -> Result<Self, LoadError> {
        let lib = Library::open(Self::DLL, source)?;
        let lookup_lib = lib.clone();
        // SAFETY: every field type is the export's signature per design FFI §2.2 (translated
        // from hcsshim), and `lib` is pinned (never unloaded), so the addresses stay callable
        // for the rest of the process.
        unsafe { Self::from_lookup(|name| lookup_lib.symbol(name), default_free(), Some(lib)) }
    }
}

/// The default string-free routine for V1 (`CoTaskMemFree`).
#[cfg(windows)]
fn default_free() -> FreeStringFn {
    unsafe extern "system" fn co_task_mem_free(p: *mut c_void) {
        // SAFETY: `p` is a string the DLL allocated with CoTaskMemAlloc, freed exactly once.
        unsafe { windows_sys::Win32::System::Com::CoTaskMemFree(p) }
    }
    co_task_mem_free
}

#[cfg(not(windows))]
fn default_free() -> FreeStringFn {
    // Unreachable in practice: off Windows no DLL loads, so no table gets this routine.
    unsafe extern "system" fn leak(_p: *mut c_void) {}
    leak
}
