//! The `computecore.dll` function table (design FFI §3.2 and §4).
//!
//! Only the exports the V2 driver uses (plus the optional ones it may use) are bound; the
//! storage, WER and guest-state-file exports are not. Several names also exist in
//! `vmcompute.dll` with different signatures: never mix the tables.

use hcs_ffi::{
    DllSource, FreeStringFn, Library, LoadError, HANDLE, HCS_OPERATION, HCS_PROCESS, HCS_PROCESS_INFORMATION,
    HCS_SYSTEM, HRESULT, PCWSTR, PWSTR,
};
use std::ffi::c_void;

/// `HCS_EVENT`, `HCS_EVENT_CALLBACK` and `HCS_OPERATION_COMPLETION` (declared in `hcs-ffi`,
/// shared with the fake `computecore.dll`).
pub use hcs_ffi::{EventCallback, OperationCompletion, HCS_EVENT};

/// `HcsCreateOperation(context, callback) -> HCS_OPERATION` (null on failure).
pub type CreateOperationFn =
    unsafe extern "system" fn(*const c_void, Option<OperationCompletion>) -> HCS_OPERATION;
/// `HcsCloseOperation(operation)`.
pub type CloseOperationFn = unsafe extern "system" fn(HCS_OPERATION);
/// `HcsGetOperationResult(operation, *result_document)`.
pub type GetOperationResultFn = unsafe extern "system" fn(HCS_OPERATION, *mut PWSTR) -> HRESULT;
/// `HcsGetOperationResultAndProcessInfo(operation, *process_information, *result_document)`.
pub type GetOperationResultAndProcessInfoFn =
    unsafe extern "system" fn(HCS_OPERATION, *mut HCS_PROCESS_INFORMATION, *mut PWSTR) -> HRESULT;
/// `HcsWaitForOperationResult(operation, timeout_ms, *result_document)`.
pub type WaitForOperationResultFn = unsafe extern "system" fn(HCS_OPERATION, u32, *mut PWSTR) -> HRESULT;
/// `HcsWaitForOperationResultAndProcessInfo(operation, timeout_ms, *process_information, *doc)`.
pub type WaitForOperationResultAndProcessInfoFn =
    unsafe extern "system" fn(HCS_OPERATION, u32, *mut HCS_PROCESS_INFORMATION, *mut PWSTR) -> HRESULT;
/// `HcsCancelOperation(operation)` (documented as returning `E_NOTIMPL`).
pub type CancelOperationFn = unsafe extern "system" fn(HCS_OPERATION) -> HRESULT;
/// `HcsAddResourceToOperation(operation, type, uri, handle)`.
pub type AddResourceToOperationFn = unsafe extern "system" fn(HCS_OPERATION, i32, PCWSTR, HANDLE) -> HRESULT;
/// `HcsGetOperationProperties(operation, options, *result_document)` (newer hosts only).
pub type GetOperationPropertiesFn = unsafe extern "system" fn(HCS_OPERATION, PCWSTR, *mut PWSTR) -> HRESULT;

/// `HcsEnumerateComputeSystems(query, operation)`.
pub type EnumerateComputeSystemsFn = unsafe extern "system" fn(PCWSTR, HCS_OPERATION) -> HRESULT;
/// `HcsCreateComputeSystem(id, configuration, operation, security_descriptor, *system)`.
pub type CreateComputeSystemFn =
    unsafe extern "system" fn(PCWSTR, PCWSTR, HCS_OPERATION, *const c_void, *mut HCS_SYSTEM) -> HRESULT;
/// `HcsOpenComputeSystem(id, requested_access, *system)`.
pub type OpenComputeSystemFn = unsafe extern "system" fn(PCWSTR, u32, *mut HCS_SYSTEM) -> HRESULT;
/// `HcsCloseComputeSystem(system)` (void in V2).
pub type CloseComputeSystemFn = unsafe extern "system" fn(HCS_SYSTEM);
/// Start, ShutDown, Terminate, Crash, Pause, Resume, Save and the live-migration steps:
/// `(system, operation, options)`.
pub type SystemOperationFn = unsafe extern "system" fn(HCS_SYSTEM, HCS_OPERATION, PCWSTR) -> HRESULT;
/// `HcsModifyComputeSystem(system, operation, configuration, identity)`.
pub type ModifyComputeSystemFn =
    unsafe extern "system" fn(HCS_SYSTEM, HCS_OPERATION, PCWSTR, HANDLE) -> HRESULT;
