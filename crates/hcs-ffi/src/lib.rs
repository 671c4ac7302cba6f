//! `hcs-ffi`: the FFI plumbing shared by the two HCS drivers (`hcs-vmcompute` over
//! `vmcompute.dll`, `hcs-computecore` over `computecore.dll`) and by the fake DLLs their
//! Windows-target tests load.
//!
//! * [`callback`]: the frame every callback HCS calls runs in ([`callback::contain`]).
//! * [`types`]: the C types, structs and callback signatures of both APIs.
//! * [`load`]: run-time DLL loading ([`DllSource`], [`Library`], [`LoadError`]) and the
//!   [`fn_table!`] macro that declares a driver's function-pointer table.
//! * [`strings`]: UTF-16 marshalling and the ownership of strings the DLLs return.
//! * [`handles`]: guards for handles HCS hands out during a call.
//! * [`stdio`]: the conversion of stdio `HANDLE`s into pipe objects ([`StdioMapper`],
//!   [`SystemStdio`]).
//! * `test_support` (feature `test-support`, enabled by the drivers' dev-dependencies only):
//!   the fake-table building blocks and the fake-DLL scenario suite the drivers' tests share.
//!
//! Everything is re-exported at the crate root (`hcs_ffi::HRESULT`, `hcs_ffi::OutString`, …).
//! The crate builds on every platform; `libloading` and `windows-sys` are used on Windows only.
//! This is an FFI crate and may use `unsafe`; every unsafe block carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

pub mod callback;
pub mod handles;
pub mod load;
pub mod stdio;
pub mod strings;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod types;

pub use handles::{HandleGuard, NULL_HANDLE};
pub use load::{DllSource, Library, LoadError};
pub use stdio::{io_error_code, is_absent_handle, process_info, StdioMapper, SystemStdio, STDIO_UNSUPPORTED};
pub use strings::{
    copy_callback_str, invalid_utf16, opt_ptr, wide_opt, wide_units, OutString, WideCString, INTERIOR_NUL,
    INVALID_UTF16,
};
pub use types::{
    EventCallback, FreeStringFn, NotificationCallback, OperationCompletion, HANDLE, HCS_CALLBACK, HCS_EVENT,
    HCS_OPERATION, HCS_PROCESS, HCS_PROCESS_INFORMATION, HCS_SYSTEM, HRESULT, INFINITE, PCWSTR, PWSTR,
};
