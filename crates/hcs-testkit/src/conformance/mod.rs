//! The driver conformance suite (architecture rule 8): one set of checks every [`Driver`] must
//! pass, run through the lifecycle layer ([`hcs::System`], [`hcs::Process`]) and, where a rule
//! is about the driver itself, directly against the [`Driver`] trait.
//!
//! A driver's test crate implements [`Harness`] (how to reach the driver, and which documents
//! make a system and the few processes the checks need) and invokes
//! [`conformance_tests!`](crate::conformance_tests) once: it expands to one `#[test]` per check.
//!
//! ```no_run
//! use hcs_testkit::conformance::Harness;
//! use std::sync::Arc;
//!
//! struct MyHarness {
//!     driver: Arc<dyn hcs::Driver>, // the driver under test
//! }
//!
//! impl Harness for MyHarness {
//!     fn driver(&self) -> Arc<dyn hcs::Driver> {
//!         self.driver.clone()
//!     }
//!     fn system_config(&self) -> String {
//!         r#"{"SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#.into()
//!     }
//!     fn process_exiting_with(&self, code: u32) -> String {
//!         format!(r#"{{"CommandLine":"cmd /c exit {code}"}}"#)
//!     }
//!     fn process_printing(&self, text: &str) -> String {
//!         serde_json::json!({"CommandLine": format!("cmd /c echo {}", text.trim_end()),
//!                            "CreateStdOutPipe": true}).to_string()
//!     }
//!     fn process_echoing_stdin(&self) -> Option<String> {
//!         Some(r#"{"CommandLine":"findstr x*","CreateStdInPipe":true,"CreateStdOutPipe":true}"#.into())
//!     }
//!     fn process_running_until_killed(&self) -> String {
//!         r#"{"CommandLine":"ping -t localhost"}"#.into()
//!     }
//!     fn max_exit_code(&self) -> u32 {
//!         u32::MAX
//!     }
//! }
//!
//! fn harness() -> MyHarness {
//!     MyHarness { driver: hcs_testkit::FakeDriver::new() } // your driver instead
//! }
//!
//! // In the driver's tests: `mod my_driver { #[test] fn lifecycle_transitions() { ... } ... }`,
//! // one test per check, each with a fresh harness.
//! hcs_testkit::conformance_tests!(my_driver, harness());
//!
//! // Or every check at once, in one test:
//! #[test]
//! fn conformance() {
//!     hcs_testkit::conformance::run_all(&harness())
//! }
//! ```
//!
//! Each check is also a public function (`conformance::lifecycle_transitions(&harness)`), and
//! [`CHECKS`] lists them all by name. The list of checks lives in one place, this module: the
//! macro, [`CHECKS`] and [`run_all`] are all generated from it, so a new check reaches every
//! driver's tests without editing them. Each check panics with a message naming the rule that
//! failed.
//!
//! The checks, by theme: `lifecycle` (state machine, invalid transitions, not-found, idempotent
//! stops), `process` (exit codes, stdio, signal and kill), `notifications` (waiters, close,
//! unregister draining, late callbacks) and `hygiene` (handles after a busy workload).
//!
//! # What every check also verifies
//!
//! Each check wraps the harness's driver in a recording pass-through driver and, when it ends:
//!
//! * every callback context the lifecycle handed to the driver is gone from the notification
//!   registry (a probe with an untracked notification kind through [`hcs::dispatch`] reaches
//!   nobody), so no System or Process leaked its registration;
//! * the driver's open handles and registrations ([`Harness::open_handles`], when the driver
//!   can count them) are back to what they were when the check began;
//! * [`Harness::assert_no_leaks`] passes (the simulator checks its host processes and systems).
//!
//! The process-global [`hcs::live_registrations`] count is deliberately not compared: tests run
//! in parallel and share the registry. The per-context probes above are exact instead.
//!
//! # Harness rules
//!
//! * Give each check its own driver instance, or at least make sure [`Harness::open_handles`]
//!   counts only what this check did: counts are compared before and after the check.
//! * Compute-system ids come from [`Harness::unique_id`]; the default is unique per process.
//!
//! [`Driver`]: hcs::Driver

