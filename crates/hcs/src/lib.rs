//! `hcs`: a lifecycle layer for the Windows Host Compute Service over a pluggable driver.
//!
//! * [`Driver`] is the contract between this layer and HCS (V1 `vmcompute.dll`, V2
//!   `computecore.dll`, the `hcs-sim` simulator, the `hcs-testkit` scripted fake).
//! * [`dispatch`] is the one entry point for notifications; drivers' callback trampolines and
//!   tests call it with the registry id the lifecycle handed to the driver.
//! * [`HResult`] and [`Error`] carry HCS's codes and result-document events, with classifiers
//!   that accept both the V1 and V2 encodings.

pub mod driver;
pub mod hresult;
pub mod notify;
pub mod stdio;
mod sync;

pub use driver::{
    ApiGeneration, CallbackHandle, Driver, DriverResult, Failure, MigrationStep, NotifyContext,
    ProcessHandle, ProcessInfo, Reply, SystemHandle,
};
pub use hresult::HResult;
pub use notify::NotificationKind;
#[cfg(not(loom))]
pub use notify::{dispatch, live_registrations};
pub use stdio::{PipeReader, PipeWriter, Stdio};