/// `HcsWaitForComputeSystemExit(system, timeout_ms, *result)` / `HcsWaitForProcessExit`.
pub type WaitForExitFn = unsafe extern "system" fn(*mut c_void, u32, *mut PWSTR) -> HRESULT;
/// `HcsSetComputeSystemCallback(system, options, context, callback)`.
pub type SetCallbackFn =
    unsafe extern "system" fn(*mut c_void, i32, *const c_void, Option<EventCallback>) -> HRESULT;

/// `HcsCreateProcess(system, parameters, operation, security_descriptor, *process)`.
pub type CreateProcessFn =
    unsafe extern "system" fn(HCS_SYSTEM, PCWSTR, HCS_OPERATION, *const c_void, *mut HCS_PROCESS) -> HRESULT;
/// `HcsOpenProcess(system, pid, requested_access, *process)`.
pub type OpenProcessFn = unsafe extern "system" fn(HCS_SYSTEM, u32, u32, *mut HCS_PROCESS) -> HRESULT;
/// `HcsCloseProcess(process)` (void in V2).
pub type CloseProcessFn = unsafe extern "system" fn(HCS_PROCESS);
/// Signal, Terminate, Modify, GetProperties of a process: `(process, operation, options)`.
pub type ProcessOperationFn = unsafe extern "system" fn(HCS_PROCESS, HCS_OPERATION, PCWSTR) -> HRESULT;
/// `HcsGetProcessInfo(process, operation)`.
pub type GetProcessInfoFn = unsafe extern "system" fn(HCS_PROCESS, HCS_OPERATION) -> HRESULT;
/// `HcsGetServiceProperties(query, *result)` / `HcsModifyServiceSettings(settings, *result)`.
pub type ServiceFn = unsafe extern "system" fn(PCWSTR, *mut PWSTR) -> HRESULT;

hcs_ffi::fn_table! {
    /// The `computecore.dll` exports the V2 driver uses, resolved at run time. Live migration,
    /// `HcsGetOperationProperties` and the exit waits are optional (absent on older hosts).
    pub struct ComputeCoreTable for "computecore.dll" {
        required {
            create_operation: CreateOperationFn = "HcsCreateOperation",
            close_operation: CloseOperationFn = "HcsCloseOperation",
            get_operation_result: GetOperationResultFn = "HcsGetOperationResult",
            get_operation_result_and_process_info: GetOperationResultAndProcessInfoFn = "HcsGetOperationResultAndProcessInfo",
            wait_for_operation_result: WaitForOperationResultFn = "HcsWaitForOperationResult",
            wait_for_operation_result_and_process_info: WaitForOperationResultAndProcessInfoFn = "HcsWaitForOperationResultAndProcessInfo",
            cancel_operation: CancelOperationFn = "HcsCancelOperation",
            enumerate_compute_systems: EnumerateComputeSystemsFn = "HcsEnumerateComputeSystems",
            create_compute_system: CreateComputeSystemFn = "HcsCreateComputeSystem",
            open_compute_system: OpenComputeSystemFn = "HcsOpenComputeSystem",
            close_compute_system: CloseComputeSystemFn = "HcsCloseComputeSystem",
            start_compute_system: SystemOperationFn = "HcsStartComputeSystem",
            shutdown_compute_system: SystemOperationFn = "HcsShutDownComputeSystem",
            terminate_compute_system: SystemOperationFn = "HcsTerminateComputeSystem",
            pause_compute_system: SystemOperationFn = "HcsPauseComputeSystem",
            resume_compute_system: SystemOperationFn = "HcsResumeComputeSystem",
            save_compute_system: SystemOperationFn = "HcsSaveComputeSystem",
            get_compute_system_properties: SystemOperationFn = "HcsGetComputeSystemProperties",
            modify_compute_system: ModifyComputeSystemFn = "HcsModifyComputeSystem",
            set_compute_system_callback: SetCallbackFn = "HcsSetComputeSystemCallback",
            create_process: CreateProcessFn = "HcsCreateProcess",
            open_process: OpenProcessFn = "HcsOpenProcess",
            close_process: CloseProcessFn = "HcsCloseProcess",
            terminate_process: ProcessOperationFn = "HcsTerminateProcess",
            signal_process: ProcessOperationFn = "HcsSignalProcess",
            get_process_info: GetProcessInfoFn = "HcsGetProcessInfo",
            get_process_properties: ProcessOperationFn = "HcsGetProcessProperties",
            modify_process: ProcessOperationFn = "HcsModifyProcess",
            set_process_callback: SetCallbackFn = "HcsSetProcessCallback",
            get_service_properties: ServiceFn = "HcsGetServiceProperties",
            modify_service_settings: ServiceFn = "HcsModifyServiceSettings",
        }
        optional {
            crash_compute_system: SystemOperationFn = "HcsCrashComputeSystem",
            wait_for_compute_system_exit: WaitForExitFn = "HcsWaitForComputeSystemExit",
            wait_for_process_exit: WaitForExitFn = "HcsWaitForProcessExit",
            add_resource_to_operation: AddResourceToOperationFn = "HcsAddResourceToOperation",
            get_operation_properties: GetOperationPropertiesFn = "HcsGetOperationProperties",
            initialize_live_migration_on_source: SystemOperationFn = "HcsInitializeLiveMigrationOnSource",
            start_live_migration_on_source: SystemOperationFn = "HcsStartLiveMigrationOnSource",
            start_live_migration_transfer: SystemOperationFn = "HcsStartLiveMigrationTransfer",
            finalize_live_migration: SystemOperationFn = "HcsFinalizeLiveMigration",
            cancel_live_migration: SystemOperationFn = "HcsCancelLiveMigration",
        }
    }
}

