//! FFI plumbing shared by the HCS drivers (`hcs-vmcompute` and `hcs-computecore`): the C type
//! aliases, run-time DLL loading, UTF-16 marshalling, returned-string ownership and the
//! conversion of stdio `HANDLE`s into [`PipeReader`]/[`PipeWriter`].
//!
//! Nothing here links an HCS function at load time: DLLs are opened with `libloading` and every
//! export is resolved by name into a function-pointer table (`windows-ffi.md` §6).

#![allow(non_camel_case_types)]

use hcs::{Failure, HResult, PipeReader, PipeWriter, ProcessInfo};
use std::ffi::c_void;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::ptr::NonNull;

/// `HRESULT`: a failure iff negative.
pub type HRESULT = i32;
/// `PCWSTR`: a NUL-terminated UTF-16 string the callee only reads.
pub type PCWSTR = *const u16;
/// `PWSTR`: a NUL-terminated UTF-16 string (returned strings are owned by the caller).
pub type PWSTR = *mut u16;
/// `HANDLE`: a pointer-sized kernel handle.
pub type HANDLE = *mut c_void;
/// `HCS_SYSTEM`: an open compute-system handle.
pub type HCS_SYSTEM = *mut c_void;
/// `HCS_PROCESS`: an open process handle.
pub type HCS_PROCESS = *mut c_void;
/// `HCS_OPERATION`: a V2 operation handle.
pub type HCS_OPERATION = *mut c_void;
/// `HCS_CALLBACK`: a V1 callback-registration handle.
pub type HCS_CALLBACK = *mut c_void;

/// The routine that frees a string returned by the DLL (`CoTaskMemFree` for V1 per hcsshim,
/// `LocalFree` for V2 per Microsoft's reference). Held in each driver's table so that fakes can
/// supply the matching allocator, and so the choice lives in one place.
pub type FreeStringFn = unsafe extern "system" fn(*mut c_void);

/// `HCS_PROCESS_INFORMATION` (same layout in V1 and V2; 32 bytes on x86_64).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_snake_case)]
pub struct HCS_PROCESS_INFORMATION {
    /// Process id inside the compute system.
    pub ProcessId: u32,
    /// Reserved; zero.
    pub Reserved: u32,
    /// Standard input (the caller owns it once returned; 0 or -1 = no stream).
    pub StdInput: HANDLE,
    /// Standard output.
    pub StdOutput: HANDLE,
    /// Standard error.
    pub StdError: HANDLE,
}

impl Default for HCS_PROCESS_INFORMATION {
    fn default() -> Self {
        HCS_PROCESS_INFORMATION {
            ProcessId: 0,
            Reserved: 0,
            StdInput: std::ptr::null_mut(),
            StdOutput: std::ptr::null_mut(),
            StdError: std::ptr::null_mut(),
        }
    }
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<HCS_PROCESS_INFORMATION>() == 32);

/// `INFINITE` for the V2 wait functions.
pub const INFINITE: u32 = 0xFFFF_FFFF;

/// The HRESULT reported when a string argument contains an interior NUL: `E_INVALIDARG`
/// (`0x80070057`, whose Win32 form is `ERROR_INVALID_PARAMETER`, 87). The call is never made.
pub const INTERIOR_NUL: HResult = HResult::E_INVALIDARG;
/// The HRESULT reported when the DLL returns a string that is not valid UTF-16:
/// `HRESULT_FROM_WIN32(ERROR_INVALID_DATA)` (`0x8007000D`).
pub const INVALID_UTF16: HResult = HResult(0x8007_000D);
/// The HRESULT reported when a call succeeded but returned a null handle (`E_POINTER`).
pub const NULL_HANDLE: HResult = HResult(0x8000_4003);
/// `HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED)`: stdio handles that cannot be used here.
pub const STDIO_UNSUPPORTED: HResult = HResult(0x8007_0032);

// ------------------------------------------------------------------------------------------
// Loading

/// Where a DLL is loaded from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DllSource {
    /// `%SystemRoot%\System32` only (`LOAD_LIBRARY_SEARCH_SYSTEM32`): the production default,
    /// a defence against DLL planting.
    #[default]
    System32,
    /// The default search order, application directory first (tests with fake DLLs placed next
    /// to the test executable).
    DefaultSearchOrder,
    /// An explicit path.
    Path(PathBuf),
}

