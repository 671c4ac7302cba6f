//! [`VmComputeDriver`]: the V1 [`hcs::Driver`] over a [`VmComputeTable`].

use crate::table::VmComputeTable;
use hcs::{
    ApiGeneration, CallbackHandle, Driver, DriverResult, Failure, HResult, NotificationKind, NotifyContext,
    ProcessHandle, ProcessInfo, Reply, SystemHandle,
};
use hcs_ffi::{
    self as ffi, invalid_utf16, HandleGuard, OutString, StdioMapper, SystemStdio, WideCString, HCS_CALLBACK,
    HCS_PROCESS, HCS_PROCESS_INFORMATION, HCS_SYSTEM, HRESULT, NULL_HANDLE, PCWSTR,
};
use std::ffi::c_void;
use std::sync::Arc;
use std::time::Instant;

const DLL: &str = "vmcompute.dll";
const PENDING: HResult = HResult::ERROR_VMCOMPUTE_OPERATION_PENDING;

/// The V1 driver: each method makes one `vmcompute.dll` call and reports what it said.
///
/// * Strings are marshalled to NUL-terminated UTF-16; an interior NUL fails *before* the call
///   with `E_INVALIDARG` (`0x80070057`, Win32 form `ERROR_INVALID_PARAMETER`), which the
///   lifecycle classifies like hcsshim's EINVAL.
/// * Every returned string is copied and then freed exactly once with the table's
///   `free_string`, on success and failure alike. A null string reads as absent (`""` for a
///   call's main output). A string that is not valid UTF-16 turns the call into a failure with
///   `HRESULT_FROM_WIN32(ERROR_INVALID_DATA)`; it is still freed, and a handle the call created
///   is closed again.
/// * [`HResult::ERROR_VMCOMPUTE_OPERATION_PENDING`] from create, start, shutdown,
///   terminate, pause, resume and save is reported as [`Reply::pending`] (create carries its
///   handle); from any other call it is an ordinary failure.
/// * Handles are the DLL's pointer values; the callback context handed to HCS is the
///   [`NotifyContext`] id cast to a pointer, never a real pointer.
pub struct VmComputeDriver {
    table: VmComputeTable,
    stdio: Box<dyn StdioMapper>,
}

