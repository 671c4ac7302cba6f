//! The C types of the two HCS APIs (design FFI §1): handle and string aliases, the
//! structs both DLLs exchange with the caller (`HCS_PROCESS_INFORMATION`, `HCS_EVENT`) and the
//! callback signatures (V1 notifications, V2 events and operation completions). The drivers and
//! the fake DLLs all use these declarations, so the two sides of every call agree on one layout.

#![allow(non_camel_case_types)]

use std::ffi::c_void;

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

/// `HCS_NOTIFICATION_CALLBACK` (V1): `(notification_type, context, status, data)`. `data` is
/// owned by HCS and may be null.
pub type NotificationCallback = unsafe extern "system" fn(u32, *const c_void, HRESULT, PCWSTR);

/// `HCS_EVENT` (V2; 24 bytes on x86_64): `{Type, EventData, Operation}`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_snake_case)]
pub struct HCS_EVENT {
    /// `HCS_EVENT_TYPE`.
    pub Type: i32,
    /// The event's JSON document (owned by HCS; may be null).
    pub EventData: PCWSTR,
    /// The operation the event belongs to, if any.
    pub Operation: HCS_OPERATION,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<HCS_EVENT>() == 24);

/// `HCS_EVENT_CALLBACK` (V2): `(event, context)`.
pub type EventCallback = unsafe extern "system" fn(*const HCS_EVENT, *const c_void);
/// `HCS_OPERATION_COMPLETION` (V2): `(operation, context)`.
pub type OperationCompletion = unsafe extern "system" fn(HCS_OPERATION, *const c_void);

#[cfg(all(test, target_pointer_width = "64"))]
mod layout {
    use super::*;

    #[test]
    fn structs_have_the_x64_layout() {
        assert_eq!(std::mem::offset_of!(HCS_PROCESS_INFORMATION, StdInput), 8);
        assert_eq!(std::mem::offset_of!(HCS_PROCESS_INFORMATION, StdError), 24);
        assert_eq!(std::mem::offset_of!(HCS_EVENT, EventData), 8);
        assert_eq!(std::mem::offset_of!(HCS_EVENT, Operation), 16);
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
