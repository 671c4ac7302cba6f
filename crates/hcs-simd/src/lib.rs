//! `hcs-simd`: the simulated Host Compute Service as a daemon, and the driver that talks to it.
//!
//! The service ([`server`], the `hcs-simd` binary) owns the simulated compute systems and
//! their processes (one `hcs_sim` engine, one supervisor process per system) and serves clients
//! over a Unix socket with per-connection handles, as HCS serves per-process handles. The client
//! driver ([`ClientDriver`]) implements [`hcs::Driver`] over that socket, so `hcs::System` and
//! `hcs::Process` work against the service exactly as against the in-process simulator. The
//! rules are design §14. The wire format is in [`protocol`] and in the protocol document
//! (`docs/hcs-simd-protocol.md`).
//!
//! ```no_run
//! use hcs::System;
//! let driver = hcs_simd::ClientDriver::connect(hcs_simd::default_socket_path())?;
//! let system = System::create(driver, "demo", r#"{"Owner":"me","SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#)?;
//! system.start()?;
//! system.terminate()?;
//! system.wait()?;
//! system.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Unix only: on other targets the crate is empty.
#![cfg(unix)]

pub mod client;
pub mod daemon;
pub mod paths;
pub mod protocol;
pub mod server;

pub use client::{server_unavailable, ClientDriver, ConnectError};
pub use paths::{default_socket_path, SOCKET_ENV};
pub use server::{ServeError, Server, ServerConfig};

/// The first argument that makes the `hcs-simd` binary run the per-system supervisor
/// ([`hcs_sim::supervisor::main`]) instead of the service: the service re-executes itself
/// (`/proc/self/exe`) with it for each compute system.
pub const SUPERVISOR_ARG: &str = "__hcs-simd-supervisor";