impl std::fmt::Debug for VmComputeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmComputeDriver")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl VmComputeDriver {
    /// A driver over `table`, with the platform's stdio mapping ([`SystemStdio`]).
    pub fn new(table: VmComputeTable) -> Arc<Self> {
        Self::with_stdio(table, SystemStdio)
    }

    /// A driver over `table` whose process stdio handles are converted by `stdio` (tests map
    /// the fake handles of a fake table this way).
    pub fn with_stdio(table: VmComputeTable, stdio: impl StdioMapper) -> Arc<Self> {
        Arc::new(VmComputeDriver {
            table,
            stdio: Box::new(stdio),
        })
    }

    /// Loads `vmcompute.dll` from System32 ([`VmComputeTable::load`]) and builds the driver.
    pub fn load() -> Result<Arc<Self>, ffi::LoadError> {
        VmComputeTable::load().map(Self::new)
    }

    /// The function table.
    pub fn table(&self) -> &VmComputeTable {
        &self.table
    }

    fn out(&self) -> OutString {
        OutString::new(self.table.free_string)
    }

    /// Reads a result document (freeing it).
    fn doc(&self, op: &str, s: OutString) -> Result<Option<String>, Failure> {
        s.take().map_err(|lossy| invalid_utf16(DLL, op, &lossy))
    }

    /// Turns `(hr, result document)` into the driver result, with `value` on success.
    fn finish<T>(
        &self,
        op: &'static str,
        start: Instant,
        hr: HRESULT,
        result: OutString,
        pending_capable: bool,
        value: impl FnOnce() -> Result<T, Failure>,
    ) -> DriverResult<T> {
        let hr = HResult::from_i32(hr);
        tracing::debug!(op, dll = DLL, hresult = %hr, elapsed = ?start.elapsed(), "HCS call");
        let doc = self.doc(op, result);
        if hr.is_failure() && !(pending_capable && hr == PENDING) {
            return Err(Failure {
                code: hr,
                document: doc?,
                source: None,
            });
        }
        let document = doc?;
        let value = value()?;
        Ok(Reply {
            value,
            document,
            pending: hr == PENDING,
        })
    }

    fn control(
        &self,
        op: &'static str,
        f: crate::table::SystemControlFn,
        system: SystemHandle,
        options: &str,
    ) -> DriverResult<()> {
        let options = WideCString::new(options)?;
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: `system` is an open handle issued by this driver (the lifecycle passes only
        // open handles, never one being closed); `options` is NUL-terminated and outlives the
        // call; `result` is a valid out-slot initialised to null.
        let hr = unsafe { f(sys(system), options.as_ptr(), result.as_out()) };
        self.finish(op, start, hr, result, true, || Ok(()))
    }

    fn register(
        &self,
        op: &'static str,
        handle: *mut c_void,
        ctx: NotifyContext,
        f: crate::table::RegisterComputeSystemCallbackFn,
    ) -> Result<CallbackHandle, Failure> {
        let mut cb: HCS_CALLBACK = std::ptr::null_mut();
        let start = Instant::now();
        // SAFETY: `handle` is an open handle issued by this driver; the trampoline matches
        // HCS_NOTIFICATION_CALLBACK and is a plain function valid for the process lifetime; the
        // context is an integer id, never dereferenced; `cb` is a valid out-slot.
        let hr = unsafe { f(handle, Some(notification_trampoline), ctx_ptr(ctx), &mut cb) };
        let hr = HResult::from_i32(hr);
        tracing::debug!(op, dll = DLL, hresult = %hr, elapsed = ?start.elapsed(), "HCS call");
        if hr.is_failure() {
            return Err(Failure::new(hr));
        }
        CallbackHandle::new(cb as usize as u64).ok_or_else(|| Failure::new(NULL_HANDLE))
    }

    /// A guard for a handle a call may produce, closed again with `close` (the table's close
    /// export for that kind of handle) on any path that does not hand it out.
    fn guard(
        what: &'static str,
        close: unsafe extern "system" fn(*mut c_void) -> HRESULT,
    ) -> HandleGuard<impl FnMut(*mut c_void)> {
        HandleGuard::new(move |raw| {
            // SAFETY: `close` is the table's close export for this kind of handle; the DLL handed
            // us `raw` during the call, nobody else has it, and the guard closes it once.
            let hr = unsafe { close(raw) };
            if hr < 0 {
                tracing::warn!(hresult = %HResult::from_i32(hr), "closing an unused {what} handle failed");
            }
        })
    }

    fn unregister(&self, op: &'static str, callback: CallbackHandle) -> Result<(), Failure> {
        let f = if op == "HcsUnregisterProcessCallback" {
            self.table.unregister_process_callback
        } else {
            self.table.unregister_compute_system_callback
        };
        let start = Instant::now();
        // SAFETY: `callback` is a registration handle issued by this driver and not yet
        // unregistered (lifecycle contract).
        let hr = HResult::from_i32(unsafe { f(callback.raw() as usize as HCS_CALLBACK) });
        status(op, start, hr)
    }
}

fn sys(h: SystemHandle) -> HCS_SYSTEM {
    h.raw() as usize as HCS_SYSTEM
}

fn proc_(h: ProcessHandle) -> HCS_PROCESS {
    h.raw() as usize as HCS_PROCESS
}

fn ctx_ptr(ctx: NotifyContext) -> *const c_void {
    ctx.raw() as usize as *const c_void
}

/// The `HCS_NOTIFICATION_CALLBACK` every V1 registration uses. Copies `data` (owned by HCS,
/// never freed here) and hands the notification to [`hcs::dispatch`] with the context id.
/// Does not unwind: the body, the log of a panic and the drop of its payload all run inside
/// [`ffi::callback::contain`]. It uses nothing of the table, and `vmcompute.dll` is never
/// unloaded (design FFI §6), so HCS's thread always returns into mapped code.
///
/// # Safety
///
/// `data` is null or a NUL-terminated UTF-16 string valid for the duration of the call (HCS's
/// guarantee). `context` is never dereferenced.
pub unsafe extern "system" fn notification_trampoline(
    notification_type: u32,
    context: *const c_void,
    status: HRESULT,
    data: PCWSTR,
) {
    ffi::callback::contain("vmcompute notification", || {
        #[cfg(test)]
        test_hooks::maybe_panic();
        // SAFETY: the caller (HCS) guarantees `data` is null or a valid string for this call.
        let payload = unsafe { ffi::copy_callback_str(data) };
        hcs::dispatch(
            context as usize as u64,
            NotificationKind::from_v1(notification_type),
            status,
            payload.as_deref(),
        );
    });
}

