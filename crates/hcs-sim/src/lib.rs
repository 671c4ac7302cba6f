//! `hcs-sim`: a faithful, pure-Rust model of the Windows Host Compute Service (HCS) behind the
//! [`hcs::Driver`] contract, so that every lifecycle rule can be exercised on Linux without
//! Windows, admin rights or a running HCS.
//!
//! # The common path: `hcs::System` on the simulator
//!
//! A [`Simulator`] is an `Arc<dyn hcs::Driver>`: hand it to the lifecycle layer and use
//! [`hcs::System`] and [`hcs::Process`] as on Windows. The simulator's own controls (faults,
//! crashes, leak checks) stay available on the `Arc<Simulator>`.
//!
//! ```
//! use hcs::System;
//! use hcs_sim::{Script, ScriptedProcess, SimConfig, Simulator};
//! use std::io::Read;
//!
//! // The scripted backend runs nothing: `echo hi` prints "hi" and exits with 0.
//! let script = Script::new().on("echo hi", ScriptedProcess::exits(0).stdout("hi\n"));
//! let sim = Simulator::new(SimConfig::default().scripted(script));
//!
//! let config = r#"{"Owner":"doc","SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#;
//! let system = System::create(sim.clone(), "demo", config)?;
//! system.start()?;
//! let process = system.create_process(r#"{"CommandLine":"echo hi","CreateStdOutPipe":true}"#)?;
//! let mut out = String::new();
//! process.take_stdout().unwrap().read_to_string(&mut out).unwrap();
//! process.wait()?;
//! assert_eq!((out.as_str(), process.exit_code()?), ("hi\n", 0));
//! process.close()?;
//! system.terminate()?;
//! system.wait()?;
//! system.close()?;
//! sim.assert_no_leaks();
//! # Ok::<(), hcs::Error>(())
//! ```
//!
//! The host backend (the default) really runs the command on the host, here `echo hello`:
//!
//! ```
//! use hcs::schema::{ComputeSystem, ProcessParameters};
//! use hcs::System;
//! use std::io::Read;
//!
//! # #[cfg(unix)] // the simulator's host backend runs commands on a Unix host
//! # fn main() -> Result<(), hcs::Error> {
//! let sim = hcs_sim::Simulator::new(hcs_sim::SimConfig::default());
//! let system = System::create_from(sim.clone(), "demo", &ComputeSystem::process_isolated_container("me"))?;
//! system.start()?;
//! let process = system.create_process_from(&ProcessParameters {
//!     command_line: Some("echo hello".into()),
//!     create_std_out_pipe: Some(true),
//!     ..Default::default()
//! })?;
//! let mut out = String::new();
//! process.stdio()?.stdout.expect("requested").read_to_string(&mut out).unwrap();
//! process.wait()?;
//! assert_eq!((out.as_str(), process.exit_code()?), ("hello\n", 0));
//! process.close()?;
//! system.shutdown()?;
//! system.wait()?;
//! system.close()?;
//! sim.assert_no_leaks();
//! # Ok(())
//! # }
//! # #[cfg(not(unix))]
//! # fn main() {}
//! ```
//!
//! # The raw driver calls
//!
//! Below the lifecycle layer, the [`hcs::Driver`] methods are the HCS calls themselves: each
//! returns what HCS would (a value, "pending", or a failure with its HRESULT) and
//! notifications arrive through [`hcs::dispatch`] to the context given.
//!
//! ```
//! use hcs::Driver;
//! use hcs_sim::{Simulator, SimConfig};
//! use hcs::notify::Subscription;
//!
//! let sim = Simulator::new(SimConfig::default().all_sync());
//! let sub = Subscription::new(|_, _, _| {});
//! let sys = sim.create_compute_system("demo", r#"{"Owner":"doc"}"#, sub.context()).unwrap().value;
//! sim.start_compute_system(sys, "", sub.context()).unwrap();
//! let props = sim.get_compute_system_properties(sys, "{}").unwrap().value;
//! assert!(props.contains(r#""State":"Running""#));
//! sim.terminate_compute_system(sys, "").unwrap();
//! sim.close_compute_system(sys).unwrap();
//! sim.assert_no_leaks();
//! ```
//!
//! # Which configuration
//!
//! [`SimConfig::default()`] is the **V1** generation (`vmcompute.dll` encodings) with
//! **pending operations**: create/start/pause/resume/save/shutdown/terminate answer "pending"
//! and their `*Completed` (or `SystemExited`) arrives later from the service thread — the
//! asynchronous shape the lifecycle's completion waits must survive. `hcsctl` instead runs the
//! simulator as **V2** with every call synchronous (`SimConfig::default().all_sync()
//! .generation(ApiGeneration::V2)`), as `computecore.dll` answers once the operation is done.
//! Pick the default to exercise pending completions and V1 codes; pick the `hcsctl` shape to
//! mirror the V2 driver.
//!
//! # What it models
//!
//! (See `docs/design.md`: the model's rules, and FM §4 for the failure modes it can inject.)
//!
//! * **Systems**: created → running ⇄ paused, running/paused → saved, any → stopped, with the
//!   HRESULTs real HCS returns for invalid transitions, unknown and duplicate ids, already-stopped
//!   systems and malformed JSON, in the V1 (`ERROR_VMCOMPUTE_*`) or V2 (`HCS_E_*`) encoding
//!   ([`hcs::hresult::CodePair`]); open by id, enumerate with query filters, properties (basic,
//!   `Statistics`, `ProcessList`, `Memory`), a small documented set of modify requests,
//!   `ShouldTerminateOnLastHandleClosed`.
//! * **Notifications** delivered from the simulator's own service thread after a configurable
//!   latency through [`hcs::dispatch`]: V1-style pending replies with `*Completed` later (or
//!   synchronous replies, per operation), `SystemExited` with `{Status, ExitType}` to every
//!   registration of the system, `ProcessExited` with a `ProcessStatus`, `ServiceDisconnect`.
//!   Unregister waits for a delivery already running for that registration.
//! * **Exit statuses as each DLL sends them**: V1 passes a crash's
//!   `ERROR_VMCOMPUTE_UNEXPECTED_EXIT` as the status of `SystemExited`; V2 events carry no
//!   status, so `SystemExited` is dispatched with `S_OK` and the payload's `Status` holds
//!   `HCS_E_UNEXPECTED_EXIT`. `ProcessExited` is `S_OK` with the process status document in
//!   both generations.
//! * **Processes**: the [`Backend::Host`] backend really runs the command line (split with the
//!   `CommandLineToArgvW` rules, see [`cmdline`]), with pipes, exit codes, signals, pause =
//!   `SIGSTOP`, and statistics from `/proc`; the [`Backend::Scripted`] backend is deterministic.
//! * **Faults** ([`FaultPlan`], in code or JSON): failures (also "done but reported failed"),
//!   late or missing completions, crashes, service disconnects, blocked calls, signals held in a
//!   per-handle queue, extra notifications of any kind, delayed/duplicated/dropped/rewritten
//!   notifications (statuses and payloads: null, malformed, V2-style), late callbacks; rules
//!   match a method, a system id and/or a handle.
//! * **Record** ([`Simulator::start_recording`], [`Simulator::record`]): every call, delivery
//!   and signal, in order, bounded; off by default.
//! * **Accounting**: [`Simulator::handle_counts`], [`Simulator::open_handles`],
//!   [`Simulator::assert_no_leaks`].
//!
//! Threads: one service thread per simulator, started lazily, runs timed tasks and reaps host
//! processes. Idle systems cost memory only.
//!
//! # Conventions of the model
//!
//! * **Handles** are unique across kinds and never reused; an unknown, closed or wrong-kind
//!   handle fails with `E_HANDLE`. Closing a handle also removes the callback registrations
//!   made through it (draining a running delivery), as `HcsCloseComputeSystem` does. A stopped
//!   system is forgotten once its last system and process handle is closed.
//! * **Exits are sticky**: registering on a stopped system (exited process) delivers
//!   `SystemExited` (`ProcessExited`) to the new registration.
//! * **Signals** (`{"Signal": n}`): 0 (Windows CtrlC) → `SIGINT`; 1–64 are Linux signal numbers
//!   delivered to the process group; others → `E_INVALIDARG`. Terminate is `SIGKILL`. A process
//!   killed by signal `n` reports exit code `128 + n`.
//! * **Processes that are gone**: signal/modify → `ERROR_VMCOMPUTE_INVALID_STATE` (V1) /
//!   `HCS_E_PROCESS_ALREADY_STOPPED` (V2); terminate → `E_ACCESSDENIED` (V1) /
//!   `HCS_E_PROCESS_ALREADY_STOPPED` (V2); open of an unknown pid → Win32 `ERROR_NOT_FOUND` in
//!   HRESULT form.
//! * **Stdio** is handed out once, by `create_process`; `get_process_info` reports the pid only.
//!   Host pipes are the child's own fds (no relay threads); unrequested streams are
//!   `/dev/null`. A missing program is Win32 `ERROR_FILE_NOT_FOUND`, a missing working
//!   directory `ERROR_DIRECTORY` (both in HRESULT form).
//! * **Service disconnect** keeps systems, processes and handles; calls fail with
//!   `RPC_S_SERVER_UNAVAILABLE` (in HRESULT form) and notifications are not sent until
//!   [`Simulator::restart_service`]. [`Simulator::restart_service_invalidating_handles`] is a
//!   real `vmcompute` restart: systems and processes survive, every handle and registration
//!   dies (`E_HANDLE`). [`Simulator::reboot`] forgets everything instead.
//! * **Signals** sent through one process handle take effect in order: a signal a `hold` rule
//!   holds delays every later signal or terminate through that handle, not through others.
//! * **Containment** (host backend): with a supervisor configured
//!   ([`SimConfig::supervisor`], Linux; see [`supervisor`]) each system's processes run under
//!   one supervisor process, in a session of their own without a controlling terminal; what a
//!   process leaves in its process group dies when it exits, and the whole tree (`setsid` and
//!   double-fork escapees included) dies when the system stops, when the simulator is dropped
//!   and when the process that owns it dies; the supervisor's death is the system's unexpected
//!   exit. Without one, commands are spawned directly and only their process group is
//!   contained. `docs/design.md` §13 has the rules.
//! * **Console processes** (host backend, Linux): `EmulateConsole` gives the process a
//!   pseudo-terminal on its stdin, stdout and stderr — under a supervisor also as its
//!   controlling terminal, in a session of its own — and the caller the master as its stdin and
//!   stdout (no stderr); `ConsoleSize` at creation and the `ConsoleSize` process modify set the
//!   window size. `docs/design.md` §13.
//! * **Statistics** come from `/proc/<pid>/stat` and `/proc/<pid>/status` of live host
//!   processes (CPU in 100 ns units with `USER_HZ` = 100; working set from `RssAnon`/`VmRSS`);
//!   scripted processes report zeros.
//!
//! # Layout
//!
//! [`Simulator`] (`simulator.rs`, the control API) and the in-process driver (`driver.rs`,
//! `impl Driver for Simulator`) sit on the engine (`engine.rs`: shared state, model
//! transitions, notifications), which uses the state table (`model.rs`), the timer queue
//! (`sched.rs`), the host backend (`host.rs`) and the service thread (`service.rs`, reached
//! only through its `Work` trait), and the per-system supervisor process with its link
//! ([`supervisor`]). Documents are parsed in `documents.rs`, HRESULT choices are
//! in `codes.rs`, configuration in `config.rs` and fault plans in [`fault`].

mod calls;
/// Windows command lines (split as a guest would): `hcs_schema::cmdline`, re-exported.
pub use hcs_schema::cmdline;
mod codes;
mod config;
mod documents;
mod driver;
mod engine;
pub mod fault;
mod host;
pub mod migration;
mod model;
pub mod record;
mod sched;
mod service;
mod signal;
mod simulator;
pub mod supervisor;
mod sync;

pub use config::{Backend, Script, ScriptedProcess, SimConfig, SupervisorProgram};
pub use fault::{
    Action, CallRule, FaultPlan, NotificationRule, NotifyTarget, PayloadEdit, PlanError, Release, Rule,
    Trigger,
};
pub use host::proc_state;
pub use migration::{MigrationConfig, MigrationFault, MigrationReport};
pub use model::{MappedDirectory, SystemState};
pub use record::{CallEvent, CallResult, DeliveryEvent, Event, Record, SignalEvent};
pub use simulator::{HandleCounts, ProcessSnapshot, SimError, Simulator, SystemInfo};
