//! `hcs-sim`: a faithful, pure-Rust model of the Windows Host Compute Service (HCS) behind the
//! [`hcs::Driver`] contract, so that every lifecycle rule can be exercised on Linux without
//! Windows, admin rights or a running HCS.
//!
//! What it models (see `shared/spec/hcs-behavior.md` and `hcs-failure-modes.md` §4):
//!
//! * **Systems**: created → running ⇄ paused, running/paused → saved, any → stopped, with the
//!   HRESULTs real HCS returns for invalid transitions, unknown and duplicate ids, already-stopped
//!   systems and malformed JSON, in the V1 (`0xC037…`) or V2 (`0x8037…`) encoding; open by id,
//!   enumerate with query filters, properties (basic, `Statistics`, `ProcessList`, `Memory`), a
//!   small documented set of modify requests, `ShouldTerminateOnLastHandleClosed`.
//! * **Notifications** delivered from the simulator's own service thread after a configurable
//!   latency through [`hcs::dispatch`]: V1-style pending replies with `*Completed` later (or
//!   synchronous replies, per operation), `SystemExited` with `{Status, ExitType}` to every
//!   registration of the system, `ProcessExited` with a `ProcessStatus`, `ServiceDisconnect`.
//!   Unregister waits for a delivery already running for that registration.
//! * **Processes**: the [`Backend::Host`] backend really runs the command line (split with the
//!   `CommandLineToArgvW` rules, see [`cmdline`]), with pipes, exit codes, signals, pause =
//!   `SIGSTOP`, and statistics from `/proc`; the [`Backend::Scripted`] backend is deterministic.
//! * **Faults** ([`FaultPlan`], in code or JSON): failures, late or missing completions, crashes,
//!   service disconnects, blocked calls, delayed/duplicated/dropped notifications, late callbacks.
//! * **Accounting**: [`Simulator::handle_counts`], [`Simulator::assert_no_leaks`].
//!
//! Threads: one service thread per simulator, started lazily, runs timed tasks and reaps host
//! processes. Idle systems cost memory only.
//!
//! # Conventions of the model
//!
//! * **Handles** are unique across kinds and never reused; an unknown, closed or wrong-kind
//!   handle fails with `E_HANDLE` (`0x80070006`). Closing a handle also removes the callback
//!   registrations made through it (draining a running delivery), as `HcsCloseComputeSystem`
//!   does. A stopped system is forgotten once its last system and process handle is closed.
//! * **Exits are sticky**: registering on a stopped system (exited process) delivers
//!   `SystemExited` (`ProcessExited`) to the new registration.
//! * **Signals** (`{"Signal": n}`): 0 (Windows CtrlC) → `SIGINT`; 1–64 are Linux signal numbers
//!   delivered to the process group; others → `E_INVALIDARG`. Terminate is `SIGKILL`. A process
//!   killed by signal `n` reports exit code `128 + n`.
//! * **Processes that are gone**: signal/modify → `0xC0370105` (V1) /
//!   `HCS_E_PROCESS_ALREADY_STOPPED` `0x8037011F` (V2); terminate → `E_ACCESSDENIED` (V1) /
//!   `0x8037011F` (V2); open of an unknown pid → `0x80070490` (`ERROR_NOT_FOUND`).
//! * **Stdio** is handed out once, by `create_process`; `get_process_info` reports the pid only.
//!   Host pipes are the child's own fds (no relay threads); unrequested streams are
//!   `/dev/null`. A missing program is `0x80070002`, a missing working directory `0x8007010B`.
//! * **Service disconnect** keeps systems, processes and handles; calls fail with
//!   `RPC_S_SERVER_UNAVAILABLE` (`0x800706BA`) and notifications are not sent until
//!   [`Simulator::restart_service`]. [`Simulator::reboot`] forgets everything instead.
//! * **Statistics** come from `/proc/<pid>/stat` and `/proc/<pid>/status` of live host
//!   processes (CPU in 100 ns units with `USER_HZ` = 100; working set from `RssAnon`/`VmRSS`);
//!   scripted processes report zeros.
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

pub mod cmdline;
mod codes;
mod config;
mod documents;
mod driver;
mod engine;
pub mod fault;
mod host;
mod model;
mod sched;
mod service;
mod signal;
mod simulator;
mod sync;

pub use config::{Backend, Script, ScriptedProcess, SimConfig};
pub use fault::{Action, CallRule, FaultPlan, NotificationRule, PlanError, Rule, Trigger};
pub use host::proc_state;
pub use model::{MappedDirectory, SystemState};
pub use simulator::{HandleCounts, ProcessSnapshot, SimError, Simulator, SystemInfo};