#[cfg(test)]
pub(crate) mod test_hooks {
    use std::sync::atomic::{AtomicBool, Ordering};
    pub(crate) static PANIC: AtomicBool = AtomicBool::new(false);
    pub(crate) fn maybe_panic() {
        if PANIC.swap(false, Ordering::SeqCst) {
            panic!("injected panic in the trampoline");
        }
    }
}

impl Driver for VmComputeDriver {
    fn name(&self) -> &str {
        "vmcompute"
    }

    fn generation(&self) -> ApiGeneration {
        ApiGeneration::V1
    }

    fn enumerate_compute_systems(&self, query: &str) -> DriverResult<String> {
        let query = WideCString::new(query)?;
        let mut systems = self.out();
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: `query` is NUL-terminated and outlives the call; both out-slots are valid and
        // null-initialised.
        let hr = unsafe {
            (self.table.enumerate_compute_systems)(query.as_ptr(), systems.as_out(), result.as_out())
        };
        let systems = self.doc("HcsEnumerateComputeSystems", systems);
        self.finish("HcsEnumerateComputeSystems", start, hr, result, false, || {
            Ok(systems?.unwrap_or_default())
        })
    }

    fn create_compute_system(
        &self,
        id: &str,
        configuration: &str,
        _ctx: NotifyContext,
    ) -> DriverResult<SystemHandle> {
        let id = WideCString::new(id)?;
        let configuration = WideCString::new(configuration)?;
        let mut guard = Self::guard("system", self.table.close_compute_system);
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: both strings are NUL-terminated and outlive the call; identity is null as in
        // hcsshim; the out-slots are valid and null-initialised.
        let hr = unsafe {
            (self.table.create_compute_system)(
                id.as_ptr(),
                configuration.as_ptr(),
                std::ptr::null_mut(),
                guard.slot(),
                result.as_out(),
            )
        };
        // On any failure (including an unusable result document) the guard closes a handle the
        // DLL may have produced.
        self.finish("HcsCreateComputeSystem", start, hr, result, true, || {
            guard.release(SystemHandle::new)
        })
    }

    fn open_compute_system(&self, id: &str) -> DriverResult<SystemHandle> {
        let id = WideCString::new(id)?;
        let mut guard = Self::guard("system", self.table.close_compute_system);
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: `id` is NUL-terminated and outlives the call; out-slots valid and null.
        let hr = unsafe { (self.table.open_compute_system)(id.as_ptr(), guard.slot(), result.as_out()) };
        self.finish("HcsOpenComputeSystem", start, hr, result, false, || {
            guard.release(SystemHandle::new)
        })
    }

    fn close_compute_system(&self, system: SystemHandle) -> Result<(), Failure> {
        let start = Instant::now();
        // SAFETY: `system` is an open handle issued by this driver, closed by the lifecycle once
        // no other call on it is in flight.
        let hr = HResult::from_i32(unsafe { (self.table.close_compute_system)(sys(system)) });
        status("HcsCloseComputeSystem", start, hr)
    }