impl ComputeCoreTable {
    /// Loads `computecore.dll` from System32 and resolves its exports; a missing DLL or required
    /// export is a "driver unavailable" [`LoadError`] naming it; off Windows always
    /// [`LoadError::NotWindows`].
    pub fn load() -> Result<Self, LoadError> {
        Self::load_from(&DllSource::System32)
    }

    /// Like [`Self::load`], from an explicit source. Strings are freed with `LocalFree`, as
    /// Microsoft's reference for the operation-result functions prescribes.
    pub fn load_from(source: &DllSource) -> Result<Self, LoadError> {
        let lib = Library::open(Self::DLL, source)?;
        let lookup_lib = lib.clone();
        // SAFETY: every field type is the export's signature per design FFI §3.2/§4 (the
        // security-descriptor and option parameters are passed as `*const c_void`/`i32`, which
        // have the same ABI), and `lib` is pinned (never unloaded), so the addresses stay
        // callable for the rest of the process.
        unsafe { Self::from_lookup(|name| lookup_lib.symbol(name), default_free(), Some(lib)) }
    }

    /// `true` when the host exports the four live-migration steps of the public header
    /// (initialize, start on source, transfer, finalize). `HcsCancelLiveMigration` is newer and
    /// optional on its own: its absence does not make a host migration-less (the library shuts
    /// the transport down instead, design §10.2). The start calls also need
    /// `HcsAddResourceToOperation`, and say unsupported without it.
    pub fn has_live_migration(&self) -> bool {
        self.initialize_live_migration_on_source.is_some()
            && self.start_live_migration_on_source.is_some()
            && self.start_live_migration_transfer.is_some()
            && self.finalize_live_migration.is_some()
    }
}

#[cfg(windows)]
fn default_free() -> FreeStringFn {
    unsafe extern "system" fn local_free(p: *mut c_void) {
        // SAFETY: `p` is a string computecore.dll allocated with LocalAlloc, freed exactly once.
        unsafe { windows_sys::Win32::Foundation::LocalFree(p) };
    }
    local_free
}

#[cfg(not(windows))]
fn default_free() -> FreeStringFn {
    // Unreachable in practice: off Windows no DLL loads, so no table gets this routine.
    unsafe extern "system" fn leak(_p: *mut c_void) {}
    leak
}
