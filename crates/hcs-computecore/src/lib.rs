//! `hcs-computecore`: the V2 [`hcs::Driver`] over `computecore.dll`.
//!
//! * [`ComputeCoreTable`] holds the exports, resolved at run time ([`ComputeCoreTable::load`]);
//!   live migration and a few newer exports are optional, and their absence turns the matching
//!   driver methods into [`hcs::Failure::unsupported`].
//! * [`ComputeCoreDriver`] implements [`hcs::Driver`] ([`hcs::ApiGeneration::V2`]), turning HCS
//!   operations into the lifecycle's single pending/completion model.
//! * [`ffi`] is the `hcs-ffi` crate: the C types, loading, string and stdio plumbing shared with
//!   the V1 driver (`hcs-vmcompute`, a sibling this crate does not depend on). The types a test
//!   needs to fill a [`ComputeCoreTable`] with fake functions are also re-exported here
//!   ([`HRESULT`], [`HCS_OPERATION`], [`HCS_EVENT`], [`EventCallback`],
//!   [`OperationCompletion`], …).
//!
//! This crate may use `unsafe`; every block has a `// SAFETY:` note.
#![allow(unsafe_code)]

pub mod driver;
pub mod table;

pub use driver::{
    event_trampoline, live_registrations, operation_completion_trampoline, pending_operations,
    tables_dropped_in_callbacks, ComputeCoreDriver,
};
pub use hcs_ffi as ffi;
pub use hcs_ffi::{
    DllSource, EventCallback, FreeStringFn, Library, LoadError, OperationCompletion, StdioMapper,
    SystemStdio, HANDLE, HCS_EVENT, HCS_OPERATION, HCS_PROCESS, HCS_PROCESS_INFORMATION, HCS_SYSTEM, HRESULT,
    PCWSTR, PWSTR,
};
pub use table::ComputeCoreTable;
