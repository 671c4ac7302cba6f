//! `hcs-vmcompute`: the V1 [`hcs::Driver`] over `vmcompute.dll`.
//!
//! * [`VmComputeTable`] holds one function pointer per export, resolved at run time
//!   ([`VmComputeTable::load`]); nothing is linked at load time, so a binary using this crate
//!   starts on hosts without HCS and reports "driver unavailable" cleanly. Tests fill the table
//!   with fake `extern "system"` functions on any platform.
//! * [`VmComputeDriver`] implements [`hcs::Driver`] ([`hcs::ApiGeneration::V1`]).
//! * [`ffi`] is the FFI plumbing shared with the V2 driver (`hcs-computecore`): C types, DLL
//!   loading, UTF-16 marshalling, returned-string ownership, stdio handles, handle guards.
//! * `test_support` (feature `test-support`, enabled by the two driver crates'
//!   dev-dependencies only) holds the helpers their tests share.
//!
//! This is one of the two crates in the workspace allowed to use `unsafe`; every unsafe block
//! carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

pub mod driver;
pub mod ffi;
pub mod table;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use driver::{notification_trampoline, VmComputeDriver};
pub use ffi::{DllSource, LoadError, StdioMapper, SystemStdio};
pub use table::VmComputeTable;