    fn start_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        _ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.control(
            "HcsStartComputeSystem",
            self.table.start_compute_system,
            system,
            options,
        )
    }

    fn shutdown_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.control(
            "HcsShutdownComputeSystem",
            self.table.shutdown_compute_system,
            system,
            options,
        )
    }

    fn terminate_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.control(
            "HcsTerminateComputeSystem",
            self.table.terminate_compute_system,
            system,
            options,
        )
    }

    fn pause_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        _ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.control(
            "HcsPauseComputeSystem",
            self.table.pause_compute_system,
            system,
            options,
        )
    }

    fn resume_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        _ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.control(
            "HcsResumeComputeSystem",
            self.table.resume_compute_system,
            system,
            options,
        )
    }

    fn save_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        _ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.control(
            "HcsSaveComputeSystem",
            self.table.save_compute_system,
            system,
            options,
        )
    }

    fn get_compute_system_properties(&self, system: SystemHandle, query: &str) -> DriverResult<String> {
        let query = WideCString::new(query)?;
        let mut props = self.out();
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: open handle issued by this driver; `query` outlives the call; out-slots valid.
        let hr = unsafe {
            (self.table.get_compute_system_properties)(
                sys(system),
                query.as_ptr(),
                props.as_out(),
                result.as_out(),
            )
        };
        let props = self.doc("HcsGetComputeSystemProperties", props);
        self.finish("HcsGetComputeSystemProperties", start, hr, result, false, || {
            Ok(props?.unwrap_or_default())
        })
    }

    fn modify_compute_system(&self, system: SystemHandle, configuration: &str) -> DriverResult<()> {
        let configuration = WideCString::new(configuration)?;
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: open handle issued by this driver; the string outlives the call; out-slot valid.
        let hr = unsafe {
            (self.table.modify_compute_system)(sys(system), configuration.as_ptr(), result.as_out())
        };
        self.finish("HcsModifyComputeSystem", start, hr, result, false, || Ok(()))
    }

    fn register_compute_system_callback(
        &self,
        system: SystemHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        self.register(
            "HcsRegisterComputeSystemCallback",
            sys(system),
            ctx,
            self.table.register_compute_system_callback,
        )
    }

    fn unregister_compute_system_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.unregister("HcsUnregisterComputeSystemCallback", callback)
    }

    fn create_process(
        &self,
        system: SystemHandle,
        parameters: &str,
    ) -> DriverResult<(ProcessHandle, ProcessInfo)> {
        let parameters = WideCString::new(parameters)?;
        let mut info = HCS_PROCESS_INFORMATION::default();
        let mut guard = Self::guard("process", self.table.close_process);
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: open handle issued by this driver; `parameters` outlives the call; `info`,
        // the process slot and the result slot are valid out-parameters.
        let hr = unsafe {
            (self.table.create_process)(
                sys(system),
                parameters.as_ptr(),
                &mut info,
                guard.slot(),
                result.as_out(),
            )
        };
        // Stdio handles are ours from here on, whatever the outcome: wrap them now so that every
        // early return below drops (closes) them.
        let pinfo = ffi::process_info(&*self.stdio, &info);
        self.finish("HcsCreateProcess", start, hr, result, false, || {
            let pinfo = pinfo?; // on error the guard closes the process handle
            Ok((guard.release(ProcessHandle::new)?, pinfo))
        })
    }

    fn open_process(&self, system: SystemHandle, pid: u32) -> DriverResult<ProcessHandle> {
        let mut guard = Self::guard("process", self.table.close_process);
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: open handle issued by this driver; out-slots valid and null-initialised.
        let hr = unsafe { (self.table.open_process)(sys(system), pid, guard.slot(), result.as_out()) };
        self.finish("HcsOpenProcess", start, hr, result, false, || {
            guard.release(ProcessHandle::new)
        })
    }

    fn close_process(&self, process: ProcessHandle) -> Result<(), Failure> {
        let start = Instant::now();
        // SAFETY: open process handle issued by this driver, closed once by the lifecycle.
        let hr = HResult::from_i32(unsafe { (self.table.close_process)(proc_(process)) });
        status("HcsCloseProcess", start, hr)
    }

    fn terminate_process(&self, process: ProcessHandle) -> DriverResult<()> {
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: open process handle issued by this driver; out-slot valid.
        let hr = unsafe { (self.table.terminate_process)(proc_(process), result.as_out()) };
        self.finish("HcsTerminateProcess", start, hr, result, false, || Ok(()))
    }

    fn signal_process(&self, process: ProcessHandle, options: &str) -> DriverResult<()> {
        let options = WideCString::new(options)?;
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: open process handle issued by this driver; string outlives the call.
        let hr = unsafe { (self.table.signal_process)(proc_(process), options.as_ptr(), result.as_out()) };
        self.finish("HcsSignalProcess", start, hr, result, false, || Ok(()))
    }

    fn get_process_info(&self, process: ProcessHandle) -> DriverResult<ProcessInfo> {
        let mut info = HCS_PROCESS_INFORMATION::default();
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: open process handle issued by this driver; `info` and the result slot are
        // valid out-parameters.
        let hr = unsafe { (self.table.get_process_info)(proc_(process), &mut info, result.as_out()) };
        let pinfo = ffi::process_info(&*self.stdio, &info);
        self.finish("HcsGetProcessInfo", start, hr, result, false, || pinfo)
    }

    fn get_process_properties(&self, process: ProcessHandle) -> DriverResult<String> {
        let mut props = self.out();
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: open process handle issued by this driver; out-slots valid.
        let hr =
            unsafe { (self.table.get_process_properties)(proc_(process), props.as_out(), result.as_out()) };
        let props = self.doc("HcsGetProcessProperties", props);
        self.finish("HcsGetProcessProperties", start, hr, result, false, || {
            Ok(props?.unwrap_or_default())
        })
    }

    fn modify_process(&self, process: ProcessHandle, settings: &str) -> DriverResult<()> {
        let settings = WideCString::new(settings)?;
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: open process handle issued by this driver; string outlives the call.
        let hr = unsafe { (self.table.modify_process)(proc_(process), settings.as_ptr(), result.as_out()) };
        self.finish("HcsModifyProcess", start, hr, result, false, || Ok(()))
    }

    fn register_process_callback(
        &self,
        process: ProcessHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        self.register(
            "HcsRegisterProcessCallback",
            proc_(process),
            ctx,
            self.table.register_process_callback,
        )
    }

    fn unregister_process_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.unregister("HcsUnregisterProcessCallback", callback)
    }

    fn get_service_properties(&self, query: &str) -> DriverResult<String> {
        let Some(f) = self.table.get_service_properties else {
            return Err(Failure::unsupported());
        };
        let query = WideCString::new(query)?;
        let mut props = self.out();
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: `query` outlives the call; out-slots valid.
        let hr = unsafe { f(query.as_ptr(), props.as_out(), result.as_out()) };
        let props = self.doc("HcsGetServiceProperties", props);
        self.finish("HcsGetServiceProperties", start, hr, result, false, || {
            Ok(props?.unwrap_or_default())
        })
    }

    fn modify_service_settings(&self, settings: &str) -> DriverResult<()> {
        let Some(f) = self.table.modify_service_settings else {
            return Err(Failure::unsupported());
        };
        let settings = WideCString::new(settings)?;
        let mut result = self.out();
        let start = Instant::now();
        // SAFETY: `settings` outlives the call; out-slot valid.
        let hr = unsafe { f(settings.as_ptr(), result.as_out()) };
        self.finish("HcsModifyServiceSettings", start, hr, result, false, || Ok(()))
    }
}

