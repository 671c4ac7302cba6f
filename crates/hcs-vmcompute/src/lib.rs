//! `hcs-vmcompute`: the V1 [`hcs::Driver`] over `vmcompute.dll`.
//!
//! * [`VmComputeTable`] holds one function pointer per export, resolved at run time
//!   ([`VmComputeTable::load`]); nothing is linked at load time, so a binary using this crate
//!   starts on hosts without HCS and reports "driver unavailable" cleanly. Tests fill the table
//!   with fake `extern "system"` functions on any platform.
//! * [`VmComputeDriver`] implements [`hcs::Driver`] ([`hcs::ApiGeneration::V1`]).
//! * [`ffi`] is the `hcs-ffi` crate, the FFI plumbing shared with the V2 driver
//!   (`hcs-computecore`): C types, DLL loading, UTF-16 marshalling, returned-string ownership,
//!   stdio handles, handle guards. The types a test needs to fill a [`VmComputeTable`] with fake
//!   functions are also re-exported here ([`HRESULT`], [`PCWSTR`], [`HCS_PROCESS_INFORMATION`],
//!   [`NotificationCallback`], …).
//!
//! This crate may use `unsafe` (it calls the DLL); every unsafe block carries a `// SAFETY:`
//! comment.
#![allow(unsafe_code)]

pub mod driver;
pub mod table;

pub use driver::{notification_trampoline, VmComputeDriver};
pub use hcs_ffi as ffi;
pub use hcs_ffi::{
    DllSource, FreeStringFn, Library, LoadError, NotificationCallback, StdioMapper, SystemStdio, HANDLE,
    HCS_CALLBACK, HCS_PROCESS, HCS_PROCESS_INFORMATION, HCS_SYSTEM, HRESULT, PCWSTR, PWSTR,
};
pub use table::VmComputeTable;
