//! `hcs-computecore`: the V2 [`hcs::Driver`] over `computecore.dll`.
//!
//! * [`ComputeCoreTable`] holds the exports, resolved at run time ([`ComputeCoreTable::load`]);
//!   live migration and a few newer exports are optional, and their absence turns the matching
//!   driver methods into [`hcs::Failure::unsupported`].
//! * [`ComputeCoreDriver`] implements [`hcs::Driver`] ([`hcs::ApiGeneration::V2`]), turning HCS
//!   operations into the lifecycle's single pending/completion model.
//!
//! The C types, loading, string and stdio plumbing are shared with the V1 driver
//! ([`hcs_vmcompute::ffi`]). This crate may use `unsafe`; every block has a `// SAFETY:` note.
#![allow(unsafe_code)]

pub mod driver;
pub mod table;

pub use driver::{
    event_trampoline, live_registrations, operation_completion_trampoline, pending_operations,
    ComputeCoreDriver,
};
pub use hcs_vmcompute::ffi::{DllSource, LoadError, StdioMapper, SystemStdio};
pub use table::ComputeCoreTable;