#[cfg(all(test, windows))]
mod windows_typedefs {
    use super::*;

    #[test]
    fn trampoline_matches_the_windows_sys_typedef() {
        let cb: windows_sys::Win32::System::HostComputeSystem::HCS_NOTIFICATION_CALLBACK =
            Some(notification_trampoline);
        assert!(cb.is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::{Arc as StdArc, Mutex};

    #[test]
    fn panic_inside_the_trampoline_is_contained_and_later_callbacks_still_work() {
        let seen = StdArc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let sub = hcs::notify::Subscription::new(move |k, _, _| s2.lock().unwrap().push(k));
        test_hooks::PANIC.store(true, Ordering::SeqCst);
        // SAFETY: null data is allowed; the context is an id.
        unsafe { notification_trampoline(1, ctx_ptr(sub.context()), 0, std::ptr::null()) };
        assert!(
            !test_hooks::PANIC.load(Ordering::SeqCst),
            "the injected panic fired"
        );
        assert!(seen.lock().unwrap().is_empty());
        // SAFETY: as above.
        unsafe { notification_trampoline(1, ctx_ptr(sub.context()), 0, std::ptr::null()) };
        assert_eq!(*seen.lock().unwrap(), vec![NotificationKind::SystemExited]);
    }
}

/// Traces a call that returns only an HRESULT and turns it into the driver result.
fn status(op: &'static str, start: Instant, hr: HResult) -> Result<(), Failure> {
    tracing::debug!(op, dll = DLL, hresult = %hr, elapsed = ?start.elapsed(), "HCS call");
    if hr.is_failure() {
        Err(Failure::new(hr))
    } else {
        Ok(())
    }
}