/// Why a driver's DLL could not be used: the driver is unavailable on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The DLL itself could not be loaded (`ERROR_MOD_NOT_FOUND` and friends).
    #[error("driver unavailable: {dll} could not be loaded: {detail}")]
    MissingDll {
        /// The DLL name.
        dll: &'static str,
        /// The loader's message.
        detail: String,
    },
    /// A required export is absent (`ERROR_PROC_NOT_FOUND`).
    #[error("driver unavailable: {dll} has no export {export}")]
    MissingExport {
        /// The DLL name.
        dll: &'static str,
        /// The missing export.
        export: &'static str,
    },
    /// HCS DLLs exist only on Windows.
    #[error("driver unavailable: {dll} can only be loaded on Windows")]
    NotWindows {
        /// The DLL name.
        dll: &'static str,
    },
}

impl LoadError {
    /// The HRESULT that best describes the error (`HRESULT_FROM_WIN32(126)`, `(127)`, or
    /// `E_NOTIMPL` off Windows).
    pub fn code(&self) -> HResult {
        match self {
            LoadError::MissingDll { .. } => HResult(0x8007_007E),
            LoadError::MissingExport { .. } => HResult(0x8007_007F),
            LoadError::NotWindows { .. } => HResult::E_NOTIMPL,
        }
    }
}

/// A loaded DLL. Tables hold a clone, so the DLL stays loaded while any table (and so any
/// handle obtained through it) is alive. Off Windows no value of this type can exist.
#[derive(Clone)]
pub struct Library {
    #[cfg(windows)]
    inner: std::sync::Arc<libloading::Library>,
    #[cfg(not(windows))]
    never: std::convert::Infallible,
    name: &'static str,
}

impl fmt::Debug for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Library").field("name", &self.name).finish()
    }
}

impl Library {
    /// Loads `dll` from `source`.
    pub fn open(dll: &'static str, source: &DllSource) -> Result<Self, LoadError> {
        #[cfg(windows)]
        {
            use libloading::os::windows as lw;
            let res = match source {
                // SAFETY: loading runs the DLL's initialisers; vmcompute.dll/computecore.dll (and
                // our fakes) have no initialisation side effects that could violate Rust's rules.
                DllSource::System32 => unsafe {
                    lw::Library::load_with_flags(dll, lw::LOAD_LIBRARY_SEARCH_SYSTEM32)
                },
                // SAFETY: as above.
                DllSource::DefaultSearchOrder => unsafe { lw::Library::new(dll) },
                // SAFETY: as above; the caller chose the path.
                DllSource::Path(p) => unsafe { lw::Library::new(p) },
            };
            match res {
                Ok(lib) => Ok(Library {
                    inner: std::sync::Arc::new(lib.into()),
                    name: dll,
                }),
                Err(e) => Err(LoadError::MissingDll {
                    dll,
                    detail: e.to_string(),
                }),
            }
        }
        #[cfg(not(windows))]
        {
            let _ = source;
            Err(LoadError::NotWindows { dll })
        }
    }

    /// The DLL name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The address of `export`, or `None` when the DLL does not export it.
    pub fn symbol(&self, export: &str) -> Option<NonNull<c_void>> {
        #[cfg(windows)]
        {
            // SAFETY: we read the export's address as a plain pointer value; nothing is called
            // and the pointer is only turned into a function pointer by a table whose field type
            // is the export's documented signature.
            let sym = unsafe { self.inner.get::<*mut c_void>(export.as_bytes()) };
            sym.ok().and_then(|s| NonNull::new(*s))
        }
        #[cfg(not(windows))]
        {
            let _ = export;
            match self.never {}
        }
    }
}