mod harness;
mod hygiene;
mod lifecycle;
mod notifications;
mod process;
mod session;
mod spy;

pub use harness::{
    Check, Harness, BASIC_EXIT_CODES, ECHO_INPUT, GREETING, LARGE_EXIT_CODE, STOP_SWALLOW_CODES,
};
pub use hygiene::handle_hygiene;
pub use lifecycle::{
    invalid_transitions_are_invalid_state, lifecycle_transitions, open_unknown_is_not_found,
    stop_is_idempotent, terminate_forces_exit,
};
pub use notifications::{
    late_callbacks_after_close_are_noops, many_waiters_released_by_one_exit, unregister_drains_callbacks,
    wait_after_close_is_already_closed,
};
pub use process::{process_exit_codes, signal_and_kill, stdio_round_trip};

/// THE list of conformance checks, in a sensible order: the one place a check is added.
///
/// Calls the macro named by the tokens in brackets with the bracketed arguments first and then
/// every check's name (each a function re-exported by [`conformance`](crate::conformance)):
/// `__conformance_checks!([some::macro] args)` expands to
/// `some::macro! { [args] lifecycle_transitions, terminate_forces_exit, ... }`.
/// [`CHECKS`] and [`conformance_tests!`](crate::conformance_tests) are generated from it.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_checks {
    ([$($callback:tt)*] $($args:tt)*) => {
        $($callback)*! {
            [$($args)*]
            lifecycle_transitions,
            terminate_forces_exit,
            invalid_transitions_are_invalid_state,
            open_unknown_is_not_found,
            stop_is_idempotent,
            process_exit_codes,
            stdio_round_trip,
            signal_and_kill,
            many_waiters_released_by_one_exit,
            wait_after_close_is_already_closed,
            unregister_drains_callbacks,
            late_callbacks_after_close_are_noops,
            handle_hygiene,
        }
    };
}

/// Generates [`CHECKS`] from the one list.
macro_rules! checks_table {
    ([] $($check:ident,)*) => {
        /// Every check, by name, in a sensible order (generated from the same list as
        /// [`run_all`] and [`conformance_tests!`](crate::conformance_tests)).
        pub const CHECKS: &[(&str, Check)] = &[$((stringify!($check), $check as Check),)*];
    };
}

crate::__conformance_checks!([checks_table]);

/// Runs every check in [`CHECKS`], in order; the first failure panics with the check's name.
pub fn run_all(h: &dyn Harness) {
    for (name, check) in CHECKS {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(h)));
        if let Err(p) = r {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("conformance check `{name}` failed: {msg}");
        }
    }
}

