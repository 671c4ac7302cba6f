//! `hcs`: a lifecycle layer for the Windows Host Compute Service over a pluggable driver.
//!
//! The common path: pick a driver (on Windows the `hcs-native` crate chooses V2 or V1 for you;
//! on any machine the `hcs-sim` simulator or the `hcs-testkit` fake), then drive a [`System`]
//! and its [`Process`]es; the driver contract underneath is the same for all of them.
//!
//! * [`Driver`] is the contract between this layer and HCS (V1 `vmcompute.dll`, V2
//!   `computecore.dll`, the `hcs-sim` simulator, the `hcs-testkit` scripted fake).
//! * [`System`] and [`Process`] give every driver the same lifecycle semantics: handle guards,
//!   error swallowing on shutdown/terminate, pending operations completed by notifications,
//!   timeouts, exit classification, waits (blocking, timed, `Future`) for any number of
//!   waiters, and safe handling of late callbacks.
//! * [`dispatch`] is the one entry point for notifications; drivers' callback trampolines and
//!   tests call it with the registry id the lifecycle handed to the driver.
//! * [`HResult`] and [`Error`] carry HCS's codes and result-document events, with classifiers
//!   that accept both the V1 and V2 encodings.
//!
//! # Example: run a command in a compute system
//!
//! The same code runs on every driver; `hcs-sim`'s crate documentation runs it on the
//! simulator (which really runs `echo hello` on the host).
//!
//! ```
//! use hcs::schema::{ComputeSystem, ProcessParameters};
//! use hcs::{Driver, System};
//! use std::io::Read;
//! use std::sync::Arc;
//!
//! fn hello(driver: Arc<dyn Driver>) -> Result<String, Box<dyn std::error::Error>> {
//!     let system = System::create_from(driver, "demo", &ComputeSystem::process_isolated_container("me"))?;
//!     system.start()?;
//!     let process = system.create_process_from(&ProcessParameters {
//!         command_line: Some("echo hello".into()),
//!         create_std_out_pipe: Some(true),
//!         ..Default::default()
//!     })?;
//!     let mut out = String::new();
//!     if let Some(mut stdout) = process.take_stdout() {
//!         stdout.read_to_string(&mut out)?;
//!     }
//!     process.wait()?;
//!     let code = process.exit_code()?;
//!     process.close()?;
//!     system.shutdown()?;
//!     system.wait()?;
//!     system.close()?;
//!     Ok(format!("{out} (exit code {code})"))
//! }
//! ```
//!
//! # Example: testing your own code with the scripted fake (`hcs-testkit`)
//!
//! ```
//! use hcs::{NotificationKind, System};
//! use hcs_testkit::{Answer, FakeDriver, Method};
//! use std::time::Duration;
//!
//! let fake = FakeDriver::new();
//! // HCS answers Start with "pending" and completes it 5 ms later from another thread.
//! fake.script(
//!     Method::StartComputeSystem,
//!     Answer::pending().then_complete(NotificationKind::SystemStartCompleted, 0u32, None, Duration::from_millis(5)),
//! );
//! let config = r#"{"SchemaVersion":{"Major":2,"Minor":1},"Owner":"demo","Container":{}}"#;
//! let system = System::create(fake.clone(), "demo", config)?;
//! system.start()?;
//! // The system exits; every waiter sees it.
//! let ctx = system.notify_context().unwrap();
//! fake.fire(ctx, NotificationKind::SystemExited, 0u32, Some(r#"{"Status":0,"ExitType":"GracefulExit"}"#));
//! system.wait_timeout(Duration::from_secs(5))?;
//! assert!(!system.exit_status().unwrap().unexpected);
//! system.close()?;
//! fake.assert_no_leaks();
//! # Ok::<(), hcs::Error>(())
//! ```

#![cfg_attr(loom, allow(dead_code, unused_imports))]

/// The JSON document types exchanged with HCS (the `hcs-schema` crate), re-exported so a
/// caller needs no fourth dependency: build a [`schema::ComputeSystem`] for
/// [`System::create_from`] or [`schema::ProcessParameters`] for [`System::create_process_from`].
pub use hcs_schema as schema;
pub use hcs_schema::{ComputeSystem, ExitType, ProcessParameters, ProcessStatus, SystemExitStatus};

#[cfg(not(loom))]
mod call;
pub mod driver;
pub mod error;
#[cfg(not(loom))]
mod guard;
pub mod hresult;
#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(not(loom))]
pub mod migration;
#[cfg(not(loom))]
mod migration_events;
mod notifier;
pub mod notify;
#[cfg(not(loom))]
mod object;
#[cfg(not(loom))]
pub mod process;
pub mod stdio;
mod sync;
#[cfg(not(loom))]
pub mod system;
#[cfg(not(loom))]
mod system_inner;
#[cfg(not(loom))]
pub mod timeouts;
#[cfg(not(loom))]
mod worker;

pub use driver::NotificationKind;
pub use driver::{
    ApiGeneration, CallbackHandle, Driver, DriverResult, Failure, FailureSource, HandleCounts, Method,
    MigrationTransport, NotifyContext, ProcessHandle, ProcessInfo, Reply, SystemHandle,
};
pub use error::{classify, Cause, Error, Result, Scope};
pub use hresult::HResult;
#[cfg(not(loom))]
pub use migration::{
    CancelPath, FinalOperation, Migration, MigrationError, MigrationEvents, MigrationNotification,
    MigrationState,
};
#[cfg(not(loom))]
pub use notify::{dispatch, live_registrations};
#[cfg(not(loom))]
pub use process::{ExitCode, Process, ProcessWait};
pub use stdio::{PipeReader, PipeWriter, Stdio};
#[cfg(not(loom))]
pub use system::{enumerate, modify_service_settings, service_properties, System, SystemExit, SystemWait};
#[cfg(not(loom))]
pub use timeouts::{CallOptions, CancelToken, Timeouts};