/// Defines a function-pointer table for one DLL: one field per export (required exports as plain
/// fields, optional ones as `Option`), the string-free routine and the owning [`Library`], plus
/// an `unsafe fn from_lookup` that fills it from any name → address lookup.
#[macro_export]
#[doc(hidden)]
macro_rules! fn_table {
    (
        $(#[$m:meta])*
        pub struct $name:ident for $dll:literal {
            required {
                $( $(#[$fm:meta])* $field:ident : $ty:ty = $export:literal, )*
            }
            optional {
                $( $(#[$om:meta])* $ofield:ident : $oty:ty = $oexport:literal, )*
            }
        }
    ) => {
        $(#[$m])*
        #[derive(Clone)]
        pub struct $name {
            $( $(#[$fm])* #[doc = concat!("`", $export, "` (required).")] pub $field: $ty, )*
            $( $(#[$om])* #[doc = concat!("`", $oexport, "` (optional; `None` when not exported).")]
               pub $ofield: Option<$oty>, )*
            /// Frees every string the DLL returns (exactly once per string).
            pub free_string: $crate::ffi::FreeStringFn,
            /// Keeps the DLL loaded while this table lives; `None` for tables of fake functions.
            pub library: Option<$crate::ffi::Library>,
        }

        impl $name {
            /// The DLL this table binds.
            pub const DLL: &'static str = $dll;

            /// Fills the table from `lookup` (export name → address), with `free_string` as the
            /// string-free routine. A missing required export fails with
            /// [`LoadError::MissingExport`]($crate::ffi::LoadError) naming it; a missing optional
            /// export leaves its field `None`.
            ///
            /// # Safety
            ///
            /// Every address `lookup` returns must be a function with exactly the signature of
            /// the field it fills (the export's documented signature), callable for as long as
            /// the returned table (or a clone) is alive.
            pub unsafe fn from_lookup(
                mut lookup: impl FnMut(&str) -> Option<::std::ptr::NonNull<::std::ffi::c_void>>,
                free_string: $crate::ffi::FreeStringFn,
                library: Option<$crate::ffi::Library>,
            ) -> Result<Self, $crate::ffi::LoadError> {
                Ok($name {
                    $( $field: match lookup($export) {
                        // SAFETY: the caller guarantees the address has this field's signature;
                        // a function pointer and a data pointer have the same size here.
                        Some(p) => unsafe { ::std::mem::transmute_copy::<*mut ::std::ffi::c_void, $ty>(&p.as_ptr()) },
                        None => return Err($crate::ffi::LoadError::MissingExport { dll: $dll, export: $export }),
                    }, )*
                    $( $ofield: lookup($oexport).map(|p| {
                        // SAFETY: as above.
                        unsafe { ::std::mem::transmute_copy::<*mut ::std::ffi::c_void, $oty>(&p.as_ptr()) }
                    }), )*
                    free_string,
                    library,
                })
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("library", &self.library)
                    $( .field(stringify!($ofield), &self.$ofield.is_some()) )*
                    .finish_non_exhaustive()
            }
        }
    };
}

// ------------------------------------------------------------------------------------------
// Strings

/// A NUL-terminated UTF-16 copy of a Rust string, passed as `PCWSTR`.
#[derive(Debug, Clone)]
pub struct WideCString(Vec<u16>);

impl WideCString {
    /// Encodes `s`. An interior NUL is rejected with [`INTERIOR_NUL`] before any DLL call.
    pub fn new(s: &str) -> Result<Self, Failure> {
        if s.contains('\0') {
            return Err(Failure::new(INTERIOR_NUL));
        }
        let mut v: Vec<u16> = s.encode_utf16().collect();
        v.push(0);
        Ok(WideCString(v))
    }

    /// The string as a `PCWSTR`, valid while `self` lives.
    pub fn as_ptr(&self) -> PCWSTR {
        self.0.as_ptr()
    }
}

/// `Some(encoded)` for a non-empty string, `None` for `""` (V2 passes "no options" as null).
pub fn wide_opt(s: &str) -> Result<Option<WideCString>, Failure> {
    if s.is_empty() {
        Ok(None)
    } else {
        WideCString::new(s).map(Some)
    }
}

/// The pointer of an optional wide string (null for `None`).
pub fn opt_ptr(s: &Option<WideCString>) -> PCWSTR {
    s.as_ref().map_or(std::ptr::null(), WideCString::as_ptr)
}

/// The UTF-16 units of a NUL-terminated string, without the NUL.
///
/// # Safety
///
/// `p` is non-null and points to a readable NUL-terminated UTF-16 string that stays valid and
/// unmodified for `'a`.
pub unsafe fn wide_units<'a>(p: *const u16) -> &'a [u16] {
    let mut len = 0usize;
    // SAFETY: the caller guarantees a readable NUL-terminated string; we stop at the NUL.
    unsafe {
        while *p.add(len) != 0 {
            len += 1;
        }
        std::slice::from_raw_parts(p, len)
    }
}

/// Copies the data string of a notification (owned by HCS; never freed here). Null → `None`;
/// invalid UTF-16 is replaced lossily, because a callback has nobody to report an error to.
///
/// # Safety
///
/// `p` is null or a readable NUL-terminated UTF-16 string valid for the duration of the call.
pub unsafe fn copy_callback_str(p: *const u16) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, and the caller guarantees the rest.
    let units = unsafe { wide_units(p) };
    Some(String::from_utf16_lossy(units))
}

/// A string returned by the DLL through a `*mut PWSTR` out-parameter. The slot starts null;
/// whatever the DLL stores is freed exactly once with the table's free routine, when the value is
/// taken or dropped, on every path.
pub struct OutString {
    ptr: PWSTR,
    free: FreeStringFn,
}

impl OutString {
    /// An empty (null) slot freed with `free`.
    pub fn new(free: FreeStringFn) -> Self {
        OutString {
            ptr: std::ptr::null_mut(),
            free,
        }
    }

    /// The out-parameter to pass to the DLL.
    pub fn as_out(&mut self) -> *mut PWSTR {
        &mut self.ptr
    }

    /// Copies the string (null → `None`) and frees it. Invalid UTF-16 → `Err` with a lossy copy
    /// for diagnostics; the string is freed either way.
    pub fn take(self) -> Result<Option<String>, String> {
        if self.ptr.is_null() {
            return Ok(None);
        }
        // SAFETY: a non-null out-string is a NUL-terminated UTF-16 string allocated by the DLL
        // and owned by us until freed in Drop (after this copy).
        let units = unsafe { wide_units(self.ptr) };
        String::from_utf16(units)
            .map(Some)
            .map_err(|_| String::from_utf16_lossy(units))
        // `self` drops here and frees the string.
    }
}

impl Drop for OutString {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            let p = std::mem::replace(&mut self.ptr, std::ptr::null_mut());
            // SAFETY: `p` was stored by the DLL into our out-parameter and has not been freed;
            // `free` is the routine paired with the DLL's allocator. We cleared the slot first,
            // so it is freed exactly once.
            unsafe { (self.free)(p.cast()) }
        }
    }
}

impl fmt::Debug for OutString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutString").field("ptr", &self.ptr).finish()
    }
}

/// The failure reported for a string from `dll` that is not valid UTF-16.
pub fn invalid_utf16(dll: &str, what: &str, lossy: &str) -> Failure {
    tracing::warn!(dll, what, lossy, "DLL returned a string that is not valid UTF-16");
    Failure::new(INVALID_UTF16)
}

// ------------------------------------------------------------------------------------------
// Handles the driver received

/// A system or process handle HCS handed the driver during a call, closed on drop with `close`
/// unless [`HandleGuard::release`]d: a call that fails after HCS produced a handle (or whose
/// result cannot be reported) does not leak it.
pub struct HandleGuard<C: FnMut(*mut c_void)> {
    raw: *mut c_void,
    close: C,
}

impl<C: FnMut(*mut c_void)> HandleGuard<C> {
    /// An empty guard; `close` is called once with the handle if one is held at drop.
    pub fn new(close: C) -> Self {
        HandleGuard {
            raw: std::ptr::null_mut(),
            close,
        }
    }

    /// The handle held (null: none yet).
    pub fn raw(&self) -> *mut c_void {
        self.raw
    }

    /// The out-slot HCS writes the handle to.
    pub fn slot(&mut self) -> *mut *mut c_void {
        &mut self.raw
    }

    /// Gives the handle to the caller as `H` (`wrap` is e.g. `SystemHandle::new`); a null
    /// handle is a failure ([`NULL_HANDLE`]).
    pub fn release<H>(mut self, wrap: impl FnOnce(u64) -> Option<H>) -> Result<H, Failure> {
        let raw = std::mem::replace(&mut self.raw, std::ptr::null_mut());
        wrap(raw as usize as u64).ok_or_else(|| Failure::new(NULL_HANDLE))
    }
}

impl<C: FnMut(*mut c_void)> Drop for HandleGuard<C> {
    fn drop(&mut self) {
        if !self.raw.is_null() {
            (self.close)(self.raw);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Stdio handles

/// `true` for a stdio handle value that means "no stream" (0 or `INVALID_HANDLE_VALUE`).
pub fn is_absent_handle(h: HANDLE) -> bool {
    h.is_null() || h as isize == -1
}

/// Turns raw stdio handles returned by HCS into pipe objects. Each method takes ownership of
/// the handle it is given (it must close it eventually, also on error).
pub trait StdioMapper: Send + Sync + 'static {
    /// Wraps the reading end of stdout or stderr.
    fn reader(&self, raw: usize) -> io::Result<PipeReader>;
    /// Wraps the writing end of stdin.
    fn writer(&self, raw: usize) -> io::Result<PipeWriter>;
    /// Closes a handle that will not be wrapped (a previous conversion failed).
    fn discard(&self, raw: usize);
}

/// The platform's stdio mapping.
///
/// * **Windows:** the handle becomes an `OwnedHandle` inside an adapter that issues every
///   `ReadFile`/`WriteFile` with an `OVERLAPPED` and an event, then waits with
///   `GetOverlappedResult`. That works whether HCS opened the pipe for overlapped I/O or not
///   (std's `File` aborts the process on an overlapped handle whose I/O goes pending).
///   `ERROR_BROKEN_PIPE` on read is end of file.
/// * **Elsewhere:** there are no Windows handles; a non-absent handle (only a fake table can
///   produce one) is rejected with `ErrorKind::Unsupported`. Tests map fake handles with their
///   own [`StdioMapper`].
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemStdio;

impl StdioMapper for SystemStdio {
    fn reader(&self, raw: usize) -> io::Result<PipeReader> {
        #[cfg(windows)]
        {
            win_pipe::HandlePipe::new(raw).map(PipeReader::new)
        }
        #[cfg(not(windows))]
        {
            let _ = raw;
            Err(no_handles())
        }
    }
    fn writer(&self, raw: usize) -> io::Result<PipeWriter> {
        #[cfg(windows)]
        {
            win_pipe::HandlePipe::new(raw).map(PipeWriter::new)
        }
        #[cfg(not(windows))]
        {
            let _ = raw;
            Err(no_handles())
        }
    }
    fn discard(&self, raw: usize) {
        #[cfg(windows)]
        {
            use std::os::windows::io::{FromRawHandle, OwnedHandle};
            // SAFETY: HCS transferred ownership of this handle to us and nothing else owns it.
            drop(unsafe { OwnedHandle::from_raw_handle(raw as _) });
        }
        #[cfg(not(windows))]
        {
            let _ = raw;
        }
    }
}

#[cfg(not(windows))]
fn no_handles() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "Windows stdio handles cannot be used on this platform",
    )
}

/// Converts the stdio handles of `info` with `mapper` into a [`ProcessInfo`]. On the first
/// failure the handles not yet converted are discarded and converted ones dropped (closed), so
/// nothing leaks; the error is reported as a [`Failure`].
pub fn process_info(
    mapper: &dyn StdioMapper,
    info: &HCS_PROCESS_INFORMATION,
) -> Result<ProcessInfo, Failure> {
    let raw = [info.StdInput, info.StdOutput, info.StdError].map(|h| {
        if is_absent_handle(h) {
            None
        } else {
            Some(h as usize)
        }
    });
    let mut out = ProcessInfo {
        pid: info.ProcessId,
        ..ProcessInfo::default()
    };
    let mut err = None;
    for (i, h) in raw.iter().enumerate() {
        let Some(h) = *h else { continue };
        if err.is_some() {
            mapper.discard(h);
            continue;
        }
        let r = match i {
            0 => mapper.writer(h).map(|w| out.stdin = Some(w)),
            1 => mapper.reader(h).map(|r| out.stdout = Some(r)),
            _ => mapper.reader(h).map(|r| out.stderr = Some(r)),
        };
        if let Err(e) = r {
            err = Some(e);
        }
    }
    match err {
        None => Ok(out),
        Some(e) => {
            tracing::warn!(error = %e, "could not wrap process stdio handles");
            Err(Failure::new(io_error_code(&e)))
        }
    }
}

/// The HRESULT for an I/O error (`HRESULT_FROM_WIN32` of the OS code; `Unsupported` →
/// [`STDIO_UNSUPPORTED`]; otherwise `E_FAIL`).
pub fn io_error_code(e: &io::Error) -> HResult {
    match (e.raw_os_error(), e.kind()) {
        (Some(code), _) if cfg!(windows) && code > 0 => HResult(0x8007_0000 | (code as u32 & 0xFFFF)),
        (_, io::ErrorKind::Unsupported) => STDIO_UNSUPPORTED,
        _ => HResult::E_FAIL,
    }
}

#[cfg(windows)]
mod win_pipe {
    use std::io::{self, Read, Write};
    use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
    use windows_sys::Win32::Foundation::{
        GetLastError, ERROR_BROKEN_PIPE, ERROR_HANDLE_EOF, ERROR_IO_PENDING,
    };
    use windows_sys::Win32::Storage::FileSystem::{ReadFile, WriteFile};
    use windows_sys::Win32::System::Threading::CreateEventW;
    use windows_sys::Win32::System::IO::{GetOverlappedResult, OVERLAPPED};

    /// A pipe handle used through OVERLAPPED I/O with a private event (see `SystemStdio`).
    pub(super) struct HandlePipe {
        handle: OwnedHandle,
        event: OwnedHandle,
    }

    impl HandlePipe {
        pub(super) fn new(raw: usize) -> io::Result<Self> {
            // SAFETY: HCS transferred ownership of this handle to us; it is closed by OwnedHandle.
            let handle = unsafe { OwnedHandle::from_raw_handle(raw as _) };
            // SAFETY: plain Win32 call with null (default) security attributes and name;
            // manual-reset, initially non-signalled.
            let ev = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
            if ev.is_null() {
                return Err(io::Error::last_os_error()); // `handle` drops: closed
            }
            // SAFETY: `ev` is a fresh event handle we own.
            let event = unsafe { OwnedHandle::from_raw_handle(ev) };
            Ok(HandlePipe { handle, event })
        }

        fn io(&self, buf: *mut u8, len: usize, write: bool) -> io::Result<usize> {
            let len = len.min(u32::MAX as usize) as u32;
            // SAFETY: OVERLAPPED is plain data; all-zero is its documented initial state.
            let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
            ov.hEvent = self.event.as_raw_handle();
            let mut n: u32 = 0;
            let h = self.handle.as_raw_handle();
            // SAFETY: `buf` is valid for `len` bytes for the whole call: we wait for completion
            // (GetOverlappedResult with bWait = TRUE) before returning, so neither `buf` nor
            // `ov` is used by the system after this function returns.
            let ok = unsafe {
                if write {
                    WriteFile(h, buf, len, &mut n, &mut ov)
                } else {
                    ReadFile(h, buf, len, &mut n, &mut ov)
                }
            };
            if ok == 0 {
                // SAFETY: plain Win32 call.
                let err = unsafe { GetLastError() };
                if err != ERROR_IO_PENDING {
                    return eof_or(err, write);
                }
            }
            // SAFETY: `ov` is the OVERLAPPED of the operation just issued on `h`; wait = TRUE.
            let ok = unsafe { GetOverlappedResult(h, &ov, &mut n, 1) };
            if ok == 0 {
                // SAFETY: plain Win32 call.
                return eof_or(unsafe { GetLastError() }, write);
            }
            Ok(n as usize)
        }
    }

    fn eof_or(err: u32, write: bool) -> io::Result<usize> {
        if !write && (err == ERROR_BROKEN_PIPE || err == ERROR_HANDLE_EOF) {
            Ok(0)
        } else {
            Err(io::Error::from_raw_os_error(err as i32))
        }
    }

    impl Read for HandlePipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.io(buf.as_mut_ptr(), buf.len(), false)
        }
    }

    impl Write for HandlePipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.io(buf.as_ptr().cast_mut(), buf.len(), true)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(all(test, windows))]
mod windows_layout {
    use super::*;
    use windows_sys::Win32::System::HostComputeSystem as ws;

    #[test]
    fn process_information_matches_windows_sys() {
        assert_eq!(
            std::mem::size_of::<HCS_PROCESS_INFORMATION>(),
            std::mem::size_of::<ws::HCS_PROCESS_INFORMATION>()
        );
        assert_eq!(std::mem::offset_of!(HCS_PROCESS_INFORMATION, StdInput), 8);
        assert_eq!(std::mem::offset_of!(HCS_PROCESS_INFORMATION, StdError), 24);
        let _: ws::HCS_SYSTEM = std::ptr::null_mut::<c_void>() as HCS_SYSTEM;
        let _: windows_sys::core::HRESULT = 0 as HRESULT;
    }
}