/// One `#[test]` per conformance check, in a module of its own: a driver's whole conformance
/// test file is one invocation per configuration.
///
/// # Usage
///
/// ```text
/// hcs_testkit::conformance_tests!(MODULE, HARNESS_EXPR);
/// hcs_testkit::conformance_tests!(MODULE, run = RUNNER_EXPR);
/// ```
///
/// Either form expands to `mod MODULE { #[test] fn lifecycle_transitions() { ... } ... }`
/// with one test per entry of [`CHECKS`](crate::conformance::CHECKS), each named after its
/// check. The list comes from `hcs-testkit` itself, so when a check is added every driver's
/// tests gain it with no edit. Outer attributes before `MODULE` (doc comments, `#[cfg(..)]`)
/// are put on the generated module.
///
/// * **`HARNESS_EXPR`** is any expression whose value implements
///   [`Harness`](crate::conformance::Harness). It is evaluated afresh in every test, so each
///   check gets its own harness (and typically its own driver), as the harness rules ask; the
///   test then calls the check with it.
/// * **`run = RUNNER_EXPR`** is for drivers whose checks need a custom runner (a shared driver
///   behind a lock, extra quiescence checks afterwards, ...): every test evaluates the
///   expression and calls it with the check, a [`Check`](crate::conformance::Check)
///   (`fn(&dyn Harness)`). A closure `|check| ...` or the path of a
///   `fn(hcs_testkit::conformance::Check)` both work.
///
/// The expressions are written in the invoking module but expanded inside the generated one,
/// which starts with `use super::*;`: names of the invoking module (its harness type, helper
/// functions, imports) resolve unqualified.
///
/// # Examples
///
/// The simulator's tests (`crates/hcs-sim/tests/conformance.rs`), one module per
/// configuration:
///
/// ```ignore
/// hcs_testkit::conformance_tests!(host_v1, SimHarness::host(SimConfig::default()));
/// hcs_testkit::conformance_tests!(
///     host_v2,
///     SimHarness::host(SimConfig::default().generation(ApiGeneration::V2))
/// );
/// ```
///
/// A driver tested through one shared, process-wide instance (like the fake DLLs under Wine),
/// where each check runs under a lock and is followed by the driver's own leak checks:
///
/// ```ignore
/// fn dll() -> &'static FakeDll { /* ... */ }
///
/// hcs_testkit::conformance_tests!(
///     /// The hcs-testkit conformance suite over the fake DLL.
///     conformance_over_the_fake_dll,
///     run = |check| run_check(dll(), check)
/// );
/// ```
///
/// A complete, compiling example:
///
/// ```
/// use hcs_testkit::conformance::Harness;
/// use std::sync::Arc;
///
/// struct MyHarness(Arc<dyn hcs::Driver>);
///
/// impl Harness for MyHarness {
///     fn driver(&self) -> Arc<dyn hcs::Driver> {
///         self.0.clone()
///     }
///     fn system_config(&self) -> String {
///         "{}".into()
///     }
///     fn process_exiting_with(&self, code: u32) -> String {
///         format!(r#"{{"CommandLine":"exit {code}"}}"#)
///     }
///     fn process_printing(&self, _text: &str) -> String {
///         r#"{"CommandLine":"print","CreateStdOutPipe":true}"#.into()
///     }
///     fn process_echoing_stdin(&self) -> Option<String> {
///         None
///     }
///     fn process_running_until_killed(&self) -> String {
///         r#"{"CommandLine":"forever"}"#.into()
///     }
///     fn max_exit_code(&self) -> u32 {
///         u32::MAX
///     }
/// }
///
/// fn my_harness() -> MyHarness {
///     MyHarness(hcs_testkit::FakeDriver::new()) // your driver here
/// }
///
/// // One test per check, each with a fresh harness.
/// hcs_testkit::conformance_tests!(my_driver, my_harness());
///
/// // The same checks through a custom runner.
/// fn run_locked(check: hcs_testkit::conformance::Check) {
///     static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
///     let _serial = LOCK.lock();
///     check(&my_harness());
/// }
/// hcs_testkit::conformance_tests!(#[cfg(any())] my_driver_serial, run = run_locked);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($(#[$meta:meta])* $module:ident, run = $runner:expr $(,)?) => {
        $crate::__conformance_checks!([$crate::__conformance_tests] run $(#[$meta])* $module, $runner);
    };
    ($(#[$meta:meta])* $module:ident, $harness:expr $(,)?) => {
        $crate::__conformance_checks!([$crate::__conformance_tests] harness $(#[$meta])* $module, $harness);
    };
}

/// The expansion of [`conformance_tests!`](crate::conformance_tests), called back by
/// `__conformance_checks!` with the list of checks.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ([harness $(#[$meta:meta])* $module:ident, $harness:expr] $($check:ident,)*) => {
        $(#[$meta])*
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $check() {
                    let harness = $harness;
                    $crate::conformance::$check(&harness);
                }
            )*
        }
    };
    ([run $(#[$meta:meta])* $module:ident, $runner:expr] $($check:ident,)*) => {
        $(#[$meta])*
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $check() {
                    let check: $crate::conformance::Check = $crate::conformance::$check;
                    ($runner)(check);
                }
            )*
        }
    };
}
